//! iso: ISO 9660 (ECMA-119) and UDF (ECMA-167) images.
//!
//! The volume descriptors start at 32 KiB, one per 2048-byte sector; each has a type byte, then
//! an identifier: `CD001` for ISO 9660, `BEA01`/`NSR02`/`NSR03`/`TEA01` for UDF's volume
//! recognition sequence. The size comes from the primary volume descriptor (type 1): its
//! volume space size (blocks, at 80) times its logical block size (at 128), both read from the
//! little-endian half of their both-endian fields, as oslo.utils does. A UDF image without a
//! primary ISO 9660 descriptor counts its bytes.
//!
//! An ISO holds no reference to other files that a hypervisor would follow, so there is no
//! safety check; a hybrid ISO may start with an MBR or GPT, which `mod.rs` allows.

use super::inspector::{Seen, HEAD_WINDOW};
use super::Problem;

const FIRST_DESCRIPTOR: u64 = 32 * 1024;
const SECTOR: u64 = 2048;

pub fn matches(seen: &Seen<'_>) -> bool {
    descriptors(seen)
        .any(|(_, identifier)| matches!(identifier, b"CD001" | b"NSR02" | b"NSR03" | b"BEA01"))
}

/// The volume descriptors in the head: (offset, identifier).
fn descriptors<'a>(seen: &'a Seen<'_>) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
    (FIRST_DESCRIPTOR..HEAD_WINDOW as u64)
        .step_by(SECTOR as usize)
        .filter_map(|offset| Some((offset, seen.bytes_at(offset + 1, 5)?)))
}

/// The virtual size, or why the image cannot be parsed.
pub fn inspect(seen: &Seen<'_>) -> Result<u64, Problem> {
    if !matches(seen) {
        return Err(Problem::Unparsable(
            "no ISO 9660 or UDF volume descriptor at 32 KiB".to_string(),
        ));
    }
    let primary = descriptors(seen).find(|(offset, identifier)| {
        *identifier == b"CD001" && seen.bytes_at(*offset, 1) == Some(&[1])
    });
    let Some((offset, _)) = primary else {
        return Ok(seen.size);
    };
    let truncated =
        || Problem::Unparsable("the ISO primary volume descriptor is truncated".to_string());
    let blocks = seen.u32_le(offset + 80).ok_or_else(truncated)?;
    let block_size = seen.u16_le(offset + 128).ok_or_else(truncated)?;
    Ok(u64::from(blocks) * u64::from(block_size))
}
