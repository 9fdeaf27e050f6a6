//! The in-process section of `docs/benchmarks.md`, from criterion's estimates: run by
//! `scripts/bench.sh` after `cargo bench -p atlasbridge-e2e --bench in_process`.
//!
//! ```text
//! bench-report in-process [CRITERION_DIR]    (default: target/criterion)
//! ```
//!
//! Each figure is criterion's mean time per iteration, divided by what one iteration does
//! (16 events, 64 lines), with the bounds of its 95% confidence interval, and its ratio to the
//! baseline benchmarked beside it. The benchmark ids are those of `benches/in_process.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../bench_support.rs"]
mod bench_support;

use std::path::{Path, PathBuf};

use atlasbridge_e2e::bench_fixtures::{events, policies};
use bench_support::{thousands, workspace};
use serde_json::Value;

/// A benchmark's mean time per iteration, in nanoseconds, with its 95% confidence interval.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    mean: f64,
    low: f64,
    high: f64,
}

impl Estimate {
    fn read(criterion: &Path, id: &str) -> Self {
        let path = criterion.join(id).join("new/estimates.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run `cargo bench -p atlasbridge-e2e --bench in_process` first)",
                path.display()
            )
        });
        let estimates: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not criterion's estimates: {e}", path.display()));
        let mean = &estimates["mean"];
        let number = |value: &Value| {
            value
                .as_f64()
                .unwrap_or_else(|| panic!("{}: no mean estimate", path.display()))
        };
        Self {
            mean: number(&mean["point_estimate"]),
            low: number(&mean["confidence_interval"]["lower_bound"]),
            high: number(&mean["confidence_interval"]["upper_bound"]),
        }
    }

    /// Per unit, when one iteration does `units` of the work.
    fn per(self, units: usize) -> Self {
        let n = units as f64;
        Self {
            mean: self.mean / n,
            low: self.low / n,
            high: self.high / n,
        }
    }

    /// `85.2 ns (84.9–85.6)`.
    fn show(self) -> String {
        format!(
            "{} ({}–{})",
            nanos(self.mean),
            nanos_bare(self.low),
            nanos_bare(self.high)
        )
    }
}

fn nanos_bare(ns: f64) -> String {
    if ns < 100.0 {
        format!("{ns:.1}")
    } else {
        thousands(ns)
    }
}

fn nanos(ns: f64) -> String {
    format!("{} ns", nanos_bare(ns))
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("in-process") => {
            let criterion = args
                .next()
                .map_or_else(|| workspace().join("target/criterion"), PathBuf::from);
            in_process(&criterion);
        }
        _ => panic!("usage: bench-report in-process [CRITERION_DIR]"),
    }
}

