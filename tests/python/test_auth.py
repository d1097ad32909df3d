"""Authentication and RBAC against a real allinone configured with a basic backend: an
htpasswd file (bcrypt and {SHA} entries, made here with the C library's crypt and hashlib) plus an
inline user, the `guest` role by default and `g, alice, admin` in rbac.policy; the agent
presents cluster credentials to the analyzer. Driven with the `skydive-client` package, the
`skydive client` command line, plain HTTP, and the web UI's login form in headless Chromium."""

import base64
import hashlib
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings

import pytest
from skydive.rest.client import BadRequest, RESTClient
from skydive.websocket.client import WSClient, WSClientDefaultProtocol, WSMessage

from conftest import Allinone, need, wait_for

with warnings.catch_warnings():
    # Python 3.11's crypt (the C library's, which makes bcrypt hashes as htpasswd -B does).
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt
from uitools import CHROMEDRIVER, CHROMIUM, SHOTS, start_browser

ALICE, ALICE_PW = "alice", "alice-pw"  # bcrypt in the htpasswd file; admin through rbac.policy
CAROL, CAROL_PW = "carol", "carol-pw"  # {SHA} in the htpasswd file; guest
BOB, BOB_PW = "bob", "bob-pw"  # inline; guest


@pytest.fixture(scope="module")
def secured():
    with tempfile.TemporaryDirectory() as tmp:
        htpasswd = os.path.join(tmp, "htpasswd")
        bcrypt_hash = crypt.crypt(ALICE_PW, crypt.mksalt(crypt.METHOD_BLOWFISH))
        assert bcrypt_hash.startswith("$2")
        sha = base64.b64encode(hashlib.sha1(CAROL_PW.encode()).digest()).decode()
        with open(htpasswd, "w") as f:
            f.write("%s:%s\n%s:{SHA}%s\n" % (ALICE, bcrypt_hash, CAROL, sha))
        extra = (
            "auth:\n"
            "  basic:\n"
            "    type: basic\n"
            "    file: %s\n"
            "    users:\n"
            "      %s: %s\n"
            "    role: guest\n"
            "rbac:\n"
            "  policy:\n"
            "    - g, %s, admin\n"
            "analyzer:\n"
            "  auth:\n"
            "    api:\n"
            "      backend: basic\n"
            "    cluster:\n"
            "      backend: basic\n"
            "agent:\n"
            "  auth:\n"
            "    api:\n"
            "      backend: basic\n"
            "    cluster:\n"
            "      username: %s\n"
            "      password: %s\n"
        ) % (htpasswd, BOB, BOB_PW, ALICE, CAROL, CAROL_PW)
        a = Allinone(tmp, auth=(ALICE, ALICE_PW), overlay_yaml=extra)
        try:
            yield a
        finally:
            a.stop()


def http(endpoint, path, method="GET", headers=None, data=None):
    req = urllib.request.Request("http://%s%s" % (endpoint, path), data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def basic(user, pw):
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()}


def test_requests_without_or_with_wrong_credentials_are_refused(secured):
    ep = secured.endpoint
    assert http(ep, "/api/topology")[0:3:2] == (401, "No credentials provided\n")
    assert http(ep, "/api/topology", headers=basic(ALICE, "nope"))[0:3:2] == (401, "Wrong credentials\n")
    assert http(ep, "/api/topology", headers=basic("mallory", ALICE_PW))[0:3:2] == (401, "Wrong credentials\n")
    # The agent's link, without cluster credentials, is refused too.
    status, _, _ = http(ep, "/ws/agent/topology", headers={"X-Client-Type": "agent", "X-Host-ID": "intruder"})
    assert status == 401
    # The page itself is public (it has its own login form).
    assert http(ep, "/")[0] == 200


def test_the_agent_logged_in_with_its_cluster_credentials(secured):
    # Allinone waited for the agent's host node: the agent's link was accepted with carol's
    # credentials although carol is only a guest (cluster users are admin).
    assert secured.count("G.V().Has('Type', 'host')") == 1


def test_the_agents_own_api_asks_for_credentials_too(secured):
    agent = "127.0.0.1:%d" % secured.agent_port
    assert http(agent, "/api/topology")[0] == 401
    status, _, text = http(agent, "/api", headers=basic(BOB, BOB_PW))
    assert status == 200 and json.loads(text)["Service"] == "agent"
    # No RBAC on an agent (as Skydive's): a guest may query it.
    status, _, text = http(agent, "/api/topology", "POST", dict(basic(BOB, BOB_PW), **{"Content-Type": "application/json"}), b'{"GremlinQuery": "G.V().Has(\'Type\', \'host\').Count()"}')
    assert (status, text) == (200, "1")


