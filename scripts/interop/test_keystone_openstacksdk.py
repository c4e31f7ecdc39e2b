#!/usr/bin/env python3
"""openstacksdk's image proxy against a glint with the keystone flavor, password auth.

Run by scripts/interop/run (the `keystone` run) with the venv's python:
    .venv/bin/python scripts/interop/test_keystone_openstacksdk.py --url http://127.0.0.1:PORT \\
        --workdir D --keystone-env KEYSTONE_DIR/keystone.env

One connection per fixture user of scripts/keystone, as an application builds it:
`openstack.connect(auth_url=KEYSTONE/v3, username=, password=, project_name=, user_domain_id=,
project_domain_id=, image_endpoint_override=GLINT)` with clouds.yaml and OS_* variables ignored.
keystoneauth's password plugin logs in to Keystone and sends the project-scoped token to glint;
`image_endpoint_override` (openstacksdk 4.22's `<service>_endpoint_override` config key) points
the image proxy at glint, since the catalog's image endpoint is not glint's. The users: admin
(admin), alpha-member (member of alpha), alpha-reader (reader of alpha), beta-member (member of
beta).

The checks are the same scenarios as test_keystone_glanceclient.py through `conn.image.*`
(create_image with data, get_image, images(), update_image, delete_image, add_member, members,
get_member, update_member, remove_member, deactivate_image, reactivate_image, download_image):
Glance's default policy, visibility, sharing and deactivation. A refusal must come as the SDK's
exception class for the status (NotFoundException 404, ForbiddenException 403) with Glance's
message in it (openstacksdk reads it from the JSON error body). A forged token sent with the
static-token plugin (no Keystone login by the client) gets a clean 401.

Two SDK calls never raise for an HTTP error, whatever the server says (openstacksdk 4.22):
deactivate_image / reactivate_image (Image._action returns the response unread) and the data
request of download_image (a 403 body is hashed, then reported as a checksum mismatch). For
those, the checks send the same request through the proxy (or download_image(stream=True)) and
hand the response to exceptions.raise_from_response, as an SDK user must, and also check that
the plain call did not change or return anything.

Every check creates the images it needs and deletes them as admin. A failing check prints the
exception and the last requests keystoneauth logged.
"""

import logging
import sys

import openstack
from openstack import exceptions

from common import (
    Failed,
    KeystoneEnv,
    check,
    digests,
    equal,
    main_guard,
    parse_args,
    random_data,
    run_checks,
    unique,
)
from test_openstacksdk import RECENT, checked, expect_http_error

ARGS = None
KS = None
CONN = {}  # label -> connection: "admin", "alpha", "reader", "beta"
FORGED_TOKEN = "gAAAAABforged-by-the-interop-test-not-a-fernet-token"


def connect(account):
    """A password-auth connection as `account`, its image proxy pointed at glint."""
    return openstack.connect(
        auth_url=KS.auth_url,
        username=account.user,
        password=account.password,
        project_name=account.project,
        user_domain_id=KS.domain_id,
        project_domain_id=KS.domain_id,
        region_name=KS.region,
        image_endpoint_override=ARGS.url,
        load_yaml_config=False,
        load_envvars=False,
    )


def image_proxy(label):
    return CONN[label].image


def expect_refusal(cls, status, message, what, call, patch=False):
    """`call()` raises `cls` with `status`, and Glance's `message` is in the exception's text.

    With `patch` (update_image), in the response body instead: openstacksdk sends its PATCH with
    an empty `Accept:` header, for which webob (Glance's and glint's error pages) answers
    text/plain, and openstacksdk reads a message only from JSON or HTML (for text/plain, details
    is the reason phrase)."""
    error = expect_http_error(cls, status, what, call)
    if patch:
        content_type = error.response.headers.get("Content-Type", "")
        check(content_type.startswith("text/plain"), f"{what}: Content-Type {content_type!r}, not text/plain")
        check(message in error.response.text, f"{what}: {message!r} is not in the body {error.response.text!r}")
    else:
        check(message in str(error), f"{what}: {message!r} is not in the SDK's error {str(error)!r}")
        check(message in (error.details or ""), f"{what}: {message!r} is not in error.details {error.details!r}")
    return error


def not_found(image_id, what, call, patch=False):
    """NotFoundException with Glance's message for an image the caller may not see."""
    return expect_refusal(
        exceptions.NotFoundException, 404, f"No image found with ID {image_id}", what, call, patch
    )


def not_authorized(rule, what, call, patch=False):
    """ForbiddenException with Glance's message for a refused policy rule."""
    return expect_refusal(
        exceptions.ForbiddenException, 403, f"You are not authorized to complete {rule} action.", what, call, patch
    )


