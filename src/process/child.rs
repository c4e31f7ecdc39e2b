//! A child (worker process): what runs between `fork()` in the master and `_exit`.
//!
//! A child serves one generation's config on that generation's listener with an acceptor thread
//! (`acceptor`) and a pool of worker threads (`pool`: the first, then more as connections need
//! them, up to `worker_threads`), one maintenance thread
//! (`serve::maintenance`) that recovers what dead processes left [`RECOVERY_FIRST_DELAY`] after
//! the child starts and then every [`RECOVERY_PERIOD`] (told to stop as the drain starts,
//! joined after the workers), plus, with a caching flavor, one image cache
//! prefetcher thread (`cache::Prefetcher`), joined after the workers at a drain, and with
//! `[metrics]` on, the metrics endpoint thread (`serve::scrape`), stopped as the drain begins
//! (an acceptor drain hook) and joined after the workers. It
//! reports on its ready pipe once they run, its first worker among them (`R`), or why it cannot start (`E` and the
//! reason, which the master puts in the reload's verdict), and drains on SIGHUP, SIGTERM or
//! SIGQUIT. It exits 0 after a drain, [`EXIT_CANNOT_START`] when it could not start, and with
//! the signal's default when killed.
//!
//! # A drain always ends
//!
//! The master kills a child still draining at its deadline (`graceful_shutdown_timeout` of the
//! config that replaced the child's). A child whose master has died has nobody to do that: the
//! kernel sends it SIGTERM (`PR_SET_PDEATHSIG`), and a drain signal taken while the master is
//! gone arms `alarm(2)` for the child's own `graceful_shutdown_timeout` plus
//! [`DRAIN_ALARM_MARGIN`], or [`ORPHAN_DRAIN_BOUND`] when it has none. So an orphan's drain
//! always ends, whether the master died before or during it.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};

use crate::api::{Api, CachePipeline};
use crate::cache::{self, Cache, Prefetcher};
use crate::config::{Config, HashAlgorithm};
use crate::http::head::Limits;
use crate::http::serve::{Drain, Handler, Settings};
use crate::logging;
use crate::process::start_steps::StartSteps;
use crate::registry::Registry;
use crate::serve::acceptor::{AcceptSettings, Acceptor, Handoff};
use crate::serve::maintenance::Maintenance;
use crate::serve::pool::Pool;
use crate::serve::scrape::Scrape;
use crate::signals::{SignalSpec, SignalWatch};
use crate::store::{self, Stores};

/// Exit code of a child that could not start; it said why on its ready pipe.
pub const EXIT_CANNOT_START: i32 = 2;

/// How long past its own `graceful_shutdown_timeout` an orphaned child's drain alarm fires.
pub const DRAIN_ALARM_MARGIN: Duration = Duration::from_secs(5);

/// The drain bound of a child whose master has died, when `graceful_shutdown_timeout = 0` (no
/// bound): the option's default.
pub const ORPHAN_DRAIN_BOUND: Duration = Duration::from_secs(60);

/// How often a serving child looks for uploads whose process died (an upload killed while its
/// child drained leaves its image `saving`, refusing new uploads with 409, until someone looks):
/// the bound, plus one pass, on how long such an image stays blocked. A pass that finds
/// nothing is two indexed reads (see `Api::recover_abandoned`), so every child can afford it.
pub const RECOVERY_PERIOD: Duration = Duration::from_secs(5);

/// How long after its ready report a child runs its first recovery pass: past a reload's first
/// responses, which it would otherwise slow on the same CPUs (an idle reload's first response
/// came about 2 ms sooner with this and the workers started later; docs/BENCHMARKS.md).
pub const RECOVERY_FIRST_DELAY: Duration = Duration::from_millis(50);

/// How often a child renews its node's lease, with a registry shared by several nodes: a third
/// of the shortest `node_lease_time` (15 s), so that two renewals may fail before it runs out.
pub const LEASE_RENEWAL_PERIOD: Duration = Duration::from_secs(5);

/// Every how many recovery passes the data directories are listed even when no image was
/// requeued (12: once a minute), for temporary files whose image is no longer `saving`. Less
/// often than the check itself because a listing costs in proportion to the images stored.
pub const TEMP_FILE_SWEEP_EVERY: u64 = 12;

