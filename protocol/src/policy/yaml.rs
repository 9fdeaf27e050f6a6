//! A YAML 1.2 document as a small tree whose every node knows its line and column.
//!
//! Built from `saphyr-parser`'s events rather than a serde model so that the validator can
//! report every problem of a file, each at its own place, instead of stopping at the first one.
//! Scalars are resolved with the YAML 1.2 core schema: a bare `off` or `yes` is a string, and
//! whether a scalar was quoted decides between `"1"` (a string) and `1` (an integer).

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};

use super::error::join_path;

/// Deepest nesting accepted; far beyond any sensible policy, and it bounds the validator's
/// recursion on hostile input.
pub(crate) const MAX_DEPTH: usize = 64;

/// Most nodes that aliases may copy in one document, against "billion laughs" expansion.
pub(crate) const MAX_ALIAS_NODES: usize = 10_000;

/// 1-based line and column of a node's first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub(crate) line: u64,
    pub(crate) column: u64,
}

impl Pos {
    fn of(span: Span) -> Self {
        Self {
            line: to_u64(span.start.line()),
            column: to_u64(span.start.col()).saturating_add(1),
        }
    }

    fn of_error(e: &ScanError) -> Self {
        Self {
            line: to_u64(e.marker().line()),
            column: to_u64(e.marker().col()).saturating_add(1),
        }
    }

    /// Just after the last character of `text`, with line breaks counted as YAML counts them
    /// (`\r\n`, `\r` or `\n`).
    pub(crate) fn end_of(text: &str) -> Self {
        Self::end_of_lines(&line_widths(text))
    }

    fn end_of_lines(widths: &[u64]) -> Self {
        Self {
            line: to_u64(widths.len()).max(1),
            column: widths.last().map_or(1, |w| w + 1),
        }
    }

    /// The nearest place that exists in a text whose lines are `widths` characters long: this
    /// one, or the end of its line, or the end of the text.
    fn within(self, widths: &[u64]) -> Self {
        let index = usize::try_from(self.line.saturating_sub(1)).unwrap_or(usize::MAX);
        match widths.get(index) {
            Some(width) => Self {
                line: self.line.max(1),
                column: self.column.clamp(1, width + 1),
            },
            None => Self::end_of_lines(widths),
        }
    }
}

/// Characters on each line of `text` (at least one line), line breaks not counted and counted
/// as YAML counts them (`\r\n`, `\r` or `\n`).
fn line_widths(text: &str) -> Vec<u64> {
    let mut widths = vec![0u64];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\r' | '\n' => widths.push(0),
            _ => {
                if let Some(w) = widths.last_mut() {
                    *w += 1;
                }
            }
        }
    }
    widths
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) value: Value,
}

/// A node's content.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in file order; a repeated key is reported and only its first entry kept.
    Map(Vec<(Node, Node)>),
}

/// A resolved scalar, with the text as written for messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scalar {
    pub(crate) text: String,
    pub(crate) kind: ScalarKind,
}

/// What a scalar resolved to under the core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScalarKind {
    Null,
    Bool(bool),
    /// `None` when the integer does not fit in 64 bits.
    Int(Option<i64>),
    Float,
    Str,
}

impl Node {
    /// The string, when the node is a string scalar.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(Scalar {
                text,
                kind: ScalarKind::Str,
            }) => Some(text),
            _ => None,
        }
    }

    /// A short description of what the node is, for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
            Value::Scalar(s) => match s.kind {
                ScalarKind::Null => "nothing (null)".to_owned(),
                ScalarKind::Bool(_) => format!("the boolean {}", s.text),
                ScalarKind::Int(_) => format!("the number {}", s.text),
                ScalarKind::Float => format!("the number {}", s.text),
                ScalarKind::Str => format!("the string '{}'", s.text),
            },
        }
    }
}

/// A problem found while building the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeError {
    pub(crate) pos: Pos,
    pub(crate) path: String,
    pub(crate) message: String,
}

/// What [`parse`] found: the document (unless the text is not YAML at all) and the problems
/// that did not stop the tree from being built (repeated keys, tags).
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) root: Option<Node>,
    pub(crate) errors: Vec<TreeError>,
}

