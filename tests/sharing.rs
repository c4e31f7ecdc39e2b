//! Projects, policy and sharing under Keystone (issue 11, parts 2 to 5), against the real
//! Keystone of `scripts/keystone` (`GLINT_KEYSTONE_ENV`, as in `keystone`): who owns an image,
//! who may see it (404, never 403, for an image a project may not see), what the roles may do
//! (Glance's default policy), image members, deactivate and reactivate, `protected`, and a
//! policy file changed by SIGHUP.
//!
//! The fixture users: `alpha-member` (member of project alpha), `alpha-reader` (reader of
//! alpha), `beta-member` (member of beta) and `admin` (admin of project admin).

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::keystone::{keystone_config, shared_keystone, start_glint, Keystone};
use crate::util::{self, Response, Server};

/// A fixture user's token, and the request helpers that send it.
struct User {
    token: String,
    project: String,
    addr: SocketAddr,
}

impl User {
    fn new(keystone: &Keystone, prefix: &str, addr: SocketAddr) -> User {
        let (token, _) = keystone.token(prefix);
        User {
            token,
            project: keystone.get(&format!("{prefix}_PROJECT_ID")).to_string(),
            addr,
        }
    }

    fn admin(keystone: &Keystone, addr: SocketAddr) -> User {
        User::new(keystone, "KEYSTONE_ADMIN", addr)
    }

