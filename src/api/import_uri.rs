//! The URI of a `web-download` import: parsed as Python's `urllib.parse.urlparse` reads it and
//! judged against `[import_filtering_opts]` as Glance's `validate_import_uri`
//! (glance/common/utils.py) judges it, for the request and for every redirect the download
//! follows.
//!
//! Glance's rules, kept here: a scheme must be in `allowed_schemes` when that list is set, else
//! not in `disallowed_schemes` (the allowed list wins when both are set; the same for hosts and
//! ports); the host is normalised first (`normalize_hostname`): an IPv4 or IPv6 literal to its
//! shortest text, a name kept as it is (lower-cased by the parser) only if it resolves, and
//! numeric forms an OS would still read as an address (`2130706433`, `127.1`) refused; a port
//! is checked only when the URI writes one out, so `http://host/` passes the port lists.
//!
//! Where glint is stricter than Python's parser, so that what is checked is exactly what is
//! fetched (no parser differential between this module and the HTTP client): URIs with
//! whitespace, control characters, a backslash, non-ASCII characters or user credentials
//! (`user@host`) are refused, and the client is handed a URI rebuilt from the parts checked
//! here ([`ImportUri::target`]). A port Python cannot read (`:x`, `:70000`) is a refusal, where
//! Glance answers 500.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Duration;

use crate::config::WebDownload;

/// A URI that passed the filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportUri {
    /// Lower case, as `urlparse` gives it.
    pub scheme: String,
    /// The host as compared with the lists: an address in its shortest form, or a name.
    pub host: String,
    /// The port the URI writes out, if any.
    pub port: Option<u16>,
    /// Path and query as written (`/` when empty); the fragment is dropped.
    pub path_and_query: String,
}

impl ImportUri {
    /// The URI the client fetches, rebuilt from the parts that were checked.
    pub fn target(&self) -> String {
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(address)) => format!("[{address}]"),
            _ => self.host.clone(),
        };
        match self.port {
            Some(port) => format!("{}://{host}:{port}{}", self.scheme, self.path_and_query),
            None => format!("{}://{host}{}", self.scheme, self.path_and_query),
        }
    }
}

/// A URI split as `urlparse` splits it, before its host is normalised.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    scheme: String,
    /// Lower case, without brackets.
    host: String,
    port: Option<u16>,
    path_and_query: String,
}

/// Splits `uri`, or says why it is refused.
fn split(uri: &str) -> Result<Parts, String> {
    if uri.is_empty() {
        return Err("no URI".to_string());
    }
    if uri
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == ' ' || c == '\\')
    {
        return Err("whitespace, control, non-ASCII characters or a backslash".to_string());
    }
    let (scheme, rest) = match uri.split_once(':') {
        Some((scheme, rest))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ => return Err("no scheme".to_string()),
    };
    let Some(rest) = rest.strip_prefix("//") else {
        return Err("no host".to_string());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, tail) = rest.split_at(end);
    let tail = tail.split('#').next().unwrap_or_default();
    let path_and_query = if tail.starts_with('/') {
        tail.to_string()
    } else {
        format!("/{tail}")
    };
    if netloc.contains('@') {
        return Err("credentials in the URI".to_string());
    }
    let (host, port) = if let Some(bracketed) = netloc.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("an unclosed '['".to_string());
        };
        let port = match after {
            "" => "",
            _ => after
                .strip_prefix(':')
                .ok_or_else(|| "characters after ']'".to_string())?,
        };
        (host, port)
    } else {
        if netloc.contains(']') {
            return Err("a ']' without '['".to_string());
        }
        netloc.split_once(':').unwrap_or((netloc, ""))
    };
    let port = match port {
        "" => None,
        digits if digits.chars().all(|c| c.is_ascii_digit()) => Some(
            digits
                .parse::<u16>()
                .map_err(|_| "a port out of range".to_string())?,
        ),
        _ => return Err("a port that is not a number".to_string()),
    };
    Ok(Parts {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path_and_query,
    })
}

