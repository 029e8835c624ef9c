//! Keeping the voter target: fill missing voters from healthy learners, replace a
//! voter the membership layer confirmed dead long enough, never shrink without a
//! replacement.

use std::collections::{BTreeMap, BTreeSet};

use mesh_consensus::Ordering;
use mesh_consensus::raft::engine::{PeerHealth, lan_config};
use mesh_consensus::raft::log_store::MemLogStore;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering};
use openraft::BasicNode;

mod common;
use common::{leader_of, mem_cluster};

fn voters(o: &RaftOrdering) -> BTreeSet<NodeId> {
    o.status().voters.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_fill_and_replace_voters() {
    let (router, mut nodes) = mem_cluster(&[1, 2, 3]).await;
    for id in [4, 5] {
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
    let l = leader_of(&nodes, &[1, 2, 3]).await;
    for id in [4, 5] {
        nodes[&l]
            .raft()
            .add_learner(id, BasicNode::new(format!("n{id}")), true)
            .await
            .unwrap();
    }
    let alive: BTreeMap<NodeId, PeerHealth> = (1..=5).map(|i| (i, PeerHealth::Alive)).collect();
    // Three voters, target three: nothing to do.
    assert_eq!(
        nodes[&l].reconcile_voters(&alive, 3, 10_000).await.unwrap(),
        None
    );
    // Only the leader acts.
    let follower = [1, 2, 3].into_iter().find(|i| *i != l).unwrap();
    assert_eq!(
        nodes[&follower]
            .reconcile_voters(&alive, 5, 10_000)
            .await
            .unwrap(),
        None
    );

    // A voter dead for less than the grace time stays a voter.
    let victim = [1, 2, 3].into_iter().find(|i| *i != l).unwrap();
    let mut health = alive.clone();
    health.insert(victim, PeerHealth::Dead { for_ms: 5_000 });
    assert_eq!(
        nodes[&l]
            .reconcile_voters(&health, 3, 10_000)
            .await
            .unwrap(),
        None
    );
    // Past it, the lowest healthy learner replaces it; the dead one stays a learner.
    health.insert(victim, PeerHealth::Dead { for_ms: 10_000 });
    let changed = nodes[&l]
        .reconcile_voters(&health, 3, 10_000)
        .await
        .unwrap();
    let mut expected: BTreeSet<NodeId> = [1, 2, 3, 4].into();
    expected.remove(&victim);
    assert_eq!(changed, Some(expected.clone()));
    assert_eq!(voters(&nodes[&l]), expected);
    assert!(nodes[&l].status().learners.contains(&victim));

    // With no healthy learner left, a second dead voter is kept (no shrinking).
    let other = expected.iter().copied().find(|i| *i != l).unwrap();
    health.insert(other, PeerHealth::Dead { for_ms: 60_000 });
    health.insert(5, PeerHealth::Suspect);
    assert_eq!(
        nodes[&l]
            .reconcile_voters(&health, 3, 10_000)
            .await
            .unwrap(),
        None
    );
    // A raised target promotes healthy learners up to it (the first victim is
    // back, so healthy again).
    let changed = nodes[&l]
        .reconcile_voters(&health, 5, 10_000)
        .await
        .unwrap();
    assert_eq!(changed, None, "no healthy learner yet");
    health = alive.clone();
    let changed = nodes[&l]
        .reconcile_voters(&health, 5, 10_000)
        .await
        .unwrap();
    assert_eq!(changed, Some([1, 2, 3, 4, 5].into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_engine_reports_why() {
    let (_router, nodes) = mem_cluster(&[1, 2, 3]).await;
    assert_eq!(nodes[&2].status().fatal, None);
    nodes[&2].raft().shutdown().await.unwrap();
    let fatal = nodes[&2].status().fatal;
    assert!(
        fatal.is_some(),
        "status after shutdown: {:?}",
        nodes[&2].status()
    );
}
