//! The shared counter block: one fixed-layout struct of `AtomicU64`s in memory the master maps
//! `MAP_SHARED | MAP_ANONYMOUS` once, at start, before its first fork. Every child of every
//! generation inherits the same mapping, so all of them add to the same numbers, and nothing
//! resets when a child dies or a generation replaces another: the counters are monotonic for
//! the master's whole life (as nginx keeps such counters in shared memory).
//!
//! # Who writes what
//!
//! Children add to the request, byte, handoff, cache and registry counters (`fetch_add`,
//! relaxed: each is a count on its own; a scrape may see one counter of a request updated and
//! another not yet, never a count going down). The master only stores its own numbers (reloads,
//! generation, children by state): a store never blocks, and the master writes nothing else.
//!
//! # Gauges across children
//!
//! In-flight requests and parked connections are per child: each child has a [`Slot`] (given
//! by the master at fork, see `Master::spawn`) that only it writes while it lives, and the
//! master zeroes the slot when it reaps the child, before giving it to another. A scrape sums
//! the slots, so a child killed with requests in flight leaves nothing behind once reaped.

use std::sync::atomic::{AtomicU64, Ordering};

use super::labels::{
    CACHE_RESULTS, CHILD_STATES, HANDOFF_SIDES, N_BUCKETS, N_METHODS, N_ROUTES, N_STATUSES,
    RELOAD_OUTCOMES,
};

/// How many children can hold a gauge slot at once. A child forked when all are taken serves
/// without one (its gauges are not counted; the master logs it). Every generation alive at once
/// has at most `workers` (at most 256) children, and at most a few generations drain at once.
pub const MAX_SLOTS: usize = 1024;

/// One child's gauges.
#[repr(C)]
pub struct Slot {
    /// Requests its workers are handling now.
    pub in_flight: AtomicU64,
    /// Connections its acceptor holds between requests (idle, partial head, waiting to send).
    pub parked: AtomicU64,
}

/// The whole block. `#[repr(C)]` and only atomics: the layout is fixed, and all-zero bytes (what
/// an anonymous mapping starts as) are a valid, empty block.
#[repr(C)]
pub struct Block {
    /// `[method][route][status]`.
    pub requests: [[[AtomicU64; N_STATUSES]; N_ROUTES]; N_METHODS],
    /// `[route][bucket]`, not cumulative (the renderer sums them); the last bucket is `+Inf`.
    pub duration_buckets: [[AtomicU64; N_BUCKETS]; N_ROUTES],
    /// `[route]`, in microseconds.
    pub duration_sum_us: [AtomicU64; N_ROUTES],
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub handoffs: [AtomicU64; HANDOFF_SIDES.len()],
    pub cache_lookups: [AtomicU64; CACHE_RESULTS.len()],
    pub registry_busy_waits: AtomicU64,
    /// Written by the master only (stores).
    pub reloads: [AtomicU64; RELOAD_OUTCOMES.len()],
    /// Written by the master only (stores).
    pub generation: AtomicU64,
    /// Written by the master only (stores).
    pub children: [AtomicU64; CHILD_STATES.len()],
    pub slots: [Slot; MAX_SLOTS],
}

impl Block {
    /// Maps a zeroed block shared with every process forked after this call. The mapping is
    /// never unmapped: it lives as long as the process (and its children).
    pub fn map_shared() -> std::io::Result<&'static Block> {
        let size = std::mem::size_of::<Block>();
        // SAFETY: a fresh anonymous mapping, not aliased by any Rust object; the kernel zeroes
        // it, which is a valid `Block` (only atomics), and page alignment exceeds the
        // alignment of `AtomicU64`.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(std::io::Error::other(format!(
                "mmap(MAP_SHARED | MAP_ANONYMOUS, {size} bytes) for the metrics block: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: as above; the mapping is never unmapped, so `'static` holds.
        Ok(unsafe { &*(address as *const Block) })
    }

    /// Zeroes slot `index` (the master, after reaping its child and before reusing it).
    pub fn clear_slot(&self, index: usize) {
        if let Some(slot) = self.slots.get(index) {
            slot.in_flight.store(0, Ordering::Relaxed);
            slot.parked.store(0, Ordering::Relaxed);
        }
    }
}
