//! `GET /v2/images/{id}` answered from a child's memory (issue 13 part 3, `api::shown`): never
//! what the registry no longer holds, on any child, whichever child wrote. That the memory is
//! used at all is `request_cost`'s test (no SQLite lock taken by the answering thread).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Write};
use std::net::TcpStream;

use serde_json::Value;

use crate::util::{self, Server, DEADLINE};

const PATCH: &str = "application/openstack-images-v2.1-json-patch";

/// Rounds of a write by one child followed by reads on every child.
const ROUNDS: usize = 20;

/// A keep-alive connection, which stays with the child that accepted it.
struct Kept {
    reader: BufReader<TcpStream>,
    /// Its local port, which the access lines show.
    port: u16,
}

impl Kept {
    fn open(server: &Server) -> Kept {
        let stream = TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let port = stream.local_addr().expect("local address").port();
        Kept {
            reader: BufReader::new(stream),
            port,
        }
    }

    fn get(&mut self, path: &str) -> util::Response {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("send");
        util::read_response(&mut self.reader, "GET")
            .expect("a response")
            .unwrap_or_else(|| panic!("GET {path} on port {}: the connection closed", self.port))
    }
}

/// The pid of the child that logged the access line of a request from `port`, once it is there.
fn child_of(server: &Server, port: u16) -> i32 {
    let needle = format!("127.0.0.1:{port} \"GET ");
    util::wait_until("the access line of a kept connection", DEADLINE, || {
        server.log().contains(&needle)
    });
    server.pid_that_logged(&needle)
}

#[test]
fn every_child_shows_each_write_of_another_at_once_and_a_deleted_image_never() {
    let server = Server::start("workers = 2");
    let id = util::create_image(server.addr());
    let path = format!("/v2/images/{id}");
    let children: BTreeSet<i32> = server.children(None).into_iter().collect();
    assert_eq!(children.len(), 2, "{}", server.log());

    // Keep-alive connections until each child holds one; each one's first GET fills its
    // child's memory.
    let mut kept = Vec::new();
    let mut served_by: HashMap<i32, usize> = HashMap::new();
    util::wait_until("a kept connection on each child", DEADLINE, || {
        let mut connection = Kept::open(&server);
        assert_eq!(connection.get(&path).status, 200);
        *served_by
            .entry(child_of(&server, connection.port))
            .or_default() += 1;
        kept.push(connection);
        served_by.len() == children.len()
    });
    assert_eq!(
        served_by.keys().copied().collect::<BTreeSet<_>>(),
        children,
        "{}",
        server.log()
    );

    for round in 0..ROUNDS {
        let name = format!("round {round}");
        let body = format!(r#"[{{"op": "replace", "path": "/name", "value": "{name}"}}]"#);
        let patched = util::send_body(server.addr(), "PATCH", &path, PATCH, body.as_bytes());
        assert_eq!(patched.status, 200, "{}", patched.text());
        for connection in &mut kept {
            let shown = connection.get(&path);
            assert_eq!(shown.status, 200, "{}", shown.text());
            let image: Value = serde_json::from_slice(&shown.body).expect("JSON");
            assert_eq!(
                image["name"], name,
                "round {round}: the child of port {} showed a stale image",
                connection.port
            );
        }
    }

    let deleted = util::request(server.addr(), "DELETE", &path, &[], b"").expect("DELETE");
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    for connection in &mut kept {
        let shown = connection.get(&path);
        assert_eq!(
            shown.status,
            404,
            "the child of port {} showed a deleted image: {}",
            connection.port,
            shown.text()
        );
    }
}
