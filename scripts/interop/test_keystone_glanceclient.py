#!/usr/bin/env python3
"""python-glanceclient's `glance` CLI against a glint with the keystone flavor, password auth.

Run by scripts/interop/run (the `keystone` run) with the venv's python:
    .venv/bin/python scripts/interop/test_keystone_glanceclient.py --url http://127.0.0.1:PORT \\
        --workdir D --keystone-env KEYSTONE_DIR/keystone.env

Every command runs as one of scripts/keystone's fixture users, the way an operator's shell does it:
OS_AUTH_URL (Keystone's /v3), OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, OS_USER_DOMAIN_ID and
OS_PROJECT_DOMAIN_ID, so glanceclient logs in to Keystone with the password (keystoneauth's
password plugin) and sends the project-scoped token it gets. OS_IMAGE_URL points it at glint: the
catalog's image endpoint is not glint's. The users: admin (admin), alpha-member (member of alpha),
alpha-reader (reader of alpha), beta-member (member of beta).

The checks are Glance's default policy and visibility as the CLI shows them: the owner of a new
image is the token's project; another project gets 404 for a private image (show, download,
update, delete) and does not list it; sharing with `member-create` / `member-update`; a reader
may read and not write (403); `public` is the admin's, `community` a member's; deactivation is
the admin's and makes the data 403 for everyone else; a protected image refuses deletion (403).
Each failure asserts the exit status and the text the CLI prints ("HTTP 404 Not Found: ...", or
glanceclient's own sentence for delete and download, with Glance's message). A forged token
(`--os-token garbage`, no Keystone login) gets glanceclient's 401 sentence.

Every check creates the images it needs and deletes them as admin; a failing check prints the
commands it ran, as whom, with their exit status, stdout and stderr. HOME should be a scratch
directory (glanceclient caches schemas there); GLINT_INTEROP_DEBUG=1 passes --debug to every
command.
"""

import os
import shlex
import subprocess
import sys
import time

from common import (
    Failed,
    KeystoneEnv,
    check,
    clean_os_environ,
    equal,
    main_guard,
    parse_args,
    random_data,
    run_checks,
    unique,
)
from test_glanceclient import GLANCE, Result, describe, no_crash, parse_dict, parse_list

ARGS = None
KS = None
COMMAND_TIMEOUT = 120
# Keystone's token for a forged-token check: no Keystone would issue it.
FORGED_TOKEN = "gAAAAABforged-by-the-interop-test-not-a-fernet-token"


