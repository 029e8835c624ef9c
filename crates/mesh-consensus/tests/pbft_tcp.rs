//! The pBFT engine behind the `Ordering` trait, four replicas over loopback
//! TCP in one process: writes proposed on every node commit and apply
//! identically everywhere (TOCS 2002 §4.2); a barrier sees every write
//! acknowledged before it; with the primary cut off, the others change
//! view (§4.4) and go on; a replica cut off while checkpoints pass catches
//! up by state transfer (§4.3, §4.5); a committed reconfiguration replaces
//! a replica by a newcomer while writes go on.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use mesh_consensus::Ordering;
use mesh_consensus::pbft::config::ReplicaSet;
use mesh_consensus::pbft::engine::{
    EpochFile, PbftOrdering, PbftSetup, READ_FALLBACK_MS, Transport, Wire, decode, encode,
};
use mesh_consensus::pbft::message::{Body, Envelope, Request, Signed, batch_digest};
use mesh_consensus::pbft::net_tcp::{TcpTransport, serve_connection};
use mesh_consensus::pbft::replica::Settings;
use mesh_state::{Command, KvCmd, Reply, RequestId};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Node `i`'s name.
fn name(i: usize) -> String {
    format!("n{i}")
}

/// Drops frames from or to nodes cut off, and to deaf nodes every frame
/// but read-index traffic (nodes by index).
struct Gate {
    me: usize,
    inner: Arc<TcpTransport>,
    cut: Arc<Mutex<HashSet<usize>>>,
    deaf: Arc<Mutex<HashSet<usize>>>,
}

impl Transport for Gate {
    fn send(&self, to: &str, frame: Arc<Vec<u8>>) {
        let Some(to_i) = to.strip_prefix('n').and_then(|i| i.parse::<usize>().ok()) else {
            return;
        };
        let cut = self.cut.lock().unwrap();
        if cut.contains(&self.me) || cut.contains(&to_i) {
            return;
        }
        if self.deaf.lock().unwrap().contains(&to_i)
            && !matches!(
                decode(&frame[4..]),
                Some(Wire::ReadIndex { .. } | Wire::ReadIndexAnswer(_))
            )
        {
            return;
        }
        self.inner.send(to, frame);
    }
}

struct Cluster {
    nodes: Vec<PbftOrdering>,
    cut: Arc<Mutex<HashSet<usize>>>,
    deaf: Arc<Mutex<HashSet<usize>>>,
    /// Every node's address by name, spares' included.
    addrs: Arc<BTreeMap<String, SocketAddr>>,
    /// Spare nodes' listeners, by index, until they start.
    spares: BTreeMap<usize, TcpListener>,
    settings: Settings,
}

fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 7; 32])
}

async fn cluster(n: usize, settings: Settings) -> Cluster {
    cluster_with_spares(n, 0, settings).await
}

/// The first configuration of `n` replicas with keys [`key`] and names [`name`].
fn genesis(n: usize) -> EpochFile {
    let keys: Vec<SigningKey> = (0..n).map(key).collect();
    let set = ReplicaSet::new(keys.iter().map(|k| k.verifying_key().to_bytes()).collect())
        .expect("valid replica set");
    EpochFile::genesis(set, (0..n).map(name).collect())
}

/// `n` replicas, and `spares` nodes with keys and addresses that are not
/// replicas (yet).
async fn cluster_with_spares(n: usize, spares: usize, settings: Settings) -> Cluster {
    let genesis = genesis(n);
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for i in 0..n + spares {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(name(i), l.local_addr().unwrap());
        listeners.insert(i, l);
    }
    let mut c = Cluster {
        nodes: Vec::new(),
        cut: Arc::new(Mutex::new(HashSet::new())),
        deaf: Arc::new(Mutex::new(HashSet::new())),
        addrs: Arc::new(addrs),
        spares: BTreeMap::new(),
        settings,
    };
    for i in 0..n {
        let l = listeners.remove(&i).unwrap();
        let node = c.start(i, l, genesis.clone()).expect("starts");
        c.nodes.push(node);
    }
    c.spares = listeners;
    c
}

