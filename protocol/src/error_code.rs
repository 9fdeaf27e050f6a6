//! The error codes of the local protocol: JSON-RPC's own and AtlasBridge's.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An error code as it appears in `error.code`.
///
/// Codes this crate does not know (sent by a newer daemon) are kept as [`ErrorCode::Other`]
/// so a client can still show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// -32700: the line is not valid JSON.
    ParseError,
    /// -32600: valid JSON but not a JSON-RPC request (batches included).
    InvalidRequest,
    /// -32601: no such method (yet).
    MethodNotFound,
    /// -32602: bad parameters; `data.field` names the field.
    InvalidParams,
    /// -32603: a bug or an unexpected condition in the daemon.
    InternalError,
    /// -32001: no active policy.
    NoActivePolicy,
    /// -32002: the session is pinned to another policy hash.
    PinConflict,
    /// -32003: the feature is not enabled in this edition; `data.feature` names it.
    FeatureDisabled,
    /// -32004: the decision was not recorded; clients must treat it as deny.
    StorageFailure,
    /// -32005: overloaded, retry later.
    Overloaded,
    /// -32006: the message exceeded the size limit.
    MessageTooLarge,
    /// -32007: the caller's role does not allow this.
    PermissionDenied,
    /// -32010: the requested protocol major is not spoken here.
    UnsupportedProtocol,
    /// Any other code.
    Other(i64),
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> i64 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::MethodNotFound => -32601,
            Self::InvalidParams => -32602,
            Self::InternalError => -32603,
            Self::NoActivePolicy => -32001,
            Self::PinConflict => -32002,
            Self::FeatureDisabled => -32003,
            Self::StorageFailure => -32004,
            Self::Overloaded => -32005,
            Self::MessageTooLarge => -32006,
            Self::PermissionDenied => -32007,
            Self::UnsupportedProtocol => -32010,
            Self::Other(code) => code,
        }
    }

    /// The variant for a numeric code.
    pub fn from_code(code: i64) -> Self {
        match code {
            -32700 => Self::ParseError,
            -32600 => Self::InvalidRequest,
            -32601 => Self::MethodNotFound,
            -32602 => Self::InvalidParams,
            -32603 => Self::InternalError,
            -32001 => Self::NoActivePolicy,
            -32002 => Self::PinConflict,
            -32003 => Self::FeatureDisabled,
            -32004 => Self::StorageFailure,
            -32005 => Self::Overloaded,
            -32006 => Self::MessageTooLarge,
            -32007 => Self::PermissionDenied,
            -32010 => Self::UnsupportedProtocol,
            other => Self::Other(other),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(Self::from_code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips() {
        for code in [
            -32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32006,
            -32007, -32010,
        ] {
            let parsed = ErrorCode::from_code(code);
            assert!(!matches!(parsed, ErrorCode::Other(_)), "{code} is known");
            assert_eq!(parsed.code(), code);
        }
        assert_eq!(ErrorCode::from_code(-1), ErrorCode::Other(-1));
        assert_eq!(
            serde_json::to_string(&ErrorCode::Overloaded).unwrap(),
            "-32005"
        );
    }
}
