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
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = write_config(
        dir.path(),
        "allinone.yml",
        &format!(
            "host_id: alert-e2e\nanalyzer:\n  listen: {addr}\nagent:\n  listen: 127.0.0.1:{}\nstorage:\n  embedded:\n    path: {}\n",
            free_port(),
            dir.path().join("data").display()
        ),
    );
    let _p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "allinone"],
        &dir.path().join("allinone.log"),
    );
    wait_api(&addr);
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
    drop(clean);
}
