//! qcow2: QEMU's copy-on-write format (qemu's docs/interop/qcow2.txt).
//!
//! The header is big-endian at offset 0: magic `QFI\xfb`, version (2 or 3), the backing file
//! name's offset at 8, cluster bits at 20, the virtual size at 24, and in version 3 the
//! incompatible feature bits at 72. The safety checks are those of oslo.utils' inspector (the
//! 2024 advisory, CVE-2024-32498): a backing file or an external data file makes a hypervisor
//! read a host file named by the image, so such an image is refused.

use super::inspector::Seen;
use super::Problem;

pub const MAGIC: &[u8] = b"QFI\xfb";

/// Incompatible feature bit 2: the guest data lives in an external file named in a header
/// extension.
const FEATURE_EXTERNAL_DATA_FILE: u64 = 1 << 2;

/// The incompatible features oslo.utils knows (dirty, corrupt, external data file, compression
/// type); any other bit may change how the image is read, so it is refused.
const KNOWN_INCOMPATIBLE_FEATURES: u64 = 0b1111;

pub fn matches(seen: &Seen<'_>) -> bool {
    seen.head.starts_with(MAGIC)
}

/// The virtual size, or why the image cannot be parsed or is unsafe.
pub fn inspect(seen: &Seen<'_>) -> Result<u64, Problem> {
    let truncated = || Problem::Unparsable("the qcow2 header is truncated".to_string());
    if !matches(seen) {
        return Err(Problem::Unparsable("no qcow2 magic".to_string()));
    }
    let version = seen.u32_be(4).ok_or_else(truncated)?;
    if version != 2 && version != 3 {
        return Err(Problem::Unparsable(format!(
            "qcow2 version {version} is not 2 or 3"
        )));
    }
    let cluster_bits = seen.u32_be(20).ok_or_else(truncated)?;
    // qemu accepts 9 to 21 (512 bytes to 2 MiB clusters).
    if !(9..=21).contains(&cluster_bits) {
        return Err(Problem::Unparsable(format!(
            "qcow2 cluster_bits {cluster_bits} is outside 9 to 21"
        )));
    }
    let virtual_size = seen.u64_be(24).ok_or_else(truncated)?;
    if seen.u64_be(8).ok_or_else(truncated)? != 0 {
        return Err(Problem::Unsafe(
            "the qcow2 image has a backing file, a file of the host that a hypervisor would read"
                .to_string(),
        ));
    }
    if version == 3 {
        let features = seen.u64_be(72).ok_or_else(truncated)?;
        if features & FEATURE_EXTERNAL_DATA_FILE != 0 {
            return Err(Problem::Unsafe(
                "the qcow2 image has an external data file, a file of the host that a hypervisor would read".to_string(),
            ));
        }
        let unknown = features & !KNOWN_INCOMPATIBLE_FEATURES;
        if unknown != 0 {
            return Err(Problem::Unsafe(format!(
                "the qcow2 image has unknown incompatible features {unknown:#x}"
            )));
        }
    }
    Ok(virtual_size)
}
