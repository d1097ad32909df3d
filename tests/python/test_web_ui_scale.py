"""The web UI with a larger topology, in headless Chromium: a synthetic topology of 1,200
nodes pushed through /ws/publisher to an allinone whose synchronisations are chunked (500
elements per SyncReply, the rest as NodeAdded/EdgeAdded), so that the page must assemble the
graph from a SyncReply and a burst of events, open it collapsed, and keep applying updates
incrementally. Benchmark B8 (tests/python/bench_b8.py) measures the 5,000-node case."""

import os
import tempfile
import time

import pytest

from conftest import Allinone, need, wait_for
from uitools import CHROMEDRIVER, CHROMIUM, Page, edge, msg, node, publish_topology, publisher, start_browser, topology

HOSTS, NAMESPACES, INTERFACES = 10, 10, 10


@pytest.fixture(scope="module")
def big():
    need(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "needs Debian's chromium and chromium-driver")
    with tempfile.TemporaryDirectory() as tmp:
        aio = Allinone(tmp, "http:\n  ws:\n    sync_chunk_size: 500\n")
        driver, cleanup = start_browser()
        ws = None
        try:
            ws = publisher(aio, "uitest")
            nodes, edges = topology(HOSTS, NAMESPACES, INTERFACES)
            publish_topology(aio, ws, nodes, edges, 60)
            page = Page(driver, "http://%s/" % aio.endpoint, timeout=60)
            yield aio, page, ws, nodes
        finally:
            if ws:
                ws.close()
            cleanup()
            aio.stop()


def test_a_chunked_synchronisation_is_assembled_and_opens_collapsed(big):
    aio, page, _, nodes = big
    total_nodes, total_edges = aio.count("G.V()"), aio.count("G.E()")
    assert total_nodes > 1000  # more than one chunk of 500
    wait_for(
        "every node and edge in the page",
        lambda: page.js("const g = window.skydiveUI.graph; return [g.nodes.size, g.edges.size]") == [total_nodes, total_edges],
        20,
    )
    wait_for("the burst drawn", lambda: page.js("const v = window.skydiveUI.view; return v.frame === null && v.dirtyNodes.size === 0"))
    state = page.js(
        """const u = window.skydiveUI, v = u.view;
        const ns = [...u.graph.nodes.values()].filter(n => n.Metadata.Bench === 'b8' && n.Metadata.Type === 'netns').map(n => n.ID);
        const hosts = [...u.graph.nodes.values()].filter(n => n.Metadata.Type === 'host').map(n => n.ID);
        return {ns: ns.length, nsCollapsed: ns.filter(id => v.collapsed.has(id)).length,
                hostsCollapsed: hosts.filter(id => v.collapsed.has(id)).length,
                drawn: v.cy.nodes().length, meta: v.cy.$('edge.meta').filter(e => e.source().id().startsWith('b8-')).length,
                label: v.cy.getElementById('b8-0-ns3').data('label')};"""
    )
    # Every namespace collapsed, no host; what is drawn is the graph minus the interfaces
    # inside namespaces (the agent's own namespaces, if any, collapse too).
    assert state["ns"] == HOSTS * NAMESPACES
    assert state["nsCollapsed"] == HOSTS * NAMESPACES
    assert state["hostsCollapsed"] == 0
    hidden = page.js(
        "const u = window.skydiveUI; return [...u.graph.nodes.keys()].filter(id => !u.view.visible(id)).length"
    )
    assert hidden >= HOSTS * NAMESPACES * INTERFACES
    assert state["drawn"] == total_nodes - hidden
    assert state["label"] == "ns3 (+%d)" % INTERFACES
    # Each namespace's veth link now ends at the namespace.
    assert state["meta"] == HOSTS * NAMESPACES
    page.shot("scale-collapsed")


