//! From a YAML tree to a [`Policy`], checking everything the language forbids and collecting
//! every problem with its place instead of stopping at the first.
//!
//! Leniency follows the original runtime where users' files depend on it: an optional key given
//! as `null` counts as absent, integer fields take a quoted integer, and boolean fields take the
//! YAML 1.1 words (`yes`, `on`, …) that the original's YAML reader turned into booleans.

use std::collections::HashMap;
use std::path::Path;

use super::error::{PolicyError, join_path};
use super::model::{
    ANY_TOOL, Action, AutonomyMode, Contains, Criteria, DefaultAction, Defaults, Policy,
    PolicyVersion, PromptTypeFilter, ReplyConstraints, Rule,
};
use super::pattern;
use super::yaml::{self, Node, Pos, ScalarKind, Value};
use crate::confidence::Confidence;

/// Longest `auto_reply` value, and the range of `constraints.max_length`.
pub const MAX_REPLY_CHARS: usize = 4096;

/// Longest rule id.
pub const MAX_RULE_ID_CHARS: usize = 64;

const ROOT_KEYS: &[&str] = &[
    "policy_version",
    "name",
    "autonomy_mode",
    "rules",
    "defaults",
    "extends",
];
const RULE_KEYS: &[&str] = &["id", "description", "match", "action", "max_auto_replies"];
const CRITERIA_KEYS: &[&str] = &[
    "tool_id",
    "repo",
    "prompt_type",
    "min_confidence",
    "max_confidence",
    "contains",
    "contains_is_regex",
    "session_tag",
    "any_of",
    "none_of",
];
const DEFAULTS_KEYS: &[&str] = &["no_match", "low_confidence"];
const CONSTRAINT_KEYS: &[&str] = &[
    "max_length",
    "numeric_only",
    "allowed_choices",
    "allow_free_text",
];
const ACTION_TYPES: &[&str] = &["auto_reply", "require_human", "deny", "notify_only"];
const ACTION_FIELDS: &[(&str, &str)] = &[
    ("value", "auto_reply"),
    ("constraints", "auto_reply"),
    ("message", "require_human or notify_only"),
    ("reason", "deny"),
];

/// Keys a v0 policy may not use.
pub const V1_ONLY_KEYS: &[&str] = &[
    "extends",
    "max_confidence",
    "session_tag",
    "any_of",
    "none_of",
];

/// A file's `extends`, still unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtendsRef {
    /// As written.
    pub(crate) target: String,
    /// Where the value is, for errors about the base.
    pub(crate) pos: Pos,
}

/// What one file says on its own, before `extends` is merged.
#[derive(Debug)]
pub(crate) struct Checked {
    /// `Some` only when `errors` is empty.
    pub(crate) policy: Option<Policy>,
    /// Given even when the file has other errors, so the base's problems can be reported too.
    pub(crate) extends: Option<ExtendsRef>,
    /// In file order.
    pub(crate) errors: Vec<PolicyError>,
}

/// Parses and checks one file's text.
pub(crate) fn check(text: &str, file: &Path) -> Checked {
    let parsed = yaml::parse(text);
    let mut checker = Checker {
        file,
        version: PolicyVersion::V1,
        errors: parsed
            .errors
            .into_iter()
            .map(|e| PolicyError::new(file, e.pos.line, e.pos.column, e.path, e.message))
            .collect(),
    };
    let mut extends = None;
    let mut policy = None;
    match parsed.root {
        Some(root) => {
            let result = checker.document(&root);
            extends = result.extends;
            policy = result.policy;
        }
        None if checker.errors.is_empty() => checker.error(
            Pos { line: 1, column: 1 },
            "",
            "the policy file is empty; it needs at least `policy_version: \"1\"`",
        ),
        None => {}
    }
    let mut errors = checker.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    Checked {
        policy: if errors.is_empty() { policy } else { None },
        extends,
        errors,
    }
}

struct DocumentResult {
    policy: Option<Policy>,
    extends: Option<ExtendsRef>,
}

type Entries = [(Node, Node)];

