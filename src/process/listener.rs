//! The listening sockets the master binds and every child of a generation shares.
//!
//! The master binds before it forks and keeps each socket open across reloads; children inherit
//! the fd. A socket is non-blocking: the shared file description means the flag is shared by
//! every process, which is what the children's poll-then-accept loops need, and the master never
//! accepts. A reload that changes `bind_host`/`bind_port` binds the new address first and fails
//! whole if that bind fails.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;

/// A bound, listening socket, keyed by the address the config asked for.
pub struct Listener {
    /// The configured address ("HOST:PORT"), by which a generation's config finds its listener.
    pub configured: String,
    /// The address actually bound (differs when the configured port is 0).
    pub local: SocketAddr,
    pub socket: TcpListener,
}

impl Listener {
    /// Binds `configured` with SO_REUSEADDR (std sets it on Unix) and listens with `backlog`.
    pub fn bind(configured: &str, backlog: i32) -> io::Result<Listener> {
        let address = configured
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{configured} resolves to no address")))?;
        let socket = TcpListener::bind(address).map_err(|error| {
            io::Error::new(error.kind(), format!("bind({configured}): {error}"))
        })?;
        socket.set_nonblocking(true)?;
        let listener = Listener {
            configured: configured.to_string(),
            local: socket.local_addr()?,
            socket,
        };
        listener.set_backlog(backlog)?;
        Ok(listener)
    }

    /// Calls listen(2) again: std listens with a backlog of 128, and Linux lets a listening socket
    /// change its backlog this way, which is how a reload applies a new `backlog`.
    pub fn set_backlog(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: listen(2) on an fd this value owns; no memory is passed.
        let rc = unsafe { libc::listen(self.socket.as_raw_fd(), backlog) };
        if rc == 0 {
            Ok(())
        } else {
            let error = io::Error::last_os_error();
            Err(io::Error::new(
                error.kind(),
                format!("listen({}, {backlog}): {error}", self.configured),
            ))
        }
    }
}
