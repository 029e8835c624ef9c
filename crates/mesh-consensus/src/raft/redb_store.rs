//! The durable Raft log and vote, in redb, with group commit.
//!
//! fsync policy: an append is acknowledged to openraft (its `LogFlushed`
//! callback) only after the redb transaction holding it committed with
//! `Durability::Immediate`, which fsyncs. So a write the leader acknowledges
//! (durable on a majority) survives kill -9 of any node. Appends go to one
//! writer thread; while it waits for an fsync, further appends queue up and the
//! next transaction writes them all with one fsync (group commit): under load,
//! one fsync covers many client writes. Until then the entries are readable from
//! memory, as openraft requires. Votes, truncation and purges go through the same
//! queue, in order, and their calls return once they are durable. The commit
//! index is not written on its own: the latest one rides along in an append's
//! transaction, at most once per [`COMMIT_SAVE_EVERY`]. It only speeds up a
//! restart, and an older one is safe, since the leader tells a restarted node
//! again what is committed. (A transaction per commit would delay the next
//! append's fsync on every node; writing it with every append would add pages
//! to every fsync.)

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{NodeId, TypeConfig, io_err};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

/// A redb-backed log store; clones share the database and the writer.
#[derive(Clone)]
pub struct RedbLogStore {
    db: Arc<Database>,
    committed: CommitIndex,
    /// Appended entries not yet durable, by index, with the append's sequence
    /// number (so the writer removes only what it wrote, not a newer entry at
    /// the same index after a truncation).
    pending: Pending,
    /// The commit index to save with the next append, if it changed.
    unsaved_commit: UnsavedCommit,
    writer: Arc<Writer>,
}

type UnsavedCommit = Arc<Mutex<Option<Option<LogId<NodeId>>>>>;

