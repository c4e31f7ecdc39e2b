//! The PostgreSQL engine: the few libpq calls the registry needs, behind safe types.
//!
//! libpq (loaded when first needed, see `libpq.rs`) rather than the `postgres` crate, which
//! runs a tokio runtime inside: glint has no async runtime anywhere. Everything travels in
//! libpq's text format; parameters are typed (`int8` or `text`) so the server never has to
//! guess, and integer columns come back as integers, so a marker's sort values read from one
//! statement bind as the same types in the next.
//!
//! A connection is used by one thread at a time (the registry's pool lends it), which is all
//! libpq asks of a thread-safe build.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{self, NonNull};

use super::libpq::{
    libpq, Libpq, PGconn, PGresult, CONNECTION_OK, PGRES_COMMAND_OK, PGRES_TUPLES_OK,
    PG_DIAG_SQLSTATE, PQTRANS_IDLE, PQTRANS_INERROR,
};
use super::{SqlError, ToSql, ValueRef};

/// The key of the advisory lock every write transaction of every glint node takes: the
/// registry's one write lock, as SQLite has one per file. ("glint" in ASCII.)
const WRITE_LOCK_KEY: i64 = 0x67_6c_69_6e_74;

/// How long a connection attempt waits for the server, unless the URI sets `connect_timeout`:
/// a database that is down makes requests fail with a 503 in seconds, not hang.
const CONNECT_TIMEOUT_S: &str = "5";

/// Bounds on waiting, as SQLite's busy timeout bounds it: a write that waits longer than
/// [`super::BUSY_TIMEOUT`] for the write lock fails (SQLSTATE 55P03, a 503), and the server ends
/// a session left idle inside a transaction (a client gone mid-transaction) after a minute,
/// releasing the lock it held.
const SESSION_OPTIONS: &str = "-c lock_timeout=30000 -c idle_in_transaction_session_timeout=60000";

/// Type OIDs (pg_type.h).
const INT8_OID: u32 = 20;
const INT2_OID: u32 = 21;
const INT4_OID: u32 = 23;
const TEXT_OID: u32 = 25;

/// One libpq connection.
pub struct Connection {
    raw: NonNull<PGconn>,
    lib: &'static Libpq,
}

// SAFETY: libpq's connections may move between threads; the registry's pool lends each to
// one thread at a time, so no two threads use it at once.
unsafe impl Send for Connection {}

/// The rows of one result, freed when dropped.
pub struct Rows {
    raw: NonNull<PGresult>,
    lib: &'static Libpq,
    n_rows: usize,
    n_columns: usize,
    /// Which columns are integers, converted back to integers when read.
    integer: Vec<bool>,
}

impl Connection {
    /// Connects to `uri` (a libpq connection URI).
    pub fn open(uri: &str) -> Result<Connection, SqlError> {
        let lib = libpq()?;
        let text = |value: &str| {
            CString::new(value).map_err(|_| SqlError::Postgres {
                message: "the connection URL contains a NUL byte".to_string(),
                sqlstate: None,
                lost: false,
            })
        };
        // The URI comes last and is expanded in place: what it sets overrides these defaults.
        let keywords = [
            text("connect_timeout")?,
            text("application_name")?,
            text("client_encoding")?,
            text("options")?,
            text("keepalives")?,
            text("keepalives_idle")?,
            text("keepalives_interval")?,
            text("keepalives_count")?,
            text("tcp_user_timeout")?,
            text("dbname")?,
        ];
        let values = [
            text(CONNECT_TIMEOUT_S)?,
            text("glint-api")?,
            text("UTF8")?,
            text(SESSION_OPTIONS)?,
            // A server that vanished (a partition, a crash of its machine) is noticed in about
            // 25 s, not after the kernel's two hours, so that a transaction it held open does not
            // hold the write lock of every node that long.
            text("1")?,
            text("10")?,
            text("5")?,
            text("3")?,
            text("30000")?,
            text(uri)?,
        ];
        let mut keyword_pointers: Vec<*const c_char> =
            keywords.iter().map(|k| k.as_ptr()).collect();
        keyword_pointers.push(ptr::null());
        let mut value_pointers: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        value_pointers.push(ptr::null());
        // SAFETY: both arrays are NULL-terminated and their strings outlive the call.
        let raw = unsafe {
            (lib.connectdb_params)(keyword_pointers.as_ptr(), value_pointers.as_ptr(), 1)
        };
        let raw = NonNull::new(raw).ok_or_else(|| SqlError::Postgres {
            message: "libpq could not allocate a connection".to_string(),
            sqlstate: None,
            lost: true,
        })?;
        let connection = Connection { raw, lib };
        // SAFETY: `raw` is a live connection.
        if unsafe { (lib.status)(raw.as_ptr()) } != CONNECTION_OK {
            // libpq may quote the URI's parts, the password among them.
            return Err(SqlError::Postgres {
                message: super::scrub_password(&connection.error_message(), uri),
                sqlstate: None,
                lost: true,
            });
        }
        // libpq prints the server's notices to stderr unless told otherwise.
        // SAFETY: the processor is a plain function that ignores its argument.
        unsafe { (lib.set_notice_processor)(raw.as_ptr(), Some(log_notice), ptr::null_mut()) };
        Ok(connection)
    }

