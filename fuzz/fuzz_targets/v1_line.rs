//! A v1 trace line, any bytes: migration either maps it onto a v2 body that seals and verifies,
//! or names why not; it never panics.
#![no_main]

use std::path::PathBuf;

use atlasbridge_protocol::migrate::{LineRef, v2_body};
use atlasbridge_protocol::trace::{ChainKind, GENESIS_PREV_HASH, check_line, seal};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|line: &[u8]| {
    let at = LineRef {
        file: PathBuf::from("autopilot_decisions.jsonl"),
        line: 1,
    };
    if let Ok(mut body) = v2_body(line, &at) {
        body.insert("seq".to_owned(), Value::from(0u64));
        body.insert(
            "prev_hash".to_owned(),
            Value::String(GENESIS_PREV_HASH.to_owned()),
        );
        let sealed = seal(&body);
        let facts = check_line(&sealed.line, ChainKind::Trace).expect("a migrated entry verifies");
        assert_eq!(facts.entry_hash, sealed.entry_hash);
    }
});
