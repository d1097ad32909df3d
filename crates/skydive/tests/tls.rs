//! TLS on every link, with real processes and real clients: `skydive analyzer` and `skydive
//! agent` over mutual TLS, curl and `skydive client` with a CA file and client certificates,
//! an alert webhook to an HTTPS receiver; certificates made here with rcgen (a CA, the
//! server's for 127.0.0.1, an agent's, an expired one, one for another name).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use serde_json::{Value, json};
use skydive_api::client::{Client, ClientTlsFiles};

/// A test CA, and certificates it signs, as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "skydive test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: Issuer::new(params, key),
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses), valid until `days` from now
    /// (negative: expired); its certificate and key files.
    fn issue(&self, name: &str, names: &[&str], days: i64) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(days);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let dir = self.dir.path();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn tls_section(cert: &Path, key: &Path, ca: &Path, require: bool) -> String {
    format!(
        "tls:\n  server_cert: {}\n  server_key: {}\n  ca_cert: {}\n  require_client_cert: {require}\n",
        cert.display(),
        key.display(),
        ca.display()
    )
}

/// Waits until an HTTPS API answers.
fn wait_https(c: &Client) {
    eventually(Duration::from_secs(10), "the API over HTTPS", || {
        c.get::<Value>("/api").is_ok()
    });
}

fn curl(args: &[&str]) -> (i32, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-D", "-"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn agents_reach_the_analyzer_over_mutual_tls_and_clients_need_the_ca() {
    if !require("tls e2e", skydive_testkit::has_program("curl"), "curl") {
        return;
    }
    let pki = Pki::new();
    let (srv, srv_key) = pki.issue("server", &["127.0.0.1", "localhost"], 30);
    let (agent, agent_key) = pki.issue("agent", &["agent1"], 30);
    let ca = pki.ca();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tls = tls_section(&srv, &srv_key, &ca, true);
    let conf = write_config(
        dir.path(),
        "analyzer.yml",
        &format!(
            "host_id: tls-analyzer\nanalyzer:\n  listen: {addr}\nstorage:\n  embedded:\n    path: {}\n{tls}",
            dir.path().join("data").display()
        ),
    );
    let _analyzer = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("analyzer.log"),
    );
    let files = ClientTlsFiles {
        ca_cert: Some(ca.clone()),
        client_cert: Some(agent.clone()),
        client_key: Some(agent_key.clone()),
        insecure: false,
    };
    let c = Client::new(&addr, None).with_tls(&files).unwrap();
    wait_https(&c);

    // An agent with its client certificate: its graph reaches the analyzer over wss://.
    let agent_conf = write_config(
        dir.path(),
        "agent.yml",
        &format!(
            "host_id: tls-agent\nanalyzers: [{addr}]\nagent:\n  listen: 127.0.0.1:{}\n  topology:\n    probes: []\ntls:\n  client_cert: {}\n  client_key: {}\n  ca_cert: {}\n",
            free_port(),
            agent.display(),
            agent_key.display(),
            ca.display()
        ),
    );
    let _agent = Proc::spawn(
        &["-c", agent_conf.to_str().unwrap(), "agent"],
        &dir.path().join("agent.log"),
    );
    eventually(Duration::from_secs(15), "the agent's host node", || {
        count(&c, "G.V().Has('Type', 'host', 'Name', 'tls-agent')") == 1
    });

    // curl with the CA and a client certificate: HTTPS, with HSTS.
    let url = format!("https://{addr}/api");
    let (code, out) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        agent.to_str().unwrap(),
        "--key",
        agent_key.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"Service\":\"analyzer\""), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=63072000; includesubdomains"),
        "{out}"
    );
    // Without a client certificate: refused during the handshake.
    let (code, out) = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert_ne!(code, 0, "{out}");
    // Without the CA: the server is not trusted.
    let (code, out) = curl(&[&url]);
    assert_eq!(code, 60, "{out}");
    // Plain HTTP is not served.
    let (code, out) = curl(&[&format!("http://{addr}/api")]);
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("\"Service\""), "{out}");

    // skydive client with Skydive's flags.
    let client = |extra: &[&str]| {
        let mut args = vec!["client", "--analyzer", addr.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["query", "G.V().Has('Name', 'tls-agent').Count()"]);
        Command::new(bin()).args(&args).output().unwrap()
    };
    let (ca_s, cert_s, key_s) = (
        ca.to_str().unwrap(),
        agent.to_str().unwrap(),
        agent_key.to_str().unwrap(),
    );
    let o = client(&["--cacert", ca_s, "--cert", cert_s, "--key", key_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
    let o = client(&["--insecure", "--cert", cert_s, "--key", key_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = client(&["--cert", cert_s, "--key", key_s]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // topology import goes over wss://, verified and with the client certificate.
    let graph = dir.path().join("graph.json");
    std::fs::write(
        &graph,
        r#"[{"Nodes": [{"ID": "tls-imported", "Metadata": {"Name": "tls-imported", "Type": "device"}}], "Edges": []}]"#,
    )
    .unwrap();
    let o = Command::new(bin())
        .args(["client", "--analyzer", addr.as_str()])
        .args(["--cacert", ca_s, "--cert", cert_s, "--key", key_s])
        .args(["topology", "import", "--file"])
        .arg(&graph)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(count(&c, "G.V().Has('Name', 'tls-imported')"), 1);
    let o = client(&["--cacert", "/nonexistent/ca.pem"]);
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("tls.ca_cert: /nonexistent/ca.pem"), "{err}");
}

#[test]
fn expired_and_misnamed_certificates_are_clear_errors() {
    let pki = Pki::new();
    let (old, old_key) = pki.issue("old", &["127.0.0.1"], -1);
    let (other, other_key) = pki.issue("other", &["skydive.example"], 30);
    let ca = pki.ca();
    let dir = tempfile::tempdir().unwrap();

    // Expired: the start stops, naming the key and the file.
    let conf = write_config(
        dir.path(),
        "expired.yml",
        &format!(
            "analyzer:\n  listen: 127.0.0.1:{}\nstorage:\n  embedded:\n    path: {}\n{}",
            free_port(),
            dir.path().join("data").display(),
            tls_section(&old, &old_key, &ca, false)
        ),
    );
    let o = Command::new(bin())
        .args(["-c", conf.to_str().unwrap(), "analyzer"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(
        err.contains(&format!("tls.server_cert: {}", old.display())) && err.contains("expired"),
        "{err}"
    );

    // For another name: the server starts, clients refuse it and say why.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = write_config(
        dir.path(),
        "misnamed.yml",
        &format!(
            "analyzer:\n  listen: {addr}\nstorage:\n  embedded:\n    path: {}\n{}",
            dir.path().join("data2").display(),
            tls_section(&other, &other_key, &ca, false)
        ),
    );
    let _p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("misnamed.log"),
    );
    let insecure = Client::new(&addr, None)
        .with_tls(&ClientTlsFiles {
            insecure: true,
            ..Default::default()
        })
        .unwrap();
    wait_https(&insecure);
    let o = Command::new(bin())
        .args(["client", "--analyzer", &addr, "--cacert"])
        .arg(&ca)
        .args(["query", "G.V().Count()"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("not valid for name \"127.0.0.1\""), "{err}");
}

/// An HTTPS webhook receiver on 127.0.0.1: the bodies of the requests it received.
struct HttpsHook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl HttpsHook {
    fn start(cert: &Path, key: &Path) -> HttpsHook {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let files = skydive_tls::TlsFiles {
            server_cert: Some(cert.to_path_buf()),
            server_key: Some(key.to_path_buf()),
            ..Default::default()
        };
        let acceptor = skydive_tls::ServerTls::load(&files)
            .unwrap()
            .unwrap()
            .acceptor();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let url = format!("https://localhost:{}/hook", l.local_addr().unwrap().port());
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let got = bodies.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).unwrap();
                loop {
                    let Ok((tcp, _)) = l.accept().await else {
                        return;
                    };
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let mut r = BufReader::new(tls);
                    let mut len = 0;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            break;
                        }
                        let line = line.trim_end().to_ascii_lowercase();
                        if line.is_empty() {
                            break;
                        }
                        if let Some(v) = line.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body).await;
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    let mut tls = r.into_inner();
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        });
        HttpsHook { url, bodies }
    }
}

