//! Redis clients keep writing while nodes die: first a node no client is
//! connected to, then the Raft leader (whose clients move to another node).
//! Every acknowledged write is there at the end, none twice, nothing that was
//! never sent.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis::{Resp, mesh_ready, resp_mesh};
use mesh_cli::cluster::{Cluster, wait_for};
use mesh_proto::resp::Reply;

const WRITERS: usize = 4;

fn addrs(c: &Cluster) -> Vec<Option<String>> {
    (0..3)
        .map(|i| {
            c.is_running(i)
                .then(|| c.info(i).resp.map(|a| a.to_string()))
                .flatten()
        })
        .collect()
}

/// Writer `t`: `RPUSH ack:t seq` with increasing `seq`, recording the
/// acknowledged ones; on an error or a broken connection it moves to the next
/// node.
fn writer(
    t: usize,
    nodes: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    sent: Arc<AtomicUsize>,
) {
    let mut at = t % 2; // clients start on nodes 0 and 1, never on 2
    let mut seq = 0u64;
    let mut conn: Option<Resp> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            let addr = nodes.lock().unwrap()[at].clone();
            match addr.and_then(|a| std::net::TcpStream::connect(&a).ok().map(|_| a)) {
                Some(a) => {
                    let r = Resp::connect(&a);
                    r.set_read_timeout(Duration::from_secs(10));
                    conn = Some(r);
                }
                None => {
                    at = (at + 1) % 3;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let r = conn.as_mut().expect("connected");
        seq += 1;
        sent.fetch_max(seq as usize, Ordering::Relaxed);
        let key = format!("ack:{t}");
        let value = seq.to_string();
        r.send(&[b"RPUSH", key.as_bytes(), value.as_bytes()]);
        match r.read() {
            Some(Reply::Int(_)) => acked.lock().unwrap().push(seq),
            // An error (no quorum for a moment, an election) or a dead
            // node: this write may or may not have applied; try elsewhere.
            Some(_) | None => {
                conn = None;
                at = (at + 1) % 3;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn no_acknowledged_redis_write_is_lost_when_nodes_die() {
    let mut c = resp_mesh("rfail", &[]);
    let rejoined = |c: &Cluster, who: &str| {
        assert!(
            wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
                mesh_ready(c)
            })
            .is_some(),
            "{who} did not rejoin"
        );
    };
    let nodes = Arc::new(Mutex::new(addrs(&c)));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Vec<Arc<Mutex<Vec<u64>>>> = (0..WRITERS).map(|_| Default::default()).collect();
    let sent: Vec<Arc<AtomicUsize>> = (0..WRITERS).map(|_| Default::default()).collect();
    let threads: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (n, s, a, x) = (
                nodes.clone(),
                stop.clone(),
                acked[t].clone(),
                sent[t].clone(),
            );
            std::thread::spawn(move || writer(t, n, s, a, x))
        })
        .collect();
    let total = || acked.iter().map(|a| a.lock().unwrap().len()).sum::<usize>();
    let progress = |more: usize, what: &str| {
        let from = total();
        assert!(
            wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
                total() >= from + more
            })
            .is_some(),
            "writes stalled {what}: {} acknowledged",
            total()
        );
    };
    progress(200, "at the start");

    // A node no client is connected to dies; the writes go on; it comes back.
    c.kill_hard(2).unwrap();
    progress(200, "with node 2 dead");
    c.restart(2, &[c.info(0).gossip]).unwrap();
    *nodes.lock().unwrap() = addrs(&c);
    rejoined(&c, "node 2");
    progress(100, "after node 2 rejoined");

    // The leader dies: its clients (if any) move on, the others wait for
    // the election; it comes back.
    let leader = c.raft_leader().expect("a leader");
    c.kill_hard(leader).unwrap();
    *nodes.lock().unwrap() = addrs(&c);
    progress(200, "after the leader was killed");
    let alive = (0..3).find(|&i| i != leader).unwrap();
    c.restart(leader, &[c.info(alive).gossip]).unwrap();
    *nodes.lock().unwrap() = addrs(&c);
    rejoined(&c, "the old leader");
    progress(100, "after the old leader rejoined");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    // Every node has every acknowledged write, once; nothing never sent.
    let mut summary = BTreeMap::new();
    for node in 0..3 {
        let mut r = Resp::connect(&c.info(node).resp.unwrap().to_string());
        for t in 0..WRITERS {
            let key = format!("ack:{t}");
            let Reply::Array(items) = r.cmd(&["LRANGE", &key, "0", "-1"]) else {
                panic!("LRANGE {key} on node {node}")
            };
            let values: Vec<u64> = items
                .iter()
                .map(|i| match i {
                    Reply::Bulk(b) => String::from_utf8_lossy(b).parse().unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect();
            let unique: BTreeSet<u64> = values.iter().copied().collect();
            assert_eq!(unique.len(), values.len(), "a write applied twice in {key}");
            let max_sent = sent[t].load(Ordering::Relaxed) as u64;
            assert!(
                values.iter().all(|v| (1..=max_sent).contains(v)),
                "a write never sent"
            );
            let acks = acked[t].lock().unwrap();
            let lost: Vec<&u64> = acks.iter().filter(|v| !unique.contains(v)).collect();
            assert!(
                lost.is_empty(),
                "node {node} lost acknowledged writes of {key}: {lost:?}"
            );
            summary.insert(key, (acks.len(), values.len(), max_sent));
        }
    }
    eprintln!("(acknowledged, stored, sent) per writer: {summary:?}");
}

/// On the minority side writes get Redis's `READONLY` error (what a replica
/// answers), linearizable reads `CLUSTERDOWN`, and a connection that sent
/// `READONLY` reads the node's replica; nothing changes.
#[test]
fn the_minority_side_answers_readonly() {
    let mut c = resp_mesh("rminor", &[]);
    let mut r = Resp::connect(&c.info(0).resp.unwrap().to_string());
    assert_eq!(r.cmd(&["SET", "k", "before"]), Reply::Simple("OK".into()));
    c.kill_hard(1).unwrap();
    c.kill_hard(2).unwrap();
    let mut last = Reply::Nil;
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
            last = r.cmd(&["SET", "k", "after"]);
            matches!(&last, Reply::Error(e) if e.starts_with("READONLY You can't write against a read only replica."))
        })
        .is_some(),
        "the minority took a write: {last:?}"
    );
    let Reply::Error(e) = r.cmd(&["GET", "k"]) else {
        panic!("a linearizable read without a quorum")
    };
    assert!(e.starts_with("CLUSTERDOWN"), "{e}");
    assert_eq!(r.cmd(&["READONLY"]), Reply::Simple("OK".into()));
    assert_eq!(r.cmd(&["GET", "k"]), Reply::Bulk(b"before".to_vec()));
}
