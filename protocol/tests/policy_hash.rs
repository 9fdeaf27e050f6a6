//! `policy_hash` and `policy diff`: the hash ignores everything that does not change meaning
//! (formatting, comments, key order, quoting, spelled-out defaults, confidence spellings,
//! `extends` versus the same rules written out) and changes with everything that does (a value,
//! the order of rules, the mode, the defaults, …); the diff is empty exactly when the hashes are
//! equal.
//!
//! Variants are generated from the vector policies: each loaded policy is written back as a
//! policy file in a random style, then loaded again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use atlasbridge_protocol::confidence::Confidence;
use atlasbridge_protocol::policy::{
    Action, AutonomyMode, Criteria, DefaultAction, Defaults, Policy, PolicyVersion,
    PromptTypeFilter, ReplyConstraints, builtin_default, diff, load_file, load_str,
};
use proptest::prelude::*;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/policies")
}

const FILES: [&str; 6] = [
    "v0-basic.yaml",
    "v0-guarded.yaml",
    "v1-any-none.yaml",
    "v1-base.yaml",
    "v1-child.yaml",
    "v1-tags.yaml",
];

fn vector(name: &str) -> Policy {
    load_file(&vectors().join(name)).unwrap().policy
}

// ---- a policy written back as a file, in a random style ----

/// splitmix64: small, deterministic, and good enough to pick styles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len())]
    }
}

/// A YAML document before it is written out.
#[derive(Debug, Clone)]
enum Y {
    Null,
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

fn s(text: &str) -> Y {
    Y::Str(text.to_owned())
}

struct Writer<'r> {
    rng: &'r mut Rng,
    v1: bool,
}

