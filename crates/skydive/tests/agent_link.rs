//! An agent and an analyzer in one process, over a real WebSocket: what the agent's graph
//! holds reaches the analyzer (additions, partial updates with the agent's revisions,
//! deletions), batched under load, and again after the analyzer restarts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use std::sync::Arc;

use skydive_agent::{Agent, AgentOptions, NoRequests};
use skydive_analyzer::Analyzer;
use skydive_api::client::Client;
use skydive_config::Settings;
use skydive_graph::{Edge, Node, metadata, now_ms};

fn settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings {
        host_id: "host-a".into(),
        ..Default::default()
    };
    s.analyzer.listen = format!("127.0.0.1:{}", free_port());
    s.agent.listen = "127.0.0.1:0".into();
    s.agent.metadata = json!({"mydict": {"value": 123}, "myarrays": {"integers": [1, 2, 3], "bools": [true, false], "strings": ["a", "b"]}});
    s.storage.insert(
        "embedded".into(),
        json!({"driver": "embedded", "path": dir.display().to_string()}),
    );
    s.analyzers = vec![s.analyzer.listen.clone()];
    s
}

fn veth(i: usize) -> Node {
    Node::new(
        format!("veth-{i}"),
        metadata! {"Name" => format!("veth{i}"), "Type" => "veth", "MTU" => 1500i64},
        "host-a",
        "agent.host-a",
        now_ms(),
    )
}

#[test]
fn the_agents_graph_reaches_the_analyzer_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let analyzer = rt.block_on(Analyzer::start(&s)).unwrap();
    // The link alone: the topology probes would add the host's real interfaces.
    let options = AgentOptions {
        probes: false,
        ..Default::default()
    };
    let agent = rt
        .block_on(Agent::start_with(&s, Arc::new(NoRequests), options))
        .unwrap();
    let c = Client::new(&analyzer.addr.to_string(), None);
    let local = Client::new(&agent.addr.to_string(), None);

    eventually(
        Duration::from_secs(5),
        "the host node on the analyzer",
        || count(&c, "G.V().Has('Type', 'host')") == 1,
    );
    let host = query(&c, "G.V().Has('Type', 'host')").unwrap();
    assert_eq!(host[0]["Metadata"]["Name"], "host-a");
    assert_eq!(host[0]["Metadata"]["mydict"]["value"], 123);
    assert_eq!(
        host[0]["Metadata"]["myarrays"]["bools"],
        json!([true, false])
    );
    assert_eq!(host[0]["Origin"], "agent.host-a");
    assert_eq!(host[0]["Host"], "host-a");
    let host_id = host[0]["ID"].as_str().unwrap().to_string();
    // The agent serves its own API over its own graph.
    let info: serde_json::Value = local.get("/api").unwrap();
    assert_eq!(info["Service"], "agent");
    assert_eq!(count(&local, "G.V().Has('Type', 'host')"), 1);

    // A burst of changes: they travel batched, and all arrive.
    let hub = agent.hub().clone();
    let hid = host_id;
    rt.block_on(hub.apply(None, move |g| {
        let mut evs = Vec::new();
        for i in 0..2000 {
            evs.push(g.add_node(veth(i))?);
            let e = Edge::new(
                format!("own-{i}"),
                hid.as_str(),
                format!("veth-{i}"),
                metadata! {"RelationType" => "ownership"},
                "host-a",
                "agent.host-a",
                now_ms(),
            );
            evs.push(g.add_edge(e)?);
        }
        Ok(evs)
    }))
    .unwrap();
    eventually(
        Duration::from_secs(10),
        "2000 veths and their edges",
        || count(&c, "G.V().Has('Type', 'veth')") == 2000 && count(&c, "G.E()") == 2000,
    );
    let st = agent.links[0].state();
    assert!(st.connected);
    assert!(
        st.frames_sent * 100 < st.messages_sent,
        "4000 events in a handful of frames: {st:?}"
    );

    // An update travels as a partial update with the agent's revision.
    rt.block_on(hub.apply(None, |g| {
        Ok(g.update_node_metadata("veth-7", now_ms(), |m| {
            m.insert("MTU", 9000i64);
            m.insert("State", "UP");
        })?
        .into_iter()
        .collect())
    }))
    .unwrap();
    eventually(Duration::from_secs(5), "the update on the analyzer", || {
        query(&c, "G.V('veth-7').Values('MTU')") == Some(json!([9000]))
    });
    let n = query(&c, "G.V('veth-7')").unwrap();
    assert_eq!(n[0]["Revision"], 2);
    assert_eq!(n[0]["Metadata"]["State"], "UP");
    // A deletion too.
    rt.block_on(hub.apply(None, |g| g.delete_node("veth-8", now_ms())))
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the deletion on the analyzer",
        || count(&c, "G.V().Has('Name', 'veth8')") == 0 && count(&c, "G.E()") == 1999,
    );

    // The analyzer restarts (same port, same store): the agent resynchronises.
    rt.block_on(analyzer.shutdown());
    rt.block_on(hub.apply(None, |g| {
        Ok(g.update_node_metadata("veth-9", now_ms(), |m| {
            m.insert("State", "DOWN");
        })?
        .into_iter()
        .collect())
    }))
    .unwrap();
    let analyzer = rt.block_on(Analyzer::start(&s)).unwrap();
    let took = eventually(
        Duration::from_secs(10),
        "the graph back on the restarted analyzer",
        || count(&c, "G.V()") == 2000 && count(&c, "G.E()") == 1999,
    );
    assert!(took < Duration::from_secs(5), "resynchronised in {took:?}");
    assert_eq!(
        query(&c, "G.V('veth-9').Values('State')"),
        Some(json!(["DOWN"])),
        "changes made while it was down"
    );
    assert!(agent.links[0].state().syncs >= 2);
    let status: serde_json::Value = local.get("/api/status").unwrap();
    assert_eq!(status["Analyzers"]["host-a"]["IsConnected"], true);
    assert_eq!(status["Analyzers"]["host-a"]["IsMaster"], true);

    rt.block_on(agent.shutdown());
    rt.block_on(analyzer.shutdown());
}

