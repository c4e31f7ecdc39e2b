//! Configuration: reads glint's INI file (glance-api.conf's option names) into a validated,
//! immutable [`Config`].
//!
//! The master calls [`load`] at start, on every SIGHUP and for `--check-config`; a reload whose
//! file does not load changes nothing. Children receive the master's `Config` across fork and
//! never read the file. Every option lives in one table, [`OPTIONS`] (in `options.rs`), which
//! drives parsing, the unknown-option warnings, [`Config::effective_settings`] and the options
//! table in docs/OPERATIONS.md ([`options_markdown`]).
//!
//! Loading goes through two types: `RawConfig` holds what the file says (text values with their
//! lines, unknown keys included), and only [`load`] / [`load_str`] turn it into a `Config`, so
//! code downstream never checks a value again. All problems of a file are collected in one pass
//! and reported together, as `FILE:LINE: [section] option: what is wrong; what to do`.
//!
//! This module has no side effects: it creates no folder or file, binds no socket and does not
//! check that paths are writable (the master does that while applying a config, before it
//! forks), and never talks to Keystone. The files it reads besides the config are the token file
//! of `auth_strategy = token` (`tokens.rs`), with a keystone flavor `[keystone_authtoken]
//! cafile` (`keystone.rs`), and the policy file of `[oslo_policy]` (`policy.rs`): their contents
//! are part of the `Config`, so such a file that cannot be read fails the load like a bad value,
//! and a SIGHUP re-reads it.
//! It does not watch the file and knows nothing of how a reload is carried out; the `on_reload`
//! text of each option only documents it.
//!
//! # Compatibility
//!
//! Values follow oslo.config: booleans are true/false/yes/no/on/off/1/0 in any case, a repeated
//! single-valued key keeps its last value (a multi-valued one, [`Kind::is_multi_valued`], keeps
//! every value with its own line), a repeated section header continues the section, one
//! pair of matching quotes around a value is dropped, `:` separates like `=`, and an indented line
//! continues the value above it. Options and sections glint does not read are warnings, never
//! errors, so an operator's existing glance-api.conf loads.
//!
//! # Reading INI
//!
//! rust-ini (0.21) does the value parsing, with backslash escapes off (so `C:\logs` and regex-like
//! values keep their backslashes) and indented continuation lines on (off, they silently corrupt the
//! next key). It reports no line numbers for values and it folds a line without `=` (or an
//! indented comment after a blank line) into the next key's name. So `scan` walks the lines once
//! the way oslo.config's parser does: it finds each key's line, and reports the lines rust-ini
//! would misread. It also refuses a value ending in `\`, which rust-ini joins to the next line
//! even with escapes off.

mod backends;
pub mod healthcheck;
mod import_filtering;
mod keystone;
mod options;
mod policy;
mod sample;
pub mod syslog_facility;
#[cfg(test)]
mod tests;
mod tokens;

use crate::registry::Database;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::{Ini, ParseOption};

pub use backends::{Backend, Backends};
pub use import_filtering::WebDownload;
pub use keystone::{
    identity_v3_root, Domain, KeystoneAuthtoken, KeystoneSettings, Principal, Secret,
};
pub use options::{
    options_markdown, DefaultValue, Kind, OptionSpec, RelativeTo, GLANCE_SECTIONS, MAX_API_LIMIT,
    MAX_TCP_KEEPIDLE_SECONDS, MAX_TIMEOUT_SECONDS, OPTIONS,
};
pub use sample::{production_sample, PackageSetting, PACKAGE_SETTINGS, PRODUCTION_SAMPLE_PATH};
pub use tokens::{TokenFileError, Tokens};

/// A validated configuration. Only [`load`] and [`load_str`] build one; each field's doc names
/// its option, whose entry in [`OPTIONS`] says what a SIGHUP does with a new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Absolute path of the file this configuration came from.
    pub path: PathBuf,
    /// `bind_host`: an IP address literal (v4 or v6) or `localhost`.
    pub bind_host: String,
    /// `bind_port`; 0 asks the kernel for a free port.
    pub bind_port: u16,
    /// `workers`: children per generation, 1 to 256.
    pub workers: usize,
    /// `worker_threads`: request threads per child, 1 to 1024.
    pub worker_threads: usize,
    /// `backlog`: listen(2) queue length, 1 to 65535.
    pub backlog: i32,
    /// `max_client_connections`: connections one child holds open at once, 1 to 1048576.
    pub max_client_connections: usize,
    /// `client_socket_timeout`: idle keep-alive timeout; `None` keeps idle connections open.
    pub client_socket_timeout: Option<Duration>,
    /// `client_header_timeout`: time to receive a whole request head.
    pub client_header_timeout: Duration,
    /// `client_body_timeout`: longest stall while reading a request body.
    pub client_body_timeout: Duration,
    /// `client_send_timeout`: longest stall while writing a response.
    pub client_send_timeout: Duration,
    /// `client_send_min_rate`: least average bytes a second of a response (0: no rule).
    pub client_send_min_rate: u64,
    /// `http_keepalive`: whether connections may serve more than one request.
    pub http_keepalive: bool,
    /// `max_header_line`: longest request or header line in bytes.
    pub max_header_line: usize,
    /// `tcp_keepidle`: TCP_KEEPIDLE on client sockets.
    pub tcp_keepidle: Duration,
    /// `graceful_shutdown_timeout`: how long draining children may take; `None` waits for ever.
    pub graceful_shutdown_timeout: Option<Duration>,
    /// `reload_handoff`: a draining child hands its keep-alive connections to the new generation.
    pub reload_handoff: bool,
    /// `reload_strategy`: the whole new generation at once, or one child at a time.
    pub reload_strategy: ReloadStrategy,
    /// `pid_file`: absolute path of the master's pid file.
    pub pid_file: PathBuf,
    /// `status_file`: absolute path of the master's JSON status file.
    pub status_file: PathBuf,
    /// `log_file`: absolute path of the log file; `None` logs to stderr.
    pub log_file: Option<PathBuf>,
    /// `log_dir`: absolute folder that a relative `log_file` was resolved against.
    pub log_dir: Option<PathBuf>,
    /// `use_stderr`: also log to stderr when `log_file` is set.
    pub use_stderr: bool,
    /// `debug`: log at debug level.
    pub debug: bool,
    /// `access_log`: false writes no access lines.
    pub access_log: bool,
    /// `access_log_file`: absolute path of the file for access lines; `None` puts them into
    /// the main log.
    pub access_log_file: Option<PathBuf>,
    /// `access_log_healthcheck`: health checks get access lines too.
    pub access_log_healthcheck: bool,
    /// `access_log_flush_ms`: longest wait of an access line in its batch; 0 writes each at once.
    pub access_log_flush_ms: u64,
    /// `use_syslog`: also send records to `/dev/log`.
    pub use_syslog: bool,
    /// `syslog_log_facility`: the canonical name (`LOG_USER`), one of
    /// [`syslog_facility::FACILITIES`].
    pub syslog_log_facility: &'static str,
    /// `public_endpoint`: an http(s) URL without trailing `/`.
    pub public_endpoint: Option<String>,
    /// `image_size_cap`: largest image in bytes, 1 to `i64::MAX`.
    pub image_size_cap: u64,
    /// `image_metadata_size_cap`: largest JSON document of one image's metadata, in bytes,
    /// [`options::MIN_METADATA_SIZE_CAP`] to [`options::MAX_METADATA_SIZE_CAP`].
    pub image_metadata_size_cap: usize,
    /// `image_member_quota`: most members of one image; `None` (a negative value) is no limit.
    pub image_member_quota: Option<usize>,
    /// `[task] task_time_to_live`: hours a finished task is kept (see `api::tasks`).
    pub task_time_to_live_hours: u64,
    /// `hashing_algorithm`: the algorithm of new images' `os_hash_value`.
    pub hashing_algorithm: HashAlgorithm,
    /// `limit_param_default`: page size of a list request without `limit`; at most
    /// `api_limit_max`.
    pub limit_param_default: usize,
    /// `api_limit_max`: largest page size of a list request.
    pub api_limit_max: usize,
    /// `[glance_store] filesystem_store_datadirs` in file order without exact duplicates, or
    /// else one entry, `filesystem_store_datadir` with priority 0. Paths are absolute; no two
    /// entries share a path.
    pub datadirs: Vec<DataDir>,
    /// `[glance_store] filesystem_store_file_perm`: the mode of new image files, never 0 (a 0
    /// in the file gives [`DEFAULT_FILE_PERM`]) and always readable by the owner.
    pub filesystem_store_file_perm: u32,
    /// `[database] connection`: the SQLite file (an absolute path) or the PostgreSQL database
    /// holding image metadata.
    pub database: Database,
    /// `[database] max_pool_size`: the most registry connections a child keeps open.
    pub max_pool_size: usize,
    /// `[DEFAULT] node_name`: this node's name among nodes sharing a PostgreSQL registry.
    pub node_name: String,
    /// `[DEFAULT] node_lease_time`: how long a node stays alive for the others after a renewal.
    pub node_lease_time: Duration,
    /// `[paste_deploy] flavor`: the request pipeline, with or without the image cache.
    pub flavor: Flavor,
    /// `[image_cache] image_cache_dir`: absolute folder of the image cache.
    pub image_cache_dir: PathBuf,
    /// `[image_cache] image_cache_max_size`: bytes the cache may hold before it evicts.
    pub image_cache_max_size: u64,
    /// `[image_cache] image_cache_stall_time`: age after which an unfinished cache entry is
    /// removed even if its writer still runs.
    pub image_cache_stall_time: Duration,
    /// `auth_strategy`, with the tokens of `auth_token_file` when it is `token`.
    pub auth_strategy: AuthStrategy,
    /// `auth_token_file`: absolute path of the token file, if set (read only under `token`).
    pub auth_token_file: Option<PathBuf>,
    /// `[keystone_authtoken]` as the file gives it, whatever the flavor (for `--check-config`);
    /// what a keystone flavor runs on is in [`AuthStrategy::Keystone`].
    pub keystone_authtoken: KeystoneAuthtoken,
    /// `[oslo_policy] policy_file`: the absolute path of the policy file that was read; `None`
    /// when the default file does not exist, so Glance's default rules apply unchanged.
    pub policy_file: Option<PathBuf>,
    /// The policy in force: Glance's defaults, the policy file's rules over them, enforced as
    /// `[oslo_policy] enforce_new_defaults` and `enforce_scope` say. Shared, not copied, by
    /// every clone of the config.
    pub policy: std::sync::Arc<crate::policy::Policy>,
    /// `[image_format]`: the formats an image may declare and how uploads are inspected.
    pub image_format: ImageFormat,
    /// `[metrics]`: the Prometheus metrics listener.
    pub metrics: Metrics,
    /// `[DEFAULT] enabled_backends` with `[glance_store] default_backend` and each backend's
    /// section (`backends.rs`); `None` without `enabled_backends`: one unnamed store of
    /// `datadirs`, as before several stores existed.
    pub backends: Option<Backends>,
    /// `[DEFAULT] enabled_import_methods`, reduced to the methods glint serves
    /// ([`SERVED_IMPORT_METHODS`]): `GET /v2/info/import` lists exactly these.
    pub import_methods: Vec<String>,
    /// `[DEFAULT] node_staging_uri` as a folder: where `PUT /v2/images/{id}/stage` puts data.
    pub staging_dir: PathBuf,
    /// `[healthcheck]`: what `/healthcheck` answers.
    pub healthcheck: healthcheck::Healthcheck,
    /// `[import_filtering_opts]` and the timeouts of `web-download`.
    pub web_download: WebDownload,
}

