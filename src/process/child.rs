//! A child (worker process): what runs between `fork()` in the master and `exit`.
//!
//! A child serves one generation's config on that generation's listener with an acceptor thread
//! (`acceptor`) and a fixed pool of worker threads (`pool`), plus, with a caching flavor, one
//! image cache prefetcher thread (`cache::Prefetcher`), joined after the workers at a drain. It reports ready to the master by
//! writing one byte on a pipe once both are running, and drains on SIGHUP, SIGTERM or SIGQUIT.
//! It exits 0 after a drain, [`EXIT_CANNOT_START`] when it could not start with its config (the
//! master never respawns that), and with the signal's default when killed.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

use crate::acceptor::{AcceptSettings, Acceptor, Handoff};
use crate::api::{Api, CachePipeline};
use crate::cache::{self, Cache, Prefetcher};
use crate::config::{Config, HashAlgorithm};
use crate::http::head::Limits;
use crate::http::serve::{Handler, Settings};
use crate::logging;
use crate::pool::Pool;
use crate::process::master::log_destination;
use crate::process::signals::{SignalSpec, SignalWatch};
use crate::registry::Registry;
use crate::store::{self, Store};

/// Exit code of a child that cannot start with its config; the master does not respawn it.
pub const EXIT_CANNOT_START: i32 = 2;

/// Everything a child gets from the master at fork.
pub struct Start {
    pub config: Arc<Config>,
    pub generation: u64,
    /// A dup of the generation's listening socket (the original fd is closed with the master's
    /// other descriptors).
    pub listener: std::io::Result<TcpListener>,
    /// Write end of the ready pipe.
    pub ready: OwnedFd,
    /// The signal mask to restore once the child's handlers are in place.
    pub signal_mask: SigSet,
    /// A dup of the receive end of this generation's handoff channel.
    pub handoff_receive: Option<OwnedFd>,
    /// This child's end of its control socket with the master.
    pub control: Option<OwnedFd>,
}

/// Runs the child. The caller (the master's `spawn`, in the forked process) has already removed
/// the master's signal handlers; handled signals are still blocked. Returns the exit code.
pub fn run(start: Start) -> i32 {
    let Start {
        config,
        generation,
        listener,
        ready,
        signal_mask,
        handoff_receive,
        control,
    } = start;
    let master_pid = nix::unistd::getppid();
    // If the master dies (even by SIGKILL), the kernel sends us SIGTERM and we drain and exit
    // rather than run on as an orphan. Checked against a master that died before this call.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err()
        || nix::unistd::getppid() != master_pid
    {
        return EXIT_CANNOT_START;
    }
    let role = format!("child gen {generation}");
    if let Err(error) = logging::configure(&log_destination(&config), &role) {
        eprintln!("glint-api child: {error}");
        return EXIT_CANNOT_START;
    }
    let listener = match listener {
        Ok(listener) => listener,
        Err(error) => {
            log::error!("cannot duplicate the listening socket: {error}");
            return EXIT_CANNOT_START;
        }
    };
    let mut keep = vec![0, 1, 2, listener.as_raw_fd(), ready.as_raw_fd()];
    keep.extend(handoff_receive.as_ref().map(|fd| fd.as_raw_fd()));
    keep.extend(control.as_ref().map(|fd| fd.as_raw_fd()));
    keep.extend(logging::file_fd());
    close_inherited_fds(&keep);

    let signals = match SignalWatch::register(|spec: &SignalSpec| spec.child) {
        Ok(signals) => signals,
        Err(error) => {
            log::error!("cannot register signal handlers: {error}");
            return EXIT_CANNOT_START;
        }
    };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&signal_mask), None);
    // A panic anywhere in this process is logged as one line rather than printed to stderr.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));

    let settings = Arc::new(settings_for(&config));
    let local_address = match listener.local_addr() {
        Ok(address) => address,
        Err(error) => {
            log::error!("getsockname() on the listening socket failed: {error}");
            return EXIT_CANNOT_START;
        }
    };
    // Each child opens its own database connections and store after fork: a SQLite connection
    // must never cross a fork.
    let registry = match Registry::open(&config.database_path) {
        Ok(registry) => Arc::new(registry),
        Err(error) => {
            log::error!(
                "cannot open the image database {}: {error}",
                config.database_path.display()
            );
            return EXIT_CANNOT_START;
        }
    };
    let store = match Store::open(store_settings(&config)) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            log::error!("cannot open the image store: {error}");
            return EXIT_CANNOT_START;
        }
    };
    // With a caching flavor: the cache folder (created and checked by the master before the
    // fork, opened again here) and this child's prefetcher thread.
    let mut prefetcher = None;
    let cache = if config.flavor.uses_cache() {
        let cache = match Cache::open(cache_settings(&config)) {
            Ok(cache) => Arc::new(cache),
            Err(error) => {
                log::error!("cannot open the image cache: {error}");
                return EXIT_CANNOT_START;
            }
        };
        for path in cache.sweep(store::owner_alive) {
            log::warn!(
                "image cache: removed or requeued {}, left by a process that died or stalled",
                path.display()
            );
        }
        match Prefetcher::start(cache.clone(), registry.clone(), store.clone()) {
            Ok(started) => {
                let waker = started.waker();
                prefetcher = Some(started);
                Some(CachePipeline { cache, waker })
            }
            Err(error) => {
                log::error!("cannot start the image cache prefetcher thread: {error}");
                return EXIT_CANNOT_START;
            }
        }
    } else {
        None
    };
    let api = Api::new(
        config.clone(),
        generation,
        local_address,
        registry,
        store,
        cache,
    );
    if let Err(error) = api.recover() {
        // Serving is still right: recovery runs again at the next child's start.
        log::error!("recovery of abandoned uploads failed: {error}");
    }
    let handler: Arc<dyn Handler> = Arc::new(api);
    let draining = Arc::new(AtomicBool::new(false));
    let (returns_tx, returns_rx) = crossbeam_channel::unbounded();
    let waker = match signals.waker() {
        Ok(waker) => waker,
        Err(error) => {
            log::error!("cannot create the acceptor's wake fd: {error}");
            return EXIT_CANNOT_START;
        }
    };
    let (pool, jobs) = match Pool::start(
        config.worker_threads,
        handler,
        settings.clone(),
        draining.clone(),
        returns_tx,
        waker,
    ) {
        Ok(started) => started,
        Err(error) => {
            log::error!(
                "cannot start {} worker threads: {error}; lower worker_threads",
                config.worker_threads
            );
            return EXIT_CANNOT_START;
        }
    };
    let acceptor = Acceptor::new(
        listener,
        signals,
        jobs,
        returns_rx,
        draining,
        settings,
        AcceptSettings {
            tcp_keepidle: config.tcp_keepidle,
            max_connections: config.max_client_connections,
        },
        Handoff::new(handoff_receive, control),
    );
    if fault_injected_start_failure(generation) {
        log::error!("GLINT_FAULT_CHILD_START={generation}: failing this child's start on purpose");
        return EXIT_CANNOT_START;
    }
    report_ready(ready);
    log::info!("serving with {} worker thread(s)", config.worker_threads);
    acceptor.run();
    pool.join();
    // After the workers: a fill stopped by a drain leaves nothing and goes back to the queue,
    // where a child of the new generation (or a later one) takes it up.
    if let Some(prefetcher) = prefetcher {
        prefetcher.finish();
    }
    log::info!("exiting");
    0
}