impl Cluster {
    /// Starts node `i` (listening on `l`) in configuration `config`.
    fn start(&self, i: usize, l: TcpListener, config: EpochFile) -> Result<PbftOrdering, String> {
        let a = self.addrs.clone();
        let tcp = TcpTransport::new(Arc::new(move |n: &str| a.get(n).copied()));
        let gate = Arc::new(Gate {
            me: i,
            inner: tcp,
            cut: self.cut.clone(),
            deaf: self.deaf.clone(),
        });
        let node = PbftOrdering::start(
            PbftSetup {
                key: key(i),
                config,
                settings: self.settings.clone(),
                dir: None,
            },
            gate,
        )?;
        let engine = node.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_connection(engine.clone(), s));
            }
        });
        Ok(node)
    }
}

fn incr(key: &str) -> Command {
    Command::Kv(KvCmd::IncrBy {
        key: key.as_bytes().to_vec(),
        by: 1,
    })
}

fn counter(node: &PbftOrdering, key: &str) -> Option<Vec<u8>> {
    let state = node.state();
    let sm = state.read().unwrap();
    sm.keyspace
        .get_string(key.as_bytes(), sm.clock_ms)
        .ok()
        .flatten()
        .map(<[u8]>::to_vec)
}

/// Waits until every node in `among` holds the same state as the others,
/// with `want` applied.
async fn wait_converged(c: &Cluster, among: &[usize], want: u64, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let digests: BTreeMap<usize, (u64, u64)> = among
            .iter()
            .map(|&i| {
                let s = c.nodes[i].state();
                let sm = s.read().unwrap();
                (i, (sm.applied_index, sm.digest()))
            })
            .collect();
        let first = digests.values().next().copied().unwrap();
        if first.0 >= want && digests.values().all(|d| *d == first) {
            return;
        }
        assert!(
            Instant::now() < until,
            "replicas did not converge: {digests:?}; {:?}",
            c.nodes.iter().map(|n| n.pbft_status()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Distinct request ids across calls (a repeated id is deduplicated).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Proposes `count` increments of `key` from every node in `from`, all at
/// once; every one must succeed.
async fn write_all(c: &Cluster, from: &[usize], key: &str, count: usize) {
    let mut tasks = Vec::new();
    for &i in from {
        for k in 0..count {
            let node = c.nodes[i].clone();
            let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = RequestId(format!("{key}-{i}-{k}-{n}"));
            let cmd = incr(key);
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(20), node.propose(cmd, Some(id))).await
            }));
        }
    }
    for t in tasks {
        let r = t
            .await
            .unwrap()
            .expect("a write timed out")
            .expect("a write failed");
        assert!(matches!(r.reply, Ok(Reply::Int(_))), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_every_node_apply_alike_and_survive_a_silent_primary() {
    let c = cluster(4, Settings::default()).await;
    let all = [0, 1, 2, 3];
    write_all(&c, &all, "k", 50).await;
    // §4.2: every acknowledged write is executed once, everywhere alike.
    for n in &c.nodes {
        n.read_barrier().await.unwrap();
    }
    assert_eq!(counter(&c.nodes[3], "k"), Some(b"200".to_vec()));
    let applied = c.nodes[0].status().applied_index.unwrap();
    wait_converged(&c, &all, applied, Duration::from_secs(10)).await;
    let s = c.nodes[0].pbft_status();
    assert_eq!((s.view, s.primary, s.evidence_total), (0, 0, 0));
    assert!(s.signatures_made > 0 && s.signatures_verified > 0 && s.bytes_sent > 0);

    // §4.4: the primary falls silent; a write on a backup starts the timer,
    // the backups change view and the write commits in view 1.
    c.cut.lock().unwrap().insert(0);
    let started = Instant::now();
    write_all(&c, &[1, 2, 3], "after", 5).await;
    let took = started.elapsed();
    let s = c.nodes[1].pbft_status();
    assert!(s.view >= 1 && s.primary != 0, "{s:?}");
    println!(
        "writes resumed {took:?} after the primary was cut off (view {})",
        s.view
    );
    // Node 2's own writes are executed there; those of nodes 1 and 3 once
    // a read barrier says so (they were acknowledged on their nodes).
    c.nodes[2].read_barrier().await.unwrap();
    assert_eq!(counter(&c.nodes[2], "after"), Some(b"15".to_vec()));

    // The old primary comes back and catches up (NEW-VIEW sent to a replica
    // behind, then the missed requests or a state transfer).
    c.cut.lock().unwrap().clear();
    write_all(&c, &all, "back", 5).await;
    let applied = c.nodes[1].status().applied_index.unwrap();
    wait_converged(&c, &all, applied, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_past_a_checkpoint_catches_up_by_state_transfer() {
    let settings = Settings {
        checkpoint_interval: 8,
        window: 16,
        ..Settings::default()
    };
    let c = cluster(4, settings).await;
    c.cut.lock().unwrap().insert(3);
    // One at a time: each write is its own sequence number, so the
    // checkpoints (every 8) pass and the window moves beyond replica 3.
    for k in 0..60 {
        c.nodes[k % 3]
            .propose(incr("x"), Some(RequestId(format!("x{k}"))))
            .await
            .unwrap();
    }
    assert!(c.nodes[0].pbft_status().low_watermark >= 48);
    c.cut.lock().unwrap().clear();
    write_all(&c, &[0, 1, 2, 3], "y", 3).await;
    let applied = c.nodes[0].status().applied_index.unwrap();
    wait_converged(&c, &[0, 1, 2, 3], applied, Duration::from_secs(20)).await;
    let s = c.nodes[3].pbft_status();
    assert!(s.state_transfers >= 1, "{s:?}");
    assert_eq!(counter(&c.nodes[3], "x"), Some(b"60".to_vec()));
}

/// Two pre-prepares replica 0 signed for view 0, sequence number 1, with
/// different batches: the payloads [`PbftOrdering::deliver`] takes.
fn equivocating_pre_prepares() -> Vec<Vec<u8>> {
    let client = SigningKey::from_bytes(&[42; 32]);
    [b"one".to_vec(), b"two".to_vec()]
        .into_iter()
        .map(|op| {
            let batch = vec![Request::signed(&client, 1, op)];
            let msg = Signed::sign(
                0,
                Body::PrePrepare {
                    view: 0,
                    seq: 1,
                    digest: batch_digest(&batch),
                },
                &key(0),
            );
            let frame = encode(&Wire::Protocol(Envelope {
                msg,
                batch: Some(batch),
            }));
            frame[4..].to_vec()
        })
        .collect()
}

/// TOCS 2002 §4.2 forbids a primary two pre-prepares for one view and
/// sequence number with different batches: a replica that receives both
/// holds them as evidence, shows it in its status and publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_primary_is_evidence_in_status_and_events() {
    let c = cluster(4, Settings::default()).await;
    let mut events = c.nodes[1].subscribe_evidence();
    for frame in equivocating_pre_prepares() {
        assert!(c.nodes[1].deliver(frame).await);
    }
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("evidence within 10 s")
        .expect("an evidence record");
    assert_eq!((e.culprit, e.kind, e.view), (0, "equivocation", Some(0)));
    assert_eq!(
        e.culprit_node,
        Some(mesh_consensus::raft::node_id_of(&name(0)))
    );
    // The status follows at the end of the engine's turn: wait for it.
    let mut status = c.nodes[1].watch_status();
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.evidence_total > 0),
    )
    .await
    .expect("evidence in status within 10 s")
    .expect("engine running")
    .clone();
    assert_eq!(s.evidence_total, 1);
    assert_eq!(s.evidence[0].culprit, 0);
    // What the membership view reports as replica 0's reputation.
    assert_eq!(s.evidence_against, vec![1, 0, 0, 0]);
}

/// Drops every frame (a replica alone, fed by hand).
struct Nowhere;

impl Transport for Nowhere {
    fn send(&self, _: &str, _: Arc<Vec<u8>>) {}
}

/// The proof an equivocating primary left is stored with the replica's log:
/// after a restart the replica still holds it, so the culprit's reputation
/// does not recover by a restart of its accuser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_outlives_a_restart_of_the_replica_that_holds_it() {
    let dir = std::env::temp_dir().join(format!("mesh-pbft-evidence-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let genesis = genesis(4);
    let start = || {
        PbftOrdering::start(
            PbftSetup {
                key: key(1),
                config: genesis.clone(),
                settings: Settings::default(),
                dir: Some(dir.clone()),
            },
            Arc::new(Nowhere),
        )
        .expect("starts")
    };
    let node = start();
    for frame in equivocating_pre_prepares() {
        assert!(node.deliver(frame).await);
    }
    let mut status = node.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.evidence_total == 1),
    )
    .await
    .expect("evidence within 10 s")
    .expect("engine running");
    drop(status);
    drop(node);
    let again = start();
    // Its first status (published as the engine starts) holds the proof.
    let mut status = again.watch_status();
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.replicas == 4),
    )
    .await
    .expect("status within 10 s")
    .expect("engine running")
    .clone();
    assert_eq!(s.evidence_total, 1, "the proof is back after the restart");
    assert_eq!(s.evidence_against, vec![1, 0, 0, 0]);
    assert_eq!(
        (s.evidence[0].culprit, s.evidence[0].kind),
        (0, "equivocation")
    );
    drop(status);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// TOCS 2002 §4.1: a message counts only if its sender's signature
