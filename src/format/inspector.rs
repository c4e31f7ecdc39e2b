//! [`Inspector`]: what an upload keeps of its data while it streams, for the format checks.
//!
//! The inspector sees each chunk once, as the upload writes it to the store, and keeps only
//! bounded windows of the stream: the head ([`HEAD_WINDOW`]), the tail ([`TAIL_WINDOW`]) and at
//! most [`MAX_CAPTURES`] regions further in that a header named ([`MAX_CAPTURE`] bytes each,
//! e.g. a vmdk descriptor or the vhdx metadata table). So one upload holds at most
//! `HEAD_WINDOW + TAIL_WINDOW + MAX_CAPTURES * MAX_CAPTURE` bytes (2,363,392; docs/OPERATIONS.md
//! quotes it), whatever the image size or what its headers claim.
//!
//! It does not decide anything: the format files ([`super::qcow2`] and the others) read a
//! [`Seen`] and say which regions they still need ([`super::wanted_region`]); `mod.rs` judges.

/// How many bytes of the start of the stream are kept. 256 KiB covers every header read here:
/// qcow2, vhd and vmdk at 0, the ISO 9660 volume descriptors from 32 KiB, the MBR at 0, and the
/// vhdx region table at 192 KiB (64 KiB long).
pub const HEAD_WINDOW: usize = 256 * 1024;

/// How many bytes of the end of the stream are kept: a fixed vhd's footer (last 512 bytes) and a
/// streamOptimized vmdk's footer (last 1536 bytes).
pub const TAIL_WINDOW: usize = 4096;

/// The largest region kept beyond the head: oslo.utils' inspector caps a vmdk descriptor at
/// 1 MiB; a vhdx metadata table is at most 64 KiB.
pub const MAX_CAPTURE: usize = 1024 * 1024;

/// How many regions beyond the head one stream may ask for (vmdk: the descriptor; vhdx: the
/// metadata table, then its items).
pub const MAX_CAPTURES: usize = 2;

/// A streaming format inspector: feed it every chunk in order, then [`Inspector::seen`].
#[derive(Debug, Default)]
pub struct Inspector {
    /// The first [`HEAD_WINDOW`] bytes (fewer while the stream is shorter).
    head: Vec<u8>,
    /// The last [`TAIL_WINDOW`] bytes seen so far.
    tail: Vec<u8>,
    /// Regions past the head that a header asked for.
    captures: Vec<Capture>,
    /// Bytes fed so far: the offset of the next byte.
    position: u64,
    /// Set when a header asked for a region that had already streamed past, or for more than
    /// the caps allow: the format that asked then fails to parse.
    missed: bool,
}

/// One region kept beyond the head.
#[derive(Debug)]
pub struct Capture {
    /// Offset of the region in the stream.
    pub offset: u64,
    /// Its length (at most [`MAX_CAPTURE`]).
    pub len: usize,
    /// What arrived of it so far.
    pub data: Vec<u8>,
}

/// What the inspector kept: the windows and the total size.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub head: &'a [u8],
    pub tail: &'a [u8],
    pub captures: &'a [Capture],
    /// Bytes in the whole stream (so far, while it streams).
    pub size: u64,
}

impl Inspector {
    pub fn new() -> Inspector {
        Inspector::default()
    }

