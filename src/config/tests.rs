//! Tests of the config loader, table-driven: one helper per outcome (loads, refuses) and a list
//! of cases per concern, so that a new option only needs new rows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Every test pretends to read this file; nothing is read from disk unless a test says so.
const CONFIG_PATH: &str = "/etc/glint/glint-api.conf";

fn load_text(text: &str) -> Result<Loaded, ConfigError> {
    load_str(text, Path::new(CONFIG_PATH))
}

/// Loads `text`, failing the test with every problem if the file is refused.
fn loads(text: &str) -> Loaded {
    match load_text(text) {
        Ok(loaded) => loaded,
        Err(error) => panic!("expected the config to load, got:\n{error}\n--- config ---\n{text}"),
    }
}

/// Loads `text`, failing the test if the file is accepted.
fn refused(text: &str) -> ConfigError {
    match load_text(text) {
        Ok(loaded) => panic!(
            "expected the config to be refused, it loaded as {:#?}\n--- config ---\n{text}",
            loaded.config
        ),
        Err(error) => error,
    }
}

/// The effective value of option `name`, as `--check-config` shows it, one line per value.
fn shown(name: &str, config: &Config) -> String {
    (spec(name).show)(config).join("\n")
}

fn spec(name: &str) -> &'static OptionSpec {
    OPTIONS
        .iter()
        .find(|spec| spec.name == name)
        .unwrap_or_else(|| panic!("no option {name} in OPTIONS"))
}

// ---------------------------------------------------------------------------------------------
// Defaults

#[test]
fn empty_file_gives_the_documented_defaults() {
    for text in ["", "[DEFAULT]\n", "# only a comment\n\n"] {
        let loaded = loads(text);
        assert_eq!(loaded.warnings, Vec::<String>::new());
        let config = loaded.config;
        let n_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.path, PathBuf::from(CONFIG_PATH));
        assert_eq!(config.bind_host, "0.0.0.0");
        assert_eq!(config.bind_port, 9292);
        assert_eq!(config.workers, n_cpus.min(8));
        assert_eq!(config.worker_threads, 16);
        assert_eq!(config.backlog, 4096);
        assert_eq!(config.max_client_connections, 4096);
        assert_eq!(config.client_socket_timeout, Some(Duration::from_secs(900)));
        assert_eq!(config.client_header_timeout, Duration::from_secs(60));
        assert_eq!(config.client_body_timeout, Duration::from_secs(60));
        assert_eq!(config.client_send_timeout, Duration::from_secs(60));
        assert!(config.http_keepalive);
        assert_eq!(config.max_header_line, 16384);
        assert_eq!(config.tcp_keepidle, Duration::from_secs(600));
        assert_eq!(
            config.graceful_shutdown_timeout,
            Some(Duration::from_secs(60))
        );
        assert_eq!(config.pid_file, PathBuf::from("/run/glint/glint-api.pid"));
        assert_eq!(
            config.status_file,
            PathBuf::from("/run/glint/glint-api.status.json")
        );
        assert_eq!(config.log_file, None);
        assert_eq!(config.log_dir, None);
        assert!(!config.use_stderr);
        assert!(!config.debug);
        assert_eq!(config.public_endpoint, None);
        assert_eq!(config.image_size_cap, 1 << 40);
        assert_eq!(config.image_metadata_size_cap, 256 * 1024);
        assert_eq!(config.hashing_algorithm, HashAlgorithm::Sha512);
        assert_eq!(config.limit_param_default, 25);
        assert_eq!(config.api_limit_max, 1000);
        assert_eq!(
            config.datadirs,
            vec![DataDir {
                path: PathBuf::from("/var/lib/glance/images"),
                priority: 0
            }]
        );
        assert_eq!(config.filesystem_store_file_perm, 0o640);
        assert_eq!(
            config.database,
            Database::Sqlite(PathBuf::from("/var/lib/glint/glint.sqlite"))
        );
        assert_eq!(config.flavor, Flavor::Plain);
        assert_eq!(
            config.image_cache_dir,
            PathBuf::from("/var/lib/glance/image-cache")
        );
        assert_eq!(config.image_cache_max_size, 10 << 30);
        assert_eq!(config.image_cache_stall_time, Duration::from_secs(86400));
        assert_eq!(config.auth_strategy, AuthStrategy::NoAuth);
        assert_eq!(config.auth_token_file, None);
    }
}

#[test]
fn every_text_default_parses_with_its_own_kind() {
    for spec in OPTIONS {
        if let DefaultValue::Text(text) = spec.default {
            let parsed = options::parse(&spec.kind, text, Path::new("/"));
            assert!(
                parsed.is_ok(),
                "default of {} does not parse: {:?}",
                spec.name,
                parsed.err()
            );
        }
    }
}

