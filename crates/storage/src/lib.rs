//! Storage for the analyzer: API resources (captures, alerts, rules, nodes and edges created
//! through the API), the topology history and the flows, behind the [`Backend`] contract.
//!
//! Backends: the embedded store (SQLite in a data directory, the default; survives restarts
//! and crashes; history, flows and retention) and memory (resources while the process runs,
//! no history); the in-memory reference keeps everything and is what the battery of tests
//! holds every backend to. Must not depend on the API server or the probes.

#![forbid(unsafe_code)]

pub mod backend;
pub mod elasticsearch;
pub mod embedded;
pub mod flows;
pub mod health;
pub mod history;
pub mod resources;
pub mod retention;

pub use backend::{Backend, MemoryTopology, TopologyStore, Upkeep};
pub use embedded::Embedded;
pub use flows::{FlowStore, MemoryFlows, flow_key};
pub use resources::{MemoryResources, ResourceStore};
pub use retention::{Removed, Retention};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the store in {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "the store {path} is damaged: {}; start with --recover to keep what can be read (the damaged files are moved aside)",
        findings.join("; ")
    )]
    Damaged { path: String, findings: Vec<String> },
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A remote store (Elasticsearch, OpenSearch) failed or refused.
    #[error("storage error: {url}: {message}")]
    Remote { url: String, message: String },
    #[error("storage error: a stored value has the wrong type: {0}")]
    Column(#[from] rusqlite::types::FromSqlError),
    #[error("cannot decode a stored {kind} '{id}': {message}")]
    Decode {
        kind: String,
        id: String,
        message: String,
    },
}

impl StorageError {
    /// Whether the error says the stored files are damaged (as opposed to full, locked or
    /// unreadable for a while).
    pub fn is_damage(&self) -> bool {
        match self {
            StorageError::Sqlite(e) => health::is_damage(e),
            StorageError::Damaged { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;
