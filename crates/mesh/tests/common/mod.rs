//! Helpers shared by the end-to-end tests: HTTP exchanges and node URLs.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::time::Duration;

pub mod redis;

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

/// POST of a JSON body to `path` on node `i`.
pub fn post(c: &Cluster, i: usize, path: &str, body: Value) -> (u16, Value) {
    http("POST", &url(c, i, path), Some(body.to_string().as_bytes()))
}

/// Registers agent `id` through node `i`, with an ed25519 key made from
/// `seed` (tests only need distinct keys, not secret ones); the reply.
pub fn register_agent(
    c: &Cluster,
    i: usize,
    id: &str,
    kind: &str,
    caps: &[&str],
    seed: u8,
) -> (u16, Value) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let body = serde_json::json!({"id": id, "type": kind, "caps": caps,
        "public_key": mesh_proto::hex::encode(key.verifying_key().as_bytes())});
    post(c, i, "/v1/agents", body)
}

/// True when each node of `observers` lists member `id` and `pred` holds for
/// its row.
pub fn members_agree(
    c: &Cluster,
    observers: std::ops::Range<usize>,
    id: &str,
    pred: impl Fn(&Value) -> bool,
) -> bool {
    observers.into_iter().all(|i| {
        let (_, m) = http("GET", &url(c, i, "/v1/members"), None);
        m["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["id"] == id && pred(m))
    })
}

/// Three `mesh up` processes named `{prefix}0..2`, joined (every node sees
/// the other two), with three Raft voters and an agreed leader.
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
                && c.converged()
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

/// A server-sent-events stream read over plain HTTP/1.0 (so the body is not
/// chunked), with deadlines on every read.
pub struct Sse {
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl Sse {
    /// Opens `path` on `http_addr`; panics unless the answer is 200.
    pub fn open(http_addr: &str, path: &str) -> Sse {
        use std::io::{BufRead, Write};
        let mut sock = std::net::TcpStream::connect(http_addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        write!(sock, "GET {path} HTTP/1.0\r\nHost: {http_addr}\r\n\r\n").unwrap();
        let mut reader = std::io::BufReader::new(sock);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut status = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => panic!("{path}: connection closed in the headers ({status})"),
                Ok(_) if line == "\r\n" => break,
                Ok(_) if status.is_empty() => status = line,
                Ok(_) => {}
                Err(_) if std::time::Instant::now() < deadline => {}
                Err(e) => panic!("{path}: no headers: {e}"),
            }
        }
        assert!(status.contains(" 200 "), "{path}: {status}");
        Sse { reader }
    }

    /// The next event (name, JSON data) before `within` runs out.
    pub fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        use std::io::BufRead;
        let deadline = std::time::Instant::now() + within;
        let (mut event, mut data) = (String::new(), String::new());
        let mut line = String::new();
        while std::time::Instant::now() < deadline {
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {
                    if !line.ends_with('\n') {
                        continue; // partial line: the rest follows
                    }
                    let l = line.trim_end().to_string();
                    line.clear();
                    if l.is_empty() {
                        if !data.is_empty() || !event.is_empty() {
                            let v = serde_json::from_str(&data).unwrap_or(Value::String(data));
                            return Some((event, v));
                        }
                    } else if let Some(e) = l.strip_prefix("event: ") {
                        event = e.to_string();
                    } else if let Some(d) = l.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                Err(_) => {} // read timeout: look at the deadline again
            }
        }
        None
    }

    /// The next event named `name` whose data satisfies `pred`.
    pub fn wait_for(
        &mut self,
        within: Duration,
        name: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = std::time::Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.next(left) {
                Some((e, v)) if e == name && pred(&v) => return Some(v),
                Some(_) => {}
                None => return None,
            }
        }
        None
    }
}
