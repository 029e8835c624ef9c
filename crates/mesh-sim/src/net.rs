//! The simulated network: latency, loss, duplication, reordering and partitions.
//!
//! Every decision draws from the simulator's seeded RNG, so a run is a pure
//! function of its seed. Datagrams may be lost or duplicated; stream messages
//! (TCP) are never lost or duplicated but are still cut by partitions. Reordering
//! follows from independent per-message delays (jitter).

use rand::{RngExt, rngs::Xoshiro256PlusPlus};

/// Per-message one-way delay: `base_us` plus a uniform jitter in `[0, jitter_us]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub base_us: u64,
    pub jitter_us: u64,
}

impl Latency {
    /// A LAN: 200 µs to 1 ms one way.
    pub const LAN: Latency = Latency {
        base_us: 200,
        jitter_us: 800,
    };
}

/// Fault settings of the simulated network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
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
    /// `blocked[a][b]`: group a cannot send to group b.
    blocked: Vec<(u8, u8)>,
}

impl Partitions {
    pub fn new(nodes: usize) -> Self {
        Self {
            group: vec![0; nodes],
            blocked: Vec::new(),
        }
    }

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

    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.blocked.clear();
    }

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
        let jitter = if cfg.latency.jitter_us > 0 {
            rng.random_range(0..=cfg.latency.jitter_us)
        } else {
            0
        };
        cfg.latency.base_us + jitter
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
