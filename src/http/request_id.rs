//! Request ids, as every OpenStack service gives them: each response carries
//! `x-openstack-request-id: req-<uuid4>`, and every log line about the request names the same id,
//! so an operator can go from a client's error to the server's lines about it.
//!
//! Like oslo.middleware's `RequestId` middleware (which Glance's pipeline runs first), the id is
//! always generated here and never taken from the client: a client-chosen id could collide with
//! another request's or forge a log line's. It is made when the request is taken by a worker,
//! or when the HTTP layer answers on its own (400 for a head it cannot parse, 408 for a head that
//! did not arrive), so no response goes out without one. This is OpenStack's convention, not
//! Glance's API: it holds for every route, the health check included.
//!
//! The id reaches the log lines through `logging::RequestScope`, which prefixes `[req-...]` to
//! every line logged on the thread while it lives, as oslo.log puts the request context before
//! the message; the access line is logged in the same scope wherever the response ends.

use std::fmt;

/// The response header that carries the id (oslo.middleware's `HTTP_RESP_HEADER_REQUEST_ID`).
pub const HEADER: &str = "x-openstack-request-id";

/// One request's id: `req-` and a random (version 4) UUID in its hyphenated lowercase form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A new, random id.
    pub fn generate() -> RequestId {
        RequestId(format!("req-{}", uuid::Uuid::new_v4()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_req_and_a_version_4_uuid_and_differ() {
        let first = RequestId::generate();
        let second = RequestId::generate();
        assert_ne!(first, second);
        let uuid = first.as_str().strip_prefix("req-").expect("req- prefix");
        let parsed = uuid::Uuid::parse_str(uuid).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.hyphenated().to_string(), uuid);
    }
}
