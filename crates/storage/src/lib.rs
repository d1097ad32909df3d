//! Storage for the analyzer: API resources (captures, alerts, rules, nodes and edges created
//! through the API), and later the topology history and flows.
//!
//! Two backends: the embedded store (SQLite in a data directory, the default; survives
//! restarts and crashes) and memory (nothing survives a restart).

#![forbid(unsafe_code)]

pub mod embedded;
pub mod resources;

pub use embedded::Embedded;
pub use resources::{MemoryResources, ResourceStore};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot open the store in {path}: {message}")]
    Open { path: String, message: String },
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot decode a stored {kind} '{id}': {message}")]
    Decode {
        kind: String,
        id: String,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, StorageError>;
