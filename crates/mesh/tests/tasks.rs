//! End-to-end: three `mesh up` processes, a `mesh worker` on each running real
//! shell commands; a batch of tasks with dependencies; one node and its worker
//! killed with SIGKILL mid-run. Every task still completes exactly once, in
//! dependency order, and the tasks of the dead node ran again elsewhere. Bad
//! input is refused with codes. Auctioned tasks are awarded on the workers'
//! bids. A second test shows rebalancing move queued work from a hot node to a
//! cold one. In its own test binary.
//!
//! Waits are conditions with deadlines, never fixed sleeps.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_cli::cluster::{Cluster, wait_for};
use serde_json::{Value, json};

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

mod common;
use common::{http, members_agree, post, register_agent, three_node_mesh, url, wait_agents};

/// Worker processes, killed when the test ends however it ends.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn task(c: &Cluster, i: usize, id: &str) -> Value {
    http(
        "GET",
        &url(c, i, &format!("/v1/tasks/{id}?stale=true")),
        None,
    )
    .1
}

#[test]
fn tasks_run_once_each_even_when_a_node_dies_mid_run() {
    let mut c = three_node_mesh(EXE, "t");
    let n0 = 0;
    let keys = tempfile_dir("mesh-task-keys");
    let mut workers = Workers(Vec::new());
    for i in 0..3 {
        let child = Command::new(EXE)
            .args([
                "worker",
                "--node",
                &url(&c, i, ""),
                "--id",
                &format!("w{i}"),
            ])
            .args(["--caps", "sh", "--slots", "2", "--lease", "3s"])
            .args([
                "--exec",
                "cat > /dev/null; sleep 0.4; echo \"done-$MESH_TASK_ID-$MESH_TASK_ATTEMPT\"",
            ])
            .env("MESH_KEYS_DIR", &keys)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        workers.0.push(child);
    }
    assert!(wait_agents(&c, n0, 3), "the three workers did not register");

    // Bad input first: each refused with a code, nothing submitted.
    let bad = [
        (json!({"id": "x", "strategy": "fastest"}), "bad_strategy"),
        (json!({"id": "x", "deps": ["x"]}), "invalid"),
        (json!({"id": "x", "priority": "urgent"}), "bad_priority"),
        (json!({"id": "x", "payload_base64": "%%%"}), "bad_base64"),
        (
            json!([{"id": "x", "deps": ["y"]}, {"id": "y", "deps": ["x"]}]),
            "invalid",
        ),
    ];
    for (body, code) in bad {
        let (s, v) = post(&c, n0, "/v1/tasks", body.clone());
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    let (s, _) = http("GET", &url(&c, n0, "/v1/tasks/x"), None);
    assert_eq!(s, 404, "a refused submit left a task behind");

    // A watcher on the event stream of task `a`, opened before it is submitted.
    let events_url = url(&c, n0, "/v1/tasks/events?task=a");
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        use std::io::BufRead;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(40)))
            .build()
            .into();
        let resp = agent.get(&events_url).call().expect("event stream");
        // The node subscribed before it answered: nothing after this is missed.
        let _ = subscribed_tx.send(());
        let mut states = Vec::new();
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(data) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data).expect("event JSON");
                assert_eq!(v["id"], "a", "{v}");
                states.push(v["state"].as_str().unwrap_or("?").to_string());
                if v["state"] == "completed" {
                    break;
                }
            }
        }
        states
    });

    subscribed
        .recv_timeout(Duration::from_secs(10))
        .expect("the event stream answered");

    // A chain a -> b -> c, and twelve independent tasks.
    let mut tasks = vec![
        json!({"id": "a", "caps": ["sh"], "payload_text": "first"}),
        json!({"id": "b", "caps": ["sh"], "deps": ["a"]}),
        json!({"id": "c", "caps": ["sh"], "deps": ["b"]}),
    ];
    for i in 0..12 {
        tasks.push(json!({"id": format!("j{i}"), "caps": ["sh"], "payload": {"n": i}}));
    }
    let ids: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    let (s, v) = post(&c, n0, "/v1/tasks", json!({ "tasks": tasks }));
    assert_eq!(s, 201, "{v}");

    // Kill a node that does not lead, with its worker, while it runs tasks.
    let leader = c.raft_leader().unwrap();
    let victim = (0..3).find(|i| *i != leader).unwrap();
    let victim_agent = format!("w{victim}");
    let mut on_victim = Vec::new();
    assert!(
        wait_for(Duration::from_secs(15), Duration::from_millis(10), || {
            let (_, v) = http(
                "GET",
                &url(
                    &c,
                    leader,
                    &format!("/v1/tasks?agent={victim_agent}&state=running"),
                ),
                None,
            );
            on_victim = v["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["id"].as_str().map(String::from))
                .collect();
            !on_victim.is_empty()
        })
        .is_some(),
        "the victim's worker never ran a task"
    );
    let _ = workers.0[victim].kill();
    c.kill_hard(victim).unwrap();

    // Everything completes, exactly once.
    let alive = leader;
    assert!(
        wait_for(Duration::from_secs(40), Duration::from_millis(50), || {
            ids.iter()
                .all(|id| task(&c, alive, id)["state"] == "completed")
        })
        .is_some(),
        "not every task completed: {:?}",
        ids.iter()
            .map(|id| (id, task(&c, alive, id)["state"].clone()))
            .collect::<Vec<_>>()
    );
    for id in &ids {
        let t = task(&c, alive, id);
        let completions = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] == "completed")
            .count();
        assert_eq!(completions, 1, "{id} completed {completions} times: {t}");
        let attempt = t["attempt"].as_u64().unwrap();
        assert_eq!(
            t["result"].as_str().map(str::trim),
            Some(format!("done-{id}-{attempt}").as_str()),
            "{t}"
        );
    }
    // The dead node's tasks ran again elsewhere, saying why.
    for id in &on_victim {
        let t = task(&c, alive, id);
        assert_ne!(t["agent"].as_str(), Some(victim_agent.as_str()), "{t}");
        let first = &t["attempts"][0];
        assert_eq!(first["agent"].as_str(), Some(victim_agent.as_str()), "{t}");
        assert!(
            first["outcome"]
                .as_str()
                .is_some_and(|o| o.contains("confirmed dead") || o.contains("lease expired")),
            "{t}"
        );
    }
    // Dependency order.
    let finished = |id: &str| task(&c, alive, id)["finished_ms"].as_u64().unwrap();
    let started = |id: &str| {
        task(&c, alive, id)["attempts"][0]["started_ms"]
            .as_u64()
            .unwrap()
    };
    assert!(started("b") >= finished("a") && started("c") >= finished("b"));

    // The event stream told the watcher every step of `a`, in order.
    let states = watcher.join().expect("the watcher");
    assert_eq!(
        states.first().map(String::as_str),
        Some("ready"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "running"), "{states:?}");

    // Auctions: the surviving workers see each announcement on the event
    // stream and bid; the best bid wins (no fallback to plain routing).
    let auctioned: Vec<String> = (0..4).map(|i| format!("auc{i}")).collect();
    let specs: Vec<Value> = auctioned
        .iter()
        .map(|id| json!({"id": id, "caps": ["sh"], "strategy": "auction"}))
        .collect();
    let (s, v) = post(&c, alive, "/v1/tasks", json!({ "tasks": specs }));
    assert_eq!(s, 201, "{v}");
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            auctioned
                .iter()
                .all(|id| task(&c, alive, id)["state"] == "completed")
        })
        .is_some(),
        "the auctioned tasks did not complete"
    );
    for id in &auctioned {
        let t = task(&c, alive, id);
        let won = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["reason"].as_str())
            .find(|r| r.starts_with("auction won with score"));
        let bids: usize = won
            .and_then(|r| r.rsplit(" of ").next())
            .and_then(|r| r.trim_end_matches(" bids").parse().ok())
            .unwrap_or(0);
        assert!(bids >= 1, "{id} was not awarded on a bid: {t}");
        assert_ne!(t["agent"].as_str(), Some(victim_agent.as_str()), "{t}");
    }

    // A completion from an agent that does not hold the task is refused.
    let (s, v) = post(
        &c,
        alive,
        "/v1/tasks/a/complete",
        json!({"agent": "w0", "attempt": 9}),
    );
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&keys);
}

