//! vdi: VirtualBox's disk image.
//!
//! A 512-byte little-endian header at offset 0 (qemu's block/vdi.c, oslo.utils' `VDIInspector`):
//! signature `0xbeda107f` at 0x40, image type at 0x4c (1 dynamic, 2 fixed; qemu opens no other),
//! and the disk size in bytes at 0x170, which is the `virtual_size` qemu-img reports. A vdi names
//! no other file qemu would open, so it has no safety check beyond parsing, as in oslo.utils.

use super::inspector::Seen;
use super::Problem;

const SIGNATURE: u32 = 0xbeda_107f;
const SIGNATURE_AT: u64 = 0x40;
const IMAGE_TYPE_AT: u64 = 0x4c;
const DISK_SIZE_AT: u64 = 0x170;
const DYNAMIC: u32 = 1;
const FIXED: u32 = 2;

pub fn matches(seen: &Seen<'_>) -> bool {
    seen.u32_le(SIGNATURE_AT) == Some(SIGNATURE)
}

/// The virtual size as `qemu-img info` reports it, or why the image is refused.
pub fn inspect(seen: &Seen<'_>) -> Result<u64, Problem> {
    match seen.u32_le(IMAGE_TYPE_AT) {
        Some(DYNAMIC | FIXED) => {}
        Some(other) => {
            return Err(Problem::Unparsable(format!(
                "vdi image type {other} is neither dynamic (1) nor fixed (2)"
            )))
        }
        None => {
            return Err(Problem::Unparsable(
                "the vdi header is truncated".to_string(),
            ))
        }
    }
    seen.u64_le(DISK_SIZE_AT)
        .ok_or_else(|| Problem::Unparsable("the vdi header is truncated".to_string()))
}