impl Writer<'_> {
    fn policy(&mut self, p: &Policy) -> Y {
        let mut m = vec![("policy_version".to_owned(), s(p.policy_version.as_str()))];
        if p.name != "default" || self.rng.coin() {
            m.push(("name".to_owned(), s(&p.name)));
        }
        if p.autonomy_mode != AutonomyMode::Assist || self.rng.coin() {
            m.push(("autonomy_mode".to_owned(), s(p.autonomy_mode.as_str())));
        }
        if !p.rules.is_empty() || self.rng.coin() {
            let rules = p.rules.iter().map(|r| self.rule(r)).collect();
            m.push(("rules".to_owned(), Y::Seq(rules)));
        }
        if p.defaults != Defaults::default() || self.rng.coin() {
            let mut d = Vec::new();
            for (k, v) in [
                ("no_match", p.defaults.no_match),
                ("low_confidence", p.defaults.low_confidence),
            ] {
                if v != DefaultAction::RequireHuman || self.rng.coin() {
                    d.push((k.to_owned(), s(v.as_str())));
                }
            }
            m.push(("defaults".to_owned(), Y::Map(d)));
        }
        Y::Map(m)
    }

    fn rule(&mut self, r: &atlasbridge_protocol::policy::Rule) -> Y {
        let mut m = vec![("id".to_owned(), s(&r.id))];
        match &r.description {
            Some(d) => m.push(("description".to_owned(), s(d))),
            None if self.rng.below(4) == 0 => m.push(("description".to_owned(), Y::Null)),
            None => {}
        }
        m.push(("match".to_owned(), self.criteria(&r.matcher)));
        m.push(("action".to_owned(), self.action(&r.action)));
        if let Some(n) = r.max_auto_replies {
            let n = i64::from(n);
            let v = if self.rng.coin() {
                Y::Int(n)
            } else {
                Y::Str(n.to_string())
            };
            m.push(("max_auto_replies".to_owned(), v));
        }
        Y::Map(m)
    }

    fn confidence(&mut self, c: Confidence) -> Y {
        let spellings: &[&str] = match c {
            Confidence::Low => &["low", "LOW", "Low"],
            Confidence::Medium => &["medium", "med", "MED", "Medium"],
            Confidence::High => &["high", "HIGH", "High"],
        };
        s(self.rng.pick(spellings))
    }

    fn criteria(&mut self, c: &Criteria) -> Y {
        let mut m = Vec::new();
        let with_any = c.any_of.is_some();
        if c.tool_id != "*" || self.rng.coin() {
            m.push(("tool_id".to_owned(), s(&c.tool_id)));
        }
        if let Some(repo) = &c.repo {
            m.push(("repo".to_owned(), s(repo)));
        }
        // Beside any_of a written prompt_type counts as a flat criterion, even `["*"]`.
        if c.prompt_type != [PromptTypeFilter::Any] || (!with_any && self.rng.coin()) {
            let types = c.prompt_type.iter().map(|t| s(t.as_str())).collect();
            m.push(("prompt_type".to_owned(), Y::Seq(types)));
        }
        if c.min_confidence != Confidence::Low || self.rng.coin() {
            let v = self.confidence(c.min_confidence);
            m.push(("min_confidence".to_owned(), v));
        }
        if let Some(max) = c.max_confidence {
            let v = self.confidence(max);
            m.push(("max_confidence".to_owned(), v));
        }
        match &c.contains {
            Some(k) => {
                m.push(("contains".to_owned(), s(&k.text)));
                if k.is_regex || self.rng.coin() {
                    m.push(("contains_is_regex".to_owned(), self.boolean(k.is_regex)));
                }
            }
            None if self.rng.below(4) == 0 => {
                m.push(("contains_is_regex".to_owned(), self.boolean(false)));
            }
            None => {}
        }
        if let Some(tag) = &c.session_tag {
            m.push(("session_tag".to_owned(), s(tag)));
        }
        for (key, blocks) in [("any_of", &c.any_of), ("none_of", &c.none_of)] {
            if let Some(blocks) = blocks {
                let list = blocks.iter().map(|b| self.criteria(b)).collect();
                m.push((key.to_owned(), Y::Seq(list)));
            }
        }
        assert!(self.v1 || (c.any_of.is_none() && c.session_tag.is_none()));
        Y::Map(m)
    }

    fn boolean(&mut self, b: bool) -> Y {
        match self.rng.below(3) {
            0 => Y::Bool(b),
            1 => s(if b { "yes" } else { "no" }),
            _ => s(if b { "True" } else { "FALSE" }),
        }
    }

    fn action(&mut self, a: &Action) -> Y {
        let mut m = vec![("type".to_owned(), s(a.type_name()))];
        let optional =
            |m: &mut Vec<(String, Y)>, rng: &mut Rng, key: &str, v: &Option<String>| match v {
                Some(text) => m.push((key.to_owned(), s(text))),
                None if rng.below(4) == 0 => m.push((key.to_owned(), Y::Null)),
                None => {}
            };
        match a {
            Action::AutoReply { value, constraints } => {
                m.push(("value".to_owned(), s(value)));
                if *constraints != ReplyConstraints::default() || self.rng.coin() {
                    let c = self.constraints(constraints);
                    m.push(("constraints".to_owned(), c));
                }
            }
            Action::RequireHuman { message } | Action::NotifyOnly { message } => {
                optional(&mut m, self.rng, "message", message);
            }
            Action::Deny { reason } => optional(&mut m, self.rng, "reason", reason),
        }
        Y::Map(m)
    }

    fn constraints(&mut self, c: &ReplyConstraints) -> Y {
        let mut m = Vec::new();
        if let Some(n) = c.max_length {
            m.push(("max_length".to_owned(), Y::Int(i64::from(n))));
        }
        if c.numeric_only || self.rng.coin() {
            m.push(("numeric_only".to_owned(), self.boolean(c.numeric_only)));
        }
        if let Some(choices) = &c.allowed_choices {
            m.push((
                "allowed_choices".to_owned(),
                Y::Seq(choices.iter().map(|x| s(x)).collect()),
            ));
        }
        if !c.allow_free_text || self.rng.coin() {
            m.push((
                "allow_free_text".to_owned(),
                self.boolean(c.allow_free_text),
            ));
        }
        Y::Map(m)
    }
}

/// Whether `text` reads back as the same string when written plain, in block and flow context.
fn plain_is_safe(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '))
        && !text.ends_with(' ')
        && !text.contains("  ")
        && !matches!(
            text,
            "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
        )
}

struct Emitter<'r> {
    rng: &'r mut Rng,
    width: usize,
}

