"""Helpers for driving the web UI in Debian's headless Chromium through WebDriver
(chromedriver): used by the browser tests and by benchmark B8."""

import json
import os
import pathlib
import shutil
import tempfile
import time
import uuid

from conftest import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = pathlib.Path(__file__).resolve().parents[2] / "target" / "ui-screenshots"


def start_browser(width=1400, height=900, env=None):
    """A headless Chromium with a fresh profile (and the environment `env`, e.g. a HOME whose
    NSS database trusts a test CA); returns (driver, cleanup)."""
    # Selenium must not look for (or download) a browser or a driver of its own.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="skydive-ui-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=%d,%d" % (width, height),
        "--user-data-dir=" + profile,
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=opts)
    driver.set_script_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)

    def cleanup():
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

    return driver, cleanup


JS_NODE_ID = """
for (const n of window.skydiveUI.graph.nodes.values())
  if (n.Metadata && n.Metadata.Name === arguments[0] && (!arguments[1] || n.Metadata.Type === arguments[1])) return n.ID;
return null;"""


class Page:
    def __init__(self, driver, url, timeout=20):
        self.d = driver
        driver.get(url)
        wait_for("the page's first render", lambda: self.js("return window.skydiveUI && window.skydiveUI.metrics.firstRenderAt") is not None, timeout)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def node_id(self, name, type_=None):
        return self.js(JS_NODE_ID, name, type_)

    def drawn(self, node_id):
        return self.js("return window.skydiveUI.view.cy.getElementById(arguments[0]).nonempty()", node_id)

    def q(self, css):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, css)

    def qs(self, css):
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, css)

    def tab(self, name):
        self.q('#tabs button[data-tab="%s"]' % name).click()

    def point(self, node_id, corner=False):
        """Where a drawn node is, relative to the graph's centre (the origin of WebDriver's
        offsets): its centre, or, for a compound, the one of its four inner corners farthest
        from every drawn edge (a link crossing the compound's border would take a click meant
        for the compound)."""
        return self.js(
            """
            const cy = window.skydiveUI.view.cy, el = cy.getElementById(arguments[0]);
            const c = cy.container().getBoundingClientRect();
            let x, y;
            if (arguments[1]) {
              const b = el.renderedBoundingBox({includeLabels: false});
              const segments = cy.edges(':visible').map(e => [e.renderedSourceEndpoint(), e.renderedTargetEndpoint()]);
              const away = (px, py) => Math.min(Infinity, ...segments.map(([s, t]) => {
                const dx = t.x - s.x, dy = t.y - s.y, len = dx * dx + dy * dy;
                const k = len ? Math.max(0, Math.min(1, ((px - s.x) * dx + (py - s.y) * dy) / len)) : 0;
                return Math.hypot(px - s.x - k * dx, py - s.y - k * dy);
              }));
              const corners = [[b.x1 + 4, b.y1 + 4], [b.x2 - 4, b.y1 + 4], [b.x1 + 4, b.y2 - 4], [b.x2 - 4, b.y2 - 4]];
              [x, y] = corners.reduce((best, p) => (away(...p) > away(...best) ? p : best));
            } else { const p = el.renderedPosition(); x = p.x; y = p.y; }
            return [Math.round(x - c.width / 2), Math.round(y - c.height / 2)];""",
            node_id,
            corner,
        )

    def center_on(self, node_id):
        self.js(
            "const cy = window.skydiveUI.view.cy; cy.zoom(1); cy.center(cy.getElementById(arguments[0]));",
            node_id,
        )

    def click_node(self, node_id, double=False, corner=False):
        from selenium.webdriver.common.action_chains import ActionChains

        self.center_on(node_id)
        # The view draws a texture and hides edges while it moves (textureOnViewport,
        # hideEdgesOnViewport): let it settle before clicking.
        time.sleep(0.4)
        x, y = self.point(node_id, corner)
        chain = ActionChains(self.d).move_to_element_with_offset(self.q("#graph"), x, y)
        (chain.double_click() if double else chain.click()).perform()

    def toggle_node(self, node_id, what, done, corner=False, attempts=3):
        """Double-clicks a compound node until `done()` holds (collapsed or expanded). A
        double-click that lands while the view still moves can be lost (Cytoscape ignores or
        misplaces it during viewport motion, and there is no "settled" signal to wait for);
        one that did land is seen by `done()` before the next attempt, so a toggle is never
        undone."""
        for attempt in range(attempts):
            if attempt and done():
                return
            self.click_node(node_id, double=True, corner=corner)
            try:
                wait_for(what, done, timeout=4)
                return
            except AssertionError:
                continue
        raise AssertionError("timed out waiting for %s after %d double-clicks" % (what, attempts))

    def shot(self, name):
        self.d.save_screenshot(str(SHOTS / (name + ".png")))


