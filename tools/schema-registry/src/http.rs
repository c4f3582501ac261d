//! The HTTP routes: the Confluent REST endpoints the real clients call.
//!
//! | endpoint | used by |
//! |---|---|
//! | `POST /subjects/{subject}/versions` | Java `AvroConverter` (auto-register), Rust encoder with a supplied schema |
//! | `GET /schemas/ids/{id}` | both deserializers |
//! | `POST /subjects/{subject}` | Java client lookup |
//! | `GET /subjects/{subject}/versions/{version}` | Rust encoder (`latest`), references |
//! | `GET /subjects`, `GET /subjects/{subject}/versions`, `GET /schemas/ids/{id}/versions`, `GET /schemas/ids/{id}/subjects`, `GET /schemas/types` | tools and humans |
//! | `GET /config`, `PUT /config`, `GET /config/{subject}`, `PUT /config/{subject}` | compatibility level (stored, never enforced) |
//! | `GET /` | health |

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::RegistryError;
use crate::schema::AVRO;
use crate::store::{NewSchema, SchemaReference, Store, StoredSchema, SubjectSchema, VersionSpec};

/// The content type Confluent answers with and its clients send.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// Request content types the registry accepts (as Confluent's server does). A request with
/// no content type is accepted too.
const ACCEPTED_CONTENT_TYPES: [&str; 4] = [
    CONTENT_TYPE_V1,
    "application/vnd.schemaregistry+json",
    "application/json",
    "application/octet-stream",
];

/// Largest request body accepted (Debezium schemas of wide tables are a few hundred KiB).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// State shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<Mutex<Store>>,
}

impl AppState {
    /// Wraps a store for the handlers.
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(Mutex::new(store)),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-changed (changes are
        // made on a copy and swapped in), so a poisoned lock is safe to keep using.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Builds the router with every endpoint, the Confluent-style 404/405 fallbacks and request
/// logging.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(health))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", axum::routing::post(lookup))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route("/subjects/{subject}/versions/{version}", get(get_version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(get_by_id))
        .route("/schemas/ids/{id}/schema", get(get_by_id_schema))
        .route("/schemas/ids/{id}/versions", get(get_id_versions))
        .route("/schemas/ids/{id}/subjects", get(get_id_subjects))
        .route("/schemas/types", get(schema_types))
        .route("/config", get(get_config).put(put_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .fallback(|| async { RegistryError::NotFound })
        .method_not_allowed_fallback(|| async { RegistryError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// The I/O error of the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Renders `body` as JSON with the registry's content type.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_V1),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(CONTENT_TYPE_V1),
                )],
                r#"{"error_code":50001,"message":"could not serialize the response"}"#,
            )
                .into_response()
        }
    }
}

fn ok(body: &impl Serialize) -> Response {
    json_response(StatusCode::OK, body)
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let response = next.run(req).await;
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%method, %uri, status = status.as_u16(), "request");
    } else {
        tracing::debug!(%method, %uri, status = status.as_u16(), "request");
    }
    response
}

/// Parses a JSON body after checking its content type.
fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, RegistryError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !ACCEPTED_CONTENT_TYPES
            .iter()
            .any(|a| a.eq_ignore_ascii_case(essence))
        {
            return Err(RegistryError::UnsupportedMediaType(ct.to_owned()));
        }
    }
    serde_json::from_slice(body).map_err(|e| RegistryError::BadRequest(e.to_string()))
}

/// Whether the raw query has `name=true`.
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let mut kv = pair.splitn(2, '=');
        kv.next() == Some(name) && kv.next().is_some_and(|v| v.eq_ignore_ascii_case("true"))
    })
}

fn parse_id(text: &str) -> Result<u32, RegistryError> {
    text.parse::<u32>()
        .map_err(|_| RegistryError::SchemaNotFound(format!("Schema {text} not found")))
}

/// The body of a register or lookup request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: Option<String>,
    schema_type: Option<String>,
    references: Option<Vec<SchemaReference>>,
}

impl SchemaRequest {
    fn into_new_schema(self) -> Result<NewSchema, RegistryError> {
        let schema = self
            .schema
            .ok_or_else(|| RegistryError::InvalidSchema("the body has no schema".to_owned()))?;
        Ok(NewSchema {
            schema,
            schema_type: self.schema_type,
            references: self.references.unwrap_or_default(),
        })
    }
}

