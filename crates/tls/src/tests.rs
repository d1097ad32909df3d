use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `names` valid from `from` to `to` (days from now), signed by the CA;
    /// returns the certificate's and the key's files.
    fn issue(&self, name: &str, names: &[&str], from: i64, to: i64) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time_now();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn files(server: Option<(&Path, &Path)>, ca: Option<&Path>) -> TlsFiles {
    TlsFiles {
        server_cert: server.map(|s| s.0.to_path_buf()),
        server_key: server.map(|s| s.1.to_path_buf()),
        ca_cert: ca.map(Path::to_path_buf),
        ..Default::default()
    }
}

#[test]
fn bad_certificates_are_refused_naming_the_key_and_the_file() {
    let pki = Pki::new();
    let (good, good_key) = pki.issue("server", &["localhost"], -1, 30);
    let (expired, expired_key) = pki.issue("old", &["localhost"], -30, -1);
    let (later, later_key) = pki.issue("later", &["localhost"], 5, 30);
    let (_, other_key) = pki.issue("other", &["localhost"], -1, 30);
    let missing = pki.path("missing.pem");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    assert!(
        ServerTls::load(&files(Some((&good, &good_key)), None))
            .unwrap()
            .is_some()
    );
    assert!(ServerTls::load(&TlsFiles::default()).unwrap().is_none());
    for (cert, key, want_key, want) in [
        (&expired, &expired_key, "tls.server_cert", "expired on"),
        (&later, &later_key, "tls.server_cert", "is not valid before"),
        (
            &good,
            &other_key,
            "tls.server_key",
            "does not match the certificate",
        ),
        (&missing, &good_key, "tls.server_cert", "No such file"),
        (
            &garbage,
            &good_key,
            "tls.server_cert",
            "no certificate in the file",
        ),
        (&good, &garbage, "tls.server_key", "no private key"),
    ] {
        let e = ServerTls::load(&files(Some((cert, key)), None)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(want_key), "{msg}");
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    let e = ServerTls::load(&TlsFiles {
        server_cert: Some(good.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("go together"), "{e}");
    let e = ServerTls::load(&TlsFiles {
        require_client_cert: true,
        ..files(Some((&good, &good_key)), None)
    })
    .unwrap_err();
    assert!(e.to_string().contains("needs tls.ca_cert"), "{e}");
}

/// One exchange over TLS on loopback: the client sends "ping", the server answers "pong".
async fn exchange(server: &ServerTls, client: &ClientTls, name: &str) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = server.acceptor();
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp).await {
            Ok(mut s) => {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(b"pong").await;
                    let _ = s.shutdown().await;
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let sn = ServerName::try_from(name.to_string()).unwrap();
    let r = async {
        let mut s = client
            .connector()
            .connect(sn, tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .await
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
    .await;
    let server_side = srv.await.unwrap();
    match (r, server_side) {
        (Ok(out), Ok(())) if out == "pong" => Ok(out),
        (Ok(out), Ok(())) => Err(format!("the server refused: {out:?}")),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

#[tokio::test]
async fn clients_verify_the_server_and_servers_the_clients() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let (srv, srv_key) = pki.issue("server", &["localhost"], -1, 30);
    let (cli, cli_key) = pki.issue("agent", &["agent1"], -1, 30);
    let server = ServerTls::load(&files(Some((&srv, &srv_key)), None))
        .unwrap()
        .unwrap();
    let trusting = ClientTls::load(&files(None, Some(&ca)), &ClientOptions::default()).unwrap();
    assert_eq!(
        exchange(&server, &trusting, "localhost").await.unwrap(),
        "pong"
    );
    // The wrong name, and a client that does not know the CA.
    let e = exchange(&server, &trusting, "elsewhere").await.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    let system = ClientTls::load(&TlsFiles::default(), &ClientOptions::default()).unwrap();
    let e = exchange(&server, &system, "localhost").await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    let insecure =
        ClientTls::load(&TlsFiles::default(), &ClientOptions { insecure: true }).unwrap();
    assert_eq!(
        exchange(&server, &insecure, "elsewhere").await.unwrap(),
        "pong"
    );

    // Mutual TLS: a client without a certificate is refused, one with it accepted.
    let mutual = ServerTls::load(&TlsFiles {
        require_client_cert: true,
        ..files(Some((&srv, &srv_key)), Some(&ca))
    })
    .unwrap()
    .unwrap();
    assert!(exchange(&mutual, &trusting, "localhost").await.is_err());
    let with_cert = ClientTls::load(
        &TlsFiles {
            client_cert: Some(cli),
            client_key: Some(cli_key),
            ..files(None, Some(&ca))
        },
        &ClientOptions::default(),
    )
    .unwrap();
    assert_eq!(
        exchange(&mutual, &with_cert, "localhost").await.unwrap(),
        "pong"
    );
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let (srv, srv_key) = pki.issue("server", &["localhost"], -1, 30);
    let server = ServerTls::load(&files(Some((&srv, &srv_key)), None))
        .unwrap()
        .unwrap();
    let client = ClientTls::load(&files(None, Some(&ca)), &ClientOptions::default()).unwrap();
    assert!(exchange(&server, &client, "localhost").await.is_ok());
    assert!(exchange(&server, &client, "skydive.example").await.is_err());
    // The files are replaced by a certificate for another name: served at the next check.
    std::thread::sleep(Duration::from_millis(20));
    let (new, new_key) = pki.issue("server2", &["skydive.example"], -1, 30);
    std::fs::copy(&new, &srv).unwrap();
    std::fs::copy(&new_key, &srv_key).unwrap();
    server.reloader.check();
    assert!(exchange(&server, &client, "skydive.example").await.is_ok());
    // A broken replacement is refused and the previous pair stays.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&srv_key, "garbage").unwrap();
    server.reloader.check();
    assert!(exchange(&server, &client, "skydive.example").await.is_ok());
}
