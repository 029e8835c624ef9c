//! End-to-end: four real `mesh up --consensus pbft` processes. The same
//! front ends work as on Raft (HTTP shared memory, the Redis endpoint); the
//! primary killed with -9 is replaced by a view change (TOCS 2002 §4.4) and
//! writes go on; restarted, it resumes below its signing reservation,
//! catches up from the others (commit certificates, §4.5) and nobody holds
//! evidence against it; a backup killed and restarted catches up the same
//! way. Nothing acknowledged is lost.
//!
//! Waits are conditions with deadlines, never fixed sleeps.

use std::path::Path;
use std::time::{Duration, Instant};

use mesh_cli::cluster::{Cluster, wait_for};
use mesh_proto::resp::Reply;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

mod common;
use common::redis::Resp;
use common::{http, url};

fn put(c: &Cluster, i: usize, key: &str, value: &str) -> u16 {
    http(
        "PUT",
        &url(c, i, &format!("/v1/kv/e2e/{key}")),
        Some(value.as_bytes()),
    )
    .0
}

/// The value of `key` on node `i` (a linearizable read), if any.
fn get(c: &Cluster, i: usize, key: &str) -> Option<Value> {
    let (code, body) = http("GET", &url(c, i, &format!("/v1/kv/e2e/{key}")), None);
    (code == 200).then(|| body["value"].clone())
}

fn pbft(c: &Cluster, i: usize) -> Value {
    c.consensus(i)["pbft"].clone()
}

/// Every running node has applied as much as the others and holds no evidence.
fn caught_up(c: &Cluster) -> bool {
    let applied: Vec<Option<u64>> = c
        .running()
        .iter()
        .map(|&i| c.consensus(i)["applied_index"].as_u64())
        .collect();
    applied.iter().all(|a| a.is_some() && *a == applied[0])
}

fn no_evidence(c: &Cluster) {
    for i in c.running() {
        // The membership view: every replica trusted.
        let (code, body) = http("GET", &url(c, i, "/v1/members"), None);
        assert_eq!(code, 200);
        for m in body["members"].as_array().unwrap() {
            assert_eq!(m["reputation"], "trusted", "node {i}: {m}");
            assert_eq!(m["evidence"], 0, "node {i}: {m}");
        }
        assert_eq!(
            pbft(c, i)["evidence_total"],
            0,
            "node {i} holds evidence against a correct replica: {}",
            pbft(c, i)
        );
    }
}

#[test]
fn pbft_nodes_serve_every_front_end_and_survive_kills_and_restarts() {
    let mut c = Cluster::start_pbft(
        Path::new(EXE),
        "local",
        "pbft",
        4,
        &["--resp", "127.0.0.1:0"],
    )
    .expect("four pBFT replicas agree on a primary");
    let s = c.consensus(1);
    assert_eq!(s["engine"], "pbft");
    assert_eq!(s["pbft"]["f"], 1);
    assert_eq!(s["voter_names"].as_array().map(Vec::len), Some(4));

    // Shared memory over HTTP on every node, read back on another.
    for k in 0..20 {
        assert_eq!(put(&c, k % 4, &format!("k{k}"), &format!("v{k}")), 200);
    }
    for k in 0..20 {
        assert_eq!(
            get(&c, (k + 1) % 4, &format!("k{k}")),
            Some(Value::String(format!("v{k}")))
        );
    }
    // The Redis endpoint, unchanged on top.
    let mut r = Resp::connect(&c.info(2).resp.expect("resp").to_string());
    assert_eq!(r.cmd(&["INCR", "hits"]), Reply::Int(1));
    let mut r3 = Resp::connect(&c.info(3).resp.expect("resp").to_string());
    assert_eq!(r3.cmd(&["INCR", "hits"]), Reply::Int(2));
    assert!(
        matches!(r3.cmd(&["INFO", "mesh"]), Reply::Bulk(b) if String::from_utf8_lossy(&b).contains("pbft"))
    );

    // §4.4: the primary (n0, replica 0 of view 0) is killed; a write on a
    // backup waits for the view change, then commits.
    assert_eq!(c.raft_leader(), Some(0));
    c.kill_hard(0).unwrap();
    let killed = Instant::now();
    assert_eq!(put(&c, 1, "after-kill", "yes"), 200);
    let took = killed.elapsed();
    eprintln!("a write after the primary's kill took {took:?}");
    let view = pbft(&c, 1)["view"].as_u64().unwrap();
    assert!(view >= 1, "a new view");
    for k in 20..30 {
        assert_eq!(put(&c, 1 + k % 3, &format!("k{k}"), &format!("v{k}")), 200);
    }

    // The old primary restarts from its data directory: it resumes below
    // its reservation, catches up, and serves linearizable reads.
    c.restart(0, &[c.info(1).gossip]).unwrap();
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            // Writes go on while it catches up (they also show it the gap).
            let _ = put(&c, 2, "tick", "x");
            caught_up(&c)
        })
        .is_some(),
        "the restarted replica did not catch up: {:?}",
        c.running().iter().map(|&i| pbft(&c, i)).collect::<Vec<_>>()
    );
    for k in 0..30 {
        assert_eq!(
            get(&c, 0, &format!("k{k}")),
            Some(Value::String(format!("v{k}"))),
            "acknowledged write k{k} on the restarted node"
        );
    }
    assert_eq!(get(&c, 0, "after-kill"), Some(Value::String("yes".into())));
    let log = std::fs::read_to_string(c.nodes[0].data_dir.join("node.log")).unwrap();
    assert!(
        log.contains("pBFT replica restarted"),
        "it resumed from its reservation"
    );
    no_evidence(&c);

    // A backup (not the primary of the current view) is killed and restarted.
    // The restarted replica may have caught up from commit certificates
    // before it learned of the view the others are in (their NEW-VIEW comes
    // with their answer to its next status question): wait until all four
    // name the same primary.
    let mut primary = None;
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        primary = c.raft_leader();
        primary.is_some()
    });
    let primary = primary.unwrap_or_else(|| {
        panic!(
            "the four replicas do not agree on a primary: {:?}",
            c.running().iter().map(|&i| pbft(&c, i)).collect::<Vec<_>>()
        )
    });
    let backup = (0..4).find(|&i| i != primary).unwrap();
    c.kill_hard(backup).unwrap();
    let others: Vec<usize> = (0..4).filter(|&i| i != backup).collect();
    for k in 30..40 {
        assert_eq!(
            put(&c, others[k % 3], &format!("k{k}"), &format!("v{k}")),
            200
        );
    }
    let seed = c.info(primary).gossip;
    c.restart(backup, &[seed]).unwrap();
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            let _ = put(&c, primary, "tick", "y");
            caught_up(&c)
        })
        .is_some(),
        "the restarted backup did not catch up"
    );
    assert_eq!(get(&c, backup, "k39"), Some(Value::String("v39".into())));
    let mut r = Resp::connect(&c.info(backup).resp.expect("resp").to_string());
    assert_eq!(r.cmd(&["INCR", "hits"]), Reply::Int(3));
    no_evidence(&c);
}

