//! The simulated network: latency, loss, duplication, reordering and partitions.
//!
//! Every decision draws from the simulator's seeded RNG, so a run is a pure
//! function of its seed. Datagrams may be lost or duplicated; stream messages
//! (TCP) are never lost or duplicated but are still cut by partitions. Reordering
//! follows from independent per-message delays (jitter).

use rand::{RngExt, rngs::Xoshiro256PlusPlus};

/// The distribution of one-way message delays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Uniform between `min_us` and `max_us`.
    Uniform {
        /// Shortest delay, µs.
        min_us: u64,
        /// Longest delay, µs (inclusive).
        max_us: u64,
    },
    /// `base_us` plus an exponentially distributed extra delay of mean `mean_extra_us`
    /// (a long tail, as queues produce), capped at 20 means.
    Exponential {
        /// Fixed part of every delay, µs.
        base_us: u64,
        /// Mean of the exponential extra delay, µs.
        mean_extra_us: u64,
    },
}

impl Latency {
    /// A LAN: 200 µs to 1 ms one way.
    pub const LAN: Latency = Latency::Uniform {
        min_us: 200,
        max_us: 1_000,
    };
    /// A WAN: 20 ms to 80 ms one way.
    pub const WAN: Latency = Latency::Uniform {
        min_us: 20_000,
        max_us: 80_000,
    };

    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> u64 {
        match *self {
            Latency::Uniform { min_us, max_us } => {
                if max_us > min_us {
                    rng.random_range(min_us..=max_us)
                } else {
                    min_us
                }
            }
            Latency::Exponential {
                base_us,
                mean_extra_us,
            } => {
                let u: f64 = rng.random_range(0.0..1.0);
                let extra =
                    (-(1.0 - u).ln() * mean_extra_us as f64).min(20.0 * mean_extra_us as f64);
                base_us + extra as u64
            }
        }
    }
}

/// Fault settings of the simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// One-way delay of every message, datagram or stream.
    pub latency: Latency,
    /// Probability that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Latency::LAN,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

/// Directed reachability between groups of nodes. Group 0 is "everyone else".
#[derive(Debug, Clone, Default)]
pub struct Partitions {
    group: Vec<u8>,
    /// `(a, b)`: group a cannot send to group b.
    blocked: Vec<(u8, u8)>,
}

impl Partitions {
    /// No partition among `nodes` nodes: every node is in group 0.
    pub fn new(nodes: usize) -> Self {
        Self {
            group: vec![0; nodes],
            blocked: Vec::new(),
        }
    }

    /// Makes room for `nodes` nodes; new ones start in group 0.
    pub fn grow(&mut self, nodes: usize) {
        if self.group.len() < nodes {
            self.group.resize(nodes, 0);
        }
    }

    /// Cuts `members` off from everyone else. `one_way`: only their outgoing
    /// messages are lost (they still hear the others).
    pub fn isolate(&mut self, members: &[u32], one_way: bool) {
        let g = self
            .group
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        for &m in members {
            self.group[m as usize] = g;
        }
        let others: Vec<u8> = {
            let mut v: Vec<u8> = self.group.iter().copied().filter(|&x| x != g).collect();
            v.sort_unstable();
            v.dedup();
            if v.is_empty() {
                v.push(0);
            }
            v
        };
        for o in others {
            self.blocked.push((g, o));
            if !one_way {
                self.blocked.push((o, g));
            }
        }
    }

    /// Removes every partition: all nodes back in group 0, nothing blocked.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.blocked.clear();
    }

    /// True if a message from node `from` to node `to` gets through.
    pub fn allows(&self, from: u32, to: u32) -> bool {
        if self.blocked.is_empty() {
            return true;
        }
        let (a, b) = (self.group[from as usize], self.group[to as usize]);
        a == b || !self.blocked.contains(&(a, b))
    }
}

/// The delivery delays of one message: empty if it is lost, two if duplicated.
pub fn deliveries(cfg: &NetConfig, rng: &mut Xoshiro256PlusPlus, reliable: bool) -> Vec<u64> {
    fn delay(cfg: &NetConfig, rng: &mut Xoshiro256PlusPlus) -> u64 {
        cfg.latency.sample(rng)
    }
    if reliable {
        return vec![delay(cfg, rng)];
    }
    if cfg.loss > 0.0 && rng.random_bool(cfg.loss.min(1.0)) {
        return Vec::new();
    }
    let first = delay(cfg, rng);
    if cfg.duplicate > 0.0 && rng.random_bool(cfg.duplicate.min(1.0)) {
        return vec![first, delay(cfg, rng)];
    }
    vec![first]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn loss_and_duplication_follow_their_probabilities() {
        let cfg = NetConfig {
            latency: Latency::LAN,
            loss: 0.1,
            duplicate: 0.05,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..100_000 {
            match deliveries(&cfg, &mut rng, false).len() {
                0 => lost += 1,
                2 => dup += 1,
                _ => {}
            }
        }
        assert!((9_000..11_000).contains(&lost), "{lost}");
        assert!((4_000..5_500).contains(&dup), "{dup}");
        // Streams are never lost or duplicated.
        assert!((0..1000).all(|_| deliveries(&cfg, &mut rng, true).len() == 1));
    }

    #[test]
    fn latency_stays_in_its_distribution() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let u = Latency::Uniform {
            min_us: 100,
            max_us: 200,
        };
        assert!(
            (0..1000)
                .map(|_| u.sample(&mut rng))
                .all(|d| (100..=200).contains(&d))
        );
        let e = Latency::Exponential {
            base_us: 1000,
            mean_extra_us: 500,
        };
        let samples: Vec<u64> = (0..20_000).map(|_| e.sample(&mut rng)).collect();
        assert!(samples.iter().all(|&d| (1000..=11_000).contains(&d)));
        let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
        assert!((1450.0..1550.0).contains(&mean), "{mean}");
    }

    #[test]
    fn partitions_cut_the_right_directions() {
        let mut p = Partitions::new(6);
        p.isolate(&[1, 2], true);
        assert!(!p.allows(1, 0) && p.allows(0, 1) && p.allows(1, 2));
        p.heal();
        p.isolate(&[4], false);
        assert!(!p.allows(4, 0) && !p.allows(0, 4) && p.allows(0, 5));
    }
}
