//! Agents: the workers registered on nodes (LLM sessions, scripts, `--exec`
//! commands), with a type, capabilities, the node that hosts them, their ed25519
//! public key (which signs their votes) and a state.

use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// An agent's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AgentState {
    /// Working: every agent starts here when it registers (or registers again).
    Active,
    /// Blocked on something (other agents, a barrier, a human), as the agent reports.
    Waiting,
    /// Done with its work; barriers count agents in this state.
    Complete,
}

impl AgentState {
    /// The upper-case name used on the wire and in the CLI (`ACTIVE`, `WAITING`, `COMPLETE`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "ACTIVE",
            AgentState::Waiting => "WAITING",
            AgentState::Complete => "COMPLETE",
        }
    }
}

impl std::str::FromStr for AgentState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "ACTIVE" => Ok(AgentState::Active),
            "WAITING" => Ok(AgentState::Waiting),
            "COMPLETE" => Ok(AgentState::Complete),
            _ => Err(format!(
                "unknown agent state '{s}': expected ACTIVE, WAITING or COMPLETE"
            )),
        }
    }
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Mesh-wide unique agent id, chosen at registration.
    pub id: String,
    /// The agent's type (e.g. `reviewer`); group barriers count agents by it.
    pub kind: String,
    /// Capabilities it offers, matched against what tasks need (`*`: everything).
    pub caps: Vec<String>,
    /// The node that hosts it.
    pub node: String,
    /// ed25519 public key (32 bytes) that verifies its votes.
    pub public_key: Vec<u8>,
    /// Its current state, as it last reported it.
    pub state: AgentState,
    /// Stamp (Unix ms) of its first registration; kept when it registers again.
    pub registered_at_ms: u64,
    /// Stamp (Unix ms) of the latest command it sent (registration, state,
    /// heartbeat, or a claim, renewal, outcome or bid).
    pub last_seen_ms: u64,
    /// Set by a replicated `NodeDead` command when the membership layer confirmed
    /// the hosting node dead; cleared when the agent registers again.
    pub node_dead_at_ms: Option<u64>,
    /// The zone of its node, for tasks that ask for one.
    #[serde(default)]
    pub zone: Option<String>,
}

/// Longest agent id, type, node name or capability.
pub const MAX_AGENT_NAME_BYTES: usize = 128;
/// Most capabilities per agent.
pub const MAX_AGENT_CAPS: usize = 64;

/// Checks an agent id, type, node name or capability.
pub fn check_name(what: &str, s: &str) -> Result<(), StateError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_AGENT_NAME_BYTES
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '/'));
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "{what} '{s}' must be 1 to {MAX_AGENT_NAME_BYTES} characters of a-z, 0-9, '-', '_', '.', ':', '@', '/'"
        )))
    }
}

/// Checks an ed25519 public key.
pub fn check_public_key(key: &[u8]) -> Result<(), StateError> {
    let bytes: [u8; 32] = key.try_into().map_err(|_| {
        StateError::Invalid(format!("public key must be 32 bytes, got {}", key.len()))
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map(|_| ())
        .map_err(|_| StateError::Invalid("public key is not a valid ed25519 point".into()))
}
