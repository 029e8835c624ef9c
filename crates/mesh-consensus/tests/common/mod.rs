//! Helpers shared by the Raft tests: start a cluster, find its leader, wait for
//! replicas, build commands. Waits are conditions with deadlines.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mesh_consensus::Ordering;
use mesh_consensus::raft::engine::lan_config;
use mesh_consensus::raft::log_store::MemLogStore;
use mesh_consensus::raft::net_mem::MemRouter;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering, TypeConfig};
use mesh_state::{Command, Expiry, KvCmd, SetCond};
use openraft::BasicNode;
use openraft::Config;
use openraft::storage::RaftLogStorage;

/// The initial membership: every id a voter, at the address `addr(id)`.
pub fn members(ids: &[NodeId], addr: impl Fn(NodeId) -> String) -> BTreeMap<NodeId, BasicNode> {
    ids.iter().map(|&i| (i, BasicNode::new(addr(i)))).collect()
}

/// Nodes on an in-process network, each with the stores `stores(id)` gives,
/// initialised by the first.
pub async fn cluster_with<L, F>(
    ids: &[NodeId],
    config: Config,
    mut stores: F,
) -> (MemRouter, BTreeMap<NodeId, RaftOrdering>)
where
    L: RaftLogStorage<TypeConfig>,
    F: FnMut(NodeId) -> (L, SmStore),
{
    let router = MemRouter::new();
    let mut nodes = BTreeMap::new();
    for &id in ids {
        let (log, sm) = stores(id);
        let o = RaftOrdering::start(id, config.clone(), router.network(id), log, sm)
            .await
            .unwrap();
        router.add(id, o.raft().clone());
        nodes.insert(id, o);
    }
    nodes[&ids[0]]
        .raft()
        .initialize(members(ids, |i| format!("n{i}")))
        .await
        .unwrap();
    (router, nodes)
}

/// Nodes with in-memory logs on an in-process network, initialised by the first.
pub async fn mem_cluster(ids: &[NodeId]) -> (MemRouter, BTreeMap<NodeId, RaftOrdering>) {
    cluster_with(ids, lan_config("test"), |_| {
        (MemLogStore::new(), SmStore::new())
    })
    .await
}

/// The leader every node in `among` agrees on (panics after 10 s).
pub async fn leader_of(nodes: &BTreeMap<NodeId, RaftOrdering>, among: &[NodeId]) -> NodeId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leaders: BTreeSet<Option<NodeId>> =
            among.iter().map(|i| nodes[i].status().leader).collect();
        if leaders.len() == 1
            && let Some(Some(l)) = leaders.first()
            && among.contains(l)
        {
            return *l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader among {among:?}: {leaders:?}"
        );
        // Wake on any metrics change rather than sleeping a fixed time.
        let mut rx = nodes[&among[0]].raft().metrics();
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

/// `SET key value`.
pub fn set(key: &str, v: &str) -> Command {
    Command::Kv(KvCmd::Set {
        key: key.into(),
        value: v.into(),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Never,
    })
}

/// Waits until `o` has applied `index` (panics after 10 s).
pub async fn wait_applied(o: &RaftOrdering, index: u64) {
    o.raft()
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "replica catches up")
        .await
        .unwrap();
}

/// Term -> the nodes seen leading in it (election safety: at most one each).
pub type Leaders = std::sync::Arc<std::sync::Mutex<BTreeMap<u64, BTreeSet<NodeId>>>>;

/// Records every (term, node) this node is seen leading in, until it stops.
pub fn watch_leaders(o: &RaftOrdering, leaders: Leaders) {
    let mut rx = o.raft().metrics();
    tokio::spawn(async move {
        loop {
            {
                let m = rx.borrow_and_update();
                if m.state == openraft::ServerState::Leader {
                    leaders
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(m.current_term)
                        .or_default()
                        .insert(m.id);
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Per-key operation histories for the linearizability checker.
pub type History =
    std::sync::Arc<std::sync::Mutex<BTreeMap<String, Vec<mesh_sim::linearizability::Operation>>>>;

/// Writes `value` to `key` through `o` within `limit` and records the outcome in
/// `history` (`now` gives timestamps). A write refused before it entered the log
/// (not the leader) never happened and is not recorded; one that timed out or
/// failed later has an unknown outcome.
pub async fn recorded_write(
    o: &RaftOrdering,
    key: &str,
    value: Vec<u8>,
    limit: Duration,
    now: impl Fn() -> u64,
    history: &History,
) {
    use mesh_consensus::OrderError;
    use mesh_sim::linearizability::{Operation, RegisterOp};
    let cmd = Command::Kv(KvCmd::Set {
        key: key.as_bytes().to_vec(),
        value: value.clone(),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Never,
    });
    let call = now();
    let ret = match tokio::time::timeout(limit, o.propose(cmd, None)).await {
        Ok(Ok(_)) => Some(now()),
        Ok(Err(OrderError::NotLeader { .. })) => return,
        _ => None,
    };
    history
        .lock()
        .unwrap()
        .entry(key.to_string())
        .or_default()
        .push(Operation {
            call,
            ret,
            op: RegisterOp::Write(value),
        });
}

/// Reads `key` linearizably through `o` within `limit` and records what it saw;
/// a read that fails observed nothing and is not recorded.
pub async fn recorded_read(
    o: &RaftOrdering,
    key: &str,
    limit: Duration,
    now: impl Fn() -> u64,
    history: &History,
) {
    use mesh_sim::linearizability::{Operation, RegisterOp};
    let call = now();
    if let Ok(Ok(())) = tokio::time::timeout(limit, o.read_barrier()).await {
        let value = o
            .state()
            .read()
            .unwrap()
            .keyspace
            .get_string(key.as_bytes(), 0)
            .unwrap()
            .map(<[u8]>::to_vec);
        history
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .push(Operation {
                call,
                ret: Some(now()),
                op: RegisterOp::Read(value),
            });
    }
}
