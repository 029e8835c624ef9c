//! End-to-end: four real `mesh up` processes with `--voters 3`: a dead voter is
//! replaced by the learner after the grace time; then a minority refuses writes
//! with `read_only` while stale reads still work. In its own test binary, so it
//! does not share the CPU with the other end-to-end tests under `cargo test`.
//!
//! Waits are conditions with deadlines, never fixed sleeps.

use std::path::Path;
use std::time::Duration;

use mesh_cli::cluster::{Cluster, wait_for};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_mesh");

mod common;
use common::{http, url};

#[test]
fn a_dead_voter_is_replaced_and_a_minority_is_read_only() {
    let mut c = Cluster::new(Path::new(EXE), "local", "voters").unwrap();
    let extra = ["--voters", "3", "--replace-dead-after", "1s"];
    let n0 = c.spawn_with("v0", &[], &extra).unwrap();
    let seed = c.info(n0).gossip;
    for name in ["v1", "v2", "v3"] {
        c.spawn_with(name, &[seed], &extra).unwrap();
    }
    let names = |v: &Value, k: &str| -> Vec<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect()
    };
    // Three voters and one learner.
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            let s = c.consensus(n0);
            names(&s, "voter_names").len() == 3 && names(&s, "learner_names").len() == 1
        })
        .is_some(),
        "{}",
        c.consensus(n0)
    );
    let s = c.consensus(n0);
    let voters = names(&s, "voter_names");
    let learner = names(&s, "learner_names")[0].clone();
    // Kill a voter that does not lead: after the grace time the learner replaces it.
    let mut l = None;
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        l = c.raft_leader();
        l.is_some()
    })
    .expect("all four nodes agree on a leader");
    let leader_name = c.nodes[l.unwrap()].name.clone();
    let victim_name = voters.iter().find(|v| **v != leader_name).unwrap().clone();
    let victim = c.nodes.iter().position(|n| n.name == victim_name).unwrap();
    c.kill_hard(victim).unwrap();
    let alive: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(20), || {
            let v = names(&c.consensus(alive[0]), "voter_names");
            v.len() == 3 && v.contains(&learner) && !v.contains(&victim_name)
        })
        .is_some(),
        "learner {learner} did not replace dead voter {victim_name}: {}",
        c.consensus(alive[0])
    );
    let (s, _) = http(
        "PUT",
        &url(&c, alive[0], "/v1/kv/ns/after-replacement"),
        Some(b"1"),
    );
    assert_eq!(s, 200);

    // Kill two of the three voters: the last one is a minority and refuses writes.
    let v = names(&c.consensus(alive[0]), "voter_names");
    let voter_idx: Vec<usize> = alive
        .iter()
        .copied()
        .filter(|i| v.contains(&c.nodes[*i].name))
        .collect();
    let last = voter_idx[2];
    // The write was acknowledged by a majority that may not include `last`:
    // wait until its replica has it, so the stale read below has something to show.
    wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        http(
            "GET",
            &url(&c, last, "/v1/kv/ns/after-replacement?stale=true"),
            None,
        )
        .0 == 200
    })
    .expect("the last voter applied the write");
    c.kill_hard(voter_idx[0]).unwrap();
    c.kill_hard(voter_idx[1]).unwrap();
    let refused = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        let (s, v) = http("PUT", &url(&c, last, "/v1/kv/ns/minority"), Some(b"x"));
        s == 503 && v["error"]["code"] == "read_only"
    });
    assert!(
        refused.is_some(),
        "the minority side did not turn read-only"
    );
    // Stale reads still work there.
    let (s, v) = http(
        "GET",
        &url(&c, last, "/v1/kv/ns/after-replacement?stale=true"),
        None,
    );
    assert_eq!((s, v["value"].as_str()), (200, Some("1")));
}
