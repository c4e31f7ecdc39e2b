//! Unit tests: each format from a small hand-built header, the judgement's table of declared
//! against detected formats, the streaming windows split at every chunk size, and no panic on
//! truncated or mutated headers.

use super::inspector::{HEAD_WINDOW, MAX_CAPTURE};
use super::*;

fn rules() -> Rules {
    Rules {
        require_format_match: true,
        vmdk_allowed_types: vec![
            "streamOptimized".to_string(),
            "monolithicSparse".to_string(),
        ],
        gpt_nonfatal_checks: vec![],
    }
}

/// Streams `data` through an inspector in chunks of `chunk` bytes and judges it.
fn judge_in_chunks(data: &[u8], chunk: usize, declared: &str) -> Result<Option<u64>, Refusal> {
    let mut inspector = Inspector::new();
    for piece in data.chunks(chunk.max(1)) {
        inspector.feed(piece);
    }
    let missed = inspector.missed();
    judge(&inspector.seen(), missed, declared, "bare", &rules())
}

fn judged(data: &[u8], declared: &str) -> Result<Option<u64>, Refusal> {
    judge_in_chunks(data, 64 * 1024, declared)
}

fn put(data: &mut [u8], offset: usize, bytes: &[u8]) {
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn qcow2(version: u32, backing: u64, features: u64) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    put(&mut data, 0, b"QFI\xfb");
    put(&mut data, 4, &version.to_be_bytes());
    put(&mut data, 8, &backing.to_be_bytes());
    put(&mut data, 20, &16u32.to_be_bytes());
    put(&mut data, 24, &(10u64 << 30).to_be_bytes());
    put(&mut data, 72, &features.to_be_bytes());
    data
}

const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
    createType=\"monolithicSparse\"\n\n# Extent description\nRW 2048 SPARSE \"disk.vmdk\"\n\n\
    ddb.virtualHWVersion = \"4\"\n";

/// A sparse vmdk header with its descriptor at sector `descriptor_sector` (20 sectors).
fn vmdk(descriptor: &str, descriptor_sector: u64, gd_offset: u64, length: usize) -> Vec<u8> {
    let mut data = vec![0u8; length];
    put(&mut data, 0, b"KDMV");
    put(&mut data, 4, &1u32.to_le_bytes());
    put(&mut data, 12, &2048u64.to_le_bytes());
    put(&mut data, 20, &128u64.to_le_bytes());
    put(&mut data, 28, &descriptor_sector.to_le_bytes());
    put(&mut data, 36, &20u64.to_le_bytes());
    put(&mut data, 56, &gd_offset.to_le_bytes());
    put(
        &mut data,
        descriptor_sector as usize * 512,
        descriptor.as_bytes(),
    );
    data
}

fn vhd_footer(disk_type: u32, creator: &[u8; 4], size: u64, chs: (u16, u8, u8)) -> Vec<u8> {
    let mut footer = vec![0u8; 512];
    put(&mut footer, 0, b"conectix");
    put(&mut footer, 28, creator);
    put(&mut footer, 40, &size.to_be_bytes());
    put(&mut footer, 48, &size.to_be_bytes());
    put(&mut footer, 56, &chs.0.to_be_bytes());
    footer[58] = chs.1;
    footer[59] = chs.2;
    put(&mut footer, 60, &disk_type.to_be_bytes());
    footer
}

/// A vhdx with its metadata region at `metadata` and the given File Parameters flags; the items
/// right after the metadata table, as qemu writes them.
fn vhdx(metadata: usize, flags: u32, length: usize) -> Vec<u8> {
    vhdx_with_items(metadata, flags, length, (65536, 65544))
}

