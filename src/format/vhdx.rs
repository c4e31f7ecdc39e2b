//! vhdx: Microsoft's VHDX format (the [MS-VHDX] specification), little-endian.
//!
//! The file starts with `vhdxfile`; the region table at 192 KiB (signature `regi`) gives the
//! offset of the metadata region; that region starts with a table (signature `metadata`, at
//! most 2047 entries, so 64 KiB) of items by GUID, each at an offset inside the region. The
//! virtual disk size is the 8-byte item "Virtual Disk Size"; the "File Parameters" item has the
//! HasParent bit of a differencing disk, which reads a parent file named inside it: refused.
//!
//! The metadata region may lie anywhere in the file, so the inspector is asked for it as a
//! region ([`wanted_region`]): first the table, then the span of the two items, each bounded.

use super::inspector::Seen;
use super::Problem;

pub const SIGNATURE: &[u8] = b"vhdxfile";

/// Offset of the (first) region table, and its size.
const REGION_TABLE: u64 = 192 * 1024;
const REGION_TABLE_SIZE: usize = 64 * 1024;
/// The specification's limit on region table entries.
const MAX_REGION_ENTRIES: u32 = 2047;
/// The metadata table: 32-byte header, then at most 2047 entries of 32 bytes.
const METADATA_TABLE_SIZE: usize = 64 * 1024;
const MAX_METADATA_ENTRIES: u16 = 2047;
/// The longest span between the two items read: both are 8 bytes and qemu puts them next to
/// each other; a file that spreads them further is refused rather than captured.
const MAX_ITEM_SPAN: u64 = 64 * 1024;

/// GUIDs in their on-disk (mixed-endian) byte order.
const METADATA_REGION: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
const VIRTUAL_DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);

/// File Parameters flag: the disk is a differencing disk.
const HAS_PARENT: u32 = 1 << 1;

const fn guid(first: u32, second: u16, third: u16, rest: [u8; 8]) -> [u8; 16] {
    let a = first.to_le_bytes();
    let b = second.to_le_bytes();
    let c = third.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], rest[0], rest[1], rest[2], rest[3],
        rest[4], rest[5], rest[6], rest[7],
    ]
}

pub fn matches(seen: &Seen<'_>) -> bool {
    seen.head.starts_with(SIGNATURE)
}

/// The next region the inspector should keep for a vhdx: the metadata table, then its items.
pub fn wanted_region(seen: &Seen<'_>) -> Option<(u64, usize)> {
    let metadata = metadata_offset(seen).ok()?;
    if seen.bytes_at(metadata, METADATA_TABLE_SIZE).is_none() {
        return Some((metadata, METADATA_TABLE_SIZE));
    }
    let (first, last) = items(seen, metadata).ok()?;
    let (from, to) = (first.min(last), first.max(last));
    Some((
        metadata.checked_add(from)?,
        usize::try_from(to - from + 8).ok()?,
    ))
}

/// The offset of the metadata region, from the region table.
fn metadata_offset(seen: &Seen<'_>) -> Result<u64, Problem> {
    let table = seen
        .bytes_at(REGION_TABLE, REGION_TABLE_SIZE)
        .ok_or_else(|| Problem::Unparsable("the vhdx region table is missing".to_string()))?;
    if &table[..4] != b"regi" {
        return Err(Problem::Unparsable(
            "the vhdx region table has no signature".to_string(),
        ));
    }
    let count = u32::from_le_bytes([table[8], table[9], table[10], table[11]]);
    if count > MAX_REGION_ENTRIES {
        return Err(Problem::Unparsable(format!(
            "the vhdx region table has {count} entries (at most {MAX_REGION_ENTRIES})"
        )));
    }
    for index in 0..count as usize {
        let entry = &table[16 + index * 32..16 + (index + 1) * 32];
        if entry[..16] == METADATA_REGION {
            let offset = u64::from_le_bytes(entry[16..24].try_into().unwrap_or([0; 8]));
            return Ok(offset);
        }
    }
    Err(Problem::Unparsable(
        "the vhdx region table has no metadata region".to_string(),
    ))
}

/// The offsets (inside the metadata region) of the Virtual Disk Size and File Parameters items.
fn items(seen: &Seen<'_>, metadata: u64) -> Result<(u64, u64), Problem> {
    let table = seen
        .bytes_at(metadata, METADATA_TABLE_SIZE)
        .ok_or_else(|| Problem::Unparsable("the vhdx metadata table is missing".to_string()))?;
    if &table[..8] != b"metadata" {
        return Err(Problem::Unparsable(
            "the vhdx metadata table has no signature".to_string(),
        ));
    }
    let count = u16::from_le_bytes([table[10], table[11]]);
    if count > MAX_METADATA_ENTRIES {
        return Err(Problem::Unparsable(format!(
            "the vhdx metadata table has {count} entries (at most {MAX_METADATA_ENTRIES})"
        )));
    }
    let (mut size_item, mut parameters_item) = (None, None);
    for index in 0..usize::from(count) {
        let entry = &table[32 + index * 32..32 + (index + 1) * 32];
        let offset = u64::from(u32::from_le_bytes(
            entry[16..20].try_into().unwrap_or([0; 4]),
        ));
        let length = u32::from_le_bytes(entry[20..24].try_into().unwrap_or([0; 4]));
        if entry[..16] == VIRTUAL_DISK_SIZE && length >= 8 {
            size_item = Some(offset);
        } else if entry[..16] == FILE_PARAMETERS && length >= 8 {
            parameters_item = Some(offset);
        }
    }
    let size_item = size_item.ok_or_else(|| {
        Problem::Unparsable("the vhdx metadata has no virtual disk size".to_string())
    })?;
    let parameters_item = parameters_item.ok_or_else(|| {
        Problem::Unparsable("the vhdx metadata has no file parameters".to_string())
    })?;
    if size_item.abs_diff(parameters_item) > MAX_ITEM_SPAN {
        return Err(Problem::Unparsable(
            "the vhdx metadata items are too far apart".to_string(),
        ));
    }
    Ok((size_item, parameters_item))
}

/// The virtual size, or why the image cannot be parsed or is unsafe.
pub fn inspect(seen: &Seen<'_>) -> Result<u64, Problem> {
    if !matches(seen) {
        return Err(Problem::Unparsable("no vhdx signature".to_string()));
    }
    let metadata = metadata_offset(seen)?;
    let (size_item, parameters_item) = items(seen, metadata)?;
    let missing = || Problem::Unparsable("a vhdx metadata item is missing".to_string());
    let flags = seen
        .u32_le(metadata.saturating_add(parameters_item).saturating_add(4))
        .ok_or_else(missing)?;
    if flags & HAS_PARENT != 0 {
        return Err(Problem::Unsafe(
            "the vhdx image is a differencing disk (it reads a parent file)".to_string(),
        ));
    }
    seen.u64_le(metadata.saturating_add(size_item))
        .ok_or_else(missing)
}
