//! What past decisions constrain: answers to idempotency keys (a repeat gets the first answer and
//! appends nothing) and the auto-replies each session has had per rule (`max_auto_replies`).
//!
//! Both are rebuilt from the trace at start, so they survive a restart. Answers are kept for the
//! last [`REMEMBERED_ANSWERS`] keys: an agent repeats a request within seconds, not after a
//! hundred thousand other decisions, and the daemon's memory must not grow with the trace.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use atlasbridge_protocol::methods::EvaluateResult;
use atlasbridge_protocol::trace::ChainKind;
use tokio::sync::Notify;

/// Idempotency answers kept.
pub const REMEMBERED_ANSWERS: usize = 100_000;

type Key = (String, String);
type Answer = Arc<EvaluateResult>;

#[derive(Debug)]
enum Slot {
    Done(Answer),
    /// Being decided by another request.
    Pending,
}

#[derive(Debug, Default)]
struct Inner {
    answers: HashMap<Key, Slot>,
    order: VecDeque<Key>,
    auto_replies: HashMap<Key, u32>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Memory {
    inner: Mutex<Inner>,
    /// Woken whenever a pending key is answered or freed. One for all keys: a concurrent repeat
    /// is rare, and a per-decision channel cost every decision an allocation.
    changed: Notify,
}

/// The outcome of claiming a key.
#[derive(Debug)]
pub enum Claim<'a> {
    /// Answered before.
    Answered(Answer),
    /// Another request with this key is being decided: wait for [`Memory::changed`] (enabled
    /// before claiming) and claim again.
    Busy,
    /// This request decides; the ticket records the answer (or frees the key when dropped).
    Mine(Ticket<'a>),
}

/// The right to answer one key. Dropped without an answer (the request failed, or its task
/// died), it frees the key, so that a repeat never waits for a decision that will not come.
#[derive(Debug)]
pub struct Ticket<'a> {
    memory: &'a Memory,
    key: Option<Key>,
}

impl Ticket<'_> {
    /// Records the answer.
    pub fn answer(mut self, answer: Answer) {
        if let Some(key) = self.key.take() {
            self.memory.lock().answers.insert(key, Slot::Done(answer));
            self.memory.changed.notify_waiters();
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut inner = self.memory.lock();
            if matches!(inner.answers.get(&key), Some(Slot::Pending)) {
                inner.answers.remove(&key);
            }
            drop(inner);
            self.memory.changed.notify_waiters();
        }
    }
}

impl Memory {
    /// Rebuilds from the trace in `dir`. Blocking: it reads the whole trace once.
    pub fn rebuild(dir: &Path) -> std::io::Result<Self> {
        let memory = Self::default();
        let mut from_seq = 0;
        loop {
            let page =
                crate::trace::read_entries(dir, ChainKind::Trace, from_seq, 10_000, 64 << 20)?;
            let Some(last) = page.last() else {
                break;
            };
            from_seq = last.seq + 1;
            let mut inner = memory.lock();
            // read_entries checked each line's hash: a forged line cannot plant an answer.
            for stored in &page {
                if let Ok(entry) = serde_json::from_str::<Remembered>(&stored.line) {
                    inner.remember_entry(entry);
                }
            }
        }
        Ok(memory)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The notification a waiter must enable before it claims, so that an answer given between
    /// its claim and its wait still wakes it.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Claims `(session, key)`.
    pub fn claim(&self, session: &str, key: &str) -> Claim<'_> {
        let mut inner = self.lock();
        let probe = (session.to_owned(), key.to_owned());
        match inner.answers.get(&probe) {
            Some(Slot::Done(answer)) => return Claim::Answered(Arc::clone(answer)),
            Some(Slot::Pending) => return Claim::Busy,
            None => {}
        }
        inner.insert(probe.clone(), Slot::Pending);
        Claim::Mine(Ticket {
            memory: self,
            key: Some(probe),
        })
    }

