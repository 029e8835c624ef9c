//! The adapter from openraft's state-machine API to [`mesh_state::StateMachine`].
//!
//! Applying an entry runs the deterministic state machine; what the command
//! caused (decisions, released barriers, ...) goes out on a broadcast channel for
//! the node to push to waiting clients. Snapshots are the state machine's own
//! snapshot plus the Raft metadata (last applied log id, membership).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{NodeId, Response, TypeConfig, io_err};
use crate::ordering::SharedState;
use mesh_state::{Event, StateMachine};

/// What a snapshot file holds.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    machine: Vec<u8>,
}

struct Meta {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

/// The state-machine store; clones share the state.
#[derive(Clone)]
pub struct SmStore {
    state: SharedState,
    meta: Arc<Mutex<Meta>>,
    events: broadcast::Sender<(u64, Event)>,
    dir: Option<PathBuf>,
}

/// The snapshot file: Raft's metadata and the body.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

const SNAPSHOT_FILE: &str = "snapshot.bin";

impl SmStore {
    /// A store that keeps its snapshot in `dir` and resumes from it.
    pub fn open(dir: &Path) -> Result<Self, StorageError<NodeId>> {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut store = Self::new();
        store.dir = Some(dir.to_path_buf());
        let path = dir.join(SNAPSHOT_FILE);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(io_err)?;
            let file: SnapshotFile = postcard::from_bytes(&bytes).map_err(io_err)?;
            let body: SnapshotBody = postcard::from_bytes(&file.data).map_err(io_err)?;
            let machine = StateMachine::restore(&body.machine).map_err(io_err)?;
            *store.state.write().unwrap_or_else(|e| e.into_inner()) = machine;
            let mut m = store.meta();
            m.last_applied = file.meta.last_log_id;
            m.membership = file.meta.last_membership.clone();
            m.snapshot = Some((file.meta, file.data));
        }
        Ok(store)
    }

    /// Writes the snapshot durably (no-op without a directory).
    fn persist(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let bytes = postcard::to_allocvec(&SnapshotFile {
            meta: meta.clone(),
            data: data.to_vec(),
        })
        .map_err(io_err)?;
        let tmp = dir.join("snapshot.bin.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io_err)?;
        f.write_all(&bytes).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(io_err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
        Ok(())
    }

    /// Id of the last applied entry (for tests and status).
    pub fn last_applied_index(&self) -> Option<u64> {
        self.meta().last_applied.map(|l| l.index)
    }

    /// An empty state machine kept in memory only (no snapshot directory).
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            state: Arc::new(RwLock::new(StateMachine::new())),
            meta: Arc::new(Mutex::new(Meta {
                last_applied: None,
                membership: StoredMembership::default(),
                snapshot: None,
                snapshots_built: 0,
            })),
            events,
            dir: None,
        }
    }

    /// The state machine it applies to, shared with readers.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Every event applied entries cause, with their log index.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, Event)> {
        self.events.subscribe()
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for SmStore {
    fn default() -> Self {
        Self::new()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmStore {
    /// Encodes and persists the state on a blocking thread, so neither a large
    /// state nor the fsync holds up the node's async work. The machine and its
    /// last-applied id are read under the state lock together: openraft builds
    /// snapshots concurrently with applying, and a snapshot that claimed a newer
    /// index than its contents would lose those entries once the log is purged.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.build_snapshot_blocking())
            .await
            .map_err(io_err)?
    }
}

impl SmStore {
    fn build_snapshot_blocking(&self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (body, built) = {
            let machine = self.state.read().unwrap_or_else(|e| e.into_inner());
            let mut meta = self.meta();
            meta.snapshots_built += 1;
            let consistent = (
                meta.last_applied,
                meta.membership.clone(),
                meta.snapshots_built,
            );
            drop(meta);
            let body = SnapshotBody {
                last_applied: consistent.0,
                membership: consistent.1,
                machine: machine.snapshot(),
            };
            (body, consistent.2)
        };
        let data = postcard::to_allocvec(&body).map_err(io_err)?;
        let snapshot_meta = SnapshotMeta {
            last_log_id: body.last_applied,
            last_membership: body.membership,
            snapshot_id: format!(
                "{}-{}",
                body.last_applied.map(|l| l.index).unwrap_or(0),
                built
            ),
        };
        // Durable before openraft may purge the log entries it covers.
        self.persist(&snapshot_meta, &data)?;
        self.meta().snapshot = Some((snapshot_meta.clone(), data.clone()));
        Ok(Snapshot {
            meta: snapshot_meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    /// The state for writing, without blocking the thread while a snapshot is
    /// being encoded under the read lock elsewhere.
    async fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, StateMachine> {
        loop {
            match self.state.try_write() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

impl RaftStateMachine<TypeConfig> for SmStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let meta = self.meta();
        Ok((meta.last_applied, meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut caused = Vec::new();
        let mut machine = self.write_state().await;
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            let index = entry.log_id.index;
            meta.last_applied = Some(entry.log_id);
            let replies = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => {
                    let mut events = Vec::new();
                    let r = machine.apply_batch_with_events(index, &batch.0, &mut events);
                    caused.extend(events.into_iter().map(|e| (index, e)));
                    r
                }
                EntryPayload::Membership(m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
            };
            out.push(Response { index, replies });
        }
        drop(meta);
        drop(machine);
        for e in caused {
            // No subscriber is fine: nobody is waiting.
            let _ = self.events.send(e);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        // Decoding a large state and the fsync run on a blocking thread.
        let (store, snapshot_meta) = (self.clone(), meta.clone());
        let (machine, data) = tokio::task::spawn_blocking(move || {
            let body: SnapshotBody = postcard::from_bytes(&data).map_err(io_err)?;
            let machine = StateMachine::restore(&body.machine).map_err(io_err)?;
            store.persist(&snapshot_meta, &data)?;
            Ok::<_, StorageError<NodeId>>((machine, data))
        })
        .await
        .map_err(io_err)??;
        let mut state = self.write_state().await;
        *state = machine;
        let mut m = self.meta();
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), data));
        drop(m);
        drop(state);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.meta().snapshot.clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
