//! Method names, and the typed parameters and results of the methods the daemon serves.
//!
//! Results only ever gain members; clients must ignore members they do not know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::{Edition, Feature};

/// `hello`: optional version handshake.
pub const HELLO: &str = "hello";
/// `daemon.status`: process facts and health.
pub const DAEMON_STATUS: &str = "daemon.status";
/// `daemon.shutdown`: graceful stop (owner only).
pub const DAEMON_SHUTDOWN: &str = "daemon.shutdown";
/// `edition.get`: the edition and where it came from.
pub const EDITION_GET: &str = "edition.get";
/// `features.list`: every flag with its value and source.
pub const FEATURES_LIST: &str = "features.list";

/// A local role. Ordered: each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read methods.
    Viewer,
    /// Read, plus decisions.
    Operator,
    /// Operator, plus policy reload and pins, and shutdown.
    Admin,
    /// The daemon's own user.
    Owner,
}

impl Role {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Params of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloParams {
    /// The protocol major the client speaks.
    pub protocol: u32,
    /// `name/version` of the client, for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Result of `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The protocol major agreed on.
    pub protocol: u32,
    /// `atlasbridged X.Y.Z`.
    pub daemon: String,
    /// The active edition.
    pub edition: Edition,
    /// Every flag and whether it is on.
    pub features: BTreeMap<Feature, bool>,
    /// The caller's role on this connection.
    pub role: Role,
}

/// `data` of the -32010 error: what the daemon does speak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedProtocolData {
    /// The protocol majors spoken.
    pub supported: Vec<u32>,
}

/// The cloud link as `daemon.status` summarises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudSummary {
    /// `disabled`, `disconnected`, `connecting`, `connected` or `reconnecting`.
    pub state: String,
}

/// Result of `daemon.status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's version (`X.Y.Z`).
    pub version: String,
    /// The protocol major it speaks.
    pub protocol: u32,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// The socket it listens on.
    pub socket: String,
    /// Its data directory.
    pub data_dir: String,
    /// The config file it loaded, if any.
    pub config_file: Option<String>,
    /// The active edition.
    pub edition: Edition,
    /// Open client connections, this one included.
    pub connections: u64,
    /// The cloud link.
    pub cloud: CloudSummary,
}

/// Result of `daemon.shutdown`: sent before the daemon starts draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownResult {
    /// Always true: the daemon is stopping.
    pub shutting_down: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert!(Role::Admin < Role::Owner);
    }

    #[test]
    fn hello_features_serialise_as_a_map_of_names() {
        let result = HelloResult {
            protocol: 1,
            daemon: "atlasbridged 0.1.0".into(),
            edition: Edition::Pro,
            features: Feature::ALL
                .into_iter()
                .map(|f| (f, f.default_in(Edition::Pro)))
                .collect(),
            role: Role::Owner,
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["features"]["rbac"], true);
        assert_eq!(json["features"]["cloud_audit_stream"], false);
        assert_eq!(json["role"], "owner");
        let back: HelloResult = serde_json::from_value(json).unwrap();
        assert_eq!(back, result);
    }
}
