//! A policy file, any bytes: the loader and validator never panic; every problem they report
//! for the file points at a line and column inside it; and a policy that loads has one stable
//! hash, re-validates when its normal form is written back out as YAML (same policy, same
//! hash), and migrates from v0 without a change of meaning.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::migrate::{MigrateError, v0_to_v1};
use atlasbridge_protocol::policy::{
    Action, Criteria, LoadError, LoadedPolicy, Policy, PolicyVersion, PromptTypeFilter, diff,
    load_file, load_str,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const BASE: &str = include_str!("../../tests/vectors/policies/v1-base.yaml");

/// One directory under the system temp directory, shared by every fuzzing process, holding the
/// policy's (nonexistent) file name and one real base, so that relative `extends` resolve here
/// and `extends: v1-base.yaml` merges. The base is replaced atomically and only when it differs,
/// so that parallel processes never see it half written.
fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("atlasbridge-fuzz-policy");
        std::fs::create_dir_all(&dir).expect("create the fuzz directory");
        let base = dir.join("v1-base.yaml");
        if std::fs::read_to_string(&base).ok().as_deref() != Some(BASE) {
            let tmp = dir.join(format!("v1-base.yaml.{}", std::process::id()));
            std::fs::write(&tmp, BASE).expect("write the base policy");
            std::fs::rename(&tmp, &base).expect("put the base policy in place");
        }
        dir
    })
}

fuzz_target!(|bytes: &[u8]| {
    // `extends` reads whatever path it names; a device or a pseudo file would only measure how
    // long reading it takes (or block on a terminal), so those inputs are left out.
    if [&b"/dev"[..], b"/proc", b"/sys"]
        .iter()
        .any(|p| bytes.windows(p.len()).any(|w| w == *p))
    {
        return;
    }
    let file = dir().join("policy.yaml");
    match std::str::from_utf8(bytes) {
        Ok(text) => check_text(text, &file),
        Err(e) => check_not_utf8(bytes, e.valid_up_to()),
    }
});

fn check_text(text: &str, file: &Path) {
    match load_str(text, file) {
        Err(err) => check_places(&err, text, file),
        Ok(loaded) => {
            check_loaded(&loaded, file);
            assert_eq!(
                load_str(text, file).as_ref(),
                Ok(&loaded),
                "loading is deterministic"
            );
            if loaded.policy.policy_version == PolicyVersion::V0 {
                check_migration(text, file, &loaded);
            }
        }
    }
}

/// A file that is not UTF-8 is refused at the first bad byte, placed like every other problem.
fn check_not_utf8(bytes: &[u8], valid_up_to: usize) {
    let file = dir().join(format!("raw-{}.yaml", std::process::id()));
    std::fs::write(&file, bytes).expect("write the input");
    let loaded = load_file(&file);
    let _ = std::fs::remove_file(&file);
    let err = loaded.expect_err("a file that is not UTF-8 does not load");
    assert_eq!(err.errors.len(), 1, "{err}");
    let prefix = std::str::from_utf8(&bytes[..valid_up_to]).expect("the valid prefix");
    let (line, column) = end_of(prefix);
    let e = &err.errors[0];
    assert_eq!(
        (e.line, e.column),
        (line, column),
        "the first byte that is not UTF-8 is at {line}:{column}: {err}"
    );
}

/// 1-based line and column (in characters) just after `text`, with line breaks as YAML counts
/// them: `\r\n`, `\r` or `\n`.
fn end_of(text: &str) -> (u64, u64) {
    let (mut line, mut column) = (1u64, 1u64);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
    }
    (line, column)
}

/// Every problem reported against the file itself lies inside the text (or just after its last
/// character); problems of a base file are that file's business.
fn check_places(err: &LoadError, text: &str, file: &Path) {
    assert!(
        !err.errors.is_empty(),
        "a load error names at least one problem"
    );
    let lines: Vec<u64> = line_lengths(text);
    for e in err.errors.iter().filter(|e| e.file == file) {
        assert!(!e.message.is_empty(), "{err}");
        let line = usize::try_from(e.line).unwrap_or(usize::MAX);
        assert!(
            (1..=lines.len()).contains(&line),
            "line {} outside 1..={}: {err}",
            e.line,
            lines.len()
        );
        let width = lines[line - 1];
        assert!(
            (1..=width + 1).contains(&e.column),
            "column {} outside 1..={} on line {}: {err}",
            e.column,
            width + 1,
            e.line
        );
    }
}

/// Characters on each line, the line breaks not counted.
fn line_lengths(text: &str) -> Vec<u64> {
    let mut lines = vec![0u64];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => lines.push(0),
            _ => *lines.last_mut().expect("never empty") += 1,
        }
    }
    lines
}

