//! `mesh bench tasks`: no-op tasks through submit → claim → complete on real,
//! durable node processes, measured from outside.
//!
//! - Throughput: producers submit batches while agents (spread over the nodes)
//!   claim batches and report them done in the same request as their next
//!   claim; tasks completed per second.
//! - Dispatch latency on an idle mesh: an agent waits in a claim; a client
//!   submits one task; from sending the submit to the agent holding the task.
//! - Failover (3 nodes and more): agents hold running tasks; the node of one of
//!   them is killed with SIGKILL; the time until all its tasks run elsewhere,
//!   and whether every task completed exactly once.
//! - Skew: 80% of `steal` tasks go to one agent's queue; idle agents steal; the
//!   load variance (standard deviation / mean of tasks run per agent).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::bench_kv::load::{Conn, latency};
use mesh_cli::cluster::Cluster;

#[derive(Args)]
pub struct TasksBench {
    /// Mesh sizes, comma-separated
    #[arg(long, default_value = "1,3", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// How long the throughput run lasts
    #[arg(long, default_value = "5s")]
    duration: String,
    /// Agents taking tasks
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Tasks per submit and per claim
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Single-task submits for the dispatch latency
    #[arg(long, default_value_t = 200)]
    dispatches: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

async fn call(conn: &mut Conn, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (status, bytes) = conn
        .request(method, path, body.to_string().as_bytes())
        .await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        anyhow::bail!("{method} {path}: HTTP {status}: {v}");
    }
    Ok(v)
}