struct Checker<'f> {
    file: &'f Path,
    /// Decides which keys are allowed; an unknown or missing version checks as v1, the superset,
    /// so that only the version itself is reported.
    version: PolicyVersion,
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(PolicyError::new(
            self.file, pos.line, pos.column, path, message,
        ));
    }

    fn document(&mut self, root: &Node) -> DocumentResult {
        let mut result = DocumentResult {
            policy: None,
            extends: None,
        };
        let Value::Map(entries) = &root.value else {
            self.error(
                root.pos,
                "",
                format!("a policy must be a YAML mapping, found {}", root.describe()),
            );
            return result;
        };
        let version = self.version(root.pos, entries);
        self.version = version.unwrap_or(PolicyVersion::V1);
        self.known_keys(entries, "", ROOT_KEYS, "the policy");

        let name = match optional(entries, "name") {
            Some((_, v)) => self.string(v, "name"),
            None => Some("default".to_owned()),
        };
        let autonomy_mode = match optional(entries, "autonomy_mode") {
            Some((_, v)) => self.autonomy_mode(v),
            None => Some(AutonomyMode::Assist),
        };
        let defaults = match optional(entries, "defaults") {
            Some((_, v)) => self.defaults(v),
            None => Some(Defaults::default()),
        };
        if let Some((_, v)) = optional(entries, "extends")
            && self.version == PolicyVersion::V1
            && let Some(target) = self.non_empty_string(v, "extends")
        {
            result.extends = Some(ExtendsRef { target, pos: v.pos });
        }
        let rules = match optional(entries, "rules") {
            Some((_, v)) => self.rules(v),
            None => Some(Vec::new()),
        };

        if let (
            Some(policy_version),
            Some(name),
            Some(autonomy_mode),
            Some(defaults),
            Some(rules),
        ) = (version, name, autonomy_mode, defaults, rules)
        {
            result.policy = Some(Policy {
                policy_version,
                name,
                autonomy_mode,
                rules,
                defaults,
            });
        }
        result
    }

    fn version(&mut self, root: Pos, entries: &Entries) -> Option<PolicyVersion> {
        const PATH: &str = "policy_version";
        let Some((_, node)) = get(entries, PATH) else {
            self.error(
                root,
                "",
                "missing required key 'policy_version' (write `policy_version: \"1\"`)",
            );
            return None;
        };
        match &node.value {
            Value::Scalar(s) if s.kind == ScalarKind::Str => match s.text.as_str() {
                "0" => Some(PolicyVersion::V0),
                "1" => Some(PolicyVersion::V1),
                other => {
                    self.error(
                        node.pos,
                        PATH,
                        format!(
                            "unsupported policy_version '{other}'. Supported versions: '0', '1'."
                        ),
                    );
                    None
                }
            },
            Value::Scalar(s) if matches!(s.kind, ScalarKind::Int(_) | ScalarKind::Float) => {
                self.error(
                    node.pos,
                    PATH,
                    format!(
                        "policy_version must be a string: write `policy_version: \"{}\"` (quoted)",
                        s.text
                    ),
                );
                // Check the rest as the version the number names, so the other reports fit.
                match s.text.as_str() {
                    "0" => self.version = PolicyVersion::V0,
                    _ => self.version = PolicyVersion::V1,
                }
                None
            }
            _ => {
                self.error(
                    node.pos,
                    PATH,
                    format!(
                        "policy_version must be a string, \"0\" or \"1\"; found {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    /// Reports keys that are not in `allowed`, and v1-only keys in a v0 policy.
    fn known_keys(&mut self, entries: &Entries, path: &str, allowed: &[&str], what: &str) {
        for (key, _) in entries {
            let Some(name) = key.as_str() else {
                let text = match &key.value {
                    Value::Scalar(s) => s.text.clone(),
                    _ => "(a collection)".to_owned(),
                };
                self.error(
                    key.pos,
                    path,
                    format!("unknown key '{text}' in {what}: keys must be names"),
                );
                continue;
            };
            let key_path = join_path(path, name);
            if !allowed.contains(&name) {
                self.error(
                    key.pos,
                    &key_path,
                    format!(
                        "unknown key '{name}' in {what}; expected one of: {}",
                        allowed
                            .iter()
                            .copied()
                            .filter(|k| self.allowed_here(k))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            } else if self.version == PolicyVersion::V0 && V1_ONLY_KEYS.contains(&name) {
                self.error(
                    key.pos,
                    &key_path,
                    format!(
                        "{name} needs policy_version \"1\"; this policy is version \"0\" \
                         (`atlasbridge policy migrate` upgrades it)"
                    ),
                );
            }
        }
    }

    fn allowed_here(&self, key: &str) -> bool {
        self.version == PolicyVersion::V1 || !V1_ONLY_KEYS.contains(&key)
    }

    fn mapping<'n>(&mut self, node: &'n Node, path: &str, what: &str) -> Option<&'n Entries> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("{what} must be a mapping, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn sequence<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("must be a list, found {}", node.describe()),
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                let hint = match &node.value {
                    Value::Scalar(s) if !matches!(s.kind, ScalarKind::Null) => {
                        format!(" (quote it: \"{}\")", s.text)
                    }
                    _ => String::new(),
                };
                self.error(
                    node.pos,
                    path,
                    format!("must be a string, found {}{hint}", node.describe()),
                );
                None
            }
        }
    }

    fn non_empty_string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.is_empty() {
            self.error(node.pos, path, "must not be an empty string");
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        if let Value::Scalar(s) = &node.value {
            match s.kind {
                ScalarKind::Bool(b) => return Some(b),
                ScalarKind::Int(Some(0)) => return Some(false),
                ScalarKind::Int(Some(1)) => return Some(true),
                ScalarKind::Str => match s.text.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" | "y" | "t" | "1" => return Some(true),
                    "false" | "no" | "off" | "n" | "f" | "0" => return Some(false),
                    _ => {}
                },
                _ => {}
            }
        }
        self.error(
            node.pos,
            path,
            format!("must be true or false, found {}", node.describe()),
        );
        None
    }

    /// An integer in `min..=max`.
    fn integer(&mut self, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
        let value = match &node.value {
            Value::Scalar(s) => match s.kind {
                ScalarKind::Int(n) => n.ok_or(()),
                ScalarKind::Float => whole_number(&s.text).ok_or(()),
                ScalarKind::Str => s.text.trim().parse::<i64>().map_err(drop),
                _ => Err(()),
            },
            _ => Err(()),
        };
        match value {
            Ok(n) if n < min => {
                self.error(node.pos, path, format!("must be at least {min}, found {n}"));
                None
            }
            Ok(n) if n > max => {
                self.error(node.pos, path, format!("must be at most {max}, found {n}"));
                None
            }
            Ok(n) => Some(n),
            Err(()) => {
                self.error(
                    node.pos,
                    path,
                    format!(
                        "must be a whole number from {min} to {max}, found {}",
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    fn autonomy_mode(&mut self, node: &Node) -> Option<AutonomyMode> {
        const PATH: &str = "autonomy_mode";
        let text = self.string(node, PATH)?;
        let mode = AutonomyMode::from_name(&text);
        if mode.is_none() {
            self.error(
                node.pos,
                PATH,
                format!("unknown autonomy_mode '{text}': expected one of off, assist, full"),
            );
        }
        mode
    }

    fn defaults(&mut self, node: &Node) -> Option<Defaults> {
        const PATH: &str = "defaults";
        let entries = self.mapping(node, PATH, "defaults")?;
        self.known_keys(entries, PATH, DEFAULTS_KEYS, "defaults");
        let mut one = |key: &str| match optional(entries, key) {
            Some((_, v)) => self.default_action(v, &join_path(PATH, key), key),
            None => Some(DefaultAction::RequireHuman),
        };
        let no_match = one("no_match");
        let low_confidence = one("low_confidence");
        Some(Defaults {
            no_match: no_match?,
            low_confidence: low_confidence?,
        })
    }

    fn default_action(&mut self, node: &Node, path: &str, key: &str) -> Option<DefaultAction> {
        let text = self.string(node, path)?;
        match text.as_str() {
            "require_human" => Some(DefaultAction::RequireHuman),
            "deny" => Some(DefaultAction::Deny),
            "auto_reply" => {
                self.error(
                    node.pos,
                    path,
                    format!(
                        "defaults.{key} cannot be auto_reply: a default never answers for the \
                         user; use require_human or deny"
                    ),
                );
                None
            }
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("unknown defaults.{key} '{other}': expected require_human or deny"),
                );
                None
            }
        }
    }

    fn rules(&mut self, node: &Node) -> Option<Vec<Rule>> {
        const PATH: &str = "rules";
        let items = self.sequence(node, PATH)?;
        let mut rules = Vec::with_capacity(items.len());
        let mut all_ok = true;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let path = join_path(PATH, &index.to_string());
            let (rule, id) = self.rule(item, &path);
            if let Some((id, pos)) = id {
                match seen.get(&id) {
                    Some(first) => {
                        self.error(
                            pos,
                            &join_path(&path, "id"),
                            format!(
                                "duplicate rule id '{id}': the same id is used by rule {first}"
                            ),
                        );
                        all_ok = false;
                    }
                    None => {
                        seen.insert(id, index);
                    }
                }
            }
            match rule {
                Some(rule) => rules.push(rule),
                None => all_ok = false,
            }
        }
        all_ok.then_some(rules)
    }

    /// The rule, and its id with the id's position when the id itself is valid (for the
    /// duplicate check, which must run even when the rest of the rule is broken).
    fn rule(&mut self, node: &Node, path: &str) -> (Option<Rule>, Option<(String, Pos)>) {
        let Some(entries) = self.mapping(node, path, "a rule") else {
            return (None, None);
        };
        self.known_keys(entries, path, RULE_KEYS, "a rule");

        let id = match get(entries, "id") {
            Some((_, v)) => self
                .rule_id(v, &join_path(path, "id"))
                .map(|id| (id, v.pos)),
            None => {
                self.missing(node.pos, path, "id", "a rule");
                None
            }
        };
        let description = match optional(entries, "description") {
            Some((_, v)) => self.string(v, &join_path(path, "description")).map(Some),
            None => Some(None),
        };
        let matcher = match get(entries, "match") {
            Some((_, v)) => self.criteria(v, &join_path(path, "match")),
            None => {
                self.missing(node.pos, path, "match", "a rule");
                None
            }
        };
        let action = match get(entries, "action") {
            Some((_, v)) => self.action(v, &join_path(path, "action")),
            None => {
                self.missing(node.pos, path, "action", "a rule");
                None
            }
        };
        let max_auto_replies = match optional(entries, "max_auto_replies") {
            Some((_, v)) => self
                .integer(
                    v,
                    &join_path(path, "max_auto_replies"),
                    1,
                    i64::from(u32::MAX),
                )
                .and_then(|n| u32::try_from(n).ok())
                .map(Some),
            None => Some(None),
        };
        let rule = match (&id, description, matcher, action, max_auto_replies) {
            (Some((id, _)), Some(description), Some(matcher), Some(action), Some(max)) => {
                Some(Rule {
                    id: id.clone(),
                    description,
                    matcher,
                    action,
                    max_auto_replies: max,
                })
            }
            _ => None,
        };
        (rule, id)
    }

    fn missing(&mut self, pos: Pos, path: &str, key: &str, what: &str) {
        self.error(pos, path, format!("missing required key '{key}' in {what}"));
    }

    fn rule_id(&mut self, node: &Node, path: &str) -> Option<String> {
        let id = self.string(node, path)?;
        if is_valid_rule_id(&id) {
            Some(id)
        } else {
            self.error(
                node.pos,
                path,
                format!(
                    "invalid rule id '{id}': an id has 1–{MAX_RULE_ID_CHARS} characters, starts \
                     with a letter or digit and continues with letters, digits, '_' or '-'"
                ),
            );
            None
        }
    }

    fn criteria(&mut self, node: &Node, path: &str) -> Option<Criteria> {
        let entries = self.mapping(node, path, "a match block")?;
        self.known_keys(entries, path, CRITERIA_KEYS, "a match block");
        let field = |key: &str| {
            optional(entries, key)
                .filter(|_| self.allowed_here(key))
                .map(|(k, v)| (k, v, join_path(path, key)))
        };
        let tool_id_node = field("tool_id");
        let repo_node = field("repo");
        let prompt_type_node = field("prompt_type");
        let min_node = field("min_confidence");
        let max_node = field("max_confidence");
        let contains_node = field("contains");
        let regex_node = field("contains_is_regex");
        let tag_node = field("session_tag");
        let any_node = field("any_of");
        let none_node = field("none_of");

        let tool_id = match &tool_id_node {
            Some((_, v, p)) => self.string(v, p),
            None => Some(ANY_TOOL.to_owned()),
        };
        let repo = match &repo_node {
            Some((_, v, p)) => self.string(v, p).map(Some),
            None => Some(None),
        };
        let prompt_type = match &prompt_type_node {
            Some((_, v, p)) => self.prompt_types(v, p),
            None => Some(vec![PromptTypeFilter::Any]),
        };
        let min_confidence = match &min_node {
            Some((_, v, p)) => self.confidence(v, p),
            None => Some(Confidence::Low),
        };
        let max_confidence = match &max_node {
            Some((_, v, p)) => self.confidence(v, p).map(Some),
            None => Some(None),
        };
        let is_regex = match &regex_node {
            Some((_, v, p)) => self.bool(v, p),
            None => Some(false),
        };
        let contains = match &contains_node {
            Some((_, v, p)) => self.contains(v, p, is_regex.unwrap_or(false)).map(Some),
            None => Some(None),
        };
        let session_tag = match &tag_node {
            Some((_, v, p)) => self.string(v, p).map(Some),
            None => Some(None),
        };
        let any_of = match &any_node {
            Some((_, v, p)) => self.blocks(v, p).map(Some),
            None => Some(None),
        };
        let none_of = match &none_node {
            Some((_, v, p)) => self.blocks(v, p).map(Some),
            None => Some(None),
        };

        if let Some((key, _, any_path)) = &any_node {
            // As the original runtime decided: a flat criterion counts when it narrows the
            // match, so `tool_id: "*"` or `min_confidence: low` beside any_of are harmless.
            let mut flat = Vec::new();
            if tool_id.as_deref().is_some_and(|t| t != ANY_TOOL) {
                flat.push("tool_id");
            }
            if min_confidence.is_some_and(|c| c != Confidence::Low) {
                flat.push("min_confidence");
            }
            for (name, given) in [
                ("repo", repo_node.is_some()),
                ("prompt_type", prompt_type_node.is_some()),
                ("max_confidence", max_node.is_some()),
                ("contains", contains_node.is_some()),
                ("session_tag", tag_node.is_some()),
            ] {
                if given {
                    flat.push(name);
                }
            }
            if !flat.is_empty() {
                self.error(
                    key.pos,
                    any_path,
                    format!(
                        "any_of and flat match criteria are mutually exclusive on the same block \
                         (found {}); move them into each any_of block",
                        flat.join(", ")
                    ),
                );
                return None;
            }
        }

        Some(Criteria {
            tool_id: tool_id?,
            repo: repo?,
            prompt_type: prompt_type?,
            min_confidence: min_confidence?,
            max_confidence: max_confidence?,
            contains: contains?,
            session_tag: session_tag?,
            any_of: any_of?,
            none_of: none_of?,
        })
    }

    fn blocks(&mut self, node: &Node, path: &str) -> Option<Vec<Criteria>> {
        let items = self.sequence(node, path)?;
        let mut blocks = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.criteria(item, &join_path(path, &i.to_string())) {
                Some(c) => blocks.push(c),
                None => all_ok = false,
            }
        }
        all_ok.then_some(blocks)
    }

    fn prompt_types(&mut self, node: &Node, path: &str) -> Option<Vec<PromptTypeFilter>> {
        let items = self.sequence(node, path)?;
        let mut types = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = join_path(path, &i.to_string());
            let Some(name) = self.string(item, &item_path) else {
                all_ok = false;
                continue;
            };
            match PromptTypeFilter::from_name(&name) {
                Some(t) => types.push(t),
                None => {
                    self.error(
                        item.pos,
                        &item_path,
                        format!(
                            "unknown prompt type '{name}': expected one of {}",
                            PromptTypeFilter::NAMES.join(", ")
                        ),
                    );
                    all_ok = false;
                }
            }
        }
        all_ok.then_some(types)
    }

    fn confidence(&mut self, node: &Node, path: &str) -> Option<Confidence> {
        let text = self.string(node, path)?;
        let level = Confidence::normalise(&text);
        // `normalise` maps every unknown name to Low, which is right for an event but would
        // silently widen a rule written with a typo.
        if level == Confidence::Low && !text.trim().eq_ignore_ascii_case(Confidence::Low.name()) {
            self.error(
                node.pos,
                path,
                format!("unknown confidence '{text}': expected high, medium (or med) or low"),
            );
            return None;
        }
        Some(level)
    }

    fn contains(&mut self, node: &Node, path: &str, is_regex: bool) -> Option<Contains> {
        let text = self.non_empty_string(node, path)?;
        if is_regex && let Err(e) = pattern::check(&text) {
            self.error(node.pos, path, e.to_string());
            return None;
        }
        Some(Contains { text, is_regex })
    }

    fn action(&mut self, node: &Node, path: &str) -> Option<Action> {
        let entries = self.mapping(node, path, "an action")?;
        let kind = match get(entries, "type") {
            Some((_, v)) => {
                let type_path = join_path(path, "type");
                let name = self.string(v, &type_path)?;
                if !ACTION_TYPES.contains(&name.as_str()) {
                    self.error(
                        v.pos,
                        &type_path,
                        format!(
                            "unknown action type '{name}': expected one of {}",
                            ACTION_TYPES.join(", ")
                        ),
                    );
                }
                Some(name)
            }
            None => {
                self.missing(node.pos, path, "type", "an action");
                None
            }
        };
        let kind = kind.filter(|k| ACTION_TYPES.contains(&k.as_str()));
        let own_fields: &[&str] = match kind.as_deref() {
            Some("auto_reply") => &["value", "constraints"],
            Some("deny") => &["reason"],
            Some(_) => &["message"],
            None => &[],
        };
        for (key, _) in entries {
            let Some(name) = key.as_str() else {
                self.error(
                    key.pos,
                    path,
                    "unknown key in an action: keys must be names",
                );
                continue;
            };
            if name == "type" || own_fields.contains(&name) {
                continue;
            }
            let key_path = join_path(path, name);
            match ACTION_FIELDS.iter().find(|(field, _)| *field == name) {
                Some((_, owner)) if kind.is_some() => self.error(
                    key.pos,
                    &key_path,
                    format!(
                        "'{name}' is not a field of {} action (it belongs to {owner})",
                        with_article(kind.as_deref().unwrap_or_default())
                    ),
                ),
                // With no valid type there is nothing to hold a known field against.
                Some(_) => {}
                None => self.error(
                    key.pos,
                    &key_path,
                    format!(
                        "unknown key '{name}' in an action; expected type and the fields of its \
                         type (value, constraints, message, reason)"
                    ),
                ),
            }
        }
        let text = |checker: &mut Self, key: &str| match optional(entries, key) {
            Some((_, v)) => checker.string(v, &join_path(path, key)).map(Some),
            None => Some(None),
        };
        match kind.as_deref()? {
            "auto_reply" => self.auto_reply(node, entries, path),
            "require_human" => Some(Action::RequireHuman {
                message: text(self, "message")?,
            }),
            "deny" => Some(Action::Deny {
                reason: text(self, "reason")?,
            }),
            _ => Some(Action::NotifyOnly {
                message: text(self, "message")?,
            }),
        }
    }

    fn auto_reply(&mut self, node: &Node, entries: &Entries, path: &str) -> Option<Action> {
        let value_path = join_path(path, "value");
        let value_node = get(entries, "value").map(|(_, v)| v);
        let value = match value_node {
            Some(v) => self.string(v, &value_path),
            None => {
                self.error(
                    node.pos,
                    path,
                    "auto_reply needs a 'value': the text to send (\"\\n\" presses Enter)",
                );
                None
            }
        };
        let constraints = match optional(entries, "constraints") {
            Some((_, v)) => self.constraints(v, &join_path(path, "constraints")),
            None => Some(ReplyConstraints::default()),
        };
        let value = value?;
        let value_node = value_node?;
        let chars = value.chars().count();
        if chars > MAX_REPLY_CHARS {
            self.error(
                value_node.pos,
                &value_path,
                format!("value is {chars} characters long; at most {MAX_REPLY_CHARS} are allowed"),
            );
            return None;
        }
        let constraints = constraints?;
        let mut satisfied = true;
        if let Some(max) = constraints.max_length
            && chars > usize::try_from(max).unwrap_or(usize::MAX)
        {
            self.error(
                value_node.pos,
                &value_path,
                format!("value is {chars} characters long, over constraints.max_length {max}"),
            );
            satisfied = false;
        }
        if constraints.numeric_only && !is_numeric(&value) {
            self.error(
                value_node.pos,
                &value_path,
                format!("value {value:?} is not numeric, but constraints.numeric_only is true"),
            );
            satisfied = false;
        }
        if let Some(choices) = &constraints.allowed_choices
            && !choices.contains(&value)
        {
            self.error(
                value_node.pos,
                &value_path,
                format!("value {value:?} is not one of constraints.allowed_choices {choices:?}"),
            );
            satisfied = false;
        }
        satisfied.then_some(Action::AutoReply { value, constraints })
    }

    fn constraints(&mut self, node: &Node, path: &str) -> Option<ReplyConstraints> {
        let entries = self.mapping(node, path, "constraints")?;
        self.known_keys(entries, path, CONSTRAINT_KEYS, "constraints");
        let max_reply = i64::try_from(MAX_REPLY_CHARS).unwrap_or(i64::MAX);
        let max_length = match optional(entries, "max_length") {
            Some((_, v)) => self
                .integer(v, &join_path(path, "max_length"), 1, max_reply)
                .and_then(|n| u32::try_from(n).ok())
                .map(Some),
            None => Some(None),
        };
        let numeric_only = match optional(entries, "numeric_only") {
            Some((_, v)) => self.bool(v, &join_path(path, "numeric_only")),
            None => Some(false),
        };
        let allowed_choices = match optional(entries, "allowed_choices") {
            Some((_, v)) => self
                .choices(v, &join_path(path, "allowed_choices"))
                .map(Some),
            None => Some(None),
        };
        let allow_free_text = match optional(entries, "allow_free_text") {
            Some((_, v)) => self.bool(v, &join_path(path, "allow_free_text")),
            None => Some(true),
        };
        Some(ReplyConstraints {
            max_length: max_length?,
            numeric_only: numeric_only?,
            allowed_choices: allowed_choices?,
            allow_free_text: allow_free_text?,
        })
    }

    fn choices(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.sequence(node, path)?;
        if items.is_empty() {
            self.error(
                node.pos,
                path,
                "allowed_choices must not be empty when given",
            );
            return None;
        }
        let mut choices = Vec::with_capacity(items.len());
        let mut all_ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &join_path(path, &i.to_string())) {
                Some(s) => choices.push(s),
                None => all_ok = false,
            }
        }
        all_ok.then_some(choices)
    }
}

