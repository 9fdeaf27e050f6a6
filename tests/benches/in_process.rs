//! In-process benchmarks (criterion): what each decision and each trace line costs the daemon's
//! CPU, without sockets, disks or other threads. `scripts/bench.sh` runs them and
//! `bench-report in-process` turns criterion's estimates into the report's table, with each
//! figure's ratio to the baseline measured beside it (`serde_json` for the encoders and the
//! parser, a bare SHA-256 for the trace line checks).
//!
//! ```text
//! cargo bench -p atlasbridge-e2e --bench in_process [-- FILTER]
//! ```
//!
//! The benchmark ids are read by `src/bin/bench-report.rs`: keep the two in step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use atlasbridge_e2e::bench_fixtures::{entry_body, events, policies};
use atlasbridge_protocol::canonical::to_canonical_vec;
use atlasbridge_protocol::framing::{Frame, LineDecoder};
use atlasbridge_protocol::hash::sha256;
use atlasbridge_protocol::jsonrpc::{Incoming, decode_params, parse_incoming};
use atlasbridge_protocol::methods::EvaluateParams;
use atlasbridge_protocol::risk::{RiskInput, classify};
use atlasbridge_protocol::trace::{
    ChainKind, GENESIS_PREV_HASH, check_line, check_line_recanonicalised, seal,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

/// `Evaluator::evaluate` over the fixed set of events, per policy; one iteration decides every
/// event once.
fn policy_evaluate(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("policy_evaluate");
    group.throughput(Throughput::Elements(events.len() as u64));
    for (name, evaluator) in policies().unwrap() {
        group.bench_function(name, |b| {
            b.iter(|| {
                for event in &events {
                    black_box(evaluator.evaluate(black_box(event)));
                }
            });
        });
    }
    group.finish();
}

/// The risk classifier over the same events, as `auto_reply` decisions on a protected branch
/// with CI passing.
fn risk_classify(c: &mut Criterion) {
    let events = events();
    let tags: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            (!event.session_tag.is_empty())
                .then(|| event.session_tag.to_owned())
                .into_iter()
                .collect()
        })
        .collect();
    let inputs: Vec<RiskInput<'_>> = events
        .iter()
        .zip(&tags)
        .map(|(event, tags)| RiskInput {
            action: "auto_reply",
            prompt_type: event.prompt_type,
            confidence: event.confidence,
            prompt_text: event.prompt_text,
            branch: "main",
            ci_status: "passing",
            session_tags: tags,
        })
        .collect();
    let mut group = c.benchmark_group("risk");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("classify", |b| {
        b.iter(|| {
            for input in &inputs {
                black_box(classify(black_box(input)));
            }
        });
    });
    group.finish();
}

/// Canonical JSON (RFC 8785) of one trace entry, against `serde_json`'s plain encoder.
fn canonical(c: &mut Criterion) {
    let entry = Value::Object(entry_body(4_711, GENESIS_PREV_HASH));
    let mut group = c.benchmark_group("canonical");
    group.throughput(Throughput::Bytes(to_canonical_vec(&entry).len() as u64));
    group.bench_function("entry", |b| b.iter(|| to_canonical_vec(black_box(&entry))));
    group.bench_function("serde_json_to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&entry)).unwrap());
    });
    group.finish();
}

/// One stored trace line: sealing it (canonical form + SHA-256), and checking it as the
/// verifier does on its fast path and on its slow path, against a bare SHA-256 of its bytes.
fn trace_line(c: &mut Criterion) {
    let body = entry_body(4_711, GENESIS_PREV_HASH);
    let sealed = seal(&body);
    let line = sealed.line.strip_suffix(b"\n").unwrap_or(&sealed.line);
    assert!(check_line(line, ChainKind::Trace).is_ok());
    let mut group = c.benchmark_group("trace_line");
    group.throughput(Throughput::Bytes(sealed.line.len() as u64));
    group.bench_function("seal", |b| b.iter(|| seal(black_box(&body))));
    group.bench_function("check_fast", |b| {
        b.iter(|| check_line(black_box(line), ChainKind::Trace).unwrap());
    });
    group.bench_function("check_slow", |b| {
        b.iter(|| check_line_recanonicalised(black_box(line), ChainKind::Trace).unwrap());
    });
    group.bench_function("sha256", |b| b.iter(|| sha256(black_box(line))));
    group.finish();
}

/// A `decision.evaluate` request as the socket layer meets it: framing a buffer of lines, and
/// parsing one line into the method's params, against `serde_json` parsing it into a `Value`.
fn wire(c: &mut Criterion) {
    let request = concat!(
        r#"{"jsonrpc":"2.0","id":42,"method":"decision.evaluate","params":{"#,
        r#""session_id":"sess-7","prompt_id":"prompt-4711","prompt_type":"yes_no","#,
        r#""prompt_text":"Continue with the build? [y/n]","confidence":"high","#,
        r#""tool_id":"claude-code","agent_id":"claude-code","branch":"feature/x"}}"#
    );
    const LINES: usize = 64;
    let buffer: Vec<u8> = std::iter::repeat_n(format!("{request}\n"), LINES)
        .collect::<String>()
        .into_bytes();
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_evaluate", |b| {
        b.iter(|| {
            let Ok(Incoming::Request(request)) = parse_incoming(black_box(request.as_bytes()))
            else {
                panic!("not a request");
            };
            decode_params::<EvaluateParams>(request.params).unwrap()
        });
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(request.as_bytes())).unwrap());
    });
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("frame_64_lines", |b| {
        b.iter(|| {
            let mut decoder = LineDecoder::new();
            decoder.push(black_box(&buffer));
            let mut frames = 0;
            while let Some(Frame::Line(line)) = decoder.next_frame() {
                black_box(line);
                frames += 1;
            }
            assert_eq!(frames, LINES);
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    policy_evaluate,
    risk_classify,
    canonical,
    trace_line,
    wire
);
criterion_main!(benches);