fn register(http: &str, id: &str, i: usize, cap: &str) -> anyhow::Result<()> {
    let key = ed25519_dalek::SigningKey::from_bytes(&[(i as u8).wrapping_add(1); 32]);
    crate::api::Api::new(&format!("http://{http}")).post_json(
        "/v1/agents",
        &json!({"id": id, "type": "bench", "caps": [cap],
                "public_key": mesh_proto::hex::encode(key.verifying_key().as_bytes())}),
    )?;
    Ok(())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One step of an agent: report what it holds and take more in one request,
/// or, holding nothing, wait for work in a claim (a long-poll). Returns the
/// outcomes accepted, the new tasks and the new cursor.
async fn agent_step(
    conn: &mut Conn,
    agent: &str,
    held: &[Value],
    max: usize,
    wait_secs: f64,
    cursor: u64,
) -> anyhow::Result<(usize, Vec<Value>, u64)> {
    if held.is_empty() {
        let body = json!({"agent": agent, "max": max, "wait": wait_secs, "since": cursor});
        let r = call(conn, "POST", "/v1/tasks/claim", &body).await?;
        let tasks = r["tasks"].as_array().cloned().unwrap_or_default();
        return Ok((0, tasks, r["cursor"].as_u64().unwrap_or(cursor)));
    }
    let outcomes: Vec<Value> = held
        .iter()
        .map(|t| json!({"id": t["id"], "attempt": t["attempt"], "ok": true}))
        .collect();
    let body = json!({"agent": agent, "outcomes": outcomes,
                      "then_claim": {"max": max, "since": cursor}});
    let r = call(conn, "POST", "/v1/tasks/finish", &body).await?;
    let ok = r["outcomes"]
        .as_array()
        .map_or(0, |o| o.iter().filter(|x| x["accepted"] == true).count());
    let tasks = r["claimed"]["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((ok, tasks, r["claimed"]["cursor"].as_u64().unwrap_or(cursor)))
}

/// Agent ids and the HTTP address of the node each is registered on.
type Agents = Vec<(String, String, usize)>;

/// Registers `count` agents named `{prefix}-{i}`, spread over the nodes, each
/// offering the one capability `{prefix}` (so each phase's tasks go to its own
/// agents, whatever an earlier phase left queued).
fn agents_for(prefix: &str, count: usize, addrs: &[String]) -> anyhow::Result<Agents> {
    (0..count)
        .map(|i| {
            let node = i % addrs.len();
            let id = format!("{prefix}-{i}");
            register(&addrs[node], &id, i, prefix)?;
            Ok((id, addrs[node].clone(), node))
        })
        .collect()
}

/// Tasks completed per second, with the agents and two producers.
fn throughput(addrs: &[String], agents: &Agents, batch: usize, run: Duration) -> (u64, u64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt().block_on(async {
        let mut handles = Vec::new();
        for p in 0..2 {
            let (addrs, stop, submitted, completed) = (
                addrs.to_vec(),
                stop.clone(),
                submitted.clone(),
                completed.clone(),
            );
            handles.push(tokio::spawn(async move {
                let mut conn = Conn::new(&addrs[p % addrs.len()]);
                let tasks: Vec<Value> = (0..batch).map(|_| json!({"caps": ["tp"]})).collect();
                let body = json!({ "tasks": tasks });
                while !stop.load(Ordering::Relaxed) {
                    // A bounded backlog: this measures the pipeline, not a queue.
                    let backlog =
                        submitted.load(Ordering::Relaxed) - completed.load(Ordering::Relaxed);
                    if backlog > (batch * 16) as u64 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    if call(&mut conn, "POST", "/v1/tasks", &body).await.is_ok() {
                        submitted.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            }));
        }
        for (agent, http, _) in agents {
            let (agent, http, stop, completed) =
                (agent.clone(), http.clone(), stop.clone(), completed.clone());
            handles.push(tokio::spawn(async move {
                let mut conn = Conn::new(&http);
                let (mut held, mut cursor) = (Vec::new(), 0);
                while !stop.load(Ordering::Relaxed) {
                    match agent_step(&mut conn, &agent, &held, batch, 0.2, cursor).await {
                        Ok((ok, tasks, c)) => {
                            completed.fetch_add(ok as u64, Ordering::Relaxed);
                            (held, cursor) = (tasks, c);
                        }
                        Err(_) => held.clear(),
                    }
                }
            }));
        }
        tokio::time::sleep(run).await;
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let done = completed.load(Ordering::Relaxed);
    (submitted.load(Ordering::Relaxed), done, done as f64 / secs)
}

/// Submit → the waiting agent holds the task, one at a time; microseconds.
/// Also the submit's own acknowledgement (one commit): what dispatch costs
/// beyond it is routing and waking the claim. And, for scale, a `GET /healthz`
/// after the same idle gap: what merely waking an idle machine and node costs
/// for a request that does nothing.
fn dispatch(http: &str, agent: &str, n: usize) -> anyhow::Result<(Vec<u32>, Vec<u32>, Vec<u32>)> {
    rt().block_on(async {
        let mut submitter = Conn::new(http);
        let (mut out, mut acks) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut idle_trip = Vec::with_capacity(n);
        for _ in 0..n {
            tokio::time::sleep(IDLE_GAP).await;
            let t0 = Instant::now();
            let (status, _) = submitter.request("GET", "/healthz", b"").await?;
            idle_trip.push(t0.elapsed().as_micros() as u32);
            anyhow::ensure!(status == 200, "GET /healthz: HTTP {status}");
        }
        let first = json!({"agent": agent, "max": 0});
        let r = call(&mut submitter, "POST", "/v1/tasks/claim", &first).await?;
        let mut cursor = r["cursor"].as_u64().unwrap_or(0);
        for _ in 0..n {
            let (agent_s, http_s) = (agent.to_string(), http.to_string());
            let waiter = tokio::spawn(async move {
                let mut c = Conn::new(&http_s);
                let body = json!({"agent": agent_s, "max": 1, "wait": 5.0, "since": cursor});
                let r = call(&mut c, "POST", "/v1/tasks/claim", &body).await;
                (r, Instant::now())
            });
            // Let the claim open first: on an idle mesh the agent is already
            // waiting. (The gap also lets the mesh go idle between submits.)
            tokio::time::sleep(IDLE_GAP).await;
            let sent = Instant::now();
            let task = json!({"caps": ["dispatch"]});
            call(&mut submitter, "POST", "/v1/tasks", &task).await?;
            let acked = Instant::now();
            let (r, got) = waiter.await?;
            let r = r?;
            cursor = r["cursor"].as_u64().unwrap_or(cursor);
            let t = r["tasks"]
                .get(0)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("the waiting agent got nothing"))?;
            out.push(got.saturating_duration_since(sent).as_micros() as u32);
            acks.push(acked.saturating_duration_since(sent).as_micros() as u32);
            let done = json!({"agent": agent,
                "outcomes": [{"id": t["id"], "attempt": t["attempt"], "ok": true}]});
            call(&mut submitter, "POST", "/v1/tasks/finish", &done).await?;
        }
        Ok((out, acks, idle_trip))
    })
}

/// The pause before each single submit of the dispatch measurement.
const IDLE_GAP: Duration = Duration::from_millis(15);

#[derive(Debug, serde::Serialize)]
struct Failover {
    killed_node: String,
    tasks_on_it: usize,
    recovered_ms: Option<f64>,
    completed_once: usize,
    lost: usize,
    duplicated: usize,
}

/// Agents hold tasks; the node of one (not the Raft leader) is killed; the
/// others, waiting in claims, take its tasks when the mesh confirms it dead.
fn failover(c: &mut Cluster, agents: &Agents) -> anyhow::Result<Failover> {
    let leader = c.raft_leader();
    let (victim, _, victim_node) = agents
        .iter()
        .find(|(_, _, n)| Some(*n) != leader)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no agent on a follower"))?;
    let any = c.info(leader.unwrap_or(0)).http.to_string();
    let per_agent = 8usize;
    let total = per_agent * agents.len();
    let rt = rt();
    let mut holding: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut cursors: BTreeMap<String, u64> = BTreeMap::new();
    rt.block_on(async {
        let mut conn = Conn::new(&any);
        let tasks: Vec<Value> = (0..total)
            .map(|i| json!({"id": format!("fo-{i}"), "caps": ["fo"]}))
            .collect();
        call(&mut conn, "POST", "/v1/tasks", &json!({ "tasks": tasks })).await?;
        for (agent, http, _) in agents {
            let mut c = Conn::new(http);
            let body = json!({"agent": agent, "max": per_agent, "lease_ms": 30_000});
            let r = call(&mut c, "POST", "/v1/tasks/claim", &body).await?;
            holding.insert(
                agent.clone(),
                r["tasks"].as_array().cloned().unwrap_or_default(),
            );
            cursors.insert(agent.clone(), r["cursor"].as_u64().unwrap_or(0));
        }
        anyhow::Ok(())
    })?;
    let on_victim: Vec<String> = holding[&victim]
        .iter()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    let killed_at = Instant::now();
    c.kill_hard(victim_node)?;
    let survivors: Vec<(String, String)> = agents
        .iter()
        .filter(|(a, _, _)| *a != victim)
        .map(|(a, h, _)| (a.clone(), h.clone()))
        .collect();
    let (recovered, completions) = rt.block_on(async {
        let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
        let mut completions: BTreeMap<String, usize> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut handles = Vec::new();
        let all_done = Arc::new(AtomicU64::new(0));
        for (agent, http) in survivors {
            let all_done = all_done.clone();
            let mut held = holding.remove(&agent).unwrap_or_default();
            let mut cursor = cursors[&agent];
            handles.push(tokio::spawn(async move {
                let mut conn = Conn::new(&http);
                let mut got: Vec<(String, Instant)> = Vec::new();
                let mut done: Vec<String> = Vec::new();
                while Instant::now() < deadline {
                    let ids: Vec<String> = held
                        .iter()
                        .filter_map(|t| t["id"].as_str().map(String::from))
                        .collect();
                    let Ok((ok, tasks, c)) =
                        agent_step(&mut conn, &agent, &held, 64, 0.2, cursor).await
                    else {
                        continue;
                    };
                    if ok == ids.len() {
                        all_done.fetch_add(ok as u64, Ordering::Relaxed);
                        done.extend(ids);
                    }
                    for t in &tasks {
                        got.push((
                            t["id"].as_str().unwrap_or_default().to_string(),
                            Instant::now(),
                        ));
                    }
                    (held, cursor) = (tasks, c);
                    if held.is_empty() && all_done.load(Ordering::Relaxed) >= total as u64 {
                        break;
                    }
                }
                (got, done)
            }));
        }
        for h in handles {
            if let Ok((got, done)) = h.await {
                for (id, at) in got {
                    seen.entry(id).or_insert(at);
                }
                for id in done {
                    *completions.entry(id).or_default() += 1;
                }
            }
        }
        let recovered = on_victim
            .iter()
            .map(|id| seen.get(id).map(|at| at.duration_since(killed_at)))
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        (recovered, completions)
    });
    let fo_ids: Vec<String> = (0..total).map(|i| format!("fo-{i}")).collect();
    let lost = fo_ids
        .iter()
        .filter(|id| !completions.contains_key(*id))
        .count();
    let duplicated = fo_ids
        .iter()
        .filter(|id| completions.get(*id).is_some_and(|n| *n > 1))
        .count();
    Ok(Failover {
        killed_node: c.info(victim_node).node_id.clone(),
        tasks_on_it: on_victim.len(),
        recovered_ms: recovered.map(|d| d.as_secs_f64() * 1e3),
        completed_once: fo_ids
            .iter()
            .filter(|id| completions.get(*id) == Some(&1))
            .count(),
        lost,
        duplicated,
    })
}

/// 80% of `steal` tasks to one agent's queue, 10 ms of work each (stealing balances work, so the work must outweigh a request); every agent
/// claims one at a time. Returns the tasks each ran and the load variance.
fn skew(
    addrs: &[String],
    agents: &Agents,
    total: usize,
) -> anyhow::Result<(Vec<(String, usize)>, f64)> {
    let hot = agents[0].0.clone();
    rt().block_on(async {
        let mut conn = Conn::new(&addrs[0]);
        let specs: Vec<Value> = (0..total)
            .map(|i| {
                let queue = if i % 5 != 4 {
                    hot.clone()
                } else {
                    agents[1 + i % (agents.len() - 1)].0.clone()
                };
                json!({"caps": ["skew"], "strategy": "steal", "queue": queue})
            })
            .collect();
        for chunk in specs.chunks(1000) {
            call(&mut conn, "POST", "/v1/tasks", &json!({ "tasks": chunk })).await?;
        }
        let done = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for (agent, http, _) in agents {
            let (agent, http, done) = (agent.clone(), http.clone(), done.clone());
            handles.push(tokio::spawn(async move {
                let mut conn = Conn::new(&http);
                let (mut held, mut cursor, mut ran) = (Vec::new(), 0, 0usize);
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    if !held.is_empty() {
                        // The work: stealing balances work, not requests.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let Ok((ok, tasks, c)) =
                        agent_step(&mut conn, &agent, &held, 1, 0.1, cursor).await
                    else {
                        break;
                    };
                    ran += ok;
                    done.fetch_add(ok as u64, Ordering::Relaxed);
                    (held, cursor) = (tasks, c);
                    if held.is_empty() && done.load(Ordering::Relaxed) >= total as u64 {
                        break;
                    }
                }
                (agent, ran)
            }));
        }
        let mut per = Vec::new();
        for h in handles {
            per.push(h.await?);
        }
        let n = per.len() as f64;
        let mean = per.iter().map(|(_, r)| *r as f64).sum::<f64>() / n;
        let var = per
            .iter()
            .map(|(_, r)| (*r as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        Ok((per, var.sqrt() / mean))
    })
}

pub fn run(args: TasksBench) -> anyhow::Result<()> {
    if args.agents < 2 || args.batch == 0 || args.nodes.contains(&0) {
        anyhow::bail!("--agents must be at least 2; --batch and --nodes at least 1");
    }
    let duration = Duration::from_millis(
        mesh_proto::units::parse_duration_ms(&args.duration)
            .map_err(|e| anyhow::anyhow!("--duration: {e}"))?,
    );
    let mut report = Vec::new();
    for &n in &args.nodes {
        let mut c = crate::bench_kv::start_cluster(n, "tasks")?;
        let addrs: Vec<String> = c
            .running()
            .iter()
            .map(|&i| c.info(i).http.to_string())
            .collect();
        // First, while the mesh is idle (the target is for an idle mesh).
        eprintln!(
            "  {n} node(s): dispatch latency, {} single submits",
            args.dispatches
        );
        let (d, ack, idle) = dispatch(
            &addrs[0],
            &agents_for("dispatch", 1, &addrs)?[0].0,
            args.dispatches,
        )?;
        let (d, ack, idle) = (latency(d), latency(ack), latency(idle));
        let tp = agents_for("tp", args.agents, &addrs)?;
        eprintln!(
            "  {n} node(s): throughput run, {} agents, batches of {}",
            args.agents, args.batch
        );
        let (submitted, completed, per_sec) = throughput(&addrs, &tp, args.batch, duration);
        eprintln!("  {n} node(s): skewed submissions with stealing");
        let (per_agent, variance) = skew(&addrs, &agents_for("skew", args.agents, &addrs)?, 1_000)?;
        let fo = if n >= 3 {
            eprintln!("  {n} node(s): kill -9 of a node with running tasks");
            Some(failover(&mut c, &agents_for("fo", args.agents, &addrs)?)?)
        } else {
            None
        };
        let rss: Vec<Option<f64>> = c
            .running()
            .iter()
            .map(|&i| c.resident_bytes(i).map(|b| b as f64 / (1024.0 * 1024.0)))
            .collect();
        report.push(json!({
            "nodes": n, "agents": args.agents, "batch": args.batch,
            "submitted": submitted, "completed": completed, "tasks_per_sec": per_sec,
            "dispatch_p50_ms": d.p50_ms, "dispatch_p99_ms": d.p99_ms,
            "submit_ack_p50_ms": ack.p50_ms,
            "idle_healthz_p50_ms": idle.p50_ms,
            "skew_tasks_per_agent": per_agent, "load_variance": variance,
            "failover": fo, "rss_mib": rss,
        }));
        c.stop_all();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("bench tasks: no-op tasks, submit -> claim -> complete, durable nodes on loopback");
    println!(
        "(dispatch, submit and healthz: one request after {} ms idle each; healthz does nothing, so it is the cost of waking the machine and node)",
        IDLE_GAP.as_millis()
    );
    println!(
        "{:>5} {:>11} {:>10} {:>11} {:>13} {:>13} {:>13} {:>13} {:>9}",
        "nodes",
        "submitted",
        "completed",
        "tasks/s",
        "dispatch p50",
        "dispatch p99",
        "submit p50",
        "healthz p50",
        "variance"
    );
    for r in &report {
        println!(
            "{:>5} {:>11} {:>10} {:>11.0} {:>10.2} ms {:>10.2} ms {:>10.2} ms {:>10.2} ms {:>8.1}%",
            r["nodes"],
            r["submitted"],
            r["completed"],
            r["tasks_per_sec"].as_f64().unwrap_or(0.0),
            r["dispatch_p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["dispatch_p99_ms"].as_f64().unwrap_or(f64::NAN),
            r["submit_ack_p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["idle_healthz_p50_ms"].as_f64().unwrap_or(f64::NAN),
            r["load_variance"].as_f64().unwrap_or(f64::NAN) * 100.0
        );
    }
    for r in &report {
        let n = r["nodes"].as_u64().unwrap_or(0);
        let per = r["tasks_per_sec"].as_f64().unwrap_or(0.0);
        let want = if n == 1 { 50_000.0 } else { 20_000.0 };
        println!(
            "target: {n} node(s) >= {want:.0} tasks/s: {} ({per:.0})",
            if per >= want { "met" } else { "NOT met" }
        );
        let p50 = r["dispatch_p50_ms"].as_f64();
        println!(
            "target: {n} node(s) dispatch p50 <= 1 ms: {} ({})",
            if p50.is_some_and(|x| x <= 1.0) {
                "met"
            } else {
                "NOT met"
            },
            p50.map(|x| format!("{x:.2} ms")).unwrap_or("-".into())
        );
        let v = r["load_variance"].as_f64().unwrap_or(f64::NAN);
        println!(
            "target: {n} node(s) skewed load variance <= 5% with stealing: {} ({:.1}%; tasks per agent {})",
            if v <= 0.05 { "met" } else { "NOT met" },
            v * 100.0,
            r["skew_tasks_per_agent"]
        );
        if let Some(f) = r["failover"].as_object() {
            let ms = f["recovered_ms"].as_f64();
            println!(
                "target: {n} node(s) killed node's tasks running elsewhere <= 3 s: {} ({}; {} tasks on {}; lost {}, duplicated {})",
                if ms.is_some_and(|x| x <= 3000.0) && f["lost"] == 0 && f["duplicated"] == 0 {
                    "met"
                } else {
                    "NOT met"
                },
                ms.map(|x| format!("{x:.0} ms"))
                    .unwrap_or("not recovered".into()),
                f["tasks_on_it"],
                f["killed_node"],
                f["lost"],
                f["duplicated"]
            );
        }
        println!("resident memory per node (MiB): {}", r["rss_mib"]);
    }
    Ok(())
}
