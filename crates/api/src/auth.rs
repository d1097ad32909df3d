//! Authentication and authorisation, as Skydive's API does them.
//!
//! Backends: `noauth` (everyone is `admin`) and `basic` (`htpasswd`: an htpasswd file with
//! bcrypt or `{SHA}` entries, or inline users). The `middleware` authenticates every request
//! and `POST /login` exchanges a form's `username` and `password` for a session token
//! (`sessions`); `rbac` is Skydive's role model with the configuration's `rbac.policy` lines.
//! Password checks run off the async workers, a few at a time, and failures are slowed per
//! address and user (`throttle`).

mod htpasswd;
mod middleware;
mod rbac;
mod sessions;
mod throttle;

pub use middleware::{middleware, percent_decode, request_token, routes};
pub use rbac::{Rbac, permission_for};
pub use sessions::Sessions;
pub use throttle::{Slowed, Throttle};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::Value;
use skydive_config::Settings;

use htpasswd::{Basic, basic_from};

/// The realm of basic authentication, as Skydive names it.
pub const REALM: &str = "Skydive Authentication";

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("No credentials provided")]
    NoCredentials,
    #[error("Wrong credentials")]
    WrongCredentials,
    /// Too many failures lately from the address or for the user: not checked.
    #[error(transparent)]
    Slowed(#[from] Slowed),
    /// Too many password checks waiting: not checked.
    #[error("too many password checks in progress; try again in a second")]
    Busy,
    /// The check could not be made (a session that cannot be saved).
    #[error("{0}")]
    Internal(String),
}

/// An authentication section of the configuration that cannot be enforced; the binary exits
/// with its configuration-error code on it, as for any invalid key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(pub String);

impl AuthConfigError {
    fn from(e: anyhow::Error) -> anyhow::Error {
        AuthConfigError(format!("{e:#}")).into()
    }
}

/// Who a request runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: String,
}
/// One authentication backend (an `auth.<name>` section).
#[derive(Debug)]
pub struct Authenticator {
    pub name: String,
    basic: Option<Basic>,
    /// Tokens checked recently (by their SHA-1, not in clear): bcrypt costs tens of
    /// milliseconds per check, and browsers and clients send the token with every request.
    verified: Mutex<Verified>,
    /// The sessions `POST /login` opened.
    pub sessions: Sessions,
    /// Recent failures, per address and user.
    throttle: Throttle,
    /// Password checks running at once (bcrypt takes a core for tens of milliseconds): one
    /// core fewer than the machine has, so that a flood of guesses leaves one for the rest.
    hashing: tokio::sync::Semaphore,
    /// Checks waiting for `hashing`.
    hashing_waiting: AtomicUsize,
}

/// Most password checks waiting for a core; more are answered 503 at once.
const MAX_WAITING_CHECKS: usize = 64;

/// The users' version (the htpasswd file's modification time) and the tokens checked against it.
type Verified = (
    Option<SystemTime>,
    HashMap<[u8; 20], (User, std::time::Instant)>,
);

/// How long a checked token is trusted without checking it again.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(60);
/// Most tokens remembered.
const VERIFIED_MAX: usize = 4096;

