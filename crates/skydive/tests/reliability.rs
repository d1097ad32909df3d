//! Real `skydive analyzer` and `skydive agent` processes killed with SIGKILL: the graph
//! comes back, without duplicates, and a dead agent's graph goes after its grace period.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

struct Cluster {
    dir: tempfile::TempDir,
    analyzer: Proc,
    agents: Vec<Proc>,
    addr: String,
}

fn analyzer_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    write_config(
        dir,
        "analyzer.yml",
        &format!(
            "host_id: analyzer1\nanalyzer:\n  listen: 127.0.0.1:{port}\n  topology:\n    agent_grace_period: 2\nstorage:\n  embedded:\n    path: {}\n",
            dir.join("data").display()
        ),
    )
}

fn agent_config(dir: &std::path::Path, name: &str, analyzer: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("{name}.yml"),
        &format!(
            "host_id: {name}\nanalyzers: [{analyzer}]\nagent:\n  listen: 127.0.0.1:{}\n  metadata:\n    rack: r1\n",
            free_port()
        ),
    )
}

fn cluster(agents: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = analyzer_config(dir.path(), port);
    let analyzer = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("analyzer.log"),
    );
    wait_api(&addr);
    let agents = agents
        .iter()
        .map(|name| {
            let conf = agent_config(dir.path(), name, &addr);
            Proc::spawn(
                &["-c", conf.to_str().unwrap(), "agent"],
                &dir.path().join(format!("{name}.log")),
            )
        })
        .collect();
    Cluster {
        dir,
        analyzer,
        agents,
        addr,
    }
}

fn ids(c: &Client, q: &str) -> Vec<String> {
    let mut v: Vec<String> = query(c, q)
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n["ID"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn killed_analyzer_gets_the_whole_graph_back_within_five_seconds() {
    let mut cl = cluster(&["agent1", "agent2"]);
    let c = Client::new(&cl.addr, None);
    eventually(Duration::from_secs(10), "both agents' hosts", || {
        count(&c, "G.V().Has('Type', 'host')") == 2
    });
    let r = c
        .send(
            "POST",
            "/api/node",
            Some((
                "application/json",
                serde_json::to_vec(
                    &json!({"ID": "tor", "Metadata": {"Name": "tor", "Type": "fabric"}}),
                )
                .unwrap(),
            )),
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 201);
    // Both agents' probes have reported the host's interfaces, and nothing moves any more.
    eventually(
        Duration::from_secs(10),
        "each host with its loopback",
        || count(&c, "G.V().Has('Type', 'host').Out().Has('Name', 'lo')") == 2,
    );
    let mut before = ids(&c, "G.V()");
    eventually(Duration::from_secs(10), "a settled graph", || {
        std::thread::sleep(Duration::from_millis(500));
        let now = ids(&c, "G.V()");
        std::mem::replace(&mut before, now) == before
    });
    assert!(
        before.len() >= 5,
        "2 hosts, their interfaces, the API node: {before:?}"
    );
    let host1 = query(&c, "G.V().Has('Name', 'agent1')").unwrap();
    assert_eq!(
        host1[0]["Metadata"]["rack"], "r1",
        "agent.metadata reaches the analyzer"
    );

    cl.analyzer.kill9();
    assert_eq!(count(&c, "G.V()"), -1, "the analyzer is down");
    cl.analyzer.start();
    let took = eventually(Duration::from_secs(15), "the whole graph is back", || {
        ids(&c, "G.V()") == before
    });
    assert!(
        took < Duration::from_secs(5),
        "the graph took {took:?} to come back after the restart\n{}",
        cl.analyzer.log_text()
    );
    // No duplicates: every host once, every node with its own ID, as before.
    assert_eq!(count(&c, "G.V().Has('Type', 'host')"), 2);
    let status: Value = c.get("/api/status").unwrap();
    assert_eq!(status["Agents"].as_object().unwrap().len(), 2);
    drop(cl.dir);
}

#[test]
fn killed_agent_leaves_after_its_grace_period_and_keeps_its_ids_when_it_returns() {
    let mut cl = cluster(&["agent1", "agent2"]);
    let c = Client::new(&cl.addr, None);
    eventually(Duration::from_secs(10), "both agents' hosts", || {
        count(&c, "G.V().Has('Type', 'host')") == 2
    });
    let before = ids(&c, "G.V().Has('Name', 'agent1')");

    // Back before the grace period ends: same IDs, nothing duplicated.
    cl.agents[0].kill9();
    cl.agents[0].start();
    std::thread::sleep(Duration::from_millis(2500));
    eventually(Duration::from_secs(5), "agent1 reconnected", || {
        c.get::<Value>("/api/status")
            .map(|s| s["Agents"].get("agent1").is_some())
            .unwrap_or(false)
    });
    assert_eq!(ids(&c, "G.V().Has('Name', 'agent1')"), before);
    assert_eq!(count(&c, "G.V().Has('Type', 'host')"), 2);

    // Gone for good: its graph leaves after the grace period (2 s), not before.
    cl.agents[0].kill9();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        count(&c, "G.V().Has('Name', 'agent1')"),
        1,
        "kept during the grace period"
    );
    eventually(Duration::from_secs(5), "agent1's graph is removed", || {
        count(&c, "G.V().Has('Name', 'agent1')") == 0
    });
    assert_eq!(
        count(&c, "G.V().Has('Name', 'agent2')"),
        1,
        "the other agent is untouched"
    );
}

/// Overwrites page `n` (1-based, 4 KiB pages) of a file with garbage.
fn smash_page(file: &std::path::Path, n: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start((n - 1) * 4096)).unwrap();
    f.write_all(&[0xA5; 4096]).unwrap();
    f.sync_all().unwrap();
}

