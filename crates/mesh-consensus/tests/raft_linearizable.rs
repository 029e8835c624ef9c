//! Concurrent clients read and write a few keys through whichever node leads,
//! while the leader is repeatedly cut off and healed. The recorded history of
//! every key must be linearizable (reads go through openraft's read-index).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_consensus::raft::{NodeId, RaftOrdering};
use mesh_consensus::{OrderError, Ordering};
mod common;

use mesh_sim::linearizability::{Operation, RegisterOp, check_register};
use mesh_state::{Command, Expiry, KvCmd, SetCond};
use openraft::ServerState;

type History = Arc<Mutex<BTreeMap<String, Vec<Operation>>>>;

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
        if n.is_multiple_of(2) {
            let value = format!("c{id}-{n}").into_bytes();
            let cmd = Command::Kv(KvCmd::Set {
                key: key.clone().into_bytes(),
                value: value.clone(),
                cond: SetCond::Always,
                get: false,
                expiry: Expiry::Never,
            });
            let call = now();
            let ret = match tokio::time::timeout(Duration::from_millis(300), l.propose(cmd, None))
                .await
            {
                Ok(Ok(_)) => Some(now()),
                // Refused before entering the log: it never happened.
                Ok(Err(OrderError::NotLeader { .. })) => continue,
                // Timed out or failed after it may have entered the log: unknown.
                _ => None,
            };
            history
                .lock()
                .unwrap()
                .entry(key)
                .or_default()
                .push(Operation {
                    call,
                    ret,
                    op: RegisterOp::Write(value),
                });
        } else {
            let call = now();
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(300), l.read_barrier()).await
            {
                let value = l
                    .state()
                    .read()
                    .unwrap()
                    .keyspace
                    .get_string(key.as_bytes(), 0)
                    .unwrap()
                    .map(<[u8]>::to_vec);
                let ret = now();
                history
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .push(Operation {
                        call,
                        ret: Some(ret),
                        op: RegisterOp::Read(value),
                    });
            }
            // A failed read observed nothing: not part of the history.
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
