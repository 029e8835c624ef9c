//! `mesh bench pubsub`: publish-to-delivery latency and messages per second
//! across a mesh of real node processes, side by side in the same run with
//! Redis pub/sub (`redis-server` from Debian) on the same machine.
//!
//! Both get the same load: one subscriber per node (for Redis, as many
//! subscriber connections to its one server), the same payload size, the same
//! publishers. Latency: one publisher sends one message at a time and waits
//! until every subscriber has it; each delivery's time from just before the
//! publish call to the moment the subscriber parsed it, on this process's
//! monotonic clock. Throughput: `--publishers` connections publish as fast as
//! their replies come back for `--duration`; messages/s counts acknowledged
//! publishes, deliveries/s what the subscribers received.
//!
//! What differs, and is reported, not hidden: by default the mesh takes
//! publishes over HTTP/JSON and streams to subscribers over server-sent events
//! (`--front resp` drives the nodes' Redis endpoints instead, like for like
//! with redis-server), and a mesh publish returns only after every node
//! acknowledged it with its subscriber count; Redis's `PUBLISH` answers after
//! handing the message to its own local subscribers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use mesh_cli::cluster::{Cluster, wait_for};
use mesh_cli::redis_server::RedisServer;
use mesh_proto::resp::encode_request;
use mesh_proto::units::parse_duration_ms;

#[derive(Args)]
pub struct PubsubBench {
    /// Nodes of the mesh (one subscriber on each)
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Messages in the latency phase (one at a time)
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Length of the throughput phase
    #[arg(long, default_value = "5s", value_parser = parse_duration_ms)]
    duration: u64,
    /// Concurrent publishers in the throughput phase
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Payload bytes per message (at least 16)
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// How the mesh is driven: `http` (POST /v1/publish, SSE subscribers) or `resp`
    /// (PUBLISH and SUBSCRIBE on the nodes' Redis endpoints, like for like with redis-server)
    #[arg(long, default_value = "http", value_parser = ["http", "resp"])]
    front: String,
    /// The peer measured in the same run: `redis` (redis-server from Debian) or `none`
    #[arg(long, default_value = "redis", value_parser = ["redis", "none"])]
    peer: String,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PubsubResult {
    pub implementation: String,
    pub subscribers: usize,
    pub latency_samples: usize,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub publishes_per_sec: f64,
    pub deliveries_per_sec: f64,
    /// Deliveries missing at the end of the throughput phase (should be 0).
    pub undelivered: u64,
}

/// A subscriber connection: reports (sequence number, when it arrived).
trait Sub: Send {
    fn next(&mut self) -> Option<u64>;
}

/// Makes the payload of message `seq`: its number, padded.
fn payload(seq: u64, len: usize) -> String {
    format!("{seq:016}{}", "x".repeat(len.saturating_sub(16)))
}

fn seq_of(s: &str) -> Option<u64> {
    s.get(..16)?.parse().ok()
}

// ---- the mesh: HTTP publishes, server-sent events ----

struct MeshSub {
    r: BufReader<TcpStream>,
}

impl MeshSub {
    fn open(http: &str) -> anyhow::Result<Self> {
        let mut s = TcpStream::connect(http)?;
        s.set_nodelay(true)?;
        write!(
            s,
            "GET /v1/events?channels=bench HTTP/1.0\r\nHost: {http}\r\n\r\n"
        )?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                anyhow::bail!("{http}: the event stream closed");
            }
            if line.starts_with("event: subscribed") {
                return Ok(MeshSub { r });
            }
        }
    }
}

impl Sub for MeshSub {
    fn next(&mut self) -> Option<u64> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(d) = line.strip_prefix("data: ") {
                let v: serde_json::Value = serde_json::from_str(d.trim()).ok()?;
                if let Some(seq) = v["message"].as_str().and_then(seq_of) {
                    return Some(seq);
                }
            }
        }
    }
}

struct MeshPub {
    agent: ureq::Agent,
    url: String,
    len: usize,
}

