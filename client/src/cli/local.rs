//! What the CLI works out on its own when the daemon is not there to ask: the data directory
//! and the feature flags, resolved exactly as the daemon resolves them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use atlasbridge_protocol::features::{Edition, Feature};
use atlasbridge_protocol::flags::{ConfigFlags, FeatureSet};
use atlasbridge_protocol::paths::{self, ProcessEnvironment};
use serde::Deserialize;

use super::{CliError, Context};
use crate::blocking;

/// The config keys the CLI needs; the daemon validates the whole file.
#[derive(Deserialize, Default)]
struct LenientConfig {
    edition: Option<String>,
    #[serde(default)]
    features: BTreeMap<String, bool>,
}

fn config_flags() -> Result<ConfigFlags, CliError> {
    let location = paths::config_file(None, &ProcessEnvironment)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let text = match std::fs::read_to_string(&location.path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !location.explicit => {
            return Ok(ConfigFlags::default());
        }
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read {}: {e}",
                location.path.display()
            )));
        }
    };
    let raw: LenientConfig = toml::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{}: {}", location.path.display(), e.message())))?;
    let edition = raw
        .edition
        .map(|e| e.parse::<Edition>())
        .transpose()
        .map_err(|e| CliError::Failed(format!("{}: edition: {e}", location.path.display())))?;
    let features = raw
        .features
        .into_iter()
        .filter_map(|(name, on)| Feature::from_name(&name).map(|f| (f, on)))
        .collect();
    Ok(ConfigFlags { edition, features })
}

/// A client with a short timeout, if the daemon answers at all.
fn quick_client(ctx: &Context) -> Option<blocking::Client> {
    let mut client = blocking::Client::connect(&ctx.socket).ok()?;
    client
        .set_timeout(Duration::from_secs(2).min(ctx.timeout))
        .ok()?;
    Some(client)
}

/// Whether `feature` is on: the running daemon's answer, else the local resolution.
pub(crate) fn feature_enabled(ctx: &Context, feature: Feature) -> Result<bool, CliError> {
    if let Some(mut client) = quick_client(ctx)
        && let Ok(list) = client.features()
    {
        return Ok(list.features.iter().any(|f| f.name == feature && f.enabled));
    }
    let set = FeatureSet::resolve(None, &ProcessEnvironment, &config_flags()?)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(set.is_enabled(feature))
}

/// Exit 3 with the sentence of the protocol unless `feature` is on.
pub(crate) fn require(ctx: &Context, feature: Feature) -> Result<(), CliError> {
    if feature_enabled(ctx, feature)? {
        Ok(())
    } else {
        Err(CliError::FeatureDisabled(feature))
    }
}

/// The daemon's data directory: the running daemon's, else `ATLASBRIDGE_DATA_DIR` or the
/// per-user default.
pub(crate) fn data_dir(ctx: &Context) -> Result<PathBuf, CliError> {
    if let Some(mut client) = quick_client(ctx)
        && let Ok(status) = client.status()
    {
        return Ok(PathBuf::from(status.data_dir));
    }
    paths::data_dir(None, &ProcessEnvironment).map_err(|e| CliError::Failed(e.to_string()))
}
