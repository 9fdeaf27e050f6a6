//! A stored trace line, any bytes: the fast path and the slow path must agree on every verdict,
//! and canonical JSON must be a fixed point of parse + canonicalise.
#![no_main]

use atlasbridge_protocol::canonical::{parse_strict, to_canonical_vec};
use atlasbridge_protocol::trace::{ChainKind, check_line, check_line_recanonicalised};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    for kind in [ChainKind::Trace, ChainKind::Audit] {
        let fast = check_line(line, kind);
        let slow = check_line_recanonicalised(line, kind);
        assert_eq!(fast.is_ok(), slow.is_ok(), "{fast:?} vs {slow:?}");
        match (fast, slow) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.kind, b.kind),
            _ => unreachable!(),
        }
    }
    if let Ok(value) = parse_strict(line) {
        let canonical = to_canonical_vec(&value);
        let again = parse_strict(&canonical).expect("canonical output parses");
        assert_eq!(to_canonical_vec(&again), canonical);
    }
});
