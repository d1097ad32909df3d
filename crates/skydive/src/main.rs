//! `skydive`: argument parsing, configuration, logging, exit codes. The services live in the
//! `skydive-analyzer` and `skydive-agent` crates; the client commands in `client.rs`.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use skydive::{client, logging};
use skydive_config::{Config, Source};

/// mimalloc rather than the C library's allocator: the flow tables make and drop many small
/// strings per flow (a flow's `Flow` message alone holds about ten), which glibc's allocator
/// serves several times slower once its bins are fragmented (B1 in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code of a configuration error (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "skydive",
    version = skydive_api::server::VERSION,
    about = "Skydive: real-time network topology and protocols analyzer"
)]
struct Cli {
    /// Configuration file (YAML); may be given several times, merged in order; `-` reads
    /// standard input.
    #[arg(short = 'c', long = "conf", global = true)]
    conf: Vec<String>,
    /// Where the configuration comes from (only `file` is supported).
    #[arg(
        short = 'b',
        long = "config-backend",
        default_value = "file",
        global = true
    )]
    config_backend: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an agent: discover this host's topology and publish it to the analyzers.
    Agent,
    /// Run an analyzer: merge the agents' graphs and serve the API.
    Analyzer {
        /// When the embedded store is damaged, move it aside and start on what can be read
        /// of it (without this, a damaged store stops the start).
        #[arg(long)]
        recover: bool,
    },
    /// Run an analyzer and an agent in one process.
    Allinone {
        /// As `analyzer --recover`.
        #[arg(long)]
        recover: bool,
    },
    /// Talk to an analyzer's (or an agent's) API.
    Client(Box<client::ClientArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(default_value = "bash")]
        shell: clap_complete::Shell,
    },
    /// Print the bash completion script.
    #[command(name = "bash-completion", hide = true)]
    BashCompletion,
    /// Print the version.
    Version,
}

fn load_config(cli: &Cli) -> Result<Config, String> {
    if cli.config_backend != "file" {
        return Err(format!(
            "config backend {:?} is not supported (use `file`)",
            cli.config_backend
        ));
    }
    let sources: Vec<Source> = cli
        .conf
        .iter()
        .map(|c| {
            if c == "-" {
                Source::Stdin
            } else {
                Source::File(c.into())
            }
        })
        .collect();
    Config::load(&sources, std::env::vars()).map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn start_analyzer(
    settings: &skydive_config::Settings,
    recover: bool,
) -> anyhow::Result<skydive_analyzer::Analyzer> {
    let mut cfg = skydive_analyzer::AnalyzerConfig::from_settings(settings)?;
    cfg.recover = recover;
    skydive_analyzer::Analyzer::start_config(&cfg).await
}

async fn run_service(cmd: &Command, config: Config) -> anyhow::Result<()> {
    let settings = config.settings;
    let tls = skydive_tls::TlsFiles::from_settings(&settings);
    let scheme = if tls.serves_tls() { "https" } else { "http" };
    match cmd {
        Command::Analyzer { recover } => {
            let analyzer = start_analyzer(&settings, *recover).await?;
            eprintln!(
                "Skydive analyzer: web UI on {scheme}://{a}/ ; API on {scheme}://{a}/api",
                a = analyzer.addr
            );
            shutdown_signal().await;
            analyzer.shutdown().await;
        }
        Command::Agent => {
            let agent = skydive_agent::Agent::start(&settings).await?;
            eprintln!(
                "Skydive agent: web UI on http://{a}/ ; API on http://{a}/api",
                a = agent.addr
            );
            shutdown_signal().await;
            agent.shutdown().await;
        }
        Command::Allinone { recover } => {
            if tls.serves_tls() && tls.ca_cert.is_none() {
                return Err(skydive_config::ConfigError::invalid(
                    "tls.ca_cert",
                    "allinone serves TLS, and its agent verifies its analyzer's certificate \
                     against tls.ca_cert, which is not set",
                )
                .into());
            }
            let analyzer = start_analyzer(&settings, *recover).await?;
            let mut agent_settings = settings.clone();
            agent_settings.analyzers = vec![analyzer.addr.to_string()];
            let agent = match skydive_agent::Agent::start(&agent_settings).await {
                Ok(a) => a,
                Err(e) => {
                    analyzer.shutdown().await;
                    return Err(e);
                }
            };
            eprintln!(
                "Skydive allinone: web UI on {scheme}://{a}/ ; analyzer API on {scheme}://{a}/api ; agent API on {scheme}://{b}/api (its own UI on {scheme}://{b}/)",
                a = analyzer.addr,
                b = agent.addr
            );
            shutdown_signal().await;
            agent.shutdown().await;
            analyzer.shutdown().await;
        }
        _ => unreachable!("not a service"),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Version => {
            println!("skydive {}", skydive_api::server::VERSION);
            return ExitCode::SUCCESS;
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "skydive",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::BashCompletion => {
            clap_complete::generate(
                clap_complete::Shell::Bash,
                &mut Cli::command(),
                "skydive",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skydive: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Command::Client(args) = &cli.command {
        return client::run(args, &config);
    }
    let logging = match logging::LoggingConfig::from_settings(&config.settings) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skydive: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = logging.init() {
        eprintln!("skydive: {e:#}");
        return ExitCode::FAILURE;
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skydive: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_service(&cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skydive: {e:#}");
            // Authentication sections are configuration too.
            if e.chain().any(|c| {
                c.is::<skydive_api::auth::AuthConfigError>()
                    || c.is::<skydive_config::ConfigError>()
                    || c.is::<skydive_tls::TlsError>()
            }) {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
