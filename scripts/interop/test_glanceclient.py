#!/usr/bin/env python3
"""python-glanceclient's `glance` CLI against a running glint, without keystone.

Run by scripts/interop/run with the venv's python:
    .venv/bin/python scripts/interop/test_glanceclient.py --url http://127.0.0.1:PORT --workdir D

The CLI is the one in the venv's bin, with OS_IMAGE_URL and OS_AUTH_TOKEN set: glanceclient sends
the token as X-Auth-Token and skips keystone. Against glint's default noauth the token is a dummy
that nobody checks; with --token (glint running with auth_strategy = token) it is that token, and
one more check runs: a wrong token gets a clean 401. HOME should be a scratch directory: glanceclient caches the
schemas it fetches under ~/.glanceclient. Set GLINT_INTEROP_DEBUG=1 to pass --debug to every
command (request/response logs land in the failure reports).

Every check creates the images it needs, so one failure does not cascade into the others. A
failing check prints the commands it ran with their exit status, stdout and stderr.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import traceback
import uuid

from common import (
    Failed,
    check,
    clean_os_environ,
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
GLANCE = os.path.join(os.path.dirname(sys.executable), "glance")
COMMAND_TIMEOUT = 120
CACHE_DEADLINE = 30


class Result:
    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def report(self):
        return (
            f"$ {shlex.join(self.argv)}\n"
            f"  exit status {self.rc}\n"
            f"  --- stdout ---\n{indent(self.out)}\n"
            f"  --- stderr ---\n{indent(self.err)}"
        )


def indent(text):
    return "\n".join("  " + line for line in text.rstrip("\n").splitlines()) or "  (empty)"


class Session:
    """Runs `glance` commands and keeps their results for the failure report."""

    def __init__(self):
        self.results = []

    def glance(self, *argv, stdin_bytes=None, debug=False, token=None):
        full = [GLANCE]
        if debug or os.environ.get("GLINT_INTEROP_DEBUG"):
            full.append("--debug")
        full += [str(a) for a in argv]
        env = clean_os_environ()
        env.update(OS_IMAGE_URL=ARGS.url, OS_AUTH_TOKEN=token or ARGS.token or "x", PYTHONUNBUFFERED="1")
        if stdin_bytes is None:
            # glanceclient reads image data from any stdin that is not a terminal (even
            # /dev/null), so a command without data runs with stdin closed, as in cron.
            kwargs = {"stdin": None, "preexec_fn": lambda: os.close(0)}
        else:
            kwargs = {"input": stdin_bytes}
        try:
            done = subprocess.run(
                full, env=env, capture_output=True, timeout=COMMAND_TIMEOUT, **kwargs
            )
            result = Result(
                full,
                done.returncode,
                done.stdout.decode("utf-8", "replace"),
                done.stderr.decode("utf-8", "replace"),
            )
        except subprocess.TimeoutExpired as timeout:
            result = Result(
                full,
                f"timed out after {COMMAND_TIMEOUT}s",
                (timeout.stdout or b"").decode("utf-8", "replace"),
                (timeout.stderr or b"").decode("utf-8", "replace"),
            )
        self.results.append(result)
        return result

    def ok(self, *argv, **kwargs):
        """Runs a command that must exit 0."""
        result = self.glance(*argv, **kwargs)
        check(result.rc == 0, f"`glance {shlex.join(map(str, argv))}` failed")
        return result

    def fails(self, *argv, **kwargs):
        """Runs a command that must exit non-zero without a Python traceback."""
        result = self.glance(*argv, **kwargs)
        check(result.rc != 0, f"`glance {shlex.join(map(str, argv))}` succeeded; it must fail")
        no_crash(result)
        return result

    def show(self, image_id):
        """`image-show` parsed into a dict of strings (no column wrapping)."""
        return parse_dict(self.ok("image-show", "--max-column-width", "100000", image_id).out)

    def create(self, *argv):
        """`image-create` with `argv`; returns the printed image."""
        return parse_dict(self.ok("image-create", *argv).out)

    def delete_quietly(self, image_id):
        self.glance("image-update", "--protected", "False", image_id)
        self.glance("image-delete", image_id)


def no_crash(result):
    """The client printed an error, not a crash: glanceclient turns a server error it cannot
    parse (say flat JSON, or no Content-Type) into an AttributeError or KeyError."""
    text = result.out + result.err
    for marker in ("Traceback", "object has no attribute", "KeyError", "JSONDecodeError", "Expecting value"):
        check(marker not in text, f"the client crashed on the server's answer ({marker!r})")


def parse_table(text):
    """Rows of the prettytable(s) in `text`, as lists of cell strings, header rows included.
    A wrapped cell continues on rows whose first cell is empty; they are joined on."""
    rows = []
    for line in text.splitlines():
        line = line.rstrip()
        if not (line.startswith("|") and line.endswith("|")):
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if rows and cells and cells[0] == "" and len(cells) == len(rows[-1]):
            rows[-1] = [a + (" " if a and b else "") + b for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    return rows


def parse_dict(text):
    """`print_dict` output (Property | Value) into a dict."""
    rows = parse_table(text)
    check(rows and rows[0] == ["Property", "Value"], f"no Property/Value table in:\n{text}")
    return {row[0]: row[1] for row in rows[1:] if len(row) == 2}


def parse_list(text):
    """`print_list` output into a list of dicts keyed by column name."""
    rows = parse_table(text)
    if not rows:
        return []
    header = rows[0]
    return [dict(zip(header, row)) for row in rows[1:]]


def write_file(name, data):
    path = os.path.join(ARGS.workdir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_data_fields(image, data, what):
    """The image is active and its size and hashes are those of `data`."""
    md5, sha512 = digests(data)
    equal(image.get("status"), "active", f"{what}: status")
    equal(image.get("size"), str(len(data)), f"{what}: size")
    equal(image.get("checksum"), md5, f"{what}: checksum (md5)")
    equal(image.get("os_hash_algo"), "sha512", f"{what}: os_hash_algo")
    equal(image.get("os_hash_value"), sha512, f"{what}: os_hash_value")


def tags_of(image):
    try:
        return json.loads(image.get("tags", "null"))
    except ValueError as error:
        raise Failed(f"tags is not a JSON list: {image.get('tags')!r}") from error


# Each check below runs its commands through a Session; `checked` attaches the session's
# command log to any failure.


def checked(fn):
    def wrapper():
        session = Session()
        try:
            fn(session)
        except Exception as error:
            log = "\n".join(r.report() for r in session.results)
            raise Failed(f"{describe(error)}\n--- commands ---\n{log}") from error

    wrapper.__name__ = fn.__name__
    return wrapper


def describe(error):
    if isinstance(error, Failed):
        return str(error)
    return "".join(traceback.format_exception(error)).rstrip()


@checked
def discovery_and_schemas(s):
    """`/versions`, the schemas glanceclient caches under ~/.glanceclient, an empty-ish list."""
    s.ok("image-list")
    schema_path = os.path.expanduser("~/.glanceclient/image_schema.json")
    check(os.path.isfile(schema_path), f"glanceclient cached no image schema at {schema_path}")
    with open(schema_path) as f:
        schema = json.load(f)
    equal(schema.get("name"), "image", "cached image schema name")
    equal(schema.get("additionalProperties"), {"type": "string"}, "additionalProperties")
    for prop in ("id", "name", "status", "disk_format", "container_format", "tags", "checksum"):
        check(prop in schema.get("properties", {}), f"image schema lacks property {prop!r}")


@checked
def create_with_file(s):
    """`image-create --file`: POST then a chunked PUT of the data, then the image is active."""
    data = random_data(1024 * 1024 + 4097)
    path = write_file("create.bin", data)
    name = unique("gc-create-file")
    image = s.create(
        "--name", name, "--disk-format", "raw", "--container-format", "bare", "--file", path
    )
    equal(image.get("name"), name, "name")
    shown = s.show(image["id"])
    check_data_fields(shown, data, "image-show after image-create --file")
    equal(shown.get("disk_format"), "raw", "disk_format")
    equal(shown.get("container_format"), "bare", "container_format")
    s.delete_quietly(image["id"])


@checked
def create_metadata_only(s):
    """`image-create` with properties and no data: a queued image with the defaults."""
    name = unique("gc-create-meta")
    image = s.create(
        "--name", name,
        "--disk-format", "qcow2",
        "--container-format", "bare",
        "--property", "os_distro=debian",
        "--property", "interop_key=some value",
    )
    shown = s.show(image["id"])
    expected = {
        "name": name,
        "status": "queued",
        "disk_format": "qcow2",
        "container_format": "bare",
        "os_distro": "debian",
        "interop_key": "some value",
        "visibility": "shared",
        "protected": "False",
        "os_hidden": "False",
        "min_ram": "0",
        "min_disk": "0",
        "size": "None",
        "checksum": "None",
    }
    for key, value in expected.items():
        equal(shown.get(key), value, f"image-show {key}")
    equal(tags_of(shown), [], "tags")
    check(len(shown.get("id", "")) == 36, f"id is not a UUID: {shown.get('id')!r}")
    for stamp in ("created_at", "updated_at"):
        value = shown.get(stamp, "")
        check(len(value) == 20 and value.endswith("Z"), f"{stamp} {value!r} is not YYYY-MM-DDTHH:MM:SSZ")
    s.delete_quietly(image["id"])


@checked
def upload_and_download(s):
    """`image-upload --file` (chunked, with x-openstack-image-size), then `image-download --file`,
    which glanceclient verifies against os_hash_value; we compare the bytes and both hashes."""
    data = random_data(3 * 65536 + 17)
    path = write_file("upload.bin", data)
    image = s.create("--name", unique("gc-upload"), "--disk-format", "raw", "--container-format", "bare")
    s.ok("image-upload", "--file", path, image["id"])
    shown = s.show(image["id"])
    check_data_fields(shown, data, "image-show after image-upload")
    out = os.path.join(ARGS.workdir, "download.bin")
    s.ok("image-download", "--file", out, image["id"])
    with open(out, "rb") as f:
        got = f.read()
    equal(len(got), len(data), "downloaded size")
    check(got == data, "downloaded bytes differ from the uploaded ones")
    md5, sha512 = digests(got)
    equal(sha512, shown["os_hash_value"], "sha512 of the download vs os_hash_value")
    equal(md5, shown["checksum"], "md5 of the download vs checksum")
    s.delete_quietly(image["id"])


@checked
def create_via_import_glance_direct(s):
    """`image-create-via-import --import-method glance-direct --file`: glanceclient reads
    /v2/info/import, creates the image, stages the file and asks for the import (202); the image
    turns active in the background with the file's size and hashes."""
    data = random_data(2 * 65536 + 123)
    path = write_file("import.bin", data)
    image = parse_dict(
        s.ok(
            "image-create-via-import", "--name", unique("gc-import"), "--disk-format", "raw",
            "--container-format", "bare", "--import-method", "glance-direct", "--file", path,
        ).out
    )
    deadline = time.monotonic() + CACHE_DEADLINE
    shown = s.show(image["id"])
    while shown.get("status") != "active":
        check(
            shown.get("status") in ("uploading", "importing") and time.monotonic() < deadline,
            f"the import did not make the image active: status {shown.get('status')!r}",
        )
        time.sleep(0.2)
        shown = s.show(image["id"])
    check_data_fields(shown, data, "image-show after image-create-via-import")
    md5, sha512 = digests(data)
    equal(shown["os_hash_value"], sha512, "os_hash_value")
    # `image-tasks` (v2.12, listed because this glint serves two stores): the import's task.
    # With --verbose the table has the task id and its result too.
    deadline = time.monotonic() + CACHE_DEADLINE
    while True:
        tasks = parse_list(s.ok("--verbose", "image-tasks", image["id"]).out)
        if tasks and tasks[0].get("Status") != "processing":
            break
        check(time.monotonic() < deadline, "the import's task stayed processing")
        time.sleep(0.2)
    equal(len(tasks), 1, "tasks of the imported image (image-tasks)")
    equal(tasks[0].get("Status"), "success", "status of the import's task (image-tasks)")
    equal(tasks[0].get("Image Id"), image["id"], "image id of the import's task (image-tasks)")
    check(image["id"] in tasks[0].get("Result", ""), "the task's result names the image")
    s.delete_quietly(image["id"])


