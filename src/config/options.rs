//! The options table: every option glint reads, in one static list, and the value parsers it names.
//!
//! [`OPTIONS`] is the single source of truth for an option: the loader in [`super`] walks it to
//! apply defaults and file values, the unknown-option warnings search it for suggestions,
//! [`super::Config::effective_settings`] prints it for `--check-config`, and
//! [`options_markdown`] renders it for docs/OPERATIONS.md (a unit test keeps the two equal).
//! Adding an option means adding a field to `Config` and `Draft` and one entry here.
//!
//! This module does not read files or know about line numbers: it turns one value's text into a
//! typed [`Value`] or into the sentence that says what is wrong with it. Names and defaults follow
//! glance-api.conf (oslo.config) wherever Glance has the option, so an operator's file loads.

use crate::registry::Database;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::{
    keystone::Secret, AuthStrategy, Config, DataDir, Draft, Flavor, HashAlgorithm, ReloadStrategy,
    AUTH_STRATEGY_NAMES, DEFAULT_FILE_PERM, FLAVOR_NAMES, HASH_ALGORITHM_NAMES,
};

/// One option glint reads from its config file.
pub struct OptionSpec {
    /// The INI section, `DEFAULT` for `[DEFAULT]`.
    pub section: &'static str,
    /// The key, spelled as in glance-api.conf when Glance has the option.
    pub name: &'static str,
    /// What values it takes; this decides how the text is parsed.
    pub kind: Kind,
    /// The value used when the file does not set it.
    pub default: DefaultValue,
    /// What a SIGHUP does with a changed value.
    pub on_reload: &'static str,
    /// One or two sentences for the operator.
    pub doc: &'static str,
    /// Stores a parsed value; the kind guarantees which `Value` variant arrives.
    pub(super) apply: fn(&mut Draft, Value),
    /// Renders the effective value in the syntax the file accepts, for `--check-config`: one
    /// text per `name = value` line, so none when the option is not in effect (a multi-valued
    /// option left unset, or the one of two alternatives that the other replaces).
    pub(super) show: fn(&Config) -> Vec<String>,
}

/// The type of an option's value, with its limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// oslo.config's booleans: true/false, yes/no, on/off, 1/0, in any case.
    Bool,
    /// A decimal integer from `min` to `max`. `zero_means_min`, when set, is the warning given
    /// for a 0 that Glance accepts but glint replaces by `min`.
    Integer {
        min: i64,
        max: i64,
        zero_means_min: Option<&'static str>,
    },
    /// Whole seconds up to `max`; 0 is allowed only when it means "never" (no limit).
    Seconds { max: u64, zero_means_never: bool },
    /// An IPv4 or IPv6 address literal, or `localhost`.
    Host,
    /// A file path; relative paths are resolved as `relative_to` says.
    File {
        optional: bool,
        relative_to: RelativeTo,
    },
    /// A folder path, relative to the config file's folder.
    Folder { optional: bool },
    /// An optional `http://` or `https://` URL; trailing slashes are dropped.
    Url,
    /// One of `accepted` (lowercase), in any case; `refusal` completes "`VALUE` is not ...".
    Choice {
        accepted: &'static [&'static str],
        refusal: &'static str,
    },
    /// glance_store's `filesystem_store_datadirs`: a multi-valued key, each value a folder and
    /// an optional integer priority, `PATH:PRIORITY`, split on the last colon.
    DataDirs,
    /// An octal file mode as glance_store reads it (`0640` or `640`), 0 to 0777.
    FileMode,
    /// glance_store's `stores`: a comma list that must name `file`; other stores draw a warning.
    StoreList,
    /// An SQLAlchemy SQLite URL, `sqlite:///RELATIVE/PATH` or `sqlite:////ABSOLUTE/PATH`.
    DatabaseUrl,
    /// `[paste_deploy] flavor`: one of [`FLAVOR_NAMES`], alone or after `keystone+`, or
    /// `keystone` alone.
    Flavor,
    /// `auth_strategy`: one of [`AUTH_STRATEGY_NAMES`], in any case.
    AuthStrategy,
    /// Free text on one line without control characters; empty means unset. A `secret` is
    /// never shown by `--check-config`.
    Text { secret: bool },
    /// oslo.config's ListOpt: comma-separated items, each trimmed, empty items dropped.
    List,
    /// oslo.log's `syslog_log_facility`: a facility name, `LOG_` optional, in any case.
    SyslogFacility,
}

/// What a relative path in the config file is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelativeTo {
    /// The folder holding the config file.
    ConfigFolder,
    /// `log_dir` when it is set, else the folder holding the config file.
    LogDir,
}

