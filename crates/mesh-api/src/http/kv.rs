//! `/v1/kv`: shared memory over HTTP.
//!
//! - `PUT /v1/kv/{ns}/{key}` with the raw value as the body; query `ttl`
//!   (seconds), `if_absent=true`, `if_present=true` or `if_value=TEXT`
//!   (compare-and-set). 200 `{"written": true}`, or 412 `condition_failed`.
//! - `GET /v1/kv/{ns}/{key}`: the item as JSON (`raw=true`: the bare value
//!   bytes of a string), `stale=true` to read the local replica.
//! - `DELETE /v1/kv/{ns}/{key}`: `{"deleted": true|false}`.
//! - `GET /v1/kv/{ns}`: keys, with `prefix`, `match` (a glob on the key),
//!   `limit` (default 1000, at most 10000) and `stale`.
//! - `POST /v1/kv/{ns}` `{"items": {"key": "value", ...}, "ttl"?: seconds}`:
//!   up to 1000 keys in one replicated command, all or none; `{"written": n}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Deserialize;

use super::{ApiError, ApiResult, parse_query, request_id};
use mesh_node::service::kv::{PutCondition, PutOptions};
use mesh_node::service::{Service, ServiceError};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    ttl: Option<u64>,
    if_absent: Option<bool>,
    if_present: Option<bool>,
    if_value: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    stale: Option<bool>,
    raw: Option<bool>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    prefix: Option<String>,
    #[serde(rename = "match")]
    pattern: Option<String>,
    limit: Option<usize>,
    stale: Option<bool>,
}

async fn put(
    State(svc): State<Service>,
    Path((ns, key)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let q: PutQuery = parse_query(q.as_deref())?;
    let conditions = [
        q.if_absent == Some(true),
        q.if_present == Some(true),
        q.if_value.is_some(),
    ];
    if conditions.iter().filter(|c| **c).count() > 1 {
        return Err(ApiError(ServiceError::bad(
            "bad_query",
            "give at most one of if_absent, if_present, if_value",
        )));
    }
    let condition = match (q.if_absent, q.if_present, q.if_value) {
        (Some(true), _, _) => PutCondition::IfAbsent,
        (_, Some(true), _) => PutCondition::IfPresent,
        (_, _, Some(v)) => PutCondition::IfValue(v.into_bytes()),
        _ => PutCondition::Always,
    };
    let opts = PutOptions {
        ttl_secs: q.ttl,
        condition,
        request_id: request_id(&headers)?,
    };
    let written = svc.kv_put(&ns, &key, body.to_vec(), opts).await?;
    if !written {
        return Ok((
            StatusCode::PRECONDITION_FAILED,
            Json(serde_json::json!({"error": {"code": "condition_failed", "message": "the condition did not hold; nothing was written"}, "written": false})),
        )
            .into_response());
    }
    Ok(Json(serde_json::json!({"written": true})).into_response())
}

async fn get_one(
    State(svc): State<Service>,
    Path((ns, key)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: GetQuery = parse_query(q.as_deref())?;
    let item = svc
        .kv_get(&ns, &key, q.stale.unwrap_or(false))
        .await?
        .ok_or_else(|| {
            ApiError(ServiceError::NotFound {
                what: "key",
                id: format!("{ns}/{key}"),
            })
        })?;
    if q.raw == Some(true) {
        let bytes = match &item.value {
            serde_json::Value::String(s) if item.kind == "string" => s.clone().into_bytes(),
            v if item.kind == "string" => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(v["base64"].as_str().unwrap_or(""))
                    .unwrap_or_default()
            }
            _ => {
                return Err(ApiError(ServiceError::bad(
                    "wrong_type",
                    format!("raw=true needs a string; '{key}' holds a {}", item.kind),
                )));
            }
        };
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response());
    }
    Ok(Json(item).into_response())
}

async fn delete(
    State(svc): State<Service>,
    Path((ns, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let deleted = svc.kv_delete(&ns, &key, request_id(&headers)?).await?;
    Ok(Json(serde_json::json!({"deleted": deleted})).into_response())
}

async fn list(
    State(svc): State<Service>,
    Path(ns): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q: ListQuery = parse_query(q.as_deref())?;
    let out = svc
        .kv_list(
            &ns,
            q.prefix.as_deref(),
            q.pattern.as_deref(),
            q.limit,
            q.stale.unwrap_or(false),
        )
        .await?;
    Ok(Json(out).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    items: serde_json::Map<String, serde_json::Value>,
    ttl: Option<u64>,
}

async fn put_many(
    State(svc): State<Service>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let b: BulkBody = super::parse_json(&body)?;
    let mut items = Vec::with_capacity(b.items.len());
    for (k, v) in b.items {
        let serde_json::Value::String(v) = v else {
            return Err(ApiError(ServiceError::bad(
                "bad_items",
                format!("the value of '{k}' must be a string"),
            )));
        };
        items.push((k, v.into_bytes()));
    }
    let n = svc
        .kv_put_many(&ns, items, b.ttl, request_id(&headers)?)
        .await?;
    Ok(Json(serde_json::json!({"written": n})).into_response())
}

/// What [`routes`] serves, for the OpenAPI document.
pub(super) fn operations() -> Vec<super::openapi::Op> {
    use super::openapi::Op;
    vec![
        Op::get(
            "/v1/kv/{ns}",
            "list the keys of a namespace (prefix, glob match, limit)",
        )
        .query::<ListQuery>(),
        Op::post("/v1/kv/{ns}", "write many keys in one replicated command").body::<BulkBody>(),
        Op::get("/v1/kv/{ns}/{*key}", "read a key (its value, type and TTL)").query::<GetQuery>(),
        Op::put(
            "/v1/kv/{ns}/{*key}",
            "write a key: the body is the value; conditions and TTL in the query",
        )
        .query::<PutQuery>()
        .raw_body(),
        Op::delete("/v1/kv/{ns}/{*key}", "delete a key"),
    ]
}

pub fn routes() -> Router<Service> {
    Router::new()
        .route("/v1/kv/{ns}", get(list).post(put_many))
        .route("/v1/kv/{ns}/{*key}", get(get_one).put(put).delete(delete))
}
