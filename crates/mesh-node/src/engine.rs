//! The node's ordering engine, chosen at start (`--consensus raft|pbft`):
//! both order the same state machine behind [`Ordering`], so the service and
//! every front end work the same on either. What only one of them has (Raft's
//! voter management, pBFT's views and evidence) is reached through
//! [`Engine::raft`] and [`Engine::pbft`].

use std::collections::BTreeMap;

use mesh_consensus::pbft::engine::PbftOrdering;
use mesh_consensus::raft::{NodeId, RaftOrdering};
use mesh_consensus::{Applied, OrderError, OrderStatus, Ordering};
use mesh_state::{Command, RequestId};

/// Which engine a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// Raft (`--consensus raft`): tolerates crashed nodes.
    Raft,
    /// pBFT (`--consensus pbft`): tolerates f of 3f + 1 replicas that lie.
    Pbft,
}

impl EngineKind {
    /// The name `--consensus` takes and status output shows: `raft` or `pbft`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Raft => "raft",
            EngineKind::Pbft => "pbft",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raft" => Ok(EngineKind::Raft),
            "pbft" => Ok(EngineKind::Pbft),
            other => Err(format!("--consensus {other}: expected raft or pbft")),
        }
    }
}

/// A node's ordering engine.
#[derive(Clone)]
pub enum Engine {
    /// The Raft engine, when the node runs `--consensus raft`.
    Raft(RaftOrdering),
    /// The pBFT engine, when the node runs `--consensus pbft`.
    Pbft(PbftOrdering),
}

impl Ordering for Engine {
    async fn propose(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Applied, OrderError> {
        match self {
            Engine::Raft(r) => r.propose(command, request_id).await,
            Engine::Pbft(p) => p.propose(command, request_id).await,
        }
    }

    async fn read_barrier(&self) -> Result<(), OrderError> {
        match self {
            Engine::Raft(r) => r.read_barrier().await,
            Engine::Pbft(p) => p.read_barrier().await,
        }
    }

    fn status(&self) -> OrderStatus {
        match self {
            Engine::Raft(r) => r.status(),
            Engine::Pbft(p) => p.status(),
        }
    }

    fn state(&self) -> mesh_consensus::ordering::SharedState {
        match self {
            Engine::Raft(r) => r.state(),
            Engine::Pbft(p) => p.state(),
        }
    }
}

impl Engine {
    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Raft(_) => EngineKind::Raft,
            Engine::Pbft(_) => EngineKind::Pbft,
        }
    }

    /// The Raft engine, for Raft-only operations (voters, membership changes);
    /// `None` under pBFT.
    pub fn raft(&self) -> Option<&RaftOrdering> {
        match self {
            Engine::Raft(r) => Some(r),
            Engine::Pbft(_) => None,
        }
    }

    /// The pBFT engine, for pBFT-only operations (views, evidence); `None`
    /// under Raft.
    pub fn pbft(&self) -> Option<&PbftOrdering> {
        match self {
            Engine::Raft(_) => None,
            Engine::Pbft(p) => Some(p),
        }
    }

    /// Raft: every member of the configuration with its address. pBFT
    /// replicas are found through the membership view: none here.
    pub fn member_addrs(&self) -> BTreeMap<NodeId, String> {
        match self {
            Engine::Raft(r) => r.member_addrs(),
            Engine::Pbft(_) => BTreeMap::new(),
        }
    }

    /// This node leads (Raft) or is the primary of the current view (pBFT):
    /// it runs the mesh's housekeeping proposals.
    pub fn is_leader(&self) -> bool {
        match self {
            Engine::Raft(r) => r.is_leader(),
            Engine::Pbft(p) => p.is_primary(),
        }
    }

    /// Waits for a leader (or a primary in normal operation) until `until`.
    pub async fn wait_for_leader(&self, until: tokio::time::Instant) -> Option<NodeId> {
        match self {
            Engine::Raft(r) => r.wait_for_leader(until).await,
            Engine::Pbft(p) => p.wait_for_primary(until).await,
        }
    }

    /// Waits until this replica applied `index`, or `until`.
    pub async fn wait_applied(&self, index: u64, until: tokio::time::Instant) -> bool {
        match self {
            Engine::Raft(r) => r.wait_applied(index, until).await,
            Engine::Pbft(p) => p.wait_applied(index, until).await,
        }
    }

    /// Events caused by applied commands.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(u64, mesh_state::Event)> {
        match self {
            Engine::Raft(r) => r.subscribe(),
            Engine::Pbft(p) => p.subscribe(),
        }
    }

    /// How many of `voters` must be reachable for writes: a majority for
    /// Raft, 2f + 1 of n = 3f + 1 for pBFT.
    pub fn quorum(&self, voters: usize) -> usize {
        match self {
            Engine::Raft(_) => voters / 2 + 1,
            Engine::Pbft(_) => voters - (voters.saturating_sub(1)) / 3,
        }
    }
}
