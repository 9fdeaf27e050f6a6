//! Checking one stored line of a hash chain on its own: is it a sound entry, and does its
//! `entry_hash` match its content?
//!
//! Two paths reach the same verdict. The fast path never builds a JSON value: it confirms in
//! one pass over the bytes that the line is exactly the stored layout (canonical JCS bytes with
//! `,"entry_hash":"<64 hex>"` before the final `}`), picks up `seq`, `prev_hash` and
//! `trace_version` on the way, and hashes the bytes as they are. Any doubt at all (white space,
//! another key order, an unusual escape, a float, deep nesting) sends the line to the slow
//! path, which parses it strictly and re-canonicalises it. The fast path only accepts bytes
//! that the slow path would re-create exactly, so the two can never disagree; the property
//! tests below hold them to that.
//!
//! Checks run in the order of `trace-format.md`: a malformed line first, then the version; the
//! caller checks `seq` against the chain before it looks at [`Checked::hash_problem`], and
//! `prev_hash` last.

use std::cmp::Ordering;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::entry::{ENTRY_HASH_KEY, TRACE_VERSION};
use super::report::BreakKind;
use super::verify::ChainKind;
use crate::canonical::{parse_strict, to_canonical_vec, write_object};
use crate::hash::is_sha256_hex;

/// Nesting the fast path accepts. serde_json refuses beyond 128 levels, so the fast path must
/// stay well inside that for both paths to agree; deeper lines go the slow way (and fail there).
const MAX_FAST_DEPTH: usize = 64;

/// `,"entry_hash":"` + 64 hex + `"}`.
const SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;
const HASH_MEMBER: &[u8] = b",\"entry_hash\":\"";

/// What a sound line says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFacts {
    /// Its `seq`.
    pub seq: u64,
    /// Its `prev_hash`, as stored (not necessarily a hash: the chain decides).
    pub prev_hash: String,
    /// Its `entry_hash`, which matches its content.
    pub entry_hash: String,
    /// Its `trace_version`, when that is a non-negative integer (always 2 for the trace).
    pub trace_version: Option<u64>,
}

/// The canonical JSON (RFC 8785) of a stored entry line (without its `\n`). The stored layout
/// is canonical JSON with `entry_hash` moved last; this puts it back in key order, from the
/// bytes alone. `None` when the line is not exactly that layout (then parse and re-encode it).
pub fn canonical_of_stored(line: &[u8]) -> Option<Vec<u8>> {
    let (prefix, suffix) = line.split_at(line.len().checked_sub(SUFFIX_LEN)?);
    let stored = suffix.strip_prefix(HASH_MEMBER)?.strip_suffix(b"\"}")?;
    if !is_sha256_hex(stored) {
        return None;
    }
    let mut keys = KeyScratch::default();
    let top = Canon {
        b: prefix,
        i: 0,
        keys: &mut keys,
    }
    .top_object()?;
    let Some(slot) = top.hash_slot else {
        // `entry_hash` sorts after every other key: the stored line is canonical as it is.
        return Some(line.to_vec());
    };
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&prefix[..slot]);
    out.extend_from_slice(&HASH_MEMBER[1..]);
    out.extend_from_slice(stored);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&prefix[slot..]);
    out.push(b'}');
    Some(out)
}

/// Why a line is not a sound entry: [`BreakKind::MalformedLine`],
/// [`BreakKind::VersionMismatch`] or [`BreakKind::HashMismatch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct LineProblem {
    /// The kind of break this line causes.
    pub kind: BreakKind,
    /// One sentence for a person.
    pub detail: String,
}

impl LineProblem {
    pub(crate) fn malformed(detail: impl Into<String>) -> Self {
        Self {
            kind: BreakKind::MalformedLine,
            detail: detail.into(),
        }
    }
}

/// Checks one stored line (a trailing `\n`, if any, is ignored): it must be a JSON object with
/// unique keys, an integer `seq`, a string `prev_hash` and a string `entry_hash` that is the
/// hash of the rest; a trace entry must also have `trace_version` 2.
///
/// This is what the daemon uses to pick up the head from the last line of a segment; chain
/// links (`seq` and `prev_hash` against the previous line) are for the caller.
pub fn check_line(line: &[u8], kind: ChainKind) -> Result<LineFacts, LineProblem> {
    facts(line, kind, false)
}

