"""skydive-client (PyPI) over HTTPS and WSS, against `skydive allinone` serving TLS with
certificates made here by `openssl` (a CA and a certificate for 127.0.0.1)."""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest
from skydive.rest.client import RESTClient
from skydive.websocket.client import WSClient, WSClientDebugProtocol

from conftest import Allinone, need


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA (ca.pem) and a server certificate for 127.0.0.1 it signed (server.pem/.key)."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=skydive test CA",
            cwd=d)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


@pytest.fixture(scope="module")
def tls_allinone():
    need(subprocess.run(["which", "openssl"], capture_output=True).returncode == 0, "openssl")
    with tempfile.TemporaryDirectory() as tmp:
        make_pki(tmp)
        ca = os.path.join(tmp, "ca.pem")
        # The CA too: the allinone's agent verifies its analyzer against it.
        tls = "tls:\n  server_cert: %s\n  server_key: %s\n  ca_cert: %s\n" % (
            os.path.join(tmp, "server.pem"), os.path.join(tmp, "server.key"), ca)
        a = Allinone(tmp, extra_yaml=tls, cafile=ca)
        a.ca = ca
        try:
            yield a
        finally:
            a.stop()


def test_rest_over_https_with_the_ca(tls_allinone):
    c = RESTClient(tls_allinone.endpoint, scheme="https", cafile=tls_allinone.ca)
    hosts = c.lookup_nodes("G.V().Has('Type', 'host')")
    assert len(hosts) == 1
    node = c.node_create(metadata={"Name": "py-tls", "Type": "fabric"})
    assert c.lookup("G.V().Has('Name', 'py-tls').Count()") == 1
    c.node_delete(node.id)


def test_https_without_the_ca_is_refused(tls_allinone):
    c = RESTClient(tls_allinone.endpoint, scheme="https")
    with pytest.raises(Exception) as e:
        c.lookup_nodes("G.V()")
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)


def test_subscriber_over_wss(tls_allinone):
    received = []

    class Subscriber(WSClientDebugProtocol):
        def onMessage(self, payload, isBinary):
            msg = json.loads(payload)
            received.append(msg)
            if msg["Type"] == "SyncReply":
                self.stop_when_complete()

    # A loop of its own: the client library runs the thread's default loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    client = WSClient(
        "pytest-" + uuid.uuid4().hex[:8],
        "wss://%s/ws/subscriber" % tls_allinone.endpoint,
        protocol=Subscriber,
        cafile=tls_allinone.ca,
        sync="1",
    )
    client.connect()
    timer = client.loop.call_later(10, client.loop.stop)
    client.start()
    timer.cancel()
    assert received and received[0]["Type"] == "SyncReply", received
    assert any(n["Metadata"]["Type"] == "host" for n in received[0]["Obj"]["Nodes"])


def test_web_ui_over_https_trusting_the_test_ca(tls_allinone):
    """Chromium with the test CA in its NSS database loads the UI over HTTPS, and the page's
    live graph comes over WSS."""
    from uitools import CHROMEDRIVER, CHROMIUM, Page, start_browser

    need(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER),
         "needs Debian's chromium and chromium-driver")
    need(shutil.which("certutil") is not None, "needs certutil (libnss3-tools)")
    home = tempfile.mkdtemp(prefix="skydive-tls-home-")
    nssdb = os.path.join(home, ".pki", "nssdb")
    os.makedirs(nssdb)
    subprocess.run(["certutil", "-d", "sql:" + nssdb, "-N", "--empty-password"], check=True)
    subprocess.run(["certutil", "-d", "sql:" + nssdb, "-A", "-t", "C,,", "-n", "skydive-test-ca",
                    "-i", tls_allinone.ca], check=True)
    driver, cleanup = start_browser(env=dict(os.environ, HOME=home))
    try:
        page = Page(driver, "https://%s/" % tls_allinone.endpoint)
        assert page.js("return location.protocol") == "https:"
        assert page.node_id("pytest-host", "host"), "the host node came over wss://"
    finally:
        cleanup()
        shutil.rmtree(home, ignore_errors=True)

    # Without the CA, the browser refuses the page.
    bare = tempfile.mkdtemp(prefix="skydive-tls-home-")
    driver, cleanup = start_browser(env=dict(os.environ, HOME=bare))
    try:
        driver.get("https://%s/" % tls_allinone.endpoint)
        assert "skydiveUI" not in (driver.page_source or "")
        assert driver.execute_script("return window.skydiveUI === undefined")
    finally:
        cleanup()
        shutil.rmtree(bare, ignore_errors=True)