fn check_loaded(loaded: &LoadedPolicy, file: &Path) {
    let hash = loaded.policy.hash();
    assert_eq!(loaded.hash, hash, "the hash is that of the normal form");
    assert_eq!(loaded.policy.clone().hash(), hash, "the hash is stable");
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{hash}"
    );
    assert_eq!(loaded.sources.first().map(PathBuf::as_path), Some(file));
    assert!(diff(&loaded.policy, &loaded.policy).is_empty());

    // The normal form, written back as a self-contained file, loads as the same policy.
    let again_file = dir().join("again.yaml");
    let text = to_yaml(&file_form(&loaded.policy));
    let again = match load_str(&text, &again_file) {
        Ok(again) => again,
        Err(e) => panic!("the normal form does not re-validate:\n{text}\n{e}"),
    };
    assert_eq!(again.policy, loaded.policy, "{text}");
    assert_eq!(again.hash, loaded.hash, "{text}");
}

/// v0 → v1 rewrites one line; it may find no line to rewrite, but never changes the meaning.
fn check_migration(text: &str, file: &Path, loaded: &LoadedPolicy) {
    match v0_to_v1(text, file) {
        Ok(migrated) => {
            let v1 = load_str(&migrated, file).expect("the migrated text loads");
            let mut as_v0 = v1.policy.clone();
            as_v0.policy_version = PolicyVersion::V0;
            assert_eq!(as_v0, loaded.policy);
        }
        Err(MigrateError::NoVersionLine(_)) => {}
        Err(e) => panic!("v0 policy does not migrate: {e}"),
    }
}

/// The normal form as the file keys spell it: defaults that the loader fills in are left out
/// where spelling them out would change what is allowed (flat criteria beside `any_of`).
fn file_form(policy: &Policy) -> Value {
    let rules: Vec<Value> = policy
        .rules
        .iter()
        .map(|r| {
            let mut rule = Map::new();
            rule.insert("id".into(), json!(r.id));
            if let Some(d) = &r.description {
                rule.insert("description".into(), json!(d));
            }
            rule.insert("match".into(), criteria(&r.matcher));
            rule.insert("action".into(), action(&r.action));
            if let Some(n) = r.max_auto_replies {
                rule.insert("max_auto_replies".into(), json!(n));
            }
            Value::Object(rule)
        })
        .collect();
    json!({
        "policy_version": policy.policy_version.as_str(),
        "name": policy.name,
        "autonomy_mode": policy.autonomy_mode.as_str(),
        "rules": rules,
        "defaults": {
            "no_match": policy.defaults.no_match.as_str(),
            "low_confidence": policy.defaults.low_confidence.as_str(),
        },
    })
}

fn criteria(c: &Criteria) -> Value {
    let mut m = Map::new();
    if c.tool_id != "*" {
        m.insert("tool_id".into(), json!(c.tool_id));
    }
    if let Some(repo) = &c.repo {
        m.insert("repo".into(), json!(repo));
    }
    if c.prompt_type != [PromptTypeFilter::Any] {
        let names: Vec<&str> = c.prompt_type.iter().map(|t| t.as_str()).collect();
        m.insert("prompt_type".into(), json!(names));
    }
    if c.min_confidence != Confidence::Low {
        m.insert("min_confidence".into(), json!(c.min_confidence.name()));
    }
    if let Some(max) = c.max_confidence {
        m.insert("max_confidence".into(), json!(max.name()));
    }
    if let Some(contains) = &c.contains {
        m.insert("contains".into(), json!(contains.text));
        m.insert("contains_is_regex".into(), json!(contains.is_regex));
    }
    if let Some(tag) = &c.session_tag {
        m.insert("session_tag".into(), json!(tag));
    }
    for (key, blocks) in [("any_of", &c.any_of), ("none_of", &c.none_of)] {
        if let Some(blocks) = blocks {
            m.insert(
                key.into(),
                Value::Array(blocks.iter().map(criteria).collect()),
            );
        }
    }
    Value::Object(m)
}

fn action(a: &Action) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!(a.type_name()));
    match a {
        Action::AutoReply { value, constraints } => {
            m.insert("value".into(), json!(value));
            let mut c = Map::new();
            if let Some(max) = constraints.max_length {
                c.insert("max_length".into(), json!(max));
            }
            c.insert("numeric_only".into(), json!(constraints.numeric_only));
            if let Some(choices) = &constraints.allowed_choices {
                c.insert("allowed_choices".into(), json!(choices));
            }
            c.insert("allow_free_text".into(), json!(constraints.allow_free_text));
            m.insert("constraints".into(), Value::Object(c));
        }
        Action::RequireHuman { message } | Action::NotifyOnly { message } => {
            if let Some(message) = message {
                m.insert("message".into(), json!(message));
            }
        }
        Action::Deny { reason } => {
            if let Some(reason) = reason {
                m.insert("reason".into(), json!(reason));
            }
        }
    }
    Value::Object(m)
}

/// YAML flow style, every string double-quoted with anything but printable ASCII escaped, so
/// the text is plain YAML whatever the strings hold.
fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, &mut out);
    out.push('\n');
    out
}

fn write_yaml(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    ' '..='~' => out.push(c),
                    c if u32::from(c) <= 0xffff => {
                        out.push_str(&format!("\\u{:04x}", u32::from(c)))
                    }
                    c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
                }
            }
            out.push('"');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_yaml(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_yaml(&Value::String(key.clone()), out);
                out.push_str(": ");
                write_yaml(item, out);
            }
            out.push('}');
        }
    }
}
