//! Alerts on the real network with `skydive allinone`: a webhook on 127.0.0.1 receives the
//! alert when a network namespace matching the expression is created. Needs root.

mod common;
#[path = "../../analyzer/tests/support/hook.rs"]
mod hook;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

#[test]
fn a_new_namespace_reaches_the_webhook() {
    if !root("a_new_namespace_reaches_the_webhook") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, addr) = allinone(dir.path(), "alert-e2e", "");
    let c = Client::new(&addr, None);
    let hook = hook::Hook::start();
    let alert: Value = c
        .json(
            "POST",
            "/api/alert",
            &json!({"Name": "new netns", "Expression": "G.V().Has('Type', 'netns', 'Name', 'alert-e2e-ns')", "Action": hook.url}),
            &[],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(hook.bodies().is_empty(), "nothing matches yet");
    let mut clean = Cleanup(Vec::new());
    clean.netns("alert-e2e-ns");
    eventually(Duration::from_secs(10), "the webhook call", || {
        !hook.bodies().is_empty()
    });
    let body = hook.bodies()[0].clone();
    assert_eq!(body["UUID"], alert["UUID"]);
    assert_eq!(body["ReasonData"][0]["Metadata"]["Name"], "alert-e2e-ns");
    assert_eq!(body["ReasonData"][0]["Metadata"]["Type"], "netns");

    // An interface toggled up and down: one alert each time, with different payloads.
    let toggles = hook::Hook::start();
    sh("ip -n alert-e2e-ns link add alertdum0 type veth peer name alertdum1");
    sh("ip -n alert-e2e-ns link set alertdum1 up");
    c.json::<Value, _>(
        "POST",
        "/api/alert",
        &json!({"Expression": "G.V().Has('Name', 'alertdum0').Values('State')", "Action": toggles.url}),
        &[],
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the first state", || {
        toggles.bodies().len() == 1
    });
    assert_eq!(toggles.bodies()[0]["ReasonData"], json!(["DOWN"]));
    // The kernel may report a state on the way (LOWERLAYERDOWN while the veth's carrier comes
    // up): each state is an alert of its own, so the last one is waited for.
    let last = |h: &hook::Hook| h.bodies().last().map(|b| b["ReasonData"].clone());
    sh("ip -n alert-e2e-ns link set alertdum0 up");
    eventually(Duration::from_secs(10), "up", || {
        last(&toggles) == Some(json!(["UP"]))
    });
    sh("ip -n alert-e2e-ns link set alertdum0 down");
    eventually(Duration::from_secs(10), "down", || {
        last(&toggles) == Some(json!(["DOWN"]))
    });
    let states: Vec<Value> = toggles
        .bodies()
        .iter()
        .map(|b| b["ReasonData"].clone())
        .collect();
    assert_eq!(states.first(), Some(&json!(["DOWN"])), "{states:?}");
    assert!(states.contains(&json!(["UP"])), "{states:?}");
    assert_eq!(states.last(), Some(&json!(["DOWN"])), "{states:?}");
    // One alert per change of the result: never the same payload twice in a row.
    assert!(states.windows(2).all(|w| w[0] != w[1]), "{states:?}");
    drop(clean);
}