/// An option's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultValue {
    /// Text parsed exactly like a value from the file (a test checks that each one parses).
    Text(&'static str),
    /// Worked out by the loader (from the machine or from other options); the text describes it.
    Derived(&'static str),
}

/// A parsed value, before it is stored into the draft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    Bool(bool),
    Integer(i64),
    Seconds(Option<Duration>),
    Host(String),
    Path(Option<PathBuf>),
    Database(Database),
    Url(Option<String>),
    /// The accepted spelling, from the kind's list.
    Choice(&'static str),
    DataDir(DataDir),
    FileMode(u32),
    /// The store names, in file order, `file` among them.
    Stores(Vec<String>),
    /// The cache pipeline, and whether `keystone` comes before it.
    Flavor {
        keystone: bool,
        cache: Flavor,
    },
    /// `None` for an empty value.
    Text(Option<String>),
    List(Vec<String>),
}

/// A successful parse, with the warning some accepted values deserve.
pub(super) struct Parsed {
    pub(super) value: Value,
    pub(super) warning: Option<String>,
}

/// The largest timeout in seconds: its value in milliseconds must fit poll(2)'s `int` timeout.
pub const MAX_TIMEOUT_SECONDS: u64 = (i32::MAX as u64) / 1000;

/// The largest `limit_param_default` and `api_limit_max`.
pub const MAX_API_LIMIT: i64 = 1_000_000;

/// The smallest `image_metadata_size_cap`: room for every base attribute at its longest.
pub const MIN_METADATA_SIZE_CAP: i64 = 4096;

/// The largest `image_metadata_size_cap`: one list page (`api::images::LIST_PAGE_BYTES`), so
/// that every image fits a page and no page is larger.
pub const MAX_METADATA_SIZE_CAP: i64 = 1024 * 1024;

/// The largest `tcp_keepidle`: Linux refuses a larger TCP_KEEPIDLE (MAX_TCP_KEEPIDLE, tcp(7)).
pub const MAX_TCP_KEEPIDLE_SECONDS: u64 = 32_767;

const RELOAD_LISTENER: &str = "new listener bound before the new generation starts (the same \
                               socket if the address resolves the same; beside the old one on an \
                               overlapping address); the old one stops taking connections when the \
                               new generation takes over; a bind failure fails the reload";
const RELOAD_METRICS: &str = "a changed address is bound before the new generation starts (a bind \
                               failure fails the reload); an unchanged one keeps its socket; the old \
                               socket closes once no generation uses it";
const RELOAD_WORKERS: &str = "the new generation has the new number of children; the old drains";
const RELOAD_GENERATION: &str =
    "applies to the new generation; the old keeps its value while it drains";
const RELOAD_BACKLOG: &str = "applied to the open listener at once (listen(2) again)";
const RELOAD_UPLOAD_LIMIT: &str =
    "applies to the new generation; uploads in flight keep the old cap";
const RELOAD_STORE: &str = "applies to the new generation: new uploads follow the new layout; \
                            uploads in flight finish in the old one; existing images stay \
                            readable where they are";
const RELOAD_BACKENDS: &str = "applies to the new generation; a reload that removes a backend \
                               still holding images fails, naming it, and changes nothing";
const RELOAD_DATABASE: &str =
    "applies to the new generation (the old one keeps its connection while it drains)";
const RELOAD_DRAIN: &str = "bounds the drain of the generation this reload replaces";
const RELOAD_HANDOFF: &str = "the new value decides how the reload that reads it drains the \
                              generation it replaces";
const RELOAD_STRATEGY: &str = "the new value decides how the reload that reads it replaces the \
                               children";
const RELOAD_STATE_FILE: &str = "the master writes the new file and removes the old one";
const RELOAD_FLAVOR: &str = "applies to the new generation; requests in flight finish in the \
                             old pipeline while it drains";
const RELOAD_CACHE: &str = "applies to the new generation; the old keeps its value while it \
                            drains (both may share the cache folder)";
const RELOAD_LOG: &str = "the master and the new generation log to the new destination; \
                          draining children keep the old one";
const RELOAD_AUTH: &str = "the token file is read again while the config loads (an unreadable or \
                           empty one fails the reload); the new generation checks the new \
                           tokens, the old one keeps its own while it drains";

const RELOAD_KEYSTONE: &str = "applies to the new generation, which authenticates anew and starts \
                               with an empty token cache; the old one keeps its settings and cache \
                               while it drains; with a keystone flavor, a missing or bad value \
                               fails the reload";
const RELOAD_FORMAT: &str = "applies to the new generation; uploads and requests in flight keep \
                             the old value";
const RELOAD_POLICY: &str = "the policy file is read again while the config loads (a bad one \
                             fails the reload); the new generation enforces the new policy, the \
                             old one keeps its own while it drains";

/// Every option glint reads, in the order `--check-config` and the docs list them.
pub static OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        section: "DEFAULT",
        name: "bind_host",
        kind: Kind::Host,
        default: DefaultValue::Text("0.0.0.0"),
        on_reload: RELOAD_LISTENER,
        doc: "Address to listen on: an IPv4 or IPv6 literal (`::` for all IPv6 addresses) or `localhost`.",
        apply: |draft, value| {
            if let Value::Host(host) = value {
                draft.bind_host = host;
            }
        },
        show: |config| vec![config.bind_host.clone()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "bind_port",
        kind: Kind::Integer { min: 0, max: 65535, zero_means_min: None },
        default: DefaultValue::Text("9292"),
        on_reload: RELOAD_LISTENER,
        doc: "TCP port to listen on; 0 picks a free port (for tests).",
        apply: |draft, value| {
            if let Some(port) = value.integer::<u16>() {
                draft.bind_port = port;
            }
        },
        show: |config| vec![config.bind_port.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "workers",
        kind: Kind::Integer {
            min: 1,
            max: 256,
            zero_means_min: Some(
                "0 asks Glance to serve in the parent process, but glint always serves from \
                 children; using 1 worker. Set workers = 1 to silence this warning",
            ),
        },
        default: DefaultValue::Derived("number of CPUs, at most 8"),
        on_reload: RELOAD_WORKERS,
        doc: "Number of child processes serving requests. 0 is read as 1, with a warning.",
        apply: |draft, value| {
            if let Some(n_workers) = value.integer::<usize>() {
                draft.workers = n_workers;
            }
        },
        show: |config| vec![config.workers.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "worker_threads",
        kind: Kind::Integer { min: 1, max: 1024, zero_means_min: None },
        default: DefaultValue::Text("16"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: the most worker threads per child, so the number of requests one child serves at once; a child starts them as connections need them.",
        apply: |draft, value| {
            if let Some(n_threads) = value.integer::<usize>() {
                draft.worker_threads = n_threads;
            }
        },
        show: |config| vec![config.worker_threads.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "backlog",
        kind: Kind::Integer { min: 1, max: 65535, zero_means_min: None },
        default: DefaultValue::Text("4096"),
        on_reload: RELOAD_BACKLOG,
        doc: "Length of the listen queue; the kernel caps it at net.core.somaxconn.",
        apply: |draft, value| {
            if let Some(backlog) = value.integer::<i32>() {
                draft.backlog = backlog;
            }
        },
        show: |config| vec![config.backlog.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "max_client_connections",
        kind: Kind::Integer { min: 1, max: 1_048_576, zero_means_min: None },
        default: DefaultValue::Text("4096"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own (nginx's worker_connections): connections one child holds open at once, idle, waiting for a head or being served; at the limit the child stops accepting and leaves new connections in the backlog for the other children.",
        apply: |draft, value| {
            if let Some(n_connections) = value.integer::<usize>() {
                draft.max_client_connections = n_connections;
            }
        },
        show: |config| vec![config.max_client_connections.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "client_socket_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: true },
        default: DefaultValue::Text("900"),
        on_reload: RELOAD_GENERATION,
        doc: "How long an idle keep-alive connection stays open between requests once its credentials were accepted (a connection that never authenticated, or was refused with 401, waits `client_header_timeout`); 0 keeps it open for ever.",
        apply: |draft, value| {
            if let Value::Seconds(timeout) = value {
                draft.client_socket_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(config.client_socket_timeout)],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "client_header_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("60"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: time allowed to receive a whole request head (request line and headers), and a whole JSON request body (image create and update).",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.client_header_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.client_header_timeout))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "client_body_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("60"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: longest stall allowed while reading a request body (an upload).",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.client_body_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.client_body_timeout))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "client_send_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("60"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: longest stall allowed while writing a response (a download).",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.client_send_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.client_send_timeout))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "client_send_min_rate",
        kind: Kind::Integer { min: 0, max: i64::MAX, zero_means_min: None },
        default: DefaultValue::Text("1024"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: least average rate of a response, in bytes a second since it began, counted once `client_send_timeout` has passed; a client reading slower is disconnected. 0 turns the rule off (the stall timeout still applies).",
        apply: |draft, value| {
            if let Some(rate) = value.integer::<u64>() {
                draft.client_send_min_rate = rate;
            }
        },
        show: |config| vec![config.client_send_min_rate.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "http_keepalive",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        on_reload: RELOAD_GENERATION,
        doc: "Keep connections open between requests; when false every response closes its connection.",
        apply: |draft, value| {
            if let Value::Bool(keepalive) = value {
                draft.http_keepalive = keepalive;
            }
        },
        show: |config| vec![config.http_keepalive.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "max_header_line",
        kind: Kind::Integer { min: 256, max: 1_048_576, zero_means_min: None },
        default: DefaultValue::Text("16384"),
        on_reload: RELOAD_GENERATION,
        doc: "Longest request line or header line in bytes; a longer one fails the request.",
        apply: |draft, value| {
            if let Some(bytes) = value.integer::<usize>() {
                draft.max_header_line = bytes;
            }
        },
        show: |config| vec![config.max_header_line.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "tcp_keepidle",
        kind: Kind::Seconds { max: MAX_TCP_KEEPIDLE_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("600"),
        on_reload: RELOAD_GENERATION,
        doc: "Idle time before the kernel sends TCP keep-alive probes on a client connection (TCP_KEEPIDLE).",
        apply: |draft, value| {
            if let Value::Seconds(Some(idle)) = value {
                draft.tcp_keepidle = idle;
            }
        },
        show: |config| vec![show_seconds(Some(config.tcp_keepidle))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "graceful_shutdown_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: true },
        default: DefaultValue::Text("60"),
        on_reload: RELOAD_DRAIN,
        doc: "How long draining children may take before the master kills them; 0 waits for ever.",
        apply: |draft, value| {
            if let Value::Seconds(timeout) = value {
                draft.graceful_shutdown_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(config.graceful_shutdown_timeout)],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "reload_handoff",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        on_reload: RELOAD_HANDOFF,
        doc: "glint's own: at a reload, draining children hand their idle keep-alive connections (with any bytes already read) to the new generation instead of closing them.",
        apply: |draft, value| {
            if let Value::Bool(handoff) = value {
                draft.reload_handoff = handoff;
            }
        },
        show: |config| vec![config.reload_handoff.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "reload_strategy",
        kind: Kind::Choice {
            accepted: &["parallel", "rolling"],
            refusal: "a reload strategy (parallel: the whole generation at once; rolling: one child at a time)",
        },
        default: DefaultValue::Text("parallel"),
        on_reload: RELOAD_STRATEGY,
        doc: "glint's own: `parallel` forks the whole new generation, then drains the old one (up to twice `workers` for a drain); `rolling` replaces one child at a time, so at most `workers` + 1 children ever run.",
        apply: |draft, value| {
            if let Value::Choice(name) = value {
                draft.reload_strategy = if name == "rolling" {
                    ReloadStrategy::Rolling
                } else {
                    ReloadStrategy::Parallel
                };
            }
        },
        show: |config| vec![config.reload_strategy.name().to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "pid_file",
        kind: Kind::File { optional: false, relative_to: RelativeTo::ConfigFolder },
        default: DefaultValue::Text("/run/glint/glint-api.pid"),
        on_reload: RELOAD_STATE_FILE,
        doc: "glint's own: file holding the master's process id.",
        apply: |draft, value| {
            if let Value::Path(Some(path)) = value {
                draft.pid_file = path;
            }
        },
        show: |config| vec![show_path(Some(&config.pid_file))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "status_file",
        kind: Kind::File { optional: false, relative_to: RelativeTo::ConfigFolder },
        default: DefaultValue::Derived("beside `pid_file`: `<pid file name without extension>.status.json`"),
        on_reload: RELOAD_STATE_FILE,
        doc: "glint's own: JSON file where the master reports its generations and children.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.status_file = path;
            }
        },
        show: |config| vec![show_path(Some(&config.status_file))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "log_file",
        kind: Kind::File { optional: true, relative_to: RelativeTo::LogDir },
        default: DefaultValue::Derived("none: log to stderr"),
        on_reload: RELOAD_LOG,
        doc: "File to log to; a relative path is taken from `log_dir` when set.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.log_file = path;
            }
        },
        show: |config| vec![show_path(config.log_file.as_deref())],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "log_dir",
        kind: Kind::Folder { optional: true },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_LOG,
        doc: "Folder for a relative `log_file`.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.log_dir = path;
            }
        },
        show: |config| vec![show_path(config.log_dir.as_deref())],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "use_stderr",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_LOG,
        doc: "Also log to stderr when `log_file` is set.",
        apply: |draft, value| {
            if let Value::Bool(use_stderr) = value {
                draft.use_stderr = use_stderr;
            }
        },
        show: |config| vec![config.use_stderr.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "debug",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_LOG,
        doc: "Log at debug level instead of info.",
        apply: |draft, value| {
            if let Value::Bool(debug) = value {
                draft.debug = debug;
            }
        },
        show: |config| vec![config.debug.to_string()],
    },
    // Issue 14, part 6: where access lines go, and syslog as oslo.log sends to it.
    OptionSpec {
        section: "DEFAULT",
        name: "access_log",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        on_reload: RELOAD_LOG,
        doc: "glint's own: `false` writes no access lines at all (one `INFO` line per response).",
        apply: |draft, value| {
            if let Value::Bool(access_log) = value {
                draft.access_log = access_log;
            }
        },
        show: |config| vec![config.access_log.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "access_log_file",
        kind: Kind::File { optional: true, relative_to: RelativeTo::LogDir },
        default: DefaultValue::Derived("none: access lines go into the main log"),
        on_reload: RELOAD_LOG,
        doc: "glint's own: file for access lines alone (a relative path is taken from `log_dir` when set); \
              reopened on SIGUSR1 like `log_file`.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.access_log_file = path;
            }
        },
        show: |config| vec![show_path(config.access_log_file.as_deref())],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "access_log_healthcheck",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_LOG,
        doc: "glint's own: also write access lines for `GET`/`HEAD /healthcheck`, which load balancers probe often.",
        apply: |draft, value| {
            if let Value::Bool(healthcheck) = value {
                draft.access_log_healthcheck = healthcheck;
            }
        },
        show: |config| vec![config.access_log_healthcheck.to_string()],
    },
    // Issue 13: an access line's write(2) cost a quarter of a metadata request's CPU time.
    OptionSpec {
        section: "DEFAULT",
        name: "access_log_flush_ms",
        kind: Kind::Integer { min: 0, max: 60_000, zero_means_min: None },
        default: DefaultValue::Text("50"),
        on_reload: RELOAD_LOG,
        doc: "glint's own: a child writes its access lines in batches of up to 4 KiB (`PIPE_BUF`), each at most this many milliseconds after its first line, and at once when another record follows in the same log, the log is reopened (SIGUSR1) or the child exits; 0 writes each line at once. A child killed by SIGKILL (the OOM killer; the master's SIGINT stop, or its kill at `graceful_shutdown_timeout`) loses at most this long's access lines. Test `logs::access_lines_are_written_in_full_batches_and_by_a_draining_child_before_it_exits`.",
        apply: |draft, value| {
            if let Some(flush) = value.integer::<u64>() {
                draft.access_log_flush_ms = flush;
            }
        },
        show: |config| vec![config.access_log_flush_ms.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "use_syslog",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_LOG,
        doc: "Also send every record to the local syslog socket `/dev/log` (RFC 3164, tag `glint-api[PID]`); \
              starting, or a reload that turns it on, fails when nothing listens there.",
        apply: |draft, value| {
            if let Value::Bool(use_syslog) = value {
                draft.use_syslog = use_syslog;
            }
        },
        show: |config| vec![config.use_syslog.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "syslog_log_facility",
        kind: Kind::SyslogFacility,
        default: DefaultValue::Text("LOG_USER"),
        on_reload: RELOAD_LOG,
        doc: "Syslog facility of the records when `use_syslog` is on.",
        apply: |draft, value| {
            if let Value::Choice(name) = value {
                draft.syslog_log_facility = name;
            }
        },
        show: |config| vec![config.syslog_log_facility.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "public_endpoint",
        kind: Kind::Url,
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_GENERATION,
        doc: "Base URL clients reach glint at, for example behind a proxy; used in the links glint returns.",
        apply: |draft, value| {
            if let Value::Url(url) = value {
                draft.public_endpoint = url;
            }
        },
        show: |config| vec![config.public_endpoint.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "image_size_cap",
        kind: Kind::Integer { min: 1, max: i64::MAX, zero_means_min: None },
        default: DefaultValue::Text("1099511627776"),
        on_reload: RELOAD_UPLOAD_LIMIT,
        doc: "Largest image in bytes (default 1 TiB); a larger upload fails with 413.",
        apply: |draft, value| {
            if let Some(bytes) = value.integer::<u64>() {
                draft.image_size_cap = bytes;
            }
        },
        show: |config| vec![config.image_size_cap.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "image_metadata_size_cap",
        kind: Kind::Integer { min: MIN_METADATA_SIZE_CAP, max: MAX_METADATA_SIZE_CAP, zero_means_min: None },
        default: DefaultValue::Text("262144"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: largest JSON document of one image's metadata in bytes (what `GET /v2/images/{id}` returns: attributes, tags and custom properties; default 256 KiB); a create, update or tag that would make an image's document larger gets 413, an edit that does not grow it is allowed. It bounds what one image costs wherever it is served (see docs/RELIABILITY.md, \"Memory of a child\"). Glance limits only counts (`image_property_quota`, `image_tag_quota`: 128 each), which let one image reach 8 MiB.",
        apply: |draft, value| {
            if let Some(bytes) = value.integer::<usize>() {
                draft.image_metadata_size_cap = bytes;
            }
        },
        show: |config| vec![config.image_metadata_size_cap.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "image_member_quota",
        kind: Kind::Integer { min: -1, max: i64::MAX, zero_means_min: None },
        default: DefaultValue::Text("128"),
        on_reload: RELOAD_GENERATION,
        doc: "Most members (projects an image is shared with) one image may have; -1 means no limit. One more is refused with 413.",
        apply: |draft, value| {
            if let Some(quota) = value.integer::<i64>() {
                draft.image_member_quota = usize::try_from(quota).ok();
            }
        },
        show: |config| vec![config.image_member_quota.map_or("-1".to_string(), |quota| quota.to_string())],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "hashing_algorithm",
        kind: Kind::Choice {
            accepted: HASH_ALGORITHM_NAMES,
            refusal: "a hashing algorithm glint offers",
        },
        default: DefaultValue::Text("sha512"),
        on_reload: RELOAD_GENERATION,
        doc: "Algorithm of an image's `os_hash_value`, computed while it uploads (the md5 `checksum` is always computed too). Existing images keep the hash they were stored with.",
        apply: |draft, value| {
            if let Value::Choice(name) = value {
                if let Some(algorithm) = HashAlgorithm::from_name(name) {
                    draft.hashing_algorithm = algorithm;
                }
            }
        },
        show: |config| vec![config.hashing_algorithm.name().to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "limit_param_default",
        kind: Kind::Integer { min: 1, max: MAX_API_LIMIT, zero_means_min: None },
        default: DefaultValue::Text("25"),
        on_reload: RELOAD_GENERATION,
        doc: "Page size of a list request that gives no `limit`; at most `api_limit_max`.",
        apply: |draft, value| {
            if let Some(limit) = value.integer::<usize>() {
                draft.limit_param_default = limit;
            }
        },
        show: |config| vec![config.limit_param_default.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "api_limit_max",
        kind: Kind::Integer { min: 1, max: MAX_API_LIMIT, zero_means_min: None },
        default: DefaultValue::Text("1000"),
        on_reload: RELOAD_GENERATION,
        doc: "Largest page a list request gets; a larger `limit` is lowered to it.",
        apply: |draft, value| {
            if let Some(limit) = value.integer::<usize>() {
                draft.api_limit_max = limit;
            }
        },
        show: |config| vec![config.api_limit_max.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "auth_strategy",
        kind: Kind::AuthStrategy,
        default: DefaultValue::Text("noauth"),
        on_reload: RELOAD_AUTH,
        doc: "Who may use the API. `noauth`: anyone who reaches the listener (keep it on a trusted address, such as 127.0.0.1; on any other `bind_host` glint warns at start, at each reload and in `--check-config`). `token`: every request but `/healthcheck`, `/` and `/versions` must carry an `X-Auth-Token` listed in `auth_token_file`, else 401. Keystone validation comes with a keystone `[paste_deploy] flavor`; `keystone` here is accepted only together with such a flavor, and any other value with one is an error.",
        apply: |draft, value| {
            if let Value::Choice(name) = value {
                draft.auth_strategy = name;
            }
        },
        show: |config| vec![config.auth_strategy.name().to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "auth_token_file",
        kind: Kind::File { optional: true, relative_to: RelativeTo::ConfigFolder },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_AUTH,
        doc: "glint's own: the tokens of `auth_strategy = token`, one per line (`#` comments and blank lines ignored). Required under `token`; keep it private (0600): glint warns when every user can read it.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.auth_token_file = path;
            }
        },
        show: |config| vec![show_path(config.auth_token_file.as_deref())],
    },
    OptionSpec {
        section: "glance_store",
        name: "filesystem_store_datadir",
        kind: Kind::Folder { optional: false },
        default: DefaultValue::Text("/var/lib/glance/images"),
        on_reload: RELOAD_STORE,
        doc: "Folder holding the image files (Glance's default folder). Setting it together with `filesystem_store_datadirs` is an error.",
        apply: |draft, value| {
            if let Value::Path(Some(path)) = value {
                draft.filesystem_store_datadir = path;
            }
        },
        show: |config| match config.datadirs.as_slice() {
            [only] if only.priority == 0 => vec![show_path(Some(&only.path))],
            _ => Vec::new(),
        },
    },
    OptionSpec {
        section: "glance_store",
        name: "filesystem_store_datadirs",
        kind: Kind::DataDirs,
        default: DefaultValue::Derived("none: `filesystem_store_datadir` with priority 0"),
        on_reload: RELOAD_STORE,
        doc: "Several image folders: repeat the key, one `PATH:PRIORITY` per line, split on the last `:` (a path holding `:` needs a priority). The priority is an integer, 0 when left out; uploads go to the highest priority with room.",
        apply: |draft, value| {
            if let Value::DataDir(datadir) = value {
                draft.datadirs.push(datadir);
            }
        },
        show: |config| match config.datadirs.as_slice() {
            [only] if only.priority == 0 => Vec::new(),
            datadirs => datadirs
                .iter()
                .map(|datadir| format!("{}:{}", datadir.path.display(), datadir.priority))
                .collect(),
        },
    },
    OptionSpec {
        section: "glance_store",
        name: "filesystem_store_file_perm",
        kind: Kind::FileMode,
        default: DefaultValue::Text("0"),
        on_reload: RELOAD_STORE,
        doc: "Octal mode of new image files, such as `0640`; the owner must keep read permission. 0 means glint's default, 0640: image files are never world-readable unless the operator asks.",
        apply: |draft, value| {
            if let Value::FileMode(mode) = value {
                draft.filesystem_store_file_perm = if mode == 0 { DEFAULT_FILE_PERM } else { mode };
            }
        },
        show: |config| vec![format!("{:04o}", config.filesystem_store_file_perm)],
    },
    OptionSpec {
        section: "glance_store",
        name: "default_store",
        kind: Kind::Choice {
            accepted: &["file"],
            refusal: "available: glint stores images on the filesystem only",
        },
        default: DefaultValue::Text("file"),
        on_reload: RELOAD_STORE,
        doc: "Accepted so that Glance's files load; glint stores images on the filesystem only, so `file` is the only value.",
        apply: |_, _| {},
        show: |_| vec!["file".to_string()],
    },
    OptionSpec {
        section: "glance_store",
        name: "stores",
        kind: Kind::StoreList,
        default: DefaultValue::Text("file"),
        on_reload: RELOAD_STORE,
        doc: "Accepted so that Glance's files load; the list must include `file`. Other stores (`http`, ...) draw one warning and are not served.",
        apply: |_, _| {},
        show: |_| vec!["file".to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "enabled_backends",
        kind: Kind::List,
        default: DefaultValue::Derived("none: one store, `[glance_store]`'s folders"),
        on_reload: RELOAD_BACKENDS,
        doc: "Several stores, as Glance names them: `ID:TYPE, ...`, such as `fast:file, cheap:file`. Each id needs a section `[ID]` with `filesystem_store_datadir` (or `filesystem_store_datadirs`), and may set `store_description` and `weight`; only the `file` type is served, ids starting with `os_glance_` are refused, and `[glance_store] default_backend` is required. Unset, glint has one store and images have no `stores` attribute.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.enabled_backends = items;
            }
        },
        show: |config| match &config.backends {
            Some(backends) => vec![backends
                .list
                .iter()
                .map(|backend| format!("{}:file", backend.id))
                .collect::<Vec<_>>()
                .join(", ")],
            None => Vec::new(),
        },
    },
    OptionSpec {
        section: "DEFAULT",
        name: "enabled_import_methods",
        kind: Kind::List,
        default: DefaultValue::Text("[glance-direct,web-download,copy-image]"),
        on_reload: RELOAD_GENERATION,
        doc: "Interoperable import methods, as Glance's list (`[glance-direct,web-download]`) or a plain comma list. glint serves `glance-direct`, `web-download` (filtered by `[import_filtering_opts]`) and `copy-image` (which needs `enabled_backends`); the others are not offered (`GET /v2/info/import` leaves them out) and, when this file names them, draw a warning. Without `glance-direct`, `PUT /v2/images/{id}/stage` answers 404.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.enabled_import_methods = items;
            }
        },
        show: |config| vec![format!("[{}]", config.import_methods.join(","))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "node_staging_uri",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Text("file:///tmp/staging/"),
        on_reload: RELOAD_GENERATION,
        doc: "Where `PUT /v2/images/{id}/stage` keeps data until its import: `file://` and an absolute folder, created at the first stage if missing. Every glint process on the host must see the same folder.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.node_staging_uri = text.unwrap_or_default();
            }
        },
        show: |config| vec![format!("file://{}", config.staging_dir.display())],
    },
    OptionSpec {
        section: "glance_store",
        name: "default_backend",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_BACKENDS,
        doc: "With `enabled_backends`: the id of the backend an upload goes to when it names none (`X-Image-Meta-Store`). Required then; ignored with a warning otherwise.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.default_backend = text;
            }
        },
        show: |config| match &config.backends {
            Some(backends) => vec![backends.default.clone()],
            None => Vec::new(),
        },
    },
    OptionSpec {
        section: "database",
        name: "connection",
        kind: Kind::DatabaseUrl,
        default: DefaultValue::Text("sqlite:////var/lib/glint/glint.sqlite"),
        on_reload: RELOAD_DATABASE,
        doc: "Database holding image metadata: a SQLite file, `sqlite:///RELATIVE/PATH` (relative to the config folder) or `sqlite:////ABSOLUTE/PATH`, for one node; or PostgreSQL, `postgresql://USER:PASSWORD@HOST:PORT/DATABASE` (also Glance's `postgresql+psycopg2://` form; libpq's `?name=value` parameters allowed), shared by several nodes (docs/SCALE-OUT.md). Other databases are refused. The password is never shown.",
        apply: |draft, value| {
            if let Value::Database(database) = value {
                draft.database = database;
            }
        },
        show: |config| match &config.database {
            Database::Sqlite(path) => vec![format!("sqlite:///{}", path.display())],
            Database::Postgres(uri) => vec![crate::registry::sql::redact_password(uri)],
        },
    },
    OptionSpec {
        section: "database",
        name: "max_pool_size",
        kind: Kind::Integer { min: 1, max: 64, zero_means_min: None },
        default: DefaultValue::Text("4"),
        on_reload: RELOAD_DATABASE,
        doc: "As oslo.db's (whose default is 5): the most connections to the database each child keeps open; a request beyond them waits for one. Each SQLite connection may cache 2,000 KiB (docs/RELIABILITY.md, \"Memory of a child\"). SQLite admits one writer at a time anyway, so more help only concurrent readers; with PostgreSQL the database serves children times nodes times this many.",
        apply: |draft, value| {
            if let Value::Integer(size) = value {
                draft.max_pool_size = usize::try_from(size).unwrap_or(1);
            }
        },
        show: |config| vec![config.max_pool_size.to_string()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "node_name",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("the machine's host name, up to its first dot"),
        on_reload: RELOAD_DATABASE,
        doc: "glint's own: this node's name among the nodes that share a registry on PostgreSQL (docs/SCALE-OUT.md): 1 to 63 letters, digits and `-`, different on every node. The uploads and imports a node runs are recorded under its name, so that the others recover them only once its lease expires. Unused with SQLite.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.node_name = text;
            }
        },
        show: |config| vec![config.node_name.clone()],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "node_lease_time",
        kind: Kind::Integer { min: 15, max: 3600, zero_means_min: None },
        default: DefaultValue::Text("30"),
        on_reload: RELOAD_DATABASE,
        doc: "glint's own, with a registry on PostgreSQL: seconds a node stays alive for the other nodes after its last renewal (each child renews it every 5 s). An upload or import held by a node that stopped is recovered by the others once this has passed. At least 15. Unused with SQLite.",
        apply: |draft, value| {
            if let Value::Integer(seconds) = value {
                draft.node_lease_time = Duration::from_secs(seconds.unsigned_abs());
            }
        },
        show: |config| vec![config.node_lease_time.as_secs().to_string()],
    },
    OptionSpec {
        section: "paste_deploy",
        name: "flavor",
        kind: Kind::Flavor,
        default: DefaultValue::Derived("empty: no image cache"),
        on_reload: RELOAD_FLAVOR,
        doc: "The request pipeline, as Glance's paste flavors: empty for none, `caching` to serve downloads through the image cache, `cachemanagement` to add the cache API (`/v2/cache`); `keystone`, `keystone+caching` and `keystone+cachemanagement` put Keystone token validation first (`[keystone_authtoken]`, see \"Access control\").",
        apply: |draft, value| {
            if let Value::Flavor { keystone, cache } = value {
                draft.keystone_flavor = keystone;
                draft.flavor = cache;
            }
        },
        show: |config| {
            let cache = config.flavor.name();
            let name = match (&config.auth_strategy, cache) {
                (AuthStrategy::Keystone(_), "") => "keystone".to_string(),
                (AuthStrategy::Keystone(_), cache) => format!("keystone+{cache}"),
                _ => cache.to_string(),
            };
            vec![name]
        },
    },
    OptionSpec {
        section: "image_cache",
        name: "image_cache_dir",
        kind: Kind::Folder { optional: false },
        default: DefaultValue::Text("/var/lib/glance/image-cache"),
        on_reload: RELOAD_CACHE,
        doc: "Folder of the image cache (used with flavor `caching` or `cachemanagement`), best on a fast local disk; every child shares it. It is created at start or reload if missing.",
        apply: |draft, value| {
            if let Value::Path(Some(path)) = value {
                draft.image_cache_dir = path;
            }
        },
        show: |config| vec![show_path(Some(&config.image_cache_dir))],
    },
    OptionSpec {
        section: "image_cache",
        name: "image_cache_max_size",
        kind: Kind::Integer { min: 0, max: i64::MAX, zero_means_min: None },
        default: DefaultValue::Text("10737418240"),
        on_reload: RELOAD_CACHE,
        doc: "Bytes the image cache may hold (default 10 GiB); after each new entry the least recently used entries are removed until the total fits. An image larger than this is never cached.",
        apply: |draft, value| {
            if let Some(bytes) = value.integer::<u64>() {
                draft.image_cache_max_size = bytes;
            }
        },
        show: |config| vec![config.image_cache_max_size.to_string()],
    },
    OptionSpec {
        section: "image_cache",
        name: "image_cache_stall_time",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("86400"),
        on_reload: RELOAD_CACHE,
        doc: "An unfinished cache entry older than this is removed when a child starts, even if its writer still runs (a writer that is gone is cleaned up at once).",
        apply: |draft, value| {
            if let Value::Seconds(Some(stall)) = value {
                draft.image_cache_stall_time = stall;
            }
        },
        show: |config| vec![show_seconds(Some(config.image_cache_stall_time))],
    },    OptionSpec {
        section: "keystone_authtoken",
        name: "www_authenticate_uri",
        kind: Kind::Url,
        default: DefaultValue::Derived("`auth_uri`, else `auth_url`"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The public Keystone URL a 401 names in `WWW-Authenticate: Keystone uri=\"...\"`, where clients get tokens.",
        apply: |draft, value| {
            if let Value::Url(url) = value {
                draft.keystone.www_authenticate_uri = url;
            }
        },
        show: |config| vec![config.keystone_authtoken.www_authenticate_uri.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "auth_uri",
        kind: Kind::Url,
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The deprecated name of `www_authenticate_uri` (a warning asks to rename it); used only when that is unset.",
        apply: |draft, value| {
            if let Value::Url(url) = value {
                draft.keystone.auth_uri = url;
            }
        },
        show: |config| vec![config.keystone_authtoken.auth_uri.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "auth_url",
        kind: Kind::Url,
        default: DefaultValue::Derived("none; required by a keystone flavor"),
        on_reload: RELOAD_KEYSTONE,
        doc: "Keystone's URL for glint's own password authentication, with or without `/v3` (glint appends it; `/v2.0` is refused). Tokens are validated at the identity endpoint of the service catalog (`interface`, `region_name`), or here if the catalog has none.",
        apply: |draft, value| {
            if let Value::Url(url) = value {
                draft.keystone.auth_url = url;
            }
        },
        show: |config| vec![config.keystone_authtoken.auth_url.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "auth_type",
        kind: Kind::Choice {
            accepted: &["password", "v3password"],
            refusal: "an auth plugin glint has (it authenticates itself with a password)",
        },
        default: DefaultValue::Text("password"),
        on_reload: RELOAD_KEYSTONE,
        doc: "keystoneauth's plugin for glint's own token: `password` (or its alias `v3password`), the only one glint has.",
        apply: |draft, value| {
            if let Value::Choice(name) = value {
                draft.keystone.auth_type = name;
            }
        },
        show: |config| vec![config.keystone_authtoken.auth_type.to_string()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "username",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "glint's service user (required by a keystone flavor unless `user_id` is set); a user given by name needs `user_domain_name` or `user_domain_id`.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.username = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.username.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "user_id",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The service user's id, instead of `username` (an id wins when both are set).",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.user_id = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.user_id.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "password",
        kind: Kind::Text { secret: true },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The service user's password (required by a keystone flavor). Never logged; `--check-config` shows only that it is set.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.password = text.map(Secret::new);
            }
        },
        show: |config| config.keystone_authtoken.password.iter().map(|secret| secret.expose().to_string()).collect(),
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "user_domain_name",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The domain of `username`, such as `Default`.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.user_domain_name = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.user_domain_name.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "user_domain_id",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The domain of `username` by id, such as `default` (wins over `user_domain_name`).",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.user_domain_id = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.user_domain_id.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "project_name",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The project glint's own token is scoped to, such as `service` (required by a keystone flavor unless `project_id` is set); needs `project_domain_name` or `project_domain_id`.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.project_name = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.project_name.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "project_id",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The project of glint's own token by id, instead of `project_name`.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.project_id = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.project_id.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "project_domain_name",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The domain of `project_name`, such as `Default`.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.project_domain_name = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.project_domain_name.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "project_domain_id",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The domain of `project_name` by id (wins over `project_domain_name`).",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.project_domain_id = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.project_domain_id.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "region_name",
        kind: Kind::Text { secret: false },
        default: DefaultValue::Derived("none"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The region of the identity endpoint taken from the service catalog; unset, any region.",
        apply: |draft, value| {
            if let Value::Text(text) = value {
                draft.keystone.region_name = text;
            }
        },
        show: |config| vec![config.keystone_authtoken.region_name.clone().unwrap_or_default()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "interface",
        kind: Kind::Choice {
            accepted: &["internal", "public", "admin"],
            refusal: "a catalog interface",
        },
        default: DefaultValue::Text("internal"),
        on_reload: RELOAD_KEYSTONE,
        doc: "The interface of the identity endpoint taken from the service catalog for validations.",
        apply: |draft, value| {
            if let Value::Choice(name) = value {
                draft.keystone.interface = name;
            }
        },
        show: |config| vec![config.keystone_authtoken.interface.to_string()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "service_token_roles",
        kind: Kind::List,
        default: DefaultValue::Text("service"),
        on_reload: RELOAD_KEYSTONE,
        doc: "Roles (any of them) that make a valid `X-Service-Token` a service token, which lets the request's user token be expired (Keystone's `allow_expired`). Compared without case.",
        apply: |draft, value| {
            if let Value::List(roles) = value {
                draft.keystone.service_token_roles = roles;
            }
        },
        show: |config| vec![config.keystone_authtoken.service_token_roles.join(",")],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "service_token_roles_required",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_KEYSTONE,
        doc: "true: an `X-Service-Token` without one of `service_token_roles` is refused (401). false (keystonemiddleware's default, deprecated there): any valid token is accepted as `X-Service-Token`, but only one with such a role allows an expired user token.",
        apply: |draft, value| {
            if let Value::Bool(required) = value {
                draft.keystone.service_token_roles_required = required;
            }
        },
        show: |config| vec![config.keystone_authtoken.service_token_roles_required.to_string()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "token_cache_time",
        kind: Kind::Integer { min: -1, max: MAX_TIMEOUT_SECONDS as i64, zero_means_min: None },
        default: DefaultValue::Text("300"),
        on_reload: RELOAD_KEYSTONE,
        doc: "Seconds a child keeps a token's successful validation (never longer than the token's `expires_at`); so a revoked token is accepted for at most this long. -1 or 0: every request is validated with Keystone.",
        apply: |draft, value| {
            if let Value::Integer(seconds) = value {
                draft.keystone.token_cache_time = seconds;
            }
        },
        show: |config| vec![config.keystone_authtoken.token_cache_time.to_string()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "cafile",
        kind: Kind::File { optional: true, relative_to: RelativeTo::ConfigFolder },
        default: DefaultValue::Derived("none: the built-in Mozilla roots"),
        on_reload: RELOAD_KEYSTONE,
        doc: "PEM file of the CA certificates to trust for an https Keystone. Read while the config loads (with a keystone flavor): a file that cannot be read or holds no certificate fails the start or the reload.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.keystone.cafile = path;
            }
        },
        show: |config| vec![show_path(config.keystone_authtoken.cafile.as_deref())],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "insecure",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_KEYSTONE,
        doc: "true: do not verify Keystone's https certificate (tests only: anyone on the path can then read the tokens).",
        apply: |draft, value| {
            if let Value::Bool(insecure) = value {
                draft.keystone.insecure = insecure;
            }
        },
        show: |config| vec![config.keystone_authtoken.insecure.to_string()],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "http_connect_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("5"),
        on_reload: RELOAD_KEYSTONE,
        doc: "Longest wait for one connection to Keystone (TCP and TLS); at most `http_request_timeout`. keystonemiddleware has no default (the kernel's, about 2 minutes); glint's is 5 s.",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.keystone.http_connect_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.keystone_authtoken.http_connect_timeout))],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "http_request_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("10"),
        on_reload: RELOAD_KEYSTONE,
        doc: "glint's own: the longest one client request waits for Keystone, all its calls and retries included (glint's own token, the validations); past it the request gets 503.",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.keystone.http_request_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.keystone_authtoken.http_request_timeout))],
    },
    OptionSpec {
        section: "keystone_authtoken",
        name: "http_request_max_retries",
        kind: Kind::Integer { min: 0, max: 10, zero_means_min: None },
        default: DefaultValue::Text("3"),
        on_reload: RELOAD_KEYSTONE,
        doc: "How many times a call to Keystone is tried again, at once, after its connection failed (refused, reset, connect timeout), within `http_request_timeout`. An answer that is late is not retried.",
        apply: |draft, value| {
            if let Some(retries) = value.integer::<u32>() {
                draft.keystone.http_request_max_retries = retries;
            }
        },
        show: |config| vec![config.keystone_authtoken.http_request_max_retries.to_string()],
    },
    OptionSpec {
        section: "oslo_policy",
        name: "policy_file",
        kind: Kind::File { optional: false, relative_to: RelativeTo::ConfigFolder },
        default: DefaultValue::Text("policy.yaml"),
        on_reload: RELOAD_POLICY,
        doc: "The policy file: rules that override Glance's defaults, as JSON or one `name: check` per line (see \"Policy\"). A relative path is relative to the config file's folder. The default file may be missing (Glance's defaults apply); a file set here must exist. A rule that does not parse fails the load with the policy file's line.",
        apply: |draft, value| {
            if let Value::Path(Some(path)) = value {
                draft.policy_file = path;
            }
        },
        show: |config| config.policy_file.as_deref().map(|path| show_path(Some(path))).into_iter().collect(),
    },
    OptionSpec {
        section: "oslo_policy",
        name: "enforce_new_defaults",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        on_reload: RELOAD_POLICY,
        doc: "`false` ORs each rule's deprecated (legacy) check string into its default, as oslo.policy does: most image rules then allow everyone, unless the policy file sets `default`. Rules the policy file sets are taken as written.",
        apply: |draft, value| {
            if let Value::Bool(flag) = value {
                draft.enforce_new_defaults = flag;
            }
        },
        show: |config| vec![config.policy.enforce_new_defaults().to_string()],
    },
    OptionSpec {
        section: "oslo_policy",
        name: "enforce_scope",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        on_reload: RELOAD_POLICY,
        doc: "A token scoped to the system or a domain fails every image rule (they are for project-scoped tokens) before its check is looked at. `false` judges such tokens by the rules' checks.",
        apply: |draft, value| {
            if let Value::Bool(flag) = value {
                draft.enforce_scope = flag;
            }
        },
        show: |config| vec![config.policy.enforce_scope().to_string()],
    },
    OptionSpec {
        section: "image_format",
        name: "disk_formats",
        kind: Kind::List,
        default: DefaultValue::Text("ami,ari,aki,vhd,vhdx,vmdk,raw,qcow2,vdi,iso,ploop"),
        on_reload: RELOAD_FORMAT,
        doc: "The values an image's `disk_format` may take; any other is refused (400) on create and patch, as Glance's image schema does. Names glint does not know are never accepted.",
        apply: |draft, value| {
            if let Value::List(formats) = value {
                draft.image_format.disk_formats = formats;
            }
        },
        show: |config| vec![config.image_format.disk_formats.join(",")],
    },
    OptionSpec {
        section: "image_format",
        name: "container_formats",
        kind: Kind::List,
        default: DefaultValue::Text("ami,ari,aki,bare,ovf,ova,docker,compressed"),
        on_reload: RELOAD_FORMAT,
        doc: "The values an image's `container_format` may take; any other is refused (400) on create and patch, as Glance's image schema does. Names glint does not know are never accepted.",
        apply: |draft, value| {
            if let Value::List(formats) = value {
                draft.image_format.container_formats = formats;
            }
        },
        show: |config| vec![config.image_format.container_formats.join(",")],
    },
    OptionSpec {
        section: "image_format",
        name: "require_image_format_match",
        kind: Kind::Bool,
        default: DefaultValue::Text("true"),
        on_reload: RELOAD_FORMAT,
        doc: "Refuse an upload (415, the image stays `queued`, nothing is stored) whose data is not the format its `disk_format` says, including a qcow2, vmdk, vhd, vhdx or iso declared `raw`. `false` accepts it without a `virtual_size`; the safety checks still refuse unsafe data.",
        apply: |draft, value| {
            if let Value::Bool(flag) = value {
                draft.image_format.rules.require_format_match = flag;
            }
        },
        show: |config| vec![config.image_format.rules.require_format_match.to_string()],
    },
    OptionSpec {
        section: "image_format",
        name: "vmdk_allowed_types",
        kind: Kind::List,
        default: DefaultValue::Text("streamOptimized,monolithicSparse"),
        on_reload: RELOAD_FORMAT,
        doc: "The vmdk `createType`s an upload may have (compared with case). Other types keep their data in extents that are other files of the host, and are refused.",
        apply: |draft, value| {
            if let Value::List(types) = value {
                draft.image_format.rules.vmdk_allowed_types = types;
            }
        },
        show: |config| vec![config.image_format.rules.vmdk_allowed_types.join(",")],
    },
    OptionSpec {
        section: "image_format",
        name: "gpt_safety_checks_nonfatal",
        kind: Kind::List,
        default: DefaultValue::Text("mbr"),
        on_reload: RELOAD_FORMAT,
        doc: "Safety checks of a partitioned raw disk that only log a warning when they fail (the one check is `mbr`: a sane MBR or protective MBR). Empty: a failed check refuses the upload.",
        apply: |draft, value| {
            if let Value::List(checks) = value {
                draft.image_format.rules.gpt_nonfatal_checks = checks;
            }
        },
        show: |config| vec![config.image_format.rules.gpt_nonfatal_checks.join(",")],
    },
    // [import_filtering_opts] and the timeouts of web-download (issue 12), kept together here.
    OptionSpec {
        section: "import_filtering_opts",
        name: "allowed_schemes",
        kind: Kind::List,
        default: DefaultValue::Text("[http,https]"),
        on_reload: RELOAD_GENERATION,
        doc: "The URI schemes `web-download` may fetch (`POST /v2/images/{id}/import`, and every redirect it follows). When set, `disallowed_schemes` is ignored, as in Glance. glint fetches only `http` and `https`: another scheme allowed here fails the import. Test `import::web_download_of_a_served_qcow2_turns_the_image_active`.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.web_download.allowed_schemes = items;
            }
        },
        show: |config| vec![config.web_download.allowed_schemes.join(",")],
    },
    OptionSpec {
        section: "import_filtering_opts",
        name: "disallowed_schemes",
        kind: Kind::List,
        default: DefaultValue::Text(""),
        on_reload: RELOAD_GENERATION,
        doc: "The URI schemes `web-download` refuses; used only while `allowed_schemes` is empty.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.web_download.disallowed_schemes = items;
            }
        },
        show: |config| vec![config.web_download.disallowed_schemes.join(",")],
    },
    OptionSpec {
        section: "import_filtering_opts",
        name: "allowed_hosts",
        kind: Kind::List,
        default: DefaultValue::Text(""),
        on_reload: RELOAD_GENERATION,
        doc: "The hosts `web-download` may fetch from, IP addresses (in their shortest form, `::1`) or lower-case host names, compared exactly with the URI's host as Glance compares them; empty allows every host. A host name in a URI must resolve, and numeric forms other than a plain dotted IPv4 address (`2130706433`, `127.1`, `0x7f.1`) are refused whatever the lists say. When set, `disallowed_hosts` is ignored.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.web_download.allowed_hosts = items;
            }
        },
        show: |config| vec![config.web_download.allowed_hosts.join(",")],
    },
    OptionSpec {
        section: "import_filtering_opts",
        name: "disallowed_hosts",
        kind: Kind::List,
        default: DefaultValue::Text(""),
        on_reload: RELOAD_GENERATION,
        doc: "The hosts `web-download` refuses, written as for `allowed_hosts`; used only while `allowed_hosts` is empty.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.web_download.disallowed_hosts = items;
            }
        },
        show: |config| vec![config.web_download.disallowed_hosts.join(",")],
    },
    OptionSpec {
        section: "import_filtering_opts",
        name: "allowed_ports",
        kind: Kind::List,
        default: DefaultValue::Text("[80,443]"),
        on_reload: RELOAD_GENERATION,
        doc: "The ports `web-download` may fetch from, as Glance checks them: only a port the URI writes out (`http://host:8080/`) is checked, so `http://host/` passes whatever the lists say. When set, `disallowed_ports` is ignored. Test `import::web_download_refused_by_the_default_ports_is_a_400_and_the_image_stays_queued`.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.web_download.allowed_ports = items;
            }
        },
        show: |config| vec![config.web_download.allowed_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")],
    },
    OptionSpec {
        section: "import_filtering_opts",
        name: "disallowed_ports",
        kind: Kind::List,
        default: DefaultValue::Text(""),
        on_reload: RELOAD_GENERATION,
        doc: "The ports `web-download` refuses; used only while `allowed_ports` is empty (`allowed_ports =`).",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.web_download.disallowed_ports = items;
            }
        },
        show: |config| vec![config.web_download.disallowed_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "web_download_connect_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("30"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: longest wait of a `web-download` for a host name's lookup and for each connection (TCP and TLS), the first and each redirect's; a longer wait fails the import.",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.web_download.connect_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.web_download.connect_timeout))],
    },
    OptionSpec {
        section: "DEFAULT",
        name: "web_download_read_timeout",
        kind: Kind::Seconds { max: MAX_TIMEOUT_SECONDS, zero_means_never: false },
        default: DefaultValue::Text("60"),
        on_reload: RELOAD_GENERATION,
        doc: "glint's own: longest stall of a `web-download` while it sends its request, waits for the answer or reads the data; a longer stall fails the import. It bounds how long a stalled download holds a draining child. Test `import::a_web_download_that_stalls_fails_after_the_read_timeout`.",
        apply: |draft, value| {
            if let Value::Seconds(Some(timeout)) = value {
                draft.web_download.read_timeout = timeout;
            }
        },
        show: |config| vec![show_seconds(Some(config.web_download.read_timeout))],
    },
    // [metrics]: glint's own section (issue 14, part 4), kept together here.
    OptionSpec {
        section: "metrics",
        name: "bind_host",
        kind: Kind::Host,
        default: DefaultValue::Text("127.0.0.1"),
        on_reload: RELOAD_METRICS,
        doc: "glint's own: address of the Prometheus metrics listener (`GET /metrics`). Only used when `bind_port` is set.",
        apply: |draft, value| {
            if let Value::Host(host) = value {
                draft.metrics.bind_host = host;
            }
        },
        show: |config| vec![config.metrics.bind_host.clone()],
    },
    OptionSpec {
        section: "metrics",
        name: "bind_port",
        kind: Kind::Integer { min: 0, max: 65535, zero_means_min: None },
        default: DefaultValue::Derived("unset: no metrics listener"),
        on_reload: RELOAD_METRICS,
        doc: "glint's own: TCP port of the Prometheus metrics listener; setting it turns metrics on (off by default). Must differ from the API's `bind_port` (the config is refused otherwise; 0 for both is fine, each gets a free port), unit test `config::tests::the_metrics_listener_has_a_port_of_its_own`.",
        apply: |draft, value| {
            if let Some(port) = value.integer::<u16>() {
                draft.metrics.bind_port = Some(port);
            }
        },
        show: |config| config.metrics.bind_port.map(|port| port.to_string()).into_iter().collect(),
    },
    OptionSpec {
        section: "healthcheck",
        name: "backends",
        kind: Kind::List,
        default: DefaultValue::Text("disable_by_file"),
        on_reload: RELOAD_GENERATION,
        doc: "oslo.middleware's healthcheck backends that decide `/healthcheck`'s answer: `disable_by_file` (the default here, as Glance's paste pipeline loads it) and `disable_by_files_ports`; others are warned about and left out. Empty: `/healthcheck` always answers 200 with an empty body, as oslo.middleware does.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.healthcheck.backends = Some(items);
            }
        },
        show: |config| {
            let mut names = Vec::new();
            if config.healthcheck.by_file {
                names.push("disable_by_file");
            }
            if config.healthcheck.by_port.is_some() {
                names.push("disable_by_files_ports");
            }
            vec![names.join(",")]
        },
    },
    OptionSpec {
        section: "healthcheck",
        name: "disable_by_file_path",
        kind: Kind::File { optional: true, relative_to: RelativeTo::ConfigFolder },
        default: DefaultValue::Derived("unset: nothing disables the node (Glance's paste file sets /etc/glance/healthcheck_disable)"),
        on_reload: RELOAD_GENERATION,
        doc: "While this file exists, `GET /healthcheck` answers 503 `DISABLED BY FILE` (HEAD: 503, no body), so a load balancer stops sending new requests to the node before it is stopped or upgraded; checked at every health check, so creating or removing the file takes effect at once. A relative path is taken from the config file's folder. Tests `healthcheck::a_disable_file_takes_the_node_out_and_its_removal_puts_it_back` and `healthcheck::per_port_files_apply_to_their_port_and_come_with_a_reload`.",
        apply: |draft, value| {
            if let Value::Path(path) = value {
                draft.healthcheck.disable_by_file_path = path;
            }
        },
        show: |config| vec![show_path(config.healthcheck.disable_by_file.as_deref())],
    },
    OptionSpec {
        section: "healthcheck",
        name: "disable_by_file_paths",
        kind: Kind::List,
        default: DefaultValue::Text(""),
        on_reload: RELOAD_GENERATION,
        doc: "For the `disable_by_files_ports` backend: `PORT:PATH` items; a health check that arrives on listening port PORT answers 503 `DISABLED BY FILE` while PATH exists. A malformed item is an error naming it.",
        apply: |draft, value| {
            if let Value::List(items) = value {
                draft.healthcheck.disable_by_file_paths = items;
            }
        },
        show: |config| {
            vec![config
                .healthcheck
                .by_port
                .iter()
                .flatten()
                .map(|(port, path)| format!("{port}:{}", path.display()))
                .collect::<Vec<_>>()
                .join(",")]
        },
    },
    OptionSpec {
        section: "healthcheck",
        name: "detailed",
        kind: Kind::Bool,
        default: DefaultValue::Text("false"),
        on_reload: RELOAD_GENERATION,
        doc: "oslo.middleware's detailed output (threads, platform, garbage collector) is never shown by glint; `true` draws a warning.",
        apply: |draft, value| {
            if let Value::Bool(detailed) = value {
                draft.healthcheck.detailed = detailed;
            }
        },
        show: |_| vec!["false".to_string()],
    },
    OptionSpec {
        section: "task",
        name: "task_time_to_live",
        // Glance's IntOpt has no bounds; glint keeps to what makes sense as an age: 0 (a
        // finished task is removed at the next maintenance pass) to 100 years.
        kind: Kind::Integer { min: 0, max: 876_000, zero_means_min: None },
        default: DefaultValue::Text("48"),
        on_reload: RELOAD_GENERATION,
        doc: "Hours a task (the record of an image import, `GET /v2/images/{id}/tasks` and `/v2/tasks`) is kept after it succeeds or fails; then it is hidden and the child's maintenance pass removes it. 0 removes a finished task at the next pass (tests `tasks::expired_tasks_are_hidden_and_removed_by_the_maintenance_pass`).",
        apply: |draft, value| {
            if let Some(hours) = value.integer::<u64>() {
                draft.task_time_to_live_hours = hours;
            }
        },
        show: |config| vec![config.task_time_to_live_hours.to_string()],
    },
];