/// `reload_strategy`: how a reload replaces the children.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReloadStrategy {
    /// Fork the whole new generation, then drain the old one: up to twice the workers for the
    /// length of a drain.
    #[default]
    Parallel,
    /// Replace one child at a time (start one new, drain one old, wait for it to exit): at most
    /// `workers + 1` children ever run.
    Rolling,
}

impl ReloadStrategy {
    /// The name in the config file.
    pub fn name(&self) -> &'static str {
        match self {
            ReloadStrategy::Parallel => "parallel",
            ReloadStrategy::Rolling => "rolling",
        }
    }
}

/// `[paste_deploy] flavor`, less its `keystone` part: which request pipeline a generation
/// serves, as Glance's paste pipelines `glance-api`, `glance-api-caching` and
/// `glance-api-cachemanagement`. The `keystone` part (`keystone+caching`...) makes the access
/// control [`AuthStrategy::Keystone`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flavor {
    /// No cache: downloads read the store.
    #[default]
    Plain,
    /// Downloads go through the image cache.
    Caching,
    /// The image cache plus the cache API under `/v2/cache`.
    CacheManagement,
}

/// The flavors glint accepts, as the config file spells them.
pub const FLAVOR_NAMES: &[&str] = &["", "caching", "cachemanagement"];

impl Flavor {
    /// The name in the config file (`""` for the plain pipeline).
    pub fn name(&self) -> &'static str {
        match self {
            Flavor::Plain => "",
            Flavor::Caching => "caching",
            Flavor::CacheManagement => "cachemanagement",
        }
    }

    /// The flavor called `name` (lowercase), if glint has it.
    pub fn from_name(name: &str) -> Option<Flavor> {
        [Flavor::Plain, Flavor::Caching, Flavor::CacheManagement]
            .into_iter()
            .find(|flavor| flavor.name() == name)
    }

    /// Whether downloads go through the image cache.
    pub fn uses_cache(&self) -> bool {
        !matches!(self, Flavor::Plain)
    }

    /// Whether the pipeline authenticates requests itself (Glance's keystone flavors), so that
    /// `auth_strategy = noauth` does not leave the API open. Every arm is spelled out, so that
    /// a new flavor has to answer.
    pub fn authenticates(&self) -> bool {
        match self {
            Flavor::Plain | Flavor::Caching | Flavor::CacheManagement => false,
        }
    }
}

/// Who may use the API: `auth_strategy`, or Keystone when `[paste_deploy] flavor` starts with
/// `keystone`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStrategy {
    /// Anyone who reaches the listener may do anything, as in Glance's `noauth` (the default).
    NoAuth,
    /// Every request but health check and version discovery must carry an `X-Auth-Token` from
    /// `auth_token_file`; the tokens were read when the config loaded.
    Token(Tokens),
    /// Every request but health check and version discovery must carry an `X-Auth-Token` that
    /// Keystone validates, as keystonemiddleware's auth_token does (`crate::keystone`).
    Keystone(std::sync::Arc<KeystoneSettings>),
}

/// The names of `auth_strategy`'s accepted values, as the config file spells them.
pub const AUTH_STRATEGY_NAMES: &[&str] = &["noauth", "token", "keystone"];

impl AuthStrategy {
    /// The name as the config file spells it.
    pub fn name(&self) -> &'static str {
        match self {
            AuthStrategy::NoAuth => "noauth",
            AuthStrategy::Token(_) => "token",
            AuthStrategy::Keystone(_) => "keystone",
        }
    }
}

/// One folder images are stored in, from `[glance_store]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    /// Absolute folder path.
    pub path: PathBuf,
    /// Uploads go to the highest priority that has room; may be negative.
    pub priority: i64,
}

/// The mode of image files when `filesystem_store_file_perm` is 0: never world-readable unless
/// the operator asks for it.
pub const DEFAULT_FILE_PERM: u32 = 0o640;

