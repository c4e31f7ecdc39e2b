//! Text the code generates and the repository holds: tables in docs/ (the options table, the
//! policy defaults) and whole files (the production sample config). A unit test per table or
//! file compares it with what the code renders today, so neither can drift from the code.
//! Tests only.

/// docs/OPERATIONS.md, which holds the generated tables.
pub const OPERATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md");

/// Panics unless the block of `doc` between the lines `begin` and `end` is `expected`; with
/// `GLINT_BLESS=1` in the environment it rewrites the block instead. `what` names the table
/// and `test` the test to run to regenerate it, for the panic's message.
pub fn check_block(doc: &str, begin: &str, end: &str, expected: &str, what: &str, test: &str) {
    let text = std::fs::read_to_string(doc).unwrap_or_else(|error| panic!("{doc}: {error}"));
    let (before, rest) = text
        .split_once(begin)
        .unwrap_or_else(|| panic!("{doc} lacks the line {begin:?}"));
    let (table, after) = rest
        .split_once(end)
        .unwrap_or_else(|| panic!("{doc} lacks the line {end:?}"));
    if table == expected {
        return;
    }
    if std::env::var_os("GLINT_BLESS").is_some_and(|bless| bless == "1") {
        let updated = format!("{before}{begin}{expected}{end}{after}");
        std::fs::write(doc, updated).unwrap_or_else(|error| panic!("{doc}: {error}"));
        return;
    }
    panic!(
        "{what} in {doc} differs from the code.\nRegenerate it with:\n\n    GLINT_BLESS=1 cargo \
         test --lib {test}\n\n--- expected table ---\n{expected}--- table in the file ---\n{table}"
    );
}

/// Panics unless the file at `path` is `expected`; with `GLINT_BLESS=1` in the environment it
/// writes `expected` there instead. `what` names the file and `test` the test to run to
/// regenerate it, for the panic's message.
pub fn check_file(path: &str, expected: &str, what: &str, test: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    if text == expected {
        return;
    }
    if std::env::var_os("GLINT_BLESS").is_some_and(|bless| bless == "1") {
        std::fs::write(path, expected).unwrap_or_else(|error| panic!("{path}: {error}"));
        return;
    }
    panic!(
        "{what}, {path}, differs from the code.\nRegenerate it with:\n\n    GLINT_BLESS=1 cargo \
         test --lib {test}\n\n--- expected ---\n{expected}--- in the file ---\n{text}"
    );
}
