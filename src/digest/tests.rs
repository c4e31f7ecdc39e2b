use super::*;

const ALL: [Algorithm; 4] = [
    Algorithm::Md5,
    Algorithm::Sha256,
    Algorithm::Sha384,
    Algorithm::Sha512,
];

/// The digests of "abc" (RFC 1321, FIPS 180-2's examples).
fn abc(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::Md5 => "900150983cd24fb0d6963f7d28e17f72",
        Algorithm::Sha256 => "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        Algorithm::Sha384 => {
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7"
        }
        Algorithm::Sha512 => {
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        }
    }
}

fn digest_of(mut digest: Digest, chunks: &[&[u8]]) -> String {
    for chunk in chunks {
        digest.update(chunk);
    }
    digest.finish().expect("digest")
}

#[test]
fn libcrypto_is_used_where_the_system_has_it() {
    // scripts/test installs libssl3, so this machine has libcrypto.so.3: the fast path must be
    // the one taken, or the upload benchmark measures the built-in code.
    for algorithm in ALL {
        assert_eq!(
            Digest::new(algorithm).implementation(),
            Implementation::Libcrypto,
            "{algorithm:?}"
        );
    }
    assert!(libcrypto::available());
}

#[test]
fn both_implementations_give_the_known_digests() {
    for algorithm in ALL {
        for digest in [Digest::new(algorithm), Digest::builtin(algorithm)] {
            let implementation = digest.implementation();
            assert_eq!(digest.algorithm(), algorithm);
            assert_eq!(
                digest_of(digest, &[b"a", b"", b"bc"]),
                abc(algorithm),
                "{algorithm:?} by {implementation:?}"
            );
        }
    }
}

#[test]
fn both_implementations_agree_on_data_fed_in_uneven_chunks() {
    // 1 MiB of xorshift output, fed in chunks of 1 byte up to 300 KiB, crossing every block
    // boundary of every algorithm.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = &data[..];
    for size in [1, 63, 64, 65, 127, 128, 129, 4096, 300 << 10]
        .iter()
        .cycle()
    {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    for algorithm in ALL {
        let fast = Digest::new(algorithm);
        assert_eq!(fast.implementation(), Implementation::Libcrypto);
        assert_eq!(
            digest_of(fast, &chunks),
            digest_of(Digest::builtin(algorithm), &[&data]),
            "{algorithm:?}"
        );
    }
}

#[test]
fn names_are_glances() {
    let names: Vec<&str> = ALL.iter().map(|algorithm| algorithm.name()).collect();
    assert_eq!(names, ["md5", "sha256", "sha384", "sha512"]);
}
