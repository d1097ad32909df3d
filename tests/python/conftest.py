"""A real `skydive allinone` for the tests, on free ports of 127.0.0.1, with its embedded
store in a temporary directory. The binary is $SKYDIVE_BIN (scripts/test.sh builds it)."""

import base64
import json
import os
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(cond, why):
    """Skips visibly outside CI; under CI a missing requirement is a failure."""
    if cond:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("under CI this must run: " + why)
    pytest.skip("SKIPPED: " + why)


def wait_for(what, cond, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class Allinone:
    def __init__(self, tmp, extra_yaml="", auth=None, overlay_yaml=None, cafile=None):
        # (user, password) sent as basic authentication by api_up() and count().
        self.headers = {}
        if auth:
            token = base64.b64encode(("%s:%s" % auth).encode()).decode()
            self.headers["Authorization"] = "Basic " + token
        # With a CA file, the services serve HTTPS (a tls section in extra_yaml).
        self.scheme = "https" if cafile else "http"
        self.ssl = ssl.create_default_context(cafile=cafile) if cafile else None
        self.port = free_port()
        self.agent_port = free_port()
        self.endpoint = "127.0.0.1:%d" % self.port
        conf = os.path.join(tmp, "skydive.yml")
        with open(conf, "w") as f:
            f.write(
                "host_id: pytest-host\n"
                "analyzer:\n  listen: 127.0.0.1:%d\n"
                "agent:\n  listen: 127.0.0.1:%d\n"
                "storage:\n  embedded:\n    path: %s\n"
                % (self.port, self.agent_port, os.path.join(tmp, "data"))
                + extra_yaml
            )
        confs = ["-c", conf]
        if overlay_yaml:
            # A second file, merged over the first (as `-c` files are).
            overlay = os.path.join(tmp, "overlay.yml")
            with open(overlay, "w") as f:
                f.write(overlay_yaml)
            confs += ["-c", overlay]
        binary = os.environ.get("SKYDIVE_BIN", "target/debug/skydive")
        self.log = open(os.path.join(tmp, "allinone.log"), "w")
        self.proc = subprocess.Popen(
            [binary] + confs + ["allinone"], stdout=self.log, stderr=self.log
        )
        try:
            wait_for("the analyzer API", self.api_up)
            wait_for("the agent's host node", lambda: self.count("G.V().Has('Type', 'host')") == 1)
        except BaseException:
            # A start that fails leaves no process behind.
            self.stop()
            raise

    def api_up(self):
        req = urllib.request.Request(
            "%s://%s/api" % (self.scheme, self.endpoint), headers=self.headers
        )
        with urllib.request.urlopen(req, timeout=1, context=self.ssl) as r:
            return r.status == 200

    def count(self, q):
        req = urllib.request.Request(
            "%s://%s/api/topology" % (self.scheme, self.endpoint),
            data=json.dumps({"GremlinQuery": q + ".Count()"}).encode(),
            headers=dict(self.headers, **{"Content-Type": "application/json", "Accept": "application/json"}),
        )
        with urllib.request.urlopen(req, timeout=5, context=self.ssl) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def allinone():
    with tempfile.TemporaryDirectory() as tmp:
        a = Allinone(tmp)
        try:
            yield a
        finally:
            a.stop()
