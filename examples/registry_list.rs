//! registry_list: the large-registry benchmark's tool (issue 13, part 5; scripts/bench-registry).
//!
//! - `populate --db FILE --images N`: creates the registry at FILE with glint's own schema
//!   (`Registry::open` runs the migrations of this build) and fills it with N images in one
//!   transaction, written with SQL straight into the tables (a create per image through the
//!   registry would fsync N times). The images are spread like a public cloud's: 100 owner
//!   projects; 40 % public, 30 % private, 20 % shared, 10 % community; 90 % active; one in ten
//!   every one tagged `tN` for N in 0..20; one image in a hundred without a name;
//!   every third shared image has `project-7` as an accepted member. Creation times are one
//!   second apart, in id order, so that no two images tie.
//!   A `web` tag on 2 % of the images, half of them public, makes `tag=web&visibility=public`
//!   selective (1 %): a list that walks the images in creation order and tests each then reads
//!   100 rows per image it returns.
//! - `measure --images N --requests R [--warmup W] (--url URL | --db FILE)`: runs each list
//!   shape W times unmeasured, then R times, one request after the other (one client, so the
//!   figures are the query's cost and not a queue's), and prints one JSON line per shape with
//!   p50, p99 and max in ms and how many images the last page had. With `--url` the lists are
//!   `GET /v2/images?...` on a running glint (keep-alive, noauth: an admin list); with `--db`
//!   they are `Registry::list` calls in this process, which also runs the shape a non-admin
//!   project lists (`viewer`), which the API gives only to a Keystone caller.
//!
//! The shapes are what glanceclient and Horizon send: the default list (`created_at` desc),
//! `sort_key=name&sort_dir=asc&status=active`, `tag=web&visibility=public`, and the default list
//! of a non-admin project (`project-7`: its own, public and community images, and shared ones it
//! accepted), each with `limit=25`.

use std::time::Instant;

use glint::registry::{Filters, ImageStatus, ListQuery, MemberStatus, Registry, SortDir, SortKey};
use rusqlite::params;
use serde_json::json;

/// The project whose non-admin list is the `viewer` shape; a member of some shared images.
const VIEWER: &str = "project-7";
/// How many images a page holds, as Horizon asks.
const PAGE: usize = 25;
/// The first image's creation time, seconds since the epoch (2026-01-01T00:00:00Z).
const EPOCH: i64 = 1_767_225_600;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("populate") => populate(&args[1..]),
        Some("measure") => measure(&args[1..]),
        _ => Err("usage: registry_list populate --db FILE --images N\n       \
                  registry_list measure --images N --requests R [--warmup W] (--url URL | --db FILE)"
            .to_string()),
    };
    if let Err(message) = result {
        eprintln!("registry_list: {message}");
        std::process::exit(1);
    }
}

/// The value of `--name` in `args`.
fn option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .map(String::as_str)
}

fn number(args: &[String], name: &str, default: Option<usize>) -> Result<usize, String> {
    match option(args, name) {
        Some(text) => text
            .parse()
            .map_err(|_| format!("{name} {text}: not a number")),
        None => default.ok_or(format!("{name} is required")),
    }
}

/// The RFC 3339 form the registry stores, for `seconds` since the epoch.
fn rfc3339(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds as u64);
    glint::timestamp::rfc3339_seconds(time)
}

