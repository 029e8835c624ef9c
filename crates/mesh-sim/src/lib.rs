//! Agent Mesh's deterministic simulator.
//!
//! One event queue in virtual time drives many copies of the same membership core
//! the daemon runs, over a seeded network model (latency, loss, duplication,
//! reordering, symmetric and one-way partitions) with crash, restart and graceful
//! leave. Invariants ([`invariants`]) are checked on every event; a failing run
//! reports its seed and the command that replays it.
//!
//! - [`sim`]: the engine; [`net`]: the network model; [`id`]: compact identities;
//! - [`scenario`]: a small text DSL for tests ("start 20; partition {1..7}; wait 5s; heal; assert converged");
//! - [`report`]: the `mesh sim membership` measurement run;
//! - [`msg`]: the messaging core (`mesh-msg`) under loss, partitions and restarts;
//! - [`linearizability`]: a Wing–Gong checker for register histories.
#![forbid(unsafe_code)]

pub mod id;
pub mod invariants;
pub mod linearizability;
pub mod msg;
pub mod net;
pub mod report;
pub mod scenario;
pub mod sim;

pub use sim::{Sim, SimConfig, Stats};
