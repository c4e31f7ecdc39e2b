//! bench_report: the records of the benchmark runs and the one renderer of the tables in
//! docs/BENCHMARKS.md.
//!
//! Every benchmark script (`scripts/bench-reload`, `bench-load`, `bench-data`,
//! `bench-reload-memory`, `bench-keystone`, `bench-registry`) collects the JSON lines its measuring tool prints and, at the end of a
//! run, hands them to `bench_report record`, which writes one JSON record of that run: which
//! benchmark and the command, the commit and whether the tree differed from it, the date, the
//! machine, the settings, and every measurement of glint and of its reference from that run, side
//! by side. `bench_report table FILE` prints the markdown table of a record, with its targets met
//! or missed, its date and its commit. `bench_report doc MARKDOWN` regenerates every table of a
//! document from the records it names, so that no table there is typed by hand:
//!
//! ```text
//! <!-- bench_report table docs/benchmarks/NAME.json -->
//! (generated; replaced by `bench_report doc`)
//! <!-- /bench_report -->
//! ```
//!
//! `<!-- bench_report summary FILE FILE ... -->` instead renders one row per glint run of several
//! load records beside its reference run: rates, their ratio, CPU per request and who wrote
//! access lines.
//!
//! Usage:
//!
//! ```text
//! bench_report tree
//! bench_report record --bench reload|load|data|reload-memory|keystone|registry --runs FILE --started DATE
//!     --out FILE [--tree JSON] [--command TEXT] [--loadavg-start "1 5 15"]
//!     [--setting KEY=VALUE]... [--fact KEY=VALUE]... [--note TEXT]...
//! bench_report table FILE
//! bench_report doc MARKDOWN [--check]
//! ```
//!
//! `--runs` is a file of the tool's output: lines that start with `{` are the measurements, other
//! lines are ignored. VALUEs that parse as JSON are kept as JSON, others as strings. The commit and
//! the state of the tree come from `git` in the current directory: `tree` prints them as JSON, for
//! a script to take them when it builds and hand them to `record --tree` at the end (without
//! `--tree`, `record` takes them itself). "dirty" lists the files that differ from the commit,
//! untracked ones included, outside `docs/` (where the records go).

use std::fmt::Write as _;
use std::fs;
use std::process::{Command, ExitCode};

use serde_json::{json, Map, Value};

/// The version of the record format.
const FORMAT: u64 = 1;
/// The marker that opens a generated block in a markdown document; the record's path follows.
const BEGIN: &str = "<!-- bench_report table ";
/// The marker of a summary: one row per glint run of several load records, side by side with
/// the reference run of the same record (`<!-- bench_report summary FILE FILE ... -->`).
const BEGIN_SUMMARY: &str = "<!-- bench_report summary ";
/// The marker that closes it.
const END: &str = "<!-- /bench_report -->";
/// What regenerates the tables of docs/BENCHMARKS.md.
const REGENERATE: &str = "scripts/bench-tables";

/// Targets, from the issues that asked for each benchmark (issues 2, 3, 5, 11 and 13).
const RELOAD_MEDIAN_MS: f64 = 50.0;
const RELOAD_P99_FACTOR: f64 = 2.0;
/// Issue 13: SIGHUP to the first response from the new generation of an idle server, at most.
const RELOAD_IDLE_MS: f64 = 5.0;
const DATA_DOWNLOAD_RATIO: f64 = 0.90;
const DATA_UPLOAD_RATIO: f64 = 0.80;
const DATA_RSS_KIB: u64 = 32 * 1024;
const LOAD_IMAGE_RATIO: f64 = 0.5;
const LOAD_P99_MS: f64 = 5.0;
const KEYSTONE_RATIO: f64 = 0.90;
/// Issue 13 part 2: an upload (curl -T) at least this share of the slowest of sha512 alone, md5
/// alone (`openssl speed`, one core) and the disk's write+fsync.
const DATA_UPLOAD_SLOWEST_RATIO: f64 = 0.75;
/// Issue 12: format inspection may cost at most this share of the upload pass.
const INSPECT_COST: f64 = 0.03;
const REGISTRY_P99_MS: f64 = 5.0;
const REGISTRY_GROWTH: f64 = 2.0;

const USAGE: &str =
    "usage: bench_report record --bench NAME --runs FILE --started DATE --out FILE \
[--command TEXT] [--loadavg-start TEXT] [--setting K=V]... [--fact K=V]... [--note TEXT]...
       bench_report table FILE
       bench_report doc MARKDOWN [--check]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("record") => record(&args[1..]),
        Some("tree") if args.len() == 1 => {
            println!("{}", tree());
            Ok(())
        }
        Some("table") if args.len() == 2 => render(&args[1]).map(|table| print!("{table}")),
        Some("doc") if args.len() == 2 => doc(&args[1], false),
        Some("doc") if args.len() == 3 && args[2] == "--check" => doc(&args[1], true),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench_report: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---- record -----------------------------------------------------------------------------------

/// A JSON value from the command line: JSON if it parses, else the text as a string.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `git ARGS` in the current directory, its output trimmed; `None` if git fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    })
}

/// The first value of `field` in /proc/cpuinfo.
fn cpu_model() -> Option<String> {
    let text = fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

/// The three load averages of /proc/loadavg.
fn loadavg() -> Option<String> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The commit checked out, and the files that differ from it (untracked ones included) outside
/// docs/: everything the build reads is outside docs/, and the records are written into it.
fn tree() -> Value {
    let dirty: Option<Vec<String>> = git(&[
        "status",
        "--porcelain",
        "--untracked-files=all",
        "--",
        ".",
        ":(top,exclude)docs",
    ])
    .map(|status| {
        status
            .lines()
            .filter_map(|line| line.get(3..))
            .map(str::to_string)
            .collect()
    });
    json!({
        "commit": git(&["rev-parse", "HEAD"]),
        "dirty": dirty.as_ref().map(|paths| !paths.is_empty()),
        "dirty_paths": dirty,
    })
}

fn record(args: &[String]) -> Result<(), String> {
    let mut bench = None;
    let mut runs_path = None;
    let mut started = None;
    let mut out = None;
    let mut command = None;
    let mut loadavg_start = None;
    let mut tree_json = None;
    let mut settings = Map::new();
    let mut facts = Map::new();
    let mut notes = Vec::new();
    let mut words = args.iter();
    while let Some(option) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{option} needs a value\n{USAGE}"))?;
        let pair = || {
            value
                .split_once('=')
                .map(|(key, value)| (key.to_string(), value_of(value)))
                .ok_or_else(|| format!("{option} {value}: expected KEY=VALUE"))
        };
        match option.as_str() {
            "--bench" => bench = Some(value.clone()),
            "--runs" => runs_path = Some(value.clone()),
            "--started" => started = Some(value.clone()),
            "--out" => out = Some(value.clone()),
            "--command" => command = Some(value.clone()),
            "--loadavg-start" => loadavg_start = Some(value.clone()),
            "--tree" => tree_json = Some(value.clone()),
            "--setting" => {
                let (key, value) = pair()?;
                settings.insert(key, value);
            }
            "--fact" => {
                let (key, value) = pair()?;
                facts.insert(key, value);
            }
            "--note" => notes.push(Value::String(value.clone())),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    let bench = bench.ok_or("--bench is required")?;
    let runs_path = runs_path.ok_or("--runs is required")?;
    let out = out.ok_or("--out is required")?;
    let text = fs::read_to_string(&runs_path).map_err(|error| format!("{runs_path}: {error}"))?;
    let runs: Vec<Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("{runs_path}: a line that starts with {{ is not JSON: {error}"))?;
    let tree = match tree_json {
        Some(text) => {
            serde_json::from_str(&text).map_err(|error| format!("--tree {text}: {error}"))?
        }
        None => tree(),
    };
    let record = json!({
        "format": FORMAT,
        "bench": bench,
        "command": command,
        "date": started,
        "commit": tree["commit"],
        "dirty": tree["dirty"],
        "dirty_paths": tree["dirty_paths"],
        "machine": {
            "nproc": std::thread::available_parallelism().ok().map(|n| n.get()),
            "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|text| text.trim().to_string()),
            "cpu": cpu_model(),
            "loadavg_start": loadavg_start,
            "loadavg_end": loadavg(),
        },
        "settings": settings,
        "facts": facts,
        "notes": notes,
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&record).map_err(|error| error.to_string())? + "\n";
    fs::write(&out, text).map_err(|error| format!("{out}: {error}"))
}

// ---- helpers for the tables -------------------------------------------------------------------

/// The value at `keys` under `value` (`Null` if any is missing).
fn at<'a>(value: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter().fold(value, |value, key| &value[*key])
}

/// A number with `decimals` decimals, or "-".
fn num(value: &Value, decimals: usize) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_string(), |number| format!("{number:.decimals$}"))
}

