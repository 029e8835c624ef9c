//! Messaging under faults: many copies of the `mesh-msg` core the daemon runs,
//! over the seeded network model with loss, duplication, reordering (jitter),
//! partitions, and crashes with restarts (a restarted node is a new
//! incarnation with an empty messenger that re-subscribes).
//!
//! Membership is an oracle here (the membership core has its own simulator):
//! every 200 ms each live node learns who is up and whether they are reachable
//! from it; a node down for 3 s is dropped from the list. As in the node,
//! peers' incarnations are not taken from membership: each messenger learns
//! them from the peers' resets.
//!
//! Checked on every delivery (a violation stops the run and names the seed):
//! - **at most once**: a subscription never receives one message twice;
//! - **per-publisher order**: a subscription receives the messages of one
//!   origin incarnation in the order they were sent;
//! - **only what it asked for**: the channel matches one of its patterns.
//!
//! Checked at the end:
//! - **counts are real**: a publish report's receivers, and a direct receipt's
//!   listeners per node, never exceed the deliveries that happened;
//! - **liveness after healing**: with the network healed and every node up,
//!   a publish from each node reaches a matching subscription on every node,
//!   and its report counts each node or lists it as not answered yet; a direct
//!   message to each node is delivered; every direct receipt of a live sender
//!   is final (delivered, queued, expired or gone) once TTLs have run out.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use mesh_msg::{
    Config, DirectReport, DirectStatus, Message, MessageId, Messenger, OpId, Output, PeerInfo,
    PublishReport, Recipient, SubId, Wire,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::net::{Latency, NetConfig, Partitions, deliveries};

/// Settings of one messaging run.
#[derive(Debug, Clone)]
pub struct MsgSimConfig {
    /// Simulated nodes, named `n0`, `n1`, ...
    pub nodes: usize,
    /// Network model; every wire message is subject to its loss and duplication.
    pub net: NetConfig,
    /// Virtual time with faults, ms; a healed phase of 15 s follows.
    pub chaos_ms: u64,
    /// Mean time between crashes (0: none).
    pub crash_every_ms: u64,
    /// Mean time between partitions (0: none).
    pub partition_every_ms: u64,
}