#[test]
fn option_names_are_unique_and_well_formed() {
    for (index, spec) in OPTIONS.iter().enumerate() {
        assert!(is_option_name(spec.name), "{}", spec.name);
        assert!(
            OPTIONS[..index]
                .iter()
                .all(|earlier| (earlier.section, earlier.name) != (spec.section, spec.name)),
            "{} is listed twice",
            spec.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Values, option by option

/// (option, value in the file, effective value as `--check-config` shows it).
const GOOD_VALUES: &[(&str, &str, &str)] = &[
    // Alone, only empty values load without a warning: backends need their sections.
    ("enabled_backends", "", ""),
    (
        "enabled_import_methods",
        "[glance-direct]",
        "[glance-direct]",
    ),
    (
        "enabled_import_methods",
        "'glance-direct'",
        "[glance-direct]",
    ),
    ("enabled_import_methods", "", "[]"),
    ("allowed_schemes", "[http]", "http"),
    ("allowed_schemes", "'https', \"http\"", "https,http"),
    ("allowed_schemes", "", ""),
    ("disallowed_schemes", "", ""),
    (
        "allowed_hosts",
        "[127.0.0.1, ::1, images.example.com.]",
        "127.0.0.1,::1,images.example.com",
    ),
    ("disallowed_hosts", "", ""),
    ("allowed_ports", "[80, 8080]", "80,8080"),
    ("allowed_ports", "", ""),
    ("disallowed_ports", "", ""),
    ("web_download_connect_timeout", "5", "5"),
    ("web_download_read_timeout", "120", "120"),
    (
        "node_staging_uri",
        "file:///var/lib/glint/staging/",
        "file:///var/lib/glint/staging/",
    ),
    ("default_backend", "", ""),
    ("bind_host", "0.0.0.0", "0.0.0.0"),
    ("bind_host", "127.0.0.1", "127.0.0.1"),
    ("bind_host", "::", "::"),
    ("bind_host", "::1", "::1"),
    ("bind_host", "2001:DB8::0:1", "2001:db8::1"),
    ("bind_host", "localhost", "localhost"),
    ("bind_host", "LocalHost", "localhost"),
    ("bind_port", "0", "0"),
    ("bind_port", "1", "1"),
    ("bind_port", "65535", "65535"),
    ("bind_port", "009292", "9292"),
    ("workers", "1", "1"),
    ("workers", "256", "256"),
    ("worker_threads", "1", "1"),
    ("worker_threads", "1024", "1024"),
    ("backlog", "1", "1"),
    ("backlog", "65535", "65535"),
    ("max_client_connections", "1", "1"),
    ("max_client_connections", "1048576", "1048576"),
    ("client_socket_timeout", "0", "0"),
    ("client_socket_timeout", "1", "1"),
    ("client_socket_timeout", "2147483", "2147483"),
    ("client_header_timeout", "1", "1"),
    ("client_header_timeout", "2147483", "2147483"),
    ("client_body_timeout", "1", "1"),
    ("client_body_timeout", "30", "30"),
    ("client_send_timeout", "1", "1"),
    ("client_send_timeout", "2147483", "2147483"),
    ("client_send_min_rate", "0", "0"),
    ("client_send_min_rate", "65536", "65536"),
    ("http_keepalive", "false", "false"),
    ("http_keepalive", "True", "true"),
    ("reload_handoff", "false", "false"),
    ("reload_handoff", "yes", "true"),
    ("reload_strategy", "rolling", "rolling"),
    ("reload_strategy", "Parallel", "parallel"),
    ("max_header_line", "256", "256"),
    ("max_header_line", "1048576", "1048576"),
    ("tcp_keepidle", "1", "1"),
    ("tcp_keepidle", "32767", "32767"),
    ("graceful_shutdown_timeout", "0", "0"),
    ("graceful_shutdown_timeout", "2147483", "2147483"),
    ("pid_file", "/var/run/glint.pid", "/var/run/glint.pid"),
    ("pid_file", "glint.pid", "/etc/glint/glint.pid"),
    (
        "pid_file",
        "./run/../glint.pid",
        "/etc/glint/run/../glint.pid",
    ),
    ("pid_file", r"/srv/a\b\glint.pid", r"/srv/a\b\glint.pid"),
    ("status_file", "/var/run/glint.json", "/var/run/glint.json"),
    (
        "status_file",
        "state/status.json",
        "/etc/glint/state/status.json",
    ),
    (
        "log_file",
        "/var/log/glint/api.log",
        "/var/log/glint/api.log",
    ),
    ("log_file", "api.log", "/etc/glint/api.log"),
    ("log_file", "", ""),
    ("log_dir", "/var/log/glint", "/var/log/glint"),
    ("log_dir", "/var/log/glint/", "/var/log/glint"),
    ("log_dir", "logs", "/etc/glint/logs"),
    ("log_dir", "", ""),
    ("use_stderr", "yes", "true"),
    ("use_stderr", "0", "false"),
    ("debug", "on", "true"),
    ("debug", "OFF", "false"),
    ("access_log", "off", "false"),
    ("access_log", "true", "true"),
    ("access_log_file", "access.log", "/etc/glint/access.log"),
    ("access_log_file", "", ""),
    ("access_log_healthcheck", "yes", "true"),
    ("access_log_flush_ms", "0", "0"),
    ("access_log_flush_ms", "60000", "60000"),
    ("use_syslog", "True", "true"),
    ("syslog_log_facility", "local0", "LOG_LOCAL0"),
    ("syslog_log_facility", "LOG_LOCAL7", "LOG_LOCAL7"),
    ("syslog_log_facility", "Daemon", "LOG_DAEMON"),
    (
        "public_endpoint",
        "http://images.example.com",
        "http://images.example.com",
    ),
    (
        "public_endpoint",
        "https://[2001:db8::1]:9292/",
        "https://[2001:db8::1]:9292",
    ),
    (
        "public_endpoint",
        "HTTPS://example.com/glance//",
        "HTTPS://example.com/glance",
    ),
    ("public_endpoint", "", ""),
    ("image_size_cap", "1", "1"),
    ("image_size_cap", "1099511627776", "1099511627776"),
    (
        "image_size_cap",
        "9223372036854775807",
        "9223372036854775807",
    ),
    ("image_metadata_size_cap", "4096", "4096"),
    ("image_metadata_size_cap", "1048576", "1048576"),
    ("image_member_quota", "128", "128"),
    ("image_member_quota", "0", "0"),
    ("image_member_quota", "-1", "-1"),
    ("task_time_to_live", "48", "48"),
    ("task_time_to_live", "0", "0"),
    ("hashing_algorithm", "sha256", "sha256"),
    ("hashing_algorithm", "SHA384", "sha384"),
    ("hashing_algorithm", "Sha512", "sha512"),
    // `token` needs a readable token file: see the token file tests below.
    ("auth_strategy", "noauth", "noauth"),
    ("auth_strategy", "NoAuth", "noauth"),
    ("auth_token_file", "", ""),
    ("limit_param_default", "1", "1"),
    ("limit_param_default", "1000", "1000"),
    ("api_limit_max", "25", "25"),
    ("api_limit_max", "1000000", "1000000"),
    ("filesystem_store_datadir", "/srv/images", "/srv/images"),
    ("filesystem_store_datadir", "/srv/images/", "/srv/images"),
    ("filesystem_store_datadir", "images", "/etc/glint/images"),
    // Only filesystem_store_datadirs splits on `:`.
    ("filesystem_store_datadir", "/mnt/a:b", "/mnt/a:b"),
    ("filesystem_store_datadirs", "/srv/a:10", "/srv/a:10"),
    ("filesystem_store_datadirs", "/srv/a:-3", "/srv/a:-3"),
    (
        "filesystem_store_datadirs",
        "fast : +2",
        "/etc/glint/fast:2",
    ),
    ("filesystem_store_datadirs", "/mnt/x:y:7", "/mnt/x:y:7"),
    (
        "filesystem_store_datadirs",
        "/srv/a:9223372036854775807",
        "/srv/a:9223372036854775807",
    ),
    (
        "filesystem_store_datadirs",
        "/srv/a:-9223372036854775808",
        "/srv/a:-9223372036854775808",
    ),
    // Priority 0 is the plain one-folder layout, shown as filesystem_store_datadir.
    ("filesystem_store_datadirs", "/srv/a:0", ""),
    ("filesystem_store_file_perm", "0", "0640"),
    ("filesystem_store_file_perm", "0000", "0640"),
    ("filesystem_store_file_perm", "0640", "0640"),
    ("filesystem_store_file_perm", "640", "0640"),
    ("filesystem_store_file_perm", "0600", "0600"),
    ("filesystem_store_file_perm", "400", "0400"),
    ("filesystem_store_file_perm", "0777", "0777"),
    ("default_store", "file", "file"),
    ("default_store", "File", "file"),
    ("stores", "file", "file"),
    ("stores", " file , ", "file"),
    ("stores", "FILE", "file"),
    (
        "connection",
        "sqlite:////var/lib/glint/meta.sqlite",
        "sqlite:////var/lib/glint/meta.sqlite",
    ),
    (
        "connection",
        "sqlite:///glint.sqlite",
        "sqlite:////etc/glint/glint.sqlite",
    ),
    (
        "connection",
        "sqlite:///./db/../g.db",
        "sqlite:////etc/glint/db/../g.db",
    ),
    ("connection", "SQLite:////srv/g.db", "sqlite:////srv/g.db"),
    ("node_name", "glint-2", "glint-2"),
    ("max_pool_size", "1", "1"),
    ("max_pool_size", "20", "20"),
    ("node_lease_time", "15", "15"),
    ("node_lease_time", "120", "120"),
    // PostgreSQL, shown without its password; SQLAlchemy's driver suffix dropped.
    (
        "connection",
        "postgresql+psycopg2://glance:s3cret@db.example.com:5433/glance",
        "postgresql://glance:***@db.example.com:5433/glance",
    ),
    (
        "connection",
        "postgres://glance@127.0.0.2/glance?sslmode=disable",
        "postgresql://glance@127.0.0.2/glance?sslmode=disable",
    ),
    ("flavor", "", ""),
    ("flavor", "caching", "caching"),
    ("flavor", "CacheManagement", "cachemanagement"),
    // The keystone flavors, with their [keystone_authtoken] options: see the keystone tests.
    (
        "www_authenticate_uri",
        "https://keystone.example.com:5000/",
        "https://keystone.example.com:5000",
    ),
    ("www_authenticate_uri", "", ""),
    ("auth_uri", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    (
        "auth_url",
        "http://127.0.0.1:5000/v3",
        "http://127.0.0.1:5000/v3",
    ),
    (
        "auth_url",
        "https://[2001:db8::1]/identity/",
        "https://[2001:db8::1]/identity",
    ),
    ("auth_type", "password", "password"),
    ("auth_type", "V3Password", "v3password"),
    ("username", "glint", "glint"),
    ("username", "'glance service'", "glance service"),
    ("username", "", ""),
    (
        "user_id",
        "0ddc1e6db17441f797cc8fba58812d27",
        "0ddc1e6db17441f797cc8fba58812d27",
    ),
    (
        "password",
        "s3cr3t with spaces # and a hash",
        "s3cr3t with spaces # and a hash",
    ),
    ("user_domain_name", "Default", "Default"),
    ("user_domain_id", "default", "default"),
    ("project_name", "service", "service"),
    (
        "project_id",
        "6bd9382f84834a95822b40bd2b8696af",
        "6bd9382f84834a95822b40bd2b8696af",
    ),
    ("project_domain_name", "Default", "Default"),
    ("project_domain_id", "default", "default"),
    ("region_name", "RegionOne", "RegionOne"),
    ("interface", "internal", "internal"),
    ("interface", "Public", "public"),
    ("interface", "admin", "admin"),
    ("service_token_roles", "service", "service"),
    (
        "service_token_roles",
        " service , admin,, ",
        "service,admin",
    ),
    ("service_token_roles", "", ""),
    ("service_token_roles_required", "true", "true"),
    ("service_token_roles_required", "False", "false"),
    ("disk_formats", "raw, qcow2", "raw,qcow2"),
    ("container_formats", "bare, ova", "bare,ova"),
    ("require_image_format_match", "false", "false"),
    ("vmdk_allowed_types", "streamOptimized", "streamOptimized"),
    ("gpt_safety_checks_nonfatal", "", ""),
    ("token_cache_time", "-1", "-1"),
    ("token_cache_time", "0", "0"),
    ("token_cache_time", "2", "2"),
    ("token_cache_time", "2147483", "2147483"),
    // cafile is read only with a keystone flavor: see the keystone tests.
    ("cafile", "", ""),
    ("cafile", "ca.pem", "/etc/glint/ca.pem"),
    ("insecure", "true", "true"),
    ("insecure", "no", "false"),
    ("http_connect_timeout", "1", "1"),
    ("http_connect_timeout", "30", "30"),
    ("http_request_timeout", "1", "1"),
    ("http_request_timeout", "600", "600"),
    ("http_request_max_retries", "0", "0"),
    ("http_request_max_retries", "10", "10"),
    ("image_cache_dir", "/srv/cache", "/srv/cache"),
    ("image_cache_dir", "cache/", "/etc/glint/cache"),
    ("image_cache_max_size", "0", "0"),
    ("image_cache_max_size", "10737418240", "10737418240"),
    ("policy_file", SAMPLE_POLICY, SAMPLE_POLICY),
    ("enforce_new_defaults", "false", "false"),
    ("enforce_new_defaults", "True", "true"),
    ("enforce_scope", "off", "false"),
    ("enforce_scope", "1", "true"),
    ("image_cache_stall_time", "1", "1"),
    ("image_cache_stall_time", "86400", "86400"),
    (
        "backends",
        "disable_by_files_ports",
        "disable_by_files_ports",
    ),
    ("backends", "", ""),
    (
        "backends",
        "disable_by_file, disable_by_files_ports",
        "disable_by_file,disable_by_files_ports",
    ),
    (
        "disable_by_file_path",
        "maintenance",
        "/etc/glint/maintenance",
    ),
    (
        "disable_by_file_paths",
        "9292:off, 9293:/run/glint/off",
        "9292:/etc/glint/off,9293:/run/glint/off",
    ),
    ("detailed", "false", "false"),
    // oslo.config drops one pair of quotes around the whole value.
    ("bind_host", "\"::1\"", "::1"),
    ("pid_file", "'/run/with space.pid'", "/run/with space.pid"),
];

#[test]
fn every_option_accepts_its_good_values() {
    for &(name, value, expected) in GOOD_VALUES {
        let text = format!("[{}]\n{name} = {value}\n", spec(name).section);
        let loaded = loads(&text);
        assert_eq!(shown(name, &loaded.config), expected, "{name} = {value}");
        assert_eq!(loaded.warnings, Vec::<String>::new(), "{name} = {value}");
    }
}

#[test]
fn every_option_has_good_and_bad_value_cases() {
    for spec in OPTIONS {
        assert!(
            GOOD_VALUES.iter().any(|case| case.0 == spec.name),
            "no good value for {}",
            spec.name
        );
        assert!(
            BAD_VALUES.iter().any(|case| case.0 == spec.name),
            "no bad value for {}",
            spec.name
        );
    }
}

/// (option, value in the file, the message it must get).
const BAD_VALUES: &[(&str, &str, &str)] = &[
    ("bind_host", "example.com", "`example.com` is not an IP address; use an IPv4 or IPv6 address literal (0.0.0.0 or :: for all addresses) or localhost"),
    ("bind_host", "[::1]", "`[::1]` has brackets; write the IPv6 address without them: ::1"),
    ("bind_host", "", "`` is not an IP address; use an IPv4 or IPv6 address literal (0.0.0.0 or :: for all addresses) or localhost"),
    ("bind_host", "10.0.0.256", "`10.0.0.256` is not an IP address; use an IPv4 or IPv6 address literal (0.0.0.0 or :: for all addresses) or localhost"),
    ("bind_port", "-1", "-1 is out of range; use a whole number from 0 to 65535"),
    ("bind_port", "65536", "65536 is out of range; use a whole number from 0 to 65535"),
    ("bind_port", "0x10", "`0x10` is not a decimal integer; use a whole number from 0 to 65535"),
    ("bind_port", "+80", "`+80` is not a decimal integer; use a whole number from 0 to 65535"),
    ("bind_port", "9292 # the API port", "`9292 # the API port` is not a decimal integer (comments after a value are not supported: put the comment on a line of its own); use a whole number from 0 to 65535"),
    ("bind_port", "99999999999999999999999", "99999999999999999999999 is out of range; use a whole number from 0 to 65535"),
    ("workers", "257", "257 is out of range; use a whole number from 1 to 256 (0 is read as 1)"),
    ("workers", "-1", "-1 is out of range; use a whole number from 1 to 256 (0 is read as 1)"),
    ("workers", "four", "`four` is not a decimal integer; use a whole number from 1 to 256 (0 is read as 1)"),
    ("worker_threads", "0", "0 is out of range; use a whole number from 1 to 1024"),
    ("worker_threads", "1025", "1025 is out of range; use a whole number from 1 to 1024"),
    ("backlog", "0", "0 is out of range; use a whole number from 1 to 65535"),
    ("backlog", "65536", "65536 is out of range; use a whole number from 1 to 65535"),
    ("max_client_connections", "0", "0 is out of range; use a whole number from 1 to 1048576"),
    ("max_client_connections", "1048577", "1048577 is out of range; use a whole number from 1 to 1048576"),
    ("client_socket_timeout", "2147484", "2147484 seconds is out of range; use whole seconds from 0 to 2147483 (0 means no limit)"),
    ("client_socket_timeout", "-5", "-5 seconds is out of range; use whole seconds from 0 to 2147483 (0 means no limit)"),
    ("client_socket_timeout", "1.5", "`1.5` is not a whole number of seconds; write the seconds without a unit, from 0 to 2147483 (0 means no limit)"),
    ("client_header_timeout", "0", "0 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("client_header_timeout", "60s", "`60s` is not a whole number of seconds; write the seconds without a unit, from 1 to 2147483"),
    ("client_body_timeout", "0", "0 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("client_send_timeout", "2147484", "2147484 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("client_send_min_rate", "-1", "-1 is out of range; use a whole number from 0 to 9223372036854775807"),
    ("http_keepalive", "maybe", "`maybe` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("http_keepalive", "t", "`t` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("http_keepalive", "", "`` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("reload_handoff", "always", "`always` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("reload_strategy", "serial", "`serial` is not a reload strategy (parallel: the whole generation at once; rolling: one child at a time); use one of parallel, rolling"),
    ("max_header_line", "255", "255 is out of range; use a whole number from 256 to 1048576"),
    ("max_header_line", "1048577", "1048577 is out of range; use a whole number from 256 to 1048576"),
    ("tcp_keepidle", "0", "0 seconds is out of range; use whole seconds from 1 to 32767"),
    ("tcp_keepidle", "32768", "32768 seconds is out of range; use whole seconds from 1 to 32767"),
    ("graceful_shutdown_timeout", "soon", "`soon` is not a whole number of seconds; write the seconds without a unit, from 0 to 2147483 (0 means no limit)"),
    ("pid_file", "", "is empty; give a path, or remove the line to use the default"),
    ("pid_file", "/run/glint/", "`/run/glint/` names a folder; give the path of a file"),
    ("status_file", "/run/glint/..", "`/run/glint/..` names a folder; give the path of a file"),
    ("status_file", "", "is empty; give a path, or remove the line to use the default"),
    ("log_file", "/var/log/", "`/var/log/` names a folder; give the path of a file"),
    ("log_dir", "/var/\0log", "contains a NUL byte, which no path can hold; remove it"),
    ("use_stderr", "2", "`2` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("debug", "enabled", "`enabled` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("access_log", "maybe", "`maybe` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("access_log_file", "/var/log/", "`/var/log/` names a folder; give the path of a file"),
    ("access_log_flush_ms", "60001", "60001 is out of range; use a whole number from 0 to 60000"),
    ("access_log_flush_ms", "0.05", "`0.05` is not a decimal integer; use a whole number from 0 to 60000"),
    ("access_log_healthcheck", "2", "`2` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("use_syslog", "syslog", "`syslog` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("syslog_log_facility", "local8", "`local8` is not a syslog facility; use one of LOG_KERN, LOG_USER, LOG_MAIL, LOG_DAEMON, LOG_AUTH, LOG_SYSLOG, LOG_LPR, LOG_NEWS, LOG_UUCP, LOG_CRON, LOG_AUTHPRIV, LOG_FTP, LOG_LOCAL0, LOG_LOCAL1, LOG_LOCAL2, LOG_LOCAL3, LOG_LOCAL4, LOG_LOCAL5, LOG_LOCAL6, LOG_LOCAL7 (the `LOG_` may be left out, in any case)"),
    ("public_endpoint", "images.example.com", "`images.example.com` is not an http:// or https:// URL; write the full base URL, such as https://images.example.com:9292"),
    ("public_endpoint", "ftp://example.com", "`ftp://example.com` is not an http:// or https:// URL; write the full base URL, such as https://images.example.com:9292"),
    ("public_endpoint", "http://", "`http://` has no host; write the full base URL, such as https://images.example.com:9292"),
    ("public_endpoint", "https:///path", "`https:///path` has no host; write the full base URL, such as https://images.example.com:9292"),
    ("public_endpoint", "http://example.com/?x=1", "`http://example.com/?x=1` has a query or fragment; give only scheme, host, port and path"),
    ("public_endpoint", "http://exa mple.com", "`http://exa mple.com` contains a space or control character; a URL cannot"),
    ("image_metadata_size_cap", "4095", "4095 is out of range; use a whole number from 4096 to 1048576"),
    ("image_metadata_size_cap", "1048577", "1048577 is out of range; use a whole number from 4096 to 1048576"),
    ("image_member_quota", "-2", "-2 is out of range; use a whole number from -1 to 9223372036854775807"),
    ("task_time_to_live", "-1", "-1 is out of range; use a whole number from 0 to 876000"),
    ("task_time_to_live", "1.5", "`1.5` is not a decimal integer; use a whole number from 0 to 876000"),
    ("image_member_quota", "many", "`many` is not a decimal integer; use a whole number from -1 to 9223372036854775807"),
    ("image_size_cap", "0", "0 is out of range; use a whole number from 1 to 9223372036854775807"),
    ("image_size_cap", "9223372036854775808", "9223372036854775808 is out of range; use a whole number from 1 to 9223372036854775807"),
    ("image_size_cap", "-1", "-1 is out of range; use a whole number from 1 to 9223372036854775807"),
    ("image_size_cap", "1TiB", "`1TiB` is not a decimal integer; use a whole number from 1 to 9223372036854775807"),
    ("hashing_algorithm", "md5", "`md5` is not a hashing algorithm glint offers; use one of sha256, sha384, sha512"),
    ("hashing_algorithm", "sha1", "`sha1` is not a hashing algorithm glint offers; use one of sha256, sha384, sha512"),
    ("hashing_algorithm", "whirlpool", "`whirlpool` is not a hashing algorithm glint offers; use one of sha256, sha384, sha512"),
    ("hashing_algorithm", "sha3_512", "`sha3_512` is not a hashing algorithm glint offers; use one of sha256, sha384, sha512"),
    ("hashing_algorithm", "", "`` is not a hashing algorithm glint offers; use one of sha256, sha384, sha512"),
    ("hashing_algorithm", "sha512 # default", "`sha512 # default` is not a hashing algorithm glint offers (comments after a value are not supported: put the comment on a line of its own); use one of sha256, sha384, sha512"),
    ("auth_strategy", "keystone", "keystone needs a keystone pipeline: set [paste_deploy] flavor = keystone (or keystone+caching, keystone+cachemanagement) and the [keystone_authtoken] options"),
    ("auth_strategy", "Keystone", "keystone needs a keystone pipeline: set [paste_deploy] flavor = keystone (or keystone+caching, keystone+cachemanagement) and the [keystone_authtoken] options"),
    ("auth_strategy", "none", "`none` is not an access control glint offers; use one of noauth, token, keystone"),
    ("auth_strategy", "", "`` is not an access control glint offers; use one of noauth, token, keystone"),
    ("auth_strategy", "token", "token needs the tokens: set auth_token_file to a file with one token per line"),
    ("auth_token_file", "/etc/glint/", "`/etc/glint/` names a folder; give the path of a file"),
    ("limit_param_default", "0", "0 is out of range; use a whole number from 1 to 1000000"),
    ("limit_param_default", "1001", "limit_param_default (1001) is larger than api_limit_max (1000); make limit_param_default at most api_limit_max"),
    ("api_limit_max", "0", "0 is out of range; use a whole number from 1 to 1000000"),
    ("api_limit_max", "1000001", "1000001 is out of range; use a whole number from 1 to 1000000"),
    ("api_limit_max", "24", "limit_param_default (25) is larger than api_limit_max (24); make limit_param_default at most api_limit_max"),
    ("filesystem_store_datadir", "", "is empty; give a path, or remove the line to use the default"),
    ("filesystem_store_datadir", "/srv/\0images", "contains a NUL byte, which no path can hold; remove it"),
    ("filesystem_store_datadirs", "/srv/a:fast", "`fast` after the last `:` is not an integer priority; write PATH:PRIORITY such as /srv/images:10 (a path holding `:` needs the priority: `/srv/a:fast:0`)"),
    ("filesystem_store_datadirs", "/srv/a:1.5", "`1.5` after the last `:` is not an integer priority; write PATH:PRIORITY such as /srv/images:10 (a path holding `:` needs the priority: `/srv/a:1.5:0`)"),
    ("filesystem_store_datadirs", "/srv/a:-", "`-` after the last `:` is not an integer priority; write PATH:PRIORITY such as /srv/images:10 (a path holding `:` needs the priority: `/srv/a:-:0`)"),
    ("filesystem_store_datadirs", "/srv/a:99999999999999999999", "priority 99999999999999999999 is out of range; use a whole number from -9223372036854775808 to 9223372036854775807"),
    ("filesystem_store_datadirs", ":5", "`:5` names no folder; write PATH:PRIORITY such as /srv/images:10"),
    ("filesystem_store_datadirs", "", "`` names no folder; write PATH:PRIORITY such as /srv/images:10"),
    ("filesystem_store_datadirs", "/srv/\0a:1", "contains a NUL byte, which no path can hold; remove it"),
    ("filesystem_store_file_perm", "0648", "`0648` is not an octal file mode (octal digits go from 0 to 7); write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "rw-r-----", "`rw-r-----` is not an octal file mode; write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "0o640", "`0o640` is not an octal file mode; write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "-1", "`-1` is not an octal file mode; write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "", "`` is not an octal file mode; write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "1777", "1777 is out of range (setuid, setgid and sticky bits are not allowed); write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "77777777777777777777", "77777777777777777777 is out of range (setuid, setgid and sticky bits are not allowed); write an octal mode from 0 to 0777 such as 0640, or 0 for glint's default"),
    ("filesystem_store_file_perm", "0200", "0200 does not let the owner read the image files, so glint could not serve them; add owner read (0400), as in 0640"),
    ("filesystem_store_file_perm", "044", "044 does not let the owner read the image files, so glint could not serve them; add owner read (0400), as in 0640"),
    ("default_store", "swift", "`swift` is not available: glint stores images on the filesystem only; use file"),
    ("default_store", "http", "`http` is not available: glint stores images on the filesystem only; use file"),
    ("default_store", "", "`` is not available: glint stores images on the filesystem only; use file"),
    ("stores", "http", "`http` does not include file; glint stores images on the filesystem: add file to the list"),
    ("stores", "swift, rbd", "`swift, rbd` does not include file; glint stores images on the filesystem: add file to the list"),
    ("stores", "", "`` does not include file; glint stores images on the filesystem: add file to the list"),
    ("stores", "files", "`files` does not include file; glint stores images on the filesystem: add file to the list"),
    ("connection", "mysql+pymysql://glance:secret@db.example.com/glance", "names a `mysql+pymysql` database; glint keeps its metadata in SQLite or PostgreSQL; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "postgresql://glance@db", "names no database; use postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("node_lease_time", "14", "14 is out of range; use a whole number from 15 to 3600"),
    ("max_pool_size", "0", "0 is out of range; use a whole number from 1 to 64"),
    ("node_name", "glint_2", "`glint_2` cannot name a node; set it to 1 to 63 letters, digits and `-`"),
    ("node_name", "glint.example.com", "`glint.example.com` cannot name a node; set it to 1 to 63 letters, digits and `-`"),
    ("connection", "postgresql+psycopg2://glance:pw@db/", "names no database; use postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "postgresql://glance:p w@db/glance", "has spaces or control characters; percent-encode them (%20)"),
    ("connection", "/var/lib/glint/glint.sqlite", "is not a database URL; glint keeps its metadata in SQLite or PostgreSQL; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "", "is not a database URL; glint keeps its metadata in SQLite or PostgreSQL; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "sqlite://", "`sqlite://` is an in-memory database, which loses every image at restart; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "sqlite:///", "`sqlite:///` is an in-memory database, which loses every image at restart; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "sqlite:///:memory:", "`sqlite:///:memory:` is an in-memory database, which loses every image at restart; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "sqlite://host/glint.sqlite", "`sqlite://host/glint.sqlite` is not a SQLite file URL; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "sqlite:glint.sqlite", "`sqlite:glint.sqlite` is not a SQLite file URL; use sqlite:///RELATIVE/PATH (relative to the config folder) or sqlite:////ABSOLUTE/PATH, or postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    ("connection", "sqlite:///glint.sqlite?timeout=5", "`sqlite:///glint.sqlite?timeout=5` has query parameters, which glint does not support; remove the `?` and what follows"),
    ("connection", "sqlite:////var/lib/glint/", "`/var/lib/glint/` names a folder; give the path of a file"),
    ("flavor", "cache", "`cache` is not a pipeline flavor glint has; use one of \"\" (empty, no cache), caching, cachemanagement, or keystone, keystone+caching, keystone+cachemanagement for the same with Keystone tokens"),
    ("flavor", "keystone+", "`keystone+` is not a pipeline flavor glint has; use one of \"\" (empty, no cache), caching, cachemanagement, or keystone, keystone+caching, keystone+cachemanagement for the same with Keystone tokens"),
    ("flavor", "keystone+keystone", "`keystone+keystone` is not a pipeline flavor glint has; use one of \"\" (empty, no cache), caching, cachemanagement, or keystone, keystone+caching, keystone+cachemanagement for the same with Keystone tokens"),
    ("flavor", "caching+keystone", "`caching+keystone` is not a pipeline flavor glint has; use one of \"\" (empty, no cache), caching, cachemanagement, or keystone, keystone+caching, keystone+cachemanagement for the same with Keystone tokens"),
    ("www_authenticate_uri", "keystone.example.com:5000", "`keystone.example.com:5000` is not an http:// or https:// URL; write the full base URL, such as https://images.example.com:9292"),
    ("auth_uri", "http://", "`http://` has no host; write the full base URL, such as https://images.example.com:9292"),
    ("auth_url", "ftp://keystone", "`ftp://keystone` is not an http:// or https:// URL; write the full base URL, such as https://images.example.com:9292"),
    ("auth_type", "token", "`token` is not an auth plugin glint has (it authenticates itself with a password); use one of password, v3password"),
    ("auth_type", "v3applicationcredential", "`v3applicationcredential` is not an auth plugin glint has (it authenticates itself with a password); use one of password, v3password"),
    ("auth_type", "", "`` is not an auth plugin glint has (it authenticates itself with a password); use one of password, v3password"),
    ("username", "glint\u{7}", "contains a control character; remove it"),
    ("user_id", "\u{1b}[0m", "contains a control character; remove it"),
    ("password", "se\u{0}cret", "contains a control character; remove it"),
    ("user_domain_name", "De\u{7f}fault", "contains a control character; remove it"),
    ("user_domain_id", "\u{0}", "contains a control character; remove it"),
    ("project_name", "ser\u{8}vice", "contains a control character; remove it"),
    ("project_id", "\u{1}", "contains a control character; remove it"),
    ("project_domain_name", "\u{2}", "contains a control character; remove it"),
    ("project_domain_id", "\u{3}", "contains a control character; remove it"),
    ("region_name", "Region\u{0}One", "contains a control character; remove it"),
    ("interface", "internalURL", "`internalURL` is not a catalog interface; use one of internal, public, admin"),
    ("service_token_roles", "service,\u{7}", "contains a control character; remove it"),
    ("service_token_roles_required", "required", "`required` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("disk_formats", "raw,\u{7}", "contains a control character; remove it"),
    ("container_formats", "bare,\u{7}", "contains a control character; remove it"),
    ("require_image_format_match", "maybe", "`maybe` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("vmdk_allowed_types", "\u{7}", "contains a control character; remove it"),
    ("gpt_safety_checks_nonfatal", "mbr,\u{7}", "contains a control character; remove it"),
    ("token_cache_time", "-2", "-2 is out of range; use a whole number from -1 to 2147483"),
    ("token_cache_time", "5m", "`5m` is not a decimal integer; use a whole number from -1 to 2147483"),
    ("token_cache_time", "2147484", "2147484 is out of range; use a whole number from -1 to 2147483"),
    ("cafile", "/etc/ssl/certs/", "`/etc/ssl/certs/` names a folder; give the path of a file"),
    ("insecure", "sometimes", "`sometimes` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("http_connect_timeout", "0", "0 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("http_connect_timeout", "0.5", "`0.5` is not a whole number of seconds; write the seconds without a unit, from 1 to 2147483"),
    ("http_request_timeout", "0", "0 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("http_request_max_retries", "-1", "-1 is out of range; use a whole number from 0 to 10"),
    ("http_request_max_retries", "11", "11 is out of range; use a whole number from 0 to 10"),
    ("image_cache_dir", "", "is empty; give a path, or remove the line to use the default"),
    ("image_cache_max_size", "-1", "-1 is out of range; use a whole number from 0 to 9223372036854775807"),
    ("image_cache_max_size", "10G", "`10G` is not a decimal integer; use a whole number from 0 to 9223372036854775807"),
    ("policy_file", "", "is empty; give a path, or remove the line to use the default"),
    ("policy_file", "/nonexistent/policy.yaml", "cannot read `/nonexistent/policy.yaml`: No such file or directory (os error 2); create it, fix the path, or remove the line to use Glance's default rules"),
    ("enforce_new_defaults", "maybe", "`maybe` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("enforce_scope", "project", "`project` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("image_cache_stall_time", "0", "0 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("image_cache_stall_time", "1d", "`1d` is not a whole number of seconds; write the seconds without a unit, from 1 to 2147483"),
    ("enabled_import_methods", "glance-direct,\u{7}", "contains a control character; remove it"),
    ("backends", "disable_by_file,\u{7}", "contains a control character; remove it"),
    ("disable_by_file_path", "/run/", "`/run/` names a folder; give the path of a file"),
    ("disable_by_file_paths", "x:y", "`x:y` is not PORT:PATH (a port from 0 to 65535, a colon, a file path)"),
    ("disable_by_file_paths", "9292", "`9292` is not PORT:PATH (a port from 0 to 65535, a colon, a file path)"),
    ("detailed", "2", "`2` is not a boolean; use true or false (yes/no, on/off and 1/0 work too)"),
    ("allowed_schemes", "http,\u{7}", "contains a control character; remove it"),
    ("disallowed_schemes", "\u{7}", "contains a control character; remove it"),
    ("allowed_hosts", "images_example", "images_example is neither an IP address nor a host name"),
    ("disallowed_hosts", "-a.example", "-a.example is neither an IP address nor a host name"),
    ("allowed_ports", "[80, http]", "http is not a port: use numbers from 1 to 65535"),
    ("allowed_ports", "0", "0 is not a port: use numbers from 1 to 65535"),
    ("disallowed_ports", "65536", "65536 is not a port: use numbers from 1 to 65535"),
    ("web_download_connect_timeout", "0", "0 seconds is out of range; use whole seconds from 1 to 2147483"),
    ("web_download_read_timeout", "1m", "`1m` is not a whole number of seconds; write the seconds without a unit, from 1 to 2147483"),
    ("node_staging_uri", "http://example.com/staging", "must be file:// followed by an absolute path, such as file:///var/lib/glint/staging/"),
    ("node_staging_uri", "file://staging", "must be file:// followed by an absolute path, such as file:///var/lib/glint/staging/"),
    ("enabled_backends", "fast:rbd", "backend `fast` has type `rbd`; glint serves only the file type, so change it to fast:file or remove it"),
    ("default_backend", "\u{7}", "contains a control character; remove it"),
];

#[test]
fn every_option_rejects_its_bad_values_with_line_and_fix() {
    for &(name, value, message) in BAD_VALUES {
        let section = spec(name).section;
        let text = format!("[{section}]\n# a comment\n{name} = {value}\n");
        let error = refused(&text);
        let expected = Problem {
            file: PathBuf::from(CONFIG_PATH),
            line: Some(3),
            section: Some(section.to_string()),
            option: Some(name.to_string()),
            message: message.to_string(),
        };
        assert_eq!(error.problems, vec![expected], "{name} = {value}");
    }
}

#[test]
fn booleans_accept_oslo_spellings_in_any_case() {
    let cases = [
        ("true", true),
        ("TRUE", true),
        ("yes", true),
        ("Yes", true),
        ("on", true),
        ("ON", true),
        ("1", true),
        ("false", false),
        ("False", false),
        ("no", false),
        ("NO", false),
        ("off", false),
        ("Off", false),
        ("0", false),
    ];
    for (text, expected) in cases {
        let config = loads(&format!(
            "[DEFAULT]\nhttp_keepalive = {text}\ndebug = {text}\n"
        ))
        .config;
        assert_eq!(config.http_keepalive, expected, "{text}");
        assert_eq!(config.debug, expected, "{text}");
    }
}

#[test]
fn workers_zero_is_read_as_one_with_a_warning() {
    let loaded = loads("[DEFAULT]\nworkers = 0\n");
    assert_eq!(loaded.config.workers, 1);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:2: [DEFAULT] workers: 0 asks Glance to serve in the \
             parent process, but glint always serves from children; using 1 worker. Set \
             workers = 1 to silence this warning"
                .to_string()
        ]
    );
}

#[test]
fn hash_algorithm_names_match_the_accepted_values() {
    assert_eq!(
        HashAlgorithm::ALL.map(|algorithm| algorithm.name()),
        HASH_ALGORITHM_NAMES
    );
    for algorithm in HashAlgorithm::ALL {
        assert_eq!(HashAlgorithm::from_name(algorithm.name()), Some(algorithm));
        assert_eq!(algorithm.to_string(), algorithm.name());
    }
    assert_eq!(HashAlgorithm::from_name("SHA512"), None);
    let config = loads("[DEFAULT]\nhashing_algorithm = SHA256\n").config;
    assert_eq!(config.hashing_algorithm, HashAlgorithm::Sha256);
}

#[test]
fn page_limits_are_checked_against_each_other() {
    // (settings, the problem's line and option, or None when the file loads)
    let cases: &[(&str, Option<(usize, &str)>)] = &[
        ("limit_param_default = 1000", None),
        ("limit_param_default = 7\napi_limit_max = 7", None),
        (
            "api_limit_max = 1000000\nlimit_param_default = 1000000",
            None,
        ),
        (
            "limit_param_default = 50\napi_limit_max = 40",
            Some((2, "limit_param_default")),
        ),
        (
            "api_limit_max = 40\nlimit_param_default = 50",
            Some((3, "limit_param_default")),
        ),
        (
            "workers = 2\napi_limit_max = 10",
            Some((3, "api_limit_max")),
        ),
    ];
    for &(settings, expected) in cases {
        let text = format!("[DEFAULT]\n{settings}\n");
        match expected {
            None => {
                let config = loads(&text).config;
                assert!(config.limit_param_default <= config.api_limit_max);
            }
            Some((line, option)) => {
                let error = refused(&text);
                assert_eq!(error.problems.len(), 1, "{error}");
                assert_eq!(error.problems[0].line, Some(line), "{error}");
                assert_eq!(error.problems[0].option.as_deref(), Some(option), "{error}");
                assert!(
                    error.problems[0].message.contains("limit_param_default")
                        && error.problems[0].message.contains("api_limit_max"),
                    "{error}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Image store and database

fn datadir(path: &str, priority: i64) -> DataDir {
    DataDir {
        path: PathBuf::from(path),
        priority,
    }
}

#[test]
fn datadirs_keep_every_line_in_file_order() {
    // (the [glance_store] section, the folders the config gets)
    let cases: &[(&str, &[(&str, i64)])] = &[
        ("", &[("/var/lib/glance/images", 0)]),
        (
            "filesystem_store_datadir = /srv/images",
            &[("/srv/images", 0)],
        ),
        (
            "filesystem_store_datadirs = /srv/a:10\nfilesystem_store_datadirs = /srv/b",
            &[("/srv/a", 10), ("/srv/b", 0)],
        ),
        (
            "filesystem_store_datadirs = /srv/a:\nfilesystem_store_datadirs = b:-1\n\
             filesystem_store_datadirs = /mnt/c:d:+3",
            &[("/srv/a", 0), ("/etc/glint/b", -1), ("/mnt/c:d", 3)],
        ),
        // A repeated section header continues the list.
        (
            "filesystem_store_datadirs = /srv/a:1\n[DEFAULT]\nworkers = 2\n[glance_store]\n\
             filesystem_store_datadirs = /srv/b:2",
            &[("/srv/a", 1), ("/srv/b", 2)],
        ),
        (
            "filesystem_store_datadirs = '/srv/quoted dir:4'",
            &[("/srv/quoted dir", 4)],
        ),
    ];
    for &(settings, expected) in cases {
        let loaded = loads(&format!("[glance_store]\n{settings}\n"));
        let expected: Vec<DataDir> = expected
            .iter()
            .map(|&(path, priority)| datadir(path, priority))
            .collect();
        assert_eq!(loaded.config.datadirs, expected, "{settings}");
        assert_eq!(loaded.warnings, Vec::<String>::new(), "{settings}");
    }
}

#[test]
fn every_bad_datadirs_line_is_reported_with_its_own_line() {
    let text = "\
[glance_store]
filesystem_store_datadirs = /srv/a:1
filesystem_store_datadirs = /srv/b:x
filesystem_store_datadirs = /srv/c:2
filesystem_store_datadirs = :3
filesystem_store_datadirs = /srv/d:y
";
    let error = refused(text);
    let lines: Vec<Option<usize>> = error.problems.iter().map(|problem| problem.line).collect();
    assert_eq!(lines, vec![Some(3), Some(5), Some(6)], "{error}");
    for problem in &error.problems {
        assert_eq!(problem.section.as_deref(), Some("glance_store"));
        assert_eq!(problem.option.as_deref(), Some("filesystem_store_datadirs"));
    }
}

#[test]
fn datadirs_duplicates_warn_and_conflicts_are_errors() {
    let loaded = loads(
        "[glance_store]\nfilesystem_store_datadirs = /srv/a:1\nfilesystem_store_datadirs = \
         /srv/b:2\nfilesystem_store_datadirs = /srv/a/:1\n",
    );
    assert_eq!(
        loaded.config.datadirs,
        vec![datadir("/srv/a", 1), datadir("/srv/b", 2)]
    );
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:4: [glance_store] filesystem_store_datadirs: `/srv/a` \
             with priority 1 is already listed on line 2; remove this line"
                .to_string()
        ]
    );

    // A relative and an absolute spelling of one folder are the same folder.
    let error = refused(
        "[glance_store]\nfilesystem_store_datadirs = images:1\nfilesystem_store_datadirs = \
         /srv/b:2\nfilesystem_store_datadirs = /etc/glint/./images:5\n",
    );
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:4: [glance_store] filesystem_store_datadirs: \
         `/etc/glint/images` is listed with priority 5 and on line 2 with priority 1; give each \
         folder one priority and list it once"
    );
}

#[test]
fn datadir_and_datadirs_together_are_an_error() {
    let text = "\
[glance_store]
filesystem_store_datadirs = /srv/a:1
filesystem_store_datadir = /srv/images
filesystem_store_datadirs = /srv/b:2
";
    let error = refused(text);
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:3: [glance_store] filesystem_store_datadir: is set together \
         with filesystem_store_datadirs (line 2); set one of them: filesystem_store_datadir for \
         one folder, filesystem_store_datadirs for several"
    );
    // Setting filesystem_store_datadir to its default value is setting it too.
    let error = refused(
        "[glance_store]\nfilesystem_store_datadir = /var/lib/glance/images\n\
         filesystem_store_datadirs = /srv/a\n",
    );
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].line, Some(2));
}

#[test]
fn only_single_valued_options_warn_when_repeated() {
    let loaded = loads(
        "[glance_store]\nfilesystem_store_datadirs = /a:1\nfilesystem_store_datadirs = /b:1\n\
         [glance_store]\nfilesystem_store_datadirs = /c:2\n",
    );
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert_eq!(loaded.config.datadirs.len(), 3);

    let loaded =
        loads("[glance_store]\nfilesystem_store_datadir = /a\nfilesystem_store_datadir = /b\n");
    assert_eq!(loaded.config.datadirs, vec![datadir("/b", 0)]);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:3: [glance_store] filesystem_store_datadir: set more \
             than once (also on line 2); this last value is used, remove the others"
                .to_string()
        ]
    );
}

#[test]
fn stores_other_than_file_draw_one_warning() {
    let cases = [
        ("file,http", "`http` is not served by glint"),
        (
            "http, file ,swift,",
            "`http`, `swift` are not served by glint",
        ),
    ];
    for (stores, warning) in cases {
        let loaded = loads(&format!(
            "[glance_store]\ndefault_store = file\nstores = {stores}\n"
        ));
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].starts_with(&format!(
                "/etc/glint/glint-api.conf:3: [glance_store] stores: {warning}, which stores \
                 images on the filesystem only; set stores = file to silence this warning"
            )),
            "{:?}",
            loaded.warnings
        );
    }
}

#[test]
fn database_errors_never_repeat_a_foreign_url() {
    // The URL of another database may carry a password, and errors go to logs.
    let error = refused("[database]\nconnection = mysql+pymysql://glance:s3cret@db/glance\n");
    assert!(!error.to_string().contains("s3cret"), "{error}");
    assert!(
        error
            .to_string()
            .contains("glint keeps its metadata in SQLite or PostgreSQL; use sqlite:///"),
        "{error}"
    );
}

#[test]
fn database_file_must_differ_from_the_state_and_log_files() {
    let error = refused(
        "[DEFAULT]\nlog_file = /var/lib/glint/glint.sqlite\n[database]\n\
         connection = sqlite:////var/lib/glint/glint.sqlite\n",
    );
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:4: [database] connection: names the same file as [DEFAULT] \
         log_file; give each its own file"
    );
    let error = refused("[DEFAULT]\npid_file = /var/lib/glint/glint.sqlite\n");
    assert_eq!(error.problems[0].line, Some(2));
    assert_eq!(error.problems[0].option.as_deref(), Some("pid_file"));
}

#[test]
fn glance_store_and_database_sections_warn_per_unknown_option() {
    let text = "\
[glance_store]
filesystem_store_datadir = /srv/images
swift_store_container = glance
filesystem_store_datadirz = /srv/other
[database]
connection = sqlite:///glint.sqlite
max_overflow = 10
[DEFAULT]
filesystem_store_file_perm = 0640
";
    let loaded = loads(text);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:3: [glance_store] swift_store_container: unknown option, ignored (glint does not use it)",
            "/etc/glint/glint-api.conf:4: [glance_store] filesystem_store_datadirz: unknown option, ignored; did you mean filesystem_store_datadir?",
            "/etc/glint/glint-api.conf:7: [database] max_overflow: unknown option, ignored (glint does not use it)",
            "/etc/glint/glint-api.conf:9: [DEFAULT] filesystem_store_file_perm: not an option of this section, ignored; it belongs in [glance_store], move it there",
        ]
    );
    assert_eq!(
        loaded.config.database,
        Database::Sqlite(PathBuf::from("/etc/glint/glint.sqlite"))
    );
}

#[test]
fn zero_timeouts_mean_no_limit() {
    let config =
        loads("[DEFAULT]\nclient_socket_timeout = 0\ngraceful_shutdown_timeout = 0\n").config;
    assert_eq!(config.client_socket_timeout, None);
    assert_eq!(config.graceful_shutdown_timeout, None);
}

// ---------------------------------------------------------------------------------------------
// rust-ini pitfalls and INI syntax

#[test]
fn indented_line_continues_the_value_and_is_refused_for_single_values() {
    // Without indented continuation, rust-ini would read a key named "  workers".
    let error = refused("[DEFAULT]\nbind_port = 9292\n  workers = 4\n");
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].line, Some(2));
    assert_eq!(error.problems[0].option.as_deref(), Some("bind_port"));
    assert!(
        error.problems[0]
            .message
            .contains("continues on an indented line"),
        "{error}"
    );
}

#[test]
fn indented_comment_right_after_a_value_is_part_of_it() {
    let error = refused("[DEFAULT]\nbind_port = 9292\n    # the port\nworkers = 2\n");
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].line, Some(2));
    assert!(error.problems[0]
        .message
        .contains("start it at column 1 if it is a comment"));
}

#[test]
fn indented_line_after_a_blank_line_is_refused_with_its_line() {
    // rust-ini would fold the indented comment into the next key's name, or into the value above.
    for text in [
        "[DEFAULT]\n\n  # indented comment\nbind_port = 1\n",
        "[DEFAULT]\nbind_port = 1\n\n  # indented comment\nworkers = 2\n",
        "  # indented at the top\n[DEFAULT]\nbind_port = 1\n",
    ] {
        let error = refused(text);
        let indented_line = text
            .lines()
            .position(|line| line.starts_with("  "))
            .map(|i| i + 1);
        let problem = error
            .problems
            .iter()
            .find(|problem| {
                problem
                    .message
                    .contains("is indented but continues no value")
            })
            .unwrap_or_else(|| panic!("no indentation problem in:\n{error}"));
        assert_eq!(problem.line, indented_line, "{error}");
    }
}

#[test]
fn key_without_equals_is_an_error_with_its_line() {
    // rust-ini would read the next key as "bind_port\nworkers" and lose workers silently.
    let error = refused("[DEFAULT]\nbind_port\nworkers = 2\n");
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:2: [DEFAULT] `bind_port` has no `=`; write `name = value`, \
         or comment the line out with `#`"
    );
    // At the end of the file rust-ini fails outright; the message is the same.
    let error = refused("[DEFAULT]\nworkers = 2\nbind_port");
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].line, Some(3));
}

#[test]
fn malformed_lines_are_errors_with_their_lines() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[DEFAULT]\nbind port = 1\n",
            2,
            "`bind port` is not an option name",
        ),
        ("[DEFAULT]\n= 1\n", 2, "the line starts with its separator"),
        (
            "[DEFAULT]\nbind_port: 1\nbind$port = 2\n",
            3,
            "`bind$port` is not an option name",
        ),
        (
            "[DEFAULT\nbind_port = 1\n",
            1,
            "`[DEFAULT` is not a section header",
        ),
        (
            "[DEFAULT] # main\nbind_port = 1\n",
            1,
            "is not a section header",
        ),
        ("[]\nbind_port = 1\n", 1, "`[]` is not a section header"),
        (
            "bind_port = 1\n[DEFAULT]\n",
            1,
            "the option comes before any section header; put it under [DEFAULT]",
        ),
        (
            "[DEFAULT]\nlog_dir = C:\\logs\\\nworkers = 2\n",
            2,
            "the value ends with `\\`",
        ),
        (
            "[DEFAULT]\nbind_port = 1\rworkers = 2\n",
            2,
            "carriage return",
        ),
    ];
    for &(text, line, message) in cases {
        let error = refused(text);
        assert!(
            error
                .problems
                .iter()
                .any(|problem| problem.line == Some(line) && problem.message.contains(message)),
            "expected line {line}: {message}\ngot:\n{error}\n--- config ---\n{text}"
        );
    }
}

