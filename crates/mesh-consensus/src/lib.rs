//! Ordering engines: they decide the one order in which every replica applies
//! commands to the [`mesh_state::StateMachine`].
//!
//! [`ordering::Ordering`] is the engine-agnostic trait the rest of the node uses:
//! propose a command and learn its reply once committed and applied, wait for a
//! linearizable read point, report status. [`raft`] implements it with openraft
//! (all openraft specifics stay in that module); pBFT will implement the same trait.
//!
//! State of this crate (issue 3, first step): the trait, the Raft type config, an
//! in-memory log store, the state-machine adapter with snapshots, and an
//! in-process network for multi-node tests. Durable storage (redb) and the TCP
//! transport come next.

pub mod ordering;
pub mod raft;

pub use ordering::{Applied, OrderError, OrderStatus, Ordering};
