//! The database a registry test runs on: a SQLite file in the test's folder, or, when
//! `GLINT_TEST_POSTGRES` names a PostgreSQL server (an admin URL, as `scripts/test` sets it for
//! its second run of the registry suite), a schema of its own in that database, so that the
//! same tests check both engines.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::sql::Connection;
use super::Database;

/// A fresh, empty database for one test; `dir` is the test's own folder.
pub fn temp_database(dir: &tempfile::TempDir) -> Database {
    let Ok(admin) = std::env::var("GLINT_TEST_POSTGRES") else {
        return Database::Sqlite(dir.path().join("state").join("registry.sqlite"));
    };
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let connection = Connection::open(&Database::Postgres(admin.clone()))
        .unwrap_or_else(|error| panic!("GLINT_TEST_POSTGRES={admin}: cannot connect: {error}"));
    connection
        .execute_batch(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .expect("create the test's schema");
    let separator = if admin.contains('?') { '&' } else { '?' };
    Database::Postgres(format!(
        "{admin}{separator}options=-csearch_path%3D{schema}"
    ))
}
