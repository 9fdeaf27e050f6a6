//! An agent deciding prompts on a daemon's socket until stopped, as a coding agent would while
//! servers, replicas and links come and go around its daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::daemon::{Conn, TestDaemon, event};
use super::eventually;

/// An agent deciding until stopped; counts its decisions.
pub struct Agent {
    stop: Arc<AtomicBool>,
    made: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl Agent {
    /// Starts deciding prompts of `session` on `daemon`, each of which must be answered "y".
    pub fn start(daemon: &TestDaemon, session: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let (socket, session) = (daemon.socket(), session.to_owned());
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&made));
        let thread = std::thread::spawn(move || {
            let mut conn = Conn::open(&socket).expect("connect to the daemon");
            while !flag.load(Ordering::Relaxed) {
                let prompt = format!("p{}", count.load(Ordering::Relaxed));
                // Decisions never wait on the network: each succeeds whatever the link does.
                let answer = conn
                    .call("decision.evaluate", event(&session, &prompt))
                    .expect("a decision");
                assert_eq!(answer["action"], "auto_reply", "{answer}");
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, made, thread }
    }

    /// Decisions made so far.
    pub fn made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    /// Waits until it has made `more` decisions past where it is.
    pub async fn decides(&self, more: usize) {
        decide_more(&[self], more).await;
    }

    /// Stops it; the decisions it made, all of which succeeded.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the agent succeeded throughout");
        self.made.load(Ordering::Relaxed)
    }
}

/// Waits until each agent has made `more` decisions past where it was.
pub async fn decide_more(agents: &[&Agent], more: usize) {
    let targets: Vec<usize> = agents.iter().map(|a| a.made() + more).collect();
    eventually("the agents keep deciding", || {
        let done = agents.iter().zip(&targets).all(|(a, t)| a.made() >= *t);
        async move { done }
    })
    .await;
}
