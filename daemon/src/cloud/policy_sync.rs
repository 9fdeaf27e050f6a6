//! Policies the cloud offers: fetched, verified, validated, then made active or kept pending.
//!
//! An offer (`policy_update_available`) is only advice. The daemon fetches the version, checks
//! the server's signature (when `server_public_key` is set) and that the policy's own hash is
//! the `content_hash` it was offered under, and validates it with the same loader as a local
//! file. A policy that fails any step never replaces the active one. One that passes is stored
//! under `<data_dir>/cloud/policies/<hash>.yaml`, then:
//! - with `policy_sync = "auto"` and no local `[policy] file`, it becomes active at once;
//! - otherwise it waits in the pending list until `atlasbridge policy accept HASH`.
//!
//! An accepted cloud policy is the daemon's policy from then on, across restarts, unless a
//! local `[policy] file` is configured: local precedence, always. Every step is an audit event.

use std::path::{Path, PathBuf};

use atlasbridge_protocol::cloud::messages::PolicyRef;
use atlasbridge_protocol::cloud::rest::PolicyVersion;
use atlasbridge_protocol::features::Feature;
use atlasbridge_protocol::methods::PendingPolicy;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};
use url::Url;

use super::auth::Token;
use super::config::PolicySync;
use super::status::CloudStatus;
use crate::audit::Actor;
use crate::state::Daemon;

/// What the daemon keeps about cloud policies, in `<data_dir>/cloud/policies.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBook {
    /// The hash of the accepted cloud policy, if one was.
    pub accepted: Option<String>,
    /// Verified versions waiting for `policy accept`.
    pub pending: Vec<PendingPolicy>,
    /// Offers that failed verification (the last [`REMEMBERED_REJECTIONS`]), so that a cloud
    /// that keeps naming one in its welcome does not get it fetched, refused and audited again
    /// on every connection.
    #[serde(default)]
    pub rejected: Vec<PolicyRef>,
}

/// Refused offers remembered at most.
const REMEMBERED_REJECTIONS: usize = 100;

fn cloud_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cloud")
}

fn book_path(data_dir: &Path) -> PathBuf {
    cloud_dir(data_dir).join("policies.json")
}

/// Where a verified cloud policy is kept.
pub fn policy_path(data_dir: &Path, hash: &str) -> PathBuf {
    cloud_dir(data_dir)
        .join("policies")
        .join(format!("{hash}.yaml"))
}

/// Reads the book; a missing file is an empty one.
pub fn read_book(data_dir: &Path) -> Result<PolicyBook, String> {
    let path = book_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PolicyBook::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn write_book(data_dir: &Path, book: &PolicyBook) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(book).map_err(|e| e.to_string())?;
    crate::files::write_atomic(&book_path(data_dir), &bytes)
        .map_err(|e| format!("cannot write {}: {e}", book_path(data_dir).display()))
}

/// The accepted cloud policy's file, when there is one (the daemon loads it when no local
/// `[policy] file` is configured).
pub fn accepted_policy_file(data_dir: &Path) -> Option<PathBuf> {
    let hash = read_book(data_dir).ok()?.accepted?;
    let path = policy_path(data_dir, &hash);
    path.exists().then_some(path)
}

/// Marks the stored version `hash` accepted and drops it from the pending list. Blocking.
pub fn accept(data_dir: &Path, hash: &str) -> Result<PathBuf, String> {
    let path = policy_path(data_dir, hash);
    let mut book = read_book(data_dir)?;
    let known = book.pending.iter().any(|p| p.content_hash == hash)
        || book.accepted.as_deref() == Some(hash);
    if !known || !path.exists() {
        return Err(format!(
            "no cloud policy {hash} is pending; `atlasbridge policy pending` lists them"
        ));
    }
    book.pending.retain(|p| p.content_hash != hash);
    book.accepted = Some(hash.to_owned());
    write_book(data_dir, &book)?;
    Ok(path)
}

