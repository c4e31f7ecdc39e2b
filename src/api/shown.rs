//! The images `GET /v2/images/{id}` showed, kept in the child's memory with the JSON document
//! sent, while the registry has not changed since they were read (issue 13 part 3: a read of
//! the database and the document built again were most of the request's cost).
//!
//! Every entry is tagged with the [`Registry::version`] taken before its image was read. The
//! version grows with every write of any process on the database (the registry's `changes`
//! module), so an entry is current exactly while the version is still its tag; the first lookup
//! at a newer version drops every entry. Visibility and policy are still decided for each
//! request, on the kept image; an image that only a membership shows is not answered from here
//! (the membership is not kept).
//!
//! [`Registry::version`]: crate::registry::Registry::version

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::registry::Image;

/// The most a child keeps, counted as [`cost`] (the document and an estimate of the heap of the
/// image it was written from): a bound on the memory, however large images' metadata is
/// (`image_metadata_size_cap`). The oldest kept image goes first.
pub const MAX_BYTES: usize = 2 << 20;

/// A document longer than this is not kept: a few such images would crowd out every other.
/// Typical documents are under 2 KiB.
pub const MAX_DOCUMENT: usize = 16 << 10;

/// An image as it was read, and the JSON document `GET /v2/images/{id}` sent for it.
pub struct Shown {
    pub image: Image,
    pub document: Vec<u8>,
}

/// The kept images of one child, shared by its workers.
#[derive(Default)]
pub struct ShownImages {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// The registry version every entry was read at.
    version: u64,
    /// Each kept image with the number it was kept as.
    by_id: HashMap<String, (u64, Arc<Shown>)>,
    /// Ids in the order they were kept, with that number; an id kept again or dropped leaves
    /// an entry whose number no longer matches, skipped when it comes up.
    order: VecDeque<(u64, String)>,
    next: u64,
    /// The [`cost`] of what `by_id` holds.
    bytes: usize,
}

/// What keeping `shown` counts against [`MAX_BYTES`]: the document's bytes, and the image's
/// heap as allocated: each string's bytes, about 96 more per property (its `BTreeMap` slot and
/// two `String`s), 32 per tag and 64 per location (their `String`s), and 1 KiB for the rest.
/// An image of many small properties costs several times its document, which a count of the
/// document alone would miss.
fn cost(shown: &Shown) -> usize {
    let image = &shown.image;
    let properties: usize = image
        .properties
        .iter()
        .map(|(name, value)| name.len() + value.len() + 96)
        .sum();
    let tags: usize = image.tags.iter().map(|tag| tag.len() + 32).sum();
    let locations: usize = image
        .locations
        .iter()
        .map(|location| location.store.len() + location.path.len() + 64)
        .sum();
    shown.document.len() + properties + tags + locations + 1024
}

impl ShownImages {
    /// The image `id` as read at `version`, if it was kept then.
    pub fn get(&self, id: &str, version: u64) -> Option<Arc<Shown>> {
        let mut kept = self.lock();
        if !kept.at(version) {
            return None;
        }
        kept.by_id.get(id).map(|(_, shown)| Arc::clone(shown))
    }

    /// Keeps `shown`, read at `version` (taken before the read). Nothing is kept if the
    /// registry has moved on since (another worker saw a newer version), or if the document is
    /// longer than [`MAX_DOCUMENT`].
    pub fn keep(&self, version: u64, shown: Shown) {
        if shown.document.len() > MAX_DOCUMENT {
            return;
        }
        let mut kept = self.lock();
        if !kept.at(version) {
            return;
        }
        let id = shown.image.id.clone();
        kept.remove(&id);
        let added = cost(&shown);
        while kept.bytes + added > MAX_BYTES {
            let Some((number, oldest)) = kept.order.pop_front() else {
                break;
            };
            if kept.by_id.get(&oldest).is_some_and(|(n, _)| *n == number) {
                kept.remove(&oldest);
            }
        }
        let number = kept.next;
        kept.next += 1;
        kept.bytes += added;
        kept.order.push_back((number, id.clone()));
        kept.by_id.insert(id, (number, Arc::new(shown)));
        // Entries of ids kept again pile up in `order` when the same few images are kept over
        // and over: drop them once they outnumber the live ones.
        if kept.order.len() > 2 * kept.by_id.len() + 64 {
            let Kept { order, by_id, .. } = &mut *kept;
            order.retain(|(number, id)| by_id.get(id).is_some_and(|(n, _)| n == number));
        }
    }