/// Adds `schemaType` (omitted for Avro, like Confluent) and `references` (omitted when empty).
fn add_type_and_references(body: &mut serde_json::Map<String, Value>, schema: &StoredSchema) {
    if schema.schema_type != AVRO {
        body.insert("schemaType".to_owned(), json!(schema.schema_type));
    }
    if !schema.references.is_empty() {
        body.insert("references".to_owned(), json!(schema.references));
    }
}

fn subject_schema_body(found: &SubjectSchema) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("subject".to_owned(), json!(found.subject));
    body.insert("version".to_owned(), json!(found.version));
    body.insert("id".to_owned(), json!(found.schema.id));
    add_type_and_references(&mut body, &found.schema);
    body.insert("schema".to_owned(), json!(found.schema.schema));
    Value::Object(body)
}

async fn health() -> Response {
    ok(&json!({}))
}

async fn list_subjects(State(state): State<AppState>) -> Response {
    ok(&state.store().subjects())
}

async fn list_versions(
    State(state): State<AppState>,
    Path(subject): Path<String>,
) -> Result<Response, RegistryError> {
    Ok(ok(&state.store().versions(&subject)?))
}

async fn register(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let new = parse_body::<SchemaRequest>(&headers, &body)?.into_new_schema()?;
    let result = state.store().register(&subject, &new);
    match result {
        Ok(r) => {
            if r.created {
                tracing::info!(%subject, id = r.id, version = r.version, "registered schema");
            } else {
                tracing::debug!(%subject, id = r.id, version = r.version, "schema already registered");
            }
            Ok(ok(&json!({ "id": r.id })))
        }
        Err(e) => {
            tracing::warn!(%subject, error = %e, "registration refused");
            Err(e)
        }
    }
}

async fn lookup(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RegistryError> {
    let new = parse_body::<SchemaRequest>(&headers, &body)?.into_new_schema()?;
    let found = state.store().lookup(&subject, &new)?;
    Ok(ok(&subject_schema_body(&found)))
}

async fn get_version(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = VersionSpec::parse(&version)?;
    let found = state.store().subject_version(&subject, version)?;
    Ok(ok(&subject_schema_body(&found)))
}

async fn get_version_schema(
    State(state): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = VersionSpec::parse(&version)?;
    let found = state.store().subject_version(&subject, version)?;
    Ok(raw_schema(found.schema.schema))
}

fn raw_schema(text: String) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_V1),
        )],
        text,
    )
        .into_response()
}

async fn get_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let store = state.store();
    let schema = store.schema_by_id(id)?;
    let mut body = serde_json::Map::new();
    add_type_and_references(&mut body, schema);
    body.insert("schema".to_owned(), json!(schema.schema));
    if query_flag(query.as_deref(), "fetchMaxId") {
        body.insert("maxId".to_owned(), json!(store.max_id()));
    }
    Ok(ok(&Value::Object(body)))
}

async fn get_by_id_schema(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let text = state.store().schema_by_id(id)?.schema.clone();
    Ok(raw_schema(text))
}

async fn get_id_versions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let versions: Vec<Value> = state
        .store()
        .id_versions(id)?
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(ok(&versions))
}

async fn get_id_subjects(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let id = parse_id(&id)?;
    let mut subjects: Vec<String> = state
        .store()
        .id_versions(id)?
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    subjects.dedup();
    Ok(ok(&subjects))
}

async fn schema_types() -> Response {
    ok(&["AVRO", "JSON", "PROTOBUF"])
}

/// The body of `PUT /config`.
#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
}

async fn get_config(State(state): State<AppState>) -> Response {
    ok(&json!({ "compatibilityLevel": state.store().compatibility() }))
}

async fn put_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RegistryError> {
    set_config(&state, None, &headers, &body)
}

async fn get_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, RegistryError> {
    let store = state.store();
    let level = match store.subject_compatibility(&subject) {
        Some(level) => level,
        None if query_flag(query.as_deref(), "defaultToGlobal") => store.compatibility(),
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(ok(&json!({ "compatibilityLevel": level })))
}

async fn put_subject_config(
    State(state): State<AppState>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, RegistryError> {
    set_config(&state, Some(&subject), &headers, &body)
}

fn set_config(
    state: &AppState,
    subject: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, RegistryError> {
    let request: ConfigRequest = parse_body(headers, body)?;
    let level = request
        .compatibility
        .ok_or_else(|| RegistryError::InvalidCompatibilityLevel("(missing)".to_owned()))?;
    let level = state.store().set_compatibility(subject, &level)?;
    tracing::info!(subject = subject.unwrap_or("(global)"), %level, "compatibility level set (stored only, not enforced)");
    Ok(ok(&json!({ "compatibility": level })))
}
