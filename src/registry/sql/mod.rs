//! The narrow interface between the registry and its database engine: SQLite (the embedded
//! default) or PostgreSQL (several nodes sharing one registry), chosen by [`Database`].
//!
//! The registry writes its SQL once, in the dialect both engines share, with `?N` or `?`
//! placeholders; a [`Connection`] runs it on either engine and hands rows back as [`Row`]s
//! whose columns convert with [`FromSql`]. Where the engines differ in syntax (the marker's
//! `IS` comparison, a `CROSS JOIN` with `ON`), the caller asks [`Connection::dialect`].
//!
//! Transactions keep SQLite's model on both engines, so the registry's reasoning about
//! atomicity holds unchanged: a write transaction ([`Connection::begin_write`]) holds the one
//! write lock of the whole database before it reads (SQLite's `BEGIN IMMEDIATE`; on
//! PostgreSQL a transaction-scoped advisory lock that every glint node takes), and a read
//! transaction ([`Connection::begin_read`]) sees one snapshot.
//!
//! - `sqlite`: opening a file with the pragmas the registry needs, and SQLite's busy wait.
//! - `postgres`: a safe wrapper of the few libpq calls used; `libpq`: libpq itself, loaded with
//!   dlopen when a PostgreSQL registry is first opened (a node on SQLite never maps it).
//! - `value`: the values bound and read ([`ToSql`], [`FromSql`], [`Value`]).

#[cfg(feature = "postgresql")]
mod libpq;
#[cfg(feature = "postgresql")]
mod postgres;
mod sqlite;
mod value;

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;

pub use sqlite::{busy_delay, BUSY_TIMEOUT};
pub use value::{FromSql, ToSql, Value, ValueRef};

/// Where the registry keeps its records: `[database] connection`. Its `Debug` hides the
/// password, as [`Database::display`] does.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, shared by the children of one node.
    Sqlite(PathBuf),
    /// A PostgreSQL database, shared by every node: a libpq connection URI
    /// (`postgresql://user:password@host:port/db?option=value`).
    Postgres(String),
}

impl Default for Database {
    /// Nothing yet: the configuration's default replaces it.
    fn default() -> Database {
        Database::Sqlite(PathBuf::new())
    }
}

impl Database {
    /// The database as an operator may see it in a log: a SQLite path, or the PostgreSQL URI
    /// with its password replaced by `***`.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(uri) => redact_password(uri),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => formatter.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(uri) => formatter
                .debug_tuple("Postgres")
                .field(&redact_password(uri))
                .finish(),
        }
    }
}

/// The password of a PostgreSQL URI, as written, if it has one: after the user and `:` in the
/// part before the last `@` that comes before any `/`, or a `password=` query parameter.
pub fn password_of(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once("://")?;
    let path_start = rest.find('/').unwrap_or(rest.len());
    if let Some(at) = rest[..path_start].rfind('@') {
        if let Some((_, password)) = rest[..at].split_once(':') {
            return Some(password);
        }
    }
    let (_, query) = rest.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("password="))
}

/// `uri` with its password, wherever libpq would find it, replaced by `***`.
pub fn redact_password(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let path_start = rest.find('/').unwrap_or(rest.len());
    // The last `@`: libpq ends the credentials at the first, but a password holding an `@`
    // unencoded must not show its end either.
    let mut redacted = match rest[..path_start].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => uri.to_string(),
        },
        None => uri.to_string(),
    };
    if let Some((head, query)) = redacted.clone().split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.strip_prefix("password=") {
                Some(_) => "password=***".to_string(),
                None => pair.to_string(),
            })
            .collect();
        redacted = format!("{head}?{}", query.join("&"));
    }
    redacted
}

/// `message` (libpq's, which may quote the URI's parts) with `uri`'s password, as written and
/// percent-decoded, replaced by `***`.
pub fn scrub_password(message: &str, uri: &str) -> String {
    let Some(password) = password_of(uri).filter(|password| !password.is_empty()) else {
        return message.to_string();
    };
    let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy();
    message
        .replace(password, "***")
        .replace(decoded.as_ref(), "***")
}

