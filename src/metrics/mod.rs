//! Prometheus metrics: the counters every process of the tree adds to, their text exposition
//! (format 0.0.4).
//!
//! - [`block`]: the shared block of `AtomicU64`s the master maps before its first fork, so that
//!   counters stay monotonic across children and generations;
//! - [`labels`]: every label's complete set of values, fixed at compile time;
//! - [`exposition`]: the families (name, type, labels, help) and the renderer.
//!
//! A child answers scrapes on the metrics listener (`serve::scrape`; the master never does
//! HTTP). This module imports nothing of glint's: `http` records into it, and it renders text.
//!
//! The recording functions below are what the rest of glint calls. Each is a few relaxed atomic
//! adds into the block, and does nothing in a process that has no block (unit tests, a tool).
//! The master maps the block whether or not `[metrics]` is on, so that a reload that turns the
//! listener on shows counts since the master started.

pub mod block;
pub mod exposition;
pub mod labels;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use block::Block;

/// The block of this process tree, set by the master before its first fork (and so inherited,
/// set, by every child).
static BLOCK: OnceLock<&'static Block> = OnceLock::new();

/// This child's gauge slot in the block (`usize::MAX`: none, as in the master).
static SLOT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Maps the shared block and makes it this process's (the master, once, before any fork).
pub fn install() -> std::io::Result<()> {
    if BLOCK.get().is_none() {
        let block = Block::map_shared()?;
        let _ = BLOCK.set(block);
    }
    Ok(())
}

/// The block, once installed.
pub fn block() -> Option<&'static Block> {
    BLOCK.get().copied()
}

/// Makes `slot` this child's gauge slot (`child::run`, first thing after the fork).
pub fn use_slot(slot: Option<usize>) {
    SLOT.store(slot.unwrap_or(usize::MAX), Ordering::Relaxed);
}

fn slot() -> Option<&'static block::Slot> {
    block()?.slots.get(SLOT.load(Ordering::Relaxed))
}

/// Counts one request as in flight until the guard drops.
pub fn in_flight() -> InFlight {
    if let Some(slot) = slot() {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
    }
    InFlight(())
}

/// A request in flight (see [`in_flight`]).
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(slot) = slot() {
            slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts a request answered with `status`, and how long it took until its response was ready
/// to send. `path` is only classified ([`labels::route_of_path`]), never kept.
pub fn request_answered(method: &str, path: &str, status: u16, took: Duration) {
    let Some(block) = block() else { return };
    let method = labels::method_index(method);
    let route = labels::route_index(labels::route_of_path(path));
    let status = labels::status_index(status);
    block.requests[method][route][status].fetch_add(1, Ordering::Relaxed);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    block.duration_buckets[route][labels::bucket_index(micros)].fetch_add(1, Ordering::Relaxed);
    block.duration_sum_us[route].fetch_add(micros, Ordering::Relaxed);
}

/// Counts bytes read from a client connection.
pub fn received(bytes: usize) {
    if let Some(block) = block() {
        block
            .received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Counts bytes written to a client connection.
pub fn sent(bytes: u64) {
    if let Some(block) = block() {
        block.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Sets this child's count of parked connections (the acceptor, each turn of its loop).
pub fn set_parked(n: usize) {
    if let Some(slot) = slot() {
        slot.parked.store(n as u64, Ordering::Relaxed);
    }
}

/// Which side of a handoff a connection was counted on.
#[derive(Clone, Copy)]
pub enum HandoffSide {
    Sent = 0,
    Adopted = 1,
}

/// Counts a connection handed to the next generation, or adopted from an older one.
pub fn handoff(side: HandoffSide) {
    if let Some(block) = block() {
        block.handoffs[side as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts an image download's cache lookup.
pub fn cache_lookup(hit: bool) {
    if let Some(block) = block() {
        block.cache_lookups[usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one time a registry call found the database locked and waited for it.
pub fn registry_busy_wait() {
    if let Some(block) = block() {
        block.registry_busy_waits.fetch_add(1, Ordering::Relaxed);
    }
}

/// The master's own numbers, stored (never added: the master's machine holds the truth, and a
/// store cannot block). `children` is per state, in [`labels::CHILD_STATES`]' order.
pub fn store_master_numbers(
    reloads_succeeded: u64,
    reloads_failed: u64,
    generation: u64,
    children: [u64; 4],
) {
    let Some(block) = block() else { return };
    block.reloads[0].store(reloads_succeeded, Ordering::Relaxed);
    block.reloads[1].store(reloads_failed, Ordering::Relaxed);
    block.generation.store(generation, Ordering::Relaxed);
    for (cell, n) in block.children.iter().zip(children) {
        cell.store(n, Ordering::Relaxed);
    }
}
