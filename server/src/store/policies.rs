//! The policy registry in PostgreSQL: policies and their numbered, signed versions; their
//! distributions to runtimes; and the policy and pins each runtime reports. Every function runs
//! inside the caller's org-scoped transaction, and every change is published to the live stream
//! in that same transaction (so it is heard only if it commits).
//!
//! Version numbers: a new version takes `policies.latest_version + 1` under that row's lock, so
//! concurrent uploads of one policy queue on the lock, and a rolled-back upload rolls its number
//! back with it: no gaps, no number given twice. Versions are never updated or deleted (the
//! server's role may only insert them).

use std::time::SystemTime;

use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use tokio_postgres::{Row, Transaction};
use tracing::warn;

use crate::db::DbError;
use crate::entry_columns::format_time;
use crate::live::{self, PublishError};
use crate::policy::report::PolicyReport;
use crate::policy::{sign_version, signer_name};

/// Who did something: a person, or a runtime (an upload by `atlasbridge cloud policy push`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user of the organisation.
    User(String),
    /// A runtime of the organisation.
    Runtime(String),
}

impl Actor {
    /// `user` or `runtime`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::Runtime(_) => "runtime",
        }
    }

    /// The user or runtime id.
    pub fn id(&self) -> &str {
        match self {
            Actor::User(id) | Actor::Runtime(id) => id,
        }
    }

    fn from_columns(kind: &str, id: String) -> Self {
        if kind == "runtime" {
            Actor::Runtime(id)
        } else {
            Actor::User(id)
        }
    }

    fn to_json(&self) -> Value {
        json!({"kind": self.kind(), "id": self.id()})
    }
}

/// A policy of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    /// Its name.
    pub name: String,
    /// For people.
    pub description: String,
    /// The newest version's number; 0 before the first.
    pub latest_version: i32,
    /// The newest version's `content_hash`.
    pub latest_hash: Option<String>,
    /// When it was created.
    pub created_at: SystemTime,
    /// By whom.
    pub created_by: Actor,
    /// When it was archived.
    pub archived_at: Option<SystemTime>,
    /// By whom (a user id).
    pub archived_by: Option<String>,
}

const POLICY_SELECT: &str = "SELECT p.name, p.description, p.latest_version, v.content_hash,
         p.created_at, p.created_by_kind, p.created_by, p.archived_at, p.archived_by
     FROM policies p
     LEFT JOIN policy_versions v
         ON v.org_id = p.org_id AND v.name = p.name AND v.version = p.latest_version";

fn policy_of(row: &Row) -> PolicyRow {
    PolicyRow {
        name: row.get(0),
        description: row.get(1),
        latest_version: row.get(2),
        latest_hash: row.get(3),
        created_at: row.get(4),
        created_by: Actor::from_columns(row.get(5), row.get(6)),
        archived_at: row.get(7),
        archived_by: row.get(8),
    }
}

/// A version of a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// The policy.
    pub name: String,
    /// From 1.
    pub version: i32,
    /// Its `policy_hash`.
    pub content_hash: String,
    /// The YAML as uploaded (`None` in lists).
    pub yaml: Option<String>,
    /// Who uploaded it.
    pub uploaded_by: Actor,
    /// When.
    pub uploaded_at: SystemTime,
    /// The exact string the server signed.
    pub signed_at: String,
    /// The server's signature.
    pub signature: String,
    /// The public key that made it.
    pub signer_key: String,
}

const VERSION_COLUMNS: &str = "name, version, content_hash, uploaded_by_kind, uploaded_by,
     uploaded_at, signed_at, signature, signer_key";

fn version_of(row: &Row, with_yaml: bool) -> VersionRow {
    VersionRow {
        name: row.get(0),
        version: row.get(1),
        content_hash: row.get(2),
        uploaded_by: Actor::from_columns(row.get(3), row.get(4)),
        uploaded_at: row.get(5),
        signed_at: row.get(6),
        signature: row.get(7),
        signer_key: row.get(8),
        yaml: with_yaml.then(|| row.get(9)),
    }
}

