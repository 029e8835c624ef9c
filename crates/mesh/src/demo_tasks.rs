//! The tasks part of `mesh demo`: `mesh worker` processes on three nodes with
//! different capabilities run a batch of real shell tasks with dependencies;
//! one node and its worker are killed with SIGKILL mid-run; every task still
//! completes once, and the summary shows who ran what, how long the dead
//! node's tasks took to run again, and the load variance. Every figure is
//! measured here or reported by the nodes.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::Api;
use mesh_cli::cluster::{Cluster, wait_for};

/// What this part measured, for the demo's summary.
pub struct Measured {
    pub tasks: usize,
    pub all_done: Option<Duration>,
    pub recovered_ms: Option<u64>,
    pub load_variance: Option<f64>,
}

/// Worker processes, stopped when the demo ends however it ends.
struct Workers(Vec<(usize, Child)>);

impl Drop for Workers {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn api(c: &Cluster, i: usize) -> Api {
    Api::new(&format!("http://{}", c.info(i).http))
}

pub fn run(c: &mut Cluster) -> anyhow::Result<Measured> {
    println!(
        "\n== 6. Tasks that really run: workers with different capabilities, a node killed mid-run =="
    );
    let exe = std::env::current_exe()?;
    let keys = std::env::temp_dir().join(format!("mesh-demo-worker-keys-{}", std::process::id()));
    let leader = c
        .raft_leader()
        .ok_or_else(|| anyhow::anyhow!("no Raft leader"))?;
    let nodes: Vec<usize> = c.running();
    // Three workers on three nodes that are not the leader (the kill below is
    // about tasks, not elections); capabilities differ.
    let hosts: Vec<usize> = nodes
        .iter()
        .copied()
        .filter(|i| *i != leader)
        .take(3)
        .collect();
    if hosts.len() < 3 {
        anyhow::bail!("need three running nodes besides the leader");
    }
    let caps = ["sh,build", "sh,test", "sh,build,test"];
    let mut workers = Workers(Vec::new());
    for (k, &i) in hosts.iter().enumerate() {
        let id = format!("worker-{}", c.nodes[i].name);
        let child = Command::new(&exe)
            .args(["worker", "--node", &format!("http://{}", c.info(i).http)])
            .args(["--id", &id, "--caps", caps[k], "--slots", "2", "--lease", "3s"])
            .args([
                "--exec",
                "cat > /dev/null; sleep 0.3; echo \"$MESH_TASK_ID ran on $(hostname) as attempt $MESH_TASK_ATTEMPT\"",
            ])
            .env("MESH_KEYS_DIR", &keys)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        println!("{id}: caps [{}], 2 slots", caps[k]);
        workers.0.push((i, child));
    }
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        api(c, leader)
            .get("/v1/agents?stale=true")
            .ok()
            .and_then(|a| {
                a["agents"].as_array().map(|v| {
                    v.iter()
                        .filter(|x| x["id"].as_str().is_some_and(|s| s.starts_with("worker-")))
                        .count()
                })
            })
            == Some(3)
    })
    .ok_or_else(|| anyhow::anyhow!("the workers did not register within 10 s"))?;

    // build-1..6 (caps build), test-i after build-i (caps test), report after all tests.
    let mut tasks = Vec::new();
    for i in 1..=6 {
        tasks
            .push(json!({"id": format!("build-{i}"), "caps": ["build"], "payload": {"module": i}}));
        tasks.push(
            json!({"id": format!("test-{i}"), "caps": ["test"], "deps": [format!("build-{i}")]}),
        );
    }
    let tests: Vec<String> = (1..=6).map(|i| format!("test-{i}")).collect();
    tasks.push(json!({"id": "report", "caps": ["sh"], "deps": tests, "priority": "high"}));
    let ids: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let submitted = Instant::now();
    api(c, leader).post_json("/v1/tasks", &json!({ "tasks": tasks }))?;
    println!(
        "submitted {} tasks: build-1..6 -> test-1..6 -> report",
        ids.len()
    );

    // Kill a node whose worker runs tasks right now, with its worker: one that
    // is not a Raft voter, so the log keeps its majority.
    let voters: Vec<String> = api(c, leader).get("/v1/status")?["consensus"]["voter_names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let mut victim = None;
    wait_for(Duration::from_secs(10), Duration::from_millis(5), || {
        for (i, _) in &workers.0 {
            if voters.contains(&c.nodes[*i].name) {
                continue;
            }
            let agent = format!("worker-{}", c.nodes[*i].name);
            let r =
                api(c, leader).get(&format!("/v1/tasks?agent={agent}&state=running&stale=true"));
            if r.is_ok_and(|r| r["tasks"].as_array().is_some_and(|t| !t.is_empty())) {
                victim = Some(*i);
                return true;
            }
        }
        false
    });
    let victim = victim
        .ok_or_else(|| anyhow::anyhow!("no worker on a non-voter started a task within 10 s"))?;
    let running: Vec<String> = api(c, leader).get(&format!(
        "/v1/tasks?agent=worker-{}&state=running&stale=true",
        c.nodes[victim].name
    ))?["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    if let Some((_, w)) = workers.0.iter_mut().find(|(i, _)| *i == victim) {
        let _ = w.kill();
    }
    c.kill_hard(victim)?;
    println!(
        "killed {} (SIGKILL) and its worker while it ran [{}]",
        c.nodes[victim].name,
        running.join(", ")
    );

    let done = |c: &Cluster| -> bool {
        ids.iter().all(|id| {
            api(c, leader)
                .get(&format!("/v1/tasks/{id}?stale=true"))
                .is_ok_and(|t| t["state"] == "completed")
        })
    };
    let all_done = wait_for(Duration::from_secs(60), Duration::from_millis(50), || {
        done(c)
    })
    .map(|_| submitted.elapsed());
    let mut ran: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut once = true;
    for id in &ids {
        let t: Value = api(c, leader).get(&format!("/v1/tasks/{id}?stale=true"))?;
        let completions = t["history"].as_array().map_or(0, |h| {
            h.iter().filter(|x| x["state"] == "completed").count()
        });
        once &= completions == 1;
        let agent = t["agent"].as_str().unwrap_or("?").to_string();
        let tries = t["attempt"].as_u64().unwrap_or(0);
        let label = if tries > 1 {
            format!("{id} (attempt {tries})")
        } else {
            id.clone()
        };
        ran.entry(agent).or_default().push(label);
    }
    for (agent, list) in &ran {
        println!("  {agent} ran {}: {}", list.len(), list.join(", "));
    }
    let counts: Vec<f64> = ran.values().map(|v| v.len() as f64).collect();
    let mean = counts.iter().sum::<f64>() / counts.len().max(1) as f64;
    let load_variance = (mean > 0.0).then(|| {
        (counts.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / counts.len() as f64).sqrt() / mean
    });
    let status = api(c, leader).get("/v1/status")?;
    let recovered_ms = status["tasks"]["recovery"]["recovered_ms"].as_u64();
    println!(
        "every task completed {}; the dead node's tasks ran again elsewhere {} after it was confirmed dead",
        if once && all_done.is_some() {
            "exactly once"
        } else {
            "NOT exactly once"
        },
        recovered_ms
            .map(|x| format!("{x} ms"))
            .unwrap_or_else(|| "(not measured)".into())
    );
    let _ = std::fs::remove_dir_all(&keys);
    Ok(Measured {
        tasks: ids.len(),
        all_done,
        recovered_ms,
        load_variance,
    })
}
