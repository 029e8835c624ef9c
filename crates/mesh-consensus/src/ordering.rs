//! The engine-agnostic ordering trait.

use std::future::Future;
use std::sync::{Arc, RwLock};

use mesh_state::{Command, Reply, RequestId, StateError, StateMachine};
use serde::{Deserialize, Serialize};

/// A committed and applied command's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Log index the command was applied at.
    pub index: u64,
    /// The state machine's reply (an error changed nothing).
    pub reply: Result<Reply, StateError>,
}

/// Why a command could not be ordered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum OrderError {
    /// This node is not the leader; `leader` is who is, if known. The caller
    /// forwards (the node does it for its clients).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Node id of the current leader (Raft) or primary (pBFT), if known.
        leader: Option<u64>,
    },
    /// No quorum reachable: writes are refused.
    #[error("read-only: no quorum is reachable")]
    ReadOnly,
    /// The engine stopped (shutdown or fatal storage error).
    #[error("ordering engine stopped: {0}")]
    Stopped(String),
    /// Forwarding to the leader failed; the command may or may not have applied
    /// (retry with the same request id: the state machine deduplicates).
    #[error("could not reach the leader {leader}: {detail}")]
    LeaderUnreachable {
        /// Node id of the leader the command was forwarded to.
        leader: u64,
        /// What went wrong on the way, as text.
        detail: String,
    },
}

/// What an engine reports about itself. Unknown figures are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderStatus {
    /// This node's id (Raft: the hash of its name, see [`crate::raft::node_id_of`]).
    pub node_id: u64,
    /// Node id of the Raft leader or pBFT primary, if known.
    pub leader: Option<u64>,
    /// Raft's current term, or pBFT's current view.
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: Option<u64>,
    /// Highest log index applied to this replica's state machine.
    pub applied_index: Option<u64>,
    /// Index of the last entry in this node's log (Raft only).
    pub last_log_index: Option<u64>,
    /// On a leader: how long ago a quorum last acknowledged it (a leader cut off
    /// from its quorum sees this grow). `None` elsewhere.
    pub millis_since_quorum_ack: Option<u64>,
    /// Node ids that vote (Raft voters, or every pBFT replica).
    pub voters: Vec<u64>,
    /// Node ids that replicate without voting (Raft learners; none under pBFT).
    pub learners: Vec<u64>,
    /// Why the engine stopped, if it did (a fatal storage error, a panic): the
    /// node then still serves reads of what it has, but orders nothing.
    pub fatal: Option<String>,
}

/// The replica's state, shared between the engine (which applies) and readers.
pub type SharedState = Arc<RwLock<StateMachine>>;

/// An ordering engine.
pub trait Ordering: Send + Sync + 'static {
    /// Orders `command`; resolves once it is committed on a quorum and applied here.
    fn propose(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> impl Future<Output = Result<Applied, OrderError>> + Send;

    /// Resolves once this replica has applied everything committed before the
    /// call: reading [`Ordering::state`] afterwards is linearizable.
    fn read_barrier(&self) -> impl Future<Output = Result<(), OrderError>> + Send;

    /// What the engine reports about itself now (leader, term, indexes, voters).
    fn status(&self) -> OrderStatus;

    /// The replica's state machine.
    fn state(&self) -> SharedState;
}