/// A leaf page of a table's B-tree: from its root, the child of the middle cell of each
/// interior page down to a leaf.
fn leaf_page_of(db: &std::path::Path, table: &str) -> u64 {
    let root: i64 =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
    let file = std::fs::read(db).unwrap();
    let mut n = root as usize;
    loop {
        let page = &file[(n - 1) * 4096..n * 4096];
        // 0x02 and 0x05: interior pages (index, as WITHOUT ROWID tables are, and table).
        if !matches!(page[0], 0x02 | 0x05) {
            return n as u64;
        }
        let cells = u16::from_be_bytes([page[3], page[4]]) as usize;
        let at = 12 + 2 * (cells / 2);
        let cell = u16::from_be_bytes([page[at], page[at + 1]]) as usize;
        n = u32::from_be_bytes([page[cell], page[cell + 1], page[cell + 2], page[cell + 3]])
            as usize;
    }
}

#[test]
fn a_damaged_store_stops_the_start_and_recover_keeps_what_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = analyzer_config(dir.path(), port);
    let addr = format!("127.0.0.1:{port}");
    let mut p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("a.log"),
    );
    wait_api(&addr);
    let c = Client::new(&addr, None);
    for i in 0..600 {
        let body = json!({"Action": "create", "Metadata": {"Name": format!("tor{i:03}"), "Type": "fabric", "Pad": "x".repeat(150)}});
        let _: Value = c.json("POST", "/api/noderule", &body, &[]).unwrap();
    }
    let status: Value = c.get("/api/status").unwrap();
    assert_eq!(status["Storage"]["State"], "ok");
    // A clean stop folds the log into the database.
    p.stop();
    let db = dir.path().join("data").join("skydive.db");
    smash_page(&db, leaf_page_of(&db, "resources"));

    // The start is refused, naming the store and the way out.
    let o = std::process::Command::new(bin())
        .args(["-c", conf.to_str().unwrap(), "analyzer"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is damaged") && err.contains("--recover"),
        "{err}"
    );

    // With --recover: the damaged file aside, the readable rules kept, and said.
    let _p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer", "--recover"],
        &dir.path().join("b.log"),
    );
    wait_api(&addr);
    let rules: Value = c.get("/api/noderule").unwrap();
    let kept = rules.as_object().unwrap().len();
    let status: Value = c.get("/api/status").unwrap();
    // The rules of one leaf lost.
    assert!(
        (570..600).contains(&kept),
        "{kept} rules kept: {}",
        status["Storage"]["Recovery"]
    );
    let recovery = status["Storage"]["Recovery"].as_str().unwrap_or_default();
    assert!(
        recovery.contains(&format!("kept {kept} rows of resources")),
        "{status}"
    );
    assert_eq!(status["Storage"]["State"], "ok");
    let aside: Vec<String> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("skydive.db.damaged-"))
        .collect();
    assert!(!aside.is_empty(), "the damaged database kept aside");
}

#[test]
fn damage_met_while_running_is_reported_as_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = analyzer_config(dir.path(), port);
    let addr = format!("127.0.0.1:{port}");
    let mut p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("a.log"),
    );
    wait_api(&addr);
    let c = Client::new(&addr, None);
    for i in 0..600 {
        let body = json!({"Action": "create", "Metadata": {"Name": format!("tor{i:03}"), "Type": "fabric", "Pad": "x".repeat(150)}});
        let _: Value = c.json("POST", "/api/noderule", &body, &[]).unwrap();
    }
    p.stop();
    p.start();
    wait_api(&addr);
    // Damaged under the running analyzer (a failing disk): pages of the second half, where
    // the history of the rules' nodes is. A history query reads them from the disk.
    let db = dir.path().join("data").join("skydive.db");
    let pages = std::fs::metadata(&db).unwrap().len() / 4096;
    for n in (pages / 2..pages).step_by(3) {
        smash_page(&db, n);
    }
    eventually(Duration::from_secs(10), "the damage seen", || {
        let _ = c.query("G.At('-1s').V().Count()", "application/json");
        let s: Value = c.get("/api/status").unwrap_or(Value::Null);
        s["Storage"]["State"] == "degraded"
    });
    let s: Value = c.get("/api/status").unwrap();
    let e = s["Storage"]["Error"].as_str().unwrap();
    assert!(e.contains("malformed") && e.contains("--recover"), "{e}");
    assert!(
        p.log_text().contains("the store is damaged"),
        "{}",
        p.log_text()
    );
}
