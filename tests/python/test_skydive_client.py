"""The `skydive-client` package from PyPI (0.10.0, the client of Skydive 0.28) against our
allinone, as Skydive's own Python test-suite drives it (compat spec §13)."""

import json
import time
import uuid

import pytest
from skydive.graph import Edge, Node
from skydive.rest.client import BadRequest, RESTClient
from skydive.websocket.client import (
    NodeAddedMsgType,
    EdgeAddedMsgType,
    WSClient,
    WSClientDebugProtocol,
    WSClientDefaultProtocol,
    WSMessage,
)

from conftest import wait_for


def rest(allinone):
    return RESTClient(allinone.endpoint)


def test_lookup_of_the_agents_host(allinone):
    c = rest(allinone)
    nodes = c.lookup_nodes("G.V().Has('Type', 'host')")
    assert len(nodes) == 1
    assert isinstance(nodes[0], Node)
    assert nodes[0].metadata["Name"] == "pytest-host"
    assert nodes[0].host == "pytest-host"
    assert c.lookup("G.V().Has('Type', 'host').Count()") == 1
    with pytest.raises(BadRequest) as e:
        c.lookup("G.V().Foo()")
    assert b"Expected step function, got: Foo" in e.value.args[0]


def test_node_and_edge_crud(allinone):
    c = rest(allinone)
    n1 = c.node_create(metadata={"Name": "py-node-1", "Type": "fabric"})
    n2 = c.node_create(node_id="py-node-2", metadata={"Name": "py-node-2", "Type": "fabric"})
    assert n2.id == "py-node-2"
    assert n1.revision == 1
    e = c.edge_create(n1.id, n2.id, metadata={"RelationType": "layer2", "Speed": 10})
    assert isinstance(e, Edge)
    assert e.parent == n1.id and e.child == n2.id
    assert n1.id in [n.id for n in c.node_list()]
    assert e.id in [x.id for x in c.edge_list()]
    edges = c.lookup_edges("G.V().Has('Name', 'py-node-1').OutE()")
    assert [x.id for x in edges] == [e.id]

    updated = c.node_update(n1.id, [{"op": "add", "path": "/Metadata/Rack", "value": "r1"}])
    assert updated.metadata["Rack"] == "r1"
    assert updated.revision == 2
    # Nothing changes: the server answers 304, which this client raises.
    with pytest.raises(BadRequest):
        c.node_update(n1.id, [{"op": "add", "path": "/Metadata/Rack", "value": "r1"}])
    with pytest.raises(BadRequest) as err:
        c.node_update(n1.id, [{"op": "remove", "path": "/Metadata/Name"}])
    assert err.value.args[0] == (
        b"validating patched resource: invalid schema: (root): Must validate all the schemas (allOf)\n"
        b"Metadata: Must validate all the schemas (allOf)\nMetadata: Name is required\n"
        b"(root): Must validate at least one schema (anyOf)\n\n"
    )
    e2 = c.edge_update(e.id, [{"op": "replace", "path": "/Metadata/Speed", "value": 100}])
    assert e2.metadata["Speed"] == 100

    c.edge_delete(e.id)
    c.node_delete(n1.id)
    c.node_delete(n2.id)
    assert c.lookup_nodes("G.V().Has('Name', Regex('py-node-.*'))") == []
    with pytest.raises(BadRequest):
        c.node_delete(n1.id)


