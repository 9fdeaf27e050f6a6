//! Migration of a v1 decision trace (the unchained original) into a v2 chain.
//!
//! A v1 set is `autopilot_decisions.jsonl` and its rotated copies `.1`, `.2`, … (the highest
//! number is the oldest); they are read oldest first. Each v1 line becomes one v2 entry: the
//! fields v1 has are carried over, the ones it lacks are empty (`""`, `[]`, `false`), unknown
//! keys are kept under `v1_extra`, and `migrated_from`, `v1_source`, `v1_line` and `v1_sha256`
//! say where the entry came from. The source is only ever read.
//!
//! Re-running is safe: every migrated entry carries the SHA-256 of its v1 line, so a second run
//! into the same output adds only the lines it has not seen (by content, not by position: a v1
//! rotation between two runs moves lines between files without changing them). New entries
//! go into new segment files, written whole and renamed into place, so existing segments are
//! never rewritten and an interrupted run leaves no partial segment behind.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::canonical::parse_strict;
use crate::hash::{hex_lower, sha256};
use crate::trace::report::BreakKind;
use crate::trace::verify::{ChainKind, VerifyError, VerifyOptions, segment_files, verify_files};
use crate::trace::{ChainHead, GENESIS_PREV_HASH, TRACE_VERSION, seal};

/// The v1 file's name in a data directory.
pub const V1_FILE_NAME: &str = "autopilot_decisions.jsonl";

/// Where `trace migrate` writes when no `--out` is given: this directory next to the source.
pub const DEFAULT_OUT_DIR: &str = "trace-migrated";

/// Segment size of the migrated chain, as the daemon's default.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// A v1 line longer than this is invalid (real ones are a few hundred bytes).
pub const MAX_V1_LINE_BYTES: u64 = 1024 * 1024;

/// v1 members that become v2 strings of the same name.
const SAME_NAME_STRINGS: [&str; 6] = [
    "idempotency_key",
    "prompt_id",
    "session_id",
    "policy_hash",
    "prompt_type",
    "autonomy_mode",
];

/// v2 string members v1 has no equivalent for.
const ABSENT_STRINGS: [&str; 9] = [
    "agent_id",
    "policy_name",
    "policy_version",
    "risk_level",
    "escalation_status",
    "human_actor",
    "ci_status_snapshot",
    "branch",
    "entry_id",
];

/// Every v1 member with a place in v2; anything else goes to `v1_extra`.
const KNOWN_V1: [&str; 12] = [
    "timestamp",
    "idempotency_key",
    "prompt_id",
    "session_id",
    "policy_hash",
    "matched_rule_id",
    "action_type",
    "action_value",
    "confidence",
    "prompt_type",
    "autonomy_mode",
    "explanation",
];

/// Where a v1 line is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineRef {
    /// The v1 file.
    pub file: PathBuf,
    /// 1-based line number in it.
    pub line: u64,
}

impl std::fmt::Display for LineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why one v1 line cannot be migrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{at}: {}{reason}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct InvalidLine {
    /// Where.
    pub at: LineRef,
    /// The offending member, when one is to blame.
    pub field: Option<String>,
    /// Why.
    pub reason: String,
}

/// Why a migration did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No v1 file where one was expected.
    #[error("no v1 trace at {}", .0.display())]
    NoSource(PathBuf),
    /// Reading or writing failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line is not a v1 decision (and invalid lines were not to be skipped).
    #[error("{0} (pass --skip-invalid to migrate the other lines)")]
    Invalid(InvalidLine),
    /// The output already holds a chain that does not verify: nothing is added to it.
    #[error("{} already holds a trace that does not verify ({kind} at {file}:{line}); choose another --out", out.display())]
    OutputBroken {
        /// The output directory.
        out: PathBuf,
        /// The break.
        kind: BreakKind,
        /// Where.
        file: String,
        /// Line in that file.
        line: u64,
    },
    /// The output chain could not be read.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MigrateError + 'a {
    move |source| MigrateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Leave out lines that are not v1 decisions (and report them) instead of stopping.
    pub skip_invalid: bool,
    /// Segment size of the output chain.
    pub segment_bytes: u64,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            skip_invalid: false,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateSummary {
    /// The v1 files read, oldest first.
    pub sources: Vec<PathBuf>,
    /// The output directory.
    pub out: PathBuf,
    /// v1 lines read (blank lines aside).
    pub lines_read: u64,
    /// Entries added to the output by this run.
    pub migrated: u64,
    /// Lines a previous run had migrated already.
    pub already_migrated: u64,
    /// Lines left out with `skip_invalid`.
    pub skipped: Vec<InvalidLine>,
    /// Segment files this run created.
    pub segments_written: Vec<PathBuf>,
    /// The output chain's head afterwards.
    pub head: Option<ChainHead>,
}

