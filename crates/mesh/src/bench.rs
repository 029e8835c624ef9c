//! `mesh bench membership`: failure detection of real processes on loopback.
//!
//! For each mesh size, start the nodes, wait until they converge, then repeat:
//! `kill -9` one node, time the first confirmed death and the moment every
//! survivor agrees (from the nodes' own event records), restart it, wait for
//! convergence. Prints median / min / max over the trials, the targets, and idle
//! CPU and memory per node. With `--peer memberlist` the same harness also runs
//! hashicorp/memberlist (Debian's package, stock `DefaultLANConfig`, through the
//! small Go program in `bench/memberlist-peer`) and prints both side by side with
//! ratios.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;

use mesh_cli::cluster::{Cluster, wait_for};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Crash detection time of real `mesh up` processes on loopback.
    Membership(MembershipBench),
    /// Replicated write latency, throughput and leader failover of real node processes.
    Kv(crate::bench_kv::KvBench),
    /// Tasks through submit, claim and complete: throughput, dispatch latency, skew with stealing, node kill.
    Tasks(crate::bench_tasks::TasksBench),
    /// Pub/sub across the mesh: publish-to-delivery latency and messages/s, beside redis-server.
    Pubsub(crate::bench_pubsub::PubsubBench),
    /// MCP tool call round trips through `mesh mcp` over stdio, beside the HTTP calls they make.
    Mcp(crate::bench_mcp::McpBench),
    /// redis-benchmark against redis-server and against meshes (1 and 3 nodes), with ratios.
    Resp(crate::bench_resp::RespBench),
}

