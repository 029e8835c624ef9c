//! pBFT administration over HTTP: `GET /v1/pbft/config` (the configuration
//! in force, which a node joining the replica set starts from) and `POST
//! /v1/pbft/reconfigure` (this replica's vote for a new replica set). Both
//! answer `not_pbft` on a Raft node.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiResult, parse_json};
use mesh_node::pbft_setup::GenesisReplica;
use mesh_node::service::Service;

pub(super) fn routes() -> Router<Service> {
    Router::new()
        .route("/v1/pbft/config", get(config))
        .route("/v1/pbft/reconfigure", post(reconfigure))
}

/// One replica of a proposed set.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read through `GenesisReplica`; here for the schema
struct ReplicaBody {
    /// The node's name (`--node-id`).
    name: String,
    /// Its ed25519 public key, 64 hex digits (`mesh pbft keygen` prints it).
    key: String,
}

/// A proposed replica set, in order (the genesis file's format).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ReconfigureBody {
    replicas: Vec<ReplicaBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    replicas: Vec<GenesisReplica>,
}

async fn config(State(svc): State<Service>) -> ApiResult {
    Ok(Json(svc.pbft_config()?).into_response())
}

async fn reconfigure(State(svc): State<Service>, body: Bytes) -> ApiResult {
    let b: Body = parse_json(&body)?;
    Ok(Json(svc.pbft_reconfigure(b.replicas).await?).into_response())
}

pub(super) fn operations() -> Vec<super::openapi::Op> {
    use super::openapi::Op;
    vec![
        Op::get(
            "/v1/pbft/config",
            "the pBFT configuration in force: replica set, names, and from epoch 1 the epoch before with the proof of its end",
        ),
        Op::post(
            "/v1/pbft/reconfigure",
            "vote, as this replica, for a new replica set (decided by 2f + 1 matching votes; in force a window later)",
        )
        .body::<ReconfigureBody>(),
    ]
}