/// An optional number with `decimals` decimals, or "-".
fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |number| format!("{number:.decimals$}"))
}

/// A markdown table: a first column of row headings (titled `corner`), then one right-aligned
/// column per title.
fn md_table(corner: &str, titles: &[String], rows: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {corner} | {} |", titles.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(titles.len()));
    for (heading, cells) in rows {
        let _ = writeln!(out, "| {heading} | {} |", cells.join(" | "));
    }
    out
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// What the record says about where and when it was measured, and how to regenerate the table.
fn provenance(path: &str, record: &Value) -> String {
    let mut out = String::new();
    let date = record["date"].as_str().unwrap_or("an unrecorded date");
    let commit = record["commit"]
        .as_str()
        .map_or("an unrecorded commit".to_string(), |commit| {
            format!("commit `{}`", short(commit))
        });
    let tree = match (&record["dirty"], record["dirty_paths"].as_array()) {
        (Value::Bool(false), _) => "the tree as committed".to_string(),
        (Value::Bool(true), Some(paths)) => format!(
            "uncommitted changes to {}",
            paths
                .iter()
                .filter_map(Value::as_str)
                .map(|path| format!("`{path}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "the state of the tree not recorded".to_string(),
    };
    let machine = &record["machine"];
    let mut host = Vec::new();
    if let Some(nproc) = machine["nproc"].as_u64() {
        host.push(format!("{nproc} CPUs"));
    }
    if let Some(cpu) = machine["cpu"].as_str() {
        host.push(cpu.to_string());
    }
    if let Some(kernel) = machine["kernel"].as_str() {
        host.push(format!("Linux {kernel}"));
    }
    let load = match (
        machine["loadavg_start"].as_str(),
        machine["loadavg_end"].as_str(),
    ) {
        (Some(start), Some(end)) => {
            format!("; load average (1, 5, 15 min) {start} at the start, {end} at the end")
        }
        (None, Some(end)) => format!("; load average (1, 5, 15 min) {end} at the end"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "- Measured {date} at {commit} ({tree}), on {}{load}.",
        if host.is_empty() {
            "an unrecorded machine".to_string()
        } else {
            host.join(", ")
        }
    );
    if let Some(command) = record["command"].as_str() {
        let _ = writeln!(out, "- Command: `{command}`.");
    }
    if let Some(settings) = record["settings"].as_object().filter(|map| !map.is_empty()) {
        let settings: Vec<String> = settings
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => format!("{key}: {text}"),
                other => format!("{key}: {other}"),
            })
            .collect();
        let _ = writeln!(out, "- Settings: {}.", settings.join("; "));
    }
    for note in record["notes"].as_array().into_iter().flatten() {
        if let Some(note) = note.as_str() {
            let _ = writeln!(out, "- Note: {note}");
        }
    }
    let _ = writeln!(
        out,
        "- Generated from `{path}` by `{REGENERATE}` (`target/release/examples/bench_report table {path}`); not typed by hand."
    );
    out
}

/// The markdown table of the record at `path`, its targets and its provenance.
fn render(path: &str) -> Result<String, String> {
    let text = fs::read_to_string(path).map_err(|error| format!("{path}: {error}"))?;
    let record: Value =
        serde_json::from_str(&text).map_err(|error| format!("{path}: not a record: {error}"))?;
    let runs = record["runs"]
        .as_array()
        .ok_or_else(|| format!("{path}: no runs"))?;
    let body = match record["bench"].as_str() {
        Some("reload") => reload_table(runs, &record),
        Some("load") => load_table(runs, &record),
        Some("data") => data_table(runs, &record),
        Some("reload-memory") => memory_table(runs, &record),
        Some("keystone") => keystone_table(runs, &record),
        Some("registry") => registry_table(runs, &record),
        Some("idle") => idle_table(runs, &record),
        Some("scale-out") => scale_out_table(runs),
        other => return Err(format!("{path}: unknown bench {other:?}")),
    };
    Ok(format!("{body}\n{}", provenance(path, &record)))
}

// ---- scale-out --------------------------------------------------------------------------------

/// Issue 15's benchmark: the request rate through HAProxy with 1, 2 and 3 nodes, and one node on
/// PostgreSQL against one on SQLite, from the same run.
fn scale_out_table(runs: &[Value]) -> String {
    let mut out = load_runs_table(runs);
    let rate = |label: &str| {
        runs.iter()
            .find(|run| run["label"] == label)
            .and_then(|run| run["requests_per_s"].as_f64())
    };
    let ratio = |a: &str, b: &str| rate(a).zip(rate(b)).map(|(a, b)| a / b);
    out.push('\n');
    let _ = writeln!(
        out,
        "Through HAProxy, requests/s against 1 node: 2 nodes {}, 3 nodes {}. One node on PostgreSQL against one on SQLite: `GET /v2/images/{{id}}` {}, a list of 25 {}.",
        opt(ratio("haproxy 2 nodes image", "haproxy 1 node image"), 2),
        opt(ratio("haproxy 3 nodes image", "haproxy 1 node image"), 2),
        opt(ratio("postgresql image", "sqlite image"), 2),
        opt(ratio("postgresql list", "sqlite list"), 2),
    );
    out
}

// ---- reload -----------------------------------------------------------------------------------

/// Failures by cause, the non-zero ones, as "reset 575, EOF 2".
fn failure_causes(run: &Value) -> String {
    let causes: Vec<String> = [
        ("connect_refused", "refused"),
        ("connect_other", "connect error"),
        ("reset", "reset"),
        ("eof_without_response", "EOF"),
        ("bad_status", "bad status"),
        ("timeout", "timeout"),
        ("other", "other"),
    ]
    .iter()
    .filter_map(|(key, name)| {
        let count = run["failures"][key].as_u64().unwrap_or(0);
        (count > 0).then(|| format!("{name} {count}"))
    })
    .collect();
    if causes.is_empty() {
        "-".to_string()
    } else {
        causes.join(", ")
    }
}

fn reload_table(runs: &[Value], record: &Value) -> String {
    // A run with no clients is the probe alone: the reload of an idle server.
    let mode_of = |run: &Value| {
        if run["clients"].as_u64() == Some(0) {
            "idle".to_string()
        } else {
            run["mode"].as_str().unwrap_or("?").to_string()
        }
    };
    let titles: Vec<String> = runs
        .iter()
        .map(|run| format!("{} {}", run["label"].as_str().unwrap_or("?"), mode_of(run)))
        .collect();
    // Records from before issue 13 have no old-generation figures; their tables stay as made.
    let with_old = runs
        .iter()
        .any(|run| !run["old_generation_gone_ms"].is_null());
    let row = |heading: &str, cell: &dyn Fn(&Value) -> String| {
        (heading.to_string(), runs.iter().map(cell).collect())
    };
    let p99_factor = |run: &Value| {
        at(run, &["reloading", "p99_ms"])
            .as_f64()
            .zip(at(run, &["steady", "p99_ms"]).as_f64())
            .map(|(reloading, steady)| reloading / steady)
    };
    let rows = vec![
        row("requests sent", &|run| num(&run["sent"], 0)),
        row("succeeded", &|run| num(&run["succeeded"], 0)),
        row("**failed**", &|run| {
            format!("**{}**", num(&run["failed"], 0))
        }),
        row("failed, by cause", &failure_causes),
        row("closed by the server while idle (tolerated)", &|run| {
            num(&run["keepalive_closed_idle_before_send"], 0)
        }),
        row("steady p50 ms", &|run| {
            num(at(run, &["steady", "p50_ms"]), 2)
        }),
        row("steady p99 ms", &|run| {
            num(at(run, &["steady", "p99_ms"]), 2)
        }),
        row("steady max ms", &|run| {
            num(at(run, &["steady", "max_ms"]), 2)
        }),
        row("reloading p50 ms", &|run| {
            num(at(run, &["reloading", "p50_ms"]), 2)
        }),
        row("**reloading p99 ms**", &|run| {
            format!("**{}**", num(at(run, &["reloading", "p99_ms"]), 2))
        }),
        row("reloading p99 / steady p99", &|run| {
            opt(p99_factor(run), 2) + "x"
        }),
        row("reloading max ms", &|run| {
            num(at(run, &["reloading", "max_ms"]), 2)
        }),
        row("reloading requests over 100 ms", &|run| {
            num(at(run, &["reloading", "n_slow"]), 0)
        }),
        row("SIGHUPs sent / new generation seen", &|run| {
            format!(
                "{} / {}",
                num(&run["reloads_sent"], 0),
                num(&run["new_generation_seen"], 0)
            )
        }),
        row("**SIGHUP to new generation, median ms**", &|run| {
            format!("**{}**", num(at(run, &["new_generation_ms", "median"]), 2))
        }),
        row("SIGHUP to new generation, p90 ms", &|run| {
            num(at(run, &["new_generation_ms", "p90"]), 2)
        }),
        row("SIGHUP to new generation, max ms", &|run| {
            num(at(run, &["new_generation_ms", "max"]), 2)
        }),
    ];
    let mut rows = rows;
    if with_old {
        rows.push(row(
            "**SIGHUP to old generation gone, median ms**",
            &|run| {
                format!(
                    "**{}**",
                    num(at(run, &["old_generation_gone_ms", "median"]), 2)
                )
            },
        ));
        rows.push(row("SIGHUP to old generation gone, p90 ms", &|run| {
            num(at(run, &["old_generation_gone_ms", "p90"]), 2)
        }));
        rows.push(row("old generation still there after 5 s", &|run| {
            num(&run["old_generation_stayed"], 0)
        }));
    }
    let mut out = md_table("", &titles, &rows);
    out.push('\n');
    let _ = writeln!(
        out,
        "Targets (issue 2), for glint with its defaults (the runs labelled `glint`): no failed request; SIGHUP to the first response from the new generation, median under {RELOAD_MEDIAN_MS:.0} ms; p99 while reloading under {RELOAD_P99_FACTOR:.0}x the steady p99."
    );
    out.push('\n');
    for (run, title) in runs.iter().zip(&titles) {
        if run["label"] != "glint" {
            continue;
        }
        let failed = run["failed"].as_u64();
        let median = at(run, &["new_generation_ms", "median"]).as_f64();
        let factor = p99_factor(run);
        // The idle run sends no client requests: there is no latency to compare.
        let p99 = if run["clients"].as_u64() == Some(0) {
            "no client requests (idle)".to_string()
        } else {
            format!(
                "reloading p99 {}x steady: {}",
                opt(factor, 2),
                verdict(factor.is_some_and(|factor| factor < RELOAD_P99_FACTOR))
            )
        };
        let _ = writeln!(
            out,
            "- {title}: failed {}: {}; median {} ms: {}; {p99}.",
            opt(failed.map(|n| n as f64), 0),
            verdict(failed == Some(0)),
            opt(median, 2),
            verdict(median.is_some_and(|median| median < RELOAD_MEDIAN_MS)),
        );
    }
    if with_old {
        out.push_str(&reload_effect_targets(runs, &mode_of));
    }
    let facts = &record["facts"];
    if let Some(steps) = facts["glint_child_start_ms_median"].as_str() {
        let _ = writeln!(
            out,
            "\nglint's children, from their \"serving with\" log lines (median of each step over every child this run started): {steps}."
        );
    }
    // A number when the script found one (the record parses facts as JSON values).
    let master = &facts["glint_master_sighup_to_fork_ms_median"];
    if let Some(master) = master.as_f64().map(|ms| format!("{ms:.2}")) {
        let _ = writeln!(
            out,
            "glint's master, from its log (median over the reloads): SIGHUP to the first fork {master} ms."
        );
    }
    // The last response from the old config, and the old processes' exit, per mode, from
    // glint's own log (scripts/bench-reload), timed from the master's SIGHUP line.
    let modes: Vec<&str> = record["settings"]["modes"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let per_mode = |what: &str| -> Option<String> {
        let values: Vec<Option<f64>> = modes
            .iter()
            .map(|mode| {
                facts[format!("glint_sighup_to_old_generation_{what}_ms_median_{mode}")].as_f64()
            })
            .collect();
        values.iter().any(Option::is_some).then(|| {
            modes
                .iter()
                .zip(&values)
                .map(|(mode, ms)| {
                    format!(
                        "{mode} {}",
                        ms.map_or("-".to_string(), |ms| format!("{ms:.2}"))
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    if let (Some(drained), Some(exited)) = (per_mode("drained"), per_mode("exited")) {
        let _ = writeln!(
            out,
            "glint's old generation, from its log (medians over each mode's successful reloads, from the master's SIGHUP line, which follows the probe's signal): its last child drained, after which no response of the old config comes, ms: {drained}; its last child exited and reaped, ms: {exited}."
        );
    }
    if let (Some(requested), Some(succeeded), Some(failed)) = (
        facts["glint_reloads_requested"].as_u64(),
        facts["glint_reloads_succeeded"].as_u64(),
        facts["glint_reloads_failed"].as_u64(),
    ) {
        let _ = writeln!(
            out,
            "\nglint's status file at the end: {requested} reloads requested, {succeeded} succeeded, {failed} failed."
        );
    }
    out
}

/// Issue 13's reload targets, for each mode glint and nginx both ran: SIGHUP to the first
/// response from the new generation at most nginx's (and at most 5 ms idle); the old
/// generation gone within twice glint's own time to the new one.
fn reload_effect_targets(runs: &[Value], mode_of: &dyn Fn(&Value) -> String) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nTargets (issue 13, part 1): SIGHUP to the first response from the new generation, median, at most nginx's in the same mode and run, and at most {RELOAD_IDLE_MS:.0} ms idle; SIGHUP to the old generation gone (every child from before the SIGHUP exited: no response from the old config can come later), median, at most twice glint's own median to the new generation.\n"
    );
    let median = |run: &Value, key: &str| at(run, &[key, "median"]).as_f64();
    for glint in runs.iter().filter(|run| run["label"] == "glint") {
        let mode = mode_of(glint);
        let new = median(glint, "new_generation_ms");
        let old = median(glint, "old_generation_gone_ms");
        let nginx = runs
            .iter()
            .find(|run| run["label"] == "nginx" && mode_of(run) == mode)
            .and_then(|run| median(run, "new_generation_ms"));
        let mut parts = vec![format!(
            "new generation {} ms against nginx's {}: {}",
            opt(new, 2),
            opt(nginx, 2),
            verdict(new.zip(nginx).is_some_and(|(new, nginx)| new <= nginx))
        )];
        if mode == "idle" {
            parts.push(format!(
                "at most {RELOAD_IDLE_MS:.0} ms: {}",
                verdict(new.is_some_and(|new| new <= RELOAD_IDLE_MS))
            ));
        }
        parts.push(format!(
            "old generation gone {} ms, at most 2x {}: {}",
            opt(old, 2),
            opt(new, 2),
            verdict(old.zip(new).is_some_and(|(old, new)| old <= 2.0 * new))
        ));
        let _ = writeln!(out, "- glint {mode}: {}.", parts.join("; "));
    }
    out
}

// ---- load -------------------------------------------------------------------------------------

/// Every run of a request-rate record side by side: rate, latency, failures, memory and CPU.
fn load_runs_table(runs: &[Value]) -> String {
    let title = |run: &Value| {
        format!(
            "{} {}",
            run["label"].as_str().unwrap_or("?"),
            run["mode"].as_str().unwrap_or("?")
        )
    };
    let titles: Vec<String> = runs.iter().map(title).collect();
    let row = |heading: &str, cell: &dyn Fn(&Value) -> String| {
        (heading.to_string(), runs.iter().map(cell).collect())
    };
    let resources =
        |run: &Value, keys: &[&str], decimals: usize| num(at(&run["resources"], keys), decimals);
    let rows = vec![
        row("**requests/s**", &|run| {
            format!("**{}**", num(&run["requests_per_s"], 0))
        }),
        row("p50 ms", &|run| num(at(run, &["steady", "p50_ms"]), 2)),
        row("**p99 ms**", &|run| {
            format!("**{}**", num(at(run, &["steady", "p99_ms"]), 2))
        }),
        row("max ms", &|run| num(at(run, &["steady", "max_ms"]), 2)),
        row("requests sent", &|run| num(&run["sent"], 0)),
        row("failed", &|run| num(&run["failed"], 0)),
        row("RSS master max MiB", &|run| {
            resources(run, &["rss_mib", "master_max"], 1)
        }),
        row("RSS children max MiB", &|run| {
            at(&run["resources"], &["rss_mib", "children_max"])
                .as_array()
                .map_or("-".to_string(), |children| {
                    children
                        .iter()
                        .map(|child| num(child, 1))
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
        }),
        row("CPU s master", &|run| {
            resources(run, &["cpu_s", "master"], 2)
        }),
        row("CPU s children", &|run| {
            resources(run, &["cpu_s", "children"], 2)
        }),
        row("CPU s load generator", &|run| {
            resources(run, &["cpu_s", "load_generator"], 2)
        }),
        row("server CPU µs/request", &|run| {
            resources(run, &["cpu_us_per_request", "server"], 1)
        }),
        row("load generator CPU µs/request", &|run| {
            resources(run, &["cpu_us_per_request", "load_generator"], 1)
        }),
    ];
    md_table("", &titles, &rows)
}

fn load_table(runs: &[Value], record: &Value) -> String {
    let mut out = load_runs_table(runs);
    let title = |run: &Value| {
        format!(
            "{} {}",
            run["label"].as_str().unwrap_or("?"),
            run["mode"].as_str().unwrap_or("?")
        )
    };

    // glint against nginx for each path and mode that both ran.
    let find = |server: &str, path: &str, mode: &str| {
        runs.iter().find(|run| {
            run["label"].as_str() == Some(&format!("{server} {path}")) && run["mode"] == mode
        })
    };
    let mut pairs = Vec::new();
    for run in runs {
        let label = run["label"].as_str().unwrap_or("");
        let (Some(path), Some(mode)) = (label.strip_prefix("glint "), run["mode"].as_str()) else {
            continue;
        };
        if let Some(nginx) = find("nginx", path, mode) {
            let ratio = run["requests_per_s"]
                .as_f64()
                .zip(nginx["requests_per_s"].as_f64())
                .map(|(glint, nginx)| glint / nginx);
            pairs.push((path.to_string(), mode.to_string(), ratio, run, nginx));
        }
    }
    out.push('\n');
    if !pairs.is_empty() {
        let ratios: Vec<String> = pairs
            .iter()
            .map(|(path, mode, ratio, _, _)| format!("{path} {mode} {}", opt(*ratio, 2)))
            .collect();
        let _ = writeln!(
            out,
            "glint's requests/s as a share of nginx's, same run: {}.\n",
            ratios.join(", ")
        );
    }
    let clients = record["settings"]["clients"]
        .as_u64()
        .or_else(|| runs.first().and_then(|run| run["clients"].as_u64()));
    let _ = writeln!(
        out,
        "Targets (issue 5): `GET /v2/images/{{id}}` with keep-alive at least {:.0} % of nginx's requests/s; p99 under {LOAD_P99_MS:.0} ms at 16 clients.\n",
        LOAD_IMAGE_RATIO * 100.0
    );
    match pairs
        .iter()
        .find(|(path, mode, _, _, _)| path == "image" && mode == "keepalive")
    {
        Some((_, _, ratio, glint, nginx)) => {
            let _ = writeln!(
                out,
                "- image, keep-alive: {} of nginx's requests/s ({} against {}): {}.",
                opt(*ratio, 2),
                num(&glint["requests_per_s"], 0),
                num(&nginx["requests_per_s"], 0),
                verdict(ratio.is_some_and(|ratio| ratio >= LOAD_IMAGE_RATIO))
            );
        }
        None => {
            let _ = writeln!(out, "- image, keep-alive: not run side by side with nginx.");
        }
    }
    let glint_p99: Vec<(String, Option<f64>)> = runs
        .iter()
        .filter(|run| {
            run["label"]
                .as_str()
                .is_some_and(|l| l.starts_with("glint"))
        })
        .map(|run| (title(run), at(run, &["steady", "p99_ms"]).as_f64()))
        .collect();
    let worst = glint_p99
        .iter()
        .filter_map(|(title, p99)| p99.map(|p99| (title, p99)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let all_met = glint_p99
        .iter()
        .all(|(_, p99)| p99.is_some_and(|p99| p99 < LOAD_P99_MS));
    if let Some((title, p99)) = worst {
        let _ = writeln!(
            out,
            "- p99 at {} clients, every glint run: highest {p99:.2} ms ({title}): {}.",
            opt(clients.map(|n| n as f64), 0),
            verdict(all_met && clients == Some(16))
        );
    }
    let facts = &record["facts"];
    if let (Some(lines), Some(bytes)) = (
        facts["glint_log_lines"].as_u64(),
        facts["glint_log_bytes"].as_u64(),
    ) {
        let quiet = record["settings"]["glint"]
            .as_str()
            .is_some_and(|glint| glint.contains("access_log = false"));
        let why = if quiet {
            "access_log = false: no access line"
        } else {
            "one access line per request, as shipped"
        };
        let _ = writeln!(
            out,
            "\nglint's log at the end: {lines} lines, {:.0} MB ({why}).",
            bytes as f64 / 1e6
        );
        if let Some(nginx_lines) = facts["nginx_log_lines"].as_u64() {
            let _ = writeln!(out, "nginx's access log at the end: {nginx_lines} lines.");
        }
    }
    out
}

// ---- data -------------------------------------------------------------------------------------

/// The runs of `kind` and `label`.
fn runs_of<'a>(runs: &'a [Value], kind: &str, label: &str) -> Vec<&'a Value> {
    runs.iter()
        .filter(|run| run["kind"] == kind && run["label"] == label)
        .collect()
}

/// The run with the highest `mbps`.
fn best<'a>(runs: &[&'a Value]) -> Option<&'a Value> {
    runs.iter().copied().max_by(|a, b| {
        let (a, b) = (a["mbps"].as_f64(), b["mbps"].as_f64());
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The largest value of `field` over `runs`.
fn max_u64(runs: &[&Value], field: &str) -> Option<u64> {
    runs.iter().filter_map(|run| run[field].as_u64()).max()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".to_string(), |kib| {
        format!("{:.1} MiB", kib as f64 / 1024.0)
    })
}

fn data_table(runs: &[Value], record: &Value) -> String {
    let glint_down = runs_of(runs, "download", "glint");
    let nginx_down = runs_of(runs, "download", "nginx");
    let glint_up = runs_of(runs, "upload", "glint");
    let curl_up = runs_of(runs, "upload", "glint (curl -T)");
    let hash = runs_of(runs, "hash", "md5+sha512");
    let write = runs_of(runs, "write", "write+fsync");
    let openssl_sha512 = runs_of(runs, "openssl", "sha512");
    let openssl_md5 = runs_of(runs, "openssl", "md5");
    let rate = |runs: &[&Value]| best(runs).and_then(|run| run["mbps"].as_f64());
    let ratio = |value: Option<f64>, reference: Option<f64>| {
        value
            .zip(reference)
            .map(|(value, reference)| value / reference)
    };
    let down_ratio = ratio(rate(&glint_down), rate(&nginx_down));
    let up_ratio = ratio(rate(&glint_up), rate(&hash));
    let pct = |ratio: Option<f64>| ratio.map_or("-".to_string(), |r| format!("{:.0} %", r * 100.0));
    let titles: Vec<String> = [
        "MB/s (best)",
        "reference MB/s (best), same run",
        "ratio",
        "target",
        "child RSS max (10 ms samples)",
        "child VmHWM",
    ]
    .iter()
    .map(|title| title.to_string())
    .collect();
    let blank = |cells: &[String]| {
        let mut cells = cells.to_vec();
        cells.resize(titles.len(), String::new());
        cells
    };
    let mut rows = vec![
        (
            format!("**glint download** (best of {})", glint_down.len()),
            vec![
                opt(rate(&glint_down), 1),
                format!("{} (nginx)", opt(rate(&nginx_down), 1)),
                format!("**{}**", pct(down_ratio)),
                format!(
                    ">= {:.0} %: {}",
                    DATA_DOWNLOAD_RATIO * 100.0,
                    verdict(down_ratio.is_some_and(|r| r >= DATA_DOWNLOAD_RATIO))
                ),
                mib(max_u64(&glint_down, "rss_max_kib")),
                mib(max_u64(&glint_down, "hwm_kib")),
            ],
        ),
        (
            format!("**glint upload** (best of {})", glint_up.len()),
            vec![
                opt(rate(&glint_up), 1),
                format!("{} (md5+sha512, 1 core)", opt(rate(&hash), 1)),
                format!("**{}**", pct(up_ratio)),
                format!(
                    ">= {:.0} %: {}",
                    DATA_UPLOAD_RATIO * 100.0,
                    verdict(up_ratio.is_some_and(|r| r >= DATA_UPLOAD_RATIO))
                ),
                mib(max_u64(&glint_up, "rss_max_kib")),
                mib(max_u64(&glint_up, "hwm_kib")),
            ],
        ),
    ];
    if let Some(up) = best(&glint_up) {
        rows.push((
            "glint upload, to the last body byte sent (before the server's fsync)".to_string(),
            blank(&[num(&up["mbps_body_sent"], 1)]),
        ));
    }
    let inspect_off = runs_of(runs, "inspect", "off");
    let inspect_on = runs_of(runs, "inspect", "on");
    if !inspect_on.is_empty() {
        // The cost as a share of the pass without the inspector: 1 - on/off, from the median of
        // each (both measured in every round, one right after the other).
        let cost = median(&each(&inspect_on, &["mbps"]))
            .zip(median(&each(&inspect_off, &["mbps"])))
            .map(|(on, off)| 1.0 - on / off);
        rows.push((
            format!(
                "**format inspection cost**: md5+sha512 on 1 core with the inspector vs without (median of {})",
                inspect_on.len()
            ),
            vec![
                opt(median(&each(&inspect_on, &["mbps"])), 1),
                format!("{} (without)", opt(median(&each(&inspect_off, &["mbps"])), 1)),
                format!(
                    "**{}** slower",
                    cost.map_or("-".to_string(), |c| format!("{:.1} %", c * 100.0))
                ),
                format!(
                    "<= {:.0} %: {}",
                    INSPECT_COST * 100.0,
                    verdict(cost.is_some_and(|c| c <= INSPECT_COST))
                ),
                String::new(),
                String::new(),
            ],
        ));
    }
    // Issue 13: the slowest of three references, each the best of its runs.
    let references = [
        ("sha512", rate(&openssl_sha512)),
        ("md5", rate(&openssl_md5)),
        ("disk", rate(&write)),
    ];
    let slowest = references
        .iter()
        .filter_map(|(name, rate)| rate.map(|rate| (*name, rate)))
        .min_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
        .filter(|_| references.iter().all(|(_, rate)| rate.is_some()));
    if let Some((slowest_name, slowest_rate)) = slowest {
        let version = best(&openssl_sha512)
            .and_then(|run| run["openssl"].as_str())
            .unwrap_or("OpenSSL");
        rows.push((
            format!(
                "reference: slowest of sha512/md5/disk (best of {} each; sha512 and md5 by `openssl speed`, {version}, 1 core; disk: write+fsync)",
                openssl_sha512.len()
            ),
            blank(&[format!(
                "{slowest_rate:.1} ({slowest_name}; sha512 {}, md5 {}, disk {})",
                opt(references[0].1, 1),
                opt(references[1].1, 1),
                opt(references[2].1, 1)
            )]),
        ));
        for (name, ups) in [("curl -T", &curl_up), ("data_load, sendfile", &glint_up)] {
            let Some(up) = rate(ups) else { continue };
            let ratio = up / slowest_rate;
            rows.push((
                format!(
                    "**glint upload ({name}) vs the slowest reference** (best of {})",
                    ups.len()
                ),
                vec![
                    format!("{up:.1}"),
                    format!("{slowest_rate:.1} ({slowest_name})"),
                    format!("**{:.0} %**", ratio * 100.0),
                    format!(
                        ">= {:.0} %: {}",
                        DATA_UPLOAD_SLOWEST_RATIO * 100.0,
                        verdict(ratio >= DATA_UPLOAD_SLOWEST_RATIO)
                    ),
                    mib(max_u64(ups, "rss_max_kib")),
                    mib(max_u64(ups, "hwm_kib")),
                ],
            ));
        }
    } else if let Some(write) = best(&write) {
        // Records from before issue 13 measured the disk alone, as context.
        rows.push((
            "disk: 64 KiB writes + fsync, no hashing (context, no target)".to_string(),
            blank(&[num(&write["mbps"], 1)]),
        ));
    }
    for (name, run) in [
        ("upload", best(&glint_up)),
        ("upload (curl -T)", best(&curl_up)),
        ("download", best(&glint_down)),
    ] {
        if let Some(run) = run {
            rows.push((
                format!("glint child CPU during the best {name}: user / system s"),
                blank(&[format!(
                    "{} / {} of {} s",
                    num(&run["cpu_user_s"], 2),
                    num(&run["cpu_system_s"], 2),
                    num(&run["seconds"], 2)
                )]),
            ));
            // Where an upload's CPU went: each glint thread (by name) and curl. (A download's
            // is almost all the kernel's sendfile: its thread list says little.)
            let threads = run["thread_cpu_s"]
                .as_object()
                .filter(|threads| !threads.is_empty());
            if let Some(threads) = threads.filter(|_| run["kind"] == "upload") {
                let mut parts: Vec<String> = threads
                    .iter()
                    .map(|(thread, seconds)| format!("{thread} {}", num(seconds, 2)))
                    .collect();
                if !run["curl_cpu_user_s"].is_null() {
                    parts.push(format!(
                        "curl {} user + {} system",
                        num(&run["curl_cpu_user_s"], 2),
                        num(&run["curl_cpu_system_s"], 2)
                    ));
                }
                rows.push((
                    format!("CPU seconds by thread during the best {name}"),
                    blank(&[parts.join("; ")]),
                ));
            }
        }
    }
    let mut out = md_table("", &titles, &rows);

    // Every run, so that the spread is visible next to the best; run in rounds (each reference
    // measured right beside the glint transfer it is compared with), one row per round.
    let mbps = |runs: &[&Value], index: usize| runs.get(index).and_then(|run| run["mbps"].as_f64());
    if record["settings"]["order"] == "rounds" {
        let rounds = glint_up.len().max(glint_down.len());
        let rows: Vec<(String, Vec<String>)> = (0..rounds)
            .map(|index| {
                let (up, hashed) = (mbps(&glint_up, index), mbps(&hash, index));
                let (down, nginx) = (mbps(&glint_down, index), mbps(&nginx_down, index));
                let mut cells = vec![
                    opt(up, 1),
                    opt(hashed, 1),
                    pct(ratio(up, hashed)),
                    opt(down, 1),
                    opt(nginx, 1),
                    pct(ratio(down, nginx)),
                ];
                if slowest.is_some() {
                    let references = [
                        mbps(&openssl_sha512, index),
                        mbps(&openssl_md5, index),
                        mbps(&write, index),
                    ];
                    let slowest = references
                        .iter()
                        .flatten()
                        .copied()
                        .reduce(f64::min)
                        .filter(|_| references.iter().all(Option::is_some));
                    let curl = mbps(&curl_up, index);
                    cells.extend([
                        opt(references[0], 1),
                        opt(references[1], 1),
                        opt(references[2], 1),
                        opt(curl, 1),
                        pct(ratio(curl, slowest)),
                    ]);
                }
                (format!("{}", index + 1), cells)
            })
            .collect();
        let mut titles: Vec<String> = [
            "glint upload MB/s",
            "md5+sha512 MB/s",
            "ratio",
            "glint download MB/s",
            "nginx download MB/s",
            "ratio",
        ]
        .iter()
        .map(|title| title.to_string())
        .collect();
        if slowest.is_some() {
            titles.extend(
                [
                    "openssl sha512 MB/s",
                    "openssl md5 MB/s",
                    "disk write+fsync MB/s",
                    "glint upload (curl -T) MB/s",
                    "vs slowest",
                ]
                .iter()
                .map(|title| title.to_string()),
            );
        }
        let _ = writeln!(out, "\nEach round, in the order run:\n");
        out.push_str(&md_table("round", &titles, &rows));
    } else {
        let every = |runs: &[&Value]| {
            runs.iter()
                .map(|run| num(&run["mbps"], 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "\nEvery run, MB/s: glint download {}; nginx download {}; glint upload {}; md5+sha512 {}.",
            every(&glint_down),
            every(&nginx_down),
            every(&glint_up),
            every(&hash),
        );
    }

    let transfers: Vec<&Value> = glint_up
        .iter()
        .chain(&curl_up)
        .chain(&glint_down)
        .copied()
        .collect();
    let rss = max_u64(&transfers, "rss_max_kib").max(max_u64(&transfers, "hwm_kib"));
    let rss_met = rss.is_some_and(|rss| rss < DATA_RSS_KIB);
    let _ = writeln!(
        out,
        "\nTargets (issue 3): download at least {:.0} % of nginx's rate: {}; upload at least {:.0} % of the single-core md5+sha512 rate: {}; glint child RSS under {} MiB throughout: {} ({} at most).",
        DATA_DOWNLOAD_RATIO * 100.0,
        verdict(down_ratio.is_some_and(|r| r >= DATA_DOWNLOAD_RATIO)),
        DATA_UPLOAD_RATIO * 100.0,
        verdict(up_ratio.is_some_and(|r| r >= DATA_UPLOAD_RATIO)),
        DATA_RSS_KIB / 1024,
        verdict(rss_met),
        mib(rss)
    );
    if let (Some((name, slowest)), Some(curl)) = (slowest, rate(&curl_up)) {
        let _ = writeln!(
            out,
            "Target (issue 13): an upload by curl -T at least {:.0} % of the slowest of sha512, md5 and the disk ({name}, {slowest:.1} MB/s): {} ({:.0} %).",
            DATA_UPLOAD_SLOWEST_RATIO * 100.0,
            verdict(curl / slowest >= DATA_UPLOAD_SLOWEST_RATIO),
            curl / slowest * 100.0
        );
    }
    if let (Some(hash), Some(up)) = (best(&hash), best(&glint_up)) {
        let same = glint_up
            .iter()
            .chain(&curl_up)
            .all(|up| hash["md5"] == up["checksum"] && hash["sha512"] == up["os_hash_value"]);
        let _ = writeln!(
            out,
            "Every upload's `checksum` and `os_hash_value` ({}) equal the reference's md5 and sha512: {}.",
            up["os_hash_algo"].as_str().unwrap_or("?"),
            if same { "yes" } else { "**NO**" }
        );
    }
    if let Some(bytes) = record["settings"]["bytes"].as_u64() {
        let _ = writeln!(out, "Image size {bytes} bytes; MB are 10^6 bytes.");
    }
    out
}

// ---- reload-memory ----------------------------------------------------------------------------

fn memory_table(runs: &[Value], _record: &Value) -> String {
    let samples: Vec<&Value> = runs.iter().filter(|run| run["kind"] == "sample").collect();
    let rows: Vec<(String, Vec<String>)> = samples
        .iter()
        .map(|sample| {
            (
                num(&sample["reloads"], 0),
                vec![num(&sample["vmrss_kib"], 0), num(&sample["seconds"], 1)],
            )
        })
        .collect();
    let mut out = md_table(
        "reloads",
        &["master VmRSS (KiB)".to_string(), "seconds".to_string()],
        &rows,
    );
    let kib = |sample: Option<&&Value>| sample.and_then(|sample| sample["vmrss_kib"].as_i64());
    let reloads = |sample: Option<&&Value>| sample.and_then(|sample| sample["reloads"].as_u64());
    let (first, second, last) = (samples.first(), samples.get(1), samples.last());
    out.push('\n');
    if let (Some(first_kib), Some(last_kib)) = (kib(first), kib(last)) {
        let _ = write!(
            out,
            "Growth from the first sample to the last: {} KiB",
            last_kib - first_kib
        );
        if let (Some(second_kib), Some(from), Some(to)) =
            (kib(second), reloads(second), reloads(last))
        {
            let _ = write!(
                out,
                "; from reload {from} to reload {to}: {} KiB",
                last_kib - second_kib
            );
        }
        out.push_str(".\n");
        // The last sample that differs from the one before it: the series is flat after it.
        let last_change = samples
            .windows(2)
            .rev()
            .find(|pair| kib(pair.first()) != kib(pair.get(1)))
            .and_then(|pair| reloads(pair.get(1)));
        let end = reloads(last);
        match (last_change, end) {
            (Some(change), Some(end)) => {
                let _ = writeln!(
                    out,
                    "The last change between two samples was at reload {change}; flat over the last {} reloads.",
                    end - change
                );
            }
            (None, Some(end)) => {
                let _ = writeln!(out, "No change between any two samples over {end} reloads.");
            }
            _ => {}
        }
    }
    if let Some(end) = runs.iter().find(|run| run["kind"] == "end") {
        let seconds = last.and_then(|sample| sample["seconds"].as_f64());
        let succeeded = end["reloads_succeeded"].as_u64();
        let per_reload = seconds
            .zip(succeeded)
            .filter(|(_, n)| *n > 0)
            .map(|(seconds, n)| seconds * 1000.0 / n as f64);
        let _ = writeln!(
            out,
            "glint's status file at the end: {} reloads succeeded, {} failed ({} ms per awaited reload on average); {} child(ren) left.",
            num(&end["reloads_succeeded"], 0),
            num(&end["reloads_failed"], 0),
            opt(per_reload, 1),
            num(&end["children"], 0),
        );
    }
    let _ = writeln!(
        out,
        "Target (issue 5): the master's memory flat over 10,000 reloads; no reference server is named for it."
    );
    out
}

// ---- keystone ---------------------------------------------------------------------------------

/// The mean of the values that are there, `None` if none is.
fn mean(values: &[Option<f64>]) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
}

/// The median of the values that are there (the mean of the middle two for an even count).
fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut present: Vec<f64> = values.iter().flatten().copied().collect();
    present.sort_by(f64::total_cmp);
    let n = present.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(present[n / 2]),
        _ => Some((present[n / 2 - 1] + present[n / 2]) / 2.0),
    }
}

/// The values of `keys` in each run (`None` where one is missing).
fn each(runs: &[&Value], keys: &[&str]) -> Vec<Option<f64>> {
    runs.iter().map(|run| at(run, keys).as_f64()).collect()
}

/// The sum of the counter `field` over `runs`.
fn total(runs: &[&Value], field: &str) -> u64 {
    runs.iter().filter_map(|run| run[field].as_u64()).sum()
}

/// Issue 11's benchmark: the same `GET /v2/images/{id}` on a glint with the keystone flavor and
/// a warm token cache, and on one with noauth, in alternating rounds (scripts/bench-keystone).
/// The runs are in the order run; the i-th run of each label is round i.
fn keystone_table(runs: &[Value], record: &Value) -> String {
    let labelled =
        |label: &str| -> Vec<&Value> { runs.iter().filter(|run| run["label"] == label).collect() };
    let (keystone, noauth) = (labelled("keystone"), labelled("noauth"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let pct = |ratio: Option<f64>| ratio.map_or("-".to_string(), |r| format!("{:.0} %", r * 100.0));
    const RATE: &[&str] = &["requests_per_s"];
    const P50: &[&str] = &["steady", "p50_ms"];
    const P99: &[&str] = &["steady", "p99_ms"];
    const CPU: &[&str] = &["resources", "cpu_us_per_request", "server"];
    // Requests/s: the mean of the runs (all measured for the same time); the rest: the median.
    let cells = |k: &[&Value], n: &[&Value]| {
        let (k_rate, n_rate) = (mean(&each(k, RATE)), mean(&each(n, RATE)));
        vec![
            opt(k_rate, 0),
            opt(n_rate, 0),
            format!("**{}**", pct(ratio(k_rate, n_rate))),
            opt(median(&each(k, P50)), 2),
            opt(median(&each(n, P50)), 2),
            opt(median(&each(k, P99)), 2),
            opt(median(&each(n, P99)), 2),
            opt(median(&each(k, CPU)), 1),
            opt(median(&each(n, CPU)), 1),
        ]
    };
    let titles: Vec<String> = [
        "keystone requests/s",
        "noauth requests/s",
        "**keystone / noauth**",
        "keystone p50 ms",
        "noauth p50 ms",
        "keystone p99 ms",
        "noauth p99 ms",
        "keystone server CPU µs/request",
        "noauth server CPU µs/request",
    ]
    .iter()
    .map(|title| title.to_string())
    .collect();
    let rounds = keystone.len().max(noauth.len());
    /// Round `index` of `runs`: its run, or none.
    fn round<'a>(runs: &[&'a Value], index: usize) -> Vec<&'a Value> {
        runs.get(index).copied().into_iter().collect()
    }
    let mut rows: Vec<(String, Vec<String>)> = (0..rounds)
        .map(|index| {
            (
                format!("{}", index + 1),
                cells(&round(&keystone, index), &round(&noauth, index)),
            )
        })
        .collect();
    rows.push((
        "**all** (requests/s: mean of the rounds; the rest: median)".to_string(),
        cells(&keystone, &noauth),
    ));
    let mut out = md_table("round", &titles, &rows);

    let per_round: Vec<f64> = (0..rounds)
        .filter_map(|index| {
            ratio(
                mean(&each(&round(&keystone, index), RATE)),
                mean(&each(&round(&noauth, index), RATE)),
            )
        })
        .collect();
    let lowest = per_round.iter().copied().min_by(f64::total_cmp);
    let highest = per_round.iter().copied().max_by(f64::total_cmp);
    let settings = &record["settings"];
    let _ = writeln!(
        out,
        "\nEach round ran the keystone server, then the noauth one, {} clients, {}, {} s measured after {} s of warm-up each. The ratio of a round went from {} to {} (median {}).",
        num(&settings["clients"], 0),
        settings["mode"].as_str().unwrap_or("?"),
        num(&settings["measured_s"], 0),
        num(&settings["warmup_s"], 0),
        pct(lowest),
        pct(highest),
        pct(median(&per_round.iter().copied().map(Some).collect::<Vec<_>>())),
    );
    let failed = total(&keystone, "failed") + total(&noauth, "failed");
    let _ = writeln!(
        out,
        "Requests sent: keystone {}, noauth {}; failed: keystone {}, noauth {}.",
        total(&keystone, "sent"),
        total(&noauth, "sent"),
        total(&keystone, "failed"),
        total(&noauth, "failed"),
    );
    if let Some(validations) = record["facts"]["keystone_validations_during_rounds"].as_u64() {
        let _ = writeln!(
            out,
            "Token validations in Keystone's access log during the rounds: {validations}{}.",
            if validations == 0 {
                " (every request was served from the token cache)"
            } else {
                ""
            }
        );
    }
    let (k_rate, n_rate) = (mean(&each(&keystone, RATE)), mean(&each(&noauth, RATE)));
    let overall = ratio(k_rate, n_rate);
    let _ = writeln!(
        out,
        "\nTarget (issue 11): `GET /v2/images/{{id}}` with Keystone auth and a warm token cache at least {:.0} % of the same with noauth, side by side in one run.\n",
        KEYSTONE_RATIO * 100.0
    );
    let _ = writeln!(
        out,
        "- keystone / noauth: {} ({} against {} requests/s, mean of {rounds} rounds){}: {}.",
        pct(overall),
        opt(k_rate, 0),
        opt(n_rate, 0),
        if failed == 0 {
            ""
        } else {
            ", with failed requests"
        },
        verdict(failed == 0 && overall.is_some_and(|ratio| ratio >= KEYSTONE_RATIO))
    );
    out
}

// ---- registry -------------------------------------------------------------------------------

/// Issue 13's large-registry benchmark (scripts/bench-registry): for each list shape, p50 and
/// p99 at each registry size, over HTTP and as `Registry::list` calls; the targets are on the
/// HTTP p99 at the largest size (the registry p99 for the shape only a Keystone caller lists).
fn registry_table(runs: &[Value], _record: &Value) -> String {
    let mut sizes: Vec<u64> = runs
        .iter()
        .filter_map(|run| run["images"].as_u64())
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut shapes: Vec<&str> = Vec::new();
    for run in runs {
        if let Some(shape) = run["shape"]
            .as_str()
            .filter(|shape| !shapes.contains(shape))
        {
            shapes.push(shape);
        }
    }
    let find = |shape: &str, via: &str, size: u64| {
        runs.iter()
            .find(|run| run["shape"] == shape && run["via"] == via && run["images"] == size)
    };
    let mut titles = Vec::new();
    for size in &sizes {
        for via in ["http", "registry"] {
            titles.push(format!("{size} images, {via} p50 ms"));
            titles.push(format!("{size} images, {via} p99 ms"));
        }
    }
    let rows: Vec<(String, Vec<String>)> = shapes
        .iter()
        .map(|shape| {
            let mut cells = Vec::new();
            for size in &sizes {
                for via in ["http", "registry"] {
                    let run = find(shape, via, *size);
                    let cell = |key: &str| run.map_or("-".to_string(), |run| num(&run[key], 2));
                    cells.push(cell("p50_ms"));
                    cells.push(cell("p99_ms"));
                }
            }
            (format!("`{shape}`"), cells)
        })
        .collect();
    let mut out = md_table("list shape (limit=25)", &titles, &rows);
    let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) else {
        return out;
    };
    let _ = writeln!(
        out,
        "\nTargets (issue 13): at {large} images, each list's p99 at most {REGISTRY_P99_MS} ms and at most {REGISTRY_GROWTH}x its p99 at {small} images (over HTTP; the `viewer` shape, which only a Keystone caller lists, as `Registry::list` calls).\n"
    );
    for shape in &shapes {
        let via = if find(shape, "http", large).is_some() {
            "http"
        } else {
            "registry"
        };
        let p99 = |size| find(shape, via, size).and_then(|run| run["p99_ms"].as_f64());
        let (Some(at_small), Some(at_large)) = (p99(small), p99(large)) else {
            continue;
        };
        let _ = writeln!(
            out,
            "- `{shape}` ({via}): p99 {at_large:.2} ms: {}; {:.2}x its {at_small:.2} ms at {small}: {}.",
            verdict(at_large <= REGISTRY_P99_MS),
            at_large / at_small,
            verdict(at_large <= REGISTRY_GROWTH * at_small),
        );
    }
    out
}

// ---- idle -------------------------------------------------------------------------------------

/// Issue 13's targets for parked idle connections: the rate with them at least this share of the
/// rate without, and the children's memory at most this much larger.
const IDLE_RATE_SHARE: f64 = 0.95;
const IDLE_MEMORY_MIB: f64 = 64.0;

/// scripts/bench-idle: the same keep-alive load without and with the idle connections parked,
/// in alternating rounds, and the children's RSS before and after the idle connections opened.
/// The i-th run of each label is round i.
fn idle_table(runs: &[Value], record: &Value) -> String {
    let idle = match &record["settings"]["idle"] {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => "?".to_string(),
    };
    let with_label = format!("{idle} idle");
    let labelled =
        |label: &str| -> Vec<&Value> { runs.iter().filter(|run| run["label"] == label).collect() };
    let (without, with) = (labelled("no idle"), labelled(&with_label));
    let memory: Vec<&Value> = runs
        .iter()
        .filter(|run| run["kind"] == "idle_rss")
        .collect();
    let rounds = without.len().max(with.len()).max(memory.len());
    let mut titles: Vec<String> = (1..=rounds).map(|round| format!("round {round}")).collect();
    titles.push("median".to_string());
    let rate = |run: Option<&&Value>| run.and_then(|run| run["requests_per_s"].as_f64());
    let p99 = |run: Option<&&Value>| run.and_then(|run| at(run, &["steady", "p99_ms"]).as_f64());
    let growth = |round: Option<&&Value>| {
        round.and_then(|round| {
            let before = round["children_rss_kib_before"].as_f64()?;
            let after = round["children_rss_kib_after"].as_f64()?;
            Some((after - before) / 1024.0)
        })
    };
    let share = |i: usize| {
        rate(with.get(i))
            .zip(rate(without.get(i)))
            .map(|(w, o)| w / o)
    };
    let series =
        |f: &dyn Fn(usize) -> Option<f64>| -> Vec<Option<f64>> { (0..rounds).map(f).collect() };
    let row = |heading: &str, values: Vec<Option<f64>>, decimals: usize| {
        let mut cells: Vec<String> = values.iter().map(|value| opt(*value, decimals)).collect();
        cells.push(format!("**{}**", opt(median(&values), decimals)));
        (heading.to_string(), cells)
    };
    let rows = vec![
        row("requests/s, no idle", series(&|i| rate(without.get(i))), 0),
        row(
            &format!("requests/s, {with_label}"),
            series(&|i| rate(with.get(i))),
            0,
        ),
        row("share of the rate without", series(&share), 3),
        row("p99 ms, no idle", series(&|i| p99(without.get(i))), 2),
        row(
            &format!("p99 ms, {with_label}"),
            series(&|i| p99(with.get(i))),
            2,
        ),
        row(
            "children's RSS growth, MiB",
            series(&|i| growth(memory.get(i))),
            1,
        ),
        row(
            "failed requests",
            (0..rounds)
                .map(|i| {
                    let failed =
                        |runs: &Vec<&Value>| runs.get(i).and_then(|run| run["failed"].as_f64());
                    Some(failed(&without).unwrap_or(0.0) + failed(&with).unwrap_or(0.0))
                })
                .collect(),
            0,
        ),
    ];
    let mut out = md_table("", &titles, &rows);
    let share = median(&series(&share));
    let growth = median(&series(&|i| growth(memory.get(i))));
    let _ = writeln!(
        out,
        "\nTargets (issue 13): with {idle} idle keep-alive connections parked, at least {:.0} % of the request rate without them, and the children's memory at most {IDLE_MEMORY_MIB:.0} MiB larger (medians over the rounds).\n",
        IDLE_RATE_SHARE * 100.0
    );
    let _ = writeln!(
        out,
        "- Request rate: {} % of the rate without: {}.",
        opt(share.map(|share| share * 100.0), 1),
        verdict(share.is_some_and(|share| share >= IDLE_RATE_SHARE))
    );
    let _ = writeln!(
        out,
        "- Memory: {} MiB more: {}.",
        opt(growth, 1),
        verdict(growth.is_some_and(|growth| growth <= IDLE_MEMORY_MIB))
    );
    out
}

// ---- doc --------------------------------------------------------------------------------------

/// Regenerates (or, with `check`, compares) every generated block of the markdown file.
/// One row per glint run of the load `records`: its rate and CPU per request beside the
/// reference run with the same path and mode in the same record, and who wrote access lines.
fn render_summary(records: &[&str]) -> Result<String, String> {
    let mut out = String::from(
        "| record | measured | commit | glint access line | nginx access line | glint requests/s | \
         nginx requests/s | glint / nginx | server CPU µs/request, glint / nginx |\n\
         |---|---|---|---|---|---:|---:|---:|---:|\n",
    );
    for path in records {
        let text = fs::read_to_string(path).map_err(|error| format!("{path}: {error}"))?;
        let record: Value = serde_json::from_str(&text)
            .map_err(|error| format!("{path}: not a record: {error}"))?;
        if record["bench"] != "load" {
            return Err(format!("{path}: a summary is of load records"));
        }
        let settings = &record["settings"];
        let glint_logs = !settings["glint"]
            .as_str()
            .unwrap_or_default()
            .contains("access_log = false");
        let nginx_logs = !settings["reference"]
            .as_str()
            .unwrap_or_default()
            .contains("access_log off");
        let says = |logs: bool| if logs { "one per request" } else { "none" };
        let runs = record["runs"].as_array().cloned().unwrap_or_default();
        let label = |run: &Value| run["label"].as_str().unwrap_or_default().to_string();
        for glint in runs.iter().filter(|run| label(run).starts_with("glint ")) {
            let rest = label(glint)["glint ".len()..].to_string();
            let Some(nginx) = runs
                .iter()
                .find(|run| label(run) == format!("nginx {rest}"))
            else {
                continue;
            };
            let rate = |run: &Value| run["requests_per_s"].as_f64().unwrap_or(0.0);
            let cpu = |run: &Value| {
                run["resources"]["cpu_us_per_request"]["server"]
                    .as_f64()
                    .unwrap_or(0.0)
            };
            let name = path.rsplit('/').next().unwrap_or(path);
            let commit = record["commit"].as_str().unwrap_or_default();
            let _ = writeln!(
                out,
                "| `{name}` ({rest}) | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} |",
                record["date"].as_str().unwrap_or_default(),
                &commit[..commit.len().min(7)],
                says(glint_logs),
                says(nginx_logs),
                rate(glint),
                rate(nginx),
                rate(glint) / rate(nginx).max(1.0),
                cpu(glint),
                cpu(nginx)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nGenerated from the records named by `{REGENERATE}` (`bench_report doc`); not typed by hand."
    );
    Ok(out)
}

fn doc(path: &str, check: bool) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|error| format!("{path}: {error}"))?;
    let mut out = String::new();
    let mut lines = text.split_inclusive('\n');
    let mut stale = Vec::new();
    let mut blocks = 0;
    while let Some(line) = lines.next() {
        out.push_str(line);
        let marker = |begin: &str| {
            line.trim_end()
                .strip_prefix(begin)
                .and_then(|rest| rest.strip_suffix("-->"))
                .map(str::trim)
        };
        let (record, summary) = match (marker(BEGIN), marker(BEGIN_SUMMARY)) {
            (Some(record), _) => (record, false),
            (None, Some(records)) => (records, true),
            (None, None) => continue,
        };
        let mut old = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line.trim_end() == END {
                closed = true;
                break;
            }
            old.push_str(line);
        }
        if !closed {
            return Err(format!("{path}: the block of {record} has no {END}"));
        }
        // A blank line before the closing marker ends the generated list for every renderer.
        let new = if summary {
            render_summary(&record.split_whitespace().collect::<Vec<_>>())?
        } else {
            render(record)?
        } + "\n";
        if old != new {
            stale.push(record.to_string());
        }
        out.push_str(&new);
        out.push_str(END);
        out.push('\n');
        blocks += 1;
    }
    if check {
        if stale.is_empty() {
            println!("{path}: {blocks} generated tables, all up to date");
            return Ok(());
        }
        return Err(format!(
            "{path}: tables differ from their records (run {REGENERATE}): {}",
            stale.join(", ")
        ));
    }
    if !stale.is_empty() {
        fs::write(path, out).map_err(|error| format!("{path}: {error}"))?;
    }
    println!(
        "{path}: {blocks} generated tables, {} rewritten",
        stale.len()
    );
    Ok(())
}
