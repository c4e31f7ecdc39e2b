//! The service manager's notify protocol (sd_notify(3)), spoken by the master itself: no
//! libsystemd, one datagram per state change on the Unix socket named by `$NOTIFY_SOCKET`.
//!
//! With `Type=notify` (scripts/systemd/glint-api.service, whose `ExecReload=` is `glint-api
//! reload`) systemd learns from these messages when glint serves and what a reload did; with
//! `Type=notify-reload` (systemd 253 and later, sending SIGHUP itself) also when a reload it
//! asked for is over:
//!
//! - `READY=1` (with `MAINPID=` and `STATUS=`) once the first generation serves;
//! - `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC in µs) for every SIGHUP the master
//!   takes in, including one merged into a reload already under way;
//! - `READY=1` with `STATUS=` saying how it ended, whether the new generation serves or the
//!   reload was rejected or failed: either way the server serves again;
//! - `STOPPING=1` when a stop begins.
//!
//! Why a `RELOADING=1` per SIGHUP: after `systemctl reload` sends SIGHUP, systemd accepts only a
//! `RELOADING=1` whose `MONOTONIC_USEC=` is not older than its signal as the start of that
//! reload, then waits for `READY=1` (systemd's src/core/service.c, `service_notify_message`).
//! A SIGHUP merged into a pending reload is served by the reload that follows it, so the master
//! sends `READY=1` only when no reload follows at once: systemd then sees one reload that ends
//! with the last.
//!
//! # What it does not do
//!
//! It never blocks the master (the socket is non-blocking and a send that would block is
//! dropped), never retries, and never fails the server: systemd's own timeouts deal with a
//! message that did not arrive, and the first failure is logged once, at warn. Only the master
//! sends: [`Notifier::from_env`] removes `NOTIFY_SOCKET` from the environment, and no child code
//! holds a `Notifier`. Watchdog (`WATCHDOG=1`) and fd store messages are not implemented.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// The environment variable systemd sets for `Type=notify` and `Type=notify-reload` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where notifications go, from `$NOTIFY_SOCKET`: a filesystem path, or an abstract socket
/// name written with a leading `@`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// The last state announced, so each is sent once per change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Announced {
    /// Nothing yet: the first generation is starting.
    Nothing,
    /// `READY=1`: serving.
    Ready,
    /// `RELOADING=1`: a reload is under way.
    Reloading,
    /// `STOPPING=1`: the server is stopping; nothing follows.
    Stopping,
}

/// The master's side of the protocol. Without `$NOTIFY_SOCKET` every call does nothing.
pub struct Notifier {
    /// `None` when glint does not run under a service manager that asked for notifications.
    destination: Option<Destination>,
    announced: Announced,
    /// A send failed and was logged; later failures are not.
    warned: bool,
}

impl Destination {
    /// Parses a `$NOTIFY_SOCKET` value. `None` for an empty value or one systemd never sets
    /// (a relative path, or `vsock:`, which glint does not speak).
    pub fn parse(value: &str) -> Option<Destination> {
        if let Some(name) = value.strip_prefix('@') {
            return Some(Destination::Abstract(name.as_bytes().to_vec()));
        }
        if value.starts_with('/') {
            return Some(Destination::Path(PathBuf::from(value)));
        }
        None
    }
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and removes it from the environment, so that no child, and no
    /// program a child might run, takes the master's notifications for its own. Call it while the
    /// process is single-threaded (the master always is): changing the environment is not
    /// thread-safe.
    pub fn from_env() -> Notifier {
        let value = std::env::var_os(NOTIFY_SOCKET);
        if value.is_some() {
            std::env::remove_var(NOTIFY_SOCKET);
        }
        let destination = value.and_then(|value| {
            let text = value.to_string_lossy();
            let destination = Destination::parse(&text);
            if destination.is_none() {
                log::warn!(
                    "{NOTIFY_SOCKET}={text} is not a socket path or @abstract name; not \
                     notifying the service manager"
                );
            }
            destination
        });
        Notifier {
            destination,
            announced: Announced::Nothing,
            warned: false,
        }
    }

    /// A notifier that sends to `destination` (for tests).
    pub fn to(destination: Destination) -> Notifier {
        Notifier {
            destination: Some(destination),
            announced: Announced::Nothing,
            warned: false,
        }
    }

    /// The server serves: the first generation is ready, or a reload ended (whatever its
    /// outcome). `status` is a line for `systemctl status`.
    pub fn ready(&mut self, status: &str) {
        if matches!(self.announced, Announced::Ready | Announced::Stopping) {
            return;
        }
        let mut message = String::from("READY=1\n");
        if self.announced == Announced::Nothing {
            message.push_str(&format!("MAINPID={}\n", std::process::id()));
        }
        message.push_str(&status_field(status));
        self.announced = Announced::Ready;
        self.send(&message);
    }