/// Sections of glance-api.conf that glint does not read yet: they get a milder warning than an
/// unknown section. A section leaves this list's effect as soon as `OPTIONS` has an option in it.
pub static GLANCE_SECTIONS: &[&str] = &[
    "barbican",
    "cors",
    "image_import_opts",
    "key_manager",
    "os_brick",
    "profiler",
    "store_type_location_strategy",
    "taskflow_executor",
    "wsgi",
];

/// Whether a section belongs to Glance (listed above or one of oslo's `[oslo_*]` sections).
pub(super) fn is_glance_section(section: &str) -> bool {
    GLANCE_SECTIONS.contains(&section) || section.starts_with("oslo_")
}

/// The option in `section` called `name`, if glint has one.
pub(super) fn find(section: &str, name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|spec| {
        spec.name == name && (spec.section == section || also_read_from(spec) == Some(section))
    })
}

/// Options read from a second section too: Glance registers the image cache's options in
/// `[DEFAULT]` (glance/image_cache/__init__.py), where a glance-api.conf sets them, while
/// glint's own files have used `[image_cache]`. Both are read; setting one in both is an
/// error, since neither reading could be the one the operator meant.
pub const ALSO_READ_FROM: &[(&str, &str, &str)] = &[
    ("image_cache", "image_cache_dir", "DEFAULT"),
    ("image_cache", "image_cache_max_size", "DEFAULT"),
    ("image_cache", "image_cache_stall_time", "DEFAULT"),
];

