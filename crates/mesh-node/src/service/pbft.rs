//! pBFT administration through the Service API: the configuration in force
//! (what a node joining the replica set starts from) and this replica's
//! vote for a new replica set. Under Raft both are refused as such.

use mesh_consensus::pbft::engine::EpochFile;
use mesh_consensus::pbft::epoch::{VoteError, VoteOutcome};
use mesh_consensus::pbft::machine::Proposal;
use serde::Serialize;

use super::{Service, ServiceError};
use crate::pbft_setup::{Genesis, GenesisReplica};

/// How long a vote may take to execute before the caller is told.
const VOTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a counted vote did, as the API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VoteReport {
    /// The proposal has `votes` of the `need` it takes.
    Counted {
        /// Replicas that voted for this replica set so far.
        votes: usize,
        /// Votes it takes to decide.
        need: usize,
    },
    /// This vote decided it: epoch `epoch` starts after sequence number
    /// `end` (decided by the batch at `at`).
    Decided {
        /// The new configuration's epoch number.
        epoch: u64,
        /// Sequence number of the batch that decided the change.
        at: u64,
        /// Last sequence number ordered by the old replica set.
        end: u64,
        /// The new replica set's names, in replica-id order.
        replicas: Vec<String>,
    },
}

fn not_pbft() -> ServiceError {
    ServiceError::bad(
        "not_pbft",
        "this node orders with Raft; replica sets are changed this way only under --consensus pbft",
    )
}

impl Service {
    /// The pBFT configuration in force on this node.
    pub fn pbft_config(&self) -> Result<EpochFile, ServiceError> {
        Ok(self.inner.engine.pbft().ok_or_else(not_pbft)?.config())
    }

    /// Votes, as this node's replica, for the replica set `replicas` (in
    /// order: the first is the first primary). Checked here first (names,
    /// keys, at least 4 replicas); the replicated configuration then counts
    /// it, the same way on every replica.
    pub async fn pbft_reconfigure(
        &self,
        replicas: Vec<GenesisReplica>,
    ) -> Result<VoteReport, ServiceError> {
        let pbft = self.inner.engine.pbft().ok_or_else(not_pbft)?;
        let g = Genesis { replicas };
        let set = g
            .replica_set()
            .map_err(|e| ServiceError::bad("bad_replica_set", e))?;
        let proposal = Proposal {
            keys: set.keys().to_vec(),
            names: g.replicas.into_iter().map(|r| r.name).collect(),
        };
        let vote = tokio::time::timeout(VOTE_TIMEOUT, pbft.reconfigure(proposal))
            .await
            .map_err(|_| ServiceError::Timeout {
                request_id: "pbft-reconfigure".into(),
                may_have_applied: true,
            })?
            .map_err(|e| ServiceError::Stopped(e.to_string()))?;
        match vote {
            Ok(VoteOutcome::Counted { votes, need }) => Ok(VoteReport::Counted { votes, need }),
            Ok(VoteOutcome::Decided(d)) => Ok(VoteReport::Decided {
                epoch: d.next.epoch(),
                at: d.at,
                end: d.end,
                replicas: d.names,
            }),
            Err(e @ VoteError::NotAReplica) => {
                Err(ServiceError::bad("not_a_replica", e.to_string()))
            }
            Err(e @ VoteError::AlreadyDecided { .. }) => {
                Err(ServiceError::bad("change_pending", e.to_string()))
            }
            Err(e) => Err(ServiceError::bad("bad_replica_set", e.to_string())),
        }
    }
}