def wait_imported(s, image_id, what):
    """Polls image-show until the image is active (while it is queued, uploading or importing,
    and no import failed); returns it."""
    deadline = time.monotonic() + CACHE_DEADLINE
    shown = s.show(image_id)
    while shown.get("status") != "active":
        check(
            shown.get("status") in ("queued", "uploading", "importing")
            and not shown.get("os_glance_failed_import")
            and time.monotonic() < deadline,
            f"{what} did not make the image active: status {shown.get('status')!r}, "
            f"os_glance_failed_import {shown.get('os_glance_failed_import')!r}",
        )
        time.sleep(0.2)
        shown = s.show(image_id)
    return shown


@checked
def create_via_import_web_download(s):
    """`image-create-via-import --import-method web-download --uri`: glanceclient creates the
    image and asks for the import (202); glint downloads the URI from the run's HTTP server (its
    port is in allowed_ports) and the image turns active with the data's size and hashes."""
    data = random_data(3 * 65536 + 7)
    uri = web_file(ARGS, data)
    image = parse_dict(
        s.ok(
            "image-create-via-import", "--name", unique("gc-web"), "--disk-format", "raw",
            "--container-format", "bare", "--import-method", "web-download", "--uri", uri,
        ).out
    )
    shown = wait_imported(s, image["id"], "the web-download import")
    check_data_fields(shown, data, "image-show after a web-download import")
    equal(shown["os_hash_value"], digests(data)[1], "os_hash_value")
    s.delete_quietly(image["id"])