def test_login_gives_the_token_the_cookies_and_the_permissions(secured):
    ep = secured.endpoint
    body = urllib.parse.urlencode({"username": ALICE, "password": ALICE_PW}).encode()
    status, headers, text = http(ep, "/login", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert status == 200
    answer = json.loads(text)
    # An opaque session token, not the password in base64; the cookie out of scripts' reach.
    assert len(answer["Token"]) == 64 and answer["Token"] != base64.b64encode(("%s:%s" % (ALICE, ALICE_PW)).encode()).decode()
    assert {"Object": "capture", "Action": "write", "Allowed": True} in answer["Permissions"]
    cookies = headers.get_all("Set-Cookie")
    assert "authtoken=%s; Path=/; Max-Age=86400; SameSite=Strict; HttpOnly" % answer["Token"] in cookies
    perms = [c for c in cookies if c.startswith("permissions=")]
    assert len(perms) == 1
    decoded = json.loads(base64.b64decode(perms[0].split(";")[0][len("permissions="):]))
    assert decoded == answer["Permissions"]
    # The token works as a cookie, a header and a query parameter.
    assert http(ep, "/api/status", headers={"Cookie": "authtoken=" + answer["Token"]})[0] == 200
    assert http(ep, "/api/status", headers={"X-Auth-Token": answer["Token"]})[0] == 200
    assert http(ep, "/api/status?x-auth-token=" + urllib.parse.quote(answer["Token"]))[0] == 200
    bad = urllib.parse.urlencode({"username": ALICE, "password": "x"}).encode()
    assert http(ep, "/login", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, bad)[0:3:2] == (401, "Wrong credentials\n")
    assert http(ep, "/login", "POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"username=alice")[0:3:2] == (401, "No credentials provided\n")
    req = urllib.request.Request("http://%s/login" % ep)
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(req, timeout=5)
    assert e.value.code == 302 and e.value.headers["Location"] == "/"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_python_client_logs_in_and_roles_apply(secured):
    admin = RESTClient(secured.endpoint, username=ALICE, password=ALICE_PW)
    assert admin.lookup("G.V().Has('Type', 'host').Count()") == 1
    cap = admin.capture_create("G.V().Has('Name', 'lo')", name="auth-test")
    assert cap.uuid in [c.uuid for c in admin.capture_list()]
    admin.capture_delete(cap.uuid)
    # A guest reads the topology but may not create a capture.
    for user, pw in ((BOB, BOB_PW), (CAROL, CAROL_PW)):
        guest = RESTClient(secured.endpoint, username=user, password=pw)
        assert guest.lookup("G.V().Has('Type', 'host').Count()") == 1
        with pytest.raises(BadRequest) as e:
            guest.capture_create("G.V().Has('Name', 'lo')")
        assert ("%s may not write capture" % user).encode() in e.value.args[0]
    # Wrong credentials: the login itself fails.
    with pytest.raises(urllib.error.HTTPError) as e:
        RESTClient(secured.endpoint, username=ALICE, password="wrong").lookup("G.V().Count()")
    assert e.value.code == 401


def test_python_websocket_client_logs_in(secured):
    got = []

    class Proto(WSClientDefaultProtocol):
        def onOpen(self):
            self.sendWSMessage(WSMessage("Graph", "SyncRequest", {}))

        def onMessage(self, payload, isBinary):
            msg = json.loads(payload)
            if msg.get("Type") == "SyncReply":
                got.append(msg)
                self.stop()

    client = WSClient("auth-test", "ws://%s/ws/subscriber" % secured.endpoint, protocol=Proto, username=BOB, password=BOB_PW)
    client.connect()
    client.start()
    assert got and got[0]["Status"] == 200
    assert any(n["Metadata"].get("Type") == "host" for n in got[0]["Obj"]["Nodes"])


def test_command_line_client_with_credentials(secured):
    binary = os.environ.get("SKYDIVE_BIN", "target/debug/skydive")
    base = [binary, "client", "--analyzer", secured.endpoint]
    ok = subprocess.run(base + ["--username", ALICE, "--password", ALICE_PW, "query", "G.V().Has('Type', 'host').Count()"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "1"
    bad = subprocess.run(base + ["--username", ALICE, "--password", "nope", "query", "G.V().Count()"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert "Wrong credentials" in bad.stderr


def test_web_ui_login_form(secured):
    need(os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), "needs Debian's chromium and chromium-driver")
    driver, cleanup = start_browser()
    try:
        driver.get("http://%s/" % secured.endpoint)
        from selenium.webdriver.common.by import By

        q = lambda css: driver.find_element(By.CSS_SELECTOR, css)
        wait_for("the login form", lambda: q("#login").is_displayed())
        q('#login [name="username"]').send_keys(ALICE)
        q('#login [name="password"]').send_keys("wrong")
        q("#login-submit").click()
        wait_for("the refusal", lambda: q("#login-error").text == "401: Wrong credentials")
        q('#login [name="password"]').clear()
        q('#login [name="password"]').send_keys(ALICE_PW)
        q("#login-submit").click()
        wait_for("the graph", lambda: driver.execute_script("return window.skydiveUI.metrics.firstRenderAt") is not None)
        assert not q("#login").is_displayed()
        assert q("#logout").is_displayed()
        assert q("#server").text.startswith("analyzer pytest-host")
        assert driver.execute_script("return window.skydiveUI.graph.nodes.size") >= 1
        driver.save_screenshot(str(SHOTS / "auth-logged-in.png"))
        # Logging out ends the session on the server.
        token = driver.execute_script("return sessionStorage.getItem('skydive-token:http://%s')" % secured.endpoint)
        assert token and http(secured.endpoint, "/api/status", headers={"X-Auth-Token": token})[0] == 200
        q("#logout").click()
        wait_for("the login form again", lambda: q("#login").is_displayed())
        assert http(secured.endpoint, "/api/status", headers={"X-Auth-Token": token})[0:3:2] == (401, "Wrong credentials\n")
    finally:
        cleanup()
