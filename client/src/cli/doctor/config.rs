//! The daemon's config file as `doctor` reads it, without the daemon.
//!
//! The daemon's own loader lives in the daemon crate, which the CLI does not link (it would bring
//! the daemon's runtime and TLS stack along). So the keys it accepts, their types and ranges are
//! written down here as data, [`CONFIG_KEYS`], and a test in the tests crate holds that table to
//! the daemon's loader: every key here is one the daemon accepts, every key the daemon accepts is
//! here, and the range edges agree. What the table cannot say — that `logging.level` is a valid
//! tracing filter — is left to the daemon.
//!
//! Unlike the daemon, which stops at the first problem, [`parse`] reports every problem of the
//! file, each with its line and column.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use atlasbridge_protocol::cloud::endpoint::{parse_api_base, parse_endpoint};
use atlasbridge_protocol::features::{Edition, Feature};
use atlasbridge_protocol::flags::ConfigFlags;
use atlasbridge_protocol::risk::RiskLevel;
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// What a key's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `true` or `false`.
    Bool,
    /// An integer in `min..=max`.
    Integer {
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// Any string.
    Text,
    /// A string that is not blank (a file name; relative to the config file's directory unless
    /// it starts with `~`).
    Path,
    /// One of these strings, exactly.
    OneOf(&'static [&'static str]),
    /// `community`, `pro` or `enterprise`, in any case.
    Edition,
    /// A risk level name, in any case.
    RiskLevel,
    /// `wss://…`, or `ws://…` on a loopback host.
    Endpoint,
    /// `https://…`, or `http://…` on a loopback host.
    ApiBase,
    /// `ed25519:<base64url>`.
    PublicKey,
    /// A group name, or a numeric gid (a string of digits or an integer).
    Group,
    /// A table of user or group names (or numeric ids) → `viewer`, `operator`, `admin` or
    /// `owner`, in any case. Whether the names exist is left to the daemon, which looks them up.
    Roles,
}

/// One key of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigKey {
    /// Its table (`daemon`, `trace`, …); `None` at the top level.
    pub section: Option<&'static str>,
    /// Its name.
    pub key: &'static str,
    /// What its value must be.
    pub kind: ValueKind,
    /// A value the daemon accepts, as TOML.
    pub example: &'static str,
}

/// The `[features]` table: flag names (see `atlasbridge features`) set to `true` or `false`.
pub const FEATURES_SECTION: &str = "features";

const fn key(
    section: Option<&'static str>,
    key: &'static str,
    kind: ValueKind,
    example: &'static str,
) -> ConfigKey {
    ConfigKey {
        section,
        key,
        kind,
        example,
    }
}

const fn at_least_one() -> ValueKind {
    ValueKind::Integer {
        min: 1,
        max: i64::MAX as u64,
    }
}

const fn between(min: u64, max: u64) -> ValueKind {
    ValueKind::Integer { min, max }
}

