//! The durable Raft log and vote, in redb.
//!
//! fsync policy: every append, vote, truncate and purge is one redb write
//! transaction committed with `Durability::Immediate`, which fsyncs before
//! `commit` returns; openraft is told an append is flushed only after that. So a
//! write the leader acknowledges (durable on a majority) survives kill -9 of any
//! node. openraft appends in batches, so one fsync covers many entries under load.
//! The commit index is saved without an fsync (`Durability::None`, made durable
//! by the next append): it only speeds up a restart, and losing it is safe, since
//! the leader tells a restarted node again what is committed.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{NodeId, TypeConfig, io_err};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

/// A redb-backed log store; clones share the database.
#[derive(Clone)]
pub struct RedbLogStore {
    db: Arc<Database>,
    committed: CommitIndex,
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
        Ok(Self {
            db: Arc::new(db),
            committed: CommitIndex::default(),
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

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = postcard::to_allocvec(value).map_err(io_err)?;
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(durability).map_err(io_err)?;
        txn.open_table(META)
            .map_err(io_err)?
            .insert(key, bytes.as_slice())
            .map_err(io_err)?;
        txn.commit().map_err(io_err)
    }

    fn remove_range(&self, from: Bound<u64>, to: Bound<u64>) -> Result<(), StorageError<NodeId>> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table.retain_in((from, to), |_, _| false).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>((range.start_bound().cloned(), range.end_bound().cloned()))
            .map_err(io_err)?
        {
            let (_, v) = item.map_err(io_err)?;
            out.push(postcard::from_bytes(v.value()).map_err(io_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = self.read_meta(PURGED)?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let last = match table.last().map_err(io_err)? {
            Some((_, v)) => Some(
                postcard::from_bytes::<Entry<TypeConfig>>(v.value())
                    .map_err(io_err)?
                    .log_id,
            ),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(VOTE, vote, Durability::Immediate)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.committed.set(committed.map(|c| c.index));
        self.write_meta(COMMITTED, &committed, Durability::None)
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
        let result = (|| {
            let txn = self.db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                for e in entries {
                    let bytes = postcard::to_allocvec(&e).map_err(io_err)?;
                    table
                        .insert(e.log_id.index, bytes.as_slice())
                        .map_err(io_err)?;
                }
            }
            // Durability::Immediate (redb's default): fsynced when this returns.
            txn.commit().map_err(io_err)
        })();
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range(Bound::Included(log_id.index), Bound::Unbounded)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.write_meta(PURGED, &log_id, Durability::Immediate)?;
        self.remove_range(Bound::Unbounded, Bound::Included(log_id.index))
    }
}