fn in_process(criterion: &Path) {
    let events = events();
    println!("## In-process figures");
    println!();
    println!(
        "Bench: `cargo bench -p atlasbridge-e2e --bench in_process -- {}` (criterion). One \
         thread, no socket, no disk: what a decision or a trace line costs the daemon's CPU. \
         Each figure is criterion's mean with its 95% confidence interval, divided by what one \
         iteration does, and its ratio to the baseline benchmarked beside it in the same run.",
        std::env::var("BENCH_CRITERION_ARGS").unwrap_or_default()
    );

    println!();
    println!("### Policy evaluation and risk");
    println!();
    println!(
        "`Evaluator::evaluate` over a fixed set of {} events (every prompt type, the three \
         confidences, harmless and destructive texts, one of 330 characters, two tools, with and \
         without the `ci` session tag), for each policy of `examples/policies/` and for \
         `generated-1000`, a v1 policy of 1,000 rules written by the benchmark (plain `contains` \
         texts no event holds, behind varied prompt types, confidences and tools, a regex every \
         100 rules, `any_of` blocks, two rules a few events reach, and a last rule `match: {{}}`).",
        events.len()
    );
    println!();
    println!(
        "| policy | rules | rules tried per event (mean / max) | per decision | decisions/s, one core |"
    );
    println!("|---|---|---|---|---|");
    for (name, evaluator) in policies().unwrap() {
        let rules = evaluator.policy().rules.len();
        let tried: Vec<usize> = events
            .iter()
            .map(|event| {
                evaluator.evaluate(event).rule.map_or(rules, |rule| {
                    1 + evaluator
                        .policy()
                        .rules
                        .iter()
                        .position(|r| r.id == rule.id)
                        .unwrap_or(rules)
                })
            })
            .collect();
        let mean_tried = tried.iter().sum::<usize>() as f64 / tried.len() as f64;
        let estimate =
            Estimate::read(criterion, &format!("policy_evaluate/{name}")).per(events.len());
        println!(
            "| `{name}` | {rules} | {mean_tried:.1} / {} | {} | {} |",
            tried.iter().max().copied().unwrap_or(0),
            estimate.show(),
            thousands(1e9 / estimate.mean)
        );
    }
    let risk = Estimate::read(criterion, "risk/classify").per(events.len());
    println!();
    println!(
        "The risk classifier (`risk::classify`) on the same events, as `auto_reply` decisions on \
         `main` with CI passing: {} per decision.",
        risk.show()
    );

    let line_bytes = trace_line_bytes();
    let sha = Estimate::read(criterion, "trace_line/sha256");
    println!();
    println!("### Trace lines");
    println!();
    println!(
        "One stored entry of {line_bytes} bytes (every field of the trace specification). Baseline: a \
         bare SHA-256 of the line's bytes, which every seal and check includes."
    );
    println!();
    println!("| operation | per line | MB/s | × SHA-256 |");
    println!("|---|---|---|---|");
    for (id, label) in [
        (
            "trace_line/seal",
            "seal: canonical form of the members + `entry_hash`",
        ),
        (
            "trace_line/check_fast",
            "check, fast path: canonical bytes, fields, hash (the verifier's default)",
        ),
        (
            "trace_line/check_slow",
            "check, slow path: parse and re-canonicalise, then hash",
        ),
        ("trace_line/sha256", "SHA-256 of the line (baseline)"),
    ] {
        let estimate = Estimate::read(criterion, id);
        println!(
            "| {label} | {} | {} | {:.2} |",
            estimate.show(),
            thousands(line_bytes as f64 / estimate.mean * 1e3),
            estimate.mean / sha.mean
        );
    }

    let canonical = Estimate::read(criterion, "canonical/entry");
    let serde = Estimate::read(criterion, "canonical/serde_json_to_vec");
    let parse = Estimate::read(criterion, "wire/parse_evaluate");
    let value = Estimate::read(criterion, "wire/serde_json_value");
    let frame = Estimate::read(criterion, "wire/frame_64_lines").per(64);
    println!();
    println!("### Encoding and parsing");
    println!();
    println!("| operation | time | baseline | × baseline |");
    println!("|---|---|---|---|");
    println!(
        "| canonical JSON (RFC 8785) of one entry's members | {} | `serde_json::to_vec`, same value: {} | {:.2} |",
        canonical.show(),
        nanos(serde.mean),
        canonical.mean / serde.mean
    );
    println!(
        "| a `decision.evaluate` line → request → `EvaluateParams` | {} | `serde_json` into a `Value`: {} | {:.2} |",
        parse.show(),
        nanos(value.mean),
        parse.mean / value.mean
    );
    println!(
        "| framing: finding one line in a buffer of 64 | {} | — | — |",
        frame.show()
    );
}

/// The size of the bench's stored entry.
fn trace_line_bytes() -> usize {
    use atlasbridge_e2e::bench_fixtures::entry_body;
    use atlasbridge_protocol::trace::{GENESIS_PREV_HASH, seal};
    seal(&entry_body(4_711, GENESIS_PREV_HASH)).line.len()
}