/// The files of the v1 set `source` names, oldest first.
///
/// `source` may be a data directory (its `autopilot_decisions.jsonl` set), the live v1 file
/// (its rotated `.N` copies come first, highest `N` first) or one rotated copy (that file
/// alone).
pub fn source_files(source: &Path) -> Result<Vec<PathBuf>, MigrateError> {
    let base = if source.is_dir() {
        source.join(V1_FILE_NAME)
    } else {
        source.to_path_buf()
    };
    let name = base
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| MigrateError::NoSource(base.clone()))?
        .to_owned();
    let is_rotated_copy = name
        .rsplit_once('.')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if is_rotated_copy {
        return if base.is_file() {
            Ok(vec![base])
        } else {
            Err(MigrateError::NoSource(base))
        };
    }
    let dir = base
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(io_error("list", dir))?;
    for entry in listing {
        let entry = entry.map_err(io_error("list", dir))?;
        let file_name = entry.file_name();
        let Some(rotation) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name.as_str()))
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().is_file() {
            rotated.push((rotation, entry.path()));
        }
    }
    rotated.sort_by_key(|(rotation, _)| std::cmp::Reverse(*rotation));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, path)| path).collect();
    if base.is_file() {
        files.push(base.clone());
    }
    if files.is_empty() {
        return Err(MigrateError::NoSource(base));
    }
    Ok(files)
}

/// The v2 body (without `seq` and `prev_hash`) of one v1 line.
pub fn v2_body(line: &[u8], at: &LineRef) -> Result<Map<String, Value>, InvalidLine> {
    let invalid = |field: Option<&str>, reason: String| InvalidLine {
        at: at.clone(),
        field: field.map(str::to_owned),
        reason,
    };
    let value = parse_strict(line).map_err(|e| invalid(None, format!("not JSON: {e}")))?;
    let Value::Object(v1) = value else {
        return Err(invalid(None, "not a JSON object".to_owned()));
    };
    let text = |field: &str| -> Result<String, InvalidLine> {
        match v1.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(invalid(
                Some(field),
                format!("expected a string, found {}", json_type(other)),
            )),
        }
    };

    let timestamp = match v1.get("timestamp") {
        Some(Value::String(s)) => parse_v1_timestamp(s).ok_or_else(|| {
            invalid(
                Some("timestamp"),
                format!("{s:?} is not an ISO 8601 date and time"),
            )
        })?,
        Some(other) => {
            return Err(invalid(
                Some("timestamp"),
                format!("expected a string, found {}", json_type(other)),
            ));
        }
        None => return Err(invalid(Some("timestamp"), "missing".to_owned())),
    };
    let confidence = match v1.get("confidence") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Some v1 writers stored a score; keep its text so that no float enters the entry.
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(invalid(
                Some("confidence"),
                format!("expected a string or a number, found {}", json_type(other)),
            ));
        }
    };

    let mut body = Map::new();
    body.insert("trace_version".to_owned(), Value::from(TRACE_VERSION));
    for field in ABSENT_STRINGS {
        body.insert(field.to_owned(), Value::String(String::new()));
    }
    for field in SAME_NAME_STRINGS {
        body.insert(field.to_owned(), Value::String(text(field)?));
    }
    let action = text("action_type")?;
    body.insert("timestamp".to_owned(), Value::String(format_utc(timestamp)));
    body.insert(
        "matched_rule".to_owned(),
        Value::String(text("matched_rule_id")?),
    );
    body.insert("policy_action".to_owned(), Value::String(action.clone()));
    body.insert("action_taken".to_owned(), Value::String(action));
    body.insert(
        "reply_value".to_owned(),
        Value::String(text("action_value")?),
    );
    body.insert("confidence".to_owned(), Value::String(confidence));
    body.insert(
        "explanation".to_owned(),
        Value::String(text("explanation")?),
    );
    body.insert("risk_reasons".to_owned(), Value::Array(Vec::new()));
    body.insert("replay_safe".to_owned(), Value::Bool(false));

    let extra: Map<String, Value> = v1
        .iter()
        .filter(|(key, _)| !KNOWN_V1.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if !extra.is_empty() {
        body.insert("v1_extra".to_owned(), Value::Object(extra));
    }
    let digest = sha256(line);
    body.insert(
        "entry_id".to_owned(),
        Value::String(entry_id(timestamp, &digest)),
    );
    body.insert("migrated_from".to_owned(), Value::String("v1".to_owned()));
    let source_name = at
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    body.insert("v1_source".to_owned(), Value::String(source_name));
    body.insert("v1_line".to_owned(), Value::from(at.line));
    body.insert("v1_sha256".to_owned(), Value::String(hex_lower(&digest)));
    Ok(body)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An ISO 8601 date and time with an offset; one without an offset is taken as UTC, as the
/// original writer ran in UTC.
fn parse_v1_timestamp(text: &str) -> Option<Timestamp> {
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp);
    }
    let civil = text.parse::<jiff::civil::DateTime>().ok()?;
    jiff::tz::Offset::UTC.to_timestamp(civil).ok()
}

