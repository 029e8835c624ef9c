//! The status document served at `/v1/status` and printed by `mesh status --json`.

use serde::{Deserialize, Serialize};

/// Measured traffic and process figures. `None` (JSON `null`): not measured yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    /// Membership packets and frames received per second, over the last
    /// ten seconds or so.
    pub messages_in_per_sec: Option<f64>,
    /// Membership packets and frames sent per second, same window.
    pub messages_out_per_sec: Option<f64>,
    /// Membership bytes received per second, same window.
    pub bytes_in_per_sec: Option<f64>,
    /// Membership bytes sent per second, same window.
    pub bytes_out_per_sec: Option<f64>,
    /// Membership packets and frames received since start.
    pub messages_in_total: u64,
    /// Membership packets and frames sent since start.
    pub messages_out_total: u64,
    /// Packets and frames dropped since start, every reason together.
    pub packets_dropped_total: u64,
    /// Process CPU use over the last second, percent of one core.
    pub cpu_percent: Option<f32>,
    /// Process resident memory, bytes.
    pub resident_bytes: Option<u64>,
}

/// A node's view of the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// This node's name.
    pub node_id: String,
    /// This node's incarnation: its start time, Unix ms.
    pub generation: u64,
    /// The gossip/RPC address peers reach it at.
    pub addr: String,
    /// The HTTP address.
    pub http: String,
    /// The timing preset: `local`, `lan` or `wan`.
    pub profile: String,
    /// `read-write`, or `read-only` when it reaches no majority of the known members.
    pub mode: String,
    /// Members reachable (alive or suspect, self included) and last known (also dead).
    pub reachable: usize,
    /// Members known, dead ones included.
    pub known: usize,
    /// reachable / known: at or below 0.5 the node is read-only.
    pub reachable_fraction: f64,
    /// Milliseconds since the node loop started.
    pub uptime_ms: u64,
    /// Wall-clock start in Unix milliseconds: event `at_ms` values count from here.
    pub started_unix_ms: u64,
    /// The current suspicion timeout in ms: how long a suspect has to refute
    /// before it is declared dead (grows with the mesh's size).
    pub suspect_to_down_ms: u64,
    /// Traffic and process figures.
    pub health: Health,
    /// Every member in this node's view, itself included, as JSON objects.
    pub members: Vec<serde_json::Value>,
    /// Recent membership events, oldest first.
    pub events: Vec<serde_json::Value>,
}