#[derive(Args)]
struct MembershipBench {
    /// Mesh sizes to measure, comma-separated
    #[arg(long, default_value = "5,20", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Kills per mesh size
    #[arg(long, default_value_t = 7)]
    trials: usize,
    /// Timing profile of the nodes
    #[arg(long, default_value = "lan")]
    profile: String,
    /// Also measure a peer implementation in the same run: `memberlist`
    /// (built from Debian's golang-go and golang-github-hashicorp-memberlist-dev,
    /// installed on first use)
    #[arg(long, value_parser = ["memberlist"])]
    peer: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Spread {
    median_ms: Option<f64>,
    min_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn spread(mut v: Vec<f64>) -> Spread {
    if v.is_empty() {
        return Spread {
            median_ms: None,
            min_ms: None,
            max_ms: None,
        };
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Spread {
        median_ms: Some(median),
        min_ms: v.first().copied(),
        max_ms: v.last().copied(),
    }
}

#[derive(Debug, Serialize)]
struct SizeResult {
    implementation: String,
    nodes: usize,
    trials: usize,
    detected: usize,
    first_suspicion: Spread,
    first_detection: Spread,
    full_agreement: Spread,
    false_positives: usize,
    idle_cpu_percent: Spread,
    idle_resident_mib: Spread,
    converge_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_size(
    exe: &std::path::Path,
    implementation: &str,
    n: usize,
    trials: usize,
    profile: &str,
) -> anyhow::Result<SizeResult> {
    let mut c = Cluster::new(exe, profile, &format!("bench-{implementation}-{n}"))?;
    let seed = c.spawn("b1", &[])?;
    let seed_addr = c.info(seed).gossip;
    for i in 2..=n {
        c.spawn(&format!("b{i}"), &[seed_addr])?;
    }
    let converge = wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        c.converged()
    })
    .ok_or_else(|| anyhow::anyhow!("{n} nodes did not converge within 30 s"))?;

    // Idle figures: CPU time each process used over a 10 s quiet window (from
    // /proc, 10 ms resolution, so 0.1% here), and its resident memory after it.
    const IDLE_WINDOW: Duration = Duration::from_secs(10);
    let before: Vec<Option<u64>> = (0..n).map(|i| c.cpu_ticks(i)).collect();
    let window_start = Instant::now();
    let _ = wait_for(IDLE_WINDOW, Duration::from_millis(500), || {
        window_start.elapsed() >= IDLE_WINDOW
    });
    let secs = window_start.elapsed().as_secs_f64();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for (i, b) in before.iter().enumerate() {
        if let (Some(b), Some(a)) = (b, c.cpu_ticks(i)) {
            cpu.push((a - b) as f64 / 100.0 / secs * 100.0);
        }
        if let Some(x) = c.resident_bytes(i) {
            rss.push(x as f64 / 1048576.0);
        }
    }

    let (mut suspicion, mut detection, mut agreement) = (Vec::new(), Vec::new(), Vec::new());
    let mut false_positives = 0;
    for t in 0..trials {
        let victim = 1 + t % (n - 1);
        let name = c.nodes[victim].name.clone();
        let generation = c.info(victim).generation;
        let survivors: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
        let killed = Instant::now();
        c.kill_hard(victim)?;
        let all = wait_for(Duration::from_secs(20), Duration::from_millis(25), || {
            survivors.iter().all(|&s| {
                c.events_about(s, &name, generation)
                    .is_ok_and(|e| e.iter().any(|e| e.kind == "dead"))
            })
        });
        if all.is_some() {
            let mut deads = Vec::new();
            let mut susp = Vec::new();
            for &s in &survivors {
                let ev = c.events_about(s, &name, generation)?;
                if let Some(e) = ev.iter().find(|e| e.kind == "dead") {
                    deads.push(ms(e.at.saturating_duration_since(killed)));
                }
                if let Some(e) = ev.iter().find(|e| e.kind == "suspected") {
                    susp.push(ms(e.at.saturating_duration_since(killed)));
                }
            }
            detection.push(deads.iter().copied().fold(f64::INFINITY, f64::min));
            agreement.push(deads.iter().copied().fold(0.0, f64::max));
            if !susp.is_empty() {
                suspicion.push(susp.iter().copied().fold(f64::INFINITY, f64::min));
            }
        }
        // Healthy nodes declared dead during this trial.
        for &s in &survivors {
            for &o in &survivors {
                if o != s {
                    let g = c.info(o).generation;
                    if c.events_about(s, &c.nodes[o].name.clone(), g)
                        .is_ok_and(|e| e.iter().any(|e| e.kind == "dead"))
                    {
                        false_positives += 1;
                    }
                }
            }
        }
        c.restart(victim, &[seed_addr])?;
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            c.converged()
        })
        .ok_or_else(|| anyhow::anyhow!("{n} nodes did not reconverge after restarting {name}"))?;
    }
    c.stop_all();
    Ok(SizeResult {
        implementation: implementation.to_string(),
        nodes: n,
        trials,
        detected: detection.len(),
        first_suspicion: spread(suspicion),
        first_detection: spread(detection),
        full_agreement: spread(agreement),
        false_positives,
        idle_cpu_percent: spread(cpu),
        idle_resident_mib: spread(rss),
        converge_ms: ms(converge),
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let a = match args.what {
        BenchWhat::Membership(a) => a,
        BenchWhat::Kv(k) => return crate::bench_kv::run(k),
        BenchWhat::Tasks(t) => return crate::bench_tasks::run(t),
        BenchWhat::Pubsub(p) => return crate::bench_pubsub::run(&std::env::current_exe()?, p),
        BenchWhat::Mcp(m) => return crate::bench_mcp::run(&std::env::current_exe()?, m),
        BenchWhat::Resp(r) => return crate::bench_resp::run(&std::env::current_exe()?, r),
    };
    if a.trials == 0 {
        anyhow::bail!("--trials must be at least 1");
    }
    if a.nodes.iter().any(|&n| !(3..=64).contains(&n)) {
        anyhow::bail!("--nodes values must be between 3 and 64 (one machine, real processes)");
    }
    let ours = std::env::current_exe()?;
    let peer = match a.peer.as_deref() {
        Some("memberlist") => Some(build_memberlist_peer()?),
        _ => None,
    };
    let mut results = Vec::new();
    for &n in &a.nodes {
        eprintln!("measuring agent-mesh with {n} nodes, {} kills…", a.trials);
        results.push(bench_size(&ours, "agent-mesh", n, a.trials, &a.profile)?);
        if let Some(p) = &peer {
            eprintln!("measuring memberlist with {n} nodes, {} kills…", a.trials);
            results.push(bench_size(p, "memberlist", n, a.trials, &a.profile)?);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    let f = |v: Option<f64>| {
        v.map(|x| format!("{x:.0}"))
            .unwrap_or_else(|| "null".into())
    };
    println!(
        "membership failure detection, real processes on loopback (agent-mesh profile {})",
        a.profile
    );
    println!(
        "{:<11} {:>5} {:>6} {:>22} {:>22} {:>10} {:>4} {:>10} {:>8}",
        "impl",
        "nodes",
        "kills",
        "first detection ms",
        "all agree ms",
        "suspect ms",
        "FP",
        "idle cpu%",
        "RSS MiB"
    );
    println!(
        "{:<11} {:>5} {:>6} {:>22} {:>22} {:>10}",
        "", "", "", "median (min-max)", "median (min-max)", "median"
    );
    for r in &results {
        println!(
            "{:<11} {:>5} {:>6} {:>22} {:>22} {:>10} {:>4} {:>10} {:>8}",
            r.implementation,
            r.nodes,
            format!("{}/{}", r.detected, r.trials),
            format!(
                "{} ({}-{})",
                f(r.first_detection.median_ms),
                f(r.first_detection.min_ms),
                f(r.first_detection.max_ms)
            ),
            format!(
                "{} ({}-{})",
                f(r.full_agreement.median_ms),
                f(r.full_agreement.min_ms),
                f(r.full_agreement.max_ms)
            ),
            f(r.first_suspicion.median_ms),
            r.false_positives,
            r.idle_cpu_percent
                .median_ms
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "null".into()),
            r.idle_resident_mib
                .median_ms
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "null".into()),
        );
    }
    if peer.is_some() {
        println!(
            "\nratios, memberlist / agent-mesh (medians; above 1 means agent-mesh is faster):"
        );
        for &n in &a.nodes {
            let get = |imp: &str| {
                results
                    .iter()
                    .find(|r| r.nodes == n && r.implementation == imp)
            };
            if let (Some(o), Some(p)) = (get("agent-mesh"), get("memberlist")) {
                let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
                    (Some(x), Some(y)) if x > 0.0 => format!("{:.2}x", y / x),
                    _ => "null".into(),
                };
                println!(
                    "  {n:>3} nodes: first detection {}, all agree {}",
                    ratio(o.first_detection.median_ms, p.first_detection.median_ms),
                    ratio(o.full_agreement.median_ms, p.full_agreement.median_ms)
                );
            }
        }
    }
    println!(
        "targets (agent-mesh): first detection median <= 1000 ms, agreement median <= 1500 ms"
    );
    Ok(())
}

/// Builds the memberlist peer with `bench/memberlist-peer/build.sh`.
fn build_memberlist_peer() -> anyhow::Result<std::path::PathBuf> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/memberlist-peer/build.sh");
    if !script.exists() {
        anyhow::bail!(
            "{} not found: --peer memberlist needs the source tree",
            script.display()
        );
    }
    let out = std::env::temp_dir().join("mesh-memberlist-peer");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        anyhow::bail!("building the memberlist peer failed ({status})");
    }
    Ok(out)
}
