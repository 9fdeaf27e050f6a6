//! `hello`, `daemon.status`, `daemon.shutdown`.

use atlasbridge_protocol::methods::{
    CloudSummary, DaemonStatus, HelloParams, HelloResult, ShutdownResult, UnsupportedProtocolData,
};
use atlasbridge_protocol::{ErrorCode, ErrorObject, PROTOCOL_VERSION};
use tracing::info;

use crate::ipc::peer::Caller;
use crate::state::Daemon;

pub(super) fn hello(
    daemon: &Daemon,
    caller: &Caller,
    params: HelloParams,
) -> Result<HelloResult, ErrorObject> {
    if params.protocol != PROTOCOL_VERSION {
        let data = UnsupportedProtocolData {
            supported: vec![PROTOCOL_VERSION],
        };
        return Err(ErrorObject::new(
            ErrorCode::UnsupportedProtocol,
            format!(
                "protocol {} is not supported; this daemon speaks protocol {PROTOCOL_VERSION}",
                params.protocol
            ),
        )
        .with_data(serde_json::to_value(data).unwrap_or_default()));
    }
    let settings = daemon.settings();
    Ok(HelloResult {
        protocol: PROTOCOL_VERSION,
        daemon: format!("atlasbridged {}", crate::VERSION),
        edition: settings.features.edition(),
        features: settings.features.enabled_map(),
        role: caller.role,
    })
}

pub(super) fn status(daemon: &Daemon) -> DaemonStatus {
    let settings = daemon.settings();
    DaemonStatus {
        pid: std::process::id(),
        version: crate::VERSION.to_owned(),
        protocol: PROTOCOL_VERSION,
        uptime_s: daemon.uptime_s(),
        socket: daemon.socket().display().to_string(),
        data_dir: daemon.data_dir().display().to_string(),
        config_file: settings
            .config_file
            .as_ref()
            .map(|p| p.display().to_string()),
        edition: settings.features.edition(),
        connections: daemon.connections(),
        // The cloud link is off unless configured; with it off the daemon opens no network socket.
        cloud: CloudSummary {
            state: "disabled".to_owned(),
        },
    }
}

pub(super) fn shutdown(caller: &Caller) -> ShutdownResult {
    info!(uid = ?caller.uid, pid = ?caller.pid, "shutdown requested over the socket");
    ShutdownResult {
        shutting_down: true,
    }
}