impl Authenticator {
    fn new(name: String, basic: Option<Basic>, sessions: Sessions) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Authenticator {
            name,
            basic,
            verified: Mutex::default(),
            sessions,
            throttle: Throttle::default(),
            hashing: tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1)),
            hashing_waiting: AtomicUsize::new(0),
        })
    }

    /// Everyone is admin.
    pub fn noauth() -> Arc<Self> {
        Self::new(
            "noauth".into(),
            None,
            Sessions::new(sessions::DEFAULT_TTL, None),
        )
    }

    /// The backend named `backend`, for the configuration key `key` (errors name both).
    pub fn from_settings(
        settings: &Settings,
        key: &'static str,
        backend: &str,
    ) -> anyhow::Result<Arc<Self>> {
        Self::from_config(&BackendConfig::of(settings, key, backend))
    }

    /// The backend a configuration names.
    pub fn from_config(c: &BackendConfig) -> anyhow::Result<Arc<Self>> {
        Self::build(c).map_err(AuthConfigError::from)
    }

    fn build(c: &BackendConfig) -> anyhow::Result<Arc<Self>> {
        let (key, backend) = (c.key, c.name.as_str());
        let section = c
            .section
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{key}: no section `auth.{backend}`"))?;
        match section.get("type").and_then(Value::as_str) {
            Some("noauth") | None => Ok(Self::noauth()),
            Some("basic") => {
                let basic =
                    basic_from(section, backend).map_err(|e| anyhow::anyhow!("{key}: {e:#}"))?;
                let ttl = match section.get("session_timeout") {
                    None | Some(Value::Null) => sessions::DEFAULT_TTL,
                    Some(v) => match v.as_u64() {
                        Some(secs) if secs > 0 => std::time::Duration::from_secs(secs),
                        _ => anyhow::bail!(
                            "{key}: auth.{backend}.session_timeout: expected a number of seconds above 0"
                        ),
                    },
                };
                Ok(Self::new(
                    backend.to_string(),
                    Some(basic),
                    Sessions::new(ttl, c.sessions_file.clone()),
                ))
            }
            Some(other) => anyhow::bail!(
                "{key}: the `{backend}` backend is of type {other}, which this build does not support (use basic or noauth)"
            ),
        }
    }

    pub fn is_noauth(&self) -> bool {
        self.basic.is_none()
    }

    /// Checks a user name and password (blocking: bcrypt; see [`Authenticator::login_async`]).
    /// The user's secret's fingerprint comes with the user.
    pub fn login(&self, username: &str, password: &str) -> Result<(User, String), AuthError> {
        let Some(basic) = &self.basic else {
            return Ok((admin(), String::new()));
        };
        if username.is_empty() || password.is_empty() {
            return Err(AuthError::NoCredentials);
        }
        match basic.lookup(username) {
            Some(s) if s.verify(password) => Ok((
                User {
                    name: username.to_string(),
                    role: basic.role.clone(),
                },
                s.fingerprint(),
            )),
            Some(_) => Err(AuthError::WrongCredentials),
            None => {
                basic.equalise(password);
                Err(AuthError::WrongCredentials)
            }
        }
    }

    /// As [`Authenticator::login`], slowed per address and user after failures, off the async
    /// workers and a few at a time.
    pub async fn login_async(
        self: &Arc<Self>,
        addr: Option<IpAddr>,
        username: &str,
        password: &str,
    ) -> Result<(User, String), AuthError> {
        if self.basic.is_none() {
            return Ok((admin(), String::new()));
        }
        if username.is_empty() || password.is_empty() {
            return Err(AuthError::NoCredentials);
        }
        self.throttle.check(addr, username)?;
        // A bounded queue: past it, a check is refused at once rather than waiting behind
        // a flood for seconds.
        if self.hashing_waiting.fetch_add(1, Ordering::Relaxed) >= MAX_WAITING_CHECKS {
            self.hashing_waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(AuthError::Busy);
        }
        let permit = self.hashing.acquire().await;
        self.hashing_waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit = permit.map_err(|e| AuthError::Internal(e.to_string()))?;
        // Failures recorded while this one waited count.
        self.throttle.check(addr, username)?;
        let (me, user, pass) = (self.clone(), username.to_string(), password.to_string());
        let result = tokio::task::spawn_blocking(move || me.login(&user, &pass))
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        match &result {
            Ok(_) => self.throttle.succeeded(addr, username),
            Err(AuthError::WrongCredentials) => {
                tracing::info!(user = username, addr = ?addr, "failed login");
                self.throttle.failed(addr, username);
            }
            Err(_) => {}
        }
        result
    }

    /// Opens a session for a checked user; its token.
    pub fn open_session(&self, user: &User, fingerprint: &str) -> Result<String, AuthError> {
        self.sessions
            .create(user, fingerprint)
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// The user of a token when it can be told without hashing a password: a live session
    /// whose user still has the secret they logged in with, or credentials checked lately.
    /// `None` when the token needs a password check.
    pub fn check_token_quick(&self, token: &str) -> Option<Result<User, AuthError>> {
        let Some(basic) = &self.basic else {
            return Some(Ok(admin()));
        };
        if let Some((user, fingerprint)) = self.sessions.get(token) {
            // A user removed, or given another password, loses their sessions.
            let current = basic.lookup(&user.name).map(|s| s.fingerprint());
            if current.as_deref() == Some(fingerprint.as_str()) {
                return Some(Ok(User {
                    role: basic.role.clone(),
                    ..user
                }));
            }
            let _ = self.sessions.remove(token);
            return Some(Err(AuthError::WrongCredentials));
        }
        use sha1::Digest as _;
        let key: [u8; 20] = sha1::Sha1::digest(token.as_bytes()).into();
        // A changed htpasswd file forgets every token checked against the old one.
        let generation = basic.generation();
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != generation {
            *cache = (generation, HashMap::new());
        }
        match cache.1.get(&key) {
            Some((user, at)) if at.elapsed() < VERIFIED_FOR => Some(Ok(user.clone())),
            _ => None,
        }
    }

    /// Checks a token (blocking: it may hash a password): a session token of `POST /login`,
    /// or `base64(user:password)` for basic authentication.
    pub fn check_token(&self, token: &str) -> Result<User, AuthError> {
        if let Some(r) = self.check_token_quick(token) {
            return r;
        }
        let (user, password) = basic_credentials(token)?;
        let user = self.login(&user, &password)?.0;
        self.remember(token, &user);
        Ok(user)
    }

    /// As [`Authenticator::check_token`], slowed per address and user after failures, off the
    /// async workers and a few at a time.
    pub async fn check_token_async(
        self: &Arc<Self>,
        addr: Option<IpAddr>,
        token: &str,
    ) -> Result<User, AuthError> {
        if let Some(r) = self.check_token_quick(token) {
            return r;
        }
        // A task of its own, so that a client that gives up (a short timeout while a costly
        // hash is checked) does not waste the check: its result is remembered and the next
        // request with the same credentials is answered at once.
        let (me, token) = (self.clone(), token.to_string());
        tokio::spawn(async move {
            let (user, password) = basic_credentials(&token)?;
            let user = me.login_async(addr, &user, &password).await?.0;
            me.remember(&token, &user);
            Ok(user)
        })
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
    }

    fn remember(&self, token: &str, user: &User) {
        use sha1::Digest as _;
        let key: [u8; 20] = sha1::Sha1::digest(token.as_bytes()).into();
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.1.len() >= VERIFIED_MAX {
            cache.1.clear();
        }
        cache
            .1
            .insert(key, (user.clone(), std::time::Instant::now()));
    }
}

