//! Image data: `PUT /v2/images/{id}/file` (upload) and `GET /v2/images/{id}/file` (download).
//!
//! An upload moves the image from `queued` to `saving` (recording this process as the
//! uploader), streams the body into the store in fixed-size chunks while hashing it, and only
//! after the store has renamed the complete file into place turns the image `active`. Every
//! failure on the way puts the image back to `queued`, and the store removes its temporary file,
//! so no partial data is ever visible. If this process dies mid-upload, a serving child's
//! maintenance thread (within `RECOVERY_PERIOD`), or the next child to start, finds the image still
//! `saving` under a dead uploader and recovers it (see `Api::recover_abandoned`, `Api::recover`).
//!
//! A download sends the file with sendfile(2) (`Body::File`), whole or one byte range. With the
//! `caching` or `cachemanagement` flavor it is sent from the image cache when the cache holds a
//! verified copy (logged at debug as "cache hit"); otherwise from the store, and a GET of the
//! whole image queues it for this child's prefetcher (see `cache`).

use std::io::{Read, Seek, SeekFrom};

use super::access::Context;
use super::error::ApiError;
use super::Api;
use crate::http::head::Framing;
use crate::http::response::{Body, Response};
use crate::http::serve::Request;
use crate::registry::{Image, ImageStatus, Location};
use crate::store::{Store, StoreError, Stored};

impl Api {
    /// `PUT /v2/images/{id}/file`.
    pub(super) fn upload(
        &self,
        request: &mut Request<'_>,
        context: &Context,
        id: &str,
    ) -> Result<Response, ApiError> {
        require_octet_stream(request)?;
        // As in Glance, the store is checked before the image is looked up.
        let (store_id, store) = self.upload_store(request)?;
        let found = self.find_for(context, id, "upload_image")?;
        let id = &found.id;
        let declared = declared_size_within_cap(request, self.config.image_size_cap)?;
        let owner = self.owner_token.clone();
        let saving_image = self
            .registry
            .update(id, |image| {
                context.enforce_on_image("upload_image", image)?;
                if image.status != ImageStatus::Queued {
                    return Err(ApiError::Conflict(format!(
                        "Image status transition from {} to saving is not allowed",
                        image.status
                    )));
                }
                if image.disk_format.is_none() || image.container_format.is_none() {
                    return Err(ApiError::BadRequest(
                        "Properties disk_format, container_format must be set prior to saving \
                         data."
                            .to_string(),
                    ));
                }
                image.status = ImageStatus::Saving;
                image.upload_owner = Some(owner.clone());
                Ok(())
            })?
            .ok_or_else(|| super::images::not_found(id))?;

        // From here on the image is `saving` under this process: whatever happens next (an
        // error on any path, even a panic caught by the worker), the guard puts it back to
        // `queued` unless the upload commits.
        let mut saving = SavingGuard {
            api: self,
            id,
            committed: false,
        };
        let (stored, virtual_size) = self.receive(request, store, &saving_image, declared)?;
        let committed = self.registry.update(id, |image| {
            if image.status != ImageStatus::Saving
                || image.upload_owner.as_deref() != Some(owner.as_str())
            {
                return Err(ApiError::Conflict(
                    "The image changed state during the upload.".to_string(),
                ));
            }
            activate(image, &stored, virtual_size, store_id);
            Ok(())
        });
        match committed {
            Ok(Some(_)) => {
                saving.committed = true;
                match store_id {
                    Some(store) => {
                        log::info!(
                            "image {id} is active: {} bytes in store {store}",
                            stored.size
                        )
                    }
                    None => log::info!("image {id} is active: {} bytes", stored.size),
                }
                Ok(Response::new(204))
            }
            Ok(None) | Err(_) => {
                // Deleted (or taken over) while we wrote: the data belongs to nothing.
                if let Err(error) = store.delete_data(&stored.location) {
                    log::error!(
                        "cannot remove the data of image {id}, deleted during its upload: {error}"
                    );
                }
                if let Err(error @ ApiError::Unavailable(_) | error @ ApiError::Internal(_)) =
                    committed
                {
                    return Err(error);
                }
                Err(ApiError::Gone(format!(
                    "Image {id} could not be found after upload. The image may have been deleted \
                     during the upload."
                )))
            }
        }
    }