/// Whether `offer` names a policy this daemon has not seen: not active, not accepted, not
/// pending, not refused before (a registry's versions do not change: a fixed policy comes as a
/// new version).
pub fn is_new(daemon: &Daemon, offer: &PolicyRef) -> bool {
    let active = daemon.stores().decisions.policy.active();
    if active.is_some_and(|a| a.hash == offer.content_hash) {
        return false;
    }
    match read_book(daemon.data_dir()) {
        Ok(book) => {
            book.accepted.as_deref() != Some(offer.content_hash.as_str())
                && !book
                    .pending
                    .iter()
                    .any(|p| p.content_hash == offer.content_hash)
                && !book.rejected.contains(offer)
        }
        Err(_) => true,
    }
}

/// What the link needs to fetch offered policies.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The REST base.
    pub api_base: Url,
    /// The current token.
    pub token: watch::Receiver<Option<Token>>,
    /// The key the cloud signs policies with.
    pub server_key: Option<VerifyingKey>,
    /// `manual` or `auto`.
    pub mode: PolicySync,
}

/// Handles one offer to the end; runs as its own task so the link keeps streaming.
pub async fn handle_offer(
    daemon: std::sync::Arc<Daemon>,
    status: std::sync::Arc<CloudStatus>,
    fetcher: Fetcher,
    offer: PolicyRef,
) {
    let audit = daemon.audit();
    let offered =
        json!({ "name": offer.name, "version": offer.version, "content_hash": offer.content_hash });
    let _ = audit
        .record("cloud_policy_offered", &Actor::Cloud, offered.clone())
        .await;
    if !daemon
        .settings()
        .features
        .is_enabled(Feature::CloudPolicySync)
    {
        info!(name = %offer.name, "ignoring a policy offer: the cloud_policy_sync flag is off");
        let _ = audit
            .record(
                "cloud_policy_ignored",
                &Actor::Cloud,
                json!({ "offer": offered, "reason": "the cloud_policy_sync flag is off" }),
            )
            .await;
        return;
    }
    let version = match fetch(&fetcher, &offer).await {
        Ok(version) => version,
        // The cloud may answer next time: nothing is remembered.
        Err(why) => return reject(&daemon, &status, &offer, why, false).await,
    };
    let path = match verify_offer(&daemon, &fetcher, &offer, version).await {
        Ok(path) => path,
        Err(why) => return reject(&daemon, &status, &offer, why, true).await,
    };
    let data_dir = daemon.data_dir().to_path_buf();
    let local_file = daemon.settings().config.policy.file.is_some();
    let pending = PendingPolicy {
        name: offer.name.clone(),
        version: offer.version.clone(),
        content_hash: offer.content_hash.clone(),
        received_at: crate::clock::now_rfc3339(),
    };
    let apply_now = fetcher.mode == PolicySync::Auto && !local_file;
    let recorded = tokio::task::spawn_blocking({
        let data_dir = data_dir.clone();
        let pending = pending.clone();
        move || -> Result<(), String> {
            let mut book = read_book(&data_dir)?;
            book.pending
                .retain(|p| p.content_hash != pending.content_hash);
            if apply_now {
                book.accepted = Some(pending.content_hash.clone());
            } else {
                book.pending.push(pending);
            }
            write_book(&data_dir, &book)
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(why) = recorded {
        return reject(&daemon, &status, &offer, why, false).await;
    }
    if apply_now {
        match crate::lifecycle::load_policy(&daemon, Some(path), Actor::Cloud).await {
            Ok(active) => {
                info!(name = %offer.name, hash = %active.hash, "applied a policy from the cloud");
                status.update(|s| s.policy_sync = "synced".to_owned());
                let _ = daemon
                    .audit()
                    .record("cloud_policy_applied", &Actor::Cloud, offered)
                    .await;
            }
            Err(errors) => {
                let why = format!(
                    "it did not load: {}",
                    errors.first().map(ToString::to_string).unwrap_or_default()
                );
                reject(&daemon, &status, &offer, why, true).await;
            }
        }
    } else {
        let reason = if local_file {
            "a local [policy] file takes precedence"
        } else {
            "policy_sync is manual"
        };
        info!(name = %offer.name, version = %offer.version, reason, "a policy from the cloud is pending; `atlasbridge policy accept` applies it");
        status.update(|s| s.policy_sync = "pending".to_owned());
        let _ = daemon
            .audit()
            .record(
                "cloud_policy_pending",
                &Actor::Cloud,
                json!({ "offer": offered, "reason": reason }),
            )
            .await;
    }
}

/// A refused offer: logged, shown in `cloud status`, audited; the active policy is untouched.
/// A `permanent` refusal (the version itself is bad) is remembered.
async fn reject(
    daemon: &Daemon,
    status: &CloudStatus,
    offer: &PolicyRef,
    why: String,
    permanent: bool,
) {
    if permanent {
        let data_dir = daemon.data_dir().to_path_buf();
        let refused = offer.clone();
        let remembered = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut book = read_book(&data_dir)?;
            if !book.rejected.contains(&refused) {
                book.rejected.push(refused);
            }
            let excess = book.rejected.len().saturating_sub(REMEMBERED_REJECTIONS);
            book.rejected.drain(..excess);
            write_book(&data_dir, &book)
        })
        .await;
        if !matches!(remembered, Ok(Ok(()))) {
            warn!("cannot remember a refused policy offer; it may be fetched again");
        }
    }
    warn!(name = %offer.name, version = %offer.version, why, "rejected a policy from the cloud");
    status.update(|s| s.policy_sync = "error".to_owned());
    status.set_error(&format!("policy {} v{}: {why}", offer.name, offer.version));
    let offered =
        json!({ "name": offer.name, "version": offer.version, "content_hash": offer.content_hash });
    let _ = daemon
        .audit()
        .record(
            "cloud_policy_rejected",
            &Actor::Cloud,
            json!({ "offer": offered, "reason": why }),
        )
        .await;
}

/// Fetches, verifies and stores the offered version; its stored path, or why it was refused.
async fn verify_offer(
    daemon: &Daemon,
    fetcher: &Fetcher,
    offer: &PolicyRef,
    version: PolicyVersion,
) -> Result<PathBuf, String> {
    if version.name != offer.name || version.version != offer.version {
        return Err(format!(
            "the cloud served {} v{} for an offer of {} v{}",
            version.name, version.version, offer.name, offer.version
        ));
    }
    if version.content_hash != offer.content_hash {
        return Err(format!(
            "the served content_hash {} is not the offered {}",
            version.content_hash, offer.content_hash
        ));
    }
    let loaded = super::registry::check_version(&version, fetcher.server_key.as_ref())?;
    let path = policy_path(daemon.data_dir(), &loaded.hash);
    let yaml = version.yaml.clone();
    let target = path.clone();
    tokio::task::spawn_blocking(move || crate::files::write_atomic(&target, yaml.as_bytes()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot store the policy: {e}"))?;
    Ok(path)
}

async fn fetch(fetcher: &Fetcher, offer: &PolicyRef) -> Result<PolicyVersion, String> {
    super::registry::get_json(
        fetcher,
        &format!(
            "v1/policies/{}/versions/{}",
            super::registry::encode_segment(&offer.name),
            super::registry::encode_segment(&offer.version)
        ),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepting_needs_a_pending_stored_version_and_moves_it_to_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "ab".repeat(32);
        assert!(
            accept(dir.path(), &hash)
                .unwrap_err()
                .contains("policy pending")
        );
        let book = PolicyBook {
            rejected: Vec::new(),
            accepted: None,
            pending: vec![PendingPolicy {
                name: "p".into(),
                version: "2".into(),
                content_hash: hash.clone(),
                received_at: "t".into(),
            }],
        };
        write_book(dir.path(), &book).unwrap();
        assert!(accept(dir.path(), &hash).is_err(), "the file is not stored");
        crate::files::write_atomic(&policy_path(dir.path(), &hash), b"x").unwrap();
        assert_eq!(
            accept(dir.path(), &hash).unwrap(),
            policy_path(dir.path(), &hash)
        );
        let book = read_book(dir.path()).unwrap();
        assert_eq!(book.accepted.as_deref(), Some(hash.as_str()));
        assert!(book.pending.is_empty());
        assert_eq!(
            accepted_policy_file(dir.path()),
            Some(policy_path(dir.path(), &hash))
        );
    }
}