#[test]
fn repeated_default_sections_are_merged() {
    let loaded =
        loads("[DEFAULT]\nbind_port = 1\n[glance_store]\nstores = file\n[DEFAULT]\nworkers = 3\n");
    assert_eq!(loaded.config.bind_port, 1);
    assert_eq!(loaded.config.workers, 3);
}

#[test]
fn repeated_key_keeps_the_last_value_with_a_warning() {
    let loaded = loads("[DEFAULT]\nbind_port = 1\nworkers = 2\n[DEFAULT]\nbind_port = 3\n");
    assert_eq!(loaded.config.bind_port, 3);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:5: [DEFAULT] bind_port: set more than once (also on \
             line 2); this last value is used, remove the others"
                .to_string()
        ]
    );
    // The line of a bad value is the line of the last occurrence, the one that counts.
    let error = refused("[DEFAULT]\nbind_port = 1\nbind_port = x\n");
    assert_eq!(error.problems[0].line, Some(3));
}

#[test]
fn backslashes_in_values_are_kept() {
    let config = loads("[DEFAULT]\nlog_dir = /var/log/a\\tb\\n\nlog_file = c\\x41.log\n").config;
    assert_eq!(config.log_dir, Some(PathBuf::from("/var/log/a\\tb\\n")));
    assert_eq!(
        config.log_file,
        Some(PathBuf::from("/var/log/a\\tb\\n/c\\x41.log"))
    );
}

