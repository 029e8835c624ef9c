//! Barriers: "wait until these agents (or N agents of a type) are COMPLETE".
//!
//! A barrier is released by the command that makes its condition true, at one log
//! position on every replica; the release is reported as an event, which the node
//! pushes to waiting clients (long-poll or stream). Nobody polls.

use serde::{Deserialize, Serialize};

/// What a barrier waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BarrierSpec {
    /// Every one of these agents is COMPLETE.
    Agents(Vec<String>),
    /// At least `count` agents of type `kind` are COMPLETE.
    Group {
        /// The agent type counted ([`crate::agents::Agent::kind`]).
        kind: String,
        /// How many agents of that type must be COMPLETE (at least 1).
        count: usize,
    },
}

/// A barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Barrier {
    /// The barrier's name, chosen by its creator; unique in the mesh.
    pub id: String,
    /// The condition that releases it.
    pub spec: BarrierSpec,
    /// Stamp (Unix ms) of the command that created it.
    pub created_at_ms: u64,
    /// Stamp (Unix ms) of the command that released it; `None` while it holds.
    pub released_at_ms: Option<u64>,
}
