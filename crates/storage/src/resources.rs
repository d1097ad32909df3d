//! API resources (the etcd keys of Skydive: `/capture/<uuid>`, `/alert/<uuid>`, …), with an
//! optional time to live.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::Result;

/// Where resources are kept. Times are milliseconds since the epoch.
pub trait ResourceStore: Send + Sync {
    /// Creates or replaces a resource; `expires_at` 0 means never.
    fn put(&self, kind: &str, id: &str, value: &Value, expires_at: i64) -> Result<()>;
    /// A resource, unless absent or expired at `now`.
    fn get(&self, kind: &str, id: &str, now: i64) -> Result<Option<Value>>;
    /// Every live resource of a kind, by ID.
    fn list(&self, kind: &str, now: i64) -> Result<BTreeMap<String, Value>>;
    /// Deletes a resource; returns whether it existed (and had not expired).
    fn delete(&self, kind: &str, id: &str, now: i64) -> Result<bool>;
    /// Removes the resources expired at `now` and returns them as `(kind, id, value)`.
    fn take_expired(&self, now: i64) -> Result<Vec<(String, String, Value)>>;
}

struct Entry {
    value: Value,
    expires_at: i64,
}

fn live(e: &Entry, now: i64) -> bool {
    e.expires_at == 0 || e.expires_at > now
}

/// Resources in memory: for the memory backend and for agents. Nothing survives a restart.
#[derive(Default)]
pub struct MemoryResources {
    map: Mutex<BTreeMap<(String, String), Entry>>,
}

impl MemoryResources {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Entry>> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResourceStore for MemoryResources {
    fn put(&self, kind: &str, id: &str, value: &Value, expires_at: i64) -> Result<()> {
        self.lock().insert(
            (kind.to_string(), id.to_string()),
            Entry {
                value: value.clone(),
                expires_at,
            },
        );
        Ok(())
    }

    fn get(&self, kind: &str, id: &str, now: i64) -> Result<Option<Value>> {
        Ok(self
            .lock()
            .get(&(kind.to_string(), id.to_string()))
            .filter(|e| live(e, now))
            .map(|e| e.value.clone()))
    }

    fn list(&self, kind: &str, now: i64) -> Result<BTreeMap<String, Value>> {
        Ok(self
            .lock()
            .iter()
            .filter(|((k, _), e)| k == kind && live(e, now))
            .map(|((_, id), e)| (id.clone(), e.value.clone()))
            .collect())
    }

    fn delete(&self, kind: &str, id: &str, now: i64) -> Result<bool> {
        Ok(self
            .lock()
            .remove(&(kind.to_string(), id.to_string()))
            .is_some_and(|e| live(&e, now)))
    }

    fn take_expired(&self, now: i64) -> Result<Vec<(String, String, Value)>> {
        let mut map = self.lock();
        let expired: Vec<(String, String)> = map
            .iter()
            .filter(|(_, e)| !live(e, now))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(expired
            .into_iter()
            .filter_map(|k| map.remove(&k).map(|e| (k.0, k.1, e.value)))
            .collect())
    }
}