#[test]
fn syntax_variants_oslo_accepts_load() {
    let cases = [
        "[DEFAULT]\nbind_port: 1234\n",
        "[DEFAULT]\nbind_port=1234\n",
        "[DEFAULT]\r\nbind_port = 1234\r\n",
        "\u{feff}[DEFAULT]\nbind_port = 1234\n",
        "; comment\n# comment\n[ DEFAULT ]\n\tbind_port_is_not_this = x\n",
        "[DEFAULT]\nbind_port = \"1234\"\n",
        "[DEFAULT]\nbind_port = 1234\n\n\n",
    ];
    for text in cases {
        let loaded = load_text(text);
        match loaded {
            Ok(loaded) => {
                assert_eq!(loaded.config.bind_port, 1234, "{text:?}");
                assert!(
                    loaded.warnings.is_empty(),
                    "{text:?}: {:?}",
                    loaded.warnings
                );
            }
            // The tab-indented line after a header continues nothing: oslo refuses it too.
            Err(error) => assert!(text.contains('\t'), "{text:?}: {error}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

#[test]
fn relative_paths_resolve_against_the_config_folder_or_log_dir() {
    // (settings, pid_file, status_file, log_file)
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "",
            "/run/glint/glint-api.pid",
            "/run/glint/glint-api.status.json",
            None,
        ),
        (
            "pid_file = run/api.pid",
            "/etc/glint/run/api.pid",
            "/etc/glint/run/api.status.json",
            None,
        ),
        (
            "pid_file = /run/x/glint",
            "/run/x/glint",
            "/run/x/glint.status.json",
            None,
        ),
        (
            "pid_file = /run/x/g.pid.old",
            "/run/x/g.pid.old",
            "/run/x/g.pid.status.json",
            None,
        ),
        (
            "status_file = s.json",
            "/run/glint/glint-api.pid",
            "/etc/glint/s.json",
            None,
        ),
        (
            "log_file = api.log",
            "/run/glint/glint-api.pid",
            "/run/glint/glint-api.status.json",
            Some("/etc/glint/api.log"),
        ),
        (
            "log_file = api.log\nlog_dir = /var/log/glint",
            "/run/glint/glint-api.pid",
            "/run/glint/glint-api.status.json",
            Some("/var/log/glint/api.log"),
        ),
        (
            "log_dir = logs\nlog_file = ./api.log",
            "/run/glint/glint-api.pid",
            "/run/glint/glint-api.status.json",
            Some("/etc/glint/logs/api.log"),
        ),
        (
            "log_dir = logs\nlog_file = /var/log/api.log",
            "/run/glint/glint-api.pid",
            "/run/glint/glint-api.status.json",
            Some("/var/log/api.log"),
        ),
    ];
    for &(settings, pid_file, status_file, log_file) in cases {
        let config = loads(&format!("[DEFAULT]\n{settings}\n")).config;
        assert_eq!(config.pid_file, PathBuf::from(pid_file), "{settings}");
        assert_eq!(config.status_file, PathBuf::from(status_file), "{settings}");
        assert_eq!(config.log_file, log_file.map(PathBuf::from), "{settings}");
    }
}

#[test]
fn relative_config_path_is_made_absolute_first() {
    let loaded = load_str(
        "[DEFAULT]\npid_file = glint.pid\n",
        Path::new("conf/glint.conf"),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let current_dir = std::env::current_dir().expect("current dir");
    assert_eq!(loaded.config.path, current_dir.join("conf/glint.conf"));
    assert_eq!(loaded.config.pid_file, current_dir.join("conf/glint.pid"));
}

#[test]
fn state_and_log_files_must_differ() {
    let error = refused("[DEFAULT]\npid_file = /run/g.pid\nstatus_file = /run/g.pid\n");
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:3: [DEFAULT] status_file: names the same file as pid_file; \
         give each its own file"
    );
    let error = refused("[DEFAULT]\nlog_file = /run/glint/glint-api.status.json\n");
    assert_eq!(error.problems[0].line, Some(2));
    assert_eq!(error.problems[0].option.as_deref(), Some("log_file"));
}

#[test]
fn the_access_log_has_a_file_of_its_own() {
    // Relative to log_dir, like log_file, so both name /var/log/glint/api.log.
    let error = refused(
        "[DEFAULT]\nlog_dir = /var/log/glint\nlog_file = api.log\naccess_log_file = /var/log/glint/api.log\n",
    );
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:4: [DEFAULT] access_log_file: names the same file as log_file; \
         give each its own file"
    );
    let error = refused("[DEFAULT]\npid_file = /run/g.pid\naccess_log_file = /run/g.pid\n");
    assert_eq!(error.problems[0].option.as_deref(), Some("access_log_file"));
    let loaded = loads("[DEFAULT]\nlog_dir = /var/log/glint\naccess_log_file = access.log\n");
    assert_eq!(
        loaded.config.access_log_file.as_deref(),
        Some(std::path::Path::new("/var/log/glint/access.log"))
    );
}

#[test]
fn the_metrics_listener_has_a_port_of_its_own() {
    let error = refused("[DEFAULT]\nbind_port = 9292\n\n[metrics]\nbind_port = 9292\n");
    assert_eq!(
        error.to_string(),
        "/etc/glint/glint-api.conf:5: [metrics] bind_port: is the API's port too ([DEFAULT] \
         bind_port = 9292); give the metrics listener a port of its own"
    );
    // The API's default port counts too.
    let error = refused("[metrics]\nbind_port = 9292\n");
    assert_eq!(error.problems[0].option.as_deref(), Some("bind_port"));
    // Both 0: each gets a free port of the kernel's.
    let loaded = loads("[DEFAULT]\nbind_port = 0\n[metrics]\nbind_port = 0\n");
    assert_eq!(loaded.config.metrics.bind_port, Some(0));
    let loaded = loads("[DEFAULT]\nbind_port = 9292\n[metrics]\nbind_port = 9393\n");
    assert_eq!(loaded.config.metrics.bind_port, Some(9393));
}

// ---------------------------------------------------------------------------------------------
// Reporting

#[test]
fn every_problem_is_reported_at_once_in_line_order() {
    let text = "\
[DEFAULT]
bind_port = 70000
workers = 2
backlog
debug = perhaps
[glance_store]
filesystem_store_datadir = /srv/images
[DEFAULT]
bind_host = example.com
";
    let error = refused(text);
    let lines: Vec<Option<usize>> = error.problems.iter().map(|problem| problem.line).collect();
    assert_eq!(lines, vec![Some(2), Some(4), Some(5), Some(9)], "{error}");
    assert_eq!(
        error.to_string().lines().next(),
        Some(
            "/etc/glint/glint-api.conf:2: [DEFAULT] bind_port: 70000 is out of range; use a \
             whole number from 0 to 65535"
        )
    );
    assert_eq!(error.to_string().lines().count(), 4);
}

#[test]
fn unknown_options_and_sections_are_warnings_with_suggestions() {
    let text = "\
[DEFAULT]
bind_prot = 9293
show_image_direct_url = true
Workers = 2
[default]
debug = true
[glance_store]
stores = file
rbd_store_pool = images
[oslo_messaging_notifications]
driver = noop
[my_backend]
x = 1
[taskflow_executor]
engine_mode = parallel
[paste_deploy]
debug = true
";
    let loaded = loads(text);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:2: [DEFAULT] bind_prot: unknown option, ignored; did you mean bind_port?",
            "/etc/glint/glint-api.conf:3: [DEFAULT] show_image_direct_url: unknown option, ignored (glint does not use it)",
            "/etc/glint/glint-api.conf:4: [DEFAULT] Workers: unknown option, ignored; did you mean workers?",
            "/etc/glint/glint-api.conf:5: [default] unknown section, its 1 option is ignored; did you mean [DEFAULT]?",
            "/etc/glint/glint-api.conf:9: [glance_store] rbd_store_pool: unknown option, ignored (glint does not use it)",
            "/etc/glint/glint-api.conf:10: [oslo_messaging_notifications] section not used by glint yet; its 1 option is ignored",
            "/etc/glint/glint-api.conf:12: [my_backend] unknown section, its 1 option is ignored; check the section name",
            "/etc/glint/glint-api.conf:14: [taskflow_executor] section not used by glint yet; its 1 option is ignored",
            "/etc/glint/glint-api.conf:17: [paste_deploy] debug: not an option of this section, ignored; it belongs in [DEFAULT], move it there",
        ]
    );
    assert_eq!(loaded.config.bind_port, 9292);
    assert!(!loaded.config.debug);
}

