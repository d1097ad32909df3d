"""The web UI in a real browser: Debian's headless Chromium, driven through WebDriver
(chromedriver), against a real `skydive allinone` whose agent sees a real veth pair in a
real network namespace. Screenshots go to target/ui-screenshots/ for people to look at."""

import os
import subprocess
import time

import pytest

from conftest import need, wait_for
from uitools import CHROMEDRIVER, CHROMIUM, Page, start_browser

NETNS = "skyui-ns"
HOST_IF, NS_IF = "skyuiA", "skyuiB"
HOST_IP, NS_IP = "169.254.77.1", "169.254.77.2"


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def browser():
    need(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "needs Debian's chromium and chromium-driver")
    driver, cleanup = start_browser()
    try:
        yield driver
    finally:
        cleanup()


@pytest.fixture(scope="module")
def veth():
    """A namespace with one end of a veth pair; the other end stays on the host."""
    need(os.geteuid() == 0, "needs root for a network namespace and a veth pair")
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
    before_ms = int(time.time() * 1000)
    time.sleep(1.1)  # the history test compares with a time before the pair existed
    try:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF, "netns", NETNS)
        sh("ip", "addr", "add", HOST_IP + "/30", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        # nsenter rather than `ip netns exec`, which remounts /sys and cannot everywhere (in a
        # chroot, say).
        sh("nsenter", "--net=/run/netns/" + NETNS, "ip", "addr", "add", NS_IP + "/30", "dev", NS_IF)
        sh("nsenter", "--net=/run/netns/" + NETNS, "ip", "link", "set", NS_IF, "up")
        yield before_ms
    finally:
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


@pytest.fixture(scope="module")
def page(allinone, browser, veth):
    p = Page(browser, "http://%s/" % allinone.endpoint)
    wait_for("the veth pair in the page", lambda: p.node_id(HOST_IF) and p.node_id(NS_IF), 15)
    return p


def test_page_is_served_with_its_modules(allinone):
    import urllib.request

    with urllib.request.urlopen("http://%s/" % allinone.endpoint, timeout=5) as r:
        page = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/main.js">' in page
    with urllib.request.urlopen("http://%s/ui/js/main.js" % allinone.endpoint, timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/javascript")
        assert b"skydiveUI" in r.read()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://%s/ui/nope.js" % allinone.endpoint, timeout=5)
    assert e.value.code == 404


def test_live_topology_shows_a_new_veth_pair(page):
    a, b = page.node_id(HOST_IF), page.node_id(NS_IF)
    ns = page.node_id(NETNS, "netns")
    host = page.node_id("pytest-host", "host")
    assert ns and host
    wait_for("both ends drawn", lambda: page.drawn(a) and page.drawn(b))
    # Nesting: the host holds the namespace, which holds its end of the pair.
    parents = page.js(
        "const cy = window.skydiveUI.view.cy; return arguments[0].map(id => cy.getElementById(id).data('parent') || null);",
        [a, b, ns],
    )
    assert parents == [host, ns, host]
    # The pair is one layer2 link, drawn.
    linked = page.js(
        "const cy = window.skydiveUI.view.cy; return cy.getElementById(arguments[0]).edgesWith(cy.getElementById(arguments[1])).map(e => e.data('relation'));",
        a,
        b,
    )
    assert linked == ["layer2"]
    page.shot("topology")


def test_a_change_reaches_the_page_without_a_redraw(page):
    a = page.node_id(HOST_IF)
    before = page.js("return window.skydiveUI.view.stats")
    # A mark on the drawn element: it survives only if the element is updated in place.
    page.js("window.skydiveUI.view.cy.getElementById(arguments[0]).scratch('_probe', 42)", a)
    sh("ip", "link", "set", HOST_IF, "mtu", "1400")
    wait_for(
        "the new MTU in the page",
        lambda: page.js("return window.skydiveUI.graph.nodes.get(arguments[0]).Metadata.MTU", a) == 1400,
    )
    wait_for("a redraw", lambda: page.js("return window.skydiveUI.view.stats.flushes") > before["flushes"])
    assert page.js("return window.skydiveUI.view.stats.resets") == before["resets"]
    assert page.js("return window.skydiveUI.view.cy.getElementById(arguments[0]).scratch('_probe')", a) == 42
    assert page.js("return window.skydiveUI.view.cy.getElementById(arguments[0]).data('label')", a) == HOST_IF


def test_clicking_a_node_shows_its_metadata_and_edges(page):
    a, b = page.node_id(HOST_IF), page.node_id(NS_IF)
    page.click_node(a)
    wait_for("the node panel", lambda: page.q("#node-panel .node-panel").get_attribute("data-node-id") == a)
    value = lambda key: page.q('#node-panel [data-key="%s"] .md-value' % key).text
    assert value("Name") == HOST_IF
    assert value("Type") == "veth"
    assert value("MTU") == "1,400 bytes"
    assert value("State") == "UP"
    # Nested metadata is reachable by its dotted key.
    ipv4 = page.qs('#node-panel [data-key="IPV4.0"] .md-value')
    assert [e.text for e in ipv4] == [HOST_IP + "/30"]
    # Counters carry units.
    rx = page.qs('#node-panel [data-key="Metric.RxBytes"] .md-value')
    if rx:
        assert rx[0].text.endswith(")") and "B" in rx[0].text
    # Its edges: the peer is a link that selects it.
    peer = page.q('#node-panel table.edges a[data-node-id="%s"]' % b)
    assert peer.text == NS_IF
    peer.click()
    wait_for("the peer's panel", lambda: page.q("#node-panel .node-panel").get_attribute("data-node-id") == b)
    page.shot("metadata")


def test_clicking_a_link_shows_its_ends_and_metadata(page):
    from selenium.webdriver.common.action_chains import ActionChains

    a, b = page.node_id(HOST_IF), page.node_id(NS_IF)
    page.center_on(a)
    eid = page.js(
        """const cy = window.skydiveUI.view.cy;
        const e = cy.getElementById(arguments[0]).edgesWith(cy.getElementById(arguments[1]))[0];
        cy.center(e);
        return e.id();""",
        a,
        b,
    )
    # Edges are hidden while the view moves (hideEdgesOnViewport): let it settle.
    time.sleep(0.5)
    # A point on the link a quarter of the way from the host's end, outside the namespace's box.
    x, y = page.js(
        """const cy = window.skydiveUI.view.cy, e = cy.getElementById(arguments[0]);
        const hostEnd = e.source().id() === arguments[1];
        const p = hostEnd ? e.renderedSourceEndpoint() : e.renderedTargetEndpoint();
        const q = hostEnd ? e.renderedTargetEndpoint() : e.renderedSourceEndpoint();
        const c = cy.container().getBoundingClientRect();
        return [Math.round(p.x + (q.x - p.x) / 4 - c.width / 2), Math.round(p.y + (q.y - p.y) / 4 - c.height / 2)];""",
        eid,
        a,
    )
    ActionChains(page.d).move_to_element_with_offset(page.q("#graph"), x, y).click().perform()
    wait_for("the link's panel", lambda: page.qs('#node-panel .edge-panel [data-edge-id="%s"]' % eid))
    assert page.q('#node-panel .edge-panel [data-key="RelationType"] .md-value').text == "layer2"
    ends = sorted(e.text for e in page.qs("#node-panel .edge-panel a[data-node-id]"))
    assert ends == sorted([HOST_IF, NS_IF])
    page.shot("link")


def server_error(endpoint, query):
    """The body of the server's answer to a bad query, as the REST API gives it."""
    import json
    import urllib.request

    req = urllib.request.Request(
        "http://%s/api/topology" % endpoint,
        data=json.dumps({"GremlinQuery": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400
    return e.value.read().decode().strip()


def test_gremlin_box_highlights_matches_and_shows_errors(page, allinone):
    b = page.node_id(NS_IF)
    page.tab("gremlin")
    box = page.q("#gremlin-query")
    box.clear()
    box.send_keys("G.V().Has('Name', '%s')" % NS_IF)
    page.q("#gremlin-run").click()
    wait_for("the query's summary", lambda: page.q("#gremlin-summary").get_attribute("data-count") == "1")
    assert page.js("return window.skydiveUI.view.cy.getElementById(arguments[0]).hasClass('hl')", b)
    assert page.js("return window.skydiveUI.view.cy.$('.hl').length") == 1
    assert '"Name": "%s"' % NS_IF in page.q("#gremlin-result").text
    page.shot("gremlin")
    box.clear()
    box.send_keys("G.V().Foo()")
    page.q("#gremlin-run").click()
    wait_for("the server's error", lambda: "error" in page.q("#gremlin-summary").get_attribute("class"))
    expected = server_error(allinone.endpoint, "G.V().Foo()")
    assert expected.startswith("Expected step function, got: Foo")
    assert page.q("#gremlin-summary").text == "400: " + expected
    assert page.js("return window.skydiveUI.view.cy.$('.hl').length") == 0


def test_namespace_collapses_and_expands(page):
    a, b = page.node_id(HOST_IF), page.node_id(NS_IF)
    ns = page.node_id(NETNS, "netns")
    page.toggle_node(ns, "the namespace collapsed", lambda: not page.drawn(b), corner=True)
    # It stands for what it holds: its loopback and its end of the pair.
    inside = page.js("const ui = window.skydiveUI; return [...ui.graph.owned.get(arguments[0])].map(id => ui.graph.name(id)).sort();", ns)
    assert inside == ["lo", NS_IF]
    assert page.js("return window.skydiveUI.view.cy.getElementById(arguments[0]).data('label')", ns) == NETNS + " (+2)"
    # The pair's link now ends at the namespace that stands for the hidden end.
    ends = page.js(
        "const cy = window.skydiveUI.view.cy; return cy.getElementById(arguments[0]).edgesWith(cy.getElementById(arguments[1])).map(e => e.hasClass('meta'));",
        a,
        ns,
    )
    assert ends == [True]
    page.shot("collapsed")
    page.toggle_node(ns, "the namespace expanded", lambda: page.drawn(b))
    assert page.js("return window.skydiveUI.view.cy.$('edge.meta').length") == 0


def test_capture_from_the_selected_node_shows_its_flows(page, allinone):
    a = page.node_id(HOST_IF)
    page.click_node(a)
    wait_for("the node panel", lambda: page.q("#node-panel .node-panel").get_attribute("data-node-id") == a)
    page.tab("captures")
    page.q("#capture-use-selected").click()
    assert page.q('#capture-form [name="GremlinQuery"]').get_attribute("value").startswith("G.V().Has('TID', ")
    page.q('#capture-form [name="BPFFilter"]').send_keys("icmp")
    page.q("#capture-create").click()
    wait_for("the capture in the list", lambda: page.qs("#capture-list li[data-capture-id]"), 10)
    wait_for(
        "the capture active on the node",
        lambda: page.js(
            "const c = window.skydiveUI.graph.nodes.get(arguments[0]).Metadata.Captures; return !!c && c.some(x => x.State === 'active');",
            a,
        ),
        15,
    )
    subprocess.run(["ping", "-c", "4", "-i", "0.2", "-W", "1", NS_IP], check=True, capture_output=True)

    def icmp_row():
        rows = page.qs("#flow-table tr[data-flow-uuid]")
        for r in rows:
            app = r.find_element("css selector", 'td[data-col="Application"]').text
            cell = r.find_element("css selector", 'td[data-col="Packets"]')
            ab, ba = int(cell.get_attribute("data-ab")), int(cell.get_attribute("data-ba"))
            if app == "ICMPv4" and ab >= 4 and ba >= 4:
                return r
        return None

    wait_for("an ICMPv4 flow row with the pings", icmp_row, 20)
    row = icmp_row()
    assert row.find_element("css selector", 'td[data-col="A"]').text == HOST_IP
    assert row.find_element("css selector", 'td[data-col="B"]').text == NS_IP
    page.shot("flows")
    # Sorting by a column orders the rows by it.
    page.q('#flow-table th[data-sort="Bytes"]').click()
    assert page.q('#flow-table th[data-sort="Bytes"]').get_attribute("class") in ("asc", "desc")
    page.q("#capture-list li[data-capture-id] button.delete").click()
    wait_for("the capture gone", lambda: not page.qs("#capture-list li[data-capture-id]"), 10)
    wait_for("the probe stopped", lambda: allinone.count("G.V().Has('Captures.State', 'active')") == 0, 10)


def test_history_shows_what_changed(page, veth):
    before_ms = veth
    page.tab("history")
    set_time = "document.querySelector(arguments[0]).value = (ms => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 19))(arguments[1]);"
    page.js(set_time, "#history-from", before_ms)
    page.js(set_time, "#history-to", int(time.time() * 1000) + 1000)
    page.q("#history-compare").click()
    wait_for("the comparison", lambda: page.qs("#history-result .diff.added"), 15)
    added = [li.text for li in page.qs("#history-result .diff.added li")]
    assert any(t.startswith(HOST_IF + " ") for t in added), added
    assert any(t.startswith(NS_IF + " ") for t in added), added
    assert any(t.startswith(NETNS + " ") for t in added), added
    assert page.q("#mode").get_attribute("class") == "history"
    a = page.node_id(HOST_IF)
    wait_for("the added mark", lambda: page.js("return window.skydiveUI.view.cy.getElementById(arguments[0]).hasClass('added')", a))
    page.shot("history")
    page.q("#back-live").click()
    wait_for("the live view", lambda: page.q("#mode").get_attribute("class") == "live")
    wait_for("the live graph", lambda: page.node_id(HOST_IF) is not None)
    assert page.js("return window.skydiveUI.view.cy.$('.added').length") == 0


def test_the_agents_own_ui_and_a_remote_analyzer(allinone, browser):
    agent = "127.0.0.1:%d" % allinone.agent_port
    p = Page(browser, "http://%s/" % agent)
    wait_for("the agent's identity", lambda: p.q("#server").text.startswith("agent pytest-host"))
    assert p.node_id("pytest-host", "host") is not None
    p.tab("captures")
    assert "managed by the analyzer" in p.q("#agent-captures").text
    # The page of the agent, pointed at the analyzer.
    p = Page(browser, "http://%s/?server=http://%s" % (agent, allinone.endpoint))
    wait_for("the analyzer's identity", lambda: p.q("#server").text.startswith("analyzer pytest-host"))
    assert "http://" + allinone.endpoint in p.q("#server").text
    p.tab("captures")
    assert p.qs("#capture-form")