/// The algorithms `hashing_algorithm` accepts: the SHA-2 family, as Glance's `os_hash_algo`
/// names them. Glance accepts any hashlib name; glint refuses weak or unusual ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    #[default]
    Sha512,
}

/// The names of [`HashAlgorithm`]'s variants, as the config file and `os_hash_algo` spell them.
pub const HASH_ALGORITHM_NAMES: &[&str] = &["sha256", "sha384", "sha512"];

impl HashAlgorithm {
    /// Every algorithm, in the order of [`HASH_ALGORITHM_NAMES`].
    pub const ALL: [HashAlgorithm; 3] = [
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
    ];

    /// The lowercase name, as in the config file and in an image's `os_hash_algo`.
    pub fn name(&self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// The algorithm called `name` (lowercase), if glint offers it.
    pub fn from_name(name: &str) -> Option<HashAlgorithm> {
        HashAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration that loaded, with the warnings to log (each formatted like a [`Problem`]).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

impl Loaded {
    /// What to tell the operator about this config, at start, at a reload and in
    /// `--check-config`: the file's warnings, then [`Config::exposure_warning`].
    pub fn every_warning(&self) -> Vec<String> {
        let mut warnings = self.warnings.clone();
        warnings.extend(self.config.exposure_warning());
        warnings
    }
}

/// Why a file was refused: every problem found in it, in line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// One problem in a config file. Displays as `FILE:LINE: [section] option: message`, leaving
/// out the parts that are unknown; the message says what is wrong, then what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub section: Option<String>,
    pub option: Option<String>,
    pub message: String,
}

/// Reads and validates the config file at `path` (made absolute first).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let (file, text) = read_file(path)?;
    load_str(&text, &file)
}

/// Where a running server keeps its pid and status files, and its drain bound, as far as a
/// config file tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFiles {
    pub pid_file: PathBuf,
    pub status_file: PathBuf,
    pub graceful_shutdown_timeout: Option<Duration>,
}

impl ServerFiles {
    pub fn of(config: &Config) -> ServerFiles {
        ServerFiles {
            pid_file: config.pid_file.clone(),
            status_file: config.status_file.clone(),
            graceful_shutdown_timeout: config.graceful_shutdown_timeout,
        }
    }
}

/// Reads the [`ServerFiles`] from the config file at `path`, even when other options in it are
/// invalid: `glint-api stop` and `status` must find a server whose file an operator is in the
/// middle of editing. Refuses the file when it cannot be read, when a problem is about
/// `pid_file` or `status_file`, or when a problem names no option (a line the reader could not
/// make sense of might have been either). An invalid `graceful_shutdown_timeout` reads as its
/// default. This is no [`Config`]: nothing runs on it.
pub fn load_server_files(path: &Path) -> Result<ServerFiles, ConfigError> {
    let (file, text) = read_file(path)?;
    let mut report = Report::new(file.clone());
    let raw = RawConfig::read(&text, &mut report);
    let config = build(&raw, &file, &mut report);
    // A problem in another file (the policy file's rules) cannot be about the pid or status
    // file, whatever it names.
    let blocking: Vec<Problem> = report
        .errors
        .into_iter()
        .filter(|problem| {
            problem.file == file
                && matches!(
                    problem.option.as_deref(),
                    None | Some("pid_file") | Some("status_file")
                )
        })
        .collect();
    if blocking.is_empty() {
        Ok(ServerFiles::of(&config))
    } else {
        Err(ConfigError { problems: blocking })
    }
}

/// Reads a file the loader needs (the config file, the token file; the master's pid file too)
/// without ever blocking: the master loads configs inside its loop, and opening a FIFO, or reading a device, would stop
/// it. The file is opened with `O_NONBLOCK` (so opening a FIFO does not wait for a writer) and
/// anything but a regular file is refused.
pub fn read_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(std::io::Error::other(format!(
            "it is {kind}, not a regular file (reading it could block the server)"
        )));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The absolute path of the config file at `path`, and its text.
fn read_file(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    let file = absolute(path)?;
    let bytes = match read_regular_file(&file) {
        Ok(bytes) => bytes,
        Err(error) => {
            return Err(ConfigError::single(Problem::about_file(
                file,
                None,
                format!("cannot read the config file: {error}; check --config-file"),
            )))
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok((file, text)),
        Err(error) => {
            let valid_up_to = error.utf8_error().valid_up_to();
            let bytes = error.into_bytes();
            let line = 1 + bytes[..valid_up_to].iter().filter(|&&b| b == b'\n').count();
            Err(ConfigError::single(Problem::about_file(
                file,
                Some(line),
                format!(
                    "the file is not UTF-8 text (bad byte at offset {valid_up_to}); \
                     save it as UTF-8"
                ),
            )))
        }
    }
}

/// Validates config text as if read from `path`, which names the file in messages and anchors
/// relative paths (it is made absolute first). Nothing else is read from the filesystem, except
/// the token file when the text sets `auth_strategy = token`, the keystone `cafile`, and the
/// policy file (`policy.yaml` beside `path` unless `[oslo_policy] policy_file` says otherwise).
pub fn load_str(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let file = absolute(path)?;
    let mut report = Report::new(file.clone());
    let raw = RawConfig::read(text, &mut report);
    let config = build(&raw, &file, &mut report);
    report.finish(config)
}

impl Config {
    /// The address to bind, `HOST:PORT`, with an IPv6 host in brackets.
    pub fn listen_address(&self) -> String {
        match self.bind_host.parse::<IpAddr>() {
            Ok(IpAddr::V6(address)) => format!("[{address}]:{}", self.bind_port),
            _ => format!("{}:{}", self.bind_host, self.bind_port),
        }
    }

    /// The warning for an open API on a network: `auth_strategy = noauth` without a flavor
    /// that authenticates, on a `bind_host` that is not a loopback address ([`is_loopback`]),
    /// so anyone who reaches the address may read, upload, change and delete every image.
    /// `None` when the API is closed or only this host can reach it.
    pub fn exposure_warning(&self) -> Option<String> {
        if !matches!(self.auth_strategy, AuthStrategy::NoAuth)
            || self.flavor.authenticates()
            || is_loopback(&self.bind_host)
        {
            return None;
        }
        let keystone = if FLAVOR_NAMES.iter().any(|name| name.starts_with("keystone")) {
            ", or [paste_deploy] flavor = keystone with [keystone_authtoken]"
        } else {
            ""
        };
        let problem = Problem {
            file: self.path.clone(),
            line: None,
            section: Some("DEFAULT".to_string()),
            option: Some("auth_strategy".to_string()),
            message: format!(
                "NO AUTHENTICATION on a non-loopback address: auth_strategy is noauth and \
                 bind_host is {}, so anyone who can reach {} may read, upload, change and \
                 delete every image; set auth_strategy = token with an auth_token_file{keystone}, \
                 or bind_host = 127.0.0.1 to serve this host only",
                self.bind_host,
                self.listen_address()
            ),
        };
        Some(problem.to_string())
    }

    /// Every option with its effective value, in the file's own syntax, for `--check-config`.
    /// Loading this text gives back the same settings, except secrets (`[keystone_authtoken]
    /// password`), which it only says are set.
    pub fn effective_settings(&self) -> String {
        let mut settings = String::new();
        let mut current_section: Option<&str> = None;
        for spec in OPTIONS {
            if current_section != Some(spec.section) {
                if current_section.is_some() {
                    settings.push('\n');
                }
                settings.push_str(&format!("[{}]\n", spec.section));
                current_section = Some(spec.section);
            }
            let values = (spec.show)(self);
            if matches!(spec.kind, Kind::Text { secret: true }) && !values.is_empty() {
                settings.push_str(&format!("# {} is set (not shown)\n", spec.name));
                continue;
            }
            if values.is_empty() {
                settings.push_str(&format!("# {} is not set\n", spec.name));
            }
            for value in values {
                if value.is_empty() {
                    settings.push_str(&format!("{} =\n", spec.name));
                } else {
                    settings.push_str(&format!("{} = {value}\n", spec.name));
                }
            }
        }
        settings
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(section) = &self.section {
            write!(f, "[{section}] ")?;
        }
        if let Some(option) = &self.option {
            write!(f, "{option}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn single(problem: Problem) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl Problem {
    fn about_file(file: PathBuf, line: Option<usize>, message: String) -> Problem {
        Problem {
            file,
            line,
            section: None,
            option: None,
            message,
        }
    }
}

/// The config path made absolute without touching the filesystem.
fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|error| {
        ConfigError::single(Problem::about_file(
            path.to_path_buf(),
            None,
            format!("cannot make the config file's path absolute: {error}; check --config-file"),
        ))
    })
}

/// Whether `bind_host` (as the loader keeps it: an IP address literal or `localhost`) reaches
/// this host only: `localhost`, 127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`. Decided without a
/// name lookup, so the master never blocks on it; any other name counts as reachable from
/// elsewhere.
pub fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(address)) => address.is_loopback(),
        Ok(IpAddr::V6(address)) => {
            address.is_loopback()
                || address
                    .to_ipv4_mapped()
                    .is_some_and(|mapped| mapped.is_loopback())
        }
        Err(_) => false,
    }
}