/// The second section `spec` is read from, if any (see [`ALSO_READ_FROM`]).
pub fn also_read_from(spec: &OptionSpec) -> Option<&'static str> {
    ALSO_READ_FROM
        .iter()
        .find(|(section, name, _)| *section == spec.section && *name == spec.name)
        .map(|(_, _, also)| *also)
}

/// The known option nearest to `name` (edit distance at most 2), preferring `section`.
pub(super) fn suggest(section: &str, name: &str) -> Option<&'static OptionSpec> {
    OPTIONS
        .iter()
        .map(|spec| {
            (
                edit_distance(spec.name, name),
                spec.section != section,
                spec,
            )
        })
        .filter(|(distance, _, _)| *distance <= 2)
        .min_by_key(|(distance, elsewhere, _)| (*distance, *elsewhere))
        .map(|(_, _, spec)| spec)
}

/// The known section nearest to `section`, ignoring case (edit distance at most 2).
pub(super) fn suggest_section(section: &str) -> Option<&'static str> {
    let lowered = section.to_ascii_lowercase();
    OPTIONS
        .iter()
        .map(|spec| spec.section)
        .map(|known| (edit_distance(&known.to_ascii_lowercase(), &lowered), known))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Parses one value of `kind`. `config_folder` anchors relative paths.