/// A vhdx whose File Parameters and Virtual Disk Size items are at `items` in the region.
fn vhdx_with_items(metadata: usize, flags: u32, length: usize, items: (u32, u32)) -> Vec<u8> {
    let mut data = vec![0u8; length];
    put(&mut data, 0, b"vhdxfile");
    let table = 192 * 1024;
    put(&mut data, table, b"regi");
    put(&mut data, table + 8, &1u32.to_le_bytes());
    put(
        &mut data,
        table + 16,
        &vhdx_guid("8B7CA206-4790-4B9A-B8FE-575F050F886E"),
    );
    put(&mut data, table + 32, &(metadata as u64).to_le_bytes());
    put(&mut data, table + 40, &(1u32 << 20).to_le_bytes());
    put(&mut data, metadata, b"metadata");
    put(&mut data, metadata + 10, &2u16.to_le_bytes());
    let entries = [
        ("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", items.0),
        ("2FA54224-CD1B-4876-B211-5DBED83BF4B8", items.1),
    ];
    for (index, (guid, offset)) in entries.iter().enumerate() {
        let entry = metadata + 32 + index * 32;
        put(&mut data, entry, &vhdx_guid(guid));
        put(&mut data, entry + 16, &offset.to_le_bytes());
        put(&mut data, entry + 20, &8u32.to_le_bytes());
    }
    let (parameters, size) = (items.0 as usize, items.1 as usize);
    put(
        &mut data,
        metadata + parameters,
        &(32u32 << 20).to_le_bytes(),
    );
    put(&mut data, metadata + parameters + 4, &flags.to_le_bytes());
    put(&mut data, metadata + size, &(3u64 << 30).to_le_bytes());
    data
}

fn vhdx_guid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let byte = |index: usize| u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).unwrap();
    let mut guid = [0u8; 16];
    for (to, from) in [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
        .iter()
        .enumerate()
    {
        guid[to] = byte(*from);
    }
    guid
}

fn iso(blocks: u32) -> Vec<u8> {
    let mut data = vec![0u8; blocks as usize * 2048];
    put(&mut data, 32 * 1024, b"\x01CD001\x01");
    put(&mut data, 32 * 1024 + 80, &blocks.to_le_bytes());
    put(&mut data, 32 * 1024 + 84, &blocks.to_be_bytes());
    put(&mut data, 32 * 1024 + 128, &2048u16.to_le_bytes());
    put(&mut data, 32 * 1024 + 130, &2048u16.to_be_bytes());
    put(&mut data, 32 * 1024 + 2048, b"\xffCD001\x01");
    data
}

/// A raw disk with one MBR partition entry.
fn mbr(boot_flag: u8, kind: u8, chs: [u8; 3], lba: u32) -> Vec<u8> {
    let mut data = vec![0u8; 8192];
    data[446] = boot_flag;
    put(&mut data, 447, &chs);
    data[450] = kind;
    put(&mut data, 454, &lba.to_le_bytes());
    put(&mut data, 510, &[0x55, 0xAA]);
    data
}

fn unsafe_refusal(result: Result<Option<u64>, Refusal>) -> String {
    match result {
        Err(Refusal::Unsafe { why, .. }) => why,
        other => panic!("expected a safety refusal, got {other:?}"),
    }
}

#[test]
fn raw_data_is_its_own_size() {
    let data = vec![7u8; 100_000];
    for declared in ["raw", "ami", "ari", "aki"] {
        assert_eq!(judged(&data, declared), Ok(Some(100_000)), "{declared}");
    }
    assert_eq!(judged(&[], "raw"), Ok(Some(0)));
}

#[test]
fn qcow2_virtual_size_from_its_header() {
    assert_eq!(judged(&qcow2(2, 0, 0), "qcow2"), Ok(Some(10 << 30)));
    assert_eq!(judged(&qcow2(3, 0, 0b1001), "qcow2"), Ok(Some(10 << 30)));
}