fn format_utc(timestamp: Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A UUID v7 whose time is the decision's and whose other bits come from the v1 line's hash:
/// time-ordered like the daemon's ids, and the same on every run.
fn entry_id(timestamp: Timestamp, digest: &[u8; 32]) -> String {
    let millis = u64::try_from(timestamp.as_millisecond()).unwrap_or(0);
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The output chain as found: its head and how often each v1 line is in it already.
#[derive(Debug, Default)]
struct Existing {
    head: Option<ChainHead>,
    seen: HashMap<String, u64>,
    segment_names: Vec<String>,
}

fn read_existing(out: &Path) -> Result<Existing, MigrateError> {
    if !out.exists() {
        return Ok(Existing::default());
    }
    let files = segment_files(out, ChainKind::Trace).map_err(io_error("list", out))?;
    if files.is_empty() {
        return Ok(Existing::default());
    }
    let report = verify_files(&files, &VerifyOptions::default())?.report;
    if let Some(error) = report.error {
        return Err(MigrateError::OutputBroken {
            out: out.to_path_buf(),
            kind: error.kind,
            file: error.file,
            line: error.line,
        });
    }
    let mut seen: HashMap<String, u64> = HashMap::new();
    for file in &files {
        let reader = BufReader::new(File::open(file).map_err(io_error("open", file))?);
        for line in reader.split(b'\n') {
            let line = line.map_err(io_error("read", file))?;
            // The chain verified, so every line is an object.
            if let Ok(Value::Object(entry)) = serde_json::from_slice::<Value>(&line)
                && let Some(Value::String(digest)) = entry.get("v1_sha256")
            {
                *seen.entry(digest.clone()).or_default() += 1;
            }
        }
    }
    let segment_names = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Ok(Existing {
        head: report.head,
        seen,
        segment_names,
    })
}

/// Writes new segments into the output directory: each is written to a hidden temporary file,
/// synced, and renamed to its segment name, so a segment either exists whole or not at all.
struct SegmentWriter<'a> {
    out: &'a Path,
    segment_bytes: u64,
    taken: &'a [String],
    current: Option<(File, PathBuf, String, u64)>,
    written: Vec<PathBuf>,
}

impl SegmentWriter<'_> {
    fn write(&mut self, seq: u64, line: &[u8]) -> Result<(), MigrateError> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.3 >= self.segment_bytes)
        {
            self.finish_segment()?;
        }
        if self.current.is_none() {
            let mut name = ChainKind::Trace.segment_name(seq, None);
            let mut tag = 0;
            while self.taken.contains(&name) {
                tag += 1;
                name = ChainKind::Trace.segment_name(seq, Some(tag));
            }
            let temporary = self.out.join(format!(".{name}.partial"));
            let file = File::create(&temporary).map_err(io_error("create", &temporary))?;
            self.current = Some((file, temporary, name, 0));
        }
        if let Some((file, temporary, _, len)) = &mut self.current {
            file.write_all(line).map_err(io_error("write", temporary))?;
            *len += line.len() as u64;
        }
        Ok(())
    }

    fn finish_segment(&mut self) -> Result<(), MigrateError> {
        let Some((file, temporary, name, _)) = self.current.take() else {
            return Ok(());
        };
        file.sync_all().map_err(io_error("sync", &temporary))?;
        drop(file);
        let path = self.out.join(name);
        std::fs::rename(&temporary, &path).map_err(io_error("rename", &temporary))?;
        self.written.push(path);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<PathBuf>, MigrateError> {
        self.finish_segment()?;
        if !self.written.is_empty() {
            // The renames are durable only once the directory is.
            File::open(self.out)
                .and_then(|dir| dir.sync_all())
                .map_err(io_error("sync", self.out))?;
        }
        Ok(std::mem::take(&mut self.written))
    }
}

