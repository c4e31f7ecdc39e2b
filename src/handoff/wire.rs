//! The handoff's wire format: the socket pairs, and the messages that cross them.
//!
//! Every message is one `SOCK_SEQPACKET` record: a tag byte saying what it carries, a payload,
//! and at most one descriptor as `SCM_RIGHTS`. On a generation's channel a message is a client
//! connection (its socket, and the bytes already read from it as payload); on a child's control
//! socket it is a handoff target (the send end of a generation's channel, no payload), or an
//! accept switch (no payload, no descriptor: stop or go on accepting new clients, see
//! [`Control::Accepting`]). Receiving reports every message that did not arrive whole
//! (`MSG_CTRUNC`, `MSG_TRUNC`, a connection or target without its descriptor) as a
//! [`ReceiveError`]; nothing is skipped in silence. What a process does with
//! a message is not decided here: see `child_side` for the child, the master for itself.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// The most bytes a handed-off connection may carry along (what it had read of its next
/// request); a connection with more is closed instead. A whole request head is at most
/// `http::head::Limits::max_head_bytes`, 64 KiB with the default `max_header_line`.
pub const MAX_CARRIED_BYTES: usize = 128 * 1024;

/// Message tags: the first payload byte says what the message carries. A connection that has
/// not served a request yet travels as `TAG_FIRST_REQUEST`, so its new child keeps giving it the
/// header deadline rather than the (longer) idle timeout.
const TAG_CONNECTION: u8 = b'C';
const TAG_FIRST_REQUEST: u8 = b'F';
const TAG_TARGET: u8 = b'T';
const TAG_STOP_ACCEPTING: u8 = b'S';
const TAG_ACCEPT: u8 = b'A';

/// A message from the master on a child's control socket.
#[derive(Debug)]
pub enum Control {
    /// "Hand your connections to this channel" (the send end of a generation's channel).
    Target(OwnedFd),
    /// "Stop taking new clients" (`false`: a child of the generation being started serves) or
    /// "take them again" (`true`: that reload failed). Connections already held are served
    /// either way.
    Accepting(bool),
}

/// A socket pair for connection messages or control messages: `(one end, other end)`, both
/// non-blocking and close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|error| io::Error::other(format!("socketpair(AF_UNIX, SOCK_SEQPACKET): {error}")))
}

/// What travels with a handed-off connection besides its socket and carried bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// It has yet to serve its first request.
    pub first_request: bool,
    /// When its wait for a request head ends, if that wait is bounded by
    /// `client_header_timeout` (waiting for a first request, a partly received head, or idle
    /// and not trusted): the deadline travels with the connection, so a reload never extends it.
    /// On the wire it is CLOCK_MONOTONIC nanoseconds, the same clock in every process.
    pub header_deadline: Option<Instant>,
    /// `Connection::trusted`: its credentials were accepted, and no 401 came since.
    pub trusted: bool,
}

/// The fixed header of a connection message's payload, after the tag: the header deadline
/// (u64 little-endian CLOCK_MONOTONIC nanoseconds, 0 for none) and a flags byte. Both ends are
/// the same build (a reload re-executes nothing: the children of every generation run the
/// master's binary), so the format needs no version.
const CONNECTION_HEADER: usize = 9;
const FLAG_TRUSTED: u8 = 1;

/// Sends a connection (its socket and the bytes already read from it) on `channel`, with
/// nothing but `first_request` known about its deadline (the master's relays).
/// `WouldBlock` means the channel is full.
pub fn send_connection(
    channel: BorrowedFd<'_>,
    stream: BorrowedFd<'_>,
    carried: &[u8],
    first_request: bool,
) -> io::Result<()> {
    let with = Carried {
        first_request,
        ..Carried::default()
    };
    send_parked(channel, stream, carried, &with)
}

/// Sends a connection with its bytes and what travels with it (`with`).
/// `WouldBlock` means the channel is full.
pub fn send_parked(
    channel: BorrowedFd<'_>,
    stream: BorrowedFd<'_>,
    carried: &[u8],
    with: &Carried,
) -> io::Result<()> {
    if carried.len() > MAX_CARRIED_BYTES {
        return Err(io::Error::other(format!(
            "{} bytes read ahead, more than a handoff carries",
            carried.len()
        )));
    }
    let tag = if with.first_request {
        TAG_FIRST_REQUEST
    } else {
        TAG_CONNECTION
    };
    let deadline_ns = with
        .header_deadline
        .map_or(0, |at| to_monotonic_ns(at).max(1));
    let mut payload = Vec::with_capacity(CONNECTION_HEADER + carried.len());
    payload.extend_from_slice(&deadline_ns.to_le_bytes());
    payload.push(if with.trusted { FLAG_TRUSTED } else { 0 });
    payload.extend_from_slice(carried);
    send(channel, tag, &payload, Some(stream))
}

