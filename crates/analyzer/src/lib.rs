//! The analyzer: one live graph merged from every agent's subgraph, the resources that act
//! on it (node and edge rules, elements created through the API), and the REST and
//! WebSocket API over them (Skydive's REST API; Skydive's WebSocket protocol).
//!
//! Tasks: the hub owns the graph; the WebSocket connections feed it and read its snapshots
//! and events; the rules engine and the element API reconcile the graph with the stored
//! resources. Must not depend on the agent.

#![forbid(unsafe_code)]

pub mod agents;
pub mod alerts;
pub mod captures;
pub mod config;
pub mod fabric;
pub mod flows;
pub mod nodes;
pub mod resources;
pub mod rules;
pub mod scheduler;
pub mod status;
pub mod storage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use skydive_api::server::{self, Context, Service, Shared};
use skydive_config::Settings;
use skydive_graph::Graph;
use skydive_hub::{Hub, HubHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use agents::Agents;
pub use config::AnalyzerConfig;
pub use resources::Resources;

/// A running analyzer.
pub struct Analyzer {
    /// The address the API listens on.
    pub addr: SocketAddr,
    pub ctx: Shared,
    pub resources: Arc<Resources>,
    pub agents: Arc<Agents>,
    stores: Arc<storage::Stores>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The capture of `analyzer.startup` (Skydive's `TestStartupCapture`), created once: it is
/// stored like any other and found again at the next start.
async fn startup_capture(
    startup: Option<&config::StartupCapture>,
    resources: &Resources,
) -> anyhow::Result<()> {
    let Some(s) = startup else {
        return Ok(());
    };
    let capture = captures::Capture {
        gremlin_query: s.gremlin.clone(),
        bpf_filter: s.bpf.clone(),
        kind: (!s.kind.is_empty()).then(|| skydive_flow::capture::CaptureKind::parse(&s.kind)),
        name: "startup".into(),
        ..Default::default()
    };
    match resources::create(resources, capture, 0).await {
        Ok(c) => {
            tracing::info!(capture = %c.uuid, query = %c.gremlin_query, "startup capture created");
        }
        Err(resources::ResourceError::Duplicate) => {
            tracing::info!("startup capture already defined");
        }
        Err(e) => anyhow::bail!("analyzer.startup.capture_gremlin: {e}"),
    }
    Ok(())
}

impl Analyzer {
    /// Opens the store, binds `analyzer.listen` and starts every task.
    pub async fn start(settings: &Settings) -> anyhow::Result<Analyzer> {
        Self::start_config(&AnalyzerConfig::from_settings(settings)?).await
    }

    /// As [`Analyzer::start`], from the analyzer's part of the configuration.
    pub async fn start_config(cfg: &AnalyzerConfig) -> anyhow::Result<Analyzer> {
        // Checked before the store opens; built after, as login sessions are kept in it.
        skydive_api::auth::Auth::build(&cfg.auth)?;
        let server_tls = skydive_tls::ServerTls::load(&cfg.tls)?;
        let webhook_tls = skydive_api::client::tls_config(&skydive_api::client::ClientTlsFiles {
            ca_cert: cfg.tls.ca_cert.clone(),
            ..Default::default()
        })?;
        let stores = storage::Stores::open(&cfg.topology_backend, &cfg.flow_backend, cfg.recover)?;
        let mut auth_cfg = cfg.auth.clone();
        if let config::BackendSpec::Embedded { path, .. } = &cfg.topology_backend {
            auth_cfg.api.sessions_file = Some(std::path::Path::new(path).join("sessions.json"));
        }
        let auth = skydive_api::auth::Auth::build(&auth_cfg)?;
        let listener = server::bind(&cfg.listen)
            .await
            .with_context(|| format!("analyzer.listen: cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;

        let mut hub = Hub::new(Graph::new());
        let history_sink = stores.recorder.as_ref().map(|_| hub.add_sink(64));
        let hub = hub.spawn();
        let flow_source = Arc::new(storage::AnalyzerFlows {
            store: stores.flows.clone(),
            expire: cfg.tables.expire_ms,
            agents: Default::default(),
        });
        let flows: Option<Arc<dyn skydive_gremlin::FlowSource>> = Some(flow_source.clone());
        let ctx: Shared = Arc::new(Context {
            service: Service::Analyzer,
            host_id: cfg.host_id.clone(),
            hub: hub.clone(),
            history: stores.history.clone(),
            flows,
            bpf: Some(Arc::new(captures::LibpcapBpf)),
            ws: cfg.ws.clone(),
            registry: Default::default(),
            gremlin: cfg.gremlin,
        });
        let resources =
            Resources::with_defaults(stores.resources.clone(), cfg.resource_defaults.clone());
        startup_capture(cfg.startup_capture.as_ref(), &resources).await?;
        let stores = Arc::new(stores);
        let (ingest, ingest_task) = flows::FlowIngest::start(stores.flows.clone(), cfg.flow_buffer);
        let agents = Agents::new(ctx.clone(), cfg.grace_period, ingest.clone());
        let _ = flow_source.agents.set(agents.clone());
        let alert_engine = alerts::AlertEngine::new(ctx.clone(), resources.clone(), webhook_tls);
        let elements = nodes::ElementApi::new(hub.clone(), resources.clone(), &cfg.host_id);
        let rules = rules::RulesEngine::new(hub.clone(), resources.clone(), &cfg.host_id);

        let app = axum::Router::new()
            .merge(server::common_routes().with_state(ctx.clone()))
            .merge(
                axum::Router::new()
                    .route(agents::ENDPOINT, axum::routing::any(agents::ws_agent))
                    .with_state(agents.clone()),
            )
            .merge(elements.routes())
            .merge(
                axum::Router::new()
                    .route(
                        flows::SUBSCRIBER_ENDPOINT,
                        axum::routing::any(flows::ws_flow_subscriber),
                    )
                    .with_state((ctx.clone(), ingest.clone())),
            )
            .merge(
                axum::Router::new()
                    .route("/api/pcap", axum::routing::post(flows::pcap_upload))
                    // Its own limit, counted as the body streams in.
                    .layer(axum::extract::DefaultBodyLimit::disable())
                    .with_state(flows::PcapUpload {
                        ingest: ingest.clone(),
                        table: cfg.tables.table(),
                        max_size: cfg.pcap_max_size,
                    }),
            )
            .merge(
                axum::Router::new()
                    .route("/api/config/{key}", axum::routing::get(config::Served::get))
                    .with_state(cfg.served.clone()),
            )
            .merge(resources::routes::<rules::NodeRule>(resources.clone()))
            .merge(resources::routes::<rules::EdgeRule>(resources.clone()))
            .merge(resources::routes::<alerts::Alert>(resources.clone()))
            .merge(resources::routes_reading::<captures::Capture>(
                resources.clone(),
                Some(hub.clone()),
            ))
            .merge(status::routes(status::AnalyzerStatus {
                ctx: ctx.clone(),
                agents: agents.clone(),
                stores: stores.clone(),
                alerts: alert_engine.counters.clone(),
            }));
        let app = server::with_layers(app, auth, cfg.rest_debug);

        let (shutdown, mut rx) = watch::channel(false);
        let acceptor = server_tls.as_ref().map(skydive_tls::ServerTls::acceptor);
        let server = tokio::spawn(server::serve(
            listener,
            app,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
            acceptor,
        ));
        let mut tasks = vec![
            ingest_task,
            tokio::spawn(ingest.run_stats(hub.clone())),
            resources.spawn_expiry(),
            tokio::spawn(elements.run()),
            tokio::spawn(rules.run()),
            tokio::spawn(
                fabric::FabricProbe::new(cfg.fabric.clone(), hub.clone(), &cfg.host_id).run(),
            ),
            tokio::spawn(alert_engine.run()),
            tokio::spawn(
                scheduler::Scheduler::new(ctx.clone(), resources.clone(), agents.clone()).run(),
            ),
            tokio::spawn(storage::retention_loop(
                stores.upkeep.values().cloned().collect(),
                Duration::from_secs(60),
                stores.status.clone(),
            )),
        ];
        if let Some(t) = server_tls.and_then(|t| t.reloader.spawn()) {
            tasks.push(t);
        }
        if let (Some(store), Some(sink)) = (stores.recorder.clone(), history_sink) {
            storage::spawn_recorder(store.clone(), sink, stores.status.clone());
            tasks.push(tokio::spawn(storage::close_orphans_later(
                store,
                cfg.grace_period,
                stores.status.clone(),
            )));
        }

        tracing::info!(%addr, host_id = %cfg.host_id, "analyzer started");
        Ok(Analyzer {
            addr,
            ctx,
            resources,
            agents,
            stores,
            shutdown,
            server,
            tasks,
        })
    }

    /// The hub of the live graph.
    pub fn hub(&self) -> &HubHandle {
        &self.ctx.hub
    }

    /// Stops serving, closes every connection and stops the tasks.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for c in self.ctx.registry.all() {
            c.close();
        }
        for t in &self.tasks {
            t.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        for t in self.tasks {
            let _ = t.await;
        }
        for (name, store) in &self.stores.upkeep {
            if let Err(e) = store.close() {
                tracing::warn!("storage.{name}: not closed cleanly: {e}");
            }
        }
    }

    /// Runs until the server stops (it stops only on error or shutdown).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }
}