pub(super) fn parse(kind: &Kind, text: &str, config_folder: &Path) -> Result<Parsed, String> {
    let text = strip_quotes(text.trim());
    if text.contains('\n') {
        return Err(
            "the value continues on an indented line below it; a value must fit on one \
                    line: unindent the next line if it is an option, or start it at column 1 \
                    if it is a comment"
                .to_string(),
        );
    }
    let plain = |value| Parsed {
        value,
        warning: None,
    };
    match *kind {
        Kind::Bool => parse_bool(text).map(|flag| plain(Value::Bool(flag))),
        Kind::Integer {
            min,
            max,
            zero_means_min,
        } => {
            let number = parse_integer(text, min, max, zero_means_min.is_some())?;
            match zero_means_min {
                Some(warning) if number == 0 => Ok(Parsed {
                    value: Value::Integer(min),
                    warning: Some(warning.to_string()),
                }),
                _ => Ok(plain(Value::Integer(number))),
            }
        }
        Kind::Seconds {
            max,
            zero_means_never,
        } => parse_seconds(text, max, zero_means_never).map(|secs| plain(Value::Seconds(secs))),
        Kind::Host => parse_host(text).map(|host| plain(Value::Host(host))),
        Kind::File {
            optional,
            relative_to,
        } => {
            let path = parse_path(text, optional, true)?;
            let path = match relative_to {
                RelativeTo::ConfigFolder => path.map(|path| resolve(config_folder, &path)),
                // Resolved by the loader once log_dir is known.
                RelativeTo::LogDir => path,
            };
            Ok(plain(Value::Path(path)))
        }
        Kind::Folder { optional } => {
            let path = parse_path(text, optional, false)?;
            Ok(plain(Value::Path(
                path.map(|path| resolve(config_folder, &path)),
            )))
        }
        Kind::Url => parse_url(text).map(|url| plain(Value::Url(url))),
        Kind::Choice { accepted, refusal } => {
            parse_choice(text, accepted, refusal).map(|choice| plain(Value::Choice(choice)))
        }
        Kind::DataDirs => {
            let DataDir { path, priority } = parse_datadir(text)?;
            Ok(plain(Value::DataDir(DataDir {
                path: resolve(config_folder, &path),
                priority,
            })))
        }
        Kind::FileMode => parse_file_mode(text).map(|mode| plain(Value::FileMode(mode))),
        Kind::StoreList => parse_stores(text),
        Kind::Flavor => {
            parse_flavor(text).map(|(keystone, cache)| plain(Value::Flavor { keystone, cache }))
        }
        Kind::Text { .. } => parse_text(text).map(|text| plain(Value::Text(text))),
        Kind::List => parse_list(text).map(|items| plain(Value::List(items))),
        Kind::SyslogFacility => parse_syslog_facility(text).map(|name| plain(Value::Choice(name))),
        Kind::AuthStrategy => parse_auth_strategy(text).map(|name| plain(Value::Choice(name))),
        Kind::DatabaseUrl => match parse_postgres_url(text) {
            Some(uri) => uri.map(|uri| plain(Value::Database(Database::Postgres(uri)))),
            None => {
                let path = parse_sqlite_url(text)?;
                Ok(plain(Value::Database(Database::Sqlite(resolve(
                    config_folder,
                    &path,
                )))))
            }
        },
    }
}

