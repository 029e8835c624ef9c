//! The simulation engine: one event queue in virtual time driving many
//! membership cores over the simulated network.
//!
//! Determinism: the queue orders events by `(time, sequence number)`, every random
//! choice comes from RNGs seeded from the run's seed, and the cores themselves take
//! time and randomness as inputs. The same seed therefore replays the same run,
//! event for event.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};

use crate::id::{SimId, SimKey};
use crate::invariants::{self, Invariant};
use crate::net::{self, NetConfig, Partitions};
use mesh_membership::{
    Channel, CoreTimer, EventKind, MemberInfo, MemberState, Membership, MembershipConfig,
    MembershipEvent, Mode, Output,
};
use mesh_proto::{SoftState, Timings};

/// What a queued event does.
enum Pending {
    Boot { bootstrap: bool },
    Deliver { channel: Channel, bytes: Vec<u8> },
    Timer(CoreTimer<SimId>),
}

struct Scheduled {
    at_us: u64,
    seq: u64,
    node: u32,
    /// Process incarnation the event belongs to (timers and boots die with their process).
    boot: u32,
    what: Pending,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

struct SimNode {
    core: Option<Membership<SimId>>,
    boot: u32,
    generation: u32,
    up: bool,
    /// Clock rate: the node's clock advances `rate` µs per virtual µs (clock skew).
    rate: f64,
}

impl SimNode {
    /// The node's own clock reading at virtual time `virtual_us`.
    fn local_us(&self, virtual_us: u64) -> u64 {
        (virtual_us as f64 * self.rate) as u64
    }
}

/// Traffic counters (datagrams are what SWIM's "messages per member" counts).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Datagrams the cores sent (counted before any loss or partition).
    pub datagrams_sent: u64,
    /// Bytes of those datagrams, headers included.
    pub datagram_bytes_sent: u64,
    /// Datagrams the network model lost at random.
    pub datagrams_lost: u64,
    /// Messages a partition cut: datagrams and stream messages alike.
    pub datagrams_cut: u64,
    /// Stream (anti-entropy) messages the cores sent.
    pub stream_messages_sent: u64,
    /// Bytes of those stream messages, headers included.
    pub stream_bytes_sent: u64,
    /// Queued events run (boots, deliveries, timers), those for down nodes included.
    pub events_processed: u64,
    /// Delivered packets a core refused as undecodable or misrouted.
    pub inputs_rejected: u64,
}

/// An event a node reported, with the virtual time.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Virtual time of the report, µs.
    pub at_us: u64,
    /// Index of the node that reported it.
    pub observer: u32,
    /// The event as the core emitted it (its `at_ms` is on the node's own clock).
    pub event: MembershipEvent,
}

/// A callback for every reported event: (virtual µs, observer, event).
pub type EventHook = Box<dyn FnMut(u64, u32, &MembershipEvent)>;

/// Settings of one simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of every random choice (network, boot times, each node's core).
    pub seed: u64,
    /// Membership timings every node runs with.
    pub timings: Timings,
    /// Network faults at the start (change them during the run through [`Sim::net`]).
    pub net: NetConfig,
    /// Keep every reported event in [`Sim::observed`] (off for huge runs).
    pub record_events: bool,
}

/// The simulator.
pub struct Sim {
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<SimNode>,
    rng: Xoshiro256PlusPlus,
    seed: u64,
    timings: Timings,
    /// Current network faults; a change applies to messages sent afterwards.
    pub net: NetConfig,
    /// Current partitions, checked when a message is sent (in-flight ones arrive).
    pub partitions: Partitions,
    /// Traffic counters since the start.
    pub stats: Stats,
    invariants: Vec<Box<dyn Invariant>>,
    violation: Option<String>,
    record_events: bool,
    /// Processes that crashed or left: (index, generation, virtual µs).
    gone: Vec<(u32, u64, u64)>,
    /// Largest clock-rate error given to nodes created from now on (0.05: ±5%).
    pub max_skew: f64,
    /// Every reported event in order, if [`SimConfig::record_events`] is on.
    pub observed: Vec<Observed>,
    /// Called for every reported event (used by reports that must not keep them all).
    pub on_event: Option<EventHook>,
}