/// A power cut: all four replicas killed with -9 at once, then restarted
/// from their data directories. Each restores its stored stable checkpoint
/// (proof and digest checked) and executes its stored batches again, so
/// every acknowledged write is still there although no replica kept it in
/// memory; its stored prepared certificates go into the view change that
/// follows (TOCS 2002 §4.4), and writes go on.
#[test]
fn pbft_nodes_lose_no_acknowledged_write_when_all_stop_at_once() {
    let mut c = Cluster::start_pbft(Path::new(EXE), "local", "pcut", 4, &[])
        .expect("four pBFT replicas agree on a primary");
    // One after another, one sequence number each: past the first
    // checkpoint (K = 128), so a stored checkpoint and the batches after it
    // are both restored.
    for k in 0..150 {
        assert_eq!(put(&c, k % 4, &format!("p{k}"), &format!("v{k}")), 200);
    }
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            (0..4).all(|i| pbft(&c, i)["stored_checkpoint"].as_u64() >= Some(128))
        })
        .is_some(),
        "every replica stores its stable checkpoint: {:?}",
        (0..4).map(|i| pbft(&c, i)).collect::<Vec<_>>()
    );
    for i in 0..4 {
        c.kill_hard(i).unwrap();
    }
    c.restart(0, &[]).unwrap();
    let seed = c.info(0).gossip;
    for i in 1..4 {
        c.restart(i, &[seed]).unwrap();
    }
    for i in 0..4 {
        let p = pbft(&c, i);
        assert_eq!(p["stored_checkpoint"], 128, "node {i}: {p}");
        assert!(p["replayed"].as_u64() >= Some(1), "node {i}: {p}");
        assert!(p["last_executed"].as_u64() >= Some(129), "node {i}: {p}");
    }
    let restarted = Instant::now();
    for k in 0..150 {
        assert_eq!(
            get(&c, (k + 1) % 4, &format!("p{k}")),
            Some(Value::String(format!("v{k}"))),
            "acknowledged write p{k} after the power cut"
        );
    }
    eprintln!(
        "all 150 writes read back {:?} after the restarts",
        restarted.elapsed()
    );
    assert_eq!(put(&c, 2, "after", "cut"), 200);
    assert_eq!(get(&c, 3, "after"), Some(Value::String("cut".into())));
    no_evidence(&c);
}

