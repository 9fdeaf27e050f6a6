//! Claude Code's settings files: where they are, and adding or removing our `PreToolUse` hook
//! without disturbing anything else in them.
//!
//! The file is read into a JSON tree that keeps the order of every object's members (a
//! `serde_json::Value` would sort them), changed where our hook lives, and written back with
//! two-space indentation, the way Claude Code writes it. A file that does not parse is an error
//! naming its line and column, and is never written.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The hook event our entry is registered under.
const EVENT: &str = "PreToolUse";

/// Which settings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// `~/.claude/settings.json` (or `$CLAUDE_CONFIG_DIR/settings.json`): every project.
    User,
    /// `.claude/settings.json` in the current directory: the project, shared through its
    /// repository.
    Project,
    /// `.claude/settings.local.json` in the current directory: the project, on this machine.
    Local,
}

impl Scope {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Project => "project",
            Self::Local => "local",
        }
    }
}

/// What can go wrong with a settings file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingsError {
    /// The file is not JSON.
    #[error("{}:{line}:{column}: not valid JSON ({message}); the file was left as it is", file.display())]
    Malformed {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A member that must hold an object or an array holds something else.
    #[error("{}: {what}; the file was left as it is", file.display())]
    Shape { file: PathBuf, what: String },
    /// Reading or writing failed.
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The user settings need a home directory.
    #[error(
        "cannot find the user's Claude Code settings: neither CLAUDE_CONFIG_DIR nor HOME is set"
    )]
    NoHome,
}

/// The settings file of `scope`: `$CLAUDE_CONFIG_DIR/settings.json`, else
/// `$HOME/.claude/settings.json` for the user; `cwd/.claude/settings.json` or
/// `cwd/.claude/settings.local.json` for the project.
pub(crate) fn settings_file(
    scope: Scope,
    var: impl Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<PathBuf, SettingsError> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    match scope {
        Scope::User => {
            if let Some(dir) = set("CLAUDE_CONFIG_DIR") {
                return Ok(cwd.join(dir).join("settings.json"));
            }
            let home = set("HOME").ok_or(SettingsError::NoHome)?;
            Ok(cwd.join(home).join(".claude").join("settings.json"))
        }
        Scope::Project => Ok(cwd.join(".claude").join("settings.json")),
        Scope::Local => Ok(cwd.join(".claude").join("settings.local.json")),
    }
}

/// A JSON value whose objects keep their members in the order of the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn str(text: &str) -> Self {
        Self::String(text.to_owned())
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The member `key` of an object.
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Self::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Equal in meaning: objects compare as sets of members, whatever their order.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Object(a), Json::Object(b)) => same_members(a, b),
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn same_members(a: &[(String, Json)], b: &[(String, Json)]) -> bool {
    a.len() == b.len()
        && a.iter().all(|(key, value)| {
            b.iter()
                .find(|(k, _)| k == key)
                .is_some_and(|(_, other)| same(value, other))
        })
}

/// The object's member `key`, added (with `empty`) at the end when missing.
fn member<'a>(members: &'a mut Vec<(String, Json)>, key: &str, empty: Json) -> &'a mut Json {
    let index = match members.iter().position(|(k, _)| k == key) {
        Some(index) => index,
        None => {
            members.push((key.to_owned(), empty));
            members.len() - 1
        }
    };
    &mut members[index].1
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::Number(n) => n.serialize(serializer),
            Self::String(s) => serializer.serialize_str(s),
            Self::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::str(s))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

/// Our hook as it is written into the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookEntry {
    /// The shell command Claude Code runs.
    pub command: String,
    /// Seconds Claude Code gives it.
    pub timeout_s: u64,
}

impl HookEntry {
    /// `{"type": "command", "command", "timeout", "onFailure": "block"}`: with `onFailure`
    /// `block`, a hook that cannot start, times out or exits with an unexpected status blocks
    /// the tool call instead of letting it through.
    fn handler(&self) -> Json {
        Json::Object(vec![
            ("type".into(), Json::str("command")),
            ("command".into(), Json::str(&self.command)),
            ("timeout".into(), Json::Number(self.timeout_s.into())),
            ("onFailure".into(), Json::str("block")),
        ])
    }

