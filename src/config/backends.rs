//! Several stores as Glance configures them: `[DEFAULT] enabled_backends = ID:TYPE, ...`,
//! `[glance_store] default_backend`, and one section per backend, named by its id, holding that
//! backend's driver options (`filesystem_store_datadir` or `filesystem_store_datadirs`) with
//! `store_description` and `weight`.
//!
//! Backend sections have names the operator chooses, so they cannot sit in the static
//! [`super::OPTIONS`] table: this module reads them from the raw file once `enabled_backends`
//! is known, with the same value parsers and the same `FILE:LINE: [section] option` reports.
//! Only the `file` type is served; any other is an error naming it, so that an operator never
//! believes images go to a store glint does not have.

use std::path::Path;

use super::options::{self, Kind, Value};
use super::{finish_datadirs, DataDir, RawConfig, Report};

/// The options a backend's section may hold; anything else in it draws the unknown-option
/// warning.
pub(super) const BACKEND_OPTIONS: &[&str] = &[
    "filesystem_store_datadir",
    "filesystem_store_datadirs",
    "store_description",
    "weight",
];

/// The prefix glance_store keeps for its own stores (`os_glance_staging_store`, ...).
const RESERVED_PREFIX: &str = "os_glance_";

/// The configured backends; present only when `enabled_backends` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backends {
    /// In `enabled_backends` order, ids distinct.
    pub list: Vec<Backend>,
    /// `[glance_store] default_backend`: the id of one of `list`.
    pub default: String,
}

impl Backends {
    /// The backend with this id.
    pub fn get(&self, id: &str) -> Option<&Backend> {
        self.list.iter().find(|backend| backend.id == id)
    }
}

/// One `file` backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Its id: the section name, the `X-Image-Meta-Store` value, an image's `stores` entry.
    pub id: String,
    /// `store_description`; `None` when unset or empty.
    pub description: Option<String>,
    /// `weight` (glance_store's default 0), shown by `/v2/info/stores/detail`.
    pub weight: i64,
    /// Its data directories, as `[glance_store]`'s are read for a single store.
    pub datadirs: Vec<DataDir>,
}

/// Reads the backends that `enabled` (the `enabled_backends` items) names, with
/// `default_backend`; `None` when `enabled` is empty. Every problem goes to `report`.
pub(super) fn finish(
    enabled: &[String],
    default_backend: Option<String>,
    raw: &RawConfig,
    folder: &Path,
    report: &mut Report,
) -> Option<Backends> {
    const ENABLED: &str = "enabled_backends";
    let enabled_line = raw.line_of("DEFAULT", ENABLED);
    if enabled.is_empty() {
        if let Some(id) = default_backend {
            report.warning(
                raw.line_of("glance_store", "default_backend"),
                Some("glance_store"),
                Some("default_backend"),
                format!(
                    "`{id}` is not read because [DEFAULT] enabled_backends is not set; set \
                     enabled_backends to use several stores, or remove this line"
                ),
            );
        }
        return None;
    }
    let mut list: Vec<Backend> = Vec::with_capacity(enabled.len());
    for item in enabled {
        let mut error =
            |message: String| report.error(enabled_line, Some("DEFAULT"), Some(ENABLED), message);
        let Some((id, kind)) = item.split_once(':') else {
            error(format!(
                "`{item}` has no type; write each backend as ID:TYPE, such as fast:file"
            ));
            continue;
        };
        let (id, kind) = (id.trim(), kind.trim());
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            error(format!(
                "`{id}` is not a usable backend id; use letters, digits, '-' and '_'"
            ));
            continue;
        }
        if id.starts_with(RESERVED_PREFIX) {
            error(format!(
                "`{id}`: ids starting with {RESERVED_PREFIX} are reserved for Glance's own \
                 stores; rename the backend"
            ));
            continue;
        }
        if super::OPTIONS.iter().any(|spec| spec.section == id) || options::is_glance_section(id) {
            error(format!(
                "`{id}` names a section that holds other options; choose another id for the \
                 backend"
            ));
            continue;
        }
        if kind != "file" {
            error(format!(
                "backend `{id}` has type `{kind}`; glint serves only the file type, so change \
                 it to {id}:file or remove it"
            ));
            continue;
        }
        if list.iter().any(|backend| backend.id == id) {
            error(format!("`{id}` is listed twice; list each backend once"));
            continue;
        }
        if let Some(backend) = read_section(id, raw, folder, report) {
            list.push(backend);
        }
    }
    if list.is_empty() {
        // Every backend was refused and reported: a default could name none of them.
        return None;
    }
    let default = match default_backend {
        Some(id) if list.iter().any(|backend| backend.id == id) => id,
        Some(id) => {
            // A backend refused above has already been reported; name the missing one only.
            if !enabled
                .iter()
                .any(|item| item.split(':').next().map(str::trim) == Some(&id))
            {
                report.error(
                    raw.line_of("glance_store", "default_backend"),
                    Some("glance_store"),
                    Some("default_backend"),
                    format!("`{id}` is not one of [DEFAULT] enabled_backends; name one of them"),
                );
            }
            id
        }
        None => {
            report.error(
                enabled_line,
                Some("DEFAULT"),
                Some(ENABLED),
                "needs [glance_store] default_backend: set it to the id of the backend \
                 uploads go to when they name none"
                    .to_string(),
            );
            String::new()
        }
    };
    Some(Backends { list, default })
}

