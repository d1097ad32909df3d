//! The container probes against real daemons: a `dockerd` each test starts in a folder of
//! its own (Debian's docker.io, an image imported from busybox), and `runc` run by hand;
//! checked through `skydive allinone`'s API with the queries a user would write. Needs root
//! and the packages (the test script installs them); without them the tests say so and pass,
//! except under `CI=true` where they fail. Everything a test starts is removed when it ends.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;
use skydive_testkit::docker::{self, Dockerd, IMAGE};

fn needs(test: &str) -> bool {
    root(test)
        && require(
            test,
            docker::available(),
            "dockerd, runc and busybox (packages docker.io, runc, busybox-static)",
        )
}

/// `skydive allinone` with the container probes: Docker at `docker_url` with its namespaces
/// under `docker_netns`, runc's state under `runc_paths`; returns it with the agent's address
/// and a client of the analyzer.
fn allinone_with(
    dir: &Path,
    probes: &str,
    docker_url: &str,
    docker_netns: &Path,
    runc_paths: &[&Path],
) -> (Proc, String, Client) {
    let addr = format!("127.0.0.1:{}", free_port());
    let agent = format!("127.0.0.1:{}", free_port());
    let runc: Vec<String> = runc_paths
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let conf = write_config(
        dir,
        "allinone.yml",
        &format!(
            "host_id: containers-{pid}\nanalyzer:\n  listen: {addr}\nagent:\n  listen: {agent}\n  topology:\n    probes: [{probes}]\n    docker:\n      url: {docker_url}\n      netns:\n        run_path: {netns}\n    runc:\n      run_path: [{runc}]\nstorage:\n  embedded:\n    path: {data}\n",
            pid = std::process::id(),
            netns = docker_netns.display(),
            runc = runc.join(", "),
            data = dir.join("skydive-data").display()
        ),
    );
    let p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "allinone"],
        &dir.join("allinone.log"),
    );
    wait_api(&addr);
    wait_api(&agent);
    let c = Client::new(&addr, None);
    (p, agent, c)
}

fn q(c: &Client, query: &str) -> Value {
    common::query(c, query).unwrap_or(Value::Null)
}

