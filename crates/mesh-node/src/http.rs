//! HTTP endpoints: `/v1/status`, `/v1/members`, `/metrics`, `/healthz`.
//!
//! Handlers only ask the node loop for a snapshot; they decide nothing.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::node::Request;

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<Request>,
    metrics: Arc<Metrics>,
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": {"code": "node_stopping", "message": "the node is shutting down"}}))).into_response()
}

async fn snapshot(state: &AppState) -> Option<crate::status::StatusSnapshot> {
    let (tx, rx) = oneshot::channel();
    state.requests.send(Request::Status(tx)).await.ok()?;
    rx.await.ok()
}

async fn status(State(state): State<AppState>) -> Response {
    match snapshot(&state).await {
        Some(s) => Json(s).into_response(),
        None => unavailable(),
    }
}

async fn members(State(state): State<AppState>) -> Response {
    match snapshot(&state).await {
        Some(s) => {
            Json(serde_json::json!({"node_id": s.node_id, "mode": s.mode, "members": s.members}))
                .into_response()
        }
        None => unavailable(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    // A status request first, so the loop's gauges are fresh as of this scrape.
    let _ = snapshot(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": {"code": "not_found", "message": "no such endpoint; try /v1/status, /v1/members or /metrics"}}))).into_response()
}

pub async fn serve(listener: TcpListener, requests: mpsc::Sender<Request>, metrics: Arc<Metrics>) {
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(AppState { requests, metrics });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