/// Collects the errors and warnings of one load, so that all of them are reported at once.
struct Report {
    /// The absolute path of the file, named by every problem.
    file: PathBuf,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Report {
    fn new(file: PathBuf) -> Report {
        Report {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn problem(
        &self,
        line: Option<usize>,
        section: Option<&str>,
        option: Option<&str>,
        message: String,
    ) -> Problem {
        Problem {
            file: self.file.clone(),
            line,
            section: section.map(str::to_string),
            option: option.map(str::to_string),
            message,
        }
    }

    fn error(
        &mut self,
        line: Option<usize>,
        section: Option<&str>,
        option: Option<&str>,
        message: String,
    ) {
        let problem = self.problem(line, section, option, message);
        self.errors.push(problem);
    }

    fn warning(
        &mut self,
        line: Option<usize>,
        section: Option<&str>,
        option: Option<&str>,
        message: String,
    ) {
        let problem = self.problem(line, section, option, message);
        self.warnings.push(problem);
    }

    /// The config if nothing was wrong, else every error; both lists in line order.
    fn finish(mut self, config: Config) -> Result<Loaded, ConfigError> {
        // A stable sort keeps problems of one line in the order they were found; problems
        // about the whole file (no line) come first.
        self.errors.sort_by_key(|problem| problem.line.unwrap_or(0));
        self.warnings
            .sort_by_key(|problem| problem.line.unwrap_or(0));
        if self.errors.is_empty() {
            Ok(Loaded {
                config,
                warnings: self.warnings.iter().map(Problem::to_string).collect(),
            })
        } else {
            Err(ConfigError {
                problems: self.errors,
            })
        }
    }
}

/// What the file says, unchecked: sections in order of first appearance (a repeated header
/// continues its section), keys in order of first appearance, every value of a repeated key.
#[derive(Debug, Default)]
struct RawConfig {
    sections: Vec<RawSection>,
}

#[derive(Debug)]
struct RawSection {
    name: String,
    /// Line of the section's first header.
    line: Option<usize>,
    entries: Vec<RawEntry>,
}

#[derive(Debug)]
struct RawEntry {
    key: String,
    /// Every value given to the key, in file order; single-valued options use the last.
    values: Vec<RawValue>,
}

#[derive(Debug)]
struct RawValue {
    text: String,
    /// The line of the `key = value` line; `None` only when rust-ini and `scan` disagree.
    line: Option<usize>,
}

/// Where sections and keys sit in the file, as found by [`scan`].
#[derive(Debug, Default)]
struct Layout {
    /// Each section with the line of its first header.
    section_lines: Vec<(String, usize)>,
    /// The lines of every `key = value` of a section, in file order.
    key_lines: HashMap<(String, String), Vec<usize>>,
}

impl RawConfig {
    /// Reads the text, reporting syntax errors with their lines.
    fn read(text: &str, report: &mut Report) -> RawConfig {
        // A byte-order mark would otherwise become part of the first section or key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let n_errors_before = report.errors.len();
        let layout = scan(text, report);
        let structure_ok = report.errors.len() == n_errors_before;

        let parse_option = ParseOption {
            // oslo.config strips a pair of quotes only when they enclose the whole value;
            // `options::parse` does that. rust-ini's quotes would also span lines.
            enabled_quote: false,
            enabled_escape: false,
            enabled_indented_mutiline_value: true,
            enabled_preserve_key_leading_whitespace: false,
        };
        let ini = match Ini::load_from_str_opt(text, parse_option) {
            Ok(ini) => ini,
            Err(error) => {
                // After `scan` found a problem, rust-ini's error is nearly always an echo of it
                // at a less helpful place; report it only when it is news.
                if structure_ok {
                    report.error(
                        Some(error.line),
                        None,
                        None,
                        format!(
                            "syntax error at column {}: {}; fix the line so it is a \
                             `[section]` header, a `name = value` line or a `#` comment",
                            error.col, error.msg
                        ),
                    );
                }
                return RawConfig::default();
            }
        };

        let mut raw = RawConfig::default();
        // The general section (keys before any header) is reported by `scan` and read by no one.
        for name in ini.sections().flatten() {
            if raw.section(name).is_some() {
                continue;
            }
            let mut section = RawSection {
                name: name.to_string(),
                line: layout.section_line(name),
                entries: Vec::new(),
            };
            for properties in ini.section_all(Some(name)) {
                for (key, value) in properties.iter() {
                    // rust-ini folds a line without `=` (or a stray indented line) into the
                    // next key's name. `scan` has reported those lines; the key itself is the
                    // last line of the name, and its value still deserves checking.
                    let key = match key.rsplit_once('\n') {
                        Some((_, last_line)) if !structure_ok => last_line.trim(),
                        _ => key,
                    };
                    if !is_option_name(key) {
                        // `scan` reported the line that produced this key.
                        if structure_ok {
                            report.error(
                                None,
                                Some(name),
                                None,
                                format!(
                                    "`{}` is not an option name; names are made of letters, \
                                     digits, `_`, `-` and `.`",
                                    key.escape_debug()
                                ),
                            );
                        }
                        continue;
                    }
                    let value = RawValue {
                        text: value.to_string(),
                        line: None,
                    };
                    match section.entries.iter_mut().find(|entry| entry.key == key) {
                        Some(entry) => entry.values.push(value),
                        None => section.entries.push(RawEntry {
                            key: key.to_string(),
                            values: vec![value],
                        }),
                    }
                }
            }
            for entry in &mut section.entries {
                let lines = layout
                    .key_lines
                    .get(&(name.to_string(), entry.key.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                // Matched from the end, so the value that counts gets its line even if the
                // two readers disagree on an earlier one.
                for (value, line) in entry.values.iter_mut().rev().zip(lines.iter().rev()) {
                    value.line = Some(*line);
                }
            }
            raw.sections.push(section);
        }
        raw
    }

    fn section(&self, name: &str) -> Option<&RawSection> {
        self.sections.iter().find(|section| section.name == name)
    }

    fn entry(&self, section: &str, key: &str) -> Option<&RawEntry> {
        self.section(section)?
            .entries
            .iter()
            .find(|entry| entry.key == key)
    }

    /// The line of the value that counts for `section` / `key`, if the file sets it.
    fn line_of(&self, section: &str, key: &str) -> Option<usize> {
        self.entry(section, key)?.values.last()?.line
    }
}

impl Layout {
    fn section_line(&self, name: &str) -> Option<usize> {
        self.section_lines
            .iter()
            .find(|(section, _)| section == name)
            .map(|(_, line)| *line)
    }
}

/// Walks the lines as oslo.config's INI parser does, recording where sections and keys are and
/// reporting each line that is not a header, a `name = value`, a comment, a blank line or the
/// indented continuation of a value.
fn scan(text: &str, report: &mut Report) -> Layout {
    let mut layout = Layout::default();
    let mut section: Option<String> = None;
    // After a broken header, keys are not "outside any section": that would be a second,
    // misleading error about the same mistake.
    let mut header_broken = false;
    // oslo.config: an indented line continues the value above it, until a blank or comment line.
    let mut in_value = false;

    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\r') {
            report.error(
                Some(line_number),
                None,
                None,
                "the line holds a carriage return in its middle; save the file with Unix \
                 (LF) or Windows (CRLF) line ends"
                    .to_string(),
            );
            in_value = false;
            continue;
        }
        if line.trim().is_empty() {
            in_value = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if !in_value {
                report.error(
                    Some(line_number),
                    section.as_deref(),
                    None,
                    format!(
                        "`{}` is indented but continues no value (an indented line continues \
                         the value above it); start it at column 1",
                        snippet(line.trim())
                    ),
                );
            } else if line.trim_end().ends_with('\\') {
                report.error(
                    Some(line_number),
                    section.as_deref(),
                    None,
                    TRAILING_BACKSLASH.to_string(),
                );
            }
            continue;
        }
        in_value = false;
        if line.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with('[') {
            let name = line
                .trim_end()
                .strip_suffix(']')
                .map(|inner| inner[1..].trim())
                .filter(|name| !name.is_empty() && !name.contains(['[', ']']));
            match name {
                Some(name) => {
                    section = Some(name.to_string());
                    header_broken = false;
                    if layout.section_line(name).is_none() {
                        layout.section_lines.push((name.to_string(), line_number));
                    }
                }
                None => {
                    report.error(
                        Some(line_number),
                        None,
                        None,
                        format!(
                            "`{}` is not a section header; write `[name]` alone on the line \
                             (a comment goes on a line of its own)",
                            snippet(line.trim_end())
                        ),
                    );
                    section = None;
                    header_broken = true;
                }
            }
            continue;
        }

        let Some(separator) = line.find(['=', ':']) else {
            report.error(
                Some(line_number),
                section.as_deref(),
                None,
                format!(
                    "`{}` has no `=`; write `name = value`, or comment the line out with `#`",
                    snippet(line.trim_end())
                ),
            );
            continue;
        };
        // Whatever the key, following indented lines belong to this line, not to the next key.
        in_value = true;
        let key = line[..separator].trim();
        if key.is_empty() {
            report.error(
                Some(line_number),
                section.as_deref(),
                None,
                "the line starts with its separator; write the option name before the `=`"
                    .to_string(),
            );
            continue;
        }
        if !is_option_name(key) {
            report.error(
                Some(line_number),
                section.as_deref(),
                None,
                format!(
                    "`{}` is not an option name; names are made of letters, digits, `_`, `-` \
                     and `.`",
                    snippet(key)
                ),
            );
            continue;
        }
        match &section {
            Some(section) => {
                layout
                    .key_lines
                    .entry((section.clone(), key.to_string()))
                    .or_default()
                    .push(line_number);
                if line.trim_end().ends_with('\\') {
                    report.error(
                        Some(line_number),
                        Some(section),
                        Some(key),
                        TRAILING_BACKSLASH.to_string(),
                    );
                }
            }
            None if header_broken => {}
            None => report.error(
                Some(line_number),
                None,
                Some(key),
                "the option comes before any section header; put it under [DEFAULT]".to_string(),
            ),
        }
    }
    layout
}

const TRAILING_BACKSLASH: &str = "the value ends with `\\`, which the INI reader takes as \
                                  \"continue on the next line\"; remove the trailing backslash";

/// Whether `key` can be an option name; anything else is a line the INI reader misread.
fn is_option_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A line shortened for quoting in a message.
fn snippet(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() <= MAX_CHARS {
        text.to_string()
    } else {
        let start: String = text.chars().take(MAX_CHARS).collect();
        format!("{start}…")
    }
}

/// `[image_format]`, read where Glance reads it: `disk_formats` and `container_formats` by the
/// image schema (create and
/// patch), the rest by the upload's format inspection (`crate::format`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFormat {
    /// `disk_formats`: the values `disk_format` may take (a value glint does not know is never
    /// accepted, as it is not in the schema either).
    pub disk_formats: Vec<String>,
    /// `container_formats`: the values `container_format` may take, likewise.
    pub container_formats: Vec<String>,
    /// `require_image_format_match`, `vmdk_allowed_types`, `gpt_safety_checks_nonfatal`.
    pub rules: crate::format::Rules,
}

/// `[metrics]`: where the Prometheus metrics listener listens, if anywhere (`crate::metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    /// `bind_host`: an IP address literal (v4 or v6) or `localhost`.
    pub bind_host: String,
    /// `bind_port`; `None` (unset): no metrics listener; 0 asks the kernel for a free port.
    pub bind_port: Option<u16>,
}

impl Metrics {
    /// The address to bind ("HOST:PORT"), when metrics are on.
    pub fn listen_address(&self) -> Option<String> {
        let port = self.bind_port?;
        Some(match self.bind_host.parse::<IpAddr>() {
            Ok(IpAddr::V6(address)) => format!("[{address}]:{port}"),
            _ => format!("{}:{port}", self.bind_host),
        })
    }
}

/// A `Config` being assembled: defaults first, then the file's values, then derived values.
#[derive(Debug, Default)]
struct Draft {
    image_format: ImageFormat,
    metrics: Metrics,
    bind_host: String,
    bind_port: u16,
    workers: usize,
    worker_threads: usize,
    backlog: i32,
    max_client_connections: usize,
    client_socket_timeout: Option<Duration>,
    client_header_timeout: Duration,
    client_body_timeout: Duration,
    client_send_timeout: Duration,
    client_send_min_rate: u64,
    http_keepalive: bool,
    max_header_line: usize,
    tcp_keepidle: Duration,
    graceful_shutdown_timeout: Option<Duration>,
    reload_handoff: bool,
    reload_strategy: ReloadStrategy,
    pid_file: PathBuf,
    /// `None` until set: the default depends on `pid_file`.
    status_file: Option<PathBuf>,
    /// Possibly relative until `finish`: it resolves against `log_dir`.
    log_file: Option<PathBuf>,
    log_dir: Option<PathBuf>,
    use_stderr: bool,
    debug: bool,
    access_log: bool,
    /// Possibly relative until `finish`: it resolves against `log_dir`.
    access_log_file: Option<PathBuf>,
    access_log_healthcheck: bool,
    access_log_flush_ms: u64,
    use_syslog: bool,
    syslog_log_facility: &'static str,
    public_endpoint: Option<String>,
    /// `[DEFAULT] enabled_import_methods` items as written, brackets stripped in `finish`.
    enabled_import_methods: Vec<String>,
    /// `[DEFAULT] node_staging_uri` as written.
    node_staging_uri: String,
    /// `[healthcheck]` as written.
    healthcheck: healthcheck::Draft,
    image_size_cap: u64,
    image_metadata_size_cap: usize,
    image_member_quota: Option<usize>,
    task_time_to_live_hours: u64,
    hashing_algorithm: HashAlgorithm,
    limit_param_default: usize,
    api_limit_max: usize,
    /// The `filesystem_store_datadir` value (or default); used when `datadirs` stays empty.
    filesystem_store_datadir: PathBuf,
    /// Every `filesystem_store_datadirs` value that parsed, in file order, duplicates included.
    datadirs: Vec<DataDir>,
    filesystem_store_file_perm: u32,
    database: Database,
    max_pool_size: usize,
    /// None until the file or the default sets it: the host name then.
    node_name: Option<String>,
    node_lease_time: Duration,
    flavor: Flavor,
    image_cache_dir: PathBuf,
    image_cache_max_size: u64,
    image_cache_stall_time: Duration,
    /// One of [`AUTH_STRATEGY_NAMES`]; the tokens are read by `finish`.
    auth_strategy: &'static str,
    auth_token_file: Option<PathBuf>,
    /// Whether `flavor` starts with `keystone`; `flavor` holds the rest.
    keystone_flavor: bool,
    keystone: KeystoneAuthtoken,
    /// Absolute; read by `finish` (`policy.rs`).
    policy_file: PathBuf,
    enforce_new_defaults: bool,
    enforce_scope: bool,
    /// `[DEFAULT] enabled_backends` items as written (`ID:TYPE`); `backends.rs` reads them.
    enabled_backends: Vec<String>,
    /// `[glance_store] default_backend`.
    default_backend: Option<String>,
    /// `[import_filtering_opts]` as written, and the timeouts of `web-download`.
    web_download: import_filtering::Draft,
}

/// Glance's default for `workers`: one per CPU, at most 8.
const MAX_DEFAULT_WORKERS: usize = 8;

impl Draft {
    /// A draft with the derived defaults; `build` applies the table's text defaults on top.
    fn new() -> Draft {
        let n_cpus = std::thread::available_parallelism().map_or(1, |n_cpus| n_cpus.get());
        Draft {
            workers: n_cpus.min(MAX_DEFAULT_WORKERS),
            ..Draft::default()
        }
    }

