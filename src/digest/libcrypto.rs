//! OpenSSL's libcrypto, loaded with dlopen(3) at a process's first image digest, not linked.
//!
//! An upload hashes every byte twice (md5 for `checksum`, sha512 by default for
//! `os_hash_value`), and on the machines glint is measured on the hashes are its slowest part:
//! OpenSSL's assembly does sha512 about 1.5 times as fast as the sha2 crate and md5 about 1.3
//! times as fast as md-5 (docs/BENCHMARKS.md, "Data path"). Loaded rather than linked, for the
//! reasons libpq is (`registry/sql/libpq.rs`): with a SQLite registry the master and an idle
//! child never map it, so a reload forks nothing more (a node on PostgreSQL maps it anyway, as
//! libpq's own dependency), and a system without it still runs glint, on the built-in code.
//!
//! Only the calls [`Context`] makes are looked up, by their names in OpenSSL 3's stable ABI
//! (`libcrypto.so.3`); their C signatures are copied from `openssl/evp.h` and
//! `openssl/crypto.h`.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use super::Algorithm;
use crate::dynlib::Library;

/// libcrypto's file name, by its soname.
pub const LIBRARY: &str = "libcrypto.so.3";

/// Test hook: another file name to load instead of [`LIBRARY`], for the tests of a system
/// without it. Read only by debug builds (the ones the tests run).
pub const FAULT_LIBCRYPTO: &str = "GLINT_FAULT_LIBCRYPTO";

/// `OPENSSL_INIT_NO_LOAD_CONFIG`: the system's `openssl.cnf` is not read, so that a digest
/// means the same on every host (a crypto policy there could disable md5, Glance's `checksum`,
/// which Glance computes with `usedforsecurity=False`). It only counts if glint is the first to
/// initialise the library: on a node on PostgreSQL, libpq has done so already, with the config.
const OPENSSL_INIT_NO_LOAD_CONFIG: u64 = 0x0000_0080;
/// `OPENSSL_INIT_NO_ATEXIT`: no exit handler; a child ends with `_exit` anyway.
const OPENSSL_INIT_NO_ATEXIT: u64 = 0x0008_0000;
/// `EVP_MAX_MD_SIZE`.
const EVP_MAX_MD_SIZE: usize = 64;

/// `EVP_MD_CTX` and `EVP_MD`: opaque.
enum EvpMdCtx {}
enum EvpMd {}

/// The functions glint calls, as found in the loaded library.
struct Libcrypto {
    md_ctx_new: unsafe extern "C" fn() -> *mut EvpMdCtx,
    md_ctx_free: unsafe extern "C" fn(ctx: *mut EvpMdCtx),
    digest_init_ex:
        unsafe extern "C" fn(ctx: *mut EvpMdCtx, kind: *const EvpMd, engine: *mut c_void) -> c_int,
    digest_update:
        unsafe extern "C" fn(ctx: *mut EvpMdCtx, data: *const c_void, len: usize) -> c_int,
    digest_final_ex:
        unsafe extern "C" fn(ctx: *mut EvpMdCtx, digest: *mut u8, len: *mut c_uint) -> c_int,
    md5: unsafe extern "C" fn() -> *const EvpMd,
    sha256: unsafe extern "C" fn() -> *const EvpMd,
    sha384: unsafe extern "C" fn() -> *const EvpMd,
    sha512: unsafe extern "C" fn() -> *const EvpMd,
}

/// The loaded library, or why it could not be loaded: tried once per process.
static LOADED: OnceLock<Result<Libcrypto, String>> = OnceLock::new();