/// Every key the daemon accepts besides `[features]` (see `docs/configuration.md`).
pub const CONFIG_KEYS: &[ConfigKey] = &[
    key(None, "edition", ValueKind::Edition, "\"pro\""),
    key(Some("daemon"), "idle_timeout_s", at_least_one(), "600"),
    key(Some("daemon"), "write_timeout_s", at_least_one(), "30"),
    key(
        Some("daemon"),
        "max_connections",
        between(1, 1_000_000),
        "1024",
    ),
    key(
        Some("daemon"),
        "max_requests_in_flight",
        between(1, 10_000),
        "64",
    ),
    key(Some("daemon"), "shutdown_timeout_s", at_least_one(), "4"),
    key(
        Some("logging"),
        "format",
        ValueKind::OneOf(&["text", "json"]),
        "\"text\"",
    ),
    key(Some("logging"), "level", ValueKind::Text, "\"info\""),
    key(
        Some("trace"),
        "durability",
        ValueKind::OneOf(&["fsync", "batch", "none"]),
        "\"fsync\"",
    ),
    key(Some("trace"), "batch_interval_ms", between(1, 60_000), "5"),
    key(
        Some("trace"),
        "segment_max_bytes",
        between(4096, 1 << 40),
        "67108864",
    ),
    key(
        Some("trace"),
        "checkpoint_every_entries",
        between(1, 1 << 32),
        "10000",
    ),
    key(
        Some("trace"),
        "checkpoint_interval_s",
        between(1, 86_400),
        "60",
    ),
    key(
        Some("policy"),
        "file",
        ValueKind::Path,
        "\"policies/team.yaml\"",
    ),
    key(
        Some("risk"),
        "require_human_at",
        ValueKind::RiskLevel,
        "\"critical\"",
    ),
    key(Some("cloud"), "enabled", ValueKind::Bool, "false"),
    key(
        Some("cloud"),
        "endpoint",
        ValueKind::Endpoint,
        "\"wss://cloud.example/v1/connect\"",
    ),
    key(
        Some("cloud"),
        "api_base",
        ValueKind::ApiBase,
        "\"https://cloud.example\"",
    ),
    key(Some("cloud"), "org_id", ValueKind::Text, "\"org-1\""),
    key(
        Some("cloud"),
        "api_key_file",
        ValueKind::Path,
        "\"cloud-api-key\"",
    ),
    key(Some("cloud"), "ca_file", ValueKind::Path, "\"ca.pem\""),
    key(
        Some("cloud"),
        "server_public_key",
        ValueKind::PublicKey,
        "\"ed25519:ESKrTymiZmnmO2TwpPmolbH0T1yyG89psF5qxv1bUjE\"",
    ),
    key(Some("cloud"), "heartbeat_s", between(1, 3600), "30"),
    key(
        Some("cloud"),
        "buffer_events",
        between(1, 1_000_000),
        "10000",
    ),
    key(
        Some("cloud"),
        "policy_sync",
        ValueKind::OneOf(&["manual", "auto"]),
        "\"manual\"",
    ),
    key(Some("cloud"), "honor_kill_switch", ValueKind::Bool, "false"),
    key(Some("cloud"), "api_key_keyring", ValueKind::Bool, "false"),
    key(Some("roles"), "socket_group", ValueKind::Group, "0"),
    key(
        Some("roles"),
        "users",
        ValueKind::Roles,
        "{ \"0\" = \"viewer\" }",
    ),
    key(
        Some("roles"),
        "groups",
        ValueKind::Roles,
        "{ \"0\" = \"operator\" }",
    ),
];

/// One problem of the file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigProblem {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) message: String,
}

/// What `doctor` needs from a config file that is valid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ConfigFile {
    /// `edition` and `[features]`, for the feature flags.
    pub(crate) flags: ConfigFlags,
    /// `[policy] file`, resolved as the daemon resolves it.
    pub(crate) policy_file: Option<PathBuf>,
    /// `[cloud]`.
    pub(crate) cloud: CloudSection,
}

/// The `[cloud]` keys `doctor` looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CloudSection {
    pub(crate) enabled: bool,
    pub(crate) endpoint: Option<String>,
    pub(crate) org_id: Option<String>,
    /// Resolved against the config file's directory.
    pub(crate) api_key_file: Option<PathBuf>,
    /// Resolved against the config file's directory.
    pub(crate) ca_file: Option<PathBuf>,
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scalar {
    Bool(bool),
    Integer(u64),
    Text(String),
}