/// CLOCK_MONOTONIC now, in nanoseconds (0 if it cannot be read, which Linux never does).
fn monotonic_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |now| {
        u64::try_from(now.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(now.tv_nsec()).unwrap_or(0))
    })
}

/// `at` as CLOCK_MONOTONIC nanoseconds (`Instant` cannot say its own value).
fn to_monotonic_ns(at: Instant) -> u64 {
    let (now, now_ns) = (Instant::now(), monotonic_now_ns());
    match at.checked_duration_since(now) {
        Some(ahead) => now_ns.saturating_add(u64::try_from(ahead.as_nanos()).unwrap_or(u64::MAX)),
        None => now_ns
            .saturating_sub(u64::try_from(now.duration_since(at).as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// CLOCK_MONOTONIC nanoseconds as an `Instant` of this process (a past one at the earliest
/// `Instant` this process can represent near now: it has passed either way).
fn from_monotonic_ns(ns: u64) -> Instant {
    let (now, now_ns) = (Instant::now(), monotonic_now_ns());
    if ns >= now_ns {
        now + Duration::from_nanos(ns - now_ns)
    } else {
        now.checked_sub(Duration::from_nanos(now_ns - ns))
            .unwrap_or(now)
    }
}

/// A connection taken from a handoff channel.
#[derive(Debug)]
pub struct Received {
    /// The client's socket.
    pub fd: OwnedFd,
    /// The bytes the sending child had read from it and not used.
    pub carried: Vec<u8>,
    /// It has yet to serve its first request.
    pub first_request: bool,
    /// Its header deadline and flags, as sent.
    pub with: Carried,
}

/// Why a message could not be taken whole from a handoff channel or a control socket.
#[derive(Debug, PartialEq, Eq)]
pub enum ReceiveError {
    /// recvmsg(2) failed.
    Recvmsg(nix::errno::Errno),
    /// `MSG_CTRUNC`: the kernel could not install the descriptor the message carried (this
    /// process is at its open-files limit), so it closed it. The message is consumed: a
    /// connection is lost with it.
    DescriptorDiscarded,
    /// `MSG_TRUNC`: the payload was longer than any sender of ours sends; the message (and the
    /// descriptor it carried) is dropped rather than used with a hole in it.
    PayloadTruncated,
    /// A connection or target message that carried no descriptor; no sender of ours makes one.
    NoDescriptor,
    /// A message whose tag does not belong on this socket.
    UnexpectedTag(u8),
    /// A connection message shorter than its fixed header; no sender of ours makes one.
    ShortHeader,
}

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::Recvmsg(errno) => write!(f, "recvmsg() failed: {errno}"),
            ReceiveError::DescriptorDiscarded => f.write_str(
                "recvmsg() returned MSG_CTRUNC: the descriptor the message carried could not be \
                 installed (the open-files limit is reached) and was closed",
            ),
            ReceiveError::PayloadTruncated => {
                f.write_str("recvmsg() returned MSG_TRUNC: a message longer than any sender sends")
            }
            ReceiveError::NoDescriptor => f.write_str("a message without a descriptor"),
            ReceiveError::UnexpectedTag(tag) => write!(f, "a message with the unknown tag {tag:?}"),
            ReceiveError::ShortHeader => {
                f.write_str("a connection message shorter than its header")
            }
        }
    }
}

impl std::error::Error for ReceiveError {}

impl From<ReceiveError> for io::Error {
    fn from(error: ReceiveError) -> io::Error {
        match error {
            ReceiveError::Recvmsg(errno) => io::Error::from(errno),
            other => io::Error::other(other),
        }
    }
}

/// Receives one connection from `channel`: its socket, the bytes already read from it, and
/// whether it has yet to serve its first request. `None` when nothing is queued.
pub fn receive_connection(channel: BorrowedFd<'_>) -> io::Result<Option<(OwnedFd, Vec<u8>, bool)>> {
    Ok(take_connection(channel)?
        .map(|received| (received.fd, received.carried, received.first_request)))
}

/// Receives one connection from `channel`, with a typed error: a caller that can do something
/// about a lost descriptor (a child that stops adopting) needs to tell it from other failures.
/// `None` when nothing is queued. The caller checks for a free descriptor first (see
/// [`descriptors_free`]): a message whose descriptor cannot be installed is lost.
pub fn take_connection(channel: BorrowedFd<'_>) -> Result<Option<Received>, ReceiveError> {
    let (tag, payload, fd) = match receive(channel, CONNECTION_HEADER + MAX_CARRIED_BYTES + 1)? {
        Some((tag, payload, Some(fd))) => (tag, payload, fd),
        Some(_) => return Err(ReceiveError::NoDescriptor),
        None => return Ok(None),
    };
    let first_request = match tag {
        TAG_CONNECTION => false,
        TAG_FIRST_REQUEST => true,
        tag => return Err(ReceiveError::UnexpectedTag(tag)),
    };
    let Some((header, carried)) = payload.split_first_chunk::<CONNECTION_HEADER>() else {
        return Err(ReceiveError::ShortHeader);
    };
    let mut deadline_ns = [0u8; 8];
    deadline_ns.copy_from_slice(&header[..8]);
    let deadline_ns = u64::from_le_bytes(deadline_ns);
    let with = Carried {
        first_request,
        header_deadline: (deadline_ns != 0).then(|| from_monotonic_ns(deadline_ns)),
        trusted: header[8] & FLAG_TRUSTED != 0,
    };
    Ok(Some(Received {
        fd,
        carried: carried.to_vec(),
        first_request,
        with,
    }))
}

/// Master to child, on the child's control socket: "hand your connections to `target`".
pub fn send_target(control: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    send(control, TAG_TARGET, &[], Some(target))
}

/// Master to child, on the child's control socket: "stop taking new clients" (`false`) or
/// "take them again" (`true`).
pub fn send_accepting(control: BorrowedFd<'_>, accepting: bool) -> io::Result<()> {
    let tag = if accepting {
        TAG_ACCEPT
    } else {
        TAG_STOP_ACCEPTING
    };
    send(control, tag, &[], None)
}

/// A child reads one message from its control socket, if one is queued.
pub fn receive_control(control: BorrowedFd<'_>) -> Result<Option<Control>, ReceiveError> {
    match receive(control, 16)? {
        Some((TAG_TARGET, _, Some(fd))) => Ok(Some(Control::Target(fd))),
        Some((TAG_TARGET, _, None)) => Err(ReceiveError::NoDescriptor),
        Some((TAG_STOP_ACCEPTING, _, None)) => Ok(Some(Control::Accepting(false))),
        Some((TAG_ACCEPT, _, None)) => Ok(Some(Control::Accepting(true))),
        Some((tag, _, _)) => Err(ReceiveError::UnexpectedTag(tag)),
        None => Ok(None),
    }
}

/// Whether this process could open `n` more descriptors now: they are taken (duplicates of
/// `probe`) and given back at once. RLIMIT_NOFILE bounds descriptor numbers, and the kernel
/// hands out the lowest free one, so `n` successful dups mean `n` free numbers under the limit.
pub fn descriptors_free(probe: BorrowedFd<'_>, n: usize) -> io::Result<bool> {
    let mut taken = Vec::with_capacity(n);
    for _ in 0..n {
        match probe.try_clone_to_owned() {
            Ok(fd) => taken.push(fd),
            Err(error) if error.raw_os_error() == Some(libc::EMFILE) => return Ok(false),
            Err(error) => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("fcntl(F_DUPFD_CLOEXEC) of the handoff channel: {error}"),
                ))
            }
        }
    }
    Ok(true)
}

