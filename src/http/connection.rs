//! A client connection: the socket plus the bytes read from it and not yet used.
//!
//! The same `Connection` moves between the acceptor (which reads request heads without blocking
//! while the connection waits in its epoll set) and a worker thread (which parses the head, reads
//! the body with blocking reads bounded by timeouts, and writes the response without blocking). Bytes read past the
//! end of one request (a pipelined next request) stay in the buffer and travel with it.

use std::io::{self, BufRead, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};

/// How much one read asks for; also the most a body read keeps buffered.
pub const READ_CHUNK: usize = 64 * 1024;

/// How much the acceptor reads at a time while a request head arrives.
pub const HEAD_READ_CHUNK: usize = 4 * 1024;

/// A client connection. Owns its socket: dropping it closes the socket.
pub struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// `buffer[start..end]` holds bytes received and not yet consumed. Past `end` the buffer is
    /// room already initialised for the next read, so that a read does not zero it again (that
    /// was 4,000 instructions of every keep-alive request, issue 13).
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Requests answered on this connection so far.
    pub requests_served: u64,
    /// A request on it was answered with its credentials accepted (`Response::
    /// credentials_accepted`), and no 401 came since. Only such a connection waits between
    /// requests as long as `client_socket_timeout`; one that never authenticated (open routes
    /// only) or was last refused waits only `client_header_timeout` (see
    /// `parked::Parked::between_requests`), so it cannot hold a slot for long. Travels with a
    /// handoff.
    pub trusted: bool,
    /// When its last response began to be written (or it was accepted or adopted): the order
    /// in which idle connections give way to new clients, oldest first. Taken before the write,
    /// so a response the client has read is always stamped before any request it sends next.
    pub last_response: Instant,
    /// The socket's mode and timeouts as last set, so that handing the connection between the
    /// acceptor (non-blocking) and a worker (blocking, with timeouts) costs a system call only
    /// when something actually changes.
    blocking: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Connection {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Connection {
        Connection {
            stream,
            peer,
            buffer: Vec::new(),
            start: 0,
            end: 0,
            requests_served: 0,
            trusted: false,
            last_response: Instant::now(),
            // std's accepted sockets are blocking, without timeouts.
            blocking: true,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// A connection handed over from another process, with the bytes that process had read
    /// from it and not used. Its mode and timeouts are unknown, so the first `set_*` call of
    /// each kind makes its system call.
    pub fn with_buffered(stream: TcpStream, peer: SocketAddr, carried: &[u8]) -> Connection {
        let mut connection = Connection::new(stream, peer);
        connection.buffer = carried.to_vec();
        connection.end = carried.len();
        connection.blocking = true;
        connection.requests_served = 1;
        connection.read_timeout = Some(Duration::ZERO);
        connection.write_timeout = Some(Duration::ZERO);
        connection
    }

    /// Puts the socket in blocking (worker) or non-blocking (acceptor) mode.
    pub fn set_blocking(&mut self, blocking: bool) -> io::Result<()> {
        if self.blocking != blocking {
            self.stream.set_nonblocking(!blocking)?;
            self.blocking = blocking;
        }
        Ok(())
    }

    /// SO_RCVTIMEO: the longest a blocking read waits.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.read_timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    /// SO_SNDTIMEO: the longest a blocking write waits.
    pub fn set_write_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.write_timeout != Some(timeout) {
            self.stream.set_write_timeout(Some(timeout))?;
            self.write_timeout = Some(timeout);
        }
        Ok(())
    }

    /// Waits up to `timeout` for bytes (or the peer's close) to arrive, without reading them.
    pub fn wait_readable(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        // poll(2) takes whole milliseconds up to i32::MAX; a longer wait is cut to that.
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        // An event nix has no name for (`None`) still counts: something arrived.
        poll(&mut fds, timeout).is_ok_and(|n| n > 0) && fds[0].any().unwrap_or(true)
    }

    /// Waits up to `timeout` for room in the socket's send buffer (or an error or hang-up,
    /// which the next write reports).
    pub fn wait_writable(&self, timeout: Duration) {
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLOUT)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
    }

    /// Makes the coming close a reset (SO_LINGER 0): what the kernel still holds to send is
    /// discarded. For a response abandoned half-way: closing normally would let a slow client
    /// go on receiving the megabytes queued in the send buffer long after we gave up on it.
    pub fn abort(&self) {
        use nix::sys::socket::{setsockopt, sockopt};
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let _ = setsockopt(&self.stream, sockopt::Linger, &linger);
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The socket, for the acceptor's epoll set and poll(2).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// The bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        self.buffer.get(self.start..self.end).unwrap_or(&[])
    }

    /// Marks `n` buffered bytes as used.
    pub fn consume_buffered(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for `chunk` more bytes after the buffered ones: the buffered bytes moved to the
    /// front, the buffer grown (and zeroed) only where it never was before.
    fn make_room(&mut self, chunk: usize) {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buffer.len() < self.end + chunk {
            self.buffer.resize(self.end + chunk, 0);
        }
    }

    /// Reads once from the socket, at most `chunk` bytes, appending to the buffer; returns the
    /// number of bytes read (0 at end of stream). On a non-blocking socket this may fail with
    /// `WouldBlock`. The acceptor reads heads in small chunks ([`HEAD_READ_CHUNK`]) so that many
    /// slow clients cost little memory; body reads use [`READ_CHUNK`].
    pub fn read_more(&mut self, chunk: usize) -> io::Result<usize> {
        self.make_room(chunk);
        let result = (&self.stream).read(&mut self.buffer[self.end..self.end + chunk]);
        let n = *result.as_ref().unwrap_or(&0);
        crate::metrics::received(n);
        self.end += n;
        result
    }

    /// Reads what has already arrived, without blocking even on a blocking socket
    /// (`MSG_DONTWAIT`), at most `chunk` bytes. Returns 0 when nothing is there or the peer
    /// closed; errors other than "would block" are returned.
    pub fn read_available(&mut self, chunk: usize) -> io::Result<usize> {
        self.make_room(chunk);
        let result = recv(
            self.stream.as_raw_fd(),
            &mut self.buffer[self.end..self.end + chunk],
            MsgFlags::MSG_DONTWAIT,
        );
        let n = *result.as_ref().unwrap_or(&0);
        crate::metrics::received(n);
        self.end += n;
        match result {
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(0),
            result => result.map_err(io::Error::from),
        }
    }

    /// Releases the buffer's memory when nothing is buffered, so that an idle keep-alive
    /// connection costs a socket and little else.
    pub fn shrink_if_empty(&mut self) {
        if self.buffered().is_empty() {
            self.buffer = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }
}

impl Read for Connection {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buffered().is_empty() && out.len() >= READ_CHUNK {
            // Large reads bypass the buffer: no copy for bulk body data.
            let result = (&self.stream).read(out);
            crate::metrics::received(*result.as_ref().unwrap_or(&0));
            return result;
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Connection {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.buffered().is_empty() {
            self.read_more(READ_CHUNK)?;
        }
        Ok(self.buffered())
    }

    fn consume(&mut self, n: usize) {
        self.consume_buffered(n);
    }
}

/// No Nagle delay (responses are written whole), TCP keepalive after `tcp_keepidle`. (The
/// connection is made non-blocking through `Connection`, which tracks the socket's mode.)
pub fn prepare_accepted(
    stream: &std::net::TcpStream,
    tcp_keepidle: std::time::Duration,
) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    stream.set_nodelay(true)?;
    setsockopt(stream, sockopt::KeepAlive, &true).map_err(io::Error::from)?;
    let seconds = tcp_keepidle.as_secs().clamp(1, u32::MAX as u64) as u32;
    setsockopt(stream, sockopt::TcpKeepIdle, &seconds).map_err(io::Error::from)?;
    Ok(())
}