fn names(c: &Client, query: &str) -> Vec<String> {
    let mut v: Vec<String> = q(c, &format!("{query}.Values('Name')"))
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn container(c: &Client, name: &str) -> Value {
    q(
        c,
        &format!("G.V().Has('Type', 'container', 'Name', '{name}')"),
    )
    .get(0)
    .cloned()
    .unwrap_or(Value::Null)
}

/// The agent's `/api/status` entry of `probe`.
fn status(agent: &str, probe: &str) -> Value {
    Client::new(agent, None)
        .get::<Value>("/api/status")
        .map(|s| s["TopologyProbes"][probe].clone())
        .unwrap_or(Value::Null)
}

fn wait(what: &str, cond: impl FnMut() -> bool) {
    eventually(Duration::from_secs(20), what, cond);
}

#[test]
fn docker_containers_are_nodes_in_their_namespaces_and_follow_the_daemon() {
    let test = "docker_containers_are_nodes_in_their_namespaces_and_follow_the_daemon";
    if !needs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Dockerd::start(dir.path());
    // Docker's own runc state too: what Docker shows must not be shown twice.
    let moby_runc = dir.path().join("exec/runtime-runc/moby");
    let (_p, addr, c) = allinone_with(
        dir.path(),
        "docker, runc",
        &d.url,
        &d.netns_run_path(),
        &[&moby_runc],
    );
    let web_id = d.docker(&format!(
        "run -d --name web --network none --add-host DB.local:169.254.5.5 --label a.b.c=123 --label 'x~y/z@w=1' --label com.example.tier=front {IMAGE} sleep 1000"
    ));
    d.docker(&format!(
        "run -d --name side --network container:web {IMAGE} sleep 1000"
    ));
    d.docker(&format!(
        "run -d --name hostc --network host {IMAGE} sleep 1000"
    ));
    wait("web and side in the namespace named web", || {
        names(
            &c,
            "G.V().Has('Type', 'netns', 'Name', 'web').Out('Type', 'container')",
        ) == ["side", "web"]
    });
    let web = container(&c, "web");
    let m = &web["Metadata"];
    assert_eq!(m["Manager"], "docker");
    assert_eq!(m["Container"]["ID"], json!(web_id));
    assert_eq!(m["Container"]["Runtime"], "docker");
    assert_eq!(m["Container"]["Status"], "running");
    assert_eq!(m["Container"]["Image"], IMAGE);
    assert!(
        m["Container"]["ImageID"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{m}"
    );
    let pid: i64 = d.docker("inspect -f '{{.State.Pid}}' web").parse().unwrap();
    assert_eq!(m["Container"]["InitProcessPID"], json!(pid));
    assert_eq!(
        m["Container"]["Labels"],
        json!({"a": {"b": {"c": "123"}}, "x~y/z@w": "1", "com": {"example": {"tier": "front"}}})
    );
    // The hosts file Docker made for it (the standard IPv6 lines left out).
    assert_eq!(
        m["Container"]["Hosts"],
        json!({"IP": "169.254.5.5", "Hostname": "db.local", "ByIP": {"169.254.5.5": ["db.local"]}})
    );
    // Labels can be queried by their dotted path.
    assert_eq!(
        names(&c, "G.V().Has('Container.Labels.a.b.c', '123')"),
        ["web"]
    );
    let ns = q(&c, "G.V().Has('Type', 'netns', 'Name', 'web')")[0].clone();
    assert_eq!(ns["Metadata"]["Manager"], "docker");
    assert_eq!(
        ns["Metadata"]["Path"],
        json!(format!(
            "{}/{}",
            d.netns_run_path().display(),
            d.docker("inspect -f '{{.NetworkSettings.SandboxKey}}' web")
                .rsplit('/')
                .next()
                .unwrap()
        )),
        "found through Docker's namespace folder"
    );
    // --net=host: under the host, no namespace of its own.
    wait("hostc under the host", || {
        names(&c, "G.V().Has('Type', 'host').Out('Type', 'container')") == ["hostc"]
    });
    assert_eq!(
        c_count(&c, "G.V().Has('Type', 'netns', 'Name', 'hostc')"),
        0
    );
    // Docker's runc state is read too, and the container is shown once, as Docker's.
    wait("runc has read Docker's state", || {
        status(&addr, "runc")["Containers"] == 3
    });
    assert_eq!(
        c_count(&c, &format!("G.V().Has('Container.ID', '{web_id}')")),
        1
    );
    assert_eq!(
        q(
            &c,
            &format!("G.V().Has('Container.ID', '{web_id}').Values('Manager')")
        ),
        json!(["docker"])
    );
    // An interface attached by hand to the container's namespace, queried from the
    // container, and captured like any other.
    let mut clean = Cleanup(Vec::new());
    clean.link(
        "vctweb",
        &format!("ip link add vctweb type veth peer name eth1 netns /proc/{pid}/ns/net"),
    );
    sh("ip addr add 169.254.77.1/24 dev vctweb && ip link set vctweb up");
    sh(&format!(
        "nsenter --net=/proc/{pid}/ns/net sh -c 'ip addr add 169.254.77.2/24 dev eth1 && ip link set eth1 up'"
    ));
    let eth1 = "G.V().Has('Type', 'container', 'Name', 'web').In().Out('Type', 'veth')";
    wait("eth1 reached from the container", || {
        names(&c, eth1) == ["eth1"]
    });
    let tid = q(&c, &format!("{eth1}.Values('TID')"))[0]
        .as_str()
        .unwrap()
        .to_string();
    let vct = q(&c, "G.V().Has('Name', 'vctweb')")[0].clone();
    assert_eq!(vct["Metadata"]["LinkNetNsName"], "web");
    let cap: Value = c
        .json(
            "POST",
            "/api/capture",
            &json!({"GremlinQuery": eth1, "BPFFilter": "icmp"}),
            &[],
        )
        .unwrap();
    let cap_id = cap["UUID"].as_str().unwrap().to_string();
    wait("the capture runs on eth1", || {
        c_count(
            &c,
            &format!("{eth1}.Has('Captures.ID', '{cap_id}', 'Captures.State', 'active')"),
        ) == 1
    });
    sh("ping -q -c 2 -i 0.2 -W 2 169.254.77.2");
    let flows = format!("{eth1}.Flows().Has('Network.A', '169.254.77.1')");
    wait("the ping's flow on the container's interface", || {
        q(&c, &flows)
            .get(0)
            .is_some_and(|f| f["Metric"]["ABPackets"] == 2)
    });
    assert_eq!(q(&c, &flows)[0]["NodeTID"], json!(tid));
    c.delete(&format!("/api/capture/{cap_id}")).unwrap();
    drop(clean);
    // Paused, then running again.
    d.docker("pause web");
    wait("web paused", || {
        container(&c, "web")["Metadata"]["Container"]["Status"] == "paused"
    });
    d.docker("unpause web");
    wait("web running", || {
        container(&c, "web")["Metadata"]["Container"]["Status"] == "running"
    });
    // Renamed: the container and its namespace follow.
    d.docker("rename web www");
    wait("web renamed www", || {
        names(
            &c,
            "G.V().Has('Type', 'netns', 'Name', 'www').Out('Type', 'container')",
        ) == ["side", "www"]
    });
    let node_id = container(&c, "www")["ID"].clone();
    // Stopped: its node goes; the namespace stays while another container holds it.
    d.docker("stop -t 0 side");
    wait("side gone", || container(&c, "side").is_null());
    // Restarted: the same node, a new process.
    d.docker("restart -t 0 www");
    wait("www back with a new process", || {
        let w = container(&c, "www");
        w["ID"] == node_id && w["Metadata"]["Container"]["InitProcessPID"] != json!(pid)
    });
    // Removed: the container and its namespace go.
    d.docker("rm -f www");
    wait("www and its namespace gone", || {
        container(&c, "www").is_null()
            && c_count(&c, "G.V().Has('Type', 'netns', 'Manager', 'docker')") == 0
    });
    let st = status(&addr, "docker");
    assert_eq!(st["Connected"], true, "{st}");
    assert_eq!(st["URL"], json!(d.url));
    assert_eq!(st["Containers"], 1, "hostc: {st}");
    assert!(st["Events"].as_u64().unwrap() >= 10, "{st}");
}

fn c_count(c: &Client, query: &str) -> i64 {
    count(c, query)
}

#[test]
fn the_docker_probe_waits_for_the_daemon_and_lists_again_after_a_restart() {
    let test = "the_docker_probe_waits_for_the_daemon_and_lists_again_after_a_restart";
    if !needs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("unix://{}", dir.path().join("docker.sock").display());
    let netns = dir.path().join("exec/netns");
    // The agent first: no daemon yet.
    let (_p, addr, c) = allinone_with(dir.path(), "docker", &url, &netns, &[]);
    wait("the probe says the daemon is away", || {
        let st = status(&addr, "docker");
        st["Connected"] == false
            && st["Status"] == "restarting"
            && st["LastFailure"]
                .as_str()
                .is_some_and(|f| f.contains("docker.sock"))
    });
    let mut d = Dockerd::start(dir.path());
    d.docker(&format!("run -d --name early {IMAGE} sleep 1000"));
    eventually(
        Duration::from_secs(30),
        "the container once the daemon is there",
        || !container(&c, "early").is_null(),
    );
    assert_eq!(status(&addr, "docker")["Connected"], true);
    // The daemon stops (its containers with it), then comes back.
    d.stop();
    wait("the container gone with the daemon", || {
        container(&c, "early").is_null()
    });
    d.restart();
    d.docker("start early");
    eventually(
        Duration::from_secs(30),
        "the container listed again",
        || {
            container(&c, "early")["Metadata"]["Container"]["Status"] == "running"
                && status(&addr, "docker")["Connected"] == true
        },
    );
    assert!(status(&addr, "docker")["Restarts"].as_u64().unwrap() >= 2);
}

#[test]
fn runc_containers_without_a_daemon_are_shown_with_their_labels() {
    let test = "runc_containers_without_a_daemon_are_shown_with_their_labels";
    if !needs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runc-root");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::rename(docker::rootfs(dir.path()), bundle.join("rootfs")).unwrap();
    sh(&format!("cd {} && runc spec", bundle.display()));
    let spec_path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["sleep", "1000"]);
    spec["annotations"] =
        json!({"org.opencontainers.image.ref.name": "skybox:1", "io.example.tier": "db"});
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let unused = dir.path().join("no-docker");
    let (_p, addr, c) = allinone_with(dir.path(), "runc", "unix:///nonexistent", &unused, &[&root]);
    let mut clean = Cleanup(Vec::new());
    let id = format!("sky{}", std::process::id());
    clean.on_drop(format!(
        "(runc --root {r} kill {id} KILL; sleep 0.2; runc --root {r} delete -f {id})",
        r = root.display()
    ));
    sh(&format!(
        "runc --root {} run -d --bundle {} {id} </dev/null >/dev/null 2>&1",
        root.display(),
        bundle.display()
    ));
    wait("the runc container in its namespace", || {
        names(
            &c,
            &format!("G.V().Has('Type', 'netns', 'Name', '{id}').Out('Type', 'container')"),
        ) == [id.clone()]
    });
    let node = container(&c, &id);
    let m = &node["Metadata"];
    assert_eq!(m["Manager"], "runc");
    assert_eq!(m["Container"]["Runtime"], "runc");
    assert_eq!(m["Container"]["Status"], "running");
    assert_eq!(m["Container"]["Image"], "skybox:1");
    assert_eq!(m["Container"]["Labels"]["io"]["example"]["tier"], "db");
    assert_eq!(
        m["Container"]["Labels"]["bundle"],
        json!(bundle.display().to_string())
    );
    let ns = q(&c, &format!("G.V().Has('Type', 'netns', 'Name', '{id}')"))[0].clone();
    assert_eq!(ns["Metadata"]["Manager"], "runc");
    assert_eq!(ns["Metadata"]["Runtime"], "runc");
    assert_eq!(status(&addr, "runc")["Containers"], 1);
    // Its labels change (written as runc writes its state: a new file renamed over the old).
    let state_path = root.join(&id).join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["config"]["labels"]
        .as_array_mut()
        .unwrap()
        .push(json!("tier.role=cache"));
    let tmp = root.join(&id).join("state.json.new");
    std::fs::write(&tmp, state.to_string()).unwrap();
    std::fs::rename(&tmp, &state_path).unwrap();
    wait("the new label", || {
        container(&c, &id)["Metadata"]["Container"]["Labels"]["tier"]["role"] == "cache"
    });
    // The process ends: the container and its namespace go.
    sh(&format!("runc --root {} kill {id} KILL", root.display()));
    wait("the runc container gone", || {
        container(&c, &id).is_null()
            && c_count(&c, &format!("G.V().Has('Type', 'netns', 'Name', '{id}')")) == 0
    });
    drop(clean);
}
