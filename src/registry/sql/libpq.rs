//! libpq, loaded when a registry on PostgreSQL is first opened, not linked into the binary.
//!
//! Linked, libpq and what it pulls in (GnuTLS, Kerberos, LDAP, SASL) sat in every glint process,
//! SQLite or not, and every fork copied their mappings: here a master had 152 mappings and 12.7
//! MiB resident with it, 37 and 7.2 MiB without; a child 253 and 8.4 MiB, 138 and 6.7. Loaded with
//! dlopen(3) instead, a node on SQLite never maps it, and its package only recommends
//! `libpq5`. A node on PostgreSQL loads it once, in the master's start-up check of the
//! database, before any fork; its children inherit it.
//!
//! Only the few calls `postgres.rs` makes are looked up, by their names in libpq's stable
//! ABI (`libpq.so.5`, the same since PostgreSQL 8.0); their C signatures are copied from
//! `libpq-fe.h`, and its enums are C ints.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use super::SqlError;
use crate::dynlib::Library;

/// libpq's file name, by its soname.
const LIBRARY: &str = "libpq.so.5";

/// Test hook: another file name to load instead of [`LIBRARY`], for the test of a node whose
/// libpq is missing. Read only by debug builds (the ones the tests run).
pub const FAULT_LIBPQ: &str = "GLINT_FAULT_LIBPQ";

/// The file to load.
fn library() -> String {
    std::env::var(FAULT_LIBPQ)
        .ok()
        .filter(|_| cfg!(debug_assertions))
        .unwrap_or_else(|| LIBRARY.to_string())
}

/// `PGconn` and `PGresult`: opaque to their users.
pub enum PGconn {}
pub enum PGresult {}

/// Type OIDs.
pub type Oid = c_uint;

/// `ConnStatusType::CONNECTION_OK`.
pub const CONNECTION_OK: c_int = 0;
/// `ExecStatusType::PGRES_COMMAND_OK` and `PGRES_TUPLES_OK`.
pub const PGRES_COMMAND_OK: c_int = 1;
pub const PGRES_TUPLES_OK: c_int = 2;
/// `PGTransactionStatusType::PQTRANS_IDLE` and `PQTRANS_INERROR`.
pub const PQTRANS_IDLE: c_int = 0;
pub const PQTRANS_INERROR: c_int = 3;
/// `PG_DIAG_SQLSTATE`, the field code of an error's SQLSTATE.
pub const PG_DIAG_SQLSTATE: c_int = b'C' as c_int;

/// `PQnoticeProcessor`.
pub type NoticeProcessor = unsafe extern "C" fn(arg: *mut c_void, message: *const c_char);

/// The functions glint calls, as found in the loaded library.
pub struct Libpq {
    pub connectdb_params: unsafe extern "C" fn(
        keywords: *const *const c_char,
        values: *const *const c_char,
        expand_dbname: c_int,
    ) -> *mut PGconn,
    pub status: unsafe extern "C" fn(conn: *const PGconn) -> c_int,
    pub finish: unsafe extern "C" fn(conn: *mut PGconn),
    pub error_message: unsafe extern "C" fn(conn: *const PGconn) -> *mut c_char,
    pub set_notice_processor: unsafe extern "C" fn(
        conn: *mut PGconn,
        processor: Option<NoticeProcessor>,
        arg: *mut c_void,
    ) -> Option<NoticeProcessor>,
    pub consume_input: unsafe extern "C" fn(conn: *mut PGconn) -> c_int,
    pub transaction_status: unsafe extern "C" fn(conn: *const PGconn) -> c_int,
    pub exec: unsafe extern "C" fn(conn: *mut PGconn, query: *const c_char) -> *mut PGresult,
    #[allow(clippy::type_complexity)]
    pub exec_params: unsafe extern "C" fn(
        conn: *mut PGconn,
        command: *const c_char,
        n_params: c_int,
        param_types: *const Oid,
        param_values: *const *const c_char,
        param_lengths: *const c_int,
        param_formats: *const c_int,
        result_format: c_int,
    ) -> *mut PGresult,
    pub result_status: unsafe extern "C" fn(res: *const PGresult) -> c_int,
    pub result_error_message: unsafe extern "C" fn(res: *const PGresult) -> *mut c_char,
    pub result_error_field:
        unsafe extern "C" fn(res: *const PGresult, field_code: c_int) -> *mut c_char,
    pub clear: unsafe extern "C" fn(res: *mut PGresult),
    pub ntuples: unsafe extern "C" fn(res: *const PGresult) -> c_int,
    pub nfields: unsafe extern "C" fn(res: *const PGresult) -> c_int,
    pub ftype: unsafe extern "C" fn(res: *const PGresult, field: c_int) -> Oid,
    pub getvalue:
        unsafe extern "C" fn(res: *const PGresult, row: c_int, field: c_int) -> *mut c_char,
    pub getisnull: unsafe extern "C" fn(res: *const PGresult, row: c_int, field: c_int) -> c_int,
    pub cmd_tuples: unsafe extern "C" fn(res: *mut PGresult) -> *mut c_char,
}

/// The loaded library, or why it could not be loaded; tried once per process tree (a child
/// inherits the master's answer with its memory).
static LOADED: OnceLock<Result<Libpq, String>> = OnceLock::new();

/// libpq's functions, loading the library on first use.
pub fn libpq() -> Result<&'static Libpq, SqlError> {
    LOADED
        .get_or_init(load)
        .as_ref()
        .map_err(|reason| SqlError::Postgres {
            message: format!(
                "cannot load libpq ({reason}); a postgresql:// [database] connection needs \
                 {LIBRARY}: install it (Debian: apt-get install libpq5)"
            ),
            sqlstate: None,
            lost: false,
        })
}

fn load() -> Result<Libpq, String> {
    let library = Library::open(&library())?;
    // SAFETY (of every `function`): each is the named libpq function, whose C signature
    // (libpq-fe.h) the field's type repeats.
    unsafe {
        Ok(Libpq {
            connectdb_params: library.function("PQconnectdbParams")?,
            status: library.function("PQstatus")?,
            finish: library.function("PQfinish")?,
            error_message: library.function("PQerrorMessage")?,
            set_notice_processor: library.function("PQsetNoticeProcessor")?,
            consume_input: library.function("PQconsumeInput")?,
            transaction_status: library.function("PQtransactionStatus")?,
            exec: library.function("PQexec")?,
            exec_params: library.function("PQexecParams")?,
            result_status: library.function("PQresultStatus")?,
            result_error_message: library.function("PQresultErrorMessage")?,
            result_error_field: library.function("PQresultErrorField")?,
            clear: library.function("PQclear")?,
            ntuples: library.function("PQntuples")?,
            nfields: library.function("PQnfields")?,
            ftype: library.function("PQftype")?,
            getvalue: library.function("PQgetvalue")?,
            getisnull: library.function("PQgetisnull")?,
            cmd_tuples: library.function("PQcmdTuples")?,
        })
    }
}