/// [`check_line`] by the slow path alone (parse and re-canonicalise): the same verdict, always.
/// For auditors who trust only the reference path, and for the fuzz target that holds the two
/// paths to agreeing.
pub fn check_line_recanonicalised(line: &[u8], kind: ChainKind) -> Result<LineFacts, LineProblem> {
    facts(line, kind, true)
}

fn facts(line: &[u8], kind: ChainKind, recanonicalise: bool) -> Result<LineFacts, LineProblem> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut scanner = Scanner::new();
    let checked = scanner.check(line, kind, recanonicalise)?;
    if let Some(problem) = checked.hash_problem {
        return Err(problem);
    }
    Ok(LineFacts {
        seq: checked.seq,
        prev_hash: String::from_utf8_lossy(scanner.prev_hash()).into_owned(),
        entry_hash: String::from_utf8_lossy(&checked.entry_hash).into_owned(),
        trace_version: checked.trace_version,
    })
}

/// The intrinsic verdict on a line that is not malformed and has the right version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    pub(crate) seq: u64,
    pub(crate) trace_version: Option<u64>,
    /// The hash of the entry's canonical form (equal to the stored one unless `hash_problem`).
    pub(crate) entry_hash: [u8; 64],
    /// Set when the stored hash is wrong; reported only if `seq` links, as the order requires.
    pub(crate) hash_problem: Option<LineProblem>,
}

/// Reusable state for checking many lines without allocating per line.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    hasher: Sha256,
    /// The last line's decoded `prev_hash`.
    prev: Vec<u8>,
    keys: KeyScratch,
    canonical: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct KeyScratch {
    a: Vec<u8>,
    b: Vec<u8>,
}

impl Scanner {
    pub(crate) fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            prev: Vec::with_capacity(64),
            keys: KeyScratch::default(),
            canonical: Vec::new(),
        }
    }

    /// Checks `line` (without its `\n`), by the slow path alone when `recanonicalise`. On
    /// success, [`Self::prev_hash`] holds its `prev_hash`.
    pub(crate) fn check(
        &mut self,
        line: &[u8],
        kind: ChainKind,
        recanonicalise: bool,
    ) -> Result<Checked, LineProblem> {
        if line.is_empty() {
            return Err(LineProblem::malformed("empty line"));
        }
        if recanonicalise {
            return self.slow(line, kind);
        }
        match self.fast(line, kind) {
            Some(verdict) => verdict,
            None => self.slow(line, kind),
        }
    }

    /// The `prev_hash` of the line last checked successfully.
    pub(crate) fn prev_hash(&self) -> &[u8] {
        &self.prev
    }

    /// The verdict from the stored bytes alone, or `None` when they are not exactly the stored
    /// layout of canonical JSON.
    pub(crate) fn fast(
        &mut self,
        line: &[u8],
        kind: ChainKind,
    ) -> Option<Result<Checked, LineProblem>> {
        let (prefix, suffix) = line.split_at(line.len().checked_sub(SUFFIX_LEN)?);
        let stored = suffix.strip_prefix(HASH_MEMBER)?.strip_suffix(b"\"}")?;
        if !is_sha256_hex(stored) {
            return None;
        }
        let top = Canon {
            b: prefix,
            i: 0,
            keys: &mut self.keys,
        }
        .top_object()?;

        let Some(seq) = top
            .seq
            .and_then(|token| unsigned(&prefix[token.0..token.1]))
        else {
            return Some(Err(missing_seq()));
        };
        let Some(prev) = top.prev_hash.filter(|token| prefix[token.0] == b'"') else {
            return Some(Err(missing_prev_hash()));
        };
        decode_string(&prefix[prev.0 + 1..prev.1 - 1], &mut self.prev);
        let version = top.trace_version.map(|token| &prefix[token.0..token.1]);
        let trace_version = version.and_then(unsigned);
        if kind == ChainKind::Trace && trace_version != Some(TRACE_VERSION) {
            return Some(Err(version_problem(version)));
        }

        self.hasher.update(prefix);
        self.hasher.update(b"}");
        let entry_hash = hex64(&self.hasher.finalize_reset());
        let hash_problem =
            (entry_hash.as_slice() != stored).then(|| hash_problem(stored, &entry_hash));
        Some(Ok(Checked {
            seq,
            trace_version,
            entry_hash,
            hash_problem,
        }))
    }

    /// The verdict after parsing and re-canonicalising: for lines in any layout.
    pub(crate) fn slow(&mut self, line: &[u8], kind: ChainKind) -> Result<Checked, LineProblem> {
        let value = parse_strict(line)
            .map_err(|e| LineProblem::malformed(format!("not a JSON object: {e}")))?;
        let Value::Object(mut members) = value else {
            return Err(LineProblem::malformed("not a JSON object"));
        };
        let Some(Value::String(stored)) = members.remove(ENTRY_HASH_KEY) else {
            return Err(LineProblem::malformed(
                "`entry_hash` is missing or not a string",
            ));
        };
        let seq = members
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(missing_seq)?;
        let prev = members
            .get("prev_hash")
            .and_then(Value::as_str)
            .ok_or_else(missing_prev_hash)?;
        self.prev.clear();
        self.prev.extend_from_slice(prev.as_bytes());
        let version = members.get("trace_version");
        let trace_version = version.and_then(Value::as_u64);
        if kind == ChainKind::Trace && trace_version != Some(TRACE_VERSION) {
            let text = version.map(to_canonical_vec);
            return Err(version_problem(text.as_deref()));
        }

        self.canonical.clear();
        write_object(&members, &mut self.canonical);
        self.hasher.update(&self.canonical);
        let entry_hash = hex64(&self.hasher.finalize_reset());
        let hash_problem = (entry_hash.as_slice() != stored.as_bytes())
            .then(|| hash_problem(stored.as_bytes(), &entry_hash));
        Ok(Checked {
            seq,
            trace_version,
            entry_hash,
            hash_problem,
        })
    }
}

