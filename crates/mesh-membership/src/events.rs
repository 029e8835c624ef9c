//! Membership events: what changed, when, and who said so.
//!
//! The core emits every event as an output (the runtime logs and publishes it)
//! and keeps the most recent ones in a bounded ring for `/v1/status`.

use serde::Serialize;

/// The node's write mode, from the fraction of the last known membership it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// This node reaches a strict majority of the known members.
    ReadWrite,
    /// This node reaches half or fewer (the minority side of a partition).
    ReadOnly,
}

impl Mode {
    /// The kebab-case name, as in the JSON and the status report.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "read-write",
            Mode::ReadOnly => "read-only",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A member we did not know became alive.
    Joined,
    /// A member restarted: same name, newer generation.
    Restarted {
        /// The generation the member had before the restart.
        previous_generation: u64,
    },
    /// A member someone declared dead is alive again (new generation or a healed partition).
    Rejoined,
    /// `by` could not reach the member, directly or through k peers.
    Suspected,
    /// The suspicion was confirmed (no refutation in time): the member is dead.
    Dead,
    /// The member left gracefully.
    Left,
    /// This node reached its first member: it is part of a mesh.
    Connected,
    /// This node lost every member: it is alone.
    Isolated,
    /// This node was declared dead by the others and rejoined under a new generation.
    Renewed,
    /// No seed answered yet; the next attempt is scheduled.
    JoinRetry {
        /// Retry number in the current join round, from 1.
        attempt: u32,
        /// Milliseconds until the next retry (doubling, capped at `join_retry_max_ms`).
        next_in_ms: u64,
    },
    /// The write mode changed.
    ModeChanged {
        /// The new mode.
        mode: Mode,
        /// Members this node reaches, itself included.
        reachable: usize,
        /// The last known membership: the reachable members plus the dead ones
        /// (members that left are not counted).
        known: usize,
    },
    /// A newer soft state of the member arrived (not kept in the event ring: too chatty).
    SoftUpdated {
        /// The soft-state version that arrived.
        version: u64,
    },
}

impl EventKind {
    /// The snake_case name, as in the JSON `type` field and the metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Joined => "joined",
            EventKind::Restarted { .. } => "restarted",
            EventKind::Rejoined => "rejoined",
            EventKind::Suspected => "suspected",
            EventKind::Dead => "dead",
            EventKind::Left => "left",
            EventKind::Connected => "connected",
            EventKind::Isolated => "isolated",
            EventKind::Renewed => "renewed",
            EventKind::JoinRetry { .. } => "join_retry",
            EventKind::ModeChanged { .. } => "mode_changed",
            EventKind::SoftUpdated { .. } => "soft_updated",
        }
    }
}

/// One event, as seen by this node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipEvent {
    /// Local time in milliseconds (the runtime's clock, or the simulator's virtual clock).
    pub at_ms: u64,
    /// The member it is about (this node's own name for node-level events).
    pub subject: String,
    /// The subject's generation.
    pub generation: u64,
    /// What happened (flattened into the JSON: its `type` field and details).
    #[serde(flatten)]
    pub kind: EventKind,
    /// Who reported it: suspecters for `suspected`, confirmers for `dead`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_json_type_field() {
        for kind in [
            EventKind::Joined,
            EventKind::Restarted {
                previous_generation: 1,
            },
            EventKind::Rejoined,
            EventKind::Suspected,
            EventKind::Dead,
            EventKind::Left,
            EventKind::Connected,
            EventKind::Isolated,
            EventKind::Renewed,
            EventKind::JoinRetry {
                attempt: 1,
                next_in_ms: 2,
            },
            EventKind::ModeChanged {
                mode: Mode::ReadOnly,
                reachable: 1,
                known: 3,
            },
            EventKind::SoftUpdated { version: 1 },
        ] {
            let ev = MembershipEvent {
                at_ms: 0,
                subject: "x".into(),
                generation: 1,
                kind: kind.clone(),
                by: vec![],
            };
            let json = serde_json::to_value(&ev).unwrap();
            assert_eq!(json["type"], kind.name());
        }
    }
}