    /// Auto-replies `rule` has given in `session`.
    pub fn auto_replies(&self, session: &str, rule: &str) -> u32 {
        self.lock()
            .auto_replies
            .get(&(session.to_owned(), rule.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Counts one more auto-reply of `rule` in `session`.
    pub fn count_auto_reply(&self, session: &str, rule: &str) {
        *self
            .lock()
            .auto_replies
            .entry((session.to_owned(), rule.to_owned()))
            .or_default() += 1;
    }
}

impl Inner {
    fn insert(&mut self, key: Key, slot: Slot) {
        if self.answers.insert(key.clone(), slot).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > REMEMBERED_ANSWERS {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }

    /// One stored entry: its auto-reply, and its answer when it carries an idempotency key.
    fn remember_entry(&mut self, entry: Remembered) {
        if entry.action_taken == "auto_reply" && !entry.matched_rule.is_empty() {
            *self
                .auto_replies
                .entry((entry.session_id.clone(), entry.matched_rule.clone()))
                .or_default() += 1;
        }
        if entry.idempotency_key.is_empty() {
            return;
        }
        let key = (entry.session_id.clone(), entry.idempotency_key.clone());
        // The first answer stands.
        if !self.answers.contains_key(&key) {
            self.insert(key, Slot::Done(Arc::new(entry.into_answer())));
        }
    }
}

/// The members of a stored entry that past decisions constrain (the rest is not read).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Remembered {
    seq: Option<u64>,
    session_id: String,
    idempotency_key: String,
    matched_rule: String,
    action_taken: String,
    policy_action: String,
    reply_value: String,
    autonomy_mode: String,
    risk_level: String,
    risk_reasons: Vec<String>,
    policy_hash: String,
    entry_id: String,
    entry_hash: String,
}

impl Remembered {
    /// The answer this entry gave.
    fn into_answer(self) -> EvaluateResult {
        let suggested_action = (!self.policy_action.is_empty()
            && self.action_taken != self.policy_action)
            .then(|| self.policy_action.clone());
        EvaluateResult {
            suggested_action,
            action: self.action_taken,
            reply_value: self.reply_value,
            matched_rule: self.matched_rule,
            policy_action: self.policy_action,
            autonomy_mode: self.autonomy_mode,
            risk_level: self.risk_level,
            risk_reasons: self.risk_reasons,
            policy_hash: self.policy_hash,
            entry_id: Some(self.entry_id),
            seq: self.seq,
            entry_hash: Some(self.entry_hash),
            explanation: format!(
                "the answer recorded at seq {} for this idempotency key",
                self.seq.unwrap_or_default()
            ),
            repeated: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(action: &str) -> Answer {
        Arc::new(EvaluateResult {
            action: action.to_owned(),
            reply_value: String::new(),
            suggested_action: None,
            matched_rule: String::new(),
            policy_action: action.to_owned(),
            autonomy_mode: "full".to_owned(),
            risk_level: String::new(),
            risk_reasons: Vec::new(),
            policy_hash: "h".to_owned(),
            entry_id: None,
            seq: Some(1),
            entry_hash: None,
            explanation: String::new(),
            repeated: false,
        })
    }

    #[test]
    fn the_first_answer_stands_and_a_failed_claim_frees_the_key() {
        let memory = Memory::default();
        let Claim::Mine(ticket) = memory.claim("s", "k") else {
            panic!("first claim decides")
        };
        assert!(
            matches!(memory.claim("s", "k"), Claim::Busy),
            "a concurrent repeat waits"
        );
        drop(ticket);
        let Claim::Mine(ticket) = memory.claim("s", "k") else {
            panic!("freed")
        };
        ticket.answer(answer("deny"));
        let Claim::Answered(first) = memory.claim("s", "k") else {
            panic!("answered")
        };
        assert_eq!(first.action, "deny");
        assert!(matches!(memory.claim("other-session", "k"), Claim::Mine(_)));
    }

    #[tokio::test]
    async fn a_waiter_enabled_before_its_claim_is_woken_by_the_answer() {
        let memory = Arc::new(Memory::default());
        let claimed = Arc::clone(&memory);
        let Claim::Mine(ticket) = claimed.claim("s", "k") else {
            panic!("first")
        };
        let waiter = {
            let memory = Arc::clone(&memory);
            tokio::spawn(async move {
                loop {
                    let notified = memory.changed().notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    match memory.claim("s", "k") {
                        Claim::Answered(answer) => return answer.action.clone(),
                        Claim::Busy => notified.await,
                        Claim::Mine(_) => panic!("the key is taken"),
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        ticket.answer(answer("allow"));
        assert_eq!(waiter.await.unwrap(), "allow");
    }

    #[test]
    fn only_the_last_remembered_answers_are_kept() {
        let memory = Memory::default();
        for i in 0..=REMEMBERED_ANSWERS {
            let Claim::Mine(ticket) = memory.claim("s", &i.to_string()) else {
                panic!("new key")
            };
            ticket.answer(answer("deny"));
        }
        assert!(
            matches!(memory.claim("s", "0"), Claim::Mine(_)),
            "the oldest is forgotten"
        );
        let newest = REMEMBERED_ANSWERS.to_string();
        assert!(matches!(memory.claim("s", &newest), Claim::Answered(_)));
    }

    #[test]
    fn auto_replies_count_per_session_and_rule() {
        let memory = Memory::default();
        memory.count_auto_reply("s", "r");
        memory.count_auto_reply("s", "r");
        assert_eq!(memory.auto_replies("s", "r"), 2);
        assert_eq!(memory.auto_replies("s", "other"), 0);
    }
}
