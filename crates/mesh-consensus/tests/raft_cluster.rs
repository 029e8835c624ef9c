//! Three Raft nodes in one process over the in-memory network: election,
//! replication, linearizable reads, leader crash and failover, no acknowledged
//! write lost. Waits are conditions on openraft's metrics with deadlines.

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_consensus::raft::engine::lan_config;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering};
use mesh_consensus::{OrderError, Ordering};
use mesh_state::{Command, KvCmd, Reply, RequestId};

mod common;
use common::{cluster_with, leader_of, mem_cluster as cluster, set, wait_applied};

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

mod durable {
    use super::*;
    use mesh_consensus::raft::redb_store::RedbLogStore;
    use openraft::storage::RaftLogStorage;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mesh-raft-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(index: u64) -> Entry<mesh_consensus::raft::TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn log_vote_and_purge_survive_a_reopen() {
        let d = dir("reopen");
        let path = d.join("raft.redb");
        {
            let mut s = RedbLogStore::open(&path).unwrap();
            s.save_vote(&Vote::new(3, 7)).await.unwrap();
            openraft::storage::RaftLogStorageExt::blocking_append(&mut s, (1..=10).map(entry))
                .await
                .unwrap();
            s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 9))
                .await
                .unwrap();
            s.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
                .await
                .unwrap();
        }
        let mut s = RedbLogStore::open(&path).unwrap();
        assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(3, 7)));
        let state = s.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
        let got: Vec<u64> = s
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, (4..=8).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A node stops, the others keep writing, it restarts from its own disk (log
    /// and vote) with an empty state machine, and catches up to the same state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_node_recovers_from_disk_and_catches_up() {
        let d = dir("restart");
        let ids = [1u64, 2, 3];
        let (router, mut nodes) = cluster_with(&ids, lan_config("t"), |id| {
            (
                RedbLogStore::open(&d.join(format!("n{id}.redb"))).unwrap(),
                SmStore::new(),
            )
        })
        .await;
        let leader = leader_of(&nodes, &ids).await;
        for i in 0..20 {
            nodes[&leader]
                .propose(set(&format!("a{i}"), "x"), None)
                .await
                .unwrap();
        }
        let victim = *ids.iter().find(|&&i| i != leader).unwrap();
        router.remove(victim);
        nodes[&victim].raft().shutdown().await.unwrap();
        nodes.remove(&victim);
        let mut last = 0;
        for i in 0..20 {
            last = nodes[&leader]
                .propose(set(&format!("b{i}"), "y"), None)
                .await
                .unwrap()
                .index;
        }
        // Restart from the same file, with a fresh (empty) state machine.
        let log = RedbLogStore::open(&d.join(format!("n{victim}.redb"))).unwrap();
        let o = RaftOrdering::start(
            victim,
            lan_config("t"),
            router.network(victim),
            log,
            SmStore::new(),
        )
        .await
        .unwrap();
        router.add(victim, o.raft().clone());
        wait_applied(&o, last).await;
        let want = nodes[&leader].state().read().unwrap().keyspace.clone();
        assert_eq!(o.state().read().unwrap().keyspace, want);
        for n in nodes.values().chain(std::iter::once(&o)) {
            n.raft().shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// With snapshots every 20 entries and nothing kept behind them, the log a
    /// node restarts with starts after its snapshot: the state must come back
    /// from `snapshot.bin`, then the rest from the log and the leader.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_restarts_from_its_snapshot_after_the_log_was_purged() {
        let d = dir("snap");
        let ids = [1u64, 2, 3];
        let mut config = lan_config("t");
        config.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(20);
        config.max_in_snapshot_log_to_keep = 0;
        config.purge_batch_size = 1;
        let open = |id: u64| {
            (
                RedbLogStore::open(&d.join(format!("n{id}.redb"))).unwrap(),
                SmStore::open(&d.join(format!("sm{id}"))).unwrap(),
            )
        };
        let (router, mut nodes) = cluster_with(&ids, config.clone(), open).await;
        let leader = leader_of(&nodes, &ids).await;
        let mut last = 0;
        for i in 0..100 {
            last = nodes[&leader]
                .propose(set(&format!("s{i}"), &i.to_string()), None)
                .await
                .unwrap()
                .index;
        }
        let victim = *ids.iter().find(|&&i| i != leader).unwrap();
        wait_applied(&nodes[&victim], last).await;
        // Wait for the victim to have snapshotted and purged.
        nodes[&victim]
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= 60),
                "snapshot and purge",
            )
            .await
            .unwrap();
        assert!(d.join(format!("sm{victim}/snapshot.bin")).exists());
        router.remove(victim);
        nodes[&victim].raft().shutdown().await.unwrap();
        nodes.remove(&victim);
        // Restart: same log file and snapshot directory, then more writes meanwhile.
        let (log, sm) = open(victim);
        let resumed = sm.last_applied_index().expect("resumed from the snapshot");
        assert!(resumed >= 60, "snapshot at {resumed}");
        let o = RaftOrdering::start(victim, config.clone(), router.network(victim), log, sm)
            .await
            .unwrap();
        router.add(victim, o.raft().clone());
        for i in 100..110 {
            last = nodes[&leader]
                .propose(set(&format!("s{i}"), &i.to_string()), None)
                .await
                .unwrap()
                .index;
        }
        wait_applied(&o, last).await;
        let want = nodes[&leader].state().read().unwrap().keyspace.clone();
        assert_eq!(o.state().read().unwrap().keyspace, want);
        for n in nodes.values().chain(std::iter::once(&o)) {
            n.raft().shutdown().await.unwrap();
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