impl MeshPub {
    fn publish(&self, seq: u64) -> anyhow::Result<u64> {
        let body = serde_json::json!({"channel": "bench", "message": payload(seq, self.len)});
        let mut r = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())?;
        let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
        Ok(v["receivers"].as_u64().unwrap_or(0))
    }
}

// ---- Redis: RESP over TCP ----

fn read_line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut l = String::new();
    (r.read_line(&mut l).ok()? > 0).then_some(l)
}

/// Reads one RESP value, returning the bulk strings it holds.
fn read_value(r: &mut BufReader<TcpStream>, out: &mut Vec<Vec<u8>>) -> Option<()> {
    let l = read_line(r)?;
    let rest = l[1..].trim_end();
    match l.as_bytes()[0] {
        b'*' => {
            for _ in 0..rest.parse::<i64>().ok()?.max(0) {
                read_value(r, out)?;
            }
        }
        b'$' => {
            let n: i64 = rest.parse().ok()?;
            if n >= 0 {
                let mut b = vec![0; n as usize + 2];
                r.read_exact(&mut b).ok()?;
                b.truncate(n as usize);
                out.push(b);
            }
        }
        _ => out.push(rest.as_bytes().to_vec()),
    }
    Some(())
}

struct RedisSub {
    r: BufReader<TcpStream>,
}

impl RedisSub {
    fn open(addr: &str) -> anyhow::Result<Self> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.write_all(&encode_request(&[b"SUBSCRIBE", b"bench"]))?;
        let mut r = BufReader::new(s);
        let mut v = Vec::new();
        read_value(&mut r, &mut v).ok_or_else(|| anyhow::anyhow!("no SUBSCRIBE reply"))?;
        Ok(RedisSub { r })
    }
}

impl Sub for RedisSub {
    fn next(&mut self) -> Option<u64> {
        loop {
            let mut v = Vec::new();
            read_value(&mut self.r, &mut v)?;
            if v.len() == 3 && v[0] == b"message" {
                return seq_of(std::str::from_utf8(&v[2]).ok()?);
            }
        }
    }
}

struct RedisPub {
    r: BufReader<TcpStream>,
    len: usize,
}

impl RedisPub {
    fn open(addr: &str, len: usize) -> anyhow::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(RedisPub {
            r: BufReader::new(s),
            len,
        })
    }

    fn publish(&mut self, seq: u64) -> anyhow::Result<u64> {
        let p = payload(seq, self.len);
        self.r
            .get_mut()
            .write_all(&encode_request(&[b"PUBLISH", b"bench", p.as_bytes()]))?;
        let l = read_line(&mut self.r).ok_or_else(|| anyhow::anyhow!("redis closed"))?;
        Ok(l.trim_start_matches(':').trim().parse().unwrap_or(0))
    }
}

// ---- the harness, the same for both ----

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * q).round() as usize])
}

