//! The stores a generation serves: one unnamed [`Store`] without `enabled_backends`, or one
//! named store per backend, with the default among them.
//!
//! Reading and removing data go by the absolute location the registry recorded, whichever store
//! wrote it ([`Store::open_data`], [`Store::delete_data`]), so data stays reachable after its
//! backend's folders change; the id matters for uploads (which store takes the data) and for
//! what the API shows (an image's `stores`, `/v2/info/stores`).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Settings, Store, StoreError};

/// The configured stores. Immutable once open; shared between threads.
#[derive(Debug)]
pub struct Stores {
    /// `(None, store)` alone without several backends; else every backend by id, in
    /// `enabled_backends` order.
    stores: Vec<(Option<String>, Arc<Store>)>,
    /// Index of the default store in `stores`.
    default: usize,
}

impl Stores {
    /// Opens every store (see [`Store::open`]). `named` empty means one unnamed store of
    /// `single`; else `default` is the id of one of `named`. The error names the backend.
    pub fn open(
        single: Settings,
        named: Vec<(String, Settings)>,
        default: &str,
    ) -> Result<Stores, String> {
        if named.is_empty() {
            let store = Store::open(single).map_err(|error| {
                format!("cannot open the image store: {error}; fix filesystem_store_datadir(s)")
            })?;
            return Ok(Stores {
                stores: vec![(None, Arc::new(store))],
                default: 0,
            });
        }
        let mut stores = Vec::with_capacity(named.len());
        for (id, settings) in named {
            let store = Store::open(settings).map_err(|error: StoreError| {
                format!(
                    "cannot open store `{id}`: {error}; fix filesystem_store_datadir(s) in \
                     section [{id}]"
                )
            })?;
            stores.push((Some(id), Arc::new(store)));
        }
        let default = stores
            .iter()
            .position(|(id, _)| id.as_deref() == Some(default))
            .ok_or_else(|| format!("default_backend `{default}` is not an enabled backend"))?;
        Ok(Stores { stores, default })
    }

    /// Whether several stores are configured (`enabled_backends`), which turns on the stores
    /// API and the `stores` attribute.
    pub fn is_multi(&self) -> bool {
        self.stores[0].0.is_some()
    }

    /// The default store, which takes uploads that name none; with one store, that one.
    pub fn default_store(&self) -> &Arc<Store> {
        &self.stores[self.default].1
    }

    /// The id of the default store; `None` without several stores.
    pub fn default_id(&self) -> Option<&str> {
        self.stores[self.default].0.as_deref()
    }

    /// The named store with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Store>> {
        self.stores
            .iter()
            .find(|(name, _)| name.as_deref() == Some(id))
            .map(|(_, store)| store)
    }

    /// Every store with its id (`None` for the unnamed one), in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, &Arc<Store>)> {
        self.stores.iter().map(|(id, store)| (id.as_deref(), store))
    }

    /// The id of the named store one of whose data directories holds `location` (a data
    /// file's absolute path), as Glance's `update_store_in_locations` finds the store of a
    /// location recorded without one: by the store's folder, here compared path component by
    /// path component (glance_store compares URL prefixes, so `/images` would also claim
    /// `/images2/...`). The first such store in configuration order; `None` without several
    /// stores or when no store's folder holds it.
    pub fn holding(&self, location: &str) -> Option<&str> {
        let path = std::path::Path::new(location);
        let parent = path.parent()?;
        self.stores.iter().find_map(|(id, store)| {
            let id = id.as_deref()?;
            store
                .settings()
                .datadirs
                .iter()
                .any(|(dir, _)| parent == dir.as_path())
                .then_some(id)
        })
    }

    /// Removes the temporary files of dead uploaders in every store's data directories.
    pub fn remove_abandoned_temp_files(&self, is_alive: impl Fn(&str) -> bool) -> Vec<PathBuf> {
        let mut extra: Vec<PathBuf> = Vec::new();
        for (_, store) in &self.stores[1..] {
            extra.extend(store.settings().datadirs.iter().map(|(dir, _)| dir.clone()));
        }
        self.stores[0]
            .1
            .remove_abandoned_temp_files_in(&extra, is_alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::abandoned::temporary_name;
    use crate::store::HashKind;

    fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            datadirs: vec![(dir.to_path_buf(), 0)],
            file_perm: 0,
            size_cap: 1 << 30,
            hash: HashKind::Sha256,
        }
    }

    #[test]
    fn one_unnamed_store_without_backends() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(settings(dir.path()), Vec::new(), "").unwrap();
        assert!(!stores.is_multi());
        assert_eq!(stores.default_id(), None);
        assert!(stores.get("").is_none());
        assert_eq!(stores.iter().count(), 1);
    }

    #[test]
    fn named_stores_with_their_default_and_a_sweep_of_every_folder() {
        let root = tempfile::tempdir().unwrap();
        let [single, fast, cheap] = ["single", "fast", "cheap"].map(|name| root.path().join(name));
        let stores = Stores::open(
            settings(&single),
            vec![
                ("fast".to_string(), settings(&fast)),
                ("cheap".to_string(), settings(&cheap)),
            ],
            "cheap",
        )
        .unwrap();
        assert!(stores.is_multi());
        assert_eq!(stores.default_id(), Some("cheap"));
        assert_eq!(stores.default_store().settings().datadirs[0].0, cheap);
        assert_eq!(stores.get("fast").unwrap().settings().datadirs[0].0, fast);
        assert!(stores.get("slow").is_none());
        // The unnamed store's folder is not opened when backends are configured.
        assert!(!single.exists());
        let ids: Vec<Option<&str>> = stores.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [Some("fast"), Some("cheap")]);
        let left: Vec<std::path::PathBuf> = [&fast, &cheap]
            .map(|dir| dir.join(temporary_name("image", "1-1")))
            .to_vec();
        for path in &left {
            std::fs::write(path, b"partial").unwrap();
        }
        let mut removed = stores.remove_abandoned_temp_files(|_| false);
        removed.sort();
        let mut expected = left.clone();
        expected.sort();
        assert_eq!(removed, expected);
        // A data file's store is the one whose folder holds it; nothing else is claimed.
        let in_fast = fast.join("8c3a5a5e-1b1e-4f4e-9a43-000000000001");
        assert_eq!(stores.holding(&in_fast.to_string_lossy()), Some("fast"));
        let beside = root.path().join("fast-old").join("x");
        assert_eq!(stores.holding(&beside.to_string_lossy()), None);
        let deeper = fast.join("sub").join("x");
        assert_eq!(stores.holding(&deeper.to_string_lossy()), None);
        let missing = Stores::open(
            settings(&single),
            vec![("fast".to_string(), settings(&fast))],
            "x",
        );
        assert_eq!(
            missing.unwrap_err(),
            "default_backend `x` is not an enabled backend"
        );
    }
}
