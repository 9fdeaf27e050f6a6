//! Editions and feature flags: the names, the table of which edition turns each flag on, and
//! the shapes `edition.get` and `features.list` return.
//!
//! Resolving the values (flag, environment, config, default) is the daemon's job; this module
//! only fixes the vocabulary both sides use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A product edition. Ordered: each edition includes the defaults of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    /// The default: governance basics, every paid feature off.
    Community,
    /// Local enterprise features on.
    Pro,
    /// Everything on, cloud features included.
    Enterprise,
}

impl Edition {
    /// Every edition, in order.
    pub const ALL: [Edition; 3] = [Edition::Community, Edition::Pro, Edition::Enterprise];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Community => "community",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An edition name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown edition '{value}': expected one of community, pro, enterprise")]
pub struct UnknownEdition {
    /// What was given.
    pub value: String,
}

impl FromStr for Edition {
    type Err = UnknownEdition;

    /// Case-insensitive; surrounding white space is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|e| e.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownEdition {
                value: s.to_owned(),
            })
    }
}

/// A feature flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Trace v2 (hash chain); off: the v1 trace is written.
    DecisionTraceV2,
    /// Risk levels on decisions.
    RiskClassifier,
    /// Policy pin methods and commands.
    PolicyPinning,
    /// `audit verify`, `trace integrity-check`, `trace.verify`.
    AuditIntegrityCheck,
    /// Roles for other local users.
    Rbac,
    /// Policy versions store, `policy diff`, `policy hash`.
    PolicyLifecycle,
    /// Policy registry client.
    CloudPolicySync,
    /// Audit streaming.
    CloudAuditStream,
    /// WebSocket control channel and heartbeat.
    CloudControlChannel,
    /// The governance server's dashboard.
    WebDashboard,
}

impl Feature {
    /// Every flag, in the order of the table in `risk.md`.
    pub const ALL: [Feature; 10] = [
        Feature::DecisionTraceV2,
        Feature::RiskClassifier,
        Feature::PolicyPinning,
        Feature::AuditIntegrityCheck,
        Feature::Rbac,
        Feature::PolicyLifecycle,
        Feature::CloudPolicySync,
        Feature::CloudAuditStream,
        Feature::CloudControlChannel,
        Feature::WebDashboard,
    ];

    /// The snake_case name used in config, JSON and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::DecisionTraceV2 => "decision_trace_v2",
            Self::RiskClassifier => "risk_classifier",
            Self::PolicyPinning => "policy_pinning",
            Self::AuditIntegrityCheck => "audit_integrity_check",
            Self::Rbac => "rbac",
            Self::PolicyLifecycle => "policy_lifecycle",
            Self::CloudPolicySync => "cloud_policy_sync",
            Self::CloudAuditStream => "cloud_audit_stream",
            Self::CloudControlChannel => "cloud_control_channel",
            Self::WebDashboard => "web_dashboard",
        }
    }

    /// The first edition in which the flag is on by default.
    pub fn enabled_from(self) -> Edition {
        match self {
            Self::DecisionTraceV2
            | Self::RiskClassifier
            | Self::PolicyPinning
            | Self::AuditIntegrityCheck
            | Self::Rbac
            | Self::PolicyLifecycle => Edition::Pro,
            Self::CloudPolicySync
            | Self::CloudAuditStream
            | Self::CloudControlChannel
            | Self::WebDashboard => Edition::Enterprise,
        }
    }

    /// Whether the flag is on by default in `edition`.
    pub fn default_in(self, edition: Edition) -> bool {
        edition >= self.enabled_from()
    }

    /// The environment variable that overrides it, e.g. `ATLASBRIDGE_FEATURE_RBAC`.
    pub fn env_var(self) -> String {
        format!("{FEATURE_ENV_PREFIX}{}", self.name().to_ascii_uppercase())
    }

    /// What the flag gates, in a few words.
    pub fn description(self) -> &'static str {
        match self {
            Self::DecisionTraceV2 => "hash-chained decision trace (off: v1 trace)",
            Self::RiskClassifier => "risk level on every decision",
            Self::PolicyPinning => "pin sessions and agents to a policy version",
            Self::AuditIntegrityCheck => "trace and audit chain verification",
            Self::Rbac => "roles for other local users",
            Self::PolicyLifecycle => "policy versions store, diff and hash",
            Self::CloudPolicySync => "policy registry client",
            Self::CloudAuditStream => "audit streaming to the cloud",
            Self::CloudControlChannel => "cloud control channel and heartbeat",
            Self::WebDashboard => "governance server dashboard",
        }
    }

    /// The flag named `name` (exact snake_case).
    pub fn from_name(name: &str) -> Option<Feature> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The sentence a client shows when a request needs this flag and it is off.
    pub fn disabled_message(self) -> String {
        format!(
            "feature '{}' is not enabled in this edition; turn it on with {}=on or \
             ATLASBRIDGE_EDITION={} (or `{} = true` under [features] in the config file)",
            self.name(),
            self.env_var(),
            self.enabled_from(),
            self.name()
        )
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The prefix of the per-flag environment overrides.
pub const FEATURE_ENV_PREFIX: &str = "ATLASBRIDGE_FEATURE_";

/// Reads an on/off switch: `1/true/on/yes` or `0/false/off/no`, case-insensitive.
pub fn parse_switch(value: &str) -> Option<bool> {
    const ON: [&str; 4] = ["1", "true", "on", "yes"];
    const OFF: [&str; 4] = ["0", "false", "off", "no"];
    let value = value.trim();
    if ON.iter().any(|v| v.eq_ignore_ascii_case(value)) {
        Some(true)
    } else if OFF.iter().any(|v| v.eq_ignore_ascii_case(value)) {
        Some(false)
    } else {
        None
    }
}

/// Where the edition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditionSource {
    /// `atlasbridged --edition`.
    Flag,
    /// `ATLASBRIDGE_EDITION`.
    Env,
    /// `edition` in the config file.
    Config,
    /// Nothing set: community.
    Default,
}

