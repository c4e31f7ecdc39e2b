//! The Images API v2 from a client's socket, against the real binary: metadata (create, show,
//! list, patch, delete, tags, schemas, error bodies), image data (uploads in every framing,
//! downloads and ranges, size caps, hashes, failed and abandoned uploads), transfers across
//! reloads and crashes, and a genuinely full filesystem.
//!
//! Every image document the server returns through [`Glance`] is checked against the server's
//! own `/v2/schemas/image` (see [`validate`]): glanceclient does the same and fails on any image
//! that does not validate.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use md5::Md5;
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha512};

use crate::util::{self, read_response, Response, Server, DEADLINE};

/// The create media type.
const JSON: &str = "application/json";

/// The two PATCH media types.
const PATCH_V21: &str = "application/openstack-images-v2.1-json-patch";
const PATCH_V20: &str = "application/openstack-images-v2.0-json-patch";

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, in 64 KiB chunks.
    Chunked,
}

// ---------------------------------------------------------------------------------------------
// The client: requests, image documents checked against the schema, data and datadir helpers.
// ---------------------------------------------------------------------------------------------

/// A Glance client for one server: every request on a new connection with `Connection: close`
/// and `Accept: application/json` (so error bodies carry their message as JSON).
struct Glance<'a> {
    server: &'a Server,
    /// `/v2/schemas/image` as the server serves it.
    image_schema: Value,
    /// `/v2/schemas/images`.
    images_schema: Value,
}

impl<'a> Glance<'a> {
    fn new(server: &'a Server) -> Glance<'a> {
        let mut glance = Glance {
            server,
            image_schema: Value::Null,
            images_schema: Value::Null,
        };
        glance.image_schema = glance.get_json("/v2/schemas/image", 200);
        glance.images_schema = glance.get_json("/v2/schemas/images", 200);
        glance
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Sends one request and reads its response; the body is written by a second thread so that
    /// a response sent before the whole body was read (413, 415) is still heard.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(Framing, &[u8])>,
    ) -> Response {
        let what = format!("{method} {path}");
        exchange(self.addr(), method, path, headers, body)
            .unwrap_or_else(|error| panic!("{what}: {error}\n--- log ---\n{}", self.server.log()))
    }

    /// A request with a JSON body (or any bytes) under `content_type`.
    fn send_json(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Response {
        self.request(
            method,
            path,
            &[("Content-Type", content_type), ("Accept", JSON)],
            Some((Framing::Length, body)),
        )
    }

    /// GET `path` expecting `status` and a JSON body.
    fn get_json(&self, path: &str, status: u16) -> Value {
        let response = self.request("GET", path, &[("Accept", JSON)], None);
        self.expect(&response, status, &format!("GET {path}"));
        self.body_json(&response, &format!("GET {path}"))
    }

    /// Panics with the response and the server log unless `response` has `status`.
    fn expect(&self, response: &Response, status: u16, what: &str) {
        if response.status != status {
            panic!(
                "{what}: expected {status}, got {} {:?}\nbody: {}\n--- log ---\n{}",
                response.status,
                response.headers,
                util::show(&response.body),
                self.server.log()
            );
        }
    }

    fn body_json(&self, response: &Response, what: &str) -> Value {
        assert_eq!(
            response.header("content-type"),
            Some(JSON),
            "{what}: Content-Type of {response:?}"
        );
        serde_json::from_slice(&response.body).unwrap_or_else(|error| {
            panic!(
                "{what}: body is not JSON ({error}): {}",
                util::show(&response.body)
            )
        })
    }

    /// The image document in `response`, checked against the image schema.
    fn image(&self, response: &Response, status: u16, what: &str) -> Value {
        self.expect(response, status, what);
        let image = self.body_json(response, what);
        self.check_image(&image, what);
        image
    }

    fn check_image(&self, image: &Value, what: &str) {
        if let Err(error) = validate(&self.image_schema, image, "image") {
            panic!(
                "{what}: the image does not validate against /v2/schemas/image: {error}\n{image:#}"
            );
        }
    }

    /// `POST /v2/images` expecting 201; returns the image.
    fn create(&self, fields: Value) -> Value {
        let response = self.send_json("POST", "/v2/images", JSON, fields.to_string().as_bytes());
        let image = self.image(&response, 201, &format!("create {fields}"));
        let id = image["id"].as_str().expect("id");
        assert_eq!(
            response.header("location"),
            Some(format!("/v2/images/{id}").as_str()),
            "Location of the create response"
        );
        image
    }

    /// Creates an image with disk and container formats, ready for data, named `name`.
    fn create_uploadable(&self, name: &str) -> String {
        let image = self.create(json!({
            "name": name, "disk_format": "raw", "container_format": "bare"
        }));
        image["id"].as_str().expect("id").to_string()
    }

    fn show(&self, id: &str) -> Value {
        let response = self.request(
            "GET",
            &format!("/v2/images/{id}"),
            &[("Accept", JSON)],
            None,
        );
        self.image(&response, 200, &format!("show {id}"))
    }

    fn status_of(&self, id: &str) -> String {
        self.show(id)["status"].as_str().unwrap_or("").to_string()
    }

    /// `GET /v2/images?query` expecting 200; every image is checked against the schema and the
    /// whole document against the images schema.
    fn list(&self, query: &str) -> Value {
        let path = if query.is_empty() {
            "/v2/images".to_string()
        } else {
            format!("/v2/images?{query}")
        };
        self.list_path(&path)
    }

    fn list_path(&self, path: &str) -> Value {
        let document = self.get_json(path, 200);
        if let Err(error) = validate(&self.images_schema, &document, "images") {
            panic!("GET {path}: the list does not validate against /v2/schemas/images: {error}");
        }
        for image in document["images"].as_array().expect("images array") {
            self.check_image(image, &format!("GET {path}"));
        }
        document
    }

    /// `PATCH /v2/images/{id}` with `media_type` and `operations`.
    fn patch(&self, id: &str, media_type: &str, operations: &Value) -> Response {
        self.send_json(
            "PATCH",
            &format!("/v2/images/{id}"),
            media_type,
            operations.to_string().as_bytes(),
        )
    }

    fn delete(&self, id: &str) -> Response {
        self.request(
            "DELETE",
            &format!("/v2/images/{id}"),
            &[("Accept", JSON)],
            None,
        )
    }

    /// `PUT /v2/images/{id}/file` with `data`, `x-openstack-image-size: declared` if given.
    fn upload(&self, id: &str, data: &[u8], framing: Framing, declared: Option<u64>) -> Response {
        let declared = declared.map(|size| size.to_string());
        let mut headers = vec![
            ("Content-Type", "application/octet-stream"),
            ("Accept", JSON),
        ];
        if let Some(size) = &declared {
            headers.push(("x-openstack-image-size", size));
        }
        self.request(
            "PUT",
            &format!("/v2/images/{id}/file"),
            &headers,
            Some((framing, data)),
        )
    }

    /// Uploads `data` with its Content-Length and expects 204.
    fn upload_ok(&self, id: &str, data: &[u8]) {
        let response = self.upload(id, data, Framing::Length, None);
        self.expect(
            &response,
            204,
            &format!("upload of {} bytes to {id}", data.len()),
        );
    }

    fn download(&self, id: &str, range: Option<&str>) -> Response {
        let mut headers = vec![("Accept", JSON)];
        if let Some(range) = range {
            headers.push(("Range", range));
        }
        self.request("GET", &format!("/v2/images/{id}/file"), &headers, None)
    }

    /// The `message` of a JSON error body.
    fn message(&self, response: &Response) -> String {
        let body: Value = serde_json::from_slice(&response.body).unwrap_or_else(|error| {
            panic!(
                "error body is not JSON ({error}): {}",
                util::show(&response.body)
            )
        });
        body["message"].as_str().unwrap_or("").to_string()
    }

    /// Asserts that `response` is the error `status` with a message containing `fragment`.
    fn expect_error(&self, response: &Response, status: u16, fragment: &str, what: &str) {
        self.expect(response, status, what);
        let message = self.message(response);
        assert!(
            message.contains(fragment),
            "{what}: the message {message:?} lacks {fragment:?}"
        );
    }
}

/// One request on a new connection. The body goes out from another thread (errors ignored: a
/// server that answers early may close before it has read everything).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(Framing, &[u8])>,
) -> std::io::Result<Response> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let encoded = match body {
        None => Vec::new(),
        Some((Framing::Length, data)) => {
            head.push_str(&format!("Content-Length: {}\r\n", data.len()));
            data.to_vec()
        }
        Some((Framing::Chunked, data)) => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            chunked(data)
        }
    };
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(head.as_bytes())?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&encoded);
    });
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader, method);
    drop(reader);
    let _ = sender.join();
    response?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed without a response",
        )
    })
}

/// `data` as chunked transfer coding in 64 KiB chunks, with the last chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::with_capacity(data.len() + 64);
    for chunk in data.chunks(64 * 1024) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

/// `n` deterministic pseudo-random bytes.
fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

fn sha512_hex(data: &[u8]) -> String {
    hex(&Sha512::digest(data))
}

/// The names in `dir`, sorted; empty if it does not exist.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Asserts that `dir` holds exactly `expected` (image ids; so no temporary file either).
fn assert_files(server: &Server, dir: &Path, expected: &[&str], what: &str) {
    let mut expected: Vec<String> = expected.iter().map(|name| name.to_string()).collect();
    expected.sort();
    let actual = files_in(dir);
    assert_eq!(
        actual,
        expected,
        "{what}: files in {}\n--- log ---\n{}",
        dir.display(),
        server.log()
    );
}

/// The ids of `list`'s images mapped to their names, in order.
fn names(list: &Value) -> Vec<String> {
    list["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| image["name"].as_str().unwrap_or("<null>").to_string())
        .collect()
}

/// Checks `value` against `schema`, for the part of JSON schema the Glance schemas use: `type`
/// (one or a list, with "null"), `enum`, `maxLength`, the UUID `pattern`, `items`,
/// `properties`, `additionalProperties` (false or a schema) and `required`. Anything else in the
/// schema is a description and is ignored.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: unsupported type {other}")),
        };
        let matches = |kind: &str| match kind {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|kind| matches(kind)) {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let (Some(max), Value::String(text)) =
        (schema.get("maxLength").and_then(Value::as_u64), value)
    {
        if text.chars().count() as u64 > max {
            return Err(format!("{at}: {value} is longer than {max}"));
        }
    }
    if let (Some(pattern), Value::String(text)) = (schema.get("pattern"), value) {
        // Only the UUID pattern of `id` is used; check its shape by hand.
        if !pattern.as_str().is_some_and(|p| p.contains("{8}-")) {
            return Err(format!("{at}: unsupported pattern {pattern}"));
        }
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        if groups != [8, 4, 4, 4, 12] || !text.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
            return Err(format!("{at}: {value} does not match the UUID pattern"));
        }
    }
    if let (Some(items), Value::Array(elements)) = (schema.get("items"), value) {
        for (index, element) in elements.iter().enumerate() {
            validate(items, element, &format!("{at}[{index}]"))?;
        }
    }
    if let Value::Object(fields) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => validate(property, field, &format!("{at}.{name}"))?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{at}: additional property {name:?} not allowed"))
                    }
                    Some(additional @ Value::Object(_)) => {
                        validate(additional, field, &format!("{at}.{name}"))?
                    }
                    _ => {}
                },
            }
        }
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    return Err(format!("{at}: required property {name:?} is missing"));
                }
            }
        }
    }
    Ok(())
}

/// The checker itself: it accepts what it should and refuses what it should, so that a passing
/// image check means something.
#[test]
fn schema_checker_refuses_what_the_image_schema_forbids() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let image = glance.create(json!({"name": "checked"}));
    let schema = &glance.image_schema;
    validate(schema, &image, "image").unwrap();
    let broken = [
        ("min_ram", json!("512")),
        ("name", json!(5)),
        ("name", json!("x".repeat(256))),
        ("visibility", json!("everyone")),
        ("disk_format", json!("floppy")),
        ("checksum", json!("0".repeat(33))),
        ("id", json!("not-a-uuid")),
        ("tags", json!([1])),
        ("hw_arch", json!(64)),
        ("hw_arch", json!(null)),
    ];
    for (name, value) in broken {
        let mut bad = image.clone();
        bad[name] = value.clone();
        assert!(
            validate(schema, &bad, "image").is_err(),
            "{name} = {value} passed the checker"
        );
    }
    let namespace = glance.get_json("/v2/schemas/metadefs/namespace", 200);
    validate(&namespace, &json!({"namespace": "n"}), "namespace").unwrap();
    assert!(validate(&namespace, &json!({"display_name": "n"}), "namespace").is_err());
    assert!(validate(
        &namespace,
        &json!({"namespace": "n", "other": 1}),
        "namespace"
    )
    .is_err());
}

