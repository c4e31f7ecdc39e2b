//! Format inspection of uploads (issue 12, part 1), with images made by the real `qemu-img`
//! (Debian `qemu-utils`) and `genisoimage`, which `scripts/test` installs: a test that cannot
//! run them fails, it never skips.
//!
//! Good images of each format become `active` with the `virtual_size` that
//! `qemu-img info --output=json` reports; hostile ones (a backing file, an external data file, a
//! vmdk whose data is another file, random bytes, a qcow2 declared raw) are refused with 415 and
//! the inspector's message, stay `queued`, leave nothing in the data directory, and have no data
//! to download (204).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{create_image_from, get, request, send_body, Server};

/// Runs a fixture tool in `dir`; panics with its output if it cannot run or fails.
fn run(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {program} ({error}); install it (scripts/test does: apt-get install \
                 qemu-utils genisoimage)"
            )
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `qemu-img info --output=json`'s `virtual-size` of `file`, read as `format`.
fn qemu_virtual_size(dir: &Path, file: &str, format: &str) -> u64 {
    let output = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format, file])
        .current_dir(dir)
        .output()
        .expect("qemu-img info");
    assert!(output.status.success(), "qemu-img info {file}: {output:?}");
    let info: Value = serde_json::from_slice(&output.stdout).expect("qemu-img info JSON");
    info["virtual-size"].as_u64().expect("virtual-size")
}

/// A raw disk with some non-zero data, so that sparse formats hold clusters of data too.
fn raw_with_data(dir: &Path, name: &str) {
    let mut bytes = vec![0u8; 3 << 20];
    for (index, byte) in bytes.iter_mut().enumerate().skip(1 << 20).take(1 << 20) {
        *byte = (index % 251) as u8;
    }
    fs::write(dir.join(name), bytes).expect("write raw fixture");
}