    /// `{"matcher": "*", "hooks": [handler]}`: every tool.
    fn group(&self) -> Json {
        Json::Object(vec![
            ("matcher".into(), Json::str("*")),
            ("hooks".into(), Json::Array(vec![self.handler()])),
        ])
    }
}

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Our hook was not there and now is.
    Added,
    /// Our hook was there with another command or settings (or more than once), and now is
    /// there once, as asked.
    Updated,
    /// Our hook was already there exactly as asked.
    Unchanged,
    /// Our hook was there and is gone.
    Removed,
    /// There was nothing of ours to remove.
    NotInstalled,
}

impl Outcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Removed => "removed",
            Self::NotInstalled => "not_installed",
        }
    }

    /// Whether the file has to be written.
    pub(crate) fn changes(self) -> bool {
        matches!(self, Self::Added | Self::Updated | Self::Removed)
    }
}

/// A settings file's new text, and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub outcome: Outcome,
    /// The whole file as it is to be written (the file as it was when nothing changed).
    pub text: String,
}

/// Reads settings text: a missing or blank file is an empty object; the top level must be an
/// object.
fn parse(file: &Path, text: Option<&str>) -> Result<Vec<(String, Json)>, SettingsError> {
    let text = text.unwrap_or("");
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(members)) => Ok(members),
        Ok(_) => Err(SettingsError::Shape {
            file: file.to_path_buf(),
            what: "the settings are not a JSON object".into(),
        }),
        Err(e) => Err(SettingsError::Malformed {
            file: file.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        }),
    }
}

/// serde_json's message without its " at line L column C" (the error names them first).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn render(members: Vec<(String, Json)>) -> String {
    // Serializing a tree of strings, numbers, arrays and objects cannot fail.
    let mut text = serde_json::to_string_pretty(&Json::Object(members)).unwrap_or_default();
    text.push('\n');
    text
}

/// The `hooks.PreToolUse` array, created when missing.
fn pre_tool_use<'a>(
    file: &Path,
    root: &'a mut Vec<(String, Json)>,
) -> Result<&'a mut Vec<Json>, SettingsError> {
    let shape = |what: &str| SettingsError::Shape {
        file: file.to_path_buf(),
        what: what.to_owned(),
    };
    let Json::Object(hooks) = member(root, "hooks", Json::Object(Vec::new())) else {
        return Err(shape("`hooks` is not an object"));
    };
    let Json::Array(groups) = member(hooks, EVENT, Json::Array(Vec::new())) else {
        return Err(shape("`hooks.PreToolUse` is not an array"));
    };
    Ok(groups)
}

/// Whether a hook handler is ours: a command that runs an `atlasbridge` binary with the
/// arguments `hook claude-code` (whatever the binary's path and the options).
pub(crate) fn is_ours(handler: &Json) -> bool {
    let Some(command) = handler.get("command").and_then(Json::as_str) else {
        return false;
    };
    let words = shell_words(command);
    let program_is_ours = words.first().is_some_and(|program| {
        Path::new(program)
            .file_name()
            .is_some_and(|name| name.to_string_lossy().contains("atlasbridge"))
    });
    program_is_ours
        && words
            .windows(2)
            .any(|pair| pair[0] == "hook" && pair[1] == "claude-code")
}

/// Splits a command line into words as a POSIX shell would for plain words, single and double
/// quotes and backslashes (no expansions): enough to recognise our own command.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    current.push(c);
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(next) = chars.next() {
                                current.push(next);
                            }
                        }
                        _ => current.push(c),
                    }
                }
            }
            '\\' => {
                let current = word.get_or_insert_with(String::new);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            _ => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(done) = word {
        words.push(done);
    }
    words
}

