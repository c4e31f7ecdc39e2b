#!/usr/bin/env python3
"""openstacksdk's image proxy against a running glint, without keystone.

Run by scripts/interop/run with the venv's python:
    .venv/bin/python scripts/interop/test_openstacksdk.py --url http://127.0.0.1:PORT --workdir D

The connection is `openstack.connect(auth_type="none", auth={"endpoint": URL},
image_endpoint_override=URL)` with clouds.yaml and OS_* variables ignored: openstacksdk then
discovers the version at URL (GET / -> 300 with the versions document) and talks to URL/v2/, with
`Accept: application/json`, so errors come back as JSON. With --token (glint running with
auth_strategy = token) the connection is `auth_type="admin_token", auth={"endpoint": URL, "token":
TOKEN}` instead: keystoneauth's static-token plugin (keystoneauth1.token_endpoint.Token), which
sends the token as X-Auth-Token on every request and never calls keystone; two more checks run:
a wrong token and no token each get a clean 401. A failing check prints the exception and the
last requests openstacksdk logged.
"""

import hashlib
import io
import logging
import os
import time
import uuid

import openstack
from openstack import exceptions

from common import (
    Failed,
    check,
    digests,
    equal,
    main_guard,
    parse_args,
    random_data,
    run_checks,
    unique,
    web_file,
)

ARGS = None
CONN = None
CACHE_DEADLINE = 30


class RecentRequests(logging.Handler):
    """Keeps the last lines keystoneauth logs (requests, responses) for failure reports."""

    def __init__(self, keep=40):
        super().__init__(logging.DEBUG)
        self.keep = keep
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record)[:2000])
        del self.lines[: -self.keep]


RECENT = RecentRequests()


def checked(fn):
    def wrapper():
        RECENT.lines.clear()
        try:
            fn()
        except Exception as error:
            detail = str(error) if isinstance(error, Failed) else f"{type(error).__name__}: {error}"
            log = "\n".join(RECENT.lines) or "(none)"
            raise Failed(f"{detail}\n--- last requests ---\n{log}") from error

    wrapper.__name__ = fn.__name__
    return wrapper


