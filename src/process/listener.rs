//! The listening sockets the master binds and every child of a generation shares.
//!
//! The master binds before it forks and keeps each socket open across reloads; children inherit
//! the fd. A socket is non-blocking: the shared file description means the flag is shared by
//! every process, which is what the children's poll-then-accept loops need, and the master never
//! accepts. A reload that changes `bind_host`/`bind_port` binds the new address first and fails
//! whole if that bind fails.
//!
//! # Which socket a config uses
//!
//! A config's `bind_host:bind_port` is resolved, and a listener is reused when it was bound for
//! one of the resolved addresses: `localhost:9292` and `127.0.0.1:9292` are one socket, so a
//! reload between them changes nothing on the wire.
//!
//! # Moving between overlapping addresses
//!
//! `127.0.0.1:9292` to `0.0.0.0:9292` (or back) keeps the port while the old socket must keep
//! serving until the new generation is ready, and Linux refuses a second bind of an overlapping
//! address with EADDRINUSE unless both sockets carry `SO_REUSEPORT`. So, only for such a move,
//! the master sets `SO_REUSEPORT` on the old socket and binds the new one with it. Listeners
//! are otherwise bound without `SO_REUSEPORT`, so that a second server started by mistake on the
//! same port still fails loudly.
//!
//! Both sockets then take connections, and the kernel gives each to the most specific match:
//! clients of `127.0.0.1` keep arriving on the old socket. Closing it would reset whatever it
//! has queued (Linux migrates a closing listener's queue only within one `SO_REUSEPORT` group,
//! and these are two). So a generation whose address covers an older socket (the wildcard on
//! the same port) takes that socket over: its children accept on both, and the old socket
//! stays open as long as generations that cover it serve. Moving the other way (wildcard to
//! `127.0.0.1`) binds the specific socket, which takes `127.0.0.1`'s clients from its bind on:
//! they wait in its queue until the new generation serves (a start, milliseconds as a rule, 30 s
//! at most). Should that reload fail, the master accepts what is queued on the new socket before
//! it closes it and passes it to the current generation (`Master::close_unused_listeners`), so
//! nothing is reset either way.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};

/// A bound, listening socket, keyed by the address it was bound for.
pub struct Listener {
    /// The configured address ("HOST:PORT"), for logs.
    pub configured: String,
    /// The resolved address it was bound for (port 0 stays 0 here): a config whose address
    /// resolves to it uses this socket.
    pub requested: SocketAddr,
    /// The address actually bound (differs when the configured port is 0).
    pub local: SocketAddr,
    pub socket: TcpListener,
}

/// The addresses `configured` ("HOST:PORT") resolves to, in the resolver's order.
pub fn resolve(configured: &str) -> io::Result<Vec<SocketAddr>> {
    let addresses: Vec<SocketAddr> = configured
        .to_socket_addrs()
        .map_err(|error| io::Error::new(error.kind(), format!("resolving {configured}: {error}")))?
        .collect();
    if addresses.is_empty() {
        return Err(io::Error::other(format!(
            "{configured} resolves to no address"
        )));
    }
    Ok(addresses)
}

/// Whether a socket bound for `wide` receives every connection `narrow` does: the same port and
/// family, and `wide` is the wildcard (or the same address).
pub fn covers(wide: SocketAddr, narrow: SocketAddr) -> bool {
    wide.port() == narrow.port()
        && wide.port() != 0
        && (wide.ip() == narrow.ip()
            || (wide.ip().is_unspecified()
                && (wide.is_ipv4() == narrow.is_ipv4() || dual_stack(wide))))
}

/// Whether `address` is the IPv6 wildcard, which on Linux (`net.ipv6.bindv6only = 0`, the
/// default; std does not set IPV6_V6ONLY) also takes IPv4 connections.
fn dual_stack(address: SocketAddr) -> bool {
    address.is_ipv6() && address.ip().is_unspecified()
}

impl Listener {
    /// Binds the first address `configured` resolves to, with SO_REUSEADDR, and listens with
    /// `backlog`.
    pub fn bind(configured: &str, backlog: i32) -> io::Result<Listener> {
        let address = resolve(configured)?[0];
        Listener::bind_address(configured, address, backlog, false)
    }

