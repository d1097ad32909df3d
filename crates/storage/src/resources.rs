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

#[cfg(test)]
pub(crate) mod battery {
    //! The tests every resource store must pass.
    use super::*;

    pub fn run(store: &dyn ResourceStore) {
        let v = serde_json::json!({"UUID": "a", "GremlinQuery": "G.V()"});
        store.put("capture", "a", &v, 0).unwrap();
        store
            .put("capture", "b", &serde_json::json!({"UUID": "b"}), 1000)
            .unwrap();
        store
            .put("alert", "a", &serde_json::json!({"UUID": "x"}), 0)
            .unwrap();
        assert_eq!(store.get("capture", "a", 10).unwrap(), Some(v.clone()));
        assert_eq!(store.get("capture", "zz", 10).unwrap(), None);
        assert_eq!(store.list("capture", 10).unwrap().len(), 2);
        assert_eq!(
            store
                .list("capture", 1000)
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(
            store.get("capture", "b", 1000).unwrap(),
            None,
            "expired at its deadline"
        );
        let expired = store.take_expired(1000).unwrap();
        assert_eq!(
            expired,
            vec![(
                "capture".to_string(),
                "b".to_string(),
                serde_json::json!({"UUID": "b"})
            )]
        );
        assert!(store.take_expired(1000).unwrap().is_empty());
        let v2 = serde_json::json!({"UUID": "a", "GremlinQuery": "G.E()"});
        store.put("capture", "a", &v2, 0).unwrap();
        assert_eq!(store.get("capture", "a", 10).unwrap(), Some(v2));
        assert!(store.delete("capture", "a", 10).unwrap());
        assert!(!store.delete("capture", "a", 10).unwrap());
        assert_eq!(
            store.list("alert", 10).unwrap().len(),
            1,
            "kinds are separate"
        );
    }

    #[test]
    fn memory_store_passes_the_battery() {
        run(&MemoryResources::new());
    }
}