    /// Works out derived values, checks options against each other and returns the `Config`.
    fn finish(self, file: &Path, raw: &RawConfig, report: &mut Report) -> Config {
        let folder = config_folder(file);
        let status_file = self
            .status_file
            .unwrap_or_else(|| options::status_file_beside(&self.pid_file));
        let log_file = self
            .log_file
            .map(|log_file| options::resolve(self.log_dir.as_deref().unwrap_or(folder), &log_file));
        let access_log_file = self.access_log_file.map(|access_log_file| {
            options::resolve(self.log_dir.as_deref().unwrap_or(folder), &access_log_file)
        });

        let node_name = self.node_name.clone().unwrap_or_else(default_node_name);
        if !crate::store::is_node_name(&node_name) {
            let how = if self.node_name.is_some() {
                "set it to 1 to 63 letters, digits and `-`"
            } else {
                "the machine's host name cannot be one: set node_name to 1 to 63 letters, digits \
                 and `-`"
            };
            // A bad value in the file is always an error; a host name that cannot name a node
            // matters only when the registry is shared.
            if self.node_name.is_some() || matches!(self.database, Database::Postgres(_)) {
                report.error(
                    raw.line_of("DEFAULT", "node_name"),
                    Some("DEFAULT"),
                    Some("node_name"),
                    format!("`{}` cannot name a node; {how}", node_name.escape_debug()),
                );
            }
        }

        // Two of these sharing a file would overwrite each other's content.
        let database_file = match &self.database {
            Database::Sqlite(path) => Some(path.clone()),
            Database::Postgres(_) => None,
        };
        let files = [
            ("DEFAULT", "pid_file", Some(&self.pid_file)),
            ("DEFAULT", "status_file", Some(&status_file)),
            ("DEFAULT", "log_file", log_file.as_ref()),
            ("DEFAULT", "access_log_file", access_log_file.as_ref()),
            ("database", "connection", database_file.as_ref()),
        ];
        for (index, (section, name, path)) in files.iter().enumerate() {
            for (earlier_section, earlier_name, earlier_path) in &files[..index] {
                if path.is_some() && path == earlier_path {
                    // Blame the option the file sets, preferring the later one.
                    let (blamed, other) = if raw.line_of(section, name).is_some() {
                        ((*section, *name), (*earlier_section, *earlier_name))
                    } else {
                        ((*earlier_section, *earlier_name), (*section, *name))
                    };
                    let other = if other.0 == blamed.0 {
                        other.1.to_string()
                    } else {
                        format!("[{}] {}", other.0, other.1)
                    };
                    report.error(
                        raw.line_of(blamed.0, blamed.1),
                        Some(blamed.0),
                        Some(blamed.1),
                        format!("names the same file as {other}; give each its own file"),
                    );
                }
            }
        }

        if self.limit_param_default > self.api_limit_max {
            // Blame the option the file sets, preferring the default page size.
            let blamed = if raw.line_of("DEFAULT", "limit_param_default").is_some()
                || raw.line_of("DEFAULT", "api_limit_max").is_none()
            {
                "limit_param_default"
            } else {
                "api_limit_max"
            };
            report.error(
                raw.line_of("DEFAULT", blamed),
                Some("DEFAULT"),
                Some(blamed),
                format!(
                    "limit_param_default ({}) is larger than api_limit_max ({}); make \
                     limit_param_default at most api_limit_max",
                    self.limit_param_default, self.api_limit_max
                ),
            );
        }

        // The master binds both; on one port the second bind fails (or, on overlapping
        // addresses, the API would answer scrapes). 0 asks the kernel for a free one each.
        if self.metrics.bind_port == Some(self.bind_port) && self.bind_port != 0 {
            report.error(
                raw.line_of("metrics", "bind_port"),
                Some("metrics"),
                Some("bind_port"),
                format!(
                    "is the API's port too ([DEFAULT] bind_port = {}); give the metrics \
                     listener a port of its own",
                    self.bind_port
                ),
            );
        }

        let import_methods = finish_import_methods(&self.enabled_import_methods, raw, report);
        let staging_dir = finish_staging_uri(&self.node_staging_uri, raw, report);
        let healthcheck = self.healthcheck.finish(raw, folder, report);
        let web_download = self.web_download.finish(raw, report);
        let backends = backends::finish(
            &self.enabled_backends,
            self.default_backend,
            raw,
            folder,
            report,
        );
        let datadirs = finish_datadirs(
            "glance_store",
            self.filesystem_store_datadir,
            self.datadirs,
            raw,
            folder,
            report,
        );
        let auth_strategy = if self.keystone_flavor {
            finish_keystone_strategy(self.auth_strategy, &self.keystone, raw, report)
        } else {
            finish_auth_strategy(
                self.auth_strategy,
                self.auth_token_file.as_deref(),
                raw,
                report,
            )
        };

        let (policy_file, policy) = policy::finish(
            &self.policy_file,
            self.enforce_new_defaults,
            self.enforce_scope,
            raw,
            report,
        );

        Config {
            path: file.to_path_buf(),
            bind_host: self.bind_host,
            bind_port: self.bind_port,
            workers: self.workers,
            worker_threads: self.worker_threads,
            backlog: self.backlog,
            max_client_connections: self.max_client_connections,
            client_socket_timeout: self.client_socket_timeout,
            client_header_timeout: self.client_header_timeout,
            client_body_timeout: self.client_body_timeout,
            client_send_timeout: self.client_send_timeout,
            client_send_min_rate: self.client_send_min_rate,
            http_keepalive: self.http_keepalive,
            max_header_line: self.max_header_line,
            tcp_keepidle: self.tcp_keepidle,
            graceful_shutdown_timeout: self.graceful_shutdown_timeout,
            reload_handoff: self.reload_handoff,
            reload_strategy: self.reload_strategy,
            pid_file: self.pid_file,
            status_file,
            log_file,
            log_dir: self.log_dir,
            use_stderr: self.use_stderr,
            debug: self.debug,
            access_log: self.access_log,
            access_log_file,
            access_log_healthcheck: self.access_log_healthcheck,
            access_log_flush_ms: self.access_log_flush_ms,
            use_syslog: self.use_syslog,
            syslog_log_facility: self.syslog_log_facility,
            public_endpoint: self.public_endpoint,
            image_size_cap: self.image_size_cap,
            image_metadata_size_cap: self.image_metadata_size_cap,
            image_member_quota: self.image_member_quota,
            task_time_to_live_hours: self.task_time_to_live_hours,
            hashing_algorithm: self.hashing_algorithm,
            limit_param_default: self.limit_param_default,
            api_limit_max: self.api_limit_max,
            datadirs,
            filesystem_store_file_perm: self.filesystem_store_file_perm,
            database: self.database,
            node_name,
            node_lease_time: self.node_lease_time,
            max_pool_size: self.max_pool_size,
            flavor: self.flavor,
            image_cache_dir: self.image_cache_dir,
            image_cache_max_size: self.image_cache_max_size,
            image_cache_stall_time: self.image_cache_stall_time,
            auth_strategy,
            auth_token_file: self.auth_token_file,
            keystone_authtoken: self.keystone,
            policy_file,
            policy,
            image_format: self.image_format,
            metrics: self.metrics,
            backends,
            import_methods,
            staging_dir,
            healthcheck,
            web_download,
        }
    }
}

/// The import methods glint serves; Glance's others are accepted in the file and not served.
pub const SERVED_IMPORT_METHODS: &[&str] = &["glance-direct", "web-download", "copy-image"];

/// `enabled_import_methods` as Glance writes it (`[glance-direct,web-download]`, each item
/// possibly quoted) or as a plain comma list, reduced to the methods glint serves. A method it
/// does not serve draws a warning when the file sets the option: Glance's default names three,
/// and warning about a default the operator never wrote would only be noise.
fn finish_import_methods(items: &[String], raw: &RawConfig, report: &mut Report) -> Vec<String> {
    let line = raw.line_of("DEFAULT", "enabled_import_methods");
    let mut served = Vec::new();
    let mut dropped = Vec::new();
    for item in items {
        let name = item
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .trim();
        if name.is_empty() {
            continue;
        }
        if SERVED_IMPORT_METHODS.contains(&name) {
            if !served.iter().any(|known: &String| known == name) {
                served.push(name.to_string());
            }
        } else {
            dropped.push(name.to_string());
        }
    }
    if line.is_some() && !dropped.is_empty() {
        report.warning(
            line,
            Some("DEFAULT"),
            Some("enabled_import_methods"),
            format!(
                "glint serves only {}; not offering {}: remove {} from the list to silence this",
                SERVED_IMPORT_METHODS.join(", "),
                dropped.join(", "),
                if dropped.len() == 1 { "it" } else { "them" }
            ),
        );
    }
    served
}

/// `node_staging_uri`: only `file://` followed by an absolute path is served (Glance's own
/// default is `file:///tmp/staging/`); anything else is an error naming the fix.
fn finish_staging_uri(uri: &str, raw: &RawConfig, report: &mut Report) -> PathBuf {
    match uri.strip_prefix("file://") {
        Some(path) if path.starts_with('/') => PathBuf::from(path),
        _ => {
            report.error(
                raw.line_of("DEFAULT", "node_staging_uri"),
                Some("DEFAULT"),
                Some("node_staging_uri"),
                "must be file:// followed by an absolute path, such as file:///var/lib/glint/staging/"
                    .to_string(),
            );
            PathBuf::from("/tmp/staging")
        }
    }
}

/// The access control of a keystone flavor: `[keystone_authtoken]` checked (`keystone.rs`).
/// An `auth_strategy` set to anything but `keystone` contradicts the flavor and is an error.
fn finish_keystone_strategy(
    strategy: &str,
    section: &KeystoneAuthtoken,
    raw: &RawConfig,
    report: &mut Report,
) -> AuthStrategy {
    let flavor_line = raw.line_of("paste_deploy", "flavor");
    if let Some(line) = raw.line_of("DEFAULT", "auth_strategy") {
        if strategy != "keystone" {
            report.error(
                Some(line),
                Some("DEFAULT"),
                Some("auth_strategy"),
                format!(
                    "{strategy} contradicts the keystone flavor of [paste_deploy] flavor{}, \
                     which validates every token with Keystone; remove this line, or choose a \
                     flavor without keystone",
                    flavor_line.map_or(String::new(), |line| format!(" (line {line})"))
                ),
            );
        }
    }
    match keystone::finish(section, flavor_line, raw, report) {
        Some(settings) => AuthStrategy::Keystone(std::sync::Arc::new(settings)),
        // The load fails: `report` holds the errors.
        None => AuthStrategy::NoAuth,
    }
}

/// The access control: under `token`, reads the token file. A missing `auth_token_file`, a file
/// that cannot be read, lists no token or holds a token a header cannot carry is an error at
/// the option's line; a file others can read draws a warning. Under `noauth` a set
/// `auth_token_file` draws a warning: the operator probably meant to turn tokens on.
/// No message quotes a token.
fn finish_auth_strategy(
    strategy: &str,
    token_file: Option<&Path>,
    raw: &RawConfig,
    report: &mut Report,
) -> AuthStrategy {
    const SECTION: &str = "DEFAULT";
    const FILE_OPTION: &str = "auth_token_file";
    let file_line = raw.line_of(SECTION, FILE_OPTION);
    if strategy == "keystone" {
        report.error(
            raw.line_of(SECTION, "auth_strategy"),
            Some(SECTION),
            Some("auth_strategy"),
            "keystone needs a keystone pipeline: set [paste_deploy] flavor = keystone (or \
             keystone+caching, keystone+cachemanagement) and the [keystone_authtoken] options"
                .to_string(),
        );
        return AuthStrategy::NoAuth;
    }
    if strategy != "token" {
        if let Some(path) = token_file {
            report.warning(
                file_line,
                Some(SECTION),
                Some(FILE_OPTION),
                format!(
                    "`{}` is not read because auth_strategy is {strategy}, so anyone who \
                     reaches glint may use the API; set auth_strategy = token to require its \
                     tokens, or remove this line",
                    path.display()
                ),
            );
        }
        return AuthStrategy::NoAuth;
    }
    let Some(path) = token_file else {
        report.error(
            raw.line_of(SECTION, "auth_strategy"),
            Some(SECTION),
            Some("auth_strategy"),
            "token needs the tokens: set auth_token_file to a file with one token per line"
                .to_string(),
        );
        return AuthStrategy::Token(Tokens::default());
    };
    let mut error = |message: String| {
        report.error(file_line, Some(SECTION), Some(FILE_OPTION), message);
        AuthStrategy::Token(Tokens::default())
    };
    let bytes = match read_regular_file(path) {
        Ok(bytes) => bytes,
        Err(io_error) => {
            return error(format!(
                "cannot read `{}`: {io_error}; create it with one token per line (mode 0600, \
                 owned by the user glint runs as) or fix the path",
                path.display()
            ))
        }
    };
    let tokens = match Tokens::parse(&bytes) {
        Ok(tokens) => tokens,
        Err(TokenFileError::Empty) => {
            return error(format!(
                "`{}` lists no token (only blank lines and # comments); add one token per line",
                path.display()
            ))
        }
        Err(TokenFileError::BadToken { line }) => {
            return error(format!(
                "line {line} of `{}` holds a character an X-Auth-Token header cannot carry \
                 (a token is visible ASCII without spaces); fix or remove that line",
                path.display()
            ))
        }
    };
    if let Ok(metadata) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o004 != 0 {
            report.warning(
                file_line,
                Some(SECTION),
                Some(FILE_OPTION),
                format!(
                    "`{}` holds secrets but every user can read it (mode {mode:04o}); \
                     chmod o-r it, as in 0600",
                    path.display()
                ),
            );
        }
    }
    AuthStrategy::Token(tokens)
}

