//! The load generator of `mesh bench kv`: many closed-loop clients as tasks on
//! one thread, each with HTTP/1.1 keep-alive connections written and parsed by
//! hand, so it costs far less CPU than the nodes it measures (they share two
//! cores). The same generator drives Agent Mesh and the peer (etcd's JSON
//! gateway), differing only in the request each write is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Which API a write goes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wire {
    /// `PUT /v1/kv/bench/{key}` with the raw value.
    Mesh,
    /// etcd v3's JSON gateway: `POST /v3/kv/put` with base64 key and value.
    Etcd,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

impl Wire {
    /// (method, path, body) of a request writing `keys` (one, or a batch in
    /// one replicated command: the mesh's bulk write, an etcd transaction).
    pub fn write(self, keys: &[String], value: &[u8]) -> (&'static str, String, Vec<u8>) {
        match (self, keys) {
            (Wire::Mesh, [key]) => ("PUT", format!("/v1/kv/bench/{key}"), value.to_vec()),
            (Wire::Mesh, keys) => {
                let v = String::from_utf8_lossy(value);
                let items: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .map(|k| (k.clone(), serde_json::Value::String(v.to_string())))
                    .collect();
                (
                    "POST",
                    "/v1/kv/bench".into(),
                    serde_json::json!({ "items": items }).to_string().into_bytes(),
                )
            }
            (Wire::Etcd, [key]) => (
                "POST",
                "/v3/kv/put".into(),
                serde_json::json!({"key": b64(format!("bench:{key}").as_bytes()), "value": b64(value)})
                    .to_string()
                    .into_bytes(),
            ),
            (Wire::Etcd, keys) => {
                let puts: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| serde_json::json!({"requestPut": {"key": b64(format!("bench:{k}").as_bytes()), "value": b64(value)}}))
                    .collect();
                (
                    "POST",
                    "/v3/kv/txn".into(),
                    serde_json::json!({ "success": puts }).to_string().into_bytes(),
                )
            }
        }
    }

    /// (method, path, body) of a linearizable read.
    pub fn read(self, key: &str) -> (&'static str, String, Vec<u8>) {
        match self {
            Wire::Mesh => ("GET", format!("/v1/kv/bench/{key}"), Vec::new()),
            Wire::Etcd => (
                "POST",
                "/v3/kv/range".into(),
                serde_json::json!({"key": b64(format!("bench:{key}").as_bytes())})
                    .to_string()
                    .into_bytes(),
            ),
        }
    }

    /// Whether a read's reply says for certain the key is not there (an
    /// error status says nothing either way).
    pub fn absent(self, status: u16, body: &[u8]) -> bool {
        match self {
            Wire::Mesh => status == 404,
            Wire::Etcd => status == 200 && !self.found(status, body),
        }
    }

    /// Whether a read's reply shows the key.
    pub fn found(self, status: u16, body: &[u8]) -> bool {
        match self {
            Wire::Mesh => status == 200,
            Wire::Etcd => {
                status == 200
                    && serde_json::from_slice::<serde_json::Value>(body)
                        .map(|v| v["kvs"].as_array().is_some_and(|a| !a.is_empty()))
                        .unwrap_or(false)
            }
        }
    }
}

/// Latency percentiles.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

pub fn latency(mut us: Vec<u32>) -> Latency {
    if us.is_empty() {
        return Latency {
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
        };
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Latency {
        p50_ms: Some(at(0.5)),
        p99_ms: Some(at(0.99)),
        max_ms: Some(at(1.0)),
    }
}

/// What one client did.
pub struct ClientLog {
    /// Per request (a request writes `batch` keys).
    pub latencies_us: Vec<u32>,
    /// Keys acknowledged.
    pub writes: usize,
    /// (key, sent at, acknowledged at) of each acknowledged write.
    pub acked: Vec<(String, Instant, Instant)>,
    pub errors: usize,
}

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    addr: String,
    stream: Option<tokio::io::BufStream<tokio::net::TcpStream>>,
}

