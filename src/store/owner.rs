//! Owner tokens: which process an upload's temporary file belongs to, in a form that survives the
//! process and can later be checked against the live process table.
//!
//! A token is `<pid>-<start time>`, the start time being field 22 of `/proc/<pid>/stat` (clock
//! ticks since boot). A pid alone is not enough: pids are reused, and a temporary file left by a
//! crashed child would look owned by whatever process got its pid. The pair is unique until the
//! next reboot. This is Linux-specific; where `/proc` is missing the start time is recorded as 0
//! and [`owner_alive`] answers from the pid alone, erring towards "alive".
//!
//! Nodes sharing a PostgreSQL registry and a data folder (issue 15) cannot see each other's
//! processes, so there a token also names its node: `<pid>-<start time>_<node>` ([`set_node`],
//! once per child). A process of another node is alive while that node's lease in the registry
//! is ([`owner_alive_among`]); one of this node, as above. A registry on SQLite serves one
//! node, and its tokens stay as they were, so binaries from before nodes read them the same.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The token of the calling process.
///
/// It is computed on every call, never cached: a child forked by the master has a new pid, and a
/// token cached before the fork would name the master.
pub fn owner_token() -> String {
    let pid = std::process::id();
    let start_time = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| start_time_from_stat(&stat))
        .unwrap_or(0);
    match NODE.get() {
        Some(node) => format!("{pid}-{start_time}_{node}"),
        None => format!("{pid}-{start_time}"),
    }
}

/// This process's node, when its registry is shared with other nodes.
static NODE: OnceLock<String> = OnceLock::new();

/// Names this process's node in every token it makes from now on. A child calls it once, at
/// its start, when its registry is on PostgreSQL; `node` is `[DEFAULT] node_name`, checked by
/// the configuration to be a name part ([`is_node_name`]). A second call changes nothing.
pub fn set_node(node: &str) {
    let _ = NODE.set(node.to_string());
}

/// This machine, as a node's lease records it: its host name and the kernel's boot id, so
/// that two machines given the same `node_name` (a cloned VM, two sites' `glance-1`) are told
/// apart, while the nodes and restarts of one machine are one.
pub fn machine_instance() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_default();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("{host}/{}", boot.trim())
}

/// Whether `name` may name a node in a token and a file name: 1 to 63 ASCII letters, digits
/// and `-`.
pub fn is_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// `token`'s process part and its node, if it names one that is well formed (a malformed
/// token stays whole, and is dead).
fn split_node(token: &str) -> (&str, Option<&str>) {
    match token.split_once('_') {
        Some((process, node)) if parse_token(process).is_some() && is_node_name(node) => {
            (process, Some(node))
        }
        _ => (token, None),
    }
}

/// Whether the process named by `token` is alive, among nodes that share a registry: a process
/// of this node (or a token naming none) as [`owner_alive`] tells; one of another node while
/// that node is in `live_nodes` (those whose lease in the registry has not expired).
pub fn owner_alive_among(token: &str, live_nodes: &HashSet<String>) -> bool {
    match split_node(token) {
        (_, Some(node)) if Some(node) != NODE.get().map(String::as_str) => {
            live_nodes.contains(node)
        }
        (process, _) => owner_alive(process),
    }
}

/// Whether the process named by `token` is still running. False for a malformed token.
///
/// When the process's stat file exists but cannot be read or parsed, the answer is "alive": a
/// caller uses this to decide whether to delete a file, and keeping a stray file is the lesser harm.
///
/// A zombie (state `Z`, or `X` while it is being reaped) is dead: it runs no code, so its upload
/// can never go on, and its /proc entry stays until its parent reaps it. Recovery then does not
/// wait for the master to reap a killed child.
///
/// A token of another node cannot be checked here: it counts as alive (see
/// [`owner_alive_among`]).
pub fn owner_alive(token: &str) -> bool {
    let token = match split_node(token) {
        (_, Some(node)) if Some(node) != NODE.get().map(String::as_str) => return true,
        (process, _) => process,
    };
    let Some((pid, start_time)) = parse_token(token) else {
        return false;
    };
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) if matches!(state_from_stat(&stat), Some('Z' | 'X')) => {
            // Only the process the token names: a zombie that reused the pid is not it, and
            // neither is alive.
            false
        }
        Ok(stat) => match start_time_from_stat(&stat) {
            // A token made without /proc carries 0: only the pid can be compared.
            Some(actual) => start_time == 0 || actual == start_time,
            None => true,
        },
        // Without /proc (start time 0, or no /proc at all), a missing stat file says nothing:
        // ask the kernel whether the pid exists (ESRCH: it does not).
        Err(error) if error.kind() == io::ErrorKind::NotFound && start_time != 0 => {
            !std::path::Path::new("/proc/self/stat").exists() && pid_exists(pid as i32)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => pid_exists(pid as i32),
        Err(_) => true,
    }
}