/// Joins a relative `path` to `folder` and drops `.` components and doubled slashes.
/// `..` is kept: removing it without looking at the filesystem could change the meaning.
pub(super) fn resolve(folder: &Path, path: &Path) -> PathBuf {
    folder
        .join(path)
        .components()
        .filter(|component| *component != Component::CurDir)
        .collect()
}

/// The options table in Markdown, as docs/OPERATIONS.md carries it between its markers.
pub fn options_markdown() -> String {
    let mut table = String::from(
        "| option | section | type | default | on SIGHUP | meaning |\n\
         |---|---|---|---|---|---|\n",
    );
    for spec in OPTIONS {
        let default = match spec.default {
            DefaultValue::Text(text) => format!("`{text}`"),
            DefaultValue::Derived(text) => text.to_string(),
        };
        let cells = [
            format!("`{}`", spec.name),
            spec.section.to_string(),
            spec.kind.describe(),
            default,
            spec.on_reload.to_string(),
            spec.doc.to_string(),
        ];
        let cells: Vec<String> = cells.iter().map(|cell| cell.replace('|', "\\|")).collect();
        table.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    table
}

impl Kind {
    /// Whether every value of a repeated key counts, instead of only the last.
    pub fn is_multi_valued(&self) -> bool {
        matches!(self, Kind::DataDirs)
    }

    /// The type column of the docs table.
    pub fn describe(&self) -> String {
        match *self {
            Kind::Bool => "boolean".to_string(),
            Kind::Integer { min, max, .. } => format!("integer, {min} to {max}"),
            Kind::Seconds {
                max,
                zero_means_never: true,
            } => {
                format!("seconds, 0 to {max}; 0 = no limit")
            }
            Kind::Seconds {
                max,
                zero_means_never: false,
            } => format!("seconds, 1 to {max}"),
            Kind::Host => "IP address or `localhost`".to_string(),
            Kind::File {
                optional: false, ..
            } => "file path".to_string(),
            Kind::File { optional: true, .. } => "file path, optional".to_string(),
            Kind::Folder { optional: true } => "folder path, optional".to_string(),
            Kind::Folder { optional: false } => "folder path".to_string(),
            Kind::DataDirs => "`PATH:PRIORITY`, repeatable: a folder and an integer".to_string(),
            Kind::FileMode => "octal file mode, 0 to 0777".to_string(),
            Kind::StoreList => "comma-separated store names, including `file`".to_string(),
            Kind::DatabaseUrl => {
                "`sqlite:///` URL of a file, or `postgresql://` URL of a database".to_string()
            }
            Kind::Flavor => {
                let named: Vec<String> = FLAVOR_NAMES
                    .iter()
                    .filter(|name| !name.is_empty())
                    .map(|name| format!("`{name}`"))
                    .collect();
                format!(
                    "empty or one of {}, each optionally after `keystone+`, or `keystone`",
                    named.join(", ")
                )
            }
            Kind::Url => "http(s) URL, optional".to_string(),
            Kind::AuthStrategy => format!("one of {}", AUTH_STRATEGY_NAMES.join(", ")),
            Kind::Text { secret: false } => "text, optional".to_string(),
            Kind::Text { secret: true } => "text, optional, secret".to_string(),
            Kind::List => "comma-separated list".to_string(),
            Kind::SyslogFacility => {
                "a syslog facility such as `LOG_USER`, `LOG_DAEMON` or `LOG_LOCAL0`..`LOG_LOCAL7`, \
                 `LOG_` optional, any case"
                    .to_string()
            }
            Kind::Choice { accepted, .. } => match accepted {
                [only] => format!("`{only}` only"),
                _ => format!("one of {}", accepted.join(", ")),
            },
        }
    }
}

impl Value {
    /// The integer converted to a field's type; the kind's range makes the conversion succeed.
    fn integer<T: TryFrom<i64>>(self) -> Option<T> {
        match self {
            Value::Integer(number) => T::try_from(number).ok(),
            _ => None,
        }
    }
}

fn show_seconds(timeout: Option<Duration>) -> String {
    timeout.map_or(0, |timeout| timeout.as_secs()).to_string()
}

fn show_path(path: Option<&Path>) -> String {
    path.map(|path| path.display().to_string())
        .unwrap_or_default()
}

/// oslo.config strips one pair of matching quotes around a value; so do we.
fn strip_quotes(text: &str) -> &str {
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return &text[1..text.len() - 1];
        }
    }
    text
}