/// Which SQL an engine needs where the two differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One open connection to the registry's database.
pub enum Connection {
    Sqlite(rusqlite::Connection),
    #[cfg(feature = "postgresql")]
    Postgres(postgres::Connection),
}

/// A transaction on a [`Connection`]: rolled back when dropped unless committed. It derefs to
/// the connection, so everything that takes a `&Connection` runs inside it.
pub struct Transaction<'a> {
    connection: &'a mut Connection,
    open: bool,
}

/// One row of a result.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    #[cfg(feature = "postgresql")]
    Postgres(&'a postgres::Rows, usize),
}

/// Why a database call failed.
#[derive(Debug)]
pub enum SqlError {
    Sqlite(rusqlite::Error),
    /// An error PostgreSQL (or libpq) reported.
    Postgres {
        message: String,
        /// The SQLSTATE, when the server sent one.
        sqlstate: Option<String>,
        /// The connection is gone (the server stopped or cannot be reached): the call may
        /// succeed on a new connection.
        lost: bool,
    },
    /// A column's value does not convert to the type asked for.
    Conversion {
        column: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A statement that must return a row returned none.
    NoRows,
    /// A value the engine cannot store (a NUL character in PostgreSQL text).
    Unstorable(&'static str),
    /// SQLite would not switch the file to the WAL journal (a network file system): it kept
    /// `mode`.
    NoWal {
        mode: String,
    },
}

impl Connection {
    /// Opens a connection to `database`, ready for the registry: SQLite's pragmas set, or a
    /// PostgreSQL session with glint's settings.
    pub fn open(database: &Database) -> Result<Connection, SqlError> {
        match database {
            Database::Sqlite(path) => sqlite::open(path).map(Connection::Sqlite),
            #[cfg(feature = "postgresql")]
            Database::Postgres(uri) => postgres::Connection::open(uri).map(Connection::Postgres),
            #[cfg(not(feature = "postgresql"))]
            Database::Postgres(_) => Err(SqlError::Postgres {
                message: "this glint was built without PostgreSQL support (cargo feature \
                          `postgresql`)"
                    .to_string(),
                sqlstate: None,
                lost: false,
            }),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgresql")]
            Connection::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToSql]) -> Result<usize, SqlError> {
        match self {
            Connection::Sqlite(connection) => sqlite::execute(connection, sql, params),
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => connection.execute(sql, params),
        }
    }

    /// Runs several statements without parameters (a migration).
    pub fn execute_batch(&self, sql: &str) -> Result<(), SqlError> {
        match self {
            Connection::Sqlite(connection) => {
                connection.execute_batch(sql).map_err(SqlError::Sqlite)
            }
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => connection.execute_batch(sql),
        }
    }

    /// Hands each row to `visit` in order until the rows end or `visit` returns false.
    /// `visit` may run other statements on this connection.
    pub fn query_each(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        mut visit: impl FnMut(&Row<'_>) -> Result<bool, SqlError>,
    ) -> Result<(), SqlError> {
        match self {
            Connection::Sqlite(connection) => {
                sqlite::query_each(connection, sql, params, |row| visit(&Row::Sqlite(row)))
            }
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => {
                let rows = connection.query(sql, params)?;
                for index in 0..rows.len() {
                    if !visit(&Row::Postgres(&rows, index))? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Every row, each mapped by `map`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        mut map: impl FnMut(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<Vec<T>, SqlError> {
        let mut all = Vec::new();
        self.query_each(sql, params, |row| {
            all.push(map(row)?);
            Ok(true)
        })?;
        Ok(all)
    }

    /// The first row, mapped by `map`; None if there is none.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        map: impl FnOnce(&Row<'_>) -> Result<T, SqlError>,
    ) -> Result<Option<T>, SqlError> {
        let mut map = Some(map);
        let mut first = None;
        self.query_each(sql, params, |row| {
            if let Some(map) = map.take() {
                first = Some(map(row)?);
            }
            Ok(false)
        })?;
        Ok(first)
    }

    /// Whether the statement returns any row.
    pub fn exists(&self, sql: &str, params: &[&dyn ToSql]) -> Result<bool, SqlError> {
        Ok(self.query_opt(sql, params, |_| Ok(()))?.is_some())
    }

    /// Begins a transaction that holds the database's write lock before it reads.
    pub fn begin_write(&mut self) -> Result<Transaction<'_>, SqlError> {
        match self {
            Connection::Sqlite(connection) => connection
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(SqlError::Sqlite)?,
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => connection.begin_write()?,
        }
        Ok(Transaction {
            connection: self,
            open: true,
        })
    }

    /// Begins a transaction whose reads all come from one snapshot.
    pub fn begin_read(&mut self) -> Result<Transaction<'_>, SqlError> {
        match self {
            Connection::Sqlite(connection) => connection
                .execute_batch("BEGIN")
                .map_err(SqlError::Sqlite)?,
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => connection.begin_read()?,
        }
        Ok(Transaction {
            connection: self,
            open: true,
        })
    }

    /// Whether the connection can be lent again: no transaction left open on it, and (for
    /// PostgreSQL) still connected.
    pub fn is_reusable(&self) -> bool {
        match self {
            Connection::Sqlite(connection) => connection.is_autocommit(),
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => connection.is_idle(),
        }
    }

    /// Whether an idle connection is still worth lending: a PostgreSQL server that restarted
    /// closed it, which shows without a round trip.
    pub fn is_connected(&self) -> bool {
        match self {
            Connection::Sqlite(_) => true,
            #[cfg(feature = "postgresql")]
            Connection::Postgres(connection) => connection.is_connected(),
        }
    }

    /// How many rows this connection's statements inserted, updated or deleted since it was
    /// opened (SQLite's `sqlite3_total_changes`, triggers and foreign key actions included); None
    /// on PostgreSQL.
    pub fn total_changes(&self) -> Option<u64> {
        match self {
            Connection::Sqlite(connection) => Some(connection.total_changes()),
            #[cfg(feature = "postgresql")]
            Connection::Postgres(_) => None,
        }
    }

    /// The SQLite connection, for what only SQLite has (tests of its plans and pragmas).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Connection::Sqlite(connection) => Some(connection),
            #[cfg(feature = "postgresql")]
            Connection::Postgres(_) => None,
        }
    }
}

impl Transaction<'_> {
    /// Commits. PostgreSQL aborts a transaction at its first failed statement and then answers
    /// a COMMIT with a ROLLBACK, without an error: that is refused here, so a caller that went
    /// on after an error it ignored never takes its writes for done.
    pub fn commit(mut self) -> Result<(), SqlError> {
        #[cfg(feature = "postgresql")]
        if let Connection::Postgres(connection) = &*self.connection {
            if connection.in_failed_transaction() {
                return Err(SqlError::Postgres {
                    message: "a statement of the transaction failed, so it was rolled back"
                        .to_string(),
                    sqlstate: Some("25P02".to_string()),
                    lost: false,
                });
            }
        }
        self.open = false;
        self.connection.execute_batch("COMMIT")
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            // A failed rollback leaves the transaction open: the pool sees that
            // (`is_reusable`) and closes the connection instead of lending it again.
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}

impl Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Row<'_> {
    /// Column `index` (from 0), converted.
    pub fn get<T: FromSql>(&self, index: usize) -> Result<T, SqlError> {
        let value = match self {
            Row::Sqlite(row) => sqlite::value(row, index)?,
            #[cfg(feature = "postgresql")]
            Row::Postgres(rows, row) => rows.value(*row, index)?,
        };
        T::from_sql(value).map_err(|source| SqlError::Conversion {
            column: index,
            source,
        })
    }
}

impl SqlError {
    /// Whether the database gave up waiting for a lock (after [`BUSY_TIMEOUT`]): SQLite's
    /// busy error, or PostgreSQL's `lock_not_available` (55P03, `lock_timeout`).
    pub fn is_busy(&self) -> bool {
        match self {
            SqlError::Sqlite(error) => matches!(
                error.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            SqlError::Postgres { sqlstate, .. } => sqlstate.as_deref() == Some("55P03"),
            _ => false,
        }
    }

    /// Whether the database refused a value it cannot store: a NUL character (PostgreSQL's text
    /// cannot hold one), or a value too long for an index (SQLSTATE 54000). The client's input
    /// is at fault: a 400.
    pub fn is_unstorable(&self) -> bool {
        match self {
            SqlError::Unstorable(_) => true,
            SqlError::Postgres { sqlstate, .. } => {
                matches!(sqlstate.as_deref(), Some("54000" | "22021" | "22P05"))
            }
            _ => false,
        }
    }

    /// Whether the database cannot be reached (PostgreSQL down, restarting or unreachable).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SqlError::Postgres { lost: true, .. })
    }
}

impl From<rusqlite::Error> for SqlError {
    fn from(error: rusqlite::Error) -> SqlError {
        SqlError::Sqlite(error)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlError::Sqlite(error) => error.fmt(formatter),
            SqlError::Postgres {
                message, sqlstate, ..
            } => match sqlstate {
                Some(code) => write!(formatter, "PostgreSQL: {message} (SQLSTATE {code})"),
                None => write!(formatter, "PostgreSQL: {message}"),
            },
            SqlError::Conversion { column, source } => {
                write!(formatter, "conversion error in column {column}: {source}")
            }
            SqlError::NoRows => formatter.write_str("the statement returned no row"),
            SqlError::Unstorable(what) => formatter.write_str(what),
            SqlError::NoWal { mode } => write!(
                formatter,
                "SQLite cannot use the WAL journal there (it kept journal_mode={mode}); put the \
                 registry on a local file system"
            ),
        }
    }
}

impl std::error::Error for SqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqlError::Sqlite(error) => Some(error),
            SqlError::Conversion { source, .. } => Some(source.as_ref()),
            SqlError::Postgres { .. }
            | SqlError::NoRows
            | SqlError::Unstorable(_)
            | SqlError::NoWal { .. } => None,
        }
    }
}

