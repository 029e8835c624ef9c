//! The Agent Mesh node runtime: a thin tokio loop around the protocol cores.
//!
//! Data flow: one task owns the [`mesh_membership::Membership`] core. UDP
//! datagrams, TCP frames (from per-connection reader tasks), due timers, status
//! queries and shutdown requests go in; the core's outputs (packets, timers,
//! events) come out and are carried out here. Nothing in this crate decides
//! protocol behaviour. HTTP (`/v1/status`, `/v1/members`, `/metrics`) asks the loop
//! for a snapshot over a channel; it will move behind the `Service` API of
//! `mesh-api` when that crate exists.

pub mod config;
pub mod http;
pub mod mdns;
pub mod metrics;
pub mod node;
pub mod procstat;
pub mod status;

pub use config::{ConfigError, NodeConfig};
pub use node::{NodeHandle, start};
pub use status::StatusSnapshot;
