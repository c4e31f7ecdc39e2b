//! gpt: a partitioned raw disk, recognised by its MBR (or GPT's protective MBR), and the MBR
//! checks Glance added with oslo.utils' inspector.
//!
//! A raw disk image is what a hypervisor reads as is, so a partition table is not a format of
//! its own: `disk_format` raw (or ami, ari, aki) accepts it. What is checked is that the MBR at
//! offset 0 (signature 0x55AA at 510) is sane, as oslo.utils' `mbr` check does: each of the four
//! entries has a boot flag of 0 or 0x80; a protective entry (type 0xEE) is the only one and
//! starts at CHS 0/2/0 and LBA 1; at least one entry is used. A FAT boot sector also ends in
//! 0x55AA and is not a partition table: it is not taken for one. Whether a failed check refuses
//! the image is `[image_format] gpt_safety_checks_nonfatal` (Glance's default: only a warning).

use super::inspector::Seen;

/// The name of the check, as `gpt_safety_checks_nonfatal` lists it.
pub const MBR_CHECK: &str = "mbr";

pub fn matches(seen: &Seen<'_>) -> bool {
    let Some(sector) = seen.bytes_at(0, 512) else {
        return false;
    };
    // FAT12/16 name their type at 54, FAT32 at 82.
    sector[510..512] == [0x55, 0xAA] && &sector[54..57] != b"FAT" && &sector[82..85] != b"FAT"
}

/// Why the MBR fails the `mbr` check, if it does.
pub fn mbr_problem(seen: &Seen<'_>) -> Option<String> {
    let sector = seen.bytes_at(0, 512)?;
    let entries: Vec<&[u8]> = sector[446..510].chunks(16).collect();
    if let Some(index) = entries
        .iter()
        .position(|entry| !matches!(entry[0], 0 | 0x80))
    {
        return Some(format!("MBR partition {index} has an invalid boot flag"));
    }
    let used: Vec<&&[u8]> = entries.iter().filter(|entry| entry[4] != 0).collect();
    if used.is_empty() {
        return Some("the MBR has no partition".to_string());
    }
    if let Some(protective) = used.iter().find(|entry| entry[4] == 0xEE) {
        if used.len() > 1 {
            return Some("a protective MBR has more than one partition".to_string());
        }
        let start_lba =
            u32::from_le_bytes([protective[8], protective[9], protective[10], protective[11]]);
        if protective[1..4] != [0x00, 0x02, 0x00] || start_lba != 1 {
            return Some("the protective MBR partition does not start at sector 1".to_string());
        }
    }
    None
}
