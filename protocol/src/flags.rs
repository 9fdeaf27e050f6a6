//! Resolves the edition and every feature flag, remembering where each value came from.
//!
//! Edition: `--edition`, then `ATLASBRIDGE_EDITION`, then `edition` in the config, then
//! community. Flags: `ATLASBRIDGE_FEATURE_<NAME>`, then `[features]`, then the edition's
//! default. Bad values are errors (the daemon does not start); an unknown
//! `ATLASBRIDGE_FEATURE_*` variable is only a warning, since the environment is shared with
//! other tools and versions.

use std::collections::BTreeMap;

use crate::features::{
    Edition, EditionSource, FEATURE_ENV_PREFIX, Feature, FeatureList, FeatureState, FlagSource,
    UnknownEdition, parse_switch,
};
use crate::paths::{EDITION_ENV, Environment};

/// The edition or a flag could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum EditionError {
    /// `--edition` or `ATLASBRIDGE_EDITION` names no edition.
    #[error("{origin}: {source}")]
    UnknownEdition {
        /// Where the bad value came from.
        origin: EditionSource,
        /// The parse error, which names the valid editions.
        source: UnknownEdition,
    },
    /// A variable's value is not valid UTF-8.
    #[error("{variable} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        variable: String,
    },
    /// An `ATLASBRIDGE_FEATURE_*` value is not an on/off switch.
    #[error("{variable}='{value}' is not a switch: use 1/true/on/yes or 0/false/off/no")]
    BadSwitch {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
    },
}

/// What the config file says about editions and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFlags {
    /// `edition`.
    pub edition: Option<Edition>,
    /// `[features]`.
    pub features: BTreeMap<Feature, bool>,
}

/// The outcome of resolution: immutable, swapped as a whole on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSet {
    edition: Edition,
    edition_source: EditionSource,
    flags: BTreeMap<Feature, (bool, FlagSource)>,
    warnings: Vec<String>,
}

impl FeatureSet {
    /// Resolves from the command line's `--edition`, the environment and the config file's
    /// `edition` and `[features]`.
    pub fn resolve(
        cli_edition: Option<&str>,
        env: &impl Environment,
        config: &ConfigFlags,
    ) -> Result<Self, EditionError> {
        let (edition, edition_source) = if let Some(value) = cli_edition {
            (
                parse_edition(value, EditionSource::Flag)?,
                EditionSource::Flag,
            )
        } else if let Some(value) = env.non_empty(EDITION_ENV) {
            let value = value.into_string().map_err(|_| EditionError::NotUnicode {
                variable: EDITION_ENV.to_owned(),
            })?;
            (
                parse_edition(&value, EditionSource::Env)?,
                EditionSource::Env,
            )
        } else if let Some(edition) = config.edition {
            (edition, EditionSource::Config)
        } else {
            (Edition::Community, EditionSource::Default)
        };

        let mut flags = BTreeMap::new();
        for feature in Feature::ALL {
            let variable = feature.env_var();
            let resolved = if let Some(value) = env.non_empty(&variable) {
                let value = value.into_string().map_err(|_| EditionError::NotUnicode {
                    variable: variable.clone(),
                })?;
                let on = parse_switch(&value).ok_or_else(|| EditionError::BadSwitch {
                    variable,
                    value: value.clone(),
                })?;
                (on, FlagSource::Env)
            } else if let Some(on) = config.features.get(&feature) {
                (*on, FlagSource::Config)
            } else {
                (feature.default_in(edition), FlagSource::Edition)
            };
            flags.insert(feature, resolved);
        }

        let warnings = env
            .vars_with_prefix(FEATURE_ENV_PREFIX)
            .into_iter()
            .filter(|(name, _)| !Feature::ALL.iter().any(|f| f.env_var() == *name))
            .map(|(name, _)| {
                format!(
                    "ignoring {name}: no such feature (known: {})",
                    known_feature_names()
                )
            })
            .collect();

        Ok(Self {
            edition,
            edition_source,
            flags,
            warnings,
        })
    }

    /// The active edition.
    pub fn edition(&self) -> Edition {
        self.edition
    }

    /// Where the edition came from.
    pub fn edition_source(&self) -> EditionSource {
        self.edition_source
    }

    /// Whether `feature` is on.
    pub fn is_enabled(&self, feature: Feature) -> bool {
        self.flags.get(&feature).is_some_and(|(on, _)| *on)
    }