/// Runs the `mesh` CLI; its standard output, or a panic with its error.
fn mesh(args: &[&str]) -> String {
    let out = std::process::Command::new(EXE)
        .args(args)
        .env_remove("MESH_NODE")
        .output()
        .expect("mesh runs");
    assert!(
        out.status.success(),
        "mesh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Reconfiguration with the CLI (see `pbft::epoch`): a fifth node makes a
/// key; three of the four replicas (2f + 1) vote with `mesh pbft
/// reconfigure` to replace the first by it; the old epoch ends a window
/// later; the newcomer starts from `mesh pbft config` of a member, fetches
/// the state (checked against the old set's signatures) and serves every
/// acknowledged write; the replaced node stops ordering and says so; a
/// member killed with -9 right after the change comes back in the new
/// epoch and catches up in a quiet mesh (see `pbft::catch_up`'s probe).
#[test]
fn pbft_replicas_are_replaced_by_a_committed_reconfiguration() {
    let mut c = Cluster::start_pbft(Path::new(EXE), "local", "rcfg", 4, &[])
        .expect("four pBFT replicas agree on a primary");
    for k in 0..10 {
        assert_eq!(put(&c, k % 4, &format!("r{k}"), &format!("v{k}")), 200);
    }
    let dir = c.nodes[0].data_dir.parent().unwrap().join("rcfg4");
    let line = mesh(&[
        "pbft",
        "keygen",
        "--data-dir",
        dir.to_str().unwrap(),
        "--node-id",
        "rcfg4",
    ]);
    let newcomer: Value = serde_json::from_str(line.trim()).unwrap();
    // The new set: n1, n2, n3 keep their keys (read from their data dirs'
    // genesis entries), n4 joins.
    let genesis: Value = serde_json::from_str(
        &std::fs::read_to_string(
            c.nodes[0]
                .data_dir
                .parent()
                .unwrap()
                .join("pbft-genesis.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut replicas: Vec<String> = genesis["replicas"].as_array().unwrap()[1..]
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["name"].as_str().unwrap(),
                r["key"].as_str().unwrap()
            )
        })
        .collect();
    replicas.push(format!("rcfg4={}", newcomer["key"].as_str().unwrap()));
    let vote = |i: usize| {
        let node = format!("http://{}", c.info(i).http);
        let mut args = vec!["pbft", "reconfigure", "--node", node.as_str()];
        for r in &replicas {
            args.extend(["--replica", r.as_str()]);
        }
        mesh(&args)
    };
    // Bad input changes nothing: a set of three is refused before voting.
    let bad = std::process::Command::new(EXE)
        .args([
            "pbft",
            "reconfigure",
            "--node",
            &format!("http://{}", c.info(1).http),
        ])
        .args([
            "--replica",
            &replicas[0],
            "--replica",
            &replicas[1],
            "--replica",
            &replicas[2],
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 4"));
    assert!(vote(1).contains("vote counted: 1 of the 3"), "first vote");
    assert!(vote(2).contains("vote counted: 2 of the 3"), "second vote");
    let decided = vote(3);
    assert!(decided.contains("decided: epoch 1"), "{decided}");
    // Writes go on across the change; the members reach epoch 1.
    for k in 10..20 {
        assert_eq!(put(&c, 1 + k % 3, &format!("r{k}"), &format!("v{k}")), 200);
    }
    assert!(
        wait_for(Duration::from_secs(60), Duration::from_millis(50), || {
            (1..4).all(|i| pbft(&c, i)["epoch"] == 1)
        })
        .is_some(),
        "the members never reached epoch 1: {:?}",
        (0..4).map(|i| pbft(&c, i)).collect::<Vec<_>>()
    );
    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
            pbft(&c, 0)["retired"] == 1
        })
        .is_some(),
        "the replaced node says it left: {}",
        pbft(&c, 0)
    );
    // The newcomer starts from a member's configuration.
    let config = dir.parent().unwrap().join("epoch1.json");
    mesh(&[
        "pbft",
        "config",
        "--node",
        &format!("http://{}", c.info(1).http),
        "--out",
        config.to_str().unwrap(),
    ]);
    let seed = c.info(1).gossip;
    let args = [
        "--consensus",
        "pbft",
        "--pbft-genesis",
        config.to_str().unwrap(),
    ];
    let n4 = c.spawn_with("rcfg4", &[seed], &args).unwrap();
    for k in 0..20 {
        assert_eq!(
            get(&c, n4, &format!("r{k}")),
            Some(Value::String(format!("v{k}"))),
            "acknowledged write r{k} on the newcomer"
        );
    }
    let p = pbft(&c, n4);
    assert_eq!(
        (p["epoch"].as_u64(), p["replica"].as_u64()),
        (Some(1), Some(3)),
        "{p}"
    );
    assert!(p["state_transfers"].as_u64() >= Some(1), "{p}");
    assert_eq!(put(&c, n4, "from-newcomer", "yes"), 200);
    assert_eq!(
        get(&c, 1, "from-newcomer"),
        Some(Value::String("yes".into()))
    );
    // A member killed with -9 right after the change restarts in epoch 1
    // (its stored configuration wins over the genesis file it is given)
    // and catches up.
    c.kill_hard(2).unwrap();
    c.restart(2, &[seed]).unwrap();
    assert_eq!(pbft(&c, 2)["epoch"], 1);
    let read = wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        get(&c, 2, "from-newcomer") == Some(Value::String("yes".into()))
    });
    if read.is_none() {
        let log = std::fs::read_to_string(c.nodes[2].data_dir.join("node.log")).unwrap_or_default();
        panic!(
            "the restarted member did not catch up: {:?}\n{}",
            (0..c.nodes.len()).map(|i| pbft(&c, i)).collect::<Vec<_>>(),
            log
        );
    }
    assert_eq!(get(&c, 2, "r19"), Some(Value::String("v19".into())));
}
