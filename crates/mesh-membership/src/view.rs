//! The member list as a node reports it (`/v1/members`, `mesh status`).

use serde::Serialize;

use mesh_proto::Load;

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
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
    pub id: String,
    pub addr: String,
    pub state: MemberState,
    pub incarnation: u16,
    pub generation: u64,
    pub zone: Option<String>,
    pub caps: Vec<String>,
    pub software_version: Option<String>,
    pub http_addr: Option<String>,
    pub load: Option<Load>,
    /// Smoothed round-trip time of this node's direct probes to the member.
    pub rtt_ms: Option<f64>,
    /// Milliseconds since this node saw the member's state change (null: not since this node started).
    pub last_change_ms: Option<u64>,
    pub suspected_by: Vec<String>,
    pub confirmed_by: Vec<String>,
    #[serde(rename = "self")]
    pub is_self: bool,
}
