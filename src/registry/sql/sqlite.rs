//! The SQLite engine: a file opened with the pragmas the registry relies on (WAL, full sync,
//! foreign keys), SQLite's busy wait counted for the metrics, and statements run through
//! rusqlite's statement cache.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef as SqliteValue};
use rusqlite::ErrorCode;

use super::{SqlError, ToSql, ValueRef};

/// How long a call waits for another connection, in this process or another, to release the
/// write lock before it fails. Long enough for any single registry transaction, which holds
/// the lock for milliseconds.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens one connection and sets its pragmas before anything else uses it.
pub(super) fn open(path: &Path) -> Result<rusqlite::Connection, SqlError> {
    let connection = rusqlite::Connection::open(path)?;
    // First, so that everything after it, including the journal mode change, waits for locks.
    connection.busy_handler(Some(wait_while_busy))?;
    set_wal(&connection)?;
    // With WAL, NORMAL syncs only at checkpoints: still consistent after a power loss.
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    Ok(connection)
}

pub(super) fn execute(
    connection: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<usize, SqlError> {
    let mut statement = connection.prepare_cached(sql)?;
    Ok(statement.execute(rusqlite::params_from_iter(
        params.iter().map(|param| Bind(*param)),
    ))?)
}

pub(super) fn query_each(
    connection: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn ToSql],
    mut visit: impl FnMut(&rusqlite::Row<'_>) -> Result<bool, SqlError>,
) -> Result<(), SqlError> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(rusqlite::params_from_iter(
        params.iter().map(|param| Bind(*param)),
    ))?;
    while let Some(row) = rows.next()? {
        if !visit(row)? {
            break;
        }
    }
    Ok(())
}

/// Column `index` of `row`. A real or a blob is an error: the schema has neither.
pub(super) fn value<'a>(
    row: &'a rusqlite::Row<'a>,
    index: usize,
) -> Result<ValueRef<'a>, SqlError> {
    Ok(match row.get_ref(index)? {
        SqliteValue::Null => ValueRef::Null,
        SqliteValue::Integer(integer) => ValueRef::Integer(integer),
        SqliteValue::Text(bytes) => ValueRef::Text(std::str::from_utf8(bytes).map_err(
            |error| SqlError::Conversion {
                column: index,
                source: Box::new(error),
            },
        )?),
        other => {
            return Err(SqlError::Conversion {
                column: index,
                source: format!("unexpected {:?} value", other.data_type()).into(),
            })
        }
    })
}

/// A parameter as rusqlite binds it.
struct Bind<'a>(&'a dyn ToSql);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0.to_sql() {
            ValueRef::Null => SqliteValue::Null,
            ValueRef::Integer(integer) => SqliteValue::Integer(integer),
            ValueRef::Text(text) => SqliteValue::Text(text.as_bytes()),
        }))
    }
}

/// SQLite's own wait for a lock held elsewhere (`sqliteDefaultBusyCallback`, which
/// `busy_timeout` installs: the same delays, the same bound, [`BUSY_TIMEOUT`]), plus a count of
/// each wait that begins, for `glint_registry_busy_waits_total` (`crate::metrics`). SQLite calls
/// it with the number of times it already called it for this lock; `false` gives up (BUSY).
fn wait_while_busy(n_calls: i32) -> bool {
    if n_calls == 0 {
        crate::metrics::registry_busy_wait();
    }
    match busy_delay(n_calls) {
        Some(delay) => {
            std::thread::sleep(delay);
            true
        }
        None => false,
    }
}

/// How long the `n_calls`-th call of [`wait_while_busy`] sleeps, or `None` once the sleeps
/// before it add up to [`BUSY_TIMEOUT`]: SQLite's delays (1, 2, 5, ... 100 ms, then 100 ms),
/// the last one cut to end at the bound.
pub fn busy_delay(n_calls: i32) -> Option<Duration> {
    const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
    let n_calls = usize::try_from(n_calls).unwrap_or(0);
    let waited_ms: u64 = if n_calls < DELAYS_MS.len() {
        DELAYS_MS[..n_calls].iter().sum()
    } else {
        DELAYS_MS.iter().sum::<u64>() + 100 * (n_calls - DELAYS_MS.len()) as u64
    };
    let delay_ms = DELAYS_MS.get(n_calls).copied().unwrap_or(100);
    let bound_ms = BUSY_TIMEOUT.as_millis() as u64;
    (waited_ms < bound_ms).then(|| Duration::from_millis(delay_ms.min(bound_ms - waited_ms)))
}

/// Switches the file to the WAL journal (a no-op once it is: the mode is stored in the file).
///
/// The first switch needs the file to itself, and SQLite may answer SQLITE_BUSY at once rather
/// than call the busy handler, when several children open a new database together; so retry
/// until [`BUSY_TIMEOUT`].
fn set_wal(connection: &rusqlite::Connection) -> Result<(), SqlError> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let result = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        match result {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => return Err(SqlError::NoWal { mode }),
            Err(error)
                if Instant::now() < deadline
                    && matches!(
                        error.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(SqlError::Sqlite(error)),
        }
    }
}