/// Parses one YAML document. An empty text (or comments only) gives `root: None` and no
/// error; a syntax error gives `root: None` and that error.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut builder = Builder {
        line_widths: line_widths(text),
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let step = match next {
            Ok((event, span)) => builder.on_event(event, span),
            Err(e) => Err(TreeError {
                pos: Pos::of_error(&e).within(&builder.line_widths),
                path: builder.current_path(),
                message: format!("YAML syntax error: {}", e.info()),
            }),
        };
        if let Err(fatal) = step {
            builder.errors.push(fatal);
            return Parsed {
                root: None,
                errors: builder.errors,
            };
        }
    }
    Parsed {
        root: builder.root,
        errors: builder.errors,
    }
}

#[derive(Debug)]
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// Scalar keys seen so far, for the repeated-key check without a quadratic scan.
        seen: HashMap<(bool, String), Pos>,
    },
}

#[derive(Debug, Default)]
struct Builder {
    /// Characters on each line of the text. The parser's positions can lie outside it: it
    /// reports what it finds at the end of the input on the line after the last one, and it
    /// counts the bytes, not the characters, of a directive (`%…`) line. Positions are moved
    /// to the nearest place inside the file.
    line_widths: Vec<u64>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    errors: Vec<TreeError>,
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), TreeError> {
        let pos = Pos::of(span).within(&self.line_widths);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.fatal(pos, "a policy file holds exactly one YAML document"));
                }
                Ok(())
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(pos, tag.as_deref());
                self.push(Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                })
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(pos, tag.as_deref());
                self.push(Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    seen: HashMap::new(),
                })
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Err(self.fatal(pos, "unbalanced YAML collection")),
                };
                self.complete(node, anchor);
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                let scalar = self.resolve(pos, text, style, tag.as_deref());
                self.complete(
                    Node {
                        pos,
                        value: Value::Scalar(scalar),
                    },
                    anchor,
                );
                Ok(())
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(self.fatal(pos, "alias to an unknown anchor"));
                };
                let size = count_nodes(target);
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(self.fatal(
                        pos,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} nodes"),
                    ));
                }
                // A copy nests as deep as its original, counted from where it is put.
                if self.stack.len() + depth(target) > MAX_DEPTH {
                    return Err(self.fatal(pos, format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let node = target.clone();
                self.complete(node, 0);
                Ok(())
            }
        }
    }

    fn push(&mut self, frame: Frame) -> Result<(), TreeError> {
        if self.stack.len() >= MAX_DEPTH {
            let pos = match &frame {
                Frame::Seq { pos, .. } | Frame::Map { pos, .. } => *pos,
            };
            return Err(self.fatal(pos, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let path = self.current_path();
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, key, seen, ..
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    // `"1"` and `1` are different keys; collection keys are never equal here
                    // (a policy has none, and the validator reports them anyway).
                    let first = match &k.value {
                        Value::Scalar(s) => {
                            let identity = (s.kind == ScalarKind::Str, s.text.clone());
                            match seen.get(&identity) {
                                Some(first) => Some(*first),
                                None => {
                                    seen.insert(identity, k.pos);
                                    None
                                }
                            }
                        }
                        _ => None,
                    };
                    match first {
                        Some(first) => self.errors.push(TreeError {
                            pos: k.pos,
                            path,
                            message: format!(
                                "duplicate key '{}': it is already given on line {}",
                                key_text(&k),
                                first.line
                            ),
                        }),
                        None => entries.push((k, node)),
                    }
                }
            },
        }
    }

    /// The path of the node being read, from the keys and indexes of the open collections.
    fn current_path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => path = join_path(&path, &items.len().to_string()),
                Frame::Map { key: Some(k), .. } => path = join_path(&path, &key_text(k)),
                Frame::Map { key: None, .. } => {}
            }
        }
        path
    }

    fn fatal(&self, pos: Pos, message: impl Into<String>) -> TreeError {
        TreeError {
            pos,
            path: self.current_path(),
            message: message.into(),
        }
    }

    fn check_collection_tag(&mut self, pos: Pos, tag: Option<&Tag>) {
        if let Some(tag) = tag
            && !tag.is_yaml_core_schema()
        {
            let e = self.fatal(pos, format!("unsupported YAML tag {tag}"));
            self.errors.push(e);
        }
    }

    fn resolve(
        &mut self,
        pos: Pos,
        text: Cow<'_, str>,
        style: ScalarStyle,
        tag: Option<&Tag>,
    ) -> Scalar {
        let text = text.into_owned();
        let kind = match tag {
            Some(tag) if tag.is_yaml_core_schema() && tag.suffix == "str" => ScalarKind::Str,
            Some(tag) if !tag.is_yaml_core_schema() => {
                let e = self.fatal(pos, format!("unsupported YAML tag {tag}"));
                self.errors.push(e);
                ScalarKind::Str
            }
            _ if style == ScalarStyle::Plain => resolve_plain(&text),
            _ => ScalarKind::Str,
        };
        Scalar { text, kind }
    }
}