/// A hint for values that carry a comment after them, which INI files do not allow.
fn inline_comment_hint(text: &str) -> &'static str {
    if text.contains(" #") || text.contains(" ;") || text.contains("\t#") || text.contains("\t;") {
        " (comments after a value are not supported: put the comment on a line of its own)"
    } else {
        ""
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    // The spellings oslo.config's Boolean type accepts.
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!(
            "`{text}` is not a boolean{}; use true or false (yes/no, on/off and 1/0 work too)",
            inline_comment_hint(text)
        )),
    }
}

fn parse_integer(text: &str, min: i64, max: i64, zero_allowed: bool) -> Result<i64, String> {
    let range = if zero_allowed {
        format!("from {min} to {max} (0 is read as {min})")
    } else {
        format!("from {min} to {max}")
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a decimal integer{}; use a whole number {range}",
            inline_comment_hint(text)
        ));
    }
    match text.parse::<i64>() {
        Ok(number) if (min..=max).contains(&number) || (zero_allowed && number == 0) => Ok(number),
        // Digits that overflow i64 are out of range too.
        _ => Err(format!(
            "{text} is out of range; use a whole number {range}"
        )),
    }
}

fn parse_seconds(text: &str, max: u64, zero_means_never: bool) -> Result<Option<Duration>, String> {
    let min = u64::from(!zero_means_never);
    let range = if zero_means_never {
        format!("from 0 to {max} (0 means no limit)")
    } else {
        format!("from 1 to {max}")
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a whole number of seconds{}; write the seconds without a unit, {range}",
            inline_comment_hint(text)
        ));
    }
    match text.parse::<u64>() {
        Ok(0) if zero_means_never => Ok(None),
        Ok(secs) if (min..=max).contains(&secs) => Ok(Some(Duration::from_secs(secs))),
        _ => Err(format!(
            "{text} seconds is out of range; use whole seconds {range}"
        )),
    }
}

fn parse_host(text: &str) -> Result<String, String> {
    if text.eq_ignore_ascii_case("localhost") {
        return Ok("localhost".to_string());
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(address.to_string());
    }
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'));
    if let Some(inner) = unbracketed.filter(|inner| inner.parse::<IpAddr>().is_ok()) {
        return Err(format!(
            "`{text}` has brackets; write the IPv6 address without them: {inner}"
        ));
    }
    Err(format!(
        "`{text}` is not an IP address{}; use an IPv4 or IPv6 address literal \
         (0.0.0.0 or :: for all addresses) or localhost",
        inline_comment_hint(text)
    ))
}

fn parse_path(text: &str, optional: bool, names_a_file: bool) -> Result<Option<PathBuf>, String> {
    if text.is_empty() {
        return if optional {
            Ok(None)
        } else {
            Err("is empty; give a path, or remove the line to use the default".to_string())
        };
    }
    if text.contains('\0') {
        return Err("contains a NUL byte, which no path can hold; remove it".to_string());
    }
    if names_a_file && (text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..")) {
        return Err(format!("`{text}` names a folder; give the path of a file"));
    }
    Ok(Some(PathBuf::from(text)))
}

