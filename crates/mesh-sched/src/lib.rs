//! How Agent Mesh decides which agent runs a task: pure, deterministic functions
//! with no I/O, no clock and no unordered iteration, so the replicated state
//! machine (`mesh-state`) can call them while applying a command and every
//! replica decides the same.
//!
//! - [`capability`]: the weighted match score between a task's required
//!   capabilities and an agent's, and the routing threshold;
//! - [`ring`]: a consistent-hash ring over nodes, with virtual nodes and
//!   replicas (the `hash` strategy);
//! - [`auction`]: bid scoring and the award, with deterministic tie-breaks;
//! - [`steal`]: which peer queue an idle agent steals from.
//!
//! This crate depends on nothing in the workspace; `mesh-state` calls it,
//! because the state machine routes while it applies (so a routing decision
//! is part of the replicated log, not a guess per node), and these functions
//! need nothing from the state.
#![forbid(unsafe_code)]

pub mod auction;
pub mod capability;
pub mod ring;
pub mod steal;

/// Routing strategies a task may ask for (the mesh has a default). Stored in
/// the replicated state as it is (serde).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Strategy {
    /// The best capability match among agents with capacity (score at least the threshold).
    Capability,
    /// The owner node on a consistent-hash ring of live nodes; its replicas take over.
    Hash,
    /// Agents bid during a short window; the best score wins.
    Auction,
    /// Tasks wait in per-agent queues; idle agents steal from loaded ones.
    Steal,
}

impl Strategy {
    /// Every strategy, in the order help texts list them.
    pub const ALL: [Strategy; 4] = [
        Strategy::Capability,
        Strategy::Hash,
        Strategy::Auction,
        Strategy::Steal,
    ];

    /// The lower-case name used in commands, JSON and config (`capability`, `hash`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Capability => "capability",
            Strategy::Hash => "hash",
            Strategy::Auction => "auction",
            Strategy::Steal => "steal",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown routing strategy '{s}': expected capability, hash, auction or steal"
                )
            })
    }
}

/// A 64-bit hash with good mixing and no per-process seed (FNV-1a, then the
/// splitmix64 finalizer so nearby inputs land far apart on the ring).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_and_print() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>(), Ok(s));
        }
        let e = "fastest".parse::<Strategy>().unwrap_err();
        assert!(e.contains("unknown routing strategy 'fastest'"), "{e}");
    }

    #[test]
    fn the_hash_is_stable() {
        // A fixed value: a change would move every task on every ring of a
        // running mesh (replicas must agree, across versions too).
        assert_eq!(stable_hash(b"agent-mesh"), STABLE);
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }
    const STABLE: u64 = 13_450_291_543_763_825_781;
}
