//! Three Raft nodes in one process over the in-memory network: election,
//! replication, linearizable reads, leader crash and failover, no acknowledged
//! write lost. Waits are conditions on openraft's metrics with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mesh_consensus::raft::engine::lan_config;
use mesh_consensus::raft::log_store::MemLogStore;
use mesh_consensus::raft::net_mem::MemRouter;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering};
use mesh_consensus::{OrderError, Ordering};
use mesh_state::{Command, Expiry, KvCmd, Reply, RequestId, SetCond};
use openraft::BasicNode;

async fn cluster(ids: &[NodeId]) -> (MemRouter, BTreeMap<NodeId, RaftOrdering>) {
    let router = MemRouter::new();
    let mut nodes = BTreeMap::new();
    for &id in ids {
        let o = RaftOrdering::start(
            id,
            lan_config("test"),
            router.network(id),
            MemLogStore::new(),
            SmStore::new(),
        )
        .await
        .unwrap();
        router.add(id, o.raft().clone());
        nodes.insert(id, o);
    }
    let members: BTreeMap<NodeId, BasicNode> = ids
        .iter()
        .map(|&i| (i, BasicNode::new(format!("n{i}"))))
        .collect();
    nodes[&ids[0]].raft().initialize(members).await.unwrap();
    (router, nodes)
}

async fn leader_of(nodes: &BTreeMap<NodeId, RaftOrdering>, among: &[NodeId]) -> NodeId {
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

fn set(key: &str, v: &str) -> Command {
    Command::Kv(KvCmd::Set {
        key: key.into(),
        value: v.into(),
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Never,
    })
}

async fn wait_applied(o: &RaftOrdering, index: u64) {
    o.raft()
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(Some(index), "replica catches up")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_replicate_fail_over_and_lose_nothing() {
    let ids = [1, 2, 3];
    let (router, nodes) = cluster(&ids).await;
    let leader = leader_of(&nodes, &ids).await;
    let follower = *ids.iter().find(|&&i| i != leader).unwrap();

    // A follower refuses and names the leader (the node forwards for clients).
    assert_eq!(
        nodes[&follower].propose(set("x", "1"), None).await,
        Err(OrderError::NotLeader {
            leader: Some(leader)
        })
    );

    // Acknowledged writes.
    let mut acked = Vec::new();
    for i in 0..50 {
        let a = nodes[&leader]
            .propose(set(&format!("k{i}"), &i.to_string()), None)
            .await
            .unwrap();
        assert_eq!(a.reply, Ok(Reply::Ok));
        acked.push((format!("k{i}"), i.to_string(), a.index));
    }
    // A retried request (same id) applies once.
    let incr = || {
        Command::Kv(KvCmd::IncrBy {
            key: "n".into(),
            by: 1,
        })
    };
    let id = Some(RequestId("client-1:1".into()));
    let first = nodes[&leader].propose(incr(), id.clone()).await.unwrap();
    let again = nodes[&leader].propose(incr(), id).await.unwrap();
    assert_eq!(
        (first.reply, again.reply),
        (Ok(Reply::Int(1)), Ok(Reply::Int(1)))
    );

    // Linearizable read on the leader.
    nodes[&leader].read_barrier().await.unwrap();
    assert_eq!(
        nodes[&leader]
            .state()
            .read()
            .unwrap()
            .keyspace
            .get_string(b"k49", 0)
            .unwrap(),
        Some(&b"49"[..])
    );

    // Every replica applies the same state.
    let last = nodes[&leader].status().applied_index.unwrap();
    for id in ids {
        wait_applied(&nodes[&id], last).await;
    }
    let digests: BTreeSet<u64> = ids
        .iter()
        .map(|i| nodes[i].state().read().unwrap().digest())
        .collect();
    assert_eq!(digests.len(), 1, "replicas diverged");

    // The leader crashes: gone from the network, engine stopped.
    router.remove(leader);
    nodes[&leader].raft().shutdown().await.unwrap();
    let survivors: Vec<NodeId> = ids.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = leader_of(&nodes, &survivors).await;
    assert_ne!(new_leader, leader);
    let a = nodes[&new_leader]
        .propose(set("after", "failover"), None)
        .await
        .unwrap();
    assert_eq!(a.reply, Ok(Reply::Ok));
    nodes[&new_leader].read_barrier().await.unwrap();

    // No acknowledged write lost, on either survivor.
    for id in &survivors {
        wait_applied(&nodes[id], a.index).await;
        let state = nodes[id].state();
        let sm = state.read().unwrap();
        for (k, v, _) in &acked {
            assert_eq!(
                sm.keyspace.get_string(k.as_bytes(), 0).unwrap(),
                Some(v.as_bytes()),
                "lost {k} on node {id}"
            );
        }
        assert_eq!(sm.keyspace.get_string(b"n", 0).unwrap(), Some(&b"1"[..]));
        assert_eq!(
            sm.keyspace.get_string(b"after", 0).unwrap(),
            Some(&b"failover"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_cannot_serve_linearizable_reads() {
    let ids = [1, 2, 3];
    let (router, nodes) = cluster(&ids).await;
    let leader = leader_of(&nodes, &ids).await;
    nodes[&leader].propose(set("a", "1"), None).await.unwrap();
    router.isolate(leader);
    // The old leader cannot confirm its leadership with a quorum.
    let r = tokio::time::timeout(Duration::from_secs(5), nodes[&leader].read_barrier()).await;
    assert!(
        !matches!(r, Ok(Ok(()))),
        "an isolated leader served a linearizable read: {r:?}"
    );
    let others: Vec<NodeId> = ids.iter().copied().filter(|&i| i != leader).collect();
    let new_leader = leader_of(&nodes, &others).await;
    nodes[&new_leader]
        .propose(set("a", "2"), None)
        .await
        .unwrap();
    router.heal(leader);
    let applied = nodes[&new_leader].status().applied_index.unwrap();
    wait_applied(&nodes[&leader], applied).await;
    assert_eq!(
        nodes[&leader]
            .state()
            .read()
            .unwrap()
            .keyspace
            .get_string(b"a", 0)
            .unwrap(),
        Some(&b"2"[..])
    );
}
