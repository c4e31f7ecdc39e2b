//! HTTP to Keystone: one blocking ureq agent per child, every call bounded by a [`Deadline`].
//!
//! A call is tried again at once after a connection failure (refused, reset, connect timeout,
//! name not found), up to `http_request_max_retries` times, as keystoneauth's
//! `connect_retries` does, but within the request's deadline and without keystoneauth's
//! growing sleeps: a Keystone that refuses connections makes a client wait milliseconds, not
//! seconds. An answer that is late is not retried: the deadline is spent.
//!
//! Each connection attempt waits at most `http_connect_timeout` (and never past the
//! deadline); the whole call, answer and body included, ends by the deadline. The agent keeps
//! no idle connection: Keystone's wsgiref server closes every connection anyway, and one held
//! open idle would block it for everyone (docs/KEYSTONE-TESTING.md, "The server").
//! It ignores `http_proxy` and friends: glint talks to Keystone directly.
//!
//! Nothing here logs; callers do, without tokens.

use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

use crate::config::KeystoneSettings;

/// The most of an answer's body glint reads. A token document without its catalog is a few
/// KiB; glint's own token, which carries the catalog, rarely reaches 100 KiB.
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// The answer of a call that reached Keystone, whatever its status.
pub struct Reply {
    pub status: u16,
    /// `X-Subject-Token`, the token a `POST /v3/auth/tokens` issued.
    pub subject_token: Option<String>,
    pub body: Vec<u8>,
}

/// A call that got no answer: Keystone unreachable, too slow, or speaking something else.
#[derive(Debug)]
pub struct Unreachable {
    /// What failed, for the log (no token: URLs and errors only).
    pub detail: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// When everything one client request asks of Keystone must be done.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    /// When the client request started waiting for Keystone.
    pub started: Instant,
    pub at: Instant,
}

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        let started = Instant::now();
        Deadline {
            started,
            at: started + budget,
        }
    }

    /// The time left, `None` once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    }
}

/// The child's connection to Keystone.
pub struct Client {
    agent: Agent,
    connect_timeout: Duration,
    max_retries: u32,
}

impl Client {
    /// An agent for `settings`: the CA certificates of `cafile` (else the built-in Mozilla
    /// roots), `insecure`, no pool, no proxy. Builds nothing that can fail and connects to
    /// nothing (that happens at the first call).
    pub fn new(settings: &KeystoneSettings) -> Client {
        let mut tls = TlsConfig::builder().disable_verification(settings.insecure);
        if let Some(certificates) = &settings.ca_certificates {
            let certificates: Vec<Certificate<'static>> = certificates
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .collect();
            tls = tls.root_certs(RootCerts::new_with_certs(&certificates));
        }
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("glint/", env!("CARGO_PKG_VERSION"), " keystone"))
            .tls_config(tls.build())
            .build()
            .new_agent();
        Client {
            agent,
            connect_timeout: settings.http_connect_timeout,
            max_retries: settings.http_request_max_retries,
        }
    }

    /// `GET url` with `headers`.
    pub fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        deadline: &Deadline,
    ) -> Result<Reply, Unreachable> {
        self.call(url, deadline, |timeouts| {
            let mut request = self
                .agent
                .get(url)
                .config()
                .timeout_global(Some(timeouts.total))
                .timeout_connect(Some(timeouts.connect))
                .build()
                .header("Accept", "application/json");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        })
    }

    /// `POST url` with a JSON body.
    pub fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        deadline: &Deadline,
    ) -> Result<Reply, Unreachable> {
        let body = body.to_string();
        self.call(url, deadline, |timeouts| {
            self.agent
                .post(url)
                .config()
                .timeout_global(Some(timeouts.total))
                .timeout_connect(Some(timeouts.connect))
                .build()
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(body.as_bytes())
        })
    }

    /// One call with its retries: `attempt` sends the request with the timeouts left.
    fn call(
        &self,
        url: &str,
        deadline: &Deadline,
        attempt: impl Fn(Timeouts) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Reply, Unreachable> {
        let mut failures: Vec<String> = Vec::new();
        for _ in 0..=self.max_retries {
            let Some(total) = deadline.remaining() else {
                break;
            };
            let timeouts = Timeouts {
                total,
                connect: self.connect_timeout.min(total),
            };
            match attempt(timeouts).and_then(read_reply) {
                Ok(reply) => return Ok(reply),
                Err(error) if is_connection_failure(&error) => {
                    failures.push(error.to_string());
                }
                Err(error) => {
                    failures.push(error.to_string());
                    return Err(unreachable(url, &failures, deadline));
                }
            }
        }
        if failures.is_empty() {
            failures.push("no time left".to_string());
        }
        Err(unreachable(url, &failures, deadline))
    }
}

