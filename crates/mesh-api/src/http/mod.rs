//! The HTTP/JSON front end over the [`Service`].
//!
//! Handlers parse the request, call the service, and encode the result; they
//! decide nothing. Every error is `{"error": {"code", "message", ...}}` with a
//! fitting status. Writes accept an `Idempotency-Key` header: a retry with the
//! same key is applied at most once.
//!
//! - status: `/v1/status`, `/v1/members`, `/metrics`, `/healthz`;
//! - [`kv`]: `/v1/kv/{namespace}` and `/v1/kv/{namespace}/{key}`;
//! - [`coord`]: `/v1/agents`, `/v1/proposals`, `/v1/barriers`;
//! - `/v1/tasks`: see [`tasks`];
//! - [`messages`]: `/v1/publish`, `/v1/messages`, `/v1/events` (SSE), `/v1/messaging`;
//! - `/v1/openapi.json`: the OpenAPI document of all of it ([`openapi`]);
//! - `/`: the dashboard, one self-contained page (`dashboard.html`).

mod coord;
mod kv;
pub mod messages;
pub mod openapi;
mod pbft;
pub mod tasks;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use mesh_node::service::{Service, ServiceError};
use mesh_state::RequestId;

/// Largest request body: a value at its limit plus room for the envelope.
const MAX_BODY_BYTES: usize = mesh_state::limits::MAX_VALUE_BYTES + 64 * 1024;

/// A service error as an HTTP response.
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut body = serde_json::json!({"code": e.code(), "message": e.to_string()});
        if let serde_json::Value::Object(extra) = e.details() {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        (status, Json(serde_json::json!({ "error": body }))).into_response()
    }
}

/// What a handler returns: its response, or an error rendered as one.
pub type ApiResult = Result<Response, ApiError>;

/// Parses a JSON body, with a clear error for malformed input.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(ServiceError::bad(
            "malformed_json",
            format!("request body is not valid JSON for this endpoint: {e}"),
        ))
    })
}

/// Parses the query string into `T`, with a clear error.
pub fn parse_query<T: DeserializeOwned + Default>(q: Option<&str>) -> Result<T, ApiError> {
    match q {
        None | Some("") => Ok(T::default()),
        Some(q) => query_from_str(q),
    }
}

fn query_from_str<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError(ServiceError::bad("bad_query", "malformed query string")))?,
    )
    .map(|axum::extract::Query(t)| t)
    .map_err(|e| ApiError(ServiceError::bad("bad_query", e.body_text())))
}

/// The `Idempotency-Key` header, if any.
pub fn request_id(headers: &HeaderMap) -> Result<Option<RequestId>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError(ServiceError::bad(
                    "bad_idempotency_key",
                    "Idempotency-Key must be visible ASCII",
                ))
            })?;
            if s.is_empty() || s.len() > mesh_state::limits::MAX_REQUEST_ID_BYTES {
                return Err(ApiError(ServiceError::bad(
                    "bad_idempotency_key",
                    format!(
                        "Idempotency-Key must be 1 to {} bytes",
                        mesh_state::limits::MAX_REQUEST_ID_BYTES
                    ),
                )));
            }
            Ok(Some(RequestId(format!("http:{s}"))))
        }
    }
}

/// `?stale=&wait=` of reads that may long-poll.
#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadQuery {
    pub stale: Option<bool>,
    /// Seconds to wait for the awaited change (long-poll).
    pub wait: Option<f64>,
}

impl ReadQuery {
    pub fn wait(&self) -> Result<Option<std::time::Duration>, ApiError> {
        wait_secs(self.wait)
    }
}

/// A number of seconds to wait, checked.
pub fn wait_secs(w: Option<f64>) -> Result<Option<std::time::Duration>, ApiError> {
    match w {
        None => Ok(None),
        Some(w) if w.is_finite() && w >= 0.0 => Ok(Some(std::time::Duration::from_secs_f64(w))),
        Some(w) => Err(ApiError(ServiceError::bad(
            "bad_wait",
            format!("wait {w} is not a number of seconds >= 0"),
        ))),
    }
}

fn stopping() -> ApiError {
    ApiError(ServiceError::Stopped("shutting down".into()))
}

async fn status(State(svc): State<Service>) -> ApiResult {
    Ok(Json(svc.status().await.ok_or_else(stopping)?).into_response())
}

async fn members(State(svc): State<Service>) -> ApiResult {
    let s = svc.membership_status().await.ok_or_else(stopping)?;
    Ok(
        Json(serde_json::json!({"node_id": s.node_id, "mode": s.mode, "members": s.members}))
            .into_response(),
    )
}

#[derive(Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Only the samples of the last this many seconds (default: all retained, 24 h).
    seconds: Option<u64>,
    /// Also take a sample now and append it (marked `"current": true`).
    current: Option<bool>,
}