// ---------------------------------------------------------------------------------------------
// 1. Metadata: create, show, list, patch, delete, tags, schemas, errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn create_fills_in_glance_defaults_and_keeps_custom_properties_and_tags() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let image = glance.create(json!({
        "name": "cirros",
        "disk_format": "qcow2",
        "container_format": "bare",
        "tags": ["b", "a", "a"],
        "hw_arch": "x86_64",
        "os_distro": "",
    }));
    let id = image["id"].as_str().unwrap().to_string();
    let expected = [
        ("name", json!("cirros")),
        ("status", json!("queued")),
        ("visibility", json!("shared")),
        ("protected", json!(false)),
        ("os_hidden", json!(false)),
        ("checksum", Value::Null),
        ("os_hash_algo", Value::Null),
        ("os_hash_value", Value::Null),
        ("owner", Value::Null),
        ("size", Value::Null),
        ("virtual_size", Value::Null),
        ("disk_format", json!("qcow2")),
        ("container_format", json!("bare")),
        ("min_ram", json!(0)),
        ("min_disk", json!(0)),
        ("tags", json!(["a", "b"])),
        ("hw_arch", json!("x86_64")),
        ("os_distro", json!("")),
        ("self", json!(format!("/v2/images/{id}"))),
        ("file", json!(format!("/v2/images/{id}/file"))),
        ("schema", json!("/v2/schemas/image")),
    ];
    for (name, value) in &expected {
        assert_eq!(&image[name], value, "{name} in {image:#}");
    }
    for name in ["created_at", "updated_at"] {
        let stamp = image[name].as_str().unwrap_or("");
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { 'D' } else { c })
            .collect();
        assert_eq!(shape, "DDDD-DD-DDTDD:DD:DDZ", "{name} = {stamp:?}");
    }
    assert_eq!(glance.show(&id), image, "show returns what create returned");

    // An empty body is an image with every default.
    let bare = glance.create(json!({}));
    assert_eq!(bare["name"], Value::Null);
    assert_eq!(bare["disk_format"], Value::Null);
    assert_eq!(bare["tags"], json!([]));
    assert_ne!(bare["id"], image["id"]);
}

#[test]
fn create_keeps_a_client_chosen_id_and_refuses_it_again_with_409() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let chosen = "6F0E8A9C-7D3B-4F1E-9A2C-1B2C3D4E5F60";
    let id = chosen.to_ascii_lowercase();
    let image = glance.create(json!({"id": chosen, "name": "chosen"}));
    assert_eq!(image["id"], json!(id), "the id is kept, in lowercase");
    assert_eq!(glance.show(&id)["name"], "chosen");
    // The id the client chose names the image in any case: lookups canonicalise the UUID as
    // create does.
    let response = glance.request(
        "GET",
        &format!("/v2/images/{chosen}"),
        &[("Accept", JSON)],
        None,
    );
    glance.expect(&response, 200, "show by the uppercase id the client chose");

    for body in [json!({"id": id}), json!({"id": chosen, "name": "again"})] {
        let response = glance.send_json("POST", "/v2/images", JSON, body.to_string().as_bytes());
        glance.expect_error(
            &response,
            409,
            &format!("Image with identifier {id} already exists!"),
            &format!("create {body}"),
        );
    }
    // A deleted image's id stays taken, as in Glance.
    glance.expect(&glance.delete(&id), 204, "delete");
    let response = glance.send_json(
        "POST",
        "/v2/images",
        JSON,
        json!({"id": id}).to_string().as_bytes(),
    );
    glance.expect(&response, 409, "create with the id of a deleted image");

    for bad in [
        json!("42"),
        json!(42),
        json!(null),
        json!("6f0e8a9c7d3b4f1e9a2c1b2c3d4e5f6"),
    ] {
        let response = glance.send_json(
            "POST",
            "/v2/images",
            JSON,
            json!({"id": bad}).to_string().as_bytes(),
        );
        glance.expect_error(
            &response,
            400,
            "UUID pattern",
            &format!("create with id {bad}"),
        );
    }
}

/// Everything a create refuses, and that a refused create creates nothing.
#[test]
fn create_refuses_read_only_reserved_mistyped_non_json_and_oversized_bodies() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let object = |name: &str, value: Value| json!({ name: value }).to_string();
    let mut cases: Vec<(String, String, &str, u16, String)> = Vec::new();
    // Read-only attributes: 403.
    for name in [
        "status",
        "checksum",
        "size",
        "virtual_size",
        "os_hash_algo",
        "os_hash_value",
        "created_at",
        "updated_at",
        "self",
        "file",
        "schema",
        "direct_url",
        "stores",
    ] {
        cases.push((
            format!("read-only {name}"),
            object(name, json!("x")),
            JSON,
            403,
            format!("Attribute '{name}' is read-only."),
        ));
    }
    // Reserved attributes and the os_glance prefix: 403.
    for name in [
        "deleted",
        "deleted_at",
        "location",
        "locations",
        "os_glance_x",
        "os_glance_import_task",
    ] {
        cases.push((
            format!("reserved {name}"),
            object(name, json!("x")),
            JSON,
            403,
            format!("Attribute '{name}' is reserved."),
        ));
    }
    // Values of the wrong type or out of their enum: 400.
    let mistyped = [
        ("name", json!(5), "is not of type 'string'"),
        ("name", json!("n".repeat(256)), "longer than 255"),
        ("visibility", json!("everyone"), "is not one of"),
        ("visibility", json!(null), "is not one of"),
        ("protected", json!("yes"), "is not of type 'boolean'"),
        ("os_hidden", json!(1), "is not of type 'boolean'"),
        ("min_ram", json!(-1), "whole number"),
        ("min_disk", json!("1"), "is not of type 'integer'"),
        ("min_ram", json!(1.5), "is not of type 'integer'"),
        ("disk_format", json!("floppy"), "is not one of"),
        ("container_format", json!("box"), "is not one of"),
        ("tags", json!("a"), "is not of type 'array'"),
        ("tags", json!([1]), "is not of type 'string'"),
        (
            "tags",
            json!([""]),
            "Tags must be 1 to 255 characters long.",
        ),
        ("hw_arch", json!(64), "is not of type 'string'"),
        ("hw_arch", json!(null), "is not of type 'string'"),
        ("hw_arch", json!(["x"]), "is not of type 'string'"),
    ];
    for (name, value, fragment) in mistyped {
        cases.push((
            format!("{name} = {value}"),
            object(name, value),
            JSON,
            400,
            fragment.to_string(),
        ));
    }
    for (name, body, fragment) in [
        ("an array", "[]", "must be a JSON object"),
        ("a string", "\"x\"", "must be a JSON object"),
        ("malformed JSON", "{\"name\": ", "Malformed JSON"),
        ("an empty body", "", "Malformed JSON"),
    ] {
        cases.push((
            name.to_string(),
            body.to_string(),
            JSON,
            400,
            fragment.to_string(),
        ));
    }
    // Not JSON at all: 415.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ] {
        cases.push((
            format!("Content-Type {content_type}"),
            "{}".to_string(),
            content_type,
            415,
            "send application/json".to_string(),
        ));
    }
    // The 1 MiB limit of a JSON body: just over it is 413.
    let oversized = format!(
        "{{\"name\": \"x\", \"big\": \"{}\"}}",
        "y".repeat(1024 * 1024)
    );
    cases.push((
        "a body over 1 MiB".to_string(),
        oversized,
        JSON,
        413,
        "larger than 1048576 bytes".to_string(),
    ));

    for (name, body, content_type, status, fragment) in &cases {
        let response = glance.send_json("POST", "/v2/images", content_type, body.as_bytes());
        glance.expect_error(&response, *status, fragment, &format!("create with {name}"));
    }
    let response = glance.request(
        "POST",
        "/v2/images",
        &[("Accept", JSON)],
        Some((Framing::Length, b"{}")),
    );
    glance.expect_error(
        &response,
        415,
        "send application/json",
        "create without Content-Type",
    );
    // Just under the limit is fine (and the custom property's 65535-byte limit is its own 400).
    let response = glance.send_json(
        "POST",
        "/v2/images",
        JSON,
        json!({"big": "y".repeat(65_536)}).to_string().as_bytes(),
    );
    glance.expect_error(
        &response,
        400,
        "longer than 65535 bytes",
        "a 65536-byte property",
    );
    let big = glance.create(json!({"big": "y".repeat(65_535)}));

    let listed = glance.list("visibility=all");
    assert_eq!(
        listed["images"].as_array().map(Vec::len),
        Some(1),
        "only the last create made an image: {listed:#}"
    );
    assert_eq!(listed["images"][0]["id"], big["id"]);
}

/// Every route that names an image answers 404 for an unknown id and for one that is not a UUID.
#[test]
fn unknown_and_non_uuid_image_ids_are_404_on_every_route() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let unknown = "0b4f6a52-6fd6-4e5a-9a4e-4ff8a7a2e4a1";
    for id in [
        unknown,
        "not-a-uuid",
        "1",
        "0b4f6a52-6fd6-4e5a-9a4e-4ff8a7a2e4a1x",
    ] {
        // (method, path, Content-Type and body)
        type Route<'a> = (&'a str, String, Option<(&'a str, &'a [u8])>);
        let routes: Vec<Route> = vec![
            ("GET", format!("/v2/images/{id}"), None),
            ("HEAD", format!("/v2/images/{id}"), None),
            (
                "PATCH",
                format!("/v2/images/{id}"),
                Some((PATCH_V21, b"[]" as &[u8])),
            ),
            ("DELETE", format!("/v2/images/{id}"), None),
            ("GET", format!("/v2/images/{id}/file"), None),
            (
                "PUT",
                format!("/v2/images/{id}/file"),
                Some(("application/octet-stream", b"data" as &[u8])),
            ),
            ("PUT", format!("/v2/images/{id}/tags/t"), None),
            ("DELETE", format!("/v2/images/{id}/tags/t"), None),
        ];
        for (method, path, body) in routes {
            let response = match body {
                Some((content_type, bytes)) => glance.send_json(method, &path, content_type, bytes),
                None => glance.request(method, &path, &[("Accept", JSON)], None),
            };
            glance.expect(&response, 404, &format!("{method} {path}"));
            if method != "HEAD" {
                glance.expect_error(
                    &response,
                    404,
                    &format!("No image found with ID {id}"),
                    &format!("{method} {path}"),
                );
            }
        }
    }
}

/// Error bodies are Glance's (webob's): HTML, JSON `{"message", "code", "title"}` or plain text
/// as webob negotiates them with `Accept` (HTML first on a tie), and always with a Content-Type.
#[test]
fn error_bodies_are_negotiated_as_webob_does() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = glance.create_uploadable("errors");
    glance.upload_ok(&id, b"0123456789");
    let unknown = "/v2/images/0b4f6a52-6fd6-4e5a-9a4e-4ff8a7a2e4a1";
    // (method, path, headers, body, status, title)
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        Option<&'a [u8]>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/v2/images?limit=x".into(),
            vec![],
            None,
            400,
            "Bad Request",
        ),
        (
            "POST",
            "/v2/images".into(),
            vec![("Content-Type", JSON)],
            Some(br#"{"status":"active"}"#),
            403,
            "Forbidden",
        ),
        ("GET", unknown.into(), vec![], None, 404, "Not Found"),
        ("GET", "/v3/images".into(), vec![], None, 404, "Not Found"),
        (
            "POST",
            format!("/v2/images/{id}"),
            vec![],
            Some(b""),
            405,
            "Method Not Allowed",
        ),
        (
            "PUT",
            format!("/v2/images/{id}/file"),
            vec![("Content-Type", "application/octet-stream")],
            Some(b"x"),
            409,
            "Conflict",
        ),
        (
            "PATCH",
            format!("/v2/images/{id}"),
            vec![("Content-Type", JSON)],
            Some(b"[]"),
            415,
            "Unsupported Media Type",
        ),
        (
            "GET",
            format!("/v2/images/{id}/file"),
            vec![("Range", "bytes=50-")],
            None,
            416,
            "Request Range Not Satisfiable",
        ),
    ];
    // (Accept, the Content-Type webob answers it with)
    let negotiation = [
        (Some("application/json"), JSON),
        (Some("*/*"), "text/html; charset=UTF-8"),
        (
            Some("application/json, text/plain, */*"),
            "text/html; charset=UTF-8",
        ),
        (Some("text/html"), "text/html; charset=UTF-8"),
        (Some("text/html;q=0.5, application/json;q=0.9"), JSON),
        (Some("text/plain"), "text/plain; charset=UTF-8"),
        (Some("*/*;q=0"), "text/plain; charset=UTF-8"),
        (None, "text/plain; charset=UTF-8"),
    ];
    for (method, path, headers, body, status, title) in &cases {
        for (accept, expected_type) in negotiation {
            let mut all = headers.clone();
            if let Some(accept) = accept {
                all.push(("Accept", accept));
            }
            let what = format!("{method} {path} with Accept {accept:?}");
            let response = glance.request(method, path, &all, body.map(|b| (Framing::Length, b)));
            glance.expect(&response, *status, &what);
            let content_type = response
                .header("content-type")
                .unwrap_or_else(|| panic!("{what}: no Content-Type: {response:?}"));
            assert_eq!(content_type, expected_type, "{what}");
            let text = response.text();
            let code = format!("{status} {title}");
            if expected_type == JSON {
                // Python's json.dumps of webob's dict: its key order and separators.
                assert!(text.starts_with("{\"message\": \""), "{what}: {text}");
                let body: Value = serde_json::from_slice(&response.body).expect("JSON error body");
                assert_eq!(body["code"], json!(code), "{what}: {body}");
                assert_eq!(body["title"], json!(title), "{what}: {body}");
                assert!(
                    body["message"].as_str().is_some_and(
                        |m| m.len() > "<br /><br />\n".len() && m.contains("<br /><br />\n")
                    ),
                    "{what}: {body}"
                );
                assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{what}: {body}");
            } else if expected_type.starts_with("text/html") {
                // The 405 template has no empty detail and comment lines.
                let end = if *status == 405 {
                    "<br /><br />\n\n </body>\n</html>"
                } else {
                    "<br /><br />\n\n\n\n </body>\n</html>"
                };
                assert!(
                    text.starts_with(&format!(
                        "<html>\n <head>\n  <title>{code}</title>\n </head>\n <body>\n  \
                         <h1>{code}</h1>\n  "
                    )) && text.ends_with(end),
                    "{what}: {text}"
                );
            } else {
                assert!(
                    text.starts_with(&format!("{code}\n\n")) && !text.contains('<'),
                    "{what}: {text}"
                );
            }
        }
    }
    let response = glance.request(
        "POST",
        &format!("/v2/images/{id}"),
        &[],
        Some((Framing::Length, b"")),
    );
    assert_eq!(response.header("allow"), Some("GET, HEAD, PATCH, DELETE"));
}