fn populate(args: &[String]) -> Result<(), String> {
    let db = option(args, "--db").ok_or("--db is required")?;
    let images = number(args, "--images", None)?;
    drop(
        Registry::open(&glint::registry::Database::Sqlite(db.into()))
            .map_err(|error| error.to_string())?,
    );
    let mut connection = rusqlite::Connection::open(db).map_err(|error| error.to_string())?;
    let transaction = connection.transaction().map_err(|e| e.to_string())?;
    {
        let mut image = transaction
            .prepare(
                "INSERT INTO images (id, name, status, visibility, owner, size, disk_format, \
                 container_format, created_at, updated_at, created_order, updated_order) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'qcow2', 'bare', ?7, ?7, ?8, ?8)",
            )
            .map_err(|e| e.to_string())?;
        let mut tag = transaction
            // The image's creation keys ride on its tag rows (migration 5), as the registry writes them.
            .prepare(
                "INSERT INTO image_tags (image_id, tag, created_at, created_order) \
                 SELECT id, ?2, created_at, created_order FROM images WHERE id = ?1",
            )
            .map_err(|e| e.to_string())?;
        let mut member = transaction
            .prepare(
                "INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) \
                 VALUES (?1, ?2, 'accepted', ?3, ?3)",
            )
            .map_err(|e| e.to_string())?;
        for index in 0..images {
            let id = format!("{:08x}-0000-4000-8000-{:012x}", index, index);
            // Names repeat (a cloud has many "ubuntu-24.04"), one in a hundred has none.
            let name = (index % 100 != 99).then(|| format!("image-{:05}", index % 5000));
            let status = if index % 10 == 9 {
                ImageStatus::Queued
            } else {
                ImageStatus::Active
            };
            let visibility = match index % 10 {
                0..=3 => "public",
                4..=6 => "private",
                7 | 8 => "shared",
                _ => "community",
            };
            let owner = format!("project-{}", index % 100);
            let seconds = EPOCH + index as i64;
            let created = rfc3339(seconds);
            image
                .execute(params![
                    id,
                    name,
                    status.as_str(),
                    visibility,
                    owner,
                    (index as i64) * 1024,
                    created,
                    seconds * 1_000_000,
                ])
                .map_err(|e| e.to_string())?;
            tag.execute(params![id, format!("t{}", index % 20)])
                .map_err(|e| e.to_string())?;
            if index % 100 == 3 || index % 100 == 16 {
                tag.execute(params![id, "web"]).map_err(|e| e.to_string())?;
            }
            if visibility == "shared" && owner != VIEWER && index % 3 == 0 {
                member
                    .execute(params![id, VIEWER, created])
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    transaction.commit().map_err(|e| e.to_string())
}

/// One list shape: its name, its query string for the API, and the same as a `ListQuery`.
struct Shape {
    name: &'static str,
    query_string: Option<&'static str>,
    query: ListQuery,
}

fn shapes() -> Vec<Shape> {
    let page = |filters: Filters, sort: Vec<(SortKey, SortDir)>| ListQuery {
        filters,
        sort,
        limit: PAGE,
        marker: None,
    };
    vec![
        Shape {
            name: "default",
            query_string: Some("limit=25"),
            query: page(Filters::default(), Vec::new()),
        },
        Shape {
            name: "name_status",
            query_string: Some("limit=25&sort_key=name&sort_dir=asc&status=active"),
            query: page(
                Filters {
                    status: Some(ImageStatus::Active),
                    ..Filters::default()
                },
                vec![(SortKey::Name, SortDir::Asc)],
            ),
        },
        Shape {
            name: "tag_visibility",
            query_string: Some("limit=25&tag=web&visibility=public"),
            query: page(
                Filters {
                    tags: vec!["web".to_string()],
                    visibility: Some("public".to_string()),
                    ..Filters::default()
                },
                Vec::new(),
            ),
        },
        Shape {
            name: "viewer",
            // The API lists as a project only for a Keystone caller.
            query_string: None,
            query: page(
                Filters {
                    viewer: Some(VIEWER.to_string()),
                    member_status: Some(MemberStatus::Accepted),
                    ..Filters::default()
                },
                Vec::new(),
            ),
        },
    ]
}

fn measure(args: &[String]) -> Result<(), String> {
    let images = number(args, "--images", None)?;
    let requests = number(args, "--requests", Some(1000))?;
    let warmup = number(args, "--warmup", Some(100))?;
    let url = option(args, "--url");
    let registry = match option(args, "--db") {
        Some(db) => Some(
            Registry::open(&glint::registry::Database::Sqlite(db.into()))
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    for shape in shapes() {
        // One list: how many images it returned.
        let list = || -> Result<usize, String> {
            match (&registry, url, shape.query_string) {
                (Some(registry), _, _) => registry
                    .list(&shape.query)
                    .map(|page| page.len())
                    .map_err(|e| e.to_string()),
                (None, Some(url), Some(query_string)) => {
                    let body = agent
                        .get(format!("{url}/v2/images?{query_string}"))
                        .call()
                        .map_err(|e| e.to_string())?
                        .body_mut()
                        .read_to_string()
                        .map_err(|e| e.to_string())?;
                    let document: serde_json::Value =
                        serde_json::from_str(&body).map_err(|e| e.to_string())?;
                    Ok(document["images"].as_array().map_or(0, Vec::len))
                }
                _ => Ok(usize::MAX),
            }
        };
        if list()? == usize::MAX {
            continue;
        }
        for _ in 0..warmup {
            list()?;
        }
        let mut times = Vec::with_capacity(requests);
        let mut returned = 0;
        for _ in 0..requests {
            let started = Instant::now();
            returned = list()?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let at =
            |fraction: f64| times[((times.len() as f64 * fraction) as usize).min(times.len() - 1)];
        println!(
            "{}",
            json!({
                "via": if registry.is_some() { "registry" } else { "http" },
                "images": images,
                "shape": shape.name,
                "requests": requests,
                "returned": returned,
                "p50_ms": at(0.50),
                "p99_ms": at(0.99),
                "max_ms": times.last(),
            })
        );
    }
    Ok(())
}