/// Publishes to the live stream inside `tx`. Only a database failure fails the transaction; an
/// event that cannot be published (too large) is logged and left out.
async fn publish(
    tx: &Transaction<'_>,
    org_id: &str,
    kind: &str,
    payload: Value,
) -> Result<(), DbError> {
    match live::publish(tx, org_id, kind, &payload).await {
        Ok(()) => Ok(()),
        Err(PublishError::Database(e)) => Err(DbError::Query(e)),
        Err(e) => {
            warn!(error = %e, "an event was left out of the live stream");
            Ok(())
        }
    }
}

/// The `policy` event of a change to the registry.
fn policy_event(change: &str, name: &str, by: &Actor, more: Value) -> Value {
    let mut payload = json!({"change": change, "name": name, "by": by.to_json()});
    if let (Some(members), Value::Object(more)) = (payload.as_object_mut(), more) {
        members.extend(more);
    }
    payload
}

/// Why a policy could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefused {
    /// A policy of this name exists (archived or not).
    Exists,
}

/// Creates a policy without versions.
pub async fn create_policy(
    tx: &Transaction<'_>,
    org_id: &str,
    name: &str,
    description: &str,
    by: &Actor,
) -> Result<Result<PolicyRow, CreateRefused>, DbError> {
    if !insert_policy(tx, org_id, name, description, by).await? {
        return Ok(Err(CreateRefused::Exists));
    }
    let row = policy(tx, name).await?;
    Ok(row.ok_or(CreateRefused::Exists))
}

/// Inserts the policy unless it exists; whether it did (and then publishes `created`).
async fn insert_policy(
    tx: &Transaction<'_>,
    org_id: &str,
    name: &str,
    description: &str,
    by: &Actor,
) -> Result<bool, DbError> {
    let inserted = tx
        .execute(
            "INSERT INTO policies (org_id, name, description, created_by_kind, created_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&org_id, &name, &description, &by.kind(), &by.id()],
        )
        .await?
        > 0;
    if inserted {
        publish(
            tx,
            org_id,
            live::kind::POLICY,
            policy_event("created", name, by, json!({})),
        )
        .await?;
    }
    Ok(inserted)
}

/// One policy.
pub async fn policy(tx: &Transaction<'_>, name: &str) -> Result<Option<PolicyRow>, DbError> {
    Ok(tx
        .query_opt(&format!("{POLICY_SELECT} WHERE p.name = $1"), &[&name])
        .await?
        .as_ref()
        .map(policy_of))
}

/// Policies in name order after `after`, at most `limit`; archived ones only when asked.
pub async fn list_policies(
    tx: &Transaction<'_>,
    include_archived: bool,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<PolicyRow>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .query(
            &format!(
                "{POLICY_SELECT} WHERE ($1 OR p.archived_at IS NULL)
                     AND ($2::text IS NULL OR p.name > $2)
                 ORDER BY p.name LIMIT $3"
            ),
            &[&include_archived, &after, &limit],
        )
        .await?
        .iter()
        .map(policy_of)
        .collect())
}

/// Archives a policy (idempotent); the policy, or `None` when there is none of that name.
pub async fn archive_policy(
    tx: &Transaction<'_>,
    org_id: &str,
    name: &str,
    by: &Actor,
) -> Result<Option<PolicyRow>, DbError> {
    let changed = tx
        .execute(
            "UPDATE policies SET archived_at = now(), archived_by = $2
             WHERE name = $1 AND archived_at IS NULL",
            &[&name, &by.id()],
        )
        .await?;
    if changed > 0 {
        publish(
            tx,
            org_id,
            live::kind::POLICY,
            policy_event("archived", name, by, json!({})),
        )
        .await?;
    }
    policy(tx, name).await
}

