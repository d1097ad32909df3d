//! Authentication and authorisation (compat spec §1.4).
//!
//! Backends: `noauth` (everyone is `admin`) and `basic` (an htpasswd file with bcrypt or
//! `{SHA}` entries, or inline `users: {name: password}`). A request's token comes from the
//! `authtoken` cookie, the `Authorization` header, the `X-Auth-Token` header or the
//! `x-auth-token` query parameter, in that order; the part after a space is kept; for basic
//! authentication it is `base64(user:password)`. Successful requests get the `authtoken` and
//! `permissions` cookies back. `POST /login` exchanges a form's `username` and `password` for
//! the token.
//!
//! Authorisation is Skydive's role model: `admin` may do everything, `guest` may read the
//! topology and the status and subscribe to `/ws/subscriber`; `rbac.policy` adds casbin-style
//! lines (`p, subject, object, action, allow|deny` and `g, user, role`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;
use skydive_config::Settings;

/// The realm of basic authentication, as Skydive names it.
pub const REALM: &str = "Skydive Authentication";

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("No credentials provided")]
    NoCredentials,
    #[error("Wrong credentials")]
    WrongCredentials,
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

/// A stored secret of the basic backend.
#[derive(Debug, Clone)]
enum Secret {
    /// Inline `users:` passwords.
    Plain(String),
    /// `$2a$`, `$2b$`, `$2y$` htpasswd entries.
    Bcrypt(String),
    /// `{SHA}base64(sha1(password))` htpasswd entries.
    Sha1([u8; 20]),
}

impl Secret {
    fn verify(&self, password: &str) -> bool {
        match self {
            Secret::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Secret::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Secret::Sha1(d) => {
                use sha1::Digest as _;
                let got: [u8; 20] = sha1::Sha1::digest(password.as_bytes()).into();
                constant_time_eq(&got, d)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses an htpasswd file: `user:hash` lines; `#` comments and blank lines skipped.
fn parse_htpasswd(text: &str, path: &Path) -> anyhow::Result<HashMap<String, Secret>> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            anyhow::bail!("{}:{}: expected `user:hash`", path.display(), i + 1);
        };
        let secret = if hash.starts_with("$2a$")
            || hash.starts_with("$2b$")
            || hash.starts_with("$2y$")
        {
            Secret::Bcrypt(hash.to_string())
        } else if let Some(b64) = hash.strip_prefix("{SHA}") {
            let d = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("{}:{}: malformed {{SHA}} hash", path.display(), i + 1)
                })?;
            Secret::Sha1(d)
        } else {
            anyhow::bail!(
                "{}:{}: unsupported hash for user `{user}` (use bcrypt, `htpasswd -B`, or {{SHA}}, `htpasswd -s`)",
                path.display(),
                i + 1
            );
        };
        users.insert(user.to_string(), secret);
    }
    Ok(users)
}

/// The users of a basic backend; the file is read again when it changes.
#[derive(Debug)]
struct Basic {
    inline: HashMap<String, Secret>,
    file: Option<PathBuf>,
    /// The file's users and the modification time they were read at.
    loaded: Mutex<(HashMap<String, Secret>, Option<SystemTime>)>,
    role: String,
}

impl Basic {
    /// What identifies the users' current version: the file's modification time.
    fn generation(&self) -> Option<SystemTime> {
        let file = self.file.as_ref()?;
        std::fs::metadata(file).and_then(|m| m.modified()).ok()
    }

    fn lookup(&self, user: &str) -> Option<Secret> {
        if let Some(file) = &self.file {
            let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if mtime != loaded.1 {
                match std::fs::read_to_string(file)
                    .map_err(anyhow::Error::from)
                    .and_then(|t| parse_htpasswd(&t, file))
                {
                    Ok(users) => *loaded = (users, mtime),
                    // Keep the users read last; say why the new file is not taken.
                    Err(e) => tracing::warn!("{}: {e:#}", file.display()),
                }
            }
            if let Some(s) = loaded.0.get(user) {
                return Some(s.clone());
            }
        }
        self.inline.get(user).cloned()
    }
}

