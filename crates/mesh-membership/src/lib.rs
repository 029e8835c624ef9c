//! Agent Mesh membership: who is in the mesh, who is alive, and what each node says
//! about itself.
//!
//! A sans-IO core ([`Membership`]) wraps the foca SWIM implementation and adds:
//! soft-state gossip piggybacked on SWIM packets ([`rumor`]), push-pull
//! anti-entropy over streams, joining through seed addresses, direct suspicion
//! notices for fast refutation, records of who suspected and who confirmed each
//! failure, and a quorum `mode` (read-write with a reachable majority, read-only
//! otherwise). The daemon (`mesh-node`) and the simulator (`mesh-sim`) drive the
//! same core; see `ALGORITHM.md` in this crate for the protocol.
#![forbid(unsafe_code)]

pub mod core;
pub mod events;
pub mod identity;
pub mod rumor;
pub mod view;
pub mod wire;

pub use crate::core::{CoreTimer, InputError, Membership, MembershipConfig, Output};
pub use events::{EventKind, MembershipEvent, Mode};
pub use identity::{MeshIdentity, PeerId};
pub use view::{MemberInfo, MemberState};
pub use wire::{Channel, Envelope, WireError};