/// Runs both phases against subscribers `subs` and a publish function.
fn measure(
    implementation: &str,
    subs: Vec<Box<dyn Sub>>,
    mut publish_one: impl FnMut(u64) -> anyhow::Result<u64>,
    make_publisher: impl Fn() -> anyhow::Result<Box<dyn FnMut(u64) -> anyhow::Result<u64> + Send>>,
    args: &PubsubBench,
) -> anyhow::Result<PubsubResult> {
    let n_subs = subs.len();
    let (tx, rx) = mpsc::channel::<(usize, u64, Instant)>();
    let delivered = Arc::new(AtomicU64::new(0));
    // Arrival times go to the main thread only in the latency phase; in the
    // throughput phase subscribers just count (no wake-up per message).
    let timing = Arc::new(AtomicBool::new(true));
    for (i, mut s) in subs.into_iter().enumerate() {
        let (tx, delivered, timing) = (tx.clone(), delivered.clone(), timing.clone());
        std::thread::spawn(move || {
            while let Some(seq) = s.next() {
                let at = Instant::now();
                delivered.fetch_add(1, Ordering::Relaxed);
                if timing.load(Ordering::Relaxed) && tx.send((i, seq, at)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    // Latency: one at a time.
    let mut lat = Vec::with_capacity(args.messages * n_subs);
    for seq in 0..args.messages as u64 {
        let sent = Instant::now();
        publish_one(seq)?;
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < n_subs {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((_, s, at)) = rx.recv_timeout(left) else {
                anyhow::bail!(
                    "{implementation}: message {seq} did not reach every subscriber in 5 s"
                );
            };
            if s == seq {
                got += 1;
                lat.push(at.duration_since(sent).as_secs_f64() * 1000.0);
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    timing.store(false, Ordering::Relaxed);
    // Throughput: publishers as fast as replies come back.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let before = delivered.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut handles = Vec::new();
    for p in 0..args.publishers {
        let mut publish = make_publisher()?;
        let (stop, published) = (stop.clone(), published.clone());
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut seq = 1_000_000_000 * (p as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                publish(seq)?;
                published.fetch_add(1, Ordering::Relaxed);
                seq += 1;
            }
            Ok(())
        }));
    }
    std::thread::sleep(Duration::from_millis(args.duration));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a publisher panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = published.load(Ordering::Relaxed);
    let expected = before + total * n_subs as u64;
    // Everything acknowledged must arrive: wait for the tail (bounded).
    let _ = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        delivered.load(Ordering::Relaxed) >= expected
    });
    let got = delivered.load(Ordering::Relaxed) - before;
    Ok(PubsubResult {
        implementation: implementation.to_string(),
        subscribers: n_subs,
        latency_samples: lat.len(),
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        latency_max_ms: lat.last().copied(),
        publishes_per_sec: total as f64 / secs,
        deliveries_per_sec: got as f64 / secs,
        undelivered: expected.saturating_sub(before + got),
    })
}

fn bench_mesh(exe: &Path, args: &PubsubBench) -> anyhow::Result<PubsubResult> {
    let mut c = Cluster::new(exe, "lan", "bench-pubsub")?;
    let resp = args.front == "resp";
    let extra: &[&str] = if resp {
        &["--resp", "127.0.0.1:0"]
    } else {
        &[]
    };
    let first = c.spawn_with("p0", &[], extra)?;
    let seed = c.info(first).gossip;
    for i in 1..args.nodes {
        c.spawn_with(&format!("p{i}"), &[seed], extra)?;
    }
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        c.converged()
    })
    .ok_or_else(|| anyhow::anyhow!("{} nodes did not converge within 30 s", args.nodes))?;
    if resp {
        let addr = |i: usize| -> anyhow::Result<String> {
            Ok(c.info(i)
                .resp
                .ok_or_else(|| anyhow::anyhow!("node {i} serves no Redis endpoint"))?
                .to_string())
        };
        let subs: Vec<String> = (0..args.nodes).map(addr).collect::<anyhow::Result<_>>()?;
        let r = measure_resp(
            &format!("mesh ({} nodes, RESP)", args.nodes),
            &subs,
            &addr(0)?,
            args,
        );
        c.stop_all();
        return r;
    }
    let mut subs: Vec<Box<dyn Sub>> = Vec::new();
    for i in 0..args.nodes {
        subs.push(Box::new(MeshSub::open(&c.info(i).http.to_string())?));
    }
    let url = format!("http://{}/v1/publish", c.info(0).http);
    let agent = || -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    };
    let one = MeshPub {
        agent: agent(),
        url: url.clone(),
        len: args.payload,
    };
    // Every node counted: the publish reports all subscribers.
    let receivers = one.publish(u64::MAX / 2)?;
    if receivers as usize != args.nodes {
        anyhow::bail!(
            "a publish reached {receivers} subscribers, not {}",
            args.nodes
        );
    }
    let len = args.payload;
    let r = measure(
        &format!("mesh ({} nodes)", args.nodes),
        subs,
        |seq| one.publish(seq),
        || {
            let p = MeshPub {
                agent: agent(),
                url: url.clone(),
                len,
            };
            Ok(Box::new(move |seq| p.publish(seq)))
        },
        args,
    );
    c.stop_all();
    r
}