/// One authentication backend (an `auth.<name>` section).
#[derive(Debug)]
pub struct Authenticator {
    pub name: String,
    basic: Option<Basic>,
    /// Tokens checked recently (by their SHA-1, not in clear): bcrypt costs tens of
    /// milliseconds per check, and browsers and clients send the token with every request.
    verified: Mutex<Verified>,
}

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
    /// Everyone is admin.
    pub fn noauth() -> Arc<Self> {
        Arc::new(Authenticator {
            name: "noauth".into(),
            basic: None,
            verified: Mutex::default(),
        })
    }

    /// The backend named `backend`, for the configuration key `key` (errors name both).
    pub fn from_settings(
        settings: &Settings,
        key: &str,
        backend: &str,
    ) -> anyhow::Result<Arc<Self>> {
        Self::build(settings, key, backend).map_err(AuthConfigError::from)
    }

    fn build(settings: &Settings, key: &str, backend: &str) -> anyhow::Result<Arc<Self>> {
        let section = settings
            .auth
            .get(backend)
            .ok_or_else(|| anyhow::anyhow!("{key}: no section `auth.{backend}`"))?;
        match settings.auth_type(backend) {
            Some("noauth") | None => Ok(Self::noauth()),
            Some("basic") => Ok(Arc::new(Authenticator {
                name: backend.to_string(),
                basic: Some(
                    basic_from(section, backend).map_err(|e| anyhow::anyhow!("{key}: {e:#}"))?,
                ),
                verified: Mutex::default(),
            })),
            Some(other) => anyhow::bail!(
                "{key}: the `{backend}` backend is of type {other}, which this build does not support (use basic or noauth)"
            ),
        }
    }

    pub fn is_noauth(&self) -> bool {
        self.basic.is_none()
    }

    /// Checks a user name and password.
    pub fn login(&self, username: &str, password: &str) -> Result<User, AuthError> {
        let Some(basic) = &self.basic else {
            return Ok(admin());
        };
        if username.is_empty() || password.is_empty() {
            return Err(AuthError::NoCredentials);
        }
        match basic.lookup(username) {
            Some(s) if s.verify(password) => Ok(User {
                name: username.to_string(),
                role: basic.role.clone(),
            }),
            _ => Err(AuthError::WrongCredentials),
        }
    }

    /// Checks a token: `base64(user:password)` for basic authentication.
    pub fn check_token(&self, token: &str) -> Result<User, AuthError> {
        let Some(basic) = &self.basic else {
            return Ok(admin());
        };
        use sha1::Digest as _;
        let key: [u8; 20] = sha1::Sha1::digest(token.as_bytes()).into();
        // A changed htpasswd file forgets every token checked against the old one.
        let generation = basic.generation();
        {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.0 != generation {
                *cache = (generation, HashMap::new());
            }
            if let Some((user, at)) = cache.1.get(&key)
                && at.elapsed() < VERIFIED_FOR
            {
                return Ok(user.clone());
            }
        }
        let user = self.check_token_uncached(token)?;
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.1.len() >= VERIFIED_MAX {
            cache.1.clear();
        }
        cache
            .1
            .insert(key, (user.clone(), std::time::Instant::now()));
        Ok(user)
    }

    fn check_token_uncached(&self, token: &str) -> Result<User, AuthError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .map_err(|_| AuthError::WrongCredentials)?;
        let text = String::from_utf8(raw).map_err(|_| AuthError::WrongCredentials)?;
        let (user, password) = text.split_once(':').ok_or(AuthError::WrongCredentials)?;
        self.login(user, password)
    }
}

fn admin() -> User {
    User {
        name: "admin".into(),
        role: "admin".into(),
    }
}

fn basic_from(section: &Value, name: &str) -> anyhow::Result<Basic> {
    let mut inline = HashMap::new();
    if let Some(users) = section.get("users") {
        let map = users.as_object().ok_or_else(|| {
            anyhow::anyhow!("auth.{name}.users: expected a map of user: password")
        })?;
        for (u, p) in map {
            let p = p
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("auth.{name}.users.{u}: expected a string"))?;
            inline.insert(u.clone(), Secret::Plain(p.to_string()));
        }
    }
    let file = match section.get("file") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            let path = PathBuf::from(s);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("auth.{name}.file: {}: {e}", path.display()))?;
            parse_htpasswd(&text, &path).map_err(|e| anyhow::anyhow!("auth.{name}.file: {e:#}"))?;
            Some(path)
        }
        Some(_) => anyhow::bail!("auth.{name}.file: expected a path"),
    };
    if inline.is_empty() && file.is_none() {
        anyhow::bail!("auth.{name}: a basic backend needs `file` (htpasswd) or `users`");
    }
    let role = section
        .get("role")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or("admin")
        .to_string();
    Ok(Basic {
        inline,
        file,
        loaded: Mutex::new((HashMap::new(), None)),
        role,
    })
}