impl Drop for SegmentWriter<'_> {
    fn drop(&mut self) {
        // A run that failed half way leaves nothing behind.
        if let Some((_, temporary, _, _)) = self.current.take() {
            let _ = std::fs::remove_file(temporary);
        }
    }
}

/// Migrates the v1 `sources` (oldest first) into the v2 chain in `out`, creating it if needed
/// or continuing the one a previous run left. `progress` is called with the bytes read so far.
pub fn migrate(
    sources: &[PathBuf],
    out: &Path,
    options: &MigrateOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<MigrateSummary, MigrateError> {
    let existing = read_existing(out)?;
    let mut still_seen = existing.seen;
    let mut summary = MigrateSummary {
        sources: sources.to_vec(),
        out: out.to_path_buf(),
        lines_read: 0,
        migrated: 0,
        already_migrated: 0,
        skipped: Vec::new(),
        segments_written: Vec::new(),
        head: existing.head.clone(),
    };

    // First pass: check every line, so that an invalid one stops the run before anything is
    // written; keep only the bodies of lines to add.
    let mut bodies: Vec<Map<String, Value>> = Vec::new();
    let mut read = 0u64;
    for source in sources {
        let file = File::open(source).map_err(io_error("open", source))?;
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_V1_LINE_BYTES + 1)
                .read_until(b'\n', &mut line)
                .map_err(io_error("read", source))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            progress(read);
            number += 1;
            let at = LineRef {
                file: source.clone(),
                line: number,
            };
            if n as u64 > MAX_V1_LINE_BYTES {
                // Skip the rest of the over-long line.
                let rest = skip_line(&mut reader).map_err(io_error("read", source))?;
                read += rest;
                let problem = InvalidLine {
                    at,
                    field: None,
                    reason: format!("longer than {MAX_V1_LINE_BYTES} bytes"),
                };
                if !options.skip_invalid {
                    return Err(MigrateError::Invalid(problem));
                }
                summary.skipped.push(problem);
                continue;
            }
            let content = trim_line_end(&line);
            if content.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            summary.lines_read += 1;
            let digest = hex_lower(&sha256(content));
            if let Some(count) = still_seen.get_mut(&digest)
                && *count > 0
            {
                *count -= 1;
                summary.already_migrated += 1;
                continue;
            }
            match v2_body(content, &at) {
                Ok(body) => bodies.push(body),
                Err(problem) if options.skip_invalid => summary.skipped.push(problem),
                Err(problem) => return Err(MigrateError::Invalid(problem)),
            }
        }
    }
    if bodies.is_empty() {
        return Ok(summary);
    }

    std::fs::create_dir_all(out).map_err(io_error("create", out))?;
    let mut writer = SegmentWriter {
        out,
        segment_bytes: options.segment_bytes.max(1),
        taken: &existing.segment_names,
        current: None,
        written: Vec::new(),
    };
    let mut head = existing.head;
    for mut body in bodies {
        let seq = head.as_ref().map_or(0, |h| h.seq + 1);
        let prev = head
            .as_ref()
            .map_or_else(|| GENESIS_PREV_HASH.to_owned(), |h| h.entry_hash.clone());
        body.insert("seq".to_owned(), Value::from(seq));
        body.insert("prev_hash".to_owned(), Value::String(prev));
        let sealed = seal(&body);
        writer.write(seq, &sealed.line)?;
        head = Some(ChainHead {
            seq,
            entry_hash: sealed.entry_hash,
        });
        summary.migrated += 1;
    }
    summary.segments_written = writer.finish()?;
    summary.head = head;
    Ok(summary)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Reads up to and including the next `\n`; returns the bytes consumed.