def expect_http_error(cls, status, what, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except cls as error:
        equal(error.status_code, status, f"{what}: status code")
        return error
    except exceptions.HttpException as error:
        raise Failed(f"{what}: expected {cls.__name__} ({status}), got {type(error).__name__} {error.status_code}: {error}")
    raise Failed(f"{what}: expected {cls.__name__} ({status}), got no error")


def check_data_fields(image, data, what):
    md5, sha512 = digests(data)
    equal(image.status, "active", f"{what}: status")
    equal(image.size, len(data), f"{what}: size")
    equal(image.checksum, md5, f"{what}: checksum (md5)")
    equal(image.hash_algo, "sha512", f"{what}: os_hash_algo")
    equal(image.hash_value, sha512, f"{what}: os_hash_value")


def new_image(name_prefix, data=None, **attrs):
    """create_image, bare/raw, with `data` when given (the SDK PUTs it and, with
    validate_checksum, compares the server's checksum with its own md5)."""
    kwargs = dict(disk_format="raw", container_format="bare", wait=False)
    kwargs.update(attrs)
    if data is not None:
        kwargs.update(data=data, validate_checksum=True)
    return CONN.image.create_image(unique(name_prefix), **kwargs)


def delete_quietly(image):
    try:
        if CONN.image.get_image(image).is_protected:
            CONN.image.update_image(image, is_protected=False)
        CONN.image.delete_image(image, ignore_missing=True)
    except exceptions.SDKException:
        pass


@checked
def discovery():
    """Version discovery at the endpoint picks v2; the proxy lists images."""
    endpoint = CONN.image.get_endpoint()
    check(endpoint.rstrip("/").endswith("/v2"), f"image endpoint {endpoint!r} is not .../v2")
    list(CONN.image.images(limit=1, paginated=False))


@checked
def create_with_data():
    """create_image(data=bytes, validate_checksum=True): POST, PUT .../file, GET to compare the
    checksum; the SDK records its own md5/sha256 as owner_specified.openstack.* properties."""
    data = random_data(1024 * 1024 + 333)
    image = new_image("sdk-create", data)
    fetched = CONN.image.get_image(image.id)
    check_data_fields(fetched, data, "get_image after create_image")
    md5 = digests(data)[0]
    props = fetched.properties or {}
    equal(props.get("owner_specified.openstack.md5"), md5, "owner_specified.openstack.md5")
    equal(
        props.get("owner_specified.openstack.sha256"),
        hashlib.sha256(data).hexdigest(),
        "owner_specified.openstack.sha256",
    )
    equal(fetched.disk_format, "raw", "disk_format")
    equal(fetched.container_format, "bare", "container_format")
    delete_quietly(image)


@checked
def create_from_file():
    """create_image(filename=...): the SDK hashes the file and streams it."""
    data = random_data(300_001)
    path = os.path.join(ARGS.workdir, "sdk-file.bin")
    with open(path, "wb") as f:
        f.write(data)
    image = CONN.image.create_image(
        unique("sdk-file"), filename=path, disk_format="raw", container_format="bare", validate_checksum=True
    )
    check_data_fields(CONN.image.get_image(image.id), data, "get_image after create_image(filename)")
    delete_quietly(image)


@checked
def download():
    """download_image in memory, to a file, streamed, and Image.download: the SDK verifies
    os_hash_value (sha512) itself; we compare bytes and hashes too."""
    data = random_data(2 * 1024 * 1024 + 5)
    image = new_image("sdk-download", data)
    md5, sha512 = digests(data)

    got = CONN.image.download_image(image)
    got = got.content if hasattr(got, "content") else got
    check(got == data, f"download_image returned {len(got)} bytes that differ from the upload")
    equal(digests(got), (md5, sha512), "hashes of download_image")

    path = os.path.join(ARGS.workdir, "sdk-download.bin")
    CONN.image.download_image(image, output=path)
    with open(path, "rb") as f:
        check(f.read() == data, "download_image(output=path) wrote different bytes")

    buffer = io.BytesIO()
    CONN.image.download_image(image, output=buffer, chunk_size=65536)
    check(buffer.getvalue() == data, "download_image(output=BytesIO) wrote different bytes")

    response = CONN.image.download_image(image, stream=True)
    streamed = b"".join(response.iter_content(chunk_size=100_000))
    check(streamed == data, "download_image(stream=True) streamed different bytes")
    if "Content-MD5" in response.headers:
        equal(response.headers["Content-MD5"], md5, "Content-MD5 header")

    fetched = CONN.image.get_image(image.id)
    response = fetched.download(CONN.image)
    check(response.content == data, "Image.download returned different bytes")
    delete_quietly(image)


@checked
def list_images():
    """images(): with a small page size the SDK follows `next` (marker=last id); every image
    once; filters by name and by tag reach the server."""
    tag = unique("sdk-list-tag")
    created = [new_image("sdk-list", tags=[tag]).id for _ in range(7)]
    untagged = new_image("sdk-list").id

    listed = [i.id for i in CONN.image.images(limit=3, tag=tag)]
    duplicates = sorted({i for i in listed if listed.count(i) > 1})
    check(not duplicates, f"listed more than once: {duplicates}")
    equal(sorted(listed), sorted(created), "ids listed with tag filter, pages of 3")

    everything = [i.id for i in CONN.image.images(limit=4)]
    check(len(everything) == len(set(everything)), "an image listed twice across pages")
    for image_id in created + [untagged]:
        check(image_id in everything, f"{image_id} missing from the unfiltered list")

    one = CONN.image.get_image(created[0])
    by_name = [i.id for i in CONN.image.images(name=one.name)]
    equal(by_name, [one.id], "images(name=...)")
    found = CONN.image.find_image(one.name)
    check(found is not None and found.id == one.id, f"find_image by name found {found!r}")
    for image_id in created + [untagged]:
        delete_quietly(image_id)


@checked
def update_properties():
    """Property updates as SDK users write them, each a JSON patch sent with
    application/openstack-images-v2.1-json-patch: update_image_properties adds and replaces
    (replace/add ops), update_image(properties=...) with a key left out removes it (a remove op),
    update_image(name=, min_ram=) changes base attributes. (Custom-property kwargs to update_image
    stand for the whole set: the SDK removes every property not passed.)"""
    image = new_image("sdk-update", keep="1", change="old", drop="me")
    fetched = CONN.image.get_image(image.id)
    props = dict(fetched.properties or {})
    equal((props.get("keep"), props.get("change"), props.get("drop")), ("1", "old", "me"), "properties at create")

    changed = CONN.image.update_image_properties(image=fetched, change="new", added="yes")
    check(changed, "update_image_properties reported no change")
    fetched = CONN.image.get_image(image.id)
    props = dict(fetched.properties or {})
    equal(props.get("change"), "new", "replaced property")
    equal(props.get("added"), "yes", "added property")
    equal(props.get("keep"), "1", "untouched property")
    equal(props.get("drop"), "me", "untouched property")

    remaining = {k: v for k, v in props.items() if k != "drop"}
    CONN.image.update_image(fetched, properties=remaining)
    fetched = CONN.image.get_image(image.id)
    props = dict(fetched.properties or {})
    check("drop" not in props, f"property 'drop' not removed: {props.get('drop')!r}")
    equal(props, remaining, "properties after removing 'drop'")

    new_name = unique("sdk-updated")
    CONN.image.update_image(fetched, name=new_name, min_ram=256, min_disk=2, **props)
    fetched = CONN.image.get_image(image.id)
    equal(fetched.name, new_name, "name")
    equal(fetched.min_ram, 256, "min_ram")
    equal(fetched.min_disk, 2, "min_disk")
    equal(dict(fetched.properties or {}), remaining, "properties kept through a base-attribute update")
    delete_quietly(image)


@checked
def tags():
    """add_tag / remove_tag: PUT and DELETE /v2/images/{id}/tags/{tag}."""
    image = new_image("sdk-tags")
    CONN.image.add_tag(image, "alpha")
    CONN.image.add_tag(image, "beta")
    CONN.image.add_tag(image, "alpha")
    equal(sorted(CONN.image.get_image(image.id).tags), ["alpha", "beta"], "tags after adds")
    CONN.image.remove_tag(image, "alpha")
    equal(CONN.image.get_image(image.id).tags, ["beta"], "tags after remove_tag")
    delete_quietly(image)


@checked
def delete():
    """delete_image, then get_image is a 404 and a second delete (ignore_missing=False) too."""
    image = new_image("sdk-delete", random_data(1000))
    CONN.image.delete_image(image, ignore_missing=False)
    expect_http_error(exceptions.NotFoundException, 404, "get_image after delete", CONN.image.get_image, image.id)
    expect_http_error(
        exceptions.NotFoundException, 404, "second delete", CONN.image.delete_image, image.id, ignore_missing=False
    )
    equal(CONN.image.find_image(image.id), None, "find_image of a deleted id")


@checked
def errors():
    """JSON errors (Accept: application/json): 404 unknown id, 403 protected delete, 409 upload to
    an active image; the SDK maps them to its exceptions and carries the server's message."""
    unknown = str(uuid.uuid4())
    error = expect_http_error(exceptions.NotFoundException, 404, "get_image(unknown)", CONN.image.get_image, unknown)
    check(
        f"No image found with ID {unknown}" in (error.details or ""),
        f"glint's message is missing from the SDK's error: {error!r}",
    )

    protected = new_image("sdk-protected", is_protected=True)
    check(CONN.image.get_image(protected.id).is_protected, "is_protected after create")
    expect_http_error(
        exceptions.ForbiddenException, 403, "delete of a protected image",
        CONN.image.delete_image, protected, ignore_missing=False,
    )
    equal(CONN.image.get_image(protected.id).status, "queued", "the protected image is still there")
    delete_quietly(protected)

    data = random_data(4096)
    active = new_image("sdk-conflict", data)
    fetched = CONN.image.get_image(active.id)
    response = fetched.upload(CONN.image, data=random_data(100))
    expect_http_error(
        exceptions.ConflictException, 409, "second upload", exceptions.raise_from_response, response
    )
    check_data_fields(CONN.image.get_image(active.id), data, "after the refused upload")
    delete_quietly(active)


def wait_imported(image, what):
    """Polls get_image until the image is active, failing on os_glance_failed_import; returns
    it."""
    deadline = time.monotonic() + CACHE_DEADLINE
    while True:
        shown = CONN.image.get_image(image.id)
        if shown.status == "active":
            return shown
        failed = shown.properties.get("os_glance_failed_import") if shown.properties else None
        check(
            shown.status in ("queued", "uploading", "importing") and not failed
            and time.monotonic() < deadline,
            f"{what} did not make the image active: status {shown.status!r}, "
            f"os_glance_failed_import {failed!r}",
        )
        time.sleep(0.2)


@checked
def import_web_download():
    """import_image(method='web-download', uri=...): 202, then glint downloads the URI from the
    run's HTTP server and the image turns active with the data's size and hashes."""
    data = random_data(200_003)
    uri = web_file(ARGS, data)
    image = new_image("sdk-web")
    CONN.image.import_image(image, method="web-download", uri=uri)
    check_data_fields(wait_imported(image, "the web-download import"), data, "get_image after web-download")
    delete_quietly(image)


@checked
def import_glance_direct():
    """create_image(filename=..., use_import=True): openstacksdk stages the file and imports it
    with glance-direct, then waits for active."""
    data = random_data(150_001)
    path = os.path.join(ARGS.workdir, "sdk-import.bin")
    with open(path, "wb") as f:
        f.write(data)
    image = CONN.image.create_image(
        unique("sdk-import"), filename=path, disk_format="raw", container_format="bare",
        use_import=True, validate_checksum=False,
    )
    check_data_fields(wait_imported(image, "the glance-direct import"), data, "get_image after use_import")
    delete_quietly(image)


def cached_image_ids():
    return [entry.image_id for entry in CONN.image.get_image_cache().cached_images or []]


@checked
def cache():
    """queue_image, get_image_cache, cache_delete_image and clear_cache against the cache API
    (the SDK's Cache resource speaks microversion 2.15, which /versions must list)."""
    data = random_data(100_000)
    image = new_image("sdk-cache", data)
    for step in ("queue_image", "queue_image after cache_delete_image"):
        CONN.image.queue_image(image.id)
        deadline = time.monotonic() + CACHE_DEADLINE
        while image.id not in cached_image_ids():
            check(time.monotonic() < deadline, f"{step}: not cached within {CACHE_DEADLINE}s")
            time.sleep(0.1)
        if step == "queue_image":
            CONN.image.cache_delete_image(image.id, ignore_missing=False)
            check(image.id not in cached_image_ids(), "cache_delete_image left the image cached")
    CONN.image.clear_cache()
    cache = CONN.image.get_image_cache()
    equal((cache.cached_images, cache.queued_images), ([], []), "the cache after clear_cache")
    delete_quietly(image)


def connect(token):
    """A connection to glint: with a static token (admin_token plugin) or, for None, none."""
    if token is None:
        auth_type, auth = "none", {"endpoint": ARGS.url}
    else:
        auth_type, auth = "admin_token", {"endpoint": ARGS.url, "token": token}
    return openstack.connect(
        auth_type=auth_type,
        auth=auth,
        image_endpoint_override=ARGS.url,
        load_yaml_config=False,
        load_envvars=False,
    )


def expect_401(connection, what):
    """Listing through `connection` fails with a 401 HttpException carrying glint's message."""
    error = expect_http_error(
        exceptions.HttpException, 401, what, lambda: list(connection.image.images(limit=1, paginated=False))
    )
    check("X-Auth-Token" in str(error), f"{what}: glint's message is missing from {error!r}")


@checked
def wrong_token_is_a_clean_401():
    """auth_strategy = token and a token glint does not list: 401 as an HttpException whose
    message is glint's; discovery (open) still worked, and the right token still lists."""
    expect_401(connect("not-" + ARGS.token), "list with a wrong token")
    list(CONN.image.images(limit=1, paginated=False))


@checked
def no_token_is_a_clean_401():
    """auth_strategy = token and auth_type none (no X-Auth-Token at all): 401."""
    expect_401(connect(None), "list without a token")


CHECKS = [
    discovery, create_with_data, create_from_file, download, list_images, update_properties, tags, delete, errors,
    cache, import_web_download, import_glance_direct,
]
AUTH_CHECKS = [wrong_token_is_a_clean_401, no_token_is_a_clean_401]


def main():
    global ARGS, CONN
    ARGS = parse_args(__doc__.splitlines()[0])
    RECENT.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in ("keystoneauth", "openstack"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(RECENT)
        logger.propagate = False
    CONN = connect(ARGS.token)
    checks = CHECKS + (AUTH_CHECKS if ARGS.token else [])
    return run_checks("openstacksdk", checks, ARGS)


if __name__ == "__main__":
    main_guard(main)