def test_topology_rules(allinone):
    """Skydive's test_topology_rules."""
    c = rest(allinone)
    r1 = c.noderule_create("create", metadata={"Name": "node1", "Type": "fabric"})
    r2 = c.noderule_create("create", metadata={"Name": "node2", "Type": "fabric"})
    er = c.edgerule_create(
        "G.V().Has('Name', 'node1')",
        "G.V().Has('Name', 'node2')",
        {"RelationType": "layer2", "EdgeName": "my_edge"},
    )
    wait_for("the rules' graph", lambda: len(c.lookup_edges(
        "G.E().Has('RelationType', 'layer2', 'EdgeName', 'my_edge')")) == 1)
    assert len(c.lookup_nodes("G.V().Has('Name', 'node1')")) == 1
    assert len(c.lookup_nodes("G.V().Has('Name', 'node2')")) == 1
    assert r1.uuid in [r.uuid for r in c.noderule_list()]
    assert r2.uuid in [r.uuid for r in c.noderule_list()]
    assert er.uuid in [r.uuid for r in c.edgerule_list()]
    assert [r.action for r in c.noderule_list() if r.uuid == r1.uuid] == ["create"]

    # An update rule, applied to the host node, undone when deleted.
    u = c.noderule_create("update", metadata={"Location": "lab"}, query="G.V().Has('Type', 'host')")
    wait_for("the update rule", lambda: c.lookup("G.V().Has('Type', 'host').Values('Location')") == ["lab"])
    c.noderule_delete(u.uuid)
    wait_for("the update rule undone",
             lambda: c.lookup("G.V().Has('Type', 'host').HasKey('Location').Count()") == 0)

    c.edgerule_delete(er.uuid)
    c.noderule_delete(r1.uuid)
    c.noderule_delete(r2.uuid)
    wait_for("the rules' graph to go", lambda: c.lookup_nodes("G.V().Has('Type', 'fabric')") == [])
    assert r1.uuid not in [r.uuid for r in c.noderule_list()]
    assert er.uuid not in [r.uuid for r in c.edgerule_list()]


def run_ws(allinone, protocol, endpoint="/ws/subscriber", **kwargs):
    client = WSClient(
        "pytest-" + uuid.uuid4().hex[:8],
        "ws://%s%s" % (allinone.endpoint, endpoint),
        protocol=protocol,
        **kwargs
    )
    client.connect()
    # Stops the loop if the test's protocol never does; cancelled after, so that it cannot
    # stop a later test's use of the same loop.
    timer = client.loop.call_later(10, client.loop.stop)
    client.start()
    timer.cancel()
    return client


def test_injection(allinone):
    """Skydive's test_injection: publish through /ws/publisher; invalid elements are dropped."""

    class Publisher(WSClientDefaultProtocol):
        def onOpen(self):
            def node(id, md):
                return WSMessage("Graph", NodeAddedMsgType, {"ID": id, "Host": "test", "Metadata": md})

            self.sendWSMessage(node("TOR_TEST", {"Name": "Test TOR", "Type": "fabric"}))
            self.sendWSMessage(node("PORT_TEST", {"Name": "Test port", "Type": "fabric"}))
            self.sendWSMessage(node("BAD_NODE", {"Name": "Bad node"}))
            self.sendWSMessage(node("BAD_NETNS", {"Name": "Bad netns", "Type": "netns"}))
            self.sendWSMessage(WSMessage("Graph", EdgeAddedMsgType, {
                "ID": "TOR_L2LINK", "Host": "test", "Parent": "TOR_TEST", "Child": "PORT_TEST",
                "Metadata": {"RelationType": "layer2"}}))
            self.sendWSMessage(WSMessage("Graph", EdgeAddedMsgType, {
                "ID": "BAD_LINK", "Host": "test", "Parent": "", "Child": "",
                "Metadata": {"RelationType": "layer2"}}))
            self.factory.client.loop.call_later(0.5, self.factory.client.loop.stop)

    run_ws(allinone, Publisher, endpoint="/ws/publisher")
    c = rest(allinone)
    wait_for("the injected port", lambda: len(c.lookup_nodes("G.V().Has('Name', 'Test port')")) == 1)
    nodes = c.lookup_nodes("G.V().Has('Name', 'Test port')")
    assert nodes[0].id == "PORT_TEST"
    assert c.lookup_nodes("G.V().Has('Name', 'Bad netns')") == []
    assert c.lookup_nodes("G.V().Has('Name', 'Bad node')") == []
    assert len(c.lookup_edges("G.V().Has('Name', 'Test TOR').OutE().Has('RelationType', 'layer2')")) == 1


