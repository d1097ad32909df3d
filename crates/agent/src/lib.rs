//! The agent: its host's graph (the host node and, with the probes, the host's network), its
//! local REST and WebSocket API, and a link to every analyzer it publishes the graph to.
//! Must not depend on the analyzer.

#![forbid(unsafe_code)]

pub mod captures;
pub mod config;
pub mod host;
pub mod link;
pub mod metadata;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use skydive_api::error::{ApiResult, json};
use skydive_api::server::{self, Context, Service, Shared};
use skydive_config::Settings;
use skydive_graph::{Graph, NoHistory, now_ms};
use skydive_hub::{Hub, HubHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::AgentConfig;
pub use link::{LinkHandle, LinkState, NoRequests, RequestHandler};

/// A running agent.
pub struct Agent {
    /// The address of the local API.
    pub addr: SocketAddr,
    pub ctx: Shared,
    pub links: Vec<LinkHandle>,
    pub probes: Option<Arc<skydive_probes::TopologyProbes>>,
    pub captures: Arc<captures::Captures>,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("addr", &self.addr).finish()
    }
}

#[derive(Clone)]
struct StatusState {
    ctx: Shared,
    links: Vec<LinkHandle>,
    probes: Option<Arc<skydive_probes::TopologyProbes>>,
    captures: Arc<captures::CaptureCounters>,
}

/// What an agent runs besides its graph and its links.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The topology probes (netlink, netns, ethtool and those of `agent.topology.probes`).
    /// Tests of the link alone leave them out.
    pub probes: bool,
    /// Where processes' namespaces are looked for (`/proc`).
    pub proc_path: std::path::PathBuf,
    /// How often processes are scanned for namespaces.
    pub process_scan_every: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            probes: true,
            proc_path: "/proc".into(),
            process_scan_every: Duration::from_secs(2),
        }
    }
}

async fn status(State(s): State<StatusState>) -> ApiResult {
    let reg = &s.ctx.registry;
    let mut clients = reg.statuses("/ws/subscriber", "agent");
    clients.extend(reg.statuses("/ws/publisher", "agent"));
    clients.extend(reg.statuses("/ws/pubsub", "agent"));
    let mut analyzers = serde_json::Map::new();
    let mut master_taken = false;
    for l in &s.links {
        let st = l.state();
        let is_master = st.connected && !master_taken;
        master_taken |= is_master;
        let key = if st.remote_host.is_empty() {
            st.address.clone()
        } else {
            st.remote_host.clone()
        };
        let mut v = serde_json::to_value(&st).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("IsMaster".into(), is_master.into());
            o.insert("ServiceType".into(), "analyzer".into());
            o.insert("ClientProtocol".into(), "json".into());
        }
        analyzers.insert(key, v);
    }
    let probes = s
        .probes
        .as_ref()
        .map(|p| p.status())
        .unwrap_or_else(|| json!({}));
    let doc = json!({
        "Clients": clients,
        "Analyzers": analyzers,
        "TopologyProbes": probes,
        "Flows": s.captures.document(),
        "FlowProbes": [],
    });
    json(StatusCode::OK, &doc)
}

impl Agent {
    /// Builds the host node, binds `agent.listen` and dials every analyzer of `analyzers`.
    pub async fn start(settings: &Settings) -> anyhow::Result<Agent> {
        Self::start_with(settings, Arc::new(NoRequests), AgentOptions::default()).await
    }

    /// As [`Agent::start`], with what answers the analyzers' requests.
    pub async fn start_with(
        settings: &Settings,
        requests: Arc<dyn RequestHandler>,
        options: AgentOptions,
    ) -> anyhow::Result<Agent> {
        Self::start_config(&AgentConfig::from_settings(settings)?, requests, options).await
    }

