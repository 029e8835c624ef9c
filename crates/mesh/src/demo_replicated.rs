//! The replicated half of `mesh demo`: shared memory, agents on different nodes,
//! a proposal decided by their signed votes, then the Raft leader killed with
//! SIGKILL, a new leader elected, and the memory and the decision still there.
//! Every figure printed is measured here or reported by the nodes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::Api;
use mesh_cli::cluster::{Cluster, wait_for};

/// What this half measured, for the demo's summary.
pub struct Measured {
    pub decision_ms: Option<u64>,
    pub participation: Option<f64>,
    pub new_leader_after: Option<Duration>,
    pub first_write_after: Option<Duration>,
}

fn api(c: &Cluster, i: usize) -> Api {
    Api::new(&format!("http://{}", c.info(i).http))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(c: &mut Cluster) -> anyhow::Result<Measured> {
    let n = c.nodes.len();
    println!(
        "== 4. Replicated state: shared memory, agents, a proposal decided by signed votes =="
    );
    let l = wait_for(Duration::from_secs(15), Duration::from_millis(20), || {
        c.raft_leader().is_some()
    })
    .and_then(|_| c.raft_leader())
    .ok_or_else(|| anyhow::anyhow!("no Raft leader within 15 s"))?;
    let s = api(c, l).get("/v1/status")?;
    println!(
        "Raft leader: {} (term {}), voters: {}",
        c.nodes[l].name, s["consensus"]["term"], s["consensus"]["voter_names"]
    );
    let writer = (l + 1) % n;
    api(c, writer).send(
        "PUT",
        "/v1/kv/team/plan",
        b"ship v1 on friday",
        "text/plain",
        None,
    )?;
    println!(
        "{} wrote team/plan = \"ship v1 on friday\" (forwarded to the leader, acknowledged once on a majority)",
        c.nodes[writer].name
    );

    // Three agents on three different nodes, each with its own ed25519 key.
    let keys_dir = std::env::temp_dir().join(format!("mesh-demo-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&keys_dir);
    let agents = [("planner", 0usize), ("coder", 1), ("reviewer", 3 % n)];
    for (id, host) in agents {
        let (key, _) = crate::keys::load_or_create(&keys_dir, id)?;
        api(c, host).post_json(
            "/v1/agents",
            &json!({"id": id, "type": id, "caps": ["rust"],
                    "public_key": mesh_proto::hex::encode(key.verifying_key().as_bytes())}),
        )?;
        println!("agent {id:<9} registered on {}", c.nodes[host].name);
    }
    let proposer = n - 1;
    api(c, proposer).post_json(
        "/v1/proposals",
        &json!({"id": "release-v1", "body": {"action": "release", "version": "1.0"},
                "voters": ["planner", "coder", "reviewer"], "deadline_secs": 60}),
    )?;
    println!(
        "{} opened proposal release-v1 (threshold 2/3 of 3 voters)",
        c.nodes[proposer].name
    );
    // A forged vote: the reviewer's name, signed with the coder's key.
    let coder_key = crate::keys::load(&keys_dir, "coder")?;
    let forged = crate::keys::sign_vote(&coder_key, "release-v1", "reviewer", true, None, 1);
    match api(c, 0).post_json(
        "/v1/proposals/release-v1/votes",
        &json!({"agent_id": "reviewer", "vote": "approve", "seq": 1, "signature": forged}),
    ) {
        Err(e) => println!("forged vote for reviewer refused: {e}"),
        Ok(_) => anyhow::bail!("a forged vote was accepted"),
    }
    let mut decided = Value::Null;
    for (id, host) in [("planner", 0usize), ("coder", 1)] {
        let key = crate::keys::load(&keys_dir, id)?;
        let seq = 1;
        let sig = crate::keys::sign_vote(&key, "release-v1", id, true, Some("tests green"), seq);
        decided = api(c, host).post_json(
            "/v1/proposals/release-v1/votes",
            &json!({"agent_id": id, "vote": "approve", "reason": "tests green", "seq": seq, "signature": sig}),
        )?;
        println!(
            "{id:<9} voted approve through {} (signed; verified on every replica)",
            c.nodes[host].name
        );
    }
    let _ = std::fs::remove_dir_all(&keys_dir);
    println!(
        "proposal release-v1: {} with {} of {} approvals, decided {} ms after it opened, participation {:.0}%\n",
        decided["status"].as_str().unwrap_or("?"),
        decided["approvals"],
        decided["voters"].as_array().map(Vec::len).unwrap_or(0),
        decided["decision_latency_ms"],
        decided["participation"].as_f64().unwrap_or(0.0) * 100.0
    );

    println!("== 5. kill -9 the Raft leader {} ==", c.nodes[l].name);
    let killed_at = Instant::now();
    c.kill_hard(l)?;
    let survivor = (0..n)
        .find(|&i| i != l && c.is_running(i))
        .expect("a survivor");
    let first_write_after = wait_for(Duration::from_secs(15), Duration::from_millis(5), || {
        api(c, survivor)
            .send(
                "PUT",
                "/v1/kv/team/status",
                b"leader lost, still writing",
                "text/plain",
                None,
            )
            .is_ok()
    })
    .map(|_| killed_at.elapsed());
    let new_leader_after = wait_for(Duration::from_secs(15), Duration::from_millis(5), || {
        c.raft_leader().is_some_and(|x| x != l)
    })
    .map(|_| killed_at.elapsed());
    let nl = c.raft_leader();
    println!(
        "new leader: {} (elected and agreed by all survivors within {}); first write accepted {} after the kill",
        nl.map(|i| c.nodes[i].name.clone())
            .unwrap_or_else(|| "none".into()),
        new_leader_after.map(ms).unwrap_or_else(|| "null".into()),
        first_write_after.map(ms).unwrap_or_else(|| "null".into()),
    );
    let plan = api(c, survivor).get("/v1/kv/team/plan")?;
    let p = api(c, survivor).get("/v1/proposals/release-v1")?;
    println!(
        "read through {}: team/plan = {}, release-v1 is {} — the shared memory and the decision survived\n",
        c.nodes[survivor].name,
        plan["value"],
        p["status"].as_str().unwrap_or("?")
    );
    Ok(Measured {
        decision_ms: decided["decision_latency_ms"].as_u64(),
        participation: decided["participation"].as_f64(),
        new_leader_after,
        first_write_after,
    })
}
