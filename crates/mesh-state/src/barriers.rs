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
    Group { kind: String, count: usize },
}

/// A barrier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Barrier {
    pub id: String,
    pub spec: BarrierSpec,
    pub created_at_ms: u64,
    pub released_at_ms: Option<u64>,
}
