//! `/v1/agents`, `/v1/proposals`, `/v1/barriers` over HTTP.
//!
//! - `POST /v1/agents` `{"id", "type", "caps": [...], "node"?, "public_key": hex}`;
//!   `GET /v1/agents[/{id}]`; `PUT /v1/agents/{id}/state` `{"state": "COMPLETE"}`;
//!   `POST /v1/agents/{id}/heartbeat`; `DELETE /v1/agents/{id}`.
//! - `POST /v1/proposals` `{"id"?, "body": any, "voters"?: [...], "threshold"?,
//!   "deadline_secs"?, "proposer"?}`; `GET /v1/proposals[/{id}]` with `wait`
//!   (seconds, long-poll until decided); `POST /v1/proposals/{id}/votes`
//!   `{"agent_id", "vote": "approve"|"reject", "reason"?, "seq", "signature": hex}`.
//! - `POST /v1/barriers` `{"id"?, "agents": [...]}` or `{"id"?, "group":
//!   {"type", "count"}}`; `GET /v1/barriers[/{id}]` with `wait`; `DELETE`.
//!
//! Every read takes `stale=true` to read the local replica.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post, put};
use serde::Deserialize;

use super::{ApiError, ApiResult, ReadQuery, parse_json, parse_query, request_id};
use mesh_node::service::coord::{NewAgent, NewProposal, SignedVote};
use mesh_node::service::{Service, ServiceError};
use mesh_state::agents::AgentState;
use mesh_state::barriers::BarrierSpec;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    caps: Vec<String>,
    node: Option<String>,
    public_key: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProposalBody {
    id: Option<String>,
    body: serde_json::Value,
    proposer: Option<String>,
    voters: Option<Vec<String>>,
    threshold: Option<f64>,
    deadline_secs: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct VoteBody {
    agent_id: String,
    vote: String,
    reason: Option<String>,
    seq: u64,
    signature: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    #[serde(rename = "type")]
    kind: String,
    count: usize,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BarrierBody {
    id: Option<String>,
    agents: Option<Vec<String>>,
    group: Option<GroupBody>,
}

fn created(v: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn register_agent(State(svc): State<Service>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let b: AgentBody = parse_json(&body)?;
    let a = NewAgent {
        id: b.id,
        kind: b.kind,
        caps: b.caps,
        node: b.node,
        public_key_hex: b.public_key,
    };
    created(svc.register_agent(a, request_id(&headers)?).await?)
}

async fn list_agents(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    let agents = svc.agents(q.stale.unwrap_or(false)).await?;
    Ok(Json(serde_json::json!({ "agents": agents })).into_response())
}

async fn get_agent(
    State(svc): State<Service>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    Ok(Json(svc.agent(&id, q.stale.unwrap_or(false)).await?).into_response())
}

async fn set_agent_state(
    State(svc): State<Service>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b: StateBody = parse_json(&body)?;
    let state: AgentState = b
        .state
        .parse()
        .map_err(|e: String| ApiError(ServiceError::bad("bad_state", e)))?;
    Ok(Json(
        svc.set_agent_state(&id, state, request_id(&headers)?)
            .await?,
    )
    .into_response())
}

async fn heartbeat(State(svc): State<Service>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(svc.agent_heartbeat(&id).await?).into_response())
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    /// Why (kept in each moved task's history).
    reason: Option<String>,
}

async fn failover(State(svc): State<Service>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let b: FailoverBody = if body.is_empty() {
        FailoverBody::default()
    } else {
        parse_json(&body)?
    };
    let reason = b.reason.as_deref().unwrap_or("requested by a client");
    let moved = svc.failover_agent(&id, reason).await?;
    Ok(Json(serde_json::json!({"agent": id, "moved": moved})).into_response())
}

async fn unregister_agent(State(svc): State<Service>, Path(id): Path<String>) -> ApiResult {
    svc.unregister_agent(&id).await?;
    Ok(Json(serde_json::json!({"deleted": true})).into_response())
}

async fn create_proposal(State(svc): State<Service>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let b: ProposalBody = parse_json(&body)?;
    let p = NewProposal {
        id: b.id,
        body: b.body,
        proposer: b.proposer,
        voters: b.voters,
        threshold: b.threshold,
        deadline_secs: b.deadline_secs,
    };
    created(svc.propose(p, request_id(&headers)?).await?)
}

async fn list_proposals(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    let proposals = svc.proposals(q.stale.unwrap_or(false)).await?;
    Ok(Json(serde_json::json!({ "proposals": proposals })).into_response())
}

async fn get_proposal(
    State(svc): State<Service>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    let p = svc
        .proposal(&id, q.wait()?, q.stale.unwrap_or(false))
        .await?;
    Ok(Json(p).into_response())
}

async fn cast_vote(
    State(svc): State<Service>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b: VoteBody = parse_json(&body)?;
    let approve = match b.vote.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(ApiError(ServiceError::bad(
                "bad_vote",
                format!("vote '{other}' must be approve or reject"),
            )));
        }
    };
    let v = SignedVote {
        agent_id: b.agent_id,
        approve,
        reason: b.reason,
        seq: b.seq,
        signature_hex: b.signature,
    };
    Ok(Json(svc.vote(&id, v, request_id(&headers)?).await?).into_response())
}