@checked
def web_download_refused_by_the_filters(s):
    """A URI on a port that allowed_ports does not list: the import request gets glint's 400
    and glanceclient exits non-zero with its message."""
    uri = "http://127.0.0.1:1/refused.bin"
    name = unique("gc-web-refused")
    result = s.fails(
        "image-create-via-import", "--name", name, "--disk-format", "raw",
        "--container-format", "bare", "--import-method", "web-download", "--uri", uri,
    )
    check(
        f"URI for web-download does not pass filtering: {uri}" in result.out + result.err,
        "glint's message is missing from glanceclient's output",
    )
    # glanceclient created the image before the import was refused: it stays queued.
    listed = parse_list(s.ok("image-list", "--property-filter", f"name={name}").out)
    equal(len(listed), 1, "images named like the refused import")
    shown = s.show(listed[0]["ID"])
    equal(shown.get("status"), "queued", "status of the image whose import was refused")
    s.delete_quietly(listed[0]["ID"])


@checked
def upload_from_stdin(s):
    """`image-upload` with the data on a pipe: size unknown, no x-openstack-image-size."""
    data = random_data(200_000)
    image = s.create("--name", unique("gc-stdin"), "--disk-format", "raw", "--container-format", "bare")
    s.ok("image-upload", image["id"], stdin_bytes=data)
    check_data_fields(s.show(image["id"]), data, "image-show after upload from stdin")
    s.delete_quietly(image["id"])