/// The write end of the pipe on which a child tells the master how its start went.
pub struct ReadyPipe(OwnedFd);

impl ReadyPipe {
    pub fn new(fd: OwnedFd) -> ReadyPipe {
        ReadyPipe(fd)
    }

    /// Reports ready and closes the pipe. A failure means the master is gone; PDEATHSIG will
    /// end us.
    fn ready(self) {
        let _ = nix::unistd::write(&self.0, b"R");
    }

    /// Logs why the child cannot start, tells the master the same (one write, at most
    /// `PIPE_BUF` bytes, so the master reads it whole), and gives the exit code.
    fn failed(self, reason: &str) -> i32 {
        log::error!("{reason}");
        let mut message = Vec::with_capacity(reason.len() + 1);
        message.push(b'E');
        message.extend_from_slice(reason.as_bytes());
        message.truncate(libc::PIPE_BUF);
        let _ = nix::unistd::write(&self.0, &message);
        EXIT_CANNOT_START
    }
}

/// Everything a child gets from the master at fork.
pub struct Start {
    pub config: Arc<Config>,
    pub generation: u64,
    /// The how-many-th child started for the generation (1-based; 0 for a respawn).
    pub nth: usize,
    /// Dups of the generation's listening sockets, its own first (the originals are closed
    /// with the master's other descriptors).
    pub listeners: std::io::Result<Vec<TcpListener>>,
    /// How the child reports its start.
    pub ready: ReadyPipe,
    /// The signal mask to restore once the child's handlers are in place.
    pub signal_mask: SigSet,
    /// A dup of the receive end of this generation's handoff channel.
    pub handoff_receive: Option<OwnedFd>,
    /// This child's end of its control socket with the master.
    pub control: Option<OwnedFd>,
    /// A dup of the generation's metrics listener, when `[metrics]` is on: the child answers
    /// scrapes on it (`serve::scrape`).
    pub metrics_listener: Option<std::io::Result<TcpListener>>,
    /// This child's gauge slot in the shared metrics block.
    pub metrics_slot: Option<usize>,
}

