//! API resources (`/api/noderule`, `/api/edgerule`, `/api/capture`, `/api/alert`, …):
//! the generic CRUD handler of Skydive over the resource store, and a
//! stream of changes that the components acting on resources (rules, captures, alerts)
//! watch, as Skydive's components watched etcd.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use skydive_api::error::{ApiError, ApiResult, json};
use skydive_graph::{Clock, SystemClock};
use skydive_storage::ResourceStore;
use tokio::sync::{Mutex, broadcast};

/// What happened to a resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Created(Value),
    Updated(Value),
    /// Deleted through the API or expired (its TTL ran out); the last value.
    Deleted(Value),
}

/// A change of one resource.
#[derive(Clone, Debug)]
pub struct ResourceChange {
    pub kind: String,
    pub id: String,
    pub change: Change,
}

/// Why a resource operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{0}")]
    Invalid(String),
    #[error("duplicated resource")]
    Duplicate,
    #[error("{title} '{id}' not found")]
    NotFound { title: &'static str, id: String },
    #[error(transparent)]
    Storage(#[from] skydive_storage::StorageError),
    /// The task that reads or writes the store failed.
    #[error("the resource store task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> ApiError {
        match e {
            ResourceError::Invalid(m) => ApiError::BadRequest(m),
            ResourceError::Duplicate => ApiError::Conflict("duplicated resource".into()),
            e @ ResourceError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            e @ (ResourceError::Storage(_) | ResourceError::Task(_)) => {
                ApiError::internal("the resource store failed", e)
            }
        }
    }
}

/// What a resource gets for a field left empty, from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceDefaults {
    /// `flow.default_layer_key_mode`: a capture's `LayerKeyMode`.
    pub layer_key_mode: String,
}

impl Default for ResourceDefaults {
    fn default() -> Self {
        ResourceDefaults {
            layer_key_mode: "L2".into(),
        }
    }
}

/// The resources of the analyzer, in the store, with their change stream.
pub struct Resources {
    store: Arc<dyn ResourceStore>,
    /// What new resources get for fields left empty.
    pub defaults: ResourceDefaults,
    /// What times to live are measured with.
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<ResourceChange>,
    /// Serialises writers, so that duplicate checks and writes are atomic.
    write: Mutex<()>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resources")
    }
}

impl Resources {
    pub fn new(store: Arc<dyn ResourceStore>) -> Arc<Resources> {
        Self::build(store, Arc::new(SystemClock), ResourceDefaults::default())
    }

    /// Resources whose fields left empty get `defaults`.
    pub fn with_defaults(
        store: Arc<dyn ResourceStore>,
        defaults: ResourceDefaults,
    ) -> Arc<Resources> {
        Self::build(store, Arc::new(SystemClock), defaults)
    }

    /// Resources whose times to live run on `clock`.
    pub fn with_clock(store: Arc<dyn ResourceStore>, clock: Arc<dyn Clock>) -> Arc<Resources> {
        Self::build(store, clock, ResourceDefaults::default())
    }

    fn build(
        store: Arc<dyn ResourceStore>,
        clock: Arc<dyn Clock>,
        defaults: ResourceDefaults,
    ) -> Arc<Resources> {
        Arc::new(Resources {
            store,
            defaults,
            clock,
            changes: broadcast::channel(4096).0,
            write: Mutex::new(()),
        })
    }