/// The user and password of a basic token, `base64(user:password)`.
fn basic_credentials(token: &str) -> Result<(String, String), AuthError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| AuthError::WrongCredentials)?;
    let text = String::from_utf8(raw).map_err(|_| AuthError::WrongCredentials)?;
    let (user, password) = text.split_once(':').ok_or(AuthError::WrongCredentials)?;
    Ok((user.to_string(), password.to_string()))
}

fn admin() -> User {
    User {
        name: "admin".into(),
        role: "admin".into(),
    }
}
/// One authentication backend as the configuration names it: the key naming it, its name and
/// its `auth.<name>` section.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    pub key: &'static str,
    pub name: String,
    pub section: Option<Value>,
    /// Where the backend keeps its login sessions across restarts (none: in memory).
    pub sessions_file: Option<std::path::PathBuf>,
}

impl BackendConfig {
    fn of(settings: &Settings, key: &'static str, name: &str) -> BackendConfig {
        BackendConfig {
            key,
            name: name.to_string(),
            section: settings.auth.get(name).cloned(),
            sessions_file: None,
        }
    }
}

/// What a server's authentication is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthConfig {
    pub api: BackendConfig,
    /// The backend of the agents' endpoint (analyzers only).
    pub cluster: Option<BackendConfig>,
    /// `rbac.policy` (analyzers only; an agent only authenticates, as Skydive's).
    pub rbac_policy: Option<Vec<String>>,
}

impl AuthConfig {
    /// An analyzer's: `analyzer.auth.api`, `analyzer.auth.cluster`, `rbac.policy`.
    pub fn analyzer(settings: &Settings) -> AuthConfig {
        AuthConfig {
            api: BackendConfig::of(
                settings,
                "analyzer.auth.api.backend",
                &settings.analyzer.auth.api.backend,
            ),
            cluster: Some(BackendConfig::of(
                settings,
                "analyzer.auth.cluster.backend",
                &settings.analyzer.auth.cluster.backend,
            )),
            rbac_policy: Some(settings.rbac.policy.clone()),
        }
    }