#[test]
fn qcow2_with_a_backing_file_or_data_file_is_unsafe() {
    assert!(unsafe_refusal(judged(&qcow2(3, 0x200, 0), "qcow2")).contains("backing file"));
    assert!(unsafe_refusal(judged(&qcow2(3, 0, 1 << 2), "qcow2")).contains("data file"));
    assert!(unsafe_refusal(judged(&qcow2(3, 0, 1 << 7), "qcow2")).contains("unknown"));
    // Declared as something else, the backing file is still what is refused.
    assert!(unsafe_refusal(judged(&qcow2(2, 0x200, 0), "raw")).contains("backing file"));
}

#[test]
fn qcow2_with_a_bad_version_does_not_parse() {
    assert!(matches!(
        judged(&qcow2(4, 0, 0), "qcow2"),
        Err(Refusal::Unparsable {
            format: "qcow2",
            ..
        })
    ));
}

#[test]
fn a_recognised_format_declared_raw_is_a_mismatch() {
    assert_eq!(
        judged(&qcow2(3, 0, 0), "raw"),
        Err(Refusal::Mismatch {
            declared: "raw".to_string(),
            detected: "qcow2"
        })
    );
    assert!(matches!(
        judged(&iso(40), "raw"),
        Err(Refusal::Mismatch {
            detected: "iso",
            ..
        })
    ));
    assert!(matches!(
        judged(&qcow2(3, 0, 0), "vmdk"),
        Err(Refusal::Mismatch {
            detected: "qcow2",
            ..
        })
    ));
}

#[test]
fn random_bytes_declared_qcow2_do_not_parse() {
    let data: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let refusal = judged(&data, "qcow2").unwrap_err();
    assert!(matches!(
        refusal,
        Refusal::Unparsable {
            format: "qcow2",
            ..
        }
    ));
    assert!(
        refusal.to_string().contains("not a valid qcow2 image"),
        "{refusal}"
    );
}

#[test]
fn the_match_requirement_can_be_switched_off() {
    let mut lenient = rules();
    lenient.require_format_match = false;
    let mut inspector = Inspector::new();
    inspector.feed(&qcow2(3, 0, 0));
    assert_eq!(
        judge(&inspector.seen(), false, "raw", "bare", &lenient),
        Ok(None)
    );
    // Safety checks hold regardless.
    let mut inspector = Inspector::new();
    inspector.feed(&qcow2(3, 4096, 0));
    assert!(judge(&inspector.seen(), false, "raw", "bare", &lenient).is_err());
}

#[test]
fn containers_other_than_bare_are_not_compared() {
    let mut inspector = Inspector::new();
    inspector.feed(&qcow2(3, 0, 0));
    assert_eq!(
        judge(&inspector.seen(), false, "raw", "ova", &rules()),
        Ok(None)
    );
}

#[test]
fn ploop_accepts_unrecognised_data_without_a_size() {
    assert_eq!(judged(&[1u8; 1000], "ploop"), Ok(None));
    assert!(judged(&qcow2(3, 0, 0), "ploop").is_err());
}

/// A vdi header as qemu writes it: signature, image type, disk size.
fn vdi(image_type: u32, disk_size: u64) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    data[..40].copy_from_slice(b"<<< QEMU VM Virtual Disk Image >>>\n\0\0\0\0\0");
    data[0x40..0x44].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
    data[0x4c..0x50].copy_from_slice(&image_type.to_le_bytes());
    data[0x170..0x178].copy_from_slice(&disk_size.to_le_bytes());
    data
}

#[test]
fn vdi_dynamic_and_fixed_get_their_disk_size_and_other_types_are_refused() {
    assert_eq!(judged(&vdi(1, 16 << 30), "vdi"), Ok(Some(16 << 30)));
    assert_eq!(judged(&vdi(2, 3 << 20), "vdi"), Ok(Some(3 << 20)));
    let refused = judged(&vdi(4, 1 << 20), "vdi").unwrap_err();
    assert!(
        refused.to_string().contains("vdi image type 4"),
        "{refused}"
    );
    // Declared raw, it is refused as the vdi it is; random data declared vdi is not a vdi.
    assert_eq!(
        judged(&vdi(1, 1 << 20), "raw"),
        Err(Refusal::Mismatch {
            declared: "raw".to_string(),
            detected: "vdi"
        })
    );
    assert!(matches!(
        judged(&[1u8; 1000], "vdi"),
        Err(Refusal::Unparsable { format: "vdi", .. })
    ));
}