impl Emitter<'_> {
    fn scalar(&mut self, y: &Y) -> String {
        match y {
            Y::Null => self.rng.pick(&["~", "null", ""]).to_owned(),
            Y::Int(n) => n.to_string(),
            Y::Bool(true) => self.rng.pick(&["true", "True", "TRUE"]).to_owned(),
            Y::Bool(false) => self.rng.pick(&["false", "False", "FALSE"]).to_owned(),
            Y::Str(text) => self.string(text),
            Y::Seq(_) | Y::Map(_) => self.flow(y),
        }
    }

    fn string(&mut self, text: &str) -> String {
        let single_ok = !text.chars().any(char::is_control);
        match self.rng.below(3) {
            0 if plain_is_safe(text) => text.to_owned(),
            1 if single_ok => format!("'{}'", text.replace('\'', "''")),
            _ => serde_json::to_string(text).unwrap(),
        }
    }

    fn key(&mut self, key: &str) -> String {
        if self.rng.below(5) == 0 {
            serde_json::to_string(key).unwrap()
        } else {
            key.to_owned()
        }
    }

    fn flow(&mut self, y: &Y) -> String {
        match y {
            Y::Seq(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.flow(i)).collect();
                format!("[{}]", parts.join(", "))
            }
            Y::Map(entries) => {
                let mut entries = entries.clone();
                self.shuffle(&mut entries);
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| {
                        // An empty plain null after `key:` reads fine in block context only.
                        let v = match v {
                            Y::Null => "~".to_owned(),
                            other => self.flow(other),
                        };
                        format!("{}: {v}", self.key(k))
                    })
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            scalar => self.scalar(scalar),
        }
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.rng.below(i + 1);
            items.swap(i, j);
        }
    }

    fn is_block(&mut self, y: &Y) -> bool {
        match y {
            Y::Seq(items) => !items.is_empty() && self.rng.below(4) != 0,
            Y::Map(entries) => !entries.is_empty() && self.rng.below(4) != 0,
            _ => false,
        }
    }

    /// Lines of a block mapping or sequence at `indent`.
    fn block(&mut self, y: &Y, indent: usize, out: &mut Vec<String>) {
        let pad = " ".repeat(indent);
        match y {
            Y::Map(entries) => {
                let mut entries = entries.clone();
                self.shuffle(&mut entries);
                for (k, v) in &entries {
                    let key = self.key(k);
                    if self.is_block(v) {
                        out.push(format!("{pad}{key}:"));
                        // A sequence may sit at its key's own indentation.
                        let inner = if matches!(v, Y::Seq(_)) && self.rng.coin() {
                            indent
                        } else {
                            indent + self.width
                        };
                        self.block(v, inner, out);
                    } else {
                        let value = self.scalar(v);
                        out.push(format!("{pad}{key}: {value}").trim_end().to_owned());
                    }
                }
            }
            Y::Seq(items) => {
                for item in items {
                    if self.is_block(item) {
                        let mut inner = Vec::new();
                        self.block(item, indent + 2, &mut inner);
                        let first = inner.remove(0);
                        out.push(format!("{pad}- {}", &first[indent + 2..]));
                        out.extend(inner);
                    } else {
                        let value = self.scalar(item);
                        out.push(format!("{pad}- {value}").trim_end().to_owned());
                    }
                }
            }
            scalar => {
                let value = self.scalar(scalar);
                out.push(format!("{pad}{value}"));
            }
        }
    }

    fn document(&mut self, y: &Y) -> String {
        let mut lines = Vec::new();
        if self.rng.below(4) == 0 {
            lines.push("# written by policy_hash.rs".to_owned());
        }
        if self.rng.below(4) == 0 {
            lines.push("---".to_owned());
        }
        let mut body = Vec::new();
        if self.rng.below(6) == 0 {
            body.push(self.flow(y));
        } else {
            self.block(y, 0, &mut body);
        }
        for line in body {
            lines.push(line);
            match self.rng.below(8) {
                0 => lines.push(String::new()),
                1 => lines.push(format!("{}# a comment", " ".repeat(self.rng.below(6)))),
                2 => {
                    let last = lines.pop().unwrap_or_default();
                    lines.push(format!("{last}  # trailing"));
                }
                _ => {}
            }
        }
        let mut text = lines.join("\n");
        if self.rng.coin() {
            text.push('\n');
        }
        text
    }
}