    /// Changes from now on. A receiver that lags must re-read the resources it watches.
    pub fn subscribe(&self) -> broadcast::Receiver<ResourceChange> {
        self.changes.subscribe()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn ResourceStore) -> skydive_storage::Result<T> + Send + 'static,
    ) -> Result<T, ResourceError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
    }

    /// Every live resource of `kind`, by ID.
    pub async fn list(&self, kind: &str) -> Result<BTreeMap<String, Value>, ResourceError> {
        let kind = kind.to_string();
        let now = self.clock.now_ms();
        self.blocking(move |s| s.list(&kind, now)).await
    }

    /// One resource.
    pub async fn get(&self, kind: &str, id: &str) -> Result<Option<Value>, ResourceError> {
        let (kind, id) = (kind.to_string(), id.to_string());
        let now = self.clock.now_ms();
        self.blocking(move |s| s.get(&kind, &id, now)).await
    }

    /// Stores a resource (created or replaced) and announces it once durable. `ttl_ms` 0
    /// means no expiry.
    pub async fn put(
        &self,
        kind: &str,
        id: &str,
        value: Value,
        ttl_ms: i64,
    ) -> Result<(), ResourceError> {
        let _w = self.write.lock().await;
        self.put_locked(kind, id, value, ttl_ms).await
    }

    async fn put_locked(
        &self,
        kind: &str,
        id: &str,
        value: Value,
        ttl_ms: i64,
    ) -> Result<(), ResourceError> {
        let existed = self.get(kind, id).await?.is_some();
        let expires_at = if ttl_ms > 0 {
            self.clock.now_ms() + ttl_ms
        } else {
            0
        };
        let (k, i, v) = (kind.to_string(), id.to_string(), value.clone());
        self.blocking(move |s| s.put(&k, &i, &v, expires_at))
            .await?;
        let change = if existed {
            Change::Updated(value)
        } else {
            Change::Created(value)
        };
        let _ = self.changes.send(ResourceChange {
            kind: kind.to_string(),
            id: id.to_string(),
            change,
        });
        Ok(())
    }

    /// Deletes a resource; returns its last value, or `None` if there was none.
    pub async fn delete(&self, kind: &str, id: &str) -> Result<Option<Value>, ResourceError> {
        let _w = self.write.lock().await;
        let Some(old) = self.get(kind, id).await? else {
            return Ok(None);
        };
        let (k, i) = (kind.to_string(), id.to_string());
        let now = self.clock.now_ms();
        if !self.blocking(move |s| s.delete(&k, &i, now)).await? {
            return Ok(None);
        }
        let _ = self.changes.send(ResourceChange {
            kind: kind.to_string(),
            id: id.to_string(),
            change: Change::Deleted(old.clone()),
        });
        Ok(Some(old))
    }

    /// Removes expired resources and announces their deletion.
    pub async fn expire(&self) -> Result<usize, ResourceError> {
        let _w = self.write.lock().await;
        let now = self.clock.now_ms();
        let gone = self.blocking(move |s| s.take_expired(now)).await?;
        let n = gone.len();
        for (kind, id, value) in gone {
            tracing::debug!(%kind, %id, "resource expired");
            let _ = self.changes.send(ResourceChange {
                kind,
                id,
                change: Change::Deleted(value),
            });
        }
        Ok(n)
    }

    /// Expires resources every second until the process ends.
    pub fn spawn_expiry(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = me.expire().await {
                    tracing::warn!("expiring resources failed: {e}");
                }
            }
        })
    }
}

/// Why a resource is refused: what is wrong with it, in Skydive's words (a 400 with this
/// message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Invalid {
        Invalid(s)
    }
}

impl std::ops::Deref for Invalid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Invalid {
        Invalid(s.to_string())
    }
}

impl From<skydive_api::schema::SchemaError> for Invalid {
    fn from(e: skydive_api::schema::SchemaError) -> Invalid {
        Invalid(e.to_string())
    }
}

/// A kind of resource served by the generic CRUD handler. The type is what Skydive's Go
/// struct was: decoding drops unknown fields, encoding writes Skydive's field names.
pub trait Resource: Serialize + DeserializeOwned + PartialEq + Send + Sync + 'static {
    /// The path segment and store kind (`noderule`).
    const NAME: &'static str;
    /// The name in messages (`NodeRule 'x' not found`).
    const TITLE: &'static str;
    /// Whether PATCH may change it (otherwise PATCH answers "resource not updatable").
    const UPDATABLE: bool = false;

    fn id(&self) -> &str;
    fn set_id(&mut self, id: String);
    /// Checks the resource (called on create and on every patched version).
    fn validate(&self) -> Result<(), Invalid>;
    /// Whether creating `self` duplicates `existing` (409).
    fn duplicates(&self, _existing: &Self) -> bool {
        false
    }
    /// Fills defaults before a create is validated.
    fn normalize(&mut self, _defaults: &ResourceDefaults) {}
    /// Fills the fields computed on read (a capture's `Count`) from the live graph.
    fn on_read(&mut self, _graph: &skydive_graph::Graph) {}
}

