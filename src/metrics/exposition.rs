//! The text exposition (format 0.0.4) of the shared block: one `# HELP` and one `# TYPE` line per
//! family, then its samples. Names follow Prometheus' naming guide: the `glint_` prefix, `_total`
//! on counters, base units (seconds, bytes) in the name.
//!
//! [`FAMILIES`] is the one list of families: the renderer takes each family's help and type from
//! it, and docs/OPERATIONS.md's table of metrics is generated from it ([`families_markdown`]).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::block::Block;
use super::labels::{self, CACHE_RESULTS, CHILD_STATES, HANDOFF_SIDES, RELOAD_OUTCOMES, ROUTES};

/// The Content-Type of a scrape's answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family.
pub struct Family {
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const REQUESTS: Family = Family {
    name: "glint_http_requests_total",
    kind: "counter",
    labels: &["method", "route", "code"],
    help: "HTTP requests answered on the API listeners, by method, route template and status code.",
};
pub const DURATION: Family = Family {
    name: "glint_http_request_duration_seconds",
    kind: "histogram",
    labels: &["route"],
    help: "Time from a worker taking a request to its response being ready to send, by route template.",
};
pub const IN_FLIGHT: Family = Family {
    name: "glint_http_requests_in_flight",
    kind: "gauge",
    labels: &[],
    help: "Requests the worker threads of all children are handling now.",
};
pub const RECEIVED: Family = Family {
    name: "glint_http_received_bytes_total",
    kind: "counter",
    labels: &[],
    help: "Bytes read from client connections (request heads and bodies).",
};
pub const SENT: Family = Family {
    name: "glint_http_sent_bytes_total",
    kind: "counter",
    labels: &[],
    help: "Bytes written to client connections (response heads and bodies).",
};
pub const PARKED: Family = Family {
    name: "glint_parked_connections",
    kind: "gauge",
    labels: &[],
    help: "Client connections the acceptors of all children hold between requests.",
};
pub const HANDOFFS: Family = Family {
    name: "glint_handoff_connections_total",
    kind: "counter",
    labels: &["side"],
    help: "Client connections passed from a draining child to the next generation (sent) and taken by it (adopted).",
};
pub const RELOADS: Family = Family {
    name: "glint_reloads_total",
    kind: "counter",
    labels: &["outcome"],
    help: "Reloads (SIGHUP) finished, by outcome.",
};
pub const GENERATION: Family = Family {
    name: "glint_generation",
    kind: "gauge",
    labels: &[],
    help: "The current generation (1 at start, one more per successful reload).",
};
pub const CHILDREN: Family = Family {
    name: "glint_children",
    kind: "gauge",
    labels: &["state"],
    help: "Child processes, by state.",
};
pub const CACHE: Family = Family {
    name: "glint_image_cache_lookups_total",
    kind: "counter",
    labels: &["result"],
    help: "Image downloads that looked in the image cache, by result (caching flavors only).",
};
pub const REGISTRY_BUSY: Family = Family {
    name: "glint_registry_busy_waits_total",
    kind: "counter",
    labels: &[],
    help:
        "Times a registry call found the image database locked by another writer and had to wait.",
};

/// Every family, in the order a scrape shows them.
pub const FAMILIES: &[&Family] = &[
    &REQUESTS,
    &DURATION,
    &IN_FLIGHT,
    &RECEIVED,
    &SENT,
    &PARKED,
    &HANDOFFS,
    &RELOADS,
    &GENERATION,
    &CHILDREN,
    &CACHE,
    &REGISTRY_BUSY,
];

/// Renders the whole block. Request counters and histograms appear for the label sets seen at
/// least once (a series is born at its first request); every other family always has its
/// samples.
pub fn render(block: &Block) -> String {
    let load = |cell: &std::sync::atomic::AtomicU64| cell.load(Ordering::Relaxed);
    let mut out = String::with_capacity(8192);
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        let name = family.name;
        match name {
            _ if name == REQUESTS.name => {
                for (method, by_route) in block.requests.iter().enumerate() {
                    for (route, by_status) in by_route.iter().enumerate() {
                        for (status, cell) in by_status.iter().enumerate() {
                            let n = load(cell);
                            if n > 0 {
                                let _ = writeln!(
                                    out,
                                    "{name}{{method=\"{}\",route=\"{}\",code=\"{}\"}} {n}",
                                    labels::method_label(method),
                                    ROUTES[route],
                                    labels::status_label(status)
                                );
                            }
                        }
                    }
                }
            }
            _ if name == DURATION.name => {
                for (route, buckets) in block.duration_buckets.iter().enumerate() {
                    let counts: Vec<u64> = buckets.iter().map(load).collect();
                    let count: u64 = counts.iter().sum();
                    if count == 0 {
                        continue;
                    }
                    let route_label = ROUTES[route];
                    let mut cumulative = 0;
                    for (bucket, n) in counts.iter().enumerate() {
                        cumulative += n;
                        let le = labels::DURATION_BUCKETS_US
                            .get(bucket)
                            .map_or_else(|| "+Inf".to_string(), |us| seconds(*us));
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{route=\"{route_label}\",le=\"{le}\"}} {cumulative}"
                        );
                    }
                    let sum_us = load(&block.duration_sum_us[route]);
                    let _ = writeln!(
                        out,
                        "{name}_sum{{route=\"{route_label}\"}} {}",
                        seconds(sum_us)
                    );
                    let _ = writeln!(out, "{name}_count{{route=\"{route_label}\"}} {count}");
                }
            }
            _ if name == IN_FLIGHT.name => {
                let n: u64 = block
                    .used_slots()
                    .iter()
                    .map(|slot| load(&slot.in_flight))
                    .sum();
                let _ = writeln!(out, "{name} {n}");
            }
            _ if name == PARKED.name => {
                let n: u64 = block
                    .used_slots()
                    .iter()
                    .map(|slot| load(&slot.parked))
                    .sum();
                let _ = writeln!(out, "{name} {n}");
            }
            _ if name == RECEIVED.name => {
                let _ = writeln!(out, "{name} {}", load(&block.received_bytes));
            }
            _ if name == SENT.name => {
                let _ = writeln!(out, "{name} {}", load(&block.sent_bytes));
            }
            _ if name == HANDOFFS.name => {
                labelled(&mut out, name, "side", HANDOFF_SIDES, &block.handoffs)
            }
            _ if name == RELOADS.name => {
                labelled(&mut out, name, "outcome", RELOAD_OUTCOMES, &block.reloads)
            }
            _ if name == GENERATION.name => {
                let _ = writeln!(out, "{name} {}", load(&block.generation));
            }
            _ if name == CHILDREN.name => {
                labelled(&mut out, name, "state", CHILD_STATES, &block.children)
            }
            _ if name == CACHE.name => labelled(
                &mut out,
                name,
                "result",
                CACHE_RESULTS,
                &block.cache_lookups,
            ),
            _ if name == REGISTRY_BUSY.name => {
                let _ = writeln!(out, "{name} {}", load(&block.registry_busy_waits));
            }
            _ => {}
        }
    }
    out
}