/// The image folders: `filesystem_store_datadirs` without its exact duplicates (a warning each),
/// else `filesystem_store_datadir` alone. Reports a path given two priorities and the two
/// options set together, as glance_store refuses both.
fn finish_datadirs(
    section: &str,
    datadir: PathBuf,
    datadirs: Vec<DataDir>,
    raw: &RawConfig,
    folder: &Path,
    report: &mut Report,
) -> Vec<DataDir> {
    const NAME: &str = "filesystem_store_datadirs";
    let section_name = section;
    // `build` applied exactly the values that parse, in file order; parsing again pairs each
    // of them with its line.
    let lines: Vec<Option<usize>> = raw
        .entry(section_name, NAME)
        .map(|entry| entry.values.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|value| options::parse(&Kind::DataDirs, &value.text, folder).is_ok())
        .map(|value| value.line)
        .collect();
    if let Some(line) = raw.line_of(section_name, "filesystem_store_datadir") {
        if let Some(first) = raw
            .entry(section_name, NAME)
            .and_then(|entry| entry.values.first())
        {
            let also = first
                .line
                .map_or(String::new(), |line| format!(" (line {line})"));
            report.error(
                Some(line),
                Some(section_name),
                Some("filesystem_store_datadir"),
                format!(
                    "is set together with {NAME}{also}; set one of them: \
                     filesystem_store_datadir for one folder, {NAME} for several"
                ),
            );
        }
    }
    if datadirs.is_empty() {
        return vec![DataDir {
            path: datadir,
            priority: 0,
        }];
    }
    let mut kept: Vec<(DataDir, Option<usize>)> = Vec::with_capacity(datadirs.len());
    for (index, datadir) in datadirs.into_iter().enumerate() {
        let line = lines.get(index).copied().flatten();
        let Some((earlier, earlier_line)) = kept
            .iter()
            .find(|(earlier, _)| earlier.path == datadir.path)
        else {
            kept.push((datadir, line));
            continue;
        };
        let on_line = earlier_line.map_or(String::new(), |line| format!(" on line {line}"));
        if earlier.priority == datadir.priority {
            report.warning(
                line,
                Some(section_name),
                Some(NAME),
                format!(
                    "`{}` with priority {} is already listed{on_line}; remove this line",
                    datadir.path.display(),
                    datadir.priority
                ),
            );
        } else {
            report.error(
                line,
                Some(section_name),
                Some(NAME),
                format!(
                    "`{}` is listed with priority {} and{on_line} with priority {}; give each \
                     folder one priority and list it once",
                    datadir.path.display(),
                    datadir.priority,
                    earlier.priority
                ),
            );
        }
    }
    kept.into_iter().map(|(datadir, _)| datadir).collect()
}

