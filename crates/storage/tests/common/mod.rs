//! The backends every battery runs against, through the backend contract.

#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use skydive_storage::{Backend, Retention};

/// Every backend, new ones at each call: the embedded store (in a directory of its own
/// under `dir`), the in-memory reference and the memory backend. A battery skips the parts a
/// backend does not keep (the memory backend keeps only resources).
pub fn backends(dir: &Path) -> Vec<Backend> {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let sub = dir.join(format!(
        "embedded-{}",
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    vec![
        Backend::embedded(&sub, Retention::default()).unwrap(),
        Backend::reference(),
        Backend::memory(),
    ]
}