/// One policy line: `subject` may (or may not) do `action` on `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    subject: String,
    object: String,
    action: String,
    allow: bool,
}

/// Skydive's RBAC: the built-in roles plus `rbac.policy` lines.
#[derive(Debug, Clone)]
pub struct Rbac {
    policies: Vec<Policy>,
    /// user or role -> roles it has
    groups: HashMap<String, Vec<String>>,
}

const WS_ENDPOINTS: [&str; 7] = [
    "/ws/agent/topology",
    "/ws/agent/flow",
    "/ws/subscriber/flow",
    "/ws/publisher",
    "/ws/replication",
    "/ws/subscriber",
    "/ws/pubsub",
];

impl Rbac {
    /// The built-in policy and the configuration's extra lines.
    pub fn new(extra: &[String]) -> anyhow::Result<Rbac> {
        let mut policies = Vec::new();
        let mut allow = |sub: &str, obj: &str, act: &str| {
            policies.push(Policy {
                subject: sub.into(),
                object: obj.into(),
                action: act.into(),
                allow: true,
            })
        };
        for obj in [
            "alert",
            "capture",
            "injectpacket",
            "workflow",
            "node",
            "noderule",
            "edge",
            "edgerule",
        ] {
            allow("admin", obj, "read");
            allow("admin", obj, "write");
        }
        allow("admin", "capture", "rawpackets");
        allow("admin", "config", "read");
        allow("admin", "pcap", "write");
        allow("admin", "status", "read");
        allow("admin", "topology", "read");
        allow("admin", "workflow.call", "write");
        for ep in WS_ENDPOINTS {
            allow("admin", "websocket", ep);
        }
        allow("guest", "status", "read");
        allow("guest", "topology", "read");
        allow("guest", "websocket", "/ws/subscriber");
        let mut rbac = Rbac {
            policies,
            groups: HashMap::new(),
        };
        for (i, line) in extra.iter().enumerate() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            match f.as_slice() {
                ["p", sub, obj, act] => rbac.policies.push(Policy {
                    subject: sub.to_string(),
                    object: obj.to_string(),
                    action: act.to_string(),
                    allow: true,
                }),
                ["p", sub, obj, act, eft] if matches!(*eft, "allow" | "deny") => {
                    rbac.policies.push(Policy {
                        subject: sub.to_string(),
                        object: obj.to_string(),
                        action: act.to_string(),
                        allow: *eft == "allow",
                    })
                }
                ["g", user, role] => rbac
                    .groups
                    .entry(user.to_string())
                    .or_default()
                    .push(role.to_string()),
                _ => anyhow::bail!(
                    "rbac.policy[{i}]: expected `p, subject, object, action[, allow|deny]` or `g, user, role`, got {line:?}"
                ),
            }
        }
        Ok(rbac)
    }

    /// The user, its role and every role they inherit (`g` lines, transitively).
    fn subjects(&self, user: &User) -> Vec<String> {
        let mut out = vec![user.name.clone(), user.role.clone()];
        let mut i = 0;
        while i < out.len() {
            if let Some(roles) = self.groups.get(&out[i]) {
                for r in roles {
                    if !out.contains(r) {
                        out.push(r.clone());
                    }
                }
            }
            i += 1;
        }
        out
    }

    /// Some allow and no deny, as casbin's effect says.
    pub fn enforce(&self, user: &User, object: &str, action: &str) -> bool {
        let subs = self.subjects(user);
        let mut allowed = false;
        for p in &self.policies {
            if p.object == object && p.action == action && subs.contains(&p.subject) {
                if !p.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }

    /// What the user may and may not do, as `/login` and the `permissions` cookie list it.
    pub fn permissions(&self, user: &User) -> Vec<Value> {
        let subs = self.subjects(user);
        self.policies
            .iter()
            .filter(|p| subs.contains(&p.subject))
            .map(
                |p| serde_json::json!({"Object": p.object, "Action": p.action, "Allowed": p.allow}),
            )
            .collect()
    }
}

/// What a request needs: an RBAC object and action, or only to be authenticated.
pub fn permission_for(method: &Method, path: &str) -> Option<(String, String)> {
    if path.starts_with("/ws/") {
        return Some(("websocket".into(), path.trim_end_matches('/').to_string()));
    }
    let rest = path.strip_prefix("/api/")?;
    let object = rest.split('/').next().unwrap_or("");
    let read = matches!(*method, Method::GET | Method::HEAD);
    let action = if read { "read" } else { "write" };
    match object {
        // A query is a read, whatever its method.
        "topology" | "status" | "config" => Some((object.into(), "read".into())),
        "pcap" => Some(("pcap".into(), "write".into())),
        "capture" | "alert" | "node" | "edge" | "noderule" | "edgerule" | "injectpacket"
        | "workflow" => Some((object.into(), action.into())),
        _ => None,
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

    /// An analyzer's: `analyzer.auth.api`, `analyzer.auth.cluster`, `rbac.policy`.
    pub fn analyzer(settings: &Settings) -> anyhow::Result<Auth> {
        Ok(Auth {
            api: Authenticator::from_settings(
                settings,
                "analyzer.auth.api.backend",
                &settings.analyzer.auth.api.backend,
            )?,
            cluster: Some(Authenticator::from_settings(
                settings,
                "analyzer.auth.cluster.backend",
                &settings.analyzer.auth.cluster.backend,
            )?),
            rbac: Some(Arc::new(
                Rbac::new(&settings.rbac.policy).map_err(AuthConfigError::from)?,
            )),
        })
    }

    /// An agent's: `agent.auth.api`.
    pub fn agent(settings: &Settings) -> anyhow::Result<Auth> {
        Ok(Auth {
            api: Authenticator::from_settings(
                settings,
                "agent.auth.api.backend",
                &settings.agent.auth.api.backend,
            )?,
            cluster: None,
            rbac: None,
        })
    }
}

/// The token of a request, from the places Skydive looks, in its order.
pub fn request_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("authtoken=").map(str::to_string));
    let raw = cookie
        .or_else(|| header_str(headers, header::AUTHORIZATION.as_str()))
        .or_else(|| header_str(headers, "x-auth-token"))
        .or_else(|| {
            query?.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == "x-auth-token").then(|| percent_decode(v))
            })
        })?;
    let token = match raw.rsplit_once(' ') {
        Some((_, t)) => t.to_string(),
        None => raw,
    };
    (!token.is_empty()).then_some(token)
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `%XX` and `+` decoding of a query or form value.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a path is served to everyone: the web UI (it has its own login form) and `/login`.
fn public(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/") || path == "/login"
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn auth_cookies(resp: &mut Response, token: &str, permissions: &[Value]) {
    let perms = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(permissions).unwrap_or_default());
    for c in [
        format!("authtoken={token}; Path=/"),
        format!("permissions={perms}; Path=/"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

/// The middleware: authenticate, authorise, then pass the request on.
pub async fn middleware(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if public(&path) || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let (backend, forced_admin) = match (&auth.cluster, path.as_str()) {
        (Some(cluster), "/ws/agent/topology" | "/ws/agent/flow" | "/ws/replication") => {
            (cluster.clone(), true)
        }
        _ => (auth.api.clone(), false),
    };
    if backend.is_noauth() {
        return next.run(req).await;
    }
    let Some(token) = request_token(req.headers(), req.uri().query()) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &AuthError::NoCredentials.to_string(),
        );
    };
    let mut user = match backend.check_token(&token) {
        Ok(u) => u,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    if forced_admin {
        user.role = "admin".into();
    }
    let mut permissions = Vec::new();
    if let Some(rbac) = &auth.rbac {
        if let Some((object, action)) = permission_for(req.method(), &path)
            && !rbac.enforce(&user, &object, &action)
        {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("{} may not {action} {object}", user.name),
            );
        }
        permissions = rbac.permissions(&user);
    }
    let mut resp = next.run(req).await;
    auth_cookies(&mut resp, &token, &permissions);
    resp
}

/// `POST /login`: a form's `username` and `password` for the token.
async fn login(State(auth): State<Auth>, method: Method, body: axum::body::Bytes) -> Response {
    if method != Method::POST {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/")
            .body(Body::empty())
            .unwrap_or_default();
    }
    let form = String::from_utf8_lossy(&body);
    let field = |name: &str| {
        form.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    };
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &AuthError::NoCredentials.to_string(),
        );
    };
    let user = match auth.api.login(&username, &password) {
        Ok(u) => u,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let permissions = auth
        .rbac
        .as_ref()
        .map(|r| r.permissions(&user))
        .unwrap_or_default();
    let body = serde_json::json!({"Token": token, "Permissions": permissions}).to_string();
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response();
    // Cross-origin pages (the UI pointed at another server) use the token of the body: the
    // server's CORS layer answers every origin, without credentials.
    auth_cookies(&mut resp, &token, &permissions);
    resp
}