    /// A SIGHUP was taken in: a reload begins, or one more will follow the reload under way.
    /// Sent each time, with a fresh timestamp (see the module doc); nothing once stopping.
    pub fn reloading(&mut self, status: &str) {
        if self.announced == Announced::Stopping {
            return;
        }
        let message = format!(
            "RELOADING=1\nMONOTONIC_USEC={}\n{}",
            monotonic_usec(),
            status_field(status)
        );
        self.announced = Announced::Reloading;
        self.send(&message);
    }

    /// A stop begins (graceful or immediate).
    pub fn stopping(&mut self, status: &str) {
        if self.announced == Announced::Stopping {
            return;
        }
        let message = format!("STOPPING=1\n{}", status_field(status));
        self.announced = Announced::Stopping;
        self.send(&message);
    }

    fn send(&mut self, message: &str) {
        let Some(destination) = &self.destination else {
            return;
        };
        if let Err(error) = send_datagram(destination, message.as_bytes()) {
            if !self.warned {
                self.warned = true;
                log::warn!(
                    "cannot notify the service manager at {NOTIFY_SOCKET}={}: {error}; \
                     systemd will not see glint's state changes (further failures are not logged)",
                    destination.show()
                );
            }
        }
    }
}

impl Destination {
    /// The `$NOTIFY_SOCKET` spelling, for messages.
    fn show(&self) -> String {
        match self {
            Destination::Path(path) => path.display().to_string(),
            Destination::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// Sends one datagram from a fresh unbound, non-blocking socket. A fresh socket per message
/// keeps the descriptor out of the children the master forks between messages.
fn send_datagram(destination: &Destination, message: &[u8]) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    let address = match destination {
        Destination::Path(path) => SocketAddr::from_pathname(path)?,
        Destination::Abstract(name) => SocketAddr::from_abstract_name(name)?,
    };
    let sent = socket.send_to_addr(message, &address)?;
    if sent != message.len() {
        return Err(io::Error::other(format!(
            "sent {sent} of {} bytes",
            message.len()
        )));
    }
    Ok(())
}

/// `STATUS=` with the text on one line (the protocol is newline-separated assignments).
fn status_field(status: &str) -> String {
    format!("STATUS={}\n", status.replace('\n', " "))
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC=` with.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer; CLOCK_MONOTONIC always
    // exists on Linux, so it cannot fail.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn notify_socket_values_parse_to_a_path_or_an_abstract_name() {
        assert_eq!(
            Destination::parse("/run/systemd/notify"),
            Some(Destination::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            Destination::parse("@glint/notify"),
            Some(Destination::Abstract(b"glint/notify".to_vec()))
        );
        assert_eq!(Destination::parse(""), None);
        assert_eq!(Destination::parse("relative/socket"), None);
        assert_eq!(Destination::parse("vsock:2:1234"), None);
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn each_state_change_is_sent_once_to_an_abstract_socket() {
        let name = format!("glint-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut notifier = Notifier::to(Destination::parse(&format!("@{name}")).unwrap());

        notifier.ready("generation 1 serving");
        let ready = receive(&socket);
        assert!(ready.starts_with("READY=1\n"), "{ready}");
        assert!(
            ready.contains(&format!("MAINPID={}\n", std::process::id())),
            "{ready}"
        );
        assert!(ready.contains("STATUS=generation 1 serving\n"), "{ready}");

        // Each SIGHUP gets its RELOADING with a timestamp no older than itself; one READY ends
        // both, and carries no MAINPID.
        let sighup = monotonic_usec();
        notifier.reloading("reloading");
        let second_sighup = monotonic_usec();
        notifier.reloading("one more reload");
        notifier.ready("generation 3\nserving");
        notifier.ready("ignored: already ready");
        let usec = |message: String| -> u64 {
            assert!(message.starts_with("RELOADING=1\n"), "{message}");
            message
                .lines()
                .find_map(|line| line.strip_prefix("MONOTONIC_USEC="))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {message:?}"))
        };
        assert!(usec(receive(&socket)) >= sighup);
        assert!(usec(receive(&socket)) >= second_sighup);
        assert_eq!(receive(&socket), "READY=1\nSTATUS=generation 3 serving\n");

        notifier.stopping("stopping");
        notifier.ready("nothing after STOPPING");
        notifier.reloading("nothing after STOPPING");
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=stopping\n");
        socket.set_nonblocking(true).unwrap();
        let mut buffer = [0u8; 64];
        assert!(
            socket.recv(&mut buffer).is_err(),
            "nothing follows STOPPING"
        );
    }

    #[test]
    fn a_missing_socket_does_not_fail_the_sender() {
        let mut notifier = Notifier::to(Destination::Path("/nonexistent/glint/notify".into()));
        notifier.ready("serving");
        notifier.reloading("reloading");
        assert!(notifier.warned);
    }
}
