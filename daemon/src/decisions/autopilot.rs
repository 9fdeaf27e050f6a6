//! The kill switch: RUNNING ↔ PAUSED, and either → STOPPED until the daemon restarts. While the
//! autopilot is not running every answer is `require_human`; the decision is still evaluated and
//! recorded, so the trace shows what the policy would have done.
//!
//! [`next`] is the whole state machine, pure. [`Autopilot`] holds the current state for the
//! decision service, which reads it on every decision without waiting; transitions are
//! serialised separately ([`Autopilot::serialise`]) so that the audit events of two concurrent
//! transitions are written in the order the transitions happened.

use std::sync::Mutex;

use atlasbridge_protocol::methods::AutopilotStatus;

/// The autopilot's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// The policy's answers are given.
    #[default]
    Running,
    /// Every answer is `require_human` until resumed.
    Paused,
    /// Every answer is `require_human` until the daemon restarts.
    Stopped,
}

impl State {
    /// The lowercase name, as the protocol and the audit log write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

/// What a person asks of the kill switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// RUNNING → PAUSED.
    Pause,
    /// PAUSED → RUNNING.
    Resume,
    /// RUNNING or PAUSED → STOPPED.
    Stop,
}

impl Command {
    /// The audit event of the transition this command causes.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Pause => "autopilot_paused",
            Self::Resume => "autopilot_resumed",
            Self::Stop => "autopilot_stopped",
        }
    }
}

/// A command the current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Only a restart leaves STOPPED: a stop is meant to hold even if someone resumes by mistake.
    #[error("the autopilot is stopped until the daemon restarts")]
    Stopped,
}

/// The state `command` leads to from `state`: `Ok(None)` when it changes nothing (pausing a
/// paused autopilot, resuming a running one, stopping a stopped one), so that repeating a
/// command is harmless and records nothing.
pub fn next(state: State, command: Command) -> Result<Option<State>, TransitionError> {
    match (state, command) {
        (State::Running, Command::Pause) => Ok(Some(State::Paused)),
        (State::Paused, Command::Resume) => Ok(Some(State::Running)),
        (State::Running | State::Paused, Command::Stop) => Ok(Some(State::Stopped)),
        (State::Paused, Command::Pause)
        | (State::Running, Command::Resume)
        | (State::Stopped, Command::Stop) => Ok(None),
        (State::Stopped, Command::Pause | Command::Resume) => Err(TransitionError::Stopped),
    }
}

/// The state and since when it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// When it began (RFC 3339).
    pub since: String,
    /// Who caused it; `None` for the state the daemon started in.
    pub changed_by: Option<String>,
}

impl Snapshot {
    /// As `autopilot.status` returns it.
    pub fn to_status(&self) -> AutopilotStatus {
        AutopilotStatus {
            state: self.state.name().to_owned(),
            since: self.since.clone(),
            changed_by: self.changed_by.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Autopilot {
    current: Mutex<Snapshot>,
    transitions: tokio::sync::Mutex<()>,
}

impl Default for Autopilot {
    /// Running since now: every daemon starts running, a stop lasts until the restart.
    fn default() -> Self {
        Self {
            current: Mutex::new(Snapshot {
                state: State::Running,
                since: crate::clock::now_rfc3339(),
                changed_by: None,
            }),
            transitions: tokio::sync::Mutex::new(()),
        }
    }
}

impl Autopilot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        // A poisoned lock only means a panic elsewhere while copying a small value: the snapshot
        // inside is still whole.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.lock().state
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// Held by whoever changes the state and records the change, for as long as both take.
    pub async fn serialise(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.transitions.lock().await
    }

    /// Where `command` would lead now, without changing anything.
    pub fn plan(&self, command: Command) -> Result<Option<State>, TransitionError> {
        next(self.state(), command)
    }

    /// Applies `command`: the new snapshot, or `None` when nothing changed.
    pub fn apply(
        &self,
        command: Command,
        by: &str,
        now: String,
    ) -> Result<Option<Snapshot>, TransitionError> {
        let mut current = self.lock();
        let Some(state) = next(current.state, command)? else {
            return Ok(None);
        };
        *current = Snapshot {
            state,
            since: now,
            changed_by: Some(by.to_owned()),
        };
        Ok(Some(current.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [State; 3] = [State::Running, State::Paused, State::Stopped];

    #[test]
    fn pause_and_resume_go_back_and_forth() {
        assert_eq!(
            next(State::Running, Command::Pause),
            Ok(Some(State::Paused))
        );
        assert_eq!(
            next(State::Paused, Command::Resume),
            Ok(Some(State::Running))
        );
    }

    #[test]
    fn pause_and_resume_are_idempotent() {
        assert_eq!(next(State::Paused, Command::Pause), Ok(None));
        assert_eq!(next(State::Running, Command::Resume), Ok(None));
    }

    #[test]
    fn stop_is_reachable_from_everywhere_and_final() {
        assert_eq!(
            next(State::Running, Command::Stop),
            Ok(Some(State::Stopped))
        );
        assert_eq!(next(State::Paused, Command::Stop), Ok(Some(State::Stopped)));
        assert_eq!(next(State::Stopped, Command::Stop), Ok(None));
        for command in [Command::Pause, Command::Resume] {
            assert_eq!(
                next(State::Stopped, command),
                Err(TransitionError::Stopped),
                "{command:?}"
            );
        }
        assert_eq!(
            TransitionError::Stopped.to_string(),
            "the autopilot is stopped until the daemon restarts"
        );
    }

    #[test]
    fn no_command_leaves_stopped_and_every_change_is_a_different_state() {
        for state in ALL {
            for command in [Command::Pause, Command::Resume, Command::Stop] {
                if let Ok(Some(to)) = next(state, command) {
                    assert_ne!(to, state);
                    assert_ne!(state, State::Stopped);
                }
            }
        }
    }

    #[test]
    fn the_holder_starts_running_and_records_who_changed_it() {
        let autopilot = Autopilot::default();
        let first = autopilot.snapshot();
        assert_eq!(
            (first.state, first.changed_by.clone()),
            (State::Running, None)
        );
        assert_eq!(first.to_status().state, "running");
        let paused = autopilot
            .apply(
                Command::Pause,
                "uid 7",
                "2026-01-01T00:00:00.000000Z".into(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(paused.state, State::Paused);
        assert_eq!(paused.changed_by.as_deref(), Some("uid 7"));
        assert_eq!(autopilot.state(), State::Paused);
        // A no-op keeps the snapshot, since and author included.
        assert_eq!(
            autopilot.apply(Command::Pause, "uid 8", "later".into()),
            Ok(None)
        );
        assert_eq!(autopilot.snapshot(), paused);
        assert_eq!(autopilot.plan(Command::Resume), Ok(Some(State::Running)));
        assert_eq!(autopilot.state(), State::Paused, "plan changes nothing");
        autopilot.apply(Command::Stop, "uid 7", "t".into()).unwrap();
        assert_eq!(
            autopilot.apply(Command::Resume, "uid 7", "t".into()),
            Err(TransitionError::Stopped)
        );
        assert_eq!(autopilot.snapshot().to_status().state, "stopped");
    }

    #[test]
    fn event_types_name_the_transition() {
        assert_eq!(Command::Pause.event_type(), "autopilot_paused");
        assert_eq!(Command::Resume.event_type(), "autopilot_resumed");
        assert_eq!(Command::Stop.event_type(), "autopilot_stopped");
    }
}
