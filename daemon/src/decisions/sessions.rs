//! The session registry: an agent registers its session once (`session.start`) and the events of
//! the session inherit the fields it gave, so that an agent need not repeat its branch and tags
//! on every prompt, and `session_tag` rules see them.
//!
//! The registry lives in memory: a restarted daemon knows no session until the agents start
//! theirs again. It is bounded ([`MAX_SESSIONS`]) because every agent can register sessions and
//! the daemon's memory must not grow with what clients send.

use std::collections::HashMap;
use std::sync::Mutex;

use atlasbridge_protocol::methods::{
    EvaluateParams, RecordParams, SessionInfo, SessionStartParams,
};

/// Live sessions kept at most; a new one beyond is refused (-32005) until others end.
pub const MAX_SESSIONS: usize = 10_000;

/// Why a session did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The registry is full.
    #[error(
        "too many live sessions ({MAX_SESSIONS}): end finished ones with session.end, then retry"
    )]
    Full,
}

/// What a `session.start` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The session as registered now.
    pub session: SessionInfo,
    /// True when the session was live already and only its fields changed.
    pub renewed: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, SessionInfo>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionInfo>> {
        // A poisoned lock only means a panic elsewhere between two whole-value updates.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session, or updates a live one: each field given replaces the registered
    /// one, a field left out keeps it, and `started_at` and the decision count stay.
    pub fn start(&self, params: SessionStartParams, now: String) -> Result<Started, SessionError> {
        let mut live = self.lock();
        if let Some(session) = live.get_mut(&params.session_id) {
            let SessionStartParams {
                session_id: _,
                agent_id,
                tool_id,
                repo,
                branch,
                ci_status,
                session_tags,
            } = params;
            for (field, value) in [
                (&mut session.agent_id, agent_id),
                (&mut session.tool_id, tool_id),
                (&mut session.repo, repo),
                (&mut session.branch, branch),
                (&mut session.ci_status, ci_status),
            ] {
                if value.is_some() {
                    *field = value;
                }
            }
            if let Some(tags) = session_tags {
                session.session_tags = tags;
            }
            return Ok(Started {
                session: session.clone(),
                renewed: true,
            });
        }
        if live.len() >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        let session = SessionInfo {
            session_id: params.session_id,
            agent_id: params.agent_id,
            tool_id: params.tool_id,
            repo: params.repo,
            branch: params.branch,
            ci_status: params.ci_status,
            session_tags: params.session_tags.unwrap_or_default(),
            started_at: now,
            decisions: 0,
        };
        live.insert(session.session_id.clone(), session.clone());
        Ok(Started {
            session,
            renewed: false,
        })
    }

    /// Forgets a session: the session as it was, or `None` when it was not live.
    pub fn end(&self, session_id: &str) -> Option<SessionInfo> {
        self.lock().remove(session_id)
    }

    /// One live session.
    pub fn get(&self, session_id: &str) -> Option<SessionInfo> {
        self.lock().get(session_id).cloned()
    }

    /// Every live session, oldest first (ties by id, so the order is stable).
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut sessions: Vec<SessionInfo> = self.lock().values().cloned().collect();
        sessions
            .sort_by(|a, b| (&a.started_at, &a.session_id).cmp(&(&b.started_at, &b.session_id)));
        sessions
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is live.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Fills each field the event does not give itself from its registered session: the event's
    /// own values win, so an agent can still say that one prompt is on another branch.
    pub fn inherit(&self, event: &mut EvaluateParams) {
        self.fill(
            &event.session_id,
            [
                &mut event.agent_id,
                &mut event.tool_id,
                &mut event.repo,
                &mut event.branch,
                &mut event.ci_status,
            ],
            &mut event.session_tags,
        );
    }

    /// The same for a recorded decision: the trace entry gets the session's agent, branch and
    /// CI status when the record leaves them out.
    pub fn inherit_record(&self, record: &mut RecordParams) {
        self.fill(
            &record.session_id,
            [
                &mut record.agent_id,
                &mut record.tool_id,
                &mut record.repo,
                &mut record.branch,
                &mut record.ci_status,
            ],
            &mut record.session_tags,
        );
    }

    /// `fields` are agent, tool, repo, branch and CI status, in that order.
    fn fill(
        &self,
        session_id: &str,
        fields: [&mut Option<String>; 5],
        tags: &mut Option<Vec<String>>,
    ) {
        let live = self.lock();
        let Some(session) = live.get(session_id) else {
            return;
        };
        let registered = [
            &session.agent_id,
            &session.tool_id,
            &session.repo,
            &session.branch,
            &session.ci_status,
        ];
        for (field, registered) in fields.into_iter().zip(registered) {
            if field.is_none() {
                field.clone_from(registered);
            }
        }
        if tags.is_none() && !session.session_tags.is_empty() {
            *tags = Some(session.session_tags.clone());
        }
    }

    /// Counts one recorded decision of a live session (nothing for an unregistered one).
    pub fn count_decision(&self, session_id: &str) {
        if let Some(session) = self.lock().get_mut(session_id) {
            session.decisions = session.decisions.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: &str) -> SessionStartParams {
        SessionStartParams {
            session_id: id.to_owned(),
            ..SessionStartParams::default()
        }
    }

    fn event(session: &str) -> EvaluateParams {
        EvaluateParams {
            session_id: session.to_owned(),
            prompt_id: "p".to_owned(),
            prompt_type: "yes_no".to_owned(),
            prompt_text: String::new(),
            confidence: "high".to_owned(),
            agent_id: None,
            tool_id: None,
            repo: None,
            branch: None,
            ci_status: None,
            session_tags: None,
            idempotency_key: None,
            policy_hash: None,
        }
    }

    #[test]
    fn start_list_get_end() {
        let sessions = Sessions::default();
        assert!(sessions.is_empty());
        let started = sessions.start(start("b"), "2026-01-02".into()).unwrap();
        assert!(!started.renewed);
        assert_eq!(started.session.started_at, "2026-01-02");
        sessions.start(start("a"), "2026-01-01".into()).unwrap();
        assert_eq!(sessions.len(), 2);
        let ids: Vec<_> = sessions.list().into_iter().map(|s| s.session_id).collect();
        assert_eq!(ids, ["a", "b"], "oldest first");
        assert_eq!(sessions.get("a").unwrap().session_id, "a");
        assert!(sessions.get("c").is_none());
        assert_eq!(sessions.end("a").unwrap().session_id, "a");
        assert!(sessions.end("a").is_none(), "ended once");
        assert_eq!(sessions.len(), 1);
    }

    #[test]
    fn a_restart_updates_the_fields_given_and_keeps_the_rest() {
        let sessions = Sessions::default();
        let mut first = start("s");
        first.branch = Some("main".into());
        first.session_tags = Some(vec!["ci".into()]);
        first.agent_id = Some("agent-1".into());
        sessions.start(first, "t0".into()).unwrap();
        sessions.count_decision("s");
        let mut again = start("s");
        again.branch = Some("feature/x".into());
        let renewed = sessions.start(again, "t1".into()).unwrap();
        assert!(renewed.renewed);
        let session = renewed.session;
        assert_eq!(session.branch.as_deref(), Some("feature/x"));
        assert_eq!(session.agent_id.as_deref(), Some("agent-1"));
        assert_eq!(session.session_tags, ["ci"]);
        assert_eq!(session.started_at, "t0");
        assert_eq!(session.decisions, 1);
    }

    #[test]
    fn a_full_registry_refuses_new_sessions_but_not_restarts() {
        let sessions = Sessions::default();
        for i in 0..MAX_SESSIONS {
            sessions.start(start(&format!("s{i}")), "t".into()).unwrap();
        }
        assert_eq!(
            sessions.start(start("one-more"), "t".into()),
            Err(SessionError::Full)
        );
        assert!(sessions.start(start("s0"), "t".into()).unwrap().renewed);
        sessions.end("s1");
        assert!(sessions.start(start("one-more"), "t".into()).is_ok());
        assert_eq!(sessions.len(), MAX_SESSIONS);
    }

    #[test]
    fn events_inherit_what_they_do_not_give_and_their_own_values_win() {
        let sessions = Sessions::default();
        let params = SessionStartParams {
            session_id: "s".into(),
            agent_id: Some("agent".into()),
            tool_id: Some("claude_code".into()),
            repo: Some("/repo".into()),
            branch: Some("main".into()),
            ci_status: Some("passing".into()),
            session_tags: Some(vec!["ci".into()]),
        };
        sessions.start(params, "t".into()).unwrap();
        let mut bare = event("s");
        sessions.inherit(&mut bare);
        assert_eq!(bare.agent_id.as_deref(), Some("agent"));
        assert_eq!(bare.tool_id.as_deref(), Some("claude_code"));
        assert_eq!(bare.repo.as_deref(), Some("/repo"));
        assert_eq!(bare.branch.as_deref(), Some("main"));
        assert_eq!(bare.ci_status.as_deref(), Some("passing"));
        assert_eq!(bare.session_tags, Some(vec!["ci".to_owned()]));
        let mut own = event("s");
        own.branch = Some("hotfix".into());
        own.session_tags = Some(vec![]);
        sessions.inherit(&mut own);
        assert_eq!(own.branch.as_deref(), Some("hotfix"));
        assert_eq!(own.session_tags, Some(vec![]), "given, even empty: kept");
        assert_eq!(own.agent_id.as_deref(), Some("agent"));
        let mut other = event("unregistered");
        sessions.inherit(&mut other);
        assert_eq!(other, event("unregistered"));
    }

    #[test]
    fn decisions_are_counted_for_live_sessions_only() {
        let sessions = Sessions::default();
        sessions.start(start("s"), "t".into()).unwrap();
        sessions.count_decision("s");
        sessions.count_decision("s");
        sessions.count_decision("nobody");
        assert_eq!(sessions.get("s").unwrap().decisions, 2);
        assert!(sessions.get("nobody").is_none());
    }
}
