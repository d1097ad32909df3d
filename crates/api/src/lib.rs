//! Skydive's API: the wire messages of the WebSocket protocol, the typed capture protocol
//! between analyzer and agents, validation of nodes and edges, the REST and WebSocket server
//! shared by the agent and the analyzer (authentication, one error type for handlers, the web
//! UI's files), and the client used by the command line.
//!
//! Must not depend on the probes, the capture sources or storage: servers are given a hub
//! handle, a history and a flow source.

#![forbid(unsafe_code)]

pub mod auth;
pub mod capture;
pub mod client;
pub mod error;
pub mod message;
pub mod schema;

pub mod server;
pub mod ui;

pub use error::{ApiError, ApiResult};