/// The timeouts of one attempt.
#[derive(Clone, Copy)]
struct Timeouts {
    total: Duration,
    connect: Duration,
}

/// The status, `X-Subject-Token` and body (at most [`MAX_BODY_BYTES`]) of a response.
fn read_reply(mut response: ureq::http::Response<ureq::Body>) -> Result<Reply, ureq::Error> {
    let status = response.status().as_u16();
    let subject_token = response
        .headers()
        .get("x-subject-token")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let mut body = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .reader()
        .read_to_end(&mut body)
        .map_err(ureq::Error::from)?;
    Ok(Reply {
        status,
        subject_token,
        body,
    })
}

/// Whether `error` means the connection was never made (or died before an answer), so that
/// trying again at once may work: what keystoneauth counts as a `ConnectFailure`.
fn is_connection_failure(error: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match error {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::NotConnected
                | ErrorKind::AddrNotAvailable
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::BrokenPipe
        ),
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        _ => false,
    }
}

fn unreachable(url: &str, failures: &[String], deadline: &Deadline) -> Unreachable {
    let n_attempts = failures.len();
    let last = failures.last().map(String::as_str).unwrap_or_default();
    let waited = deadline.started.elapsed().as_millis();
    Unreachable {
        detail: if n_attempts > 1 {
            format!("{url}: {last} ({n_attempts} attempts, {waited} ms)")
        } else {
            format!("{url}: {last} ({waited} ms)")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Domain, Principal, Secret};
    use std::net::TcpListener;

    fn client(retries: u32) -> Client {
        Client::new(&KeystoneSettings {
            auth_url: "http://127.0.0.1:1".to_string(),
            identity_url: "http://127.0.0.1:1/v3".to_string(),
            www_authenticate_uri: "http://127.0.0.1:1".to_string(),
            user: Principal::Name {
                name: "glint".to_string(),
                domain: Domain::Name("Default".to_string()),
            },
            password: Secret::new("pw".to_string()),
            project: Principal::Id("p".to_string()),
            region_name: None,
            interface: "internal",
            service_token_roles: Vec::new(),
            service_token_roles_required: false,
            token_cache_time: None,
            ca_certificates: None,
            insecure: false,
            http_connect_timeout: Duration::from_secs(1),
            http_request_timeout: Duration::from_secs(1),
            http_request_max_retries: retries,
        })
    }

    #[test]
    fn a_refused_connection_is_tried_again_at_once() {
        // A port nobody listens on any more.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind")
            .port();
        let began = Instant::now();
        let deadline = Deadline::after(Duration::from_secs(30));
        let error = client(3)
            .get(&format!("http://127.0.0.1:{port}/v3"), &[], &deadline)
            .err()
            .expect("refused");
        assert!(error.detail.contains("(4 attempts"), "{error}");
        assert!(error.detail.contains("refused"), "{error}");
        // No sleeps between attempts: milliseconds; 5 s is slack for a loaded machine.
        assert!(began.elapsed() < Duration::from_secs(5), "{error}");
    }

    #[test]
    fn a_server_that_never_answers_costs_the_deadline_and_is_not_retried() {
        // The kernel accepts connections into the backlog; nobody reads or answers.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let began = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(800));
        let error = client(3)
            .get(&format!("http://127.0.0.1:{port}/v3"), &[], &deadline)
            .err()
            .expect("timed out");
        let took = began.elapsed();
        assert!(error.detail.contains("timeout"), "{error}");
        assert!(!error.detail.contains("attempts"), "not retried: {error}");
        assert!(took >= Duration::from_millis(700), "{took:?}: {error}");
        assert!(took < Duration::from_secs(5), "{took:?}: {error}");
        // A deadline already past sends nothing.
        let past = Deadline {
            started: Instant::now(),
            at: Instant::now(),
        };
        let error = client(3)
            .get(&format!("http://127.0.0.1:{port}/v3"), &[], &past)
            .err()
            .expect("no time");
        assert!(error.detail.contains("no time left"), "{error}");
        drop(listener);
    }
}
