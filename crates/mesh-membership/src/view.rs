//! The member list as a node reports it (`/v1/members`, `mesh status`).

use serde::Serialize;

use mesh_proto::Load;

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes, directly or through peers.
    Alive,
    /// Missed a direct probe and k indirect ones; confirmed dead unless it
    /// refutes within the suspicion timeout.
    Suspect,
    /// The suspicion ran out without a refutation; listed for `dead_retain_ms`.
    Dead,
    /// Announced a graceful leave (also this node's own state once it has left).
    Left,
}

impl MemberState {
    /// The lowercase name, as in the JSON `state` field.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// One row of the member list. Unmeasured figures are `None` (JSON `null`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberInfo {
    /// The member's stable cluster-wide key (the node name).
    pub id: String,
    /// Where its membership packets go (`host:port` for the daemon).
    pub addr: String,
    /// Its state as this node sees it.
    pub state: MemberState,
    /// Its SWIM incarnation, raised by the member to refute a suspicion.
    pub incarnation: u16,
    /// Its generation, bumped on each restart and forced rejoin.
    pub generation: u64,
    /// Failure domain from its soft state (`None` when unset or no soft state arrived).
    pub zone: Option<String>,
    /// Capabilities from its soft state (empty until its soft state arrives).
    pub caps: Vec<String>,
    /// Its software version (`None` until its soft state arrives).
    pub software_version: Option<String>,
    /// Where it serves HTTP (`None` when it does not, or no soft state arrived).
    pub http_addr: Option<String>,
    /// Its last gossiped load (`None` until its soft state arrives).
    pub load: Option<Load>,
    /// Smoothed round-trip time of this node's direct probes to the member.
    pub rtt_ms: Option<f64>,
    /// Milliseconds since this node saw the member's state change (null: not since this node started).
    pub last_change_ms: Option<u64>,
    /// Names of the members that suspected it at its current generation.
    pub suspected_by: Vec<String>,
    /// Names of the members that confirmed it dead at its current generation.
    pub confirmed_by: Vec<String>,
    /// True on this node's own row (JSON `self`).
    #[serde(rename = "self")]
    pub is_self: bool,
}
