//! What `cloud.status` reports: the uplink's state as its task last set it.

use std::sync::Mutex;

use atlasbridge_protocol::cloud::messages::Stream;
use atlasbridge_protocol::methods::{CloudStatusResult, CloudStreamStatus};

/// The uplink's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// `[cloud] enabled` is off, or the edition's flags do not allow the uplink.
    Disabled,
    /// Enabled, not connected, not trying right now.
    Disconnected,
    /// The first connection attempt is under way.
    Connecting,
    /// The handshake completed.
    Connected,
    /// Waiting to connect again after a failure.
    Reconnecting,
}

impl LinkState {
    /// The name `cloud status` shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// The uplink's shared status; the link task writes it, `cloud.status` reads it.
#[derive(Debug)]
pub struct CloudStatus {
    inner: Mutex<CloudStatusResult>,
}

impl CloudStatus {
    /// The status of an uplink that is not running.
    pub fn disabled() -> Self {
        Self {
            inner: Mutex::new(CloudStatusResult {
                enabled: false,
                state: LinkState::Disabled.name().to_owned(),
                reason: None,
                endpoint: None,
                runtime_id: None,
                connected_since: None,
                last_heartbeat_sent: None,
                last_heartbeat_acked: None,
                token_expires_at: None,
                clock_skew_s: None,
                trace: empty_stream(),
                audit: empty_stream(),
                policy_sync: "disabled".to_owned(),
                connections: 0,
                last_error: None,
            }),
        }
    }

    /// Changes the status under its lock.
    pub fn update(&self, change: impl FnOnce(&mut CloudStatusResult)) {
        change(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Sets the state, and the reason (cleared when `None`).
    pub fn set_state(&self, state: LinkState, reason: Option<&str>) {
        self.update(|s| {
            s.state = state.name().to_owned();
            s.reason = reason.map(str::to_owned);
            if state != LinkState::Connected {
                s.connected_since = None;
            }
        });
    }

    /// Records an error for `cloud status`.
    pub fn set_error(&self, error: &str) {
        self.update(|s| s.last_error = Some(error.to_owned()));
    }

    /// Sets the last seq of `stream` the cloud acknowledged.
    pub fn set_acked(&self, stream: Stream, acked_seq: Option<u64>) {
        self.update(|s| match stream {
            Stream::Trace => s.trace.acked_seq = acked_seq,
            Stream::Audit => s.audit.acked_seq = acked_seq,
        });
    }

    /// A copy for `cloud.status`, with the chains' current heads (the backlog grows while the
    /// link is down, when nothing else updates the status).
    pub fn snapshot(&self, trace_head: Option<u64>, audit_head: Option<u64>) -> CloudStatusResult {
        let mut status = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if status.enabled {
            for (progress, head) in [
                (&mut status.trace, trace_head),
                (&mut status.audit, audit_head),
            ] {
                progress.head_seq = head;
                progress.backlog = match (head, progress.acked_seq) {
                    (None, _) => 0,
                    (Some(head), None) => head + 1,
                    (Some(head), Some(acked)) => head.saturating_sub(acked),
                };
            }
        }
        status
    }
}

fn empty_stream() -> CloudStreamStatus {
    CloudStreamStatus {
        head_seq: None,
        acked_seq: None,
        backlog: 0,
    }
}