impl Default for MsgSimConfig {
    fn default() -> Self {
        Self {
            nodes: 4,
            net: NetConfig {
                latency: Latency::LAN,
                loss: 0.05,
                duplicate: 0.02,
            },
            chaos_ms: 20_000,
            crash_every_ms: 4_000,
            partition_every_ms: 5_000,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MsgSimReport {
    /// The run's seed.
    pub seed: u64,
    /// Publishes of the random workload (during the chaos).
    pub published: u64,
    /// Direct messages of the random workload (during the chaos).
    pub direct_sent: u64,
    /// Messages handed to subscriptions over the whole run.
    pub deliveries: u64,
    /// Node crashes injected.
    pub crashes: u64,
    /// Partitions injected (one node cut off, sometimes one way only).
    pub partitions: u64,
    /// Wire messages the messengers sent.
    pub wire_messages: u64,
    /// Wire messages cut by a partition or lost by the network.
    pub lost_wire_messages: u64,
    /// Items retransmitted, summed over each node's last incarnation.
    pub retransmitted_items: u64,
    /// Per-node receipts of the workload's direct messages that ended delivered
    /// (counted at the end, for senders that never restarted; so are the next three).
    pub direct_delivered: u64,
    /// Receipts that ended queued in the recipient's mailbox.
    pub direct_queued: u64,
    /// Receipts that ended expired: no acknowledgement within the TTL.
    pub direct_expired: u64,
    /// Receipts that ended gone (the node left or failed) or mailbox full.
    pub direct_gone: u64,
    /// Direct messages reported expired that had in fact arrived (the ack was
    /// lost until the TTL ran out): a receipt errs towards "not confirmed".
    pub expired_but_delivered: u64,
    /// The first failed check, with its seed and virtual time; `None`: all held.
    pub violation: Option<String>,
}

enum Ev {
    Wire {
        to: usize,
        from: String,
        bytes: Vec<u8>,
    },
    Tick(usize),
    Membership,
    Work,
    Chaos,
    Restart(usize),
    Heal,
}

struct Node {
    name: String,
    epoch: u64,
    up: bool,
    down_since_ms: u64,
    m: Messenger,
    subs: BTreeMap<SubId, Vec<String>>,
}

/// Per (node, incarnation, subscription): messages seen and the last number per origin.
#[derive(Default)]
struct SubLog {
    seen: std::collections::BTreeSet<MessageId>,
    last: BTreeMap<(String, u64), u64>,
}

struct Run {
    cfg: MsgSimConfig,
    seed: u64,
    rng: Xoshiro256PlusPlus,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Node>,
    parts: Partitions,
    logs: BTreeMap<(usize, u64, SubId), SubLog>,
    /// Deliveries per message id and node.
    delivered: BTreeMap<MessageId, BTreeMap<String, u32>>,
    publish_reports: Vec<(usize, PublishReport)>,
    /// (sender node, sender epoch, op) of direct sends, for the end check.
    direct_ops: Vec<(usize, u64, OpId)>,
    /// Publishes of the healed phase, and whether each reported.
    final_publishes: BTreeMap<(usize, OpId), bool>,
    /// Their message ids: each must reach a subscriber on every node.
    final_ids: Vec<MessageId>,
    healed: bool,
    report: MsgSimReport,
}

fn sim_config() -> Config {
    Config {
        rto_ms: 200,
        wait_ms: 1_000,
        pubsub_ttl_ms: 5_000,
        window: 64,
        batch_max: 16,
        mailbox_max: 50,
        ..Config::default()
    }
}

impl Run {
    fn new(seed: u64, cfg: MsgSimConfig) -> Self {
        let nodes = (0..cfg.nodes)
            .map(|i| {
                let name = format!("n{i}");
                Node {
                    m: Messenger::new(name.clone(), 1, sim_config()),
                    name,
                    epoch: 1,
                    up: true,
                    down_since_ms: 0,
                    subs: BTreeMap::new(),
                }
            })
            .collect();
        Self {
            parts: Partitions::new(cfg.nodes),
            cfg,
            seed,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            logs: BTreeMap::new(),
            delivered: BTreeMap::new(),
            publish_reports: Vec::new(),
            direct_ops: Vec::new(),
            final_publishes: BTreeMap::new(),
            final_ids: Vec::new(),
            healed: false,
            report: MsgSimReport {
                seed,
                ..Default::default()
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    fn at(&mut self, after_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_us + after_us, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn fail(&mut self, what: String) {
        if self.report.violation.is_none() {
            self.report.violation = Some(format!(
                "seed {}: at {} ms: {what}",
                self.seed,
                self.now_ms()
            ));
        }
    }

    fn subscribe_defaults(&mut self, i: usize) {
        let now = self.now_ms();
        let name = self.nodes[i].name.clone();
        let mut sets = vec![
            vec!["c.*".to_string()],
            vec!["c.1".to_string(), format!("inbox.node.{name}")],
        ];
        // The agent's inbox is listened to only sometimes, so mailboxes fill and drain.
        if self.rng.random_bool(0.5) {
            sets.push(vec![format!("inbox.agent.a{i}")]);
        }
        for patterns in sets {
            let id = self.nodes[i]
                .m
                .subscribe(now, patterns.clone())
                .expect("valid patterns");
            self.nodes[i].subs.insert(id, patterns);
        }
        self.drain(i);
    }

    fn peers_seen_by(&self, i: usize) -> Vec<PeerInfo> {
        let now = self.now_ms();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.up || now < n.down_since_ms + 3_000)
            .map(|(j, n)| PeerInfo {
                name: n.name.clone(),
                reachable: n.up
                    && self.parts.allows(i as u32, j as u32)
                    && self.parts.allows(j as u32, i as u32),
            })
            .collect()
    }

    fn drain(&mut self, i: usize) {
        let outs: Vec<Output> = self.nodes[i].m.drain_outputs().collect();
        for o in outs {
            match o {
                Output::Send { to, wire } => self.send(i, &to, wire),
                Output::Deliver { subs, msg } => {
                    for s in subs {
                        self.on_deliver(i, s, &msg);
                    }
                }
                Output::Published { op, report } => {
                    if let Some(reported) = self.final_publishes.get_mut(&(i, op)) {
                        *reported = true;
                        self.check_final_publish(i, &report);
                    }
                    self.publish_reports.push((i, report));
                }
                Output::Direct { .. } => {}
            }
        }
    }

    fn send(&mut self, from: usize, to: &str, wire: Wire) {
        let Some(j) = self.nodes.iter().position(|n| n.name == to) else {
            return;
        };
        self.report.wire_messages += 1;
        if !self.parts.allows(from as u32, j as u32) {
            self.report.lost_wire_messages += 1;
            return;
        }
        let bytes = wire.encode();
        let delays = deliveries(&self.cfg.net, &mut self.rng, false);
        if delays.is_empty() {
            self.report.lost_wire_messages += 1;
        }
        let from = self.nodes[from].name.clone();
        for d in delays {
            self.at(
                d,
                Ev::Wire {
                    to: j,
                    from: from.clone(),
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn on_deliver(&mut self, i: usize, sub: SubId, msg: &Message) {
        self.report.deliveries += 1;
        let node = &self.nodes[i];
        let Some(patterns) = node.subs.get(&sub) else {
            return self.fail(format!(
                "{} delivered to unknown subscription {sub}",
                node.name
            ));
        };
        if !patterns
            .iter()
            .any(|p| mesh_msg::channel::matches(p, &msg.channel))
        {
            return self.fail(format!(
                "{} subscription {patterns:?} got a message on {}",
                node.name, msg.channel
            ));
        }
        *self
            .delivered
            .entry(msg.id.clone())
            .or_default()
            .entry(node.name.clone())
            .or_default() += 1;
        let key = (i, node.epoch, sub);
        let log = self.logs.entry(key).or_default();
        if !log.seen.insert(msg.id.clone()) {
            let name = self.nodes[i].name.clone();
            return self.fail(format!("{name} sub {sub} got {} twice", msg.id));
        }
        let origin = (msg.id.origin.clone(), msg.id.epoch);
        if let Some(&last) = log.last.get(&origin)
            && msg.id.n <= last
        {
            let name = self.nodes[i].name.clone();
            return self.fail(format!(
                "{name} sub {sub} got {} after {}-{}-{last}: out of publisher order",
                msg.id, origin.0, origin.1
            ));
        }
        log.last.insert(origin, msg.id.n);
    }

    /// A report after healing is complete or says which nodes have not
    /// answered yet (loss can outlast the wait): never a silent shortfall.
    fn check_final_publish(&mut self, i: usize, report: &PublishReport) {
        let expected = self.nodes.len() as u32;
        let accounted = report.receivers() + report.missing.len() as u32;
        if accounted != expected || !report.unreachable.is_empty() {
            let name = self.nodes[i].name.clone();
            let queues = self.nodes[i].m.peer_queues();
            self.fail(format!(
                "after healing, a publish from {name} accounted for {accounted} of {expected} nodes: {report:?}; queues {queues:?}"
            ));
        }
        if let Some(id) = &report.id {
            self.final_ids.push(id.clone());
        }
    }

    fn work(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        if up.is_empty() {
            return;
        }
        let i = up[self.rng.random_range(0..up.len())];
        let now = self.now_ms();
        let n = self.nodes.len();
        if self.rng.random_bool(0.6) {
            let ch = format!("c.{}", self.rng.random_range(0..3u32));
            let payload = vec![self.rng.random_range(0..=255u8); 8];
            self.nodes[i]
                .m
                .publish(now, "agent", &ch, payload, now)
                .expect("valid publish");
            self.report.published += 1;
        } else {
            let j = self.rng.random_range(0..n);
            let (to, dests) = match self.rng.random_range(0..3u32) {
                0 => (Recipient::Node(format!("n{j}")), vec![format!("n{j}")]),
                1 => (Recipient::Agent(format!("a{j}")), vec![format!("n{j}")]),
                _ => (
                    Recipient::All,
                    self.peers_seen_by(i).into_iter().map(|p| p.name).collect(),
                ),
            };
            let ttl = self.rng.random_range(500..8_000u64);
            let op = self.nodes[i]
                .m
                .send_direct(now, "agent", to, &dests, b"hello".to_vec(), ttl, now)
                .expect("valid send");
            self.direct_ops.push((i, self.nodes[i].epoch, op));
            self.report.direct_sent += 1;
        }
        self.drain(i);
    }

    fn chaos(&mut self) {
        let n = self.nodes.len();
        let crash_p = if self.cfg.crash_every_ms == 0 {
            0.0
        } else {
            (500.0 / self.cfg.crash_every_ms as f64).min(1.0)
        };
        let part_p = if self.cfg.partition_every_ms == 0 {
            0.0
        } else {
            (500.0 / self.cfg.partition_every_ms as f64).min(1.0)
        };
        if self.rng.random_bool(crash_p) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].up {
                self.nodes[i].up = false;
                self.nodes[i].down_since_ms = self.now_ms();
                self.report.crashes += 1;
                let down_us = self.rng.random_range(200_000..5_000_000u64);
                self.at(down_us, Ev::Restart(i));
            }
        }
        if self.rng.random_bool(part_p) {
            let i = self.rng.random_range(0..n) as u32;
            let one_way = self.rng.random_bool(0.3);
            self.parts.isolate(&[i], one_way);
            self.report.partitions += 1;
            let heal_us = self.rng.random_range(300_000..3_000_000u64);
            self.at(heal_us, Ev::Heal);
        }
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].up {
            return;
        }
        let node = &mut self.nodes[i];
        node.up = true;
        node.epoch += 1;
        node.m = Messenger::new(node.name.clone(), node.epoch, sim_config());
        node.subs.clear();
        let now = self.now_ms();
        let peers = self.peers_seen_by(i);
        self.nodes[i].m.set_peers(now, &peers);
        self.subscribe_defaults(i);
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, id))) = self.queue.pop() else {
            return false;
        };
        self.now_us = at;
        let ev = self.events.remove(&id).expect("scheduled");
        let now = self.now_ms();
        match ev {
            Ev::Wire { to, from, bytes } => {
                if self.nodes[to].up {
                    match Wire::decode(&bytes) {
                        Ok(w) => self.nodes[to].m.handle(now, &from, w),
                        Err(e) => self.fail(format!("undecodable wire message: {e}")),
                    }
                    self.drain(to);
                }
            }
            Ev::Tick(i) => {
                if self.nodes[i].up {
                    self.nodes[i].m.tick(now);
                    self.drain(i);
                }
                self.at(50_000, Ev::Tick(i));
            }
            Ev::Membership => {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].up {
                        let peers = self.peers_seen_by(i);
                        self.nodes[i].m.set_peers(now, &peers);
                        self.drain(i);
                    }
                }
                self.at(200_000, Ev::Membership);
            }
            Ev::Work => {
                if !self.healed {
                    self.work();
                    let gap = self.rng.random_range(1_000..40_000u64);
                    self.at(gap, Ev::Work);
                }
            }
            Ev::Chaos => {
                if !self.healed {
                    self.chaos();
                    self.at(500_000, Ev::Chaos);
                }
            }
            Ev::Restart(i) => self.restart(i),
            Ev::Heal => {
                if !self.healed {
                    self.parts.heal();
                }
            }
        }
        true
    }

    fn run_until_ms(&mut self, ms: u64) {
        while self.report.violation.is_none()
            && self
                .queue
                .peek()
                .is_some_and(|Reverse((at, _))| *at <= ms * 1000)
        {
            self.step();
        }
        self.now_us = self.now_us.max(ms * 1000);
    }

    fn run(mut self) -> MsgSimReport {
        for i in 0..self.nodes.len() {
            let peers = self.peers_seen_by(i);
            self.nodes[i].m.set_peers(0, &peers);
            self.subscribe_defaults(i);
            let phase = self.rng.random_range(0..50_000u64);
            self.at(phase, Ev::Tick(i));
        }
        self.at(200_000, Ev::Membership);
        self.at(1_000, Ev::Work);
        self.at(500_000, Ev::Chaos);
        let chaos_end = self.cfg.chaos_ms;
        self.run_until_ms(chaos_end);

        // Heal: everyone up, no partitions; wait out membership and TTLs.
        self.healed = true;
        self.parts.heal();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i);
            }
        }
        self.run_until_ms(chaos_end + 10_000);
        self.check_counts();
        self.check_receipts_final();

