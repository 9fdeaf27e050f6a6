//! The daemon's TOML config file.
//!
//! Every key is optional: with no file at all the embedded defaults apply. Unknown keys, values
//! of the wrong type and out-of-range values are errors that name the file, the line and the
//! key, because a daemon that silently ignores a misspelt `[features]` entry runs with settings
//! its user never chose. `docs/configuration.md` documents every key.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atlasbridge_protocol::features::{Edition, Feature};
use serde::Deserialize;
use toml::Spanned;

use crate::cloud::config::RawCloud;
pub use crate::cloud::config::{CloudConfig, PolicySync};
use crate::roles::{Directory, RawRoles, SystemDirectory};
pub use crate::roles::{Grant, RolesConfig, SocketGroup};

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a bad value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `edition`: the edition when neither `--edition` nor `ATLASBRIDGE_EDITION` is set.
    pub edition: Option<Edition>,
    /// `[features]`: per-flag overrides of the edition's defaults.
    pub features: BTreeMap<Feature, bool>,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[logging]`.
    pub logging: LoggingConfig,
    /// `[trace]`.
    pub trace: TraceConfig,
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[risk]`.
    pub risk: RiskConfig,
    /// `[cloud]`: the uplink, off by default.
    pub cloud: CloudConfig,
    /// `[roles]`: roles for other local users (with the `rbac` feature).
    pub roles: RolesConfig,
}

/// `[policy]`: which policy decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyConfig {
    /// The policy file; without one the built-in `safe-default` policy decides.
    pub file: Option<PathBuf>,
}

/// `[risk]`: what the risk level may change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RiskConfig {
    /// An `auto_reply` at or above this level is answered `require_human` instead.
    pub require_human_at: Option<atlasbridge_protocol::risk::RiskLevel>,
}

/// When an appended entry reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `fdatasync` before any reply that reports the entry; concurrent appends share one sync.
    #[default]
    Fsync,
    /// Sync at most every `batch_interval_ms`; replies may precede the sync.
    Batch,
    /// Leave it to the operating system.
    None,
}

/// `[trace]`: the decision trace and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// When entries reach the disk.
    pub durability: Durability,
    /// The longest a `batch` sync waits.
    pub batch_interval: Duration,
    /// A segment is closed once it reaches this size.
    pub segment_max_bytes: u64,
    /// A checkpoint after this many entries…
    pub checkpoint_every_entries: u64,
    /// …or after this long, even when idle.
    pub checkpoint_interval: Duration,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            batch_interval: Duration::from_millis(5),
            segment_max_bytes: 64 * 1024 * 1024,
            checkpoint_every_entries: 10_000,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

