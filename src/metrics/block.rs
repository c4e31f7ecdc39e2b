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
/// without one (its gauges are not counted; the master logs it, once per generation). Every
/// generation alive at once has at most `workers` (at most 256) children, and with long drains
/// many generations may overlap, so room for 256 generations of 256. The slots cost 1 MiB of
/// address space but only the pages of slots handed out are ever touched (an anonymous
/// mapping's untouched pages take no memory), and a scrape sums only the slots up to
/// [`Block::slots_handed_out`]: the lowest free slot is always taken, so that is the most
/// children ever alive at once, not `MAX_SLOTS`.
pub const MAX_SLOTS: usize = 65536;

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
    /// One more than the highest slot ever handed out (a high-water mark). Written by the
    /// master only (stores, in [`Block::hand_out_slot`]).
    pub slots_handed_out: AtomicU64,
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

    /// The lowest slot not in `taken` (the master, as it forks a child), raising the high-water
    /// mark to cover it; `None` when all [`MAX_SLOTS`] are taken.
    pub fn hand_out_slot(&self, taken: &std::collections::HashSet<usize>) -> Option<usize> {
        let slot = (0..MAX_SLOTS).find(|slot| !taken.contains(slot))?;
        if slot as u64 >= self.slots_handed_out.load(Ordering::Relaxed) {
            self.slots_handed_out
                .store(slot as u64 + 1, Ordering::Relaxed);
        }
        Some(slot)
    }

    /// The slots a child may have written: those up to the high-water mark, all a scrape sums.
    pub fn used_slots(&self) -> &[Slot] {
        let used = self.slots_handed_out.load(Ordering::Relaxed) as usize;
        &self.slots[..used.min(MAX_SLOTS)]
    }

    /// Zeroes slot `index` (the master, after reaping its child and before reusing it).
    pub fn clear_slot(&self, index: usize) {
        if let Some(slot) = self.slots.get(index) {
            slot.in_flight.store(0, Ordering::Relaxed);
            slot.parked.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn slots_reach_far_past_a_thousand_children_and_a_scrape_sums_only_those_handed_out() {
        let block = Block::map_shared().expect("map the block");
        assert_eq!(block.used_slots().len(), 0);
        // 256 generations of 256 children draining at once, but one.
        let taken: HashSet<usize> = (0..MAX_SLOTS - 1).collect();
        assert_eq!(block.hand_out_slot(&taken), Some(MAX_SLOTS - 1));
        assert_eq!(MAX_SLOTS, 256 * 256);
        block.slots[MAX_SLOTS - 1]
            .in_flight
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(block.used_slots().len(), MAX_SLOTS);
        let text = crate::metrics::exposition::render(block);
        assert!(
            text.contains("\nglint_http_requests_in_flight 1\n"),
            "{text}"
        );
        // All taken: none.
        let all: HashSet<usize> = (0..MAX_SLOTS).collect();
        assert_eq!(block.hand_out_slot(&all), None);

        // A fresh block: the lowest free slot, and the sum covers just that far.
        let block = Block::map_shared().expect("map the block");
        assert_eq!(block.hand_out_slot(&HashSet::new()), Some(0));
        assert_eq!(block.hand_out_slot(&HashSet::from([0])), Some(1));
        assert_eq!(block.used_slots().len(), 2);
        // Freed and handed out again: the mark stays.
        assert_eq!(block.hand_out_slot(&HashSet::new()), Some(0));
        assert_eq!(block.used_slots().len(), 2);
    }
}