impl fmt::Display for EditionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "--edition flag",
            Self::Env => "ATLASBRIDGE_EDITION",
            Self::Config => "config file",
            Self::Default => "default",
        })
    }
}

/// Where a flag's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlagSource {
    /// The edition's default.
    Edition,
    /// An `ATLASBRIDGE_FEATURE_*` variable.
    Env,
    /// `[features]` in the config file.
    Config,
}

impl fmt::Display for FlagSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Edition => "edition",
            Self::Env => "env",
            Self::Config => "config",
        })
    }
}

/// Result of `edition.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditionInfo {
    /// The active edition.
    pub edition: Edition,
    /// Where it came from.
    pub source: EditionSource,
    /// The daemon's version.
    pub version: String,
}

/// One flag in `features.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureState {
    /// The flag.
    pub name: Feature,
    /// Its resolved value.
    pub enabled: bool,
    /// The first edition that turns it on by default.
    pub enabled_from: Edition,
    /// Where the value came from.
    pub source: FlagSource,
    /// What it gates.
    pub description: String,
}

/// Result of `features.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureList {
    /// The active edition.
    pub edition: Edition,
    /// Where the edition came from.
    pub edition_source: EditionSource,
    /// Every flag, in table order.
    pub features: Vec<FeatureState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editions_parse_case_insensitively_and_name_the_valid_ones() {
        assert_eq!("PRO".parse::<Edition>(), Ok(Edition::Pro));
        assert_eq!(" Enterprise ".parse::<Edition>(), Ok(Edition::Enterprise));
        let err = "gold".parse::<Edition>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown edition 'gold': expected one of community, pro, enterprise"
        );
    }

    #[test]
    fn the_table_matches_the_spec() {
        let pro: Vec<_> = Feature::ALL
            .into_iter()
            .filter(|f| f.enabled_from() == Edition::Pro)
            .collect();
        assert_eq!(pro.len(), 6);
        for f in Feature::ALL {
            assert!(!f.default_in(Edition::Community), "{f} is off in community");
            assert!(f.default_in(Edition::Enterprise), "{f} is on in enterprise");
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.name())
            );
        }
        assert_eq!(Feature::Rbac.env_var(), "ATLASBRIDGE_FEATURE_RBAC");
        assert_eq!(
            Feature::DecisionTraceV2.env_var(),
            "ATLASBRIDGE_FEATURE_DECISION_TRACE_V2"
        );
    }

    #[test]
    fn switches() {
        for on in ["1", "true", "ON", "Yes"] {
            assert_eq!(parse_switch(on), Some(true));
        }
        for off in ["0", "FALSE", "off", "no"] {
            assert_eq!(parse_switch(off), Some(false));
        }
        assert_eq!(parse_switch("enabled"), None);
        assert_eq!(parse_switch(""), None);
    }
}