/// Decodes a request body: JSON, or YAML when the content type says so; a 400 with the
/// reason otherwise.
pub fn decode_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> ApiResult<T> {
    decode_body_text(headers, body).map_err(ApiError::BadRequest)
}

fn decode_body_text<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, String> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.starts_with("application/yaml")
        || ctype.starts_with("application/x-yaml")
        || ctype.starts_with("text/yaml")
    {
        let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
        let v = skydive_config::parse_text(text, "request body").map_err(|e| e.to_string())?;
        return serde_json::from_value(v).map_err(|e| e.to_string());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Reads `X-Resource-TTL` (a Go duration) as milliseconds; 0 when absent; a 400 with the
/// reason when it is not a duration.
pub fn resource_ttl(headers: &HeaderMap) -> ApiResult<i64> {
    match headers.get("X-Resource-TTL").map(|v| v.to_str()) {
        None => Ok(0),
        Some(Err(_)) => Err(ApiError::bad_request("invalid X-Resource-TTL header")),
        Some(Ok(v)) => skydive_graph::parse_go_period(v)
            .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
            .map_err(|e| ApiError::bad_request(format!("invalid X-Resource-TTL: {e}"))),
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn decode_stored<T: Resource>(id: &str, v: Value) -> Result<T, ResourceError> {
    serde_json::from_value(v).map_err(|e| {
        ResourceError::Invalid(format!("stored {} '{id}' is unreadable: {e}", T::NAME))
    })
}

/// Creates a resource: validation, duplicate check, a fresh UUID, durable store.
pub async fn create<T: Resource>(
    res: &Resources,
    mut r: T,
    ttl_ms: i64,
) -> Result<T, ResourceError> {
    r.normalize(&res.defaults);
    r.validate().map_err(|e| ResourceError::Invalid(e.0))?;
    let _w = res.write.lock().await;
    for (id, v) in res.list(T::NAME).await? {
        if let Ok(existing) = decode_stored::<T>(&id, v)
            && r.duplicates(&existing)
        {
            return Err(ResourceError::Duplicate);
        }
    }
    r.set_id(uuid::Uuid::new_v4().to_string());
    let id = r.id().to_string();
    res.put_locked(T::NAME, &id, to_json(&r), ttl_ms).await?;
    Ok(r)
}

/// The routes of resource `T`: `GET/POST /api/<name>`, `GET/PATCH/DELETE /api/<name>/{id}`.
pub fn routes<T: Resource>(resources: Arc<Resources>) -> Router {
    routes_reading::<T>(resources, None)
}

/// The routes of a resource whose reads fill fields from the live graph of `hub`.
pub fn routes_reading<T: Resource>(
    resources: Arc<Resources>,
    hub: Option<skydive_hub::HubHandle>,
) -> Router {
    Router::new()
        .route(
            &format!("/api/{}", T::NAME),
            get(list::<T>).post(create_handler::<T>),
        )
        .route(
            &format!("/api/{}/", T::NAME),
            get(list::<T>).post(create_handler::<T>),
        )
        .route(
            &format!("/api/{}/{{id}}", T::NAME),
            get(get_one::<T>).patch(patch::<T>).delete(delete::<T>),
        )
        .with_state(Holder::<T> {
            resources,
            hub,
            kind: PhantomData,
        })
}

struct Holder<T> {
    resources: Arc<Resources>,
    hub: Option<skydive_hub::HubHandle>,
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Holder<T> {
    fn clone(&self) -> Self {
        Holder {
            resources: self.resources.clone(),
            hub: self.hub.clone(),
            kind: PhantomData,
        }
    }
}

impl<T: Resource> Holder<T> {
    fn read(&self, r: &mut T) {
        if let Some(hub) = &self.hub {
            r.on_read(&hub.snapshot().graph);
        }
    }
}

async fn list<T: Resource>(State(h): State<Holder<T>>) -> ApiResult {
    let mut out = serde_json::Map::new();
    for (id, v) in h.resources.list(T::NAME).await? {
        match decode_stored::<T>(&id, v) {
            Ok(mut r) => {
                h.read(&mut r);
                out.insert(id, to_json(&r));
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    json(StatusCode::OK, &out)
}

fn not_found<T: Resource>(id: String) -> ResourceError {
    ResourceError::NotFound {
        title: T::TITLE,
        id,
    }
}

async fn get_one<T: Resource>(State(h): State<Holder<T>>, Path(id): Path<String>) -> ApiResult {
    let stored = h.resources.get(T::NAME, &id).await?;
    let mut r = decode_stored::<T>(&id, stored.ok_or_else(|| not_found::<T>(id.clone()))?)?;
    h.read(&mut r);
    json(StatusCode::OK, &r)
}

async fn create_handler<T: Resource>(
    State(h): State<Holder<T>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let r: T = decode_body(&headers, &body)?;
    let ttl = resource_ttl(&headers)?;
    let r = create(&h.resources, r, ttl).await?;
    json(StatusCode::CREATED, &r)
}

async fn patch<T: Resource>(
    State(h): State<Holder<T>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let _w = h.resources.write.lock().await;
    // (Skydive answered a patch of an unknown resource with a bare 404; this one says what
    // was not found.)
    let current = h.resources.get(T::NAME, &id).await?;
    let old: T = decode_stored(&id, current.ok_or_else(|| not_found::<T>(id.clone()))?)?;
    let patch: json_patch::Patch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("incorrect JSON patch: {e}")))?;
    let mut doc = to_json(&old);
    json_patch::patch(&mut doc, &patch)
        .map_err(|e| ApiError::bad_request(format!("applying JSON patch to resource: {e}")))?;
    let mut new: T = serde_json::from_value(doc)
        .map_err(|e| ApiError::bad_request(format!("applying JSON patch to resource: {e}")))?;
    new.set_id(id.clone());
    new.validate()
        .map_err(|e| ApiError::bad_request(format!("validating patched resource: {e}")))?;
    if new == old {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    if !T::UPDATABLE {
        return Err(ApiError::bad_request(
            "updating resource with patched version: resource not updatable",
        ));
    }
    h.resources
        .put_locked(T::NAME, &id, to_json(&new), 0)
        .await?;
    json(StatusCode::OK, &new)
}

async fn delete<T: Resource>(State(h): State<Holder<T>>, Path(id): Path<String>) -> ApiResult {
    match h.resources.delete(T::NAME, &id).await? {
        Some(_) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "",
        )
            .into_response()),
        None => Err(not_found::<T>(id).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skydive_storage::MemoryResources;
    use skydive_testkit::ManualClock;
    use std::time::Duration;

    #[tokio::test]
    async fn a_resource_expires_when_its_time_to_live_runs_out_and_its_deletion_is_announced() {
        let clock = ManualClock::at(1_000_000);
        let r = Resources::with_clock(Arc::new(MemoryResources::new()), Arc::new(clock.clone()));
        let mut changes = r.subscribe();
        let v = serde_json::json!({"UUID": "c1"});
        r.put("capture", "c1", v.clone(), 1_500).await.unwrap();
        r.put("capture", "c2", v.clone(), 0).await.unwrap();
        assert!(matches!(
            changes.recv().await.unwrap().change,
            Change::Created(_)
        ));
        assert!(matches!(
            changes.recv().await.unwrap().change,
            Change::Created(_)
        ));

        clock.advance(Duration::from_millis(1_499));
        assert_eq!(r.expire().await.unwrap(), 0);
        assert!(r.get("capture", "c1").await.unwrap().is_some());

        clock.advance(Duration::from_millis(1));
        assert!(
            r.get("capture", "c1").await.unwrap().is_none(),
            "gone at its deadline"
        );
        assert_eq!(r.expire().await.unwrap(), 1);
        let c = changes.recv().await.unwrap();
        assert_eq!((c.kind.as_str(), c.id.as_str()), ("capture", "c1"));
        assert_eq!(c.change, Change::Deleted(v));
        assert_eq!(r.list("capture").await.unwrap().len(), 1, "c2 has no TTL");
    }
}
