//! The simulator's compact identity: a node index and a generation (8 bytes).
//!
//! The daemon uses names and socket addresses; the simulator uses indices so a
//! 10,000-node mesh (10^8 member entries across all views) fits in memory. Both
//! implement the same [`MeshIdentity`] trait and run the same core.

use std::fmt;

use serde::{Deserialize, Serialize};

use mesh_membership::MeshIdentity;

/// A simulated node's stable key, shown as `n<index>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SimKey(pub u32);

impl fmt::Display for SimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Debug for SimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A simulated node's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SimId {
    /// Node index: its stable key (shown as `n<idx>`) and its network endpoint.
    pub idx: u32,
    /// Starts at 1; bumped on each restart and each forced rejoin.
    pub generation: u32,
}

impl fmt::Debug for SimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}#{}", self.idx, self.generation)
    }
}

impl foca::Identity for SimId {
    type Addr = SimKey;
    fn renew(&self) -> Option<Self> {
        Some(SimId {
            idx: self.idx,
            generation: self.generation + 1,
        })
    }
    fn addr(&self) -> SimKey {
        SimKey(self.idx)
    }
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

impl MeshIdentity for SimId {
    type Endpoint = u32;
    fn endpoint(&self) -> u32 {
        self.idx
    }
    fn generation(&self) -> u64 {
        self.generation as u64
    }
}
