//! Proposals and signed votes: application-level decisions with a quorum.
//!
//! A proposal names its eligible voters (fixed when it is created: the listed
//! agents, or every agent registered at that moment), a threshold (a fraction of
//! the eligible voters, default 0.67) and a deadline. A vote is `approve` or
//! `reject` with an optional reason, signed by the voting agent's ed25519 key over
//! [`vote_signing_bytes`]; the signature is verified in `apply`, on every replica,
//! before the vote counts. An agent may change its vote (a higher `seq`) until the
//! decision. The proposal is approved once approvals reach `ceil(threshold x n)`,
//! rejected once that can no longer happen, and expires at the deadline.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalStatus {
    /// Taking votes: neither outcome is decided and the deadline has not passed.
    Open,
    /// Approvals reached the threshold.
    Approved,
    /// Too many rejections: the threshold can no longer be reached.
    Rejected,
    /// The deadline passed while it was still open.
    Expired,
}

/// One agent's vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    /// `true` to approve, `false` to reject.
    pub approve: bool,
    /// The voter's optional explanation (signed with the vote).
    pub reason: Option<String>,
    /// The agent's counter: a replacement vote must carry a higher one.
    pub seq: u64,
    /// ed25519 signature (64 bytes) over [`vote_signing_bytes`], by the agent's key.
    pub signature: Vec<u8>,
    /// Stamp (Unix ms) of the command that counted the vote.
    pub at_ms: u64,
}

/// A proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// The proposal's name, chosen by its creator; unique in the mesh.
    pub id: String,
    /// JSON text, checked by the API layer.
    pub body: String,
    /// Who proposed it, as the client named it (usually an agent id; not checked).
    pub proposer: Option<String>,
    /// Eligible voters, fixed at creation.
    pub voters: Vec<String>,
    /// Fraction of the eligible voters whose approval decides, in (0, 1].
    pub threshold: f64,
    /// Stamp (Unix ms) of the command that created it.
    pub created_at_ms: u64,
    /// When it expires if still open, in Unix ms.
    pub deadline_ms: u64,
    /// The latest vote of each voter who voted, by agent id.
    pub votes: BTreeMap<String, Vote>,
    /// Where it stands.
    pub status: ProposalStatus,
    /// When it was approved, rejected or expired, in Unix ms; `None` while open.
    pub decided_at_ms: Option<u64>,
}

/// Longest proposal body (JSON text), in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest vote reason, in bytes.
pub const MAX_REASON_BYTES: usize = 4 * 1024;
/// Most eligible voters of one proposal.
pub const MAX_VOTERS: usize = 10_000;
/// Default threshold: two thirds (the "0.67" of the spec). Exactly 2/3, so two of
/// three voters suffice; an explicit 0.67 is taken literally (then 2 of 3 is 0.667,
/// short of it).
pub const DEFAULT_THRESHOLD: f64 = 2.0 / 3.0;

/// The exact bytes an agent signs to cast a vote. Clients must sign these.
pub fn vote_signing_bytes(
    proposal_id: &str,
    agent_id: &str,
    approve: bool,
    reason: Option<&str>,
    seq: u64,
) -> Vec<u8> {
    format!(
        "agent-mesh vote v1\nproposal:{proposal_id}\nagent:{agent_id}\nvote:{}\nseq:{seq}\nreason:{}",
        if approve { "approve" } else { "reject" },
        reason.unwrap_or("")
    )
    .into_bytes()
}

/// Verifies a vote's signature against the agent's public key.
pub fn verify_vote(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), StateError> {
    let bad = || StateError::BadSignature;
    let key: [u8; 32] = public_key.try_into().map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
    let sig = Signature::from_slice(signature).map_err(|_| bad())?;
    key.verify_strict(message, &sig).map_err(|_| bad())
}

impl Proposal {
    /// Approvals needed: `ceil(threshold x eligible)`, at least 1.
    pub fn needed(&self) -> usize {
        ((self.threshold * self.voters.len() as f64) - 1e-9)
            .ceil()
            .max(1.0) as usize
    }

    /// Votes counted as approvals.
    pub fn approvals(&self) -> usize {
        self.votes.values().filter(|v| v.approve).count()
    }

    /// Votes counted as rejections.
    pub fn rejections(&self) -> usize {
        self.votes.values().filter(|v| !v.approve).count()
    }

    /// Decides if the votes allow it: approved, or rejected when even every
    /// missing vote approving could not reach the threshold.
    pub fn evaluate(&mut self, now_ms: u64) -> bool {
        if self.status != ProposalStatus::Open {
            return false;
        }
        let needed = self.needed();
        let outcome = if self.approvals() >= needed {
            ProposalStatus::Approved
        } else if self.voters.len() - self.rejections() < needed {
            ProposalStatus::Rejected
        } else {
            return false;
        };
        self.status = outcome;
        self.decided_at_ms = Some(now_ms);
        true
    }

    /// Fraction of eligible voters who voted.
    pub fn participation(&self) -> f64 {
        if self.voters.is_empty() {
            0.0
        } else {
            self.votes.len() as f64 / self.voters.len() as f64
        }
    }

    /// Time from creation to decision (or expiry).
    pub fn decision_latency_ms(&self) -> Option<u64> {
        self.decided_at_ms.map(|d| d - self.created_at_ms)
    }
}