fn tempfile_dir(prefix: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Rebalancing, end to end: a worker on one node runs one task at a time with
/// three more queued for it (its node at 100% of its slots, as it gossips); an
/// agent on another node waits in a long claim (0% of 4 slots) and does not
/// claim again, so it cannot steal. The leader moves the queued tasks to it,
/// and they start for it while it waits. The time from submit to the move is
/// printed (measured, for the notes).
#[test]
fn queued_work_moves_from_a_hot_node_to_a_cold_one() {
    let mut c = Cluster::new(Path::new(EXE), "local", "rebalance").unwrap();
    let n0 = c.spawn("r0", &[]).unwrap();
    let seed = c.info(n0).gossip;
    let n1 = c.spawn("r1", &[seed]).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            c.raft_leader().is_some()
                && (0..2).all(|i| c.consensus(i)["voters"].as_array().map(Vec::len) >= Some(1))
        })
        .is_some(),
        "no mesh"
    );
    let keys = tempfile_dir("mesh-rebalance-keys");
    let mut workers = Workers(Vec::new());
    workers.0.push(
        Command::new(EXE)
            .args(["worker", "--node", &url(&c, n0, ""), "--id", "hot"])
            .args(["--caps", "sh", "--slots", "1", "--lease", "3s"])
            .args(["--exec", "cat > /dev/null; sleep 2; echo ran-on-hot"])
            .env("MESH_KEYS_DIR", &keys)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (s, v) = register_agent(&c, n1, "cold", "test", &["sh"], 7);
    assert_eq!(s, 201, "{v}");
    assert!(wait_agents(&c, n1, 2), "the hot worker did not register");
    // The cold agent waits for up to 30 s in one claim, never claiming again.
    let cold_claim = url(&c, n1, "/v1/tasks/claim");
    let waiter = std::thread::spawn(move || {
        let body = json!({"agent": "cold", "max": 4, "wait": 30.0, "lease_ms": 60_000});
        let started = std::time::Instant::now();
        let (s, v) = http("POST", &cold_claim, Some(body.to_string().as_bytes()));
        (s, v, started.elapsed())
    });
    // The cold claim is open once every node sees the cold node offer 4 slots.
    let cold_node = c.info(n1).node_id.clone();
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            members_agree(&c, 0..2, &cold_node, |m| m["load"]["slots"] == 4)
        })
        .is_some(),
        "the cold node's free slots never showed in the gossip: {} {}",
        http("GET", &url(&c, 0, "/v1/members"), None).1,
        http("GET", &url(&c, 1, "/v1/members"), None).1
    );
    let tasks: Vec<Value> = (0..4)
        .map(
            |i| json!({"id": format!("q{i}"), "caps": ["sh"], "strategy": "steal", "queue": "hot"}),
        )
        .collect();
    let submitted = std::time::Instant::now();
    let (s, v) = post(&c, n0, "/v1/tasks", json!({ "tasks": tasks }));
    assert_eq!(s, 201, "{v}");

    let (s, got, waited) = waiter.join().unwrap();
    assert_eq!(s, 200, "{got}");
    let moved: Vec<String> = got["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    assert!(
        !moved.is_empty() && waited < Duration::from_secs(25),
        "nothing moved to the cold agent: {got}"
    );
    for id in &moved {
        let t = task(&c, n1, id);
        let reasons: Vec<&str> = t["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["reason"].as_str())
            .collect();
        assert!(
            reasons.iter().any(|r| r.starts_with("rebalanced: node")),
            "{id} reached the cold agent without rebalancing: {reasons:?}"
        );
        assert_eq!(t["agent"], "cold", "{t}");
    }
    eprintln!(
        "rebalancing: {} of 4 queued tasks moved to the cold node {} ms after the submit",
        moved.len(),
        submitted.elapsed().as_millis().min(waited.as_millis())
    );
    let _ = std::fs::remove_dir_all(&keys);
}
