//! Captures end to end with a real `skydive allinone`: a capture defined before its veth
//! exists starts when the veth appears (inside a namespace), a ping makes a flow that the
//! agent's table answers live and the analyzer's store answers in a time context, and
//! deleting the capture stops the probe. Needs root.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use skydive_api::client::Client;

fn allinone(dir: &std::path::Path) -> (Proc, String) {
    common::allinone(dir, "cap-e2e", "flow:\n  update: 1\n  expire: 5\n")
}

fn json_query(c: &Client, q: &str) -> Value {
    let r = c.query(q, "application/json").unwrap();
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

#[test]
fn a_capture_defined_in_advance_gives_flows_live_and_stored() {
    if !root("a_capture_defined_in_advance_gives_flows_live_and_stored") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, addr) = allinone(dir.path());
    let c = Client::new(&addr, None);
    let (ns_a, ns_b) = ("cape2e-a", "cape2e-b");
    let (veth, peer) = ("vcape2e", "vcape2ep");
    let mut clean = Cleanup(Vec::new());

    // The capture first: nothing matches yet.
    let cap: Value = c
        .json(
            "POST",
            "/api/capture",
            &json!({"GremlinQuery": format!("G.V().Has('Name', '{veth}')"), "BPFFilter": "icmp", "Name": "e2e", "RawPacketLimit": 2}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();

    clean.veth_pair((ns_a, veth), (ns_b, peer), "10.78.1");

    let took = wait_active(&c, veth, &id, "the capture starts on the new veth");
    eprintln!("capture active {took:?} after the veth came up");
    let got: Value = c.get(&format!("/api/capture/{id}")).unwrap();
    assert_eq!(got["Count"], 1);

    sh(&format!(
        "ip netns exec {ns_a} ping -q -c 3 -i 0.2 -s 1024 -W 1 10.78.1.2"
    ));
    let flows_q = format!("G.V().Has('Name', '{veth}').Flows().Has('Network.A', '10.78.1.1')");
    eventually(
        Duration::from_secs(15),
        "the live flow with its 3 echoes each way",
        || {
            first(&c, &flows_q)
                .is_some_and(|f| f["Metric"]["ABPackets"] == 3 && f["Metric"]["BAPackets"] == 3)
        },
    );
    let flow = json_query(&c, &flows_q)[0].clone();
    let bytes = 3 * (14 + 20 + 8 + 1024);
    assert_eq!(flow["Metric"]["ABBytes"], bytes);
    assert_eq!(flow["Metric"]["BABytes"], bytes);
    assert_eq!(flow["Application"], "ICMPv4");
    assert!(flow["Metric"]["RTT"].as_i64().unwrap() > 0);
    assert_eq!(flow["CaptureID"], id.as_str());
    // The probe's entry counts the flow table (the capture's `stats` on /ws/subscriber/flow).
    eventually(
        Duration::from_secs(5),
        "the table counted in Captures",
        || {
            json_query(
                &c,
                &format!("G.V().Has('Name', '{veth}').Values('Captures')"),
            )[0]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["ID"] == id.as_str()).cloned())
            .is_some_and(|e| e["FlowCount"].as_i64() >= Some(1) && e["FlowDropped"] == 0)
        },
    );
    // Flow steps on live flows: from flows back to the interfaces.
    let names = |q: &str| -> Vec<String> {
        let mut v: Vec<String> = json_query(&c, q)
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["Metadata"]["Name"].as_str().map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&format!("{flows_q}.Hops()")), vec![veth.to_string()]);
    assert_eq!(
        names(&format!("{flows_q}.CaptureNode()")),
        vec![veth.to_string()]
    );
    assert_eq!(
        names(&format!("{flows_q}.In()")),
        vec![veth.to_string()],
        "Link.A is the veth"
    );
    assert_eq!(
        names(&format!("{flows_q}.Out()")),
        vec![peer.to_string()],
        "Link.B is its peer"
    );
    assert_eq!(
        json_query(&c, &format!("{flows_q}.Dedup().Count()")),
        json!(1)
    );
    // A float64, which Go's encoder writes without a fraction.
    assert_eq!(
        json_query(
            &c,
            &format!("G.V().Has('Name', '{veth}').Flows().Sum('Metric.BABytes')")
        )
        .as_f64(),
        Some(bytes as f64)
    );
    // The BPF filter kept ARP out.
    assert_eq!(
        count(
            &c,
            &format!("G.V().Has('Name', '{veth}').Flows().Has('Application', 'ARP')")
        ),
        0
    );
    // Predicates on the exact boundary.
    for (pred, n) in [
        (format!("Gt({bytes})"), 0),
        (format!("Gte({bytes})"), 1),
        (format!("Lt({bytes})"), 0),
        (format!("Lte({bytes})"), 1),
        (format!("Between({bytes}, {})", bytes + 1), 1),
    ] {
        assert_eq!(
            count(&c, &format!("{flows_q}.Has('Metric.ABBytes', {pred})")),
            n,
            "Metric.ABBytes {pred}"
        );
    }

    // Stored: the same flow in a time context, with its metric updates.
    let stored_q = format!(
        "G.Context(NOW, 300).V().Has('Name', '{veth}').Flows().Has('Network.A', '10.78.1.1')"
    );
    eventually(Duration::from_secs(15), "the stored flow", || {
        first(&c, &stored_q).is_some_and(|f| f["Metric"]["ABPackets"] == 3)
    });
    let stored = json_query(&c, &stored_q)[0].clone();
    assert_eq!(stored["UUID"], flow["UUID"]);
    assert_eq!(stored["TrackingID"], flow["TrackingID"]);
    let metrics = json_query(&c, &format!("{stored_q}.Metrics()"));
    let samples = metrics[0][flow["UUID"].as_str().unwrap()]
        .as_array()
        .unwrap_or_else(|| panic!("{metrics}"))
        .clone();
    let total: i64 = samples
        .iter()
        .map(|m| m["ABPackets"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 3, "the updates add up to the flow: {samples:?}");

    // Raw packets kept with the flow (RawPacketLimit 2), stored, as a pcap file; and a BPF
    // filter over them.
    let raw = c
        .query(
            &format!("{stored_q}.RawPackets()"),
            "application/vnd.tcpdump.pcap",
        )
        .unwrap();
    assert_eq!(raw.content_type, "application/vnd.tcpdump.pcap");
    assert_eq!(
        &raw.body[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian pcap file"
    );
    let records = |body: &[u8]| {
        let mut n = 0;
        let mut off = 24;
        while off + 16 <= body.len() {
            let incl = u32::from_le_bytes(body[off + 8..off + 12].try_into().unwrap()) as usize;
            off += 16 + incl;
            n += 1;
        }
        n
    };
    assert_eq!(records(&raw.body), 2, "the first two packets of the flow");
    let replies = c
        .query(
            &format!("{stored_q}.RawPackets().BPF('icmp[icmptype] == icmp-echoreply')"),
            "application/vnd.tcpdump.pcap",
        )
        .unwrap();
    assert_eq!(records(&replies.body), 1);

    // Deleting the capture stops the probe and clears the node.
    let during = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    c.delete(&format!("/api/capture/{id}")).unwrap();
    eventually(Duration::from_secs(10), "the probe stops", || {
        count(
            &c,
            &format!("G.V().Has('Name', '{veth}', 'Captures.ID', '{id}')"),
        ) == 0
    });
    // Gone from the agent, the flow is still there in the past.
    assert_eq!(count(&c, &flows_q), 0, "no live flow any more");
    let past =
        format!("G.At({during}).V().Has('Name', '{veth}').Flows().Has('Network.A', '10.78.1.1')");
    assert_eq!(json_query(&c, &past)[0]["UUID"], flow["UUID"]);
    let status: Value = c.get("/api/status").unwrap();
    assert!(status["Flows"]["Stored"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(status["Flows"]["Dropped"], 0);
    drop(clean);
    drop(p);
}

/// A DNS server at 10.78.2.2:53 in `ns`, answering one query with its echo.
fn dns_server(ns: &str) -> Background {
    background(&format!(
        "ip netns exec {ns} python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('10.78.2.2',53));d,a=s.recvfrom(512);s.sendto(d,a)\""
    ))
}

/// A DNS query for www.google.com from `ns` to 10.78.2.2:53, with the transaction ID `id`
/// (four hex digits); returns once answered.
fn dns_query(ns: &str, id: &str) {
    sh(&format!(
        "ip netns exec {ns} python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);s.sendto(bytes.fromhex('{id}010000010000000000000377777706676f6f676c6503636f6d0000010001'),('10.78.2.2',53));s.recv(512)\""
    ));
}

/// `skydive client pcap --trace FILE` against the analyzer at `addr`.
fn upload_pcap(addr: &str, file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["client", "--analyzer", addr, "pcap", "--trace"])
        .arg(file)
        .output()
        .unwrap()
}

/// The first result of a query, if any.
fn first(c: &Client, q: &str) -> Option<Value> {
    json_query(c, q).as_array()?.first().cloned()
}

/// Waits until the capture `id` runs on the node named `node`; returns how long it took.
fn wait_active(c: &Client, node: &str, id: &str, what: &str) -> Duration {
    let active =
        format!("G.V().Has('Name', '{node}', 'Captures.ID', '{id}', 'Captures.State', 'active')");
    eventually(Duration::from_secs(20), what, || count(c, &active) == 1)
}

/// Runs a command in the background, in a process group of its own; the whole group is
/// killed when dropped (a daemon's children too: pmacctd's sFlow plugin outlives its killed
/// core by seconds, sending samples of its own).
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn background(cmd: &str) -> Background {
    use std::os::unix::process::CommandExt;
    Background(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(in_netns(cmd))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn pcap_and_afpacket_agree_and_an_uploaded_pcap_gives_its_dns_flows() {
    if !root("pcap_and_afpacket_agree_and_an_uploaded_pcap_gives_its_dns_flows") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, addr) = allinone(dir.path());
    let c = Client::new(&addr, None);
    let (ns_a, ns_b, veth, peer) = ("cappcap-a", "cappcap-b", "vcappcap", "vcappcapp");
    let mut clean = Cleanup(Vec::new());
    clean.veth_pair((ns_a, veth), (ns_b, peer), "10.78.2");

    // The same interface captured by both probe types.
    let mut ids = Vec::new();
    for kind in ["afpacket", "pcap"] {
        let cap: Value = c
            .json(
                "POST",
                "/api/capture",
                &json!({"GremlinQuery": format!("G.V().Has('Name', '{veth}')"), "Type": kind, "BPFFilter": "tcp"}),
                &[],
            )
            .unwrap();
        ids.push(cap["UUID"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(20), "both captures active", || {
        count(
            &c,
            &format!("G.V().Has('Name', '{veth}', 'Captures.State', 'active')"),
        ) == 1
            && ids.iter().all(|id| {
                count(
                    &c,
                    &format!("G.V().Has('Name', '{veth}', 'Captures.ID', '{id}')"),
                ) == 1
            })
    });

    // Two TCP connections, one each way.
    let _server_b = background(&format!(
        "ip netns exec {ns_b} python3 -c \"import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('10.78.2.2',7001));s.listen();c,_=s.accept();c.sendall(c.recv(100)*3);c.close()\""
    ));
    let _server_a = background(&format!(
        "ip netns exec {ns_a} python3 -c \"import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('10.78.2.1',7002));s.listen();c,_=s.accept();c.sendall(c.recv(100)*3);c.close()\""
    ));
    eventually(Duration::from_secs(10), "both servers listen", || {
        listening(ns_b, "t", 7001) && listening(ns_a, "t", 7002)
    });
    let client = |ns: &str, ip: &str, port: u16| {
        sh(&format!(
            "ip netns exec {ns} python3 -c \"import socket,time;s=socket.create_connection(('{ip}',{port}));s.sendall(b'x'*100);d=b''\nwhile len(d)<300:\n  d+=s.recv(1000)\ns.close()\""
        ))
    };
    client(ns_a, "10.78.2.2", 7001);
    client(ns_b, "10.78.2.1", 7002);

    let per_capture = |id: &str| -> Vec<Value> {
        json_query(
            &c,
            &format!("G.V().Has('Name', '{veth}').Flows().Has('CaptureID', '{id}', 'Application', 'TCP').Sort('Start')"),
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
    };
    eventually(
        Duration::from_secs(20),
        "two finished TCP flows per capture",
        || {
            ids.iter().all(|id| {
                let fs = per_capture(id);
                fs.len() == 2 && fs.iter().all(|f| f["FinishType"].as_i64().is_some())
            })
        },
    );
    let (af, pc) = (per_capture(&ids[0]), per_capture(&ids[1]));
    for (a, p) in af.iter().zip(&pc) {
        assert_eq!(a["TrackingID"], p["TrackingID"], "the same flows");
        assert_eq!(a["Metric"]["ABPackets"], p["Metric"]["ABPackets"]);
        assert_eq!(a["Metric"]["BAPackets"], p["Metric"]["BAPackets"]);
        assert_eq!(a["Metric"]["ABBytes"], p["Metric"]["ABBytes"]);
        assert_eq!(a["Metric"]["BABytes"], p["Metric"]["BABytes"]);
    }
    // Opposite directions: A is the side that connected.
    assert_eq!(af[0]["Network"]["A"], "10.78.2.1");
    assert_eq!(af[0]["Transport"]["B"], 7001);
    assert_eq!(af[1]["Network"]["A"], "10.78.2.2");
    assert_eq!(af[1]["Transport"]["B"], 7002);
    for f in &af {
        // 100 bytes one way, 300 the other, on top of the headers (the connecting side
        // sends more packets: SYN, ACKs, FIN).
        let (ab, ba) = (
            f["Metric"]["ABBytes"].as_i64().unwrap(),
            f["Metric"]["BABytes"].as_i64().unwrap(),
        );
        assert!(ab > 100 + 5 * 66 && ba > 300 + 3 * 66, "{f}");
    }
    for id in &ids {
        c.delete(&format!("/api/capture/{id}")).unwrap();
    }

    // DNS recorded with tcpdump, then uploaded.
    let pcap = dir.path().join("dns.pcap");
    let _dns = dns_server(ns_b);
    let dump = background(&format!(
        "ip netns exec {ns_a} tcpdump -i {veth} -U -c 2 -w {} udp port 53",
        pcap.display()
    ));
    // tcpdump creates its file once it captures.
    eventually(
        Duration::from_secs(10),
        "the DNS server and tcpdump ready",
        || listening(ns_b, "u", 53) && pcap.exists(),
    );
    dns_query(ns_a, "1234");
    eventually(Duration::from_secs(5), "tcpdump wrote both packets", || {
        std::fs::metadata(&pcap)
            .map(|m| m.len() > 24 + 2 * 16 + 2 * 70)
            .unwrap_or(false)
    });
    drop(dump);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let o = upload_pcap(&addr, &pcap);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dns_q = "G.Context(NOW, 600).Flows().Has('Application', 'DNS', 'Transport.B', 53)";
    eventually(Duration::from_secs(10), "the uploaded DNS flow", || {
        count(&c, dns_q) == 1
    });
    let f = json_query(&c, dns_q)[0].clone();
    assert_eq!(f["Network"]["A"], "10.78.2.1");
    assert_eq!(
        (
            f["Metric"]["ABPackets"].as_i64(),
            f["Metric"]["BAPackets"].as_i64()
        ),
        (Some(1), Some(1))
    );
    // The file's times: the packets were sent before the upload.
    assert!(f["Start"].as_i64().unwrap() <= before, "{f}");
    // The same file written to a pcapsocket capture: its flows belong to the node.
    let sock: Value = c
        .json(
            "POST",
            "/api/capture",
            &json!({"GremlinQuery": format!("G.V().Has('Name', '{veth}')"), "Type": "pcapsocket"}),
            &[],
        )
        .unwrap();
    let sock_id = sock["UUID"].as_str().unwrap().to_string();
    let mut socket_addr = String::new();
    eventually(
        Duration::from_secs(20),
        "the pcapsocket capture listens",
        || {
            let v = json_query(
                &c,
                &format!("G.V().Has('Name', '{veth}').Values('Captures')"),
            );
            socket_addr = v[0]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["ID"] == sock_id.as_str())
                .and_then(|e| e["PCAPSocket"].as_str())
                .unwrap_or("")
                .to_string();
            !socket_addr.is_empty()
        },
    );
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&socket_addr).unwrap();
        s.write_all(&std::fs::read(&pcap).unwrap()).unwrap();
    }
    let node_dns = format!(
        "G.Context(NOW, 600).V().Has('Name', '{veth}').Flows().Has('Application', 'DNS', 'CaptureID', '{sock_id}')"
    );
    eventually(
        Duration::from_secs(10),
        "the pcapsocket's DNS flow on the node",
        || count(&c, &node_dns) == 1,
    );
    let via_socket = json_query(&c, &node_dns)[0].clone();
    assert_eq!(
        via_socket["TrackingID"], f["TrackingID"],
        "the same flow as the upload"
    );
    assert!(!via_socket["NodeTID"].as_str().unwrap().is_empty());
    c.delete(&format!("/api/capture/{sock_id}")).unwrap();

    // A capture by Wireshark's dumpcap, in its own format (pcapng), uploaded: its DNS
    // exchange is a third DNS flow (after the upload's and the pcapsocket's).
    let ng = dir.path().join("dns.pcapng");
    let _dns2 = dns_server(ns_b);
    let mut dump = background(&format!(
        "ip netns exec {ns_a} dumpcap -q -i {veth} -c 2 -w {} -f 'udp port 53'",
        ng.display()
    ));
    eventually(
        Duration::from_secs(10),
        "the DNS server and dumpcap ready",
        || listening(ns_b, "u", 53) && ng.exists(),
    );
    dns_query(ns_a, "4321");
    eventually(
        Duration::from_secs(10),
        "dumpcap wrote both packets",
        || dump.0.try_wait().unwrap().is_some(),
    );
    assert_eq!(std::fs::read(&ng).unwrap()[..4], [0x0a, 0x0d, 0x0d, 0x0a]);
    let o = upload_pcap(&addr, &ng);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eventually(
        Duration::from_secs(10),
        "the pcapng file's DNS flow",
        || count(&c, dns_q) == 3,
    );
    let flows = json_query(&c, dns_q);
    let second = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["UUID"] != f["UUID"] && g["UUID"] != via_socket["UUID"])
        .unwrap();
    assert_eq!(second["Network"]["A"], "10.78.2.1", "{second}");
    assert_eq!(second["LayersPath"], "Ethernet/IPv4/UDP/DNS", "{second}");
    assert_eq!(
        (
            second["Metric"]["ABPackets"].as_i64(),
            second["Metric"]["BAPackets"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert!(second["Start"].as_i64().unwrap() > f["Start"].as_i64().unwrap());

    // A file that is not pcap: 400 with the reason, through the CLI's exit code.
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"not a capture at all").unwrap();
    let o = upload_pcap(&addr, &junk);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("400: not a pcap file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop(clean);
}

#[test]
fn a_capture_on_a_bridge_port_of_the_host_sees_the_ping_through_the_bridge() {
    if !root("a_capture_on_a_bridge_port_of_the_host_sees_the_ping_through_the_bridge") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, addr) = allinone(dir.path());
    let c = Client::new(&addr, None);
    let mut clean = Cleanup(Vec::new());
    let br = "capbr0";
    clean.link(br, &format!("ip link add {br} type bridge"));
    sh(&format!("ip link set {br} up"));
    for (ns, ip) in [("capbr-a", "10.78.3.1"), ("capbr-b", "10.78.3.2")] {
        let host_end = format!("v{ns}");
        clean.host_veth(ns, &host_end, ip);
        sh(&format!("ip link set {host_end} master {br}"));
    }
    let cap: Value = c
        .json(
            "POST",
            "/api/capture",
            // A port of the bridge, in the host's namespace, found from the bridge.
            &json!({"GremlinQuery": format!("G.V().Has('Name', '{br}', 'Type', 'bridge').Out('Name', 'vcapbr-a')"), "BPFFilter": "icmp"}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();
    wait_active(&c, "vcapbr-a", &id, "the capture runs on the bridge port");
    sh("ip netns exec capbr-a ping -q -c 1 -s 1024 -W 2 10.78.3.2");
    let q = "G.V().Has('Name', 'vcapbr-a').Flows().Has('Network.A', '10.78.3.1')";
    eventually(
        Duration::from_secs(15),
        "the ping's flow on the bridge port",
        || {
            first(&c, q)
                .is_some_and(|f| f["Metric"]["ABPackets"] == 1 && f["Metric"]["BAPackets"] == 1)
        },
    );
    let f = json_query(&c, q)[0].clone();
    assert!(f["Metric"]["BABytes"].as_i64().unwrap() >= 1066, "{f}");
    assert!(f["Metric"]["RTT"].as_i64().unwrap() > 0);
    c.delete(&format!("/api/capture/{id}")).unwrap();
    drop(clean);
}

/// Sends `count` ICMP echo requests from 10.78.9.2 to 10.78.9.1 into the tun device
/// `captun0` (as a VPN would: IP packets, no link layer), reads the kernel's replies, and
/// prints how many came back.
const TUN_PINGER: &str = r#"
import fcntl, os, select, socket, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"captun0", 0x0001 | 0x1000))  # TUNSETIFF: IFF_TUN | IFF_NO_PI
# Held by a process, the device gets its carrier; the kernel sends through it once it says
# the device is running (SIOCGIFFLAGS, IFF_RUNNING).
ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
deadline = time.time() + 5
while not struct.unpack("16sH22x", fcntl.ioctl(ctl, 0x8913, struct.pack("16sH22x", b"captun0", 0)))[1] & 0x40:
    if time.time() > deadline:
        sys.exit("captun0 is not running")
    time.sleep(0.01)
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
replies = 0
for i in range(int(sys.argv[1])):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4242, i + 1) + b"x" * 56
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), i + 1, 0, 64, 1, 0,
                     bytes([10, 78, 9, 2]), bytes([10, 78, 9, 1]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    os.write(fd, ip + icmp)
    deadline = time.time() + 2
    while time.time() < deadline:
        if not select.select([fd], [], [], 0.2)[0]:
            continue
        p = os.read(fd, 4096)
        if p[0] >> 4 == 4 and p[9] == 1 and p[20] == 0:
            replies += 1
            break
    time.sleep(0.1)
print(replies)
"#;

/// An interface without a link layer (a tun device, as VPNs and WireGuard have): its frames
/// are IP packets. The capture reads them as such (its BPF filter compiled for raw IP, the
/// frames decoded from their IP header), as Skydive does from the node's `EncapType`.
#[test]
fn a_capture_on_a_tun_device_reads_ip_packets() {
    if !root("a_capture_on_a_tun_device_reads_ip_packets") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, addr) = allinone(dir.path());
    let c = Client::new(&addr, None);
    let mut clean = Cleanup(Vec::new());
    let ns = "captun";
    clean.netns(ns);
    sh(&format!("ip -n {ns} tuntap add dev captun0 mode tun"));
    sh(&format!(
        "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"
    ));
    sh(&format!("ip -n {ns} addr add 10.78.9.1/24 dev captun0"));
    sh(&format!("ip -n {ns} link set captun0 up"));
    eventually(
        Duration::from_secs(20),
        "the tun device in the topology, without a link layer",
        || count(&c, "G.V().Has('Name', 'captun0', 'EncapType', 'none')") == 1,
    );
    let cap: Value = c
        .json(
            "POST",
            "/api/capture",
            &json!({"GremlinQuery": "G.V().Has('Name', 'captun0')", "BPFFilter": "icmp", "RawPacketLimit": 1}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();
    wait_active(&c, "captun0", &id, "the capture runs on the tun");
    let script = dir.path().join("tun_pinger.py");
    std::fs::write(&script, TUN_PINGER).unwrap();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("python3")
        .arg(&script)
        .arg("5")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5",
        "the kernel answered"
    );
    let q = "G.V().Has('Name', 'captun0').Flows().Has('Network.A', '10.78.9.2')";
    eventually(
        Duration::from_secs(15),
        "the pings' flow on the tun",
        || {
            first(&c, q)
                .is_some_and(|f| f["Metric"]["ABPackets"] == 5 && f["Metric"]["BAPackets"] == 5)
        },
    );
    let f = json_query(&c, q)[0].clone();
    assert_eq!(f["LayersPath"], "IPv4/ICMPv4", "{f}");
    assert_eq!(f["Network"]["B"], "10.78.9.1", "{f}");
    assert!(f.get("Link").is_none_or(Value::is_null), "{f}");
    assert_eq!(f["ICMP"]["Type"], "ECHO", "{f}");
    // 84-byte datagrams, counted from the IP header.
    assert_eq!(f["Metric"]["ABBytes"], 5 * 84, "{f}");
    // The raw packet kept (stored with the flow: live, a flow holds only those of its last
    // update) says how it begins (LINKTYPE_RAW).
    let raw_q = format!("G.Context(NOW, 300).{}.RawPackets()", &q[2..]);
    let first_raw = || {
        json_query(&c, &raw_q)
            .as_array()
            .and_then(|a| a.first())
            .and_then(|m| m.as_object())
            .and_then(|m| m.values().next())
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .cloned()
    };
    eventually(Duration::from_secs(15), "the stored raw packet", || {
        first_raw().is_some()
    });
    let first = first_raw().unwrap();
    assert_eq!(first["LinkType"], 101, "{first}");
    c.delete(&format!("/api/capture/{id}")).unwrap();
    drop(clean);
}

/// The flow of at least 5 echo requests, among `flows`.
fn five_pings(flows: &Value) -> Option<Value> {
    flows
        .as_array()?
        .iter()
        .find(|f| f["Metric"]["ABPackets"].as_i64().unwrap_or(0) >= 5)
        .cloned()
}

#[test]
fn an_sflow_capture_receives_pmacct_sfprobe_samples() {
    if !root("an_sflow_capture_receives_pmacct_sfprobe_samples") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_p, addr) = allinone(dir.path());
    let c = Client::new(&addr, None);
    let (ns_a, ns_b, veth, peer) = ("capsf-a", "capsf-b", "vcapsf", "vcapsfp");
    let mut clean = Cleanup(Vec::new());
    clean.veth_pair((ns_a, veth), (ns_b, peer), "10.78.4");

    // The collector: an sflow capture on the receiving veth, listening on its address.
    let cap: Value = c
        .json(
            "POST",
            "/api/capture",
            &json!({"GremlinQuery": format!("G.V().Has('Name', '{peer}')"), "Type": "sflow", "Port": 6343}),
            &[],
        )
        .unwrap();
    let id = cap["UUID"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(20),
        "the sFlow collector listens",
        || {
            json_query(
                &c,
                &format!("G.V().Has('Name', '{peer}').Values('Captures')"),
            )[0]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["ID"] == id.as_str() && e["SFlowSocket"] == "10.78.4.2:6343")
        },
    );
    // The agent: pmacct's sfprobe on the sending veth, every packet sampled.
    let conf = dir.path().join("pmacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\npcap_interface: {veth}\nplugins: sfprobe\nsfprobe_receiver: 10.78.4.2:6343\nsfprobe_agentip: 10.78.4.1\nsfprobe_sampling_rate: 1\n"
        ),
    )
    .unwrap();
    let pmacct = background(&format!(
        "ip netns exec {ns_a} pmacctd -f {}",
        conf.display()
    ));
    let q = format!(
        "G.V().Has('Name', '{peer}').Flows().Has('Application', 'ICMPv4', 'CaptureID', '{id}')"
    );
    // pmacctd samples once it has started: ping until its first samples make a flow.
    eventually(Duration::from_secs(20), "pmacctd's first samples", || {
        sh(&format!("ip netns exec {ns_a} ping -q -c 1 -W 1 10.78.4.2"));
        json_query(&c, &q)
            .as_array()
            .is_some_and(|fs| !fs.is_empty())
    });
    sh(&format!(
        "ip netns exec {ns_a} ping -q -c 5 -i 0.2 -W 1 10.78.4.2"
    ));
    eventually(
        Duration::from_secs(20),
        "ICMP flows from the sFlow samples",
        || five_pings(&json_query(&c, &q)).is_some(),
    );
    // (Each warm-up ping is a flow of its own: the 5 echoes of one ping are one flow.)
    let f = five_pings(&json_query(&c, &q)).unwrap();
    assert_eq!(f["Network"]["A"], "10.78.4.1");
    // A counter of the capture's entry in the node's `Captures`.
    let counter = |c: &Client, field: &str| -> i64 {
        json_query(
            c,
            &format!("G.V().Has('Name', '{peer}').Values('Captures')"),
        )[0]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ID"] == id.as_str())
        .unwrap()[field]
            .as_i64()
            .unwrap()
    };
    let received = counter(&c, "PacketsReceived");
    assert!(received >= 10, "samples counted: {received}");

    // Counter samples and a malformed datagram, sent from the other namespace, with pmacctd
    // stopped (its own samples would race ours).
    drop(pmacct);
    let send = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        sh(&format!(
            "ip netns exec {ns_a} python3 -c \"import socket;socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(bytes.fromhex('{hex}'),('10.78.4.2',6343))\""
        ));
    };
    let counters = |octets: u64| {
        skydive_flow::sflow::encode(&skydive_flow::sflow::Datagram {
            agent: "10.78.4.1".parse().unwrap(),
            sub_agent_id: 0,
            sequence: 1,
            uptime_ms: 1,
            packets: Vec::new(),
            counters: vec![skydive_flow::sflow::IfCounters {
                if_index: 2,
                if_in_octets: octets,
                if_in_ucast_pkts: 7,
                ..Default::default()
            }],
        })
    };
    eventually(
        Duration::from_secs(10),
        "SFlow counters on the node",
        || {
            // Again until seen: a datagram may be lost under load.
            send(&counters(1000));
            json_query(
                &c,
                &format!("G.V().Has('Name', '{peer}').Values('SFlow.Metric.IfInOctets')"),
            ) == json!([1000])
        },
    );
    send(&counters(1500));
    eventually(Duration::from_secs(10), "the SFlow delta", || {
        json_query(
            &c,
            &format!("G.V().Has('Name', '{peer}').Values('SFlow.LastUpdateMetric.IfInOctets')"),
        ) == json!([500])
    });
    let dropped = |c: &Client| counter(c, "PacketsDropped");
    let before = dropped(&c);
    send(&[0, 0, 0, 5, 0, 0, 0, 1, 10, 78]);
    eventually(
        Duration::from_secs(10),
        "the malformed datagram counted",
        || dropped(&c) == before + 1,
    );
    // A well-formed datagram longer than a collector takes (16 KiB; agents send datagrams of
    // a network MTU): dropped whole and counted, none of its 100 samples taken.
    let frame = [0x42u8; 200];
    let big = skydive_flow::sflow::encode(&skydive_flow::sflow::Datagram {
        agent: "10.78.4.1".parse().unwrap(),
        sub_agent_id: 0,
        sequence: 2,
        uptime_ms: 2,
        packets: (0..100)
            .map(|_| skydive_flow::sflow::PacketSample {
                sampling_rate: 1,
                input_if: 2,
                output_if: 3,
                protocol: 1,
                frame_length: 200,
                header: &frame,
            })
            .collect(),
        counters: Vec::new(),
    });
    assert!(big.len() > 16 << 10 && skydive_flow::sflow::decode(&big).is_ok());
    let (before, received) = (dropped(&c), counter(&c, "PacketsReceived"));
    send(&big);
    eventually(
        Duration::from_secs(10),
        "the oversized datagram counted",
        || dropped(&c) == before + 1,
    );
    // (The counter may still be catching up on earlier samples, but not on 100 more.)
    let taken = counter(&c, "PacketsReceived") - received;
    assert!(
        taken < 100,
        "the oversized datagram's samples were taken: {taken}"
    );
    c.delete(&format!("/api/capture/{id}")).unwrap();
    drop(clean);
}
