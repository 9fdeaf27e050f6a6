//! Wall-clock time in the formats AtlasBridge writes.

/// Now, as RFC 3339 UTC with microseconds: `2026-11-24T01:02:03.456789Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(jiff::Timestamp::now())
}

/// `timestamp` as RFC 3339 UTC with microseconds.
pub fn format_rfc3339(timestamp: jiff::Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_and_a_z() {
        let t: jiff::Timestamp = "2026-11-24T01:02:03.456789123Z".parse().unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-24T01:02:03.456789Z");
        let t: jiff::Timestamp = "2026-11-24T01:02:03Z".parse().unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-24T01:02:03.000000Z");
    }
}
