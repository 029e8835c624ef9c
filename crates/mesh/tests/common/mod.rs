//! Helpers shared by the end-to-end tests: HTTP exchanges and node URLs.
#![allow(dead_code)] // each test file uses a different subset

use mesh_cli::cluster::Cluster;
use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One HTTP exchange: (status, JSON body or the text as a JSON string).
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Value) {
    let a = agent();
    let resp = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("DELETE", _) => a.delete(url).call(),
        ("POST", b) => a.post(url).send(b.unwrap_or_default()),
        ("PUT", b) => a.put(url).send(b.unwrap_or_default()),
        _ => panic!("method {method}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()
        .unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The URL of `path` on node `i`.
pub fn url(c: &Cluster, i: usize, path: &str) -> String {
    format!("http://{}{path}", c.info(i).http)
}