#[test]
fn vmdk_monolithic_sparse_and_stream_optimized() {
    let data = vmdk(DESCRIPTOR, 1, 21, 64 * 1024);
    assert_eq!(judged(&data, "vmdk"), Ok(Some(2048 * 512)));
    let stream = DESCRIPTOR.replace("monolithicSparse", "streamOptimized");
    let mut data = vmdk(&stream, 1, u64::MAX, 64 * 1024);
    let footer = data.len() - 1024;
    put(&mut data, footer, b"KDMV");
    put(&mut data, footer + 12, &4096u64.to_le_bytes());
    assert_eq!(judged(&data, "vmdk"), Ok(Some(4096 * 512)));
}

#[test]
fn vmdk_descriptor_far_in_the_stream_is_captured() {
    let sector = (HEAD_WINDOW as u64 + 300_000) / 512;
    let data = vmdk(DESCRIPTOR, sector, 21, 2 << 20);
    for chunk in [1000, 4096, 65536, 1 << 20] {
        assert_eq!(
            judge_in_chunks(&data, chunk, "vmdk"),
            Ok(Some(2048 * 512)),
            "{chunk}"
        );
    }
}

#[test]
fn vmdk_unsafe_descriptors() {
    let cases = [
        (
            DESCRIPTOR.replace("monolithicSparse", "monolithicFlat"),
            "createType",
        ),
        (
            DESCRIPTOR.replace("SPARSE \"disk.vmdk\"", "FLAT \"disk-flat.vmdk\" 0"),
            "extents",
        ),
        (
            DESCRIPTOR.replace("\"disk.vmdk\"", "\"/etc/shadow\""),
            "extents",
        ),
        (
            DESCRIPTOR.replace(
                "RW 2048 SPARSE \"disk.vmdk\"",
                "RW 2048 SPARSE \"a.vmdk\"\nRW 9 SPARSE \"b.vmdk\"",
            ),
            "extents",
        ),
    ];
    for (descriptor, word) in cases {
        let why = unsafe_refusal(judged(&vmdk(&descriptor, 1, 21, 64 * 1024), "vmdk"));
        assert!(why.contains(word), "{why}");
    }
    // A descriptor file alone names data elsewhere.
    assert!(unsafe_refusal(judged(DESCRIPTOR.as_bytes(), "vmdk")).contains("descriptor file"));
    // Unknown lines and missing pieces do not parse.
    for descriptor in [
        DESCRIPTOR.replace("RW 2048", "XX 2048"),
        DESCRIPTOR.replace("createType", "kind"),
        "createType=\"monolithicSparse\"\n".to_string(),
    ] {
        assert!(
            matches!(
                judged(&vmdk(&descriptor, 1, 21, 64 * 1024), "vmdk"),
                Err(Refusal::Unparsable { .. })
            ),
            "{descriptor}"
        );
    }
}

#[test]
fn vmdk_descriptor_size_is_capped() {
    let mut data = vmdk(DESCRIPTOR, 1, 21, 64 * 1024);
    put(
        &mut data,
        36,
        &((MAX_CAPTURE as u64 / 512) + 1).to_le_bytes(),
    );
    assert!(matches!(
        judged(&data, "vmdk"),
        Err(Refusal::Unparsable { .. })
    ));
    put(&mut data, 36, &u64::MAX.to_le_bytes());
    assert!(matches!(
        judged(&data, "vmdk"),
        Err(Refusal::Unparsable { .. })
    ));
}