    /// Takes the next chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let start = self.position;
        self.position += chunk.len() as u64;
        let head_was_full = self.head.len() == HEAD_WINDOW;
        if !head_was_full {
            let take = (HEAD_WINDOW - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        if chunk.len() >= TAIL_WINDOW {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - TAIL_WINDOW..]);
        } else {
            self.tail.extend_from_slice(chunk);
            if self.tail.len() > TAIL_WINDOW {
                let excess = self.tail.len() - TAIL_WINDOW;
                self.tail.drain(..excess);
            }
        }
        // Headers are only looked at once the head is whole, and again each time a region
        // they asked for is complete: a few checks per region, not per chunk.
        let mut look = !head_was_full && self.head.len() == HEAD_WINDOW;
        let mut completed = self.copy_into_captures(start, chunk);
        while look || completed {
            look = false;
            completed = false;
            if self.plan(start) {
                completed = self.copy_into_captures(start, chunk);
            }
        }
    }

    /// What was kept, for the format checks once the stream has ended.
    pub fn seen(&mut self) -> Seen<'_> {
        // A stream shorter than the head window never triggered the look in `feed`; regions
        // inside the head need no capture, so this asks only for what cannot exist.
        if self.head.len() < HEAD_WINDOW {
            let end = self.position;
            while self.plan(end) {}
        }
        Seen {
            head: &self.head,
            tail: &self.tail,
            captures: &self.captures,
            size: self.position,
        }
    }

    /// Whether a header asked for a region the inspector could not keep.
    pub fn missed(&self) -> bool {
        self.missed
    }

    /// Asks the formats for their next region; registers it if it is not kept already. `start`
    /// is the offset of the chunk being fed (what lies before it and past the head is gone).
    /// Returns whether a new capture was registered.
    fn plan(&mut self, start: u64) -> bool {
        let seen = Seen {
            head: &self.head,
            tail: &self.tail,
            captures: &self.captures,
            size: self.position,
        };
        let Some((offset, len)) = super::wanted_region(&seen) else {
            return false;
        };
        // The tail does not count: it moves on with the stream, and the region with it.
        let kept = Seen {
            tail: &[],
            size: seen.size.max(offset.saturating_add(len as u64)),
            ..seen
        };
        if kept.bytes_at(offset, len).is_some() || self.missed {
            return false;
        }
        let registered = self
            .captures
            .iter()
            .any(|capture| capture.offset == offset && capture.len == len);
        if registered {
            return false;
        }
        // Bytes of the region that the head or an earlier capture already holds are taken from
        // them; the rest must still be ahead in the stream (the chunk being fed starts at `start`).
        let prefix = self.kept_prefix(offset, len);
        let next_needed = offset + prefix.len() as u64;
        if len > MAX_CAPTURE
            || self.captures.len() >= MAX_CAPTURES
            || next_needed < start
            || self.head.len() < HEAD_WINDOW
        {
            // Too big, one too many, already streamed past, or past the end of a stream that
            // ended inside the head.
            self.missed = true;
            return false;
        }
        self.captures.push(Capture {
            offset,
            len,
            data: prefix,
        });
        true
    }

    /// The longest run of the region (`offset`, `len`) from its start that the head and the
    /// captures hold.
    fn kept_prefix(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut prefix = Vec::new();
        while prefix.len() < len {
            let at = offset + prefix.len() as u64;
            let source = if at < self.head.len() as u64 {
                &self.head[at as usize..]
            } else {
                let holder = self.captures.iter().find(|capture| {
                    at >= capture.offset && at < capture.offset + capture.data.len() as u64
                });
                match holder {
                    Some(capture) => &capture.data[(at - capture.offset) as usize..],
                    None => break,
                }
            };
            let take = source.len().min(len - prefix.len());
            prefix.extend_from_slice(&source[..take]);
        }
        prefix
    }

    /// Copies the part of `chunk` (which starts at `start`) that falls in each unfinished
    /// capture; returns whether one of them became complete.
    fn copy_into_captures(&mut self, start: u64, chunk: &[u8]) -> bool {
        let end = start + chunk.len() as u64;
        let mut completed = false;
        for capture in &mut self.captures {
            if capture.data.len() == capture.len {
                continue;
            }
            let want_from = capture.offset + capture.data.len() as u64;
            let want_to = capture.offset.saturating_add(capture.len as u64);
            if want_from < start || want_from >= end {
                continue;
            }
            let from = (want_from - start) as usize;
            let to = (want_to.min(end) - start) as usize;
            capture.data.extend_from_slice(&chunk[from..to]);
            completed |= capture.data.len() == capture.len;
        }
        completed
    }
}

impl Seen<'_> {
    /// `len` bytes at `offset`, if one window holds all of them.
    pub fn bytes_at(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        if end <= self.head.len() as u64 {
            return self.head.get(offset as usize..end as usize);
        }
        let tail_start = self.size - self.tail.len() as u64;
        if offset >= tail_start && end <= self.size {
            let from = (offset - tail_start) as usize;
            return self.tail.get(from..from + len);
        }
        self.captures.iter().find_map(|capture| {
            let capture_end = capture.offset + capture.data.len() as u64;
            if offset >= capture.offset && end <= capture_end {
                let from = (offset - capture.offset) as usize;
                capture.data.get(from..from + len)
            } else {
                None
            }
        })
    }

    /// A little-endian or big-endian integer at `offset`, if kept.
    pub fn u16_le(&self, offset: u64) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.bytes_at(offset, 2)?.try_into().ok()?,
        ))
    }
    pub fn u32_le(&self, offset: u64) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.bytes_at(offset, 4)?.try_into().ok()?,
        ))
    }
    pub fn u64_le(&self, offset: u64) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.bytes_at(offset, 8)?.try_into().ok()?,
        ))
    }
    pub fn u32_be(&self, offset: u64) -> Option<u32> {
        Some(u32::from_be_bytes(
            self.bytes_at(offset, 4)?.try_into().ok()?,
        ))
    }
    pub fn u64_be(&self, offset: u64) -> Option<u64> {
        Some(u64::from_be_bytes(
            self.bytes_at(offset, 8)?.try_into().ok()?,
        ))
    }
    pub fn u16_be(&self, offset: u64) -> Option<u16> {
        Some(u16::from_be_bytes(
            self.bytes_at(offset, 2)?.try_into().ok()?,
        ))
    }
}
