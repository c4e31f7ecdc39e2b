//! The token file of `auth_strategy = token`: its format, and the set of tokens it gives, which
//! the API matches against a request's `X-Auth-Token` in constant time.
//!
//! The loader in [`super`] reads the file while it loads the config, so the tokens are part of
//! the immutable `Config` and a SIGHUP re-reads them; a file that cannot be read or lists no
//! token fails the load, and so changes nothing. This module only parses bytes and compares
//! tokens: it does not open files and knows nothing of HTTP.
//!
//! # Format
//!
//! One token per line. Surrounding whitespace is trimmed, blank lines and lines starting with
//! `#` are ignored. A token is visible ASCII without spaces (what an HTTP header value can carry
//! unchanged, RFC 9110 §5.5); anything else is refused with its line number.
//!
//! # Secrecy
//!
//! [`Tokens`] keeps only the SHA-256 digest of each token, never the token: no `Debug` output,
//! log line or core dump of a child shows one, and no message of this module quotes one.
//! Comparing digests also makes the comparison independent of the tokens' lengths: every
//! candidate is hashed once (time depending on its own length, which its sender knows) and
//! compared with every digest over all 32 bytes, without an early exit (see [`Tokens::accepts`]).

use std::fmt;

use sha2::{Digest, Sha256};

/// The tokens a request may present, as SHA-256 digests, in file order (duplicates kept).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

/// Why a token file was refused; the loader adds the file's path and the config line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFileError {
    /// Only blank lines and comments.
    Empty,
    /// The token on this line (1-based) holds a byte outside visible ASCII.
    BadToken { line: usize },
}

impl Tokens {
    /// The tokens in the text of a token file (see the module doc for the format).
    pub fn parse(bytes: &[u8]) -> Result<Tokens, TokenFileError> {
        let mut digests = Vec::new();
        for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
            let token = line.trim_ascii();
            if token.is_empty() || token.starts_with(b"#") {
                continue;
            }
            if !token.iter().all(|&byte| (0x21..=0x7e).contains(&byte)) {
                return Err(TokenFileError::BadToken { line: index + 1 });
            }
            digests.push(Sha256::digest(token).into());
        }
        if digests.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Tokens { digests })
    }

    /// How many tokens the file listed.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no token is listed (never true for tokens read from a file).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `candidate` is one of the tokens, in time that depends only on the candidate's
    /// length and the number of tokens. Every digest is compared over all its bytes, differences
    /// are accumulated with XOR and OR, and the verdict is turned into 0 or 1 without a branch,
    /// so neither which token nor which byte differed shows in the timing.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let candidate: [u8; 32] = Sha256::digest(candidate).into();
        let mut matched: u8 = 0;
        for digest in &self.digests {
            let mut difference: u8 = 0;
            for (left, right) in digest.iter().zip(candidate.iter()) {
                difference |= left ^ right;
            }
            // 1 when difference is 0, else 0: (0 - 1) >> 8 keeps the borrow, (d - 1) >> 8 is 0.
            let difference = u16::from(std::hint::black_box(difference));
            matched |= (difference.wrapping_sub(1) >> 8) as u8 & 1;
        }
        std::hint::black_box(matched) == 1
    }
}

/// Shows the number of tokens only.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} listed)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments_and_blank_lines_and_trims() {
        let tokens = Tokens::parse(b"# admins\n\n  alpha \r\n\tbeta\n#gamma\n").unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.accepts(b"alpha"));
        assert!(tokens.accepts(b"beta"));
        assert!(!tokens.accepts(b"gamma"));
        assert!(!tokens.accepts(b"#gamma"));
        assert!(!tokens.accepts(b" alpha"));
    }

    #[test]
    fn parse_refuses_a_file_without_tokens() {
        for text in ["", "\n\n", "# only a comment\n", "  \n\t\n# x\n"] {
            assert_eq!(
                Tokens::parse(text.as_bytes()),
                Err(TokenFileError::Empty),
                "{text:?}"
            );
        }
    }

    #[test]
    fn parse_refuses_tokens_a_header_cannot_carry_with_their_line() {
        let cases: &[(&[u8], usize)] = &[
            (b"good\ntwo words\n", 2),
            (b"tab\there\n", 1),
            (b"# c\n\ncaf\xc3\xa9\n", 3),
            (b"nul\x00\n", 1),
            (b"ok\ndel\x7f\n", 2),
        ];
        for &(text, line) in cases {
            assert_eq!(
                Tokens::parse(text),
                Err(TokenFileError::BadToken { line }),
                "{}",
                text.escape_ascii()
            );
        }
    }

    #[test]
    fn accepts_only_exact_tokens() {
        let tokens = Tokens::parse(b"s3cret\nother-token\n").unwrap();
        assert!(tokens.accepts(b"s3cret"));
        assert!(tokens.accepts(b"other-token"));
        for wrong in [
            &b""[..],
            b"s3cre",
            b"s3cret ",
            b"s3cretx",
            b"S3CRET",
            b"other-token\n",
        ] {
            assert!(!tokens.accepts(wrong), "{}", wrong.escape_ascii());
        }
        assert!(!Tokens::default().accepts(b""));
    }

    #[test]
    fn debug_shows_no_token() {
        let tokens = Tokens::parse(b"s3cret\n").unwrap();
        let shown = format!("{tokens:?}");
        assert_eq!(shown, "Tokens(1 listed)");
    }
}
