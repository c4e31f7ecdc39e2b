//! vmdk: VMware's virtual disk, the hosted sparse extent (VMware's "Virtual Disk Format 1.1").
//!
//! A sparse extent starts with a little-endian header, magic `KDMV`: capacity in sectors at 12,
//! the embedded descriptor's offset and size in sectors at 28 and 36, the grain directory's
//! offset at 56. A streamOptimized disk may set that offset to "at the end" and keep the true
//! header in a footer 1024 bytes before the end, which qemu then reads, and so do we.
//!
//! The descriptor is text: `key=value` lines (`createType`), `ddb.*` lines, comments, and one
//! line per extent (`RW 20480 SPARSE "disk.vmdk"`). An extent may be any file of the host, so
//! only what cannot name one is accepted: a `createType` from `vmdk_allowed_types` (Glance:
//! streamOptimized, monolithicSparse) and exactly one SPARSE extent, named without a `/`,
//! which is the file itself. A descriptor file on its own (text at offset 0, like a
//! monolithicFlat's) holds no data at all: every extent it names is another file, so it is
//! refused. oslo.utils caps the descriptor at 1 MiB, and so does the inspector.

use super::inspector::{Seen, MAX_CAPTURE};
use super::Problem;

pub const MAGIC: &[u8] = b"KDMV";

/// How a descriptor file starts (qemu and VMware write this comment first).
const DESCRIPTOR_FILE: &[u8] = b"# Disk DescriptorFile";

/// The grain directory offset that means "see the footer" (VMDK4_GD_AT_END).
const GD_AT_END: u64 = u64::MAX;

pub fn matches(seen: &Seen<'_>) -> bool {
    seen.head.starts_with(MAGIC) || seen.head.starts_with(DESCRIPTOR_FILE)
}

/// The embedded descriptor's region, for the inspector to keep.
pub fn wanted_region(seen: &Seen<'_>) -> Option<(u64, usize)> {
    descriptor_region(seen).ok()
}

fn descriptor_region(seen: &Seen<'_>) -> Result<(u64, usize), Problem> {
    let truncated = || Problem::Unparsable("the vmdk header is truncated".to_string());
    let offset = seen.u64_le(28).ok_or_else(truncated)?;
    let sectors = seen.u64_le(36).ok_or_else(truncated)?;
    if offset == 0 || sectors == 0 {
        return Err(Problem::Unparsable(
            "the vmdk has no embedded descriptor".to_string(),
        ));
    }
    let size = sectors
        .checked_mul(512)
        .filter(|size| *size <= MAX_CAPTURE as u64)
        .ok_or_else(|| {
            Problem::Unparsable(format!(
                "the vmdk descriptor is larger than {MAX_CAPTURE} bytes"
            ))
        })?;
    let start = offset.checked_mul(512).ok_or_else(truncated)?;
    Ok((start, size as usize))
}

/// The virtual size, or why the image cannot be parsed or is unsafe.
pub fn inspect(seen: &Seen<'_>, allowed_types: &[String]) -> Result<u64, Problem> {
    if seen.head.starts_with(DESCRIPTOR_FILE) {
        return Err(Problem::Unsafe(
            "the vmdk is a descriptor file without data: its extents are other files of the host, which a hypervisor would read".to_string(),
        ));
    }
    if !seen.head.starts_with(MAGIC) {
        return Err(Problem::Unparsable("no vmdk magic".to_string()));
    }
    let (start, size) = descriptor_region(seen)?;
    let descriptor = seen.bytes_at(start, size).ok_or_else(|| {
        Problem::Unparsable("the vmdk descriptor is outside the data".to_string())
    })?;
    check_descriptor(descriptor, allowed_types)?;
    let truncated = || Problem::Unparsable("the vmdk header is truncated".to_string());
    let mut capacity = seen.u64_le(12).ok_or_else(truncated)?;
    if seen.u64_le(56).ok_or_else(truncated)? == GD_AT_END {
        // streamOptimized: the footer (a full header) sits 1024 bytes before the end, after a
        // footer marker and before the end-of-stream marker.
        let footer = seen.size.checked_sub(1024).ok_or_else(truncated)?;
        if seen.bytes_at(footer, 4) != Some(MAGIC) {
            return Err(Problem::Unparsable(
                "the vmdk grain directory is at the end but there is no footer".to_string(),
            ));
        }
        capacity = seen.u64_le(footer + 12).ok_or_else(truncated)?;
    }
    capacity
        .checked_mul(512)
        .ok_or_else(|| Problem::Unparsable("the vmdk capacity overflows".to_string()))
}

/// Checks the descriptor text: known lines only, an allowed create type, one sparse extent
/// that is this file.
pub fn check_descriptor(descriptor: &[u8], allowed_types: &[String]) -> Result<(), Problem> {
    // The descriptor's sectors are padded with NULs after the text.
    let end = descriptor
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(descriptor.len());
    let text = std::str::from_utf8(&descriptor[..end])
        .map_err(|_| Problem::Unparsable("the vmdk descriptor is not text".to_string()))?;
    let mut create_type = None;
    let mut extents = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "createType" {
                create_type = Some(value.trim().trim_matches('"').to_string());
            }
            continue;
        }
        let mut words = line.splitn(4, ' ').filter(|word| !word.is_empty());
        let access = words.next().unwrap_or_default();
        if !matches!(access, "RW" | "RDONLY" | "NOACCESS") {
            return Err(Problem::Unparsable(format!(
                "the vmdk descriptor has an unknown line: {line:?}"
            )));
        }
        let _sectors = words.next();
        let kind = words.next().unwrap_or_default().to_string();
        let name = words.next().unwrap_or_default().trim().to_string();
        extents.push((kind, name));
    }
    let create_type = create_type
        .ok_or_else(|| Problem::Unparsable("the vmdk descriptor has no createType".to_string()))?;
    if !allowed_types.contains(&create_type) {
        return Err(Problem::Unsafe(format!(
            "the vmdk createType {create_type:?} is not allowed (vmdk_allowed_types: {})",
            allowed_types.join(", ")
        )));
    }
    match extents.as_slice() {
        [] => Err(Problem::Unparsable(
            "the vmdk descriptor names no extent".to_string(),
        )),
        [(kind, name)] if kind == "SPARSE" && !name.contains('/') => Ok(()),
        _ => Err(Problem::Unsafe(
            "the vmdk descriptor names extents other than its own sparse data, files of the host that a hypervisor would read".to_string(),
        )),
    }
}