    /// An agent's: `agent.auth.api`.
    pub fn agent(settings: &Settings) -> AuthConfig {
        AuthConfig {
            api: BackendConfig::of(
                settings,
                "agent.auth.api.backend",
                &settings.agent.auth.api.backend,
            ),
            cluster: None,
            rbac_policy: None,
        }
    }
}

/// The authentication of one server: its API backend, the backend of the agents' endpoint
/// (analyzers only) and RBAC (analyzers only; an agent only authenticates, as Skydive's).
#[derive(Debug, Clone)]
pub struct Auth {
    pub api: Arc<Authenticator>,
    pub cluster: Option<Arc<Authenticator>>,
    pub rbac: Option<Arc<Rbac>>,
}

impl Auth {
    /// No authentication at all.
    pub fn none() -> Auth {
        Auth {
            api: Authenticator::noauth(),
            cluster: None,
            rbac: None,
        }
    }

    /// A server's authentication, as its configuration says.
    pub fn build(c: &AuthConfig) -> anyhow::Result<Auth> {
        Ok(Auth {
            api: Authenticator::from_config(&c.api)?,
            cluster: c
                .cluster
                .as_ref()
                .map(Authenticator::from_config)
                .transpose()?,
            rbac: c
                .rbac_policy
                .as_ref()
                .map(|p| Rbac::new(p).map(Arc::new))
                .transpose()
                .map_err(AuthConfigError::from)?,
        })
    }

    /// An analyzer's: `analyzer.auth.api`, `analyzer.auth.cluster`, `rbac.policy`.
    pub fn analyzer(settings: &Settings) -> anyhow::Result<Auth> {
        Self::build(&AuthConfig::analyzer(settings))
    }