/// One backend's section: its data directories (required: two backends left to glance_store's
/// default folder would share it), `store_description` and `weight`.
fn read_section(id: &str, raw: &RawConfig, folder: &Path, report: &mut Report) -> Option<Backend> {
    let mut datadir = None;
    let mut datadirs = Vec::new();
    let mut description = None;
    let mut weight = 0;
    let mut ok = true;
    let entries = raw.section(id).map(|section| section.entries.as_slice());
    for entry in entries.unwrap_or_default() {
        let kind = match entry.key.as_str() {
            "filesystem_store_datadir" => Kind::Folder { optional: false },
            "filesystem_store_datadirs" => Kind::DataDirs,
            "store_description" => Kind::Text { secret: false },
            "weight" => Kind::Integer {
                min: i64::from(i32::MIN),
                max: i64::from(i32::MAX),
                zero_means_min: None,
            },
            _ => continue, // warned about as unknown
        };
        let values = if kind.is_multi_valued() {
            entry.values.as_slice()
        } else {
            entry
                .values
                .last()
                .map(std::slice::from_ref)
                .unwrap_or_default()
        };
        for value in values {
            match options::parse(&kind, &value.text, folder) {
                Ok(parsed) => match parsed.value {
                    Value::Path(Some(path)) => datadir = Some(path),
                    Value::DataDir(dir) => datadirs.push(dir),
                    Value::Text(text) => description = text,
                    Value::Integer(number) => weight = number,
                    _ => {}
                },
                Err(message) => {
                    ok = false;
                    report.error(value.line, Some(id), Some(&entry.key), message);
                }
            }
        }
    }
    let Some(datadir) = datadir.or_else(|| (!datadirs.is_empty()).then(Default::default)) else {
        report.error(
            raw.section(id)
                .and_then(|section| section.line)
                .or_else(|| raw.line_of("DEFAULT", "enabled_backends")),
            Some(id),
            None,
            format!(
                "backend `{id}` names no folder; add a [{id}] section with \
                 filesystem_store_datadir = FOLDER (or filesystem_store_datadirs)"
            ),
        );
        return None;
    };
    let datadirs = finish_datadirs(id, datadir, datadirs, raw, folder, report);
    ok.then(|| Backend {
        id: id.to_string(),
        description,
        weight,
        datadirs,
    })
}