fn write_policy(p: &Policy, seed: u64) -> String {
    let mut rng = Rng(seed);
    let doc = Writer {
        rng: &mut rng,
        v1: p.policy_version == PolicyVersion::V1,
    }
    .policy(p);
    let width = 2 + rng.below(3);
    Emitter {
        rng: &mut rng,
        width,
    }
    .document(&doc)
}

fn reload(p: &Policy, seed: u64) -> Policy {
    let text = write_policy(p, seed);
    match load_str(&text, &vectors().join("generated.yaml")) {
        Ok(loaded) => {
            assert_eq!(loaded.hash, loaded.policy.hash());
            loaded.policy
        }
        Err(e) => panic!("generated policy does not load:\n{e}\n---\n{text}"),
    }
}

// ---- semantic edits ----

/// Applies edit number `which` (if it applies to `p`); each one changes meaning.
fn edit(p: &Policy, which: usize, pick: usize) -> Option<Policy> {
    let mut q = p.clone();
    let n = q.rules.len();
    match which {
        0 => {
            q.autonomy_mode = match q.autonomy_mode {
                AutonomyMode::Off => AutonomyMode::Assist,
                AutonomyMode::Assist => AutonomyMode::Full,
                AutonomyMode::Full => AutonomyMode::Off,
            };
        }
        1 => q.name.push('x'),
        2 => {
            q.defaults.no_match = match q.defaults.no_match {
                DefaultAction::Deny => DefaultAction::RequireHuman,
                DefaultAction::RequireHuman => DefaultAction::Deny,
            };
        }
        3 => {
            // Swap two rules: the first match wins, so order is meaning.
            if n < 2 {
                return None;
            }
            let i = pick % n;
            let j = (i + 1 + pick / n % (n - 1)) % n;
            q.rules.swap(i, j);
        }
        4 => {
            let rule = q.rules.iter_mut().find(|r| {
                matches!(&r.action, Action::AutoReply { constraints, .. }
                    if *constraints == ReplyConstraints::default())
            })?;
            if let Action::AutoReply { value, .. } = &mut rule.action {
                value.push('x');
            }
        }
        5 => {
            if n == 0 {
                return None;
            }
            let rule = &mut q.rules[pick % n];
            rule.action = match rule.action {
                Action::Deny { .. } => Action::RequireHuman { message: None },
                _ => Action::Deny { reason: None },
            };
        }
        6 => {
            if n == 0 {
                return None;
            }
            q.rules.remove(pick % n);
        }
        7 => {
            if n == 0 {
                return None;
            }
            q.rules[pick % n].id.push_str("-renamed");
        }
        8 => {
            let rule = q.rules.iter_mut().find(|r| r.matcher.any_of.is_none())?;
            rule.matcher.min_confidence = match rule.matcher.min_confidence {
                Confidence::High => Confidence::Low,
                _ => Confidence::High,
            };
        }
        9 => {
            let rule = q.rules.iter_mut().find(|r| r.matcher.any_of.is_none())?;
            rule.matcher.repo = Some(format!("{}/x", rule.matcher.repo.as_deref().unwrap_or("")));
        }
        10 => {
            let rule = q.rules.iter_mut().find(|r| r.matcher.contains.is_some())?;
            if let Some(c) = &mut rule.matcher.contains {
                c.text.push('z');
            }
        }
        _ => {
            if n == 0 {
                return None;
            }
            let max = &mut q.rules[pick % n].max_auto_replies;
            *max = Some(max.map_or(1, |m| m + 1));
        }
    }
    Some(q)
}

const EDITS: usize = 12;