def refused_create(label, rule, what, **attrs):
    """create_image as `label` must be a 403 for `rule`; an image created anyway is deleted."""

    def create():
        image = image_proxy(label).create_image(
            unique("ks-sdk-refused"), disk_format="raw", container_format="bare", allow_duplicates=True, **attrs
        )
        cleanup(image)

    return not_authorized(rule, what, create)


def new_image(label, prefix, data=None, **attrs):
    """create_image as `label`, raw/bare, with `data` when given (the SDK PUTs it and checks the
    checksum the server computed)."""
    kwargs = dict(disk_format="raw", container_format="bare", wait=False, allow_duplicates=True)
    kwargs.update(attrs)
    if data is not None:
        kwargs.update(data=data, validate_checksum=True)
    return image_proxy(label).create_image(unique(prefix), **kwargs)


def cleanup(*images):
    """Deletes the images as admin whatever state they are in."""
    admin = image_proxy("admin")
    for image in images:
        try:
            if admin.get_image(image).is_protected:
                admin.update_image(image, is_protected=False)
            admin.delete_image(image, ignore_missing=True)
        except exceptions.SDKException:
            pass


def listed(label, **query):
    return {image.id for image in image_proxy(label).images(**query)}


def action(label, image_id, name):
    """POST /v2/images/{id}/actions/{name} through the proxy, as Image._action sends it; raises the
    SDK's exception for an error status (which deactivate_image itself never does)."""
    response = image_proxy(label).post(f"/images/{image_id}/actions/{name}")
    exceptions.raise_from_response(response)
    equal(response.status_code, 204, f"{name} status")


def download_response(label, image_id):
    """download_image(stream=True): the file request's response, raised from if it is an error
    (download_image itself does not look at the status)."""
    response = image_proxy(label).download_image(image_id, stream=True)
    exceptions.raise_from_response(response)
    return response


def downloaded(label, image):
    response = image_proxy(label).download_image(image)
    return response.content if hasattr(response, "content") else response


@checked
def create_and_upload_as_member():
    """alpha-member: create_image with data; owner is alpha's project id, visibility shared,
    the data round-trips; alpha and alpha-reader list it."""
    data = random_data(400_000)
    image = new_image("alpha", "ks-sdk-create", data)
    try:
        fetched = image_proxy("alpha").get_image(image.id)
        equal(fetched.owner, KS.alpha.project_id, "owner (the token's project)")
        equal(fetched.owner_id, KS.alpha.project_id, "owner_id")
        equal(fetched.visibility, "shared", "visibility (Glance's default)")
        equal(
            (fetched.status, fetched.size, fetched.checksum), ("active", len(data), digests(data)[0]), "data fields"
        )
        check(downloaded("alpha", image) == data, "downloaded bytes differ from the upload")
        check(image.id in listed("alpha"), "alpha-member does not list its own image")
        check(image.id in listed("reader"), "alpha-reader does not list its project's image")
    finally:
        cleanup(image)


@checked
def other_project_gets_404():
    """A private image of alpha's, from beta: get, download, update, delete and add_tag are all
    NotFoundException with Glance's message; images() lacks it; alpha still has it unchanged."""
    data = random_data(5000)
    image = new_image("alpha", "ks-sdk-private", data, visibility="private")
    beta = image_proxy("beta")
    try:
        equal(image_proxy("alpha").get_image(image.id).visibility, "private", "visibility")
        not_found(image.id, "get_image as beta", lambda: beta.get_image(image.id))
        not_found(image.id, "download_image as beta", lambda: beta.download_image(image.id))
        not_found(image.id, "update_image as beta", lambda: beta.update_image(image.id, name="beta"), patch=True)
        not_found(image.id, "delete_image as beta", lambda: beta.delete_image(image.id, ignore_missing=False))
        expect_http_error(exceptions.NotFoundException, 404, "add_tag as beta", beta.add_tag, image.id, "beta-tag")
        check(image.id not in listed("beta"), "beta-member lists alpha's private image")
        check(image.id not in listed("beta", visibility="all"), "beta lists it with visibility=all")
        equal(beta.find_image(image.id), None, "find_image as beta")
        fetched = image_proxy("alpha").get_image(image.id)
        equal(
            (fetched.name, fetched.status, fetched.tags), (image.name, "active", []), "alpha's image after beta's tries"
        )
        check(downloaded("alpha", image) == data, "alpha's data after beta's tries")
    finally:
        cleanup(image)