class Session:
    """Runs `glance` commands as fixture users; keeps them (and who ran them) for the report."""

    def __init__(self):
        self.results = []

    def glance(self, account, *argv, stdin_bytes=None, token=None):
        """`glance ARGV` as `account` (password auth), or with `token` and no Keystone login."""
        full = [GLANCE]
        if os.environ.get("GLINT_INTEROP_DEBUG"):
            full.append("--debug")
        full += [str(a) for a in argv]
        env = clean_os_environ()
        env.update(OS_IMAGE_URL=ARGS.url, PYTHONUNBUFFERED="1")
        if token is not None:
            env.update(OS_AUTH_TOKEN=token)
            who = "token " + token[:12] + "..."
        else:
            env.update(
                OS_AUTH_URL=KS.auth_url,
                OS_USERNAME=account.user,
                OS_PASSWORD=account.password,
                OS_PROJECT_NAME=account.project,
                OS_USER_DOMAIN_ID=KS.domain_id,
                OS_PROJECT_DOMAIN_ID=KS.domain_id,
                OS_REGION_NAME=KS.region,
            )
            who = account.user
        if stdin_bytes is None:
            # glanceclient reads image data from any stdin that is not a terminal.
            kwargs = {"stdin": None, "preexec_fn": lambda: os.close(0)}
        else:
            kwargs = {"input": stdin_bytes}
        started = time.monotonic()
        try:
            done = subprocess.run(full, env=env, capture_output=True, timeout=COMMAND_TIMEOUT, **kwargs)
            result = Result(
                full, done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")
            )
        except subprocess.TimeoutExpired as timeout:
            result = Result(
                full,
                f"timed out after {COMMAND_TIMEOUT}s",
                (timeout.stdout or b"").decode("utf-8", "replace"),
                (timeout.stderr or b"").decode("utf-8", "replace"),
            )
        result.who = who
        result.elapsed = time.monotonic() - started
        self.results.append(result)
        return result

    def ok(self, account, *argv, **kwargs):
        """A command that must exit 0."""
        result = self.glance(account, *argv, **kwargs)
        check(result.rc == 0, f"`glance {shlex.join(map(str, argv))}` as {result.who} failed")
        return result

    def fails(self, account, *argv, expect=(), **kwargs):
        """A command that must exit 1 without a traceback, its stderr holding every string of
        `expect`."""
        result = self.glance(account, *argv, **kwargs)
        what = f"`glance {shlex.join(map(str, argv))}` as {result.who}"
        if result.rc == 0 and argv[0] == "image-create":
            self.cleanup(parse_dict(result.out).get("id"))  # not left for the other checks
        check(result.rc != 0, f"{what} succeeded; it must fail")
        equal(result.rc, 1, f"{what}: exit status")
        no_crash(result)
        for text in expect:
            check(text in result.err, f"{what}: {text!r} is not in what the CLI printed")
        return result

    def create(self, account, *argv):
        """`image-create` as `account`; returns the printed image."""
        return parse_dict(
            self.ok(account, "image-create", "--disk-format", "raw", "--container-format", "bare", *argv).out
        )

    def show(self, account, image_id):
        return parse_dict(self.ok(account, "image-show", "--max-column-width", "100000", image_id).out)

    def listed(self, account, *argv):
        """The ids `image-list ARGV` prints for `account`."""
        return {row.get("ID") for row in parse_list(self.ok(account, "image-list", *argv).out)}

    def download(self, account, image_id):
        """`image-download --file` as `account`; returns the bytes."""
        path = os.path.join(ARGS.workdir, f"download-{unique('d')}.bin")
        self.ok(account, "image-download", "--file", path, image_id)
        with open(path, "rb") as f:
            return f.read()

    def cleanup(self, *image_ids):
        """Deletes the images as admin, whatever state the check left them in (not reported)."""
        keep = len(self.results)
        for image_id in image_ids:
            # Unprotecting first would cost a command (a Python start and a login) per image.
            if self.glance(KS.admin, "image-delete", image_id).rc != 0:
                self.glance(KS.admin, "image-update", "--protected", "False", image_id)
                self.glance(KS.admin, "image-delete", image_id)
        del self.results[keep:]


def report(result):
    return f"[as {result.who}, {result.elapsed:.1f}s]\n{result.report()}"


def checked(fn):
    def wrapper():
        session = Session()
        try:
            fn(session)
        except Exception as error:
            log = "\n".join(report(r) for r in session.results)
            raise Failed(f"{describe(error)}\n--- commands ---\n{log}") from error

    wrapper.__name__ = fn.__name__
    return wrapper


