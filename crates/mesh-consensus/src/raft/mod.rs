//! Raft, with openraft. Everything openraft-specific lives under this module.
//!
//! - [`log_store`]: the Raft log and vote in memory (tests);
//! - [`redb_store`]: the same, durable in redb (fsync per commit);
//! - [`sm_store`]: the adapter from openraft's state-machine API to
//!   [`mesh_state::StateMachine`], with snapshots;
//! - [`net_mem`]: an in-process network for tests;
//! - [`net_tcp`]: Raft RPCs over TCP frames;
//! - [`batcher`]: group commit of concurrent client writes into one entry;
//! - [`forwarder`]: followers' batched forwarding of writes to the leader;
//! - `unstick`: a watchdog that breaks election livelocks (see its docs);
//! - [`engine`]: [`RaftOrdering`], the [`crate::Ordering`] implementation.

// openraft's traits return its large `StorageError`; our storage helpers return
// the same type so `?` works at the trait boundary, and boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod batcher;
pub mod engine;
pub mod forwarder;
pub mod log_store;
pub mod net_mem;
pub mod net_tcp;
pub mod redb_store;
pub mod sm_store;
mod unstick;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use engine::RaftOrdering;

/// Raft node ids are u64; a node's id is derived from its name (see [`node_id_of`]).
pub type NodeId = u64;

/// What one log entry carries: commands stamped by the leader, batched when
/// they arrive together (one append, one fsync for all of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request(pub Vec<mesh_state::Stamped>);

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {}", self.0.len())
    }
}

/// What applying one entry returns: a reply per command of the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Log index of the applied entry.
    pub index: u64,
    /// One reply per command of the batch, in batch order (none for blank or
    /// membership entries).
    pub replies: Vec<Result<mesh_state::Reply, mesh_state::StateError>>,
}

openraft::declare_raft_types!(
    /// Agent Mesh's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A stable Raft id for a node name (64-bit FNV-1a; collisions among a mesh's
/// few names are negligible, and a join with a colliding id is refused).
pub fn node_id_of(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Converts a storage failure to openraft's error.
pub(crate) fn io_err(e: impl std::fmt::Display) -> openraft::StorageError<NodeId> {
    openraft::StorageIOError::<NodeId>::write(&std::io::Error::other(e.to_string())).into()
}

/// What a failed write (client write or membership change) means to callers:
/// another node leads, or the engine stopped.
pub(crate) fn write_error(
    e: openraft::error::RaftError<
        NodeId,
        openraft::error::ClientWriteError<NodeId, openraft::BasicNode>,
    >,
) -> crate::ordering::OrderError {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            crate::ordering::OrderError::NotLeader {
                leader: f.leader_id,
            }
        }
        e => crate::ordering::OrderError::Stopped(e.to_string()),
    }
}
