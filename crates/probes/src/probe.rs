//! The probe contract: a topology probe runs until it is told to stop, says how it is for
//! `/api/status`, and is restarted with a backoff when it fails, by one supervisor for all.
//! A probe that fails never takes the agent down.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a probe stopped working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// What the probe reads from is away (OVSDB down, a socket closed); tried again later.
    #[error("{0}")]
    Unavailable(String),
    /// The probe could not set itself up (a socket it cannot open).
    #[error("{0}")]
    Setup(String),
    /// What the probe reports to went away (the agent is stopping).
    #[error("the topology is gone")]
    TopologyGone,
}

/// What a probe's `run` returns.
pub type ProbeRun = Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send>>;

/// A topology probe.
pub trait Probe: Send + Sync + 'static {
    /// Its name, as `agent.topology.probes` and `/api/status` say it.
    fn name(&self) -> &'static str;
    /// Runs the probe until `stop` turns true. Returning before that, with an error or not,
    /// means it failed: the supervisor runs it again after a backoff.
    fn run(self: Arc<Self>, stop: watch::Receiver<bool>) -> ProbeRun;
    /// Its own part of its `/api/status` entry (counters, connection state).
    fn status(&self) -> Value;
}

/// How long the supervisor waits before running a failed probe again: `initial`, doubled at
/// each failure up to `max`, back to `initial` once the probe has run for `healthy_after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            healthy_after: Duration::from_secs(30),
        }
    }
}

/// What the supervisor knows of a probe.
#[derive(Debug, Default)]
struct Health {
    restarts: AtomicU64,
    /// The last failure and when (RFC 3339).
    last_failure: Mutex<Option<(String, String)>>,
    /// Waiting to be run again.
    restarting: std::sync::atomic::AtomicBool,
}

/// Runs the probes and restarts those that fail.
pub struct Supervisor {
    probes: Vec<(Arc<dyn Probe>, Arc<Health>)>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.probes.iter().map(|(p, _)| p.name()).collect();
        f.debug_struct("Supervisor")
            .field("probes", &names)
            .finish()
    }
}

impl Supervisor {
    /// Starts every probe on the current runtime.
    pub fn start(probes: Vec<Arc<dyn Probe>>, backoff: Backoff) -> Supervisor {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut supervised = Vec::new();
        for probe in probes {
            let health = Arc::new(Health::default());
            tasks.push(tokio::spawn(supervise(
                probe.clone(),
                health.clone(),
                backoff,
                stop_rx.clone(),
            )));
            supervised.push((probe, health));
        }
        Supervisor {
            probes: supervised,
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    /// The probes' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.probes.iter().map(|(p, _)| p.name()).collect()
    }

    /// `TopologyProbes` of `/api/status`: each probe's own status, with `Status` (`running`
    /// or `restarting`) and, once it has failed, `Restarts` and its `LastFailure`.
    pub fn status(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (probe, health) in &self.probes {
            let mut doc = probe.status();
            if !doc.is_object() {
                doc = json!({});
            }
            let restarting = health.restarting.load(Ordering::Relaxed);
            doc["Status"] = json!(if restarting { "restarting" } else { "running" });
            let restarts = health.restarts.load(Ordering::Relaxed);
            if restarts > 0 {
                doc["Restarts"] = json!(restarts);
            }
            if let Some((error, at)) = health
                .last_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                doc["LastFailure"] = json!(error);
                doc["LastFailureTime"] = json!(at);
            }
            out.insert(probe.name().to_string(), doc);
        }
        Value::Object(out)
    }

    /// Stops every probe and waits for them (what they reported stays in the graph).
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut Box::pin(t))
                .await
                .is_err()
            {
                tracing::warn!("a probe did not stop within 5 s");
            }
        }
    }
}

async fn supervise(
    probe: Arc<dyn Probe>,
    health: Arc<Health>,
    backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = backoff.initial;
    loop {
        if *stop.borrow() {
            return;
        }
        health.restarting.store(false, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let result = probe.clone().run(stop.clone()).await;
        if *stop.borrow() {
            return;
        }
        let reason = match result {
            Err(ProbeError::TopologyGone) => return,
            Err(e) => e.to_string(),
            Ok(()) => "the probe ended".to_string(),
        };
        if started.elapsed() >= backoff.healthy_after {
            delay = backoff.initial;
        }
        let repeated = health
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(last, _)| *last == reason);
        if repeated {
            tracing::debug!(probe = probe.name(), "probe failed again: {reason}");
        } else {
            tracing::warn!(
                probe = probe.name(),
                "probe failed, restarting in {delay:?}: {reason}"
            );
        }
        health.restarts.fetch_add(1, Ordering::Relaxed);
        *health
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((reason, chrono::Utc::now().to_rfc3339()));
        health.restarting.store(true, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        delay = (delay * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe that fails its first `fail` runs, then runs until stopped.
    struct Flaky {
        fail: u64,
        runs: AtomicU64,
    }

    impl Probe for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> ProbeRun {
            Box::pin(async move {
                let n = self.runs.fetch_add(1, Ordering::SeqCst);
                if n < self.fail {
                    return Err(ProbeError::Unavailable(format!("away ({n})")));
                }
                let _ = stop.wait_for(|s| *s).await;
                Ok(())
            })
        }
        fn status(&self) -> Value {
            json!({"Runs": self.runs.load(Ordering::SeqCst)})
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_probe_is_restarted_with_a_growing_backoff_and_says_so() {
        let flaky = Arc::new(Flaky {
            fail: 3,
            runs: AtomicU64::new(0),
        });
        let s = Supervisor::start(vec![flaky.clone()], Backoff::default());
        settle().await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 1);
        let st = s.status();
        assert_eq!(st["flaky"]["Status"], "restarting");
        assert_eq!(st["flaky"]["Restarts"], 1);
        assert_eq!(st["flaky"]["LastFailure"], "away (0)");
        // 1 s, then 2 s, then 4 s.
        tokio::time::advance(Duration::from_millis(999)).await;
        settle().await;
        assert_eq!(
            flaky.runs.load(Ordering::SeqCst),
            1,
            "not before its backoff"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 3);
        tokio::time::advance(Duration::from_millis(3999)).await;
        settle().await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 3);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 4);
        let st = s.status();
        assert_eq!(st["flaky"]["Status"], "running");
        assert_eq!(st["flaky"]["Restarts"], 3);
        assert_eq!(st["flaky"]["LastFailure"], "away (2)");
        assert_eq!(st["flaky"]["Runs"], 4, "the probe's own status is kept");
        s.stop().await;
        assert_eq!(
            flaky.runs.load(Ordering::SeqCst),
            4,
            "a stopped probe is not run again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_stops_growing_at_its_maximum() {
        let flaky = Arc::new(Flaky {
            fail: u64::MAX,
            runs: AtomicU64::new(0),
        });
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            healthy_after: Duration::from_secs(30),
        };
        let s = Supervisor::start(vec![flaky.clone()], backoff);
        settle().await;
        // Runs at 0, 1, 3, 7, 11, 15 s.
        for _ in 0..15 {
            tokio::time::advance(Duration::from_secs(1)).await;
            settle().await;
        }
        assert_eq!(flaky.runs.load(Ordering::SeqCst), 6);
        s.stop().await;
    }
}