    /// An agent's: `agent.auth.api`.
    pub fn agent(settings: &Settings) -> anyhow::Result<Auth> {
        Self::build(&AuthConfig::agent(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn settings(yaml_auth: Value) -> Settings {
        let mut s = Settings::default();
        s.auth.insert("basic".into(), yaml_auth);
        s
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn inline_users_and_tokens() {
        let s = settings(
            serde_json::json!({"type": "basic", "users": {"alice": "s3cret"}, "role": "guest"}),
        );
        let a = Authenticator::from_settings(&s, "analyzer.auth.api.backend", "basic").unwrap();
        assert!(!a.is_noauth());
        assert_eq!(
            a.login("alice", "s3cret").map(|u| u.0),
            Ok(User {
                name: "alice".into(),
                role: "guest".into()
            })
        );
        assert_eq!(a.login("alice", "nope"), Err(AuthError::WrongCredentials));
        assert_eq!(a.login("bob", "s3cret"), Err(AuthError::WrongCredentials));
        assert_eq!(a.login("alice", ""), Err(AuthError::NoCredentials));
        assert_eq!(a.check_token(&b64("alice:s3cret")).unwrap().name, "alice");
        assert_eq!(
            a.check_token(&b64("alice:s3cre")),
            Err(AuthError::WrongCredentials)
        );
        assert_eq!(a.check_token("%%%"), Err(AuthError::WrongCredentials));
        assert_eq!(
            a.check_token(&b64("no-colon")),
            Err(AuthError::WrongCredentials)
        );
    }

    #[tokio::test]
    async fn a_check_its_client_gave_up_on_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        // A cost that takes a while to check, so that the client gives up first.
        std::fs::write(
            &path,
            format!("one:{}\n", bcrypt::hash("pw-one", 10).unwrap()),
        )
        .unwrap();
        let s = settings(serde_json::json!({"type": "basic", "file": path.to_str().unwrap()}));
        let a = Arc::new(Authenticator::from_settings(&s, "k", "basic").unwrap());
        let token = b64("one:pw-one");
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            a.check_token_async(None, &token),
        )
        .await;
        assert!(gave_up.is_err(), "the check outlived the client's patience");
        assert!(a.check_token_quick(&token).is_none(), "not checked yet");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(r) = a.check_token_quick(&token) {
                assert_eq!(r.unwrap().name, "one");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the check was dropped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn htpasswd_bcrypt_and_sha_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let bcrypt_hash = bcrypt::hash("pw-one", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        // {SHA} of "pw-two", as `htpasswd -s` writes it.
        let sha = {
            use sha1::Digest as _;
            b64_bytes(&sha1::Sha1::digest(b"pw-two"))
        };
        std::fs::write(
            &path,
            format!("# users\none:{bcrypt_hash}\n\ntwo:{{SHA}}{sha}\n"),
        )
        .unwrap();
        let s = settings(serde_json::json!({"type": "basic", "file": path.to_str().unwrap()}));
        let a = Authenticator::from_settings(&s, "k", "basic").unwrap();
        assert_eq!(a.login("one", "pw-one").unwrap().0.role, "admin");
        assert_eq!(a.login("two", "pw-two").unwrap().0.name, "two");
        assert!(a.login("one", "pw-two").is_err());
        let token = b64("one:pw-one");
        assert_eq!(a.check_token(&token).unwrap().name, "one");
        assert_eq!(a.check_token(&token).unwrap().name, "one"); // remembered
        // A changed file is read again (a later modification time).
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, format!("three:{{SHA}}{sha}\n")).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(a.login("one", "pw-one").is_err());
        assert_eq!(a.check_token(&token), Err(AuthError::WrongCredentials)); // forgotten
        assert!(a.login("three", "pw-two").is_ok());
    }

    #[test]
    fn sessions_end_when_their_user_changes_password_or_logs_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let sha = |p: &str| {
            use sha1::Digest as _;
            b64_bytes(&sha1::Sha1::digest(p.as_bytes()))
        };
        std::fs::write(&path, format!("one:{{SHA}}{}\n", sha("pw-one"))).unwrap();
        let s = settings(
            serde_json::json!({"type": "basic", "file": path.to_str().unwrap(), "session_timeout": 60}),
        );
        let a = Authenticator::from_settings(&s, "k", "basic").unwrap();
        assert_eq!(a.sessions.ttl(), std::time::Duration::from_secs(60));
        let (user, fp) = a.login("one", "pw-one").unwrap();
        let t1 = a.open_session(&user, &fp).unwrap();
        let t2 = a.open_session(&user, &fp).unwrap();
        assert_eq!(a.check_token(&t1).unwrap().name, "one");
        // The token is no password: it does not decode to one.
        assert!(basic_credentials(&t1).is_err());
        assert!(a.sessions.remove(&t1).unwrap());
        assert_eq!(a.check_token(&t1), Err(AuthError::WrongCredentials));
        assert_eq!(a.check_token(&t2).unwrap().name, "one");
        // Another password: the session ends.
        std::fs::write(&path, format!("one:{{SHA}}{}\n", sha("pw-new"))).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(a.check_token(&t2), Err(AuthError::WrongCredentials));
        let e = Authenticator::from_settings(
            &settings(
                serde_json::json!({"type": "basic", "users": {"u": "p"}, "session_timeout": "1h"}),
            ),
            "k",
            "basic",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("auth.basic.session_timeout: expected a number of seconds"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_user_costs_the_time_of_a_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("one:{}\n", bcrypt::hash("pw", 8).unwrap())).unwrap();
        let s = settings(serde_json::json!({"type": "basic", "file": path.to_str().unwrap()}));
        let a = Authenticator::from_settings(&s, "k", "basic").unwrap();
        let time = |user: &str| {
            let t = std::time::Instant::now();
            assert_eq!(
                a.login(user, "wrong").unwrap_err(),
                AuthError::WrongCredentials
            );
            t.elapsed()
        };
        let _ = time("nobody"); // the first makes its hash
        let (known, unknown) = (time("one"), time("nobody"));
        assert!(
            unknown * 3 > known,
            "an unknown user answered in {unknown:?}, a known one in {known:?}"
        );
    }

    fn b64_bytes(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn bad_configurations_are_refused_with_the_key() {
        let e = Authenticator::from_settings(
            &settings(serde_json::json!({"type": "basic"})),
            "analyzer.auth.api.backend",
            "basic",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs `file`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, "u:$apr1$abc$def\n").unwrap();
        let e = Authenticator::from_settings(
            &settings(serde_json::json!({"type": "basic", "file": path.to_str().unwrap()})),
            "k",
            "basic",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unsupported hash for user `u`"), "{e}");
        let mut s = Settings::default();
        s.auth
            .insert("ks".into(), serde_json::json!({"type": "keystone"}));
        let e = Authenticator::from_settings(&s, "agent.auth.api.backend", "ks")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agent.auth.api.backend: the `ks` backend is of type keystone"),
            "{e}"
        );
        assert!(Authenticator::from_settings(&Settings::default(), "k", "missing").is_err());
    }
}
