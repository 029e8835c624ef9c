//! The status document served at `/v1/status` and printed by `mesh status --json`.

use serde::{Deserialize, Serialize};

/// Measured traffic and process figures. `None` (JSON `null`): not measured yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Health {
    pub messages_in_per_sec: Option<f64>,
    pub messages_out_per_sec: Option<f64>,
    pub bytes_in_per_sec: Option<f64>,
    pub bytes_out_per_sec: Option<f64>,
    pub messages_in_total: u64,
    pub messages_out_total: u64,
    pub packets_dropped_total: u64,
    pub cpu_percent: Option<f32>,
    pub resident_bytes: Option<u64>,
}

/// A node's view of the mesh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub node_id: String,
    pub generation: u64,
    pub addr: String,
    pub http: String,
    pub profile: String,
    pub mode: String,
    /// Members reachable (alive or suspect, self included) and last known (also dead).
    pub reachable: usize,
    pub known: usize,
    /// reachable / known: at or below 0.5 the node is read-only.
    pub reachable_fraction: f64,
    pub uptime_ms: u64,
    /// Wall-clock start in Unix milliseconds: event `at_ms` values count from here.
    pub started_unix_ms: u64,
    pub suspect_to_down_ms: u64,
    pub health: Health,
    pub members: Vec<serde_json::Value>,
    pub events: Vec<serde_json::Value>,
}