impl Conn {
    pub fn new(addr: &str) -> Self {
        Conn {
            addr: addr.to_string(),
            stream: None,
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = tokio::net::TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(tokio::io::BufStream::new(s));
        }
        let s = self.stream.as_mut().expect("connected");
        let result = async {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.addr,
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            s.write_all(body).await?;
            s.flush().await?;
            let mut line = String::new();
            s.read_line(&mut line).await?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
            let mut len = 0usize;
            loop {
                line.clear();
                if s.read_line(&mut line).await? == 0 {
                    return Err(std::io::Error::other("connection closed"));
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut rest = vec![0u8; len];
            s.read_exact(&mut rest).await?;
            Ok((status, rest))
        }
        .await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

fn conns(addrs: &[String]) -> Vec<Conn> {
    addrs
        .iter()
        .map(|a| Conn {
            addr: a.clone(),
            stream: None,
        })
        .collect()
}

/// Writes distinct keys until `stop`, round-robin over `addrs` (HOST:PORT).
#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    addrs: Vec<String>,
    wire: Wire,
    batch: usize,
    value: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    keep_keys: bool,
) -> ClientLog {
    let mut conns = conns(&addrs);
    let mut log = ClientLog {
        writes: 0,
        latencies_us: Vec::new(),
        acked: Vec::new(),
        errors: 0,
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let n = conns.len();
        let conn = &mut conns[(id + seq as usize) % n];
        let keys: Vec<String> = (0..batch).map(|j| format!("c{id}-{seq}-{j}")).collect();
        let (method, path, body) = wire.write(&keys, &value);
        let sent = Instant::now();
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(5), conn.request(method, &path, &body)).await,
            Ok(Ok((200, _)))
        );
        let done = Instant::now();
        if ok {
            log.latencies_us
                .push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
            log.writes += keys.len();
            if keep_keys {
                for key in keys {
                    log.acked.push((key, sent, done));
                }
            }
        } else {
            log.errors += 1;
            conn.stream = None;
        }
    }
    log
}

/// Something to do during a run (the failover run kills the leader), after a delay.
pub type During = (Duration, Box<dyn FnOnce() + Send>);

/// Runs `n` clients on one thread for `run`; returns their logs.
#[allow(clippy::too_many_arguments)]
pub fn run_clients(
    n: usize,
    addrs: &[String],
    wire: Wire,
    batch: usize,
    value: &Arc<Vec<u8>>,
    run: Duration,
    keep_keys: bool,
    during: Option<During>,
) -> Vec<ClientLog> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(client(
                    i,
                    addrs.to_vec(),
                    wire,
                    batch,
                    value.clone(),
                    stop.clone(),
                    keep_keys,
                ))
            })
            .collect();
        let started = tokio::time::Instant::now();
        if let Some((at, f)) = during {
            tokio::time::sleep(at).await;
            tokio::task::spawn_blocking(f).await.expect("action");
        }
        tokio::time::sleep_until(started + run).await;
        stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for t in tasks {
            logs.push(t.await.expect("client task"));
        }
        logs
    })
}

/// Reads every key back (linearizably) through `addr`; returns how many are missing.
pub fn count_missing(addr: &str, wire: Wire, keys: &[String]) -> Missing {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("reader runtime");
    rt.block_on(async {
        let chunk = keys.len().div_ceil(16).max(1);
        let tasks: Vec<_> = keys
            .chunks(chunk)
            .map(|part| {
                let part = part.to_vec();
                let addr = addr.to_string();
                tokio::spawn(async move {
                    let mut conn = Conn { addr, stream: None };
                    let mut m = Missing::default();
                    for k in part {
                        let (method, path, body) = wire.read(&k);
                        // A read that errors is tried again (the mesh may be
                        // settling after the kill); one that keeps failing is
                        // unreadable, never assumed there.
                        let mut outcome = None;
                        for attempt in 0..READ_ATTEMPTS {
                            if attempt > 0 {
                                tokio::time::sleep(READ_RETRY).await;
                            }
                            if let Ok((status, body)) = conn.request(method, &path, &body).await {
                                if wire.found(status, &body) {
                                    outcome = Some(true);
                                    break;
                                }
                                if wire.absent(status, &body) {
                                    outcome = Some(false);
                                    break;
                                }
                            }
                        }
                        match outcome {
                            Some(true) => {}
                            Some(false) => m.lost += 1,
                            None => m.unreadable += 1,
                        }
                    }
                    m
                })
            })
            .collect();
        let mut total = Missing::default();
        for t in tasks {
            let m = t.await.expect("reader task");
            total.lost += m.lost;
            total.unreadable += m.unreadable;
        }
        total
    })
}

/// Reads of a key before it counts as unreadable, and the pause between.
const READ_ATTEMPTS: usize = 5;
const READ_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Acknowledged keys not found afterwards.
#[derive(Debug, Default, Clone, Copy)]
pub struct Missing {
    /// Read back as absent: lost.
    pub lost: usize,
    /// Every read of it failed: not known either way.
    pub unreadable: usize,
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    mesh_cli::cluster::resident_bytes_of(pid).map(|b| b as f64 / 1048576.0)
}