/// Glance's `normalize_hostname`: an address literal in its shortest form, a host name that
/// resolves (looked up with a trailing dot, so that no numeric form is read as an address, and
/// within `lookup_timeout`), or `None`.
fn normalize_host(host: &str, lookup_timeout: Duration) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    // Python's ipaddress takes only four plain decimal parts (no leading zeros), as Rust does.
    if let Ok(address) = host.parse::<Ipv4Addr>() {
        return Some(address.to_string());
    }
    if let Ok(address) = host.parse::<Ipv6Addr>() {
        return Some(address.to_string());
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let lookup = if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    };
    // getaddrinfo cannot be interrupted: it runs on a thread of its own, which ends when the
    // lookup does, and the request waits for it at most `lookup_timeout`.
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("import-lookup".to_string())
        .spawn(move || {
            let resolved = (lookup.as_str(), 80)
                .to_socket_addrs()
                .is_ok_and(|mut addresses| addresses.next().is_some());
            let _ = sender.send(resolved);
        });
    if spawned.is_err() {
        return None;
    }
    match receiver.recv_timeout(lookup_timeout) {
        Ok(true) => Some(host.to_string()),
        _ => None,
    }
}

/// Glance's `validate_import_uri`: the URI if it passes the filters, else why not (for the
/// log; the client gets Glance's one sentence).
pub fn check(uri: &str, filters: &WebDownload) -> Result<ImportUri, String> {
    let parts = split(uri)?;
    let (allowed, disallowed): (&[String], &[String]) = if filters.allowed_schemes.is_empty() {
        (&[], &filters.disallowed_schemes)
    } else {
        (&filters.allowed_schemes, &[])
    };
    if (!allowed.is_empty() && !allowed.contains(&parts.scheme))
        || disallowed.contains(&parts.scheme)
    {
        return Err(format!("scheme {} is not allowed", parts.scheme));
    }
    let Some(host) = normalize_host(&parts.host, filters.connect_timeout) else {
        return Err(format!(
            "host {} is not an address and does not resolve",
            parts.host
        ));
    };
    let (allowed, disallowed): (&[String], &[String]) = if filters.allowed_hosts.is_empty() {
        (&[], &filters.disallowed_hosts)
    } else {
        (&filters.allowed_hosts, &[])
    };
    if (!allowed.is_empty() && !allowed.contains(&host)) || disallowed.contains(&host) {
        return Err(format!("host {host} is not allowed"));
    }
    // Python's `if port and ...`: no port written, or port 0, is not checked.
    if let Some(port) = parts.port.filter(|port| *port != 0) {
        let (allowed, disallowed): (&[u16], &[u16]) = if filters.allowed_ports.is_empty() {
            (&[], &filters.disallowed_ports)
        } else {
            (&filters.allowed_ports, &[])
        };
        if (!allowed.is_empty() && !allowed.contains(&port)) || disallowed.contains(&port) {
            return Err(format!("port {port} is not allowed"));
        }
    }
    Ok(ImportUri {
        scheme: parts.scheme,
        host,
        port: parts.port,
        path_and_query: parts.path_and_query,
    })
}

