//! Skydive's API: the wire messages of the WebSocket protocol, validation of nodes and edges,
//! the REST and WebSocket server shared by the agent and the
//! analyzer, and the client used by the command line and the agent.

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
