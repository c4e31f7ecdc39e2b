//! `http::head::parse` on arbitrary bytes, under the default limits and under small ones (the
//! first byte picks the line limit, so the limit paths are reached without megabyte inputs).
//! Errors are fine; a panic, or a result that breaks what `parse` promises, is a finding.
#![no_main]

use glint::http::head::{check_host, is_token, parse, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, buf)) = data.split_first() else {
        return;
    };
    let small = Limits {
        max_header_line: usize::from(selector % 64) + 1,
        max_headers: usize::from(selector / 64) + 1,
        max_head_bytes: usize::from(selector) * 4 + 8,
    };
    for limits in [Limits::new(8192), small] {
        check(buf, &limits);
    }
});

fn check(buf: &[u8], limits: &Limits) {
    match parse(buf, limits) {
        Ok(Parsed::Complete(head, len)) => {
            assert!(len <= buf.len(), "consumed {len} of {} bytes", buf.len());
            assert!(
                len <= limits.max_head_bytes,
                "head of {len} bytes over the limit"
            );
            assert!(is_token(head.method.as_bytes()), "method {:?}", head.method);
            assert!(
                head.target.starts_with('/') || head.target == "*",
                "target {:?}",
                head.target
            );
            // What follows the head (a body, a pipelined request) never changes the head.
            assert_eq!(
                parse(&buf[..len], limits),
                Ok(Parsed::Complete(head.clone(), len))
            );
            let _ = check_host(&head);
            let _ = (head.path(), head.query(), head.header_str("host"));
        }
        Ok(Parsed::Partial) => {
            assert!(
                buf.len() < limits.max_head_bytes,
                "{} bytes still partial",
                buf.len()
            );
        }
        Err(error) => {
            let _ = (error.status(), error.to_string());
        }
    }
}