/// A redirect's `Location` made absolute against the URI it answered, as `urljoin` does for
/// the forms servers send: absolute, scheme-relative (`//host/path`), absolute path, relative
/// path, query only.
pub fn join(base: &ImportUri, location: &str) -> String {
    let location = location.trim();
    let has_scheme = location.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if has_scheme {
        return location.to_string();
    }
    if location.starts_with("//") {
        return format!("{}:{location}", base.scheme);
    }
    let origin = {
        let target = base.target();
        let authority_end = target
            .match_indices('/')
            .nth(2)
            .map_or(target.len(), |(at, _)| at);
        target[..authority_end].to_string()
    };
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let base_path = base
        .path_and_query
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    if location.is_empty() {
        return base.target();
    }
    if location.starts_with('?') {
        return format!("{origin}{base_path}{location}");
    }
    let folder = &base_path[..=base_path.rfind('/').unwrap_or(0)];
    format!("{origin}{folder}{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> WebDownload {
        WebDownload::default()
    }

    #[test]
    fn defaults_allow_http_and_https_on_their_ports_or_none_written() {
        let f = filters();
        for uri in [
            "http://127.0.0.1/image.qcow2",
            "https://127.0.0.1:443/x",
            "HTTP://127.0.0.1:80",
            "http://[::1]/x",
        ] {
            assert!(check(uri, &f).is_ok(), "{uri}");
        }
        for uri in [
            "http://127.0.0.1:8080/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "http://127.0.0.1:x/",
            "http://127.0.0.1:70000/",
            "http://user:pw@127.0.0.1/",
            "http://127.0.0.1\\@evil/",
            "http:///x",
            "127.0.0.1/x",
            "",
        ] {
            assert!(check(uri, &f).is_err(), "{uri}");
        }
    }

    #[test]
    fn numeric_forms_other_than_a_dotted_quad_are_refused_as_glance_refuses_them() {
        let f = filters();
        for uri in [
            "http://2130706433/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://127.000.000.001/",
        ] {
            assert!(check(uri, &f).is_err(), "{uri}");
        }
        // Host names are lower-cased by the parser, and must resolve (`.invalid` never does).
        assert_eq!(split("http://LocalHost:8/").unwrap().host, "localhost");
        assert!(check("http://images.invalid/", &f).is_err());
        // Addresses are compared in their shortest form.
        assert_eq!(check("http://[0:0:0:0:0:0:0:1]/", &f).unwrap().host, "::1");
    }

    #[test]
    fn the_allowed_list_wins_over_the_disallowed_one_for_each_part() {
        let mut f = filters();
        f.disallowed_ports = vec![8080];
        // allowed_ports [80, 443] is set, so disallowed_ports is ignored: 8080 fails allowed.
        assert!(check("http://127.0.0.1:8080/", &f).is_err());
        assert!(check("http://127.0.0.1:443/", &f).is_ok());
        // A port in both lists is allowed: the disallowed list is not applied at all.
        f.allowed_ports = vec![80, 8080];
        assert!(check("http://127.0.0.1:8080/", &f).is_ok());
        f.allowed_ports = Vec::new();
        assert!(check("http://127.0.0.1:8080/", &f).is_err());
        assert!(check("http://127.0.0.1:8081/", &f).is_ok());

        f.disallowed_hosts = vec!["127.0.0.1".to_string()];
        assert!(check("http://127.0.0.1:8081/", &f).is_err());
        assert!(check("http://127.0.0.2:8081/", &f).is_ok());
        f.allowed_hosts = vec!["127.0.0.2".to_string(), "::1".to_string()];
        // Now only the allowed hosts count; 127.0.0.1 is refused for not being in them.
        assert!(check("http://127.0.0.1:8081/", &f).is_err());
        assert!(check("http://127.0.0.2:8081/", &f).is_ok());
        assert!(check("http://[::1]:8081/", &f).is_ok());
        f.disallowed_hosts = vec!["127.0.0.2".to_string()];
        assert!(check("http://127.0.0.2:8081/", &f).is_ok());

        f.allowed_schemes = Vec::new();
        f.disallowed_schemes = vec!["https".to_string()];
        assert!(check("https://127.0.0.2/", &f).is_err());
        assert!(check("http://127.0.0.2/", &f).is_ok());
    }

    #[test]
    fn the_client_fetches_the_uri_rebuilt_from_the_checked_parts() {
        let f = filters();
        let uri = check("http://[::1]:443/a/b?c=d#frag", &f).unwrap();
        assert_eq!(uri.target(), "http://[::1]:443/a/b?c=d");
        let uri = check("http://127.0.0.1?x", &f).unwrap();
        assert_eq!(uri.target(), "http://127.0.0.1/?x");
    }

    #[test]
    fn redirect_locations_are_joined_as_urljoin_joins_them() {
        let base = check("http://127.0.0.1:80/dir/file?q", &filters()).unwrap();
        assert_eq!(join(&base, "http://h:1/x"), "http://h:1/x");
        assert_eq!(join(&base, "//h:2/x"), "http://h:2/x");
        assert_eq!(join(&base, "/y"), "http://127.0.0.1:80/y");
        assert_eq!(join(&base, "z"), "http://127.0.0.1:80/dir/z");
        assert_eq!(join(&base, "?r"), "http://127.0.0.1:80/dir/file?r");
    }
}