fn missing_seq() -> LineProblem {
    LineProblem::malformed("`seq` is missing or not a non-negative integer")
}

fn missing_prev_hash() -> LineProblem {
    LineProblem::malformed("`prev_hash` is missing or not a string")
}

fn version_problem(found: Option<&[u8]>) -> LineProblem {
    let detail = match found {
        Some(text) => format!(
            "trace_version is {}, expected {TRACE_VERSION}",
            shorten(text)
        ),
        None => format!("trace_version is missing, expected {TRACE_VERSION}"),
    };
    LineProblem {
        kind: BreakKind::VersionMismatch,
        detail,
    }
}

fn hash_problem(stored: &[u8], computed: &[u8; 64]) -> LineProblem {
    LineProblem {
        kind: BreakKind::HashMismatch,
        detail: format!(
            "entry_hash {} is not the hash of the entry's canonical form ({})",
            shorten(stored),
            String::from_utf8_lossy(computed)
        ),
    }
}

/// At most 80 characters of `text`, for a detail message.
pub(crate) fn shorten(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.into_owned(),
    }
}

fn hex64(digest: &[u8]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

/// A canonical integer token as `u64`, if it is a non-negative one.
fn unsigned(token: &[u8]) -> Option<u64> {
    if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Decodes the content of a canonical string (escapes already validated) into `out`.
fn decode_string(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            Some(b'b') => out.push(0x08),
            Some(b'f') => out.push(0x0c),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'u') => {
                let high = raw.get(i + 4).copied().map_or(0, hex_value);
                let low = raw.get(i + 5).copied().map_or(0, hex_value);
                out.push(high << 4 | low);
                i += 4;
            }
            Some(&other) => out.push(other),
            None => {}
        }
        i += 2;
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => 0,
    }
}