def test_subscriber_sync_and_events(allinone):
    received = []
    c = rest(allinone)

    class Subscriber(WSClientDebugProtocol):
        def onMessage(self, payload, isBinary):
            msg = json.loads(payload)
            received.append(msg)
            if msg["Type"] == "SyncReply":
                # Make an event happen once synchronised.
                self.factory.client.loop.run_in_executor(
                    None, lambda: c.node_create(node_id="ws-event", metadata={"Name": "ws-event", "Type": "fabric"}))
            if msg["Type"] == "NodeAdded" and msg["Obj"]["ID"] == "ws-event":
                self.stop_when_complete()

    run_ws(allinone, Subscriber, sync="1")
    types = [m["Type"] for m in received]
    assert types[0] == "SyncReply", types
    sync = received[0]["Obj"]
    assert any(n["Metadata"]["Type"] == "host" for n in sync["Nodes"])
    added = [m for m in received if m["Type"] == "NodeAdded"]
    assert added and added[-1]["Obj"]["Metadata"]["Name"] == "ws-event"
    c.node_delete("ws-event")


def test_subscriber_filter(allinone):
    received = []
    c = rest(allinone)

    class Filtered(WSClientDebugProtocol):
        def onMessage(self, payload, isBinary):
            received.append(json.loads(payload))
            self.stop_when_complete()

    run_ws(allinone, Filtered, sync="1", filter="G.V().Has('Type', 'host')")
    assert received[0]["Type"] == "SyncReply"
    nodes = received[0]["Obj"]["Nodes"]
    assert [n["Metadata"]["Type"] for n in nodes] == ["host"]


def test_history_through_at_and_context(allinone):
    """Skydive needed Elasticsearch for this; the embedded store answers it."""
    c = rest(allinone)
    before = int(time.time() * 1000)
    time.sleep(0.05)
    n = c.node_create(metadata={"Name": "py-history", "Type": "fabric", "MTU": 1500})
    time.sleep(0.05)
    created = int(time.time() * 1000)
    time.sleep(0.05)
    c.node_update(n.id, [{"op": "replace", "path": "/Metadata/MTU", "value": 9000}])
    time.sleep(0.05)
    updated = int(time.time() * 1000)
    time.sleep(0.05)
    c.node_delete(n.id)
    time.sleep(0.05)
    deleted = int(time.time() * 1000)

    def at(t):
        return c.lookup_nodes("G.At(%d).V().Has('Name', 'py-history')" % t)

    wait_for("the history to have the deletion", lambda: at(updated) and not at(deleted))
    assert at(before) == []
    assert [x.metadata["MTU"] for x in at(created)] == [1500]
    assert [x.metadata["MTU"] for x in at(updated)] == [9000]
    assert at(deleted) == []
    revisions = c.lookup_nodes(
        "G.Context(%d, %d).V().Has('Name', 'py-history')" % (deleted, (deleted - before) // 1000 + 1)
    )
    assert [x.metadata["MTU"] for x in revisions] == [1500, 9000]
    assert [x.revision for x in revisions] == [1, 2]


def test_capture(allinone):
    """As Skydive's own test_capture: create, find in the list by UUID, delete."""
    c = rest(allinone)
    capture = c.capture_create("G.V().Has('Name', 'py-cap-eth0')", bpf_filter="icmp", name="py")
    assert capture.uuid
    assert capture.uuid in [x.uuid for x in c.capture_list()]
    with pytest.raises(BadRequest) as e:
        c.capture_create("G.V(", name="broken")
    assert b"invalid GremlinQuery" in e.value.args[0]
    c.capture_delete(capture.uuid)
    assert capture.uuid not in [x.uuid for x in c.capture_list()]


def test_alert(allinone):
    """As Skydive's own test_alert: create, find in the list by UUID, delete."""
    c = rest(allinone)
    alert = c.alert_create("https://127.0.0.1:1/hook", "G.V().Has('Name', 'py-alert')")
    assert alert.uuid
    assert alert.uuid in [x.uuid for x in c.alert_list()]
    c.alert_delete(alert.uuid)
    assert alert.uuid not in [x.uuid for x in c.alert_list()]