fn with_article(word: &str) -> String {
    let article = if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {word}")
}

/// The entry for `key`, whatever its value.
fn get<'n>(entries: &'n Entries, key: &str) -> Option<&'n (Node, Node)> {
    entries.iter().find(|(k, _)| k.as_str() == Some(key))
}

/// The entry for `key` unless its value is null, which an optional key treats as absent.
fn optional<'n>(entries: &'n Entries, key: &str) -> Option<(&'n Node, &'n Node)> {
    get(entries, key)
        .filter(|(_, v)| {
            !matches!(
                &v.value,
                Value::Scalar(s) if s.kind == ScalarKind::Null
            )
        })
        .map(|(k, v)| (k, v))
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
pub fn is_valid_rule_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.len() <= MAX_RULE_ID_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

// ASCII digits only: the original's `str.isdigit` also took other scripts' digits, which no
// terminal prompt asking for a number expects.
fn is_numeric(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

fn whole_number(text: &str) -> Option<i64> {
    let f: f64 = text.parse().ok()?;
    // Exact for every whole number a policy can sensibly hold; anything else is refused.
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        format!("{f:.0}").parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<PolicyError> {
        check(text, Path::new("t.yaml")).errors
    }

    fn policy(text: &str) -> Policy {
        let checked = check(text, Path::new("t.yaml"));
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        checked.policy.unwrap()
    }

    #[test]
    fn rule_ids() {
        assert!(is_valid_rule_id("a"));
        assert!(is_valid_rule_id("A_b-9"));
        assert!(is_valid_rule_id(&"a".repeat(64)));
        assert!(!is_valid_rule_id(&"a".repeat(65)));
        assert!(!is_valid_rule_id(""));
        assert!(!is_valid_rule_id("-a"));
        assert!(!is_valid_rule_id("_a"));
        assert!(!is_valid_rule_id("a.b"));
        assert!(!is_valid_rule_id("é"));
    }

    #[test]
    fn bare_off_is_a_mode() {
        let p = policy("policy_version: \"0\"\nautonomy_mode: off\n");
        assert_eq!(p.autonomy_mode, AutonomyMode::Off);
        assert_eq!(p.name, "default");
        assert!(p.rules.is_empty());
        assert_eq!(p.defaults, Defaults::default());
    }

    #[test]
    fn every_error_is_reported_in_file_order() {
        let errs = errors(
            "policy_version: \"0\"\nname: 3\nautonomy_mode: sometimes\nrules:\n  - id: a\n    \
             match: {prompt_type: [nope], min_confidence: huge}\n    action: {type: deny, \
             message: x}\n    max_auto_replies: 0\nextra: 1\n",
        );
        let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 6, 6, 7, 8, 9], "{errs:#?}");
        assert!(errs[4].message.contains("not a field of a deny action"));
        assert!(errs[4].message.contains("belongs to require_human"));
    }

    #[test]
    fn version_errors() {
        let e = errors("policy_version: \"2\"\n");
        assert!(
            e[0].message
                .contains("unsupported policy_version '2'. Supported versions: '0', '1'.")
        );
        let e = errors("policy_version: 1\n");
        assert!(e[0].message.contains("must be a string"));
        let e = errors("name: x\n");
        assert!(
            e[0].message
                .contains("missing required key 'policy_version'")
        );
        let e = errors("- a\n");
        assert!(e[0].message.contains("must be a YAML mapping"));
    }

    #[test]
    fn v1_keys_are_refused_in_v0_only() {
        let text = "policy_version: \"V\"\nrules:\n  - id: a\n    match:\n      \
                    max_confidence: high\n      none_of: []\n    action: {type: deny}\n";
        let e = errors(&text.replace('V', "0"));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[0].message.contains("max_confidence"));
        let p = policy(&text.replace('V', "1"));
        assert_eq!(p.rules[0].matcher.max_confidence, Some(Confidence::High));
        assert_eq!(p.rules[0].matcher.none_of, Some(Vec::new()));
    }

    #[test]
    fn null_optional_keys_are_absent_and_lenient_scalars() {
        let p = policy(
            "policy_version: \"1\"\nrules:\n  - id: a\n    description:\n    match:\n      \
             repo: ~\n      contains: X\n      contains_is_regex: yes\n    action:\n      \
             type: auto_reply\n      value: \"1\"\n      constraints: {max_length: \"2\", \
             numeric_only: on}\n    max_auto_replies: 2.0\n",
        );
        let rule = &p.rules[0];
        assert_eq!(rule.description, None);
        assert_eq!(rule.matcher.repo, None);
        assert_eq!(
            rule.matcher.contains,
            Some(Contains {
                text: "X".to_owned(),
                is_regex: true
            })
        );
        assert_eq!(rule.max_auto_replies, Some(2));
    }

    #[test]
    fn flat_default_values_may_sit_beside_any_of() {
        policy(
            "policy_version: \"1\"\nrules:\n  - id: a\n    match:\n      tool_id: \"*\"\n      \
             min_confidence: LOW\n      any_of: [{prompt_type: [yes_no]}]\n    action: {type: deny}\n",
        );
        let e = errors(
            "policy_version: \"1\"\nrules:\n  - id: a\n    match:\n      tool_id: x\n      \
             any_of: []\n    action: {type: deny}\n",
        );
        assert!(e[0].message.contains("mutually exclusive"));
        assert!(e[0].message.contains("tool_id"));
    }

    #[test]
    fn confidence_names_normalise() {
        let p = policy(
            "policy_version: \"1\"\nrules:\n  - id: a\n    match: {min_confidence: MED, \
             max_confidence: High}\n    action: {type: deny}\n",
        );
        assert_eq!(p.rules[0].matcher.min_confidence, Confidence::Medium);
        assert_eq!(p.rules[0].matcher.max_confidence, Some(Confidence::High));
    }

    #[test]
    fn constraints_are_checked_against_the_value() {
        let base = "policy_version: \"0\"\nrules:\n  - id: a\n    match: {}\n    action:\n      \
                    type: auto_reply\n      value: VALUE\n      constraints: CONSTRAINTS\n";
        let case = |value: &str, constraints: &str| {
            errors(
                &base
                    .replace("VALUE", value)
                    .replace("CONSTRAINTS", constraints),
            )
        };
        assert!(
            case("\"12\"", "{max_length: 1}")[0]
                .message
                .contains("max_length")
        );
        assert!(
            case("\"b\"", "{allowed_choices: [a]}")[0]
                .message
                .contains("allowed_choices")
        );
        assert!(
            case("\"a\"", "{allowed_choices: []}")[0]
                .message
                .contains("empty")
        );
        assert!(
            case("\"a\"", "{max_length: 5000}")[0]
                .message
                .contains("at most 4096")
        );
        assert!(
            case("\"a\"", "{bogus: 1}")[0]
                .message
                .contains("unknown key 'bogus'")
        );
        assert!(case("\"1\"", "{numeric_only: true, max_length: 1}").is_empty());
        let long = format!("\"{}\"", "a".repeat(4097));
        assert!(case(&long, "{}")[0].message.contains("4096"));
        assert!(case("1", "{}")[0].message.contains("must be a string"));
    }
}