/// Compares UTF-8 byte strings as RFC 8785 compares keys: by UTF-16 code units.
///
/// UTF-8 byte order is code point order, and UTF-16 order agrees with it except that a
/// character above U+FFFF (a surrogate pair, 0xD800..) sorts before one in U+E000..U+FFFF. So
/// compare bytes, and at the first difference look at the two characters' lead bytes.
fn compare_utf16(a: &[u8], b: &[u8]) -> Ordering {
    let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) else {
        return a.len().cmp(&b.len());
    };
    // Both strings share a[..i], so the character that differs starts at the same place in
    // both; if it started before i, it has the same lead byte in both and byte order holds.
    let is_lead = |byte: u8| byte & 0xc0 != 0x80;
    if is_lead(a[i]) {
        let supplementary = |byte: u8| byte >= 0xf0;
        let upper_bmp = |byte: u8| byte == 0xee || byte == 0xef;
        if supplementary(a[i]) && upper_bmp(b[i]) {
            return Ordering::Less;
        }
        if upper_bmp(a[i]) && supplementary(b[i]) {
            return Ordering::Greater;
        }
    }
    a[i].cmp(&b[i])
}

/// Byte classes inside a string.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
const CONTROL: u8 = 3;
const HIGH: u8 = 4;

static CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if i < 0x20 {
            CONTROL
        } else if i == b'"' as usize {
            QUOTE
        } else if i == b'\\' as usize {
            BACKSLASH
        } else if i >= 0x80 {
            HIGH
        } else {
            PLAIN
        };
        i += 1;
    }
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` (little-endian) that need a look in a string: a quote, a backslash, a
/// control character or a non-ASCII byte, each flagged by its high bit. The borrow of the
/// subtractions can flag a byte above a flagged one, never below, so the lowest flag is exact.
#[inline]
fn look_mask(word: u64) -> u64 {
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control | (word & HIGHS)
}

/// Where the interesting top-level values are in the prefix: token start and end.
#[derive(Debug, Default)]
struct Top {
    seq: Option<(usize, usize)>,
    prev_hash: Option<(usize, usize)>,
    trace_version: Option<(usize, usize)>,
    /// Where `entry_hash` goes in key order: the opening quote of the first key after it.
    hash_slot: Option<usize>,
}

/// A string's content (between the quotes) and whether it holds escapes.
#[derive(Debug, Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

/// The canonical-form checker. Every method returns `None` as soon as the bytes are not
/// exactly what `write_canonical` would produce.
struct Canon<'a, 's> {
    b: &'a [u8],
    i: usize,
    keys: &'s mut KeyScratch,
}

impl Canon<'_, '_> {
    /// The prefix: `{` and members, with the closing `}` left out (the hash member follows).
    fn top_object(mut self) -> Option<Top> {
        self.expect(b'{')?;
        let mut top = Top::default();
        let mut previous: Option<Str> = None;
        loop {
            let key = self.key(previous)?;
            previous = Some(key);
            if top.hash_slot.is_none() && self.sorts_after_entry_hash(key) {
                top.hash_slot = Some(key.start - 1);
            }
            self.expect(b':')?;
            let start = self.i;
            self.value(1)?;
            let token = Some((start, self.i));
            if !key.escaped {
                match &self.b[key.start..key.end] {
                    b"seq" => top.seq = token,
                    b"prev_hash" => top.prev_hash = token,
                    b"trace_version" => top.trace_version = token,
                    // A second hash member: the slow path calls it a duplicate key.
                    b"entry_hash" => return None,
                    _ => {}
                }
            }
            match self.b.get(self.i) {
                None => return Some(top),
                Some(b',') => self.i += 1,
                Some(_) => return None,
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&byte)).then(|| self.i += 1)
    }

    fn sorts_after_entry_hash(&mut self, key: Str) -> bool {
        let raw = &self.b[key.start..key.end];
        let order = if key.escaped {
            decode_string(raw, &mut self.keys.a);
            compare_utf16(&self.keys.a, b"entry_hash")
        } else {
            compare_utf16(raw, b"entry_hash")
        };
        order == Ordering::Greater
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.integer(),
            _ => None,
        }
    }

    fn literal(&mut self, text: &[u8]) -> Option<()> {
        self.b[self.i..]
            .starts_with(text)
            .then(|| self.i += text.len())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_FAST_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        if self.expect(b'}').is_some() {
            return Some(());
        }
        let mut previous = None;
        loop {
            previous = Some(self.key(previous)?);
            self.expect(b':')?;
            self.value(depth)?;
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_FAST_DEPTH {
            return None;
        }
        self.expect(b'[')?;
        if self.expect(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth)?;
            match *self.b.get(self.i)? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A member's key, which must sort strictly after `previous`.
    #[inline(always)]
    fn key(&mut self, previous: Option<Str>) -> Option<Str> {
        let key = self.string()?;
        if let Some(previous) = previous {
            let order = if previous.escaped || key.escaped {
                // Escapes stand for control characters, quotes and backslashes, so compare
                // what they decode to.
                decode_string(&self.b[previous.start..previous.end], &mut self.keys.a);
                decode_string(&self.b[key.start..key.end], &mut self.keys.b);
                compare_utf16(&self.keys.a, &self.keys.b)
            } else {
                compare_utf16(
                    &self.b[previous.start..previous.end],
                    &self.b[key.start..key.end],
                )
            };
            if order != Ordering::Less {
                return None;
            }
        }
        Some(key)
    }

    /// A string with only the minimal escapes and valid UTF-8.
    #[inline(always)]
    fn string(&mut self) -> Option<Str> {
        self.expect(b'"')?;
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let mut escaped = false;
        loop {
            // Skip plain bytes eight at a time, landing on the first one that needs a look.
            while let Some(word) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
                let mask = look_mask(u64::from_le_bytes(*word));
                if mask != 0 {
                    i += (mask.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            let byte = *b.get(i)?;
            match CLASS[usize::from(byte)] {
                PLAIN => i += 1,
                QUOTE => {
                    self.i = i + 1;
                    return Some(Str {
                        start,
                        end: i,
                        escaped,
                    });
                }
                BACKSLASH => {
                    i += canonical_escape_len(&b[i..])?;
                    escaped = true;
                }
                HIGH => {
                    // Every byte of a multi-byte character is >= 0x80 and every ASCII byte is
                    // a whole character, so each run of high bytes must be valid on its own.
                    let run = b[i..].iter().position(|&x| x < 0x80).unwrap_or(b.len() - i);
                    std::str::from_utf8(&b[i..i + run]).ok()?;
                    i += run;
                }
                _ => return None,
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)` that fits `i64` or `u64` (what `write_canonical` prints exactly),
    /// and not `-0`; anything with a fraction or exponent is left to the slow path.
    fn integer(&mut self) -> Option<()> {
        let b = self.b;
        let mut i = self.i;
        let negative = b[i] == b'-';
        if negative {
            i += 1;
        }
        let digits_start = i;
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return None,
        }
        if matches!(b.get(i), Some(b'.' | b'e' | b'E' | b'0'..=b'9')) {
            return None;
        }
        let digits = &b[digits_start..i];
        let fits =
            |max: &[u8]| digits.len() < max.len() || (digits.len() == max.len() && digits <= max);
        let in_range = if negative {
            digits != b"0" && fits(b"9223372036854775808")
        } else {
            fits(b"18446744073709551615")
        };
        in_range.then(|| self.i = i)
    }
}

