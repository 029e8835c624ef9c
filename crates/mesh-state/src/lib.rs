//! The replicated state machine of Agent Mesh.
//!
//! Everything that must not be lost is a [`Command`] in the replicated log; every
//! replica applies the same commands in the same order to a [`StateMachine`] and
//! ends in the same state. `apply` is deterministic: no clock, no unseeded
//! randomness, no unordered iteration. The leader stamps each command with its
//! time (`now_ms`) and a random seed, so TTL expiry and random choices (`SPOP`)
//! are decided at the same log position, the same way, on every replica.
//!
//! - [`keyspace`]: strings, lists, sets, sorted sets and hashes, each key with an
//!   optional expiry: enough of the Redis data model to serve Redis clients;
//! - [`command`]: the commands and their replies;
//! - [`machine`]: apply, request-id deduplication, snapshots and a state digest;
//! - [`read`]: keyspace reads with Redis's semantics, in and out of the log;
//! - [`glob`]: Redis-style key patterns (`KEYS`, `SCAN MATCH`).
//!
//! - [`agents`], [`proposals`] (signed votes), [`barriers`]: the coordination state.
//!
//! - [`tasks`]: tasks that really run: submit, route, lease, retry, complete.
#![forbid(unsafe_code)]

pub mod agents;
pub mod barriers;
pub mod command;
pub mod error;
/// Redis-style patterns live in `mesh-proto` (pub/sub channels use them too).
pub use mesh_proto::glob;
pub mod keyspace;
pub mod limits;
pub mod machine;
pub mod proposals;
pub mod read;
pub mod tasks;
pub mod value;

pub use command::{
    Command, CoordCmd, Event, Expiry, KvCmd, Reply, RequestId, SetCond, Stamped, TxOp, ZAddFlags,
};
pub use error::StateError;
pub use keyspace::Keyspace;
pub use machine::StateMachine;
pub use value::{Value, ValueType};