/// The store's settings for a generation's config.
pub fn store_settings(config: &Config) -> store::Settings {
    store::Settings {
        datadirs: config
            .datadirs
            .iter()
            .map(|datadir| (datadir.path.clone(), datadir.priority))
            .collect(),
        file_perm: config.filesystem_store_file_perm,
        size_cap: config.image_size_cap,
        hash: match config.hashing_algorithm {
            HashAlgorithm::Sha256 => store::HashKind::Sha256,
            HashAlgorithm::Sha384 => store::HashKind::Sha384,
            HashAlgorithm::Sha512 => store::HashKind::Sha512,
        },
    }
}

/// The image cache's settings for a generation's config.
pub fn cache_settings(config: &Config) -> cache::Settings {
    cache::Settings {
        dir: config.image_cache_dir.clone(),
        max_size: config.image_cache_max_size,
        stall_time: config.image_cache_stall_time,
    }
}

/// The HTTP layer's settings for a generation's config.
pub fn settings_for(config: &Config) -> Settings {
    Settings {
        limits: Limits::new(config.max_header_line),
        keep_alive: config.http_keepalive,
        header_timeout: config.client_header_timeout,
        idle_timeout: config.client_socket_timeout,
        body_timeout: config.client_body_timeout,
        send_timeout: config.client_send_timeout,
    }
}

/// The environment variable that makes every child of one generation fail its start, for the
/// integration test of a reload whose new generation cannot start (no real failure of a child's
/// start can be provoked on demand). It has no other effect; operators never set it.
pub const FAULT_CHILD_START: &str = "GLINT_FAULT_CHILD_START";

fn fault_injected_start_failure(generation: u64) -> bool {
    std::env::var(FAULT_CHILD_START).is_ok_and(|value| value.trim() == generation.to_string())
}

/// Writes the ready byte and closes the pipe. A failure means the master is gone; PDEATHSIG
/// will end us.
fn report_ready(ready: OwnedFd) {
    let _ = nix::unistd::write(&ready, b"R");
}

/// Closes every descriptor inherited from the master except `keep`: other generations'
/// listeners (an old listener held open by a new child would keep queueing connections nobody
/// accepts), other children's pipes, the master's signal pipe.
fn close_inherited_fds(keep: &[RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // `entries` is consumed above, so its own directory fd is already closed; closing that
    // number again fails harmlessly with EBADF.
    for fd in fds {
        if !keep.contains(&fd) {
            // SAFETY: the descriptor is inherited and owned by no live object of this process:
            // the master's objects that own them are never used again in the child.
            unsafe {
                libc::close(fd);
            }
        }
    }
}
