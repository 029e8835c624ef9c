//! `mesh bench kv`: replicated writes through real node processes.
//!
//! Starts `--nodes` `mesh up` processes on loopback (durable: the Raft log is
//! fsynced in redb), waits for a leader and all voters, then for each client
//! count runs that many client threads for `--duration`, each writing distinct
//! keys over HTTP keep-alive (`PUT /v1/kv/bench/...`) and timing every
//! acknowledged write. Clients talk to every node in turn (`--target any`, the
//! default: followers forward to the leader) or only to the leader.
//!
//! Then the failover run: clients write, the leader is killed with SIGKILL, and
//! the bench measures the time from the kill to the first acknowledged write
//! sent after it, then reads back every acknowledged key from a survivor and
//! counts any that are missing. Resident memory of each node is read from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use mesh_cli::cluster::{Cluster, wait_for};

#[derive(Args)]
pub struct KvBench {
    /// Node processes
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Client counts to measure, comma-separated
    #[arg(long, default_value = "1,64", value_delimiter = ',')]
    clients: Vec<usize>,
    /// How long each client count runs
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Which nodes clients send to: any (round-robin over all nodes) or leader
    #[arg(long, default_value = "any", value_parser = ["any", "leader"])]
    target: String,
    /// Bytes per value
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Skip the leader-kill run
    #[arg(long)]
    no_failover: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn latency(mut us: Vec<u32>) -> Latency {
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

#[derive(Debug, Serialize)]
struct LoadRun {
    clients: usize,
    writes: usize,
    errors: usize,
    seconds: f64,
    writes_per_sec: f64,
    latency: Latency,
}

#[derive(Debug, Serialize)]
struct Failover {
    clients: usize,
    /// From the kill to the first acknowledged write that was sent after it.
    recovery_ms: Option<f64>,
    acked_before_kill: usize,
    acked_total: usize,
    /// Acknowledged writes not found afterwards on a survivor.
    lost: usize,
    /// Writes that failed or timed out (not acknowledged; a client may retry).
    errors: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: usize,
    target: String,
    value_bytes: usize,
    runs: Vec<LoadRun>,
    failover: Option<Failover>,
    resident_mib: Vec<Option<f64>>,
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// What one client did.
struct ClientLog {
    latencies_us: Vec<u32>,
    /// (key, sent at, acknowledged at) of each acknowledged write.
    acked: Vec<(String, Instant, Instant)>,
    errors: usize,
}

/// A minimal HTTP/1.1 keep-alive connection: the load generator must cost far
/// less CPU than the nodes it measures (they share two cores), so clients are
/// tasks on one thread writing requests and parsing replies by hand.
struct Conn {
    addr: String,
    stream: Option<tokio::io::BufStream<tokio::net::TcpStream>>,
}

impl Conn {
    /// PUTs `body` at `path`; returns the status code.
    async fn put(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let s = tokio::net::TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(tokio::io::BufStream::new(s));
        }
        let s = self.stream.as_mut().expect("connected");
        let result = async {
            let head = format!(
                "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
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
            Ok(status)
        }
        .await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// Writes distinct keys until `stop`, round-robin over `addrs` (HOST:PORT).
async fn client(
    id: usize,
    addrs: Vec<String>,
    value: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    keep_keys: bool,
) -> ClientLog {
    let mut conns: Vec<Conn> = addrs
        .iter()
        .map(|a| Conn {
            addr: a.clone(),
            stream: None,
        })
        .collect();
    let mut log = ClientLog {
        latencies_us: Vec::new(),
        acked: Vec::new(),
        errors: 0,
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let n = conns.len();
        let conn = &mut conns[(id + seq as usize) % n];
        let key = format!("c{id}-{seq}");
        let sent = Instant::now();
        let ok = matches!(
            tokio::time::timeout(
                Duration::from_secs(20),
                conn.put(&format!("/v1/kv/bench/{key}"), &value)
            )
            .await,
            Ok(Ok(200))
        );
        let done = Instant::now();
        if ok {
            log.latencies_us
                .push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
            if keep_keys {
                log.acked.push((key, sent, done));
            }
        } else {
            log.errors += 1;
            conn.stream = None;
        }
    }
    log
}

/// Runs `n` clients on one thread for `run` (or until `stop`), calling `during`
/// after `at` (the failover run kills the leader there); returns their logs.
fn run_clients(
    n: usize,
    urls: &[String],
    value: &Arc<Vec<u8>>,
    run: Duration,
    keep_keys: bool,
    during: Option<(Duration, Box<dyn FnOnce() + Send>)>,
) -> Vec<ClientLog> {
    let addrs: Vec<String> = urls
        .iter()
        .map(|u| u.trim_start_matches("http://").to_string())
        .collect();
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
                    addrs.clone(),
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

fn consensus(url: &str) -> serde_json::Value {
    let agent = http_agent();
    agent
        .get(format!("{url}/v1/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["consensus"].clone())
        .unwrap_or_default()
}

/// Index of the node that leads, if all running nodes agree.
fn leader(c: &Cluster, urls: &[(usize, String)]) -> Option<usize> {
    let views: Vec<(usize, serde_json::Value)> =
        urls.iter().map(|(i, u)| (*i, consensus(u))).collect();
    let l = views.first()?.1["leader"].as_u64()?;
    if views
        .iter()
        .any(|(_, v)| v["leader"].as_u64() != Some(l) || v["writable"] != true)
    {
        return None;
    }
    let _ = c;
    views
        .iter()
        .find(|(_, v)| v["node_id"].as_u64() == Some(l))
        .map(|(i, _)| *i)
}

pub fn run(args: KvBench) -> anyhow::Result<()> {
    if args.nodes == 0 || args.clients.contains(&0) {
        anyhow::bail!("--nodes and --clients must be at least 1");
    }
    let duration = Duration::from_millis(
        mesh_proto::units::parse_duration_ms(&args.duration)
            .map_err(|e| anyhow::anyhow!("--duration: {e}"))?,
    );
    let exe = std::env::current_exe()?;
    let mut c = Cluster::new(&exe, "lan", "bench-kv")?;
    let first = c.spawn("kv0", &[])?;
    let seed = c.info(first).gossip;
    for i in 1..args.nodes {
        c.spawn(&format!("kv{i}"), &[seed])?;
    }
    let all: Vec<(usize, String)> = (0..args.nodes)
        .map(|i| (i, format!("http://{}", c.info(i).http)))
        .collect();
    let voters = 3.min(args.nodes);
    wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
        all.iter()
            .all(|(_, u)| consensus(u)["voters"].as_array().map(Vec::len) == Some(voters))
            && leader(&c, &all).is_some()
    })
    .ok_or_else(|| {
        anyhow::anyhow!("the nodes did not elect a leader with {voters} voters within 30 s")
    })?;
    let value = Arc::new(vec![b'v'; args.value_bytes]);
    let targets = |c: &Cluster, running: &[(usize, String)]| -> Vec<String> {
        match args.target.as_str() {
            "leader" => leader(c, running)
                .map(|l| vec![running.iter().find(|(i, _)| *i == l).unwrap().1.clone()])
                .unwrap_or_default(),
            _ => running.iter().map(|(_, u)| u.clone()).collect(),
        }
    };

    let mut runs = Vec::new();
    for &n in &args.clients {
        let urls = targets(&c, &all);
        let started = Instant::now();
        let logs = run_clients(n, &urls, &value, duration, false, None);
        let seconds = started.elapsed().as_secs_f64();
        let lat: Vec<u32> = logs
            .iter()
            .flat_map(|l| l.latencies_us.iter().copied())
            .collect();
        let writes = lat.len();
        if !args.json {
            eprintln!("  {n} clients: {writes} writes in {seconds:.1} s");
        }
        runs.push(LoadRun {
            clients: n,
            writes,
            errors: logs.iter().map(|l| l.errors).sum(),
            seconds,
            writes_per_sec: writes as f64 / seconds,
            latency: latency(lat),
        });
    }
    let resident_mib: Vec<Option<f64>> = (0..args.nodes)
        .map(|i| c.resident_bytes(i).map(|b| b as f64 / 1048576.0))
        .collect();

    let failover = if args.no_failover || args.nodes < 3 {
        None
    } else {
        let n = *args.clients.iter().max().unwrap_or(&1);
        let l = leader(&c, &all).ok_or_else(|| anyhow::anyhow!("no leader before the kill"))?;
        // Clients keep to the nodes that survive, as a client library with a node list would.
        let survivors: Vec<(usize, String)> =
            all.iter().filter(|(i, _)| *i != l).cloned().collect();
        let urls: Vec<String> = survivors.iter().map(|(_, u)| u.clone()).collect();
        let killed = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let kill: Box<dyn FnOnce() + Send> = {
            let killed = killed.clone();
            let pid = c.nodes[l].child.as_ref().map(|ch| ch.id());
            Box::new(move || {
                if let Some(pid) = pid {
                    *killed.lock().unwrap() = Some(Instant::now());
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            })
        };
        let logs = run_clients(
            n,
            &urls,
            &value,
            Duration::from_secs(5),
            true,
            Some((Duration::from_secs(2), kill)),
        );
        c.kill_hard(l)?; // reaps the child (already dead)
        let killed_at = killed
            .lock()
            .unwrap()
            .ok_or_else(|| anyhow::anyhow!("leader not killed"))?;
        let acked: Vec<&(String, Instant, Instant)> =
            logs.iter().flat_map(|l| l.acked.iter()).collect();
        let recovery_ms = acked
            .iter()
            .filter(|(_, sent, _)| *sent >= killed_at)
            .map(|(_, _, done)| done.duration_since(killed_at).as_secs_f64() * 1000.0)
            .min_by(|a, b| a.total_cmp(b));
        // Read back every acknowledged key (linearizable reads) from a survivor.
        let lost = Arc::new(AtomicU64::new(0));
        let keys: Vec<String> = acked.iter().map(|(k, _, _)| k.clone()).collect();
        let chunk = keys.len().div_ceil(8).max(1);
        std::thread::scope(|s| {
            for part in keys.chunks(chunk) {
                let (lost, url) = (lost.clone(), urls[0].clone());
                s.spawn(move || {
                    let agent = http_agent();
                    for k in part {
                        let found = agent
                            .get(format!("{url}/v1/kv/bench/{k}"))
                            .call()
                            .map(|r| r.status().as_u16() == 200)
                            .unwrap_or(false);
                        if !found {
                            lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Some(Failover {
            clients: n,
            recovery_ms,
            acked_before_kill: acked
                .iter()
                .filter(|(_, _, done)| *done < killed_at)
                .count(),
            acked_total: acked.len(),
            lost: lost.load(Ordering::Relaxed) as usize,
            errors: logs.iter().map(|l| l.errors).sum(),
        })
    };
    c.stop_all();

    let report = Report {
        nodes: args.nodes,
        target: args.target.clone(),
        value_bytes: args.value_bytes,
        runs,
        failover,
        resident_mib,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}

fn print_report(r: &Report) {
    println!(
        "mesh bench kv: {} nodes on loopback, durable (fsync per log append), {}-byte values, clients to {} node(s)",
        r.nodes, r.value_bytes, r.target
    );
    println!(
        "{:>8} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9}",
        "clients", "writes", "errors", "writes/s", "p50 ms", "p99 ms", "max ms"
    );
    for run in &r.runs {
        println!(
            "{:>8} {:>10} {:>8} {:>12.0} {:>9} {:>9} {:>9}",
            run.clients,
            run.writes,
            run.errors,
            run.writes_per_sec,
            ms(run.latency.p50_ms),
            ms(run.latency.p99_ms),
            ms(run.latency.max_ms)
        );
    }
    if let Some(one) = r.runs.iter().find(|x| x.clients == 1) {
        println!(
            "target: 1-client median <= 1 ms: {} ({} ms)",
            if one.latency.p50_ms.is_some_and(|x| x <= 1.0) {
                "met"
            } else {
                "NOT met"
            },
            ms(one.latency.p50_ms)
        );
    }
    if let Some(many) = r.runs.iter().find(|x| x.clients == 64) {
        println!(
            "target: 64 clients >= 50,000 writes/s: {} ({:.0} writes/s)",
            if many.writes_per_sec >= 50_000.0 {
                "met"
            } else {
                "NOT met"
            },
            many.writes_per_sec
        );
    }
    if let Some(f) = &r.failover {
        println!(
            "leader kill -9 under load ({} clients): writes succeed again after {} ms (target 1500: {}); acknowledged {} ({} before the kill), lost {}, failed or timed out {}",
            f.clients,
            ms(f.recovery_ms),
            if f.recovery_ms.is_some_and(|x| x <= 1500.0) {
                "met"
            } else {
                "NOT met"
            },
            f.acked_total,
            f.acked_before_kill,
            f.lost,
            f.errors
        );
    }
    let rss: Vec<String> = r
        .resident_mib
        .iter()
        .map(|m| m.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into()))
        .collect();
    println!(
        "resident memory per node after the load runs (MiB): {}",
        rss.join(", ")
    );
}
