//! `edition.get`, `features.list`.

use atlasbridge_protocol::features::{EditionInfo, FeatureList};

use crate::state::Daemon;

pub(super) fn edition(daemon: &Daemon) -> EditionInfo {
    let settings = daemon.settings();
    EditionInfo {
        edition: settings.features.edition(),
        source: settings.features.edition_source(),
        version: crate::VERSION.to_owned(),
    }
}

pub(super) fn list(daemon: &Daemon) -> FeatureList {
    daemon.settings().features.list()
}