#[test]
fn problem_display_leaves_out_unknown_parts() {
    let file = PathBuf::from("/etc/glint/glint-api.conf");
    let full = Problem {
        file: file.clone(),
        line: Some(7),
        section: Some("DEFAULT".to_string()),
        option: Some("workers".to_string()),
        message: "is wrong; fix it".to_string(),
    };
    assert_eq!(
        full.to_string(),
        "/etc/glint/glint-api.conf:7: [DEFAULT] workers: is wrong; fix it"
    );
    let bare = Problem::about_file(file, None, "cannot read".to_string());
    assert_eq!(bare.to_string(), "/etc/glint/glint-api.conf: cannot read");
}

#[test]
fn missing_file_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.conf");
    let error = load(&path).expect_err("absent file must not load");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: cannot read the config file: No such file or directory (os error 2); check --config-file",
            path.display()
        )
    );
    let error = load(dir.path()).expect_err("a folder must not load");
    assert!(
        error.to_string().contains("cannot read the config file"),
        "{error}"
    );
}

#[test]
fn file_on_disk_loads_with_paths_relative_to_its_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("glint-api.conf");
    std::fs::write(&path, "[DEFAULT]\npid_file = glint.pid\nbind_port = 0\n")
        .expect("write config");
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.config.path, path);
    assert_eq!(loaded.config.pid_file, dir.path().join("glint.pid"));
    assert_eq!(loaded.config.bind_port, 0);
    // The loader has no side effects: nothing appeared beside the config.
    let entries = std::fs::read_dir(dir.path()).expect("read dir").count();
    assert_eq!(entries, 1);
}

#[test]
fn non_utf8_file_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latin1.conf");
    std::fs::write(&path, b"[DEFAULT]\n# caf\xe9\nbind_port = 1\n").expect("write config");
    let error = load(&path).expect_err("latin-1 must not load");
    assert_eq!(error.problems[0].line, Some(2));
    assert!(
        error.problems[0].message.contains("save it as UTF-8"),
        "{error}"
    );
}

