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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_tcp_elect_replicate_and_fail_over() {
    let mut listeners = BTreeMap::new();
    for id in 1u64..=3 {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let members: BTreeMap<NodeId, BasicNode> = listeners
        .iter()
        .map(|(id, l)| (*id, BasicNode::new(l.local_addr().unwrap().to_string())))
        .collect();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
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