/// verifies. One under replica 2's name signed with another key is refused,
/// counted against the name it claims and published, but it is no proof
/// against replica 2 (anyone can send it), so its reputation stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused_counted_and_published_but_proves_nothing() {
    let c = cluster(4, Settings::default()).await;
    let mut events = c.nodes[1].subscribe_evidence();
    let batch = vec![Request::signed(
        &SigningKey::from_bytes(&[42; 32]),
        1,
        b"x".to_vec(),
    )];
    let prepare = |key: &SigningKey| {
        let msg = Signed::sign(
            2,
            Body::Prepare {
                view: 0,
                seq: 1,
                digest: batch_digest(&batch),
            },
            key,
        );
        encode(&Wire::Protocol(Envelope { msg, batch: None }))[4..].to_vec()
    };
    // Signed by replica 3's key under replica 2's name: forged.
    assert!(c.nodes[1].deliver(prepare(&key(3))).await);
    let e = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("a record");
    assert_eq!((e.culprit, e.kind, e.provable), (2, "bad_signature", false));
    let mut status = c.nodes[1].watch_status();
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.bad_signatures.iter().sum::<u64>() > 0),
    )
    .await
    .expect("the bad signature in status within 10 s")
    .expect("engine running")
    .clone();
    assert_eq!(s.bad_signatures, vec![0, 0, 1, 0]);
    assert_eq!(s.evidence_total, 0, "a bad signature is not evidence");
    assert!(s.evidence_against.iter().all(|&n| n == 0));
}

