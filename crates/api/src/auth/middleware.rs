//! The authentication middleware and `POST /login`: a request's token comes from the
//! `authtoken` cookie, the `Authorization` header, the `X-Auth-Token` header or the
//! `x-auth-token` query parameter, in that order; the part after a space is kept; for basic
//! authentication it is `base64(user:password)`. Successful requests get the `authtoken` and
//! `permissions` cookies back.

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