fn libcrypto() -> Result<&'static Libcrypto, &'static str> {
    LOADED
        .get_or_init(|| {
            let loaded = load();
            match &loaded {
                Ok(_) => log::debug!("image digests by OpenSSL ({LIBRARY})"),
                Err(reason) => log::warn!(
                    "cannot load {LIBRARY} ({reason}): image digests by glint's built-in code, \
                     which is slower (sha512 about two thirds of OpenSSL's speed); install it \
                     (Debian: apt-get install libssl3) and restart glint"
                ),
            }
            loaded
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Whether this process digests with libcrypto (loading it if not tried yet).
pub fn available() -> bool {
    libcrypto().is_ok()
}

/// The file to load.
fn library() -> String {
    std::env::var(FAULT_LIBCRYPTO)
        .ok()
        .filter(|_| cfg!(debug_assertions))
        .unwrap_or_else(|| LIBRARY.to_string())
}

fn load() -> Result<Libcrypto, String> {
    let library = Library::open(&library())?;
    // SAFETY (of every `function`): each is the named libcrypto function, whose C signature
    // the field's type repeats.
    let (library, init) = unsafe {
        let init: unsafe extern "C" fn(opts: u64, settings: *const c_void) -> c_int =
            library.function("OPENSSL_init_crypto")?;
        let functions = Libcrypto {
            md_ctx_new: library.function("EVP_MD_CTX_new")?,
            md_ctx_free: library.function("EVP_MD_CTX_free")?,
            digest_init_ex: library.function("EVP_DigestInit_ex")?,
            digest_update: library.function("EVP_DigestUpdate")?,
            digest_final_ex: library.function("EVP_DigestFinal_ex")?,
            md5: library.function("EVP_md5")?,
            sha256: library.function("EVP_sha256")?,
            sha384: library.function("EVP_sha384")?,
            sha512: library.function("EVP_sha512")?,
        };
        (functions, init)
    };
    // SAFETY: no settings; the options are plain flags (ignored if libpq initialised the
    // library first).
    if unsafe {
        init(
            OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_ATEXIT,
            std::ptr::null(),
        )
    } != 1
    {
        return Err("OPENSSL_init_crypto failed".to_string());
    }
    Ok(library)
}

/// Says once per process and algorithm that libcrypto, though loaded, refused to make a digest
/// (a provider config that disables it, read by libpq's initialisation of the library).
fn warn_once(algorithm: Algorithm) {
    static WARNED: [std::sync::Once; 4] = [const { std::sync::Once::new() }; 4];
    let index = algorithm as usize;
    if let Some(once) = WARNED.get(index) {
        once.call_once(|| {
            log::warn!(
                "{LIBRARY} cannot compute {}: that digest is computed by glint's built-in code",
                algorithm.name()
            )
        });
    }
}

/// One digest in progress in libcrypto (an `EVP_MD_CTX`), freed on drop.
pub struct Context {
    library: &'static Libcrypto,
    context: *mut EvpMdCtx,
    /// Set when libcrypto refused an update: the digest then cannot be trusted.
    failed: bool,
}

// SAFETY: an EVP_MD_CTX belongs to no thread; it is used by one at a time: every call takes
// `&mut self` or `self`, and a shared `&Context` can do nothing with it.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}

impl Context {
    /// A new digest of `algorithm`, or why libcrypto cannot make one (the caller then uses the
    /// built-in code).
    pub fn new(algorithm: Algorithm) -> Result<Context, &'static str> {
        let library = libcrypto()?;
        // SAFETY: functions of the loaded library; EVP_MD_CTX_new has no preconditions.
        let context = unsafe { (library.md_ctx_new)() };
        if context.is_null() {
            return Err("EVP_MD_CTX_new failed");
        }
        let context = Context {
            library,
            context,
            failed: false,
        };
        // SAFETY: the EVP_md5/sha* calls take nothing and return a static description.
        let kind = unsafe {
            match algorithm {
                Algorithm::Md5 => (library.md5)(),
                Algorithm::Sha256 => (library.sha256)(),
                Algorithm::Sha384 => (library.sha384)(),
                Algorithm::Sha512 => (library.sha512)(),
            }
        };
        // SAFETY: a live context, a static digest description, no engine.
        if kind.is_null()
            || unsafe { (library.digest_init_ex)(context.context, kind, std::ptr::null_mut()) } != 1
        {
            warn_once(algorithm);
            return Err("EVP_DigestInit_ex failed");
        }
        Ok(context)
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.failed || data.is_empty() {
            return;
        }
        // SAFETY: a live, initialised context and `data.len()` readable bytes.
        let done =
            unsafe { (self.library.digest_update)(self.context, data.as_ptr().cast(), data.len()) };
        self.failed = done != 1;
    }

    /// The digest, or `None` if libcrypto failed along the way.
    pub fn finish(self) -> Option<Vec<u8>> {
        if self.failed {
            return None;
        }
        let mut digest = vec![0u8; EVP_MAX_MD_SIZE];
        let mut len: c_uint = 0;
        // SAFETY: a live, initialised context and an EVP_MAX_MD_SIZE buffer.
        let done =
            unsafe { (self.library.digest_final_ex)(self.context, digest.as_mut_ptr(), &mut len) };
        if done != 1 || len as usize > EVP_MAX_MD_SIZE {
            return None;
        }
        digest.truncate(len as usize);
        Some(digest)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context was made by EVP_MD_CTX_new and is freed once.
        unsafe { (self.library.md_ctx_free)(self.context) }
    }
}