fn create(server: &Server, disk_format: &str) -> String {
    create_image_from(
        server.addr(),
        &format!(r#"{{"name":"fixture","disk_format":"{disk_format}","container_format":"bare"}}"#),
    )
}

fn upload(server: &Server, id: &str, data: &[u8]) -> crate::util::Response {
    request(
        server.addr(),
        "PUT",
        &format!("/v2/images/{id}/file"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .expect("upload")
}

fn show(server: &Server, id: &str) -> Value {
    let response = get(server.addr(), &format!("/v2/images/{id}")).expect("GET image");
    assert_eq!(response.status, 200, "{}", response.text());
    serde_json::from_slice(&response.body).expect("image JSON")
}

/// Every file in the data directory, temporary ones included.
fn stored_files(server: &Server) -> Vec<PathBuf> {
    match fs::read_dir(server.path("images")) {
        Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn good_images_of_each_format_get_the_virtual_size_qemu_img_reports() {
    let fixtures = tempfile::tempdir().unwrap();
    let dir = fixtures.path();
    raw_with_data(dir, "disk.raw");
    // (file, disk_format, qemu's format name, how to make it)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("disk.raw", "raw", "raw", &[]),
        (
            "empty.qcow2",
            "qcow2",
            "qcow2",
            &["create", "-f", "qcow2", "empty.qcow2", "10G"],
        ),
        (
            "data.qcow2",
            "qcow2",
            "qcow2",
            &["convert", "-O", "qcow2", "disk.raw", "data.qcow2"],
        ),
        (
            "v2.qcow2",
            "qcow2",
            "qcow2",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "compat=0.10",
                "v2.qcow2",
                "1G",
            ],
        ),
        (
            "sparse.vmdk",
            "vmdk",
            "vmdk",
            &[
                "convert",
                "-O",
                "vmdk",
                "-o",
                "subformat=monolithicSparse",
                "disk.raw",
                "sparse.vmdk",
            ],
        ),
        (
            "stream.vmdk",
            "vmdk",
            "vmdk",
            &[
                "convert",
                "-O",
                "vmdk",
                "-o",
                "subformat=streamOptimized",
                "disk.raw",
                "stream.vmdk",
            ],
        ),
        (
            "dynamic.vhd",
            "vhd",
            "vpc",
            &["convert", "-O", "vpc", "disk.raw", "dynamic.vhd"],
        ),
        (
            "fixed.vhd",
            "vhd",
            "vpc",
            &[
                "convert",
                "-O",
                "vpc",
                "-o",
                "subformat=fixed",
                "disk.raw",
                "fixed.vhd",
            ],
        ),
        (
            "big.vhd",
            "vhd",
            "vpc",
            &["create", "-f", "vpc", "big.vhd", "20G"],
        ),
        (
            "disk.vhdx",
            "vhdx",
            "vhdx",
            &["convert", "-O", "vhdx", "disk.raw", "disk.vhdx"],
        ),
        (
            "empty.vhdx",
            "vhdx",
            "vhdx",
            &["create", "-f", "vhdx", "empty.vhdx", "64G"],
        ),
        (
            "disk.vdi",
            "vdi",
            "vdi",
            &["convert", "-O", "vdi", "disk.raw", "disk.vdi"],
        ),
        (
            "big.vdi",
            "vdi",
            "vdi",
            &["create", "-f", "vdi", "big.vdi", "16G"],
        ),
        (
            "fixed.vdi",
            "vdi",
            "vdi",
            &["create", "-f", "vdi", "-o", "static=on", "fixed.vdi", "3M"],
        ),
    ];
    for (_, _, _, args) in cases {
        if !args.is_empty() {
            run(dir, "qemu-img", args);
        }
    }
    fs::create_dir(dir.join("iso-root")).unwrap();
    fs::write(dir.join("iso-root/hello.txt"), "hello\n").unwrap();
    run(
        dir,
        "genisoimage",
        &["-quiet", "-o", "disk.iso", "-V", "GLINT", "iso-root"],
    );

    let server = Server::start("");
    let mut checked = Vec::new();
    for (file, disk_format, qemu_format) in cases
        .iter()
        .map(|(file, disk_format, qemu_format, _)| (*file, *disk_format, *qemu_format))
        .chain([("disk.iso", "iso", "raw")])
    {
        let data = fs::read(dir.join(file)).unwrap();
        let expected = qemu_virtual_size(dir, file, qemu_format);
        let id = create(&server, disk_format);
        let response = upload(&server, &id, &data);
        assert_eq!(response.status, 204, "{file}: {}", response.text());
        let image = show(&server, &id);
        assert_eq!(image["status"], "active", "{file}");
        assert_eq!(image["size"], data.len() as u64, "{file}");
        assert_eq!(
            image["virtual_size"].as_u64(),
            Some(expected),
            "{file}: virtual_size against qemu-img info"
        );
        checked.push(format!("{file} {expected}"));
    }
    eprintln!("virtual sizes checked: {checked:?}");
}

#[test]
fn hostile_images_are_refused_stay_queued_and_leave_nothing_stored() {
    let fixtures = tempfile::tempdir().unwrap();
    let dir = fixtures.path();
    run(dir, "qemu-img", &["create", "-f", "raw", "base.raw", "1M"]);
    run(
        dir,
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "backing.qcow2",
        ],
    );
    run(
        dir,
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "data_file=external.raw",
            "datafile.qcow2",
            "1M",
        ],
    );
    run(
        dir,
        "qemu-img",
        &[
            "create",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            "flat.vmdk",
            "1M",
        ],
    );
    run(
        dir,
        "qemu-img",
        &[
            "create",
            "-f",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            "split.vmdk",
            "1M",
        ],
    );
    // A monolithicSparse vmdk whose embedded descriptor claims another create type (same
    // length, so the header's descriptor offsets stay right).
    run(
        dir,
        "qemu-img",
        &["create", "-f", "vmdk", "sparse.vmdk", "1M"],
    );
    let mut retyped = fs::read(dir.join("sparse.vmdk")).unwrap();
    let from = b"createType=\"monolithicSparse\"";
    let at = retyped
        .windows(from.len())
        .position(|window| window == from)
        .expect("createType in qemu's descriptor");
    retyped[at..at + from.len()].copy_from_slice(b"createType=\"vmfsSparse\"      ");
    fs::write(dir.join("retyped.vmdk"), retyped).unwrap();
    run(
        dir,
        "qemu-img",
        &["create", "-f", "qcow2", "plain.qcow2", "1M"],
    );
    let random: Vec<u8> = (0..5_000_000u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    fs::write(dir.join("random.bin"), &random).unwrap();

    // (file, declared disk_format, words of the message)
    let cases = [
        ("backing.qcow2", "qcow2", "has a backing file"),
        ("datafile.qcow2", "qcow2", "has an external data file"),
        ("flat.vmdk", "vmdk", "descriptor file without data"),
        ("split.vmdk", "vmdk", "descriptor file without data"),
        (
            "retyped.vmdk",
            "vmdk",
            "createType \"vmfsSparse\" is not allowed",
        ),
        ("random.bin", "qcow2", "not a valid qcow2 image"),
        (
            "plain.qcow2",
            "raw",
            "disk_format raw does not match stream data qcow2",
        ),
        (
            "plain.qcow2",
            "vhdx",
            "disk_format vhdx does not match stream data qcow2",
        ),
        (
            "plain.qcow2",
            "vdi",
            "disk_format vdi does not match stream data qcow2",
        ),
        ("random.bin", "vdi", "not a valid vdi image"),
        ("backing.qcow2", "raw", "has a backing file"),
    ];
    let server = Server::start("");
    for (file, disk_format, message) in cases {
        let data = fs::read(dir.join(file)).unwrap();
        let id = create(&server, disk_format);
        let response = upload(&server, &id, &data);
        assert_eq!(
            response.status,
            415,
            "{file} as {disk_format}: {}",
            response.text()
        );
        assert!(
            response.text().contains(message),
            "{file} as {disk_format}: expected {message:?} in\n{}",
            response.text()
        );
        let image = show(&server, &id);
        assert_eq!(image["status"], "queued", "{file} as {disk_format}");
        assert_eq!(image["size"], Value::Null, "{file} as {disk_format}");
        assert_eq!(
            image["virtual_size"],
            Value::Null,
            "{file} as {disk_format}"
        );
        assert_eq!(
            stored_files(&server),
            Vec::<PathBuf>::new(),
            "{file} as {disk_format}"
        );
        let download = get(server.addr(), &format!("/v2/images/{id}/file")).unwrap();
        assert_eq!(download.status, 204, "{file} as {disk_format}: download");
        assert!(download.body.is_empty());
    }
    // The same image takes good data afterwards.
    let id = create(&server, "qcow2");
    let refused = upload(&server, &id, &fs::read(dir.join("backing.qcow2")).unwrap());
    assert_eq!(refused.status, 415);
    let accepted = upload(&server, &id, &fs::read(dir.join("plain.qcow2")).unwrap());
    assert_eq!(accepted.status, 204, "{}", accepted.text());
    assert_eq!(show(&server, &id)["virtual_size"], 1 << 20);
}

#[test]
fn image_format_options_limit_formats_relax_the_match_and_choose_vmdk_types() {
    let server = Server::start(
        "\n[image_format]\ndisk_formats = raw,qcow2,vmdk\nrequire_image_format_match = false\n\
         vmdk_allowed_types = streamOptimized\ncontainer_formats = bare,ova\n[DEFAULT]",
    );
    let refused = send_body(
        server.addr(),
        "POST",
        "/v2/images",
        "application/json",
        br#"{"name":"x","disk_format":"raw","container_format":"docker"}"#,
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("'docker' is not one of [None, 'bare', 'ova']"),
        "{}",
        refused.text()
    );
    let refused = send_body(
        server.addr(),
        "POST",
        "/v2/images",
        "application/json",
        br#"{"name":"x","disk_format":"vhdx","container_format":"bare"}"#,
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused
            .text()
            .contains("'vhdx' is not one of [None, 'raw', 'qcow2', 'vmdk']"),
        "{}",
        refused.text()
    );
    let id = create(&server, "raw");
    let patched = request(
        server.addr(),
        "PATCH",
        &format!("/v2/images/{id}"),
        &[(
            "Content-Type",
            "application/openstack-images-v2.1-json-patch",
        )],
        br#"[{"op":"replace","path":"/disk_format","value":"iso"}]"#,
    )
    .unwrap();
    assert_eq!(patched.status, 400, "{}", patched.text());
    let patched = request(
        server.addr(),
        "PATCH",
        &format!("/v2/images/{id}"),
        &[(
            "Content-Type",
            "application/openstack-images-v2.1-json-patch",
        )],
        br#"[{"op":"replace","path":"/container_format","value":"ovf"}]"#,
    )
    .unwrap();
    assert_eq!(patched.status, 400, "{}", patched.text());
    assert!(
        patched
            .text()
            .contains("schema['properties']['container_format']"),
        "{}",
        patched.text()
    );
    // Without the match requirement a qcow2 declared raw is stored, without a virtual size.
    let fixtures = tempfile::tempdir().unwrap();
    run(
        fixtures.path(),
        "qemu-img",
        &["create", "-f", "qcow2", "plain.qcow2", "1M"],
    );
    let response = upload(
        &server,
        &id,
        &fs::read(fixtures.path().join("plain.qcow2")).unwrap(),
    );
    assert_eq!(response.status, 204, "{}", response.text());
    let image = show(&server, &id);
    assert_eq!(image["status"], "active");
    assert_eq!(image["virtual_size"], Value::Null);

    // vmdk_allowed_types reaches the inspector: a monolithicSparse vmdk is refused.
    run(
        fixtures.path(),
        "qemu-img",
        &["create", "-f", "vmdk", "sparse.vmdk", "1M"],
    );
    let vmdk = create(&server, "vmdk");
    let response = upload(
        &server,
        &vmdk,
        &fs::read(fixtures.path().join("sparse.vmdk")).unwrap(),
    );
    assert_eq!(response.status, 415, "{}", response.text());
    assert!(
        response.text().contains(
            "createType \"monolithicSparse\" is not allowed (vmdk_allowed_types: streamOptimized)"
        ),
        "{}",
        response.text()
    );
    assert_eq!(show(&server, &vmdk)["status"], "queued");
}