    /// Streams the request body into a new store upload and, if its format inspection accepts
    /// the data, finishes it; answers the stored data and its `virtual_size`.
    ///
    /// Each chunk goes to the format inspector as it goes to the store: the data is read once.
    /// A refusal drops the upload, which removes its temporary file, so refused data is never
    /// stored under the image's name nor downloadable (Glance 32 stores it and serves it).
    fn receive(
        &self,
        request: &mut Request<'_>,
        store: &Store,
        image: &Image,
        declared: Option<u64>,
    ) -> Result<(Stored, Option<u64>), ApiError> {
        let id = image.id.as_str();
        let mut inspector = crate::format::Inspector::new();
        let mut upload = store
            .begin_upload(id, declared, &self.owner_token)
            .map_err(store_error)?;
        pump(request, id, &mut upload, |chunk| inspector.feed(chunk))?;
        let missed = inspector.missed();
        let verdict = crate::format::judge(
            &inspector.seen(),
            missed,
            image.disk_format.as_deref().unwrap_or_default(),
            image.container_format.as_deref().unwrap_or_default(),
            &self.config.image_format.rules,
        );
        let virtual_size = match verdict {
            Ok(virtual_size) => virtual_size,
            Err(refusal) => {
                log::info!("upload of image {id} refused by format inspection: {refusal}");
                // Glance (glance/api/v2/image_data.py): InvalidImageData is 415 with the
                // inspector's message as its detail.
                return Err(ApiError::UnsupportedMediaType {
                    message: refusal.to_string(),
                    accept_patch: false,
                });
            }
        };
        let stored = upload.finish().map_err(store_error)?;
        Ok((stored, virtual_size))
    }

    /// The store an upload goes to, with its id (`None` with one store): with several, the one
    /// `X-Image-Meta-Store` names, else the default; an unknown id is 400, as in Glance.
    pub(super) fn upload_store(
        &self,
        request: &Request<'_>,
    ) -> Result<(Option<&str>, &std::sync::Arc<Store>), ApiError> {
        if !self.stores.is_multi() {
            return Ok((None, self.stores.default_store()));
        }
        let Some(wanted) = request.head.header_str("x-image-meta-store") else {
            return Ok((self.stores.default_id(), self.stores.default_store()));
        };
        let wanted = wanted.trim();
        match self.stores.iter().find(|(id, _)| *id == Some(wanted)) {
            Some((id, store)) => Ok((id, store)),
            None => Err(ApiError::BadRequest(format!(
                "Unknown scheme '{wanted}' found in URI"
            ))),
        }
    }

    /// Puts an image whose upload failed back to `queued`, if it is still ours.
    fn requeue(&self, id: &str) {
        let owner = self.owner_token.as_str();
        let result = self.registry.update(id, |image| {
            if image.status == ImageStatus::Saving && image.upload_owner.as_deref() == Some(owner) {
                image.status = ImageStatus::Queued;
                image.upload_owner = None;
            }
            Ok::<(), ApiError>(())
        });
        if let Err(error) = result {
            // Left `saving` under this live process, the image would refuse every new upload
            // until this child exits and a later one recovers it: say so, with the way out.
            log::error!(
                "image {id} stays in saving after a failed upload ({error}); it returns to \
                 queued when this child exits (reload to make that happen now)"
            );
        }
    }

