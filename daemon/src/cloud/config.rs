//! `[cloud]` in the config file. Off by default; when on, the endpoint, the organisation and a
//! way to find the API key are required, and `ws://` is accepted only for a loopback host.

use std::path::PathBuf;
use std::time::Duration;

use atlasbridge_protocol::cloud::endpoint::{Url, derive_api_base, parse_api_base, parse_endpoint};
use atlasbridge_protocol::trace::checkpoint::decode_public_key;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use toml::Spanned;

use super::auth::{ApiKeyError, KeySource};

/// What to do with a policy the cloud offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySync {
    /// Store it as pending until someone accepts it.
    #[default]
    Manual,
    /// Make it active unless a local pin or a local policy file takes precedence.
    Auto,
}

/// The validated `[cloud]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    /// Whether the uplink runs at all.
    pub enabled: bool,
    /// `wss://host/path` (or `ws://` on loopback).
    pub endpoint: Option<Url>,
    /// The REST base URL.
    pub api_base: Option<Url>,
    /// The organisation.
    pub org_id: String,
    /// A file (mode 0600) holding the API key, when the environment does not give one.
    pub api_key_file: Option<PathBuf>,
    /// The API key is in the OS keyring (service `atlasbridge`, account = `org_id`), when the
    /// environment does not give one. Never together with `api_key_file`.
    pub api_key_keyring: bool,
    /// Extra roots for the cloud's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// The key the cloud signs its messages and policies with.
    pub server_public_key: Option<VerifyingKey>,
    /// Between heartbeats.
    pub heartbeat: Duration,
    /// Trace entries in flight (sent, not acknowledged) at most.
    pub buffer_events: u64,
    /// What to do with offered policies.
    pub policy_sync: PolicySync,
    /// Whether the cloud's kill switch pauses the autopilot.
    pub honor_kill_switch: bool,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: None,
            api_base: None,
            org_id: String::new(),
            api_key_file: None,
            api_key_keyring: false,
            ca_file: None,
            server_public_key: None,
            heartbeat: Duration::from_secs(30),
            buffer_events: 10_000,
            policy_sync: PolicySync::Manual,
            honor_kill_switch: false,
        }
    }
}

impl CloudConfig {
    /// Where the API key is kept when `ATLASBRIDGE_CLOUD_API_KEY` does not give it.
    pub fn key_source(&self) -> KeySource<'_> {
        match &self.api_key_file {
            Some(file) => KeySource::File(file),
            None if self.api_key_keyring => KeySource::Keyring {
                account: &self.org_id,
            },
            None => KeySource::Unset,
        }
    }
}

/// `[cloud]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCloud {
    enabled: Option<bool>,
    endpoint: Option<Spanned<String>>,
    api_base: Option<Spanned<String>>,
    org_id: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    api_key_keyring: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
    server_public_key: Option<Spanned<String>>,
    heartbeat_s: Option<Spanned<u64>>,
    buffer_events: Option<Spanned<u64>>,
    policy_sync: Option<PolicySync>,
    honor_kill_switch: Option<bool>,
}

/// A bad value: its span in the file and the message.
pub(crate) type Invalid = (Option<std::ops::Range<usize>>, String);