/// `word` quoted for a POSIX shell: as it is when it holds only safe characters, else in single
/// quotes.
pub(crate) fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The handlers of a matcher group, when it has a `hooks` array.
fn handlers_mut(group: &mut Json) -> Option<&mut Vec<Json>> {
    match group {
        Json::Object(members) => members.iter_mut().find_map(|(k, v)| match v {
            Json::Array(handlers) if k == "hooks" => Some(handlers),
            _ => None,
        }),
        _ => None,
    }
}

/// Adds our hook to the settings `text` (`None`: the file does not exist). An entry of ours
/// already there is updated in place, keeping its group and matcher; a second one is removed.
/// Everything else stays as it was, in its order.
pub(crate) fn install(
    file: &Path,
    text: Option<&str>,
    entry: &HookEntry,
) -> Result<Edit, SettingsError> {
    let before = parse(file, text)?;
    let mut root = before.clone();
    let groups = pre_tool_use(file, &mut root)?;
    let wanted = entry.handler();
    let mut found = false;
    groups.retain_mut(|group| {
        let Some(handlers) = handlers_mut(group) else {
            return true;
        };
        let count = handlers.len();
        let mut kept = Vec::with_capacity(count);
        for handler in handlers.drain(..) {
            if !is_ours(&handler) {
                kept.push(handler);
            } else if !found {
                found = true;
                // Kept as written when it already says what we want, in whatever order.
                kept.push(if same(&handler, &wanted) {
                    handler
                } else {
                    wanted.clone()
                });
            }
        }
        *handlers = kept;
        // A group that held only a duplicate of ours is left empty: it goes too.
        handlers.len() == count || !handlers.is_empty()
    });
    if !found {
        groups.push(entry.group());
    }
    let outcome = if same_members(&root, &before) {
        Outcome::Unchanged
    } else if found {
        Outcome::Updated
    } else {
        Outcome::Added
    };
    Ok(finish(outcome, text, root))
}

/// Removes every hook of ours from the settings `text`, and the groups, the `PreToolUse` list
/// and the `hooks` object that this leaves empty. Nothing else changes.
pub(crate) fn uninstall(file: &Path, text: Option<&str>) -> Result<Edit, SettingsError> {
    let mut root = parse(file, text)?;
    let Some(Json::Object(hooks)) = root
        .iter_mut()
        .find_map(|(k, v)| (k == "hooks").then_some(v))
    else {
        return Ok(finish(Outcome::NotInstalled, text, root));
    };
    let Some(Json::Array(groups)) = hooks
        .iter_mut()
        .find_map(|(k, v)| (k == EVENT).then_some(v))
    else {
        return Ok(finish(Outcome::NotInstalled, text, root));
    };
    let mut removed = false;
    groups.retain_mut(|group| {
        let Some(handlers) = handlers_mut(group) else {
            return true;
        };
        let count = handlers.len();
        handlers.retain(|handler| !is_ours(handler));
        if handlers.len() == count {
            return true;
        }
        removed = true;
        !handlers.is_empty()
    });
    if !removed {
        return Ok(finish(Outcome::NotInstalled, text, root));
    }
    if groups.is_empty() {
        hooks.retain(|(k, _)| k != EVENT);
    }
    if hooks.is_empty() {
        root.retain(|(k, _)| k != "hooks");
    }
    Ok(finish(Outcome::Removed, text, root))
}

fn finish(outcome: Outcome, text: Option<&str>, root: Vec<(String, Json)>) -> Edit {
    let text = if outcome.changes() {
        render(root)
    } else {
        text.map_or_else(|| render(root), str::to_owned)
    };
    Edit { outcome, text }
}

/// Where to write `file`: the file a symlink points to, so that a settings file kept elsewhere
/// (a dotfiles repository) is updated rather than replaced by a copy.
fn write_target(file: &Path) -> PathBuf {
    match std::fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf())
        }
        _ => file.to_path_buf(),
    }
}

/// Reads a settings file; `None` when it does not exist.
pub(crate) fn read(file: &Path) -> Result<Option<String>, SettingsError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SettingsError::Io {
            file: file.to_path_buf(),
            source,
        }),
    }
}