async fn history(
    State(svc): State<Service>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> ApiResult {
    let q: HistoryQuery = parse_query(q.as_deref())?;
    let mut samples: Vec<serde_json::Value> = svc
        .history(q.seconds)
        .into_iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect();
    if q.current == Some(true) {
        let mut now = serde_json::to_value(svc.sample_now().await).unwrap_or_default();
        now["current"] = serde_json::json!(true);
        samples.push(now);
    }
    Ok(Json(serde_json::json!({
        "node": svc.node_name(),
        "interval_secs": mesh_node::service::history::SAMPLE_EVERY.as_secs(),
        "retained_max": mesh_node::service::history::KEEP,
        "samples": samples,
    }))
    .into_response())
}

async fn metrics_text(State(svc): State<Service>) -> Response {
    // A status request first, so the loop's gauges are fresh as of this scrape.
    let _ = svc.membership_status().await;
    svc.sample_consensus_metrics();
    svc.sample_task_metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        svc.metrics().encode(),
    )
        .into_response()
}

/// `ok`, or 503 with the reason when the replicated log's engine has stopped.
async fn healthz(State(svc): State<Service>) -> Response {
    match svc.engine_health() {
        Ok(()) => "ok".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": {"code": "engine_stopped", "message": format!("the replicated log stopped: {why}")}})),
        )
            .into_response(),
    }
}

/// The dashboard: one self-contained page (no asset from the internet) that
/// reads this API and its event stream; it holds no data itself, so it is
/// served without the token (the page asks for it when the API needs it).
async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError(ServiceError::bad(
        "no_such_endpoint",
        "no such endpoint; see /v1/status, /v1/members, /v1/kv, /v1/agents, /v1/proposals, /v1/barriers, /v1/tasks, /v1/publish, /v1/messages, /v1/events, /v1/pbft/config, /v1/openapi.json, /metrics",
    ))
}

/// What [`router`] serves itself, for the OpenAPI document.
fn operations() -> Vec<openapi::Op> {
    use openapi::Op;
    vec![
        Op::get(
            "/v1/status",
            "this node, the membership view, consensus, tasks",
        ),
        Op::get(
            "/v1/members",
            "the membership view with each member's load and round trip",
        ),
        Op::get("/metrics", "OpenMetrics text").text(),
        Op::get(
            "/v1/metrics/history",
            "retained samples of this node's measured figures (every 5 s, 24 h)",
        )
        .query::<HistoryQuery>(),
        Op::get("/healthz", "`ok`, or 503 when the replicated log stopped")
            .text()
            .open(),
        Op::get("/v1/openapi.json", "this document"),
        Op::get(
            "/",
            "the dashboard (HTML; live graph, charts, tasks, proposals, events)",
        )
        .text()
        .open(),
    ]
}

async fn openapi_json() -> Response {
    // Built once: the routes and schemas do not change while the node runs.
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(openapi::document)).into_response()
}

/// Byte strings equal, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With a token set: every request but `GET /healthz` and the dashboard page carries
/// `Authorization: Bearer <token>`, or gets 401 `unauthorized` (counted).
async fn require_token(
    State((svc, token)): State<(Service, std::sync::Arc<str>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() == axum::http::Method::GET && matches!(req.uri().path(), "/healthz" | "/") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|t| same_secret(t.trim().as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    svc.metrics().http_unauthorized.inc();
    let message = if given.is_some() {
        "wrong bearer token"
    } else {
        "this node requires `Authorization: Bearer <token>` (the token of `mesh up --http-token`; \
         clients read it from MESH_HTTP_TOKEN)"
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"error": {"code": "unauthorized", "message": message}})),
    )
        .into_response()
}

/// The router, for tests and [`serve`]; `token`: the bearer token every
/// request must carry, if any.
pub fn router(svc: Service, token: Option<&str>) -> Router {
    let routes = Router::new()
        .route("/", get(dashboard))
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics_text))
        .route("/v1/metrics/history", get(history))
        .route("/healthz", get(healthz))
        .route("/v1/openapi.json", get(openapi_json))
        .merge(kv::routes())
        .merge(coord::routes())
        .merge(tasks::routes())
        .merge(messages::routes())
        .merge(pbft::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, not_found().await) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let routes = match token {
        Some(t) => routes.layer(axum::middleware::from_fn_with_state(
            (svc.clone(), std::sync::Arc::<str>::from(t)),
            require_token,
        )),
        None => routes,
    };
    routes.with_state(svc)
}

/// Serves the HTTP API (and the dashboard) on `listener` until the server
/// fails; with `token`, every request but `GET /healthz` and the dashboard
/// page must carry it.
pub async fn serve(listener: TcpListener, svc: Service, token: Option<String>) {
    use axum::serve::ListenerExt;
    // Replies go out at once, not held back by Nagle's algorithm.
    let listener = listener.tap_io(|s| {
        let _ = s.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, router(svc, token.as_deref())).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