    pub fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize, SqlError> {
        let rows = self.query(sql, params)?;
        // SAFETY: `rows.raw` is a live result; PQcmdTuples returns a string it owns.
        let count = unsafe { CStr::from_ptr((self.lib.cmd_tuples)(rows.raw.as_ptr())) };
        Ok(count
            .to_str()
            .ok()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0))
    }

    /// Runs `sql`, its `?N` and `?` placeholders turned into PostgreSQL's `$N`.
    pub fn query(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Rows, SqlError> {
        let sql = CString::new(numbered_placeholders(sql)).map_err(|_| nul_error())?;
        let mut types = Vec::with_capacity(params.len());
        let mut values = Vec::with_capacity(params.len());
        for param in params {
            let (oid, value) = match param.to_sql() {
                ValueRef::Null => (0, None),
                ValueRef::Integer(integer) => (INT8_OID, Some(integer.to_string())),
                ValueRef::Text(text) => (TEXT_OID, Some(text.to_string())),
            };
            types.push(oid);
            values.push(
                value
                    .map(|value| CString::new(value).map_err(|_| nul_error()))
                    .transpose()?,
            );
        }
        let pointers: Vec<*const c_char> = values
            .iter()
            .map(|value| value.as_ref().map_or(ptr::null(), |value| value.as_ptr()))
            .collect();
        let n_params = i32::try_from(params.len()).map_err(|_| nul_error())?;
        // SAFETY: the arrays have `n_params` entries and outlive the call; NULL lengths and
        // formats mean text parameters, and 0 asks for text results.
        let raw = unsafe {
            (self.lib.exec_params)(
                self.raw.as_ptr(),
                sql.as_ptr(),
                n_params,
                types.as_ptr(),
                pointers.as_ptr(),
                ptr::null(),
                ptr::null(),
                0,
            )
        };
        self.rows(raw)
    }

    /// Runs several statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        let sql = CString::new(sql).map_err(|_| nul_error())?;
        // SAFETY: a live connection and a NUL-terminated string.
        let raw = unsafe { (self.lib.exec)(self.raw.as_ptr(), sql.as_ptr()) };
        self.rows(raw).map(drop)
    }

    /// `BEGIN`, then the write lock, held until the transaction ends.
    pub fn begin_write(&self) -> Result<(), SqlError> {
        self.execute_batch("BEGIN ISOLATION LEVEL READ COMMITTED")?;
        // Read committed: every statement after the lock sees every write committed before
        // it, as a SQLite transaction that began IMMEDIATE does.
        self.query("SELECT pg_advisory_xact_lock(?1)", &[&WRITE_LOCK_KEY])
            .map(drop)
    }

    pub fn begin_read(&self) -> Result<(), SqlError> {
        self.execute_batch("BEGIN ISOLATION LEVEL REPEATABLE READ")
    }

    /// Whether the server is still there, as far as can be told without a round trip: reads
    /// what already arrived (libpq's socket never blocks), which after a server's shutdown is
    /// its goodbye and the end of the stream.
    pub fn is_connected(&self) -> bool {
        // Twice: one read may return the server's last message (its "terminating connection")
        // and stop there; the next meets the end of the stream.
        // SAFETY: a live connection.
        unsafe {
            (self.lib.consume_input)(self.raw.as_ptr()) != 0
                && (self.lib.consume_input)(self.raw.as_ptr()) != 0
                && (self.lib.status)(self.raw.as_ptr()) == CONNECTION_OK
        }
    }

    /// Whether a statement of the open transaction failed (PostgreSQL then ignores everything
    /// until the transaction ends, and ends it with a rollback).
    pub fn in_failed_transaction(&self) -> bool {
        // SAFETY: a live connection.
        unsafe { (self.lib.transaction_status)(self.raw.as_ptr()) == PQTRANS_INERROR }
    }

    /// Connected, and no transaction open.
    pub fn is_idle(&self) -> bool {
        // SAFETY: a live connection.
        unsafe {
            (self.lib.status)(self.raw.as_ptr()) == CONNECTION_OK
                && (self.lib.transaction_status)(self.raw.as_ptr()) == PQTRANS_IDLE
        }
    }

    /// Checks a result: its rows, or the error it carries (freed either way).
    fn rows(&self, raw: *mut PGresult) -> Result<Rows, SqlError> {
        let Some(raw) = NonNull::new(raw) else {
            return Err(SqlError::Postgres {
                message: self.error_message(),
                sqlstate: None,
                lost: self.is_lost(),
            });
        };
        // From here `rows` owns the result and frees it on every path.
        // SAFETY: `raw` is a live result.
        let (status, n_rows, n_columns) = unsafe {
            (
                (self.lib.result_status)(raw.as_ptr()),
                (self.lib.ntuples)(raw.as_ptr()),
                (self.lib.nfields)(raw.as_ptr()),
            )
        };
        let mut rows = Rows {
            raw,
            lib: self.lib,
            n_rows: usize::try_from(n_rows).unwrap_or(0),
            n_columns: usize::try_from(n_columns).unwrap_or(0),
            integer: Vec::new(),
        };
        match status {
            PGRES_COMMAND_OK | PGRES_TUPLES_OK => {
                rows.integer = (0..n_columns)
                    // SAFETY: a column of this result.
                    .map(|column| unsafe { (self.lib.ftype)(raw.as_ptr(), column) })
                    .map(|oid| matches!(oid, INT8_OID | INT4_OID | INT2_OID))
                    .collect();
                Ok(rows)
            }
            _ => {
                // SAFETY: a live result; both calls return strings the result owns, or NULL.
                let (message, sqlstate) = unsafe {
                    let message = (self.lib.result_error_message)(raw.as_ptr());
                    let sqlstate = (self.lib.result_error_field)(raw.as_ptr(), PG_DIAG_SQLSTATE);
                    (
                        owned(message),
                        (!sqlstate.is_null()).then(|| owned(sqlstate)),
                    )
                };
                drop(rows);
                let message = if message.is_empty() {
                    self.error_message()
                } else {
                    message
                };
                // Class 08 is a connection exception; 57P01..57P03 an administrator shutdown
                // or a server that cannot take connections now.
                let lost = self.is_lost()
                    || sqlstate
                        .as_deref()
                        .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0"));
                Err(SqlError::Postgres {
                    message,
                    sqlstate,
                    lost,
                })
            }
        }
    }

    fn is_lost(&self) -> bool {
        // SAFETY: a live connection.
        unsafe { (self.lib.status)(self.raw.as_ptr()) != CONNECTION_OK }
    }

    fn error_message(&self) -> String {
        // SAFETY: a live connection; the message is owned by it.
        owned(unsafe { (self.lib.error_message)(self.raw.as_ptr()) })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the connection is not used after this.
        unsafe { (self.lib.finish)(self.raw.as_ptr()) }
    }
}

