//! Three Raft nodes over real TCP on loopback: election, replication, failover.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_consensus::Ordering;
use mesh_consensus::raft::engine::lan_config;
use mesh_consensus::raft::log_store::MemLogStore;
use mesh_consensus::raft::net_tcp::{TcpNetwork, serve_connection};
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering};
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;

mod common;
use common::set;

async fn leader(nodes: &BTreeMap<NodeId, (RaftOrdering, tokio::task::JoinHandle<()>)>) -> NodeId {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (id, (o, _)) in nodes {
            let m = o.raft().metrics().borrow().clone();
            if m.state == ServerState::Leader {
                return *id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader over TCP");
        let mut rx = nodes.values().next().unwrap().0.raft().metrics();
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
}

/// Starts one node serving on a fresh loopback port; returns it and its address.
async fn tcp_node(id: NodeId) -> (RaftOrdering, tokio::task::JoinHandle<()>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let o = RaftOrdering::start(
        id,
        lan_config("tcp"),
        TcpNetwork,
        MemLogStore::new(),
        SmStore::new(),
    )
    .await
    .unwrap()
    .with_forwarding();
    let node = o.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(node.clone(), stream));
        }
    });
    (o, server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp_elect_replicate_and_fail_over() {
    let mut nodes = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1u64..=3 {
        let (o, server, addr) = tcp_node(id).await;
        members.insert(id, BasicNode::new(addr));
        nodes.insert(id, (o, server));
    }
    nodes[&1].0.raft().initialize(members).await.unwrap();
    let l = leader(&nodes).await;
    let mut last = 0;
    for i in 0..30 {
        last = nodes[&l]
            .0
            .propose(set(&format!("k{i}"), "v"), None)
            .await
            .unwrap()
            .index;
    }
    for (o, _) in nodes.values() {
        o.raft()
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(last), "replicated")
            .await
            .unwrap();
    }
    // Any node accepts writes: a follower forwards to the leader and answers with
    // the leader's reply; a follower read waits for the leader's read index.
    let follower = *nodes.keys().find(|&&i| i != l).unwrap();
    let f = &nodes[&follower].0;
    let a = f.propose(set("via-follower", "v"), None).await.unwrap();
    assert_eq!(a.reply, Ok(mesh_state::Reply::Ok));
    f.read_barrier().await.unwrap();
    assert!(
        f.state()
            .read()
            .unwrap()
            .keyspace
            .exists(b"via-follower", 0),
        "follower read is not linearizable"
    );

    // Kill the leader: stop serving and stop the engine.
    let (o, server) = nodes.remove(&l).unwrap();
    server.abort();
    o.raft().shutdown().await.unwrap();
    let l2 = leader(&nodes).await;
    assert_ne!(l2, l);
    let a = nodes[&l2].0.propose(set("after", "v"), None).await.unwrap();
    for (o, _) in nodes.values() {
        o.raft()
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(a.index), "after failover")
            .await
            .unwrap();
        let state = o.state();
        let sm = state.read().unwrap();
        assert!((0..30).all(|i| sm.keyspace.exists(format!("k{i}").as_bytes(), 0)));
        assert!(sm.keyspace.exists(b"after", 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_nodes_join_as_learners_and_fill_the_voter_target() {
    let mut nodes = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1u64..=3 {
        let (o, server, addr) = tcp_node(id).await;
        addrs.insert(id, addr);
        nodes.insert(id, (o, server));
    }
    let members: BTreeMap<NodeId, BasicNode> = addrs
        .iter()
        .map(|(id, a)| (*id, BasicNode::new(a.clone())))
        .collect();
    nodes[&1].0.raft().initialize(members).await.unwrap();
    let l = leader(&nodes).await;
    for i in 0..10 {
        nodes[&l]
            .0
            .propose(set(&format!("before{i}"), "v"), None)
            .await
            .unwrap();
    }
    // Node 4 joins through a follower with a target of 3 voters: it stays a learner.
    let via = addrs[nodes.keys().find(|&&i| i != l).unwrap()].clone();
    let (o4, s4, a4) = tcp_node(4).await;
    assert_eq!(o4.join(&via, &a4, 3).await, Ok(false));
    // Node 5 joins with a target of 5: promoted to voter.
    let (o5, s5, a5) = tcp_node(5).await;
    assert_eq!(o5.join(&via, &a5, 5).await, Ok(true));
    let status = nodes[&l].0.status();
    assert_eq!(status.voters, vec![1, 2, 3, 5]);
    assert_eq!(status.learners, vec![4]);
    // Both replicate; a write through the new learner is forwarded to the leader.
    let a = o4.propose(set("from-learner", "v"), None).await.unwrap();
    for o in [&o4, &o5] {
        o.raft()
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(a.index), "joined")
            .await
            .unwrap();
        let state = o.state();
        let sm = state.read().unwrap();
        assert!((0..10).all(|i| sm.keyspace.exists(format!("before{i}").as_bytes(), 0)));
        assert!(sm.keyspace.exists(b"from-learner", 0));
    }
    // Joining again is harmless.
    assert_eq!(o5.join(&via, &a5, 5).await, Ok(true));
    // An unreachable seed is a clear error, not a hang.
    assert!(matches!(
        o4.join("127.0.0.1:1", &a4, 3).await,
        Err(mesh_consensus::OrderError::LeaderUnreachable { .. })
    ));
    s4.abort();
    s5.abort();
}