    /// How many images are kept and what they count against [`MAX_BYTES`], for tests.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let kept = self.lock();
        (kept.by_id.len(), kept.bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // An entry is inserted whole or not at all: a worker that panicked left nothing half
        // done.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Kept {
    /// Whether entries at `version` may be read or kept: the kept ones are dropped at the
    /// first sight of a newer version, and an older one is stale.
    fn at(&mut self, version: u64) -> bool {
        if version > self.version {
            self.by_id.clear();
            self.order.clear();
            self.bytes = 0;
            self.version = version;
        }
        version == self.version
    }

    fn remove(&mut self, id: &str) {
        if let Some((_, shown)) = self.by_id.remove(id) {
            self.bytes -= cost(&shown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(id: &str, name: &str) -> Shown {
        let mut image = Image::new(id);
        image.name = Some(name.to_string());
        Shown {
            image,
            document: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn an_image_is_found_at_its_version_and_dropped_at_a_newer_one() {
        let images = ShownImages::default();
        images.keep(2, shown("a", "first"));
        assert_eq!(images.get("a", 2).expect("kept").document, b"first");
        assert!(images.get("b", 2).is_none());
        // A worker that took an older version finds nothing and keeps nothing.
        assert!(images.get("a", 0).is_none());
        images.keep(0, shown("a", "stale"));
        assert_eq!(images.get("a", 2).expect("kept").document, b"first");
        // A newer version drops everything.
        assert!(images.get("a", 4).is_none());
        assert_eq!(images.size(), (0, 0));
        images.keep(2, shown("a", "read before the write"));
        assert!(images.get("a", 4).is_none());
        assert_eq!(images.size(), (0, 0));
    }

    #[test]
    fn the_kept_bytes_stay_under_the_bound_dropping_the_oldest_first() {
        let images = ShownImages::default();
        let document = "x".repeat(MAX_DOCUMENT);
        let each = cost(&shown("0", &document));
        let fit = MAX_BYTES / each;
        for n in 0..fit {
            images.keep(2, shown(&n.to_string(), &document));
        }
        assert_eq!(images.size(), (fit, fit * each));
        images.keep(2, shown("new", &document));
        assert_eq!(images.size(), (fit, fit * each));
        assert!(images.get("0", 2).is_none(), "the oldest is dropped");
        assert!(images.get("1", 2).is_some());
        assert!(images.get("new", 2).is_some());
        // Keeping one already there again replaces it and drops nothing else.
        let small = cost(&shown("1", "small"));
        images.keep(2, shown("1", "small"));
        assert_eq!(images.size(), (fit, (fit - 1) * each + small));
        assert!(images.get("2", 2).is_some());
        // Many keeps of the same image leave one entry, and the order list does not grow.
        for _ in 0..10_000 {
            images.keep(2, shown("again", "small"));
        }
        assert!(images.lock().order.len() <= 2 * fit + 64 + 1);
        // A document over MAX_DOCUMENT is not kept.
        images.keep(2, shown("huge", &"y".repeat(MAX_DOCUMENT + 1)));
        assert!(images.get("huge", 2).is_none());
    }

    #[test]
    fn an_image_of_many_small_properties_and_tags_costs_more_than_its_document() {
        let mut many = shown("many", "{}");
        for n in 0..128 {
            many.image
                .properties
                .insert(format!("p{n}"), "v".to_string());
            many.image.tags.push(format!("t{n}"));
        }
        // 128 slots of about 100 bytes and 128 tags of about 35: what the heap holds, not the
        // few bytes of JSON they would take.
        assert!(
            cost(&many) >= 128 * (96 + 3) + 128 * (32 + 2),
            "{}",
            cost(&many)
        );
    }
}
