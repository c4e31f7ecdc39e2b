//! [`Prefetcher`]: the one background thread of a child that fills the cache from the queue.
//!
//! It wakes when this child queues something ([`Waker::wake`], after a miss or a
//! `PUT /v2/cache/{id}`) and every [`POLL_INTERVAL`] to take up what other processes queued
//! (their own prefetcher may be busy, or their generation gone). It claims one queued image at a
//! time (see `queue`), reads the image's record from the registry, copies the store's data into
//! the cache ([`Cache::fill`]) and drops the claim.
//!
//! When the child drains, [`Prefetcher::finish`] stops it and joins it: a fill in progress stops
//! at its next chunk, removes its unfinished file and puts its claim back in the queue, so a
//! drain is never held up by a large image and no partial entry is left visible.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Cache, CacheError, Expected, FillOutcome};
use crate::registry::{ImageStatus, Registry};
use crate::store::Stores;

/// How often the prefetcher looks at the queue without being woken: the longest a prefetch
/// queued by another process waits while this one is idle.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Wakes a child's prefetcher. Cheap to clone; waking an already-woken prefetcher does nothing.
#[derive(Clone, Debug)]
pub struct Waker(Sender<()>);

impl Waker {
    pub fn wake(&self) {
        // A full channel means a wake-up is already pending, which is all we need.
        let _ = self.0.try_send(());
    }
}

/// The prefetcher thread of one child. Dropping it stops and joins it, like [`finish`].
///
/// [`finish`]: Prefetcher::finish
pub struct Prefetcher {
    /// Set to stop: checked between queue items and between the chunks of a fill.
    stop: Arc<AtomicBool>,
    /// Wakes the thread, so that it sees `stop` at once rather than after its poll interval.
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// Starts the thread. It uses the child's own registry and store, opened after the fork.
    pub fn start(
        cache: Arc<Cache>,
        registry: Arc<Registry>,
        store: Arc<Stores>,
    ) -> io::Result<Prefetcher> {
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("prefetcher".to_string())
                .spawn(move || run(&cache, &registry, &store, &stop, &receiver))?
        };
        Ok(Prefetcher {
            stop,
            waker: Waker(sender),
            thread: Some(thread),
        })
    }

    /// A waker for request handlers.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Stops the thread and waits for it (see the module doc for a fill in progress).
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the image cache prefetcher panicked");
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(
    cache: &Cache,
    registry: &Registry,
    store: &Stores,
    stop: &AtomicBool,
    wakes: &Receiver<()>,
) {
    let owner = crate::store::owner_token();
    loop {
        while !stop.load(Ordering::SeqCst) {
            let Some(image_id) = cache.claim_next(&owner) else {
                break;
            };
            let requeue = prefetch(cache, registry, store, stop, &image_id);
            cache.release(&image_id, &owner, requeue);
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match wakes.recv_timeout(POLL_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Fills the cache with one claimed image. Returns whether the claim goes back to the queue
/// (only when the fill was stopped by a drain).
fn prefetch(
    cache: &Cache,
    registry: &Registry,
    store: &Stores,
    stop: &AtomicBool,
    image_id: &str,
) -> bool {
    let image = match registry.get(image_id) {
        Ok(Some(image)) => image,
        Ok(None) => {
            log::info!("image cache: not prefetching image {image_id}: it no longer exists");
            return false;
        }
        Err(error) => {
            log::warn!("image cache: cannot prefetch image {image_id}: {error}");
            return false;
        }
    };
    let (Some(location), ImageStatus::Active) = (&image.location, image.status) else {
        log::info!(
            "image cache: not prefetching image {image_id}: it is {}, not active with data",
            image.status
        );
        return false;
    };
    let Some(expected) = Expected::of_image(&image) else {
        log::info!("image cache: not caching image {image_id}: it records no size or hash");
        return false;
    };
    let mut source = match store.default_store().open_data(location) {
        Ok((file, _)) => file,
        Err(error) => {
            log::warn!("image cache: cannot prefetch image {image_id}: {error}");
            return false;
        }
    };
    // Every store's folders, with several stores: any of them may share the cache's filesystem.
    let data_dirs: Vec<std::path::PathBuf> = store
        .iter()
        .flat_map(|(_, store)| store.settings().datadirs.iter().map(|(dir, _)| dir.clone()))
        .collect();
    let error = match cache.fill(image_id, &mut source, &expected, &data_dirs, stop) {
        Ok(FillOutcome::Filled { size }) => {
            cache.note_success(image_id);
            log::info!("image cache: cached image {image_id} ({size} bytes)");
            return false;
        }
        Ok(FillOutcome::AlreadyCached) | Ok(FillOutcome::InProgress) => return false,
        Ok(FillOutcome::TooLarge) => {
            log::info!(
                "image cache: not caching image {image_id}: its {} bytes exceed \
                 image_cache_max_size",
                expected.size
            );
            return false;
        }
        Err(CacheError::Stopped) => return true,
        Err(error) => error,
    };
    // One line per failed fill: downloads do not queue the image again until the backoff ends.
    let marker = cache.note_failure(image_id, &error.to_string());
    let wait = super::backoff::delay(marker.failures).as_secs();
    let what_to_do = match &error {
        CacheError::NoRoom { .. } => format!(
            "make room on the cache's filesystem, or move image_cache_dir to a disk with room \
             (the cache always leaves max({} GiB, {} %) of its filesystem free)",
            super::space::RESERVE_BYTES >> 30,
            super::space::RESERVE_PERCENT
        ),
        CacheError::Mismatch { .. } => format!("check the data file {location}"),
        _ => "check the cache folder and its disk".to_string(),
    };
    let line = format!(
        "image cache: cannot cache image {image_id}: {error}; not retried for {wait} s (failure \
         {} in a row); {what_to_do}; with flavor cachemanagement, PUT /v2/cache/{image_id} retries \
         at once",
        marker.failures
    );
    if matches!(error, CacheError::Mismatch { .. }) {
        log::error!("{line}");
    } else {
        log::warn!("{line}");
    }
    false
}
