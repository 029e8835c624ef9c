//! `/v1/tasks` over HTTP.
//!
//! - `POST /v1/tasks`: one task object, an array of them, or `{"tasks": [...]}`
//!   (all or none). A task: `{"id"?, "payload"?: any JSON | "payload_text"?:
//!   string | "payload_base64"?: string, "caps"?: ["rust", "gpu=3"] (name or
//!   name=weight), "min_score"?, "priority"?: low|medium|high|critical, "deps"?:
//!   [ids], "timeout_secs"?, "retries"?, "idempotency_key"?, "strategy"?:
//!   capability|hash|auction|steal, "zone"?, "queue"?}` → `201 {"tasks": [{"id",
//!   "existing"}]}`.
//! - `GET /v1/tasks?state=&agent=&limit=&stale=`; `GET /v1/tasks/{id}?wait=&stale=`
//!   (`wait`: seconds to long-poll until it ended).
//! - `POST /v1/tasks/claim` `{"agent", "max"?: 1, "lease_ms"?, "wait"?: seconds,
//!   "since"?: cursor}` → `{"tasks": [...], "cursor"}`.
//! - `POST /v1/tasks/renew` `{"agent", "tasks": [ids]}` → per task the new lease
//!   end or an error.
//! - `POST /v1/tasks/{id}/complete` `{"agent", "attempt", "result"? | "result_text"?
//!   | "result_base64"?}`; `POST /v1/tasks/{id}/fail` `{"agent", "attempt",
//!   "reason", "retryable"?: true}`; `POST /v1/tasks/finish` `{"agent",
//!   "outcomes": [{"id", "attempt", "ok", "result_base64"?, "reason"?,
//!   "retryable"?}], "then_claim"?: {"max", "lease_ms"?, "wait"?, "since"?}}`
//!   (batches; `since` is the cursor of the previous claim, so tasks started
//!   for the agent while its claim was open come back too).
//! - `POST /v1/tasks/{id}/cancel` `{"reason"?}`; `POST /v1/tasks/{id}/bids`
//!   `{"agent", "resources": 0..1}`.
//! - `GET /v1/tasks/settings`, `PUT /v1/tasks/settings` `{"strategy"?,
//!   "hash_replicas"?: 1..7}`: the mesh's default routing strategy and the ring
//!   replicas of `hash` tasks, replicated like everything else.
//! - `GET /v1/tasks/events?task=&agent=&state=`: a server-sent event stream of
//!   task transitions as this node applies them (`event: task`, data `{"id",
//!   "state", "agent", "attempt", "reason"}`; `event: lagged` with the number
//!   of events skipped when the client reads too slowly).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult, ReadQuery, parse_json, parse_query, request_id, wait_secs};
use mesh_node::service::tasks::{ClaimParams, TaskFilter};
use mesh_node::service::{Service, ServiceError};
use mesh_state::StateError;
use mesh_state::tasks::{Need, Outcome, Payload, Priority, Route, TaskSpec, TaskState};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskBody {
    pub id: Option<String>,
    pub payload: Option<serde_json::Value>,
    pub payload_text: Option<String>,
    pub payload_base64: Option<String>,
    #[serde(default)]
    pub caps: Vec<String>,
    pub min_score: Option<f64>,
    pub priority: Option<String>,
    #[serde(default)]
    pub deps: Vec<String>,
    pub timeout_secs: Option<f64>,
    pub retries: Option<u32>,
    pub idempotency_key: Option<String>,
    pub strategy: Option<String>,
    pub zone: Option<String>,
    pub queue: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum SubmitBody {
    Wrapped { tasks: Vec<TaskBody> },
    Many(Vec<TaskBody>),
    One(Box<TaskBody>),
}

fn bad(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError(ServiceError::bad(code, msg))
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad("bad_base64", format!("{what} is not valid base64: {e}")))
}