def test_updates_and_additions_are_drawn_in_place(big):
    aio, page, ws, _ = big
    resets = page.js("return window.skydiveUI.view.stats.resets")
    now = int(time.time() * 1000)
    for k in range(20):
        ws.send(msg("NodePartiallyUpdated", {"ID": "b8-%d-veth%d" % (k % HOSTS, k // HOSTS), "Revision": 2, "UpdatedAt": now, "Ops": [{"Type": 1, "Key": "State", "Value": "DOWN"}]}))
    for k in range(10):
        host = "b8-host-%d" % k
        ws.send(msg("NodeAdded", node("ui-new-%d" % k, host, "new%d" % k, "tap", State="UP")))
        ws.send(msg("EdgeAdded", edge("b8-%d" % k, "ui-new-%d" % k, "ownership", host)))
    wait_for(
        "the updates drawn",
        lambda: page.js(
            "const cy = window.skydiveUI.view.cy; return cy.$('node[state = \"DOWN\"][id ^= \"b8-\"]').length === 20 && cy.$('node[id ^= \"ui-new-\"]').length === 10"
        ),
        10,
    )
    assert page.js("return window.skydiveUI.view.stats.resets") == resets
    # New nodes sit inside their host.
    assert page.js("return window.skydiveUI.view.cy.getElementById('ui-new-4').data('parent')") == "b8-4"


def test_expanding_a_namespace_from_its_panel(big):
    _, page, _, _ = big
    page.js("window.skydiveUI.select('b8-2-ns5')")
    button = page.q("#node-panel button.toggle")
    assert button.text == "Expand (%d inside)" % INTERFACES
    button.click()
    wait_for("its interfaces drawn", lambda: page.js("return window.skydiveUI.view.cy.getElementById('b8-2-ns5-if9').nonempty()"))
    assert page.js("return window.skydiveUI.view.cy.getElementById('b8-2-ns5').children().length") == INTERFACES
    assert page.q("#node-panel button.toggle").text == "Collapse"
    page.shot("scale-expanded")


def test_a_container_is_drawn_in_its_namespace_with_its_labels(big):
    """A container node as the docker probe makes it: inside its namespace, drawn as a
    container, its labels (nested maps) readable in the metadata panel by their dotted keys."""
    _, page, ws, _ = big
    host, ns = "b8-host-3", "b8-3-ns2"
    labels = {"a": {"b": {"c": "123"}}, "x~y/z@w": "1"}
    container = {"ID": "c0ffee", "Image": "busybox:1", "Runtime": "docker", "Status": "running", "InitProcessPID": 42, "Labels": labels}
    ws.send(msg("NodeAdded", node("ui-ct", host, "web", "container", Manager="docker", Container=container)))
    ws.send(msg("EdgeAdded", edge(ns, "ui-ct", "ownership", host)))
    wait_for("the container in the model, owned by its namespace", lambda: page.js("return window.skydiveUI.graph.owner.get('ui-ct')") == ns)
    page.js("window.skydiveUI.select(arguments[0])", ns)
    # The panel is drawn again as the graph changes: read it until it says so.
    wait_for("the namespace's panel counting the container", lambda: page.q("#node-panel button.toggle").text == "Expand (%d inside)" % (INTERFACES + 1))
    # Expanded through the view (the panel's button is clicked in the test above).
    page.js("const v = window.skydiveUI.view; if (v.collapsed.has(arguments[0])) v.toggle(arguments[0]);", ns)
    wait_for("the container drawn in its namespace", lambda: page.js("return window.skydiveUI.view.cy.getElementById('ui-ct').data('parent')") == ns)
    assert page.js("return window.skydiveUI.view.cy.getElementById('ui-ct').style('shape')") == "barrel"
    page.js("window.skydiveUI.select('ui-ct')")
    wait_for("the container's panel", lambda: page.q("#node-panel .node-panel").get_attribute("data-node-id") == "ui-ct")
    value = lambda key: page.q('#node-panel [data-key="%s"] .md-value' % key).text
    wait_for("the container's metadata", lambda: value("Type") == "container")
    wait_for("its labels, nested", lambda: value("Container.Labels.a.b.c") == "123")
    wait_for("a label with ~ / @", lambda: value("Container.Labels.x~y/z@w") == "1")
    wait_for("its image", lambda: value("Container.Image") == "busybox:1")
    page.shot("container")