@checked
def sharing_with_members():
    """add_member -> pending; pending, not in beta's default images() but with
    member_status=pending; beta's update_member accepted lists it, rejected unlists it; the owner
    may not set beta's status (403); remove_member ends it (404 for beta)."""
    alpha, beta = image_proxy("alpha"), image_proxy("beta")
    image = new_image("alpha", "ks-sdk-share")
    beta_id = KS.beta.project_id
    try:
        member = alpha.add_member(image, member_id=beta_id)
        equal(member.status, "pending", "add_member status")
        equal([(m.id, m.status) for m in alpha.members(image)], [(beta_id, "pending")], "members as alpha")
        equal([(m.id, m.status) for m in beta.members(image)], [(beta_id, "pending")], "members as beta")
        equal(beta.get_member(beta_id, image).status, "pending", "get_member as beta")

        check(image.id not in listed("beta"), "a pending share is in beta's default list")
        check(image.id in listed("beta", member_status="pending"), "not listed with member_status=pending")
        equal(beta.get_image(image.id).owner, KS.alpha.project_id, "owner as beta sees it")

        expect_http_error(
            exceptions.ForbiddenException, 403, "update_member by the owner",
            lambda: alpha.update_member(beta_id, image, status="accepted"),
        )
        equal(beta.update_member(beta_id, image, status="accepted").status, "accepted", "update_member accepted")
        check(image.id in listed("beta"), "an accepted share is not in beta's default list")
        equal(beta.update_member(beta_id, image, status="rejected").status, "rejected", "update_member rejected")
        check(image.id not in listed("beta"), "a rejected share is in beta's default list")
        check(image.id in listed("beta", member_status="rejected"), "not listed with member_status=rejected")

        alpha.remove_member(beta_id, image, ignore_missing=False)
        not_found(image.id, "get_image as beta after remove_member", lambda: beta.get_image(image.id))
        equal(list(alpha.members(image)), [], "members after remove_member")
    finally:
        cleanup(image)


@checked
def reader_cannot_write():
    """alpha-reader: create_image 403 (add_image); update_image, delete_image 403 on its
    project's image; get_image and images() work."""
    image = new_image("alpha", "ks-sdk-reader")
    reader = image_proxy("reader")
    try:
        refused_create("reader", "add_image", "create_image as reader")
        equal(reader.get_image(image.id).id, image.id, "get_image as reader")
        check(image.id in listed("reader"), "alpha-reader does not list alpha's image")
        not_authorized(
            "modify_image", "update_image as reader", lambda: reader.update_image(image.id, name="r"), patch=True
        )
        not_authorized(
            "delete_image", "delete_image as reader", lambda: reader.delete_image(image.id, ignore_missing=False)
        )
        equal(image_proxy("alpha").get_image(image.id).name, image.name, "name after the reader's update")
    finally:
        cleanup(image)


@checked
def publicize_is_admin_only():
    """visibility=public: 403 (publicize_image) for alpha-member on create and update; the admin
    makes it public; then beta gets and lists it."""
    alpha = image_proxy("alpha")
    refused_create("alpha", "publicize_image", "create_image(visibility=public) as alpha", visibility="public")
    image = new_image("alpha", "ks-sdk-public")
    try:
        not_authorized(
            "publicize_image", "update_image(visibility=public) as alpha",
            lambda: alpha.update_image(image.id, visibility="public"), patch=True,
        )
        equal(alpha.get_image(image.id).visibility, "shared", "visibility after the refused update")
        not_found(image.id, "get_image as beta before", lambda: image_proxy("beta").get_image(image.id))
        updated = image_proxy("admin").update_image(image.id, visibility="public")
        equal((updated.visibility, updated.owner), ("public", KS.alpha.project_id), "after the admin's update")
        equal(image_proxy("beta").get_image(image.id).visibility, "public", "visibility as beta sees it")
        check(image.id in listed("beta"), "beta does not list a public image")
    finally:
        cleanup(image)


@checked
def community_by_member():
    """alpha-member creates a community image; beta gets it, finds it with visibility=community
    but not in its default list, and may not change it (403, not 404: it sees the image)."""
    image = new_image("alpha", "ks-sdk-community", visibility="community")
    beta = image_proxy("beta")
    try:
        equal(image_proxy("alpha").get_image(image.id).visibility, "community", "visibility")
        equal(beta.get_image(image.id).visibility, "community", "visibility as beta sees it")
        check(image.id not in listed("beta"), "another project's community image is in beta's default list")
        check(image.id in listed("beta", visibility="community"), "not listed with visibility=community")
        check(image.id in listed("alpha"), "alpha does not list its own community image")
        not_authorized(
            "modify_image", "update_image as beta", lambda: beta.update_image(image.id, name="b"), patch=True
        )
    finally:
        cleanup(image)