/// `/login`.
pub fn routes(auth: Auth) -> Router {
    Router::new()
        .route("/login", axum::routing::any(login))
        .with_state(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            a.login("alice", "s3cret"),
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
        assert_eq!(a.login("one", "pw-one").unwrap().role, "admin");
        assert_eq!(a.login("two", "pw-two").unwrap().name, "two");
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

    #[test]
    fn tokens_come_from_cookie_header_or_query_in_skydives_order() {
        let mut h = HeaderMap::new();
        assert_eq!(
            request_token(&h, Some("x-auth-token=abc%3D")),
            Some("abc=".into())
        );
        h.insert("x-auth-token", HeaderValue::from_static("from-x"));
        assert_eq!(
            request_token(&h, Some("x-auth-token=q")),
            Some("from-x".into())
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic from-auth"),
        );
        assert_eq!(request_token(&h, None), Some("from-auth".into()));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; authtoken=from-cookie"),
        );
        assert_eq!(request_token(&h, None), Some("from-cookie".into()));
        assert_eq!(request_token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn roles_and_policy_lines() {
        let rbac = Rbac::new(&[
            "p, ops, capture, write, allow".into(),
            "p, ops, capture, read".into(),
            "g, carol, ops".into(),
            "g, ops, guest".into(),
            "p, dave, topology, read, deny".into(),
        ])
        .unwrap();
        let admin = User {
            name: "a".into(),
            role: "admin".into(),
        };
        let guest = User {
            name: "g".into(),
            role: "guest".into(),
        };
        let carol = User {
            name: "carol".into(),
            role: "guest".into(),
        };
        let dave = User {
            name: "dave".into(),
            role: "admin".into(),
        };
        assert!(rbac.enforce(&admin, "capture", "write"));
        assert!(rbac.enforce(&admin, "websocket", "/ws/agent/topology"));
        assert!(rbac.enforce(&guest, "topology", "read"));
        assert!(rbac.enforce(&guest, "websocket", "/ws/subscriber"));
        assert!(!rbac.enforce(&guest, "capture", "read"));
        assert!(!rbac.enforce(&guest, "websocket", "/ws/publisher"));
        assert!(rbac.enforce(&carol, "capture", "write"));
        assert!(rbac.enforce(&carol, "status", "read")); // ops inherits guest
        assert!(!rbac.enforce(&dave, "topology", "read")); // an explicit deny wins
        assert!(rbac.enforce(&dave, "status", "read"));
        let perms = rbac.permissions(&guest);
        assert_eq!(perms.len(), 3);
        assert!(perms.contains(
            &serde_json::json!({"Object": "topology", "Action": "read", "Allowed": true})
        ));
        let e = Rbac::new(&["x, y".into()]).unwrap_err().to_string();
        assert!(e.starts_with("rbac.policy[0]: expected"), "{e}");
    }

    #[test]
    fn requests_map_to_objects_and_actions() {
        let p = |m: Method, path: &str| permission_for(&m, path).map(|(o, a)| format!("{o} {a}"));
        assert_eq!(
            p(Method::POST, "/api/topology").as_deref(),
            Some("topology read")
        );
        assert_eq!(
            p(Method::GET, "/api/capture").as_deref(),
            Some("capture read")
        );
        assert_eq!(
            p(Method::DELETE, "/api/capture/x").as_deref(),
            Some("capture write")
        );
        assert_eq!(
            p(Method::PATCH, "/api/node/x").as_deref(),
            Some("node write")
        );
        assert_eq!(p(Method::POST, "/api/pcap").as_deref(), Some("pcap write"));
        assert_eq!(
            p(Method::GET, "/ws/subscriber").as_deref(),
            Some("websocket /ws/subscriber")
        );
        assert_eq!(p(Method::GET, "/api"), None);
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