#[test]
fn vhd_dynamic_fixed_and_differencing() {
    // qemu's own: CHS geometry decides (16383 * 16 * 63 sectors).
    let mut dynamic = vhd_footer(3, b"qemu", 1 << 30, (2080, 16, 63));
    dynamic.resize(4096, 0);
    assert_eq!(judged(&dynamic, "vhd"), Ok(Some(2080 * 16 * 63 * 512)));
    // Hyper-V's: the current size.
    let mut hyperv = vhd_footer(3, b"win ", 1 << 30, (2080, 16, 63));
    hyperv.resize(4096, 0);
    assert_eq!(judged(&hyperv, "vhd"), Ok(Some(1 << 30)));
    // A fixed disk has its footer only at the end.
    let mut fixed = vec![0u8; 1 << 20];
    fixed.extend(vhd_footer(2, b"qem2", 1 << 20, (20, 16, 63)));
    assert_eq!(judged(&fixed, "vhd"), Ok(Some(1 << 20)));
    assert!(matches!(
        judged(&fixed, "raw"),
        Err(Refusal::Mismatch {
            detected: "vhd",
            ..
        })
    ));
    let mut differencing = vhd_footer(4, b"win ", 1 << 30, (2080, 16, 63));
    differencing.resize(4096, 0);
    assert!(unsafe_refusal(judged(&differencing, "vhd")).contains("differencing"));
}

#[test]
fn vhdx_size_from_its_metadata_region() {
    let data = vhdx(1 << 20, 0, 2 << 20);
    // 1000 and 3000: the chunk that completes the metadata table also holds the items (qemu
    // puts them right after it), which must be captured, not left to the moving tail.
    for chunk in [1000, 3000, 4096, 65536, 1 << 20] {
        assert_eq!(
            judge_in_chunks(&data, chunk, "vhdx"),
            Ok(Some(3 << 30)),
            "{chunk}"
        );
    }
    assert!(unsafe_refusal(judged(&vhdx(1 << 20, 2, 2 << 20), "vhdx")).contains("differencing"));
    // A metadata region inside the head needs no capture.
    assert_eq!(
        judged(&vhdx(64 * 1024, 0, 1 << 20), "vhdx"),
        Ok(Some(3 << 30))
    );
    // A region beyond the end of the stream.
    let mut short = vhdx(1 << 20, 0, 2 << 20);
    short.truncate(1 << 20);
    assert!(matches!(
        judged(&short, "vhdx"),
        Err(Refusal::Unparsable { .. })
    ));
}

#[test]
fn vhdx_items_that_start_inside_the_metadata_table_are_kept_in_any_chunking() {
    // File Parameters in the table's last bytes, the size past it: the items' capture starts
    // with bytes the table's capture holds, long streamed past.
    let data = vhdx_with_items(1 << 20, 0, 2 << 20, (65528, 70000));
    for chunk in [1000, 4096, 65536, 2 << 20] {
        assert_eq!(
            judge_in_chunks(&data, chunk, "vhdx"),
            Ok(Some(3 << 30)),
            "{chunk}"
        );
    }
}

#[test]
fn iso_size_from_the_primary_volume_descriptor() {
    assert_eq!(judged(&iso(40), "iso"), Ok(Some(40 * 2048)));
    // A hybrid ISO (MBR in front) is still an ISO.
    let mut hybrid = iso(40);
    hybrid[446] = 0x80;
    hybrid[450] = 0x17;
    put(&mut hybrid, 454, &1u32.to_le_bytes());
    put(&mut hybrid, 510, &[0x55, 0xAA]);
    assert_eq!(judged(&hybrid, "iso"), Ok(Some(40 * 2048)));
}