@checked
def download_without_data(s):
    """`image-download` of a queued image: the server's 204 becomes 'has no data'."""
    image = s.create("--name", unique("gc-nodata"), "--disk-format", "raw", "--container-format", "bare")
    out = os.path.join(ARGS.workdir, "nodata.bin")
    result = s.fails("image-download", "--file", out, image["id"])
    check("has no data" in result.err, "expected glanceclient's 'Image ... has no data.'")
    s.delete_quietly(image["id"])


@checked
def list_pages(s):
    """More than 20 images listed with --page-size 5: glanceclient follows `next` (limit=5,
    sort_key=name, sort_dir=asc, marker=...); every image appears exactly once, names ascending."""
    prefix = unique("gc-page")
    created = {}
    for i in range(23):
        image = s.create("--name", f"{prefix}-{i:02d}", "--disk-format", "raw", "--container-format", "bare")
        created[image["id"]] = image["name"]
    s.results.clear()  # the creates passed; keep the failure report to the listing

    result = s.ok("image-list", "--page-size", "5", debug=True)
    rows = parse_list(result.out)
    ids = [row.get("ID") for row in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    check(not duplicates, f"listed more than once: {duplicates}")
    missing = sorted(set(created) - set(ids))
    check(not missing, f"created but not listed: {missing}")
    names = [row.get("Name", "") for row in rows]
    equal(names, sorted(names), "names in the default glanceclient order (name asc)")
    requests = [l for l in result.err.splitlines() if "curl" in l and "/v2/images?" in l]
    check(
        len(requests) >= len(ids) // 5,
        f"{len(ids)} images in pages of 5 took {len(requests)} list request(s)",
    )
    for line in requests:
        check("limit=5" in line, f"a page request without limit=5: {line}")

    limited = parse_list(s.ok("image-list", "--page-size", "5", "--limit", "7").out)
    equal(len(limited), 7, "rows of image-list --limit 7 --page-size 5")
    for image_id in created:
        s.glance("image-delete", image_id)


@checked
def update_properties(s):
    """`image-update`: add, replace and remove custom properties and change base ones (glanceclient
    sends a json-patch, `replace` for absent base properties, and `replace /tags` when tagged)."""
    image = s.create(
        "--name", unique("gc-update"),
        "--disk-format", "raw",
        "--container-format", "bare",
        "--property", "keep=1",
        "--property", "change=old",
        "--property", "drop=me",
    )
    s.ok("image-tag-update", image["id"], "before-update")
    new_name = unique("gc-updated")
    s.ok(
        "image-update",
        "--name", new_name,
        "--min-ram", "512",
        "--property", "change=new",
        "--property", "added=yes",
        "--remove-property", "drop",
        image["id"],
    )
    shown = s.show(image["id"])
    equal(shown.get("name"), new_name, "name")
    equal(shown.get("min_ram"), "512", "min_ram")
    equal(shown.get("keep"), "1", "untouched property")
    equal(shown.get("change"), "new", "replaced property")
    equal(shown.get("added"), "yes", "added property")
    check("drop" not in shown, f"removed property still there: drop={shown.get('drop')!r}")
    equal(tags_of(shown), ["before-update"], "tags kept through image-update")
    s.delete_quietly(image["id"])


@checked
def tags(s):
    """`image-tag-update` (PUT .../tags/T) twice is idempotent; `image-tag-delete` removes one."""
    image = s.create("--name", unique("gc-tags"), "--disk-format", "raw", "--container-format", "bare")
    s.ok("image-tag-update", image["id"], "alpha")
    s.ok("image-tag-update", image["id"], "beta")
    s.ok("image-tag-update", image["id"], "alpha")
    equal(sorted(tags_of(s.show(image["id"]))), ["alpha", "beta"], "tags after three tag-updates")
    s.ok("image-tag-delete", image["id"], "alpha")
    equal(tags_of(s.show(image["id"])), ["beta"], "tags after tag-delete alpha")
    s.delete_quietly(image["id"])


@checked
def delete(s):
    """`image-delete` then `image-show` of the same id: gone (404)."""
    image = s.create("--name", unique("gc-delete"), "--disk-format", "raw", "--container-format", "bare")
    s.ok("image-delete", image["id"])
    result = s.fails("image-show", image["id"])
    check("404" in result.err, "image-show after delete must report a 404")


@checked
def show_unknown_is_404(s):
    """`image-show` of an unknown id: glanceclient (requests' `Accept: */*`) gets Glance's HTML
    error page and prints its text lines, which must carry the 404 and glint's message."""
    image_id = str(uuid.uuid4())
    result = s.fails("image-show", image_id)
    check("404" in result.err, "the error message does not mention 404")
    check("not found" in result.err.lower(), "the error message does not say 'Not Found'")
    check(
        f"No image found with ID {image_id}" in result.err,
        "glint's message is missing from glanceclient's error",
    )
    check("<" not in result.err, "glanceclient printed HTML tags")


@checked
def delete_unknown_is_404(s):
    image_id = str(uuid.uuid4())
    result = s.fails("image-delete", image_id)
    check(
        f"No image with an ID of '{image_id}' exists." in result.err,
        "glanceclient's message for a 404 on delete is missing",
    )


@checked
def delete_protected_is_403(s):
    """Deleting a protected image: 403, which glanceclient reports as 'not permitted'; the image
    stays; unprotected it deletes."""
    image = s.create(
        "--name", unique("gc-protected"),
        "--disk-format", "raw",
        "--container-format", "bare",
        "--protected", "True",
    )
    equal(image.get("protected"), "True", "protected after create")
    result = s.fails("image-delete", image["id"])
    check(
        f"You are not permitted to delete the image '{image['id']}'." in result.err,
        "glanceclient's message for a 403 on delete is missing",
    )
    equal(s.show(image["id"]).get("status"), "queued", "the protected image is still there")
    s.ok("image-update", "--protected", "False", image["id"])
    s.ok("image-delete", image["id"])


@checked
def upload_to_active_is_409(s):
    """A second upload to an active image: 409; the image keeps its data."""
    data = random_data(10_000)
    path = write_file("first.bin", data)
    image = s.create(
        "--name", unique("gc-conflict"), "--disk-format", "raw", "--container-format", "bare", "--file", path
    )
    other = write_file("second.bin", random_data(5_000))
    result = s.fails("image-upload", "--file", other, image["id"])
    check("409" in result.err, "the error message does not mention 409")
    check_data_fields(s.show(image["id"]), data, "image-show after the refused upload")
    s.delete_quietly(image["id"])


@checked
def stores(s):
    """Two stores (`enabled_backends` in scripts/interop/run): `stores-info` lists them with the
    default marked, `image-create --store` puts the data in the one named and shows it in
    `stores`, an unknown store is refused by the client from stores-info, and `stores-delete` of
    the only copy is Glance's 403."""
    # stores-info has no --max-column-width: a wrapped cell is joined on (parse_table), and
    # prettytable wraps between words, so the JSON stays whole.
    listed = json.loads(parse_dict(s.ok("stores-info").out)["stores"])
    equal(
        listed,
        [{"id": "fast", "description": "Fast disks"}, {"id": "cheap", "default": "true"}],
        "stores-info",
    )
    data = random_data(4096)
    path = write_file("store.bin", data)
    image = s.create(
        "--name", unique("gc-store"), "--disk-format", "raw", "--container-format", "bare",
        "--store", "fast", "--file", path,
    )
    shown = s.show(image["id"])
    equal(shown.get("stores"), "fast", "stores after image-create --store fast")
    check_data_fields(shown, data, "image-show after image-create --store")
    unknown = s.fails(
        "image-create", "--name", unique("gc-store"), "--disk-format", "raw",
        "--container-format", "bare", "--store", "nowhere", "--file", path,
    )
    check("Store 'nowhere' is not valid for this cloud" in unknown.out + unknown.err, "unknown store")
    last = s.fails("stores-delete", "--store", "fast", image["id"])
    check("HTTP 403" in last.out + last.err, "stores-delete of the only copy is 403")
    s.delete_quietly(image["id"])


@checked
def import_to_stores_and_copy(s):
    """Import into several stores and copy-image (the two stores of scripts/interop/run):
    `image-create-via-import --import-method glance-direct --stores fast,cheap` makes the image
    active in both; `stores-delete --store fast` then removes one copy (204, the other serves);
    `image-import --import-method copy-image --stores fast` copies it back while it stays
    active."""
    data = random_data(3 * 65536 + 7)
    path = write_file("stores-import.bin", data)
    image = parse_dict(
        s.ok(
            "image-create-via-import", "--name", unique("gc-stores"), "--disk-format", "raw",
            "--container-format", "bare", "--import-method", "glance-direct",
            "--stores", "fast,cheap", "--file", path,
        ).out
    )

    def wait(what, done):
        deadline = time.monotonic() + CACHE_DEADLINE
        shown = s.show(image["id"])
        while not done(shown):
            check(time.monotonic() < deadline, f"{what}: {shown}")
            time.sleep(0.2)
            shown = s.show(image["id"])
        return shown

    shown = wait(
        "the import into fast and cheap did not finish",
        lambda i: i.get("status") == "active" and i.get("os_glance_importing_to_stores") == "",
    )
    equal(shown.get("stores"), "fast,cheap", "stores after the import into fast,cheap")
    check_data_fields(shown, data, "image-show after the import into two stores")
    s.ok("stores-delete", "--store", "fast", image["id"])
    equal(s.show(image["id"]).get("stores"), "cheap", "stores after stores-delete --store fast")
    s.ok("image-import", "--import-method", "copy-image", "--stores", "fast", image["id"])
    shown = wait(
        "copy-image into fast did not finish",
        lambda i: i.get("os_glance_importing_to_stores") == "",
    )
    equal(shown.get("status"), "active", "status after copy-image")
    equal(shown.get("stores"), "cheap,fast", "stores after copy-image --stores fast")
    equal(shown.get("os_glance_failed_import"), "", "os_glance_failed_import after copy-image")
    again = s.fails("image-import", "--import-method", "copy-image", "--stores", "fast", image["id"])
    # glanceclient shows the HTML body's text as webob escaped it (' as &#x27;), as with Glance.
    check(
        "HTTP 400" in again.err and "Image is already present at store" in again.err,
        "a second copy into fast is Glance's 400",
    )
    out = os.path.join(ARGS.workdir, "stores-download.bin")
    s.ok("image-download", "--file", out, image["id"])
    with open(out, "rb") as f:
        check(f.read() == data, "the download after copy-image differs from the imported data")
    s.delete_quietly(image["id"])


def cached_ids(s):
    """`glance cache-list` as {image id: state}."""
    rows = parse_table(s.ok("cache-list").out)
    return {row[0]: row[1] for row in rows[1:]}


def wait_cached(s, image_id, what):
    """Polls `glance cache-list` until `image_id` is listed as cached (the prefetcher fills
    the queue in the background), at most CACHE_DEADLINE seconds."""
    deadline = time.monotonic() + CACHE_DEADLINE
    while time.monotonic() < deadline:
        if cached_ids(s).get(image_id) == "cached":
            return
        time.sleep(0.1)
    raise Failed(f"{what}: image {image_id} not cached within {CACHE_DEADLINE}s: {cached_ids(s)}")


@checked
def cache_commands(s):
    """The cache API through `glance cache-queue`, `cache-list`, `cache-delete` and `cache-clear`
    (they require v2.14 in /versions), and `cache-clean`, which requires v2.18, refused cleanly."""
    data = random_data(100_000)
    image = s.create("--name", unique("gc-cache"), "--disk-format", "raw", "--container-format", "bare")
    s.ok("image-upload", image["id"], stdin_bytes=data)
    s.ok("cache-queue", image["id"])
    wait_cached(s, image["id"], "after cache-queue")
    s.ok("cache-delete", image["id"])
    check(image["id"] not in cached_ids(s), "cache-delete left the image in cache-list")
    s.ok("cache-queue", image["id"])
    wait_cached(s, image["id"], "after the second cache-queue")
    s.ok("cache-clear")
    equal(cached_ids(s), {}, "cache-list after cache-clear")
    # glanceclient prints the refusal and exits 0: the message is what tells.
    refused = s.glance("cache-clean")
    no_crash(refused)
    check("Glance does not support image caching API (v2.18)" in refused.err,
          "cache-clean must be refused for want of v2.18")
    s.delete_quietly(image["id"])


@checked
def wrong_token_is_a_clean_401(s):
    """auth_strategy = token, OS_AUTH_TOKEN not in glint's token file: glint answers 401 and
    glanceclient reports it as bad credentials, exit status 1, no traceback; the right token
    still lists."""
    result = s.fails("image-list", token="not-" + ARGS.token)
    check(
        "Invalid OpenStack Identity credentials" in result.err,
        "glanceclient's message for a 401 is missing",
    )
    s.ok("image-list")


CHECKS = [
    discovery_and_schemas,
    create_with_file,
    create_metadata_only,
    upload_and_download,
    create_via_import_glance_direct,
    create_via_import_web_download,
    web_download_refused_by_the_filters,
    upload_from_stdin,
    download_without_data,
    list_pages,
    update_properties,
    tags,
    delete,
    show_unknown_is_404,
    delete_unknown_is_404,
    delete_protected_is_403,
    upload_to_active_is_409,
    cache_commands,
    stores,
    import_to_stores_and_copy,
]


def main():
    global ARGS
    ARGS = parse_args(__doc__.splitlines()[0])
    check(os.access(GLANCE, os.X_OK), f"no glance CLI at {GLANCE}: run scripts/interop/setup-venv")
    checks = CHECKS + ([wrong_token_is_a_clean_401] if ARGS.token else [])
    return run_checks("glanceclient", checks, ARGS)


if __name__ == "__main__":
    main_guard(main)
