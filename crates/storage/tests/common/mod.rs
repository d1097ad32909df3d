//! The backends every battery runs against, through the backend contract.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use std::sync::Arc;

use skydive_storage::elasticsearch::{Elasticsearch, EsConfig};
use skydive_storage::{Backend, MemoryResources, Retention};

/// The OpenSearch-compatible server the test script starts, from `SKYDIVE_TEST_OPENSEARCH`
/// (its URL). Without it the Elasticsearch backend is left out of the batteries, said once;
/// under `CI=true` that fails the test instead.
pub fn opensearch() -> Option<String> {
    let url = std::env::var("SKYDIVE_TEST_OPENSEARCH").ok();
    static SAID: std::sync::Once = std::sync::Once::new();
    if url.is_none() {
        SAID.call_once(|| {
            skydive_testkit::require(
                "the Elasticsearch backend's part of the storage batteries",
                false,
                "an OpenSearch-compatible server at SKYDIVE_TEST_OPENSEARCH (the test script starts one)",
            );
        });
    }
    url
}

/// The Elasticsearch backend (topology history) on indices of its own (`index_prefix`
/// unique to the call); resources in memory.
pub fn elasticsearch(url: &str) -> Backend {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let cfg = EsConfig {
        hosts: vec![url.to_string()],
        index_prefix: format!(
            "t{}_{}_",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        ),
        ..Default::default()
    };
    Backend {
        driver: "elasticsearch",
        resources: Arc::new(MemoryResources::new()),
        topology: Some(Arc::new(Elasticsearch::open(&cfg).unwrap())),
        flows: None,
        upkeep: None,
    }
}

/// Every backend, new ones at each call: the embedded store (in a directory of its own
/// under `dir`), the in-memory reference, the memory backend and, when the test server is
/// there, the Elasticsearch backend. A battery skips the parts a
/// backend does not keep (the memory backend keeps only resources).
pub fn backends(dir: &Path) -> Vec<Backend> {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let sub = dir.join(format!(
        "embedded-{}",
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut all = vec![
        Backend::embedded(&sub, Retention::default()).unwrap(),
        Backend::reference(),
        Backend::memory(),
    ];
    if let Some(url) = opensearch() {
        all.push(elasticsearch(&url));
    }
    all
}
