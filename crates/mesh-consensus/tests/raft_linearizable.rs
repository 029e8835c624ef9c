//! Concurrent clients read and write a few keys through whichever node leads,
//! while the leader is repeatedly cut off and healed. The recorded history of
//! every key must be linearizable (reads go through openraft's read-index).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_consensus::raft::{NodeId, RaftOrdering};
mod common;
use common::{History, recorded_read, recorded_write};

use mesh_sim::linearizability::check_register;
use openraft::ServerState;

fn leader(nodes: &BTreeMap<NodeId, RaftOrdering>) -> Option<RaftOrdering> {
    nodes
        .values()
        .find(|o| o.raft().metrics().borrow().state == ServerState::Leader)
        .cloned()
}

async fn client(
    id: u64,
    nodes: Arc<BTreeMap<NodeId, RaftOrdering>>,
    history: History,
    start: Instant,
    until: Instant,
) {
    let mut n = 0u64;
    let now = || start.elapsed().as_micros() as u64;
    // Paced, bounded load: the checker's search grows fast with per-key history.
    while Instant::now() < until && n < 80 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        n += 1;
        let key = format!("k{}", (id * 7 + n) % 6);
        let Some(l) = leader(&nodes) else {
            tokio::task::yield_now().await;
            continue;
        };
        let limit = Duration::from_millis(300);
        if n.is_multiple_of(2) {
            let value = format!("c{id}-{n}").into_bytes();
            recorded_write(&l, &key, value, limit, now, &history).await;
        } else {
            recorded_read(&l, &key, limit, now, &history).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_leader_isolation_are_linearizable() {
    let ids = [1u64, 2, 3];
    let (router, nodes) = common::mem_cluster(&ids).await;
    let nodes = Arc::new(nodes);
    let history: History = Default::default();
    let start = Instant::now();
    let until = start + Duration::from_secs(4);
    let clients: Vec<_> = (0..3)
        .map(|c| tokio::spawn(client(c, nodes.clone(), history.clone(), start, until)))
        .collect();
    // Cut the current leader off, let a new one take over, heal; repeat.
    while Instant::now() < until {
        if let Some(l) = leader(&nodes) {
            let id = l.raft().metrics().borrow().id;
            router.isolate(id);
            let mut rx = nodes[&id].raft().metrics();
            let _ = tokio::time::timeout(Duration::from_millis(600), rx.changed()).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            router.heal(id);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    let history = history.lock().unwrap();
    let total: usize = history.values().map(Vec::len).sum();
    let unknown: usize = history
        .values()
        .flatten()
        .filter(|o| o.ret.is_none())
        .count();
    eprintln!(
        "{total} operations on {} keys ({unknown} with unknown outcome)",
        history.len()
    );
    assert!(total > 50, "too few operations ({total}) to mean anything");
    for (key, ops) in history.iter() {
        assert!(
            check_register(ops).unwrap(),
            "history of {key} is not linearizable: {ops:?}"
        );
    }
}