fn parse_url(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let lowered = text.to_ascii_lowercase();
    let rest = ["http://", "https://"]
        .into_iter()
        .find(|scheme| lowered.starts_with(scheme))
        .and_then(|scheme| text.get(scheme.len()..));
    let Some(rest) = rest else {
        return Err(format!("`{text}` is not an http:// or https:// URL; write the full base URL, such as https://images.example.com:9292"));
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{text}` contains a space or control character; a URL cannot"
        ));
    }
    if rest.split('/').next().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host; write the full base URL, such as https://images.example.com:9292"));
    }
    if text.contains('?') || text.contains('#') {
        return Err(format!(
            "`{text}` has a query or fragment; give only scheme, host, port and path"
        ));
    }
    Ok(Some(text.trim_end_matches('/').to_string()))
}

fn parse_choice(
    text: &str,
    accepted: &'static [&'static str],
    refusal: &str,
) -> Result<&'static str, String> {
    if let Some(choice) = accepted
        .iter()
        .find(|choice| choice.eq_ignore_ascii_case(text))
    {
        return Ok(choice);
    }
    let choices = match accepted {
        [only] => only.to_string(),
        _ => format!("one of {}", accepted.join(", ")),
    };
    Err(format!(
        "`{text}` is not {refusal}{}; use {choices}",
        inline_comment_hint(text)
    ))
}

/// `syslog_log_facility` as oslo.log's `_find_facility` reads it: `LOG_LOCAL0`, `local0`, ...
fn parse_syslog_facility(text: &str) -> Result<&'static str, String> {
    super::syslog_facility::facility_name(text).ok_or_else(|| {
        let names: Vec<&str> = super::syslog_facility::FACILITIES
            .iter()
            .map(|(name, _)| *name)
            .collect();
        format!(
            "`{text}` is not a syslog facility{}; use one of {} (the `LOG_` may be left out, in any case)",
            inline_comment_hint(text),
            names.join(", ")
        )
    })
}

/// `auth_strategy`: `noauth`, `token`, or `keystone`, which the loader accepts only with a
/// keystone flavor (the flavor is what turns Keystone on, as in Glance).
fn parse_auth_strategy(text: &str) -> Result<&'static str, String> {
    parse_choice(text, AUTH_STRATEGY_NAMES, "an access control glint offers")
}

/// glance_store's `_get_datadir_path_and_priority`: split on the last `:`, strip both parts, an
/// empty or missing priority is 0, any other priority must be an integer.
fn parse_datadir(text: &str) -> Result<DataDir, String> {
    let (path, priority) = match text.rsplit_once(':') {
        Some((path, priority)) => (path.trim(), priority.trim()),
        None => (text, ""),
    };
    let priority = if priority.is_empty() {
        0
    } else {
        let digits = priority.strip_prefix(['-', '+']).unwrap_or(priority);
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(format!(
                "`{priority}` after the last `:` is not an integer priority{}; write PATH:PRIORITY \
                 such as /srv/images:10 (a path holding `:` needs the priority: `{text}:0`)",
                inline_comment_hint(priority)
            ));
        }
        priority.parse::<i64>().map_err(|_| {
            format!(
                "priority {priority} is out of range; use a whole number from {} to {}",
                i64::MIN,
                i64::MAX
            )
        })?
    };
    if path.is_empty() {
        return Err(format!(
            "`{text}` names no folder; write PATH:PRIORITY such as /srv/images:10"
        ));
    }
    let path = parse_path(path, false, false)?.unwrap_or_default();
    Ok(DataDir { path, priority })
}

/// glance_store reads the mode as decimal digits and takes them as octal (`int(str(perm), 8)`),
/// so `0640` and `640` are the same mode. Like glance_store, a mode the owner cannot read is
/// refused: glint could not serve its own files.
fn parse_file_mode(text: &str) -> Result<u32, String> {
    const HOW: &str = "write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default";
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not an octal file mode{}; {HOW}",
            inline_comment_hint(text)
        ));
    }
    if text.bytes().any(|byte| byte == b'8' || byte == b'9') {
        return Err(format!(
            "`{text}` is not an octal file mode (octal digits go from 0 to 7); {HOW}"
        ));
    }
    let mode = match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o777 => mode,
        _ => {
            return Err(format!(
                "{text} is out of range (setuid, setgid and sticky bits are not allowed); {HOW}"
            ))
        }
    };
    if mode != 0 && mode & 0o400 == 0 {
        return Err(format!(
            "{text} does not let the owner read the image files, so glint could not serve them; \
             add owner read (0400), as in 0640"
        ));
    }
    Ok(mode)
}

/// glance_store's `stores` list. glint serves `file` only; it must be there so that a Glance
/// file that disables the filesystem store is not silently changed.
fn parse_stores(text: &str) -> Result<Parsed, String> {
    let names: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect();
    if !names.iter().any(|name| name.eq_ignore_ascii_case("file")) {
        return Err(format!(
            "`{text}` does not include file{}; glint stores images on the filesystem: add file \
             to the list",
            inline_comment_hint(text)
        ));
    }
    let others: Vec<String> = names
        .iter()
        .filter(|name| !name.eq_ignore_ascii_case("file"))
        .map(|name| format!("`{name}`"))
        .collect();
    let warning = match others.as_slice() {
        [] => None,
        [other] => Some(format!(
            "{other} is not served by glint, which stores images on the filesystem only; \
             set stores = file to silence this warning"
        )),
        _ => Some(format!(
            "{} are not served by glint, which stores images on the filesystem only; set \
             stores = file to silence this warning",
            others.join(", ")
        )),
    };
    Ok(Parsed {
        value: Value::Stores(names),
        warning,
    })
}

/// paste_deploy's `flavor`: Glance's pipelines `caching`, `cachemanagement` and the empty one,
/// each alone or after `keystone+` (`keystone` alone is the plain pipeline with Keystone), as
/// (keystone, cache pipeline).
fn parse_flavor(text: &str) -> Result<(bool, Flavor), String> {
    let lowered = text.to_ascii_lowercase();
    let (keystone, cache) = match lowered.as_str() {
        "keystone" => (true, ""),
        other => match other.strip_prefix("keystone+") {
            Some(cache) if !cache.is_empty() => (true, cache),
            Some(_) => (true, "+"),
            None => (false, other),
        },
    };
    match Flavor::from_name(cache) {
        Some(flavor) => Ok((keystone, flavor)),
        None => Err(format!(
            "`{text}` is not a pipeline flavor glint has{}; use one of \"\" (empty, no cache), \
             caching, cachemanagement, or keystone, keystone+caching, keystone+cachemanagement \
             for the same with Keystone tokens",
            inline_comment_hint(text)
        )),
    }
}

/// A free-text value (a user, project or domain name, an id, a password): one line without
/// control characters; empty means unset.
fn parse_text(text: &str) -> Result<Option<String>, String> {
    if text.chars().any(char::is_control) {
        return Err("contains a control character; remove it".to_string());
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

/// oslo.config's ListOpt: split on commas, trim each item, drop empty ones.
fn parse_list(text: &str) -> Result<Vec<String>, String> {
    if text.chars().any(char::is_control) {
        return Err("contains a control character; remove it".to_string());
    }
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect())
}

/// SQLAlchemy's SQLite URLs: `sqlite:///` then the path, so a fourth slash makes it absolute.
/// Messages never repeat a URL that is not SQLite's: it may hold a password.
/// A PostgreSQL URL as libpq takes it (`postgresql://`), or why it is refused; None if `text`
/// does not name PostgreSQL. SQLAlchemy's driver suffix (`postgresql+psycopg2://`, as Glance
/// files have it) is dropped: libpq is the driver.
fn parse_postgres_url(text: &str) -> Option<Result<String, String>> {
    let (scheme, rest) = text.split_once("://")?;
    let engine = scheme.split_once('+').map_or(scheme, |(engine, _)| engine);
    if !(engine.eq_ignore_ascii_case("postgresql") || engine.eq_ignore_ascii_case("postgres")) {
        return None;
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some(Err(
            "has spaces or control characters; percent-encode them (%20)".to_string(),
        ));
    }
    let database = rest
        .split_once('/')
        .map_or("", |(_, path)| path.split('?').next().unwrap_or(""));
    if database.is_empty() {
        return Some(Err(format!(
            "names no database; use {engine}://USER:PASSWORD@HOST:PORT/DATABASE"
        )));
    }
    Some(Ok(format!("postgresql://{rest}")))
}

fn parse_sqlite_url(text: &str) -> Result<PathBuf, String> {
    const HOW: &str = "use sqlite:///RELATIVE/PATH (relative to the config folder) or \
                       sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE";
    let scheme = text.split_once(':').map_or("", |(scheme, _)| scheme);
    if !scheme.eq_ignore_ascii_case("sqlite") {
        let named = if scheme.is_empty() || scheme.contains(char::is_whitespace) {
            "is not a database URL".to_string()
        } else {
            format!("names a `{scheme}` database")
        };
        return Err(format!(
            "{named}; glint keeps its metadata in SQLite or PostgreSQL; {HOW}"
        ));
    }
    let rest = &text[scheme.len() + 1..];
    let Some(path) = rest.strip_prefix("///") else {
        return Err(if rest == "//" {
            format!("`{text}` is an in-memory database, which loses every image at restart; {HOW}")
        } else {
            format!("`{text}` is not a SQLite file URL; {HOW}")
        });
    };
    if path.is_empty() || path == ":memory:" {
        return Err(format!(
            "`{text}` is an in-memory database, which loses every image at restart; {HOW}"
        ));
    }
    if path.contains('?') {
        return Err(format!(
            "`{text}` has query parameters, which glint does not support; remove the `?` and \
             what follows"
        ));
    }
    match parse_path(path, false, true) {
        Ok(path) => Ok(path.unwrap_or_default()),
        Err(message) => Err(message),
    }
}

/// The number of single-character insertions, deletions and substitutions turning `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, char_a) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, char_b) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(char_a != *char_b);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The default status file: beside `pid_file`, named after it without its extension.
pub(super) fn status_file_beside(pid_file: &Path) -> PathBuf {
    let mut name: OsString = pid_file
        .file_stem()
        .map(|stem| stem.to_os_string())
        .unwrap_or_else(|| OsString::from("glint-api"));
    name.push(".status.json");
    pid_file.with_file_name(name)
}
