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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::registry::Image;

/// How many images a child keeps at most: about 2 KiB each (the image and its document), so
/// at most about 2 MiB; the least recently kept goes first.
pub const MAX_SHOWN: usize = 1024;

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
    by_id: HashMap<String, (u64, Arc<Shown>)>,
    /// Counts insertions, for dropping the oldest entry when full.
    next_order: u64,
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
    /// registry has moved on since (another worker saw a newer version).
    pub fn keep(&self, version: u64, shown: Shown) {
        let mut kept = self.lock();
        if !kept.at(version) {
            return;
        }
        if kept.by_id.len() >= MAX_SHOWN && !kept.by_id.contains_key(&shown.image.id) {
            let oldest = kept
                .by_id
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                kept.by_id.remove(&oldest);
            }
        }
        let order = kept.next_order;
        kept.next_order += 1;
        kept.by_id
            .insert(shown.image.id.clone(), (order, Arc::new(shown)));
    }

    /// How many images are kept, for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
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
            self.version = version;
        }
        version == self.version
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
        assert_eq!(images.len(), 0);
        images.keep(2, shown("a", "read before the write"));
        assert!(images.get("a", 4).is_none());
        assert_eq!(images.len(), 0);
    }

    #[test]
    fn a_full_memory_drops_the_oldest_image_first() {
        let images = ShownImages::default();
        for n in 0..MAX_SHOWN {
            images.keep(2, shown(&n.to_string(), "x"));
        }
        assert_eq!(images.len(), MAX_SHOWN);
        images.keep(2, shown("new", "y"));
        assert_eq!(images.len(), MAX_SHOWN);
        assert!(images.get("0", 2).is_none(), "the oldest is dropped");
        assert!(images.get("1", 2).is_some());
        assert!(images.get("new", 2).is_some());
        // Keeping one already there again drops nothing else.
        images.keep(2, shown("new", "z"));
        assert_eq!(images.len(), MAX_SHOWN);
        assert!(images.get("1", 2).is_some());
    }
}
