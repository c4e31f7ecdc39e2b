//! Access control from the client's side: `auth_strategy = token` refuses every API route
//! without a listed `X-Auth-Token` (401 with `WWW-Authenticate`), leaves health check and version
//! discovery open, follows the token file across SIGHUP, and `noauth` stays the default. Also:
//! image files are never world-readable.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{self, Response, Server, DEADLINE};

const TOKEN: &str = "s3cret-token";
const OTHER_TOKEN: &str = "another-token_2";
/// An id no image has, so routes that need one answer 404 once past the check.
const NO_IMAGE: &str = "00000000-0000-4000-8000-000000000000";

/// A server with `auth_strategy = token` and a token file (mode 0600) listing `tokens`.
fn token_server(tokens: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    write_tokens(&dir.path().join("tokens"), tokens);
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config("auth_strategy = token\nauth_token_file = tokens"),
    )
    .expect("write config");
    Server::start_with(dir, config_path, &[])
}

/// Replaces the token file the way an operator's editor might: a new file renamed over the old.
fn write_tokens(path: &Path, tokens: &[&str]) {
    let temporary = path.with_extension("tmp");
    let mut text = String::from("# glint tokens, one per line\n\n");
    for token in tokens {
        text.push_str(&format!("  {token}\n"));
    }
    fs::write(&temporary, text).expect("write tokens");
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600)).expect("chmod tokens");
    fs::rename(&temporary, path).expect("rename tokens");
}

/// `method path` with `token` (if any) and the other headers and body given.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(token) = token {
        all.push(("X-Auth-Token", token));
    }
    util::request(addr, method, path, &all, body)
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

fn json(response: &Response) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", response.text()))
}

/// Creates an image with `token` and returns its id.
fn create_image(addr: SocketAddr, token: Option<&str>) -> String {
    let created = call(
        addr,
        "POST",
        "/v2/images",
        token,
        &[("Content-Type", "application/json")],
        br#"{"name": "auth-test", "disk_format": "raw", "container_format": "bare"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    json(&created)["id"].as_str().expect("id").to_string()
}

fn assert_unauthorized(response: &Response, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.text());
    assert_eq!(
        response.header("www-authenticate"),
        Some("X-Auth-Token realm=\"glint\""),
        "{what}"
    );
}

/// Every API route, as (method, path, content type, body); ids name no image.
fn api_routes() -> Vec<(&'static str, String, &'static str, &'static [u8])> {
    let image = format!("/v2/images/{NO_IMAGE}");
    let patch = "application/openstack-images-v2.1-json-patch";
    vec![
        ("GET", "/v2/images".into(), "", b""),
        ("HEAD", "/v2/images".into(), "", b""),
        ("GET", "/v2/images?limit=1".into(), "", b""),
        ("GET", "/v2.1/images".into(), "", b""),
        ("POST", "/v2/images".into(), "application/json", b"{}"),
        ("DELETE", "/v2/images".into(), "", b""),
        ("GET", image.clone(), "", b""),
        ("HEAD", image.clone(), "", b""),
        ("PATCH", image.clone(), patch, b"[]"),
        ("DELETE", image.clone(), "", b""),
        ("GET", format!("{image}/file"), "", b""),
        (
            "PUT",
            format!("{image}/file"),
            "application/octet-stream",
            b"data",
        ),
        ("PUT", format!("{image}/tags/blue"), "", b""),
        ("DELETE", format!("{image}/tags/blue"), "", b""),
        ("GET", "/v2/schemas/image".into(), "", b""),
        ("GET", "/v2/schemas/images".into(), "", b""),
        ("GET", "/v2/schemas/metadefs/namespace".into(), "", b""),
        ("GET", "/v2".into(), "", b""),
        ("GET", "/v2/no-such-route".into(), "", b""),
        ("GET", "/no-such-route".into(), "", b""),
    ]
}

#[test]
fn token_is_required_on_every_api_route() {
    let server = token_server(&[TOKEN]);
    let addr = server.addr();
    for (method, path, content_type, body) in api_routes() {
        let mut headers = Vec::new();
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        let what = format!("{method} {path}");
        for token in [
            None,
            Some("wrong"),
            Some(""),
            Some("s3cret-toke"),
            Some("s3cret-token2"),
        ] {
            let response = call(addr, method, &path, token, &headers, body);
            assert_unauthorized(&response, &format!("{what} with {token:?}"));
        }
        let response = call(addr, method, &path, Some(TOKEN), &headers, body);
        assert_ne!(
            response.status,
            401,
            "{what} with the token: {}",
            response.text()
        );
    }
    assert!(
        !server.log().contains(TOKEN),
        "a token was logged:\n{}",
        server.log()
    );
}