#[test]
fn alert_webhooks_are_sent_to_https_receivers_the_ca_trusts() {
    let pki = Pki::new();
    let (hook_cert, hook_key) = pki.issue("hook", &["localhost"], 30);
    let hook = HttpsHook::start(&hook_cert, &hook_key);
    let dir = tempfile::tempdir().unwrap();
    // The analyzer serves plain HTTP; tls.ca_cert is what webhooks are verified against.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let conf = write_config(
        dir.path(),
        "a.yml",
        &format!(
            "analyzer:\n  listen: {addr}\nstorage:\n  embedded:\n    path: {}\ntls:\n  ca_cert: {}\n",
            dir.path().join("data").display(),
            pki.ca().display()
        ),
    );
    let _p = Proc::spawn(
        &["-c", conf.to_str().unwrap(), "analyzer"],
        &dir.path().join("a.log"),
    );
    wait_api(&addr);
    let c = Client::new(&addr, None);
    let alert: Value = c
        .json(
            "POST",
            "/api/alert",
            &json!({"Expression": "G.V().Has('Name', 'tls-alert')", "Action": hook.url}),
            &[],
        )
        .unwrap();
    c.json::<Value, _>(
        "POST",
        "/api/node",
        &json!({"ID": "n1", "Metadata": {"Name": "tls-alert", "Type": "device"}}),
        &[],
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the webhook over HTTPS", || {
        !hook.bodies.lock().unwrap().is_empty()
    });
    let body = hook.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["UUID"], alert["UUID"]);
    assert_eq!(body["ReasonData"][0]["Metadata"]["Name"], "tls-alert");
}