fn key_text(key: &Node) -> String {
    match &key.value {
        Value::Scalar(s) => s.text.clone(),
        Value::Seq(_) => "[…]".to_owned(),
        Value::Map(_) => "{…}".to_owned(),
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Scalar(_) => 0,
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

/// Collections on the longest path down from `node` (0 for a scalar).
fn depth(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 0,
        Value::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| depth(k).max(depth(v)))
                .max()
                .unwrap_or(0)
        }
    }
}

/// The YAML 1.2 core schema (§10.3.2) for a plain scalar.
fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
        _ => {}
    }
    if let Some(kind) = resolve_int(text) {
        return kind;
    }
    if is_core_float(text) {
        return ScalarKind::Float;
    }
    ScalarKind::Str
}

fn resolve_int(text: &str) -> Option<ScalarKind> {
    let (digits, radix) = if let Some(octal) = text.strip_prefix("0o") {
        (octal, 8)
    } else if let Some(hex) = text.strip_prefix("0x") {
        (hex, 16)
    } else {
        let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
        if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some(ScalarKind::Int(text.parse::<i64>().ok()));
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    Some(ScalarKind::Int(i64::from_str_radix(digits, radix).ok()))
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac_part {
        None => !int_part.is_empty() && all_digits(int_part),
        Some(f) => all_digits(int_part) && all_digits(f) && (!int_part.is_empty() || !f.is_empty()),
    };
    let exponent_ok = match exponent {
        None => true,
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            !digits.is_empty() && all_digits(digits)
        }
    };
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        let parsed = parse(text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        parsed.root.unwrap()
    }

    fn kind(text: &str) -> ScalarKind {
        match root(text).value {
            Value::Scalar(s) => s.kind,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn core_schema() {
        assert_eq!(kind("off"), ScalarKind::Str);
        assert_eq!(kind("yes"), ScalarKind::Str);
        assert_eq!(kind("true"), ScalarKind::Bool(true));
        assert_eq!(kind("~"), ScalarKind::Null);
        assert_eq!(kind("1"), ScalarKind::Int(Some(1)));
        assert_eq!(kind("-12"), ScalarKind::Int(Some(-12)));
        assert_eq!(kind("0x1f"), ScalarKind::Int(Some(31)));
        assert_eq!(kind("0o17"), ScalarKind::Int(Some(15)));
        assert_eq!(kind("99999999999999999999"), ScalarKind::Int(None));
        assert_eq!(kind("1.5"), ScalarKind::Float);
        assert_eq!(kind("1e3"), ScalarKind::Float);
        assert_eq!(kind(".5"), ScalarKind::Float);
        assert_eq!(kind(".inf"), ScalarKind::Float);
        assert_eq!(kind("1.2.3"), ScalarKind::Str);
        assert_eq!(kind("'1'"), ScalarKind::Str);
        assert_eq!(kind("\"1\""), ScalarKind::Str);
        assert_eq!(kind("!!str 1"), ScalarKind::Str);
        assert_eq!(kind("0x"), ScalarKind::Str);
        assert_eq!(kind("."), ScalarKind::Str);
    }

    #[test]
    fn positions_are_one_based() {
        let doc = root("a: 1\nb:\n  - x\n  - y\n");
        let Value::Map(entries) = doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].pos, Pos { line: 4, column: 5 });
    }

    #[test]
    fn empty_text_has_no_root() {
        let parsed = parse("");
        assert!(parsed.root.is_none() && parsed.errors.is_empty());
        let parsed = parse("# only a comment\n");
        assert!(parsed.root.is_none() && parsed.errors.is_empty());
    }

    #[test]
    fn duplicate_keys_are_reported_not_fatal() {
        let parsed = parse("a: 1\nb: 2\na: 3\nb: 4\n");
        assert_eq!(parsed.errors.len(), 2);
        assert_eq!(parsed.errors[0].pos.line, 3);
        assert!(parsed.errors[0].message.contains("line 1"));
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = parsed.root
        else {
            panic!("no map")
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn syntax_error_has_position_and_path() {
        let parsed = parse("a:\n  b: [1, 2\n  c: 3\n");
        assert!(parsed.root.is_none());
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].pos.line >= 2, "{:?}", parsed.errors);
    }

    /// Found by fuzzing (`policy_yaml`, inputs `[` and `%叫\0\n`): the parser reports an error
    /// at the end of the input on the line after the last one, and counts the bytes of a
    /// directive line, so it can name a place that does not exist.
    #[test]
    fn positions_stay_inside_the_text() {
        for (text, line, column) in [
            ("[", 1, 2),
            ("[\n", 2, 1),
            ("a: [1,\r\n  2", 2, 4),
            // Also found by fuzzing: the parser counts a directive line in bytes.
            ("%\u{53eb}\u{0}\n", 1, 4),
        ] {
            let parsed = parse(text);
            assert!(parsed.root.is_none(), "{text:?}");
            assert_eq!(parsed.errors[0].pos, Pos { line, column }, "{text:?}");
        }
    }

    #[test]
    fn aliases_are_copied_within_budget() {
        let doc = root("a: &x [1, 2]\nb: *x\n");
        let Value::Map(entries) = doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.value, entries[1].1.value);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            let list = [prev.as_str(); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{list}]\n"));
        }
        let parsed = parse(&bomb);
        assert!(parsed.root.is_none());
        assert!(parsed.errors[0].message.contains("aliases"));
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let parsed = parse(&deep);
        assert!(parsed.root.is_none());
        assert!(parsed.errors[0].message.contains("nested deeper"));
    }

    /// Found with the `policy_yaml` fuzz target's re-validation property (a hand-written input
    /// of nested `any_of` blocks): an alias copied a deep block under another one, so the
    /// document nested far deeper than the bound (400 levels within the alias budget); its
    /// normal form could neither be written back as a policy file nor read back as JSON.
    #[test]
    fn aliases_cannot_nest_past_the_bound() {
        let nest = |n: usize, inner: &str| {
            (0..n).fold(inner.to_owned(), |s, _| format!("{{any_of: [{s}]}}"))
        };
        let copy = |n: usize| format!("a: &a {}\nb: {}\n", nest(n, "x"), nest(n, "*a"));
        let parsed = parse(&copy(10));
        assert!(parsed.root.is_some(), "{:?}", parsed.errors);
        // 41 levels written, 81 once copied.
        let parsed = parse(&copy(20));
        assert!(parsed.root.is_none());
        assert!(parsed.errors[0].message.contains("nested deeper"));
        // A copy that reaches the bound exactly is fine, one level more is not: as without
        // aliases.
        let at = |inner: &str| format!("a: &a [x]\nb: {}\n", nest(31, inner));
        assert!(parse(&at("*a")).root.is_some());
        assert!(parse(&at("[x]")).root.is_some());
        assert!(parse(&at("[*a]")).root.is_none());
        assert!(parse(&at("[[x]]")).root.is_none());
    }

    #[test]
    fn second_document_is_an_error() {
        let parsed = parse("a: 1\n---\nb: 2\n");
        assert!(parsed.root.is_none());
        assert_eq!(parsed.errors[0].pos.line, 2);
    }
}
