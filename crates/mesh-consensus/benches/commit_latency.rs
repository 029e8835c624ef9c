//! Where a replicated write's time goes, without HTTP: three Raft nodes in one
//! process, talking over loopback TCP, one client proposing writes one after
//! another. Run with `cargo bench -p mesh-consensus --bench commit_latency`.
//!
//! It prints the median and p99 commit latency with the in-memory log (the
//! protocol and network alone) and with the durable redb log (fsync before
//! acknowledging), side by side, plus the cost of one durable redb append and
//! of one raw `fdatasync` of a small append on the same disk, so the storage
//! share of a write is measured rather than guessed. (All three nodes share one
//! process and its two worker threads here; `mesh bench kv` measures the real
//! thing, separate node processes behind HTTP.)

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use mesh_consensus::Ordering;
use mesh_consensus::raft::engine::lan_config;
use mesh_consensus::raft::log_store::MemLogStore;
use mesh_consensus::raft::net_tcp::{TcpNetwork, serve_connection};
use mesh_consensus::raft::redb_store::RedbLogStore;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering};
use mesh_state::{Command, Expiry, KvCmd, SetCond};
use openraft::{BasicNode, ServerState};
use tokio::net::TcpListener;

const WRITES: usize = 2000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("mesh-commit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "commit latency, 3 Raft nodes in one process over loopback TCP, 1 client, {WRITES} writes"
    );
    let mem = rt.block_on(run(None));
    report("memory log", &mem, None);
    let redb = rt.block_on(run(Some(&dir)));
    report("redb log (fsync)", &redb, Some(&mem));
    let append = redb_append(&dir.join("append.redb"));
    report("one redb append", &append, None);
    let raw = raw_fdatasync(&dir.join("append.raw"));
    report("one raw fdatasync", &raw, None);
    println!(
        "redb append / raw fdatasync (p50): {:.2}x",
        p(&append, 50) / p(&raw, 50)
    );
    // pBFT's critical path signs and verifies several ed25519 signatures per
    // write; their cost on this CPU says how much of its latency they are.
    let (sign, verify) = ed25519_costs();
    report("one ed25519 sign", &sign, None);
    report("one ed25519 verify", &verify, None);
    println!(
        "ed25519 verify / raw fdatasync (p50): {:.2}x",
        p(&verify, 50) / p(&raw, 50)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn p(samples: &[f64], pct: usize) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[(s.len() - 1) * pct / 100]
}

fn report(what: &str, samples: &[f64], base: Option<&[f64]>) {
    let ratio = base
        .map(|b| format!("  ({:.1}x the memory log's p50)", p(samples, 50) / p(b, 50)))
        .unwrap_or_default();
    println!(
        "{what:<20} p50 {:>6.3} ms  p99 {:>6.3} ms{ratio}",
        p(samples, 50),
        p(samples, 99)
    );
}

fn set(i: usize) -> Command {
    Command::Kv(KvCmd::Set {
        key: format!("bench:{i}").into(),
        value: vec![b'v'; 64],
        cond: SetCond::Always,
        get: false,
        expiry: Expiry::Never,
    })
}

/// Milliseconds per write, one write at a time, with the memory log (`None`) or redb under `dir`.
async fn run(dir: Option<&std::path::Path>) -> Vec<f64> {
    let mut nodes: BTreeMap<NodeId, RaftOrdering> = BTreeMap::new();
    let mut members = BTreeMap::new();
    for id in 1u64..=3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let o = match dir {
            None => {
                RaftOrdering::start(
                    id,
                    lan_config("bench"),
                    TcpNetwork,
                    MemLogStore::new(),
                    SmStore::new(),
                )
                .await
            }
            Some(d) => {
                let store =
                    RedbLogStore::open(&d.join(format!("log-{id}.redb"))).expect("open log");
                RaftOrdering::start(id, lan_config("bench"), TcpNetwork, store, SmStore::new())
                    .await
            }
        }
        .expect("start");
        let node = o.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(node.clone(), stream));
            }
        });
        members.insert(id, BasicNode::new(addr));
        nodes.insert(id, o);
    }
    nodes[&1]
        .raft()
        .initialize(members)
        .await
        .expect("initialize");
    let leader = loop {
        if let Some((id, _)) = nodes
            .iter()
            .find(|(_, o)| o.raft().metrics().borrow().state == ServerState::Leader)
        {
            break *id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let o = &nodes[&leader];
    for i in 0..100 {
        o.propose(set(i), None).await.expect("warm-up write");
    }
    let mut samples = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let t = Instant::now();
        o.propose(set(i), None).await.expect("write");
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    for o in nodes.values() {
        let _ = o.raft().shutdown().await;
    }
    samples
}

/// Milliseconds per durable redb transaction appending one 200-byte row.
fn redb_append(path: &std::path::Path) -> Vec<f64> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
    let db = redb::Database::create(path).expect("redb");
    let row = vec![7u8; 200];
    (0..WRITES as u64)
        .map(|i| {
            let t = Instant::now();
            let txn = db.begin_write().expect("txn");
            txn.open_table(T)
                .expect("table")
                .insert(i, row.as_slice())
                .expect("insert");
            txn.commit().expect("commit");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Milliseconds per 200-byte append to a plain file followed by `fdatasync`.
fn raw_fdatasync(path: &std::path::Path) -> Vec<f64> {
    let mut f = std::fs::File::create(path).expect("file");
    let row = vec![7u8; 200];
    (0..WRITES)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&row).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Milliseconds per ed25519 signature and per verification of a 120-byte
/// message (about a pBFT vote's signed bytes), one at a time.
fn ed25519_costs() -> (Vec<f64>, Vec<f64>) {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let mut sign = Vec::with_capacity(WRITES);
    let mut verify = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let mut msg = vec![0u8; 120];
        msg[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let t = Instant::now();
        let sig = key.sign(&msg);
        sign.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        assert!(public.verify(&msg, &sig).is_ok());
        verify.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (sign, verify)
}
