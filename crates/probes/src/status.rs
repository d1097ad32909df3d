//! The state of the topology probes, for `/api/status` (`TopologyProbes`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// Counters and state of a probe.
#[derive(Debug, Default)]
pub struct ProbeStatus {
    errors: AtomicU64,
    overruns: AtomicU64,
    malformed: AtomicU64,
    last_error: Mutex<Option<(String, String)>>,
    interfaces: Mutex<BTreeMap<u64, usize>>,
    namespaces: AtomicU64,
}

impl ProbeStatus {
    pub fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((chrono_now(), e));
    }

    pub fn overrun(&self) {
        self.overruns.fetch_add(1, Ordering::Relaxed);
    }

    pub fn malformed(&self, n: u64) {
        self.malformed.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_interfaces(&self, ns: u64, n: usize) {
        self.interfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ns, n);
    }

    pub fn forget_namespace(&self, ns: u64) {
        self.interfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ns);
    }

    pub fn set_namespaces(&self, n: u64) {
        self.namespaces.store(n, Ordering::Relaxed);
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The status document of the probe.
    pub fn document(&self) -> Value {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ifaces: usize = self
            .interfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        let mut v = json!({
            "Status": "running",
            "Namespaces": self.namespaces.load(Ordering::Relaxed),
            "Interfaces": ifaces,
            "Errors": self.errors(),
            "Overruns": self.overruns.load(Ordering::Relaxed),
            "MalformedMessages": self.malformed.load(Ordering::Relaxed),
        });
        if let Some((at, e)) = last {
            v["LastError"] = json!(e);
            v["LastErrorTime"] = json!(at);
        }
        v
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339()
}