// ---- tests ----

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        // Integration tests have no lib.rs beside them to persist regressions next to.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reformatting_keeps_the_hash(file in 0..FILES.len(), seed in any::<u64>()) {
        let original = vector(FILES[file]);
        let again = reload(&original, seed);
        prop_assert_eq!(again.hash(), original.hash());
        prop_assert!(diff(&original, &again).is_empty());
        prop_assert_eq!(again, original);
    }

    #[test]
    fn a_semantic_edit_changes_the_hash(
        file in 0..FILES.len(),
        which in 0..EDITS,
        pick in any::<usize>(),
        seed in any::<u64>(),
    ) {
        let original = vector(FILES[file]);
        let Some(edited) = edit(&original, which, pick) else {
            return Ok(());
        };
        let loaded = reload(&edited, seed);
        prop_assert_eq!(loaded.hash(), edited.hash(), "the written file is faithful");
        prop_assert_ne!(loaded.hash(), original.hash(), "edit {} made no difference", which);
        let d = diff(&original, &loaded);
        prop_assert!(!d.is_empty());
        prop_assert!(diff(&loaded, &loaded).is_empty());
    }

    #[test]
    fn diff_is_empty_exactly_when_hashes_are_equal(
        a in 0..FILES.len(),
        b in 0..FILES.len(),
        which in 0..=EDITS,
        pick in any::<usize>(),
    ) {
        let pa = vector(FILES[a]);
        let pb = vector(FILES[b]);
        let pb = edit(&pb, which, pick).unwrap_or(pb);
        for (x, y) in [(&pa, &pb), (&pb, &pa), (&pa, &pa), (&pb, &pb)] {
            prop_assert_eq!(diff(x, y).is_empty(), x.hash() == y.hash());
        }
    }
}

#[test]
fn formatting_comments_and_quoting_by_hand() {
    let plain = "policy_version: \"1\"\nname: n\nautonomy_mode: full\nrules:\n  - id: a\n    \
                 match:\n      prompt_type: [yes_no]\n      min_confidence: medium\n    \
                 action:\n      type: auto_reply\n      value: y\n";
    let styled = "# top comment\n---\nrules:   # the rules\n- action: {value: 'y', type: \
                  \"auto_reply\"}\n  \"id\": 'a'\n  match:\n    min_confidence: MED\n    \
                  prompt_type:\n    - \"yes_no\"\n    tool_id: \"*\"\nautonomy_mode: 'full'\n\n\
                  name: \"n\"\npolicy_version: '1'\ndefaults: {no_match: require_human}\n";
    let a = load_str(plain, Path::new("a.yaml")).unwrap();
    let b = load_str(styled, Path::new("b.yaml")).unwrap();
    assert_eq!(a.hash, b.hash);
    assert!(diff(&a.policy, &b.policy).is_empty());

    let edited = plain.replace("value: y", "value: n");
    let c = load_str(&edited, Path::new("c.yaml")).unwrap();
    assert_ne!(a.hash, c.hash);
    let d = diff(&a.policy, &c.policy);
    assert_eq!(d.changed.len(), 1);
    assert_eq!(d.changed[0].changes[0].field, "action.value");
}

#[test]
fn extends_hashes_as_the_rules_written_out() {
    let child = load_file(&vectors().join("v1-child.yaml")).unwrap();
    let flat = reload(&child.policy, 7);
    assert_eq!(flat.hash(), child.hash);
}

#[test]
fn the_normal_form_is_pinned() {
    // These hashes are recorded in traces and pins: a change here changes every policy's
    // identity, so it must be deliberate (and announced), never a side effect.
    assert_eq!(
        builtin_default().hash(),
        "e3bd4d7fc7b7a094743553ce75521ad31e4648b786ff367b84c0a436bd86885b",
        "{}",
        serde_json::to_string(&builtin_default().to_json()).unwrap()
    );
    assert_eq!(
        vector("v0-basic.yaml").hash(),
        "43c16ac4f592869a70858ee1e537c2d02e2421f1f4bd1eda0b617947efd683fe"
    );
    assert_eq!(
        builtin_default().short_hash(),
        &builtin_default().hash()[..16]
    );
}

#[test]
fn rule_order_is_meaning() {
    let p = vector("v0-guarded.yaml");
    let mut q = p.clone();
    q.rules.swap(0, 1);
    assert_ne!(p.hash(), q.hash());
    let d = diff(&p, &q);
    assert_eq!(d.moved.len(), 1);
    assert!(d.changed.is_empty() && d.added.is_empty() && d.removed.is_empty());
    let json = serde_json::to_value(&d).unwrap();
    assert!(json["moved"][0]["before"].is_u64());
}