/// What the clients make of an error, as Glance's users see it: openstacksdk
/// (`Accept: application/json`, keystoneauth's default) shows the JSON `message`, and with
/// `application/json, text/plain, */*` the HTML page's text; glanceclient (requests'
/// `Accept: */*`) shows the HTML page's text; openstacksdk's uploads send an empty `Accept`
/// and get plain text, from which it shows only the reason, as with Glance.
#[test]
fn clients_find_the_message_in_the_error_body() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = "0b4f6a52-6fd6-4e5a-9a4e-4ff8a7a2e4a1";
    let path = format!("/v2/images/{id}");
    let message = format!("No image found with ID {id}");
    let get = |accept: &str| glance.request("GET", &path, &[("Accept", accept)], None);

    let sdk = get("application/json");
    glance.expect(&sdk, 404, "openstacksdk's Accept");
    assert_eq!(
        client_details(&sdk),
        format!("{message}<br /><br />\n\n\n"),
        "openstacksdk's details from {}",
        sdk.text()
    );
    for accept in ["*/*", "application/json, text/plain, */*"] {
        let html = get(accept);
        glance.expect(&html, 404, accept);
        assert_eq!(
            client_details(&html),
            format!("404 Not Found: {message}"),
            "details with Accept {accept:?} from {}",
            html.text()
        );
    }
    let upload = get("");
    glance.expect(&upload, 404, "an empty Accept");
    assert_eq!(
        upload.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    assert_eq!(upload.text(), format!("404 Not Found\n\n{message}\n\n   "));
}

/// The details openstacksdk's `raise_from_response` (openstack/exceptions.py) and glanceclient's
/// `from_response` (glanceclient/exc.py) put in their exception: from JSON, the `message` of the
/// nested objects or else of the top object (openstacksdk; glanceclient reads nested ones only);
/// from HTML, each line stripped and without its `<...>` tags, empty and repeated lines left
/// out, joined by ": " (both clients); nothing from plain text (openstacksdk then shows the
/// reason phrase).
fn client_details(response: &Response) -> String {
    let content_type = response.header("content-type").unwrap_or_default();
    if content_type.contains("application/json") {
        let content: Value = serde_json::from_slice(&response.body).expect("JSON error body");
        let object = content.as_object().expect("a JSON object");
        let nested: Vec<&str> = object
            .values()
            .filter_map(|value| value["message"].as_str())
            .collect();
        if nested.is_empty() {
            content["message"].as_str().unwrap_or_default().to_string()
        } else {
            nested.join("\n")
        }
    } else if content_type.contains("text/html") {
        let mut lines: Vec<String> = Vec::new();
        for line in response.text().lines() {
            let mut text = String::new();
            let mut rest = line.trim();
            // re.sub(r'<.+?>', '', ...)
            while let Some(start) = rest.find('<') {
                match rest[start + 1..].get(1..).and_then(|after| after.find('>')) {
                    Some(end) => {
                        text.push_str(&rest[..start]);
                        rest = &rest[start + 1 + 1 + end + 1..];
                    }
                    None => break,
                }
            }
            text.push_str(rest);
            if !text.is_empty() && !lines.contains(&text) {
                lines.push(text);
            }
        }
        lines.join(": ")
    } else {
        String::new()
    }
}

#[test]
fn minor_versions_in_the_path_are_served_and_unknown_ones_are_404() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    glance.create(json!({"name": "versioned"}));
    for version in ["v2", "v2.0", "v2.1", "v2.9", "v2.17"] {
        let list = glance.list_path(&format!("/{version}/images"));
        assert_eq!(names(&list), ["versioned"], "/{version}/images");
        glance.get_json(&format!("/{version}/schemas/image"), 200);
    }
    for version in ["v2.99", "v2.18", "v2.x", "v2.", "v3", "v1", "v2.-1", "v20"] {
        let response = glance.request(
            "GET",
            &format!("/{version}/images"),
            &[("Accept", JSON)],
            None,
        );
        glance.expect(&response, 404, &format!("GET /{version}/images"));
    }
}

