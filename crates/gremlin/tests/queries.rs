//! Table-driven tests of the Gremlin dialect over the fixture of `common/mod.rs`.
//!
//! Every expected value was worked out by hand from the fixture. `{T+n}` in a query or an
//! expected JSON stands for `T0 + n` milliseconds.

mod common;

use common::{NOW, T0, fixture};
use skydive_graph::{MemoryHistory, NoHistory};
use skydive_gremlin::{Env, Output, query};

enum Expect {
    /// Element IDs, in this order.
    Ids(&'static [&'static str]),
    /// Element IDs, in any order.
    Set(&'static [&'static str]),
    /// Exact JSON (compared as values).
    Json(&'static str),
    /// A bare count.
    Count(i64),
    /// Paths of node IDs.
    Paths(&'static [&'static [&'static str]]),
    /// The exact error message.
    Err(&'static str),
    /// The beginning of the error message.
    ErrPrefix(&'static str),
}

use Expect::*;

fn expand(s: &str) -> String {
    let re = regex::Regex::new(r"\{T\+(\d+)\}").unwrap();
    re.replace_all(s, |c: &regex::Captures<'_>| {
        (T0 + c[1].parse::<i64>().unwrap()).to_string()
    })
    .into_owned()
}

fn ids(out: &Output<'_>) -> Vec<String> {
    match out {
        Output::Nodes(v) => v.iter().map(|n| n.id.to_string()).collect(),
        Output::Edges(v) => v.iter().map(|e| e.id.to_string()).collect(),
        _ => panic!("expected elements, got {}", out.type_name()),
    }
}

const CASES: &[(&str, Expect)] = &[
    // --- V, E and the basic Has forms
    ("G.V().Count()", Count(22)),
    ("G.E().Count()", Count(30)),
    ("G.V('vethA')", Ids(&["vethA"])),
    ("G.V('nope')", Err("Node 'nope' does not exist")),
    ("G.E('e-patch')", Ids(&["e-patch"])),
    ("G.E('nope')", Err("Edge 'nope' does not exist")),
    ("G.V().Has('Type', 'veth').Count()", Count(5)),
    (
        "G.V().Has('Type', 'veth')",
        Set(&["peerA", "peerB", "vethA", "vethC", "vethD"]),
    ),
    (
        "G.V().Has('Name', 'eth0')",
        Set(&["vethA", "eth0h1", "eth0h2", "vethC"]),
    ),
    (
        "G.V().Has('Name', 'eth0', 'Type', 'device')",
        Set(&["eth0h1", "eth0h2"]),
    ),
    ("g.v().has('name', 'eth0')", Json("[]")),
    ("g.V().hAs('Name', \"br0\")", Ids(&["br0"])),
    ("G.V('Name', 'br0')", Ids(&["br0"])),
    ("G.V().Has('MTU', 1500).Count()", Count(6)),
    ("G.V().Has('MTU', '1500')", Json("[]")),
    ("G.V().Has('MTU', 1500.9).Count()", Count(6)),
    ("G.V().Has('State', 'UP').Count()", Count(9)),
    ("G.V().Has('IPV4', '10.0.0.1/24')", Ids(&["vethA"])),
    ("G.V().Has('IPV4').Count()", Count(6)),
    ("G.V().HasKey('IPV6')", Ids(&["eth0h1"])),
    ("G.V().HasNot('MTU').Count()", Count(12)),
    (
        "G.V().HasEither('Name', 'br0', 'Name', 'br-int')",
        Set(&["br0", "brint"]),
    ),
    (
        "G.V().HasEither('Type', 'host', 'Manager', 'docker')",
        Set(&["host1", "host2", "nsC", "web"]),
    ),
    (
        "G.V().Has('Name')",
        Set(&[
            "br0",
            "brex",
            "brint",
            "eth0h1",
            "eth0h2",
            "host1",
            "host2",
            "intfP1",
            "loA",
            "nsA",
            "nsC",
            "patchEx",
            "patchInt",
            "peerA",
            "peerB",
            "portP1",
            "portPatchEx",
            "portPatchInt",
            "vethA",
            "vethC",
            "vethD",
            "web",
        ]),
    ),
    ("G.V().Has('Nope')", Json("[]")),
    ("G.V().Has('Type', 'veth', 'State', 'UP').Count()", Count(4)),
    (
        "G.V().Has('Type', 'veth').Has('State', 'DOWN')",
        Ids(&["vethC"]),
    ),
    (
        "G.V().Has('Name', 'eth0').Has('@Host', 'host1')",
        Set(&["vethA", "eth0h1"]),
    ),
    ("G.V().Has('Speed', 1000)", Ids(&["eth0h1"])),
    ("G.V().Has('LinkFlags', 'LOOPBACK')", Ids(&["loA"])),
    (
        "G.V().Has('Name', 'eth0', 'MTU')",
        Err("slice must be defined by pair k,v at column 7"),
    ),
    (
        "G.V().Has(1, 2)",
        Err("keys should be of string type, got: 1 at column 7"),
    ),
    // --- predicates
    (
        "G.V().Has('Type', Within('ovsbridge', 'bridge'))",
        Set(&["br0", "brex", "brint"]),
    ),
    (
        "G.V().Has('Type', Without('veth', 'device', 'ovsport', 'patch', 'netns', 'host'))",
        Set(&["br0", "brex", "brint", "intfP1", "web"]),
    ),
    (
        "G.V().Has('LinkFlags', Within('LOOPBACK', 'MULTICAST'))",
        Set(&["vethA", "loA"]),
    ),
    ("G.V().Has('MTU', Ne(1500)).Count()", Count(4)),
    ("G.V().Has('MTU', Nee(1500)).Count()", Count(16)),
    (
        "G.V().Has('MTU', Gt(1500))",
        Set(&["vethA", "loA", "eth0h1"]),
    ),
    ("G.V().Has('MTU', Gte(1500)).Count()", Count(9)),
    ("G.V().Has('MTU', Lt(1500))", Ids(&["vethC"])),
    ("G.V().Has('MTU', Lte(1500)).Count()", Count(7)),
    ("G.V().Has('MTU', Inside(1450, 9000)).Count()", Count(6)),
    ("G.V().Has('MTU', Between(1450, 9000)).Count()", Count(7)),
    (
        "G.V().Has('MTU', Outside(1500, 9000))",
        Set(&["loA", "vethC"]),
    ),
    ("G.V().Has('MTU', Gt('9000'))", Ids(&["loA"])),
    (
        "G.V().Has('MTU', Lt('abc'))",
        Err("LT values should be of int64 type at column 7"),
    ),
    (
        "G.V().Has('MTU', Inside(1))",
        Err("Inside requires 2 parameters at column 7"),
    ),
    (
        "G.V().Has('Name', Regex('veth-.'))",
        Set(&["peerA", "peerB"]),
    ),
    ("G.V().Has('Name', Regex('eth'))", Json("[]")),
    ("G.V().Has('Name', Regex('.*eth.*')).Count()", Count(7)),
    (
        "G.V().Has('Name', Regex('^eth'))",
        Err("Regex are anchored by default, ^ and $ don't have to be provided at column 7"),
    ),
    (
        "G.V().Has('Name', Regex('('))",
        ErrPrefix("Invalid regex \"(\""),
    ),
    (
        "G.V().Has('IPV4', Ipv4Range('10.0.0.0/24'))",
        Set(&["vethA", "br0"]),
    ),
    (
        "G.V().Has('IPV4', Ipv4Range('192.168.0.0/16')).Count()",
        Count(2),
    ),
    (
        "G.V().Has('IPV4', Ipv4Range('nope'))",
        Err("Invalid IPv4 range \"nope\" at column 7"),
    ),
    (
        "G.V().Has('Name', Metadata('a', 'b'))",
        Err("Unexpected value Metadata(...) for key 'Name' at column 7"),
    ),
    // --- nested metadata, arrays, internal fields
    ("G.V().Has('Features.highdma', true)", Ids(&["eth0h1"])),
    ("G.V().Has('Features.tso', false)", Ids(&["eth0h1"])),
    ("G.V().Has('Features.tso', true)", Json("[]")),
    (
        "G.V().Has('Container.Labels.app.tier', 'front')",
        Ids(&["web"]),
    ),
    ("G.V().Has('Captures.ID', 'cap1')", Ids(&["vethC"])),
    ("G.V().Has('Captures.State', 'error')", Ids(&["vethC"])),
    ("G.V().Has('Captures.ID', Nee('cap3')).Count()", Count(22)),
    ("G.V().Has('Captures.ID', Nee('cap1')).Count()", Count(21)),
    ("G.V().Has('mydict.value', 123)", Ids(&["host1"])),
    ("G.V().Has('myarrays.integers', 2)", Ids(&["host1"])),
    ("G.V().Has('myarrays.strings', 'b')", Ids(&["host1"])),
    ("G.V().Has('Metadata.Name', 'br0')", Ids(&["br0"])),
    ("G.V().Has('@ID', 'vethA')", Ids(&["vethA"])),
    ("G.V().Has('@Host', 'host2').Count()", Count(5)),
    (
        "G.V().Has('@Revision', Gt(1))",
        Set(&["eth0h1", "loA", "vethA"]),
    ),
    ("G.V().Has('@CreatedAt', Gte({T+5000}))", Ids(&["vethD"])),
    (
        "G.V().Has('@Origin', 'agent.host2', 'Type', 'container')",
        Ids(&["web"]),
    ),
    // --- traversals
    ("G.V('host1').Out().Count()", Count(7)),
    ("G.V('host1').Out('Type', 'netns')", Ids(&["nsA"])),
    (
        "G.V('nsA').Out().Values('Name')",
        Json(r#"["eth0","lo","eth1"]"#),
    ),
    ("G.V('brint').Out().Count()", Count(6)),
    ("G.V('brint').Out().Dedup().Count()", Count(4)),
    ("G.V('brint').Out('Type', 'ovsport').Count()", Count(4)),
    (
        "G.V('brint').Out('Type', 'ovsport').Dedup()",
        Set(&["portP1", "portPatchInt"]),
    ),
    ("G.V('vethA').In()", Ids(&["nsA"])),
    ("G.V('peerA').In().Count()", Count(3)),
    ("G.V('peerA').In()", Set(&["host1", "vethA", "br0"])),
    ("G.V('peerA').Both().Count()", Count(3)),
    ("G.V('vethA').Both()", Set(&["nsA", "peerA"])),
    ("G.V('host1').OutE().Count()", Count(7)),
    (
        "G.V('host1').OutE('RelationType', 'ownership').Count()",
        Count(7),
    ),
    (
        "G.V('host1').OutE('RelationType', 'layer2').Count()",
        Count(0),
    ),
    (
        "G.V('brint').OutE('RelationType', 'layer2').InV().Dedup()",
        Ids(&["brint"]),
    ),
    (
        "G.V('brint').OutE('RelationType', 'layer2').OutV()",
        Set(&["portP1", "portPatchInt"]),
    ),
    (
        "G.V('portP1').InE('RelationType', 'ownership').InV()",
        Ids(&["brint"]),
    ),
    (
        "G.V('patchInt').BothE('Type', 'patch').BothV()",
        Ids(&["patchInt", "patchEx"]),
    ),
    ("G.V('patchInt').OutE().Count()", Count(1)),
    ("G.V('patchEx').InE().Count()", Count(3)),
    ("G.V('patchEx').InE().OutV('Type', 'ovsport')", Json("[]")),
    (
        "G.V('patchEx').InE().InV('Type', 'ovsport')",
        Ids(&["portPatchEx"]),
    ),
    ("G.E().Has('RelationType', 'layer2').Count()", Count(10)),
    ("G.E().Has('RelationType', 'ownership').Count()", Count(20)),
    (
        "G.E().Has('Type', 'patch').Values('RelationType')",
        Json(r#"["layer2"]"#),
    ),
    ("G.E('e-patch').OutV()", Ids(&["patchEx"])),
    ("G.E('e-patch').InV()", Ids(&["patchInt"])),
    ("G.E().Has('Parent', 'host1').Count()", Count(7)),
    ("G.E().Has('Child', 'peerA').Count()", Count(3)),
    (
        "G.E('RelationType', 'layer2', 'Type', 'patch')",
        Ids(&["e-patch"]),
    ),
    ("G.V('host1').Out().Out().Count()", Count(14)),
    ("G.V('host1').Out().Out().Out().Count()", Count(8)),
    (
        "G.V().Has('Type', 'host').Out().Has('Type', 'device').Values('MAC')",
        Json(r#"["52:54:00:00:00:01","52:54:00:00:00:02"]"#),
    ),
    (
        "G.V().Has('Type', 'netns').Out().Has('Name', 'eth0').Values('IPV4')",
        Json(r#"[["10.0.0.1/24"],["172.16.0.5/16"]]"#),
    ),
    // --- Dedup, Range, Limit, Sort
    ("G.V().Has('Name', 'eth0').Dedup('Name').Count()", Count(1)),
    ("G.V().Dedup('Type').Count()", Count(10)),
    ("G.V().Dedup('Manager').Count()", Count(21)),
    ("G.V().Dedup('Type', 'State').Count()", Count(11)),
    (
        "G.V().Dedup(1)",
        Err("Dedup accepts only string parameters : [1] at column 7"),
    ),
    ("G.V().Sort('@ID').Limit(3)", Ids(&["br0", "brex", "brint"])),
    ("G.V().Sort('@ID').Range(2, 4)", Ids(&["brint", "eth0h1"])),
    ("G.V().Sort('@ID').Range(20, 30)", Ids(&["vethD", "web"])),
    ("G.V().Range(20, 30).Count()", Count(2)),
    ("G.V().Limit(3).Count()", Count(3)),
    ("G.V().Limit(0)", Json("[]")),
    (
        "G.V().Has('Type', 'veth').Limit(2)",
        Ids(&["peerA", "peerB"]),
    ),
    (
        "G.V().Range(1)",
        Err("Range requires 2 parameters : [1] at column 7"),
    ),
    (
        "G.V().Range(1, 'a')",
        Err("Range requires integer parameters : [1 \"a\"] at column 7"),
    ),
    (
        "G.V().Range(-1, 3)",
        Err("Range requires non-negative parameters : [-1 3] at column 7"),
    ),
    (
        "G.V().Range(5, 2)",
        Err("Range requires its first parameter not above its second : [5 2] at column 7"),
    ),
    (
        "G.V().Limit(-2)",
        Err("Limit requires a non-negative parameter : [-2] at column 7"),
    ),
    (
        "G.V().Has('Type', 'veth').Sort()",
        Ids(&["vethA", "peerA", "peerB", "vethC", "vethD"]),
    ),
    (
        "G.V().Has('Type', 'veth').Sort(DESC)",
        Ids(&["vethD", "vethC", "peerB", "peerA", "vethA"]),
    ),
    (
        "G.V().Has('Type', 'veth').Sort('Name')",
        Ids(&["vethA", "vethC", "vethD", "peerA", "peerB"]),
    ),
    (
        "G.V().Has('Type', 'veth').Sort(DESC, 'MTU')",
        Ids(&["vethA", "peerA", "peerB", "vethD", "vethC"]),
    ),
    (
        "G.V().Has('Type', 'veth').Sort(ASC, 'MTU').Values('MTU')",
        Json("[1450,1500,1500,1500,9000]"),
    ),
    ("G.V().Sort('Nope').Count()", Count(22)),
    (
        "G.V().Has('Type', 'veth').Sort('Name', 'MTU')",
        Err(
            r#"Sort accepts at most an order (ASC or DESC) and a string key : ["Name" "MTU"] at column 27"#,
        ),
    ),
    // --- Values, ValueMap, Keys, Sum, Count
    ("G.V('vethA').Values('MTU')", Json("[9000]")),
    (
        "G.V().Has('Type', 'bridge').Values('IPV4')",
        Json(r#"[["10.0.0.254/24"]]"#),
    ),
    ("G.V('brint').Values('Ovs.OtherConfig')", Json("null")),
    (
        "G.V('brint').Values('Ovs.Protocols')",
        Json(r#"[["OpenFlow10","OpenFlow13"]]"#),
    ),
    (
        "G.V().Has('Type', 'host').Values('Name')",
        Json(r#"["host1","host2"]"#),
    ),
    ("G.V().Values('Nope')", Json("null")),
    (
        "G.V('vethC').Values('Captures.ID')",
        Json(r#"[["cap1","cap2"]]"#),
    ),
    (
        "G.V('web').Values('Container.Labels')",
        Json(r#"[{"app":{"tier":"front"}}]"#),
    ),
    ("G.V('vethA').Values('@Revision')", Json("[2]")),
    ("G.E('e-patch').Values('Parent')", Json(r#"["patchInt"]"#)),
    (
        "G.V('vethA').ValueMap('Name', 'MTU', 'Nope')",
        Json(r#"[{"MTU":9000,"Name":"eth0"}]"#),
    ),
    (
        "G.V().ValueMap()",
        Err("ValueMap requires at least 1 string parameter : [] at column 7"),
    ),
    (
        "G.V('vethA').Keys()",
        Json(
            r#"["@CreatedAt","@DeletedAt","@Host","@ID","@Origin","@Revision","@UpdatedAt","Driver","EncapType","IPV4","IfIndex","LinkFlags","MAC","MTU","Name","State","TID","Type"]"#,
        ),
    ),
    (
        "G.V('web').Keys()",
        Json(
            r#"["@CreatedAt","@DeletedAt","@Host","@ID","@Origin","@Revision","@UpdatedAt","Container.ID","Container.Image","Container.Labels.app.tier","Manager","Name","Type"]"#,
        ),
    ),
    ("G.V().Has('Type', 'veth').Sum('MTU')", Count(14950)),
    ("G.V().Sum('MTU')", Count(93986)),
    ("G.V().Has('Type', 'veth').Values('MTU').Count()", Count(5)),
    ("G.V('vethA').Count()", Count(1)),
    ("G.V().Has('Type', 'nothing').Count()", Count(0)),
    // --- As / Select
    (
        "G.V('nsA').As('ns').Out().As('intf').Select('ns', 'intf').Count()",
        Count(4),
    ),
    ("G.V('nsA').As('ns').Out().Select('ns')", Ids(&["nsA"])),
    (
        "G.V().Select('nope')",
        Err("Label 'nope' is not defined at column 7"),
    ),
    // --- ShortestPathTo
    (
        "G.V('vethA').ShortestPathTo(Metadata('Name', 'br0'))",
        Paths(&[&["vethA", "peerA", "br0"]]),
    ),
    (
        "G.V('vethA').ShortestPathTo(Metadata('Name', 'br0'), Metadata('RelationType', 'ownership'))",
        Paths(&[&["vethA", "nsA", "host1", "br0"]]),
    ),
    (
        "G.V('patchInt').ShortestPathTo(Metadata('Type', 'host'))",
        Paths(&[&["patchInt", "brint", "host1"]]),
    ),
    (
        "G.V('vethC').ShortestPathTo(Metadata('Name', 'br0'))",
        Json("[]"),
    ),
    (
        "G.V().Has('Type', 'veth').ShortestPathTo(Metadata('Name', 'br0')).Count()",
        Count(4),
    ),
    (
        "G.V('br0').ShortestPathTo(Metadata('Name', 'br0'))",
        Paths(&[&["br0"]]),
    ),
    // The same searches in the graph of the past (nodes told apart by ID, not by slot).
    (
        "G.At({T+3500}).V('vethA').ShortestPathTo(Metadata('Name', 'br0'))",
        Paths(&[&["vethA", "peerA", "br0"]]),
    ),
    (
        "G.At({T+3500}).V('vethA').ShortestPathTo(Metadata('Name', 'br0'), Metadata('RelationType', 'ownership'))",
        Paths(&[&["vethA", "nsA", "host1", "br0"]]),
    ),
    (
        "G.V('vethA').ShortestPathTo('br0')",
        Err(r#"expected Metadata(...) parameter, got: "br0" at column 14"#),
    ),
    (
        "G.V('vethA').ShortestPathTo()",
        Err("ShortestPathTo requires 1 or 2 parameters : [] at column 14"),
    ),
    // --- SubGraph
    ("G.V('nsA').Out().SubGraph().V().Count()", Count(3)),
    ("G.V('nsA').Descendants().SubGraph().E().Count()", Count(3)),
    ("G.V('brint').Out().SubGraph().E().Count()", Count(2)),
    ("G.V('brint').Out().SubGraph().V().Count()", Count(4)),
    (
        "G.E('e-patch').SubGraph().V().Values('Name')",
        Json(r#"["patch-int","patch-ex"]"#),
    ),
    (
        "G.V('vethA').ShortestPathTo(Metadata('Name', 'br0')).SubGraph().E().Count()",
        Count(2),
    ),
    (
        "G.V('nsA').Out().SubGraph('RelationType', 'layer2').E().Count()",
        Count(0),
    ),
    (
        "G.V('brint').Out().SubGraph('RelationType', 'layer2').E().Count()",
        Count(2),
    ),
    (
        "G.V('brint').Out().SubGraph().V('intfP1').In().Values('Name')",
        Json(r#"["p1"]"#),
    ),
    ("G.V('brint').SubGraph().Count()", Count(1)),
    // --- Descendants, Ascendants, Neighbors
    ("G.V('host1').Descendants().Count()", Count(8)),
    ("G.V('host1').Descendants(2).Count()", Count(17)),
    (
        "G.V('host1').Descendants('RelationType', 'ownership', 3).Count()",
        Count(17),
    ),
    (
        "G.V('intfP1').Ascendants().Values('Name')",
        Json(r#"["p1","br-int"]"#),
    ),
    (
        "G.V('intfP1').Ascendants(5).Values('Name')",
        Json(r#"["p1","br-int","host1"]"#),
    ),
    (
        "G.V('vethA').Neighbors('RelationType', 'layer2', 2).Values('Name')",
        Json(r#"["eth0","veth-a","br0"]"#),
    ),
    (
        "G.V('vethA').Neighbors('RelationType', 'layer2', 3).Count()",
        Count(4),
    ),
    (
        "G.V('vethA').Descendants('RelationType', 'layer2', 'Type', 'patch')",
        Ids(&["vethA", "peerA"]),
    ),
    (
        "G.V('vethA').Descendants('RelationType', 'layer2', 'x')",
        Err("Descendants depth must be an integer at column 14"),
    ),
    // --- NextHop
    (
        "G.V('eth0h1').NextHop('8.8.8.8')",
        Json(
            r#"[{"eth0h1":{"IP":"192.168.1.1","IfIndex":3,"MAC":"52:54:00:00:00:fe","Priority":0}}]"#,
        ),
    ),
    (
        "G.V('eth0h1').NextHop('192.168.1.11')",
        Json(r#"[{"eth0h1":{"IfIndex":3,"MAC":"52:54:00:00:00:02","Priority":0}}]"#),
    ),
    ("G.V('vethA').NextHop('8.8.8.8')", Json("[]")),
    (
        "G.V('eth0h1').NextHop('not-an-ip')",
        Err("Invalid IP address \"not-an-ip\" at column 15"),
    ),
    // --- node metrics
    (
        "G.V('eth0h1').Metrics()",
        Json(
            r#"[{"eth0h1":[{"Last":{T+6000},"RxBytes":600,"RxPackets":6,"Start":{T+5000},"TxBytes":200,"TxPackets":3}]}]"#,
        ),
    ),
    ("G.V().Metrics().Count()", Count(1)),
    ("G.V('vethA').Metrics()", Json("[]")),
    (
        "G.V('eth0h1').Metrics('Foo')",
        Err("Metric field unknown at column 15"),
    ),
    (
        "G.V('eth0h1').Metrics().Sum()",
        Json(
            r#"{"Last":{T+6000},"RxBytes":600,"RxPackets":6,"Start":{T+5000},"TxBytes":200,"TxPackets":3}"#,
        ),
    ),
    ("G.V('eth0h1').Metrics().Sum('RxBytes')", Count(600)),
    (
        "G.V('eth0h1').Metrics().Keys()",
        Json(r#"["Last","RxBytes","RxPackets","Start","TxBytes","TxPackets"]"#),
    ),
    // --- time travel
    ("G.At({T+500}).V().Count()", Count(23)),
    ("G.At({T+500}).V('vethA').Values('MTU')", Json("[1500]")),
    ("G.At({T+1500}).V('vethA').Values('MTU')", Json("[9000]")),
    (
        "G.At({T+2500}).V('loA').Values('State')",
        Json(r#"["DOWN"]"#),
    ),
    ("G.At({T+3500}).V('loA').Values('State')", Json(r#"["UP"]"#)),
    (
        "G.At({T+4500}).V().Has('Type', 'netns').Values('Name')",
        Json(r#"["ns-a","ns-c"]"#),
    ),
    ("G.At({T+3999}).V().Has('Type', 'netns').Count()", Count(3)),
    (
        "G.At({T+3500}, '3s').V('loA').Values('State')",
        Json(r#"["UNKNOWN","DOWN","UP"]"#),
    ),
    (
        "G.At({T+3500}, '1s').V('loA').Values('State')",
        Json(r#"["DOWN","UP"]"#),
    ),
    (
        "G.At({T+3500}, '1s').V('loA').Dedup().Values('State')",
        Json(r#"["DOWN"]"#),
    ),
    (
        "G.At({T+3500}, '1s').V().Has('Name', 'lo').Count()",
        Count(2),
    ),
    ("G.At({T+3500}, 1).V().Has('Name', 'lo').Count()", Count(2)),
    ("G.At({T+6000}, FOREVER).V('vethB').Count()", Count(1)),
    (
        "G.At({T+6000}, FOREVER).V().Has('Name', 'lo').Count()",
        Count(3),
    ),
    (
        "G.At({T+6000}).V('vethB')",
        Err("Node 'vethB' does not exist"),
    ),
    ("G.At({T+4500}).V('nsA').Out().Count()", Count(2)),
    ("G.At({T+5500}).V('nsA').Out().Count()", Count(3)),
    ("G.At({T+500}).E().Count()", Count(32)),
    (
        "G.At({T+500}).V('vethB').Out().Values('Name')",
        Json(r#"["veth-b"]"#),
    ),
    (
        "G.Context({T+500}).V('vethA').Values('@Revision')",
        Json("[1]"),
    ),
    ("G.At('-1s').V().Count()", Count(22)),
    ("G.At(NOW).V().Count()", Count(22)),
    (
        "G.At('Sun, 13 Sep 2020 12:26:40 GMT').V().Count()",
        Count(1),
    ),
    ("G.At(1600000000).V().Count()", Count(1)),
    ("G.At(1600000001).V().Count()", Count(23)),
    (
        "G.At('yesterday').V()",
        Err("Time must be in RFC1123 or in Go Duration format at column 3"),
    ),
    (
        "G.V().At('-1s')",
        Err("Context must come directly after G at column 7"),
    ),
    (
        "G.Context(1, 2, 3)",
        Err("At most two parameters must be provided to 'Context' at column 3"),
    ),
    (
        "G.At(TRUE)",
        Err("Key 'Context' must be either an integer or a string at column 3"),
    ),
    (
        "G.Context('-1s', 'forever')",
        Err("Invalid duration 'forever': use a Go duration such as \"1m\" at column 3"),
    ),
    (
        "G.At({T+6500}, '6s').V('eth0h1').Metrics().Sum('RxBytes')",
        Count(900),
    ),
    (
        "G.At({T+6500}, '6s').V('eth0h1').Metrics().Count()",
        Count(1),
    ),
    (
        "G.At({T+6500}, '6s').V('eth0h1').Metrics().Aggregates(2)",
        Json(
            r#"[{"Aggregated":[
                {"Last":{T+2500},"RxBytes":300,"RxPackets":4,"Start":{T+500},"TxBytes":100,"TxPackets":2},
                {"Last":{T+6500},"RxBytes":600,"RxPackets":6,"Start":{T+4500},"TxBytes":200,"TxPackets":3}]}]"#,
        ),
    ),
    (
        "G.At({T+6500}, '6s').V('eth0h1').Metrics().Aggregates(0)",
        Err("Aggregates slice length must be a positive number of seconds at column 49"),
    ),
    // --- flows
    ("G.Flows().Count()", Count(4)),
    (
        "G.Flows('Application', 'TCP').Values('UUID')",
        Json(r#"["f3"]"#),
    ),
    ("G.Flows('Network', '10.0.0.2').Count()", Count(3)),
    ("G.Flows('Network.A', '10.0.0.2').Count()", Count(0)),
    ("G.Flows('Transport', 53).Values('UUID')", Json(r#"["f4"]"#)),
    (
        "G.Flows('Application')",
        Err("At least two parameters must be provided at column 3"),
    ),
    ("G.V('vethA').Flows().Count()", Count(2)),
    ("G.V('host1').Flows().Count()", Count(0)),
    (
        "G.V().Has('Type', 'veth').Flows().Dedup().Count()",
        Count(3),
    ),
    (
        "G.V().Has('Type', 'veth').Flows().Dedup('NodeTID').Count()",
        Count(3),
    ),
    (
        "G.V('vethA').ShortestPathTo(Metadata('Name', 'br0')).Flows().Count()",
        Count(3),
    ),
    (
        "G.Flows().Has('Transport.B', 80).Values('Transport.A')",
        Json("[40000]"),
    ),
    (
        "G.Flows().Has('Metric.ABBytes', Gt(1066)).Values('UUID')",
        Json(r#"["f3"]"#),
    ),
    (
        "G.Flows().Has('Metric.ABBytes', Gte(1066)).Count()",
        Count(3),
    ),
    (
        "G.Flows().Has('Metric.BABytes', Between(1066, 12000)).Count()",
        Count(2),
    ),
    (
        "G.Flows().Has('Metric.ABBytes', Lte(1066)).Count()",
        Count(3),
    ),
    (
        "G.Flows().Has('Metric.ABBytes', Lt(1066)).Values('UUID')",
        Json(r#"["f4"]"#),
    ),
    ("G.Flows().Has('ICMP.Type', 'ECHO').Count()", Count(2)),
    (
        "G.Flows().Has('Application')",
        Err("At least two parameters must be provided at column 11"),
    ),
    (
        "G.Flows().HasEither('Application', 'DNS', 'Application', 'TCP').Count()",
        Count(2),
    ),
    (
        "G.Flows().Sort(DESC, 'Metric.ABBytes').Values('UUID')",
        Json(r#"["f3","f1","f2","f4"]"#),
    ),
    (
        "G.Flows().Sort().Values('UUID')",
        Json(r#"["f1","f2","f3","f4"]"#),
    ),
    ("G.Flows().Limit(1).Values('UUID')", Json(r#"["f1"]"#)),
    ("G.Flows().Sum('Metric.ABBytes')", Json("7192")),
    ("G.Flows().Sum('LastUpdateMetric.BAPackets')", Json("11")),
    (
        "G.Flows().Sum('Start')",
        Err(
            "Sum on flows only accepts Metric.* and LastUpdateMetric.* keys, got: \"Start\" at column 11",
        ),
    ),
    (
        "G.Flows('UUID', 'f1').Values('Network')",
        Json(r#"[{"A":"10.0.0.1","B":"10.0.0.2","ID":0,"Protocol":"IPV4"}]"#),
    ),
    ("G.Flows('UUID', 'f1').Hops()", Ids(&["vethA"])),
    (
        "G.Flows('UUID', 'f2').CaptureNode().Values('Name')",
        Json(r#"["veth-a"]"#),
    ),
    (
        "G.Flows('UUID', 'f2').Node().Values('Name')",
        Json(r#"["veth-a"]"#),
    ),
    ("G.Flows('UUID', 'f1').In()", Ids(&["vethA"])),
    ("G.Flows('UUID', 'f1').Out()", Json("[]")),
    (
        "G.Flows('UUID', 'f1').Both('Type', 'veth')",
        Ids(&["vethA"]),
    ),
    (
        "G.Flows('UUID', 'f1').Nodes().Values('Name')",
        Json(r#"["eth0"]"#),
    ),
    ("G.Flows().Group().Count()", Count(3)),
    ("G.Flows().Group().MoreThan(1).Count()", Count(1)),
    (
        "G.Flows().Group('Application').MoreThan(0).Count()",
        Count(3),
    ),
    (
        "G.V().MoreThan(1)",
        Err("Invalid step 'MoreThan' on 'nodes' at column 7"),
    ),
    (
        "G.Flows('UUID', 'f1').Metrics()",
        Json(
            r#"[{"f1":[{"ABBytes":1066,"ABPackets":1,"BABytes":1066,"BAPackets":1,"Last":{T+200},"RTT":500000,"Start":{T+100}}]}]"#,
        ),
    ),
    ("G.Flows().Metrics().Sum('ABBytes')", Count(7192)),
    ("G.Flows().Metrics().Count()", Count(4)),
    ("G.Flows('UUID', 'f1').RawPackets().Count()", Count(2)),
    ("G.Flows('UUID', 'f3').RawPackets()", Json("[]")),
    (
        "G.Flows('UUID', 'f1').RawPackets()",
        Json(
            r#"[{"f1":[{"Timestamp":{T+100},"Index":1,"Data":"3q0=","LinkType":1},{"Timestamp":{T+200},"Index":2,"Data":"vu8=","LinkType":1}]}]"#,
        ),
    ),
    (
        "G.Flows('UUID', 'f1').RawPackets().BPF('icmp')",
        Err("BPF filtering is not available here at column 36"),
    ),
    (
        "G.Flows('UUID', 'f3').Sockets()",
        Json(
            r#"[{"f3":[{"LocalAddress":"10.0.0.2","LocalPort":80,"Name":"nginx","Pid":42,"Process":"/usr/sbin/nginx","Protocol":"TCP","RemoteAddress":"10.0.0.1","RemotePort":40000,"State":"ESTABLISHED"}]}]"#,
        ),
    ),
    ("G.Flows('UUID', 'f1').Sockets()", Json("[]")),
    ("G.V('host1').Sockets().Count()", Count(1)),
    ("G.V('host1').Sockets('Protocol', 'UDP')", Json("[]")),
    ("G.At({T+1000}, '2s').Flows().Count()", Count(3)),
    (
        "G.At({T+8000}, '1s').Flows().Values('UUID')",
        Json(r#"["f4"]"#),
    ),
    (
        "G.At({T+1000}, '2s').Flows('UUID', 'f1').Metrics()",
        Json(
            r#"[{"f1":[{"ABBytes":1066,"ABPackets":1,"BABytes":0,"BAPackets":0,"Last":{T+150},"Start":{T+100}},
                       {"ABBytes":0,"ABPackets":0,"BABytes":1066,"BAPackets":1,"Last":{T+200},"Start":{T+150}}]}]"#,
        ),
    ),
    (
        "G.At({T+1000}, '2s').Flows('UUID', 'f1').Metrics().Sum('BABytes')",
        Count(1066),
    ),
    (
        "G.At({T+1000}, '2s').Flows('UUID', 'f1').RawPackets().Count()",
        Count(2),
    ),
    // --- result shapes
    (
        "G.V('vethA')",
        Json(
            r#"[{"ID":"vethA","Metadata":{"Driver":"veth","EncapType":"ether","IPV4":["10.0.0.1/24"],"IfIndex":2,
                "LinkFlags":["UP","BROADCAST","MULTICAST"],"MAC":"02:00:00:00:00:0a","MTU":9000,"Name":"eth0",
                "State":"UP","TID":"tid-vethA","Type":"veth"},
                "Host":"host1","Origin":"agent.host1","CreatedAt":{T+50},"UpdatedAt":{T+1000},"DeletedAt":null,"Revision":2}]"#,
        ),
    ),
    (
        "G.E('e-patch')",
        Json(
            r#"[{"ID":"e-patch","Metadata":{"RelationType":"layer2","Type":"patch"},"Host":"host1","Origin":"agent.host1",
                "CreatedAt":{T+300},"UpdatedAt":{T+300},"DeletedAt":null,"Revision":1,"Parent":"patchInt","Child":"patchEx"}]"#,
        ),
    ),
    (
        "G.At({T+6000}, FOREVER).V('vethB')",
        Json(
            r#"[{"ID":"vethB","Metadata":{"IPV4":["10.0.0.2/24"],"IfIndex":2,"MAC":"02:00:00:00:00:0b","MTU":1500,
                "Name":"eth0","State":"UP","TID":"tid-vethB","Type":"veth"},
                "Host":"host1","Origin":"agent.host1","CreatedAt":{T+70},"UpdatedAt":{T+70},"DeletedAt":{T+4000},"Revision":1}]"#,
        ),
    ),
    (
        "G.V('patchInt').ShortestPathTo(Metadata('Name', 'br-int')).SubGraph()",
        Json(
            r#"[{"Nodes":[
                {"ID":"brint","Metadata":{"Name":"br-int","Ovs":{"OtherConfig":{},"Protocols":["OpenFlow10","OpenFlow13"]},"TID":"tid-brint","Type":"ovsbridge","UUID":"11111111-1111-1111-1111-111111111111"},
                 "Host":"host1","Origin":"agent.host1","CreatedAt":{T+120},"UpdatedAt":{T+120},"DeletedAt":null,"Revision":1},
                {"ID":"patchInt","Metadata":{"Driver":"openvswitch","Name":"patch-int","TID":"tid-patchInt","Type":"patch"},
                 "Host":"host1","Origin":"agent.host1","CreatedAt":{T+160},"UpdatedAt":{T+160},"DeletedAt":null,"Revision":1}],
              "Edges":[
                {"ID":"e-brint-patchInt","Metadata":{"RelationType":"ownership"},"Host":"host1","Origin":"agent.host1",
                 "CreatedAt":{T+300},"UpdatedAt":{T+300},"DeletedAt":null,"Revision":1,"Parent":"brint","Child":"patchInt"}]}]"#,
        ),
    ),
    ("G.V().Has('Name', 'nope')", Json("[]")),
    // --- errors
    (
        "G.V().Foo()",
        Err("Expected step function, got: Foo at column 7"),
    ),
    (
        "G.V().Count().Out()",
        Err("Invalid step 'Out' on 'number' at column 15"),
    ),
    (
        "G.V().Values('Name').Out()",
        Err("Invalid step 'Out' on 'values' at column 22"),
    ),
    (
        "G.E().Sort()",
        Err("Invalid step 'Sort' on 'edges' at column 7"),
    ),
    (
        "G.V().Aggregates()",
        Err("Invalid step 'Aggregates' on 'nodes' at column 7"),
    ),
    ("G.Out()", Err("Invalid step 'Out' on 'graph' at column 3")),
    ("G.V().V()", Err("Invalid step 'V' on 'nodes' at column 7")),
    (
        "G.V().Workflow('x')",
        Err(
            "Workflow steps are not supported: workflows run JavaScript, which this server does not embed at column 7",
        ),
    ),
    (
        "G.V().Has('Name', 'eth0'",
        Err("Expected right parenthesis at column 25"),
    ),
    (
        "G.V().Has('Name', 'eth0).Count()",
        Err("Unterminated string at column 19"),
    ),
    ("X.V()", Err("found \"X\", expected `G` at column 1")),
    ("", Err("found \"end of query\", expected `G` at column 1")),
];

#[test]
fn query_table() {
    let fx = fixture();
    let env = fx.env();
    assert!(CASES.len() >= 150, "only {} cases", CASES.len());
    let mut failures = Vec::new();
    for (q, expect) in CASES {
        let q = expand(q);
        let got = query(&q, &env);
        let problem = match (expect, &got) {
            (Err(want), Result::Err(e)) if e.to_string() == *want => None,
            (ErrPrefix(want), Result::Err(e)) if e.to_string().starts_with(want) => None,
            (Err(_) | ErrPrefix(_), _) => Some(format!(
                "wrong outcome: {:?}",
                got.as_ref()
                    .map(|o| String::from_utf8_lossy(&o.to_json()).into_owned())
            )),
            (_, Result::Err(e)) => Some(format!("unexpected error: {e}")),
            (Count(n), Ok(Output::Int(m))) if n == m => None,
            (Ids(want), Ok(out @ (Output::Nodes(_) | Output::Edges(_)))) if ids(out) == *want => {
                None
            }
            (Set(want), Ok(out @ (Output::Nodes(_) | Output::Edges(_)))) => {
                let mut got_ids = ids(out);
                got_ids.sort();
                let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
                want.sort();
                (got_ids != want).then(|| format!("got {got_ids:?}"))
            }
            (Paths(want), Ok(Output::Paths(paths))) => {
                let got_paths: Vec<Vec<String>> = paths
                    .iter()
                    .map(|p| p.iter().map(|n| n.id.to_string()).collect())
                    .collect();
                (got_paths != *want).then(|| format!("got {got_paths:?}"))
            }
            (Json(want), Ok(out)) => {
                let want: serde_json::Value =
                    serde_json::from_str(&expand(want)).expect("expected JSON");
                let got: serde_json::Value =
                    serde_json::from_slice(&out.to_json()).expect("output JSON");
                (got != want).then(|| format!("got {got}"))
            }
            (_, Ok(out)) => Some(format!("got {}", String::from_utf8_lossy(&out.to_json()))),
        };
        if let Some(p) = problem {
            failures.push(format!("{q}\n    {p}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// A run of traversal steps is evaluated in one go (and counted without keeping the nodes when
/// `Count` follows): it must give what the same steps give one at a time (a `Limit` that keeps
/// everything stops the run), in the live graph and in the graph of the past.
#[test]
fn traversal_runs_give_what_single_steps_give() {
    let fx = fixture();
    let env = Env {
        flows: None,
        ..fx.env()
    };
    let runs = [
        "Out().Out().Out()",
        "Out().In()",
        "Both().Both().Both()",
        "In().Out('Type', 'veth').Both()",
        "Out('RelationType', 'ownership').Both().In('Type', Ne('host'))",
        "Both('Type', 'netns').Out()",
    ];
    let mut checked = 0;
    for start in [
        "G.V()",
        "G.V('host1')",
        "G.V().Has('Type', 'veth')",
        "G.At({T+3500}).V()",
    ] {
        for run in runs {
            let steps: Vec<&str> = run.split(").").collect();
            let one_at_a_time = steps.join(").Limit(100000).");
            for tail in ["", ".Count()"] {
                let fused = expand(&format!("{start}.{run}{tail}"));
                let single = expand(&format!("{start}.{one_at_a_time}{tail}"));
                let a = query(&fused, &env).unwrap().to_json();
                let b = query(&single, &env).unwrap().to_json();
                assert_eq!(
                    String::from_utf8_lossy(&a),
                    String::from_utf8_lossy(&b),
                    "{fused} vs {single}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 48);
    // The live graph walks slot to slot; any other view walks by ID: the same nodes either way.
    let copy = skydive_graph::RevisionGraph::new(
        fx.graph.nodes().cloned().collect(),
        fx.graph.edges().cloned().collect(),
    );
    let by_id = Env {
        graph: &copy,
        ..env
    };
    let sorted_ids = |env: &Env<'_>, q: &str| -> Vec<String> {
        let mut v = ids(&query(q, env).unwrap());
        v.sort();
        v
    };
    for start in ["G.V()", "G.V('host1')", "G.V().Has('Type', 'veth')"] {
        for run in runs {
            let q = format!("{start}.{run}");
            let live = sorted_ids(&env, &q);
            assert_eq!(live, sorted_ids(&by_id, &q), "{q}");
            checked += 1;
        }
    }
    assert_eq!(checked, 66);
    // Nonzero results: the comparison above is not of empty lists.
    let n = query("G.V().Both().Both().Both().Count()", &env).unwrap();
    assert!(matches!(n, Output::Int(c) if c > 100), "{:?}", n.to_json());
    // A bad filter further down the run is reported at its own step.
    let first = query("G.V().Out('Name', 'a', 'b')", &env).err().unwrap();
    let later = query("G.V().Out().Out('Name', 'a', 'b')", &env)
        .err()
        .unwrap();
    assert_eq!(
        (first.position, later.position),
        (Some(6), Some(12)),
        "{later}"
    );
    assert_eq!(first.message, later.message);
}

#[test]
fn whole_graph_is_one_object_sorted_by_creation() {
    let fx = fixture();
    let env = Env {
        flows: None,
        ..fx.env()
    };
    let out = query("G", &env).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.to_json()).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 1);
    let nodes = arr[0]["Nodes"].as_array().unwrap();
    let edges = arr[0]["Edges"].as_array().unwrap();
    assert_eq!((nodes.len(), edges.len()), (22, 30));
    assert_eq!(nodes[0]["ID"], "host1");
    assert_eq!(nodes[21]["ID"], "vethD");
    let created: Vec<i64> = nodes
        .iter()
        .map(|n| n["CreatedAt"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn without_flow_source_live_flows_are_empty_and_stored_ones_fail() {
    let fx = fixture();
    let env = Env {
        flows: None,
        ..fx.env()
    };
    assert_eq!(query("G.Flows().Count()", &env).unwrap().to_json(), b"0");
    assert_eq!(
        query("G.At('-1s').Flows()", &env)
            .err()
            .unwrap()
            .to_string(),
        "No storage backend has been configured"
    );
}

#[test]
fn memory_backend_has_no_history() {
    let fx = fixture();
    let env = Env {
        history: &NoHistory,
        flows: None,
        ..fx.env()
    };
    assert_eq!(
        query("G.At('-1s').V()", &env).err().unwrap().to_string(),
        "Backend does not support history"
    );
    assert_eq!(query("G.V().Count()", &env).unwrap().to_json(), b"22");
}

#[test]
fn queries_see_a_consistent_snapshot_while_the_graph_changes() {
    let mut fx = fixture();
    let snapshot = fx.graph.clone();
    let empty = MemoryHistory::new();
    for i in 0..100 {
        let n = skydive_graph::Node::new(
            format!("extra{i}"),
            skydive_graph::metadata! {"Name" => "x", "Type" => "veth"},
            "host1",
            "agent.host1",
            NOW,
        );
        fx.graph.add_node(n).unwrap();
    }
    let env = |g| Env {
        graph: g,
        history: &empty,
        flows: None,
        bpf: None,
        now: NOW,
    };
    assert_eq!(
        query("G.V().Has('Type', 'veth').Count()", &env(&snapshot))
            .unwrap()
            .to_json(),
        b"5"
    );
    assert_eq!(
        query("G.V().Has('Type', 'veth').Count()", &env(&fx.graph))
            .unwrap()
            .to_json(),
        b"105"
    );
}

/// A full mesh of `n` nodes made of layer2 edges.
fn mesh(n: usize) -> skydive_graph::Graph {
    use skydive_graph::{Edge, Graph, Map, Node, Value};
    let mut g = Graph::new();
    for i in 0..n {
        let mut m = Map::new();
        m.insert("Name", Value::from(format!("n{i}")));
        m.insert("Type", Value::from("device"));
        g.add_node(Node::new(format!("n{i}"), m, "h", "agent.h", 1))
            .unwrap();
    }
    for i in 0..n {
        for j in i + 1..n {
            let mut m = Map::new();
            m.insert("RelationType", Value::from("layer2"));
            g.add_edge(Edge::new(
                format!("e{i}-{j}"),
                format!("n{i}"),
                format!("n{j}"),
                m,
                "h",
                "agent.h",
                1,
            ))
            .unwrap();
        }
    }
    g
}

/// `Both()` six times over a 20-node mesh would produce 20 × 19⁶ = 940 million nodes: the
/// evaluation stops at its element budget, at once, and says which limit it hit; time and
/// cancellation stop it too.
#[test]
fn evaluations_stop_at_their_limits() {
    use skydive_gremlin::{LimitHit, Limits, query_limited};
    let g = mesh(20);
    let history = NoHistory;
    let env = Env {
        graph: &g,
        history: &history,
        flows: None,
        bpf: None,
        now: 0,
    };
    let started = std::time::Instant::now();
    let e = query_limited(
        "G.V().Both().Both().Both().Both().Both().Both()",
        &env,
        &Limits::default(),
    )
    .err()
    .expect("the budget stops it");
    assert_eq!(e.limit, Some(LimitHit::Elements));
    assert!(e.message.contains("more than 10000000"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Counted without keeping the nodes is bounded the same way.
    let e = query_limited(
        "G.V().Both().Both().Both().Both().Both().Both().Count()",
        &env,
        &Limits::default(),
    )
    .err()
    .expect("the budget stops it");
    assert_eq!(e.limit, Some(LimitHit::Elements));

    let small = Limits {
        max_elements: 1000,
        ..Limits::default()
    };
    // 20 × 19 = 380 fits; 380 × 19 does not; E() has 190 edges.
    assert!(query_limited("G.V().Both()", &env, &small).is_ok());
    assert!(query_limited("G.E()", &env, &small).is_ok());
    let e = query_limited("G.V().Both().Both()", &env, &small)
        .err()
        .unwrap();
    assert_eq!(e.limit, Some(LimitHit::Elements));
    let e = query_limited("G.V().Both().Both().Values('Name')", &env, &small)
        .err()
        .unwrap();
    assert_eq!(e.limit, Some(LimitHit::Elements));

    let late = Limits {
        deadline: Some(std::time::Instant::now()),
        ..Limits::default()
    };
    let e = query_limited("G.V().Both()", &env, &late).err().unwrap();
    assert_eq!(e.limit, Some(LimitHit::Time));
    let cancelled = Limits {
        cancel: Some(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(
            true,
        ))),
        ..Limits::default()
    };
    let e = query_limited("G.V()", &env, &cancelled).err().unwrap();
    assert_eq!(e.limit, Some(LimitHit::Cancelled));
    // Ordinary queries are untouched.
    assert!(
        query_limited(
            "G.V().Has('Name', 'n3').Both().Count()",
            &env,
            &Limits::default()
        )
        .is_ok()
    );
}