/// TOCS 2002 §5.1.3 (as a read index, see `pbft::read_only`): a read on a
/// replica that is up to date takes one round of signed answers, no
/// ordering; a read on a replica that missed acknowledged writes is never
/// stale: its index names them, it waits for them, and when it cannot
/// get them in time the read falls back to the ordered path.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_fresh_by_read_index_and_fall_back_to_ordering() {
    let c = cluster(4, Settings::default()).await;
    write_all(&c, &[1], "r", 5).await;
    let applied = c.nodes[1].status().applied_index.unwrap();
    wait_converged(&c, &[0, 1, 2, 3], applied, Duration::from_secs(10)).await;
    // Fast path: a write acknowledged on node 1, read on node 2.
    write_all(&c, &[1], "r", 1).await;
    let started = Instant::now();
    c.nodes[2].read_barrier().await.unwrap();
    let took = started.elapsed();
    assert_eq!(counter(&c.nodes[2], "r"), Some(b"6".to_vec()));
    // (Status is published at the end of the engine's turn.)
    let mut status = c.nodes[2].watch_status();
    let s = tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.reads_fast == 1),
    )
    .await
    .expect("the read counted")
    .unwrap()
    .clone();
    assert_eq!((s.reads_fast, s.reads_ordered), (1, 0), "{s:?}");
    println!("a read index round took {took:?}");

    // Node 3 hears nothing but read-index traffic while node 0 writes.
    c.deaf.lock().unwrap().insert(3);
    write_all(&c, &[0], "r", 3).await;
    let reader = c.nodes[3].clone();
    let read = tokio::spawn(async move { reader.read_barrier().await });
    // Its index names writes it cannot get: after READ_FALLBACK_MS the read
    // takes the ordered path (and still waits: node 3 hears nothing).
    let asked = Instant::now();
    let until = asked + Duration::from_secs(10);
    while c.nodes[3].pbft_status().reads_ordered == 0 {
        assert!(Instant::now() < until, "the read never fell back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(asked.elapsed() >= Duration::from_millis(READ_FALLBACK_MS));
    assert!(!read.is_finished(), "a stale read was served");
    assert_eq!(counter(&c.nodes[3], "r"), Some(b"6".to_vec()));
    // It hears again; more writes show it the gap; the read completes
    // with every write acknowledged before it.
    c.deaf.lock().unwrap().clear();
    write_all(&c, &[0], "other", 1).await;
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the read completed")
        .unwrap()
        .unwrap();
    assert_eq!(counter(&c.nodes[3], "r"), Some(b"9".to_vec()));
}

/// Reconfiguration (see `pbft::epoch`): replicas 1, 2 and 3 (2f + 1 of
/// four) vote replica 0 out for a newcomer, node 4, while writes go on.
/// The decision is ordered like any request; the old epoch ends at the
/// checkpoint a window above it; replicas 1 to 3 switch to epoch 1; node 0
/// stops, saying so; node 4 starts from a member's configuration (which
/// carries the old set's proof of the end), fetches the state there and
/// orders with the others. No acknowledged write is lost, and the new set
/// survives the loss of one of its replicas (f = 1 again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_is_replaced_by_a_committed_reconfiguration() {
    use mesh_consensus::pbft::epoch::VoteOutcome;
    use mesh_consensus::pbft::machine::Proposal;
    let settings = Settings {
        checkpoint_interval: 8,
        window: 16,
        ..Settings::default()
    };
    let mut c = cluster_with_spares(4, 1, settings).await;
    write_all(&c, &[0, 1, 2, 3], "k", 5).await;
    let proposal = Proposal {
        keys: (1..5).map(|i| key(i).verifying_key().to_bytes()).collect(),
        names: (1..5).map(name).collect(),
    };
    let mut outcomes = Vec::new();
    for i in [1, 2, 3] {
        let vote = tokio::time::timeout(
            Duration::from_secs(20),
            c.nodes[i].reconfigure(proposal.clone()),
        )
        .await
        .expect("the vote executed within 20 s")
        .expect("the engine runs")
        .expect("the vote counts");
        outcomes.push(vote);
    }
    assert_eq!(
        outcomes[0],
        VoteOutcome::Counted { votes: 1, need: 3 },
        "{outcomes:?}"
    );
    let VoteOutcome::Decided(d) = &outcomes[2] else {
        panic!("the third vote decides: {outcomes:?}")
    };
    assert_eq!((d.next.epoch(), d.next.start()), (1, d.end));
    // Writes on the staying replicas go on across the change (a quiet mesh
    // changes too: the primary fills the slots up to the end).
    write_all(&c, &[1, 2, 3], "k", 5).await;
    let until = Instant::now() + Duration::from_secs(30);
    for i in [1, 2, 3] {
        let mut status = c.nodes[i].watch_status();
        tokio::time::timeout_at(until, status.wait_for(|s| s.epoch == 1))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "node {i} never reached epoch 1: {:?}",
                    c.nodes[i].pbft_status()
                )
            })
            .unwrap();
    }
    let mut status = c.nodes[0].watch_status();
    let s = tokio::time::timeout_at(until, status.wait_for(|s| s.retired.is_some()))
        .await
        .expect("node 0 stops once left out")
        .unwrap()
        .clone();
    assert_eq!(s.retired, Some(1));
    assert!(s.fatal.unwrap().contains("not a replica of epoch 1"));
    assert!(c.nodes[0].propose(incr("k"), None).await.is_err());

    // The newcomer starts from a member's configuration; a forged proof in
    // it is refused.
    let config = c.nodes[1].config();
    assert_eq!(config.epoch(), 1);
    assert_eq!(config.current.names, proposal.names);
    let mut forged = config.clone();
    forged.end_proof.truncate(1);
    let l = c.spares.remove(&4).unwrap();
    let err = c
        .start(4, TcpListener::bind("127.0.0.1:0").await.unwrap(), forged)
        .err()
        .expect("a forged proof is refused");
    assert!(err.contains("does not check out"), "{err}");
    let newcomer = c.start(4, l, config).expect("the newcomer starts");
    c.nodes.push(newcomer);
    write_all(&c, &[1, 4], "k", 5).await;
    let applied = c.nodes[1].status().applied_index.unwrap();
    wait_converged(&c, &[1, 2, 3, 4], applied, Duration::from_secs(30)).await;
    c.nodes[4].read_barrier().await.unwrap();
    assert_eq!(counter(&c.nodes[4], "k"), Some(b"45".to_vec()));
    let s = c.nodes[4].pbft_status();
    assert_eq!((s.epoch, s.replica), (1, 3));
    assert!(s.state_transfers >= 1, "{s:?}");
    // f = 1 in the new set: with replica 1 (the new primary of view 0)
    // cut off, the other three change view and go on.
    c.cut.lock().unwrap().insert(1);
    write_all(&c, &[2, 3, 4], "k", 3).await;
    c.nodes[4].read_barrier().await.unwrap();
    assert_eq!(counter(&c.nodes[4], "k"), Some(b"54".to_vec()));
}