impl RawCloud {
    /// Validates the section; relative paths are resolved against `config_dir`.
    pub(crate) fn validate(
        self,
        config_dir: Option<&std::path::Path>,
    ) -> Result<CloudConfig, Invalid> {
        let defaults = CloudConfig::default();
        let enabled = self.enabled.unwrap_or(false);
        let endpoint = match &self.endpoint {
            None => None,
            Some(text) => Some(parse_endpoint(text.get_ref()).map_err(|m| (Some(text.span()), m))?),
        };
        let api_base = match &self.api_base {
            None => None,
            Some(text) => Some(parse_api_base(text.get_ref()).map_err(|m| (Some(text.span()), m))?),
        };
        let api_base = api_base.or_else(|| endpoint.as_ref().and_then(derive_api_base));
        let path = |value: Option<Spanned<String>>, key: &str| match value {
            None => Ok(None),
            Some(v) if v.get_ref().trim().is_empty() => {
                Err((Some(v.span()), format!("[cloud] {key} must not be empty")))
            }
            Some(v) => Ok(Some(match config_dir {
                Some(dir) if !v.get_ref().starts_with('~') => dir.join(v.get_ref()),
                _ => PathBuf::from(v.get_ref()),
            })),
        };
        let server_public_key = match &self.server_public_key {
            None => None,
            Some(text) => Some(decode_public_key(text.get_ref()).ok_or_else(|| {
                (
                    Some(text.span()),
                    "[cloud] server_public_key must be an Ed25519 key as `ed25519:<base64url>`"
                        .to_owned(),
                )
            })?),
        };
        let ranged = |value: &Option<Spanned<u64>>, key: &str, default: u64, max: u64| match value {
            None => Ok(default),
            Some(v) if !(1..=max).contains(v.get_ref()) => Err((
                Some(v.span()),
                format!("[cloud] {key} must be between 1 and {max}"),
            )),
            Some(v) => Ok(*v.get_ref()),
        };
        let heartbeat = Duration::from_secs(ranged(&self.heartbeat_s, "heartbeat_s", 30, 3600)?);
        let buffer_events = ranged(
            &self.buffer_events,
            "buffer_events",
            defaults.buffer_events,
            1_000_000,
        )?;
        let org_id = self
            .org_id
            .as_ref()
            .map(|o| o.get_ref().clone())
            .unwrap_or_default();
        let api_key_keyring = match &self.api_key_keyring {
            Some(on) if *on.get_ref() => {
                if self.api_key_file.is_some() {
                    return Err((
                        Some(on.span()),
                        "[cloud] api_key_file and api_key_keyring = true name two places for one \
                         key; keep one of them"
                            .to_owned(),
                    ));
                }
                if !super::keyring::BUILT {
                    return Err((Some(on.span()), ApiKeyError::KeyringNotBuilt.to_string()));
                }
                true
            }
            _ => false,
        };
        if enabled {
            if endpoint.is_none() {
                return Err((None, "[cloud] enabled = true needs an endpoint".to_owned()));
            }
            if org_id.trim().is_empty() {
                let span = self.org_id.as_ref().map(Spanned::span);
                return Err((span, "[cloud] enabled = true needs an org_id".to_owned()));
            }
        }
        Ok(CloudConfig {
            enabled,
            endpoint,
            api_base,
            org_id,
            api_key_file: path(self.api_key_file, "api_key_file")?,
            api_key_keyring,
            ca_file: path(self.ca_file, "ca_file")?,
            server_public_key,
            heartbeat,
            buffer_events,
            policy_sync: self.policy_sync.unwrap_or_default(),
            honor_kill_switch: self.honor_kill_switch.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<CloudConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            cloud: RawCloud,
        }
        let wrapper: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        wrapper.cloud.validate(None).map_err(|(_, m)| m)
    }

    #[test]
    fn off_by_default_and_the_spec_defaults_apply() {
        let config = validate("[cloud]\n").unwrap();
        assert_eq!(config, CloudConfig::default());
        assert_eq!(config.heartbeat, Duration::from_secs(30));
        assert_eq!(config.buffer_events, 10_000);
    }

    #[test]
    fn plain_ws_is_for_loopback_only_and_the_rest_base_follows_the_endpoint() {
        let local = validate(
            "[cloud]\nenabled = true\nendpoint = \"ws://127.0.0.1:8080/v1/connect\"\norg_id = \"o\"\n",
        )
        .unwrap();
        assert_eq!(local.api_base.unwrap().as_str(), "http://127.0.0.1:8080/");
        let remote = validate(
            "[cloud]\nenabled = true\nendpoint = \"wss://cloud.example/v1/connect\"\norg_id = \"o\"\n",
        )
        .unwrap();
        assert_eq!(remote.api_base.unwrap().as_str(), "https://cloud.example/");
        let error = validate("[cloud]\nendpoint = \"ws://cloud.example/x\"\n").unwrap_err();
        assert!(
            error.contains("only allowed for a loopback host"),
            "{error}"
        );
        let error = validate("[cloud]\napi_base = \"http://cloud.example/\"\n").unwrap_err();
        assert!(
            error.contains("only allowed for a loopback host"),
            "{error}"
        );
    }

    #[test]
    fn enabled_needs_an_endpoint_and_an_org() {
        let error = validate("[cloud]\nenabled = true\norg_id = \"o\"\n").unwrap_err();
        assert!(error.contains("needs an endpoint"), "{error}");
        let error =
            validate("[cloud]\nenabled = true\nendpoint = \"wss://c.example/\"\n").unwrap_err();
        assert!(error.contains("needs an org_id"), "{error}");
    }

    #[test]
    fn the_key_is_in_a_file_in_the_keyring_or_only_in_the_environment() {
        let unset = validate("[cloud]\norg_id = \"acme\"\n").unwrap();
        assert_eq!(unset.key_source(), KeySource::Unset);
        let file = validate("[cloud]\norg_id = \"acme\"\napi_key_file = \"/k\"\n").unwrap();
        assert_eq!(
            file.key_source(),
            KeySource::File(std::path::Path::new("/k"))
        );
        let off = validate("[cloud]\norg_id = \"acme\"\napi_key_keyring = false\n").unwrap();
        assert_eq!(off.key_source(), KeySource::Unset);
        let error =
            validate("[cloud]\napi_key_file = \"/k\"\napi_key_keyring = true\n").unwrap_err();
        assert!(error.contains("two places for one key"), "{error}");
        let error = validate("[cloud]\napi_key_keyring = \"yes\"\n").unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
    }

    #[cfg(feature = "keyring")]
    #[test]
    fn with_the_keyring_built_the_account_is_the_org() {
        let config = validate("[cloud]\norg_id = \"acme\"\napi_key_keyring = true\n").unwrap();
        assert!(config.api_key_keyring);
        assert_eq!(config.key_source(), KeySource::Keyring { account: "acme" });
    }

    #[cfg(not(feature = "keyring"))]
    #[test]
    fn without_the_keyring_built_asking_for_it_is_refused_where_it_is_written() {
        #[derive(Deserialize)]
        struct Wrapper {
            cloud: RawCloud,
        }
        let text = "[cloud]\norg_id = \"acme\"\napi_key_keyring = true\n";
        let wrapper: Wrapper = toml::from_str(text).unwrap();
        let (span, message) = wrapper.cloud.validate(None).unwrap_err();
        assert_eq!(span.map(|s| &text[s]), Some("true"));
        assert!(
            message.starts_with("the keyring feature is not built into this atlasbridged"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_server_key_or_range_is_named() {
        let error = validate("[cloud]\nserver_public_key = \"abc\"\n").unwrap_err();
        assert!(error.contains("server_public_key"), "{error}");
        let error = validate("[cloud]\nheartbeat_s = 0\n").unwrap_err();
        assert!(
            error.contains("heartbeat_s must be between 1 and 3600"),
            "{error}"
        );
        let error = validate("[cloud]\npolicy_sync = \"sometimes\"\n").unwrap_err();
        assert!(error.contains("unknown variant"), "{error}");
    }
}
