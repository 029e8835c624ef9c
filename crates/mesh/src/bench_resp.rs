//! `mesh bench resp`: Debian's `redis-benchmark` against `redis-server` and
//! against meshes of real `mesh up` processes (durable, replicated), in one
//! run, on this machine, with the same flags; prints requests per second,
//! latency percentiles and the mesh/redis ratios.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use mesh_cli::cluster::{Cluster, wait_for};

#[derive(Args)]
pub struct RespBench {
    /// Mesh sizes to measure, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    nodes: Vec<usize>,
    /// redis-benchmark's tests (-t)
    #[arg(long, default_value = "set,get,lpush,rpop")]
    tests: String,
    /// Requests per test (-n)
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Connections (-c)
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Requests pipelined per connection (-P)
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Value size in bytes (-d)
    #[arg(long, default_value_t = 3)]
    data_size: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// One redis-benchmark test's figures, as it printed them (`--csv`).
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub test: String,
    pub requests_per_sec: f64,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub implementation: String,
    pub results: Vec<TestResult>,
}

fn find_tool(name: &str) -> anyhow::Result<String> {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} is not installed: apt-get install redis-server redis-tools (Debian's; the comparison needs both)"
            )
        })
}

/// Parses `redis-benchmark --csv`: a header, then one quoted row per test.
fn parse_csv(text: &str) -> Vec<TestResult> {
    let mut lines = text.lines().filter(|l| l.starts_with('"'));
    let Some(header) = lines.next() else {
        return vec![];
    };
    let cols: Vec<String> = header
        .split(',')
        .map(|c| c.trim_matches('"').to_string())
        .collect();
    let col = |row: &[String], name: &str| -> Option<f64> {
        let i = cols.iter().position(|c| c == name)?;
        row.get(i)?.parse().ok()
    };
    lines
        .map(|l| {
            let row: Vec<String> = l
                .split(',')
                .map(|c| c.trim_matches('"').to_string())
                .collect();
            TestResult {
                test: row.first().cloned().unwrap_or_default(),
                requests_per_sec: col(&row, "rps").unwrap_or(0.0),
                avg_ms: col(&row, "avg_latency_ms"),
                p50_ms: col(&row, "p50_latency_ms"),
                p99_ms: col(&row, "p99_latency_ms"),
            }
        })
        .filter(|r| r.requests_per_sec > 0.0)
        .collect()
}

fn run_benchmark(tool: &str, port: u16, args: &RespBench) -> anyhow::Result<Vec<TestResult>> {
    let out = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", &args.tests])
        .args(["-n", &args.requests.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-P", &args.pipeline.to_string()])
        .args(["-d", &args.data_size.to_string()])
        .arg("--csv")
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let results = parse_csv(&text);
    if !out.status.success() || results.is_empty() {
        anyhow::bail!(
            "redis-benchmark failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(results)
}

fn bench_redis(server: &str, tool: &str, args: &RespBench) -> anyhow::Result<Target> {
    let server = mesh_cli::redis_server::RedisServer::start(server)?;
    let addr = server.addr.clone();
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad redis-server address {addr}"))?;
    Ok(Target {
        implementation: "redis-server (1 process, no persistence)".into(),
        results: run_benchmark(tool, port, args)?,
    })
}

fn bench_mesh(exe: &Path, tool: &str, nodes: usize, args: &RespBench) -> anyhow::Result<Target> {
    let mut c = Cluster::new(exe, "lan", &format!("bench-resp{nodes}"))?;
    let voters = if nodes >= 3 { "3" } else { "1" };
    let extra = ["--resp", "127.0.0.1:0", "--voters", voters];
    let first = c.spawn_with("r0", &[], &extra)?;
    let seed = c.info(first).gossip;
    for i in 1..nodes {
        c.spawn_with(&format!("r{i}"), &[seed], &extra)?;
    }
    let want = nodes.min(3);
    wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        c.converged()
            && c.raft_leader().is_some()
            && (0..nodes).all(|i| c.consensus(i)["voters"].as_array().map(Vec::len) == Some(want))
    })
    .ok_or_else(|| anyhow::anyhow!("{nodes} nodes did not converge within 30 s"))?;
    // The leader's endpoint: what a client that asks `INFO mesh` would pick.
    let leader = c.raft_leader().unwrap_or(first);
    let port = c
        .info(leader)
        .resp
        .ok_or_else(|| anyhow::anyhow!("node without a Redis endpoint"))?
        .port();
    let results = run_benchmark(tool, port, args);
    c.stop_all();
    Ok(Target {
        implementation: format!(
            "mesh ({nodes} node{}, {voters} voter{}, durable; the leader's endpoint)",
            if nodes == 1 { "" } else { "s" },
            if voters == "1" { "" } else { "s" }
        ),
        results: results?,
    })
}

fn f(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.3}"))
}

pub fn run(exe: &Path, args: RespBench) -> anyhow::Result<()> {
    if args.nodes.is_empty() || args.nodes.iter().any(|&n| !(1..=7).contains(&n)) {
        anyhow::bail!("--nodes: sizes of 1 to 7");
    }
    if args.requests == 0 || args.clients == 0 || args.pipeline == 0 {
        anyhow::bail!("--requests, --clients and --pipeline must be at least 1");
    }
    let server = find_tool("redis-server")?;
    let tool = find_tool("redis-benchmark")?;
    eprintln!(
        "redis-benchmark -t {} -n {} -c {} -P {} -d {}",
        args.tests, args.requests, args.clients, args.pipeline, args.data_size
    );
    let redis = bench_redis(&server, &tool, &args)?;
    let mut meshes = Vec::new();
    for &n in &args.nodes {
        meshes.push(bench_mesh(exe, &tool, n, &args)?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "redis": redis,
                "meshes": meshes,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:<58} {:>8} {:>12} {:>8} {:>8} {:>7}",
        "target", "test", "requests/s", "p50 ms", "p99 ms", "ratio"
    );
    for r in &redis.results {
        println!(
            "{:<58} {:>8} {:>12.0} {:>8} {:>8} {:>7}",
            redis.implementation,
            r.test,
            r.requests_per_sec,
            f(r.p50_ms),
            f(r.p99_ms),
            "1.00x"
        );
    }
    for m in &meshes {
        for r in &m.results {
            let base = redis.results.iter().find(|b| b.test == r.test);
            let ratio = base
                .filter(|b| b.requests_per_sec > 0.0)
                .map_or("null".into(), |b| {
                    format!("{:.2}x", r.requests_per_sec / b.requests_per_sec)
                });
            println!(
                "{:<58} {:>8} {:>12.0} {:>8} {:>8} {:>7}",
                m.implementation,
                r.test,
                r.requests_per_sec,
                f(r.p50_ms),
                f(r.p99_ms),
                ratio
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv_is_read() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"813008.12\",\"0.842\",\"0.152\",\"0.807\",\"1.191\",\"1.503\",\"2.575\"\n\"GET\",\"1041666.69\",\"0.651\",\"0.104\",\"0.631\",\"0.903\",\"1.063\",\"1.871\"\n";
        let r = parse_csv(csv);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].test, "SET");
        assert_eq!(r[1].requests_per_sec, 1041666.69);
        assert_eq!(r[0].p50_ms, Some(0.807));
        assert_eq!(r[1].p99_ms, Some(1.063));
        assert!(parse_csv("garbage").is_empty());
    }
}
