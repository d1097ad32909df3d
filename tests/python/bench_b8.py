"""Benchmark B8: the web UI with a 5,000-node topology in headless Chromium.

Starts `skydive allinone` ($SKYDIVE_BIN, the release build by default), pushes a synthetic
topology through `/ws/publisher` (B8_HOSTS hosts, each with a bridge, B8_NAMESPACES namespaces
holding B8_INTERFACES interfaces, and one veth pair per namespace into the bridge), then measures
in Debian's Chromium:
  - first render: from navigation to the first painted graph (median of B8_LOADS page loads),
    and once more with nothing collapsed (`?collapse_above=1000000`) for comparison;
  - 100 updates (metadata changes of drawn nodes) and 100 additions (new interfaces with their
    ownership edges), from the first message sent to the page's last redraw;
  - interactivity: the longest main-thread task while loading and while updating, the time to
    show a node's metadata after a click, and expanding everything.
Writes target/bench/b8.json.

    target/python-venv/bin/python tests/python/bench_b8.py
"""

import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import Allinone, wait_for  # noqa: E402
from uitools import Page, edge, msg, node, publish_topology, publisher, start_browser, topology  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOSTS = int(os.environ.get("B8_HOSTS", 10))
NAMESPACES = int(os.environ.get("B8_NAMESPACES", 20))
INTERFACES = int(os.environ.get("B8_INTERFACES", 23))
LOADS = int(os.environ.get("B8_LOADS", 3))