    /// As [`Agent::start_with`], from the agent's part of the configuration.
    pub async fn start_config(
        cfg: &AgentConfig,
        requests: Arc<dyn RequestHandler>,
        options: AgentOptions,
    ) -> anyhow::Result<Agent> {
        let auth = skydive_api::auth::Auth::build(&cfg.auth)?;
        let server_tls = skydive_tls::ServerTls::load(&cfg.tls)?;
        let client_tls = if cfg.tls.links_use_tls() {
            Some(skydive_tls::ClientTls::load(&cfg.tls, &Default::default())?)
        } else {
            None
        };
        let host_id = cfg.host_id.clone();
        let mut graph = Graph::new();
        graph.add_node(host::host_node(
            &host_id,
            &cfg.metadata,
            std::path::Path::new("/"),
            now_ms(),
        ))?;
        let listener = server::bind(&cfg.listen)
            .await
            .with_context(|| format!("agent.listen: cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let hub = Hub::new(graph).spawn();
        let captures = captures::Captures::new(hub.clone(), cfg.captures.clone());
        let requests: Arc<dyn RequestHandler> = Arc::new(captures::CaptureRequests {
            captures: captures.clone(),
            rest: requests,
        });
        let probes = if options.probes {
            let probes_cfg = skydive_probes::ProbesConfig {
                host_id: host_id.clone(),
                host_node: host::host_node_id(&host_id),
                host_tid: skydive_graph::id::host_tid(&host_id),
                netns_run_path: cfg.probes.netns_run_path.clone(),
                proc_path: options.proc_path.clone(),
                metrics_every: cfg.probes.metrics_every,
                process_scan_every: options.process_scan_every,
                ovs: cfg.probes.ovs.clone(),
                docker: cfg.probes.docker.clone(),
                runc_run_paths: cfg.probes.runc_run_paths.clone(),
            };
            Some(Arc::new(
                skydive_probes::start(probes_cfg, &cfg.probes.names, hub.clone())
                    .context("the topology probes cannot start")?,
            ))
        } else {
            None
        };
        let ctx: Shared = Arc::new(Context {
            service: Service::Agent,
            host_id: host_id.clone(),
            hub: hub.clone(),
            history: Arc::new(NoHistory),
            flows: None,
            bpf: None,
            ws: cfg.ws.clone(),
            registry: Default::default(),
            gremlin: cfg.gremlin,
        });

        let (stop, stop_rx) = watch::channel(false);
        let mut links = Vec::new();
        let mut tasks = vec![tokio::spawn(metadata::follow(
            cfg.metadata_files.clone(),
            hub.clone(),
            host::host_node_id(&host_id),
            metadata::CHECK_EVERY,
        ))];
        for analyzer in &cfg.links.analyzers {
            let link_cfg = link::LinkConfig {
                analyzer: analyzer.clone(),
                host_id: host_id.clone(),
                read_deadline: cfg.links.read_deadline,
                retry: Duration::from_secs(1),
                flows: Some(captures.flow_sender()),
                credentials: cfg
                    .links
                    .credentials
                    .as_ref()
                    .map(|(u, p)| (u.clone(), p.0.clone())),
                cookies: cfg.links.cookies.clone(),
                tls: client_tls.as_ref().map(|t| t.config.clone()),
            };
            let (h, t) = link::spawn(link_cfg, hub.clone(), requests.clone(), stop_rx.clone());
            links.push(h);
            tasks.push(t);
        }
        if cfg.links.analyzers.is_empty() {
            tracing::info!("no analyzer configured (`analyzers`): the agent runs on its own");
        }

        let app = Router::new()
            .merge(server::common_routes().with_state(ctx.clone()))
            .merge(
                Router::new()
                    .route("/api/status", get(status))
                    .with_state(StatusState {
                        ctx: ctx.clone(),
                        links: links.clone(),
                        probes: probes.clone(),
                        captures: captures.counters.clone(),
                    }),
            );
        let app = server::with_layers(app, auth, cfg.rest_debug);
        let mut rx = stop_rx;
        let acceptor = server_tls.as_ref().map(skydive_tls::ServerTls::acceptor);
        let server = tokio::spawn(server::serve(
            listener,
            app,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            acceptor,
        ));
        for r in [
            server_tls.map(|t| t.reloader),
            client_tls.map(|t| t.reloader),
        ]
        .into_iter()
        .flatten()
        {
            tasks.extend(r.spawn());
        }
        tracing::info!(%addr, %host_id, "agent started");
        Ok(Agent {
            addr,
            ctx,
            links,
            probes,
            captures,
            stop,
            server,
            tasks,
        })
    }

    /// The hub of the agent's graph.
    pub fn hub(&self) -> &HubHandle {
        &self.ctx.hub
    }

    /// Closes the links and the API.
    pub async fn shutdown(self) {
        // The captures' last flows go out while the links are still up.
        let captures = self.captures.clone();
        let _ = tokio::task::spawn_blocking(move || captures.stop_all()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(p) = &self.probes {
            p.stop().await;
        }
        self.stop.send_replace(true);
        for c in self.ctx.registry.all() {
            c.close();
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }

    /// Runs until the server stops.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }
}