#[test]
fn refusal_is_json_for_json_clients_and_text_otherwise() {
    let server = token_server(&[TOKEN]);
    let addr = server.addr();
    let text = call(addr, "GET", "/v2/images", None, &[], b"");
    assert_unauthorized(&text, "text client");
    assert!(
        text.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        text.headers
    );
    assert!(
        text.text().starts_with("401 Unauthorized\n\n")
            && text.text().contains("send an X-Auth-Token header"),
        "{}",
        text.text()
    );
    let wrong = call(
        addr,
        "GET",
        "/v2/images",
        Some("wrong"),
        &[("Accept", "application/json")],
        b"",
    );
    assert_unauthorized(&wrong, "JSON client");
    let body = json(&wrong);
    assert_eq!(body["code"], "401 Unauthorized", "{body}");
    assert_eq!(body["title"], "Unauthorized", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not valid")),
        "{body}"
    );
    assert!(!wrong.text().contains("wrong"), "{}", wrong.text());
}

#[test]
fn health_check_and_version_discovery_need_no_token() {
    let server = token_server(&[TOKEN]);
    let addr = server.addr();
    for token in [None, Some("wrong"), Some(TOKEN)] {
        for (path, status) in [("/healthcheck", 200), ("/", 300), ("/versions", 200)] {
            let response = call(addr, "GET", path, token, &[], b"");
            assert_eq!(response.status, status, "GET {path} with {token:?}");
        }
        // A wrong method on an open path is answered as without access control.
        let response = call(addr, "POST", "/versions", token, &[], b"");
        assert_eq!(response.status, 405, "POST /versions with {token:?}");
    }
}

#[test]
fn right_token_creates_uploads_and_downloads() {
    let server = token_server(&[TOKEN, OTHER_TOKEN]);
    let addr = server.addr();
    let id = create_image(addr, Some(TOKEN));
    let data = b"image bytes sent with a token";
    let uploaded = call(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        Some(OTHER_TOKEN),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());
    let downloaded = call(
        addr,
        "GET",
        &format!("/v2/images/{id}/file"),
        Some(TOKEN),
        &[],
        b"",
    );
    assert_eq!(downloaded.status, 200);
    assert_eq!(downloaded.body, data);
    // Without the token the image is neither shown nor deleted.
    let path = format!("/v2/images/{id}");
    assert_unauthorized(&call(addr, "DELETE", &path, None, &[], b""), "DELETE");
    assert_eq!(call(addr, "GET", &path, Some(TOKEN), &[], b"").status, 200);
    assert_eq!(
        call(addr, "DELETE", &path, Some(TOKEN), &[], b"").status,
        204
    );
}

#[test]
fn noauth_default_needs_no_token() {
    let server = Server::start("");
    let addr = server.addr();
    for token in [None, Some("anything")] {
        let response = call(addr, "GET", "/v2/images", token, &[], b"");
        assert_eq!(response.status, 200, "{token:?}: {}", response.text());
        assert_eq!(response.header("www-authenticate"), None);
    }
    create_image(addr, None);
}

/// Waits until `token` gets `accepted` (true) or 401 (false) on the image list: right after a
/// reload an old child may still take a connection already queued.
fn wait_for_token(server: &Server, token: &str, accepted: bool) {
    util::wait_until(
        &format!(
            "token {token:?} to be {}",
            if accepted { "accepted" } else { "refused" }
        ),
        DEADLINE,
        || {
            let status = call(server.addr(), "GET", "/v2/images", Some(token), &[], b"").status;
            let expected = if accepted { 200 } else { 401 };
            status == expected
        },
    );
}

#[test]
fn token_file_changes_take_effect_on_sighup() {
    let server = token_server(&[TOKEN]);
    let token_file = server.path("tokens");
    let addr = server.addr();
    assert_unauthorized(
        &call(addr, "GET", "/v2/images", Some(OTHER_TOKEN), &[], b""),
        "before the reload",
    );

    // Added: the new generation accepts it, and the old token still works.
    write_tokens(&token_file, &[TOKEN, OTHER_TOKEN]);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    wait_for_token(&server, OTHER_TOKEN, true);
    wait_for_token(&server, TOKEN, true);

    // Removed: it stops working.
    write_tokens(&token_file, &[OTHER_TOKEN]);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    wait_for_token(&server, TOKEN, false);
    wait_for_token(&server, OTHER_TOKEN, true);
    assert!(!server.log().contains(OTHER_TOKEN), "{}", server.log());
}

