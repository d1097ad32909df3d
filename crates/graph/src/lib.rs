//! The graph model of Skydive: nodes, edges, metadata, identifiers (TIDs), events, an
//! in-memory graph with indexes whose clones are consistent snapshots, the revision history
//! behind time-travel queries, and the filter engine queries compile to.
//!
//! This crate is pure: no I/O, no async runtime, nothing of ours. The analyzer and the agent own a
//! [`Graph`] each and drive it from their tasks; storage backends implement [`History`].

#![forbid(unsafe_code)]

pub mod element;
pub mod event;
pub mod filter;
pub mod graph;
pub mod history;
pub mod id;
pub mod time;
pub mod value;
pub mod view;

pub use element::{DecodeError, Edge, Element, Node, Time, now_ms};
pub use event::{GraphEvent, PartialOp, PartialUpdate, diff_metadata};
pub use filter::{Field, Filter, Getter, Ipv4Net, Pattern};
pub use graph::{Graph, GraphError, INDEXED_KEYS};
pub use history::{
    History, HistoryError, MemoryHistory, NoHistory, StoredRevision, latest_revisions,
    revision_in_slice,
};
pub use id::{Id, gen_id, gen_id_from};
pub use time::{Clock, DurationError, SystemClock, parse_go_duration, parse_go_period};
pub use value::{Key, Map, Value};
pub use view::{GraphJson, GraphView, RevisionGraph};
