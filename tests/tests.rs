//! glint's integration tests: each one drives the real `glint-api` binary through real processes,
//! signals, sockets on 127.0.0.1 and files in a temporary directory.
//!
//! Modules:
//! - `util`: the harness (start a server, status file, signals, waits, a small HTTP client).
//! - `lifecycle`: start and stop, signals, --check-config: the master's basic behaviour.
//! - `reload`: reloads seen from the client's side: no failed request, drains, bad configs.
//! - `http`: the HTTP/1.1 layer from a client's socket: bad requests, keep-alive, timeouts, garbage.
//! - `images`: the Images API v2: metadata, data, transfers across reloads and crashes, a full disk.
//! - `control`: the operator's tools: `glint-api reload|stop|status`, the init script, the
//!   systemd notify messages.
//! - `directories`: `--check-config` run as nobody (setpriv) refuses data, log and other
//!   directories that user cannot write or create, one line each; the init script checks as its
//!   `GLINT_USER` (issue 14, part 7).
//! - `logs`: where log lines go (issue 14, part 6): a separate access log reopened on SIGUSR1
//!   and moved by SIGHUP, access lines off, health checks left out, one line per record, and
//!   syslog datagrams received on a socket bind-mounted on /dev/log in a private mount namespace.
//! - `request_cost`: the system calls a keep-alive request no longer costs a child, counted by
//!   strace (no socket mode switch, one getrandom per 64 request ids, no SQLite lock for a
//!   shown image).
//! - `shown`: `GET /v2/images/{id}` answered from a child's memory never shows a write of
//!   another child late, nor a deleted image.
//! - `request_ids`: `x-openstack-request-id` on every response (API, access control, the HTTP
//!   layer's own 400, 408 and 431), and the same id in the access line and the lines about it.
//! - `tasks`: the task each import records (`/v2/images/{id}/tasks`, `/v2/tasks`, issue 12):
//!   success, failure with its reason, a killed child's task failed, expiry, the tasks API.
//! - `systemd`: the systemd unit, offline: `systemd-analyze verify` and `security`, and its
//!   `ExecReload=` run against a real server (issue 14, part 2).
//! - `package`: the Debian package (issue 14, part 3), installed with `dpkg -i` (the path in
//!   `GLINT_DEB`, from `scripts/package`), run through its init script as the user glint,
//!   rotated, reloaded, stopped and purged; the production sample config and the man page.
//! - `cache`: the image cache and the pipeline flavors, switched by SIGHUP under load.
//! - `auth`: access control (`auth_strategy = token`) across routes and reloads; image file modes.
//! - `keystone`: Keystone token validation (the keystone flavors) against the real Keystone that
//!   `scripts/test` starts (`GLINT_KEYSTONE_ENV`): valid, missing, forged, revoked and expired
//!   tokens, service tokens, a paused and a stopped Keystone, SIGHUP, https with cafile.
//! - `sharing`: projects, policy and sharing under that Keystone: owners, visibility (404 for
//!   what a project may not see), roles, image members, deactivation, a policy file by SIGHUP.
//! - `hostile`: attacks on one child (slowloris, floods, endless bodies, header bombs, smuggling,
//!   hostile paths and JSON) with its threads, memory and a fresh client's service watched.
//! - `handoff`: keep-alive connections handed to the new generation; the rolling strategy.
//! - `files`: what glint writes on disk: modes closed to other users, the group of a setgid
//!   directory, no write through a planted link.
//! - `faults`: crashes, locked databases, bad configs at reload, descriptor exhaustion, reload storms.
//! - `bounds`: what one request and one child may hold in memory (issue 10, hole 1): the image
//!   metadata cap, list pages cut by size, a child's peak under hostile lists.
//! - `priority`: the master ten nice levels above its children as root, every child thread at
//!   the start nice, and a refusal (no CAP_SYS_NICE, RLIMIT_NICE 0) said with how to allow it.
//! - `process_faults`: the lifecycle faults of the process layer (issue 9), each proved with real
//!   processes: respawn order, temporary start failures, a master that must never block, failed
//!   and endless rolling reloads, process groups, the master's death, signals during start.
//! - `format`: format inspection of uploads (issue 12, part 1) with images made by the real
//!   `qemu-img` and `genisoimage`: virtual sizes as qemu reports them, hostile images refused.
//! - `metrics`: Prometheus metrics on their own listener (issue 14, part 4): `promtool check
//!   metrics` on a real scrape, exact counts of requests and bytes, reloads by outcome, counters
//!   monotonic across reloads and killed children, handoffs, cache lookups, registry busy waits,
//!   off by default.
//! - `slow_readers`: downloads to clients that read slowly or not at all hold no worker, end whole
//!   when read, survive a reload, and are cut below `client_send_min_rate` (issue 10, hole 3).
//! - `stores`: several stores (`enabled_backends`, issue 12, part 3): uploads placed by
//!   `X-Image-Meta-Store`, the image's `stores`, `/v2/info/stores`, `DELETE /v2/stores` (its
//!   admin-only rules under Keystone), backends added and removed by SIGHUP; import into
//!   several stores (`stores`, `all_stores`, a failing store either way), copy-image, and the
//!   backend given to data stored before `enabled_backends`.
//! - `healthcheck`: `/healthcheck` as oslo.middleware answers it (text, JSON, HTML, HEAD), and the
//!   disable files that take a node out of its load balancer (issue 15, part 3).
//! - `postgres`: the registry on PostgreSQL (issue 15, part 1): two nodes sharing one database
//!   and one data folder, and a database restarted under a node (503s, then service, nothing
//!   restarted).
//! - `scale_out`: three nodes behind the real HAProxy on `conf/haproxy-glint.cfg` (issue 15,
//!   parts 3 and 4): each reloaded in turn under load, and one taken out by its disable file
//!   and stopped, without a failed request.
//! - `import`: interoperable import with `glance-direct` (issue 12, part 2, first slice): stage
//!   and import of `qemu-img` images, a hostile one refused, Glance's preconditions, imports
//!   across SIGHUP and SIGTERM, an import whose child is killed recovered.

mod util;

mod auth;
mod bounds;
mod cache;
mod control;
mod directories;
mod faults;
mod files;
mod format;
mod handoff;
mod healthcheck;
mod hostile;
mod http;
mod images;
mod import;
mod keystone;
mod lifecycle;
mod logs;
mod metrics;
mod package;
mod postgres;
mod priority;
mod process_faults;
mod reload;
mod request_cost;
mod request_ids;
mod scale_out;
mod sharing;
mod shown;
mod slow_readers;
mod stores;
mod systemd;
mod tasks;
