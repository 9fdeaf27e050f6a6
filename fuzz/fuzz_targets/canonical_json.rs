//! Any JSON value serde_json reads from the input: its canonical (RFC 8785) form parses back to
//! an equal value, canonicalising that again gives the same bytes, and the strict parser agrees
//! with serde_json on everything but repeated keys. Members come out in UTF-16 order of their
//! keys.
//!
//! Numbers are equal when they are the same integer, or otherwise the same IEEE double: RFC 8785
//! prints numbers as ECMAScript does, so `1.0` comes back as the integer `1` and `-0.0` as `0`,
//! and with `float_roundtrip` every printed double parses back to itself.
#![no_main]

use std::cmp::Ordering;

use atlasbridge_protocol::canonical::{compare_keys, parse_strict, to_canonical_vec};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

fuzz_target!(|bytes: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        assert!(
            parse_strict(bytes).is_err(),
            "strict accepts what serde_json refuses"
        );
        return;
    };
    if let Ok(strict) = parse_strict(bytes) {
        assert_eq!(strict, value, "strict and serde_json read different values");
    }

    let canonical = to_canonical_vec(&value);
    let text = std::str::from_utf8(&canonical).expect("canonical JSON is UTF-8");
    let back = match parse_strict(&canonical) {
        Ok(back) => back,
        Err(e) => panic!("canonical form does not parse strictly ({e}): {text}"),
    };
    assert!(
        same(&value, &back),
        "{value} came back as {back} via {text}"
    );
    assert_eq!(
        to_canonical_vec(&back),
        canonical,
        "not a fixed point: {text}"
    );
    let order: Tree = serde_json::from_slice(&canonical).expect("canonical JSON parses");
    check_order(&order);
});

/// Equal values, numbers compared as RFC 8785 reads them.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| same(x, y)))
        }
        _ => a == b,
    }
}

fn same_number(x: &Number, y: &Number) -> bool {
    if x.is_f64() || y.is_f64() {
        // `as_f64` rounds an integer to the nearest double, as parsing its digits would.
        x.as_f64() == y.as_f64()
    } else {
        x == y
    }
}

/// The members of every object, in the order the canonical text writes them.
enum Tree {
    Leaf,
    Array(Vec<Tree>),
    Object(Vec<(String, Tree)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Leaf)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut members = Vec::new();
        while let Some(entry) = map.next_entry()? {
            members.push(entry);
        }
        Ok(Tree::Object(members))
    }
}

/// Members are written in strictly increasing UTF-16 order, which is what `compare_keys` says.
fn check_order(tree: &Tree) {
    match tree {
        Tree::Leaf => {}
        Tree::Array(items) => items.iter().for_each(check_order),
        Tree::Object(members) => {
            for pair in members.windows(2) {
                let (a, b) = (&pair[0].0, &pair[1].0);
                let utf16 = a.encode_utf16().cmp(b.encode_utf16());
                assert_eq!(utf16, Ordering::Less, "{a:?} written before {b:?}");
                assert_eq!(compare_keys(a, b), Ordering::Less, "{a:?} vs {b:?}");
                assert_eq!(compare_keys(b, a), Ordering::Greater, "{b:?} vs {a:?}");
            }
            members.iter().for_each(|(_, v)| check_order(v));
        }
    }
}