        // Liveness: one publish from each node, one direct message to each.
        let now = self.now_ms();
        let mut finals = Vec::new();
        for i in 0..self.nodes.len() {
            let op = self.nodes[i]
                .m
                .publish(now, "final", "c.final", vec![i as u8], now)
                .expect("valid");
            self.final_publishes.insert((i, op), false);
            let j = (i + 1) % self.nodes.len();
            let to = format!("n{j}");
            let dop = self.nodes[i]
                .m
                .send_direct(
                    now,
                    "final",
                    Recipient::Node(to.clone()),
                    &[to],
                    vec![],
                    5_000,
                    now,
                )
                .expect("valid");
            finals.push((i, dop));
            self.drain(i);
        }
        self.run_until_ms(chaos_end + 15_000);
        for (i, dop) in finals {
            let r = self.nodes[i].m.direct_report(dop).cloned();
            let ok = matches!(&r, Some(DirectReport { nodes, .. }) if nodes.values().all(|s| *s == DirectStatus::Delivered(1)));
            if !ok {
                let name = self.nodes[i].name.clone();
                self.fail(format!(
                    "after healing, a direct message from {name} was not delivered: {r:?}"
                ));
            }
        }
        if self.final_publishes.values().any(|reported| !reported) {
            self.fail("a publish after healing never reported".into());
        }
        for id in std::mem::take(&mut self.final_ids) {
            let nodes = self.delivered.get(&id).map_or(0, |d| d.len());
            if nodes != self.nodes.len() {
                self.fail(format!(
                    "after healing, publish {id} reached subscribers on {nodes} of {} nodes",
                    self.nodes.len()
                ));
            }
        }
        for i in 0..self.nodes.len() {
            let s = self.nodes[i].m.stats();
            self.report.retransmitted_items += s.retransmitted_items;
        }
        self.report
    }

    /// Reported counts never exceed the deliveries that happened.
    fn check_counts(&mut self) {
        let reports = std::mem::take(&mut self.publish_reports);
        let mut bad = Vec::new();
        for (i, r) in &reports {
            let Some(id) = &r.id else { continue };
            let got = self.delivered.get(id);
            let on = |node: &str| got.and_then(|g| g.get(node)).copied().unwrap_or(0);
            let me = &self.nodes[*i].name;
            if r.local > on(me) {
                bad.push(format!(
                    "publish {id} claims {} local receivers, {} got it",
                    r.local,
                    on(me)
                ));
            }
            for (node, n) in &r.nodes {
                if *n > on(node) {
                    bad.push(format!(
                        "publish {id} claims {n} receivers on {node}, {} got it",
                        on(node)
                    ));
                }
            }
        }
        for b in bad {
            self.fail(b);
        }
        self.publish_reports = reports;
    }

    /// Every direct send of a live incarnation has a final receipt, and no
    /// receipt claims more listeners than got the message.
    fn check_receipts_final(&mut self) {
        let ops = std::mem::take(&mut self.direct_ops);
        for &(i, epoch, op) in &ops {
            if self.nodes[i].epoch != epoch {
                continue; // the sender restarted: its receipts went with it
            }
            let Some(r) = self.nodes[i].m.direct_report(op).cloned() else {
                let name = self.nodes[i].name.clone();
                self.fail(format!("{name} lost the receipt of direct send {op}"));
                continue;
            };
            for (node, status) in &r.nodes {
                let got = self
                    .delivered
                    .get(&r.id)
                    .and_then(|g| g.get(node))
                    .copied()
                    .unwrap_or(0);
                match status {
                    DirectStatus::Pending => self.fail(format!(
                        "direct {} to {node} still pending after every TTL ran out",
                        r.id
                    )),
                    DirectStatus::Delivered(k) => {
                        self.report.direct_delivered += 1;
                        if *k > got {
                            self.fail(format!(
                                "direct {} claims {k} listeners on {node}, {got} got it",
                                r.id
                            ));
                        }
                    }
                    DirectStatus::Queued => self.report.direct_queued += 1,
                    DirectStatus::Expired => {
                        self.report.direct_expired += 1;
                        if got > 0 {
                            self.report.expired_but_delivered += 1;
                        }
                    }
                    DirectStatus::Gone | DirectStatus::MailboxFull => self.report.direct_gone += 1,
                }
            }
        }
        self.direct_ops = ops;
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, cfg: MsgSimConfig) -> MsgSimReport {
    Run::new(seed, cfg).run()
}
