//! The digests of image data: md5 (Glance's `checksum`) and the SHA-2 family (`os_hash_value`).
//!
//! A [`Digest`] runs in OpenSSL's libcrypto when the system has it ([`libcrypto`], loaded at a
//! process's first digest) and in RustCrypto's crates (md-5, sha2) otherwise; both give the same
//! bytes (tests below), only the speed differs. Uploads, image imports and the image cache's
//! verification all hash through here.

pub mod libcrypto;
#[cfg(test)]
mod tests;

use md5::Digest as _;

/// A digest algorithm glint computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    /// The name Glance uses (`hashing_algorithm`, `os_hash_algo`; `md5` for `checksum`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }
}

/// Which code computes a [`Digest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    Libcrypto,
    Builtin,
}

/// One digest in progress.
pub struct Digest {
    algorithm: Algorithm,
    state: State,
}

enum State {
    Libcrypto(libcrypto::Context),
    /// Boxed: the RustCrypto states are a few hundred bytes each.
    Builtin(Box<Builtin>),
}

enum Builtin {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Digest {
    /// A digest by libcrypto when it can make one, else by the built-in code (libcrypto logs
    /// why, once per process, or once per algorithm).
    pub fn new(algorithm: Algorithm) -> Digest {
        match libcrypto::Context::new(algorithm) {
            Ok(context) => Digest {
                algorithm,
                state: State::Libcrypto(context),
            },
            Err(_) => Digest::builtin(algorithm),
        }
    }

    /// A digest by the built-in code (RustCrypto's crates).
    pub fn builtin(algorithm: Algorithm) -> Digest {
        let builtin = match algorithm {
            Algorithm::Md5 => Builtin::Md5(md5::Md5::new()),
            Algorithm::Sha256 => Builtin::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Builtin::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Builtin::Sha512(sha2::Sha512::new()),
        };
        Digest {
            algorithm,
            state: State::Builtin(Box::new(builtin)),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn implementation(&self) -> Implementation {
        match self.state {
            State::Libcrypto(_) => Implementation::Libcrypto,
            State::Builtin(_) => Implementation::Builtin,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Libcrypto(context) => context.update(data),
            State::Builtin(builtin) => match &mut **builtin {
                Builtin::Md5(hasher) => hasher.update(data),
                Builtin::Sha256(hasher) => hasher.update(data),
                Builtin::Sha384(hasher) => hasher.update(data),
                Builtin::Sha512(hasher) => hasher.update(data),
            },
        }
    }

    /// The digest in lowercase hex, as Glance shows `checksum` and `os_hash_value`; `None` if
    /// libcrypto failed along the way (never seen): the caller then cannot trust the data's
    /// digest, and fails the upload or discards the cache entry.
    pub fn finish(self) -> Option<String> {
        let bytes = match self.state {
            State::Libcrypto(context) => context.finish()?,
            State::Builtin(builtin) => match *builtin {
                Builtin::Md5(hasher) => hasher.finalize().to_vec(),
                Builtin::Sha256(hasher) => hasher.finalize().to_vec(),
                Builtin::Sha384(hasher) => hasher.finalize().to_vec(),
                Builtin::Sha512(hasher) => hasher.finalize().to_vec(),
            },
        };
        Some(hex(&bytes))
    }
}

/// Lowercase hex, as Glance shows `checksum` and `os_hash_value`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}