/// One sample per value of a single label.
fn labelled(
    out: &mut String,
    name: &str,
    label: &str,
    values: &[&str],
    cells: &[std::sync::atomic::AtomicU64],
) {
    for (value, cell) in values.iter().zip(cells) {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            cell.load(Ordering::Relaxed)
        );
    }
}

/// Microseconds as decimal seconds, exactly (no float rounding): `2500` is `0.0025`.
fn seconds(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The table of families for docs/OPERATIONS.md ("Metrics").
pub fn families_markdown() -> String {
    let mut out = String::from("| Name | Type | Labels | Meaning |\n|---|---|---|---|\n");
    for family in FAMILIES {
        let labels = if family.labels.is_empty() {
            "none".to_string()
        } else {
            family
                .labels
                .iter()
                .map(|label| format!("`{label}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {labels} | {} |",
            family.name, family.kind, family.help
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000), "0.001");
        assert_eq!(seconds(2_500), "0.0025");
        assert_eq!(seconds(60_000_000), "60");
        assert_eq!(seconds(1_234_567), "1.234567");
    }

    #[test]
    fn every_family_is_named_by_the_naming_guide() {
        for family in FAMILIES {
            assert!(family.name.starts_with("glint_"), "{}", family.name);
            assert_eq!(
                family.kind == "counter",
                family.name.ends_with("_total"),
                "{}",
                family.name
            );
        }
    }

    #[test]
    fn the_metrics_table_in_operations_is_generated() {
        crate::generated_docs::check_block(
            crate::generated_docs::OPERATIONS,
            "<!-- metrics:begin -->\n",
            "<!-- metrics:end -->\n",
            &families_markdown(),
            "The table of metrics",
            "the_metrics_table_in_operations_is_generated",
        );
    }
}