/// Work for the writer thread, done in order.
enum Op {
    Append {
        seq: u64,
        rows: Vec<(u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    /// Removes the log entries in the range.
    Remove {
        from: Bound<u64>,
        to: Bound<u64>,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    Meta {
        key: &'static str,
        bytes: Vec<u8>,
        durability: Durability,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
}

/// The writer thread's handle; the last clone of the store stops and joins it,
/// so the database is closed when the store is gone.
struct Writer {
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_seq: AtomicU64,
}

impl Writer {
    fn send(&self, op: Op) -> Result<(), StorageError<NodeId>> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| io_err("log writer stopped")),
            None => Err(io_err("log writer stopped")),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

type Pending = Arc<Mutex<BTreeMap<u64, (u64, Entry<TypeConfig>)>>>;

/// How often the commit index is saved, at most.
pub const COMMIT_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Most operations one transaction groups.
const MAX_GROUP: usize = 4096;

/// The writer thread: takes everything queued, writes runs of appends in one
/// transaction (one fsync), and does other operations in between, in order.
fn writer_loop(db: Arc<Database>, rx: mpsc::Receiver<Op>, pending: Pending, commit: UnsavedCommit) {
    let mut commit = CommitSaver {
        unsaved: commit,
        last_saved: None,
    };
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for op in ops {
            match op {
                Op::Append {
                    seq,
                    rows,
                    callback,
                } => appends.push((seq, rows, callback)),
                other => {
                    flush_appends(&db, &pending, &mut commit, std::mem::take(&mut appends));
                    match other {
                        Op::Remove { from, to, done } => {
                            let _ = done.send(remove_range(&db, from, to));
                        }
                        Op::Meta {
                            key,
                            bytes,
                            durability,
                            done,
                        } => {
                            let r = write_meta(&db, key, &bytes, durability);
                            if let Some(done) = done {
                                let _ = done.send(r);
                            } else if let Err(e) = r {
                                tracing::warn!(error = %e, key, "saving Raft metadata failed");
                            }
                        }
                        Op::Append { .. } => unreachable!("handled above"),
                    }
                }
            }
        }
        flush_appends(&db, &pending, &mut commit, appends);
    }
}

type AppendBatch = Vec<(u64, Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>)>;

/// The writer's side of the commit index: what to save, and when it last did.
struct CommitSaver {
    unsaved: UnsavedCommit,
    last_saved: Option<std::time::Instant>,
}

impl CommitSaver {
    /// The commit index to write with this transaction, if it is time.
    fn due(&mut self) -> Option<Option<LogId<NodeId>>> {
        if self
            .last_saved
            .is_some_and(|t| t.elapsed() < COMMIT_SAVE_EVERY)
        {
            return None;
        }
        let c = self
            .unsaved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        self.last_saved = Some(std::time::Instant::now());
        Some(c)
    }
}

fn flush_appends(db: &Database, pending: &Pending, commit: &mut CommitSaver, appends: AppendBatch) {
    if appends.is_empty() {
        return;
    }
    let commit = commit.due();
    let result = (|| -> Result<(), String> {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        if let Some(commit) = commit {
            let bytes = postcard::to_allocvec(&commit).map_err(|e| e.to_string())?;
            txn.open_table(META)
                .map_err(|e| e.to_string())?
                .insert(COMMITTED, bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        {
            let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
            for (_, rows, _) in &appends {
                for (index, bytes) in rows {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        // Durability::Immediate (redb's default): fsynced when this returns.
        txn.commit().map_err(|e| e.to_string())
    })();
    if result.is_ok() {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        for (seq, rows, _) in &appends {
            for (index, _) in rows {
                if p.get(index).is_some_and(|(s, _)| s == seq) {
                    p.remove(index);
                }
            }
        }
    }
    for (_, _, callback) in appends {
        callback.log_io_completed(result.clone().map_err(std::io::Error::other));
    }
}

fn write_meta(
    db: &Database,
    key: &str,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(durability).map_err(|e| e.to_string())?;
    txn.open_table(META)
        .map_err(|e| e.to_string())?
        .insert(key, bytes)
        .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}

fn remove_range(db: &Database, from: Bound<u64>, to: Bound<u64>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
        table
            .retain_in((from, to), |_, _| false)
            .map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())
}

/// The latest commit index this node's log store was told, shared with status
/// reporting (openraft 0.9's metrics do not carry it).
#[derive(Clone, Debug, Default)]
pub struct CommitIndex(Arc<AtomicU64>);

impl CommitIndex {
    /// `None` until something is known committed.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    fn set(&self, index: Option<u64>) {
        self.0
            .store(index.map(|i| i + 1).unwrap_or(0), Ordering::Relaxed);
    }
}

impl RedbLogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, StorageError<NodeId>> {
        let db = Database::create(path).map_err(io_err)?;
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(LOG).map_err(io_err)?;
        txn.open_table(META).map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        let db = Arc::new(db);
        let pending: Pending = Arc::default();
        let unsaved_commit: UnsavedCommit = Arc::default();
        let (tx, rx) = mpsc::channel();
        let thread = {
            let (db, pending, commit) = (db.clone(), pending.clone(), unsaved_commit.clone());
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || writer_loop(db, rx, pending, commit))
                .map_err(io_err)?
        };
        Ok(Self {
            db,
            committed: CommitIndex::default(),
            pending,
            unsaved_commit,
            writer: Arc::new(Writer {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                next_seq: AtomicU64::new(1),
            }),
        })
    }

    /// The commit index as this store last saved it.
    pub fn commit_index(&self) -> CommitIndex {
        self.committed.clone()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(postcard::from_bytes(v.value()).map_err(io_err)?)),
            None => Ok(None),
        }
    }

    /// Queues a metadata write; waits until it is done if `wait`.
    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
        wait: bool,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = postcard::to_allocvec(value).map_err(io_err)?;
        let (done, rx) = if wait {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.writer.send(Op::Meta {
            key,
            bytes,
            durability,
            done,
        })?;
        if let Some(rx) = rx {
            rx.await
                .map_err(|_| io_err("log writer stopped"))?
                .map_err(io_err)?;
        }
        Ok(())
    }

    /// Removes log entries in the range, from memory at once and durably before returning.
    async fn remove_range(
        &self,
        from: Bound<u64>,
        to: Bound<u64>,
    ) -> Result<(), StorageError<NodeId>> {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let doomed: Vec<u64> = p.range((from, to)).map(|(i, _)| *i).collect();
            for i in doomed {
                p.remove(&i);
            }
        }
        let (done, rx) = tokio::sync::oneshot::channel();
        self.writer.send(Op::Remove { from, to, done })?;
        rx.await
            .map_err(|_| io_err("log writer stopped"))?
            .map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        // Under the lock, so the writer cannot move an entry from memory to disk
        // between the two reads: each entry is seen in one place or both.
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        for item in table.range::<u64>(bounds).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            out.insert(k.value(), postcard::from_bytes(v.value()).map_err(io_err)?);
        }
        // Entries in memory are newer than any on disk at the same index.
        for (i, (_, e)) in pending.range(bounds) {
            out.insert(*i, e.clone());
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = self.read_meta(PURGED)?;
        let in_memory = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_key_value()
            .map(|(_, (_, e))| e.log_id);
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let on_disk = match table.last().map_err(io_err)? {
            Some((_, v)) => Some(
                postcard::from_bytes::<Entry<TypeConfig>>(v.value())
                    .map_err(io_err)?
                    .log_id,
            ),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: in_memory.or(on_disk),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(VOTE, vote, Durability::Immediate, true)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.committed.set(committed.map(|c| c.index));
        *self
            .unsaved_commit
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let committed = self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)?
            .flatten();
        self.committed.set(committed.map(|c| c.index));
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let seq = self.writer.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut rows = Vec::new();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for e in entries {
                rows.push((e.log_id.index, postcard::to_allocvec(&e).map_err(io_err)?));
                p.insert(e.log_id.index, (seq, e));
            }
        }
        // Readable from memory now; durable (and acknowledged) when the writer
        // has committed it.
        self.writer.send(Op::Append {
            seq,
            rows,
            callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range(Bound::Included(log_id.index), Bound::Unbounded)
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.write_meta(PURGED, &log_id, Durability::Immediate, true)
            .await?;
        self.remove_range(Bound::Unbounded, Bound::Included(log_id.index))
            .await
    }
}