/// A version to add.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// The YAML, checked already.
    pub yaml: &'a str,
    /// Its `policy_hash`, computed by the server.
    pub content_hash: &'a str,
    /// Who uploads it.
    pub by: &'a Actor,
    /// A runtime's signature over the upload, kept as evidence.
    pub upload_signature: Option<&'a str>,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// A new version.
    Added(VersionRow),
    /// The newest version already has this content: nothing was added.
    Unchanged(VersionRow),
    /// The policy is archived: nothing was added.
    Archived,
}

/// Adds a version to policy `name`, creating the policy when there is none, signed with `key`.
pub async fn add_version(
    tx: &Transaction<'_>,
    org_id: &str,
    name: &str,
    new: NewVersion<'_>,
    key: &SigningKey,
) -> Result<Upload, DbError> {
    insert_policy(tx, org_id, name, "", new.by).await?;
    // The row lock orders concurrent uploads of this policy.
    let row = tx
        .query_one(
            "SELECT latest_version, archived_at IS NOT NULL FROM policies WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await?;
    let (latest, archived): (i32, bool) = (row.get(0), row.get(1));
    if archived {
        return Ok(Upload::Archived);
    }
    if latest > 0
        && let Some(current) = version(tx, name, latest).await?
        && current.content_hash == new.content_hash
    {
        return Ok(Upload::Unchanged(current));
    }
    let number: i32 = tx
        .query_one(
            "UPDATE policies SET latest_version = latest_version + 1 WHERE name = $1
             RETURNING latest_version",
            &[&name],
        )
        .await?
        .get(0);
    let signed_at = format_time(SystemTime::now());
    let signed = sign_version(key, name, number, new.content_hash, new.yaml, &signed_at);
    let signer = signer_name(key);
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO policy_versions (org_id, name, version, yaml, content_hash,
                     uploaded_by_kind, uploaded_by, upload_signature, signed_at, signature,
                     signer_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 RETURNING {VERSION_COLUMNS}, yaml"
            ),
            &[
                &org_id,
                &name,
                &number,
                &new.yaml,
                &new.content_hash,
                &new.by.kind(),
                &new.by.id(),
                &new.upload_signature,
                &signed_at,
                &signed.signature,
                &signer,
            ],
        )
        .await?;
    let added = version_of(&row, true);
    publish(
        tx,
        org_id,
        live::kind::POLICY,
        policy_event(
            "version_uploaded",
            name,
            new.by,
            json!({"version": number.to_string(), "content_hash": new.content_hash}),
        ),
    )
    .await?;
    Ok(Upload::Added(added))
}

/// One version, with its YAML.
pub async fn version(
    tx: &Transaction<'_>,
    name: &str,
    version: i32,
) -> Result<Option<VersionRow>, DbError> {
    Ok(tx
        .query_opt(
            &format!(
                "SELECT {VERSION_COLUMNS}, yaml FROM policy_versions WHERE name = $1 AND version = $2"
            ),
            &[&name, &version],
        )
        .await?
        .map(|row| version_of(&row, true)))
}

/// Versions of `name` below `before`, newest first, at most `limit` (without their YAML).
pub async fn versions(
    tx: &Transaction<'_>,
    name: &str,
    before: Option<i32>,
    limit: usize,
) -> Result<Vec<VersionRow>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .query(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM policy_versions
                 WHERE name = $1 AND ($2::integer IS NULL OR version < $2)
                 ORDER BY version DESC LIMIT $3"
            ),
            &[&name, &before, &limit],
        )
        .await?
        .iter()
        .map(|row| version_of(row, false))
        .collect())
}

/// Where a policy hash is in the registry: (content_hash, name, version).
pub async fn versions_with_hashes(
    tx: &Transaction<'_>,
    hashes: &[String],
) -> Result<Vec<(String, String, i32)>, DbError> {
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(tx
        .query(
            "SELECT content_hash, name, version FROM policy_versions
             WHERE content_hash = ANY($1) ORDER BY name, version",
            &[&hashes],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect())
}

/// Which runtimes a distribution is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every runtime of the organisation, present and future.
    All,
    /// These runtimes (registered ones).
    Runtimes(Vec<String>),
}