    /// `GET /v2/images/{id}/file`.
    pub(super) fn download(
        &self,
        request: &Request<'_>,
        context: &Context,
        id: &str,
    ) -> Result<Response, ApiError> {
        let image = self.find_for(context, id, "download_image")?;
        // Only an admin reads the data of a deactivated image (glance/api/v2/image_data.py).
        if image.status == ImageStatus::Deactivated && !context.is_admin {
            return Err(ApiError::Forbidden(
                "The requested image has been deactivated. Image data download is forbidden."
                    .to_string(),
            ));
        }
        let (Some(location), ImageStatus::Active | ImageStatus::Deactivated) =
            (&image.location, image.status)
        else {
            // Glance answers 204 for an image that has no data (yet).
            return Ok(Response::new(204));
        };
        // The cache serves only active images: a deactivated one is read from the store.
        let cached = match image.status {
            ImageStatus::Active => self.cache_lookup(request, &image),
            _ => None,
        };
        if let Some(hit) = cached {
            log::debug!("cache hit: image {id} served from {}", hit.path.display());
            return file_response(
                request,
                &image,
                hit.file,
                hit.size,
                &hit.path.to_string_lossy(),
            );
        }
        let (file, size) = self
            .stores
            .default_store()
            .open_data(location)
            .map_err(|error| match error {
                StoreError::NotFound => {
                    log::error!(
                        "the data of active image {id} is missing at {location}; restore the file \
                     or delete the image"
                    );
                    ApiError::Internal(format!("data of image {id} missing at {location}"))
                }
                other => store_error(other),
            })?;
        file_response(request, &image, file, size, location)
    }

    /// With a caching flavor: the verified cache entry of `image`, if there is one. On a miss
    /// of a GET of the whole image the image is queued, so that this child's prefetcher copies
    /// it into the cache while (or after) the store's copy is sent. A GET of part of the image
    /// (a `Range` that leaves bytes out) queues nothing: otherwise a 1-byte read would cost a
    /// copy of the whole image. Nor does a miss while a failed fill of the image backs off, or
    /// of an image larger than the cache (see `Cache::wants`).
    fn cache_lookup(&self, request: &Request<'_>, image: &Image) -> Option<crate::cache::Hit> {
        let pipeline = self.cache.as_ref()?;
        let expected = crate::cache::Expected::of_image(image)?;
        if let Some(hit) = pipeline.cache.lookup(&image.id, &expected) {
            crate::metrics::cache_lookup(true);
            return Some(hit);
        }
        crate::metrics::cache_lookup(false);
        log::debug!("cache miss: image {}", image.id);
        if request.method() == "GET"
            && reads_whole(request, expected.size)
            && !pipeline.cache.contains(&image.id)
            && pipeline.cache.wants(&image.id, expected.size)
        {
            match pipeline.cache.queue(&image.id) {
                Ok(_) => pipeline.waker.wake(),
                Err(error) => log::warn!("image cache: {error}"),
            }
        }
        None
    }
}

/// Streams the body of `request` into `upload`, giving each chunk to `also` too (the format
/// inspector, say). Each read goes straight into a buffer the upload lends out
/// ([`crate::store::Upload::buffer`], up to [`crate::store::UPLOAD_BUFFER`] bytes), which is
/// then hashed and written with no copy. A client that stalls past `client_body_timeout` is
/// 408; a body that breaks off or is malformed is 400; a store failure is its own status.
pub(super) fn pump(
    request: &mut Request<'_>,
    id: &str,
    upload: &mut crate::store::Upload,
    mut also: impl FnMut(&[u8]),
) -> Result<(), ApiError> {
    loop {
        let mut buffer = upload.buffer();
        let n = match request.read(buffer.space()) {
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                log::info!(
                    "upload of image {id} interrupted after {} bytes: {error}",
                    upload.bytes_written()
                );
                // A stall past `client_body_timeout` shows as WouldBlock (SO_RCVTIMEO) or
                // TimedOut: 408, as for a JSON body that did not arrive in time.
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) {
                    return Err(ApiError::RequestTimeout(
                        "The upload stalled for longer than client_body_timeout.".to_string(),
                    ));
                }
                return Err(ApiError::BadRequest(
                    match crate::http::body::http_error(&error) {
                        Some(http) => http.message().to_string(),
                        None => format!("The upload was interrupted: {error}"),
                    },
                ));
            }
        };
        if n == 0 {
            return Ok(());
        }
        // The chunk goes to `also` before the store takes the buffer; if the store then refuses
        // it (the size cap, a full disk), the upload fails and what `also` saw is dropped.
        also(buffer.space().get(..n).unwrap_or_default());
        upload.write_buffer(buffer, n).map_err(store_error)?;
    }
}