/// The version list is built from the config as Glance's `versions.py` builds it: the cache
/// API (flavor `cachemanagement`) adds v2.16, v2.15 and v2.14, which `glance cache-list` needs;
/// one store lists v2.9 alone of v2.8 to v2.13. A SIGHUP that turns the cache API on changes
/// both the list and the minor versions accepted in paths.
#[test]
fn versions_are_listed_from_the_config_as_glance_lists_them() {
    let server = Server::start("");
    let listed = |server: &Server| -> Vec<(String, String)> {
        let response = util::get(server.addr(), "/versions").unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        let document: Value = serde_json::from_slice(&response.body).unwrap();
        document["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let id = v["id"].as_str().unwrap().to_string();
                (id, v["status"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let expect = |minors: &[u32]| -> Vec<(String, String)> {
        minors
            .iter()
            .map(|minor| {
                let status = if *minor == 17 { "CURRENT" } else { "SUPPORTED" };
                (format!("v2.{minor}"), status.to_string())
            })
            .collect()
    };
    assert_eq!(
        listed(&server),
        expect(&[15, 9, 17, 7, 6, 5, 4, 3, 2, 1, 0])
    );
    for (path, status) in [
        ("/v2.14/images", 404),
        ("/v2.16/images", 404),
        ("/v2.12/images", 404),
    ] {
        assert_eq!(
            util::get(server.addr(), path).unwrap().status,
            status,
            "{path}"
        );
    }

    server.write_config("[paste_deploy]\nflavor = cachemanagement\n");
    server.reload_succeeds();
    assert_eq!(
        listed(&server),
        expect(&[16, 15, 14, 9, 17, 7, 6, 5, 4, 3, 2, 1, 0])
    );
    for path in ["/v2.14/cache", "/v2.16/cache", "/v2.14/images"] {
        let response = util::get(server.addr(), path).unwrap();
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    assert_eq!(
        util::get(server.addr(), "/v2.12/images").unwrap().status,
        404
    );
}

#[test]
fn schemas_are_served_as_json_documents() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    for (path, name) in [
        ("/v2/schemas/image", "image"),
        ("/v2/schemas/images", "images"),
        ("/v2/schemas/metadefs/namespace", "namespace"),
        (
            "/v2/schemas/metadefs/resource_type",
            "resource_type_association",
        ),
    ] {
        let schema = glance.get_json(path, 200);
        assert_eq!(schema["name"], json!(name), "{path}");
        assert!(schema["properties"].is_object(), "{path}: {schema}");
    }
    let image = &glance.image_schema;
    assert_eq!(image["additionalProperties"], json!({"type": "string"}));
    assert_eq!(
        image["properties"]["name"]["type"],
        json!(["null", "string"])
    );
    assert_eq!(
        image["properties"]["visibility"]["enum"],
        json!(["community", "public", "private", "shared"])
    );
    assert_eq!(
        glance.images_schema["properties"]["images"]["items"],
        *image
    );
    for path in [
        "/v2/schemas/unknown",
        "/v2/schemas/metadefs",
        "/v2/schemas/image/x",
    ] {
        let response = glance.request("GET", path, &[("Accept", JSON)], None);
        glance.expect(&response, 404, path);
    }
}

/// Each filter, alone and combined, selects exactly the images it should; the default list
/// leaves out community and hidden images.
#[test]
fn list_filters_select_exactly_the_matching_images() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    // name: (create fields, bytes of data to upload)
    let images: [(&str, Value, usize); 6] = [
        (
            "a",
            json!({"visibility": "public", "tags": ["x", "y"], "protected": true, "owner": "o1", "hw_arch": "x86_64"}),
            0,
        ),
        (
            "b",
            json!({"visibility": "private", "tags": ["x"], "owner": "o2"}),
            100,
        ),
        ("c", json!({"visibility": "community", "tags": ["x"]}), 0),
        ("d", json!({"os_hidden": true, "hw_arch": "x86_64"}), 0),
        ("e", json!({"hw_arch": "aarch64", "owner": "o1"}), 1000),
        ("f", json!({"name": "a", "tags": ["y"]}), 0),
    ];
    for (name, fields, size) in &images {
        let mut fields = fields.clone();
        fields["disk_format"] = json!("raw");
        fields["container_format"] = json!("bare");
        if fields.get("name").is_none() {
            fields["name"] = json!(name);
        }
        fields["label"] = json!(name);
        let id = glance.create(fields)["id"].as_str().unwrap().to_string();
        if *size > 0 {
            glance.upload_ok(&id, &data(*size, 1));
        }
    }
    // The query and the labels of the images it lists, in the default order (newest first).
    let cases: &[(&str, &[&str])] = &[
        ("", &["f", "e", "b", "a"]),
        ("name=a", &["f", "a"]),
        ("name=nothing", &[]),
        ("status=active", &["e", "b"]),
        ("status=queued", &["f", "a"]),
        ("status=saving", &[]),
        // Glance's other statuses are valid filters that glint never matches.
        ("status=killed", &[]),
        ("status=deleted", &[]),
        ("status=deactivated", &[]),
        ("status=pending_delete", &[]),
        ("status=uploading", &[]),
        ("status=importing", &[]),
        ("visibility=public", &["a"]),
        ("visibility=private", &["b"]),
        ("visibility=shared", &["f", "e"]),
        ("visibility=community", &["c"]),
        ("visibility=all", &["f", "e", "c", "b", "a"]),
        ("visibility=all&os_hidden=true", &["d"]),
        ("owner=o1", &["e", "a"]),
        ("owner=o3", &[]),
        ("tag=x", &["b", "a"]),
        ("tag=x&tag=y", &["a"]),
        ("tag=y", &["f", "a"]),
        ("tag=z", &[]),
        ("protected=true", &["a"]),
        ("protected=false", &["f", "e", "b"]),
        ("os_hidden=true", &["d"]),
        ("os_hidden=false", &["f", "e", "b", "a"]),
        ("size_min=100", &["e", "b"]),
        ("size_min=101", &["e"]),
        ("size_max=100", &["b"]),
        ("size_max=99", &[]),
        ("size_min=100&size_max=1000", &["e", "b"]),
        ("size_min=0", &["e", "b"]),
        ("hw_arch=x86_64", &["a"]),
        ("hw_arch=x86_64&os_hidden=true", &["d"]),
        ("hw_arch=aarch64&owner=o1", &["e"]),
        ("label=c&visibility=community", &["c"]),
        ("name=a&tag=y&visibility=public", &["a"]),
        ("unknown_property=x", &[]),
    ];
    let mut failures = Vec::new();
    for (query, expected) in cases {
        let list = glance.list(query);
        let labels: Vec<&str> = list["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|image| image["label"].as_str().unwrap_or("?"))
            .collect();
        if labels != *expected {
            failures.push(format!("?{query}: expected {expected:?}, got {labels:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "filters that listed the wrong images:\n{}",
        failures.join("\n")
    );
}

/// Sorting by `sort_key`/`sort_dir` (repeated) and by `sort=key:dir,...`, with Glance's
/// tie-breaker (created_at descending).
#[test]
fn list_sorts_by_repeated_sort_keys_and_by_the_sort_parameter() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    for (name, min_ram) in [("b", 2), ("a", 1), ("c", 1), ("d", 3)] {
        glance.create(json!({"name": name, "min_ram": min_ram}));
    }
    let cases: &[(&str, &[&str])] = &[
        ("", &["d", "c", "a", "b"]),
        ("sort_dir=asc", &["b", "a", "c", "d"]),
        ("sort_key=name", &["d", "c", "b", "a"]),
        ("sort_key=name&sort_dir=asc", &["a", "b", "c", "d"]),
        ("sort_key=min_ram&sort_dir=asc", &["c", "a", "b", "d"]),
        (
            "sort_key=min_ram&sort_key=name&sort_dir=asc&sort_dir=asc",
            &["a", "c", "b", "d"],
        ),
        (
            "sort_key=min_ram&sort_key=name&sort_dir=asc&sort_dir=desc",
            &["c", "a", "b", "d"],
        ),
        (
            "sort_key=min_ram&sort_key=name&sort_dir=desc",
            &["d", "b", "c", "a"],
        ),
        ("sort_key=created_at&sort_dir=asc", &["b", "a", "c", "d"]),
        ("sort=name:asc", &["a", "b", "c", "d"]),
        ("sort=name", &["d", "c", "b", "a"]),
        ("sort=min_ram:asc,name:desc", &["c", "a", "b", "d"]),
        ("sort=min_ram,name:asc", &["d", "b", "a", "c"]),
        ("sort=min_ram:asc&sort=name:asc", &["a", "c", "b", "d"]),
    ];
    for (query, expected) in cases {
        assert_eq!(names(&glance.list(query)), *expected, "?{query}");
    }
}

/// Pages are `limit_param_default` long by default and at most `api_limit_max`; following
/// `next` walks every image exactly once; `first` repeats the query.
#[test]
fn list_pages_follow_next_links_over_every_image_exactly_once() {
    let server = Server::start("limit_param_default = 3\napi_limit_max = 5");
    let glance = Glance::new(&server);
    let mut created = Vec::new();
    for index in 0..12 {
        created.push(glance.create(json!({"name": format!("img-{index:02}")}))["id"].clone());
    }
    let newest_first: Vec<String> = (0..12).rev().map(|i| format!("img-{i:02}")).collect();

    let page = glance.list("");
    assert_eq!(names(&page), newest_first[..3], "the default limit");
    assert_eq!(page["first"], "/v2/images");
    assert_eq!(page["schema"], "/v2/schemas/images");
    assert_eq!(
        page["next"],
        json!(format!(
            "/v2/images?marker={}",
            created[9].as_str().unwrap()
        ))
    );
    assert_eq!(
        names(&glance.list("limit=100")).len(),
        5,
        "api_limit_max caps limit"
    );
    let empty = glance.list("limit=0");
    assert_eq!(names(&empty), Vec::<String>::new());
    assert!(
        empty.get("next").is_none(),
        "no next after an empty page: {empty}"
    );

    // (query, expected page sizes, the order of names)
    let ascending: Vec<String> = (0..12).map(|i| format!("img-{i:02}")).collect();
    let walks: [(&str, &[usize], &[String]); 4] = [
        ("", &[3, 3, 3, 3, 0], &newest_first),
        (
            "limit=4&sort_key=name&sort_dir=asc",
            &[4, 4, 4, 0],
            &ascending,
        ),
        ("limit=100", &[5, 5, 2], &newest_first),
        ("limit=5&name=img-03", &[1], &newest_first[8..9]),
    ];
    let walk = |query: &str, sizes: &[usize], order: &[String]| {
        let first = if query.is_empty() {
            "/v2/images".to_string()
        } else {
            format!("/v2/images?{query}")
        };
        let mut path = first.clone();
        let mut seen = Vec::new();
        let mut page_sizes = Vec::new();
        for _ in 0..20 {
            let page = glance.list_path(&path);
            assert_eq!(page["first"], json!(first), "first of {path}");
            page_sizes.push(page["images"].as_array().unwrap().len());
            seen.extend(names(&page));
            match page["next"].as_str() {
                Some(next) => {
                    assert!(next.starts_with("/v2/images?"), "next of {path}: {next}");
                    path = next.to_string();
                }
                None => break,
            }
        }
        assert_eq!(page_sizes, sizes, "page sizes walking ?{query}");
        assert_eq!(seen, order, "images seen walking ?{query}");
    };
    for (query, sizes, order) in walks {
        walk(query, sizes, order);
    }
    // A filter value that needs encoding survives the round trip through `next`.
    let special = "a b&c=d/é".to_string();
    glance.create(json!({"name": special}));
    glance.create(json!({"name": special}));
    walk(
        "name=a+b%26c%3Dd%2F%C3%A9&limit=1",
        &[1, 1, 0],
        &[special.clone(), special],
    );
}

#[test]
fn list_refuses_bad_parameters_with_400() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    glance.create(json!({"name": "one"}));
    let cases = [
        ("limit=-1", "limit param must be positive"),
        ("limit=x", "limit param must be an integer"),
        ("limit=", "limit param must be an integer"),
        ("sort_key=bogus", "Invalid sort key: bogus"),
        ("sort_key=checksum", "Invalid sort key: checksum"),
        ("sort_dir=up", "Invalid sort direction: up"),
        (
            "sort_key=name&sort_dir=sideways",
            "Invalid sort direction: sideways",
        ),
        ("sort=name:sideways", "Invalid sort direction: sideways"),
        ("sort=bogus:asc", "Invalid sort key: bogus"),
        ("sort=name&sort_key=name", "cannot be combined"),
        ("sort=name&sort_dir=asc", "cannot be combined"),
        (
            "sort_key=name&sort_key=id&sort_dir=asc&sort_dir=desc&sort_dir=asc",
            "does not match",
        ),
        ("marker=0b4f6a52-6fd6-4e5a-9a4e-4ff8a7a2e4a1", "marker"),
        ("marker=not-a-uuid", "marker"),
        ("status=happy", "Invalid status value: happy"),
        ("status=Active", "Invalid status value: Active"),
        (
            "status=pending-delete",
            "Invalid status value: pending-delete",
        ),
        ("status=", "Invalid status value: "),
        ("visibility=everyone", "Invalid visibility value: everyone"),
        (
            "protected=yes",
            "Invalid value 'yes' for 'protected' filter",
        ),
        ("os_hidden=1", "Invalid value '1' for 'os_hidden' filter"),
        ("size_min=-3", "Invalid value for size_min"),
        ("size_max=big", "Invalid value for size_max"),
    ];
    for (query, fragment) in cases {
        let response = glance.request(
            "GET",
            &format!("/v2/images?{query}"),
            &[("Accept", JSON)],
            None,
        );
        glance.expect_error(&response, 400, fragment, &format!("GET /v2/images?{query}"));
    }
}

/// A status word in the database that this binary does not know (written by a newer release or
/// by hand) answers 500 where the image would be read, with an error log line naming the word;
/// the other images are served as before and no child dies.
#[test]
fn an_unknown_status_in_the_database_is_a_500_with_the_word_in_the_log() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let children = server.children(None);
    let odd = glance.create(json!({"name": "odd"}))["id"]
        .as_str()
        .expect("id")
        .to_string();
    let fine = glance.create(json!({"name": "fine"}))["id"]
        .as_str()
        .expect("id")
        .to_string();
    rusqlite::Connection::open(server.path("glint.sqlite"))
        .and_then(|database| {
            database.execute(
                "UPDATE images SET status = 'frozen' WHERE id = ?1",
                [odd.as_str()],
            )
        })
        .expect("write an unknown status");

    for path in [format!("/v2/images/{odd}"), "/v2/images".to_string()] {
        let response = glance.request("GET", &path, &[("Accept", JSON)], None);
        glance.expect_error(&response, 500, "The server has either erred", &path);
        assert!(
            !glance.message(&response).contains("frozen"),
            "{path}: internals leaked to the client"
        );
    }
    server.wait_for_log("unknown image status \"frozen\"", DEADLINE);
    assert!(
        server
            .log()
            .lines()
            .any(|line| line.contains("internal error") && line.contains("\"frozen\"")),
        "the 500 is logged with its cause\n{}",
        server.log()
    );

    assert_eq!(glance.status_of(&fine), "queued");
    assert_eq!(names(&glance.list("status=queued")), ["fine"]);
    let response = glance.request("GET", "/v2/images?status=frozen", &[("Accept", JSON)], None);
    glance.expect_error(
        &response,
        400,
        "Invalid status value: frozen",
        "filter by the word",
    );
    assert_eq!(
        server.children(None),
        children,
        "no child died\n{}",
        server.log()
    );
}

/// PATCH in both dialects: add, replace and remove on base attributes and custom properties,
/// and the tag list replaced.
#[test]
fn patch_adds_replaces_and_removes_in_both_dialects() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = glance.create(json!({"name": "before", "hw_arch": "x86_64", "tags": ["old"]}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    // (media type, operations, attributes expected afterwards)
    type Step<'a> = (&'a str, Value, Vec<(&'a str, Value)>);
    let steps: Vec<Step> = vec![
        (
            PATCH_V21,
            json!([
                {"op": "replace", "path": "/name", "value": "after"},
                {"op": "add", "path": "/min_ram", "value": 512},
                {"op": "add", "path": "/hw_arch", "value": "aarch64"},
                {"op": "add", "path": "/os_distro", "value": "cirros"},
                {"op": "replace", "path": "/tags", "value": ["t2", "t1", "t1"]},
                {"op": "replace", "path": "/disk_format", "value": "qcow2"},
                {"op": "replace", "path": "/visibility", "value": "public"},
                {"op": "add", "path": "/a~1b~0c", "value": "escaped"},
            ]),
            vec![
                ("name", json!("after")),
                ("min_ram", json!(512)),
                ("hw_arch", json!("aarch64")),
                ("os_distro", json!("cirros")),
                ("tags", json!(["t1", "t2"])),
                ("disk_format", json!("qcow2")),
                ("visibility", json!("public")),
                ("a/b~c", json!("escaped")),
            ],
        ),
        (
            PATCH_V21,
            json!([
                {"op": "remove", "path": "/hw_arch"},
                {"op": "replace", "path": "/os_distro", "value": "fedora"},
                {"op": "replace", "path": "/name", "value": null},
                {"op": "replace", "path": "/tags", "value": []},
            ]),
            vec![
                ("hw_arch", Value::Null),
                ("os_distro", json!("fedora")),
                ("name", Value::Null),
                ("tags", json!([])),
            ],
        ),
        (
            PATCH_V20,
            json!([
                {"add": "/hw_arch", "value": "riscv64"},
                {"replace": "/name", "value": "v2.0"},
                {"remove": "/os_distro"},
                {"replace": "/protected", "value": true},
            ]),
            vec![
                ("hw_arch", json!("riscv64")),
                ("name", json!("v2.0")),
                ("os_distro", Value::Null),
                ("protected", json!(true)),
            ],
        ),
        (
            "application/openstack-images-v2.1-json-patch; charset=UTF-8",
            json!([{"op": "replace", "path": "/protected", "value": false}]),
            vec![("protected", json!(false))],
        ),
        (PATCH_V21, json!([]), vec![("name", json!("v2.0"))]),
    ];
    for (media_type, operations, expected) in steps {
        let what = format!("PATCH ({media_type}) {operations}");
        let response = glance.patch(&id, media_type, &operations);
        let image = glance.image(&response, 200, &what);
        for (name, value) in expected {
            // An absent custom property is shown as null here.
            assert_eq!(
                image.get(name).cloned().unwrap_or(Value::Null),
                value,
                "{name} after {what}: {image:#}"
            );
        }
        assert_eq!(glance.show(&id), image, "show after {what}");
    }
}

/// Every refused patch answers its status, and changes nothing, even when operations before the
/// refused one were valid.
#[test]
fn refused_patches_change_nothing() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = glance.create(json!({"name": "kept", "hw_arch": "x86_64"}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = glance.show(&id);
    let rename = json!({"op": "replace", "path": "/name", "value": "changed"});
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "read-only status",
            PATCH_V21,
            json!([rename, {"op": "replace", "path": "/status", "value": "active"}]),
            403,
            "Attribute 'status' is read-only.",
        ),
        (
            "read-only checksum",
            PATCH_V21,
            json!([{"op": "add", "path": "/checksum", "value": "x"}]),
            403,
            "read-only",
        ),
        (
            "read-only size",
            PATCH_V21,
            json!([{"op": "replace", "path": "/size", "value": 5}]),
            403,
            "read-only",
        ),
        (
            "remove id",
            PATCH_V21,
            json!([{"op": "remove", "path": "/id"}]),
            403,
            "read-only",
        ),
        (
            "reserved deleted",
            PATCH_V21,
            json!([{"op": "add", "path": "/deleted", "value": "x"}]),
            403,
            "Attribute 'deleted' is reserved.",
        ),
        (
            "reserved location",
            PATCH_V21,
            json!([{"op": "add", "path": "/location", "value": "file:///etc/passwd"}]),
            403,
            "reserved",
        ),
        (
            "reserved prefix",
            PATCH_V21,
            json!([{"op": "add", "path": "/os_glance_x", "value": "x"}]),
            403,
            "reserved",
        ),
        (
            "remove a base attribute",
            PATCH_V21,
            json!([rename, {"op": "remove", "path": "/name"}]),
            403,
            "Property name may not be removed.",
        ),
        (
            "remove an absent property",
            PATCH_V21,
            json!([rename, {"op": "remove", "path": "/absent"}]),
            409,
            "Property absent does not exist.",
        ),
        (
            "replace an absent property",
            PATCH_V21,
            json!([rename, {"op": "replace", "path": "/absent", "value": "x"}]),
            409,
            "does not exist",
        ),
        (
            "v2.0 add of a present property",
            PATCH_V20,
            json!([{"replace": "/name", "value": "changed"}, {"add": "/hw_arch", "value": "x"}]),
            409,
            "Property hw_arch already present.",
        ),
        (
            "v2.0 add of a base attribute",
            PATCH_V20,
            json!([{"add": "/name", "value": "x"}]),
            409,
            "already present",
        ),
        (
            "a number for a property",
            PATCH_V21,
            json!([rename, {"op": "add", "path": "/hw_arch", "value": 5}]),
            400,
            "is not of type 'string'",
        ),
        (
            "an unknown visibility",
            PATCH_V21,
            json!([rename, {"op": "replace", "path": "/visibility", "value": "everyone"}]),
            400,
            "is not one of",
        ),
        (
            "a negative min_ram",
            PATCH_V21,
            json!([{"op": "replace", "path": "/min_ram", "value": -1}]),
            400,
            "whole number",
        ),
        (
            "a string for tags",
            PATCH_V21,
            json!([{"op": "replace", "path": "/tags", "value": "t"}]),
            400,
            "is not of type 'array'",
        ),
        (
            "an unknown op",
            PATCH_V21,
            json!([{"op": "move", "path": "/name", "value": "x"}]),
            400,
            "Invalid operation",
        ),
        (
            "no op",
            PATCH_V21,
            json!([{"path": "/name", "value": "x"}]),
            400,
            "Unable to find 'op'",
        ),
        (
            "no path",
            PATCH_V21,
            json!([{"op": "add", "value": "x"}]),
            400,
            "Unable to find 'path'",
        ),
        (
            "no value",
            PATCH_V21,
            json!([{"op": "add", "path": "/name"}]),
            400,
            "requires a member named \"value\"",
        ),
        (
            "a nested path",
            PATCH_V21,
            json!([{"op": "add", "path": "/a/b", "value": "x"}]),
            400,
            "Invalid JSON pointer",
        ),
        (
            "a relative path",
            PATCH_V21,
            json!([{"op": "add", "path": "name", "value": "x"}]),
            400,
            "Invalid JSON pointer",
        ),
        (
            "a bad escape",
            PATCH_V21,
            json!([{"op": "add", "path": "/a~2", "value": "x"}]),
            400,
            "Invalid JSON pointer",
        ),
        (
            "an object",
            PATCH_V21,
            json!({"op": "add", "path": "/name", "value": "x"}),
            400,
            "JSON array",
        ),
        (
            "a string operation",
            PATCH_V21,
            json!(["add"]),
            400,
            "must be JSON objects",
        ),
        (
            "v2.0 with two ops",
            PATCH_V20,
            json!([{"add": "/x", "replace": "/y", "value": "z"}]),
            400,
            "exactly one of",
        ),
        (
            "v2.0 with the v2.1 form",
            PATCH_V20,
            json!([{"op": "add", "path": "/x", "value": "z"}]),
            400,
            "exactly one of",
        ),
    ];
    for (name, media_type, operations, status, fragment) in &cases {
        let response = glance.patch(&id, media_type, operations);
        glance.expect_error(
            &response,
            *status,
            fragment,
            &format!("patch with {name}: {operations}"),
        );
        assert_eq!(
            glance.show(&id),
            before,
            "the image after a patch with {name}"
        );
    }
    let malformed = glance.send_json("PATCH", &format!("/v2/images/{id}"), PATCH_V21, b"[{");
    glance.expect_error(&malformed, 400, "Malformed JSON", "malformed patch");
    // Other media types: 415 naming the two that work.
    for media_type in [
        Some(JSON),
        Some("application/json-patch+json"),
        Some("text/plain"),
        None,
    ] {
        let mut headers = vec![("Accept", JSON)];
        if let Some(media_type) = media_type {
            headers.push(("Content-Type", media_type));
        }
        let body = json!([rename]).to_string();
        let response = glance.request(
            "PATCH",
            &format!("/v2/images/{id}"),
            &headers,
            Some((Framing::Length, body.as_bytes())),
        );
        glance.expect(
            &response,
            415,
            &format!("PATCH with Content-Type {media_type:?}"),
        );
        assert_eq!(
            response.header("accept-patch"),
            Some("application/openstack-images-v2.1-json-patch, application/openstack-images-v2.0-json-patch"),
            "Accept-Patch with Content-Type {media_type:?}"
        );
    }
    assert_eq!(
        glance.show(&id),
        before,
        "the image after every refused patch"
    );
}

#[test]
fn delete_removes_the_record_and_the_data_file_and_refuses_protected_images() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let id = glance.create_uploadable("doomed");
    let bytes = data(70_000, 2);
    glance.upload_ok(&id, &bytes);
    assert_eq!(
        fs::read(datadir.join(&id)).ok(),
        Some(bytes),
        "the data file"
    );
    let queued = glance.create_uploadable("never uploaded");

    let response = glance.patch(
        &id,
        PATCH_V21,
        &json!([{"op": "replace", "path": "/protected", "value": true}]),
    );
    glance.image(&response, 200, "protect");
    let response = glance.delete(&id);
    glance.expect_error(
        &response,
        403,
        &format!("Image {id} is protected and cannot be deleted."),
        "delete a protected image",
    );
    assert_eq!(glance.show(&id)["status"], "active");
    assert_files(&server, &datadir, &[&id], "after the refused delete");

    let response = glance.patch(
        &id,
        PATCH_V21,
        &json!([{"op": "replace", "path": "/protected", "value": false}]),
    );
    glance.image(&response, 200, "unprotect");
    glance.expect(&glance.delete(&id), 204, "delete");
    assert_files(&server, &datadir, &[], "after the delete");
    let response = glance.request(
        "GET",
        &format!("/v2/images/{id}"),
        &[("Accept", JSON)],
        None,
    );
    glance.expect(&response, 404, "show after delete");
    glance.expect(&glance.download(&id, None), 404, "download after delete");
    glance.expect(&glance.delete(&id), 404, "second delete");
    assert!(names(&glance.list("visibility=all"))
        .iter()
        .all(|name| name != "doomed"));

    glance.expect(
        &glance.delete(&queued),
        204,
        "delete of an image without data",
    );
    assert_eq!(names(&glance.list("visibility=all")), Vec::<String>::new());
}

#[test]
fn tags_are_added_and_removed_one_at_a_time() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = glance.create(json!({"name": "tagged", "tags": ["b"]}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tag = |method: &str, encoded: &str| {
        glance.request(
            method,
            &format!("/v2/images/{id}/tags/{encoded}"),
            &[("Accept", JSON)],
            None,
        )
    };
    for (method, encoded, status, tags_after) in [
        ("PUT", "a", 204, json!(["a", "b"])),
        ("PUT", "a", 204, json!(["a", "b"])),
        ("PUT", "with%20space", 204, json!(["a", "b", "with space"])),
        (
            "PUT",
            "caf%C3%A9",
            204,
            json!(["a", "b", "café", "with space"]),
        ),
        ("DELETE", "b", 204, json!(["a", "café", "with space"])),
        ("DELETE", "with%20space", 204, json!(["a", "café"])),
        ("DELETE", "absent", 404, json!(["a", "café"])),
        ("DELETE", "b", 404, json!(["a", "café"])),
        ("PUT", "a%2Fb", 204, json!(["a", "a/b", "café"])),
        ("PUT", "100%25", 204, json!(["100%", "a", "a/b", "café"])),
        ("DELETE", "a%2Fb", 204, json!(["100%", "a", "café"])),
        ("DELETE", "100%25", 204, json!(["a", "café"])),
        ("PUT", "%FF", 400, json!(["a", "café"])),
        ("PUT", &"t".repeat(256), 400, json!(["a", "café"])),
        (
            "PUT",
            &"t".repeat(255),
            204,
            json!(["a", "café", "t".repeat(255)]),
        ),
    ] {
        let response = tag(method, encoded);
        glance.expect(&response, status, &format!("{method} tag {encoded}"));
        assert_eq!(
            glance.show(&id)["tags"],
            tags_after,
            "tags after {method} {encoded}"
        );
    }
    let response = tag("DELETE", "absent");
    glance.expect_error(
        &response,
        404,
        "Tag absent not found.",
        "delete an absent tag",
    );
    assert_eq!(
        names(&glance.list("tag=with%20space")),
        Vec::<String>::new()
    );
    assert_eq!(names(&glance.list("tag=caf%C3%A9")), ["tagged"]);
    let response = tag("GET", "a");
    glance.expect(&response, 405, "GET of a tag");
    assert_eq!(response.header("allow"), Some("PUT, DELETE"));
}

// ---------------------------------------------------------------------------------------------
// 2. Image data: uploads, downloads, ranges, refusals, caps, hashes, abandoned uploads.
// ---------------------------------------------------------------------------------------------

/// Asserts that image `id` is active with `bytes` as its data: size, checksum and hash in the
/// record, the data file, and a whole download with its headers.
fn assert_active_with(
    glance: &Glance<'_>,
    id: &str,
    bytes: &[u8],
    hash_algo: &str,
    hash: &str,
    what: &str,
) {
    let image = glance.show(id);
    assert_eq!(image["status"], "active", "{what}: {image:#}");
    assert_eq!(image["size"], json!(bytes.len()), "{what}: size");
    assert_eq!(image["checksum"], json!(md5_hex(bytes)), "{what}: checksum");
    assert_eq!(
        image["os_hash_algo"],
        json!(hash_algo),
        "{what}: os_hash_algo"
    );
    assert_eq!(image["os_hash_value"], json!(hash), "{what}: os_hash_value");
    let response = glance.download(id, None);
    glance.expect(&response, 200, &format!("{what}: download"));
    assert_eq!(
        response.header("content-type"),
        Some("application/octet-stream"),
        "{what}"
    );
    assert_eq!(
        response.header("content-length"),
        Some(bytes.len().to_string().as_str()),
        "{what}"
    );
    assert_eq!(
        response.header("content-md5"),
        Some(md5_hex(bytes).as_str()),
        "{what}"
    );
    assert!(
        response.body == bytes,
        "{what}: the downloaded bytes differ from the uploaded ones"
    );
}

/// Content-Length and chunked, each with and without `x-openstack-image-size`: the image goes
/// from queued to active with the size and hashes of what was sent, and the data file is in
/// place with mode 0640 and no temporary file beside it.
#[test]
fn upload_in_every_framing_makes_the_image_active_with_its_size_and_hashes() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let mut ids = Vec::new();
    for (index, (framing, declare)) in [
        (Framing::Length, false),
        (Framing::Length, true),
        (Framing::Chunked, false),
        (Framing::Chunked, true),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{framing:?} upload, size declared: {declare}");
        let id = glance.create_uploadable(&what);
        assert_eq!(glance.status_of(&id), "queued");
        // Sizes around the server's 64 KiB chunk, and one that is not a multiple of anything.
        let bytes = data([65_536, 65_537, 300_001, 1][index], index as u64);
        let declared = declare.then_some(bytes.len() as u64);
        let response = glance.upload(&id, &bytes, framing, declared);
        glance.expect(&response, 204, &what);
        assert_active_with(&glance, &id, &bytes, "sha512", &sha512_hex(&bytes), &what);
        let path = datadir.join(&id);
        assert!(
            fs::read(&path).ok() == Some(bytes.clone()),
            "{what}: the data file {}",
            path.display()
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{what}: mode of the data file");
        ids.push(id);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_files(&server, &datadir, &ids, "after the uploads");
    // An empty image is an image too.
    let id = glance.create_uploadable("empty");
    glance.upload_ok(&id, b"");
    assert_active_with(
        &glance,
        &id,
        b"",
        "sha512",
        &sha512_hex(b""),
        "empty upload",
    );
}

#[test]
fn download_answers_ranges_with_206_and_bad_ranges_with_416() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = glance.create_uploadable("ranged");
    let bytes = data(100_000, 3);
    let size = bytes.len();
    glance.upload_ok(&id, &bytes);
    // (Range, first, last)
    let ranges = [
        ("bytes=0-99".to_string(), 0, 99),
        ("bytes=0-0".to_string(), 0, 0),
        (format!("bytes={}-", size - 10), size - 10, size - 1),
        ("bytes=-25".to_string(), size - 25, size - 1),
        (format!("bytes=-{}", size * 2), 0, size - 1),
        ("bytes=5-".to_string(), 5, size - 1),
        (format!("bytes=50000-{}", size * 3), 50_000, size - 1),
        (
            format!("bytes={}-{}", size - 1, size - 1),
            size - 1,
            size - 1,
        ),
    ];
    for (range, first, last) in &ranges {
        let response = glance.download(&id, Some(range));
        glance.expect(&response, 206, range);
        assert_eq!(
            response.header("content-range"),
            Some(format!("bytes {first}-{last}/{size}").as_str()),
            "{range}"
        );
        assert_eq!(
            response.header("content-length"),
            Some((last - first + 1).to_string().as_str()),
            "{range}"
        );
        assert!(
            response.body == bytes[*first..=*last],
            "{range}: wrong bytes"
        );
    }
    let bad = [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 10),
        "bytes=5-2".to_string(),
        "bytes=-0".to_string(),
        "bytes=0-1,3-4".to_string(),
        "bytes=0-1, 5-6".to_string(),
        "items=0-1".to_string(),
        "bytes=a-b".to_string(),
        "bytes=-".to_string(),
        "bytes=".to_string(),
    ];
    for range in &bad {
        let response = glance.download(&id, Some(range));
        glance.expect(&response, 416, range);
        assert_eq!(
            response.header("content-range"),
            Some(format!("bytes */{size}").as_str()),
            "{range}"
        );
    }
    // An image without data answers 204, with or without a Range.
    let queued = glance.create_uploadable("queued");
    for range in [None, Some("bytes=0-1")] {
        let response = glance.download(&queued, range);
        glance.expect(
            &response,
            204,
            &format!("download of a queued image, Range {range:?}"),
        );
        assert!(response.body.is_empty());
    }
}

/// Uploads the API refuses, and that each refusal leaves the image queued and no file behind.
#[test]
fn refused_uploads_leave_the_image_queued_and_no_file() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let bytes = data(100_000, 4);
    let id = glance.create_uploadable("refused");

    let no_formats = glance.create(json!({"name": "no formats", "disk_format": "raw"}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = glance.upload(&no_formats, &bytes, Framing::Length, None);
    glance.expect_error(
        &response,
        400,
        "Properties disk_format, container_format must be set prior to saving data.",
        "upload without container_format",
    );
    assert_eq!(glance.status_of(&no_formats), "queued");

    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let mut headers = vec![("Accept", JSON)];
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        let response = glance.request(
            "PUT",
            &format!("/v2/images/{id}/file"),
            &headers,
            Some((Framing::Length, &bytes)),
        );
        glance.expect_error(
            &response,
            415,
            "application/octet-stream",
            &format!("upload as {content_type:?}"),
        );
    }
    let response = glance.request(
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[
            ("Content-Type", "application/octet-stream"),
            ("x-openstack-image-size", "ten"),
            ("Accept", JSON),
        ],
        Some((Framing::Length, &bytes)),
    );
    glance.expect_error(
        &response,
        400,
        "Invalid x-openstack-image-size",
        "a size that is not a number",
    );

    // The declared size differs from what arrives: 400, and the image is queued again.
    let size = bytes.len() as u64;
    for (framing, declared) in [
        (Framing::Length, 10),
        (Framing::Length, size + 1),
        (Framing::Length, size - 1),
        (Framing::Chunked, 10),
        (Framing::Chunked, size + 1000),
    ] {
        let what = format!("{framing:?} upload of {size} bytes declared as {declared}");
        let response = glance.upload(&id, &bytes, framing, Some(declared));
        glance.expect_error(
            &response,
            400,
            "Provided image size must match the stored image size.",
            &what,
        );
        assert_eq!(glance.status_of(&id), "queued", "{what}");
        assert_files(&server, &datadir, &[], &what);
    }
    assert_eq!(glance.show(&id)["size"], Value::Null);

    glance.upload_ok(&id, &bytes);
    for framing in [Framing::Length, Framing::Chunked] {
        let response = glance.upload(&id, b"other", framing, None);
        glance.expect_error(
            &response,
            409,
            "Image status transition from active to saving is not allowed",
            "upload to an active image",
        );
    }
    assert_active_with(
        &glance,
        &id,
        &bytes,
        "sha512",
        &sha512_hex(&bytes),
        "after the refused re-uploads",
    );
    assert_files(&server, &datadir, &[&id], "after all refusals");
}

/// `image_size_cap`: at the cap is fine; over it is 413 whether the size was declared (refused
/// before any byte is stored) or only discovered while the data arrived.
#[test]
fn uploads_over_image_size_cap_are_413_declared_or_not() {
    let server = Server::start("image_size_cap = 1000");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let id = glance.create_uploadable("capped");
    for (framing, size, declared) in [
        (Framing::Length, 1001, None),
        (Framing::Length, 100_000, None),
        (Framing::Chunked, 1001, None),
        (Framing::Chunked, 100_000, None),
        (Framing::Chunked, 1001, Some(1001)),
        (Framing::Length, 500, Some(2000)),
    ] {
        let what = format!("{framing:?} upload of {size} bytes declared as {declared:?}");
        let response = glance.upload(&id, &data(size, 5), framing, declared);
        glance.expect_error(&response, 413, "image_size_cap", &what);
        assert_eq!(glance.status_of(&id), "queued", "{what}");
        assert_files(&server, &datadir, &[], &what);
    }
    let exactly = data(1000, 6);
    let response = glance.upload(&id, &exactly, Framing::Chunked, None);
    glance.expect(&response, 204, "an upload of exactly image_size_cap bytes");
    assert_active_with(
        &glance,
        &id,
        &exactly,
        "sha512",
        &sha512_hex(&exactly),
        "at the cap",
    );
}

#[test]
fn hashing_algorithm_sha256_gives_sha256_hashes() {
    let server = Server::start("hashing_algorithm = sha256");
    let glance = Glance::new(&server);
    let id = glance.create_uploadable("sha256");
    let bytes = data(123_456, 7);
    glance.upload_ok(&id, &bytes);
    assert_active_with(
        &glance,
        &id,
        &bytes,
        "sha256",
        &hex(&Sha256::digest(&bytes)),
        "sha256",
    );
}

/// Every `hashing_algorithm`, checked against coreutils (code that shares nothing with glint's
/// hashing), with either implementation of the digests (`src/digest/`): an upload of several
/// upload buffers and a short last one, sent with a length and chunked, gets the `checksum`
/// `md5sum` computes and the `os_hash_value` that `sha256sum`, `sha384sum` or `sha512sum`
/// computes. OpenSSL's libcrypto is loaded by a child at its first upload (an idle child maps
/// none of it); where it cannot be loaded (`GLINT_FAULT_LIBCRYPTO` names a missing file), the
/// built-in code gives the same digests and the child says once which package to install.
#[test]
fn every_hashing_algorithm_equals_coreutils_with_libcrypto_and_without() {
    // 3 MiB and a bit: twelve 256 KiB upload buffers and a short last one, and socket reads
    // that stop anywhere inside a buffer.
    let bytes = data(3 * 1024 * 1024 + 12_345, 13);
    let scratch = tempfile::tempdir().expect("temporary directory");
    let file = scratch.path().join("image.raw");
    fs::write(&file, &bytes).expect("write the image for coreutils");
    let digest_of = |tool: &str| {
        let output = Command::new(tool)
            .arg(&file)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {tool} ({error}): install coreutils"));
        assert!(output.status.success(), "{tool} failed: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let maps_libcrypto = |pid: i32| {
        fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_else(|error| panic!("read /proc/{pid}/maps: {error}"))
            .contains("/libcrypto.so")
    };
    const MISSING: &str = "cannot load libcrypto.so.3 (libcrypto-missing.so.3:";
    let md5 = digest_of("md5sum");
    assert_eq!(md5.len(), 32, "md5sum's digest: {md5:?}");
    for algorithm in ["sha256", "sha384", "sha512"] {
        let expected = digest_of(&format!("{algorithm}sum"));
        for libcrypto in [true, false] {
            let extra = format!("workers = 1\nhashing_algorithm = {algorithm}");
            let server = if libcrypto {
                Server::start(&extra)
            } else {
                Server::start_env(
                    &extra,
                    &[("GLINT_FAULT_LIBCRYPTO", "libcrypto-missing.so.3")],
                )
            };
            let serving = server.children(Some("serving"));
            assert_eq!(serving.len(), 1, "one serving child: {serving:?}");
            let child = serving[0];
            assert!(
                !maps_libcrypto(child),
                "child {child} maps libcrypto before any upload"
            );
            let glance = Glance::new(&server);
            for framing in [Framing::Length, Framing::Chunked] {
                let what = format!(
                    "{framing:?} upload with hashing_algorithm = {algorithm}, libcrypto {}",
                    if libcrypto { "loaded" } else { "missing" }
                );
                let id = glance.create_uploadable(algorithm);
                let response = glance.upload(&id, &bytes, framing, None);
                glance.expect(&response, 204, &what);
                let image = glance.show(&id);
                assert_eq!(image["status"], "active", "{what}");
                assert_eq!(
                    image["checksum"],
                    json!(md5),
                    "{what}: checksum against md5sum"
                );
                assert_eq!(image["os_hash_algo"], json!(algorithm), "{what}");
                assert_eq!(
                    image["os_hash_value"],
                    json!(expected),
                    "{what}: os_hash_value against {algorithm}sum"
                );
            }
            assert_eq!(
                server.children(Some("serving")),
                [child],
                "the same child served"
            );
            assert_eq!(
                maps_libcrypto(child),
                libcrypto,
                "child {child} after the uploads"
            );
            let log = server.log();
            assert_eq!(
                log.matches(MISSING).count(),
                usize::from(!libcrypto),
                "the warning about a missing libcrypto, once per child without it: {log}"
            );
            if libcrypto {
                // Neither a failed load of another kind nor a refused algorithm.
                assert!(!log.contains("cannot load libcrypto"), "{log}");
                assert!(!log.contains("libcrypto.so.3 cannot compute"), "{log}");
            } else {
                assert!(log.contains("apt-get install libssl3"), "{log}");
            }
        }
    }
}

/// Polls until image `id` has `status` and `dir` holds exactly `files`, or panics with both.
fn wait_for_image(
    glance: &Glance<'_>,
    id: &str,
    status: &str,
    dir: &Path,
    files: &[&str],
    what: &str,
) {
    let mut expected: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    expected.sort();
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let actual_status = glance.status_of(id);
        let actual_files = files_in(dir);
        if actual_status == status && actual_files == expected {
            return;
        }
        if std::time::Instant::now() >= end {
            panic!(
                "{what}: timed out waiting for image {id} to be {status} with files {expected:?} in {}: \
                 it is {actual_status} with {actual_files:?}\n--- log ---\n{}",
                dir.display(),
                glance.server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `dir` holds an upload's temporary file for `id`, and returns its name.
fn wait_for_temporary_file(server: &Server, dir: &Path, id: &str) -> String {
    let prefix = format!(".{id}.");
    let mut name = None;
    util::wait_until(
        &format!("a temporary file for {id} in {}", dir.display()),
        DEADLINE,
        || {
            name = files_in(dir)
                .into_iter()
                .find(|n| n.starts_with(&prefix) && n.ends_with(".tmp"));
            name.is_some()
        },
    );
    let name = name.unwrap_or_else(|| panic!("no temporary file\n{}", server.log()));
    name
}

/// Starts `PUT /v2/images/{id}/file` on a new connection and sends `first` of the body (framed
/// as `framing`, `total` bytes in all when it is Length); returns the connection.
fn start_upload(
    server: &Server,
    id: &str,
    framing: Framing,
    total: usize,
    first: &[u8],
) -> TcpStream {
    let mut stream = server.connect();
    let framing_header = match framing {
        Framing::Length => format!("Content-Length: {total}"),
        Framing::Chunked => "Transfer-Encoding: chunked".to_string(),
    };
    let head = format!(
        "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\nAccept: application/json\r\n\
         Content-Type: application/octet-stream\r\n{framing_header}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    send_piece(&mut stream, framing, first);
    stream
}

/// Sends one piece of an upload body (one chunk when chunked).
fn send_piece(stream: &mut TcpStream, framing: Framing, piece: &[u8]) {
    match framing {
        Framing::Length => stream.write_all(piece).unwrap(),
        Framing::Chunked => {
            let mut encoded = format!("{:x}\r\n", piece.len()).into_bytes();
            encoded.extend_from_slice(piece);
            encoded.extend_from_slice(b"\r\n");
            stream.write_all(&encoded).unwrap();
        }
    }
}

/// A client that goes away in the middle of an upload: the image is queued again and its
/// temporary file removed, whichever the framing.
#[test]
fn client_disconnecting_mid_upload_leaves_the_image_queued_and_no_file() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let bytes = data(1024 * 1024, 8);
    for framing in [Framing::Length, Framing::Chunked] {
        let id = glance.create_uploadable(&format!("abandoned {framing:?}"));
        let stream = start_upload(&server, &id, framing, bytes.len(), &bytes[..256 * 1024]);
        wait_for_temporary_file(&server, &datadir, &id);
        assert_eq!(
            glance.status_of(&id),
            "saving",
            "{framing:?}: during the upload"
        );
        drop(stream);
        wait_for_image(
            &glance,
            &id,
            "queued",
            &datadir,
            &[],
            &format!("{framing:?} upload abandoned"),
        );
        // The image takes data again.
        glance.upload_ok(&id, &bytes);
        assert_files(
            &server,
            &datadir,
            &[&id],
            &format!("{framing:?}: after the retry"),
        );
        glance.expect(&glance.delete(&id), 204, "delete");
    }
}

/// The image is deleted while its data is arriving: the upload ends with 410 and neither the
/// data nor the temporary file stays.
#[test]
fn image_deleted_during_its_upload_answers_410_and_leaves_no_file() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let bytes = data(512 * 1024, 9);
    let id = glance.create_uploadable("deleted while uploading");
    let (first, second) = bytes.split_at(bytes.len() / 2);
    let mut stream = start_upload(&server, &id, Framing::Chunked, bytes.len(), first);
    wait_for_temporary_file(&server, &datadir, &id);
    glance.expect(&glance.delete(&id), 204, "delete during the upload");
    send_piece(&mut stream, Framing::Chunked, second);
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader, "PUT")
        .unwrap_or_else(|error| panic!("the upload's response: {error}\n{}", server.log()))
        .unwrap_or_else(|| panic!("no response to the upload\n{}", server.log()));
    glance.expect_error(
        &response,
        410,
        "may have been deleted during the upload",
        "the upload's end",
    );
    assert_files(
        &server,
        &datadir,
        &[],
        "after the upload of a deleted image",
    );
    let response = glance.request(
        "GET",
        &format!("/v2/images/{id}"),
        &[("Accept", JSON)],
        None,
    );
    glance.expect(&response, 404, "show after all");
}

// ---------------------------------------------------------------------------------------------
// 3. Transfers across reloads, data directories changed at reload, crashes, a removed datadir.
// ---------------------------------------------------------------------------------------------

/// The harness's base config with `glance_store` lines in place of its one data directory.
fn config_with_datadirs(extra: &str, glance_store: &str) -> String {
    let base = util::base_config(extra);
    assert!(base.contains("filesystem_store_datadir = images\n"));
    base.replace("filesystem_store_datadir = images\n", glance_store)
}

/// Reads a response head, leaving the body in `reader`: the status and the headers.
fn read_head(reader: &mut BufReader<TcpStream>, what: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .unwrap_or_else(|error| panic!("{what}: reading the head: {error}"));
        assert!(n > 0, "{what}: EOF in the response head after {lines:?}");
        if line == "\r\n" {
            break;
        }
        lines.push(line.trim_end().to_string());
    }
    let status = lines
        .first()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status line in {lines:?}"));
    let headers = lines[1..]
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers)
}

/// A 20 MiB upload and a 20 MiB download, each moved in pieces with a SIGHUP between pieces:
/// the children holding them drain meanwhile, and both transfers complete intact.
#[test]
fn upload_and_download_in_flight_complete_across_several_reloads() {
    const SIZE: usize = 20 * 1024 * 1024;
    const PIECES: usize = 4;
    let piece = SIZE / PIECES;
    // Without handoff, so the draining child's `Connection: close` is part of what is checked.
    let server = Server::start("workers = 2\nreload_handoff = false");
    let glance = Glance::new(&server);
    let stored = data(SIZE, 10);
    let arriving = data(SIZE, 11);
    let stored_id = glance.create_uploadable("stored before the reloads");
    glance.upload_ok(&stored_id, &stored);
    let arriving_id = glance.create_uploadable("uploaded across the reloads");

    let mut upload = start_upload(
        &server,
        &arriving_id,
        Framing::Length,
        SIZE,
        &arriving[..piece],
    );
    let mut download = server.connect();
    download
        .write_all(
            format!("GET /v2/images/{stored_id}/file HTTP/1.1\r\nHost: glint\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(download);
    let (status, headers) = read_head(&mut reader, "the download");
    assert_eq!(status, 200, "{headers:?}\n{}", server.log());
    assert!(
        headers.contains(&("content-length".to_string(), SIZE.to_string())),
        "{headers:?}"
    );
    let mut received = vec![0u8; SIZE];
    reader.read_exact(&mut received[..piece]).unwrap();

    for index in 1..PIECES {
        let verdict = server.reload();
        assert_eq!(
            verdict["outcome"],
            "succeeded",
            "reload {index}: {verdict}\n{}",
            server.log()
        );
        let status = server.status();
        assert!(
            status["draining"].as_array().is_some_and(|d| !d.is_empty()),
            "reload {index}: the children holding the transfers should be draining: {status:#}"
        );
        send_piece(
            &mut upload,
            Framing::Length,
            &arriving[index * piece..(index + 1) * piece],
        );
        reader
            .read_exact(&mut received[index * piece..(index + 1) * piece])
            .unwrap_or_else(|error| panic!("download piece {index}: {error}\n{}", server.log()));
    }
    let mut upload_reader = BufReader::new(upload);
    let response = read_response(&mut upload_reader, "PUT")
        .unwrap_or_else(|error| panic!("the upload's response: {error}\n{}", server.log()))
        .unwrap_or_else(|| panic!("no response to the upload\n{}", server.log()));
    glance.expect(&response, 204, "the upload that spanned the reloads");
    assert!(
        response.closes(),
        "a draining child closes after the response: {response:?}"
    );
    assert!(
        received == stored,
        "the download that spanned the reloads differs from the image"
    );
    assert!(
        util::peer_closed(reader.get_mut(), DEADLINE),
        "the download's connection is closed after it"
    );

    assert_active_with(
        &glance,
        &arriving_id,
        &arriving,
        "sha512",
        &sha512_hex(&arriving),
        "uploaded across reloads",
    );
    assert_active_with(
        &glance,
        &stored_id,
        &stored,
        "sha512",
        &sha512_hex(&stored),
        "stored before the reloads",
    );
    server.wait_for(
        "the old generations to finish draining",
        DEADLINE,
        |status| status["draining"].as_array().is_some_and(|d| d.is_empty()),
    );
    assert_eq!(server.status()["generation"], json!(PIECES));
}

/// A reload that adds a data directory with a higher priority: new uploads go there, images
/// stored before stay readable where they are.
#[test]
fn datadir_added_at_reload_with_a_higher_priority_takes_new_uploads() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let (images, other) = (server.path("images"), server.path("other"));
    let before = data(50_000, 12);
    let before_id = glance.create_uploadable("before");
    glance.upload_ok(&before_id, &before);

    server.write_config_text(&config_with_datadirs(
        "",
        "filesystem_store_datadirs = other:100\nfilesystem_store_datadirs = images:0\n",
    ));
    server.reload_succeeds();

    let mut after_ids = Vec::new();
    for (framing, declared) in [
        (Framing::Length, None),
        (Framing::Chunked, None),
        (Framing::Chunked, Some(60_000)),
    ] {
        let what = format!("{framing:?} upload after the reload");
        let bytes = data(60_000, 13);
        let id = glance.create_uploadable(&what);
        let response = glance.upload(&id, &bytes, framing, declared);
        glance.expect(&response, 204, &what);
        assert!(
            fs::read(other.join(&id)).ok() == Some(bytes.clone()),
            "{what}: not in {}",
            other.display()
        );
        assert_active_with(&glance, &id, &bytes, "sha512", &sha512_hex(&bytes), &what);
        after_ids.push(id);
    }
    assert_files(&server, &images, &[&before_id], "the old data directory");
    let after: Vec<&str> = after_ids.iter().map(String::as_str).collect();
    assert_files(&server, &other, &after, "the new data directory");
    assert_active_with(
        &glance,
        &before_id,
        &before,
        "sha512",
        &sha512_hex(&before),
        "stored before the reload",
    );
}

/// kill -9 of the child receiving an upload: the child that replaces it finds the image in
/// `saving` under a dead uploader and queues it again, and removes the temporary file.
#[test]
fn killed_uploading_child_leaves_the_image_queued_and_no_temporary_file() {
    let server = Server::start("workers = 1");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let children = server.children(Some("serving"));
    assert_eq!(children.len(), 1, "{}", server.log());
    let uploader = children[0];
    let bytes = data(4 * 1024 * 1024, 14);
    let id = glance.create_uploadable("crashed upload");
    let _stream = start_upload(
        &server,
        &id,
        Framing::Length,
        bytes.len(),
        &bytes[..1024 * 1024],
    );
    let temporary = wait_for_temporary_file(&server, &datadir, &id);
    assert!(
        temporary.starts_with(&format!(".{id}.{uploader}-")),
        "the temporary file {temporary} is not owned by child {uploader}"
    );
    assert_eq!(glance.status_of(&id), "saving");

    // SAFETY: kill(2) on a child of the server this test started.
    unsafe {
        libc::kill(uploader, libc::SIGKILL);
    }
    server.wait_for("a replacement child", DEADLINE, |status| {
        let serving: Vec<i64> = status["children"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter(|c| c["state"] == "serving")
                    .filter_map(|c| c["pid"].as_i64())
                    .collect()
            })
            .unwrap_or_default();
        serving.len() == 1 && serving[0] != i64::from(uploader)
    });
    wait_for_image(
        &glance,
        &id,
        "queued",
        &datadir,
        &[],
        "after the uploader was killed",
    );
    // Each line is written just after the repair it reports (by the new child's maintenance
    // thread, beside its first requests), so it is waited for.
    for line in [
        format!("image {id} was left in saving by a process that died; it is queued again"),
        format!("{temporary}, left by an upload whose process died"),
    ] {
        server.wait_for_log(&line, DEADLINE);
    }
    glance.upload_ok(&id, &bytes);
    assert_active_with(
        &glance,
        &id,
        &bytes,
        "sha512",
        &sha512_hex(&bytes),
        "the upload retried",
    );
}

/// The data directory disappears under a running server: uploads fail with 500 (the log names
/// the directory), downloads of images whose file is gone fail with 500 (the log names the
/// image and the file), and the server keeps serving; recreating the directory heals uploads.
#[test]
fn datadir_removed_at_runtime_fails_uploads_and_reports_missing_data() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let stored = data(10_000, 15);
    let stored_id = glance.create_uploadable("stored");
    glance.upload_ok(&stored_id, &stored);
    let waiting_id = glance.create_uploadable("waiting");
    fs::remove_dir_all(&datadir).unwrap();

    for framing in [Framing::Length, Framing::Chunked] {
        let response = glance.upload(&waiting_id, b"some data", framing, None);
        // An Internal error: the client gets Glance's generic message, the operator the cause.
        glance.expect_error(
            &response,
            500,
            "The server has either erred",
            &format!("{framing:?} upload into a removed datadir"),
        );
        assert_eq!(glance.status_of(&waiting_id), "queued", "{framing:?}");
    }
    let datadir_text = datadir.display().to_string();
    server.wait_for_log(
        &format!("cannot read the free space of data directory {datadir_text}"),
        DEADLINE,
    );

    let response = glance.download(&stored_id, None);
    glance.expect_error(
        &response,
        500,
        "The server has either erred",
        "download of an image whose file is gone",
    );
    server.wait_for_log(
        &format!("the data of active image {stored_id} is missing at {datadir_text}/{stored_id}; restore the file or delete the image"),
        DEADLINE,
    );
    assert_eq!(glance.status_of(&stored_id), "active");
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
    assert_eq!(names(&glance.list("")).len(), 2);

    fs::create_dir(&datadir).unwrap();
    let bytes = data(5_000, 16);
    glance.upload_ok(&waiting_id, &bytes);
    assert_active_with(
        &glance,
        &waiting_id,
        &bytes,
        "sha512",
        &sha512_hex(&bytes),
        "after the datadir came back",
    );
    glance.expect(
        &glance.delete(&stored_id),
        204,
        "delete of the image whose file is gone",
    );
    assert_files(&server, &datadir, &[&waiting_id], "the recreated datadir");
}

// ---------------------------------------------------------------------------------------------
// 4. A genuinely full filesystem.
// ---------------------------------------------------------------------------------------------

/// A small tmpfs, unmounted on drop (also when the test fails).
struct SmallFilesystem {
    /// The filesystem itself (unmounted when dropped).
    _tmpfs: util::Tmpfs,
    mount_point: PathBuf,
}

impl SmallFilesystem {
    fn mount(size: &str) -> SmallFilesystem {
        let tmpfs = util::Tmpfs::mount(size);
        SmallFilesystem {
            mount_point: tmpfs.mount_point.clone(),
            _tmpfs: tmpfs,
        }
    }
}

impl SmallFilesystem {
    /// A server whose only data directory is this filesystem.
    fn server(&self) -> Server {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("glint-api.conf");
        fs::write(
            &config_path,
            config_with_datadirs(
                "",
                &format!(
                    "filesystem_store_datadir = {}\n",
                    self.mount_point.display()
                ),
            ),
        )
        .unwrap();
        Server::start_with(dir, config_path, &[])
    }
}

/// A 4 MiB filesystem as the datadir: an 8 MiB upload is 413 whether its size is known up front
/// (no room anywhere) or found out by ENOSPC; the image is queued again, nothing is left on the
/// filesystem, and a smaller upload then succeeds.
#[test]
fn full_filesystem_answers_413_and_leaves_nothing_behind() {
    let small = SmallFilesystem::mount("4m");
    let server = small.server();
    let glance = Glance::new(&server);
    let datadir = &small.mount_point;
    let big = data(8 * 1024 * 1024, 17);
    let id = glance.create_uploadable("too big for the disk");
    for (framing, declared) in [
        (Framing::Length, None),
        (Framing::Chunked, Some(big.len() as u64)),
        (Framing::Chunked, None),
    ] {
        let what =
            format!("{framing:?} upload of 8 MiB declared as {declared:?} to a 4 MiB filesystem");
        let response = glance.upload(&id, &big, framing, declared);
        glance.expect_error(&response, 413, "Image storage media is full", &what);
        assert_eq!(glance.status_of(&id), "queued", "{what}");
        assert_files(&server, datadir, &[], &what);
    }
    assert_eq!(
        util::get(server.addr(), "/healthcheck").unwrap().status,
        200
    );
    let fits = data(1024 * 1024, 18);
    glance.upload_ok(&id, &fits);
    assert_active_with(
        &glance,
        &id,
        &fits,
        "sha512",
        &sha512_hex(&fits),
        "an upload that fits",
    );
    assert_files(&server, datadir, &[&id], "after the upload that fits");
    drop(server);
}

/// A data directory made read-only at runtime (a real read-only remount): uploads fail with
/// 500 and a log line naming the path and the error, the image goes back to queued, existing
/// images stay downloadable, and once the directory is writable again uploads work without a
/// restart.
#[test]
fn read_only_datadir_fails_uploads_and_recovers_when_writable_again() {
    let small = SmallFilesystem::mount("16m");
    let server = small.server();
    let glance = Glance::new(&server);
    let stored = data(256 * 1024, 21);
    let existing = glance.create_uploadable("stored before");
    glance.upload_ok(&existing, &stored);

    let remount = |mode: &str| {
        Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&small.mount_point)
            .output()
    };
    match remount("ro") {
        Ok(output) if output.status.success() => {}
        other => panic!("cannot remount the data directory read-only (run as root): {other:?}"),
    }
    let id = glance.create_uploadable("refused while read-only");
    let bytes = data(64 * 1024, 22);
    let response = glance.upload(&id, &bytes, Framing::Length, None);
    glance.expect(&response, 500, "an upload to a read-only data directory");
    assert_eq!(glance.status_of(&id), "queued");
    server.wait_for_log("Read-only file system", DEADLINE);
    let download = util::get(server.addr(), &format!("/v2/images/{existing}/file")).unwrap();
    assert!(
        download.status == 200 && download.body == stored,
        "an existing image stays readable: {}",
        download.status
    );

    let output = remount("rw").expect("remount rw");
    assert!(output.status.success(), "{output:?}");
    glance.upload_ok(&id, &bytes);
    assert_active_with(
        &glance,
        &id,
        &bytes,
        "sha512",
        &sha512_hex(&bytes),
        "an upload once the directory is writable again",
    );
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 5. Probes of Glance behaviours beyond the basics.
// ---------------------------------------------------------------------------------------------

/// Glance also filters on `disk_format`, `container_format`, `checksum`, `os_hash_value` and
/// `id`.
#[test]
fn list_filters_on_formats_checksum_hash_and_id() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let raw =
        glance.create(json!({"name": "raw", "disk_format": "raw", "container_format": "bare"}));
    let qcow2 =
        glance.create(json!({"name": "qcow2", "disk_format": "qcow2", "container_format": "ovf"}));
    let raw_id = raw["id"].as_str().unwrap().to_string();
    let bytes = data(1000, 19);
    glance.upload_ok(&raw_id, &bytes);
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("disk_format=qcow2".into(), vec!["qcow2"]),
        ("disk_format=raw".into(), vec!["raw"]),
        ("container_format=ovf".into(), vec!["qcow2"]),
        (format!("checksum={}", md5_hex(&bytes)), vec!["raw"]),
        (format!("os_hash_value={}", sha512_hex(&bytes)), vec!["raw"]),
        (
            format!("id={}", qcow2["id"].as_str().unwrap()),
            vec!["qcow2"],
        ),
    ];
    for (query, expected) in &cases {
        assert_eq!(names(&glance.list(query)), *expected, "?{query}");
    }
    let everything = ["qcow2", "raw"];
    assert_eq!(names(&glance.list("")), everything);
}

/// Glance refuses to change the formats of an image that has data (403 "Attribute
/// container_format can be only replaced for a queued image.").
#[test]
fn formats_of_an_active_image_cannot_be_replaced() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let id = glance.create_uploadable("active");
    glance.upload_ok(&id, b"data");
    for (name, value) in [("disk_format", "qcow2"), ("container_format", "ovf")] {
        let response = glance.patch(
            &id,
            PATCH_V21,
            &json!([{"op": "replace", "path": format!("/{name}"), "value": value}]),
        );
        glance.expect_error(
            &response,
            403,
            &format!("Attribute {name} can be only replaced for a queued image."),
            &format!("replace {name} of an active image"),
        );
    }
    let image = glance.show(&id);
    assert_eq!(image["disk_format"], "raw", "{image}");
}

