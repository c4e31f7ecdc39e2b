//! Log records to the local syslog daemon: RFC 3164 datagrams on the `/dev/log` socket, as
//! oslo.log's `use_syslog` sends them (through Python's `SysLogHandler`).
//!
//! Each record is one datagram, `<PRI>Mmm dd hh:mm:ss glint-api[PID]: LEVEL role: message`, with
//! PRI = facility × 8 + severity (RFC 3164 §4.1.1). The message is the same escaped single line
//! the log file gets, so a syslog line can no more be forged than a file line.
//!
//! Written by hand rather than through libc's `openlog`/`syslog`, for two reasons: libc's socket
//! is blocking (a stalled syslog daemon would stall the master, which must never block), and
//! libc keeps its descriptor to itself, so a child that closes the master's descriptors after
//! `fork()` could leave libc writing into a number since reused by a listener. Here the socket is
//! non-blocking (a full queue drops the line, as a full disk drops a file line), and the
//! [`Syslog`] value owns its descriptor, which `logging::open_fds` names for the child to keep.
//!
//! This module does not decide which records go to syslog; `logging` does. The facility names
//! are the config's (`config::syslog_facility`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// The local syslog socket, as libc's `_PATH_LOG` names it.
pub const SOCKET: &str = "/dev/log";

/// The largest datagram sent; a longer record is cut (at a character boundary). rsyslog's
/// default `maxMessageSize` is 8 KiB, and a larger datagram may fail with EMSGSIZE.
const MAX_DATAGRAM: usize = 8192;

/// RFC 3164 severity of a log level (§4.1.1, table 2).
pub fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// A datagram socket connected to the local syslog daemon.
pub struct Syslog {
    socket: UnixDatagram,
    facility: u8,
}

impl Syslog {
    /// Connects to [`SOCKET`]. Fails, naming the socket, when no syslog daemon listens there.
    pub fn connect(facility: u8) -> io::Result<Syslog> {
        Ok(Syslog {
            socket: connect(Path::new(SOCKET))?,
            facility,
        })
    }

    /// Sends one record. A daemon restarted since the connect (ECONNREFUSED, ENOTCONN, ENOENT)
    /// is reconnected to once; any other failure, a full queue included, drops the line: there
    /// is nowhere to report it.
    pub fn send(&mut self, level: log::Level, pid: u32, message: &str) {
        let datagram = datagram(self.facility, severity(level), pid, message);
        if let Err(error) = self.socket.send(&datagram) {
            let reconnect = matches!(
                error.raw_os_error(),
                Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT)
            );
            if reconnect {
                if let Ok(socket) = connect(Path::new(SOCKET)) {
                    self.socket = socket;
                    let _ = self.socket.send(&datagram);
                }
            }
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "cannot connect to the syslog socket {}: {error}",
                path.display()
            ),
        )
    })?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// `<PRI>Mmm dd hh:mm:ss glint-api[PID]: message`, the timestamp in local time as RFC 3164
/// §4.1.2 asks (the day space-padded), cut to [`MAX_DATAGRAM`] bytes.
fn datagram(facility: u8, severity: u8, pid: u32, message: &str) -> Vec<u8> {
    let priority = u32::from(facility) * 8 + u32::from(severity);
    let mut text = format!(
        "<{priority}>{} glint-api[{pid}]: {message}",
        local_timestamp()
    );
    if text.len() > MAX_DATAGRAM {
        let mut end = MAX_DATAGRAM;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.into_bytes()
}

fn local_timestamp() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) and localtime_r with a zeroed out-parameter owned by this frame.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return "Jan  1 00:00:00".to_string();
    }
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_carries_priority_timestamp_tag_and_is_cut_at_a_character() {
        let sent = String::from_utf8(datagram(16, 3, 42, "ERROR master: boom")).unwrap();
        assert!(sent.starts_with("<131>"), "{sent}");
        // `<131>Mmm dd hh:mm:ss ` is 5 + 16 bytes.
        assert_eq!(&sent[21..], "glint-api[42]: ERROR master: boom", "{sent}");
        let long = "é".repeat(MAX_DATAGRAM);
        let sent = datagram(1, 6, 1, &long);
        assert!(sent.len() <= MAX_DATAGRAM && sent.len() > MAX_DATAGRAM - 2);
        assert!(String::from_utf8(sent).is_ok());
    }
}
