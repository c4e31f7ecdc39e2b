//! vhd (qemu's `vpc`): Microsoft's Virtual Hard Disk.
//!
//! A 512-byte big-endian footer, cookie `conectix`, sits at the end of every vhd; a dynamic or
//! differencing disk also has a copy at offset 0 (qemu reads offset 0 first, then the end, and so
//! do we). Fields: creator application at 28, current size at 48, geometry (cylinders at 56,
//! heads at 58, sectors per track at 59), disk type at 60 (2 fixed, 3 dynamic, 4 differencing).
//! A differencing disk reads a parent file named inside it, like a qcow2 backing file: refused.

use super::inspector::Seen;
use super::Problem;

pub const COOKIE: &[u8] = b"conectix";
const FOOTER: usize = 512;

/// qemu's VHD_MAX_GEOMETRY: with this geometry the size is always the footer's current size.
const MAX_GEOMETRY: u64 = 65535 * 16 * 255;

pub fn matches(seen: &Seen<'_>) -> bool {
    footer_offset(seen).is_some()
}

/// Where the footer is: offset 0, else the last 512 bytes.
fn footer_offset(seen: &Seen<'_>) -> Option<u64> {
    if seen.head.starts_with(COOKIE) {
        return Some(0);
    }
    let last = seen.size.checked_sub(FOOTER as u64)?;
    seen.bytes_at(last, COOKIE.len())
        .filter(|bytes| *bytes == COOKIE)
        .map(|_| last)
}

/// The virtual size as `qemu-img info` reports it, or why the image is refused.
pub fn inspect(seen: &Seen<'_>) -> Result<u64, Problem> {
    let at = footer_offset(seen)
        .ok_or_else(|| Problem::Unparsable("no vhd footer (conectix)".to_string()))?;
    let footer = seen
        .bytes_at(at, FOOTER)
        .ok_or_else(|| Problem::Unparsable("the vhd footer is truncated".to_string()))?;
    let be16 = |offset: usize| u16::from_be_bytes([footer[offset], footer[offset + 1]]);
    let be32 =
        |offset: usize| u32::from_be_bytes(footer[offset..offset + 4].try_into().unwrap_or([0; 4]));
    let be64 =
        |offset: usize| u64::from_be_bytes(footer[offset..offset + 8].try_into().unwrap_or([0; 8]));
    match be32(60) {
        2 | 3 => {}
        4 => {
            return Err(Problem::Unsafe(
                "the vhd image is a differencing disk (it reads a parent file)".to_string(),
            ))
        }
        other => {
            return Err(Problem::Unparsable(format!(
                "vhd disk type {other} is not fixed, dynamic or differencing"
            )))
        }
    }
    let current_size = be64(48);
    let chs_sectors = u64::from(be16(56)) * u64::from(footer[58]) * u64::from(footer[59]);
    // qemu's block/vpc.c: Virtual PC and qemu (`vpc `, `qemu`) size a disk by its geometry;
    // Hyper-V, disk2vhd, XenServer and newer qemu (`win `, `d2v `, `tap\0`, `CTXS`, `qem2`) by
    // the footer's current size; the maximum geometry always means the current size.
    let creator = &footer[28..32];
    let uses_current_size = [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"]
        .iter()
        .any(|name| creator == *name);
    if uses_current_size || chs_sectors == MAX_GEOMETRY {
        // qemu keeps whole sectors.
        Ok(current_size / 512 * 512)
    } else {
        Ok(chs_sectors * 512)
    }
}
