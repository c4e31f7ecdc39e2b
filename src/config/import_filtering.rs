//! `[import_filtering_opts]`: which URIs the `web-download` import method may fetch, read as
//! Glance reads the section (glance/async_/flows/_internal_plugins/__init__.py), and the two
//! timeouts of a download (glint's own, `[DEFAULT] web_download_*_timeout`).
//!
//! The lists arrive as oslo.config ListOpts with `bounds=True` (`[http, https]` or
//! `http,https`, items possibly quoted); this module checks each item as Glance's item type
//! would (ports 1 to 65535, hosts an IP address or a host name) and keeps them typed. How a
//! URI is judged against them is `crate::api::import_uri`'s business.

use std::net::IpAddr;
use std::time::Duration;

use super::{RawConfig, Report};

const SECTION: &str = "import_filtering_opts";

/// The filters and timeouts of `web-download`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebDownload {
    pub allowed_schemes: Vec<String>,
    pub disallowed_schemes: Vec<String>,
    /// As written (a trailing dot dropped, as oslo.config's `HostAddress` does): compared with
    /// the URI's host as Glance compares them, exactly.
    pub allowed_hosts: Vec<String>,
    pub disallowed_hosts: Vec<String>,
    pub allowed_ports: Vec<u16>,
    pub disallowed_ports: Vec<u16>,
    /// Longest wait for a name lookup plus a TCP (and TLS) connection, per connection.
    pub connect_timeout: Duration,
    /// Longest stall while waiting for the answer or for more of its body.
    pub read_timeout: Duration,
}

impl Default for WebDownload {
    fn default() -> WebDownload {
        WebDownload {
            allowed_schemes: vec!["http".to_string(), "https".to_string()],
            disallowed_schemes: Vec::new(),
            allowed_hosts: Vec::new(),
            disallowed_hosts: Vec::new(),
            allowed_ports: vec![80, 443],
            disallowed_ports: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// The section's values as the options table stored them, before `finish`.
#[derive(Debug, Default)]
pub(super) struct Draft {
    pub allowed_schemes: Vec<String>,
    pub disallowed_schemes: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub disallowed_hosts: Vec<String>,
    pub allowed_ports: Vec<String>,
    pub disallowed_ports: Vec<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// One ListOpt item without the list's brackets and the item's quotes.
fn bare(item: &str) -> &str {
    item.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .trim()
}

fn items(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter()
        .map(|item| bare(item))
        .filter(|item| !item.is_empty())
}

/// Whether `name` is a host name as oslo.config's `Hostname` type accepts it: labels of
/// letters, digits and hyphens, 1 to 63 characters, not starting or ending with a hyphen, and
/// a last label that is not all digits.
fn is_host_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|last| !last.chars().all(|c| c.is_ascii_digit()))
}

impl Draft {
    pub(super) fn finish(self, raw: &RawConfig, report: &mut Report) -> WebDownload {
        let schemes =
            |list: &[String]| -> Vec<String> { items(list).map(str::to_string).collect() };
        let hosts = |name: &str, list: &[String], report: &mut Report| -> Vec<String> {
            let mut kept = Vec::new();
            for item in items(list) {
                let item = item.strip_suffix('.').unwrap_or(item);
                let line = raw.line_of(SECTION, name);
                match item.parse::<IpAddr>() {
                    Ok(address) if address.to_string() != item => report.warning(
                        line,
                        Some(SECTION),
                        Some(name),
                        format!(
                            "{item} never matches: URIs' addresses are compared in their \
                             shortest form, as Glance does; write {address}"
                        ),
                    ),
                    Ok(_) => {}
                    Err(_) if !is_host_name(item) => {
                        report.error(
                            line,
                            Some(SECTION),
                            Some(name),
                            format!("{item} is neither an IP address nor a host name"),
                        );
                        continue;
                    }
                    Err(_) if item.chars().any(|c| c.is_ascii_uppercase()) => report.warning(
                        line,
                        Some(SECTION),
                        Some(name),
                        format!(
                            "{item} never matches: URIs' host names are compared in lower \
                             case, as Glance does; write {}",
                            item.to_ascii_lowercase()
                        ),
                    ),
                    Err(_) => {}
                }
                kept.push(item.to_string());
            }
            kept
        };
        let ports = |name: &str, list: &[String], report: &mut Report| -> Vec<u16> {
            let mut kept = Vec::new();
            for item in items(list) {
                match item.parse::<u16>() {
                    Ok(port) if port >= 1 => kept.push(port),
                    _ => report.error(
                        raw.line_of(SECTION, name),
                        Some(SECTION),
                        Some(name),
                        format!("{item} is not a port: use numbers from 1 to 65535"),
                    ),
                }
            }
            kept
        };
        let filtering = WebDownload {
            allowed_schemes: schemes(&self.allowed_schemes),
            disallowed_schemes: schemes(&self.disallowed_schemes),
            allowed_hosts: hosts("allowed_hosts", &self.allowed_hosts, report),
            disallowed_hosts: hosts("disallowed_hosts", &self.disallowed_hosts, report),
            allowed_ports: ports("allowed_ports", &self.allowed_ports, report),
            disallowed_ports: ports("disallowed_ports", &self.disallowed_ports, report),
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        };
        // Glance obeys only the allowed list when both are set, and logs that at debug level;
        // with allowed_ports' default [80, 443], a disallowed_ports alone is silently ignored.
        for (kind, allowed, disallowed) in [
            (
                "schemes",
                !filtering.allowed_schemes.is_empty(),
                !filtering.disallowed_schemes.is_empty(),
            ),
            (
                "hosts",
                !filtering.allowed_hosts.is_empty(),
                !filtering.disallowed_hosts.is_empty(),
            ),
            (
                "ports",
                !filtering.allowed_ports.is_empty(),
                !filtering.disallowed_ports.is_empty(),
            ),
        ] {
            if allowed && disallowed {
                let name = format!("disallowed_{kind}");
                report.warning(
                    raw.line_of(SECTION, &name),
                    Some(SECTION),
                    Some(&name),
                    format!(
                        "is ignored because allowed_{kind} is set (the allowed list wins, as in \
                         Glance); set allowed_{kind} empty (`allowed_{kind} =`) to use this list"
                    ),
                );
            }
        }
        filtering
    }
}