/// Runs the child. The caller (`spawn`, in the forked process) has already removed the master's
/// signal handlers; handled signals are still blocked. Returns the exit code, which the caller
/// passes to `_exit`.
pub fn run(start: Start) -> i32 {
    let Start {
        config,
        generation,
        nth,
        listeners,
        ready,
        signal_mask,
        handoff_receive,
        control,
        metrics_listener,
        metrics_slot,
    } = start;
    let mut steps = StartSteps::begin();
    crate::metrics::use_slot(metrics_slot);
    let master_pid = nix::unistd::getppid();
    // If the master dies (even by SIGKILL), the kernel sends us SIGTERM and we drain and exit
    // rather than run on as an orphan. Checked against a master that died before this call.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err()
        || nix::unistd::getppid() != master_pid
    {
        return ready.failed("the master exited while this child started");
    }
    let role = format!("child gen {generation}");
    if let Err(error) = logging::configure(&logging::Destination::of(&config), &role) {
        eprintln!("glint-api child: {error}");
        return ready.failed(&format!("cannot open the log: {error}"));
    }
    let listeners = match listeners {
        Ok(listeners) if !listeners.is_empty() => listeners,
        Ok(_) => return ready.failed("no listening socket was passed to this child"),
        Err(error) => {
            return ready.failed(&format!("cannot duplicate the listening socket: {error}"));
        }
    };
    let metrics_listener = match metrics_listener.transpose() {
        Ok(listener) => listener,
        Err(error) => {
            return ready.failed(&format!("cannot duplicate the metrics listener: {error}"));
        }
    };
    let mut keep = vec![0, 1, 2, ready.0.as_raw_fd()];
    keep.extend(listeners.iter().map(|listener| listener.as_raw_fd()));
    keep.extend(handoff_receive.as_ref().map(|fd| fd.as_raw_fd()));
    keep.extend(control.as_ref().map(|fd| fd.as_raw_fd()));
    keep.extend(metrics_listener.as_ref().map(|fd| fd.as_raw_fd()));
    keep.extend(logging::open_fds());
    close_inherited_fds(&keep);

    let signals = match SignalWatch::register(|spec: &SignalSpec| spec.child) {
        Ok(signals) => signals,
        Err(error) => {
            return ready.failed(&format!("cannot register signal handlers: {error}"));
        }
    };
    if let Err(error) = register_drain_alarm(&config, master_pid) {
        return ready.failed(&format!("cannot register the drain alarm: {error}"));
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&signal_mask), None);
    // A panic anywhere in this process is logged as one line rather than printed to stderr.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));

    steps.done("setup");
    let settings = Arc::new(settings_for(&config));
    // The generation's own listener comes first; its address goes into version links.
    let local_address = match listeners[0].local_addr() {
        Ok(address) => address,
        Err(error) => {
            return ready.failed(&format!(
                "getsockname() on the listening socket failed: {error}"
            ));
        }
    };
    // Each child opens its own database connections and store after fork: a SQLite connection
    // must never cross a fork.
    let registry = match Registry::open_with(&config.database, config.max_pool_size) {
        Ok(registry) => Arc::new(registry),
        Err(error) => {
            return ready.failed(&format!(
                "cannot open the image database {}: {}; fix [database] connection, or \
                 what holds the database",
                config.database.display(),
                crate::api::error::with_causes(&error)
            ));
        }
    };
    steps.done("database");
    if registry.is_shared() {
        // Before anything makes an owner token: every token of this child names its node.
        crate::store::set_node(&config.node_name);
    }
    let stores = match open_stores(&config) {
        Ok(stores) => Arc::new(stores),
        Err(error) => return ready.failed(&error),
    };
    // Data stored before enabled_backends was set has no store recorded: give it the store
    // whose folder holds it before the check below counts the stores' images, so that such a
    // store cannot be removed while it holds them.
    if stores.is_multi() {
        record_legacy_stores(&registry, &stores);
    }
    // A reload that removes a backend still holding images must fail, naming it, while the old
    // generation keeps serving: the master never reads the database (it would block its loop),
    // so each new child checks before it reports ready. A replacement child (`nth` 0) of the
    // current generation only logs it: an upload that an older generation finished into the
    // removed backend while it drained must not keep the current generation from respawning.
    if let Err(message) = check_removed_backends(&config, &registry) {
        if nth == 0 {
            log::error!("{message}");
        } else {
            return ready.failed(&message);
        }
    }
    steps.done("stores");
    // From here on threads start (the prefetcher, the pool, the acceptor...): they and this one
    // serve at the operator's priority, not the master's (`priority` module doc).
    super::priority::child_serves_at_normal_priority();
    // Access lines in batches from here on (`logging` module doc); without the thread, each
    // is written at once, as before.
    if let Err(error) = logging::start_flusher() {
        log::warn!(
            "cannot start the log-flush thread: {error}; access lines are written one at a \
             time, which costs CPU under load; raise the limit on threads (ulimit -u, TasksMax)"
        );
    }
    // With a caching flavor: the cache folder (created and checked by the master before the
    // fork, opened again here) and this child's prefetcher thread.
    let mut prefetcher = None;
    let cache = if config.flavor.uses_cache() {
        let cache = match Cache::open(cache_settings(&config)) {
            Ok(cache) => Arc::new(cache),
            Err(error) => {
                return ready.failed(&format!(
                    "cannot open the image cache: {error}; fix image_cache_dir ([DEFAULT] or [image_cache]), \
                     or set [paste_deploy] flavor to no cache"
                ));
            }
        };
        for path in cache.sweep(store::owner_alive) {
            log::warn!(
                "image cache: removed or requeued {}, left by a process that died or stalled",
                path.display()
            );
        }
        match Prefetcher::start(cache.clone(), registry.clone(), stores.clone()) {
            Ok(started) => {
                let waker = started.waker();
                prefetcher = Some(started);
                Some(CachePipeline { cache, waker })
            }
            Err(error) => {
                return ready.failed(&format!(
                    "cannot start the image cache prefetcher thread: {error}"
                ));
            }
        }
    } else {
        None
    };
    let api = Arc::new(Api::new(
        config.clone(),
        generation,
        local_address,
        registry,
        stores,
        cache,
    ));
    steps.done("cache");
    let handler: Arc<dyn Handler> = api.clone();
    let drain = Arc::new(Drain::default());
    let (returns_tx, returns_rx) = crossbeam_channel::unbounded();
    let waker = match signals.waker() {
        Ok(waker) => waker,
        Err(error) => {
            return ready.failed(&format!("cannot create the acceptor's wake fd: {error}"));
        }
    };
    let (pool, jobs) = match Pool::start(
        config.worker_threads,
        handler,
        settings.clone(),
        drain.clone(),
        returns_tx,
        waker,
    ) {
        Ok(started) => started,
        Err(error) => {
            return ready.failed(&format!(
                "cannot start {} worker threads: {error}; lower worker_threads",
                config.worker_threads
            ));
        }
    };
    let mut acceptor = match Acceptor::new(
        listeners,
        signals,
        jobs,
        returns_rx,
        drain,
        settings,
        AcceptSettings {
            tcp_keepidle: config.tcp_keepidle,
            max_connections: config.max_client_connections,
        },
        Handoff::new(handoff_receive, control),
    ) {
        Ok(acceptor) => acceptor,
        Err(error) => {
            return ready.failed(&format!(
                "cannot set up the acceptor's epoll instance: {error}; raise the open-files \
                 limit or fs.epoll.max_user_watches"
            ));
        }
    };
    if fault_injected(FAULT_CHILD_PANIC, generation, nth) {
        panic!("{FAULT_CHILD_PANIC}: child {nth} of generation {generation} panics on purpose");
    }
    if let Some(release) = fault_hold(generation, nth) {
        // Test hook: wait for the test's word (a file not yet there, or still empty, is none
        // yet), then fail or go on.
        let word = loop {
            match std::fs::read_to_string(&release) {
                Ok(word) if !word.trim().is_empty() => break word,
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        };
        if word.trim() == "fail" {
            return ready.failed(&format!(
                "{FAULT_CHILD_HOLD}: failing the start of child {nth} of generation \
                 {generation} on purpose"
            ));
        }
    }
    if fault_injected(FAULT_CHILD_START, generation, nth) {
        return ready.failed(&format!(
            "{FAULT_CHILD_START}: failing the start of child {nth} of generation {generation} \
             on purpose"
        ));
    }
    let importing = api.clone();
    // With a shared registry: the node's lease, renewed before this child serves (a node back
    // after a long stop must not start uploads under an expired lease), then on a thread of its
    // own, so that a slow recovery pass cannot delay it, until the last import has ended.
    let mut lease = None;
    if importing.registry_is_shared() {
        if let Err(line) = importing.renew_node_lease() {
            return ready.failed(&line);
        }
        let renewing = importing.clone();
        match Maintenance::start(Duration::ZERO, LEASE_RENEWAL_PERIOD, move |_| {
            let _ = renewing.renew_node_lease();
        }) {
            Ok(thread) => lease = Some(thread),
            Err(error) => {
                return ready.failed(&format!("cannot start the lease thread: {error}"));
            }
        }
    }
    let mut maintenance = match start_maintenance(api) {
        Ok(maintenance) => maintenance,
        Err(error) => {
            return ready.failed(&format!("cannot start the maintenance thread: {error}"));
        }
    };
    let mut scrape = match metrics_listener.map(Scrape::start).transpose() {
        Ok(scrape) => scrape,
        Err(error) => {
            return ready.failed(&format!(
                "cannot start the metrics endpoint thread: {error}"
            ));
        }
    };
    // Scrapes go to the serving generation, like requests: the metrics thread stops, closing
    // this child's copy of the metrics listener, as the drain begins, with the API listeners.
    // Not at the end of the drain: the master closes its copy at the drain's start, and a
    // long drain must not keep answering on an address the reload dropped or re-binds.
    if let Some(stop) = scrape.as_mut().and_then(Scrape::take_stop) {
        acceptor.on_drain(move || stop.stop());
    }
    steps.done("threads");
    ready.ready();
    log::info!(
        "serving with up to {} worker thread(s); {}",
        config.worker_threads,
        steps.summary()
    );
    let jobs = acceptor.run();
    // Recovery is the serving generation's job; a draining child stops looking at once (its own
    // uploads in progress are alive, and the new generation's children look from now on).
    maintenance.stop();
    if nix::unistd::getppid() != master_pid {
        log::warn!(
            "the master is gone; requests in progress get at most {} s (the drain alarm)",
            config
                .graceful_shutdown_timeout
                .map_or(ORPHAN_DRAIN_BOUND, |bound| bound + DRAIN_ALARM_MARGIN)
                .as_secs()
        );
    }
    // The acceptor returned with nothing in flight: the workers have no job left.
    pool.release(jobs);
    // After the workers, which start imports: an import in progress completes before the
    // child exits (see `api::import`).
    importing.finish_imports();
    maintenance.finish();
    if let Some(mut lease) = lease {
        lease.stop();
        lease.finish();
    }
    // Stopped as the drain began; this only joins it.
    if let Some(scrape) = scrape {
        scrape.finish();
    }
    // After the workers: a fill stopped by a drain leaves nothing and goes back to the queue,
    // where a child of the new generation (or a later one) takes it up.
    if let Some(prefetcher) = prefetcher {
        prefetcher.finish();
    }
    // Every thread that used the registry has ended or waits for a job that will not come.
    importing.close_registry();
    log::info!("exiting");
    0
}