#[test]
fn reload_with_a_missing_or_empty_token_file_fails_and_changes_nothing() {
    let server = token_server(&[TOKEN]);
    let token_file = server.path("tokens");
    let generation = server.status()["generation"].clone();
    let cases: [(&str, Option<&str>, &str); 2] = [
        ("missing", None, "cannot read `"),
        ("empty", Some("# all tokens revoked?\n"), "lists no token"),
    ];
    for (name, content, expected) in cases {
        match content {
            Some(text) => fs::write(&token_file, text).expect("write tokens"),
            None => fs::remove_file(&token_file).expect("remove tokens"),
        }
        let verdict = server.reload();
        assert_eq!(verdict["outcome"], "failed", "{name}: {verdict}");
        let error = verdict["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("glint-api.conf:")
                && error.contains("[DEFAULT] auth_token_file: ")
                && error.contains(expected),
            "{name}: {error:?} lacks {expected:?}"
        );
        assert_eq!(server.status()["generation"], generation, "{name}");
        wait_for_token(&server, TOKEN, true);
        assert_unauthorized(
            &call(server.addr(), "GET", "/v2/images", None, &[], b""),
            name,
        );
    }
    write_tokens(&token_file, &[TOKEN]);
    assert_eq!(server.reload()["outcome"], "succeeded");
}

#[test]
fn reload_switches_between_noauth_and_token() {
    let server = Server::start("");
    write_tokens(&server.path("tokens"), &[TOKEN]);
    server.write_config("auth_strategy = token\nauth_token_file = tokens");
    assert_eq!(server.reload()["outcome"], "succeeded");
    wait_for_token(&server, "wrong", false);
    wait_for_token(&server, TOKEN, true);
    server.write_config("");
    assert_eq!(server.reload()["outcome"], "succeeded");
    wait_for_token(&server, "wrong", true);
}

/// Every regular file under `folder`, recursively.
fn files_under(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(folder).expect("read image folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn uploaded_image_file_is_never_world_readable_by_default() {
    let server = Server::start("");
    let addr = server.addr();
    let id = create_image(addr, None);
    let uploaded = call(
        addr,
        "PUT",
        &format!("/v2/images/{id}/file"),
        None,
        &[("Content-Type", "application/octet-stream")],
        &[7u8; 4096],
    );
    assert_eq!(uploaded.status, 204, "{}", uploaded.text());
    let files = files_under(&server.path("images"));
    let stored: Vec<&PathBuf> = files
        .iter()
        .filter(|path| path.to_string_lossy().contains(&id))
        .collect();
    assert_eq!(stored.len(), 1, "image files: {files:?}");
    for path in &files {
        let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode & 0o007, 0, "{} has mode {mode:04o}", path.display());
    }
    let mode = fs::metadata(stored[0]).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "{}", stored[0].display());
}

/// Issue 10, hole 5: a rolling reload that revokes a token is done with the whole generation at
/// once, so no old child takes a new connection under the old token list once the new generation
/// serves (the rule is unit-tested in `process::machine`); after the verdict, every fresh request
/// with the revoked token is refused and the kept token works.
#[test]
fn a_rolling_reload_that_revokes_a_token_replaces_every_child_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, &[TOKEN, OTHER_TOKEN]);
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config(
            "auth_strategy = token\nauth_token_file = tokens\nreload_strategy = rolling",
        ),
    )
    .expect("write config");
    let server = Server::start_with(dir, config_path, &[]);
    assert_eq!(
        call(
            server.addr(),
            "GET",
            "/v2/images",
            Some(OTHER_TOKEN),
            &[],
            b""
        )
        .status,
        200
    );
    write_tokens(&tokens, &[TOKEN]);
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "succeeded", "{verdict}");
    assert!(
        server
            .log()
            .contains("the access control changed, so all children are replaced at once"),
        "{}",
        server.log()
    );
    for attempt in 0..50 {
        let response = call(
            server.addr(),
            "GET",
            "/v2/images",
            Some(OTHER_TOKEN),
            &[],
            b"",
        );
        assert_eq!(
            response.status, 401,
            "attempt {attempt}: the revoked token worked"
        );
    }
    assert_eq!(
        call(server.addr(), "GET", "/v2/images", Some(TOKEN), &[], b"").status,
        200
    );
}

