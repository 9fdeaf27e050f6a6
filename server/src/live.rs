//! The live stream's fan-out: what happens in one replica reaches the `/v1/live` subscribers of
//! every replica, through PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! - [`publish`] queues an event with `pg_notify` **inside the caller's transaction**:
//!   PostgreSQL delivers it only when that transaction commits, so no subscriber ever hears of
//!   a decision that was rolled back, and events arrive in commit order.
//! - Each replica keeps **one** listening connection ([`listen`]), outside the pool, and hands
//!   what arrives to the [`LiveHub`], which passes each event to its organisation's subscribers
//!   only.
//! - A notification's payload must stay under PostgreSQL's 8000-byte limit: events are packed
//!   into notifications of at most [`MAX_NOTIFICATION_BYTES`], and one event that alone exceeds
//!   it is refused ([`PublishError::TooLarge`]) — callers publish summaries, never whole bodies.
//! - Memory is bounded per organisation: a broadcast ring of [`EVENTS_PER_ORG`] events. A
//!   subscriber that falls further behind than that is dropped (it reconnects and refetches over
//!   REST) instead of the server buffering for it without end.
//!
//! - Runtimes hear of distributions through the same notifications: a control channel
//!   [`LiveHub::watch_distributions`] of its organisation, and each `policy` event with change
//!   [`DISTRIBUTED`] (or a listening connection that came up or back, before which one may
//!   have been missed) wakes it to read its policy again from the database. A `watch` never lags: however
//!   many distributions arrive while a channel is busy, it reads once, and reads the newest.
//!
//! Why not Redis: it would be a second piece of infrastructure to run, secure and keep
//! available for every self-hosted installation, and its publish is not transactional — an
//! event could announce data that then rolled back, or be lost between COMMIT and PUBLISH.
//! LISTEN/NOTIFY comes with the database we already need and commits with the data. Its limits
//! (payload size; a notification queue shared by the cluster; a lock taken at commit by
//! notifying transactions) are met by batching a whole ingested batch into few notifications.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_postgres::{AsyncMessage, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::pg_target::PgTarget;

/// The PostgreSQL channel.
pub const CHANNEL: &str = "atlasbridge_live";

/// Bytes a notification's payload may have (PostgreSQL refuses 8000 and more).
pub const MAX_NOTIFICATION_BYTES: usize = 7900;

/// Events kept per organisation for subscribers that are behind.
pub const EVENTS_PER_ORG: usize = 256;

/// Event kinds the server publishes itself.
pub mod kind {
    /// A decision was stored (its summary).
    pub const DECISION: &str = "decision";
    /// A runtime connected, disconnected or was flagged.
    pub const RUNTIME_STATUS: &str = "runtime_status";
    /// A chain's status changed (continuous, gap, broken).
    pub const CHAIN_STATUS: &str = "chain_status";
    /// Sent to subscribers by their replica after its listening connection was re-established:
    /// events may have been missed, refetch.
    pub const RESYNC: &str = "resync";
    /// The first frame of a subscription: events flow from here on.
    pub const SUBSCRIBED: &str = "subscribed";
    /// The policy registry changed: `change` is `created`, `version_uploaded`, `archived` or
    /// `distributed`.
    pub const POLICY: &str = "policy";
    /// A runtime reported the policy it loaded and its pins.
    pub const RUNTIME_POLICY: &str = "runtime_policy";
    /// A runtime reported a session started or ended: `change` is `started` or `ended`.
    pub const SESSION: &str = "session";
    /// A runtime reported a decision that needs a human (`require_human`).
    pub const ESCALATION: &str = "escalation";
}

/// The `change` of a `policy` event that sends a version to runtimes.
pub const DISTRIBUTED: &str = "distributed";