/// Starts the thread that runs the child's full recovery (`Api::recover`)
/// [`RECOVERY_FIRST_DELAY`] after the start, then `Api::recover_abandoned` every
/// [`RECOVERY_PERIOD`]. A failed pass is logged when the
/// failures begin and when they end, not every period.
///
/// The full recovery runs on this thread rather than before the child reports ready: it takes
/// SQLite's write lock and lists the data folders, which a reload's effect should not wait
/// for (issue 13, part 1). What it repairs is what the periodic passes repair too, and they
/// already run beside requests: an image left `saving` by a dead uploader stays `saving` a
/// few milliseconds longer, and a request meanwhile sees what it would have seen just before.
fn start_maintenance(api: Arc<Api>) -> std::io::Result<Maintenance> {
    let mut failing = false;
    Maintenance::start(RECOVERY_FIRST_DELAY, RECOVERY_PERIOD, move |pass| {
        let outcome = if pass == 0 {
            api.recover().map(|()| 0)
        } else {
            api.recover_abandoned(pass % TEMP_FILE_SWEEP_EVERY == 0)
        };
        match outcome {
            Ok(_) if failing => {
                failing = false;
                log::info!("recovery of abandoned uploads works again");
            }
            Ok(_) => {}
            Err(error) if !failing => {
                failing = true;
                log::error!(
                    "recovery of abandoned uploads failed: {error}; retrying every {} s",
                    RECOVERY_PERIOD.as_secs()
                );
            }
            Err(_) => {}
        }
    })
}

