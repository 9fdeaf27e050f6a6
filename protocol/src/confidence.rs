//! Confidence as the policy language and the risk classifier read it.

use serde::{Deserialize, Serialize};

/// An event's confidence, ordered `Low < Medium < High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// `low`, and anything that is not a known name.
    Low,
    /// `medium` or `med`.
    Medium,
    /// `high`.
    High,
}

impl Confidence {
    /// Normalises a client's string: `high`, `medium`/`med`, `low`, case-insensitively and
    /// ignoring surrounding white space; anything else counts as `Low`, as the original runtime
    /// did, so an unknown value can never raise what an event may do.
    pub fn normalise(text: &str) -> Self {
        match text.trim().to_ascii_lowercase().as_str() {
            "high" => Self::High,
            "medium" | "med" => Self::Medium,
            _ => Self::Low,
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_and_unknown_is_low() {
        for (text, want) in [
            ("HIGH", Confidence::High),
            (" high ", Confidence::High),
            ("Med", Confidence::Medium),
            ("medium", Confidence::Medium),
            ("low", Confidence::Low),
            ("bogus", Confidence::Low),
            ("", Confidence::Low),
        ] {
            assert_eq!(Confidence::normalise(text), want, "{text:?}");
        }
        assert!(Confidence::Low < Confidence::Medium && Confidence::Medium < Confidence::High);
    }
}