#[test]
fn partitioned_raw_disks_and_the_mbr_check() {
    let good = mbr(0x80, 0x83, [1, 1, 0], 2048);
    assert_eq!(judged(&good, "raw"), Ok(Some(8192)));
    let protective = mbr(0, 0xEE, [0, 2, 0], 1);
    assert_eq!(judged(&protective, "raw"), Ok(Some(8192)));
    for bad in [
        mbr(0x12, 0x83, [1, 1, 0], 2048),
        mbr(0, 0xEE, [0, 3, 0], 1),
        mbr(0, 0xEE, [0, 2, 0], 7),
        mbr(0, 0, [0, 0, 0], 0),
    ] {
        assert!(unsafe_refusal(judged(&bad, "raw")).contains("MBR"));
        // Glance's default makes the mbr check a warning.
        let mut lenient = rules();
        lenient.gpt_nonfatal_checks = vec!["mbr".to_string()];
        let mut inspector = Inspector::new();
        inspector.feed(&bad);
        assert_eq!(
            judge(&inspector.seen(), false, "raw", "bare", &lenient),
            Ok(Some(8192))
        );
    }
    // A FAT boot sector is not a partition table.
    let mut fat = mbr(0x12, 0, [0, 0, 0], 0);
    put(&mut fat, 54, b"FAT16   ");
    assert_eq!(judged(&fat, "raw"), Ok(Some(8192)));
}

#[test]
fn a_split_at_every_offset_gives_the_same_verdict() {
    let samples: Vec<(Vec<u8>, &str)> = vec![
        (qcow2(3, 0, 0), "qcow2"),
        (vmdk(DESCRIPTOR, 1, 21, 16 * 1024), "vmdk"),
        (iso(40), "iso"),
    ];
    for (data, declared) in samples {
        let whole = judged(&data, declared);
        for split in 0..data.len() {
            let mut inspector = Inspector::new();
            inspector.feed(&data[..split]);
            inspector.feed(&data[split..]);
            let missed = inspector.missed();
            assert_eq!(
                judge(&inspector.seen(), missed, declared, "bare", &rules()),
                whole,
                "{declared} split at {split}"
            );
        }
    }
}

/// No input panics: every prefix of every sample, and samples with bytes overwritten by
/// values that stress sizes and offsets (0, 0xff runs, high bits), judged as every format.
#[test]
fn truncated_and_mutated_headers_never_panic() {
    let mut stream = DESCRIPTOR.replace("monolithicSparse", "streamOptimized");
    stream.push('\n');
    let samples = vec![
        qcow2(3, 0, 0),
        vmdk(DESCRIPTOR, 1, 21, 16 * 1024),
        vmdk(&stream, 1, u64::MAX, 16 * 1024),
        vhd_footer(3, b"qemu", 1 << 30, (2080, 16, 63)),
        vhdx(HEAD_WINDOW, 0, HEAD_WINDOW + 80 * 1024),
        iso(20),
        mbr(0, 0xEE, [0, 2, 0], 1),
        vdi(1, 1 << 30),
    ];
    let declared = ["raw", "qcow2", "vmdk", "vhd", "vhdx", "iso", "vdi"];
    let check = |data: &[u8]| {
        for format in declared {
            let _ = judge_in_chunks(data, 7919, format);
        }
    };
    for sample in &samples {
        for length in (0..sample.len().min(1200)).chain([sample.len() / 2, sample.len() - 1]) {
            check(&sample[..length]);
        }
        // Mutate the interesting offsets (headers, region tables, descriptors).
        let offsets: Vec<usize> = (0..600)
            .chain((192 * 1024..192 * 1024 + 64).filter(|o| *o < sample.len()))
            .chain((HEAD_WINDOW..HEAD_WINDOW + 64).filter(|o| *o < sample.len()))
            .chain(32 * 1024..32 * 1024 + 140)
            .filter(|offset| *offset < sample.len())
            .collect();
        for offset in offsets.iter().step_by(3) {
            for value in [0x00u8, 0xff, 0x80, 0x7f, 0x01] {
                let mut mutated = sample.clone();
                let end = (offset + 8).min(mutated.len());
                for byte in &mut mutated[*offset..end] {
                    *byte = value;
                }
                check(&mutated);
            }
        }
    }
}