/// kill(pid, 0): false only when the kernel says there is no such process.
fn pid_exists(pid: i32) -> bool {
    // No signal: the kernel only checks that the process exists and may be signalled. EPERM
    // (another user's process) and any other failure still mean it may exist.
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Splits `<pid>-<start time>`, both plain decimal numbers, the pid nonzero.
pub(crate) fn parse_token(token: &str) -> Option<(u32, u64)> {
    let (pid, start_time) = token.split_once('-')?;
    let is_decimal =
        |text: &str| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    if !is_decimal(pid) || !is_decimal(start_time) {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let start_time: u64 = start_time.parse().ok()?;
    (pid != 0).then_some((pid, start_time))
}

/// Field 3 (state: `R`, `S`, `Z`...) of a `/proc/<pid>/stat` line, counted as in
/// [`start_time_from_stat`].
fn state_from_stat(stat: &str) -> Option<char> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().next()?.chars().next()
}

/// Field 22 (starttime) of a `/proc/<pid>/stat` line.
///
/// Field 2 is the command name in parentheses and may itself contain spaces and parentheses, so
/// the fields are counted from the last `)`: the first field after it is field 3.
fn start_time_from_stat(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_token_is_alive() {
        let token = owner_token();
        assert!(
            token.starts_with(&format!("{}-", std::process::id())),
            "{token}"
        );
        assert!(owner_alive(&token), "{token}");
    }

    #[test]
    fn same_pid_with_another_start_time_is_dead() {
        // The pid is ours, but the start time says it was another process that had our pid.
        let (pid, start_time) = parse_token(&owner_token()).unwrap();
        assert!(!owner_alive(&format!("{pid}-{}", start_time + 1)));
    }

    #[test]
    fn exited_process_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        child.wait().unwrap();
        // Reaped, so /proc/<pid> is gone (unless the pid was reused in between, which the start
        // time then tells apart).
        let start_time = start_time_from_stat(&stat).unwrap_or(1);
        assert!(!owner_alive(&format!("{pid}-{start_time}")));
    }

    #[test]
    fn an_unreaped_zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not waited for yet: once `true` has exited, /proc still lists it, as a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let stat = loop {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if state_from_stat(&stat) == Some('Z') {
                break stat;
            }
            assert!(std::time::Instant::now() < deadline, "no zombie: {stat}");
            std::thread::yield_now();
        };
        let start_time = start_time_from_stat(&stat).unwrap();
        assert!(!owner_alive(&format!("{pid}-{start_time}")));
        child.wait().unwrap();
    }

    #[test]
    fn pid_exists_is_false_only_for_a_pid_the_kernel_does_not_know() {
        assert!(pid_exists(std::process::id() as i32));
        // pid 1 always exists; signalling it is refused (EPERM) unless we are root, and a
        // refusal still means it exists.
        assert!(pid_exists(1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        // Reaped: ESRCH (pids are handed out in increasing order, so it is not reused this soon).
        assert!(!pid_exists(pid));
    }

    #[test]
    fn a_process_of_another_node_lives_while_its_node_does() {
        let (process, node) = split_node("12-34_node-b");
        assert_eq!((process, node), ("12-34", Some("node-b")));
        let live: HashSet<String> = ["node-b".to_string()].into();
        assert!(owner_alive_among("12-34_node-b", &live));
        assert!(!owner_alive_among("12-34_node-c", &live));
        assert!(!owner_alive_among("12-34_no.de", &live));
        assert!(!owner_alive("not_a_token") && !owner_alive("12-34_no.de"));
        // Without the registry's view, another node's process is never taken for dead.
        assert!(owner_alive("12-34_node-c"));
        // A token naming no node is this machine's: /proc decides.
        assert!(owner_alive_among(&owner_token(), &HashSet::new()));
        assert!(is_node_name("node-1") && !is_node_name("") && !is_node_name("a_b"));
    }

    #[test]
    fn malformed_tokens_are_dead() {
        for token in [
            "", "-", "12", "12-", "-12", "0-5", "a-1", "1-b", "1-2-3", "+1-2", " 1-2",
        ] {
            assert!(parse_token(token).is_none(), "{token:?} parsed");
            assert!(!owner_alive(token), "{token:?} alive");
        }
    }

    #[test]
    fn start_time_is_counted_after_the_command_name() {
        let mut fields: Vec<String> = (3..=52).map(|field| field.to_string()).collect();
        fields[22 - 3] = "987654".into();
        let stat = format!("4242 (a) b (c) {}\n", fields.join(" "));
        assert_eq!(start_time_from_stat(&stat), Some(987654));
        assert_eq!(start_time_from_stat("garbage"), None);
        let zombie = format!("4242 (a) Z) Z {}\n", fields[1..].join(" "));
        assert_eq!(state_from_stat(&zombie), Some('Z'));
        assert_eq!(state_from_stat("4242 (a)"), None);
    }
}
