//! The JSON-patch parser and applier on arbitrary JSON: bytes that parse as JSON are parsed
//! as a patch in both dialects, and each patch that parses is applied to a fresh image. Errors
//! are fine; a panic is not, and after `apply` (whether it succeeded or stopped at a refused
//! change) the image must still be one the registry can store and the schema allows.
#![no_main]

use glint::api::patch::{apply, parse, Change, Dialect};
use glint::api::representation::{
    check_writable, is_base, CONTAINER_FORMATS, DISK_FORMATS, MAX_NAME, MAX_PROPERTIES,
    MAX_PROPERTY_VALUE, MAX_TAGS, VISIBILITIES,
};
use glint::registry::Image;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ID: &str = "3f4c2b9e-0000-4000-8000-000000000001";

fuzz_target!(|data: &[u8]| {
    let Ok(document) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for dialect in [Dialect::V21, Dialect::V20] {
        let Ok(changes) = parse(&document, dialect) else {
            continue;
        };
        for change in &changes {
            let (Change::Add { name, .. } | Change::Replace { name, .. } | Change::Remove { name }) =
                change;
            assert!(check_writable(name).is_ok(), "parse let {name:?} through");
        }
        let mut image = fresh();
        let before = image.clone();
        let result = apply(&mut image, &changes, dialect);
        check_invariants(&image, &before);
        if result.is_err() {
            continue;
        }
        // The changes that applied once apply again to the result in the RFC 6902 dialect
        // (add replaces), and give the same image: every operation is idempotent.
        if dialect == Dialect::V21 && !changes.iter().any(|c| matches!(c, Change::Remove { .. })) {
            let mut again = image.clone();
            apply(&mut again, &changes, dialect).expect("the same changes apply again");
            assert_eq!(again, image, "applying the same changes twice");
        }
    }
});

fn fresh() -> Image {
    let mut image = Image::new(ID);
    image.name = Some("seed".to_string());
    image.tags = vec!["a".to_string(), "b".to_string()];
    image.properties.insert("k".to_string(), "v".to_string());
    image
}

fn check_invariants(image: &Image, before: &Image) {
    // What a patch can never touch.
    assert_eq!(image.id, before.id);
    assert_eq!(image.status, before.status);
    assert_eq!(image.checksum, before.checksum);
    assert_eq!(image.size, before.size);
    assert_eq!(image.created_at, before.created_at);
    assert_eq!(image.location, before.location);
    // Tags: sorted, unique, 1 to MAX_NAME characters, at most MAX_TAGS.
    assert!(
        image.tags.windows(2).all(|pair| pair[0] < pair[1]),
        "tags not sorted and unique: {:?}",
        image.tags
    );
    assert!(image.tags.len() <= MAX_TAGS, "{} tags", image.tags.len());
    for tag in &image.tags {
        assert!(
            !tag.is_empty() && tag.chars().count() <= MAX_NAME,
            "tag {tag:?}"
        );
    }
    // Properties: writable custom names of 1 to MAX_NAME bytes, string values within the limit.
    assert!(image.properties.len() <= MAX_PROPERTIES);
    for (name, value) in &image.properties {
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME,
            "property {name:?}"
        );
        assert!(
            !is_base(name),
            "base attribute {name:?} stored as a property"
        );
        assert!(
            check_writable(name).is_ok(),
            "property {name:?} is not writable"
        );
        assert!(
            value.len() <= MAX_PROPERTY_VALUE,
            "property {name:?} too long"
        );
    }
    // Base attributes keep their schema.
    assert!(VISIBILITIES.contains(&image.visibility.as_str()));
    assert!((0..=i64::from(i32::MAX)).contains(&image.min_ram));
    assert!((0..=i64::from(i32::MAX)).contains(&image.min_disk));
    if let Some(format) = &image.disk_format {
        assert!(
            DISK_FORMATS.contains(&format.as_str()),
            "disk_format {format:?}"
        );
    }
    if let Some(format) = &image.container_format {
        assert!(
            CONTAINER_FORMATS.contains(&format.as_str()),
            "container_format {format:?}"
        );
    }
    for text in [&image.name, &image.owner].into_iter().flatten() {
        assert!(text.chars().count() <= MAX_NAME);
    }
}
