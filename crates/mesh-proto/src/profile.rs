//! Timing presets, as memberlist has `DefaultLocalConfig`, `DefaultLANConfig` and
//! `DefaultWANConfig`.
//!
//! All nodes of one mesh should share a profile: the probe period and round-trip
//! budget decide how fast a crash is detected and how likely a slow but healthy
//! node is suspected. The suspicion timeout grows with `log10(N)`, like
//! memberlist's `SuspicionMult`, because a suspicion needs more gossip rounds to
//! reach a larger mesh (and so does its refutation).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A named timing preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Processes on one host (loopback): the tightest timings.
    Local,
    /// One data centre or LAN: sub-millisecond to few-millisecond round trips.
    #[default]
    Lan,
    /// Across regions: round trips of tens to hundreds of milliseconds.
    Wan,
}

impl Profile {
    /// The timings this preset stands for.
    pub fn timings(self) -> Timings {
        match self {
            Profile::Local => Timings {
                probe_period_ms: 200,
                probe_rtt_ms: 60,
                indirect_probes: 3,
                suspicion_mult: 2.0,
                gossip_interval_ms: 100,
                gossip_fanout: 3,
                anti_entropy_interval_ms: 5_000,
                announce_interval_ms: 10_000,
                announce_down_interval_ms: 3_000,
                dead_retain_ms: 3_600_000,
                join_retry_initial_ms: 200,
                join_retry_max_ms: 5_000,
            },
            Profile::Lan => Timings {
                probe_period_ms: 200,
                probe_rtt_ms: 80,
                indirect_probes: 3,
                suspicion_mult: 2.0,
                gossip_interval_ms: 100,
                gossip_fanout: 3,
                anti_entropy_interval_ms: 10_000,
                announce_interval_ms: 15_000,
                announce_down_interval_ms: 5_000,
                dead_retain_ms: 3_600_000,
                join_retry_initial_ms: 250,
                join_retry_max_ms: 10_000,
            },
            Profile::Wan => Timings {
                probe_period_ms: 1_000,
                probe_rtt_ms: 400,
                indirect_probes: 3,
                suspicion_mult: 4.0,
                gossip_interval_ms: 250,
                gossip_fanout: 4,
                anti_entropy_interval_ms: 30_000,
                announce_interval_ms: 60_000,
                announce_down_interval_ms: 20_000,
                dead_retain_ms: 24 * 3_600_000,
                join_retry_initial_ms: 1_000,
                join_retry_max_ms: 30_000,
            },
        }
    }

    /// Every profile, for help texts and tests.
    pub const ALL: [Profile; 3] = [Profile::Local, Profile::Lan, Profile::Wan];
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Local => "local",
            Profile::Lan => "lan",
            Profile::Wan => "wan",
        })
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "local" => Ok(Profile::Local),
            "lan" => Ok(Profile::Lan),
            "wan" => Ok(Profile::Wan),
            other => Err(format!(
                "unknown profile '{other}': expected one of local, lan, wan"
            )),
        }
    }
}

/// Membership timings. Units are last in every name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// One SWIM protocol period: each node probes one member per period.
    pub probe_period_ms: u64,
    /// How long a direct probe waits for its ack before asking k peers to probe indirectly.
    pub probe_rtt_ms: u64,
    /// k: how many peers are asked to probe indirectly.
    pub indirect_probes: usize,
    /// Suspicion timeout = max(1, log10 N) x this x probe period.
    pub suspicion_mult: f64,
    /// How often a node with pending updates gossips them.
    pub gossip_interval_ms: u64,
    /// How many random members each gossip round goes to.
    pub gossip_fanout: usize,
    /// Push-pull soft-state sync with one random peer, this often.
    pub anti_entropy_interval_ms: u64,
    /// Full member-list exchange with one random peer, this often (repairs views).
    pub announce_interval_ms: u64,
    /// Contact one member believed dead, this often, so healed partitions merge.
    pub announce_down_interval_ms: u64,
    /// How long a dead member stays in the list (and in the quorum count).
    pub dead_retain_ms: u64,
    /// First retry delay for an unanswered `--join`; doubles up to the maximum.
    pub join_retry_initial_ms: u64,
    /// Largest retry delay for an unanswered `--join`.
    pub join_retry_max_ms: u64,
}

impl Timings {
    /// The suspicion timeout for a mesh of `members` nodes, in milliseconds.
    pub fn suspect_to_down_ms(&self, members: usize) -> u64 {
        let scale = (members.max(1) as f64).log10().max(1.0);
        (scale * self.suspicion_mult * self.probe_period_ms as f64).round() as u64
    }

    /// How many times each update is piggybacked: 4 x ceil(log10(N + 1)), memberlist's
    /// `RetransmitMult` rule (so at least 4).
    pub fn max_transmissions(&self, members: usize) -> u8 {
        let tx = 4.0 * ((members as f64) + 1.0).log10().ceil().max(1.0);
        tx.clamp(4.0, 255.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_grows_with_log_n() {
        let t = Profile::Lan.timings();
        assert_eq!(t.suspect_to_down_ms(5), 400);
        assert_eq!(t.suspect_to_down_ms(10), 400);
        assert_eq!(t.suspect_to_down_ms(100), 800);
        assert_eq!(t.suspect_to_down_ms(10_000), 1600);
    }

    #[test]
    fn retransmissions_have_a_floor() {
        let t = Profile::Lan.timings();
        assert_eq!(t.max_transmissions(1), 4);
        assert_eq!(t.max_transmissions(20), 8);
        assert_eq!(t.max_transmissions(10_000), 20);
    }

    #[test]
    fn parse_profiles() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        assert!(
            "fast"
                .parse::<Profile>()
                .unwrap_err()
                .contains("local, lan, wan")
        );
    }
}