/// Checks `text`, the config file at `path`, as the daemon would load it.
pub(crate) fn parse(text: &str, path: &Path) -> Result<ConfigFile, Vec<ConfigProblem>> {
    let at = |span: Range<usize>, message: String| {
        let (line, column) = line_and_column(text, span.start);
        ConfigProblem {
            line,
            column,
            message,
        }
    };
    let document = DeTable::parse(text).map_err(|e| {
        vec![at(
            e.span().unwrap_or(0..0),
            e.message().trim_end().to_owned(),
        )]
    })?;
    let mut problems = Vec::new();
    let mut values: BTreeMap<(Option<&'static str>, &'static str), Spanned<Scalar>> =
        BTreeMap::new();
    let mut features = BTreeMap::new();

    for (name, value) in document.get_ref() {
        let name_text: &str = name.get_ref();
        if let Some(spec) = lookup(None, name_text) {
            match check_value(spec, value.get_ref()) {
                Ok(scalar) => {
                    values.insert((None, spec.key), Spanned::new(value.span(), scalar));
                }
                Err(message) => problems.push(at(value.span(), message)),
            }
            continue;
        }
        let Some(section) = section_name(name_text) else {
            problems.push(at(
                name.span(),
                format!(
                    "unknown key `{name_text}`; expected `edition` or one of the tables {}",
                    known_sections()
                ),
            ));
            continue;
        };
        let DeValue::Table(table) = value.get_ref() else {
            problems.push(at(value.span(), format!("`{section}` must be a table")));
            continue;
        };
        for (key_name, key_value) in table {
            let key_text: &str = key_name.get_ref();
            if section == FEATURES_SECTION {
                let Some(feature) = Feature::from_name(key_text) else {
                    let known: Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
                    problems.push(at(
                        key_name.span(),
                        format!(
                            "unknown feature '{key_text}' under [features]; known features: {}",
                            known.join(", ")
                        ),
                    ));
                    continue;
                };
                match key_value.get_ref() {
                    DeValue::Boolean(on) => {
                        features.insert(feature, *on);
                    }
                    _ => problems.push(at(
                        key_value.span(),
                        format!("[features] {key_text} must be true or false"),
                    )),
                }
                continue;
            }
            let Some(spec) = lookup(Some(section), key_text) else {
                let known: Vec<String> = CONFIG_KEYS
                    .iter()
                    .filter(|k| k.section == Some(section))
                    .map(|k| format!("`{}`", k.key))
                    .collect();
                problems.push(at(
                    key_name.span(),
                    format!(
                        "unknown key `{key_text}` in [{section}]; expected one of {}",
                        known.join(", ")
                    ),
                ));
                continue;
            };
            match check_value(spec, key_value.get_ref()) {
                Ok(scalar) => {
                    values.insert(
                        (spec.section, spec.key),
                        Spanned::new(key_value.span(), scalar),
                    );
                }
                Err(message) => problems.push(at(key_value.span(), message)),
            }
        }
    }

    let text_of = |section: &'static str, key: &'static str| match values
        .get(&(Some(section), key))
        .map(Spanned::get_ref)
    {
        Some(Scalar::Text(text)) => Some(text.clone()),
        _ => None,
    };
    let dir = path.parent();
    let resolve = |section: &'static str, key: &'static str| {
        text_of(section, key).map(|file| match dir {
            Some(dir) if !file.starts_with('~') => dir.join(file),
            _ => PathBuf::from(file),
        })
    };
    let cloud = CloudSection {
        enabled: matches!(
            values
                .get(&(Some("cloud"), "enabled"))
                .map(Spanned::get_ref),
            Some(Scalar::Bool(true))
        ),
        endpoint: text_of("cloud", "endpoint"),
        org_id: text_of("cloud", "org_id").filter(|o| !o.trim().is_empty()),
        api_key_file: resolve("cloud", "api_key_file"),
        ca_file: resolve("cloud", "ca_file"),
    };
    if cloud.enabled && problems.is_empty() {
        let enabled_at = values
            .get(&(Some("cloud"), "enabled"))
            .map_or(0..0, Spanned::span);
        if cloud.endpoint.is_none() {
            problems.push(at(
                enabled_at.clone(),
                "[cloud] enabled = true needs an endpoint".to_owned(),
            ));
        }
        if cloud.org_id.is_none() {
            let span = values
                .get(&(Some("cloud"), "org_id"))
                .map_or(enabled_at, Spanned::span);
            problems.push(at(
                span,
                "[cloud] enabled = true needs an org_id".to_owned(),
            ));
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(problems);
    }
    let edition = text_of_top(&values, "edition").and_then(|e| e.parse::<Edition>().ok());
    Ok(ConfigFile {
        flags: ConfigFlags { edition, features },
        policy_file: resolve("policy", "file"),
        cloud,
    })
}

fn text_of_top(
    values: &BTreeMap<(Option<&'static str>, &'static str), Spanned<Scalar>>,
    key: &'static str,
) -> Option<String> {
    match values.get(&(None, key)).map(Spanned::get_ref) {
        Some(Scalar::Text(text)) => Some(text.clone()),
        _ => None,
    }
}

fn lookup(section: Option<&str>, key: &str) -> Option<&'static ConfigKey> {
    CONFIG_KEYS
        .iter()
        .find(|k| k.section == section && k.key == key)
}