    fn call(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Response {
        let mut headers = vec![
            ("X-Auth-Token", self.token.as_str()),
            ("Accept", "application/json"),
        ];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        util::request(self.addr, method, path, &headers, body)
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
    }

    fn get(&self, path: &str) -> Response {
        self.call("GET", path, "", b"")
    }

    fn json(&self, method: &str, path: &str, body: Value) -> Response {
        self.call(
            method,
            path,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    fn patch(&self, id: &str, operations: Value) -> Response {
        self.call(
            "PATCH",
            &format!("/v2/images/{id}"),
            "application/openstack-images-v2.1-json-patch",
            operations.to_string().as_bytes(),
        )
    }

    fn create(&self, body: Value) -> Response {
        self.json("POST", "/v2/images", body)
    }

    /// Creates an image (201 asserted) and returns its document.
    fn created(&self, body: Value) -> Value {
        let response = self.create(body);
        assert_eq!(response.status, 201, "{}", response.text());
        serde_json::from_slice(&response.body).expect("image JSON")
    }

    /// Creates an image with `visibility` and uploads `data`; returns its id.
    fn image_with_data(&self, visibility: &str, data: &[u8]) -> String {
        let image = self.created(json!({"name": visibility, "disk_format": "raw",
            "container_format": "bare", "visibility": visibility}));
        let id = image["id"].as_str().expect("id").to_string();
        let upload = self.call(
            "PUT",
            &format!("/v2/images/{id}/file"),
            "application/octet-stream",
            data,
        );
        assert_eq!(upload.status, 204, "upload: {}", upload.text());
        id
    }

    /// The ids `GET /v2/images?QUERY` lists.
    fn listed(&self, query: &str) -> Vec<String> {
        let response = self.get(&format!("/v2/images?limit=1000&{query}"));
        assert_eq!(response.status, 200, "list {query}: {}", response.text());
        let page: Value = serde_json::from_slice(&response.body).expect("list JSON");
        page["images"]
            .as_array()
            .expect("images")
            .iter()
            .map(|image| image["id"].as_str().expect("id").to_string())
            .collect()
    }
}

/// Asserts `response` has `status` and its JSON message contains `message`.
fn assert_refused(response: &Response, status: u16, message: &str, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.text());
    let body: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|error| panic!("{what}: not JSON ({error}): {}", response.text()));
    let text = body["message"].as_str().unwrap_or_default();
    assert!(
        text.contains(message),
        "{what}: {message:?} not in {text:?}"
    );
}

fn keystone_glint(keystone: &Keystone, default: &str) -> Server {
    start_glint(&keystone_config(keystone, default, ""))
}

#[test]
fn sharing_owner_is_the_token_project_and_other_projects_see_only_what_glance_shows() {
    let _keystone = shared_keystone();
    let keystone = Keystone::from_env();
    let server = keystone_glint(&keystone, "");
    let addr = server.addr();
    let alpha = User::new(&keystone, "KEYSTONE_ALPHA_MEMBER", addr);
    let beta = User::new(&keystone, "KEYSTONE_BETA_MEMBER", addr);
    let admin = User::admin(&keystone, addr);

    let default = alpha.created(json!({"name": "default"}));
    assert_eq!(
        default["owner"],
        json!(alpha.project),
        "owner is the project"
    );
    assert_eq!(
        default["visibility"], "shared",
        "Glance's default visibility"
    );
    let private = alpha.image_with_data("private", b"private data");
    let shared = alpha.image_with_data("shared", b"shared data");
    let community = alpha.image_with_data("community", b"community data");
    let public = admin.image_with_data("public", b"public data");

    // beta: the private and shared images do not exist for it, whatever it asks.
    for id in [&private, &shared] {
        let not_found = format!("No image found with ID {id}");
        let path = format!("/v2/images/{id}");
        assert_refused(&beta.get(&path), 404, &not_found, "show");
        assert_refused(
            &beta.get(&format!("{path}/file")),
            404,
            &not_found,
            "download",
        );
        assert_refused(
            &beta.patch(
                id,
                json!([{"op": "replace", "path": "/name", "value": "x"}]),
            ),
            404,
            &not_found,
            "update",
        );
        assert_refused(
            &beta.call("DELETE", &path, "", b""),
            404,
            &not_found,
            "delete",
        );
        assert_refused(
            &beta.call("PUT", &format!("{path}/tags/t"), "", b""),
            404,
            &not_found,
            "tag",
        );
    }
    // ... and the failed writes changed nothing.
    let still = alpha.get(&format!("/v2/images/{private}"));
    assert_eq!(still.status, 200);
    let still: Value = serde_json::from_slice(&still.body).unwrap();
    assert_eq!(still["name"], "private");
    assert_eq!(still["tags"], json!([]));

    // Community and public images: anyone may read them; only the owner (or an admin) may
    // change them, and a project that may see an image gets 403 for a change, not 404.
    for (id, data) in [
        (&community, &b"community data"[..]),
        (&public, b"public data"),
    ] {
        assert_eq!(beta.get(&format!("/v2/images/{id}")).status, 200);
        let download = beta.get(&format!("/v2/images/{id}/file"));
        assert_eq!(download.status, 200, "{}", download.text());
        assert_eq!(download.body, data);
        assert_refused(
            &beta.patch(
                id,
                json!([{"op": "replace", "path": "/name", "value": "x"}]),
            ),
            403,
            "You are not authorized to complete modify_image action.",
            "update of another project's visible image",
        );
        assert_refused(
            &beta.call("DELETE", &format!("/v2/images/{id}"), "", b""),
            403,
            "You are not authorized to complete delete_image action.",
            "delete of another project's visible image",
        );
    }

    // Lists: Glance's default list leaves other projects' community images out.
    let beta_default = beta.listed("");
    assert!(beta_default.contains(&public), "{beta_default:?}");
    for absent in [&private, &shared, &community] {
        assert!(
            !beta_default.contains(absent),
            "{absent} in {beta_default:?}"
        );
    }
    assert_eq!(beta.listed("visibility=community"), vec![community.clone()]);
    let beta_all = beta.listed("visibility=all");
    assert!(beta_all.contains(&community) && beta_all.contains(&public));
    assert!(!beta_all.contains(&private) && !beta_all.contains(&shared));
    assert_eq!(beta.listed("visibility=private"), Vec::<String>::new());
    // alpha lists its own images of every visibility, community included.
    let alpha_default = alpha.listed("");
    for id in [&private, &shared, &community, &public] {
        assert!(alpha_default.contains(id), "{id} not in {alpha_default:?}");
    }
    assert_eq!(alpha.listed("visibility=private"), vec![private.clone()]);
    assert_eq!(
        alpha.listed(&format!("owner={}", alpha.project)).len(),
        4,
        "default, private, shared, community"
    );
    // The admin sees every image, and may change any.
    let admin_all = admin.listed("visibility=all");
    for id in [&private, &shared, &community, &public] {
        assert!(admin_all.contains(id), "{id} not in the admin's list");
    }
    let renamed = admin.patch(
        &private,
        json!([{"op": "replace", "path": "/name", "value": "by admin"}]),
    );
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    assert_refused(
        &beta.get("/v2/images?member_status=maybe"),
        400,
        "Invalid status: maybe",
        "member_status",
    );
}

#[test]
fn sharing_roles_decide_writes_visibility_deactivation_and_protection() {
    let _keystone = shared_keystone();
    let keystone = Keystone::from_env();
    let server = keystone_glint(&keystone, "");
    let addr = server.addr();
    let member = User::new(&keystone, "KEYSTONE_ALPHA_MEMBER", addr);
    let reader = User::new(&keystone, "KEYSTONE_ALPHA_READER", addr);
    let admin = User::admin(&keystone, addr);

    let id = member.image_with_data("shared", b"the image data");
    let path = format!("/v2/images/{id}");

    // A reader reads its project's images; every write is refused.
    assert_eq!(reader.get(&path).status, 200);
    assert_eq!(reader.listed(""), vec![id.clone()]);
    assert_refused(
        &reader.create(json!({"name": "r"})),
        403,
        "You are not authorized to complete add_image action.",
        "reader create",
    );
    assert_refused(
        &reader.patch(
            &id,
            json!([{"op": "replace", "path": "/name", "value": "r"}]),
        ),
        403,
        "You are not authorized to complete modify_image action.",
        "reader update",
    );
    assert_refused(
        &reader.call("DELETE", &path, "", b""),
        403,
        "You are not authorized to complete delete_image action.",
        "reader delete",
    );
    assert_refused(
        &reader.get(&format!("{path}/file")),
        403,
        "You are not authorized to complete download_image action.",
        "reader download",
    );
    let queued = member.created(json!({"disk_format": "raw", "container_format": "bare"}));
    let queued = queued["id"].as_str().unwrap();
    assert_refused(
        &reader.call(
            "PUT",
            &format!("/v2/images/{queued}/file"),
            "application/octet-stream",
            b"x",
        ),
        403,
        "You are not authorized to complete upload_image action.",
        "reader upload",
    );
    // A member may not create an image for another project, nor make one public.
    assert_refused(
        &member.create(json!({"name": "given away", "owner": "another-project"})),
        403,
        "You are not authorized to complete add_image action.",
        "create for another owner",
    );
    assert_refused(
        &member.create(json!({"name": "p", "visibility": "public"})),
        403,
        "You are not authorized to complete publicize_image action.",
        "member create public",
    );
    assert_refused(
        &member.patch(
            &id,
            json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
        ),
        403,
        "You are not authorized to complete publicize_image action.",
        "member publicize",
    );
    let community = member.patch(
        &id,
        json!([{"op": "replace", "path": "/visibility", "value": "community"}]),
    );
    assert_eq!(
        community.status,
        200,
        "member communitize: {}",
        community.text()
    );
    let public = admin.patch(
        &id,
        json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
    );
    assert_eq!(public.status, 200, "admin publicize: {}", public.text());

    // Deactivation: the admin's alone; the data is then the admin's alone.
    let deactivate = format!("{path}/actions/deactivate");
    let reactivate = format!("{path}/actions/reactivate");
    assert_refused(
        &member.call("POST", &deactivate, "", b""),
        403,
        "You are not authorized to complete deactivate action.",
        "member deactivate",
    );
    assert_eq!(admin.call("POST", &deactivate, "", b"").status, 204);
    assert_eq!(
        admin.call("POST", &deactivate, "", b"").status,
        204,
        "a repeat"
    );
    let shown: Value = serde_json::from_slice(&member.get(&path).body).unwrap();
    assert_eq!(shown["status"], "deactivated");
    assert_refused(
        &member.get(&format!("{path}/file")),
        403,
        "The requested image has been deactivated. Image data download is forbidden.",
        "member download of a deactivated image",
    );
    let by_admin = admin.get(&format!("{path}/file"));
    assert_eq!(by_admin.status, 200, "{}", by_admin.text());
    assert_eq!(by_admin.body, b"the image data");
    assert_refused(
        &member.call("POST", &reactivate, "", b""),
        403,
        "You are not authorized to complete reactivate action.",
        "member reactivate",
    );
    assert_eq!(admin.call("POST", &reactivate, "", b"").status, 204);
    assert_eq!(member.get(&format!("{path}/file")).body, b"the image data");
    assert_refused(
        &admin.call(
            "POST",
            &format!("/v2/images/{queued}/actions/deactivate"),
            "",
            b"",
        ),
        403,
        "Not allowed to deactivate image in status 'queued'",
        "deactivate a queued image",
    );

    // protected: nobody deletes it, not even an admin, until it is unprotected.
    let protect = member.patch(
        &id,
        json!([{"op": "replace", "path": "/protected", "value": true}]),
    );
    assert_eq!(protect.status, 200, "{}", protect.text());
    for user in [&member, &admin] {
        assert_refused(
            &user.call("DELETE", &path, "", b""),
            403,
            "is protected and cannot be deleted",
            "protected delete",
        );
    }
    member.patch(
        &id,
        json!([{"op": "replace", "path": "/protected", "value": false}]),
    );
    assert_eq!(member.call("DELETE", &path, "", b"").status, 204);
    assert_eq!(member.get(&path).status, 404);
}

#[test]
fn sharing_members_share_an_image_as_glance_does() {
    let _keystone = shared_keystone();
    let keystone = Keystone::from_env();
    let server = keystone_glint(&keystone, "image_member_quota = 2\n");
    let addr = server.addr();
    let alpha = User::new(&keystone, "KEYSTONE_ALPHA_MEMBER", addr);
    let beta = User::new(&keystone, "KEYSTONE_BETA_MEMBER", addr);
    let admin = User::admin(&keystone, addr);

    let id = alpha.image_with_data("shared", b"shared with beta");
    let members = format!("/v2/images/{id}/members");
    let beta_row = format!("{members}/{}", beta.project);

    // Not yet a member: beta cannot see the image, nor its members.
    assert_refused(
        &beta.get(&members),
        404,
        &format!("Image {id} not found."),
        "list",
    );
    assert_refused(
        &beta.json("POST", &members, json!({"member": beta.project})),
        404,
        "not found",
        "a non-member adds itself",
    );

    let added = alpha.json("POST", &members, json!({"member": beta.project}));
    assert_eq!(added.status, 200, "{}", added.text());
    let added: Value = serde_json::from_slice(&added.body).unwrap();
    assert_eq!(added["status"], "pending");
    assert_eq!(added["member_id"], json!(beta.project));
    assert_eq!(added["image_id"], json!(id));
    assert_eq!(added["schema"], "/v2/schemas/member");
    assert_refused(
        &alpha.json("POST", &members, json!({"member": beta.project})),
        409,
        &format!("Member {} is duplicated for image {id}", beta.project),
        "duplicate",
    );
    assert_refused(
        &alpha.json("POST", &members, json!({})),
        400,
        "Member to be added not specified",
        "no member",
    );

    // Pending: beta sees the image but does not list it by default.
    assert_eq!(beta.get(&format!("/v2/images/{id}")).status, 200);
    assert!(!beta.listed("").contains(&id));
    assert_eq!(beta.listed("member_status=pending"), vec![id.clone()]);
    assert_eq!(beta.listed("member_status=all"), vec![id.clone()]);
    // Only the member itself answers the share; the owner may not, and beta may not add.
    assert_refused(
        &alpha.json("PUT", &beta_row, json!({"status": "accepted"})),
        403,
        "You are not authorized to complete modify_member action.",
        "owner accepts for beta",
    );
    assert_refused(
        &beta.json("POST", &members, json!({"member": "someone-else"})),
        403,
        "You are not authorized to complete add_member action.",
        "member adds",
    );
    assert_refused(
        &beta.json("PUT", &beta_row, json!({"status": "maybe"})),
        400,
        "Status must be \"pending\", \"accepted\" or \"rejected\".",
        "bad status",
    );
    let accepted = beta.json("PUT", &beta_row, json!({"status": "accepted"}));
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert!(beta.listed("").contains(&id), "accepted: listed");
    assert_eq!(
        beta.get(&format!("/v2/images/{id}/file")).body,
        b"shared with beta"
    );

    // Each side sees the rows it may: the owner all, a member only its own.
    let third = alpha.json("POST", &members, json!({"member": "third-project"}));
    assert_eq!(third.status, 200, "{}", third.text());
    let rows = |user: &User| -> Vec<String> {
        let response = user.get(&members);
        assert_eq!(response.status, 200, "{}", response.text());
        let page: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(page["schema"], "/v2/schemas/members");
        page["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["member_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        rows(&alpha),
        vec![beta.project.clone(), "third-project".to_string()]
    );
    assert_eq!(rows(&beta), vec![beta.project.clone()]);
    assert_eq!(rows(&admin).len(), 2);
    assert_refused(
        &beta.get(&format!("{members}/third-project")),
        404,
        "third-project not found in the member list",
        "another member's row",
    );
    assert_refused(
        &alpha.json("POST", &members, json!({"member": "fourth-project"})),
        413,
        "Image member limit exceeded",
        "image_member_quota = 2",
    );

    // Rejected: out of the default list again, still visible.
    let rejected = beta.json("PUT", &beta_row, json!({"status": "rejected"}));
    assert_eq!(rejected.status, 200);
    assert!(!beta.listed("").contains(&id));
    assert_eq!(beta.listed("member_status=rejected"), vec![id.clone()]);
    assert_eq!(beta.get(&format!("/v2/images/{id}")).status, 200);

    // Removed: the image is gone for beta.
    assert_refused(
        &beta.call("DELETE", &beta_row, "", b""),
        403,
        "You are not authorized to complete delete_member action.",
        "member removes itself",
    );
    assert_eq!(alpha.call("DELETE", &beta_row, "", b"").status, 204);
    assert_eq!(beta.get(&format!("/v2/images/{id}")).status, 404);
    assert!(!beta.listed("member_status=all").contains(&id));

    // Only shared images have members.
    let private = alpha.image_with_data("private", b"p");
    assert_refused(
        &alpha.get(&format!("/v2/images/{private}/members")),
        403,
        "Only shared images have members.",
        "members of a private image",
    );
    assert_refused(
        &alpha.json(
            "POST",
            &format!("/v2/images/{private}/members"),
            json!({"member": beta.project}),
        ),
        403,
        &format!("Not allowed to create members for image {private}."),
        "add to a private image",
    );
    assert_refused(
        &alpha.get(&format!("/v2/images/{private}/members/{}", beta.project)),
        404,
        "Only shared images have members.",
        "show on a private image",
    );
    for schema in ["member", "members"] {
        let response = beta.get(&format!("/v2/schemas/{schema}"));
        assert_eq!(response.status, 200);
        let document: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(document["name"], schema);
    }
}

#[test]
fn sharing_policy_file_changes_by_sighup_and_a_broken_one_changes_nothing() {
    let _keystone = shared_keystone();
    let keystone = Keystone::from_env();
    let server = keystone_glint(&keystone, "");
    let addr = server.addr();
    let member = User::new(&keystone, "KEYSTONE_ALPHA_MEMBER", addr);
    let admin = User::admin(&keystone, addr);
    assert_eq!(member.create(json!({"name": "before"})).status, 201);

    // The operator makes image creation admin-only.
    let policy = server.path("policy.yaml");
    std::fs::write(
        &policy,
        "# glint test policy\n\"add_image\": \"role:admin\"\n",
    )
    .expect("policy file");
    let with_policy = format!(
        "{}\n[oslo_policy]\npolicy_file = {}\n",
        keystone_config(&keystone, "", ""),
        policy.display()
    );
    server.write_config_text(&with_policy);
    server.reload_succeeds();
    assert_refused(
        &member.create(json!({"name": "after"})),
        403,
        "You are not authorized to complete add_image action.",
        "after the policy file",
    );
    assert_eq!(admin.create(json!({"name": "admin"})).status, 201);

    // A policy file that does not parse: the reload fails naming file, line and rule, and the
    // policy in force stays.
    std::fs::write(
        &policy,
        "\"add_image\": \"@\"\n\"get_image\": \"role:reader and (\"\n",
    )
    .expect("policy file");
    let generation = server.status()["generation"].clone();
    let verdict = server.reload();
    assert_eq!(verdict["outcome"], "failed", "{verdict}");
    let error = verdict["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{}:2", policy.display())) && error.contains("get_image"),
        "file, line and rule in {verdict}"
    );
    assert_eq!(server.status()["generation"], generation);
    assert_refused(
        &member.create(json!({"name": "still refused"})),
        403,
        "add_image",
        "after the failed reload",
    );

    // Fixed: the new rule applies.
    std::fs::write(&policy, "\"add_image\": \"@\"\n").expect("policy file");
    server.reload_succeeds();
    assert_eq!(member.create(json!({"name": "allowed"})).status, 201);
}
