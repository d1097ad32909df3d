//! The OVSDB client against a real ovsdb-server (Open vSwitch started by the test script, or
//! by hand: `/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random`): monitor,
//! update notifications for a bridge created and deleted with ovs-vsctl, and a transaction.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use skydive_probes::ovsdb::{Notification, OvsdbClient, Tables, map, set, string};

const SOCK: &str = "/var/run/openvswitch/db.sock";

fn vsctl(args: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("ovs-vsctl {args}"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "ovs-vsctl {args}");
}

struct Bridge(&'static str);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ovs-vsctl")
            .args(["--if-exists", "del-br", self.0])
            .status();
    }
}

async fn wait_for(
    notes: &mut tokio::sync::mpsc::UnboundedReceiver<Notification>,
    tables: &mut Tables,
    mut cond: impl FnMut(&Tables) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond(tables) {
            match notes.recv().await {
                Some(Notification::Update(_, u)) => tables.apply(&u),
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("the update arrives");
}

#[tokio::test]
async fn monitor_follows_a_real_ovsdb_server() {
    if !skydive_testkit::require(
        "monitor_follows_a_real_ovsdb_server",
        std::path::Path::new(SOCK).exists(),
        &format!("an ovsdb-server at {SOCK}"),
    ) {
        return;
    }
    let (client, mut notes) = OvsdbClient::connect(&format!("unix:{SOCK}")).await.unwrap();
    let initial = client
        .monitor(
            "Open_vSwitch",
            json!("skydive-test"),
            &[
                (
                    "Bridge",
                    &["name", "ports", "external_ids", "datapath_type"],
                ),
                ("Port", &["name", "interfaces"]),
                ("Interface", &["name", "type", "options"]),
            ],
        )
        .await
        .unwrap();
    let mut tables = Tables::default();
    tables.apply(&initial);

    let _br = Bridge("skyovs0");
    vsctl(
        "--may-exist add-br skyovs0 -- set bridge skyovs0 datapath_type=netdev external_ids:team=net",
    );
    vsctl("add-port skyovs0 skyp0 -- set interface skyp0 type=patch options:peer=skyp1");
    let bridge = |t: &Tables| {
        t.rows("Bridge")
            .find(|(_, r)| string(r, "name").as_deref() == Some("skyovs0"))
            .map(|(u, r)| (u.clone(), r.clone()))
    };
    wait_for(&mut notes, &mut tables, |t| {
        bridge(t).is_some_and(|(_, r)| set(&r, "ports").len() == 2)
    })
    .await;
    let (_, br) = bridge(&tables).unwrap();
    assert_eq!(map(&br, "external_ids")["team"], "net");
    assert_eq!(string(&br, "datapath_type").as_deref(), Some("netdev"));
    let patch = tables
        .rows("Interface")
        .find(|(_, r)| string(r, "name").as_deref() == Some("skyp0"))
        .map(|(_, r)| r.clone())
        .unwrap();
    assert_eq!(string(&patch, "type").as_deref(), Some("patch"));
    assert_eq!(map(&patch, "options")["peer"], "skyp1");
    // Every port the bridge lists is a Port row we know.
    for p in set(&br, "ports") {
        assert!(tables.row("Port", p.as_str().unwrap()).is_some());
    }

    // A transaction of ours, seen back through the monitor.
    let (uuid, _) = bridge(&tables).unwrap();
    client
        .transact(
            "Open_vSwitch",
            vec![json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["uuid", uuid]]],
                "mutations": [["external_ids", "insert", ["map", [["skydive", "yes"]]]]]})],
        )
        .await
        .unwrap();
    wait_for(&mut notes, &mut tables, |t| {
        bridge(t).is_some_and(|(_, r)| {
            map(&r, "external_ids").get("skydive").map(String::as_str) == Some("yes")
        })
    })
    .await;
    // A bad transaction is an error with the server's reason.
    let err = client
        .transact(
            "Open_vSwitch",
            vec![json!({"op": "insert", "table": "NoSuchTable", "row": {}})],
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("NoSuchTable") || err.to_string().contains("unknown table"),
        "{err}"
    );

    vsctl("del-br skyovs0");
    wait_for(&mut notes, &mut tables, |t| bridge(t).is_none()).await;
}
