//! Sessions, forged cross-site requests and password guessing, against an analyzer with a
//! basic backend, over raw HTTP/1.1 so that every header can be seen and sent.

mod common;

use std::time::Duration;

use common::*;

const SHORT: Duration = Duration::from_secs(5);
use serde_json::{Value, json};

fn cookies(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .collect()
}

fn secured() -> TestAnalyzer {
    TestAnalyzer::start_with(|s| {
        s.auth.insert(
            "basic".into(),
            json!({"type": "basic", "users": {"alice": "alice-pw", "bob": "bob-pw"}}),
        );
        s.analyzer.auth.api.backend = "basic".into();
    })
}

fn login(addr: &str, user: &str, pw: &str) -> (u16, Vec<(String, String)>, String) {
    raw(
        addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("username={user}&password={pw}"),
    )
}

fn node(id: &str) -> String {
    json!({"ID": id, "Metadata": {"Name": id, "Type": "device"}}).to_string()
}

#[test]
fn login_opens_a_session_with_a_safe_cookie_that_logout_ends_and_a_restart_keeps() {
    let mut a = secured();
    let addr = a.addr();
    let (status, headers, body) = login(&addr, "alice", "alice-pw");
    assert_eq!(status, 200, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["Token"]
        .as_str()
        .unwrap()
        .to_string();
    // An opaque token, not the password in base64.
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let set = cookies(&headers);
    let session = set
        .iter()
        .find(|c| c.starts_with("authtoken="))
        .expect("the authtoken cookie");
    assert_eq!(
        session,
        &format!("authtoken={token}; Path=/; Max-Age=86400; SameSite=Strict; HttpOnly")
    );
    assert!(set.iter().any(|c| c.starts_with("permissions=")));
    let as_header = [("X-Auth-Token", token.as_str())];
    assert_eq!(raw(&addr, "GET", "/api/status", &as_header, "").0, 200);
    let cookie = format!("authtoken={token}");
    assert_eq!(
        raw(&addr, "GET", "/api/status", &[("Cookie", &cookie)], "").0,
        200
    );
    // Basic credentials keep working, and do not come back as a cookie.
    let (status, headers, _) = raw(
        &addr,
        "GET",
        "/api/status",
        &[("Authorization", "Basic Ym9iOmJvYi1wdw==")],
        "",
    );
    assert_eq!(status, 200);
    assert!(
        !cookies(&headers)
            .iter()
            .any(|c| c.starts_with("authtoken="))
    );

    // The session is in the store: a restart keeps it.
    a.restart();
    assert_eq!(raw(&addr, "GET", "/api/status", &as_header, "").0, 200);

    // Logging out ends it and clears the cookie.
    assert_eq!(raw(&addr, "GET", "/logout", &as_header, "").0, 405);
    let (status, headers, body) = raw(&addr, "POST", "/logout", &as_header, "");
    assert_eq!((status, body.as_str()), (200, r#"{"LoggedOut":true}"#));
    assert!(
        cookies(&headers)
            .iter()
            .any(|c| c.starts_with("authtoken=; Path=/; Max-Age=0")),
        "{headers:?}"
    );
    let (status, _, body) = raw(&addr, "GET", "/api/status", &as_header, "");
    assert_eq!((status, body.as_str()), (401, "Wrong credentials\n"));
    let (status, _, body) = raw(&addr, "POST", "/logout", &as_header, "");
    assert_eq!((status, body.as_str()), (200, r#"{"LoggedOut":false}"#));
}

#[test]
fn a_forged_cross_site_request_with_the_cookie_changes_nothing() {
    let a = secured();
    let addr = a.addr();
    let (_, _, body) = login(&addr, "alice", "alice-pw");
    let token = serde_json::from_str::<Value>(&body).unwrap()["Token"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = format!("authtoken={token}");
    // What an HTML form or a beacon of another site can send: refused, nothing created.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut h = vec![("Cookie", cookie.as_str())];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        let (status, _, body) = raw(&addr, "POST", "/api/node", &h, &node("forged"));
        assert_eq!(status, 415, "{ct:?}: {body}");
        assert!(body.contains("must be sent as application/json"), "{body}");
    }
    // JSON from a page of another site: refused.
    let (status, _, body) = raw(
        &addr,
        "POST",
        "/api/node",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
        ],
        &node("forged"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("another site (http://evil.example)"),
        "{body}"
    );
    // So is a WebSocket handshake from there.
    let (status, _, _) = raw(
        &addr,
        "GET",
        "/ws/subscriber",
        &[
            ("Cookie", &cookie),
            ("Origin", "http://evil.example"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("X-Client-Type", "webui"),
        ],
        "",
    );
    assert_eq!(status, 403);
    let no_node = a.send(
        "GET",
        "/api/node/forged",
        None,
        &[("X-Auth-Token", token.clone())],
    );
    assert_eq!(no_node.status, 404);
    // The server's own pages, and clients that send the token in a header, are served.
    let origin = format!("http://{addr}");
    let (status, _, body) = raw(
        &addr,
        "POST",
        "/api/node",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("Origin", &origin),
        ],
        &node("mine"),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = raw(
        &addr,
        "DELETE",
        "/api/node/mine",
        &[("Cookie", &cookie)],
        "",
    );
    assert!(status == 200 || status == 204, "{status} {body}");
    let (status, _, body) = raw(
        &addr,
        "POST",
        "/api/node",
        &[("X-Auth-Token", &token), ("Content-Type", "text/plain")],
        &node("header"),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn password_guesses_are_slowed_per_address_and_user() {
    let a = secured();
    let addr = a.addr();
    for _ in 0..5 {
        let (status, _, body) = login(&addr, "alice", "guess");
        assert_eq!((status, body.as_str()), (401, "Wrong credentials\n"));
    }
    // The sixth within the second is not even checked: the right password is refused too.
    let (status, headers, body) = login(&addr, "alice", "alice-pw");
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body,
        "too many failed logins from 127.0.0.1; try again in 1 s\n"
    );
    assert!(headers.contains(&("retry-after".into(), "1".into())));
    // Basic credentials on any endpoint are slowed alike.
    let (status, _, _) = raw(
        &addr,
        "GET",
        "/api/status",
        &[("Authorization", "Basic Ym9iOmJvYi1wdw==")],
        "",
    );
    assert_eq!(status, 429);
    // A second later the right password is accepted, and the slate wiped clean.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(login(&addr, "alice", "alice-pw").0, 200);
    assert_eq!(login(&addr, "alice", "guess").0, 401);
    assert_eq!(login(&addr, "bob", "bob-pw").0, 200);
}

/// The `topology` `publish-any` permission lets a publisher change the elements of others.
#[test]
fn a_role_with_publish_any_may_change_elements_of_other_origins() {
    let a = TestAnalyzer::start_with(|s| {
        s.auth.insert(
            "basic".into(),
            json!({"type": "basic", "users": {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}}),
        );
        s.analyzer.auth.api.backend = "basic".into();
        s.rbac.policy = vec![
            "p, tools, topology, publish-any".into(),
            "g, carol, tools".into(),
        ];
    });
    let addr = a.addr();
    // base64 of `<user>:<user>-pw`.
    let basic_of = |user: &str| match user {
        "alice" => "Basic YWxpY2U6YWxpY2UtcHc=",
        "bob" => "Basic Ym9iOmJvYi1wdw==",
        _ => "Basic Y2Fyb2w6Y2Fyb2wtcHc=",
    };
    let publisher = |user: &str| {
        let basic = basic_of(user);
        ws_connect(
            &addr,
            "/ws/publisher",
            &[
                ("X-Client-Type", "tool"),
                ("X-Host-ID", user),
                ("Authorization", basic),
            ],
        )
        .unwrap()
    };
    let msg = |kind: &str, uuid: &str, obj: Value| json!({"UUID": uuid, "Namespace": "Graph", "Type": kind, "Obj": obj});
    let count = |q: &str| -> i64 {
        let r = a.send(
            "POST",
            "/api/topology",
            Some(json!({"GremlinQuery": format!("{q}.Count()")})),
            &[("Authorization", "Basic YWxpY2U6YWxpY2UtcHc=".into())],
        );
        serde_json::from_slice(&r.body).unwrap()
    };
    let mut alice = publisher("alice");
    ws_send(
        &mut alice,
        msg("NodeAdded", "a1", common::node("n1", "alice's", "device")),
    );
    eventually(SHORT, "alice's node", || {
        count("G.V().Has('Name', \"alice's\")") == 1
    });
    // Bob is an admin, yet not allowed to change others' elements from a publisher.
    let mut bob = publisher("bob");
    ws_send(&mut bob, msg("NodeDeleted", "b1", json!({"ID": "n1"})));
    let m = ws_wait(&mut bob, SHORT, |m| m["UUID"] == "b1").expect("an answer");
    assert_eq!(m["Status"], 403);
    assert_eq!(count("G.V().Has('Name', \"alice's\")"), 1);
    // Carol's role may.
    let mut carol = publisher("carol");
    ws_send(&mut carol, msg("NodeDeleted", "c1", json!({"ID": "n1"})));
    eventually(SHORT, "alice's node deleted by carol", || {
        count("G.V().Has('Name', \"alice's\")") == 0
    });
    assert!(
        ws_wait(&mut carol, Duration::from_millis(300), |m| m["UUID"]
            == "c1")
        .is_none()
    );
}