fn bench_redis(args: &PubsubBench) -> anyhow::Result<PubsubResult> {
    let server = RedisServer::start("redis-server")?;
    let subs = vec![server.addr.clone(); args.nodes];
    measure_resp("redis-server (1 process)", &subs, &server.addr, args)
}

/// Subscribers on `subs` and publishers on `publish_to`, all over RESP (the
/// nodes' Redis endpoints, or redis-server): checks a publish reaches every
/// subscriber, then measures.
fn measure_resp(
    name: &str,
    subs: &[String],
    publish_to: &str,
    args: &PubsubBench,
) -> anyhow::Result<PubsubResult> {
    let mut conns: Vec<Box<dyn Sub>> = Vec::new();
    for a in subs {
        conns.push(Box::new(RedisSub::open(a)?));
    }
    let mut one = RedisPub::open(publish_to, args.payload)?;
    let receivers = one.publish(u64::MAX / 2)?;
    if receivers as usize != subs.len() {
        anyhow::bail!(
            "a publish reached {receivers} subscribers, not {}",
            subs.len()
        );
    }
    let len = args.payload;
    measure(
        name,
        conns,
        |seq| one.publish(seq),
        || {
            let mut p = RedisPub::open(publish_to, len)?;
            Ok(Box::new(move |seq| p.publish(seq)))
        },
        args,
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "null".into(),
    }
}

fn f(v: Option<f64>, d: usize) -> String {
    v.map_or("null".into(), |v| format!("{v:.d$}"))
}

pub fn run(exe: &Path, args: PubsubBench) -> anyhow::Result<()> {
    if args.nodes < 1 || args.nodes > 9 {
        anyhow::bail!("--nodes must be 1 to 9");
    }
    if args.payload < 16 || args.payload > 60_000 {
        anyhow::bail!("--payload must be 16 to 60000 bytes");
    }
    if args.publishers == 0 || args.publishers > 64 {
        anyhow::bail!("--publishers must be 1 to 64");
    }
    let mesh = bench_mesh(exe, &args)?;
    let redis = if args.peer == "redis" {
        Some(bench_redis(&args)?)
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"mesh": mesh, "redis": redis}))?
        );
        return Ok(());
    }
    println!(
        "pub/sub: {} subscribers (one per mesh node; as many connections to Redis), {}-byte messages, {} one-at-a-time, {} publishers for {} ms",
        args.nodes, args.payload, args.messages, args.publishers, args.duration
    );
    type Figure = fn(&PubsubResult) -> Option<f64>;
    let rows: [(&str, Figure, usize); 5] = [
        ("latency p50 ms", |r| r.latency_p50_ms, 3),
        ("latency p99 ms", |r| r.latency_p99_ms, 3),
        ("latency max ms", |r| r.latency_max_ms, 3),
        ("publishes/s", |r| Some(r.publishes_per_sec), 0),
        ("deliveries/s", |r| Some(r.deliveries_per_sec), 0),
    ];
    println!(
        "{:<16} {:>18} {:>24} {:>12}",
        "",
        mesh.implementation,
        redis
            .as_ref()
            .map_or("(no peer)", |r| r.implementation.as_str()),
        "mesh/redis"
    );
    for (name, get, d) in rows.iter() {
        let (a, b) = (get(&mesh), redis.as_ref().and_then(get));
        println!(
            "{name:<16} {:>18} {:>24} {:>12}",
            f(a, *d),
            f(b, *d),
            ratio(a, b)
        );
    }
    println!(
        "undelivered at the end: mesh {}, redis {}",
        mesh.undelivered,
        redis
            .as_ref()
            .map_or("null".into(), |r| r.undelivered.to_string())
    );
    Ok(())
}