/// The length of the escape at the start of `s` if it is one `write_string` produces.
fn canonical_escape_len(s: &[u8]) -> Option<usize> {
    match *s.get(1)? {
        b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => {
            let [b'0', b'0', high @ (b'0' | b'1'), low] = *s.get(2..6)?.first_chunk::<4>()? else {
                return None;
            };
            if !matches!(low, b'0'..=b'9' | b'a'..=b'f') {
                return None;
            }
            let code = (high - b'0') << 4 | hex_value(low);
            // These have a short escape, which is the canonical one.
            (!matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)).then_some(6)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::compare_keys;
    use crate::trace::entry::seal;
    use proptest::prelude::*;
    use serde_json::{Map, json};

    fn entry(seq: u64, extra: &[(&str, Value)]) -> Map<String, Value> {
        let mut body = json!({
            "trace_version": 2,
            "seq": seq,
            "prev_hash": "0".repeat(64),
            "action_taken": "auto_reply",
            "risk_reasons": ["a", "b"],
            "replay_safe": true,
        })
        .as_object()
        .cloned()
        .unwrap();
        for (key, value) in extra {
            body.insert((*key).to_owned(), value.clone());
        }
        body
    }

    fn line_of(body: &Map<String, Value>) -> Vec<u8> {
        let mut line = seal(body).line;
        line.pop();
        line
    }

    /// The fast verdict, when the fast path applies, must be the slow one.
    fn agree(line: &[u8], kind: ChainKind) -> Option<Result<Checked, LineProblem>> {
        let mut scanner = Scanner::new();
        let fast = scanner.fast(line, kind);
        let fast_prev = scanner.prev.clone();
        let slow = scanner.slow(line, kind);
        if let Some(fast) = &fast {
            assert_eq!(fast, &slow, "line: {}", String::from_utf8_lossy(line));
            if fast.is_ok() {
                assert_eq!(fast_prev, scanner.prev);
            }
        }
        fast
    }

    #[test]
    fn the_canonical_form_of_a_stored_line_puts_entry_hash_in_key_order() {
        for extra in [
            vec![],
            vec![("zzz", json!("last")), ("aaa", json!({"b": [1, "é\u{1}"]}))],
            vec![("entry_id", json!("id")), ("f\"q", json!(1))],
        ] {
            let line = line_of(&entry(3, &extra));
            let value: Value = serde_json::from_slice(&line).unwrap();
            let expected = crate::canonical::to_canonical_vec(&value);
            assert_eq!(
                canonical_of_stored(&line).map(String::from_utf8),
                Some(Ok(String::from_utf8(expected).unwrap()))
            );
        }
        assert_eq!(canonical_of_stored(b"{\"seq\":1}"), None);
    }

    #[test]
    fn a_sealed_line_takes_the_fast_path_and_verifies() {
        let line = line_of(&entry(3, &[]));
        let verdict = agree(&line, ChainKind::Trace).unwrap().unwrap();
        assert_eq!(verdict.seq, 3);
        assert_eq!(verdict.hash_problem, None);
        let facts = check_line(&line, ChainKind::Trace).unwrap();
        assert_eq!(facts.prev_hash, "0".repeat(64));
        assert_eq!(facts.trace_version, Some(2));
    }

    #[test]
    fn non_canonical_layouts_take_the_slow_path() {
        let line = line_of(&entry(3, &[]));
        let value: Value = serde_json::from_slice(&line).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        assert!(agree(&pretty, ChainKind::Trace).is_none());
        assert_eq!(check_line(&pretty, ChainKind::Trace).unwrap().seq, 3);
        let compact = serde_json::to_vec(&value).unwrap();
        // serde_json's map is sorted bytewise and puts entry_hash among the others.
        assert!(agree(&compact, ChainKind::Trace).is_none());
        assert_eq!(check_line(&compact, ChainKind::Trace).unwrap().seq, 3);
    }

    #[test]
    fn the_order_of_intrinsic_checks_is_malformed_then_version_then_hash() {
        let mut body = entry(0, &[]);
        body.insert("trace_version".into(), json!(1));
        let line = line_of(&body);
        let problem = check_line(&line, ChainKind::Trace).unwrap_err();
        assert_eq!(problem.kind, BreakKind::VersionMismatch);
        assert_eq!(problem.detail, "trace_version is 1, expected 2");
        // The audit log has no version.
        assert!(check_line(&line, ChainKind::Audit).is_ok());
        body.remove("seq");
        let problem = check_line(&line_of(&body), ChainKind::Trace).unwrap_err();
        assert_eq!(problem.kind, BreakKind::MalformedLine);
    }

    #[rstest::rstest]
    #[case::empty(b"" as &[u8])]
    #[case::garbage(b"{not json")]
    #[case::array(b"[1,2]")]
    #[case::duplicate(b"{\"a\":1,\"a\":1,\"entry_hash\":\"x\",\"seq\":0,\"prev_hash\":\"\"}")]
    #[case::hash_not_string(b"{\"entry_hash\":1,\"prev_hash\":\"\",\"seq\":0}")]
    #[case::seq_negative(b"{\"entry_hash\":\"\",\"prev_hash\":\"\",\"seq\":-1}")]
    #[case::seq_float(b"{\"entry_hash\":\"\",\"prev_hash\":\"\",\"seq\":1.0}")]
    #[case::prev_missing(b"{\"entry_hash\":\"\",\"seq\":1}")]
    fn malformed_lines(#[case] line: &[u8]) {
        let problem = check_line(line, ChainKind::Audit).unwrap_err();
        assert_eq!(problem.kind, BreakKind::MalformedLine, "{problem}");
    }

    #[test]
    fn a_hash_over_non_canonical_bytes_is_a_mismatch() {
        let text = r#"{"seq":0,"prev_hash":"","trace_version":2}"#;
        let hash = crate::hash::sha256_hex(text.as_bytes());
        let line = format!("{},\"entry_hash\":\"{hash}\"}}", &text[..text.len() - 1]);
        let verdict = agree(line.as_bytes(), ChainKind::Trace);
        assert!(
            verdict.is_none(),
            "keys out of order must not take the fast path"
        );
        let problem = check_line(line.as_bytes(), ChainKind::Trace).unwrap_err();
        assert_eq!(problem.kind, BreakKind::HashMismatch);
    }

    #[rstest::rstest]
    #[case::escaped_slash(r#""a\/b""#, false)]
    #[case::upper_hex(r#""\u001F""#, false)]
    #[case::long_form_of_newline(r#""\u000a""#, false)]
    #[case::escaped_letter(r#""\u0041""#, false)]
    #[case::lower_hex(r#""\u001f""#, true)]
    #[case::short_escapes(r#""\"\\\b\f\n\r\t""#, true)]
    #[case::raw_del("\"\u{7f}\"", true)]
    #[case::minus_zero("-0", false)]
    #[case::leading_zero("01", false)]
    #[case::fraction("1.0", false)]
    #[case::exponent("1e3", false)]
    #[case::u64_max("18446744073709551615", true)]
    #[case::beyond_u64("18446744073709551616", false)]
    #[case::i64_min("-9223372036854775808", true)]
    #[case::below_i64("-9223372036854775809", false)]
    #[case::white_space("[1, 2]", false)]
    #[case::nested("[{},[],{\"a\":[null,true,false]}]", true)]
    #[case::unsorted_nested("{\"b\":1,\"a\":2}", false)]
    #[case::duplicate_nested("{\"a\":1,\"a\":2}", false)]
    #[case::utf16_order("{\"\u{1f600}\":1,\"\u{e000}\":2}", true)]
    #[case::byte_order_is_wrong_here("{\"\u{e000}\":2,\"\u{1f600}\":1}", false)]
    #[case::escaped_keys("{\"\\u0001\":1,\"\\n\":2,\"a\":3}", true)]
    #[case::escaped_keys_unsorted("{\"\\n\":2,\"\\u0001\":1}", false)]
    fn the_fast_path_accepts_exactly_canonical_values(#[case] value: &str, #[case] fast: bool) {
        let text = format!(r#"{{"prev_hash":"","seq":0,"x":{value}"#);
        let hash = crate::hash::sha256_hex(format!("{text}}}").as_bytes());
        let line = format!("{text},\"entry_hash\":\"{hash}\"}}");
        let verdict = agree(line.as_bytes(), ChainKind::Audit);
        assert_eq!(verdict.is_some(), fast, "{line}");
        if let Some(verdict) = verdict {
            assert_eq!(verdict.unwrap().hash_problem, None);
        }
    }

    #[test]
    fn nesting_beyond_the_bound_is_left_to_the_slow_path() {
        for depth in [MAX_FAST_DEPTH - 2, MAX_FAST_DEPTH, 200, 5000] {
            let value = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let text = format!(r#"{{"prev_hash":"","seq":0,"x":{value}"#);
            let hash = crate::hash::sha256_hex(format!("{text}}}").as_bytes());
            let line = format!("{text},\"entry_hash\":\"{hash}\"}}");
            let verdict = agree(line.as_bytes(), ChainKind::Audit);
            assert_eq!(verdict.is_some(), depth < MAX_FAST_DEPTH, "depth {depth}");
            assert_eq!(
                check_line(line.as_bytes(), ChainKind::Audit).is_ok(),
                depth < 120
            );
        }
    }

    #[test]
    fn utf16_comparison_matches_the_canonical_one() {
        let samples = [
            "",
            "a",
            "ab",
            "\u{7f}",
            "é",
            "\u{e000}",
            "\u{ffff}",
            "\u{10000}",
            "\u{1f600}",
            "a\u{e000}",
            "a\u{1f600}",
            "\u{d7ff}",
        ];
        for a in samples {
            for b in samples {
                assert_eq!(
                    compare_utf16(a.as_bytes(), b.as_bytes()),
                    compare_keys(a, b),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    /// Any JSON; floats only when asked, as entries never hold them (they take the slow path).
    fn arbitrary_json(floats: bool) -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\"\\\\/a-z\u{7f}\u{e000}-\u{e002}\u{fffd}\u{10000}-\u{10002}]{0,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(move |f| if floats { json!(f) } else { json!(f as i64) }),
            text.clone().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(text.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arbitrary_body() -> impl Strategy<Value = Map<String, Value>> {
        (
            any::<u64>(),
            prop_oneof![Just("0".repeat(64)), any::<String>()],
            proptest::option::weighted(0.9, prop_oneof![Just(json!(2)), arbitrary_json(false)]),
            proptest::collection::btree_map(
                "[a-z_\u{e000}\u{1f600}\\x01\"]{1,8}",
                arbitrary_json(false),
                0..8,
            ),
            "(x|é|\\n|\\\\){0,1500}",
        )
            .prop_map(|(seq, prev, version, extra, long)| {
                let mut body: Map<String, Value> = extra.into_iter().collect();
                body.remove(ENTRY_HASH_KEY);
                body.insert("seq".into(), json!(seq));
                body.insert("prev_hash".into(), json!(prev));
                body.insert("long".into(), json!(long));
                match version {
                    Some(version) => body.insert("trace_version".into(), version),
                    None => body.remove("trace_version"),
                };
                body
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Sealed entries take the fast path and verify; re-serialised copies take the slow
        /// path and reach the same verdict.
        #[test]
        fn sealed_entries_agree_in_every_layout(body in arbitrary_body(), trace in any::<bool>()) {
            let kind = if trace { ChainKind::Trace } else { ChainKind::Audit };
            let line = line_of(&body);
            let fast = agree(&line, kind);
            prop_assert!(fast.is_some(), "sealed line missed the fast path: {}", String::from_utf8_lossy(&line));
            let verdict = check_line(&line, kind);
            if let Ok(facts) = &verdict {
                prop_assert_eq!(facts.seq, body["seq"].as_u64().unwrap());
                prop_assert_eq!(Some(facts.prev_hash.as_str()), body["prev_hash"].as_str());
            }
            let value: Value = serde_json::from_slice(&line).unwrap();
            for other in [serde_json::to_vec_pretty(&value).unwrap(), serde_json::to_vec(&value).unwrap()] {
                agree(&other, kind);
                prop_assert_eq!(check_line(&other, kind), verdict.clone());
            }
        }

        /// Moving `entry_hash` back into key order gives exactly the JCS of the parsed line.
        #[test]
        fn the_canonical_form_of_any_sealed_line_is_its_jcs(body in arbitrary_body()) {
            let line = line_of(&body);
            let value: Value = serde_json::from_slice(&line).unwrap();
            let expected = crate::canonical::to_canonical_vec(&value);
            prop_assert_eq!(canonical_of_stored(&line), Some(expected));
        }

        /// Whatever a byte flip does, both paths agree where the fast one applies.
        #[test]
        fn byte_flips_never_split_the_paths(body in arbitrary_body(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut line = line_of(&body);
            let at = at.index(line.len());
            line[at] = byte;
            agree(&line, ChainKind::Trace);
            agree(&line, ChainKind::Audit);
        }

        /// Canonical text built directly (keys in any order, any escapes) never fools the fast path.
        #[test]
        fn arbitrary_values_agree(value in arbitrary_json(true)) {
            let text = serde_json::to_string(&value).unwrap();
            let canonical = String::from_utf8(to_canonical_vec(&value)).unwrap();
            for body in [text, canonical] {
                let prefix = format!(r#"{{"prev_hash":"","seq":1,"v":{body}"#);
                let hash = crate::hash::sha256_hex(format!("{prefix}}}").as_bytes());
                let line = format!("{prefix},\"entry_hash\":\"{hash}\"}}");
                agree(line.as_bytes(), ChainKind::Audit);
            }
        }
    }
}
