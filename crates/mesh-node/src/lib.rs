//! The Agent Mesh node runtime: a thin tokio loop around the protocol cores.
//!
//! Data flow: one task owns the [`mesh_membership::Membership`] core. UDP
//! datagrams, TCP frames (from per-connection reader tasks), due timers, status
//! queries and shutdown requests go in; the core's outputs (packets, timers,
//! events) come out and are carried out here. Nothing in this crate decides
//! protocol behaviour.
//!
//! [`consensus`] opens the Raft engine (log and snapshots in redb under the data
//! directory) and runs the leader's housekeeping from the membership view;
//! [`pbft_setup`] starts the pBFT engine instead (`--consensus pbft`), and
//! [`engine::Engine`] is either, behind one type;
//! [`service::Service`] is the one API behind every front end (the front ends
//! themselves live in `mesh-api`). [`messaging`] drives the pub/sub and
//! direct-message core over its own peer connections; [`system_events`]
//! publishes what this node sees (members, leader, tasks, proposals) on the
//! `mesh.*` channels.

pub mod config;
pub mod consensus;
pub mod engine;
pub mod key_file;
pub mod mdns;
pub mod messaging;
pub mod metrics;
pub mod node;
pub mod pbft_setup;
pub mod procstat;
pub mod service;
pub mod status;
pub mod system_events;

pub use config::{ConfigError, NodeConfig};
pub use mesh_msg::{DirectReport, Message, PublishReport, Recipient};
pub use node::{NodeHandle, start};
pub use status::StatusSnapshot;