/// Parameters for a statement, `?1` first: `params![a, b]`.
#[macro_export]
macro_rules! sql_params {
    ($($param:expr),* $(,)?) => {
        &[$(&$param as &dyn $crate::registry::sql::ToSql),*] as &[&dyn $crate::registry::sql::ToSql]
    };
}
pub use sql_params as params;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        for (uri, shown) in [
            (
                "postgresql://glance:s3cr@t@db:5432/glance",
                "postgresql://glance:***@db:5432/glance",
            ),
            (
                "postgresql://glance:pw@db/glance?sslmode=require",
                "postgresql://glance:***@db/glance?sslmode=require",
            ),
            (
                "postgresql://glance:pa?ss@db/glance",
                "postgresql://glance:***@db/glance",
            ),
            (
                "postgresql://glance@db/glance?sslmode=require&password=s3cret",
                "postgresql://glance@db/glance?sslmode=require&password=***",
            ),
            (
                "postgresql://glance@db/glance",
                "postgresql://glance@db/glance",
            ),
            ("postgresql:///glance", "postgresql:///glance"),
        ] {
            assert_eq!(redact_password(uri), shown, "{uri}");
            assert!(!format!("{:?}", Database::Postgres(uri.to_string())).contains("s3cr"));
        }
        let uri = "postgresql://glance:se%zzcr@db/glance";
        assert_eq!(
            scrub_password("invalid percent-encoded token: \"se%zzcr\"", uri),
            "invalid percent-encoded token: \"***\""
        );
        assert_eq!(
            scrub_password("password for s3 cr failed", "postgresql://u:s3%20cr@db/x"),
            "password for *** failed"
        );
    }
}
