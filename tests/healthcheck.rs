//! `/healthcheck` as oslo.middleware answers it, and the files that take a node out of its load
//! balancer (`[healthcheck]`, issue 15, part 3).

use std::fs;

use serde_json::Value;

use crate::util::{self, Server};

fn check(server: &Server, method: &str, accept: Option<&str>) -> util::Response {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    util::request(server.addr(), method, "/healthcheck", &headers, b"")
        .unwrap_or_else(|error| panic!("{method} /healthcheck: {error}\n{}", server.log()))
}

#[test]
fn a_disable_file_takes_the_node_out_and_its_removal_puts_it_back() {
    // A relative path: taken from the config file's folder.
    let server = Server::start("\n[healthcheck]\ndisable_by_file_path = maintenance");
    let disable = server.path("maintenance");

    let healthy = check(&server, "GET", None);
    assert_eq!((healthy.status, healthy.text()), (200, "OK".to_string()));
    let head = check(&server, "HEAD", None);
    assert_eq!((head.status, head.body.len()), (204, 0));
    // RFC 9110: no Content-Length on a 204.
    assert_eq!(head.header("content-length"), None, "{:?}", head.headers);

    fs::write(&disable, b"").expect("create the disable file");
    let out = check(&server, "GET", Some("*/*"));
    assert_eq!(out.status, 503, "{}", server.log());
    assert_eq!(out.text(), "DISABLED BY FILE");
    assert_eq!(
        out.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    let head = check(&server, "HEAD", None);
    assert_eq!((head.status, head.body.len()), (503, 0));
    let json = check(&server, "GET", Some("application/json"));
    assert_eq!(json.status, 503);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let document: Value = serde_json::from_slice(&json.body).expect("a JSON body");
    assert_eq!(
        document,
        serde_json::json!({"detailed": false, "reasons": ["DISABLED BY FILE"]})
    );
    let html = check(&server, "GET", Some("text/html"));
    assert_eq!(html.status, 503);
    assert!(
        html.text().contains("<TD>DISABLED BY FILE</TD>"),
        "{}",
        html.text()
    );
    // Only the health check says so: the node still serves what it is sent.
    let images = util::get(server.addr(), "/v2/images").expect("list");
    assert_eq!(images.status, 200);

    fs::remove_file(&disable).expect("remove the disable file");
    let back = check(&server, "GET", None);
    assert_eq!((back.status, back.text()), (200, "OK".to_string()));
}

#[test]
fn per_port_files_apply_to_their_port_and_come_with_a_reload() {
    let server = Server::start("");
    let port = server.addr().port();
    let mine = server.path("disable-mine");
    let other = server.path("disable-other");
    fs::write(&other, b"").expect("create the other port's file");
    let other_port = if port == 1 { 2 } else { port - 1 };
    // Both backends: the node is out when either says so.
    server.write_config(&format!(
        "\n[healthcheck]\nbackends = disable_by_file, disable_by_files_ports\n\
         disable_by_file_path = disable-all\n\
         disable_by_file_paths = {other_port}:disable-other, {port}:disable-mine"
    ));
    server.reload_succeeds();
    let ok = check(&server, "GET", Some("application/json"));
    assert_eq!(
        ok.status,
        200,
        "another port's file does not count: {}",
        ok.text()
    );
    let document: Value = serde_json::from_slice(&ok.body).expect("JSON");
    assert_eq!(document["reasons"], serde_json::json!(["OK", "OK"]));

    fs::write(&mine, b"").expect("create this port's file");
    let out = check(&server, "GET", None);
    assert_eq!(
        (out.status, out.text()),
        (503, "OK\nDISABLED BY FILE".to_string())
    );

    // A malformed item fails the reload, naming the option, and changes nothing.
    server.write_config(
        "\n[healthcheck]\nbackends = disable_by_files_ports\ndisable_by_file_paths = x:y",
    );
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let log = server.log();
    assert!(
        log.contains("[healthcheck] disable_by_file_paths")
            && log.contains("`x:y` is not PORT:PATH"),
        "{log}"
    );
    assert_eq!(check(&server, "GET", None).status, 503);
}