impl Sim {
    /// A simulator with no nodes at virtual time 0, checking [`invariants::all`].
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            seed: cfg.seed,
            timings: cfg.timings,
            net: cfg.net,
            partitions: Partitions::new(0),
            stats: Stats::default(),
            invariants: invariants::all(),
            violation: None,
            record_events: cfg.record_events,
            gone: Vec::new(),
            max_skew: 0.0,
            observed: Vec::new(),
            on_event: None,
        }
    }

    /// The run's seed: the same seed replays the same run.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// Current virtual time, µs.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }
    /// Current virtual time, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }
    /// The membership timings every node runs with.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }
    /// Nodes ever created, crashed ones included (indices `0..len`).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// True before the first node is created.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    /// True if node `idx` exists and is not crashed; a node that left gracefully is up.
    pub fn is_up(&self, idx: u32) -> bool {
        self.nodes.get(idx as usize).is_some_and(|n| n.up)
    }
    /// Indices of the nodes that are up (see [`Sim::is_up`]), ascending.
    pub fn live_nodes(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| self.is_up(i))
            .collect()
    }
    /// The identity node `idx` runs under now (its core may have renewed it).
    pub fn identity(&self, idx: u32) -> SimId {
        match self.core(idx) {
            Some(core) => *core.identity(),
            None => SimId {
                idx,
                generation: self.nodes[idx as usize].generation,
            },
        }
    }

    fn current_generation(&self, idx: u32) -> u64 {
        self.identity(idx).generation as u64
    }
    /// Node `idx`'s membership core; `None` while it is crashed.
    pub fn core(&self, idx: u32) -> Option<&Membership<SimId>> {
        self.nodes.get(idx as usize).and_then(|n| n.core.as_ref())
    }
    /// The first invariant violation, if any.
    pub fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    fn node_seed(&self, idx: u32, generation: u32) -> u64 {
        // SplitMix-style mixing so node RNG streams are unrelated.
        let mut z = self.seed
            ^ ((idx as u64) << 32 | generation as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn push(&mut self, at_us: u64, node: u32, boot: u32, what: Pending) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at_us,
            seq: self.seq,
            node,
            boot,
            what,
        });
    }

    /// Adds `count` nodes that start already knowing each other (a converged mesh),
    /// each booting at a random moment within one probe period.
    pub fn start_converged(&mut self, count: usize) {
        let first = self.nodes.len() as u32;
        for i in 0..count as u32 {
            self.add_node(first + i, Vec::new());
        }
        let period_us = self.timings.probe_period_ms * 1000;
        for i in 0..count as u32 {
            let at = self.now_us + self.rng.random_range(0..period_us.max(1));
            let idx = first + i;
            let boot = self.nodes[idx as usize].boot;
            self.push(at, idx, boot, Pending::Boot { bootstrap: true });
        }
    }

    /// Adds one node that joins through `seeds` now.
    pub fn start_joining(&mut self, seeds: Vec<u32>) -> u32 {
        let idx = self.nodes.len() as u32;
        self.add_node(idx, seeds);
        let boot = self.nodes[idx as usize].boot;
        self.push(self.now_us, idx, boot, Pending::Boot { bootstrap: false });
        idx
    }

    fn add_node(&mut self, idx: u32, seeds: Vec<u32>) {
        debug_assert_eq!(idx as usize, self.nodes.len());
        let rate = if self.max_skew > 0.0 {
            1.0 + self.rng.random_range(-self.max_skew..=self.max_skew)
        } else {
            1.0
        };
        self.nodes.push(SimNode {
            core: None,
            boot: 0,
            generation: 1,
            up: true,
            rate,
        });
        self.partitions.grow(self.nodes.len());
        self.make_core(idx, seeds);
    }

    fn make_core(&mut self, idx: u32, seeds: Vec<u32>) {
        let generation = self.nodes[idx as usize].generation;
        let id = SimId { idx, generation };
        let cfg = MembershipConfig::new(self.timings.clone(), seeds);
        let seed = self.node_seed(idx, generation);
        let now = self.nodes[idx as usize].local_us(self.now_us);
        let core = Membership::new(id, cfg, seed, now, SoftState::default());
        self.nodes[idx as usize].core = Some(core);
    }

    /// Kills a node: its state is lost, its timers die, packets to it vanish.
    pub fn crash(&mut self, idx: u32) {
        let generation = self.current_generation(idx);
        self.gone.push((idx, generation, self.now_us));
        let n = &mut self.nodes[idx as usize];
        // Remember a generation the core renewed to, so the restart goes above it.
        if let Some(core) = n.core.as_ref() {
            n.generation = n.generation.max(core.identity().generation);
        }
        n.core = None;
        n.up = false;
        n.boot += 1;
        for inv in self.invariants.iter_mut() {
            inv.forget_observer(idx);
        }
    }

    /// Restarts a crashed node with a new generation, joining through live `seeds`.
    pub fn restart(&mut self, idx: u32, seeds: Vec<u32>) {
        let n = &mut self.nodes[idx as usize];
        assert!(!n.up, "restart of n{idx}, which is running");
        n.generation += 1;
        n.up = true;
        n.boot += 1;
        let boot = n.boot;
        self.make_core(idx, seeds);
        self.push(self.now_us, idx, boot, Pending::Boot { bootstrap: false });
    }

    /// Graceful leave (what SIGTERM does in the daemon).
    pub fn leave(&mut self, idx: u32) {
        let generation = self.current_generation(idx);
        self.gone.push((idx, generation, self.now_us));
        let now = self.nodes[idx as usize].local_us(self.now_us);
        if let Some(core) = self.nodes[idx as usize].core.as_mut() {
            core.leave(now);
        }
        self.drain(idx);
    }

    /// Publishes a new fact from `idx`: a soft-state change. Returns its version.
    pub fn publish(&mut self, idx: u32, caps: Vec<String>) -> u64 {
        let now = self.nodes[idx as usize].local_us(self.now_us);
        let core = self.nodes[idx as usize]
            .core
            .as_mut()
            .expect("publish on a running node");
        let mut soft = core.local_soft().clone();
        soft.caps = caps;
        core.set_soft_state(now, soft);
        let v = core.local_soft().version;
        self.drain(idx);
        v
    }

    /// Runs events up to and including virtual time `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some(top) = self.queue.peek() {
            if top.at_us > until_us || self.violation.is_some() {
                break;
            }
            let ev = self.queue.pop().expect("peeked");
            self.now_us = ev.at_us;
            self.process(ev);
        }
        if self.violation.is_none() {
            self.now_us = self.now_us.max(until_us);
        }
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for_ms(&mut self, ms: u64) {
        self.run_until(self.now_us + ms * 1000);
    }

    /// Runs until `cond` holds (checked every `step_ms`) or `within_ms` passes.
    /// Returns the virtual time it took, or `None` on timeout.
    pub fn run_until_cond(
        &mut self,
        within_ms: u64,
        step_ms: u64,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        let start = self.now_us;
        let deadline = start + within_ms * 1000;
        loop {
            if cond(self) {
                return Some((self.now_us - start) / 1000);
            }
            if self.now_us >= deadline || self.violation.is_some() {
                return None;
            }
            self.run_until((self.now_us + step_ms * 1000).min(deadline));
        }
    }

    fn process(&mut self, ev: Scheduled) {
        self.stats.events_processed += 1;
        let idx = ev.node;
        let node = &mut self.nodes[idx as usize];
        if !node.up {
            return;
        }
        // Every input gets the node's own (possibly skewed) clock reading.
        let now_us = node.local_us(self.now_us);
        match ev.what {
            Pending::Boot { bootstrap } => {
                if ev.boot != node.boot {
                    return;
                }
                if bootstrap {
                    let ids: Vec<SimId> = (0..self.nodes.len() as u32)
                        .filter(|&i| self.nodes[i as usize].up)
                        .map(|i| SimId {
                            idx: i,
                            generation: self.nodes[i as usize].generation,
                        })
                        .collect();
                    let core = self.nodes[idx as usize]
                        .core
                        .as_mut()
                        .expect("up node has a core");
                    core.bootstrap(now_us, ids);
                    core.start(now_us);
                } else {
                    node.core
                        .as_mut()
                        .expect("up node has a core")
                        .start(now_us);
                }
            }
            Pending::Timer(t) => {
                if ev.boot != node.boot {
                    return;
                }
                node.core
                    .as_mut()
                    .expect("up node has a core")
                    .handle_timer(now_us, t);
            }
            Pending::Deliver { channel, bytes } => {
                let core = node.core.as_mut().expect("up node has a core");
                let result = match channel {
                    Channel::Datagram => core.handle_datagram(now_us, &bytes),
                    Channel::Stream => core.handle_stream(now_us, &bytes),
                };
                if result.is_err() {
                    self.stats.inputs_rejected += 1;
                }
            }
        }
        self.drain(idx);
    }

    /// Carries out the outputs of node `idx`.
    fn drain(&mut self, idx: u32) {
        let Some(core) = self.nodes[idx as usize].core.as_mut() else {
            return;
        };
        let outputs: Vec<Output<SimId>> = core.drain_outputs().collect();
        let boot = self.nodes[idx as usize].boot;
        for out in outputs {
            match out {
                Output::Send { to, channel, bytes } => self.send(idx, to, channel, bytes),
                Output::Timer { after_ms, timer } => {
                    // `after_ms` is on the node's clock; convert to virtual time.
                    let rate = self.nodes[idx as usize].rate;
                    let after_us = (after_ms as f64 * 1000.0 / rate).round() as u64;
                    self.push(self.now_us + after_us, idx, boot, Pending::Timer(timer));
                }
                Output::Event(event) => self.observe(idx, event),
            }
        }
    }

    fn send(&mut self, from: u32, to: u32, channel: Channel, bytes: Vec<u8>) {
        let reliable = channel == Channel::Stream;
        if reliable {
            self.stats.stream_messages_sent += 1;
            self.stats.stream_bytes_sent += bytes.len() as u64;
        } else {
            self.stats.datagrams_sent += 1;
            self.stats.datagram_bytes_sent += bytes.len() as u64;
        }
        if (to as usize) >= self.nodes.len() {
            return;
        }
        if !self.partitions.allows(from, to) {
            self.stats.datagrams_cut += 1;
            return;
        }
        let delays = net::deliveries(&self.net, &mut self.rng, reliable);
        if delays.is_empty() {
            self.stats.datagrams_lost += 1;
            return;
        }
        let last = delays.len() - 1;
        let mut payload = Some(bytes);
        for (i, d) in delays.iter().enumerate() {
            let bytes = if i == last {
                payload.take().expect("once")
            } else {
                payload.clone().expect("kept")
            };
            self.push(self.now_us + d, to, 0, Pending::Deliver { channel, bytes });
        }
    }

    fn observe(&mut self, observer: u32, event: MembershipEvent) {
        for inv in self.invariants.iter_mut() {
            if let Err(what) = inv.observe(self.now_us, observer, &event)
                && self.violation.is_none()
            {
                self.violation = Some(format!(
                    "invariant {} violated at {} ms: {what} (seed {})",
                    inv.name(),
                    self.now_us / 1000,
                    self.seed
                ));
            }
        }
        if let Some(cb) = self.on_event.as_mut() {
            cb(self.now_us, observer, &event);
        }
        if self.record_events {
            self.observed.push(Observed {
                at_us: self.now_us,
                observer,
                event,
            });
        }
    }

    // ----- views for assertions ------------------------------------------------

    /// Node `observer`'s member list.
    pub fn view(&self, observer: u32) -> Vec<MemberInfo> {
        self.core(observer).map(|c| c.members()).unwrap_or_default()
    }

    /// Node `idx`'s write mode; `None` while it is crashed.
    pub fn mode(&self, idx: u32) -> Option<Mode> {
        self.core(idx).map(|c| c.mode())
    }

    /// Checks that every live node sees every live node alive (current generation)
    /// and no crashed node as alive. Returns the first disagreement.
    pub fn converged(&self) -> Result<(), String> {
        let live = self.live_nodes();
        for &o in &live {
            let view = self.view(o);
            for m in &view {
                if m.is_self {
                    continue;
                }
                let idx: u32 =
                    m.id.trim_start_matches('n')
                        .parse()
                        .map_err(|_| format!("odd id {}", m.id))?;
                let n = &self.nodes[idx as usize];
                let active = matches!(m.state, MemberState::Alive | MemberState::Suspect);
                let current = self.current_generation(idx);
                if n.up && m.generation == current && m.state != MemberState::Alive {
                    return Err(format!("n{o} sees live n{idx} as {}", m.state.as_str()));
                }
                if (!n.up || m.generation < current) && active {
                    return Err(format!(
                        "n{o} sees gone n{idx}#{} as {}",
                        m.generation,
                        m.state.as_str()
                    ));
                }
            }
            for &x in &live {
                if x != o
                    && !view.iter().any(|m| {
                        m.id == SimKey(x).to_string() && m.generation == self.current_generation(x)
                    })
                {
                    return Err(format!("n{o} does not know live n{x}"));
                }
            }
        }
        Ok(())
    }

    /// True when every live node other than `idx` sees it dead or left (or not at all).
    pub fn all_see_gone(&self, idx: u32) -> bool {
        let key = SimKey(idx).to_string();
        let generation = self.current_generation(idx);
        self.live_nodes()
            .into_iter()
            .filter(|&o| o != idx)
            .all(|o| {
                self.view(o).iter().all(|m| {
                    m.id != key
                        || m.generation != generation
                        || matches!(m.state, MemberState::Dead | MemberState::Left)
                })
            })
    }

    /// Nodes that rejoined under a new generation because they were told they
    /// were dead (spurious unless a partition or a crash explains it), as
    /// `(node, virtual ms)`. Needs [`SimConfig::record_events`].
    pub fn renewals(&self) -> Vec<(u32, u64)> {
        self.observed
            .iter()
            .filter(|o| o.event.kind == EventKind::Renewed)
            .map(|o| (o.observer, o.at_us / 1000))
            .collect()
    }

    /// False positives: each `(observer, subject, virtual ms)` where a node was
    /// declared dead while running under the declared generation. Needs
    /// [`SimConfig::record_events`].
    pub fn false_positives(&self) -> Vec<(u32, String, u64)> {
        self.observed
            .iter()
            .filter(|o| o.event.kind == EventKind::Dead)
            .filter(|o| {
                let idx: u32 = o
                    .event
                    .subject
                    .trim_start_matches('n')
                    .parse()
                    .unwrap_or(u32::MAX);
                // Legitimate only if that process (index, generation) had crashed or
                // left by then; a generation the node later renewed away from counts too.
                !self
                    .gone
                    .iter()
                    .any(|&(i, g, at)| i == idx && g == o.event.generation && at <= o.at_us)
            })
            .map(|o| (o.observer, o.event.subject.clone(), o.at_us / 1000))
            .collect()
    }
}
