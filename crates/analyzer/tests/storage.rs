//! The analyzer's history recorder on a disk that fills up: the failure is reported in
//! `/api/status`, the live graph goes on, and once there is space again every change made
//! meanwhile reaches the history. Needs root (a small tmpfs is mounted for the store).

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestAnalyzer;
use serde_json::Value;
use skydive_graph::{GraphView, Node, metadata, now_ms};
use skydive_testkit::eventually;

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallDisk { dir })
    }

    /// Fills the disk with one file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        let p = self.dir.path().join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", p.display()))
            .stderr(std::process::Stdio::null())
            .status();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a store thread of the analyzer may still hold a file open, and a plain
        // umount would then fail and leave the tmpfs mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_is_reported_and_the_history_catches_up_when_space_returns() {
    if !skydive_testkit::require_root(
        "a_full_disk_is_reported_and_the_history_catches_up_when_space_returns",
    ) {
        return;
    }
    let disk = SmallDisk::mount("8m").expect("mount a tmpfs");
    let data = disk.dir.path().join("data");
    let a = TestAnalyzer::start_with(|s| {
        s.storage.insert(
            "embedded".into(),
            serde_json::json!({"driver": "embedded", "path": data.display().to_string()}),
        );
    });
    let hub = a.analyzer.as_ref().unwrap().hub().clone();
    let add = |name: String| {
        let hub = hub.clone();
        a.rt.block_on(async move {
            hub.apply(None, move |g| {
                let pad = "x".repeat(2000);
                let n = Node::new(
                    name.as_str(),
                    metadata! {"Name" => name.as_str(), "Type" => "device", "Pad" => pad},
                    "h",
                    "agent.h",
                    now_ms(),
                );
                Ok(vec![g.add_node(n)?])
            })
            .await
            .unwrap()
        });
    };
    let status = |a: &TestAnalyzer| -> Value { a.client.get("/api/status").unwrap() };
    add("before".into());

    let filler = disk.fill();
    // Changes go on in the live graph while the store refuses them.
    for i in 0..200 {
        add(format!("during-{i}"));
    }
    eventually(Duration::from_secs(10), "the error in /api/status", || {
        status(&a)["Storage"]["State"] == "error"
    });
    let st = status(&a);
    let msg = st["Storage"]["Error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("cannot write the topology history") && msg.contains("full"),
        "{msg}"
    );
    assert!(st["Storage"]["History"]["Pending"].as_u64().unwrap() > 0);
    assert_eq!(
        a.client
            .query("G.V().Has('Type', 'device').Count()", "application/json")
            .unwrap()
            .text(),
        "201"
    );

    std::fs::remove_file(filler).unwrap();
    eventually(Duration::from_secs(10), "the store writable again", || {
        status(&a)["Storage"]["State"] == "ok"
    });
    let st = status(&a);
    assert_eq!(st["Storage"]["History"]["Pending"], 0);
    assert_eq!(st["Storage"]["History"]["Lost"], 0);
    let history = a.analyzer.as_ref().unwrap().ctx.history.clone();
    let now = history.at(now_ms()).unwrap();
    assert_eq!(
        now.all_nodes().filter(|n| n.type_str() == "device").count(),
        201,
        "every change made while the disk was full is in the history"
    );
}

#[test]
fn a_read_only_data_directory_is_refused_at_start_with_the_reason() {
    if !skydive_testkit::require_root(
        "a_read_only_data_directory_is_refused_at_start_with_the_reason",
    ) {
        return;
    }
    let disk = SmallDisk::mount("1m").expect("mount a tmpfs");
    let ok = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(disk.dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "remount read-only");
    let settings = common::settings(&disk.dir.path().join("data"), "127.0.0.1:0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(skydive_analyzer::Analyzer::start(&settings))
        .map(|_| ())
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with("storage.embedded: the embedded store cannot be used")
            && msg.contains("Read-only file system"),
        "{msg}"
    );
}