/// The folder relative paths in `file` are resolved against.
fn config_folder(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("/"))
}

/// Applies the table's defaults and the file's values, warns about what glint does not read,
/// and finishes the `Config`. The `Config` is only handed out if `report` stays free of errors.
fn build(raw: &RawConfig, file: &Path, report: &mut Report) -> Config {
    let folder = config_folder(file);
    let mut draft = Draft::new();
    for spec in OPTIONS {
        if let DefaultValue::Text(text) = spec.default {
            match options::parse(&spec.kind, text, folder) {
                Ok(parsed) => (spec.apply)(&mut draft, parsed.value),
                Err(message) => report.error(
                    None,
                    Some(spec.section),
                    Some(spec.name),
                    format!(
                        "glint's built-in default is invalid ({message}); please report this bug"
                    ),
                ),
            }
        }
        let also = options::also_read_from(spec);
        let (section, entry) = match (
            raw.entry(spec.section, spec.name),
            also.and_then(|also| raw.entry(also, spec.name)),
        ) {
            (Some(entry), None) => (spec.section, entry),
            (None, Some(entry)) => (also.unwrap_or(spec.section), entry),
            (None, None) => continue,
            (Some(entry), Some(_)) => {
                report.error(
                    entry.values.last().and_then(|value| value.line),
                    Some(spec.section),
                    Some(spec.name),
                    format!(
                        "also set in [{}] (line {}); Glance reads it from [{}], glint from \
                         either: keep one",
                        also.unwrap_or_default(),
                        raw.line_of(also.unwrap_or_default(), spec.name)
                            .map_or("?".to_string(), |line| line.to_string()),
                        also.unwrap_or_default()
                    ),
                );
                continue;
            }
        };
        let Some(last) = entry.values.last() else {
            continue;
        };
        let values = if spec.kind.is_multi_valued() {
            entry.values.as_slice()
        } else {
            std::slice::from_ref(last)
        };
        if entry.values.len() > 1 && !spec.kind.is_multi_valued() {
            let value = last;
            let earlier: Vec<String> = entry.values[..entry.values.len() - 1]
                .iter()
                .filter_map(|earlier| earlier.line)
                .map(|line| line.to_string())
                .collect();
            let earlier = if earlier.is_empty() {
                String::new()
            } else {
                format!(" (also on line {})", earlier.join(", "))
            };
            report.warning(
                value.line,
                Some(section),
                Some(spec.name),
                format!("set more than once{earlier}; this last value is used, remove the others"),
            );
        }
        for value in values {
            match options::parse(&spec.kind, &value.text, folder) {
                Ok(parsed) => {
                    if let Some(warning) = parsed.warning {
                        report.warning(value.line, Some(section), Some(spec.name), warning);
                    }
                    (spec.apply)(&mut draft, parsed.value);
                }
                Err(message) => report.error(value.line, Some(section), Some(spec.name), message),
            }
        }
    }
    warn_about_unread(raw, report, &draft.enabled_backends);
    draft.finish(file, raw, report)
}