#[test]
fn no_input_panics() {
    // Every prefix of a file full of awkward constructs, and each line alone, must give
    // an answer, never a panic.
    let text =
        "\u{feff}[DEFAULT]\r\nbind_host = \"::1\nworkers = '0'\n  continued \\\n\t\n[a]b]\n= x\n\
                ;c\n[DEFAULT] x\nlog_file = ./é/\\\n\\x41 = 1\n[\n]\nbind_port:\u{0}\n\
                [glance_store]\nfilesystem_store_datadirs = :\nfilesystem_store_datadirs = é:-\n\
                filesystem_store_datadirs = /a:1\nfilesystem_store_datadirs = /a:2\n\
                filesystem_store_datadir = é\nfilesystem_store_file_perm = 9\nstores = ,\n\
                [database]\nconnection = sqlite:\nconnection = é:\nconnection = sqlite:///?\n";
    for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
        let _ = load_text(&text[..end]);
    }
    for line in text.lines() {
        let _ = load_text(line);
        let _ = load_text(&format!("[DEFAULT]\n{line}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Access control: the token file

/// The content and mode of a token file, or `None` for no file.
type TokenFile<'a> = Option<(&'a [u8], u32)>;

/// A config file and a token file in a fresh folder.
fn with_token_file(config: &str, tokens: TokenFile<'_>) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("glint-api.conf");
    std::fs::write(&path, config).expect("write config");
    if let Some((bytes, mode)) = tokens {
        let token_path = dir.path().join("tokens");
        std::fs::write(&token_path, bytes).expect("write tokens");
        std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(mode))
            .expect("chmod tokens");
    }
    (dir, path)
}

const TOKEN_CONFIG: &str = "[DEFAULT]\nauth_strategy = token\nauth_token_file = tokens\n";

#[test]
fn token_strategy_reads_the_token_file_relative_to_the_config_folder() {
    let (dir, path) = with_token_file(TOKEN_CONFIG, Some((b"# ops\nalpha\n\n beta \n", 0o600)));
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let config = loaded.config;
    assert_eq!(config.auth_token_file, Some(dir.path().join("tokens")));
    let AuthStrategy::Token(tokens) = &config.auth_strategy else {
        panic!("expected token auth, got {:?}", config.auth_strategy);
    };
    assert_eq!(tokens.len(), 2);
    assert!(tokens.accepts(b"alpha") && tokens.accepts(b"beta"));
    assert!(!tokens.accepts(b"# ops"));
    assert_eq!(shown("auth_strategy", &config), "token");
    // The effective settings name the file and never a token, and load back unchanged.
    let settings = config.effective_settings();
    assert!(!settings.contains("alpha"), "{settings}");
    let again = load_str(&settings, &path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(again.config, config);
    // Neither does the Debug form, which a test failure or a panic may print.
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("alpha") && !debug.contains("beta"),
        "{debug}"
    );
}

#[test]
fn token_file_problems_are_errors_at_the_option_line() {
    let cases: &[(TokenFile<'_>, &str)] = &[
        (None, "cannot read `DIR/tokens`: No such file or directory (os error 2); create it with one token per line (mode 0600, owned by the user glint runs as) or fix the path"),
        (Some((b"", 0o600)), "`DIR/tokens` lists no token (only blank lines and # comments); add one token per line"),
        (Some((b"# nobody yet\n\n", 0o600)), "`DIR/tokens` lists no token (only blank lines and # comments); add one token per line"),
        (Some((b"good\nnot good\n", 0o600)), "line 2 of `DIR/tokens` holds a character an X-Auth-Token header cannot carry (a token is visible ASCII without spaces); fix or remove that line"),
    ];
    for (tokens, message) in cases {
        let (dir, path) = with_token_file(TOKEN_CONFIG, *tokens);
        let error = load(&path).expect_err("must be refused");
        let expected = Problem {
            file: path.clone(),
            line: Some(3),
            section: Some("DEFAULT".to_string()),
            option: Some("auth_token_file".to_string()),
            message: message.replace("DIR", &dir.path().display().to_string()),
        };
        assert_eq!(error.problems, vec![expected]);
        assert!(!error.to_string().contains("good"), "{error}");
    }
}

#[test]
fn token_file_readable_by_everyone_draws_a_warning() {
    let (dir, path) = with_token_file(TOKEN_CONFIG, Some((b"alpha\n", 0o644)));
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        loaded.warnings,
        vec![format!(
            "{}:3: [DEFAULT] auth_token_file: `{}` holds secrets but every user can read it \
             (mode 0644); chmod o-r it, as in 0600",
            path.display(),
            dir.path().join("tokens").display()
        )]
    );
    for private in [0o600, 0o640, 0o400] {
        let (_dir, path) = with_token_file(TOKEN_CONFIG, Some((b"alpha\n", private)));
        let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(loaded.warnings, Vec::<String>::new(), "mode {private:o}");
    }
}

#[test]
fn token_file_under_noauth_is_not_read_and_draws_a_warning() {
    let (_dir, path) = with_token_file("[DEFAULT]\nauth_token_file = missing\n", None);
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.config.auth_strategy, AuthStrategy::NoAuth);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains(":2: [DEFAULT] auth_token_file: ")
            && loaded.warnings[0].ends_with(
                "is not read because auth_strategy is noauth, so anyone who reaches glint may \
                 use the API; set auth_strategy = token to require its tokens, or remove this line"
            ),
        "{:?}",
        loaded.warnings
    );
}

// ---------------------------------------------------------------------------------------------
// Outputs: listen address, --check-config, docs

// ---------------------------------------------------------------------------------------------
// Access control: no authentication on a network

#[test]
fn noauth_on_a_non_loopback_address_draws_the_exposure_warning() {
    let exposed = [
        "0.0.0.0",
        "::",
        "10.1.2.3",
        "192.0.2.7",
        "2001:db8::1",
        "::ffff:10.0.0.1",
    ];
    for host in exposed {
        let loaded = loads(&format!(
            "[DEFAULT]\nbind_host = {host}\nbind_port = 9393\n"
        ));
        // Not one of the file's warnings (those are about lines), but among every warning.
        assert_eq!(loaded.warnings, Vec::<String>::new(), "{host}");
        let warning = loaded
            .config
            .exposure_warning()
            .unwrap_or_else(|| panic!("no warning for noauth on {host}"));
        assert_eq!(
            loaded.every_warning(),
            std::slice::from_ref(&warning),
            "{host}"
        );
        let address = loaded.config.listen_address();
        assert_eq!(
            warning,
            format!(
                "{CONFIG_PATH}: [DEFAULT] auth_strategy: NO AUTHENTICATION on a non-loopback \
                 address: auth_strategy is noauth and bind_host is {host}, so anyone who can \
                 reach {address} may read, upload, change and delete every image; set \
                 auth_strategy = token with an auth_token_file, or bind_host = 127.0.0.1 to \
                 serve this host only"
            )
        );
    }
    // The default bind_host is the wildcard, so a file that sets neither option warns.
    assert!(loads("").config.exposure_warning().is_some());
    // After the file's own warnings.
    let loaded = loads("[DEFAULT]\nbind_host = ::\nworkers = 0\n");
    let every = loaded.every_warning();
    assert_eq!(every.len(), 2, "{every:?}");
    assert_eq!(every[0], loaded.warnings[0]);
    assert!(every[1].contains("NO AUTHENTICATION"), "{every:?}");
}

#[test]
fn noauth_on_loopback_or_token_auth_draws_no_exposure_warning() {
    for host in [
        "127.0.0.1",
        "127.45.6.7",
        "::1",
        "localhost",
        "LocalHost",
        "::ffff:127.0.0.1",
    ] {
        let loaded = loads(&format!("[DEFAULT]\nbind_host = {host}\n"));
        assert_eq!(loaded.config.exposure_warning(), None, "{host}");
        assert_eq!(loaded.every_warning(), Vec::<String>::new(), "{host}");
    }
    let (_dir, path) = with_token_file(
        &format!("{TOKEN_CONFIG}bind_host = 0.0.0.0\n"),
        Some((b"alpha\n", 0o600)),
    );
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.config.exposure_warning(), None);
}

#[test]
fn loopback_is_decided_without_a_name_lookup() {
    assert!(is_loopback("localhost"));
    assert!(is_loopback("127.255.255.254"));
    assert!(!is_loopback("128.0.0.1"));
    assert!(!is_loopback("::2"));
    // A name other than localhost is never looked up (the master must not block): it counts as
    // reachable from elsewhere. The loader refuses such names anyway.
    assert!(!is_loopback("loopback.example"));
    assert!(!is_loopback("localhost.localdomain"));
}

// ---------------------------------------------------------------------------------------------
// The keystone flavors and [keystone_authtoken]

/// A keystone flavor with everything it needs, as docs/OPERATIONS.md shows it.
const KEYSTONE: &str = "[paste_deploy]\nflavor = keystone\n\n[keystone_authtoken]\n\
     www_authenticate_uri = https://keystone.example.com:5000\n\
     auth_url = http://keystone.internal:5000\nauth_type = password\nusername = glint\n\
     password = s3cret\nproject_name = service\nuser_domain_name = Default\n\
     project_domain_name = Default\nregion_name = RegionOne\n";

fn keystone_settings(config: &Config) -> &KeystoneSettings {
    match &config.auth_strategy {
        AuthStrategy::Keystone(settings) => settings,
        other => panic!("expected keystone, got {other:?}"),
    }
}

#[test]
fn keystone_flavor_builds_the_settings_from_keystone_authtoken() {
    let config = loads(KEYSTONE).config;
    assert_eq!(config.flavor, Flavor::Plain);
    let settings = keystone_settings(&config);
    assert_eq!(settings.auth_url, "http://keystone.internal:5000");
    assert_eq!(settings.identity_url, "http://keystone.internal:5000/v3");
    assert_eq!(
        settings.www_authenticate_uri,
        "https://keystone.example.com:5000"
    );
    assert_eq!(
        settings.user,
        Principal::Name {
            name: "glint".to_string(),
            domain: Domain::Name("Default".to_string())
        }
    );
    assert_eq!(settings.password.expose(), "s3cret");
    assert_eq!(
        settings.project,
        Principal::Name {
            name: "service".to_string(),
            domain: Domain::Name("Default".to_string())
        }
    );
    assert_eq!(settings.region_name.as_deref(), Some("RegionOne"));
    assert_eq!(settings.interface, "internal");
    assert_eq!(settings.service_token_roles, vec!["service".to_string()]);
    assert!(!settings.service_token_roles_required);
    assert_eq!(settings.token_cache_time, Some(Duration::from_secs(300)));
    assert_eq!(settings.ca_certificates, None);
    assert!(!settings.insecure);
    assert_eq!(settings.http_connect_timeout, Duration::from_secs(5));
    assert_eq!(settings.http_request_timeout, Duration::from_secs(10));
    assert_eq!(settings.http_request_max_retries, 3);
}

#[test]
fn keystone_flavors_keep_their_cache_pipeline() {
    for (flavor, cache) in [
        ("keystone", Flavor::Plain),
        ("Keystone+Caching", Flavor::Caching),
        ("keystone+cachemanagement", Flavor::CacheManagement),
    ] {
        let text = KEYSTONE.replace("flavor = keystone", &format!("flavor = {flavor}"));
        let config = loads(&text).config;
        assert_eq!(config.flavor, cache, "{flavor}");
        keystone_settings(&config);
        assert_eq!(shown("flavor", &config), flavor.to_lowercase());
        assert_eq!(shown("auth_strategy", &config), "keystone");
    }
}

#[test]
fn keystone_authtoken_without_a_keystone_flavor_is_not_checked() {
    // Glance files carry the section whatever their pipeline: no error, no warning, noauth.
    let loaded = loads(
        "[keystone_authtoken]\nauth_url = http://k:5000/v2.0\nusername = glint\n\
         cafile = /nonexistent/ca.pem\n",
    );
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert_eq!(loaded.config.auth_strategy, AuthStrategy::NoAuth);
    assert_eq!(
        loaded.config.keystone_authtoken.username.as_deref(),
        Some("glint")
    );
}

#[test]
fn keystone_flavor_reports_every_missing_option_with_file_line_and_option() {
    let problem = |line, option: &str, message: &str| Problem {
        file: PathBuf::from(CONFIG_PATH),
        line: Some(line),
        section: Some("keystone_authtoken".to_string()),
        option: Some(option.to_string()),
        message: message.to_string(),
    };
    let needed = "is required by the keystone flavor of [paste_deploy] flavor (line 2); set it to";
    // Without the section, the flavor's line is blamed; with it, the section's header.
    for (text, line) in [
        ("[paste_deploy]\nflavor = keystone+caching\n", 2),
        (
            "[paste_deploy]\nflavor = keystone+caching\n[keystone_authtoken]\nregion_name = R\n",
            3,
        ),
    ] {
        let error = refused(text);
        assert_eq!(
            error.problems,
            vec![
                problem(line, "auth_url", &format!("{needed} the Keystone URL glint authenticates with, such as https://keystone.example.com:5000")),
                problem(line, "password", &format!("{needed} the service user's password")),
                problem(line, "username", &format!("{needed} glint's service user (or set user_id)")),
                problem(line, "project_name", &format!("{needed} the project of glint's service user, such as service (or set project_id)")),
            ],
            "{text}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                "{CONFIG_PATH}:{line}: [keystone_authtoken] auth_url: is required"
            )),
            "{error}"
        );
    }
}

#[test]
fn keystone_names_need_their_domains_and_ids_stand_alone() {
    let without_user_domain = KEYSTONE.replace("user_domain_name = Default\n", "");
    let error = refused(&without_user_domain);
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].option.as_deref(), Some("username"));
    assert_eq!(error.problems[0].line, Some(8));
    assert!(
        error.problems[0].message.contains("set user_domain_name"),
        "{error}"
    );
    let without_project_domain = KEYSTONE.replace("project_domain_name = Default\n", "");
    let error = refused(&without_project_domain);
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].option.as_deref(), Some("project_name"));

    // Ids need no domain, and win over names.
    let by_id =
        "[paste_deploy]\nflavor = keystone\n[keystone_authtoken]\nauth_url = http://k:5000\n\
                 user_id = u1\nusername = ignored\npassword = p\nproject_id = p1\n\
                 user_domain_id = d1\nuser_domain_name = ignored\n";
    let config = loads(by_id).config;
    let settings = keystone_settings(&config);
    assert_eq!(settings.user, Principal::Id("u1".to_string()));
    assert_eq!(settings.project, Principal::Id("p1".to_string()));
    let by_domain_id = KEYSTONE.replace("user_domain_name = Default", "user_domain_id = default");
    assert_eq!(
        keystone_settings(&loads(&by_domain_id).config).user,
        Principal::Name {
            name: "glint".to_string(),
            domain: Domain::Id("default".to_string())
        }
    );
}

#[test]
fn keystone_auth_url_is_identity_v3() {
    for (auth_url, identity_url) in [
        ("http://k:5000", "http://k:5000/v3"),
        ("http://k:5000/v3/", "http://k:5000/v3"),
        ("https://k/identity", "https://k/identity/v3"),
    ] {
        let text = KEYSTONE.replace(
            "auth_url = http://keystone.internal:5000",
            &format!("auth_url = {auth_url}"),
        );
        let config = loads(&text).config;
        assert_eq!(keystone_settings(&config).identity_url, identity_url);
    }
    let text = KEYSTONE.replace(
        "auth_url = http://keystone.internal:5000",
        "auth_url = http://k:5000/v2.0",
    );
    let error = refused(&text);
    assert_eq!(error.problems.len(), 1, "{error}");
    assert_eq!(error.problems[0].line, Some(6));
    assert!(
        error.problems[0].message.contains("Identity v2.0"),
        "{error}"
    );
}