#[test]
fn second_upload_to_an_image_being_uploaded_is_409() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let id = glance.create_uploadable("busy");
    let bytes = data(256 * 1024, 20);
    let (first, second) = bytes.split_at(128 * 1024);
    let mut stream = start_upload(&server, &id, Framing::Length, bytes.len(), first);
    wait_for_temporary_file(&server, &datadir, &id);
    let response = glance.upload(&id, b"other data", Framing::Length, None);
    glance.expect_error(
        &response,
        409,
        "Image status transition from saving to saving is not allowed",
        "a second upload",
    );
    send_piece(&mut stream, Framing::Length, second);
    let response = read_response(&mut BufReader::new(stream), "PUT")
        .unwrap()
        .unwrap();
    glance.expect(&response, 204, "the first upload");
    assert_active_with(
        &glance,
        &id,
        &bytes,
        "sha512",
        &sha512_hex(&bytes),
        "the first upload's data",
    );
}

/// With `Expect: 100-continue`, an upload refused on its declared size is refused before the
/// client is asked for the body.
#[test]
fn upload_over_the_cap_with_expect_100_continue_is_refused_without_asking_for_the_body() {
    let server = Server::start("image_size_cap = 1000");
    let glance = Glance::new(&server);
    let id = glance.create_uploadable("expecting");
    let mut stream = server.connect();
    stream
        .write_all(
            format!(
                "PUT /v2/images/{id}/file HTTP/1.1\r\nHost: glint\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: 2000\r\nExpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader, "the upload");
    assert_eq!(status, 413, "{headers:?}\n{}", server.log());
    assert_eq!(glance.status_of(&id), "queued");
}

/// Glance's quotas: 128 tags and 128 custom properties per image; more is 413.
#[test]
fn tag_and_property_quotas_are_413() {
    let server = Server::start("");
    let glance = Glance::new(&server);
    let tags: Vec<String> = (0..128).map(|i| format!("t{i}")).collect();
    let id = glance.create(json!({"tags": tags}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = glance.request(
        "PUT",
        &format!("/v2/images/{id}/tags/one-more"),
        &[("Accept", JSON)],
        None,
    );
    glance.expect_error(
        &response,
        413,
        "Maximum number of tags exceeded (128).",
        "the 129th tag",
    );
    let too_many: Vec<String> = (0..129).map(|i| format!("t{i}")).collect();
    let response = glance.send_json(
        "POST",
        "/v2/images",
        JSON,
        json!({"tags": too_many}).to_string().as_bytes(),
    );
    glance.expect(&response, 413, "create with 129 tags");
    let mut properties = serde_json::Map::new();
    for i in 0..128 {
        properties.insert(format!("p{i}"), json!("v"));
    }
    let id = glance.create(Value::Object(properties.clone()))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let response = glance.patch(
        &id,
        PATCH_V21,
        &json!([{"op": "add", "path": "/p128", "value": "v"}]),
    );
    glance.expect_error(
        &response,
        413,
        "Maximum number of properties exceeded (128).",
        "the 129th property",
    );
    let response = glance.patch(
        &id,
        PATCH_V21,
        &json!([{"op": "replace", "path": "/p5", "value": "w"}]),
    );
    glance.image(&response, 200, "replacing one of 128 properties");
    properties.insert("p128".into(), json!("v"));
    let response = glance.send_json(
        "POST",
        "/v2/images",
        JSON,
        Value::Object(properties).to_string().as_bytes(),
    );
    glance.expect(&response, 413, "create with 129 properties");
}

/// An upload in a child that drains after a reload, then kill -9 of that child: no child starts
/// afterwards (the old generation is not respawned, the current one has no reason to be), so
/// only the periodic recovery of the serving children can requeue the image. It does within
/// one recovery period (5 s, `RECOVERY_PERIOD` in src/process/child.rs; 2 s allowed for
/// scheduling and polling), removes the temporary file, and a new upload of the image succeeds,
/// with the current generation's children unchanged and no reload.
#[test]
fn upload_killed_while_its_child_drains_is_recovered_by_the_serving_generation() {
    const RECOVERY_PERIOD: Duration = Duration::from_secs(5);
    const SCHEDULING_ALLOWANCE: Duration = Duration::from_secs(2);
    let server = Server::start("workers = 2");
    let glance = Glance::new(&server);
    let datadir = server.path("images");
    let first_generation = server.children(Some("serving"));
    assert_eq!(first_generation.len(), 2, "{}", server.log());
    let bytes = data(4 * 1024 * 1024, 15);
    let id = glance.create_uploadable("upload killed in a draining child");
    // Half the body on a keep-alive connection: the image is `saving` and stays so.
    let _upload = start_upload(
        &server,
        &id,
        Framing::Length,
        bytes.len(),
        &bytes[..bytes.len() / 2],
    );
    let temporary = wait_for_temporary_file(&server, &datadir, &id);
    let uploader: i32 = temporary
        .strip_prefix(&format!(".{id}."))
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no uploader pid in {temporary}"));
    assert!(
        first_generation.contains(&uploader),
        "the uploader {uploader} is not a child of generation 1 {first_generation:?}"
    );
    assert_eq!(glance.status_of(&id), "saving");

    server.reload_succeeds();
    let status = server.status();
    assert_eq!(status["generation"], json!(2), "{status:#}");
    assert!(
        status["draining"]
            .as_array()
            .is_some_and(|draining| draining.contains(&json!(uploader))),
        "the uploader {uploader} should be draining with its upload: {status:#}"
    );
    let mut serving = server.children(Some("serving"));
    serving.sort_unstable();
    assert_eq!(serving.len(), 2, "{status:#}");
    assert!(!serving.contains(&uploader), "{status:#}");
    let reloads = status["last_reload"]["number"].clone();
    // While its uploader lives (draining), the image refuses another upload.
    let refused = glance.upload(&id, b"too soon", Framing::Length, None);
    glance.expect(
        &refused,
        409,
        "an upload while the first one runs in a draining child",
    );

    // SAFETY: kill(2) on a child of the server this test started.
    unsafe {
        libc::kill(uploader, libc::SIGKILL);
    }
    let killed = std::time::Instant::now();
    wait_for_image(
        &glance,
        &id,
        "queued",
        &datadir,
        &[],
        "after the draining uploader was killed",
    );
    let recovered_after = killed.elapsed();
    eprintln!("recovered {recovered_after:?} after the kill");
    assert!(
        recovered_after <= RECOVERY_PERIOD + SCHEDULING_ALLOWANCE,
        "recovered only {recovered_after:?} after the kill\n{}",
        server.log()
    );
    // Both serving children started together, so their passes run at the same moments: the
    // write-locked requeue lets exactly one of them requeue the image and remove the file.
    let log = server.log();
    for line in [
        format!("image {id} was left in saving by a process that died; it is queued again"),
        format!("{temporary}, left by an upload whose process died"),
    ] {
        assert_eq!(log.matches(&line).count(), 1, "{line:?} once\n{log}");
    }

    glance.upload_ok(&id, &bytes);
    assert_active_with(
        &glance,
        &id,
        &bytes,
        "sha512",
        &sha512_hex(&bytes),
        "the upload retried after the recovery",
    );
    // Recovered by the generation that was serving, not by a child started for it.
    let status = server.status();
    let mut still_serving = server.children(Some("serving"));
    still_serving.sort_unstable();
    assert_eq!(still_serving, serving, "{status:#}");
    assert_eq!(status["generation"], json!(2), "{status:#}");
    assert_eq!(status["last_reload"]["number"], reloads, "{status:#}");
    assert!(
        !util::process_alive(uploader),
        "the killed uploader {uploader} is still listed alive"
    );
}