/// Opens a keep-alive connection, sends `request` on it and checks the answer's status; returns
/// the connection and its reader, for the next request.
fn keepalive_exchange(
    server: &Server,
    request: &str,
    status: u16,
) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    stream.write_all(request.as_bytes()).unwrap();
    let response = util::read_response(&mut reader, "GET").unwrap().unwrap();
    assert!(
        response.status == status && !response.closes(),
        "{request:?}: {response:?}"
    );
    (stream, reader)
}

/// Issue 10, hole 2: a client that never authenticated must not hold a slot for long. With
/// `client_header_timeout = 2` and `client_socket_timeout = 60`, a keep-alive connection that only
/// called open routes (`/healthcheck`, `/versions`) is closed about 2 s after its answer, under
/// `auth_strategy = token` and under `noauth` alike, and so is one whose good token was followed
/// by a 401; a connection whose credentials were accepted (a listed token; under `noauth`, any
/// API request), answered before those and so idle longer, is still served afterwards, and so
/// is an open-route connection that then sent a good token.
#[test]
fn a_connection_that_never_authenticated_waits_only_the_header_timeout() {
    use std::io::Write;
    let timeouts = "workers = 1\nclient_header_timeout = 2\nclient_socket_timeout = 60";
    let dir = tempfile::tempdir().expect("temporary directory");
    write_tokens(&dir.path().join("tokens"), &[TOKEN]);
    let config_path = dir.path().join("glint-api.conf");
    fs::write(
        &config_path,
        util::base_config(&format!(
            "{timeouts}\nauth_strategy = token\nauth_token_file = tokens"
        )),
    )
    .unwrap();
    let token_server = Server::start_with(dir, config_path, &[]);
    let noauth_server = Server::start(timeouts);
    let get = |path: &str, token: Option<&str>| {
        let token = token.map_or(String::new(), |t| format!("X-Auth-Token: {t}\r\n"));
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{token}\r\n")
    };
    for (server, accepted_token) in [(&token_server, Some(TOKEN)), (&noauth_server, None)] {
        // The trusted connections are answered first, so that when the untrusted ones have been
        // closed, the trusted ones have been idle longer than `client_header_timeout`: had they
        // been given that timeout, they would be closed already.
        let (mut authenticated, mut authenticated_reader) =
            keepalive_exchange(server, &get("/v2/images", accepted_token), 200);
        let (mut upgraded, mut upgraded_reader) =
            keepalive_exchange(server, &get("/healthcheck", None), 200);
        upgraded
            .write_all(get("/v2/images", accepted_token).as_bytes())
            .unwrap();
        let response = util::read_response(&mut upgraded_reader, "GET")
            .unwrap()
            .unwrap();
        assert_eq!(response.status, 200);
        let trusted_since = std::time::Instant::now();
        let (open_only, _) = keepalive_exchange(server, &get("/healthcheck", None), 200);
        let (versions_only, _) = keepalive_exchange(server, &get("/versions", None), 200);
        let mut untrusted = vec![("/healthcheck", open_only), ("/versions", versions_only)];
        if accepted_token.is_some() {
            // Accepted, then refused: the 401 withdraws the trust.
            let (mut refused, mut refused_reader) =
                keepalive_exchange(server, &get("/v2/images", accepted_token), 200);
            refused
                .write_all(get("/v2/images", Some("not-a-listed-token")).as_bytes())
                .unwrap();
            let response = util::read_response(&mut refused_reader, "GET")
                .unwrap()
                .unwrap();
            assert!(response.status == 401 && !response.closes(), "{response:?}");
            untrusted.push(("/v2/images with a good token, then a bad one", refused));
        }
        for (name, mut stream) in untrusted {
            assert!(
                util::peer_closed(&mut stream, std::time::Duration::from_secs(10)),
                "the connection that called {name} was still open 10 s after its answer \
                 (client_socket_timeout = 60 applied)"
            );
        }
        let trusted_idle = trusted_since.elapsed();
        eprintln!("untrusted connections closed; the trusted ones idle for {trusted_idle:?}");
        assert!(trusted_idle >= std::time::Duration::from_secs(2));
        for (name, stream, reader) in [
            (
                "authenticated",
                &mut authenticated,
                &mut authenticated_reader,
            ),
            ("upgraded", &mut upgraded, &mut upgraded_reader),
        ] {
            stream
                .write_all(get("/v2/images", accepted_token).as_bytes())
                .unwrap();
            let response = util::read_response(reader, "GET");
            assert!(
                matches!(&response, Ok(Some(r)) if r.status == 200),
                "the {name} connection, idle {trusted_idle:?}, longer than \
                 client_header_timeout: {response:?}"
            );
        }
    }
}