/// The tables of the file: `[features]` and the sections of [`CONFIG_KEYS`].
fn section_name(name: &str) -> Option<&'static str> {
    if name == FEATURES_SECTION {
        return Some(FEATURES_SECTION);
    }
    CONFIG_KEYS
        .iter()
        .filter_map(|k| k.section)
        .find(|section| *section == name)
}

fn known_sections() -> String {
    let mut names: Vec<&str> = CONFIG_KEYS.iter().filter_map(|k| k.section).collect();
    names.push(FEATURES_SECTION);
    names.sort_unstable();
    names.dedup();
    names
        .iter()
        .map(|n| format!("[{n}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of one key, checked against its kind; the message names the key.
fn check_value(spec: &ConfigKey, value: &DeValue<'_>) -> Result<Scalar, String> {
    let name = match spec.section {
        Some(section) => format!("[{section}] {}", spec.key),
        None => spec.key.to_owned(),
    };
    let text = || match value {
        DeValue::String(text) => Ok(text.to_string()),
        _ => Err(format!("{name} must be a string")),
    };
    match spec.kind {
        ValueKind::Bool => match value {
            DeValue::Boolean(on) => Ok(Scalar::Bool(*on)),
            _ => Err(format!("{name} must be true or false")),
        },
        ValueKind::Integer { min, max } => {
            let DeValue::Integer(integer) = value else {
                return Err(format!("{name} must be an integer"));
            };
            let number = i128::from_str_radix(integer.as_str(), integer.radix())
                .map_err(|_| format!("{name} must be an integer"))?;
            match u64::try_from(number) {
                Ok(n) if (min..=max).contains(&n) => Ok(Scalar::Integer(n)),
                _ if max >= i64::MAX as u64 => Err(format!("{name} must be at least {min}")),
                _ => Err(format!("{name} must be between {min} and {max}")),
            }
        }
        ValueKind::Text => text().map(Scalar::Text),
        ValueKind::Path => {
            let path = text()?;
            if path.trim().is_empty() {
                return Err(format!("{name} must not be empty"));
            }
            Ok(Scalar::Text(path))
        }
        ValueKind::OneOf(allowed) => {
            let choice = text()?;
            if allowed.contains(&choice.as_str()) {
                Ok(Scalar::Text(choice))
            } else {
                Err(format!(
                    "{name}: unknown value '{choice}': expected one of {}",
                    allowed.join(", ")
                ))
            }
        }
        ValueKind::Edition => {
            let edition = text()?;
            edition
                .parse::<Edition>()
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(Scalar::Text(edition))
        }
        ValueKind::RiskLevel => {
            let level = text()?;
            level
                .parse::<RiskLevel>()
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(Scalar::Text(level))
        }
        ValueKind::Endpoint => {
            let url = text()?;
            parse_endpoint(&url)?;
            Ok(Scalar::Text(url))
        }
        ValueKind::ApiBase => {
            let url = text()?;
            parse_api_base(&url)?;
            Ok(Scalar::Text(url))
        }
        ValueKind::PublicKey => {
            let key = text()?;
            if decode_public_key(&key).is_none() {
                return Err(format!(
                    "{name} must be an Ed25519 key as `ed25519:<base64url>`"
                ));
            }
            Ok(Scalar::Text(key))
        }
        ValueKind::Group => match value {
            DeValue::String(group) if !group.trim().is_empty() => {
                Ok(Scalar::Text(group.to_string()))
            }
            DeValue::Integer(gid) if !gid.as_str().starts_with('-') => {
                Ok(Scalar::Text(gid.as_str().to_owned()))
            }
            _ => Err(format!("{name} must be a group name or a numeric gid")),
        },
        ValueKind::Roles => {
            let DeValue::Table(table) = value else {
                return Err(format!("{name} must be a table of names and roles"));
            };
            for (who, role) in table {
                let role_ok = matches!(role.get_ref(), DeValue::String(role)
                    if ["viewer", "operator", "admin", "owner"]
                        .iter()
                        .any(|known| known.eq_ignore_ascii_case(role)));
                if !role_ok {
                    return Err(format!(
                        "{name}.{}: the role must be viewer, operator, admin or owner",
                        who.get_ref()
                    ));
                }
            }
            Ok(Scalar::Text(String::new()))
        }
    }
}

/// 1-based line and column of a byte offset (the column counts bytes, as the daemon's does).
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
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

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/ab/config.toml")) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
                .collect(),
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = parse("", Path::new("/etc/ab/config.toml")).unwrap();
        assert_eq!(config, ConfigFile::default());
    }

    #[test]
    fn every_example_is_accepted() {
        let mut text = String::new();
        let mut section = None;
        for key in CONFIG_KEYS {
            if key.section != section {
                section = key.section;
                text.push_str(&format!("[{}]\n", section.unwrap_or_default()));
            }
            text.push_str(&format!("{} = {}\n", key.key, key.example));
        }
        text.push_str("[features]\nrbac = true\n");
        assert_eq!(problems(&text), Vec::<String>::new(), "{text}");
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = "edition = \"gold\"\n[daemon]\nidle_timeout = 5\nmax_connections = 0\n\
                    [features]\nteleport = true\n[nonsense]\n";
        assert_eq!(
            problems(text),
            [
                "1:11: edition: unknown edition 'gold': expected one of community, pro, enterprise",
                "3:1: unknown key `idle_timeout` in [daemon]; expected one of `idle_timeout_s`, \
                 `write_timeout_s`, `max_connections`, `max_requests_in_flight`, `shutdown_timeout_s`",
                "4:19: [daemon] max_connections must be between 1 and 1000000",
                "6:1: unknown feature 'teleport' under [features]; known features: decision_trace_v2, \
                 risk_classifier, policy_pinning, audit_integrity_check, rbac, policy_lifecycle, \
                 cloud_policy_sync, cloud_audit_stream, cloud_control_channel, web_dashboard",
                "7:2: unknown key `nonsense`; expected `edition` or one of the tables [cloud], \
                 [daemon], [features], [logging], [policy], [risk], [roles], [trace]",
            ]
        );
    }

    #[test]
    fn types_and_choices_are_checked() {
        assert_eq!(
            problems("[trace]\ndurability = \"always\"\nsegment_max_bytes = \"big\"\n"),
            [
                "2:14: [trace] durability: unknown value 'always': expected one of fsync, batch, none",
                "3:21: [trace] segment_max_bytes must be an integer",
            ]
        );
        assert_eq!(
            problems("[daemon]\nidle_timeout_s = 0\n"),
            ["2:18: [daemon] idle_timeout_s must be at least 1"]
        );
        assert_eq!(
            problems("[policy]\nfile = \" \"\n"),
            ["2:8: [policy] file must not be empty"]
        );
    }

    #[test]
    fn a_toml_syntax_error_is_one_problem_at_its_place() {
        let found = problems("[daemon]\nidle_timeout_s = = 3\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("2:"), "{found:?}");
    }

    #[test]
    fn paths_are_relative_to_the_config_file_unless_they_start_with_a_tilde() {
        let config = parse(
            "[policy]\nfile = \"policies/team.yaml\"\n[cloud]\napi_key_file = \"~/key\"\n",
            Path::new("/etc/ab/config.toml"),
        )
        .unwrap();
        assert_eq!(
            config.policy_file,
            Some(PathBuf::from("/etc/ab/policies/team.yaml"))
        );
        assert_eq!(config.cloud.api_key_file, Some(PathBuf::from("~/key")));
    }

    #[test]
    fn an_enabled_cloud_needs_an_endpoint_and_an_org() {
        assert_eq!(
            problems("[cloud]\nenabled = true\n"),
            [
                "2:11: [cloud] enabled = true needs an endpoint",
                "2:11: [cloud] enabled = true needs an org_id",
            ]
        );
        assert_eq!(
            problems("[cloud]\nendpoint = \"ws://cloud.example/v1\"\n").len(),
            1,
            "plain ws is for loopback only"
        );
        let config = parse(
            "[cloud]\nenabled = true\nendpoint = \"wss://c.example/v1\"\norg_id = \"o\"\n",
            Path::new("/etc/ab/config.toml"),
        )
        .unwrap();
        assert!(config.cloud.enabled);
    }

    #[test]
    fn edition_and_features_feed_the_flags() {
        let config = parse(
            "edition = \"Enterprise\"\n[features]\nrbac = false\n",
            Path::new("/c.toml"),
        )
        .unwrap();
        assert_eq!(config.flags.edition, Some(Edition::Enterprise));
        assert_eq!(config.flags.features.get(&Feature::Rbac), Some(&false));
    }
}
