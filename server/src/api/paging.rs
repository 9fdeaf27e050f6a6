//! What list endpoints share: opaque keyset cursors, page sizes, times and lists in query
//! parameters.
//!
//! A cursor is base64url of a small JSON object naming its list and the last row's sort key.
//! It is opaque to clients (they pass back what they got) and carries no organisation: the next
//! page is read under the caller's own organisation, so a cursor from another one finds nothing
//! it should not.

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::entry_columns::parse_time;

/// Rows per page unless asked otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// The most rows a page holds; asking for more gives this many.
pub const MAX_PAGE: usize = 500;
/// The most values a list filter takes.
const MAX_LIST_VALUES: usize = 16;
/// Longest cursor accepted.
const MAX_CURSOR_BYTES: usize = 2048;

/// The page size for `asked`.
pub fn page_size(asked: Option<usize>) -> usize {
    asked.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE)
}

/// Encodes a cursor.
pub fn encode<T: Serialize>(cursor: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// Decodes a cursor this server made for the same list.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let bad = || ApiError::bad_request("cursor", "not a cursor of this list");
    if text.len() > MAX_CURSOR_BYTES {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    serde_json::from_slice(&raw).map_err(|_| bad())
}

/// An optional RFC 3339 time parameter.
pub fn time(name: &str, value: Option<&str>) -> Result<Option<SystemTime>, ApiError> {
    value
        .map(|text| {
            parse_time(text).ok_or_else(|| {
                ApiError::bad_request(name, format!("{name} is not an RFC 3339 time"))
            })
        })
        .transpose()
}

/// A comma-separated list parameter.
pub fn list(name: &str, value: Option<&str>) -> Result<Vec<String>, ApiError> {
    let values: Vec<String> = value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if values.len() > MAX_LIST_VALUES {
        return Err(ApiError::bad_request(
            name,
            format!("at most {MAX_LIST_VALUES} values"),
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Position {
        k: String,
        n: i64,
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_a_bad_request() {
        let position = Position {
            k: "decisions".into(),
            n: 7,
        };
        let text = encode(&position);
        assert_eq!(decode::<Position>(&text).unwrap(), position);
        for bad in ["", "!!", "e30", &"A".repeat(3000)] {
            let error = decode::<Position>(bad).unwrap_err();
            assert_eq!(error.code(), "BAD_REQUEST", "{bad}");
        }
        assert_eq!(page_size(None), DEFAULT_PAGE);
        assert_eq!(page_size(Some(0)), 1);
        assert_eq!(page_size(Some(10_000)), MAX_PAGE);
        assert_eq!(
            list("risk", Some("high, critical,,")).unwrap(),
            ["high", "critical"]
        );
        assert!(time("from", Some("yesterday")).is_err());
    }
}