/// A distribution: one version, to all runtimes or to named ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributionRow {
    /// Its id (increasing: a runtime's policy is the newest distribution covering it).
    pub distribution_id: i64,
    /// The policy.
    pub name: String,
    /// The version.
    pub version: i32,
    /// The version's hash.
    pub content_hash: String,
    /// `all` or `runtimes`.
    pub target: String,
    /// The runtimes, for `runtimes` (empty when not read).
    pub runtime_ids: Vec<String>,
    /// When.
    pub distributed_at: SystemTime,
    /// By which user.
    pub distributed_by: String,
}

const DISTRIBUTION_COLUMNS: &str = "d.distribution_id, d.name, d.version, v.content_hash,
     d.target, d.distributed_at, d.distributed_by";
const DISTRIBUTION_JOIN: &str = "JOIN policy_versions v
     ON v.org_id = d.org_id AND v.name = d.name AND v.version = d.version";

fn distribution_of(row: &Row, runtime_ids: Vec<String>) -> DistributionRow {
    DistributionRow {
        distribution_id: row.get(0),
        name: row.get(1),
        version: row.get(2),
        content_hash: row.get(3),
        target: row.get(4),
        distributed_at: row.get(5),
        distributed_by: row.get(6),
        runtime_ids,
    }
}

/// What a distribution did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Recorded (and announced to the runtimes once the transaction commits).
    Made(DistributionRow),
    /// No such policy or version.
    NoSuchVersion,
    /// The policy is archived.
    Archived,
    /// These named runtimes are not registered in the organisation.
    UnknownRuntimes(Vec<String>),
}

/// Distributes version `version` of `name` to `target`.
pub async fn distribute(
    tx: &Transaction<'_>,
    org_id: &str,
    name: &str,
    version: i32,
    target: &Target,
    by: &Actor,
) -> Result<Distribution, DbError> {
    // Shared: distributions of one policy may run together, an archive waits for them.
    let Some(row) = tx
        .query_opt(
            "SELECT archived_at IS NOT NULL FROM policies WHERE name = $1 FOR SHARE",
            &[&name],
        )
        .await?
    else {
        return Ok(Distribution::NoSuchVersion);
    };
    if row.get::<_, bool>(0) {
        return Ok(Distribution::Archived);
    }
    let Some(content_hash) = tx
        .query_opt(
            "SELECT content_hash FROM policy_versions WHERE name = $1 AND version = $2",
            &[&name, &version],
        )
        .await?
        .map(|row| row.get::<_, String>(0))
    else {
        return Ok(Distribution::NoSuchVersion);
    };
    let (target_name, runtime_ids) = match target {
        Target::All => ("all", Vec::new()),
        Target::Runtimes(ids) => {
            let mut ids = ids.clone();
            ids.sort();
            ids.dedup();
            let known: Vec<String> = tx
                .query(
                    "SELECT runtime_id FROM runtimes WHERE runtime_id = ANY($1)",
                    &[&ids],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !known.contains(id))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Ok(Distribution::UnknownRuntimes(unknown));
            }
            ("runtimes", ids)
        }
    };
    let row = tx
        .query_one(
            "INSERT INTO policy_distributions (org_id, name, version, target, distributed_by)
             VALUES ($1, $2, $3, $4, $5) RETURNING distribution_id, distributed_at",
            &[&org_id, &name, &version, &target_name, &by.id()],
        )
        .await?;
    let (distribution_id, distributed_at): (i64, SystemTime) = (row.get(0), row.get(1));
    if !runtime_ids.is_empty() {
        tx.execute(
            "INSERT INTO policy_distribution_targets (org_id, distribution_id, runtime_id)
             SELECT $1, $2, unnest($3::text[])",
            &[&org_id, &distribution_id, &runtime_ids],
        )
        .await?;
    }
    // Runtimes learn of it through this event too (see `live`): they ask for their policy again.
    publish(
        tx,
        org_id,
        live::kind::POLICY,
        policy_event(
            live::DISTRIBUTED,
            name,
            by,
            json!({
                "version": version.to_string(),
                "content_hash": content_hash,
                "distribution_id": distribution_id,
                "target": target_name,
                "runtime_count": runtime_ids.len(),
            }),
        ),
    )
    .await?;
    Ok(Distribution::Made(DistributionRow {
        distribution_id,
        name: name.to_owned(),
        version,
        content_hash,
        target: target_name.to_owned(),
        runtime_ids,
        distributed_at,
        distributed_by: by.id().to_owned(),
    }))
}