/// `[daemon]`: connection handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// A connection with no request for this long (and nothing in flight) is closed.
    pub idle_timeout: Duration,
    /// A client that does not read its responses for this long is disconnected.
    pub write_timeout: Duration,
    /// Connections beyond this many are answered -32005 and closed.
    pub max_connections: usize,
    /// Requests one connection may have in flight; beyond that the daemon stops reading it.
    pub max_requests_in_flight: usize,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    pub shutdown_timeout: Duration,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `atlasbridged=debug`; `ATLASBRIDGE_LOG` wins.
    pub level: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_requests_in_flight: 64,
            shutdown_timeout: Duration::from_secs(4),
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    edition: Option<Spanned<String>>,
    #[serde(default)]
    features: BTreeMap<Spanned<String>, bool>,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    logging: RawLogging,
    #[serde(default)]
    trace: RawTrace,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    risk: RawRisk,
    #[serde(default)]
    cloud: RawCloud,
    #[serde(default)]
    roles: RawRoles,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    require_human_at: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTrace {
    durability: Option<Durability>,
    batch_interval_ms: Option<Spanned<u64>>,
    segment_max_bytes: Option<Spanned<u64>>,
    checkpoint_every_entries: Option<Spanned<u64>>,
    checkpoint_interval_s: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    idle_timeout_s: Option<Spanned<u64>>,
    write_timeout_s: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_requests_in_flight: Option<Spanned<u64>>,
    shutdown_timeout_s: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLogging {
    format: Option<LogFormat>,
    level: Option<Spanned<String>>,
}

impl Config {
    /// The file's `edition` and `[features]`, for flag resolution.
    pub fn flags(&self) -> atlasbridge_protocol::flags::ConfigFlags {
        atlasbridge_protocol::flags::ConfigFlags {
            edition: self.edition,
            features: self.features.clone(),
        }
    }

    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` is only used in messages. User and group names under
    /// `[roles]` are looked up in the system's databases.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, path, &SystemDirectory)
    }

    /// [`Config::parse`] with names looked up in `directory`.
    pub fn parse_with(
        text: &str,
        path: &Path,
        directory: &dyn Directory,
    ) -> Result<Self, ConfigError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_and_column(text, span.map_or(0, |s| s.start));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_owned()))?;

        let edition = match raw.edition {
            None => None,
            Some(value) => Some(
                value
                    .get_ref()
                    .parse::<Edition>()
                    .map_err(|e| invalid(Some(value.span()), format!("edition: {e}")))?,
            ),
        };

        let mut features = BTreeMap::new();
        for (name, on) in raw.features {
            let feature = Feature::from_name(name.get_ref()).ok_or_else(|| {
                let known: Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
                invalid(
                    Some(name.span()),
                    format!(
                        "unknown feature '{}' under [features]; known features: {}",
                        name.get_ref(),
                        known.join(", ")
                    ),
                )
            })?;
            features.insert(feature, on);
        }

        let defaults = DaemonConfig::default();
        let seconds = |value: Option<Spanned<u64>>, key: &str, default: Duration| match value {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => Err(invalid(
                Some(v.span()),
                format!("[daemon] {key} must be at least 1"),
            )),
            Some(v) => Ok(Duration::from_secs(*v.get_ref())),
        };
        let count = |value: Option<Spanned<u64>>, key: &str, default: usize, max: u64| match value {
            None => Ok(default),
            Some(v) if !(1..=max).contains(v.get_ref()) => Err(invalid(
                Some(v.span()),
                format!("[daemon] {key} must be between 1 and {max}"),
            )),
            Some(v) => usize::try_from(*v.get_ref())
                .map_err(|_| invalid(Some(v.span()), format!("[daemon] {key} is too large"))),
        };
        let daemon = DaemonConfig {
            idle_timeout: seconds(
                raw.daemon.idle_timeout_s,
                "idle_timeout_s",
                defaults.idle_timeout,
            )?,
            write_timeout: seconds(
                raw.daemon.write_timeout_s,
                "write_timeout_s",
                defaults.write_timeout,
            )?,
            max_connections: count(
                raw.daemon.max_connections,
                "max_connections",
                defaults.max_connections,
                1_000_000,
            )?,
            max_requests_in_flight: count(
                raw.daemon.max_requests_in_flight,
                "max_requests_in_flight",
                defaults.max_requests_in_flight,
                10_000,
            )?,
            shutdown_timeout: seconds(
                raw.daemon.shutdown_timeout_s,
                "shutdown_timeout_s",
                defaults.shutdown_timeout,
            )?,
        };

        let level = match raw.logging.level {
            None => LoggingConfig::default().level,
            Some(level) => {
                tracing_subscriber::EnvFilter::try_new(level.get_ref())
                    .map_err(|e| invalid(Some(level.span()), format!("[logging] level: {e}")))?;
                level.into_inner()
            }
        };
        let logging = LoggingConfig {
            format: raw.logging.format.unwrap_or_default(),
            level,
        };

        let trace_defaults = TraceConfig::default();
        let ranged = |value: Option<Spanned<u64>>, key: &str, default: u64, min: u64, max: u64| {
            match value {
                None => Ok(default),
                Some(v) if !(min..=max).contains(v.get_ref()) => Err(invalid(
                    Some(v.span()),
                    format!("[trace] {key} must be between {min} and {max}"),
                )),
                Some(v) => Ok(*v.get_ref()),
            }
        };
        let trace = TraceConfig {
            durability: raw.trace.durability.unwrap_or_default(),
            batch_interval: Duration::from_millis(ranged(
                raw.trace.batch_interval_ms,
                "batch_interval_ms",
                5,
                1,
                60_000,
            )?),
            segment_max_bytes: ranged(
                raw.trace.segment_max_bytes,
                "segment_max_bytes",
                trace_defaults.segment_max_bytes,
                4096,
                1 << 40,
            )?,
            checkpoint_every_entries: ranged(
                raw.trace.checkpoint_every_entries,
                "checkpoint_every_entries",
                trace_defaults.checkpoint_every_entries,
                1,
                1 << 32,
            )?,
            checkpoint_interval: Duration::from_secs(ranged(
                raw.trace.checkpoint_interval_s,
                "checkpoint_interval_s",
                60,
                1,
                86_400,
            )?),
        };

        let policy = PolicyConfig {
            file: match raw.policy.file {
                None => None,
                Some(file) if file.get_ref().trim().is_empty() => {
                    return Err(invalid(
                        Some(file.span()),
                        "[policy] file must not be empty".to_owned(),
                    ));
                }
                Some(file) if file.get_ref().starts_with('~') => {
                    Some(PathBuf::from(file.get_ref()))
                }
                // Relative to the config file, so that a config and its policy can move together.
                Some(file) => Some(path.parent().map_or_else(
                    || PathBuf::from(file.get_ref()),
                    |dir| dir.join(file.get_ref()),
                )),
            },
        };
        let risk = RiskConfig {
            require_human_at: match raw.risk.require_human_at {
                None => None,
                Some(level) => Some(level.get_ref().parse().map_err(|e| {
                    invalid(Some(level.span()), format!("[risk] require_human_at: {e}"))
                })?),
            },
        };

        let cloud = raw
            .cloud
            .validate(path.parent())
            .map_err(|(span, message)| invalid(span, message))?;
        let roles = raw
            .roles
            .validate(directory)
            .map_err(|(span, message)| invalid(span, message))?;

        Ok(Self {
            edition,
            features,
            daemon,
            logging,
            trace,
            policy,
            risk,
            cloud,
            roles,
        })
    }
}

/// 1-based line and column of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use atlasbridge_protocol::methods::Role;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/atlasbridge/config.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_policy_file_is_relative_to_the_config_and_the_risk_threshold_is_a_level() {
        let config =
            parse("[policy]\nfile = \"policies/team.yaml\"\n[risk]\nrequire_human_at = \"High\"\n")
                .unwrap();
        assert_eq!(
            config.policy.file.as_deref(),
            Some(Path::new("/etc/atlasbridge/policies/team.yaml"))
        );
        assert_eq!(
            config.risk.require_human_at,
            Some(atlasbridge_protocol::risk::RiskLevel::High)
        );
        let absolute = parse("[policy]\nfile = \"/srv/p.yaml\"\n").unwrap();
        assert_eq!(
            absolute.policy.file.as_deref(),
            Some(Path::new("/srv/p.yaml"))
        );
        assert!(error("[risk]\nrequire_human_at = \"severe\"\n").contains(":2:"));
        assert!(error("[policy]\nfile = \"\"\n").contains("must not be empty"));
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            r#"
edition = "Pro"

[features]
rbac = false
cloud_audit_stream = true

[daemon]
idle_timeout_s = 60
write_timeout_s = 5
max_connections = 10
max_requests_in_flight = 8
shutdown_timeout_s = 2

[logging]
format = "json"
level = "atlasbridged=debug"

[trace]
durability = "batch"
batch_interval_ms = 20
segment_max_bytes = 1048576
checkpoint_every_entries = 500
checkpoint_interval_s = 30
"#,
        )
        .unwrap();
        assert_eq!(config.edition, Some(Edition::Pro));
        assert_eq!(config.features.get(&Feature::Rbac), Some(&false));
        assert_eq!(config.features.get(&Feature::CloudAuditStream), Some(&true));
        assert_eq!(config.daemon.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.daemon.write_timeout, Duration::from_secs(5));
        assert_eq!(config.daemon.max_connections, 10);
        assert_eq!(config.daemon.max_requests_in_flight, 8);
        assert_eq!(config.daemon.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(config.logging.format, LogFormat::Json);
        assert_eq!(config.logging.level, "atlasbridged=debug");
        assert_eq!(config.trace.durability, Durability::Batch);
        assert_eq!(config.trace.batch_interval, Duration::from_millis(20));
        assert_eq!(config.trace.segment_max_bytes, 1 << 20);
        assert_eq!(config.trace.checkpoint_every_entries, 500);
        assert_eq!(config.trace.checkpoint_interval, Duration::from_secs(30));
    }

    #[test]
    fn an_unknown_key_names_the_file_the_line_and_the_key() {
        let e = error("edition = \"pro\"\n\n[daemon]\nidle_timeout = 5\n");
        assert!(
            e.starts_with("/etc/atlasbridge/config.toml:4:1: unknown field `idle_timeout`"),
            "{e}"
        );
        let e = error("colour = 1\n");
        assert!(e.contains(":1:1: unknown field `colour`"), "{e}");
    }

    #[test]
    fn an_unknown_feature_is_an_error_listing_the_known_ones() {
        let e = error("[features]\nrbac = true\nrback = true\n");
        assert!(
            e.starts_with("/etc/atlasbridge/config.toml:3:1: unknown feature 'rback'"),
            "{e}"
        );
        assert!(e.contains("policy_pinning"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(error("edition = \"gold\"").contains(":1:11: edition: unknown edition 'gold'"));
        assert!(error("[features]\nrbac = \"on\"").contains(":2:8:"));
        assert!(
            error("[daemon]\nidle_timeout_s = 0").contains("idle_timeout_s must be at least 1")
        );
        assert!(error("[daemon]\nmax_connections = 0").contains("between 1 and"));
        assert!(error("[daemon]\nmax_connections = -3").contains(":2:19:"));
        assert!(error("[logging]\nformat = \"xml\"").contains(":2:10:"));
        assert!(error("[logging]\nlevel = \"[[[\"").contains("[logging] level"));
        assert!(error("edition = ").contains(":1:"));
        assert!(error("[trace]\ndurability = \"always\"").contains(":2:14:"));
        assert!(error("[trace]\nsegment_max_bytes = 10").contains("between 4096 and"));
    }

    fn parse_roles(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(
            text,
            Path::new("/etc/atlasbridge/config.toml"),
            &crate::roles::FakeDirectory,
        )
    }

    fn roles_error(text: &str) -> String {
        parse_roles(text).unwrap_err().to_string()
    }

    fn grant(role: Role, key: &str) -> Grant {
        Grant {
            role,
            key: key.to_owned(),
        }
    }

    #[test]
    fn roles_resolve_names_and_take_digits_as_ids() {
        let config = parse_roles(
            r#"
[features]
rbac = true

[roles]
socket_group = "agents"

[roles.users]
alice = "operator"
"1001" = "viewer"
"4242" = "Admin"

[roles.groups]
agents = "operator"
"3000" = "viewer"
"#,
        )
        .unwrap();
        assert_eq!(config.features.get(&Feature::Rbac), Some(&true));
        assert_eq!(
            config.roles.socket_group,
            Some(SocketGroup {
                gid: 2000,
                name: "agents".to_owned()
            })
        );
        assert_eq!(
            config.roles.users,
            BTreeMap::from([
                (1000, grant(Role::Operator, "users.alice")),
                (1001, grant(Role::Viewer, "users.1001")),
                (4242, grant(Role::Admin, "users.4242")),
            ])
        );
        assert_eq!(
            config.roles.groups,
            BTreeMap::from([
                (2000, grant(Role::Operator, "groups.agents")),
                (3000, grant(Role::Viewer, "groups.3000")),
            ])
        );
    }

    #[test]
    fn a_socket_group_may_be_a_number_or_digits() {
        for text in [
            "[roles]\nsocket_group = 2500\n",
            "[roles]\nsocket_group = \"2500\"\n",
        ] {
            let group = parse_roles(text).unwrap().roles.socket_group.unwrap();
            assert_eq!(group.gid, 2500, "{text}");
            assert_eq!(group.name, "2500", "{text}");
        }
    }

    #[test]
    fn a_user_listed_by_name_and_by_uid_gets_the_higher_role() {
        let config =
            parse_roles("[roles.users]\nalice = \"viewer\"\n\"1000\" = \"admin\"\n").unwrap();
        assert_eq!(config.roles.users.len(), 1);
        assert_eq!(config.roles.users[&1000].role, Role::Admin);
    }

    #[test]
    fn no_roles_table_grants_nothing() {
        let config = parse_roles("[features]\nrbac = true\n").unwrap();
        assert_eq!(config.roles, RolesConfig::default());
        assert!(!config.roles.grants_any());
    }

    #[test]
    fn roles_errors_name_the_file_the_line_the_column_and_the_key() {
        let cases = [
            (
                "[roles]\nsocket_groups = \"agents\"\n",
                "/etc/atlasbridge/config.toml:2:1: unknown field `socket_groups`",
            ),
            (
                "[roles.owners]\nalice = \"owner\"\n",
                "/etc/atlasbridge/config.toml:1:8: unknown field `owners`",
            ),
            (
                "[roles.users]\nalice = \"boss\"\n",
                "/etc/atlasbridge/config.toml:2:9: [roles.users] alice: unknown role 'boss': \
                 expected one of viewer, operator, admin, owner",
            ),
            (
                "[roles.users]\ncarol = \"viewer\"\n",
                "/etc/atlasbridge/config.toml:2:1: [roles.users] unknown user 'carol': \
                 no such user on this system",
            ),
            (
                "[roles.users]\nbroken = \"viewer\"\n",
                "/etc/atlasbridge/config.toml:2:1: [roles.users] cannot look up user 'broken': \
                 the directory is down",
            ),
            (
                "\n[roles.groups]\n\"staff.x\" = \"viewer\"\n",
                "/etc/atlasbridge/config.toml:3:1: [roles.groups] unknown group 'staff.x'",
            ),
            (
                "[roles.groups]\nagents = \"root\"\n",
                "/etc/atlasbridge/config.toml:2:10: [roles.groups] agents: unknown role 'root'",
            ),
            (
                "[roles]\nsocket_group = \"nope\"\n",
                "/etc/atlasbridge/config.toml:2:16: [roles] socket_group: unknown group 'nope'",
            ),
            (
                "[roles]\nsocket_group = -1\n",
                "/etc/atlasbridge/config.toml:2:16: [roles] socket_group: -1 is not a valid gid",
            ),
            (
                "[roles]\nsocket_group = true\n",
                "/etc/atlasbridge/config.toml:2:16: [roles] socket_group must be a group name or \
                 a numeric gid, not boolean",
            ),
            (
                "[roles.users]\n\"99999999999\" = \"viewer\"\n",
                "/etc/atlasbridge/config.toml:2:1: [roles.users] 99999999999 is not a valid uid",
            ),
            (
                "[roles.users]\nalice = 3\n",
                "/etc/atlasbridge/config.toml:2:9:",
            ),
        ];
        for (text, expected) in cases {
            let e = roles_error(text);
            assert!(
                e.starts_with(expected),
                "{text:?}\n  got:      {e}\n  expected: {expected}"
            );
        }
    }

    #[test]
    fn columns_count_from_one() {
        assert_eq!(line_and_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("ab", 99), (1, 3));
    }
}