    /// Binds `address` for `configured`; `reuse_port` sets SO_REUSEPORT first (module doc).
    pub fn bind_address(
        configured: &str,
        address: SocketAddr,
        backlog: i32,
        reuse_port: bool,
    ) -> io::Result<Listener> {
        let fail = |call: &str, errno: nix::errno::Errno| {
            io::Error::new(
                io::Error::from_raw_os_error(errno as i32).kind(),
                format!("{call} for {configured} ({address}): {errno}"),
            )
        };
        let family = match address {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|errno| fail("socket()", errno))?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)
            .map_err(|errno| fail("setsockopt(SO_REUSEADDR)", errno))?;
        if reuse_port {
            setsockopt(&fd, sockopt::ReusePort, &true)
                .map_err(|errno| fail("setsockopt(SO_REUSEPORT)", errno))?;
        }
        bind(fd.as_raw_fd(), &SockaddrStorage::from(address))
            .map_err(|errno| fail("bind()", errno))?;
        listen(
            &fd,
            Backlog::new(backlog.max(1)).unwrap_or(Backlog::MAXCONN),
        )
        .map_err(|errno| fail("listen()", errno))?;
        let socket = TcpListener::from(fd);
        Ok(Listener {
            configured: configured.to_string(),
            requested: address,
            local: socket.local_addr()?,
            socket,
        })
    }

    /// Whether a config whose address resolves to `addresses` uses this socket.
    pub fn serves(&self, addresses: &[SocketAddr]) -> bool {
        addresses.contains(&self.requested)
    }

    /// Whether binding `address` would collide with this socket: the same port (not 0) and the
    /// same address, or either is a wildcard that takes the other's connections.
    pub fn overlaps(&self, address: SocketAddr) -> bool {
        covers(self.local, address) || covers(address, self.local)
    }

    /// Lets an overlapping socket be bound beside this one (module doc).
    pub fn allow_port_reuse(&self) -> io::Result<()> {
        setsockopt(&self.socket.as_fd(), sockopt::ReusePort, &true).map_err(|errno| {
            io::Error::other(format!(
                "setsockopt(SO_REUSEPORT) on the listener for {}: {errno}",
                self.configured
            ))
        })
    }

    /// Calls listen(2) again: Linux lets a listening socket change its backlog this way, which
    /// is how a reload applies a new `backlog`.
    pub fn set_backlog(&self, backlog: i32) -> io::Result<()> {
        listen(
            &self.socket.as_fd(),
            Backlog::new(backlog.max(1)).unwrap_or(Backlog::MAXCONN),
        )
        .map_err(|errno| {
            io::Error::new(
                io::Error::from_raw_os_error(errno as i32).kind(),
                format!("listen({}, {backlog}): {errno}", self.configured),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_and_its_address_are_one_listener() {
        let listener = Listener::bind("127.0.0.1:0", 16).unwrap();
        let port = listener.local.port();
        drop(listener);
        let listener = Listener::bind(&format!("127.0.0.1:{port}"), 16).unwrap();
        assert!(listener.serves(&resolve(&format!("localhost:{port}")).unwrap()));
        assert!(!listener.serves(&resolve(&format!("127.0.0.2:{port}")).unwrap()));
    }

    #[test]
    fn the_wildcard_can_be_bound_beside_a_specific_address_on_the_same_port() {
        let specific = Listener::bind("127.0.0.1:0", 16).unwrap();
        let port = specific.local.port();
        let wildcard: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
        assert!(specific.overlaps(wildcard));
        let refused = Listener::bind_address("0.0.0.0", wildcard, 16, false);
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        specific.allow_port_reuse().unwrap();
        let beside = Listener::bind_address("0.0.0.0", wildcard, 16, true).unwrap();
        assert_eq!(beside.local.port(), port);
    }

    #[test]
    fn a_wildcard_covers_the_addresses_it_takes_connections_for() {
        let v4: SocketAddr = "127.0.0.1:9292".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:9292".parse().unwrap();
        let any6: SocketAddr = "[::]:9292".parse().unwrap();
        assert!(covers(any4, v4));
        assert!(!covers(v4, any4));
        assert!(covers(any6, v4), "the IPv6 wildcard is dual-stack on Linux");
        assert!(covers(any6, any4));
        assert!(!covers(any4, "[::1]:9292".parse().unwrap()));
        assert!(!covers(any4, "127.0.0.1:9293".parse().unwrap()));
        assert!(!covers(
            "0.0.0.0:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap()
        ));
    }
}
