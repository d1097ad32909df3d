//! The authentication middleware, `POST /login` and `POST /logout`: a request's token comes
//! from the `authtoken` cookie, the `Authorization` header, the `X-Auth-Token` header or the
//! `x-auth-token` query parameter, in that order; the part after a space is kept. It is a
//! session token of `/login`, or `base64(user:password)` for basic authentication.
//!
//! A session cookie is `HttpOnly`, `SameSite=Strict`, `Secure` over TLS, and lasts as long as
//! the session. A request authenticated by the cookie alone is what a forged cross-site request
//! looks like, so such a request that changes something must not carry a content type an HTML
//! form or a beacon can send (form, multipart, text, none), and no request (WebSocket
//! handshakes included) may come from a page of another site (`Origin`). Requests with the
//! token in a header (`Authorization`, `X-Auth-Token`: a page cannot add them to another
//! site's requests unasked) are not affected.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use super::rbac::permission_for;
use super::{Auth, AuthError};

/// The token of a request, from the places Skydive looks, in its order.
pub fn request_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    request_token_from(headers, query).map(|(t, _)| t)
}

/// The token of a request and whether it came from the cookie.
fn request_token_from(headers: &HeaderMap, query: Option<&str>) -> Option<(String, bool)> {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("authtoken=").map(str::to_string))
        .filter(|c| !c.is_empty());
    let from_cookie = cookie.is_some();
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
    (!token.is_empty()).then_some((token, from_cookie))
}

/// The `Origin` of a request when it names another site than the one asked (`Host`); `None`
/// without `Origin` (clients that are not browsers) or when it is this server.
fn foreign_origin(req: &Request) -> Option<String> {
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let authority = origin.split_once("://").map(|(_, a)| a);
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(&h) => None,
        _ => Some(origin),
    }
}

/// Whether a request's content type is one a cross-site form or beacon can send without the
/// browser asking first: a form, multipart, text, or none.
fn simple_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let mime = String::from_utf8_lossy(ct.as_bytes())
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(
        mime.as_str(),
        "" | "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    )
}

/// The client's address and whether its connection is TLS.
fn client_of(req: &Request) -> (Option<std::net::IpAddr>, bool) {
    match req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::server::listener::ClientInfo>>()
    {
        Some(c) => (Some(c.0.addr.ip()), c.0.tls),
        None => (None, false),
    }
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

/// Whether a path is served to everyone: the web UI (it has its own login form), `/login` and
/// `/logout`.
fn public(path: &str) -> bool {
    path == "/"
        || path == "/ui"
        || path.starts_with("/ui/")
        || path == "/login"
        || path == "/logout"
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The answer to a failed authentication: 401, 429 with `Retry-After` when slowed, 503 when
/// too many checks wait, 500 when the check could not be made.
fn refuse_auth(e: &AuthError) -> Response {
    match e {
        AuthError::Slowed(s) => {
            let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, &e.to_string());
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(s.retry_after.as_secs().max(1)),
            );
            r
        }
        AuthError::Busy => {
            let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        AuthError::Internal(cause) => {
            tracing::error!("authentication: {cause}");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "authentication failed on the server",
            )
        }
        AuthError::NoCredentials | AuthError::WrongCredentials => {
            refuse(StatusCode::UNAUTHORIZED, &e.to_string())
        }
    }
}

/// The session cookie's attributes: the session's lifetime, `Secure` over TLS.
fn cookie_attributes(max_age: u64, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("; Path=/; Max-Age={max_age}; SameSite=Strict{secure}")
}