# A synthetic topology, pushed through /ws/publisher.


def node(id_, host, name, type_, **md):
    now = int(time.time() * 1000)
    return {
        "ID": id_,
        "Host": host,
        "Metadata": dict(Name=name, Type=type_, Bench="b8", **md),
        "CreatedAt": now,
        "UpdatedAt": now,
        "Revision": 1,
    }


def edge(parent, child, relation, host):
    now = int(time.time() * 1000)
    return {
        "ID": "b8-e-%s-%s" % (parent, child),
        "Parent": parent,
        "Child": child,
        "Host": host,
        "Metadata": {"RelationType": relation},
        "CreatedAt": now,
        "UpdatedAt": now,
        "Revision": 1,
    }


def topology(hosts, namespaces, interfaces):
    """Hosts, each with a bridge and namespaces of interfaces, the first interface of each
    namespace paired with a veth on the host, in the bridge."""
    nodes, edges = [], []
    for h in range(hosts):
        host = "b8-host-%d" % h
        hid = "b8-%d" % h
        nodes.append(node(hid, host, host, "host"))
        br = hid + "-br"
        nodes.append(node(br, host, "br0", "bridge", State="UP", MTU=1500))
        edges.append(edge(hid, br, "ownership", host))
        for n in range(namespaces):
            ns = "%s-ns%d" % (hid, n)
            nodes.append(node(ns, host, "ns%d" % n, "netns", Path="/var/run/netns/ns%d" % n))
            edges.append(edge(hid, ns, "ownership", host))
            outer = "%s-veth%d" % (hid, n)
            nodes.append(node(outer, host, "veth%d" % n, "veth", State="UP", MTU=1500))
            edges.append(edge(hid, outer, "ownership", host))
            edges.append(edge(br, outer, "layer2", host))
            for i in range(interfaces):
                itf = "%s-if%d" % (ns, i)
                nodes.append(node(itf, host, "eth%d" % i, "veth", State="UP", MTU=1500, IfIndex=i + 2))
                edges.append(edge(ns, itf, "ownership", host))
                if i == 0:
                    edges.append(edge(outer, itf, "layer2", host))
    return nodes, edges


def publisher(aio, client_type):
    """A `/ws/publisher` connection to `aio` that answers the server's pings in the background."""
    import threading

    import websocket

    ws = websocket.create_connection(
        "ws://%s/ws/publisher" % aio.endpoint,
        header=["X-Client-Type: " + client_type, "X-Host-ID: %s-publisher" % client_type, "X-Persistence-Policy: Persistent"],
    )
    # The server pings every few seconds and closes a silent client: read (and so answer pings).
    threading.Thread(target=drain, args=(ws,), daemon=True).start()
    return ws


def publish_topology(aio, ws, nodes, edges, timeout):
    """Sends the nodes then the edges, and waits until the analyzer holds them all."""
    for n in nodes:
        ws.send(msg("NodeAdded", n))
    for e in edges:
        ws.send(msg("EdgeAdded", e))
    wait_for("the nodes in the analyzer", lambda: aio.count("G.V().Has('Bench', 'b8')") == len(nodes), timeout)
    wait_for("the edges in the analyzer", lambda: aio.count("G.E()") >= len(edges), timeout)


def drain(ws):
    try:
        while True:
            ws.recv()
    except Exception:
        pass


def msg(type_, obj):
    return json.dumps({"Namespace": "Graph", "Type": type_, "UUID": uuid.uuid4().hex, "Status": 200, "Obj": obj})