def write_file(name, data):
    path = os.path.join(ARGS.workdir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def not_authorized(rule):
    """Glance's 403 for a refused policy rule (glance/api/policy.py), as the CLI prints it."""
    return ["HTTP 403 Forbidden", f"You are not authorized to complete {rule} action."]


def not_found(image_id):
    """Glance's 404 for an image the caller may not see, as the CLI prints it."""
    return ["HTTP 404 Not Found", f"No image found with ID {image_id}"]


@checked
def create_and_upload_as_member(s):
    """alpha-member creates with --file: owner is alpha's project id, the data round-trips, and
    the image is in alpha's list (for the reader too)."""
    data = random_data(300_000)
    path = write_file("ks-create.bin", data)
    image = s.create(KS.alpha, "--name", unique("ks-gc-create"), "--file", path)
    try:
        equal(image.get("owner"), KS.alpha.project_id, "owner (the token's project)")
        shown = s.show(KS.alpha, image["id"])
        equal(shown.get("status"), "active", "status")
        equal(shown.get("size"), str(len(data)), "size")
        equal(shown.get("visibility"), "shared", "visibility (Glance's default)")
        check(s.download(KS.alpha, image["id"]) == data, "downloaded bytes differ from the upload")
        check(image["id"] in s.listed(KS.alpha), "alpha-member does not list its own image")
        check(image["id"] in s.listed(KS.reader), "alpha-reader does not list its project's image")
    finally:
        s.cleanup(image["id"])


@checked
def other_project_gets_404(s):
    """A private image of alpha's, seen from beta: show, download, update and delete are all 404
    with Glance's message, and beta's list lacks it; alpha still has it, unchanged."""
    data = random_data(10_000)
    image = s.create(
        KS.alpha, "--name", unique("ks-gc-private"), "--visibility", "private", "--file", write_file("p.bin", data)
    )
    image_id = image["id"]
    try:
        equal(image.get("visibility"), "private", "visibility")
        s.fails(KS.beta, "image-show", image_id, expect=not_found(image_id))
        out = os.path.join(ARGS.workdir, "beta-download.bin")
        s.fails(
            KS.beta, "image-download", "--file", out, image_id,
            expect=[f"Unable to download image '{image_id}'", *not_found(image_id)],
        )
        s.fails(KS.beta, "image-update", "--name", "taken-by-beta", image_id, expect=not_found(image_id))
        s.fails(KS.beta, "image-delete", image_id, expect=[f"No image with an ID of '{image_id}' exists."])
        s.fails(KS.beta, "image-tag-update", image_id, "beta-tag", expect=["404"])
        check(image_id not in s.listed(KS.beta), "beta-member lists alpha's private image")
        check(image_id not in s.listed(KS.beta, "--visibility", "all"), "beta lists it with visibility=all")
        shown = s.show(KS.alpha, image_id)
        equal((shown.get("name"), shown.get("status")), (image["name"], "active"), "alpha's image after beta's tries")
        equal(shown.get("tags"), "[]", "tags")
        check(s.download(KS.alpha, image_id) == data, "alpha's data after beta's tries")
    finally:
        s.cleanup(image_id)


@checked
def sharing_with_members(s):
    """alpha shares an image with beta: `member-create` is pending; pending, the image is not in
    beta's default list but is with --member-status pending; `member-update ... accepted` puts it
    in the default list, `rejected` takes it out; the owner may not accept for beta (403);
    `member-delete` ends it (404 for beta)."""
    image = s.create(KS.alpha, "--name", unique("ks-gc-share"))
    image_id, beta = image["id"], KS.beta.project_id
    try:
        equal(image.get("visibility"), "shared", "visibility")
        created = parse_list(s.ok(KS.alpha, "member-create", image_id, beta).out)
        equal(
            [(m.get("Image ID"), m.get("Member ID"), m.get("Status")) for m in created],
            [(image_id, beta, "pending")],
            "member-create's table",
        )
        members = parse_list(s.ok(KS.alpha, "member-list", "--image-id", image_id).out)
        equal([(m.get("Member ID"), m.get("Status")) for m in members], [(beta, "pending")], "member-list as alpha")
        members = parse_list(s.ok(KS.beta, "member-list", "--image-id", image_id).out)
        equal([(m.get("Member ID"), m.get("Status")) for m in members], [(beta, "pending")], "member-list as beta")

        check(image_id not in s.listed(KS.beta), "a pending share is in beta's default list")
        check(image_id in s.listed(KS.beta, "--member-status", "pending"), "not listed with --member-status pending")
        equal(s.show(KS.beta, image_id).get("owner"), KS.alpha.project_id, "owner as beta sees it")

        s.fails(KS.alpha, "member-update", image_id, beta, "accepted", expect=["HTTP 403 Forbidden"])

        updated = parse_list(s.ok(KS.beta, "member-update", image_id, beta, "accepted").out)
        equal([m.get("Status") for m in updated], ["accepted"], "member-update accepted")
        check(image_id in s.listed(KS.beta), "an accepted share is not in beta's default list")

        updated = parse_list(s.ok(KS.beta, "member-update", image_id, beta, "rejected").out)
        equal([m.get("Status") for m in updated], ["rejected"], "member-update rejected")
        check(image_id not in s.listed(KS.beta), "a rejected share is in beta's default list")
        check(image_id in s.listed(KS.beta, "--member-status", "rejected"), "not listed with --member-status rejected")

        s.ok(KS.alpha, "member-delete", image_id, beta)
        s.fails(KS.beta, "image-show", image_id, expect=not_found(image_id))
        equal(parse_list(s.ok(KS.alpha, "member-list", "--image-id", image_id).out), [], "members after member-delete")
    finally:
        s.cleanup(image_id)


@checked
def reader_cannot_write(s):
    """alpha-reader: image-create 403 (add_image), image-update and image-delete of its project's
    image 403; image-show and image-list work."""
    image = s.create(KS.alpha, "--name", unique("ks-gc-reader"))
    image_id = image["id"]
    try:
        s.fails(KS.reader, "image-create", "--name", unique("ks-gc-by-reader"), expect=not_authorized("add_image"))
        equal(s.show(KS.reader, image_id).get("id"), image_id, "image-show as reader")
        check(image_id in s.listed(KS.reader), "alpha-reader does not list alpha's image")
        s.fails(
            KS.reader, "image-update", "--name", "renamed-by-reader", image_id, expect=not_authorized("modify_image")
        )
        s.fails(
            KS.reader, "image-delete", image_id,
            expect=[f"You are not permitted to delete the image '{image_id}'."],
        )
        equal(s.show(KS.alpha, image_id).get("name"), image["name"], "name after the reader's update")
    finally:
        s.cleanup(image_id)


@checked
def publicize_is_admin_only(s):
    """`--visibility public`: 403 (publicize_image) for alpha-member on create and on update;
    the admin makes alpha's image public, and then beta sees and lists it."""
    s.fails(
        KS.alpha, "image-create", "--name", unique("ks-gc-public"), "--visibility", "public",
        expect=not_authorized("publicize_image"),
    )
    image = s.create(KS.alpha, "--name", unique("ks-gc-public"))
    image_id = image["id"]
    try:
        s.fails(KS.alpha, "image-update", "--visibility", "public", image_id, expect=not_authorized("publicize_image"))
        equal(s.show(KS.alpha, image_id).get("visibility"), "shared", "visibility after the refused update")
        s.fails(KS.beta, "image-show", image_id, expect=not_found(image_id))
        updated = parse_dict(s.ok(KS.admin, "image-update", "--visibility", "public", image_id).out)
        equal(updated.get("visibility"), "public", "visibility after the admin's update")
        equal(updated.get("owner"), KS.alpha.project_id, "owner after the admin's update")
        equal(s.show(KS.beta, image_id).get("visibility"), "public", "visibility as beta sees it")
        check(image_id in s.listed(KS.beta), "beta does not list a public image")
    finally:
        s.cleanup(image_id)


@checked
def community_by_member(s):
    """alpha-member may create a community image; beta can show it, lists it with --visibility
    community and not in its default list (Glance drops other projects' community images), and
    may not change it (403: it sees the image, so the refusal is not a 404)."""
    image = s.create(KS.alpha, "--name", unique("ks-gc-community"), "--visibility", "community")
    image_id = image["id"]
    try:
        equal(image.get("visibility"), "community", "visibility")
        equal(s.show(KS.beta, image_id).get("visibility"), "community", "visibility as beta sees it")
        check(image_id not in s.listed(KS.beta), "another project's community image is in beta's default list")
        check(image_id in s.listed(KS.beta, "--visibility", "community"), "not listed with --visibility community")
        check(image_id in s.listed(KS.alpha), "alpha does not list its own community image")
        s.fails(KS.beta, "image-update", "--name", "beta-renamed", image_id, expect=not_authorized("modify_image"))
    finally:
        s.cleanup(image_id)


@checked
def deactivate_and_reactivate(s):
    """The admin deactivates alpha's image: status deactivated; alpha-member's download is 403
    with Glance's message, the admin's is served; reactivated, alpha downloads again."""
    data = random_data(20_000)
    image = s.create(KS.alpha, "--name", unique("ks-gc-deactivate"), "--file", write_file("deact.bin", data))
    image_id = image["id"]
    try:
        s.ok(KS.admin, "image-deactivate", image_id)
        equal(s.show(KS.alpha, image_id).get("status"), "deactivated", "status after image-deactivate")
        out = os.path.join(ARGS.workdir, "deactivated.bin")
        s.fails(
            KS.alpha, "image-download", "--file", out, image_id,
            expect=[
                f"Unable to download image '{image_id}'",
                "HTTP 403 Forbidden",
                "The requested image has been deactivated. Image data download is forbidden.",
            ],
        )
        check(s.download(KS.admin, image_id) == data, "the admin's download of a deactivated image")
        s.ok(KS.admin, "image-reactivate", image_id)
        equal(s.show(KS.alpha, image_id).get("status"), "active", "status after image-reactivate")
        check(s.download(KS.alpha, image_id) == data, "alpha's download after image-reactivate")
    finally:
        s.cleanup(image_id)


@checked
def deactivate_by_member_is_403(s):
    """alpha-member may not deactivate its own image: 403 with Glance's policy message; the image
    stays active. After the admin deactivated it, alpha-member may not reactivate it either.
    (glint's default: deactivate and reactivate are admin only, a documented deviation from
    Glance, whose default lets the owner's members in; src/policy/defaults.rs.)"""
    image = s.create(KS.alpha, "--name", unique("ks-gc-deact-member"), "--file", write_file("dm.bin", b"x" * 1000))
    image_id = image["id"]
    try:
        s.fails(KS.alpha, "image-deactivate", image_id, expect=not_authorized("deactivate"))
        equal(s.show(KS.alpha, image_id).get("status"), "active", "status after the refused deactivate")
        s.ok(KS.admin, "image-deactivate", image_id)
        s.fails(KS.alpha, "image-reactivate", image_id, expect=not_authorized("reactivate"))
        equal(s.show(KS.alpha, image_id).get("status"), "deactivated", "status after the refused reactivate")
    finally:
        s.cleanup(image_id)


@checked
def protected_delete_is_403(s):
    """alpha-member's protected image: image-delete is 403 ('not permitted'), the image stays;
    unprotected, the owner deletes it."""
    image = s.create(KS.alpha, "--name", unique("ks-gc-protected"), "--protected", "True")
    image_id, deleted = image["id"], None
    try:
        equal(image.get("protected"), "True", "protected")
        s.fails(KS.alpha, "image-delete", image_id, expect=[f"You are not permitted to delete the image '{image_id}'."])
        equal(s.show(KS.alpha, image_id).get("status"), "queued", "the protected image is still there")
        s.ok(KS.alpha, "image-update", "--protected", "False", image_id)
        s.ok(KS.alpha, "image-delete", image_id)
        deleted = image_id
        s.fails(KS.alpha, "image-show", image_id, expect=not_found(image_id))
    finally:
        if deleted != image_id:
            s.cleanup(image_id)


@checked
def forged_token_is_401(s):
    """`--os-token garbage` with OS_IMAGE_URL (no Keystone login by the client): glint asks
    Keystone, which does not know the token; glanceclient reports the 401 as bad credentials."""
    result = s.fails(None, "image-list", token=FORGED_TOKEN, expect=["Invalid OpenStack Identity credentials."])
    check("HTTP 500" not in result.err and "503" not in result.err, "not a clean 401")


CHECKS = [
    create_and_upload_as_member,
    other_project_gets_404,
    sharing_with_members,
    reader_cannot_write,
    publicize_is_admin_only,
    community_by_member,
    deactivate_and_reactivate,
    deactivate_by_member_is_403,
    protected_delete_is_403,
    forged_token_is_401,
]


def main():
    global ARGS, KS
    ARGS = parse_args(__doc__.splitlines()[0])
    check(os.access(GLANCE, os.X_OK), f"no glance CLI at {GLANCE}: run scripts/interop/setup-venv")
    if not ARGS.keystone_env:
        print("needs --keystone-env PATH (scripts/interop/run passes it)", file=sys.stderr)
        return 2
    KS = KeystoneEnv(ARGS.keystone_env)
    return run_checks("keystone-glanceclient", CHECKS, ARGS)


if __name__ == "__main__":
    main_guard(main)
