//! recovery_cost: what one pass of a child's periodic recovery of abandoned uploads costs
//! (`Api::recover_abandoned`, run every `RECOVERY_PERIOD` by each child's maintenance thread),
//! against the full repair a child runs at its start (`Api::recover`), on a database and a data
//! directory holding `IMAGES` active images (default 1000) and nothing in `saving`.
//!
//! The write-locked requeue alone (`Registry::recover_abandoned_uploads`) is measured too: it
//! is what a pass would cost without its read-only check first.
//!
//! `cargo run --release --example recovery_cost [IMAGES]`; prints the mean time per call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use glint::api::Api;
use glint::registry::{Image, ImageStatus, Registry};

fn main() {
    let images: usize = std::env::args()
        .nth(1)
        .and_then(|count| count.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config_path = dir.path().join("glint-api.conf");
    let text = "[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = 0\n\n[glance_store]\n\
                filesystem_store_datadir = images\n\n[database]\n\
                connection = sqlite:///glint.sqlite\n";
    let config = glint::config::load_str(text, &config_path)
        .expect("config")
        .config;
    let datadir = dir.path().join("images");
    std::fs::create_dir_all(&datadir).expect("data directory");
    let registry = Arc::new(Registry::open(&config.database).expect("registry"));
    for index in 0..images {
        let mut image = Image::new(uuid::Uuid::new_v4().to_string());
        image.status = ImageStatus::Active;
        registry.create(&image).expect("create");
        // An image file for each, so that the data directory listing costs what it would.
        std::fs::write(datadir.join(&image.id), index.to_string()).expect("image file");
    }
    let stores = Arc::new(glint::process::child::open_stores(&config).expect("store"));
    let address: SocketAddr = "127.0.0.1:9292".parse().expect("address");
    let api = Api::new(Arc::new(config), 1, address, registry.clone(), stores, None);

    let measure = |what: &str, calls: u32, call: &dyn Fn()| {
        call();
        let started = Instant::now();
        for _ in 0..calls {
            call();
        }
        let mean = started.elapsed() / calls;
        println!("{what}: {mean:?} per call ({calls} calls, {images} images)");
    };
    measure("periodic pass, nothing saving", 10_000, &|| {
        api.recover_abandoned(false).expect("recover_abandoned");
    });
    measure(
        "the write-locked requeue alone (BEGIN IMMEDIATE)",
        10_000,
        &|| {
            registry
                .recover_abandoned_uploads(glint::store::owner_alive)
                .expect("recover_abandoned_uploads");
        },
    );
    measure(
        "periodic pass with the data directory sweep",
        1_000,
        &|| {
            api.recover_abandoned(true).expect("recover_abandoned");
        },
    );
    measure("full recovery at a child's start", 1_000, &|| {
        api.recover().expect("recover");
    });
}
