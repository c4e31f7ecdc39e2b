//! Request ids, as every OpenStack service gives them: each response carries
//! `x-openstack-request-id: req-<uuid4>`, and every log line about the request names the same id,
//! so an operator can go from a client's error to the server's lines about it.
//!
//! Like oslo.middleware's `RequestId` middleware (which Glance's pipeline runs first), the id is
//! always generated here and never taken from the client: a client-chosen id could collide with
//! another request's or forge a log line's. It is made when the request is taken by a worker,
//! or when the HTTP layer answers on its own (400 for a head it cannot parse, 408 for a head that
//! did not arrive), so no response goes out without one. This is OpenStack's convention, not
//! Glance's API: it holds for every route, the health check included.
//!
//! The id reaches the log lines through `logging::RequestScope`, which prefixes `[req-...]` to
//! every line logged on the thread while it lives, as oslo.log puts the request context before
//! the message; the access line is logged in the same scope wherever the response ends.

//!
//! The random bits come from the kernel (getrandom(2)), as `uuid::Uuid::new_v4` takes them, but
//! 64 ids' worth at a time, kept per thread: one system call per 64 requests instead of one per
//! request (issue 13). Each id is still 122 bits straight from the kernel's CSPRNG, used once;
//! the bytes not used yet sit in the thread's memory only. A child forked from a process that
//! holds some does not reuse them: a fork handler makes every thread of the new process fetch
//! afresh.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// The response header that carries the id (oslo.middleware's `HTTP_RESP_HEADER_REQUEST_ID`).
pub const HEADER: &str = "x-openstack-request-id";

/// How many ids' random bytes one getrandom(2) fetches.
const IDS_PER_FETCH: usize = 64;

/// Forks of this process's ancestry so far, as seen from the process itself: bumped in the
/// child by a `pthread_atfork` handler, so that random bytes fetched before a fork are never
/// used on both sides of it.
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Random bytes fetched and not used yet, on one thread.
struct Fetched {
    bytes: [u8; 16 * IDS_PER_FETCH],
    /// Ids taken from `bytes` so far; `IDS_PER_FETCH` when they must be fetched again.
    used: usize,
    /// `FORKS` when they were fetched.
    forks: u64,
}

thread_local! {
    static FETCHED: RefCell<Fetched> = const {
        RefCell::new(Fetched { bytes: [0; 16 * IDS_PER_FETCH], used: IDS_PER_FETCH, forks: 0 })
    };
}

/// 16 random bytes for one id, from the thread's store (refilled from the kernel when empty or
/// fetched before a fork). `None` if the kernel gives none (then the caller asks `uuid`, which
/// fails the same way, loudly).
fn random_bytes() -> Option<[u8; 16]> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only adds to an atomic; no other effect.
        unsafe {
            libc::pthread_atfork(None, None, Some(forked));
        }
    });
    FETCHED.with(|cell| {
        let mut fetched = cell.borrow_mut();
        let forks = FORKS.load(Ordering::Relaxed);
        if fetched.used == IDS_PER_FETCH || fetched.forks != forks {
            getrandom::fill(&mut fetched.bytes).ok()?;
            fetched.used = 0;
            fetched.forks = forks;
        }
        let at = fetched.used * 16;
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&fetched.bytes[at..at + 16]);
        // Used once: wiped, so the store holds only what no id has shown.
        fetched.bytes[at..at + 16].fill(0);
        fetched.used += 1;
        Some(bytes)
    })
}

/// One request's id: `req-` and a random (version 4) UUID in its hyphenated lowercase form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A new, random id.
    pub fn generate() -> RequestId {
        let uuid = match random_bytes() {
            Some(bytes) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
            None => uuid::Uuid::new_v4(),
        };
        let mut text = String::with_capacity(40);
        text.push_str("req-");
        let mut buffer = uuid::Uuid::encode_buffer();
        text.push_str(uuid.hyphenated().encode_lower(&mut buffer));
        RequestId(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_req_and_a_version_4_uuid_and_differ() {
        let first = RequestId::generate();
        let second = RequestId::generate();
        assert_ne!(first, second);
        let uuid = first.as_str().strip_prefix("req-").expect("req- prefix");
        let parsed = uuid::Uuid::parse_str(uuid).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.hyphenated().to_string(), uuid);
    }

    /// Each id in Glance's form, none seen twice: 4 threads, 1000 ids each, so every thread
    /// refills its store of random bytes many times (64 ids a fetch).
    #[test]
    fn ids_from_many_threads_and_fetches_are_well_formed_and_distinct() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| RequestId::generate()).collect()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for thread in threads {
            let ids: Vec<RequestId> = thread.join().unwrap();
            for id in ids {
                let uuid = id.as_str().strip_prefix("req-").expect("req- prefix");
                let parsed = uuid::Uuid::parse_str(uuid).expect("a uuid");
                assert_eq!(parsed.get_version_num(), 4, "{id}");
                assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
                assert_eq!(parsed.hyphenated().to_string(), uuid, "{id}");
                assert!(seen.insert(id.to_string()), "{id} was given twice");
            }
        }
        assert_eq!(seen.len(), 4000);
    }

    /// Random bytes fetched before a fork are not used on both sides of it: the parent's next
    /// id and the child's first differ (the child's thread is a copy of the parent's, store
    /// included; without the fork handler both would take the same bytes).
    #[test]
    fn a_forked_child_does_not_reuse_its_parents_random_bytes() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, pipe, ForkResult};
        use std::io::{Read, Write};
        // Fills this thread's store, with ids left in it.
        RequestId::generate();
        let (read_end, write_end) = pipe().unwrap();
        // SAFETY: the child only makes an id, writes it to the pipe and exits with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let id = RequestId::generate();
                let mut out = std::fs::File::from(write_end);
                let code = i32::from(out.write_all(id.as_str().as_bytes()).is_err());
                // SAFETY: ends the child without running the parent's exit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(write_end);
                let parents = RequestId::generate();
                let mut childs = String::new();
                std::fs::File::from(read_end)
                    .read_to_string(&mut childs)
                    .unwrap();
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
                assert_eq!(childs.len(), parents.as_str().len(), "{childs:?}");
                assert_ne!(childs, parents.as_str());
            }
        }
    }
}