@checked
def deactivate_and_reactivate():
    """The admin's deactivate_image: status deactivated; alpha's download_image is a
    ForbiddenException with Glance's message, the admin's is served; reactivate_image restores
    alpha's download."""
    data = random_data(30_000)
    image = new_image("alpha", "ks-sdk-deactivate", data)
    alpha, admin = image_proxy("alpha"), image_proxy("admin")
    try:
        admin.deactivate_image(image.id)
        equal(alpha.get_image(image.id).status, "deactivated", "status after deactivate_image")
        expect_refusal(
            exceptions.ForbiddenException, 403,
            "The requested image has been deactivated. Image data download is forbidden.",
            "download_image(stream=True) of a deactivated image as alpha",
            lambda: download_response("alpha", image.id),
        )
        try:
            got = downloaded("alpha", image)
        except exceptions.SDKException:
            pass  # the SDK's checksum check of the 403 body: the data was not handed out
        else:
            raise Failed(f"download_image of a deactivated image as alpha returned {len(got)} bytes")
        check(downloaded("admin", image) == data, "the admin's download of a deactivated image")
        action("admin", image.id, "deactivate")  # a repeat: 204, nothing changes
        admin.reactivate_image(image.id)
        equal(alpha.get_image(image.id).status, "active", "status after reactivate_image")
        check(downloaded("alpha", image) == data, "alpha's download after reactivate_image")
    finally:
        cleanup(image)


@checked
def deactivate_by_member_is_403():
    """alpha-member may not deactivate its own image, nor reactivate it once the admin did (glint's
    documented deviation from Glance's default, which lets the owner's members in): 403 with
    Glance's policy message (the request
    deactivate_image sends, raised from; deactivate_image itself returns quietly and changes
    nothing)."""
    image = new_image("alpha", "ks-sdk-deact-member", b"y" * 2000)
    alpha = image_proxy("alpha")
    try:
        alpha.deactivate_image(image.id)
        equal(alpha.get_image(image.id).status, "active", "status after alpha's deactivate_image")
        not_authorized("deactivate", "deactivate as alpha", lambda: action("alpha", image.id, "deactivate"))
        equal(alpha.get_image(image.id).status, "active", "status after the refused deactivate")
        image_proxy("admin").deactivate_image(image.id)
        equal(alpha.get_image(image.id).status, "deactivated", "status after the admin's deactivate_image")
        alpha.reactivate_image(image.id)
        not_authorized("reactivate", "reactivate as alpha", lambda: action("alpha", image.id, "reactivate"))
        equal(alpha.get_image(image.id).status, "deactivated", "status after the refused reactivate")
    finally:
        cleanup(image)


@checked
def protected_delete_is_403():
    """alpha's protected image: delete_image is a ForbiddenException with Glance's message; the
    image stays; unprotected, alpha deletes it."""
    alpha = image_proxy("alpha")
    image = new_image("alpha", "ks-sdk-protected", is_protected=True)
    try:
        check(alpha.get_image(image.id).is_protected, "is_protected after create")
        expect_refusal(
            exceptions.ForbiddenException, 403, f"Image {image.id} is protected and cannot be deleted.",
            "delete_image of a protected image", lambda: alpha.delete_image(image.id, ignore_missing=False),
        )
        equal(alpha.get_image(image.id).status, "queued", "the protected image is still there")
        alpha.update_image(image.id, is_protected=False)
        alpha.delete_image(image.id, ignore_missing=False)
        not_found(image.id, "get_image after delete", lambda: alpha.get_image(image.id))
    finally:
        cleanup(image)


@checked
def forged_token_is_401():
    """A token Keystone never issued, sent with the static-token plugin (no Keystone login by the
    client): glint asks Keystone, which does not know it: HttpException 401 with glint's message."""
    forged = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": ARGS.url, "token": FORGED_TOKEN},
        image_endpoint_override=ARGS.url,
        load_yaml_config=False,
        load_envvars=False,
    )
    error = expect_http_error(
        exceptions.HttpException, 401, "images() with a forged token",
        lambda: list(forged.image.images(limit=1, paginated=False)),
    )
    check("X-Auth-Token" in str(error), f"glint's message is missing from {error!r}")
    www_authenticate = error.response.headers.get("WWW-Authenticate", "") if error.response is not None else ""
    equal(www_authenticate, f'Keystone uri="{KS.url}"', "WWW-Authenticate")


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
    if not ARGS.keystone_env:
        print("needs --keystone-env PATH (scripts/interop/run passes it)", file=sys.stderr)
        return 2
    KS = KeystoneEnv(ARGS.keystone_env)
    RECENT.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for name in ("keystoneauth", "openstack"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(RECENT)
        logger.propagate = False
    for label in ("admin", "alpha", "reader", "beta"):
        CONN[label] = connect(getattr(KS, label))
    return run_checks("keystone-openstacksdk", CHECKS, ARGS)


if __name__ == "__main__":
    main_guard(main)
