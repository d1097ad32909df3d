//! Alerts over real sockets: webhooks on a local HTTP server, a script action, WebSocket
//! subscribers, firing rules, and an unreachable webhook that delays nothing (Skydive's alerts).

mod common;
#[path = "support/hook.rs"]
mod hook;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use hook::Hook;

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn create_alert(a: &TestAnalyzer, body: Value) -> String {
    let r = a.send("POST", "/api/alert", Some(body), &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        v["CreateTime"].as_str().unwrap().contains('T'),
        "RFC 3339: {v}"
    );
    v["UUID"].as_str().unwrap().to_string()
}

#[test]
fn alerts_are_validated_and_crud_works() {
    let mut a = TestAnalyzer::start();
    for (body, reason) in [
        (json!({"Expression": "G.V("}), "invalid Expression"),
        (json!({}), "Expression is required"),
        (
            json!({"Expression": "G.V()", "Trigger": "duration:x"}),
            "invalid Trigger",
        ),
        (
            json!({"Expression": "G.V()", "Action": "mailto:x"}),
            "invalid Action",
        ),
    ] {
        let r = a.send("POST", "/api/alert", Some(body.clone()), &[]);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().starts_with(reason), "{body}: {}", r.text());
    }
    let id = create_alert(
        &a,
        json!({"Name": "a1", "Expression": "G.V().Has('Name', 'nothing')"}),
    );
    // Alerts can be patched.
    let r = a.send(
        "PATCH",
        &format!("/api/alert/{id}"),
        Some(json!([{"op": "replace", "path": "/Name", "value": "a2"}])),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    a.restart();
    assert_eq!(a.get(&format!("/api/alert/{id}"))["Name"], "a2");
    assert_eq!(
        a.send("DELETE", &format!("/api/alert/{id}"), None, &[])
            .status,
        200
    );
    assert_eq!(
        a.send("GET", &format!("/api/alert/{id}"), None, &[]).status,
        404
    );
}

#[test]
fn webhook_script_and_websocket_receive_what_fires_and_only_that() {
    let a = TestAnalyzer::start();
    let hook = Hook::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert.json");
    let script = dir.path().join("action.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat >> {}\necho >> {}\n",
            out.display(),
            out.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();

    let mut ws = a.ws(
        "/ws/subscriber",
        &[("X-Host-ID", "alert-watcher"), ("X-Client-Type", "webui")],
    );
    let id = create_alert(
        &a,
        json!({"Expression": "G.V().Has('Name', 'toggle').Values('State')", "Action": hook.url}),
    );
    let sid = create_alert(
        &a,
        json!({"Expression": "G.V().Has('Name', 'toggle')", "Action": format!("file://{}", script.display())}),
    );
    // Nothing matches yet: nothing fires.
    std::thread::sleep(Duration::from_millis(300));
    assert!(hook.bodies().is_empty());

    let node =
        json!({"ID": "toggle", "Metadata": {"Name": "toggle", "Type": "device", "State": "UP"}});
    assert_eq!(a.send("POST", "/api/node", Some(node), &[]).status, 201);
    eventually(Duration::from_secs(5), "the first webhook call", || {
        hook.bodies().len() == 1
    });
    let patch = |key: &str, v: Value| {
        let r = a.send(
            "PATCH",
            "/api/node/toggle",
            Some(json!([{"op": "add", "path": format!("/Metadata/{key}"), "value": v}])),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    patch("State", json!("DOWN"));
    eventually(Duration::from_secs(5), "the second webhook call", || {
        hook.bodies().len() == 2
    });
    // A change that does not change the result does not fire.
    patch("MTU", json!(9000));
    std::thread::sleep(Duration::from_millis(500));
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["UUID"], id.as_str());
    assert_eq!(bodies[0]["ReasonData"], json!(["UP"]));
    assert_eq!(bodies[1]["ReasonData"], json!(["DOWN"]));
    assert!(bodies[1]["Timestamp"].as_str().unwrap().ends_with('Z'));
    let headers = &hook.got.lock().unwrap()[0].1;
    assert!(headers[0].starts_with("POST /hook"), "{headers:?}");
    assert!(
        !headers
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("content-type")),
        "no Content-Type, as Skydive: {headers:?}"
    );

    // The script got each firing of its alert on stdin (the node's updates change it).
    eventually(Duration::from_secs(5), "the script's output", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() >= 1)
    });
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["UUID"], sid.as_str());
    assert_eq!(first["ReasonData"][0]["ID"], "toggle");

    // WebSocket subscribers got the Alert messages.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Message::Text(t) = ws.read().unwrap() {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["Namespace"] == "Alert" {
                assert_eq!(v["Type"], "Alert");
                seen.push(v["Obj"]["UUID"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(seen.contains(&id));
    let status = a.get("/api/status");
    assert!(status["Alerts"]["Fired"].as_u64().unwrap() >= 3, "{status}");
    assert_eq!(status["Alerts"]["ActionsFailed"], 0);
}

#[test]
fn duration_triggers_tick_and_a_dead_webhook_delays_nothing() {
    let a = TestAnalyzer::start();
    let hook = Hook::start();
    // A port nothing listens on.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let node = json!({"ID": "tick", "Metadata": {"Name": "tick", "Type": "device"}});
    assert_eq!(a.send("POST", "/api/node", Some(node), &[]).status, 201);
    let mut ws = a.ws(
        "/ws/subscriber",
        &[("X-Host-ID", "alert-watcher"), ("X-Client-Type", "webui")],
    );
    let t0 = Instant::now();
    create_alert(
        &a,
        json!({"Expression": "G.V().Has('Name', 'tick')", "Action": dead, "Trigger": "duration:+1s"}),
    );
    let live = create_alert(
        &a,
        json!({"Expression": "G.V().Has('Name', 'tick').Values('Name')", "Action": hook.url, "Trigger": "duration:1s"}),
    );
    // Both are evaluated at once when registered: the live webhook is called at once,
    // whatever the dead one does.
    eventually(Duration::from_secs(3), "the live webhook", || {
        !hook.bodies().is_empty()
    });
    let delay = hook.got.lock().unwrap()[0].0 - t0;
    assert!(
        delay < Duration::from_millis(900),
        "the dead webhook delayed the live one: {delay:?}"
    );
    assert_eq!(hook.bodies()[0]["UUID"], live.as_str());
    // The dead webhook is tried three times, a second apart, then abandoned and counted.
    eventually(Duration::from_secs(8), "the failure counted", || {
        a.get("/api/status")["Alerts"]["ActionsFailed"] == 1
    });
    // A duration alert fires again when its result comes back after being empty.
    let r = a.send("DELETE", "/api/node/tick", None, &[]);
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    let before = hook.bodies().len();
    let node = json!({"ID": "tick", "Metadata": {"Name": "tick", "Type": "device"}});
    assert_eq!(a.send("POST", "/api/node", Some(node), &[]).status, 201);
    eventually(Duration::from_secs(4), "fired again on a tick", || {
        hook.bodies().len() == before + 1
    });
    let mut alerts = 0;
    let end = Instant::now() + Duration::from_secs(3);
    while alerts < 2 && Instant::now() < end {
        if let Ok(Message::Text(t)) = ws.read() {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["Namespace"] == "Alert" {
                alerts += 1;
            }
        }
    }
    assert!(alerts >= 2, "Alert messages on the WebSocket");
}