impl Rows {
    pub fn len(&self) -> usize {
        self.n_rows
    }

    /// The value at (`row`, `column`).
    pub fn value(&self, row: usize, column: usize) -> Result<ValueRef<'_>, SqlError> {
        if row >= self.n_rows || column >= self.n_columns {
            return Err(SqlError::Conversion {
                column,
                source: format!("no column {column} in row {row}").into(),
            });
        }
        // Both fit: they are below counts libpq gave as c_int.
        let (r, c) = (row as i32, column as i32);
        // SAFETY: a cell of this result; text values are NUL-terminated and live as long as
        // the result, which `&self` borrows.
        let text = unsafe {
            if (self.lib.getisnull)(self.raw.as_ptr(), r, c) != 0 {
                return Ok(ValueRef::Null);
            }
            CStr::from_ptr((self.lib.getvalue)(self.raw.as_ptr(), r, c))
        };
        let text = text.to_str().map_err(|error| SqlError::Conversion {
            column,
            source: Box::new(error),
        })?;
        if self.integer[column] {
            return text
                .parse()
                .map(ValueRef::Integer)
                .map_err(|error| SqlError::Conversion {
                    column,
                    source: Box::new(error),
                });
        }
        Ok(ValueRef::Text(text))
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        // SAFETY: the result is not used after this.
        unsafe { (self.lib.clear)(self.raw.as_ptr()) }
    }
}

/// `sql` with SQLite's placeholders in PostgreSQL's form: `?N` becomes `$N`, and a bare `?`
/// the next number after the largest so far (SQLite's rule). Quoted text is left alone.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut largest = 0u32;
    let mut quote = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '?') => {
                let mut digits = String::new();
                while let Some(digit) = chars.peek().filter(|c| c.is_ascii_digit()) {
                    digits.push(*digit);
                    chars.next();
                }
                let number = digits.parse().unwrap_or(largest + 1);
                largest = largest.max(number);
                out.push('$');
                out.push_str(&number.to_string());
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    out
}

fn nul_error() -> SqlError {
    SqlError::Unstorable("the text holds a NUL character, which PostgreSQL cannot store")
}

/// A C string libpq owns, copied, without its trailing newline.
fn owned(text: *const c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    // SAFETY: libpq's strings are NUL-terminated.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_string_lossy().trim_end().to_string()
}

/// Where libpq's notices go: the debug log, not stderr.
unsafe extern "C" fn log_notice(_: *mut c_void, message: *const c_char) {
    log::debug!("PostgreSQL: {}", owned(message).escape_debug());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_take_postgresql_numbers() {
        for (sqlite, postgres) in [
            ("a = ?1 AND b = ?2 OR c = ?1", "a = $1 AND b = $2 OR c = $1"),
            ("a = ? AND b = ? LIMIT ?", "a = $1 AND b = $2 LIMIT $3"),
            ("a = ?3 AND b = ?", "a = $3 AND b = $4"),
            ("a = '?' AND b = ?", "a = '?' AND b = $1"),
            (
                "a = 'it''s ?' AND \"?\" = ?2",
                "a = 'it''s ?' AND \"?\" = $2",
            ),
        ] {
            assert_eq!(numbered_placeholders(sqlite), postgres, "{sqlite}");
        }
    }
}
