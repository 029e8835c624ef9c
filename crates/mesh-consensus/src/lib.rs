//! Ordering engines: they decide the one order in which every replica applies
//! commands to the [`mesh_state::StateMachine`].
//!
//! [`ordering::Ordering`] is the engine-agnostic trait the rest of the node uses:
//! propose a command and learn its reply once committed and applied, wait for a
//! linearizable read point, report status. Two engines implement it: [`raft`],
//! with openraft (all openraft specifics stay in that module), and [`pbft`], our
//! own Byzantine-fault-tolerant engine (`mesh up --consensus pbft`).
//!
//! See `ALGORITHM.md` for how the Raft engine batches writes, what it fsyncs and
//! when, how reads stay linearizable, and how voters are kept; see `PBFT.md` for
//! where the pBFT engine goes beyond the paper, and its known limits.

pub mod ordering;
pub mod pbft;
pub mod raft;

pub use ordering::{Applied, OrderError, OrderStatus, Ordering};