/// Whether `event` sends a policy to runtimes.
fn is_distribution(event: &LiveEvent) -> bool {
    event.kind == kind::POLICY
        && event.payload.get("change").and_then(Value::as_str) == Some(DISTRIBUTED)
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The kind is not a short lower-case name.
    #[error("event kind {0:?} is not [a-z_]{{1,32}}")]
    BadKind(String),
    /// One event alone is too large for a notification.
    #[error("a {kind} event of {bytes} bytes exceeds the {MAX_NOTIFICATION_BYTES}-byte limit")]
    TooLarge {
        /// Its kind.
        kind: String,
        /// Its size.
        bytes: usize,
    },
    /// The database refused.
    #[error("cannot notify: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// One event, as subscribers receive it (a text frame each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    /// What happened.
    pub kind: String,
    /// Its summary.
    pub payload: Value,
}

/// What one notification carries.
#[derive(Debug, Serialize, Deserialize)]
struct Notification {
    org: String,
    events: Vec<LiveEvent>,
}

fn valid_kind(kind: &str) -> bool {
    (1..=32).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// Publishes one event to `org_id`'s subscribers on every replica, when `tx` commits.
pub async fn publish(
    tx: &Transaction<'_>,
    org_id: &str,
    kind: &str,
    payload: &Value,
) -> Result<(), PublishError> {
    publish_all(
        tx,
        org_id,
        vec![LiveEvent {
            kind: kind.to_owned(),
            payload: payload.clone(),
        }],
    )
    .await
}

/// Publishes several events (in order) in as few notifications as the size limit allows.
pub async fn publish_all(
    tx: &Transaction<'_>,
    org_id: &str,
    events: Vec<LiveEvent>,
) -> Result<(), PublishError> {
    for notification in pack(org_id, events)? {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &notification])
            .await?;
    }
    Ok(())
}