/// Distributions of `name` older than `before`, newest first, at most `limit`, with their
/// named runtimes.
pub async fn distributions(
    tx: &Transaction<'_>,
    name: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<DistributionRow>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(tx
        .query(
            &format!(
                "SELECT {DISTRIBUTION_COLUMNS},
                     COALESCE((SELECT array_agg(t.runtime_id ORDER BY t.runtime_id)
                               FROM policy_distribution_targets t
                               WHERE t.org_id = d.org_id AND t.distribution_id = d.distribution_id),
                              '{{}}')
                 FROM policy_distributions d {DISTRIBUTION_JOIN}
                 WHERE d.name = $1 AND ($2::bigint IS NULL OR d.distribution_id < $2)
                 ORDER BY d.distribution_id DESC LIMIT $3"
            ),
            &[&name, &before, &limit],
        )
        .await?
        .iter()
        .map(|row| distribution_of(row, row.get(7)))
        .collect())
}

/// The newest distribution covering each runtime: to all, or naming it.
const NEWEST_DISTRIBUTION_FOR: &str = "GREATEST(
         (SELECT max(a.distribution_id) FROM policy_distributions a
          WHERE a.org_id = r.org_id AND a.target = 'all'),
         (SELECT max(t.distribution_id) FROM policy_distribution_targets t
          WHERE t.org_id = r.org_id AND t.runtime_id = r.runtime_id))";

/// The policy a runtime should run: the newest distribution covering it, if any. (What goes in
/// its `welcome` and its `policy_update_available`.)
pub async fn runtime_distribution(
    tx: &Transaction<'_>,
    runtime_id: &str,
) -> Result<Option<DistributionRow>, DbError> {
    Ok(tx
        .query_opt(
            &format!(
                "SELECT {DISTRIBUTION_COLUMNS}
                 FROM runtimes r
                 JOIN policy_distributions d
                     ON d.org_id = r.org_id AND d.distribution_id = {NEWEST_DISTRIBUTION_FOR}
                 {DISTRIBUTION_JOIN}
                 WHERE r.runtime_id = $1"
            ),
            &[&runtime_id],
        )
        .await?
        .map(|row| distribution_of(&row, Vec::new())))
}

/// What one runtime runs and should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePolicyRow {
    /// The runtime.
    pub runtime_id: String,
    /// The newest distribution covering it.
    pub distributed: Option<DistributionRow>,
    /// What it last reported loaded.
    pub loaded: Option<LoadedRow>,
    /// Its local pins, as last reported.
    pub pins: Vec<PinRow>,
}

/// A runtime's loaded policy, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRow {
    /// The YAML's `name`.
    pub name: String,
    /// `"0"` or `"1"`.
    pub policy_version: String,
    /// Its hash.
    pub policy_hash: String,
    /// `file` or `builtin`.
    pub source: String,
    /// As the runtime wrote it.
    pub loaded_at: String,
    /// When the report arrived.
    pub reported_at: SystemTime,
}

/// A runtime's local pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    /// `agent` or `session`.
    pub scope: String,
    /// The agent or session.
    pub scope_id: String,
    /// The pinned hash.
    pub policy_hash: String,
    /// When the report arrived.
    pub reported_at: SystemTime,
}