/// Opens the stores of a generation's config: one per backend with `enabled_backends`, else
/// the one of `[glance_store]`. The error says what to fix.
pub fn open_stores(config: &Config) -> Result<Stores, String> {
    let named = match &config.backends {
        Some(backends) => backends
            .list
            .iter()
            .map(|backend| {
                (
                    backend.id.clone(),
                    store_settings(config, &backend.datadirs),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let default = config
        .backends
        .as_ref()
        .map_or("", |backends| backends.default.as_str());
    Stores::open(store_settings(config, &config.datadirs), named, default)
}

/// Records the store of image data stored with one store (Glance's `update_store_in_locations`,
/// which Glance runs on every read of an image; here once per child start, before the count of
/// each store's images, so that images nobody reads still count). Failures are logged: the
/// next child start tries again.
fn record_legacy_stores(registry: &Registry, stores: &Stores) {
    match registry.record_legacy_stores(|location| stores.holding(location).map(str::to_string)) {
        Ok((recorded, left)) => {
            if !recorded.is_empty() {
                log::info!(
                    "recorded the store of {} image(s) stored before enabled_backends was set \
                     (first: {} in {})",
                    recorded.len(),
                    recorded[0].0,
                    recorded[0].1
                );
            }
            if !left.is_empty() {
                log::warn!(
                    "{} image(s) have data in no enabled backend's folder (first: {}): they stay \
                     readable but show no stores and cannot be copied from; add their folder to \
                     a backend's filesystem_store_datadir(s) and reload",
                    left.len(),
                    left[0]
                );
            }
        }
        Err(error) => log::error!(
            "cannot record the stores of images stored before enabled_backends was set: \
             {error}; reload to try again"
        ),
    }
}

/// Refuses a config without a backend in which the registry still records live images: the
/// message names each such backend with its number of images, and what to do.
fn check_removed_backends(config: &Config, registry: &Registry) -> Result<(), String> {
    let held = registry.images_per_store().map_err(|error| {
        format!("cannot count the images of each store: {error}; retry the reload")
    })?;
    let missing: Vec<String> = held
        .into_iter()
        .filter(|(id, _)| {
            config
                .backends
                .as_ref()
                .is_none_or(|backends| backends.get(id).is_none())
        })
        .map(|(id, count)| {
            let images = if count == 1 { "image" } else { "images" };
            format!("`{id}` ({count} {images})")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "[DEFAULT] enabled_backends no longer lists the store{} {}, which still hold{} image \
         data; put {} back into enabled_backends, or delete those images (or their copies \
         there, DELETE /v2/stores/STORE/IMAGE) before removing {}",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        if missing.len() == 1 { "s" } else { "" },
        if missing.len() == 1 { "it" } else { "them" },
        if missing.len() == 1 { "it" } else { "them" },
    ))
}

/// The settings of a store holding `datadirs`, for a generation's config.
pub fn store_settings(config: &Config, datadirs: &[crate::config::DataDir]) -> store::Settings {
    store::Settings {
        datadirs: datadirs
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
        send_min_rate: config.client_send_min_rate,
        // Uploads go to the highest priority first: the folder meant to take data (of the
        // default backend with several stores, where `[glance_store]`'s folders are not used).
        spill_dir: config
            .backends
            .as_ref()
            .and_then(|backends| backends.get(&backends.default))
            .map_or(config.datadirs.as_slice(), |backend| {
                backend.datadirs.as_slice()
            })
            .iter()
            .max_by_key(|dir| dir.priority)
            .map(|dir| dir.path.clone()),
    }
}

/// The environment variable that makes children fail their start, for the integration tests of
/// reloads whose new children cannot start (no real failure of a child's start can be provoked
/// on demand). `GEN` fails every child of generation GEN; `GEN/NTH` only the NTH child started
/// for it (1-based). Read only by debug builds (the ones the tests run): a release binary has no
/// test hook.
pub const FAULT_CHILD_START: &str = "GLINT_FAULT_CHILD_START";

/// Holds the start of one child before its ready report until a file holds a word, for the
/// tests of what happens while a new generation is partly ready: `GEN/NTH:PATH` (or `GEN:PATH`
/// for all of generation GEN). The child then fails its start if the word is `fail`, else
/// reports ready. Debug builds only, like [`FAULT_CHILD_START`].
pub const FAULT_CHILD_HOLD: &str = "GLINT_FAULT_CHILD_HOLD";

/// The file child `nth` of `generation` waits for, if `GLINT_FAULT_CHILD_HOLD` names it.
fn fault_hold(generation: u64, nth: usize) -> Option<std::path::PathBuf> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let value = std::env::var(FAULT_CHILD_HOLD).ok()?;
    let (which, path) = value.split_once(':')?;
    fault_matches(which.trim(), generation, nth).then(|| path.into())
}

/// Like [`FAULT_CHILD_START`], but the child panics on its main thread instead, for the test
/// that a panic never unwinds into the master's code (`spawn`). Debug builds only.
pub const FAULT_CHILD_PANIC: &str = "GLINT_FAULT_CHILD_PANIC";

fn fault_injected(variable: &str, generation: u64, nth: usize) -> bool {
    if !cfg!(debug_assertions) {
        return false;
    }
    let Ok(value) = std::env::var(variable) else {
        return false;
    };
    fault_matches(value.trim(), generation, nth)
}

/// Whether a `GLINT_FAULT_CHILD_START` value names child `nth` of `generation`.
fn fault_matches(value: &str, generation: u64, nth: usize) -> bool {
    match value.split_once('/') {
        Some((gen, which)) => gen == generation.to_string() && which == nth.to_string(),
        None => value == generation.to_string(),
    }
}

/// Bounds this child's drain when its master is gone (module doc, "A drain always ends"): a
/// drain signal (SIGHUP, SIGTERM, SIGQUIT; the parent-death signal is SIGTERM) taken while the
/// master is gone arms `alarm(2)` once, and SIGALRM's default action ends the process. While
/// the master lives it does nothing: the master's own deadline, from the config that replaced
/// this one, rules. It runs inside the signal handler, beside the flag the acceptor acts on,
/// because the workers may be stuck in a request; so it only calls async-signal-safe functions
/// (`getppid`, `alarm`) and touches an atomic.
fn register_drain_alarm(config: &Config, master_pid: nix::unistd::Pid) -> std::io::Result<()> {
    let bound = seconds(
        config
            .graceful_shutdown_timeout
            .map_or(ORPHAN_DRAIN_BOUND, |bound| bound + DRAIN_ALARM_MARGIN),
    );
    let master = master_pid.as_raw();
    let armed = Arc::new(AtomicBool::new(false));
    for signal in [libc::SIGHUP, libc::SIGTERM, libc::SIGQUIT] {
        let armed = armed.clone();
        let action = move || {
            // SAFETY (of the whole closure): getppid(2) and alarm(2) are async-signal-safe.
            let master_gone = unsafe { libc::getppid() } != master;
            if master_gone && !armed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                unsafe {
                    libc::alarm(bound);
                }
            }
        };
        // SAFETY: the action is async-signal-safe (above).
        unsafe { signal_hook::low_level::register(signal, action) }?;
    }
    Ok(())
}

/// Whole seconds for alarm(2), at least 1.
fn seconds(duration: Duration) -> u32 {
    duration.as_secs().clamp(1, u64::from(u32::MAX)) as u32
}

/// Closes every descriptor inherited from the master except `keep`: other generations'
/// listeners (an old listener held open by a new child would keep queueing connections nobody
/// accepts), other children's pipes, the master's signal pipe.
fn close_inherited_fds(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 0).collect();
    keep.sort_unstable();
    keep.dedup();
    // close_range(2) over the gaps between the kept descriptors: no /proc needed, one call per
    // gap. Linux before 5.9 lacks it (ENOSYS); then walk /proc/self/fd.
    let mut first: u32 = 0;
    for fd in keep
        .iter()
        .map(|fd| *fd as u32)
        .chain(std::iter::once(u32::MAX))
    {
        if fd > first {
            let last = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: closes descriptors owned by no live object of this process (the
            // master's objects that own them are never used again in the child).
            let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
            if rc != 0 {
                close_inherited_fds_by_proc(&keep);
                return;
            }
        }
        first = fd.saturating_add(1);
    }
}

/// The fallback of `close_inherited_fds`: every descriptor /proc lists, but `keep`.
fn close_inherited_fds_by_proc(keep: &[RawFd]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        log::warn!(
            "cannot list /proc/self/fd and close_range(2) failed: this child keeps descriptors \
             of the master (old listeners among them); mount /proc"
        );
        return;
    };
    let fds: Vec<RawFd> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // `entries` is consumed above, so its own directory fd is already closed; closing that
    // number again fails harmlessly with EBADF.
    for fd in fds {
        if !keep.contains(&fd) {
            // SAFETY: as in `close_inherited_fds`.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fault_matches;

    #[test]
    fn the_fault_hook_names_a_generation_or_one_child_of_it() {
        assert!(fault_matches("3", 3, 1));
        assert!(fault_matches("3", 3, 2));
        assert!(!fault_matches("3", 4, 1));
        assert!(fault_matches("3/2", 3, 2));
        assert!(!fault_matches("3/2", 3, 1));
        assert!(!fault_matches("3/2", 2, 2));
        assert!(!fault_matches("x", 3, 1));
    }
}