/// Writes `text` to `file` through a temporary file in the same directory and a rename, so
/// that the settings are never seen half written; an existing file's permissions are kept.
pub(crate) fn write(file: &Path, text: &str) -> Result<(), SettingsError> {
    let target = write_target(file);
    let io = |source| SettingsError::Io {
        file: target.clone(),
        source,
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = target.file_name().map_or_else(
        || "settings.json".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{name}.atlasbridge-{}", std::process::id()));
    let result = (|| {
        std::fs::write(&temp, text)?;
        if let Ok(meta) = std::fs::metadata(&target) {
            std::fs::set_permissions(&temp, meta.permissions())?;
        }
        std::fs::File::open(&temp)?.sync_all()?;
        std::fs::rename(&temp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(command: &str) -> HookEntry {
        HookEntry {
            command: command.to_owned(),
            timeout_s: 10,
        }
    }

    const OURS: &str = "/usr/local/bin/atlasbridge hook claude-code";

    fn file() -> &'static Path {
        Path::new("/home/me/.claude/settings.json")
    }

    fn value(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn the_settings_file_of_each_scope() {
        let cwd = Path::new("/work/app");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let home = env(&[("HOME", "/home/me")]);
        assert_eq!(
            settings_file(Scope::User, home, cwd).unwrap(),
            Path::new("/home/me/.claude/settings.json")
        );
        let moved = env(&[("HOME", "/home/me"), ("CLAUDE_CONFIG_DIR", "/cfg/claude")]);
        assert_eq!(
            settings_file(Scope::User, moved, cwd).unwrap(),
            Path::new("/cfg/claude/settings.json")
        );
        let empty = env(&[("HOME", "/home/me"), ("CLAUDE_CONFIG_DIR", "")]);
        assert_eq!(
            settings_file(Scope::User, empty, cwd).unwrap(),
            Path::new("/home/me/.claude/settings.json")
        );
        assert!(matches!(
            settings_file(Scope::User, env(&[]), cwd),
            Err(SettingsError::NoHome)
        ));
        assert_eq!(
            settings_file(Scope::Project, env(&[]), cwd).unwrap(),
            Path::new("/work/app/.claude/settings.json")
        );
        assert_eq!(
            settings_file(Scope::Local, env(&[]), cwd).unwrap(),
            Path::new("/work/app/.claude/settings.local.json")
        );
    }

    #[test]
    fn installing_into_no_file_writes_our_group_alone() {
        let edit = install(file(), None, &entry(OURS)).unwrap();
        assert_eq!(edit.outcome, Outcome::Added);
        assert_eq!(
            edit.text,
            r#"{
  "hooks": {
    "PreToolUse": [
      {
        "matcher": "*",
        "hooks": [
          {
            "type": "command",
            "command": "/usr/local/bin/atlasbridge hook claude-code",
            "timeout": 10,
            "onFailure": "block"
          }
        ]
      }
    ]
  }
}
"#
        );
        assert_eq!(
            install(file(), Some(" \n"), &entry(OURS)).unwrap().outcome,
            Outcome::Added
        );
    }

    #[test]
    fn installing_keeps_every_other_key_and_hook_in_their_order() {
        let before = r#"{"permissions": {"allow": ["Bash(git status)"], "deny": []},
            "model": "opus", "cleanupPeriodDays": 30, "ratio": 1.5,
            "hooks": {
              "PostToolUse": [{"matcher": "Write", "hooks": [{"type": "command", "command": "fmt"}]}],
              "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh", "timeout": 3}]}]
            },
            "zeta": null}"#;
        let edit = install(file(), Some(before), &entry(OURS)).unwrap();
        assert_eq!(edit.outcome, Outcome::Added);
        let after = value(&edit.text);
        let mut expected = value(before);
        expected["hooks"]["PreToolUse"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"matcher": "*", "hooks": [{
                "type": "command", "command": OURS, "timeout": 10, "onFailure": "block"}]}));
        assert_eq!(after, expected);
        // The order of the file is kept, not sorted.
        let keys: Vec<&str> = [
            "permissions",
            "model",
            "cleanupPeriodDays",
            "ratio",
            "hooks",
            "zeta",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| edit.text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", edit.text);
        assert!(edit.text.find("PostToolUse").unwrap() < edit.text.find("\"PreToolUse\"").unwrap());
    }

    #[test]
    fn installing_twice_changes_nothing_and_keeps_the_files_text() {
        let once = install(file(), None, &entry(OURS)).unwrap();
        let twice = install(file(), Some(&once.text), &entry(OURS)).unwrap();
        assert_eq!(twice.outcome, Outcome::Unchanged);
        assert_eq!(twice.text, once.text);
        // Unchanged in meaning, whatever the formatting: the file is left as written.
        let compact = serde_json::to_string(&value(&once.text)).unwrap();
        let again = install(file(), Some(&compact), &entry(OURS)).unwrap();
        assert_eq!(again.outcome, Outcome::Unchanged);
        assert_eq!(again.text, compact);
    }

    #[test]
    fn a_moved_binary_or_new_options_update_our_entry_in_place() {
        let before = r#"{"hooks": {"PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"},
                                          {"type": "command", "command": "'/old path/atlasbridge' hook claude-code", "timeout": 60}]},
            {"matcher": "*", "hooks": [{"type": "command", "command": "/opt/atlasbridge --fail-closed hook claude-code"}]}
        ]}}"#;
        let edit = install(file(), Some(before), &entry(OURS)).unwrap();
        assert_eq!(edit.outcome, Outcome::Updated);
        assert_eq!(
            value(&edit.text),
            serde_json::json!({"hooks": {"PreToolUse": [
                {"matcher": "Bash", "hooks": [
                    {"type": "command", "command": "guard.sh"},
                    {"type": "command", "command": OURS, "timeout": 10, "onFailure": "block"}]}
            ]}})
        );
    }

    #[test]
    fn uninstalling_removes_only_our_handlers() {
        let before = r#"{"env": {"A": "1"}, "hooks": {
            "PreToolUse": [
              {"matcher": "*", "hooks": [{"type": "command", "command": "/usr/local/bin/atlasbridge hook claude-code", "onFailure": "block"}]},
              {"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"},
                                            {"type": "command", "command": "atlasbridge --timeout 3 hook claude-code --fail-closed"}]}
            ],
            "Stop": [{"hooks": [{"type": "command", "command": "notify"}]}]}}"#;
        let edit = uninstall(file(), Some(before)).unwrap();
        assert_eq!(edit.outcome, Outcome::Removed);
        assert_eq!(
            value(&edit.text),
            serde_json::json!({"env": {"A": "1"}, "hooks": {
                "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"}]}],
                "Stop": [{"hooks": [{"type": "command", "command": "notify"}]}]}})
        );
        let again = uninstall(file(), Some(&edit.text)).unwrap();
        assert_eq!(again.outcome, Outcome::NotInstalled);
        assert_eq!(again.text, edit.text);
    }

    #[test]
    fn uninstalling_what_install_added_leaves_what_was_there() {
        let before = "{\n  \"model\": \"opus\"\n}\n";
        let installed = install(file(), Some(before), &entry(OURS)).unwrap();
        let removed = uninstall(file(), Some(&installed.text)).unwrap();
        assert_eq!(removed.outcome, Outcome::Removed);
        assert_eq!(removed.text, before);
        assert_eq!(
            uninstall(file(), None).unwrap().outcome,
            Outcome::NotInstalled
        );
    }

    #[test]
    fn a_malformed_file_is_an_error_with_its_line_and_column() {
        let text = "{\n  \"model\": \"opus\",\n  \"hooks\": {,}\n}\n";
        for result in [
            install(file(), Some(text), &entry(OURS)),
            uninstall(file(), Some(text)),
        ] {
            let error = result.unwrap_err();
            assert!(
                matches!(
                    error,
                    SettingsError::Malformed {
                        line: 3,
                        column: 13,
                        ..
                    }
                ),
                "{error:?}"
            );
            assert_eq!(
                error.to_string(),
                "/home/me/.claude/settings.json:3:13: not valid JSON (key must be a string); \
                 the file was left as it is"
            );
        }
    }

    #[test]
    fn members_of_the_wrong_shape_are_errors_not_overwritten() {
        for (text, what) in [
            ("[]", "the settings are not a JSON object"),
            (r#"{"hooks": []}"#, "`hooks` is not an object"),
            (
                r#"{"hooks": {"PreToolUse": {}}}"#,
                "`hooks.PreToolUse` is not an array",
            ),
        ] {
            let error = install(file(), Some(text), &entry(OURS)).unwrap_err();
            assert!(error.to_string().contains(what), "{error}");
        }
        // Uninstalling has nothing to remove from a `hooks` of another shape.
        assert_eq!(
            uninstall(file(), Some(r#"{"hooks": []}"#)).unwrap().outcome,
            Outcome::NotInstalled
        );
    }

    #[test]
    fn our_command_is_recognised_whatever_its_path_and_options() {
        let handler = |command: &str| {
            Json::Object(vec![
                ("type".into(), Json::str("command")),
                ("command".into(), Json::str(command)),
            ])
        };
        for command in [
            OURS,
            "atlasbridge hook claude-code",
            "'/Users/me/my tools/atlasbridge' --socket '/tmp/a b.sock' hook claude-code --fail-closed",
            "\"/opt/atlas bridge/atlasbridge\" --timeout 3 hook claude-code",
            "/x/e2e-atlasbridge hook claude-code",
        ] {
            assert!(is_ours(&handler(command)), "{command}");
        }
        for command in [
            "guard.sh",
            "atlasbridge hook install claude-code",
            "atlasbridge decide --session s --prompt hook",
            "other-tool hook claude-code",
            "",
        ] {
            assert!(!is_ours(&handler(command)), "{command}");
        }
        assert!(!is_ours(&Json::Object(vec![])));
    }

    #[test]
    fn shell_quoting_round_trips_through_the_word_splitter() {
        for word in [
            "/usr/local/bin/atlasbridge",
            "/Users/me/my tools/atlasbridge",
            "/tmp/it's here",
            "a\"b$c`d\\e",
            "",
        ] {
            let quoted = shell_quote(word);
            assert_eq!(shell_words(&quoted), vec![word.to_owned()], "{quoted}");
        }
        assert_eq!(shell_quote("/usr/bin/atlasbridge"), "/usr/bin/atlasbridge");
        assert_eq!(shell_quote("/a b/x"), "'/a b/x'");
    }

    #[test]
    fn numbers_and_unicode_survive_a_round_trip() {
        let text = r#"{"a": 1.25, "b": -3, "c": 18446744073709551615, "d": "é ✓ \u0001", "e": [true, false, null]}"#;
        let edit = install(file(), Some(text), &entry(OURS)).unwrap();
        let mut expected = value(text);
        expected["hooks"] = serde_json::json!({"PreToolUse": [{"matcher": "*", "hooks": [{
            "type": "command", "command": OURS, "timeout": 10, "onFailure": "block"}]}]});
        assert_eq!(value(&edit.text), expected);
    }

    #[cfg(unix)]
    #[test]
    fn writing_replaces_the_file_a_symlink_points_to_and_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dotfiles/claude-settings.json");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "{}").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join(".claude/settings.json");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();

        write(&link, "{\"model\": \"opus\"}\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "{\"model\": \"opus\"}\n"
        );
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(target.parent().unwrap()).unwrap().count(),
            1
        );

        // A file that does not exist yet is created, with its directory.
        let fresh = dir.path().join("project/.claude/settings.local.json");
        write(&fresh, "{}\n").unwrap();
        assert_eq!(read(&fresh).unwrap().as_deref(), Some("{}\n"));
        assert_eq!(read(&dir.path().join("missing.json")).unwrap(), None);
    }
}
