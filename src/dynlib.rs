//! A shared library loaded with dlopen(3) at run time rather than linked, and its functions
//! looked up by name: libpq for a registry on PostgreSQL (`registry/sql/libpq.rs`) and OpenSSL's
//! libcrypto for image digests (`digest/libcrypto.rs`), so that a process maps each only when it
//! uses it.

use std::ffi::{c_void, CStr, CString};

/// A loaded library. It is never closed: the functions looked up in it stay valid for the life
/// of the process.
pub struct Library(*mut c_void);

impl Library {
    /// Loads `name` (a file name, looked up as dlopen(3) does, or a path), resolving every
    /// symbol now; the error is dlerror(3)'s message.
    pub fn open(name: &str) -> Result<Library, String> {
        let c_name = CString::new(name).map_err(|error| error.to_string())?;
        // SAFETY: a NUL-terminated name; the handle is never closed.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(last_error());
        }
        Ok(Library(handle))
    }

    /// The function named `symbol`, as the function pointer type `F`.
    ///
    /// # Safety
    /// `F` must be an `unsafe extern "C" fn` type whose signature is the C signature of the
    /// library's `symbol`.
    pub unsafe fn function<F: Copy>(&self, symbol: &str) -> Result<F, String> {
        assert_eq!(
            std::mem::size_of::<F>(),
            std::mem::size_of::<*mut c_void>(),
            "a function pointer"
        );
        let c_symbol = CString::new(symbol).map_err(|error| error.to_string())?;
        // SAFETY: a live handle and a NUL-terminated name.
        let address = unsafe { libc::dlsym(self.0, c_symbol.as_ptr()) };
        if address.is_null() {
            return Err(format!("it has no {symbol}: {}", last_error()));
        }
        // SAFETY: same size (checked), and the caller vouches for the signature.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&address) })
    }
}

/// dlerror(3)'s message.
fn last_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message valid until the next dl call on
    // this thread, copied at once.
    let message = unsafe { libc::dlerror() };
    if message.is_null() {
        return "no reason given".to_string();
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}