/// A task body as a spec (checked again by the state machine).
pub(crate) fn spec_of(b: TaskBody) -> Result<TaskSpec, ApiError> {
    let given = [
        b.payload.is_some(),
        b.payload_text.is_some(),
        b.payload_base64.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given > 1 {
        return Err(bad(
            "bad_payload",
            "give one of payload, payload_text and payload_base64",
        ));
    }
    let payload = match (b.payload, b.payload_text, b.payload_base64) {
        (Some(v), _, _) => Payload::Json(v.to_string()),
        (_, Some(t), _) => Payload::Bytes(t.into_bytes()),
        (_, _, Some(s)) => Payload::Bytes(b64(&s, "payload_base64")?),
        _ => Payload::Bytes(Vec::new()),
    };
    let needs = b
        .caps
        .iter()
        .map(|c| match c.split_once('=') {
            None => Ok(Need {
                name: c.clone(),
                weight: 1,
            }),
            Some((name, w)) => w
                .parse::<u32>()
                .map(|weight| Need {
                    name: name.to_string(),
                    weight,
                })
                .map_err(|_| {
                    bad(
                        "bad_caps",
                        format!("capability '{c}': the weight after '=' must be a whole number"),
                    )
                }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let priority = match b.priority.as_deref() {
        None => Priority::Medium,
        Some(p) => p.parse().map_err(|e: String| bad("bad_priority", e))?,
    };
    let route = match b.strategy.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<Route>().map_err(|e| bad("bad_strategy", e))?),
    };
    let timeout_ms = match b.timeout_secs {
        None => None,
        Some(t) if t.is_finite() && t > 0.0 => Some((t * 1000.0).round().max(1.0) as u64),
        Some(t) => return Err(bad("bad_timeout", format!("timeout_secs {t} must be > 0"))),
    };
    Ok(TaskSpec {
        id: b.id,
        payload,
        needs,
        min_score: b.min_score,
        priority,
        deps: b.deps,
        timeout_ms,
        retries: b.retries,
        idempotency_key: b.idempotency_key,
        route,
        zone: b.zone,
        queue: b.queue,
    })
}

async fn submit(State(svc): State<Service>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let b: SubmitBody = parse_json(&body)?;
    let bodies = match b {
        SubmitBody::Wrapped { tasks } | SubmitBody::Many(tasks) => tasks,
        SubmitBody::One(t) => vec![*t],
    };
    let specs = bodies
        .into_iter()
        .map(spec_of)
        .collect::<Result<Vec<_>, _>>()?;
    let ids = svc.submit_tasks(specs, request_id(&headers)?).await?;
    let tasks = ids
        .into_iter()
        .map(|(id, existing)| Submitted { id, existing })
        .collect();
    Ok((StatusCode::CREATED, Json(SubmitReply { tasks })).into_response())
}

// Replies of the busiest endpoints are typed, not built as `serde_json::Value`
// trees: a batch of hundreds of tasks is written straight out.

#[derive(Serialize)]
struct Submitted {
    id: String,
    existing: bool,
}

#[derive(Serialize)]
struct SubmitReply {
    tasks: Vec<Submitted>,
}

#[derive(Serialize)]
struct Accepted {
    id: String,
    accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct FinishReply {
    outcomes: Vec<Accepted>,
    claimed: mesh_node::service::tasks::ClaimView,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    agent: Option<String>,
    limit: Option<usize>,
    stale: Option<bool>,
}

async fn list(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ListQuery = parse_query(q.as_deref())?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<TaskState>().map_err(|e| bad("bad_state", e))?),
    };
    let f = TaskFilter {
        state,
        agent: q.agent,
        limit: q.limit,
    };
    let tasks = svc.tasks(f, q.stale.unwrap_or(false)).await?;
    Ok(Json(serde_json::json!({ "tasks": tasks })).into_response())
}

async fn show(
    State(svc): State<Service>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    let t = svc.task(&id, q.wait()?, q.stale.unwrap_or(false)).await?;
    Ok(Json(t).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    agent: String,
    max: Option<u32>,
    lease_ms: Option<u64>,
    wait: Option<f64>,
    since: Option<u64>,
}

async fn claim(State(svc): State<Service>, body: Bytes) -> ApiResult {
    let b: ClaimBody = parse_json(&body)?;
    let v = svc
        .claim_tasks(ClaimParams {
            agent: b.agent,
            max: b.max.unwrap_or(1),
            lease_ms: b.lease_ms,
            wait: wait_secs(b.wait)?,
            since: b.since.unwrap_or(0),
        })
        .await?;
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    agent: String,
    tasks: Vec<String>,
}

fn error_json(e: &StateError) -> serde_json::Value {
    let se = ServiceError::State(e.clone());
    serde_json::json!({"code": se.code(), "message": se.to_string()})
}

async fn renew(State(svc): State<Service>, body: Bytes) -> ApiResult {
    let b: RenewBody = parse_json(&body)?;
    let ids = b.tasks.clone();
    let r = svc.renew_tasks(&b.agent, b.tasks).await?;
    let leases: Vec<serde_json::Value> = ids
        .iter()
        .zip(r)
        .map(|(id, r)| match r {
            Ok(until) => serde_json::json!({"id": id, "lease_until_ms": until}),
            Err(e) => serde_json::json!({"id": id, "error": error_json(&e)}),
        })
        .collect();
    Ok(Json(serde_json::json!({ "leases": leases })).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    agent: String,
    attempt: u32,
    result: Option<serde_json::Value>,
    result_text: Option<String>,
    result_base64: Option<String>,
}

fn result_bytes(
    json: Option<serde_json::Value>,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Vec<u8>, ApiError> {
    match (json, text, base64) {
        (Some(v), None, None) => Ok(v.to_string().into_bytes()),
        (None, Some(t), None) => Ok(t.into_bytes()),
        (None, None, Some(s)) => b64(&s, "result_base64"),
        (None, None, None) => Ok(Vec::new()),
        _ => Err(bad(
            "bad_result",
            "give one of result, result_text and result_base64",
        )),
    }
}

async fn complete(
    State(svc): State<Service>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b: CompleteBody = parse_json(&body)?;
    let result = result_bytes(b.result, b.result_text, b.result_base64)?;
    let o = Outcome {
        id: id.clone(),
        attempt: b.attempt,
        result: Ok(result),
        retryable: false,
    };
    svc.finish_task(&b.agent, o, request_id(&headers)?).await?;
    Ok(Json(svc.task(&id, None, true).await?).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FailBody {
    agent: String,
    attempt: u32,
    reason: String,
    retryable: Option<bool>,
}

async fn fail(
    State(svc): State<Service>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b: FailBody = parse_json(&body)?;
    let o = Outcome {
        id: id.clone(),
        attempt: b.attempt,
        result: Err(b.reason),
        retryable: b.retryable.unwrap_or(true),
    };
    svc.finish_task(&b.agent, o, request_id(&headers)?).await?;
    Ok(Json(svc.task(&id, None, true).await?).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct OutcomeBody {
    id: String,
    attempt: u32,
    ok: bool,
    result: Option<serde_json::Value>,
    result_text: Option<String>,
    result_base64: Option<String>,
    reason: Option<String>,
    retryable: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ThenClaim {
    max: u32,
    lease_ms: Option<u64>,
    wait: Option<f64>,
    since: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FinishBody {
    agent: String,
    outcomes: Vec<OutcomeBody>,
    then_claim: Option<ThenClaim>,
}

async fn finish(State(svc): State<Service>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let b: FinishBody = parse_json(&body)?;
    let ids: Vec<String> = b.outcomes.iter().map(|o| o.id.clone()).collect();
    let outcomes = b
        .outcomes
        .into_iter()
        .map(|o| {
            let result = if o.ok {
                Ok(result_bytes(o.result, o.result_text, o.result_base64)?)
            } else {
                Err(o.reason.unwrap_or_else(|| "failed".into()))
            };
            Ok(Outcome {
                id: o.id,
                attempt: o.attempt,
                result,
                retryable: o.retryable.unwrap_or(true),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let then = match b.then_claim {
        None => None,
        Some(t) => {
            let wait = wait_secs(t.wait)?.unwrap_or_default();
            Some(mesh_state::tasks::ThenClaim {
                max: t.max,
                lease_ms: t.lease_ms.unwrap_or(mesh_state::tasks::DEFAULT_LEASE_MS),
                wait_ms: wait.as_millis() as u64,
                since: t.since.unwrap_or(0),
            })
        }
    };
    let (results, claimed) = svc
        .finish_tasks(&b.agent, outcomes, then, request_id(&headers)?)
        .await?;
    let outcomes = ids
        .into_iter()
        .zip(results)
        .map(|(id, r)| Accepted {
            id,
            accepted: r.is_ok(),
            error: r.err().map(|e| error_json(&e)),
        })
        .collect();
    Ok(Json(FinishReply { outcomes, claimed }).into_response())
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

async fn cancel(State(svc): State<Service>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let b: CancelBody = if body.is_empty() {
        CancelBody::default()
    } else {
        parse_json(&body)?
    };
    let ids = svc
        .cancel_task(&id, b.reason.as_deref().unwrap_or("cancelled by a client"))
        .await?;
    Ok(Json(serde_json::json!({ "cancelled": ids })).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BidBody {
    agent: String,
    resources: f64,
}

async fn bid(State(svc): State<Service>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let b: BidBody = parse_json(&body)?;
    svc.bid_task(&id, &b.agent, b.resources).await?;
    Ok(Json(serde_json::json!({"bid": true})).into_response())
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    task: Option<String>,
    agent: Option<String>,
    state: Option<String>,
}

async fn events(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use mesh_state::Event;
    use tokio::sync::broadcast::error::RecvError;
    let q: EventsQuery = parse_query(q.as_deref())?;
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<TaskState>().map_err(|e| bad("bad_state", e))?),
    };
    let rx = svc.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| {
        let (task, agent) = (q.task.clone(), q.agent.clone());
        async move {
            loop {
                let ev = match rx.recv().await {
                    Ok((_, Event::Task(t)))
                        if task.as_ref().is_none_or(|x| *x == t.id)
                            && agent.as_ref().is_none_or(|a| t.agent.as_ref() == Some(a))
                            && state.is_none_or(|s| s == t.state) =>
                    {
                        SseEvent::default()
                            .event("task")
                            .json_data(&t)
                            .unwrap_or_else(|_| SseEvent::default().event("task"))
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => {
                        SseEvent::default().event("lagged").data(n.to_string())
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<_, std::convert::Infallible>(ev), rx));
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn rebalance(State(svc): State<Service>) -> ApiResult {
    Ok(Json(svc.rebalance_now().await?).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    strategy: Option<String>,
    hash_replicas: Option<u32>,
}

async fn get_settings(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    Ok(Json(svc.task_settings(q.stale.unwrap_or(false)).await?).into_response())
}

async fn put_settings(State(svc): State<Service>, body: Bytes) -> ApiResult {
    let b: SettingsBody = parse_json(&body)?;
    let route = match b.strategy.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<Route>().map_err(|e| bad("bad_strategy", e))?),
    };
    Ok(Json(svc.configure_tasks(route, b.hash_replicas).await?).into_response())
}

/// What [`routes`] serves, for the OpenAPI document.
pub(super) fn operations() -> Vec<super::openapi::Op> {
    use super::openapi::Op;
    vec![
        Op::post(
            "/v1/tasks",
            "submit one task, a list, or {\"tasks\": [...]} (all or none)",
        )
        .body::<SubmitBody>()
        .created(),
        Op::get("/v1/tasks", "list tasks (by state, agent)").query::<ListQuery>(),
        Op::get(
            "/v1/tasks/events",
            "server-sent events: every task state change",
        )
        .query::<EventsQuery>()
        .text(),
        Op::post(
            "/v1/tasks/rebalance",
            "one rebalancing round now: what moved, and each peer's health",
        ),
        Op::get(
            "/v1/tasks/settings",
            "the default routing strategy and hash replicas",
        )
        .query::<ReadQuery>(),
        Op::put(
            "/v1/tasks/settings",
            "set the default routing strategy or hash replicas",
        )
        .body::<SettingsBody>(),
        Op::post(
            "/v1/tasks/claim",
            "claim up to `max` tasks under a lease, waiting up to `wait` s",
        )
        .body::<ClaimBody>(),
        Op::post(
            "/v1/tasks/renew",
            "renew the leases of running tasks (the heartbeat)",
        )
        .body::<RenewBody>(),
        Op::post(
            "/v1/tasks/finish",
            "report outcomes, and claim more in the same command",
        )
        .body::<FinishBody>(),
        Op::get(
            "/v1/tasks/{id}",
            "one task with its attempts and history (`wait` for the end)",
        )
        .query::<ReadQuery>(),
        Op::post(
            "/v1/tasks/{id}/complete",
            "complete a task one holds, with its result",
        )
        .body::<CompleteBody>(),
        Op::post(
            "/v1/tasks/{id}/fail",
            "report a failed attempt (retried while the budget lasts)",
        )
        .body::<FailBody>(),
        Op::post(
            "/v1/tasks/{id}/cancel",
            "cancel a task and what depends on it",
        )
        .body::<CancelBody>(),
        Op::post("/v1/tasks/{id}/bids", "bid in a task's open auction").body::<BidBody>(),
    ]
}

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/v1/tasks", post(submit).get(list))
        .route("/v1/tasks/events", get(events))
        .route("/v1/tasks/settings", get(get_settings).put(put_settings))
        .route("/v1/tasks/claim", post(claim))
        .route("/v1/tasks/rebalance", post(rebalance))
        .route("/v1/tasks/renew", post(renew))
        .route("/v1/tasks/finish", post(finish))
        .route("/v1/tasks/{id}", get(show))
        .route("/v1/tasks/{id}/complete", post(complete))
        .route("/v1/tasks/{id}/fail", post(fail))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/tasks/{id}/bids", post(bid))
}