async fn create_barrier(State(svc): State<Service>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let b: BarrierBody = parse_json(&body)?;
    let spec = match (b.agents, b.group) {
        (Some(list), None) => BarrierSpec::Agents(list),
        (None, Some(g)) => BarrierSpec::Group {
            kind: g.kind,
            count: g.count,
        },
        _ => {
            return Err(ApiError(ServiceError::bad(
                "bad_barrier",
                "give exactly one of \"agents\": [...] or \"group\": {\"type\", \"count\"}",
            )));
        }
    };
    created(
        svc.create_barrier(b.id, spec, request_id(&headers)?)
            .await?,
    )
}

async fn list_barriers(State(svc): State<Service>, RawQuery(q): RawQuery) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    let barriers = svc.barriers(q.stale.unwrap_or(false)).await?;
    Ok(Json(serde_json::json!({ "barriers": barriers })).into_response())
}

async fn get_barrier(
    State(svc): State<Service>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ReadQuery = parse_query(q.as_deref())?;
    let b = svc
        .barrier(&id, q.wait()?, q.stale.unwrap_or(false))
        .await?;
    Ok(Json(b).into_response())
}

async fn delete_barrier(State(svc): State<Service>, Path(id): Path<String>) -> ApiResult {
    svc.delete_barrier(&id).await?;
    Ok(Json(serde_json::json!({"deleted": true})).into_response())
}

/// What [`routes`] serves, for the OpenAPI document.
pub(super) fn operations() -> Vec<super::openapi::Op> {
    use super::openapi::Op;
    vec![
        Op::get("/v1/agents", "list agents").query::<ReadQuery>(),
        Op::post(
            "/v1/agents",
            "register an agent (type, capabilities, ed25519 public key)",
        )
        .body::<AgentBody>()
        .created(),
        Op::get("/v1/agents/{id}", "one agent").query::<ReadQuery>(),
        Op::delete("/v1/agents/{id}", "unregister an agent (its tasks move on)"),
        Op::put(
            "/v1/agents/{id}/state",
            "set an agent's state (ACTIVE, WAITING, COMPLETE)",
        )
        .body::<StateBody>(),
        Op::post("/v1/agents/{id}/heartbeat", "record that an agent is alive"),
        Op::post(
            "/v1/agents/{id}/failover",
            "move an agent's running and queued tasks to other agents now",
        )
        .body::<FailoverBody>(),
        Op::get("/v1/proposals", "list proposals").query::<ReadQuery>(),
        Op::post(
            "/v1/proposals",
            "open a proposal (voters, threshold, deadline)",
        )
        .body::<ProposalBody>()
        .created(),
        Op::get(
            "/v1/proposals/{id}",
            "one proposal with its tally (`wait` for the decision)",
        )
        .query::<ReadQuery>(),
        Op::post(
            "/v1/proposals/{id}/votes",
            "cast a vote signed by the agent's key",
        )
        .body::<VoteBody>(),
        Op::get("/v1/barriers", "list barriers").query::<ReadQuery>(),
        Op::post("/v1/barriers", "create a barrier over agents or a group")
            .body::<BarrierBody>()
            .created(),
        Op::get(
            "/v1/barriers/{id}",
            "one barrier (`wait` until it is released)",
        )
        .query::<ReadQuery>(),
        Op::delete("/v1/barriers/{id}", "delete a barrier"),
    ]
}

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/v1/agents", get(list_agents).post(register_agent))
        .route("/v1/agents/{id}", get(get_agent).delete(unregister_agent))
        .route("/v1/agents/{id}/state", put(set_agent_state))
        .route("/v1/agents/{id}/heartbeat", post(heartbeat))
        .route("/v1/agents/{id}/failover", post(failover))
        .route("/v1/proposals", get(list_proposals).post(create_proposal))
        .route("/v1/proposals/{id}", get(get_proposal))
        .route("/v1/proposals/{id}/votes", post(cast_vote))
        .route("/v1/barriers", get(list_barriers).post(create_barrier))
        .route("/v1/barriers/{id}", get(get_barrier).delete(delete_barrier))
}