fn send(
    socket: BorrowedFd<'_>,
    tag: u8,
    payload: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let tag = [tag];
    let iov = [IoSlice::new(&tag), IoSlice::new(payload)];
    let fds = fd.map(|fd| [fd.as_raw_fd()]);
    let cmsgs: &[ControlMessage<'_>] = match &fds {
        Some(fds) => &[ControlMessage::ScmRights(fds)],
        None => &[],
    };
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// A message as received: its tag, its payload, and the descriptor it carried, if any.
type Message = (u8, Vec<u8>, Option<OwnedFd>);

/// One message: its tag, payload and the fd it carried, if any. `None` when nothing is queued
/// or the other end is gone. A message that did not arrive whole is consumed and reported,
/// never skipped in silence.
fn receive(socket: BorrowedFd<'_>, max_payload: usize) -> Result<Option<Message>, ReceiveError> {
    loop {
        let mut tag = [0u8; 1];
        let mut payload = vec![0u8; max_payload];
        let mut cmsg_buffer = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (n, fd, flags) = {
            let mut iov = [IoSliceMut::new(&mut tag), IoSliceMut::new(&mut payload)];
            let message = match recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buffer),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(message) => message,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(errno) => return Err(ReceiveError::Recvmsg(errno)),
            };
            let mut fd = None;
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for raw in fds {
                            // SAFETY: the kernel just installed this descriptor for us; nothing
                            // else owns it. Extra ones (none are sent) are closed on drop.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            if fd.is_none() {
                                fd = Some(owned);
                            }
                        }
                    }
                }
            }
            (message.bytes, fd, message.flags)
        };
        if n == 0 && fd.is_none() && !flags.contains(MsgFlags::MSG_CTRUNC) {
            // End of stream: every sender has closed its end.
            return Ok(None);
        }
        if flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(ReceiveError::DescriptorDiscarded);
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(ReceiveError::PayloadTruncated);
        }
        payload.truncate(n.saturating_sub(1));
        return Ok(Some((tag[0], payload, fd)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    #[test]
    fn a_connection_and_its_bytes_cross_a_real_socket_pair() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let (receive_end, send_end) = pair().unwrap();
        send_connection(send_end.as_fd(), server_side.as_fd(), b"GET / HT", false).unwrap();
        drop(server_side);
        let (fd, carried, first) = receive_connection(receive_end.as_fd()).unwrap().unwrap();
        assert!(!first);
        assert_eq!(carried, b"GET / HT");
        let mut adopted = TcpStream::from(fd);
        client.write_all(b"ping").unwrap();
        let mut buffer = [0u8; 4];
        adopted.read_exact(&mut buffer).unwrap();
        assert_eq!(&buffer, b"ping");
        assert!(receive_connection(receive_end.as_fd()).unwrap().is_none());
    }

    #[test]
    fn an_empty_carry_and_targets_one_at_a_time() {
        let (a, b) = pair().unwrap();
        let (x, _y) = pair().unwrap();
        send_target(b.as_fd(), x.as_fd()).unwrap();
        send_target(b.as_fd(), x.as_fd()).unwrap();
        assert!(matches!(
            receive_control(a.as_fd()),
            Ok(Some(Control::Target(_)))
        ));
        assert!(matches!(
            receive_control(a.as_fd()),
            Ok(Some(Control::Target(_)))
        ));
        assert!(receive_control(a.as_fd()).unwrap().is_none());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        send_connection(b.as_fd(), server_side.as_fd(), b"", true).unwrap();
        let (_, carried, first) = receive_connection(a.as_fd()).unwrap().unwrap();
        assert!(carried.is_empty() && first);
    }

    #[test]
    fn accept_switches_carry_no_descriptor_and_keep_their_order_among_targets() {
        let (a, b) = pair().unwrap();
        let (x, _y) = pair().unwrap();
        send_accepting(b.as_fd(), false).unwrap();
        send_target(b.as_fd(), x.as_fd()).unwrap();
        send_accepting(b.as_fd(), true).unwrap();
        assert!(matches!(
            receive_control(a.as_fd()),
            Ok(Some(Control::Accepting(false)))
        ));
        assert!(matches!(
            receive_control(a.as_fd()),
            Ok(Some(Control::Target(_)))
        ));
        assert!(matches!(
            receive_control(a.as_fd()),
            Ok(Some(Control::Accepting(true)))
        ));
        assert!(receive_control(a.as_fd()).unwrap().is_none());
        // A target without its descriptor is reported, not taken for an accept switch.
        send(b.as_fd(), TAG_TARGET, &[], None).unwrap();
        assert_eq!(
            receive_control(a.as_fd()).unwrap_err(),
            ReceiveError::NoDescriptor
        );
    }

    #[test]
    fn too_many_carried_bytes_are_refused_before_sending() {
        let (_a, b) = pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let carried = vec![b'x'; MAX_CARRIED_BYTES + 1];
        assert!(send_connection(b.as_fd(), server_side.as_fd(), &carried, false).is_err());
    }

    #[test]
    fn the_header_deadline_and_flags_cross_as_monotonic_time() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let (receive_end, send_end) = pair().unwrap();
        let now = Instant::now();
        let ahead = now + Duration::from_secs(3);
        let behind = now.checked_sub(Duration::from_secs(2)).unwrap_or(now);
        for (deadline, trusted) in [(Some(ahead), true), (Some(behind), false), (None, false)] {
            let with = Carried {
                first_request: true,
                header_deadline: deadline,
                trusted,
            };
            send_parked(send_end.as_fd(), server_side.as_fd(), b"GET", &with).unwrap();
            let received = take_connection(receive_end.as_fd()).unwrap().unwrap();
            assert_eq!(received.carried, b"GET");
            assert!(received.first_request && received.with.first_request);
            assert_eq!(received.with.trusted, trusted);
            match (deadline, received.with.header_deadline) {
                (None, None) => {}
                (Some(sent), Some(got)) => {
                    let error = if got > sent { got - sent } else { sent - got };
                    assert!(error < Duration::from_millis(50), "off by {error:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
