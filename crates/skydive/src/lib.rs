//! The `skydive` binary's parts: the client commands, the logging, and what each service is
//! built from. `main.rs` parses the command line and runs them.

#![forbid(unsafe_code)]

pub mod client;
pub mod logging;

use skydive_config::Settings;

/// What every part of the program is built from for `settings`: the agent's, the analyzer's,
/// the logging's and the client's configuration, as text. A key that changes none of them
/// changes nothing (a test proves every honoured key changes it).
pub fn effective(settings: &Settings) -> anyhow::Result<String> {
    let agent = skydive_agent::AgentConfig::from_settings(settings)?;
    let analyzer = skydive_analyzer::AnalyzerConfig::from_settings(settings)?;
    let logging = logging::LoggingConfig::from_settings(settings)?;
    let client = client::ClientConfig::from_settings(settings);
    Ok(format!(
        "{agent:#?}\n{analyzer:#?}\n{logging:#?}\n{client:#?}"
    ))
}