/// One warning per unknown section and per unknown option in a known section.
fn warn_about_unread(raw: &RawConfig, report: &mut Report, enabled_backends: &[String]) {
    for section in &raw.sections {
        let name = section.name.as_str();
        let is_backend = enabled_backends
            .iter()
            .any(|item| item.split(':').next().map(str::trim) == Some(name));
        if is_backend {
            for entry in &section.entries {
                if !backends::BACKEND_OPTIONS.contains(&entry.key.as_str()) {
                    let line = entry.values.last().and_then(|value| value.line);
                    report.warning(
                        line,
                        Some(name),
                        Some(&entry.key),
                        format!(
                            "not an option glint reads for a backend, ignored; a backend's \
                             section holds {}",
                            backends::BACKEND_OPTIONS.join(", ")
                        ),
                    );
                }
            }
            continue;
        }
        if !OPTIONS.iter().any(|spec| spec.section == name) {
            let ignored = match section.entries.len() {
                1 => "its 1 option is ignored".to_string(),
                n_entries => format!("its {n_entries} options are ignored"),
            };
            let message = if options::is_glance_section(name) {
                format!("section not used by glint yet; {ignored}")
            } else {
                match options::suggest_section(name) {
                    Some(known) => format!("unknown section, {ignored}; did you mean [{known}]?"),
                    None => format!("unknown section, {ignored}; check the section name"),
                }
            };
            report.warning(section.line, Some(name), None, message);
            continue;
        }
        for entry in &section.entries {
            if options::find(name, &entry.key).is_some() {
                continue;
            }
            let message = match options::suggest(name, &entry.key) {
                Some(spec) if spec.name == entry.key => format!(
                    "not an option of this section, ignored; it belongs in [{}], move it there",
                    spec.section
                ),
                Some(spec) if spec.section == name => {
                    format!("unknown option, ignored; did you mean {}?", spec.name)
                }
                Some(spec) => format!(
                    "unknown option, ignored; did you mean [{}] {}?",
                    spec.section, spec.name
                ),
                None => "unknown option, ignored (glint does not use it)".to_string(),
            };
            let line = entry.values.last().and_then(|value| value.line);
            report.warning(line, Some(name), Some(&entry.key), message);
        }
    }
}

/// `[DEFAULT] node_name`'s default: the machine's host name up to its first dot.
fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .map(|name| name.split('.').next().unwrap_or_default().to_string())
        .unwrap_or_default()
}