fn skip_line(reader: &mut impl BufRead) -> io::Result<u64> {
    let mut consumed = 0u64;
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(consumed);
        }
        match memchr::memchr(b'\n', buffer) {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(consumed + end as u64 + 1);
            }
            None => {
                let len = buffer.len();
                reader.consume(len);
                consumed += len as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::verify_path;

    fn v1_line(i: u32) -> String {
        format!(
            r#"{{"timestamp":"2026-11-2{d}T10:00:0{s}.123456+02:00","idempotency_key":"k{i}","prompt_id":"p{i}","session_id":"s","policy_hash":"abc","matched_rule_id":null,"action_type":"auto_reply","action_value":"y","confidence":"high","prompt_type":"yes_no","autonomy_mode":"full","explanation":"rule {i}"}}"#,
            d = i % 3,
            s = i % 10
        )
    }

    fn at(line: u64) -> LineRef {
        LineRef {
            file: PathBuf::from("/x/autopilot_decisions.jsonl"),
            line,
        }
    }

    #[test]
    fn a_v1_line_maps_onto_every_v2_field() {
        let body = v2_body(v1_line(4).as_bytes(), &at(7)).unwrap();
        assert_eq!(body["timestamp"], "2026-11-21T08:00:04.123456Z");
        assert_eq!(body["matched_rule"], "");
        assert_eq!(body["policy_action"], "auto_reply");
        assert_eq!(body["action_taken"], "auto_reply");
        assert_eq!(body["reply_value"], "y");
        assert_eq!(body["explanation"], "rule 4");
        assert_eq!(body["risk_reasons"], Value::Array(Vec::new()));
        assert_eq!(body["replay_safe"], false);
        assert_eq!(body["agent_id"], "");
        assert_eq!(body["migrated_from"], "v1");
        assert_eq!(body["v1_source"], "autopilot_decisions.jsonl");
        assert_eq!(body["v1_line"], 7);
        assert!(!body.contains_key("v1_extra"));
        let id = body["entry_id"].as_str().unwrap();
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(
            v2_body(v1_line(4).as_bytes(), &at(7)).unwrap(),
            body,
            "deterministic"
        );
    }

    #[test]
    fn the_upstream_variant_and_unknown_keys_are_kept_aside() {
        let line = br#"{"timestamp":"2026-11-24T01:02:03","prompt_id":"p","prev_hash":"aa","hash":"bb","extra":{"n":1},"confidence":0.9}"#;
        let body = v2_body(line, &at(1)).unwrap();
        assert_eq!(
            body["timestamp"], "2026-11-24T01:02:03.000000Z",
            "naive is UTC"
        );
        assert_eq!(body["confidence"], "0.9");
        assert_eq!(
            body["v1_extra"],
            serde_json::json!({"prev_hash": "aa", "hash": "bb", "extra": {"n": 1}})
        );
        assert!(!body.contains_key("prev_hash"), "the chain sets its own");
    }

    #[test]
    fn invalid_lines_name_the_file_line_and_field() {
        let cases: [(&[u8], Option<&str>); 5] = [
            (b"{not json", None),
            (b"[1,2]", None),
            (br#"{"prompt_id":"p"}"#, Some("timestamp")),
            (br#"{"timestamp":"yesterday"}"#, Some("timestamp")),
            (
                br#"{"timestamp":"2026-11-24T01:02:03Z","session_id":5}"#,
                Some("session_id"),
            ),
        ];
        for (line, field) in cases {
            let error = v2_body(line, &at(3)).unwrap_err();
            assert_eq!(error.field.as_deref(), field, "{error}");
            assert!(
                error
                    .to_string()
                    .starts_with("/x/autopilot_decisions.jsonl:3: "),
                "{error}"
            );
        }
    }

    fn write_set(dir: &Path, files: &[(&str, std::ops::Range<u32>)]) {
        for (name, range) in files {
            let text: String = range.clone().map(|i| v1_line(i) + "\n").collect();
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn run(sources: &[PathBuf], out: &Path, options: &MigrateOptions) -> MigrateSummary {
        migrate(sources, out, options, &mut |_| {}).unwrap()
    }

    #[test]
    fn a_rotated_set_is_read_oldest_first_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        write_set(
            dir.path(),
            &[
                ("autopilot_decisions.jsonl.2", 0..3),
                ("autopilot_decisions.jsonl.1", 3..6),
                ("autopilot_decisions.jsonl", 6..8),
                ("autopilot_decisions.jsonl.bak", 100..101),
            ],
        );
        let sources = source_files(dir.path()).unwrap();
        let names: Vec<_> = sources
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "autopilot_decisions.jsonl.2",
                "autopilot_decisions.jsonl.1",
                "autopilot_decisions.jsonl"
            ]
        );
        let out = dir.path().join("out");
        let summary = run(&sources, &out, &MigrateOptions::default());
        assert_eq!((summary.lines_read, summary.migrated), (8, 8));
        let report = verify_path(&out, &VerifyOptions::default()).unwrap();
        assert!(report.valid && report.entries_checked == 8, "{report:?}");
        let first = std::fs::read_to_string(&summary.segments_written[0]).unwrap();
        assert!(
            first
                .lines()
                .next()
                .unwrap()
                .contains("\"prompt_id\":\"p0\"")
        );
        let only = source_files(&dir.path().join("autopilot_decisions.jsonl.1")).unwrap();
        assert_eq!(only.len(), 1);
    }

    #[test]
    fn a_second_run_adds_nothing_and_a_grown_source_adds_only_the_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), &[("autopilot_decisions.jsonl", 0..5)]);
        let out = dir.path().join("out");
        let sources = source_files(dir.path()).unwrap();
        let first = run(&sources, &out, &MigrateOptions::default());
        let bytes = std::fs::read(&first.segments_written[0]).unwrap();

        let again = run(&sources, &out, &MigrateOptions::default());
        assert_eq!((again.migrated, again.already_migrated), (0, 5));
        assert!(again.segments_written.is_empty());
        assert_eq!(again.head, first.head);

        // The writer rotates and goes on: the old lines move to `.1`, new ones follow.
        std::fs::rename(
            dir.path().join("autopilot_decisions.jsonl"),
            dir.path().join("autopilot_decisions.jsonl.1"),
        )
        .unwrap();
        write_set(dir.path(), &[("autopilot_decisions.jsonl", 5..8)]);
        let grown = run(
            &source_files(dir.path()).unwrap(),
            &out,
            &MigrateOptions::default(),
        );
        assert_eq!((grown.migrated, grown.already_migrated), (3, 5));
        assert_eq!(
            std::fs::read(&first.segments_written[0]).unwrap(),
            bytes,
            "old segments are never rewritten"
        );
        let report = verify_path(&out, &VerifyOptions::default()).unwrap();
        assert!(report.valid && report.entries_checked == 8 && report.segments == 2);
    }

    #[test]
    fn an_invalid_line_stops_the_run_before_anything_is_written_unless_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{}\n{{torn\n{}\n", v1_line(0), v1_line(1));
        std::fs::write(dir.path().join("autopilot_decisions.jsonl"), text).unwrap();
        let out = dir.path().join("out");
        let sources = source_files(dir.path()).unwrap();
        let error = migrate(&sources, &out, &MigrateOptions::default(), &mut |_| {}).unwrap_err();
        assert!(
            error.to_string().contains("autopilot_decisions.jsonl:2"),
            "{error}"
        );
        assert!(!out.exists());

        let skipping = MigrateOptions {
            skip_invalid: true,
            ..MigrateOptions::default()
        };
        let summary = run(&sources, &out, &skipping);
        assert_eq!(summary.migrated, 2);
        assert_eq!(summary.skipped.len(), 1);
        assert_eq!(summary.skipped[0].at.line, 2);
    }

    #[test]
    fn segments_rotate_at_the_size_given() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), &[("autopilot_decisions.jsonl", 0..10)]);
        let out = dir.path().join("out");
        let small = MigrateOptions {
            segment_bytes: 2000,
            ..MigrateOptions::default()
        };
        let summary = run(&source_files(dir.path()).unwrap(), &out, &small);
        assert!(summary.segments_written.len() >= 3, "{summary:?}");
        let report = verify_path(&out, &VerifyOptions::default()).unwrap();
        assert!(report.valid && report.entries_checked == 10);
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_broken_output_is_never_added_to() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), &[("autopilot_decisions.jsonl", 0..3)]);
        let out = dir.path().join("out");
        let sources = source_files(dir.path()).unwrap();
        let first = run(&sources, &out, &MigrateOptions::default());
        let segment = &first.segments_written[0];
        let text = std::fs::read_to_string(segment).unwrap();
        std::fs::write(segment, text.replacen("\"p1\"", "\"pX\"", 1)).unwrap();
        write_set(dir.path(), &[("autopilot_decisions.jsonl", 0..4)]);
        let error = migrate(&sources, &out, &MigrateOptions::default(), &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                error,
                MigrateError::OutputBroken {
                    kind: BreakKind::HashMismatch,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_missing_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = source_files(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("autopilot_decisions.jsonl"),
            "{error}"
        );
    }
}
