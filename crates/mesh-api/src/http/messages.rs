//! Messaging over HTTP: `POST /v1/publish`, `POST /v1/messages` (direct, with
//! a receipt), `GET /v1/messages/{id}` (the receipt later), `GET /v1/events`
//! (server-sent events of the channels asked for, system channels included)
//! and `GET /v1/messaging` (queues and counters).
//!
//! A message is any JSON value: a string travels as its UTF-8 bytes, anything
//! else as its JSON text. A subscriber gets `message` (the text) and, when the
//! text is a JSON object or array, `data` (the parsed value).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, parse_json, parse_query};
use mesh_node::messaging::SubEvent;
use mesh_node::service::{Service, ServiceError};
use mesh_node::{Message, Recipient};

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(receipt))
        .route("/v1/events", get(events))
        .route("/v1/messaging", get(status))
}

fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError(ServiceError::bad(code, msg))
}

/// The bytes a JSON message travels as.
pub fn payload_of(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// A delivered message as JSON.
pub fn message_json(m: &Message) -> Value {
    let mut out = json!({
        "id": m.id.to_string(),
        "channel": m.channel,
        "from": m.from,
        "origin": m.id.origin,
        "sent_unix_ms": m.sent_unix_ms,
    });
    if let Some(to) = &m.to {
        out["to"] = json!(recipient_str(to));
    }
    match std::str::from_utf8(&m.payload) {
        Ok(text) => {
            out["message"] = json!(text);
            if text.starts_with(['{', '['])
                && let Ok(v) = serde_json::from_str::<Value>(text)
            {
                out["data"] = v;
            }
        }
        Err(_) => {
            use base64::Engine as _;
            out["message_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&m.payload));
        }
    }
    out
}

/// `agent:<id>`, `node:<name>` or `all`.
pub fn parse_recipient(s: &str) -> Result<Recipient, ApiError> {
    let bad_to = || {
        bad(
            "bad_recipient",
            format!("recipient '{s}' is not 'agent:<id>', 'node:<name>' or 'all'"),
        )
    };
    match s.split_once(':') {
        _ if s == "all" => Ok(Recipient::All),
        Some(("agent", id)) if !id.is_empty() => Ok(Recipient::Agent(id.to_string())),
        Some(("node", n)) if !n.is_empty() => Ok(Recipient::Node(n.to_string())),
        _ => Err(bad_to()),
    }
}

/// A recipient as the API writes it: `agent:<id>`, `node:<name>` or `all`.
pub fn recipient_str(r: &Recipient) -> String {
    match r {
        Recipient::Agent(a) => format!("agent:{a}"),
        Recipient::Node(n) => format!("node:{n}"),
        Recipient::All => "all".into(),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// The channel (not `mesh.*` or `inbox.*`, which are the mesh's own).
    channel: String,
    /// Any JSON value (a string travels as its text).
    message: Value,
    /// Who publishes, as subscribers will see it (default: `http`).
    from: Option<String>,
}

async fn publish(State(svc): State<Service>, body: Bytes) -> ApiResult {
    let b: PublishBody = parse_json(&body)?;
    let from = b.from.as_deref().unwrap_or("http");
    let r = svc
        .publish(from, &b.channel, payload_of(&b.message))
        .await?;
    Ok(Json(json!({
        "id": r.id.as_ref().map(|i| i.to_string()),
        "receivers": r.receivers(),
        "local": r.local,
        "nodes": r.nodes,
        "missing": r.missing,
        "unreachable": r.unreachable,
    }))
    .into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// `agent:<id>`, `node:<name>` or `all`.
    to: String,
    message: Value,
    from: Option<String>,
    /// How long it may wait for an absent recipient (default 60000).
    ttl_ms: Option<u64>,
}

/// A receipt as JSON.
pub fn receipt_json(op: u64, r: &mesh_node::DirectReport) -> Value {
    json!({
        "id": op,
        "message_id": r.id.to_string(),
        "to": recipient_str(&r.to),
        "nodes": r.nodes,
        "listeners": r.listeners(),
        "final": r.is_final(),
    })
}

async fn send(State(svc): State<Service>, body: Bytes) -> ApiResult {
    let b: SendBody = parse_json(&body)?;
    let to = parse_recipient(&b.to)?;
    let from = b.from.as_deref().unwrap_or("http");
    let (op, r) = svc
        .send_message(from, to, payload_of(&b.message), b.ttl_ms)
        .await?;
    Ok((axum::http::StatusCode::CREATED, Json(receipt_json(op, &r))).into_response())
}

async fn receipt(State(svc): State<Service>, Path(id): Path<String>) -> ApiResult {
    let op: u64 = id.parse().map_err(|_| {
        bad(
            "bad_id",
            format!("message receipt id '{id}' is not a number"),
        )
    })?;
    let r = svc.message_receipt(op).await?;
    Ok(Json(receipt_json(op, &r)).into_response())
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Comma-separated channel patterns (`*`, `?`, `[..]`); default `mesh.*`
    /// (every system channel). An agent's inbox: `inbox.agent.<id>`.
    channels: Option<String>,
}

/// Splits `a,b,c` into patterns (empty parts refused).
pub fn patterns_of(s: &str) -> Result<Vec<String>, ApiError> {
    let parts: Vec<String> = s.split(',').map(|p| p.trim().to_string()).collect();
    if parts.iter().any(String::is_empty) {
        return Err(bad(
            "bad_channel",
            "channels is a comma-separated list of non-empty patterns",
        ));
    }
    if parts.len() > 64 {
        return Err(bad("bad_channel", "at most 64 patterns per subscription"));
    }
    Ok(parts)
}

async fn events(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    let q: EventsQuery = parse_query(q.as_deref())?;
    let patterns = patterns_of(q.channels.as_deref().unwrap_or("mesh.*"))?;
    let sub = svc.subscribe_channels(patterns.clone()).await?;
    let hello = SseEvent::default()
        .event("subscribed")
        .json_data(json!({"node": svc.node_name(), "channels": patterns, "subscription": sub.id}))
        .unwrap_or_default();
    // The subscription lives inside the stream: when the client goes away,
    // axum drops the stream and the subscription with it.
    let first = futures_util::stream::once(async move { Ok(hello) });
    let rest = futures_util::stream::unfold(sub, |mut sub| async move {
        let ev = match sub.rx.recv().await? {
            SubEvent::Message(m) => SseEvent::default()
                .event("message")
                .json_data(message_json(&m))
                .unwrap_or_default(),
            SubEvent::Lagged(n) => SseEvent::default()
                .event("lagged")
                .json_data(json!({"missed": n}))
                .unwrap_or_default(),
        };
        Some((Ok::<_, std::convert::Infallible>(ev), sub))
    });
    use futures_util::StreamExt as _;
    Ok(Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn status(State(svc): State<Service>) -> ApiResult {
    Ok(Json(svc.messaging_status().await?).into_response())
}

/// What [`routes`] serves, for the OpenAPI document.
pub(super) fn operations() -> Vec<super::openapi::Op> {
    use super::openapi::Op;
    vec![
        Op::post(
            "/v1/publish",
            "publish on a channel to subscribers on every node; returns how many got it",
        )
        .body::<PublishBody>(),
        Op::post(
            "/v1/messages",
            "send a direct message to an agent, a node or all; returns its receipt",
        )
        .body::<SendBody>()
        .created(),
        Op::get(
            "/v1/messages/{id}",
            "the receipt of a direct message sent through this node",
        ),
        Op::get(
            "/v1/events",
            "server-sent events of the channels asked for (system channels mesh.*, inboxes, any pattern)",
        )
        .query::<EventsQuery>()
        .text(),
        Op::get(
            "/v1/messaging",
            "messaging counters, per-peer queues, subscriptions",
        ),
    ]
}
