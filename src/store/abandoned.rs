//! Temporary file names, and the sweep that removes the temporary files of uploads whose process
//! is gone.
//!
//! An upload writes `.<image id>.<owner>.tmp` in its data directory (see [`super::Upload`]). The
//! leading dot keeps it out of a casual `ls`; the image id says which image it was; the owner
//! token ([`super::owner_token`]) says which process wrote it, so that a sweep can tell a crashed
//! upload from one that is still running in another child.

const SUFFIX: &str = ".tmp";

/// The temporary file name of an upload. Both parts must be free of `.` and `/`
/// ([`is_name_part`]), which keeps the name parseable and inside the directory.
pub(crate) fn temporary_name(image_id: &str, owner: &str) -> String {
    debug_assert!(is_name_part(image_id) && is_name_part(owner));
    format!(".{image_id}.{owner}{SUFFIX}")
}

/// True for a non-empty string of ASCII letters, digits, `-` and `_`: what a UUID and an owner
/// token are made of, and nothing that could escape a directory or confuse the parser.
pub(crate) fn is_name_part(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f0e8a9c-7d3b-4f1e-9a2c-1b2c3d4e5f60";

    #[test]
    fn temporary_name_carries_image_and_owner() {
        assert_eq!(
            temporary_name(ID, "4242-1234567"),
            format!(".{ID}.4242-1234567.tmp")
        );
    }

    #[test]
    fn name_parts_exclude_separators() {
        assert!(is_name_part(ID));
        assert!(is_name_part("4242-1234567"));
        for text in ["", "a.b", "a/b", "..", "a b", "é"] {
            assert!(!is_name_part(text), "{text:?}");
        }
    }
}