#[test]
fn www_authenticate_uri_falls_back_to_auth_uri_then_auth_url() {
    let without = KEYSTONE.replace(
        "www_authenticate_uri = https://keystone.example.com:5000\n",
        "",
    );
    let loaded = loads(&without);
    assert_eq!(
        keystone_settings(&loaded.config).www_authenticate_uri,
        "http://keystone.internal:5000"
    );
    let with_auth_uri = without.replace(
        "[keystone_authtoken]\n",
        "[keystone_authtoken]\nauth_uri = https://old.example.com:5000\n",
    );
    let loaded = loads(&with_auth_uri);
    assert_eq!(
        keystone_settings(&loaded.config).www_authenticate_uri,
        "https://old.example.com:5000"
    );
    assert_eq!(
        loaded.warnings,
        vec![format!(
            "{CONFIG_PATH}:5: [keystone_authtoken] auth_uri: is the deprecated name of \
             www_authenticate_uri; rename the option"
        )]
    );
    // Both set: the new name wins, and the old one is not used, so no warning.
    let both = KEYSTONE.replace(
        "[keystone_authtoken]\n",
        "[keystone_authtoken]\nauth_uri = https://old.example.com:5000\n",
    );
    let loaded = loads(&both);
    assert_eq!(
        keystone_settings(&loaded.config).www_authenticate_uri,
        "https://keystone.example.com:5000"
    );
    assert_eq!(loaded.warnings, Vec::<String>::new());
}

#[test]
fn keystone_token_cache_time_minus_one_or_zero_disables_the_cache() {
    for (value, expected) in [
        ("-1", None),
        ("0", None),
        ("1", Some(Duration::from_secs(1))),
    ] {
        let text =
            format!("{KEYSTONE}token_cache_time = {value}\nservice_token_roles = Service, Admin\n");
        let config = loads(&text).config;
        let settings = keystone_settings(&config);
        assert_eq!(settings.token_cache_time, expected, "{value}");
        assert_eq!(settings.service_token_roles, vec!["service", "admin"]);
    }
}

#[test]
fn auth_strategy_must_agree_with_the_flavor() {
    let agreeing = format!("[DEFAULT]\nauth_strategy = keystone\n{KEYSTONE}");
    keystone_settings(&loads(&agreeing).config);
    for strategy in ["token", "noauth"] {
        let text = format!("[DEFAULT]\nauth_strategy = {strategy}\n{KEYSTONE}");
        let error = refused(&text);
        assert_eq!(
            error.problems,
            vec![Problem {
                file: PathBuf::from(CONFIG_PATH),
                line: Some(2),
                section: Some("DEFAULT".to_string()),
                option: Some("auth_strategy".to_string()),
                message: format!(
                    "{strategy} contradicts the keystone flavor of [paste_deploy] flavor \
                     (line 4), which validates every token with Keystone; remove this line, or \
                     choose a flavor without keystone"
                ),
            }]
        );
    }
}

/// A self-signed certificate (`openssl req -x509 -newkey ec`), for the cafile tests: the loader
/// only decodes the PEM.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBhzCCAS2gAwIBAgIUaxIoYbhM2waT8yqDuB8U+fNq6AgwCgYIKoZIzj0EAwIw\nGDEWMBQGA1UEAwwNZ2xpbnQgdGVzdCBDQTAgFw0yNjExMzAwNzEyMTJaGA8yMTI2\nMTEwNjA3MTIxMlowGDEWMBQGA1UEAwwNZ2xpbnQgdGVzdCBDQTBZMBMGByqGSM49\nAgEGCCqGSM49AwEHA0IABBJjSlVOcmbB9X+P4l4HHT+N9AQIB6b64hExXB9gTNow\nxQPRvterXpHSTQm65Rw/WXm6anjqUd6bd9ili5NwP1qjUzBRMB0GA1UdDgQWBBSp\njW5po0WZcZiiA+dPWR/ecdU2rTAfBgNVHSMEGDAWgBSpjW5po0WZcZiiA+dPWR/e\ncdU2rTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQD+7nYb+GSQ\nLE69bERG/B9JxLqsogCLD5TNlWIcW7x0WQIgSpA7jhc+oAR43qv7mI/TxXJIutbg\nnLmynzDy4bRVpx0=\n-----END CERTIFICATE-----\n";

#[test]
fn keystone_cafile_is_read_while_the_config_loads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("glint-api.conf");
    let text = format!("{KEYSTONE}cafile = ca.pem\n");
    let load_with = |ca: Option<&str>| {
        let ca_path = dir.path().join("ca.pem");
        let _ = std::fs::remove_file(&ca_path);
        if let Some(ca) = ca {
            std::fs::write(&ca_path, ca).expect("write ca");
        }
        load_str(&text, &config_path)
    };
    let loaded = load_with(Some(&format!("# the test CA\n{CA_PEM}{CA_PEM}")))
        .unwrap_or_else(|error| panic!("{error}"));
    let certificates = keystone_settings(&loaded.config)
        .ca_certificates
        .clone()
        .expect("certificates");
    assert_eq!(certificates.len(), 2);
    assert_eq!(certificates[0][0], 0x30, "DER starts with a SEQUENCE");

    let ca_path = dir.path().join("ca.pem");
    for (content, message) in [
        (None, format!("cannot read `{}`: No such file or directory (os error 2); give the PEM file of the CA that signed Keystone's certificate", ca_path.display())),
        (Some("no certificate here\n"), format!("`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the PEM file of the CA that signed Keystone's certificate", ca_path.display())),
        (Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"), String::new()),
    ] {
        let error = load_with(content).expect_err("a bad cafile must fail the load");
        assert_eq!(error.problems.len(), 1, "{error}");
        assert_eq!(error.problems[0].line, Some(14), "{error}");
        assert_eq!(error.problems[0].option.as_deref(), Some("cafile"));
        if message.is_empty() {
            assert!(error.problems[0].message.contains("is not a valid PEM file"), "{error}");
        } else {
            assert_eq!(error.problems[0].message, message);
        }
    }
}

#[test]
fn check_config_never_shows_the_keystone_password() {
    let config = loads(KEYSTONE).config;
    let settings = config.effective_settings();
    assert!(!settings.contains("s3cret"), "{settings}");
    assert!(
        settings.contains("\n# password is set (not shown)\n"),
        "{settings}"
    );
    assert!(!format!("{config:?}").contains("s3cret"));
    // Everything else loads back, once the password is given again.
    let reloaded = loads(&settings.replace("# password is set (not shown)", "password = s3cret"));
    assert_eq!(reloaded.warnings, Vec::<String>::new());
    assert_eq!(reloaded.config, config);
}

#[test]
fn listen_address_brackets_ipv6() {
    let cases = [
        ("0.0.0.0", "0.0.0.0:9292"),
        ("::", "[::]:9292"),
        ("fe80::1", "[fe80::1]:9292"),
        ("localhost", "localhost:9292"),
    ];
    for (host, address) in cases {
        let config = loads(&format!("[DEFAULT]\nbind_host = {host}\n")).config;
        assert_eq!(config.listen_address(), address);
    }
}

#[test]
fn effective_settings_list_every_option_and_load_back_unchanged() {
    let config = loads(
        "[DEFAULT]\nbind_host = ::1\nworkers = 3\nclient_socket_timeout = 0\nlog_dir = logs\n\
         log_file = api.log\npublic_endpoint = https://example.com/\n",
    )
    .config;
    let settings = config.effective_settings();
    assert!(
        settings.starts_with("[DEFAULT]\nbind_host = ::1\nbind_port = 9292\n"),
        "{settings}"
    );
    for spec in OPTIONS {
        assert!(
            settings.contains(&format!("\n{} =", spec.name))
                || settings.contains(&format!("\n# {} is not set\n", spec.name)),
            "{} missing:\n{settings}",
            spec.name
        );
    }
    let reloaded = loads(&settings);
    assert_eq!(reloaded.warnings, Vec::<String>::new());
    assert_eq!(reloaded.config, config);
}

#[test]
fn effective_settings_show_the_image_folders_either_way() {
    let cases: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "filesystem_store_datadir = /var/lib/glance/images\n",
                "# filesystem_store_datadirs is not set\n",
            ],
        ),
        (
            "filesystem_store_datadirs = /srv/a:0",
            &[
                "filesystem_store_datadir = /srv/a\n",
                "# filesystem_store_datadirs is not set\n",
            ],
        ),
        (
            "filesystem_store_datadirs = /srv/a:3\nfilesystem_store_datadirs = /mnt/x:y:0\n\
             filesystem_store_datadirs = b:-1",
            &["# filesystem_store_datadir is not set\n\
                 filesystem_store_datadirs = /srv/a:3\n\
                 filesystem_store_datadirs = /mnt/x:y:0\n\
                 filesystem_store_datadirs = /etc/glint/b:-1\n"],
        ),
    ];
    for &(settings, expected) in cases {
        let config = loads(&format!(
            "[glance_store]\n{settings}\nfilesystem_store_file_perm = 600\n\
             stores = file, http\n[database]\nconnection = sqlite:///db/glint.sqlite\n"
        ))
        .config;
        let effective = config.effective_settings();
        for line in expected {
            assert!(effective.contains(line), "{line:?} missing:\n{effective}");
        }
        assert!(effective.contains("\n[glance_store]\n"), "{effective}");
        assert!(
            effective.contains("filesystem_store_file_perm = 0600\n"),
            "{effective}"
        );
        assert!(effective.contains("stores = file\n"), "{effective}");
        assert!(
            effective.contains("[database]\nconnection = sqlite:////etc/glint/db/glint.sqlite\n"),
            "{effective}"
        );
        let reloaded = loads(&effective);
        assert_eq!(reloaded.warnings, Vec::<String>::new(), "{effective}");
        assert_eq!(reloaded.config, config, "{effective}");
    }
}

#[test]
fn operations_doc_options_table_matches_the_options_table() {
    crate::generated_docs::check_block(
        crate::generated_docs::OPERATIONS,
        "<!-- options:begin -->\n",
        "<!-- options:end -->",
        &options_markdown(),
        "the options table",
        "config::tests::operations_doc",
    );
}

/// `glint-api stop` and `status` read where the pid and status files are from a file that is
/// otherwise invalid, but not from one whose problems could be about those files.
#[test]
fn server_files_are_found_in_a_file_with_unrelated_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("glint-api.conf");
    let server_files = |text: &str| {
        std::fs::write(&path, text).expect("write config");
        load_server_files(&path)
    };
    let files = server_files(
        "[DEFAULT]\nworkers = many\npid_file = run/g.pid\ngraceful_shutdown_timeout = 5\n",
    )
    .expect("unrelated errors do not hide the pid file");
    assert_eq!(
        files,
        ServerFiles {
            pid_file: dir.path().join("run/g.pid"),
            status_file: dir.path().join("run/g.status.json"),
            graceful_shutdown_timeout: Some(Duration::from_secs(5)),
        }
    );
    for text in [
        "[DEFAULT]\npid_file =\n",
        "[DEFAULT]\nstatus_file = \\\n",
        "[DEFAULT]\nno equals sign here\npid_file = g.pid\n",
    ] {
        assert!(server_files(text).is_err(), "accepted:\n{text}");
    }
    assert!(load_server_files(&dir.path().join("missing.conf")).is_err());
}

