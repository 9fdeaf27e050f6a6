//! An entry's members encoded canonically before they reach the chain's writer.
//!
//! A chain has one writer, and everything it does per entry is serial. So the appenders, which
//! run in parallel, encode their members themselves, in canonical order, and note where the
//! members the writer owns (`entry_id`, `prev_hash`, `seq`, `timestamp`) fall among them. The
//! writer then only splices those in and hashes: the bytes are the same as
//! [`seal`](super::entry::seal) of the whole object, which the tests check.

use std::cmp::Ordering;
use std::io::Write as _;

use serde_json::{Map, Value};

use super::entry::{ENTRY_HASH_KEY, SealedEntry};
use crate::canonical::{compare_keys, write_canonical, write_string};
use crate::hash::sha256_hex;

/// The members the chain's writer sets, in canonical order.
const CHAIN_KEYS: [&str; 4] = ["entry_id", "prev_hash", "seq", "timestamp"];

/// An entry without its chain members, ready to be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryBody {
    /// `"key":value,` for each member, in canonical key order.
    members: Vec<u8>,
    /// The offset in `members` where each of [`CHAIN_KEYS`] goes.
    splices: [usize; 4],
    /// An `entry_id` the appender chose (kept when the entry is a migrated or recorded one).
    entry_id: Option<String>,
    /// A `timestamp` the appender chose.
    timestamp: Option<String>,
}

/// The chain members of one entry, chosen by the writer.
#[derive(Debug, Clone, Copy)]
pub struct ChainMembers<'a> {
    /// Position in the chain.
    pub seq: u64,
    /// The previous entry's hash.
    pub prev_hash: &'a str,
    /// The entry's id.
    pub entry_id: &'a str,
    /// When it was appended.
    pub timestamp: &'a str,
}

impl EntryBody {
    /// The members of `map`. `seq`, `prev_hash` and `entry_hash` are the writer's and are
    /// dropped; `entry_id` and `timestamp` are kept when they are strings.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        let mut builder = EntryBodyBuilder::with_capacity(map.len());
        for (key, value) in map {
            builder.value(key, value);
        }
        builder.finish()
    }

    /// The `entry_id` the appender chose, if any.
    pub fn entry_id(&self) -> Option<&str> {
        self.entry_id.as_deref()
    }

    /// The `timestamp` the appender chose, if any.
    pub fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_deref()
    }

    /// Hashes the body with its chain members and lays it out for storage.
    pub fn seal(&self, chain: ChainMembers<'_>) -> SealedEntry {
        let mut line = Vec::with_capacity(self.members.len() + 256);
        line.push(b'{');
        let mut copied = 0;
        for (index, &at) in self.splices.iter().enumerate() {
            line.extend_from_slice(&self.members[copied..at]);
            copied = at;
            write_string(CHAIN_KEYS[index], &mut line);
            line.push(b':');
            match index {
                0 => write_string(chain.entry_id, &mut line),
                1 => write_string(chain.prev_hash, &mut line),
                // Writing into a Vec cannot fail.
                2 => {
                    let _ = write!(line, "{}", chain.seq);
                }
                _ => write_string(chain.timestamp, &mut line),
            }
            line.push(b',');
        }
        line.extend_from_slice(&self.members[copied..]);
        // Every member ends in a comma; the last one closes the object instead.
        line.pop();
        line.push(b'}');
        let entry_hash = sha256_hex(&line);
        line.pop();
        line.extend_from_slice(b",\"");
        line.extend_from_slice(ENTRY_HASH_KEY.as_bytes());
        line.extend_from_slice(b"\":\"");
        line.extend_from_slice(entry_hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
        SealedEntry { line, entry_hash }
    }
}

/// Collects an entry's members in any order. Keys must be distinct.
#[derive(Debug, Default)]
pub struct EntryBodyBuilder<'k> {
    /// Each member's encoded value, one after the other.
    values: Vec<u8>,
    /// Each member's key and the end of its value in `values`.
    members: Vec<(&'k str, usize)>,
    entry_id: Option<String>,
    timestamp: Option<String>,
}

