//! The download of a `web-download` import: `GET` the URI with a blocking ureq agent and
//! write the body into the staging folder, where the import goes on as `glance-direct`'s does.
//!
//! The body goes through the staging store's upload ([`Store::begin_upload`]): under a
//! temporary name carrying this process's owner token (so a download whose process died is
//! swept like a dead stage), renamed to `<staging>/<image id>` only when whole, refused past
//! `image_size_cap`, and refused when it is not the length its `Content-Length` announced (as
//! Glance's `_WebDownload` refuses it).
//!
//! Redirects are followed here, not by ureq, so that each target is judged by the filters
//! before anything connects to it, as Glance's `SafeRedirectHandler` does; a refused target
//! fails the import. At most [`MAX_REDIRECTS`] are followed (urllib's limit).
//!
//! Bounds: the name lookup and each connection wait at most `web_download_connect_timeout`,
//! sending the request, waiting for the answer and each read of the body at most
//! `web_download_read_timeout`. A peer that stops sending therefore ends the download within
//! one read timeout; one that keeps trickling data is bounded only by `image_size_cap`, and a
//! drain then waits for it until the master's `graceful_shutdown_timeout` kills the child
//! (recovery then puts the image back to `queued` with `os_glance_failed_import`).
//!
//! TLS: rustls (ureq's), trusting the system's CA certificates (the first bundle found of
//! [`SYSTEM_CA_BUNDLES`], as Python's ssl, which Glance uses, trusts OpenSSL's), or ureq's
//! built-in Mozilla roots when the system has none. Proxies from the environment are not
//! used. Nothing here touches the registry.

use std::io::Read;
use std::sync::Arc;

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

use super::import_uri::{self, ImportUri};
use crate::config::WebDownload;
use crate::store::{Store, Stored};

/// Redirects followed before the download gives up (urllib's `max_redirections`).
pub const MAX_REDIRECTS: usize = 10;

/// Where the system keeps its CA bundle: Debian and Ubuntu, Fedora and RHEL, then Alpine and
/// the BSDs.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The system's CA certificates, or `None` when no bundle is readable or holds none.
fn system_roots() -> Option<RootCerts> {
    for path in SYSTEM_CA_BUNDLES {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let certificates: Vec<Certificate<'static>> = ureq::tls::parse_pem(&bytes)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate.to_owned()),
                _ => None,
            })
            .collect();
        if !certificates.is_empty() {
            return Some(RootCerts::new_with_certs(&certificates));
        }
    }
    None
}

fn agent(settings: &WebDownload) -> Agent {
    let roots = system_roots().unwrap_or_else(|| {
        log::warn!(
            "web-download: no CA bundle at {}; https downloads trust ureq's built-in Mozilla \
             roots instead (install ca-certificates to use the system's)",
            SYSTEM_CA_BUNDLES.join(", ")
        );
        RootCerts::WebPki
    });
    let tls = TlsConfig::builder().root_certs(roots).build();
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .proxy(None)
        .user_agent(concat!(
            "glint/",
            env!("CARGO_PKG_VERSION"),
            " web-download"
        ))
        .timeout_resolve(Some(settings.connect_timeout))
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_send_request(Some(settings.read_timeout))
        .timeout_recv_response(Some(settings.read_timeout))
        .timeout_per_read(Some(settings.read_timeout))
        .tls_config(tls)
        .build()
        .new_agent()
}

/// Downloads `uri` (already checked by the filters) into the staging store as image `id`'s
/// staged data; the staged file, or why not (nothing is left in staging then).
pub fn download(
    uri: &ImportUri,
    settings: &WebDownload,
    staging: &Arc<Store>,
    id: &str,
    owner: &str,
) -> Result<Stored, String> {
    let agent = agent(settings);
    let mut current = uri.clone();
    let mut redirects = 0;
    let response = loop {
        let target = current.target();
        let response = agent
            .get(&target)
            .call()
            .map_err(|error| format!("GET {target}: {error}"))?;
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let Some(location) = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
            else {
                return Err(format!("GET {target}: {status} without a usable Location"));
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(format!("GET {target}: more than {MAX_REDIRECTS} redirects"));
            }
            let next = import_uri::join(&current, location);
            current = import_uri::check(&next, settings)
                .map_err(|reason| format!("Redirect to disallowed URL: {next} ({reason})"))?;
            continue;
        }
        // urllib's rule: any 2xx is the data, anything else an error.
        if !(200..300).contains(&status) {
            return Err(format!("GET {target}: HTTP {status}"));
        }
        break response;
    };
    let declared = response.body().content_length();
    let mut upload = staging
        .begin_upload(id, declared, owner)
        .map_err(|error| error.to_string())?;
    let mut reader = response.into_body().into_with_config().reader();
    loop {
        // Read straight into the upload's buffer: hashed and written with no copy.
        let mut buffer = upload.buffer();
        let n = match reader.read(buffer.space()) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(format!(
                    "reading {}: {error} after {} bytes",
                    current.target(),
                    upload.bytes_written()
                ))
            }
        };
        upload
            .write_buffer(buffer, n)
            .map_err(|error| error.to_string())?;
    }
    upload.finish().map_err(|error| error.to_string())
}