    /// Messages about ignored environment variables, for the log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Every flag with its value, as `features.list` returns it.
    pub fn list(&self) -> FeatureList {
        FeatureList {
            edition: self.edition,
            edition_source: self.edition_source,
            features: Feature::ALL
                .into_iter()
                .map(|feature| {
                    let (enabled, source) = self
                        .flags
                        .get(&feature)
                        .copied()
                        .unwrap_or((false, FlagSource::Edition));
                    FeatureState {
                        name: feature,
                        enabled,
                        enabled_from: feature.enabled_from(),
                        source,
                        description: feature.description().to_owned(),
                    }
                })
                .collect(),
        }
    }

    /// Every flag and whether it is on (for `hello`).
    pub fn enabled_map(&self) -> BTreeMap<Feature, bool> {
        self.flags.iter().map(|(f, (on, _))| (*f, *on)).collect()
    }
}

fn parse_edition(value: &str, origin: EditionSource) -> Result<Edition, EditionError> {
    value
        .parse()
        .map_err(|source| EditionError::UnknownEdition { origin, source })
}

fn known_feature_names() -> String {
    Feature::ALL
        .iter()
        .map(|f| f.env_var())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn flag(set: &FeatureSet, feature: Feature) -> (bool, FlagSource) {
        let state = set
            .list()
            .features
            .into_iter()
            .find(|s| s.name == feature)
            .unwrap();
        (state.enabled, state.source)
    }

    #[test]
    fn community_is_the_default_with_every_flag_off() {
        let set = FeatureSet::resolve(None, &env(&[]), &ConfigFlags::default()).unwrap();
        assert_eq!(
            (set.edition(), set.edition_source()),
            (Edition::Community, EditionSource::Default)
        );
        for feature in Feature::ALL {
            assert_eq!(flag(&set, feature), (false, FlagSource::Edition));
        }
    }

    #[test]
    fn edition_resolution_order_is_flag_env_config() {
        let config = ConfigFlags {
            edition: Some(Edition::Pro),
            ..ConfigFlags::default()
        };
        let e = env(&[(EDITION_ENV, "ENTERPRISE")]);
        let set = FeatureSet::resolve(Some("community"), &e, &config).unwrap();
        assert_eq!(
            (set.edition(), set.edition_source()),
            (Edition::Community, EditionSource::Flag)
        );
        let set = FeatureSet::resolve(None, &e, &config).unwrap();
        assert_eq!(
            (set.edition(), set.edition_source()),
            (Edition::Enterprise, EditionSource::Env)
        );
        let set = FeatureSet::resolve(None, &env(&[]), &config).unwrap();
        assert_eq!(
            (set.edition(), set.edition_source()),
            (Edition::Pro, EditionSource::Config)
        );
    }

    #[test]
    fn env_beats_config_beats_edition_per_flag() {
        let mut config = ConfigFlags::default();
        config.features.insert(Feature::Rbac, true);
        config.features.insert(Feature::PolicyPinning, false);
        let e = env(&[(EDITION_ENV, "pro"), ("ATLASBRIDGE_FEATURE_RBAC", "off")]);
        let set = FeatureSet::resolve(None, &e, &config).unwrap();
        assert_eq!(flag(&set, Feature::Rbac), (false, FlagSource::Env));
        assert_eq!(
            flag(&set, Feature::PolicyPinning),
            (false, FlagSource::Config)
        );
        assert_eq!(
            flag(&set, Feature::RiskClassifier),
            (true, FlagSource::Edition)
        );
        assert_eq!(
            flag(&set, Feature::CloudAuditStream),
            (false, FlagSource::Edition)
        );
    }

    #[test]
    fn bad_values_are_errors_that_say_where_they_came_from() {
        let e = FeatureSet::resolve(Some("gold"), &env(&[]), &ConfigFlags::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--edition flag: unknown edition 'gold': expected one of community, pro, enterprise"
        );
        let e = FeatureSet::resolve(
            None,
            &env(&[(EDITION_ENV, "Platinum")]),
            &ConfigFlags::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("ATLASBRIDGE_EDITION: unknown edition 'Platinum'")
        );
        let e = FeatureSet::resolve(
            None,
            &env(&[("ATLASBRIDGE_FEATURE_RBAC", "maybe")]),
            &ConfigFlags::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ATLASBRIDGE_FEATURE_RBAC='maybe' is not a switch: use 1/true/on/yes or 0/false/off/no"
        );
    }

    #[test]
    fn unknown_feature_variables_are_only_warnings() {
        let e = env(&[
            ("ATLASBRIDGE_FEATURE_TELEPORT", "on"),
            ("ATLASBRIDGE_FEATURE_RBAC", "on"),
        ]);
        let set = FeatureSet::resolve(None, &e, &ConfigFlags::default()).unwrap();
        assert_eq!(set.warnings().len(), 1);
        assert!(set.warnings()[0].starts_with("ignoring ATLASBRIDGE_FEATURE_TELEPORT"));
        assert!(set.is_enabled(Feature::Rbac));
    }
}
