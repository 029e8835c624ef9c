//! Helpers shared by the end-to-end tests: HTTP exchanges and node URLs.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::time::Duration;

use mesh_cli::cluster::{Cluster, wait_for};
use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One HTTP exchange: (status, JSON body or the text as a JSON string).
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Value) {
    let (status, body, _) = http_with_token(method, url, body, None);
    (status, body)
}

/// [`http`] with an optional bearer token; also the response headers.
pub fn http_with_token(
    method: &str,
    url: &str,
    body: Option<&[u8]>,
    token: Option<&str>,
) -> (u16, Value, ureq::http::HeaderMap) {
    let a = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match (method, body, auth) {
        ("GET", _, None) => a.get(url).call(),
        ("GET", _, Some(h)) => a.get(url).header("Authorization", h).call(),
        ("DELETE", _, None) => a.delete(url).call(),
        ("DELETE", _, Some(h)) => a.delete(url).header("Authorization", h).call(),
        ("POST", b, None) => a.post(url).send(b.unwrap_or_default()),
        ("POST", b, Some(h)) => a
            .post(url)
            .header("Authorization", h)
            .send(b.unwrap_or_default()),
        ("PUT", b, None) => a.put(url).send(b.unwrap_or_default()),
        ("PUT", b, Some(h)) => a
            .put(url)
            .header("Authorization", h)
            .send(b.unwrap_or_default()),
        _ => panic!("method {method}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

/// Three `mesh up` processes named `{prefix}0..2`, joined, with three Raft
/// voters and an agreed leader.
pub fn three_node_mesh(exe: &str, prefix: &str) -> Cluster {
    let mut c = Cluster::new(Path::new(exe), "local", prefix).unwrap();
    let n0 = c.spawn(&format!("{prefix}0"), &[]).unwrap();
    let seed = c.info(n0).gossip;
    for i in 1..3 {
        c.spawn(&format!("{prefix}{i}"), &[seed]).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            (0..3).all(|i| c.consensus(i)["voters"].as_array().map(Vec::len) == Some(3))
                && c.raft_leader().is_some()
        })
        .is_some(),
        "no three-voter mesh: {}",
        c.consensus(n0)
    );
    c
}

/// Waits until node `i` lists `n` agents.
pub fn wait_agents(c: &Cluster, i: usize, n: usize) -> bool {
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        let (_, a) = http("GET", &url(c, i, "/v1/agents?stale=true"), None);
        a["agents"].as_array().map(Vec::len) == Some(n)
    })
    .is_some()
}

/// The URL of `path` on node `i`.
pub fn url(c: &Cluster, i: usize, path: &str) -> String {
    format!("http://{}{path}", c.info(i).http)
}
