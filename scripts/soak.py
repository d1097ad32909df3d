#!/usr/bin/env python3
"""The API under attack, for a bounded time: starts a `skydive allinone` with basic
authentication, replays the attacks the API hardening answers, all at once, while a logged-in
client measures the latency of `G.V().Count()`; prints what each attack got and the client's
latency, and fails (exit 1) when the client was refused or slowed past its target, or when an
attack changed what it must not.

    scripts/soak.py [--bin target/release/skydive] [--seconds 60]

Needs root (the allinone's agent reads the host's interfaces) and Python 3's standard library
only. Attacks: password guesses (16 threads), Gremlin explosions, forged cross-site requests
with the session cookie, a publisher deleting and renaming others' elements, a pcap upload of
zeros, an oversized WebSocket frame, subscribers that never read, subscribers with expensive
filters re-evaluated on every change."""

import argparse
import base64
import http.client
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

TARGET_P99_MS = 100.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def request(ep, method, path, headers=None, body=None, timeout=30):
    c = http.client.HTTPConnection(ep, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


class Ws:
    """A minimal WebSocket client (text frames, masked), enough for the attacks."""

    def __init__(self, ep, path, headers):
        host, port = ep.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        head = "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, ep, key)
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        self.s.sendall(head.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            buf += chunk
        status = int(buf.split(b" ", 2)[1])
        if status != 101:
            raise ConnectionError("handshake answered %d" % status)
        self.rest = buf.split(b"\r\n\r\n", 1)[1]

    def send(self, obj):
        self.send_frame(json.dumps(obj).encode())

    def send_frame(self, payload, opcode=1):
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n):
        while len(self.rest) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.rest += chunk
        out, self.rest = self.rest[:n], self.rest[n:]
        return out

    def recv(self):
        """(opcode, payload); answers pings."""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0F
            if op == 9:
                self.send_frame(payload, opcode=10)
                continue
            return op, payload

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def node(i, name, ty="device"):
    return {"ID": i, "Host": "soak", "Metadata": {"Name": name, "Type": ty}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/skydive")
    ap.add_argument("--seconds", type=int, default=60)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="skydive-soak-")
    port, agent_port = free_port(), free_port()
    ep = "127.0.0.1:%d" % port
    conf = os.path.join(tmp, "skydive.yml")
    with open(conf, "w") as f:
        f.write(
            "host_id: soak-host\n"
            "analyzer:\n  listen: %s\n  auth:\n    api:\n      backend: basic\n    cluster:\n      backend: basic\n"
            "agent:\n  listen: 127.0.0.1:%d\n  auth:\n    api:\n      backend: basic\n    cluster:\n      username: agent\n      password: agent-pw\n"
            "auth:\n  basic:\n    type: basic\n    users:\n      alice: alice-pw\n      mallory: mallory-pw\n      agent: agent-pw\n"
            "storage:\n  embedded:\n    path: %s\n"
            "logging:\n  level: WARNING\n" % (ep, agent_port, os.path.join(tmp, "data"))
        )
    log = open(os.path.join(tmp, "allinone.log"), "w")
    proc = subprocess.Popen([args.bin, "-c", conf, "allinone"], stdout=log, stderr=log)
    alice = {"Authorization": basic("alice", "alice-pw")}
    try:
        deadline = time.time() + 20
        while True:
            try:
                status, text = request(ep, "POST", "/api/topology", dict(alice, **{"Content-Type": "application/json"}), json.dumps({"GremlinQuery": "G.V().Has('Type', 'host').Count()"}))
                if status == 200 and text.strip() == "1":
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("the allinone did not start: see %s" % log.name)
            time.sleep(0.2)
        host_id = json.loads(request(ep, "POST", "/api/topology", dict(alice, **{"Content-Type": "application/json"}), json.dumps({"GremlinQuery": "G.V().Has('Type', 'host')"}))[1])[0]["ID"]
        status, text = request(ep, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, "username=alice&password=alice-pw")
        token = json.loads(text)["Token"]
        run(ep, token, host_id, args.seconds, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["rm", "-rf", tmp])


def run(ep, token, host_id, seconds, pid):
    stop = threading.Event()
    got = {k: Counter() for k in ("guesses", "gremlin", "forged", "publisher", "pcap", "bigframe", "filters")}
    lock = threading.Lock()

    def count(kind, what):
        with lock:
            got[kind][what] += 1

    mallory = {"X-Client-Type": "tool", "X-Host-ID": "mallory", "Authorization": basic("mallory", "mallory-pw")}
    # Mallory's own mesh: 20 nodes, each linked to every other.
    pub = Ws(ep, "/ws/publisher", mallory)
    mesh_nodes = [node("mesh%d" % i, "mesh%d" % i) for i in range(20)]
    mesh_edges = [{"ID": "me%d-%d" % (i, j), "Parent": "mesh%d" % i, "Child": "mesh%d" % j, "Metadata": {"RelationType": "layer2"}} for i in range(20) for j in range(20) if i < j]
    pub.send({"Namespace": "Graph", "Type": "Sync", "UUID": "sync", "Obj": {"Nodes": mesh_nodes, "Edges": mesh_edges}})
    time.sleep(1)

    def guesser(i):
        while not stop.is_set():
            try:
                status, _ = request(ep, "GET", "/api/status", {"Authorization": basic("alice", "guess%d" % random.randrange(1 << 30))}, timeout=10)
                count("guesses", status)
            except OSError as e:
                count("guesses", type(e).__name__)

    def gremlin_bomb():
        q = json.dumps({"GremlinQuery": "G.V().Has('Name', Regex('mesh.*'))" + ".Both()" * 6 + ".Count()"})
        while not stop.is_set():
            try:
                status, _ = request(ep, "POST", "/api/topology", {"Authorization": basic("mallory", "mallory-pw"), "Content-Type": "application/json"}, q, timeout=120)
                count("gremlin", status)
            except OSError as e:
                count("gremlin", type(e).__name__)

    def forger():
        while not stop.is_set():
            for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/json", "Origin": "http://evil.example"}):
                h = dict(headers, Cookie="authtoken=" + token)
                status, _ = request(ep, "POST", "/api/node", h, json.dumps(node("forged", "forged")))
                count("forged", status)
            time.sleep(0.05)

    def publisher():
        evil = Ws(ep, "/ws/publisher", dict(mallory, **{"X-Host-ID": "mallory2"}))
        n = 0
        while not stop.is_set():
            n += 1
            evil.send({"Namespace": "Graph", "Type": "NodeDeleted", "UUID": "d%d" % n, "Obj": {"ID": host_id}})
            evil.send({"Namespace": "Graph", "Type": "NodeUpdated", "UUID": "u%d" % n, "Obj": node(host_id, "owned", "host")})
            for _ in range(2):
                op, payload = evil.recv()
                count("publisher", json.loads(payload).get("Status"))
            # Mallory's first publisher changes its own mesh: every filter is evaluated again.
            pub.send({"Namespace": "Graph", "Type": "NodeUpdated", "UUID": "m%d" % n, "Obj": node("mesh0", "mesh0-%d" % n)})
            time.sleep(0.02)
        evil.close()

    def pcap_zeros():
        zeros = bytes(1 << 20)
        while not stop.is_set():
            c = http.client.HTTPConnection(ep, timeout=30)
            try:
                c.putrequest("POST", "/api/pcap")
                c.putheader("Authorization", basic("mallory", "mallory-pw"))
                c.putheader("Content-Length", str(64 << 20))
                c.endheaders()
                try:
                    for _ in range(64):
                        c.send(zeros)
                except OSError:
                    pass
                count("pcap", c.getresponse().status)
            except OSError as e:
                count("pcap", type(e).__name__)
            finally:
                c.close()
            time.sleep(0.2)

    def big_frame():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                w = Ws(ep, "/ws/publisher", dict(mallory, **{"X-Host-ID": "big%d" % n}))
                w.s.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", (64 << 20) + 1) + os.urandom(4) + b"xx")
                op, payload = w.recv()
                count("bigframe", "close %d" % struct.unpack("!H", payload[:2])[0] if op == 8 else "op %d" % op)
                w.close()
            except (OSError, ConnectionError) as e:
                count("bigframe", type(e).__name__)
            time.sleep(0.2)

    def filters(i):
        w = Ws(ep, "/ws/subscriber", dict(mallory, **{"X-Host-ID": "heavy%d" % i, "X-Client-Type": "webui", "X-Gremlin-Filter": "G.V().Has('Name', Regex('mesh.*')).Both().Both().Both().Dedup()"}))
        w.s.settimeout(1)
        while not stop.is_set():
            try:
                w.recv()
                count("filters", "messages")
            except socket.timeout:
                pass
            except (OSError, ConnectionError) as e:
                count("filters", type(e).__name__)
                return
        w.close()

    # Subscribers that never read: held open, never read.
    stuck = [Ws(ep, "/ws/subscriber", dict(mallory, **{"X-Host-ID": "stuck%d" % i, "X-Client-Type": "webui"})) for i in range(4)]
    threads = [threading.Thread(target=guesser, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=gremlin_bomb) for _ in range(2)]
    threads += [threading.Thread(target=f) for f in (forger, publisher, pcap_zeros, big_frame)]
    threads += [threading.Thread(target=filters, args=(i,)) for i in range(2)]
    for t in threads:
        t.daemon = True
        t.start()

    # The legitimate client: logged in, one kept-alive connection, a query every 100 ms.
    lat, refused = [], Counter()
    conn = http.client.HTTPConnection(ep, timeout=30)
    body = json.dumps({"GremlinQuery": "G.V().Count()"})
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        try:
            conn.request("POST", "/api/topology", body=body, headers={"X-Auth-Token": token, "Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            lat.append((time.perf_counter() - t) * 1000)
            if r.status != 200:
                refused[r.status] += 1
        except (OSError, http.client.HTTPException) as e:
            refused[type(e).__name__] += 1
            conn.close()
            conn = http.client.HTTPConnection(ep, timeout=30)
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    for w in stuck:
        w.close()
    with open("/proc/%d/status" % pid) as f:
        rss = next(line.split()[1] for line in f if line.startswith("VmHWM"))
    host_ok = request(ep, "POST", "/api/topology", {"X-Auth-Token": token, "Content-Type": "application/json"}, json.dumps({"GremlinQuery": "G.V('%s').Values('Name')" % host_id}))[1]
    forged = request(ep, "GET", "/api/node/forged", {"X-Auth-Token": token})[0]

    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(round((len(lat) - 1) * p)))] if lat else float("nan")
    print("| attack | answers |")
    print("|---|---|")
    for k, c in got.items():
        print("| %s | %s |" % (k, ", ".join("%s: %d" % kv for kv in sorted(c.items(), key=lambda kv: str(kv[0])))))
    print()
    print("legitimate client: %d queries, p50 %.1f ms, p99 %.1f ms, max %.1f ms, refused %s" % (len(lat), pct(0.5), pct(0.99), lat[-1] if lat else float("nan"), dict(refused) or "none"))
    print("allinone peak RSS: %d MiB; host node name: %s; forged node: %s" % (int(rss) // 1024, host_ok.strip(), "absent" if forged == 404 else forged))
    failures = []
    if refused:
        failures.append("the legitimate client was refused: %s" % dict(refused))
    if pct(0.99) > TARGET_P99_MS:
        failures.append("p99 %.1f ms over %.0f ms" % (pct(0.99), TARGET_P99_MS))
    if "owned" in host_ok or host_ok.strip() in ("", "[]"):
        failures.append("the host node was changed: %s" % host_ok)
    if forged != 404:
        failures.append("a forged request created a node")
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))
    print("OK")


if __name__ == "__main__":
    main()
