//! Request ids (issue 14, part 5): every response carries `x-openstack-request-id: req-<uuid4>`,
//! as Glance's do, whoever answered it (the API, the access control, or the HTTP layer itself);
//! a client's own id is ignored, as oslo.middleware ignores it; and the access line and the
//! other lines logged about the request name the id the client saw.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::{self, Response, Server, DEADLINE};

const TOKEN: &str = "request-id-token";

/// A server with `auth_strategy = token`, `debug` on (so the HTTP layer's lines about a bad
/// request are logged), a short `client_header_timeout` (for the 408), and access lines for
/// health checks too (`access_log_healthcheck`), which the checks below use as open routes.
fn token_server() -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens");
    fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600)).unwrap();
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config(
            "auth_strategy = token\nauth_token_file = tokens\ndebug = true\n\
             client_header_timeout = 1\naccess_log_healthcheck = true",
        ),
    )
    .unwrap();
    Server::start_with(dir, config_path, &[])
}

/// The response's request id, checked to be `req-` and a lowercase hyphenated version 4 UUID.
fn request_id(what: &str, response: &Response) -> String {
    let id = response
        .header("x-openstack-request-id")
        .unwrap_or_else(|| panic!("{what}: no x-openstack-request-id in {response:?}"));
    let uuid = id
        .strip_prefix("req-")
        .unwrap_or_else(|| panic!("{what}: {id:?} does not start with req-"));
    let groups: Vec<&str> = uuid.split('-').collect();
    let well_formed = groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && uuid
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b']);
    assert!(well_formed, "{what}: {id:?} is not req-<uuid4>");
    id.to_string()
}

/// Waits for the log line that names `id` and contains `text`.
fn wait_for_line(server: &Server, id: &str, text: &str) -> String {
    let mut found = String::new();
    util::wait_until(
        &format!("a log line [{id}] ... {text}"),
        DEADLINE,
        || match server
            .log()
            .lines()
            .find(|line| line.contains(&format!(": [{id}] ")) && line.contains(text))
        {
            Some(line) => {
                found = line.to_string();
                true
            }
            None => false,
        },
    );
    found
}

#[test]
fn every_response_carries_a_distinct_request_id_named_in_its_access_line() {
    let server = token_server();
    let addr = server.addr();
    let get = |path: &str, headers: &[(&str, &str)]| {
        util::request(addr, "GET", path, headers, b"").expect("a response")
    };
    let auth = [("X-Auth-Token", TOKEN)];
    let mut seen = Vec::new();
    let mut check = |what: &str, response: &Response, status: u16, access: Option<&str>| {
        assert_eq!(response.status, status, "{what}: {response:?}");
        let id = request_id(what, response);
        assert!(!seen.contains(&id), "{what}: {id} was given before");
        seen.push(id.clone());
        if let Some(access) = access {
            let line = wait_for_line(&server, &id, access);
            assert!(
                line.contains(&format!("{access} {status} ")),
                "{what}: {line}"
            );
        }
        id
    };

    check(
        "health check",
        &get("/healthcheck", &[]),
        200,
        Some("\"GET /healthcheck\""),
    );
    check(
        "list with a token",
        &get("/v2/images", &auth),
        200,
        Some("\"GET /v2/images\""),
    );
    check(
        "list without a token",
        &get("/v2/images", &[]),
        401,
        Some("\"GET /v2/images\""),
    );
    let missing = "/v2/images/00000000-0000-4000-8000-000000000000";
    check(
        "an image that does not exist",
        &get(missing, &auth),
        404,
        Some(&format!("\"GET {missing}\"")),
    );
    // An error the API logs about a request (a 500: an image whose status word the database
    // holds but glint does not know, as in images::an_unknown_status_in_the_database_is_a_500_...)
    // names the request's id, and so does its access line.
    let created = util::request(
        addr,
        "POST",
        "/v2/images",
        &[
            ("X-Auth-Token", TOKEN),
            ("Content-Type", "application/json"),
        ],
        br#"{"disk_format": "raw", "container_format": "bare"}"#,
    )
    .unwrap();
    check("create", &created, 201, Some("\"POST /v2/images\""));
    let image: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
    let image = image["id"].as_str().unwrap().to_string();
    rusqlite::Connection::open(server.path("glint.sqlite"))
        .and_then(|database| {
            database.execute(
                "UPDATE images SET status = 'frozen' WHERE id = ?1",
                [image.as_str()],
            )
        })
        .expect("write an unknown status");
    let path = format!("/v2/images/{image}");
    let erred = get(&path, &auth);
    let id = check(
        "an image the server cannot read",
        &erred,
        500,
        Some(&format!("\"GET {path}\"")),
    );
    let line = wait_for_line(&server, &id, "\"frozen\"");
    assert!(line.contains(" ERROR "), "{line}");

    // A client's own id is not taken (oslo.middleware generates one for every request).
    let mine = "req-11111111-2222-4333-8444-555555555555";
    let ignored = get("/healthcheck", &[("X-OpenStack-Request-ID", mine)]);
    let id = check(
        "a client's own id",
        &ignored,
        200,
        Some("\"GET /healthcheck\""),
    );
    assert_ne!(id, mine);
    assert!(!server.log().contains(mine), "{}", server.log());

    // The HTTP layer's own answers: a head it cannot parse (400), one too large (431).
    let bad = util::raw_exchange(addr, b"NOT A REQUEST\r\n\r\n")
        .unwrap()
        .expect("a 400");
    let id = check("a bad head", &bad, 400, Some("\"- -\""));
    // The debug line about it names the same id.
    wait_for_line(&server, &id, "answering 400 to a bad request");
    let huge = format!(
        "GET /healthcheck HTTP/1.1\r\nHost: glint\r\nX-Big: {}\r\n\r\n",
        "x".repeat(64 * 1024)
    );
    let too_large = util::raw_exchange(addr, huge.as_bytes())
        .unwrap()
        .expect("a 431");
    check("a head too large", &too_large, 431, Some("\"- -\""));

    // A head that does not arrive within client_header_timeout: 408, with an id, and the
    // debug line about it names it (there is no access line: no request arrived).
    let mut stream = server.connect();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /healthcheck HTTP/1.1\r\nHo").unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let late = util::read_response(&mut reader, "GET")
        .unwrap()
        .expect("a 408");
    let id = check("a late head", &late, 408, None);
    wait_for_line(&server, &id, "answering 408");

    // Keep-alive: each request on one connection gets its own id.
    let mut stream = server.connect();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"GET /healthcheck HTTP/1.1\r\nHost: glint\r\n\r\nGET /versions HTTP/1.1\r\nHost: glint\r\n\r\n",
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    for (what, access) in [
        ("first of two pipelined", "\"GET /healthcheck\""),
        ("second of two pipelined", "\"GET /versions\""),
    ] {
        let response = util::read_response(&mut reader, "GET")
            .unwrap()
            .expect("a response");
        check(what, &response, 200, Some(access));
    }
}