/// `authtoken` (when given: `HttpOnly`) and `permissions` (the UI reads it) cookies.
fn auth_cookies(
    resp: &mut Response,
    token: Option<&str>,
    permissions: &[Value],
    max_age: u64,
    tls: bool,
) {
    let attrs = cookie_attributes(max_age, tls);
    let perms = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(permissions).unwrap_or_default());
    let mut cookies = vec![format!("permissions={perms}{attrs}")];
    if let Some(t) = token {
        cookies.push(format!("authtoken={t}{attrs}; HttpOnly"));
    }
    for c in cookies {
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
    let Some((token, from_cookie)) = request_token_from(req.headers(), req.uri().query()) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &AuthError::NoCredentials.to_string(),
        );
    };
    // The cookie alone: a header the browser sends only when the page asks.
    let cookie_only = from_cookie
        && !req.headers().contains_key(header::AUTHORIZATION)
        && !req.headers().contains_key("x-auth-token");
    if cookie_only {
        if let Some(origin) = foreign_origin(&req) {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "a request authenticated by cookie from another site ({origin}) is refused; send the token in a header"
                ),
            );
        }
        // What a cross-site form or beacon can send without the browser asking first.
        let sendable = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
        if sendable && simple_content_type(req.headers()) {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request authenticated by cookie that changes something must be sent as application/json (forms and text are what forged cross-site requests send)",
            );
        }
    }
    let (addr, tls) = client_of(&req);
    let mut user = match backend.check_token_async(addr, &token).await {
        Ok(u) => u,
        Err(e) => return refuse_auth(&e),
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
    let mut req = req;
    if let Some(rbac) = &auth.rbac
        && matches!(path.as_str(), "/ws/publisher" | "/ws/pubsub")
    {
        req.extensions_mut().insert(crate::server::PublishRights {
            any_origin: rbac.enforce(&user, "topology", "publish-any"),
        });
    }
    let mut resp = next.run(req).await;
    auth_cookies(
        &mut resp,
        None,
        &permissions,
        backend.sessions.ttl().as_secs(),
        tls,
    );
    resp
}

/// Most bytes of a login form.
const LOGIN_FORM_LIMIT: usize = 64 * 1024;

/// `POST /login`: a form's `username` and `password` for a session token (in the body and
/// the `authtoken` cookie).
async fn login(State(auth): State<Auth>, req: Request) -> Response {
    if req.method() != Method::POST {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/")
            .body(Body::empty())
            .unwrap_or_default();
    }
    let (addr, tls) = client_of(&req);
    let Ok(body) = axum::body::to_bytes(req.into_body(), LOGIN_FORM_LIMIT).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a login form holds at most {LOGIN_FORM_LIMIT} bytes"),
        );
    };
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
    let (user, fingerprint) = match auth.api.login_async(addr, &username, &password).await {
        Ok(u) => u,
        Err(e) => return refuse_auth(&e),
    };
    // Without authentication the token is not needed, but clients take the cookie's
    // presence for a successful login.
    let api = auth.api.clone();
    let u = user.clone();
    let token = match tokio::task::spawn_blocking(move || api.open_session(&u, &fingerprint)).await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return refuse_auth(&e),
        Err(e) => return refuse_auth(&AuthError::Internal(e.to_string())),
    };
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
    auth_cookies(
        &mut resp,
        Some(&token),
        &permissions,
        auth.api.sessions.ttl().as_secs(),
        tls,
    );
    resp
}

/// `POST /logout`: ends the session of the request's token and clears the cookies.
async fn logout(State(auth): State<Auth>, req: Request) -> Response {
    if req.method() != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "log out with POST /logout");
    }
    let (_, tls) = client_of(&req);
    let Some(token) = request_token(req.headers(), req.uri().query()) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            &AuthError::NoCredentials.to_string(),
        );
    };
    let api = auth.api.clone();
    let ended = match tokio::task::spawn_blocking(move || api.sessions.remove(&token)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return refuse_auth(&AuthError::Internal(e.to_string())),
        Err(e) => return refuse_auth(&AuthError::Internal(e.to_string())),
    };
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        serde_json::json!({"LoggedOut": ended}).to_string(),
    )
        .into_response();
    auth_cookies(&mut resp, Some(""), &[], 0, tls);
    resp
}

/// `/login` and `/logout`.
pub fn routes(auth: Auth) -> Router {
    Router::new()
        .route("/login", axum::routing::any(login))
        .route("/logout", axum::routing::any(logout))
        .with_state(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn form_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