/// The notification payloads for `events`, each under the limit.
fn pack(org_id: &str, events: Vec<LiveEvent>) -> Result<Vec<String>, PublishError> {
    let empty = |events| Notification {
        org: org_id.to_owned(),
        events,
    };
    // `{"org":"…","events":[]}` plus a comma per event.
    let overhead = serde_json::to_string(&empty(Vec::new()))
        .map(|s| s.len())
        .unwrap_or(0);
    let mut payloads = Vec::new();
    let mut current: Vec<LiveEvent> = Vec::new();
    let mut current_bytes = overhead;
    for event in events {
        if !valid_kind(&event.kind) {
            return Err(PublishError::BadKind(event.kind));
        }
        let bytes = serde_json::to_string(&event).map(|s| s.len()).unwrap_or(0) + 1;
        if overhead + bytes > MAX_NOTIFICATION_BYTES {
            return Err(PublishError::TooLarge {
                kind: event.kind,
                bytes,
            });
        }
        if current_bytes + bytes > MAX_NOTIFICATION_BYTES {
            payloads.push(std::mem::take(&mut current));
            current_bytes = overhead;
        }
        current_bytes += bytes;
        current.push(event);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    Ok(payloads
        .into_iter()
        .filter_map(|events| serde_json::to_string(&empty(events)).ok())
        .collect())
}

/// A subscriber's view: frames (JSON text of a [`LiveEvent`]) of its organisation.
pub type Subscription = broadcast::Receiver<Arc<str>>;

/// This replica's subscribers, by organisation.
#[derive(Debug)]
pub struct LiveHub {
    orgs: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    /// Per organisation with connected runtimes: bumped when a distribution may have happened.
    distributions: Mutex<HashMap<String, watch::Sender<u64>>>,
    listening: watch::Sender<bool>,
}

/// Wakes a runtime's control channel when its organisation distributed a policy (see
/// [`LiveHub::watch_distributions`]).
pub type DistributionWatch = watch::Receiver<u64>;

impl Default for LiveHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveHub {
    /// A hub with no subscribers, not listening yet.
    pub fn new() -> Self {
        Self {
            orgs: Mutex::new(HashMap::new()),
            distributions: Mutex::new(HashMap::new()),
            listening: watch::Sender::new(false),
        }
    }

    /// Watches `org_id`'s distributions: `changed()` resolves after a distribution committed
    /// (on any replica), or after this replica's listening connection came back (one may have
    /// been missed). The watcher then reads its policy from the database.
    pub fn watch_distributions(&self, org_id: &str) -> DistributionWatch {
        let mut watches = self
            .distributions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Organisations whose runtimes all left are pruned here, so the map stays small.
        watches.retain(|_, sender| sender.receiver_count() > 0);
        watches
            .entry(org_id.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    fn wake_distribution_watchers(&self, org_id: Option<&str>) {
        let watches = self
            .distributions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (org, sender) in watches.iter() {
            if org_id.is_none_or(|wanted| wanted == org) {
                sender.send_modify(|generation| *generation = generation.wrapping_add(1));
            }
        }
    }

    /// Subscribes to `org_id`'s events.
    pub fn subscribe(&self, org_id: &str) -> Subscription {
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        orgs.entry(org_id.to_owned())
            .or_insert_with(|| broadcast::channel(EVENTS_PER_ORG).0)
            .subscribe()
    }

    /// Waits until the listening connection is up (or `limit` passed): whether it is.
    pub async fn wait_listening(&self, limit: Duration) -> bool {
        let mut listening = self.listening.subscribe();
        tokio::time::timeout(limit, listening.wait_for(|up| *up))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Hands one notification's events to the subscribers of its organisation.
    fn dispatch(&self, payload: &str) {
        let notification: Notification = match serde_json::from_str(payload) {
            Ok(notification) => notification,
            Err(e) => {
                warn!(error = %e, "ignoring a malformed live notification");
                return;
            }
        };
        if notification.events.iter().any(is_distribution) {
            self.wake_distribution_watchers(Some(&notification.org));
        }
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = orgs.get(&notification.org) else {
            return;
        };
        if sender.receiver_count() == 0 {
            orgs.remove(&notification.org);
            return;
        }
        for event in notification.events {
            if let Ok(text) = serde_json::to_string(&event) {
                // No receiver left is not an error: the org is pruned at its next event.
                let _ = sender.send(text.into());
            }
        }
    }

    /// Tells every subscriber of this replica that events may have been missed, and every
    /// runtime to read its policy again.
    fn resync_all(&self) {
        self.wake_distribution_watchers(None);
        let text: Arc<str> = serde_json::to_string(&LiveEvent {
            kind: kind::RESYNC.to_owned(),
            payload: Value::Object(serde_json::Map::new()),
        })
        .unwrap_or_default()
        .into();
        let mut orgs = self.orgs.lock().unwrap_or_else(PoisonError::into_inner);
        orgs.retain(|_, sender| sender.send(Arc::clone(&text)).is_ok());
    }
}

/// Longest pause between attempts to re-establish the listening connection.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(30);

/// Keeps this replica's one listening connection (to `target`, the app role) until `shutdown`,
/// re-establishing it with backoff when it drops.
pub async fn listen(hub: Arc<LiveHub>, target: PgTarget, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(500);
    let mut first = true;
    while !shutdown.is_cancelled() {
        tokio::select! {
            () = shutdown.cancelled() => break,
            ended = listen_once(&hub, &target, first) => {
                hub.listening.send_replace(false);
                match ended {
                    Ok(()) => {
                        warn!("the live listening connection ended; reconnecting");
                        pause = Duration::from_millis(500);
                    }
                    Err(e) => warn!(error = %e, "the live listening connection failed; retrying"),
                }
            }
        }
        first = false;
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
    hub.listening.send_replace(false);
}

/// One listening connection, until it ends.
async fn listen_once(
    hub: &Arc<LiveHub>,
    target: &PgTarget,
    first: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = target.connect().await?;
    // The connection yields notifications only to whoever polls it: forward them to the hub.
    let forwarder_hub = Arc::clone(hub);
    let forwarder = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    debug!(bytes = notification.payload().len(), "live notification");
                    forwarder_hub.dispatch(notification.payload());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    hub.listening.send_replace(true);
    if first {
        info!("listening for live events");
        // Runtimes that connected before this replica listened were told the policy of that
        // moment; a distribution since then reached no one here.
        hub.wake_distribution_watchers(None);
    } else {
        info!("listening for live events again");
        hub.resync_all();
    }
    let ended = forwarder.await;
    drop(client);
    match ended {
        Ok(result) => result,
        Err(e) => {
            warn!(error = %e, "the live forwarder stopped");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, bytes: usize) -> LiveEvent {
        LiveEvent {
            kind: kind.to_owned(),
            payload: json!({"text": "x".repeat(bytes)}),
        }
    }

    #[test]
    fn events_are_packed_under_the_limit_in_order_and_oversized_ones_refused() {
        let events: Vec<LiveEvent> = (0..40).map(|_| event("decision", 700)).collect();
        let payloads = pack("org-a", events.clone()).unwrap();
        assert!(payloads.len() > 1);
        let mut unpacked = Vec::new();
        for payload in &payloads {
            assert!(payload.len() < MAX_NOTIFICATION_BYTES, "{}", payload.len());
            let notification: Notification = serde_json::from_str(payload).unwrap();
            assert_eq!(notification.org, "org-a");
            unpacked.extend(notification.events);
        }
        assert_eq!(unpacked, events);
        assert!(matches!(
            pack("org-a", vec![event("decision", 8000)]),
            Err(PublishError::TooLarge { .. })
        ));
        assert!(matches!(
            pack("org-a", vec![event("Decision!", 1)]),
            Err(PublishError::BadKind(_))
        ));
    }

    #[tokio::test]
    async fn distributions_wake_the_runtimes_of_their_org_only() {
        let hub = LiveHub::new();
        let mut a = hub.watch_distributions("org-a");
        let b = hub.watch_distributions("org-b");
        let distributed = LiveEvent {
            kind: kind::POLICY.to_owned(),
            payload: json!({"change": DISTRIBUTED, "name": "p"}),
        };
        let uploaded = LiveEvent {
            kind: kind::POLICY.to_owned(),
            payload: json!({"change": "version_uploaded", "name": "p"}),
        };
        for payload in pack("org-a", vec![uploaded]).unwrap() {
            hub.dispatch(&payload);
        }
        assert!(!a.has_changed().unwrap());
        // Twice before the watcher looks: it wakes once.
        for _ in 0..2 {
            for payload in pack("org-a", vec![distributed.clone()]).unwrap() {
                hub.dispatch(&payload);
            }
        }
        assert!(a.has_changed().unwrap());
        a.mark_unchanged();
        assert!(!b.has_changed().unwrap());
        hub.resync_all();
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        drop(b);
        let _c = hub.watch_distributions("org-c");
        let watched: Vec<String> = hub.distributions.lock().unwrap().keys().cloned().collect();
        assert!(!watched.contains(&"org-b".to_owned()), "{watched:?}");
    }

    #[tokio::test]
    async fn a_hub_delivers_to_the_events_org_only_and_bounds_what_it_keeps() {
        let hub = LiveHub::new();
        let mut a = hub.subscribe("org-a");
        let mut b = hub.subscribe("org-b");
        for payload in pack("org-a", vec![event("decision", 1)]).unwrap() {
            hub.dispatch(&payload);
        }
        let got: LiveEvent = serde_json::from_str(&a.recv().await.unwrap()).unwrap();
        assert_eq!(got.kind, "decision");
        assert!(matches!(
            b.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        // A subscriber that reads nothing: the hub keeps a bounded ring, then it lags.
        for _ in 0..EVENTS_PER_ORG + 10 {
            for payload in pack("org-a", vec![event("decision", 1)]).unwrap() {
                hub.dispatch(&payload);
            }
        }
        assert!(matches!(
            a.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