def main():
    binary = os.environ.setdefault("SKYDIVE_BIN", str(ROOT / "target" / "release" / "skydive"))
    if not os.path.exists(binary):
        sys.exit("build it first: cargo build --release -p skydive")
    tmp = tempfile.mkdtemp(prefix="skydive-b8-")
    aio = Allinone(tmp)
    driver, cleanup = start_browser()
    ws = None
    try:
        ws = publisher(aio, "b8")
        nodes, edges = topology(HOSTS, NAMESPACES, INTERFACES)
        t0 = time.time()
        publish_topology(aio, ws, nodes, edges, 120)
        push_s = time.time() - t0
        total = aio.count("G.V()")

        url = "http://%s/" % aio.endpoint
        loads = []
        for _ in range(LOADS):
            driver.get("about:blank")
            page = Page(driver, url, timeout=120)
            wait_for("the whole graph", lambda: page.js("return window.skydiveUI.graph.nodes.size") >= total, 60)
            loads.append(
                page.js(
                    """const m = window.skydiveUI.metrics, v = window.skydiveUI.view;
                    const long = performance.getEntriesByType('longtask').map(e => e.duration);
                    return {sync_ms: m.firstSyncAt, render_ms: m.firstRenderAt, drawn: v.cy.nodes().length,
                            nodes: window.skydiveUI.graph.nodes.size, edges: window.skydiveUI.graph.edges.size,
                            collapsed: v.collapsed.size};"""
                )
            )
        page.shot("b8-first-render")
        # The same graph with nothing collapsed, for comparison.
        driver.get("about:blank")
        page = Page(driver, url + "?collapse_above=1000000", timeout=120)
        wait_for("the whole graph", lambda: page.js("return window.skydiveUI.view.cy.nodes().length") >= total, 60)
        flat = page.js("return window.skydiveUI.metrics.firstRenderAt")
        page.shot("b8-first-render-expanded")
        driver.get("about:blank")
        page = Page(driver, url, timeout=120)
        page.js(
            "window.__long = []; new PerformanceObserver(l => l.getEntries().forEach(e => window.__long.push(e.duration))).observe({type: 'longtask'});"
        )

        def measure(messages, count_events):
            before = page.js("return [window.skydiveUI.metrics.events, window.skydiveUI.view.stats.flushMsTotal]")
            page.js("window.__long = []")
            start = time.time() * 1000
            for m in messages:
                ws.send(m)
            wait_for(
                "the updates in the page",
                lambda: page.js("return window.skydiveUI.metrics.events") >= before[0] + count_events,
                30,
            )
            # The redraw that follows the last event.
            wait_for(
                "the redraw",
                lambda: page.js(
                    "const u = window.skydiveUI; return u.view.frame === null && u.view.stats.renderedAt >= u.metrics.lastEventAt;"
                ),
                30,
            )
            end = page.js("return performance.timeOrigin + window.skydiveUI.view.stats.renderedAt")
            after = page.js("return [window.skydiveUI.view.stats.flushMsTotal, window.__long]")
            return {
                "messages": len(messages),
                "latency_ms": round(end - start, 1),
                "page_flush_ms": round(after[0] - before[1], 1),
                "longest_task_ms": round(max(after[1], default=0), 1),
            }

        # 100 updates of drawn nodes (the host ends of the veth pairs go down).
        drawn = [n for n in nodes if n["ID"].split("-")[-1].startswith("veth")][:100]
        updates = [
            msg("NodePartiallyUpdated", {"ID": n["ID"], "Revision": 2, "UpdatedAt": int(time.time() * 1000), "Ops": [{"Type": 1, "Key": "State", "Value": "DOWN"}]})
            for n in drawn
        ]
        upd = measure(updates, len(updates))
        # 100 new interfaces on the hosts, each with its ownership edge.
        adds = []
        for k in range(100):
            h = k % HOSTS
            hid, host = "b8-%d" % h, "b8-host-%d" % h
            n = node("b8-new-%d" % k, host, "new%d" % k, "tap", State="UP")
            adds.append(msg("NodeAdded", n))
            adds.append(msg("EdgeAdded", edge(hid, n["ID"], "ownership", host)))
        add = measure(adds, len(adds))
        wait_for("the new nodes drawn", lambda: page.js("return window.skydiveUI.view.cy.getElementById('b8-new-99').nonempty()"), 10)
        page.shot("b8-after-updates")

        click_ms = page.js("const t = performance.now(); window.skydiveUI.select('b8-0-veth3'); return performance.now() - t;")
        expand = page.js(
            "const t = performance.now(); document.querySelector('#expand-all').click(); return [performance.now() - t, window.skydiveUI.view.cy.nodes().length];"
        )
        page.shot("b8-expanded")

        first = statistics.median(x["render_ms"] for x in loads)
        result = {
            "nodes": total,
            "published_nodes": len(nodes),
            "published_edges": len(edges),
            "push_s": round(push_s, 2),
            "loads": loads,
            "first_render_ms_median": round(first, 1),
            "first_render_expanded_ms": round(flat, 1),
            "updates_100": upd,
            "additions_100": add,
            "select_ms": round(click_ms, 1),
            "expand_all_ms": round(expand[0], 1),
            "expanded_drawn": expand[1],
        }
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "b8.json").write_text(json.dumps(result, indent=2))
        print("B8: the web UI with %d nodes (%d published), headless Chromium" % (total, len(nodes)))
        print("  first render (median of %d loads): %.0f ms   [target < 2000 ms]" % (LOADS, first))
        print("  first render with nothing collapsed: %.0f ms (%d drawn)" % (flat, total))
        for x in loads:
            print("    sync at %.0f ms, painted at %.0f ms, %d drawn (%d groups collapsed)" % (x["sync_ms"], x["render_ms"], x["drawn"], x["collapsed"]))
        print("  100 updates: %.0f ms end to end, page work %.0f ms, longest task %.0f ms   [target < 1000 ms]" % (upd["latency_ms"], upd["page_flush_ms"], upd["longest_task_ms"]))
        print("  100 additions (200 messages): %.0f ms end to end, page work %.0f ms, longest task %.0f ms" % (add["latency_ms"], add["page_flush_ms"], add["longest_task_ms"]))
        print("  select a node: %.1f ms; expand everything: %.0f ms (%d drawn)" % (click_ms, expand[0], expand[1]))
    finally:
        if ws:
            ws.close()
        cleanup()
        aio.stop()


if __name__ == "__main__":
    main()