impl<'k> EntryBodyBuilder<'k> {
    /// A builder with room for `members` members.
    pub fn with_capacity(members: usize) -> Self {
        Self {
            values: Vec::with_capacity(members * 24),
            members: Vec::with_capacity(members),
            entry_id: None,
            timestamp: None,
        }
    }

    /// Adds a string member.
    pub fn str(&mut self, key: &'k str, value: &str) -> &mut Self {
        if !self.claimed_by_chain(key, Some(value)) {
            write_string(value, &mut self.values);
            self.members.push((key, self.values.len()));
        }
        self
    }

    /// Adds an unsigned integer member.
    pub fn u64(&mut self, key: &'k str, value: u64) -> &mut Self {
        if !self.claimed_by_chain(key, None) {
            let _ = write!(self.values, "{value}");
            self.members.push((key, self.values.len()));
        }
        self
    }

    /// Adds a boolean member.
    pub fn bool(&mut self, key: &'k str, value: bool) -> &mut Self {
        if !self.claimed_by_chain(key, None) {
            let text: &[u8] = if value { b"true" } else { b"false" };
            self.values.extend_from_slice(text);
            self.members.push((key, self.values.len()));
        }
        self
    }

    /// Adds an array of strings.
    pub fn strs(&mut self, key: &'k str, values: &[String]) -> &mut Self {
        if !self.claimed_by_chain(key, None) {
            self.values.push(b'[');
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    self.values.push(b',');
                }
                write_string(value, &mut self.values);
            }
            self.values.push(b']');
            self.members.push((key, self.values.len()));
        }
        self
    }

    /// Adds any JSON member.
    pub fn value(&mut self, key: &'k str, value: &Value) -> &mut Self {
        if !self.claimed_by_chain(key, value.as_str()) {
            write_canonical(value, &mut self.values);
            self.members.push((key, self.values.len()));
        }
        self
    }

    /// The body, its members in canonical order.
    pub fn finish(mut self) -> EntryBody {
        let mut starts = Vec::with_capacity(self.members.len());
        let mut start = 0;
        for &(_, end) in &self.members {
            starts.push(start);
            start = end;
        }
        let mut order: Vec<usize> = (0..self.members.len()).collect();
        order.sort_by(|&a, &b| compare_keys(self.members[a].0, self.members[b].0));

        let mut members = Vec::with_capacity(self.values.len() + self.members.len() * 24);
        let mut splices = [0; 4];
        let mut next_chain_key = 0;
        for index in order {
            let (key, end) = self.members[index];
            while next_chain_key < CHAIN_KEYS.len()
                && compare_keys(CHAIN_KEYS[next_chain_key], key) == Ordering::Less
            {
                splices[next_chain_key] = members.len();
                next_chain_key += 1;
            }
            write_string(key, &mut members);
            members.push(b':');
            members.extend_from_slice(&self.values[starts[index]..end]);
            members.push(b',');
        }
        for splice in &mut splices[next_chain_key..] {
            *splice = members.len();
        }
        self.values.clear();
        EntryBody {
            members,
            splices,
            entry_id: self.entry_id,
            timestamp: self.timestamp,
        }
    }

    /// Whether `key` is one the writer sets; an `entry_id` or `timestamp` given as a string is
    /// kept for it.
    fn claimed_by_chain(&mut self, key: &str, text: Option<&str>) -> bool {
        match key {
            "entry_id" => self.entry_id = text.map(str::to_owned),
            "timestamp" => self.timestamp = text.map(str::to_owned),
            "seq" | "prev_hash" | ENTRY_HASH_KEY => {}
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::trace::entry::seal;

    /// What the writer did before bodies were prepared: insert the chain members, seal it all.
    fn sealed_whole(map: &Map<String, Value>, chain: ChainMembers<'_>) -> SealedEntry {
        let mut whole = map.clone();
        whole.remove(ENTRY_HASH_KEY);
        whole.insert("seq".into(), Value::from(chain.seq));
        whole.insert("prev_hash".into(), Value::from(chain.prev_hash));
        whole.insert("entry_id".into(), Value::from(chain.entry_id));
        whole.insert("timestamp".into(), Value::from(chain.timestamp));
        seal(&whole)
    }

    const CHAIN: ChainMembers<'static> = ChainMembers {
        seq: 42,
        prev_hash: "ab",
        entry_id: "id-\"1\"",
        timestamp: "2026-11-26T00:00:00.000000Z",
    };

    #[test]
    fn a_body_seals_to_the_bytes_of_the_whole_object() {
        let map = json!({
            "trace_version": 2, "session_id": "s", "agent_id": "", "risk_reasons": ["a", "b"],
            "replay_safe": true, "zzz": null, "aaa": {"y": 1, "x": [1.5]}, "seq": 7,
            "prev_hash": "forged", "entry_hash": "forged",
        });
        let map = map.as_object().unwrap();
        assert_eq!(
            EntryBody::from_map(map).seal(CHAIN),
            sealed_whole(map, CHAIN)
        );
    }

    #[test]
    fn an_empty_body_holds_the_chain_members_only() {
        let sealed = EntryBody::from_map(&Map::new()).seal(CHAIN);
        assert_eq!(sealed, sealed_whole(&Map::new(), CHAIN));
    }

    #[test]
    fn entry_id_and_timestamp_given_as_strings_are_kept_for_the_writer() {
        let map = json!({"entry_id": "mine", "timestamp": "then", "a": 1});
        let body = EntryBody::from_map(map.as_object().unwrap());
        assert_eq!(body.entry_id(), Some("mine"));
        assert_eq!(body.timestamp(), Some("then"));
        let numeric = EntryBody::from_map(json!({"entry_id": 5}).as_object().unwrap());
        assert_eq!(numeric.entry_id(), None);
    }

    #[test]
    fn the_typed_members_encode_like_their_json_values() {
        let mut builder = EntryBodyBuilder::default();
        builder
            .str("s", "x\ny")
            .u64("n", u64::MAX)
            .bool("b", false)
            .strs("l", &["p".to_owned(), "q".to_owned()])
            .strs("e", &[]);
        let map = json!({"s": "x\ny", "n": u64::MAX, "b": false, "l": ["p", "q"], "e": []});
        assert_eq!(
            builder.finish().seal(CHAIN),
            sealed_whole(map.as_object().unwrap(), CHAIN)
        );
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn any_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("seq".to_owned()),
            Just("prev_hash".to_owned()),
            Just("entry_id".to_owned()),
            Just("timestamp".to_owned()),
            Just("entry_hash".to_owned()),
            "[a-z_]{1,12}",
            ".{1,6}",
        ]
    }

    proptest! {
        #[test]
        fn any_body_seals_to_the_bytes_of_the_whole_object(
            members in prop::collection::btree_map(any_key(), any_value(), 0..12),
            seq in any::<u64>(),
            prev_hash in ".{0,8}",
            entry_id in ".{0,8}",
            timestamp in ".{0,8}",
        ) {
            let map: Map<String, Value> = members.into_iter().collect();
            let body = EntryBody::from_map(&map);
            // The writer keeps an id and a timestamp the appender chose.
            let entry_id = body.entry_id().map_or(entry_id, str::to_owned);
            let timestamp = body.timestamp().map_or(timestamp, str::to_owned);
            let chain = ChainMembers { seq, prev_hash: &prev_hash, entry_id: &entry_id, timestamp: &timestamp };
            prop_assert_eq!(body.seal(chain), sealed_whole(&map, chain));
        }
    }
}