/// Whether `request` reads all `size` bytes: no `Range`, or one that covers the whole image. A
/// `Range` that does not parse is answered 416 later and reads nothing.
fn reads_whole(request: &Request<'_>, size: u64) -> bool {
    covers_whole(request.head.header_str("range"), size)
}

/// Whether a request with this `Range` header (or none) reads all `size` bytes.
fn covers_whole(range: Option<&str>, size: u64) -> bool {
    match range {
        None => true,
        Some(value) => {
            size > 0 && matches!(parse_range(value, size), Ok((0, last)) if last == size - 1)
        }
    }
}

/// The download response for `file` (`size` bytes, found at `location`): whole, or the one
/// byte range the request asks for.
fn file_response(
    request: &Request<'_>,
    image: &Image,
    mut file: std::fs::File,
    size: u64,
    location: &str,
) -> Result<Response, ApiError> {
    let range = match request.head.header_str("range") {
        Some(value) => Some(parse_range(value, size)?),
        None => None,
    };
    let response = match range {
        None => {
            let mut response =
                Response::new(200).header("Content-Type", "application/octet-stream");
            if let Some(checksum) = &image.checksum {
                response = response.header("Content-MD5", checksum);
            }
            response.body = Body::File { file, len: size };
            response
        }
        Some((first, last)) => {
            file.seek(SeekFrom::Start(first))
                .map_err(|error| ApiError::Internal(format!("seek in {location}: {error}")))?;
            let mut response = Response::new(206)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", &format!("bytes {first}-{last}/{size}"));
            response.body = Body::File {
                file,
                len: last - first + 1,
            };
            response
        }
    };
    Ok(response)
}

/// Puts an image whose upload did not commit back to `queued` when dropped: the one place that
/// covers every failure after the move to `saving`, including a panic unwinding through the
/// handler.
struct SavingGuard<'a> {
    api: &'a Api,
    id: &'a str,
    committed: bool,
}

impl Drop for SavingGuard<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.api.requeue(self.id);
        }
    }
}

/// The size the client announced: `x-openstack-image-size` (glanceclient sends it with chunked
/// uploads), else the Content-Length of the body.
/// 415 unless the body is `application/octet-stream`, as image data must be (upload and
/// stage alike).
pub(super) fn require_octet_stream(request: &Request<'_>) -> Result<(), ApiError> {
    let media_type = request
        .head
        .header_str("content-type")
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("application/octet-stream") {
        return Err(ApiError::UnsupportedMediaType {
            message: "Image data must be sent as application/octet-stream.".to_string(),
            accept_patch: false,
        });
    }
    Ok(())
}

/// [`declared_size`], refused with 413 before any byte is read when it is over `cap`
/// (`image_size_cap`).
pub(super) fn declared_size_within_cap(
    request: &Request<'_>,
    cap: u64,
) -> Result<Option<u64>, ApiError> {
    let declared = declared_size(request)?;
    if let Some(size) = declared.filter(|&size| size > cap) {
        return Err(ApiError::TooLarge(format!(
            "Image exceeds the storage quota: the image is {size} bytes and image_size_cap is {cap}."
        )));
    }
    Ok(declared)
}

fn declared_size(request: &Request<'_>) -> Result<Option<u64>, ApiError> {
    if let Some(value) = request.head.header_str("x-openstack-image-size") {
        return value.trim().parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("Invalid x-openstack-image-size: {value:?}"))
        });
    }
    Ok(match request.head.framing {
        Framing::Length(length) => Some(length),
        _ => None,
    })
}

