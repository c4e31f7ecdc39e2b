//! The streaming format inspector (`glint::format`) on arbitrary images.
//!
//! Input: one byte that picks the chunk size, then the image's bytes, cut in four parts placed
//! at the offsets where headers live (0, 32 KiB for ISO 9660, 192 KiB for the vhdx region table,
//! 1 MiB past the head window), zeros between, so that small inputs reach every parser. Each
//! image is judged as every disk format, fed once whole and once in chunks: the way the bytes
//! arrive must not change the verdict, and what the inspector keeps stays within its bound.
//! Never a panic.
#![no_main]

use glint::format::inspector::{HEAD_WINDOW, MAX_CAPTURE, MAX_CAPTURES, TAIL_WINDOW};
use glint::format::{judge, Inspector, Rules};
use libfuzzer_sys::fuzz_target;

const PLACES: [usize; 4] = [0, 32 * 1024, 192 * 1024, 1024 * 1024];
const DECLARED: [&str; 8] = ["raw", "ami", "qcow2", "vmdk", "vhd", "vhdx", "iso", "vdi"];

fuzz_target!(|data: &[u8]| {
    let [chunk, rest @ ..] = data else {
        return;
    };
    let image = place(rest);
    let chunk = 1 + usize::from(*chunk) * 997;
    let rules = Rules {
        require_format_match: true,
        vmdk_allowed_types: vec!["streamOptimized".into(), "monolithicSparse".into()],
        gpt_nonfatal_checks: vec![],
    };
    let mut whole = Inspector::new();
    whole.feed(&image);
    let mut split = Inspector::new();
    for piece in image.chunks(chunk) {
        split.feed(piece);
    }
    let (whole_missed, split_missed) = (whole.missed(), split.missed());
    let (whole, split) = (whole.seen(), split.seen());
    let kept = split.head.len()
        + split.tail.len()
        + split.captures.iter().map(|capture| capture.data.len()).sum::<usize>();
    assert!(split.captures.len() <= MAX_CAPTURES);
    assert!(kept <= HEAD_WINDOW + TAIL_WINDOW + MAX_CAPTURES * MAX_CAPTURE);
    for declared in DECLARED {
        for container in ["bare", "ova"] {
            assert_eq!(
                judge(&whole, whole_missed, declared, container, &rules),
                judge(&split, split_missed, declared, container, &rules),
                "{declared} in {container}, chunks of {chunk}"
            );
        }
    }
});

/// The image: `bytes` cut in four parts, each at its place.
fn place(bytes: &[u8]) -> Vec<u8> {
    let part = bytes.len().div_ceil(PLACES.len()).max(1);
    let mut image = Vec::new();
    for (place, piece) in PLACES.iter().zip(bytes.chunks(part)) {
        image.resize(*place, 0);
        image.extend_from_slice(piece);
    }
    image
}