/// What runtimes run: in `runtime_id` order after `after`, at most `limit`; or only `only`.
pub async fn runtime_policies(
    tx: &Transaction<'_>,
    only: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<RuntimePolicyRow>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            &format!(
                "SELECT r.runtime_id, {DISTRIBUTION_COLUMNS},
                     l.name, l.policy_version, l.policy_hash, l.source, l.loaded_at, l.reported_at
                 FROM runtimes r
                 LEFT JOIN (policy_distributions d {DISTRIBUTION_JOIN})
                     ON d.org_id = r.org_id AND d.distribution_id = {NEWEST_DISTRIBUTION_FOR}
                 LEFT JOIN runtime_policies l
                     ON l.org_id = r.org_id AND l.runtime_id = r.runtime_id
                 WHERE ($1::text IS NULL OR r.runtime_id = $1)
                   AND ($2::text IS NULL OR r.runtime_id > $2)
                 ORDER BY r.runtime_id LIMIT $3"
            ),
            &[&only, &after, &limit],
        )
        .await?;
    let ids: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    let pins = tx
        .query(
            "SELECT runtime_id, scope, scope_id, policy_hash, reported_at FROM policy_pins
             WHERE runtime_id = ANY($1) ORDER BY runtime_id, scope, scope_id",
            &[&ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let runtime_id: String = row.get(0);
            let distributed = row
                .get::<_, Option<i64>>(1)
                .map(|distribution_id| DistributionRow {
                    distribution_id,
                    name: row.get(2),
                    version: row.get(3),
                    content_hash: row.get(4),
                    target: row.get(5),
                    distributed_at: row.get(6),
                    distributed_by: row.get(7),
                    runtime_ids: Vec::new(),
                });
            let loaded = row.get::<_, Option<String>>(8).map(|name| LoadedRow {
                name,
                policy_version: row.get(9),
                policy_hash: row.get(10),
                source: row.get(11),
                loaded_at: row.get(12),
                reported_at: row.get(13),
            });
            let pins = pins
                .iter()
                .filter(|pin| pin.get::<_, &str>(0) == runtime_id)
                .map(|pin| PinRow {
                    scope: pin.get(1),
                    scope_id: pin.get(2),
                    policy_hash: pin.get(3),
                    reported_at: pin.get(4),
                })
                .collect();
            RuntimePolicyRow {
                runtime_id,
                distributed,
                loaded,
                pins,
            }
        })
        .collect())
}

/// Records what a runtime reports it runs: its loaded policy, and its pins (which replace the
/// ones it reported before).
pub async fn record_report(
    tx: &Transaction<'_>,
    org_id: &str,
    runtime_id: &str,
    report: &PolicyReport,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO runtime_policies (org_id, runtime_id, name, policy_version, policy_hash,
             source, loaded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (org_id, runtime_id) DO UPDATE SET
             name = excluded.name, policy_version = excluded.policy_version,
             policy_hash = excluded.policy_hash, source = excluded.source,
             loaded_at = excluded.loaded_at, reported_at = now()",
        &[
            &org_id,
            &runtime_id,
            &report.name,
            &report.policy_version,
            &report.policy_hash,
            &report.source,
            &report.loaded_at,
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM policy_pins WHERE runtime_id = $1",
        &[&runtime_id],
    )
    .await?;
    if !report.pins.is_empty() {
        let scopes: Vec<&str> = report.pins.iter().map(|p| p.scope.as_str()).collect();
        let ids: Vec<&str> = report.pins.iter().map(|p| p.id.as_str()).collect();
        let hashes: Vec<&str> = report.pins.iter().map(|p| p.policy_hash.as_str()).collect();
        tx.execute(
            "INSERT INTO policy_pins (org_id, runtime_id, scope, scope_id, policy_hash)
             SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[])",
            &[&org_id, &runtime_id, &scopes, &ids, &hashes],
        )
        .await?;
    }
    publish(
        tx,
        org_id,
        live::kind::RUNTIME_POLICY,
        json!({
            "runtime_id": runtime_id,
            "name": report.name,
            "policy_hash": report.policy_hash,
            "source": report.source,
            "pins": report.pins.len(),
        }),
    )
    .await
}