/// One byte range (RFC 9110 §14.1.2): `bytes=A-B`, `bytes=A-` or `bytes=-N`, as inclusive
/// (first, last). Several ranges, or one outside the file, are 416.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), ApiError> {
    let unsatisfiable = || ApiError::RangeNotSatisfiable { size };
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(unsatisfiable)?;
    if spec.contains(',') || size == 0 {
        return Err(unsatisfiable());
    }
    let (start, end) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (start, end) = (start.trim(), end.trim());
    let number = |text: &str| text.parse::<u64>().map_err(|_| unsatisfiable());
    let (first, last) = match (start.is_empty(), end.is_empty()) {
        (true, true) => return Err(unsatisfiable()),
        (true, false) => {
            let suffix = number(end)?;
            if suffix == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(suffix), size - 1)
        }
        (false, true) => (number(start)?, size - 1),
        (false, false) => (number(start)?, number(end)?.min(size - 1)),
    };
    if first > last || first >= size {
        return Err(unsatisfiable());
    }
    Ok((first, last))
}

/// A store failure as the client sees it.
pub(super) fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Full => ApiError::TooLarge(
            "Image storage media is full: there is not enough disk space on the image storage \
             media."
                .to_string(),
        ),
        StoreError::TooLarge { cap } | StoreError::SizeCapExceeded { cap } => ApiError::TooLarge(
            format!("Image exceeds the storage quota: image_size_cap is {cap} bytes."),
        ),
        StoreError::SizeMismatch { declared, actual } => ApiError::BadRequest(format!(
            "Provided image size must match the stored image size. (provided size: {declared}, \
             stored size: {actual})"
        )),
        StoreError::NotFound => ApiError::NotFound("Image data not found.".to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Makes `image` the active image of the data just stored (by an upload or an import): its
/// size, `virtual_size`, hashes, and its location, recorded with the backend that holds it when
/// there are several stores.
pub(super) fn activate(
    image: &mut Image,
    stored: &Stored,
    virtual_size: Option<u64>,
    store_id: Option<&str>,
) {
    image.status = ImageStatus::Active;
    image.size = Some(stored.size);
    image.virtual_size = virtual_size;
    image.checksum = Some(stored.checksum.clone());
    image.os_hash_algo = Some(stored.hash_algo.to_string());
    image.os_hash_value = Some(stored.hash_value.clone());
    image.location = Some(stored.location.clone());
    image.locations = match store_id {
        Some(store) => vec![Location {
            store: store.to_string(),
            path: stored.location.clone(),
        }],
        None => Vec::new(),
    };
    image.upload_owner = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_range_covering_the_whole_image_is_a_whole_read() {
        for (range, whole) in [
            (None, true),
            (Some("bytes=0-"), true),
            (Some("bytes=0-9"), true),
            (Some("bytes=0-1000"), true),
            (Some("bytes=-10"), true),
            (Some("bytes=-11"), true),
            (Some("bytes=0-0"), false),
            (Some("bytes=0-8"), false),
            (Some("bytes=1-"), false),
            (Some("bytes=-9"), false),
            (Some("bytes=9-9"), false),
            (Some("bytes=0-1,2-9"), false),
            (Some("bytes=x"), false),
        ] {
            assert_eq!(covers_whole(range, 10), whole, "{range:?}");
        }
        assert!(!covers_whole(Some("bytes=0-"), 0));
        assert!(covers_whole(None, 0));
    }

    #[test]
    fn ranges() {
        let ok = [
            ("bytes=0-0", 10, (0, 0)),
            ("bytes=0-9", 10, (0, 9)),
            ("bytes=2-", 10, (2, 9)),
            ("bytes=-3", 10, (7, 9)),
            ("bytes=-30", 10, (0, 9)),
            ("bytes=5-100", 10, (5, 9)),
        ];
        for (value, size, expected) in ok {
            assert_eq!(parse_range(value, size).unwrap(), expected, "{value}");
        }
        for (value, size) in [
            ("bytes=10-", 10),
            ("bytes=5-2", 10),
            ("bytes=-0", 10),
            ("bytes=0-1,3-4", 10),
            ("items=0-1", 10),
            ("bytes=a-b", 10),
            ("bytes=-", 10),
            ("bytes=0-0", 0),
        ] {
            assert_eq!(
                parse_range(value, size).unwrap_err().status(),
                416,
                "{value}"
            );
        }
    }
}
