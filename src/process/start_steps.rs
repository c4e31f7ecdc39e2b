//! What a child's start cost, step by step, from `fork()` to its ready report.
//!
//! A reload takes effect when the new children serve (issue 13, part 1); the time they spend
//! starting is most of it. Each child times its steps with this and says them in the line it
//! logs as it starts serving, so an operator sees what a start cost on their machine, and
//! `scripts/bench-reload` records the same figures from the log next to the reload's effect.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;

/// The clock of one child's start: when it began and the steps taken since.
pub struct StartSteps {
    began: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StartSteps {
    /// Starts the clock; called first thing after `fork()`.
    pub fn begin() -> StartSteps {
        let now = Instant::now();
        StartSteps {
            began: now,
            last: now,
            steps: Vec::with_capacity(8),
        }
    }

    /// Ends the step called `name`: the time since the previous step (or the start).
    pub fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }

    /// `ready 2.41 ms after fork, 1.90 ms of CPU (setup 0.05, database 0.90, ...)`, each figure
    /// in milliseconds. The CPU time is the whole process's (every thread, user and system)
    /// since the fork, which resets it: under load a start waits for the CPU more than it uses
    /// it, and the two figures tell which.
    pub fn summary(&self) -> String {
        let cpu = getrusage(UsageWho::RUSAGE_SELF)
            .map(|usage| {
                let time = |t: TimeVal| {
                    Duration::from_secs(t.tv_sec().max(0) as u64)
                        + Duration::from_micros(t.tv_usec().max(0) as u64)
                };
                millis(time(usage.user_time()) + time(usage.system_time()))
            })
            .unwrap_or_else(|_| "?".to_string());
        let mut line = format!(
            "ready {} ms after fork, {cpu} ms of CPU (",
            millis(self.last - self.began)
        );
        for (n, (name, took)) in self.steps.iter().enumerate() {
            let separator = if n == 0 { "" } else { ", " };
            let _ = write!(line, "{separator}{name} {}", millis(*took));
        }
        line.push(')');
        line
    }
}

/// Milliseconds with two decimals: a step of a start is tens of microseconds to milliseconds.
fn millis(took: Duration) -> String {
    format!("{:.2}", took.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_each_step_in_order_and_the_total_is_their_sum() {
        let mut steps = StartSteps::begin();
        steps.done("log");
        steps.done("database");
        let line = steps.summary();
        assert!(line.starts_with("ready "), "{line}");
        let names: Vec<&str> = line
            .split_once('(')
            .unwrap()
            .1
            .trim_end_matches(')')
            .split(", ")
            .map(|step| step.split(' ').next().unwrap())
            .collect();
        assert_eq!(names, ["log", "database"]);
        let total: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let cpu = line
            .split_once("fork, ")
            .unwrap()
            .1
            .split(' ')
            .next()
            .unwrap();
        assert!(cpu.parse::<f64>().is_ok(), "{line}");
        let sum: f64 = steps
            .steps
            .iter()
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .sum();
        assert!(
            (total - sum).abs() < 0.02,
            "{line}: total {total}, sum {sum}"
        );
    }
}