/// Issue 9, fault 3: a token file (or config file) that is a FIFO is refused at once, not
/// waited on: the master loads configs inside its loop.
#[test]
fn a_fifo_in_place_of_a_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("tokens");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let config = dir.path().join("glint-api.conf");
    std::fs::write(
        &config,
        format!(
            "[DEFAULT]\nauth_strategy = token\nauth_token_file = {}\n",
            fifo.display()
        ),
    )
    .unwrap();
    let error = load(&config).expect_err("a FIFO token file is refused");
    let text = error.to_string();
    assert!(text.contains("it is a FIFO, not a regular file"), "{text}");
    let error = load(&fifo).expect_err("a FIFO config file is refused");
    assert!(
        error
            .to_string()
            .contains("it is a FIFO, not a regular file"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// [oslo_policy] and the policy file

/// conf/policy.yaml.sample: an existing policy file of comments only.
const SAMPLE_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/policy.yaml.sample");

/// A config file and a policy file in a fresh folder; `None` writes no policy file.
fn with_policy_file(
    config: &str,
    name: &str,
    policy: Option<&str>,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("glint-api.conf");
    std::fs::write(&path, config).expect("write config");
    if let Some(policy) = policy {
        std::fs::write(dir.path().join(name), policy).expect("write policy");
    }
    (dir, path)
}

#[test]
fn oslo_policy_defaults_are_glance_defaults_without_a_file() {
    let config = loads("").config;
    assert_eq!(config.policy_file, None);
    assert_eq!(*config.policy, crate::policy::Policy::defaults(true, true));
    assert!(config.policy.enforce_new_defaults());
    assert!(config.policy.enforce_scope());
    let config =
        loads("[oslo_policy]\nenforce_new_defaults = false\nenforce_scope = false\n").config;
    assert_eq!(
        *config.policy,
        crate::policy::Policy::defaults(false, false)
    );
    assert_eq!(shown("policy_file", &config), "");
    assert!(config
        .effective_settings()
        .contains("[oslo_policy]\n# policy_file is not set\nenforce_new_defaults = false\n"));
}

#[test]
fn policy_yaml_beside_the_config_is_read_by_default() {
    let (dir, path) = with_policy_file("", "policy.yaml", Some("publicize_image: \"!\"\n"));
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let policy_path = dir.path().join("policy.yaml");
    assert_eq!(
        loaded.config.policy_file.as_deref(),
        Some(policy_path.as_path())
    );
    assert_eq!(
        loaded
            .config
            .policy
            .check("publicize_image")
            .map(ToString::to_string),
        Some("!".to_string())
    );
    assert_ne!(
        *loaded.config.policy,
        crate::policy::Policy::defaults(true, true)
    );
    // --check-config's text names the file, and loads back to the same config.
    let settings = loaded.config.effective_settings();
    assert!(
        settings.contains(&format!("policy_file = {}\n", policy_path.display())),
        "{settings}"
    );
    let reloaded = load_str(&settings, &path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(reloaded.config, loaded.config);
}

#[test]
fn a_relative_policy_file_is_relative_to_the_config_folder() {
    let (dir, path) = with_policy_file(
        "[oslo_policy]\npolicy_file = rules.json\n",
        "rules.json",
        Some("{\"get_images\": \"role:admin\"}"),
    );
    let config = load(&path).unwrap_or_else(|error| panic!("{error}")).config;
    assert_eq!(config.policy_file, Some(dir.path().join("rules.json")));
    assert_eq!(
        config.policy.check("get_images").map(ToString::to_string),
        Some("role:admin".to_string())
    );
}

#[test]
fn a_policy_file_set_explicitly_must_exist() {
    let (dir, path) = with_policy_file("[oslo_policy]\n\npolicy_file = missing.yaml\n", "", None);
    let error = load(&path).expect_err("a missing policy file is refused");
    let missing = dir.path().join("missing.yaml");
    assert_eq!(
        error.problems,
        vec![Problem {
            file: path.clone(),
            line: Some(3),
            section: Some("oslo_policy".to_string()),
            option: Some("policy_file".to_string()),
            message: format!(
                "cannot read `{}`: No such file or directory (os error 2); create it, fix the \
                 path, or remove the line to use Glance's default rules",
                missing.display()
            ),
        }]
    );
}

#[test]
fn a_bad_policy_file_fails_the_load_naming_its_file_line_and_rule() {
    let (dir, path) = with_policy_file(
        "[DEFAULT]\nworkers = 0x\n",
        "policy.yaml",
        Some("# ours\nget_image: \"role:admin or\"\nget_imagee: role:admin\nnested:\n  x: y\n"),
    );
    let error = load(&path).expect_err("a bad policy file is refused");
    let policy_path = dir.path().join("policy.yaml");
    let about_policy: Vec<&Problem> = error
        .problems
        .iter()
        .filter(|problem| problem.file == policy_path)
        .collect();
    let summary: Vec<(Option<usize>, Option<&str>, Option<&str>)> = about_policy
        .iter()
        .map(|problem| {
            (
                problem.line,
                problem.section.as_deref(),
                problem.option.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(Some(4), None, Some("nested")), (Some(5), None, None)],
        "{error}"
    );
    // The config file's own problem is reported in the same pass.
    assert!(error
        .problems
        .iter()
        .any(|problem| problem.file == path && problem.option.as_deref() == Some("workers")));
    // Once the syntax is right, the check string is judged, with its line and rule.
    std::fs::write(&policy_path, "# ours\nget_image: \"role:admin or\"\n").unwrap();
    let error = load(&path.with_file_name("none.conf")).expect_err("missing config");
    assert!(error.to_string().contains("none.conf"));
    std::fs::write(&path, "").unwrap();
    let error = load(&path).expect_err("a bad check string is refused");
    let text = error.to_string();
    assert_eq!(
        text,
        format!(
            "{}:2: get_image: the check `role:admin or` does not parse: the check ends where a \
             check is expected (after `and`, `or`, `not` or `(`)",
            policy_path.display()
        )
    );
}

#[test]
fn policy_file_warnings_name_the_policy_file() {
    let (dir, path) = with_policy_file("", "policy.yaml", Some("get_imagee: role:admin\n"));
    let loaded = load(&path).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        loaded.warnings,
        vec![format!(
            "{}:1: get_imagee: not a rule glint enforces; it is kept (rule: may refer to it) but \
             guards nothing; did you mean get_image?",
            dir.path().join("policy.yaml").display()
        )]
    );
}

#[test]
fn a_fifo_or_folder_as_policy_file_is_refused_without_blocking() {
    let (dir, path) = with_policy_file("", "", None);
    nix::unistd::mkfifo(
        &dir.path().join("policy.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let error = load(&path).expect_err("a FIFO policy file is refused");
    let text = error.to_string();
    assert!(text.contains("it is a FIFO, not a regular file"), "{text}");
    assert!(
        text.contains("default policy file beside the config file"),
        "{text}"
    );
}

#[test]
fn server_files_are_found_despite_a_bad_policy_file() {
    let (_dir, path) = with_policy_file("", "policy.yaml", Some("{\n"));
    assert!(load(&path).is_err());
    assert!(load_server_files(&path).is_ok());
}

/// A glance-api.conf sets the image cache's options in `[DEFAULT]`, where Glance registers
/// them: glint reads them there as in `[image_cache]`, without a warning.
#[test]
fn image_cache_options_are_read_from_default_as_glance_reads_them() {
    let loaded = loads(
        "[DEFAULT]\nimage_cache_dir = /srv/cache\nimage_cache_max_size = 1048576\n\
         image_cache_stall_time = 60\n",
    );
    assert_eq!(loaded.config.image_cache_dir, PathBuf::from("/srv/cache"));
    assert_eq!(loaded.config.image_cache_max_size, 1_048_576);
    assert_eq!(
        loaded.config.image_cache_stall_time,
        Duration::from_secs(60)
    );
    assert_eq!(loaded.warnings, Vec::<String>::new());
    // In [image_cache] as before.
    let loaded = loads("[image_cache]\nimage_cache_dir = /srv/other\n");
    assert_eq!(loaded.config.image_cache_dir, PathBuf::from("/srv/other"));
    // A bad value in [DEFAULT] is reported there.
    let error = refused("[DEFAULT]\nimage_cache_max_size = lots\n").to_string();
    assert!(
        error.contains(":2: [DEFAULT] image_cache_max_size: `lots` is not a decimal integer"),
        "{error}"
    );
}

#[test]
fn an_image_cache_option_set_in_both_sections_is_refused_naming_both_lines() {
    let error =
        refused("[DEFAULT]\nimage_cache_dir = /srv/a\n\n[image_cache]\nimage_cache_dir = /srv/b\n")
            .to_string();
    assert!(
        error.contains(":5: [image_cache] image_cache_dir: also set in [DEFAULT] (line 2)"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Several stores (`enabled_backends`)

const TWO_BACKENDS: &str = "[DEFAULT]
enabled_backends = fast:file, cheap:file
[glance_store]
default_backend = cheap
[fast]
filesystem_store_datadir = /srv/fast
store_description = Fast disks
weight = 100
[cheap]
filesystem_store_datadirs = /srv/cheap/a:10
filesystem_store_datadirs = /srv/cheap/b
";

#[test]
fn two_file_backends_load_with_their_sections() {
    let loaded = loads(TWO_BACKENDS);
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let backends = loaded.config.backends.expect("backends");
    assert_eq!(backends.default, "cheap");
    assert_eq!(
        backends.list,
        vec![
            Backend {
                id: "fast".to_string(),
                description: Some("Fast disks".to_string()),
                weight: 100,
                datadirs: vec![datadir("/srv/fast", 0)],
            },
            Backend {
                id: "cheap".to_string(),
                description: None,
                weight: 0,
                datadirs: vec![datadir("/srv/cheap/a", 10), datadir("/srv/cheap/b", 0)],
            },
        ]
    );
    assert_eq!(
        shown("enabled_backends", &loads(TWO_BACKENDS).config),
        "fast:file, cheap:file"
    );
    assert_eq!(
        shown("default_backend", &loads(TWO_BACKENDS).config),
        "cheap"
    );
    assert_eq!(loads("").config.backends, None);
}

#[test]
fn backend_mistakes_are_errors_naming_the_backend() {
    let cases: &[(&str, &str, &str)] = &[
        ("enabled_backends = fast:file\n[fast]\nfilesystem_store_datadir = /srv/fast\n",
         "",
         "/etc/glint/glint-api.conf:1: [DEFAULT] enabled_backends: needs [glance_store] default_backend: set it to the id of the backend uploads go to when they name none"),
        ("enabled_backends = fast:file\n[fast]\nfilesystem_store_datadir = /srv/fast\n",
         "[glance_store]\ndefault_backend = slow\n",
         "/etc/glint/glint-api.conf:5: [glance_store] default_backend: `slow` is not one of [DEFAULT] enabled_backends; name one of them"),
        ("enabled_backends = os_glance_staging_store:file\n",
         "",
         "/etc/glint/glint-api.conf:1: [DEFAULT] enabled_backends: `os_glance_staging_store`: ids starting with os_glance_ are reserved for Glance's own stores; rename the backend"),
        ("enabled_backends = fast:file, fast:file\n[fast]\nfilesystem_store_datadir = /srv/fast\n",
         "[glance_store]\ndefault_backend = fast\n",
         "/etc/glint/glint-api.conf:1: [DEFAULT] enabled_backends: `fast` is listed twice; list each backend once"),
        ("enabled_backends = glance_store:file\n",
         "",
         "/etc/glint/glint-api.conf:1: [DEFAULT] enabled_backends: `glance_store` names a section that holds other options; choose another id for the backend"),
        ("enabled_backends = fast\n",
         "",
         "/etc/glint/glint-api.conf:1: [DEFAULT] enabled_backends: `fast` has no type; write each backend as ID:TYPE, such as fast:file"),
        ("enabled_backends = fast:file, cheap:file\n[fast]\nfilesystem_store_datadir = /srv/fast\n",
         "[glance_store]\ndefault_backend = fast\n",
         "/etc/glint/glint-api.conf:1: [cheap] backend `cheap` names no folder; add a [cheap] section with filesystem_store_datadir = FOLDER (or filesystem_store_datadirs)"),
        ("enabled_backends = fast:file\n[fast]\nfilesystem_store_datadir = /srv/fast\nweight = heavy\n",
         "[glance_store]\ndefault_backend = fast\n",
         "/etc/glint/glint-api.conf:4: [fast] weight: `heavy` is not a decimal integer; use a whole number from -2147483648 to 2147483647"),
    ];
    for (backends, store, expected) in cases {
        let text = format!("[DEFAULT]\n{backends}{store}");
        // Line numbers above count from the `[DEFAULT]` header as line 0: shift them.
        let error = refused(&text);
        let shown: Vec<String> = error
            .problems
            .iter()
            .map(|problem| {
                let mut problem = problem.clone();
                problem.line = problem.line.map(|line| line - 1);
                problem.to_string()
            })
            .collect();
        assert_eq!(shown, vec![expected.to_string()], "{text}");
    }
}

#[test]
fn unknown_options_in_a_backend_section_warn() {
    let text = format!("{TWO_BACKENDS}filesystem_store_chunk_size = 65536\n");
    let loaded = loads(&text);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:12: [cheap] filesystem_store_chunk_size: not an option \
              glint reads for a backend, ignored; a backend's section holds \
              filesystem_store_datadir, filesystem_store_datadirs, store_description, weight"
                .to_string()
        ]
    );
}

#[test]
fn healthcheck_backends_glint_lacks_and_detailed_output_draw_warnings() {
    let loaded = loads(
        "[healthcheck]\nbackends = disable_by_file, enable_by_files\ndetailed = true\n\
         path = /healthcheck\n",
    );
    assert_eq!(
        loaded.warnings,
        vec![
            format!(
                "{CONFIG_PATH}:2: [healthcheck] backends: glint has no healthcheck backend \
                 `enable_by_files`; it is left out (glint has disable_by_file and \
                 disable_by_files_ports)"
            ),
            format!(
                "{CONFIG_PATH}:3: [healthcheck] detailed: glint never shows detailed \
                 healthcheck output (threads, platform); the answer stays the short one"
            ),
            format!(
                "{CONFIG_PATH}:4: [healthcheck] path: unknown option, ignored (glint does not \
                 use it)"
            ),
        ]
    );
    assert!(loaded.config.healthcheck.by_file);
    assert_eq!(loaded.config.healthcheck.by_port, None);
}

#[test]
fn a_healthcheck_file_turns_its_backend_on() {
    let loaded = loads("[healthcheck]\nbackends =\ndisable_by_file_paths = 9292:/run/off\n");
    assert!(!loaded.config.healthcheck.by_file);
    assert_eq!(
        loaded.config.healthcheck.by_port,
        Some(vec![(9292, PathBuf::from("/run/off"))])
    );
    let loaded = loads("[healthcheck]\nbackends =\ndisable_by_file_path = /run/off\n");
    assert!(loaded.config.healthcheck.by_file);
    assert_eq!(
        loaded.config.healthcheck.disable_by_file,
        Some(PathBuf::from("/run/off"))
    );
}

#[test]
fn import_filtering_lists_that_cannot_take_effect_draw_warnings() {
    // allowed_ports keeps its default [80, 443], so Glance ignores disallowed_ports; hosts
    // are compared as the URI gives them (lower case, addresses in their shortest form).
    let loaded = loads(
        "[import_filtering_opts]\ndisallowed_ports = 22\nallowed_hosts = Images.Example.com, \
         0:0:0:0:0:0:0:1\n",
    );
    assert_eq!(loaded.config.web_download.disallowed_ports, vec![22]);
    assert_eq!(
        loaded.warnings,
        vec![
            "/etc/glint/glint-api.conf:2: [import_filtering_opts] disallowed_ports: is ignored \
             because allowed_ports is set (the allowed list wins, as in Glance); set \
             allowed_ports empty (`allowed_ports =`) to use this list"
                .to_string(),
            "/etc/glint/glint-api.conf:3: [import_filtering_opts] allowed_hosts: \
             Images.Example.com never matches: URIs' host names are compared in lower case, \
             as Glance does; write images.example.com"
                .to_string(),
            "/etc/glint/glint-api.conf:3: [import_filtering_opts] allowed_hosts: \
             0:0:0:0:0:0:0:1 never matches: URIs' addresses are compared in their shortest \
             form, as Glance does; write ::1"
                .to_string(),
        ]
    );
    let loaded = loads("[import_filtering_opts]\nallowed_ports =\ndisallowed_ports = 22\n");
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert!(loaded.config.web_download.allowed_ports.is_empty());
}
