//! The Raft log and the vote, in memory.
//!
//! For tests: clones share the log, so a "restarted" node given a clone finds
//! its log and vote as a durable disk would keep them. Production uses
//! [`super::redb_store::RedbLogStore`].
//!
//! By default an append is durable at once. [`MemLogStore::with_flush_delay`]
//! models a disk instead: appended entries are readable at once but durable
//! only after a seeded delay, in order, and [`MemLogStore::lose_unflushed`]
//! (a crash) drops what was not flushed yet. The simulator uses it, so a node
//! that crashed loses exactly what a real one could, and nothing acknowledged
//! may depend on it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};

use super::{NodeId, TypeConfig};

#[derive(Default)]
struct Inner {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    /// Durable entries.
    log: BTreeMap<u64, Entry<TypeConfig>>,
    /// Appended, readable, not durable yet: by index, with the append's number.
    unflushed: BTreeMap<u64, (u64, Entry<TypeConfig>)>,
    /// Bumped by a crash: flushes queued before it never happen.
    epoch: u64,
    next_seq: u64,
    /// When the latest queued append becomes durable (flushes land in order).
    last_due: Option<tokio::time::Instant>,
    flusher: Option<tokio::sync::mpsc::UnboundedSender<Flush>>,
}

/// One queued append: made durable after its delay unless a crash came first.
struct Flush {
    epoch: u64,
    seq: u64,
    indexes: Vec<u64>,
    due: tokio::time::Instant,
    callback: LogFlushed<TypeConfig>,
}

/// An in-memory log store; clones share the same log.
#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
    /// The flush-delay generator and its maximum, if flushes are delayed.
    delay_rng: Arc<Mutex<Option<(u64, u64)>>>,
}

impl MemLogStore {
    /// An empty log whose appends are durable at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose appends become durable after 0..=`max_delay_ms` (seeded),
    /// in order. Needs a tokio runtime (it runs a flusher task).
    pub fn with_flush_delay(max_delay_ms: u64, seed: u64) -> Self {
        let store = Self::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Flush>();
        store.lock().flusher = Some(tx);
        let inner = store.inner.clone();
        let rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                tokio::time::sleep_until(f.due).await;
                let flushed = {
                    let mut i = inner.lock().unwrap_or_else(|e| e.into_inner());
                    if i.epoch != f.epoch {
                        false
                    } else {
                        for idx in &f.indexes {
                            if i.unflushed.get(idx).is_some_and(|(s, _)| *s == f.seq) {
                                let (_, e) = i.unflushed.remove(idx).expect("present");
                                i.log.insert(*idx, e);
                            }
                        }
                        true
                    }
                };
                if flushed {
                    f.callback.log_io_completed(Ok(()));
                }
            }
        });
        // The delays are drawn when appending, from the seeded generator.
        *store.delay_rng.lock().unwrap_or_else(|e| e.into_inner()) = Some((rng, max_delay_ms));
        store
    }

    /// A crash: appends not flushed yet are gone, and queued flushes never land.
    pub fn lose_unflushed(&self) {
        let mut i = self.lock();
        i.epoch += 1;
        i.unflushed.clear();
    }

    fn next_delay(&self) -> u64 {
        let mut r = self.delay_rng.lock().unwrap_or_else(|e| e.into_inner());
        match r.as_mut() {
            Some((x, max)) => {
                *x ^= *x >> 12;
                *x ^= *x << 25;
                *x ^= *x >> 27;
                x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (*max + 1)
            }
            None => 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.lock();
        let mut out: BTreeMap<u64, Entry<TypeConfig>> = inner
            .log
            .range(range.clone())
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        // Not yet durable entries are newer than durable ones at the same index.
        for (i, (_, e)) in inner.unflushed.range(range) {
            out.insert(*i, e.clone());
        }
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner
            .unflushed
            .values()
            .next_back()
            .map(|(_, e)| e.log_id)
            .or(inner.log.values().next_back().map(|e| e.log_id))
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
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
        let delay_ms = self.next_delay();
        let mut inner = self.lock();
        let Some(flusher) = inner.flusher.clone() else {
            for e in entries {
                inner.log.insert(e.log_id.index, e);
            }
            drop(inner);
            // Without a flush model, "flushed" is immediate.
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let mut indexes = Vec::new();
        for e in entries {
            indexes.push(e.log_id.index);
            inner.unflushed.insert(e.log_id.index, (seq, e));
        }
        let epoch = inner.epoch;
        // In order: never durable before an earlier append.
        let mut due = tokio::time::Instant::now() + std::time::Duration::from_millis(delay_ms);
        if let Some(last) = inner.last_due {
            due = due.max(last);
        }
        inner.last_due = Some(due);
        drop(inner);
        let _ = flusher.send(Flush {
            epoch,
            seq,
            indexes,
            due,
            callback,
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        inner.log.split_off(&log_id.index);
        inner.unflushed.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        inner.log = inner.log.split_off(&(log_id.index + 1));
        inner.unflushed = inner.unflushed.split_off(&(log_id.index + 1));
        inner.last_purged = Some(log_id);
        Ok(())
    }
}