#[test]
fn metadata_config_files_reach_the_host_node_and_follow_their_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack.yml");
    let props = dir.path().join("role.properties");
    std::fs::write(&rack, "site:\n  row: 12\n  rack: r7\nother: x\n").unwrap();
    std::fs::write(&props, "role=compute\n# a comment\nzone = eu-1\n").unwrap();
    let mut s = settings(dir.path());
    s.agent.metadata_config = json!({"files": [
        {"path": rack.display().to_string(), "name": "Rack", "selector": "site"},
        {"path": props.display().to_string(), "name": "Role"}
    ]});
    let rt = tokio::runtime::Runtime::new().unwrap();
    let analyzer = rt.block_on(Analyzer::start(&s)).unwrap();
    let options = AgentOptions {
        probes: false,
        ..Default::default()
    };
    let agent = rt
        .block_on(Agent::start_with(&s, Arc::new(NoRequests), options))
        .unwrap();
    let c = Client::new(&analyzer.addr.to_string(), None);
    eventually(Duration::from_secs(5), "Config on the host node", || {
        query(&c, "G.V().Has('Type', 'host').Values('Config')")
            == Some(
                json!([{"Rack": {"row": 12, "rack": "r7"}, "Role": {"role": "compute", "zone": "eu-1"}}]),
            )
    });
    // A file that changes is read again; one that breaks loses its key until it is fixed.
    std::fs::write(&rack, "site:\n  row: 13\n  rack: r7\n").unwrap();
    std::fs::write(&props, "").unwrap();
    std::fs::remove_file(&props).unwrap();
    eventually(
        Duration::from_secs(12),
        "the changes on the host node",
        || {
            query(&c, "G.V().Has('Type', 'host').Values('Config')")
                == Some(json!([{"Rack": {"row": 13, "rack": "r7"}}]))
        },
    );
    rt.block_on(agent.shutdown());
    rt.block_on(analyzer.shutdown());
}
