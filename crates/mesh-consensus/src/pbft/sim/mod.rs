//! The pBFT simulation: n replicas of the real core
//! ([`Replica`](crate::pbft::replica::Replica)), some of them Byzantine
//! ([`adversary`]), and clients (`app`), exchanging encoded messages over
//! the simulator's seeded network model (`mesh_sim::net`: delay and
//! reordering, loss, duplication, partitions) with crashes and restarts, in
//! virtual time. A run is a pure function of its seed.
//!
//! Checked after every step (every delivered message, tick and fault):
//! - no two correct replicas execute different batches at one sequence
//!   number, and every correct replica executes them in order (or jumps by
//!   a verified state transfer): their committed prefixes agree;
//! - correct replicas that executed the same sequence number hold the same
//!   application state there;
//! - no correct replica is ever accused by evidence;
//! - clients accept only results that correct replicas computed;
//! - a read-index read (§5.1.3, see [`reads`]) is never stale;
//!
//! and at the end, when liveness is checked: once the network heals (loss
//! stops, partitions heal, crashed replicas restart: the paper's GST),
//! every request of every client is accepted before the deadline, and
//! every correct replica executes up to the highest correct one (a node
//! serves its front ends from its own replica).
//!
//! Crashes stop a replica and drop what is sent to it. With `amnesia` (the
//! default) it restarts as the node runtime does: a new replica rebuilt
//! from what it asked to store ([`Output::Persist`] records, the signing
//! reservation, the last stable checkpoint with its state), executing its
//! stored batches again (checked against what correct replicas executed).
//! Records that are not urgent stay unsynced, and are lost in a crash,
//! until an urgent one or [`Output::Sync`] comes, as in the engine;
//! without, it keeps its memory (a paused process). A power cut stops every
//! correct replica at once and restarts them together.

pub mod adversary;
mod app;
mod odd_view;
mod reads;

pub use odd_view::{OddView, OddViewReport};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use ed25519_dalek::SigningKey;
use mesh_sim::net::{Latency, NetConfig, Partitions, deliveries};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::config::{ReplicaId, ReplicaSet, Seq, View};
use super::durable::Record;
use super::message::{ClientId, CommitCert, Digest, Envelope, Request, Signed, batch_digest};
use super::replica::{Evidence, Output, Replica, Settings};
use adversary::{Adversary, Behaviour, Lie};
use app::{AppState, Client};

/// Settings of one simulated run.
#[derive(Debug, Clone)]
pub struct PbftSimConfig {
    /// Replicas (n = 3f + 1 at least 4).
    pub n: usize,
    /// Byzantine replicas (at random ids) and how each misbehaves; `None`
    /// entries get a behaviour drawn from the seed.
    pub byzantine: Vec<Option<Behaviour>>,
    /// The Byzantine replicas coordinate (see [`adversary`]); which ids
    /// they get is then fixed: 0, 1, ...
    pub collude: bool,
    /// Simulated clients, each sending its requests one after another.
    pub clients: usize,
    /// Requests per client, one after another.
    pub requests: u64,
    /// The network model during the chaos: latency, loss and duplication.
    pub net: NetConfig,
    /// Virtual time with loss, partitions and crashes.
    pub chaos_ms: u64,
    /// Mean time between crashes of correct replicas (0: none).
    pub crash_every_ms: u64,
    /// A crashed replica restarts from its stored records, not its memory.
    pub amnesia: bool,
    /// Once during the chaos, every correct replica crashes at once.
    pub power_cut: bool,
    /// A negative control: replicas do not store their prepared
    /// certificates (what a power cut then breaks shows they are needed).
    pub forget_prepared: bool,
    /// A negative control: read-index reads take this many answers instead
    /// of 2f + 1.
    pub read_answers: Option<usize>,
    /// Once during the chaos, the replicas vote to replace one of them
    /// (a Byzantine one half the time) by a new member (see
    /// [`crate::pbft::epoch`]); Byzantine replicas vote for a set of their
    /// own. Liveness then also asks that every correct replica reach the
    /// new epoch.
    pub reconfigure: bool,
    /// Mean time between partitions (0: none).
    pub partition_every_ms: u64,
    /// A scripted fault (see [`odd_view`]): one replica left in another
    /// view than the others, then one more replica down for good.
    pub odd_view: Option<OddView>,
    /// After the chaos, how long every request may take to be accepted.
    pub deadline_ms: u64,
    /// Fail the run if a request is not accepted or a correct replica does
    /// not catch up by the deadline (off with more than f Byzantine replicas).
    pub check_liveness: bool,
    /// The replicas' protocol settings (small windows, so short runs cross
    /// checkpoints).
    pub settings: Settings,
}

impl Default for PbftSimConfig {
    fn default() -> Self {
        PbftSimConfig {
            n: 4,
            byzantine: vec![None],
            collude: false,
            clients: 3,
            requests: 12,
            net: NetConfig {
                latency: Latency::LAN,
                loss: 0.02,
                duplicate: 0.02,
            },
            chaos_ms: 6_000,
            crash_every_ms: 3_000,
            amnesia: true,
            power_cut: false,
            forget_prepared: false,
            read_answers: None,
            reconfigure: false,
            partition_every_ms: 3_000,
            odd_view: None,
            deadline_ms: 60_000,
            check_liveness: true,
            // A small window and frequent checkpoints, so runs this short
            // cross checkpoints, garbage collection and state transfer.
            settings: Settings {
                window: 16,
                max_batch: 8,
                max_in_flight: 4,
                checkpoint_interval: 8,
                view_change_timeout_ms: 300,
                retransmit_ms: 50,
            },
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PbftSimReport {
    /// The run's seed.
    pub seed: u64,
    /// Replicas in the genesis configuration.
    pub n: usize,
    /// The Byzantine replicas' ids and behaviours.
    pub byzantine: Vec<(ReplicaId, Behaviour)>,
    /// Requests the clients had to send, in all.
    pub requests: u64,
    /// Requests whose result a client accepted (f + 1 matching replies).
    pub accepted: u64,
    /// Highest sequence number a correct replica executed.
    pub executed_seq: Seq,
    /// Highest view a correct replica entered.
    pub max_view: u64,
    /// Views entered by correct replicas, in all.
    pub view_changes: u64,
    /// Pieces of evidence replicas produced.
    pub evidence: u64,
    /// Messages replicas refused.
    pub refused: u64,
    /// Messages that did not decode.
    pub undecodable: u64,
    /// States installed by state transfer.
    pub state_transfers: u64,
    /// Replica crashes (a power cut counts each replica it stops).
    pub crashes: u64,
    /// Network partitions made.
    pub partitions: u64,
    /// Read-index reads completed (each checked fresh).
    pub reads: u64,
    /// Read-index reads given up.
    pub reads_given_up: u64,
    /// Correct replicas that moved to a new epoch.
    pub epoch_changes: u64,
    /// The highest epoch a correct replica reached.
    pub epoch: u64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes of messages sent.
    pub bytes: u64,
    /// Signatures the replicas made.
    pub signed: u64,
    /// Signatures the replicas verified.
    pub verified: u64,
    /// Virtual time the run took, in milliseconds.
    pub virtual_ms: u64,
    /// What the scripted odd-view fault did, when it ran.
    pub odd_view: Option<OddViewReport>,
    /// The first broken check, if any (the run stops there).
    pub violation: Option<String>,
}

/// What travels between simulated nodes (encoded with postcard, so a
/// corrupted message is a decoding error, as on a real socket).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Wire {
    Protocol(Envelope),
    Request(Request),
    Reply(Signed),
    StateRequest(Seq),
    State(Seq, AppState),
    FetchEntries(Seq, View),
    Entries(Vec<CommitCert>),
    ReadIndex(u64),
    ReadIndexAnswer(Signed),
    /// To a replica still in an epoch that ended: the proof of its end
    /// (never answered, so two replicas cannot keep sending it).
    EpochEnded(Vec<Signed>),
    /// "I am still in this epoch": from a replica that got a message of a
    /// later one (answered with [`Wire::EpochEnded`]).
    Behind(u64),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Tick(usize),
    ClientTick(usize),
    Crash,
    Restart(usize),
    PowerCut,
    Vote,
    Partition,
    Heal,
    Calm,
    OddViewStart,
    OddViewEnd,
    SecondFault,
}

/// What a replica's runtime stores for it (the engine's files).
#[derive(Default)]
struct Disk {
    records: Vec<Record>,
    /// Written, not synced yet: lost in a crash.
    unsynced: Vec<Record>,
    /// The last stable checkpoint: its sequence number, proof and state.
    checkpoint: Option<(Seq, Vec<Signed>, AppState)>,
    reserve: Option<(View, Seq)>,
    /// A new member that has not installed its first state: its digest.
    join: Option<Digest>,
}

struct Node {
    key: SigningKey,
    replica: Replica,
    disk: Disk,
    app: AppState,
    snapshots: BTreeMap<Seq, AppState>,
    fetching: Option<(Seq, Digest, u64)>,
    crashed: bool,
    read: Option<reads::Read>,
    /// The last sequence number this replica executed or installed.
    last_seq: Seq,
    /// The configuration its replica belongs to.
    config: ReplicaSet,
    /// Each epoch it saw end: the last sequence number and its proof
    /// (sent to replicas still in that epoch).
    ends: BTreeMap<u64, (Seq, Vec<Signed>)>,
    /// When each node was last sent an end's proof.
    helped: BTreeMap<usize, u64>,
}

struct Sim {
    cfg: PbftSimConfig,
    rng: Xoshiro256PlusPlus,
    now_us: u64,
    counter: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// Each epoch's configuration, once decided (index = epoch).
    epochs: Vec<ReplicaSet>,
    /// The planned replacement: which replica, the newcomer's key, and the
    /// replica set the correct replicas vote for.
    plan: Option<(usize, SigningKey, Vec<[u8; 32]>)>,
    /// The replica set the Byzantine replicas vote for.
    evil: Vec<[u8; 32]>,
    adversary: Adversary,
    /// The Byzantine replicas' public keys (they stay liars when replaced).
    byzantine_keys: std::collections::HashSet<[u8; 32]>,
    partitions: Partitions,
    calm: bool,
    /// Sequence number → (digest of the batch, first correct replica to
    /// execute it).
    decided: BTreeMap<Seq, (Digest, ReplicaId)>,
    /// Sequence number → the application's chain after it.
    chain_at: BTreeMap<Seq, Digest>,
    /// (client, timestamp) → the result correct replicas computed.
    results: HashMap<(ClientId, u64), Vec<u8>>,
    /// (client, timestamp) → where a correct replica first executed it.
    result_seq: HashMap<(ClientId, u64), Seq>,
    /// The highest of those among results clients accepted.
    acked_seq: Seq,
    client_index: HashMap<ClientId, usize>,
    report: PbftSimReport,
    odd_report: OddViewReport,
    /// When the scripted second fault struck, and the highest sequence
    /// number decided then.
    fault_at_us: Option<u64>,
    fault_seq: Seq,
}

const TICK_US: u64 = 10_000;
const CLIENT_TICK_US: u64 = 20_000;
const CLIENT_RETRY_US: u64 = 1_000_000;
const FETCH_RETRY_US: u64 = 200_000;

/// Runs one seed.
pub fn run_seed(seed: u64, cfg: &PbftSimConfig) -> PbftSimReport {
    let mut sim = Sim::new(seed, cfg.clone());
    sim.run();
    sim.report
}

impl Sim {
    fn new(seed: u64, cfg: PbftSimConfig) -> Sim {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let keys: Vec<SigningKey> = (0..cfg.n)
            .map(|_| SigningKey::from_bytes(&rng.random()))
            .collect();
        let replicas = ReplicaSet::new(keys.iter().map(|k| k.verifying_key().to_bytes()).collect())
            .expect("valid replica set");
        // Which replicas are Byzantine, and how.
        let mut ids: Vec<ReplicaId> = (0..cfg.n as ReplicaId).collect();
        if !cfg.collude {
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.random_range(0..=i));
            }
        }
        let mut behaviour = HashMap::new();
        let mut byz_keys = HashMap::new();
        for (slot, id) in cfg.byzantine.iter().zip(&ids) {
            let b =
                slot.unwrap_or_else(|| Behaviour::ALL[rng.random_range(0..Behaviour::ALL.len())]);
            behaviour.insert(*id, b);
            byz_keys.insert(*id, keys[*id as usize].clone());
        }
        let slow_us = cfg.settings.view_change_timeout_ms * 1000 * 8 / 10;
        let byzantine_keys = byz_keys
            .values()
            .map(|k| k.verifying_key().to_bytes())
            .collect();
        let adversary = Adversary::new(byz_keys, behaviour.clone(), cfg.collude, slow_us);
        let genesis: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let mut plan = None;
        let mut evil = genesis.clone();
        if cfg.reconfigure {
            let byz: Vec<usize> = behaviour.keys().map(|&b| b as usize).collect();
            let j = if !byz.is_empty() && rng.random_bool(0.5) {
                byz[rng.random_range(0..byz.len())]
            } else {
                rng.random_range(0..cfg.n)
            };
            let spare = SigningKey::from_bytes(&rng.random());
            let mut want = genesis.clone();
            want[j] = spare.verifying_key().to_bytes();
            plan = Some((j, spare, want));
            let victim = (j + 1) % cfg.n;
            evil[victim] = SigningKey::from_bytes(&rng.random())
                .verifying_key()
                .to_bytes();
        }
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| Node {
                replica: Replica::new(
                    i as ReplicaId,
                    replicas.clone(),
                    k.clone(),
                    cfg.settings.clone(),
                ),
                key: k,
                disk: Disk::default(),
                app: AppState::genesis(replicas.clone()),
                snapshots: BTreeMap::new(),
                fetching: None,
                crashed: false,
                read: None,
                last_seq: 0,
                config: replicas.clone(),
                ends: BTreeMap::new(),
                helped: BTreeMap::new(),
            })
            .collect();
        let clients: Vec<Client> = (0..cfg.clients)
            .map(|c| {
                Client::new(
                    format!("c{c}"),
                    SigningKey::from_bytes(&rng.random()),
                    cfg.requests,
                )
            })
            .collect();
        let client_index = clients.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
        let mut byz: Vec<(ReplicaId, Behaviour)> = behaviour.into_iter().collect();
        byz.sort_by_key(|(id, _)| *id);
        let report = PbftSimReport {
            seed,
            n: cfg.n,
            byzantine: byz,
            requests: cfg.requests * cfg.clients as u64,
            ..PbftSimReport::default()
        };
        Sim {
            partitions: Partitions::new(cfg.n + cfg.clients),
            rng,
            now_us: 0,
            counter: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            epochs: vec![replicas],
            plan,
            evil,
            byzantine_keys,
            adversary,
            calm: false,
            decided: BTreeMap::new(),
            chain_at: BTreeMap::new(),
            results: HashMap::new(),
            result_seq: HashMap::new(),
            acked_seq: 0,
            client_index,
            report,
            odd_report: OddViewReport::default(),
            fault_at_us: None,
            fault_seq: 0,
            cfg,
        }
    }

    fn at(&mut self, t_us: u64, e: Event) {
        self.counter += 1;
        self.queue.push(Reverse((t_us, self.counter, e)));
    }

    fn correct(&self, id: usize) -> bool {
        !self.adversary.is_byzantine(id as ReplicaId)
    }

    fn violate(&mut self, what: String) {
        if self.report.violation.is_none() {
            self.report.violation = Some(format!("t={}ms: {what}", self.now_us / 1000));
        }
    }

    fn run(&mut self) {
        for i in 0..self.cfg.n {
            let jitter = self.rng.random_range(0..TICK_US);
            self.at(jitter, Event::Tick(i));
        }
        for c in 0..self.cfg.clients {
            let t = self.rng.random_range(0..CLIENT_TICK_US);
            self.at(t, Event::ClientTick(c));
        }
        if self.cfg.crash_every_ms > 0 {
            let t = self.rng.random_range(0..self.cfg.crash_every_ms * 2000);
            self.at(t, Event::Crash);
        }
        if self.cfg.partition_every_ms > 0 {
            let t = self.rng.random_range(0..self.cfg.partition_every_ms * 2000);
            self.at(t, Event::Partition);
        }
        if self.cfg.reconfigure {
            let t = self
                .rng
                .random_range(self.cfg.chaos_ms * 100..self.cfg.chaos_ms * 500);
            self.at(t, Event::Vote);
        }
        if self.cfg.odd_view.is_some() {
            self.schedule_odd_view();
        }
        if self.cfg.power_cut {
            let t = self
                .rng
                .random_range(self.cfg.chaos_ms * 200..self.cfg.chaos_ms * 800);
            self.at(t, Event::PowerCut);
        }
        self.at(self.cfg.chaos_ms * 1000, Event::Calm);
        let end_us = (self.cfg.chaos_ms + self.cfg.deadline_ms) * 1000;
        while let Some(Reverse((t, _, e))) = self.queue.pop() {
            if t > end_us || self.report.violation.is_some() {
                break;
            }
            self.now_us = t;
            self.step(e);
            if self.calm
                && self.clients.iter().all(Client::done)
                && self.reconfigured()
                && self.lagging().is_empty()
            {
                break;
            }
        }
        self.finish();
    }

    /// Every correct replica reached the planned configuration (true
    /// without a plan).
    fn reconfigured(&self) -> bool {
        !self.cfg.reconfigure
            || (0..self.cfg.n)
                .filter(|&i| self.correct(i))
                .all(|i| self.nodes[i].config.epoch() >= 1)
    }

    /// The correct replicas that executed less than another correct one
    /// (as `replica (executed / highest)`). A node's front end reads its
    /// own replica, so once the network heals every correct replica must
    /// catch up, even when nothing new is ordered.
    fn lagging(&self) -> Vec<String> {
        let correct: Vec<usize> = (0..self.cfg.n)
            .filter(|&i| self.correct(i) && Some(i) != self.odd_report.down)
            .collect();
        let top = correct
            .iter()
            .map(|&i| self.nodes[i].last_seq)
            .max()
            .unwrap_or(0);
        correct
            .into_iter()
            .filter(|&i| self.nodes[i].last_seq < top)
            .map(|i| format!("{i} ({} / {top})", self.nodes[i].last_seq))
            .collect()
    }

    /// A replica object is replaced (reboot, new epoch, newcomer): the
    /// signatures it made and checked still count in the cost per request.
    fn count_retired(report: &mut PbftSimReport, old: &Replica) {
        let c = old.counters();
        report.signed += c.signed;
        report.verified += c.verified;
    }

    fn finish(&mut self) {
        let r = &mut self.report;
        r.virtual_ms = self.now_us / 1000;
        if self.cfg.odd_view.is_some() {
            r.odd_view = Some(self.odd_report.clone());
        }
        r.accepted = self.clients.iter().map(|c| c.accepted.len() as u64).sum();
        for n in &self.nodes {
            let c = n.replica.counters();
            r.signed += c.signed;
            r.verified += c.verified;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.adversary.is_byzantine(i as ReplicaId) {
                r.executed_seq = r.executed_seq.max(n.last_seq);
                r.max_view = r.max_view.max(n.replica.view());
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.adversary.is_byzantine(i as ReplicaId) {
                r.epoch = r.epoch.max(n.config.epoch());
            }
        }
        if self.cfg.check_liveness && r.violation.is_none() && self.cfg.reconfigure {
            let behind: Vec<String> = (0..self.cfg.n)
                .filter(|&i| !self.adversary.is_byzantine(i as ReplicaId))
                .filter(|&i| self.nodes[i].config.epoch() < 1)
                .map(|i| self.nodes[i].replica.debug_state())
                .collect();
            if !behind.is_empty() {
                r.violation = Some(format!(
                    "liveness: {} correct replicas never reached epoch 1 ({} epochs decided): {}",
                    behind.len(),
                    self.epochs.len(),
                    behind.join(" | ")
                ));
            }
        }
        let lagging = self.lagging();
        let r = &mut self.report;
        if self.cfg.check_liveness
            && r.violation.is_none()
            && r.accepted == r.requests
            && !lagging.is_empty()
        {
            let states: Vec<String> = self.nodes.iter().map(|n| n.replica.debug_state()).collect();
            r.violation = Some(format!(
                "liveness: correct replicas still behind {} ms after the network healed: {}; replicas: {}",
                self.cfg.deadline_ms,
                lagging.join(", "),
                states.join(" | ")
            ));
        }
        if self.cfg.check_liveness && r.violation.is_none() && r.accepted < r.requests {
            let stuck: Vec<String> = self
                .clients
                .iter()
                .filter(|c| !c.done())
                .map(|c| format!("{} at request {}", c.name, c.current))
                .collect();
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{}{:?}", n.replica.debug_state(), n.fetching.map(|f| f.0)))
                .collect();
            r.violation = Some(format!(
                "liveness: {} of {} requests accepted {} ms after the network healed ({}); replicas: {}",
                r.accepted,
                r.requests,
                self.cfg.deadline_ms,
                stuck.join(", "),
                states.join(" | ")
            ));
        }
    }

    fn step(&mut self, e: Event) {
        match e {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Tick(i) => {
                self.at(self.now_us + TICK_US, Event::Tick(i));
                if self.nodes[i].crashed {
                    return;
                }
                let now_ms = self.now_us / 1000;
                self.nodes[i].replica.tick(now_ms);
                self.read_tick(i, self.now_us / TICK_US);
                if let Some((seq, _, asked)) = self.nodes[i].fetching
                    && self.now_us >= asked + FETCH_RETRY_US
                {
                    self.ask_state(i, seq);
                }
                let view = self.nodes[i].replica.view();
                if let Some(env) =
                    self.adversary
                        .forge(i as ReplicaId, self.cfg.n, view, &mut self.rng)
                {
                    for to in (0..self.cfg.n).filter(|&j| j != i) {
                        self.send(i, to, &Wire::Protocol(env.clone()), 0);
                    }
                }
                self.drain(i);
            }
            Event::ClientTick(c) => {
                self.at(self.now_us + CLIENT_TICK_US, Event::ClientTick(c));
                self.client_tick(c);
            }
            Event::Crash => {
                if self.calm {
                    return;
                }
                let every = self.cfg.crash_every_ms * 1000;
                let next = self.now_us + self.rng.random_range(every / 2..every * 3 / 2 + 1);
                self.at(next, Event::Crash);
                let up: Vec<usize> = (0..self.cfg.n)
                    .filter(|&i| self.correct(i) && !self.nodes[i].crashed)
                    .collect();
                if up.is_empty() {
                    return;
                }
                let i = up[self.rng.random_range(0..up.len())];
                self.nodes[i].crashed = true;
                self.report.crashes += 1;
                let back = self.now_us + self.rng.random_range(500_000..3_000_000);
                self.at(back, Event::Restart(i));
            }
            Event::Restart(i) => self.restart(i),
            Event::OddViewStart => self.odd_view_start(),
            Event::OddViewEnd => self.odd_view_end(),
            Event::SecondFault => self.second_fault(),
            Event::Vote => self.vote(),
            Event::PowerCut => {
                if self.calm {
                    return;
                }
                let back = self.now_us + self.rng.random_range(200_000..1_500_000);
                let correct: Vec<usize> = (0..self.cfg.n).filter(|&i| self.correct(i)).collect();
                for i in correct {
                    if !self.nodes[i].crashed {
                        self.nodes[i].crashed = true;
                        self.report.crashes += 1;
                        self.at(back, Event::Restart(i));
                    }
                }
            }
            Event::Partition => {
                if self.calm {
                    return;
                }
                let every = self.cfg.partition_every_ms * 1000;
                let next = self.now_us + self.rng.random_range(every / 2..every * 3 / 2 + 1);
                self.at(next, Event::Partition);
                let k = self.rng.random_range(1..=self.cfg.n / 2);
                let mut ids: Vec<u32> = (0..self.cfg.n as u32).collect();
                for i in (1..ids.len()).rev() {
                    ids.swap(i, self.rng.random_range(0..=i));
                }
                let one_way = self.rng.random_bool(0.3);
                self.partitions.isolate(&ids[..k], one_way);
                self.report.partitions += 1;
                let heal = self.now_us + self.rng.random_range(300_000..2_500_000);
                self.at(heal, Event::Heal);
            }
            Event::Heal => self.partitions.heal(),
            Event::Calm => {
                // GST: no more loss, partitions or crashes.
                self.calm = true;
                self.cfg.net.loss = 0.0;
                self.partitions.heal();
                for i in 0..self.cfg.n {
                    self.restart(i);
                }
            }
        }
    }

    fn client_tick(&mut self, c: usize) {
        let n = self.cfg.n;
        let client = &mut self.clients[c];
        if client.done() {
            return;
        }
        let req = client.request();
        if client.sent_at == 0 {
            client.sent_at = self.now_us.max(1);
            client.retried_at = 0;
            let to = self.rng.random_range(0..n);
            self.send(n + c, to, &Wire::Request(req), 0);
        } else if self.now_us >= client.sent_at.max(client.retried_at) + CLIENT_RETRY_US {
            // No result in time: to every replica (§4.1).
            client.retried_at = self.now_us;
            for to in 0..n {
                self.send(n + c, to, &Wire::Request(req.clone()), 0);
            }
        }
    }

    /// Sends `wire` from node `from` to node `to` through the network model.
    fn send(&mut self, from: usize, to: usize, wire: &Wire, extra_delay_us: u64) {
        let mut bytes = postcard::to_allocvec(wire).expect("encodes");
        if from < self.cfg.n {
            self.adversary
                .mangle(from as ReplicaId, &mut bytes, &mut self.rng);
        }
        self.report.messages += 1;
        self.report.bytes += bytes.len() as u64;
        if !self.partitions.allows(from as u32, to as u32) {
            return;
        }
        for d in deliveries(&self.cfg.net, &mut self.rng, false) {
            self.at(
                self.now_us + d + extra_delay_us,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let n = self.cfg.n;
        if to < n && self.nodes[to].crashed {
            return;
        }
        let Ok(wire) = postcard::from_bytes::<Wire>(&bytes) else {
            self.report.undecodable += 1;
            return;
        };
        if to >= n {
            if let Wire::Reply(msg) = wire {
                self.client_reply(to - n, &msg);
            }
            return;
        }
        match wire {
            Wire::Protocol(env) => {
                let mine = self.nodes[to].config.epoch();
                if env.msg.epoch < mine {
                    // The sender is still in an epoch this replica saw end:
                    // the proof of that end lets it fetch the state there.
                    self.help_behind_epoch(to, from, env.msg.epoch);
                    return;
                }
                if env.msg.epoch > mine {
                    // This replica is behind: it says so (one who saw its
                    // epoch end answers with the proof).
                    if self.due_help(to, from) {
                        self.send(to, from, &Wire::Behind(mine), 0);
                    }
                    return;
                }
                if self.adversary.is_byzantine(to as ReplicaId) {
                    self.adversary.overhear(&env);
                }
                if self.nodes[to].replica.handle(env).is_err() {
                    self.report.refused += 1;
                }
            }
            Wire::Request(r) if self.answered(to, &r) => {}
            Wire::Request(r) if from >= n => self.nodes[to].replica.request(r),
            Wire::Request(r) => self.nodes[to].replica.forwarded(r),
            Wire::Reply(_) => {}
            Wire::StateRequest(seq) => {
                let Some(state) = self.nodes[to].snapshots.get(&seq).cloned() else {
                    return;
                };
                // A Byzantine replica offers a state that is not the real one.
                let state = if self.adversary.is_byzantine(to as ReplicaId) {
                    AppState {
                        count: state.count + 1,
                        ..state
                    }
                } else {
                    state
                };
                self.send(to, from, &Wire::State(seq, state), 0);
            }
            Wire::State(seq, state) => self.install(to, seq, state),
            Wire::FetchEntries(after, view) => {
                let answer =
                    self.nodes[to]
                        .replica
                        .entries_after(after, view, crate::pbft::MAX_CERTS);
                let envs = (answer.checkpoint_proof.into_iter())
                    .map(|msg| Envelope { msg, batch: None })
                    .chain(answer.new_view);
                for env in envs {
                    self.send(to, from, &Wire::Protocol(env), 0);
                }
                let mut certs = answer.certs;
                // A Byzantine replica offers batches that were not committed.
                if self.adversary.is_byzantine(to as ReplicaId) {
                    for c in &mut certs {
                        c.batch.reverse();
                        c.batch.pop();
                    }
                }
                if !certs.is_empty() {
                    self.send(to, from, &Wire::Entries(certs), 0);
                }
            }
            Wire::Entries(certs) => {
                if self.nodes[to].replica.on_commit_certs(certs).is_err() {
                    self.report.refused += 1;
                }
            }
            Wire::ReadIndex(nonce) => self.answer_read(to, from, nonce),
            Wire::ReadIndexAnswer(msg) => self.read_answer(to, &msg),
            Wire::Behind(epoch) => self.help_behind_epoch(to, from, epoch),
            Wire::EpochEnded(proof) => {
                for msg in proof {
                    if self.nodes[to]
                        .replica
                        .handle(Envelope { msg, batch: None })
                        .is_err()
                    {
                        self.report.refused += 1;
                    }
                }
            }
        }
        self.drain(to);
    }

    /// Whether node `to` may send `from` an epoch hint again (at most every
    /// 100 ms); if so, notes it is sent now.
    fn due_help(&mut self, to: usize, from: usize) -> bool {
        let now = self.now_us;
        let node = &mut self.nodes[to];
        if node.helped.get(&from).is_some_and(|&t| now < t + 100_000) {
            return false;
        }
        node.helped.insert(from, now);
        true
    }

    /// Node `to` sends `from`, still in `epoch`, the proof of its end.
    fn help_behind_epoch(&mut self, to: usize, from: usize, epoch: u64) {
        let Some((_, proof)) = self.nodes[to].ends.get(&epoch).cloned() else {
            return;
        };
        if self.due_help(to, from) {
            self.send(to, from, &Wire::EpochEnded(proof), 0);
        }
    }

    /// A request this replica already executed: its stored reply goes out
    /// again (§4.1: a client that got no result sends to all), true; an
    /// older one is dropped, true; a new one, false.
    fn answered(&mut self, i: usize, r: &Request) -> bool {
        let Some((t, result)) = self.nodes[i].app.last.get(&r.client).cloned() else {
            return false;
        };
        if r.timestamp > t {
            return false;
        }
        if r.timestamp == t {
            self.reply(i, r, t, result);
        }
        true
    }

    fn ask_state(&mut self, i: usize, seq: Seq) {
        if let Some(f) = &mut self.nodes[i].fetching {
            f.2 = self.now_us;
        }
        for to in (0..self.cfg.n).filter(|&j| j != i) {
            self.send(i, to, &Wire::StateRequest(seq), 0);
        }
    }

    /// A state arrived: installed only if it is the one the quorum proved.
    fn install(&mut self, i: usize, seq: Seq, state: AppState) {
        let Some((want, digest, _)) = self.nodes[i].fetching else {
            return;
        };
        if want != seq || state.digest() != digest {
            return;
        }
        let node = &mut self.nodes[i];
        node.fetching = None;
        node.app = state.clone();
        node.snapshots.insert(seq, state.clone());
        node.last_seq = seq;
        node.replica.installed_state(seq, state.executed());
        node.disk.join = None;
        self.report.state_transfers += 1;
        if self.correct(i) {
            self.check_chain(i, seq);
        }
        self.after_state(i);
    }

    fn check_chain(&mut self, i: usize, seq: Seq) {
        let chain = self.nodes[i].app.chain;
        match self.chain_at.get(&seq) {
            Some(c) if *c != chain => {
                self.violate(format!(
                    "replica {i}'s state after {seq} differs from another correct replica's"
                ));
            }
            Some(_) => {}
            None => {
                self.chain_at.insert(seq, chain);
            }
        }
    }

    /// Carries out what replica `i` asked for, until it asks nothing more.
    fn drain(&mut self, i: usize) {
        loop {
            let outputs = self.nodes[i].replica.drain_outputs();
            if outputs.is_empty() {
                return;
            }
            for o in outputs {
                self.output(i, o);
            }
            self.store_checkpoint(i);
        }
    }

    /// Stores the replica's stable checkpoint once its state is at hand
    /// (the engine does likewise), and drops the records it makes useless.
    fn store_checkpoint(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let low = node.replica.low_watermark();
        if node.disk.checkpoint.as_ref().is_some_and(|c| c.0 >= low) {
            return;
        }
        if let Some(state) = node.snapshots.get(&low) {
            let proof = node.replica.stable_proof().to_vec();
            node.disk.checkpoint = Some((low, proof, state.clone()));
            node.disk.records.retain(|r| r.seq() > low);
            node.disk.unsynced.retain(|r| r.seq() > low);
        }
    }

    /// A crashed replica comes back (with amnesia, rebuilt from its disk).
    fn restart(&mut self, i: usize) {
        if !self.nodes[i].crashed || Some(i) == self.odd_report.down {
            return;
        }
        self.nodes[i].crashed = false;
        if self.cfg.amnesia {
            self.reboot(i);
        }
    }

    /// Replica `i` as a restarted process finds itself: its stored
    /// checkpoint state, its stored batches executed again on top (each
    /// checked against what correct replicas executed there), its
    /// reservation; everything else forgotten.
    fn reboot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.disk.unsynced.clear(); // the crash lost them
        let mut replica = Replica::new(
            i as ReplicaId,
            node.config.clone(),
            node.key.clone(),
            self.cfg.settings.clone(),
        );
        let (stable, app) = match &node.disk.checkpoint {
            Some((seq, proof, state)) => (Some((*seq, proof.clone())), state.clone()),
            None => (None, AppState::genesis(node.config.clone())),
        };
        let replay = replica.restore(stable, app.executed(), node.disk.records.clone());
        if let Some((view, seq)) = node.disk.reserve {
            replica.resume(view, seq);
        }
        if let Some(state) = node.disk.join {
            replica.join(state);
        }
        node.snapshots.clear();
        if let Some((seq, _, state)) = &node.disk.checkpoint {
            node.snapshots.insert(*seq, state.clone());
        }
        let old = std::mem::replace(&mut node.replica, replica);
        Self::count_retired(&mut self.report, &old);
        node.app = app;
        node.fetching = None;
        node.read = None;
        node.last_seq = node.replica.low_watermark();
        for (seq, batch) in replay {
            if self.correct(i) {
                let digest = batch_digest(&batch);
                if self.decided.get(&seq).is_some_and(|(d, _)| *d != digest) {
                    self.violate(format!(
                        "replica {i} restored a batch at {seq} no correct replica executed"
                    ));
                }
            }
            let node = &mut self.nodes[i];
            for r in &batch {
                node.app.execute(r, seq, &self.cfg.settings);
            }
            node.app.end_batch(seq);
            node.last_seq = seq;
            // As the engine does: the states at checkpoints passed again
            // are at hand to serve.
            if seq.is_multiple_of(self.cfg.settings.checkpoint_interval) {
                node.snapshots.insert(seq, node.app.clone());
                // Signed again: the checkpoint may still need this
                // replica's signature to become stable (an epoch's last
                // one has no later one to supersede it).
                let d = node.app.digest();
                node.replica.state_digest(seq, d);
            }
            if self.correct(i) {
                self.check_chain(i, seq);
            }
        }
        self.after_state(i);
    }

    /// Every correct replica votes for the planned replica set (again each
    /// second until it is decided), the Byzantine ones for theirs.
    fn vote(&mut self) {
        let Some((_, _, want)) = self.plan.clone() else {
            return;
        };
        if self.epochs.len() > 1 {
            return;
        }
        self.at(self.now_us + CLIENT_RETRY_US, Event::Vote);
        for i in 0..self.cfg.n {
            let node = &self.nodes[i];
            if node.crashed || node.config.epoch() > 0 {
                continue;
            }
            let keys = if self.correct(i) { &want } else { &self.evil };
            // One vote per replica key: the same request when sent again.
            let vote = Request::signed(&node.key, 1, app::vote_op(keys));
            // Again to every replica, as a client does when no result
            // came (§4.1): its own replica forwards a request only once.
            for to in (0..self.cfg.n).filter(|&j| j != i) {
                self.send(i, to, &Wire::Request(vote.clone()), 0);
            }
            self.nodes[i].replica.request(vote);
            self.drain(i);
        }
    }

    /// After replica `i`'s state moved (executed or installed): a decided
    /// change tells its replica where the epoch ends.
    fn after_state(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let epoch = node.config.epoch();
        let Some((end, next)) = node.app.reconfig.after(epoch) else {
            return;
        };
        let next = next.clone();
        node.replica.end_epoch(end);
        if !self.correct(i) {
            return;
        }
        // Only the correct replicas (a quorum) vote for the plan; the
        // Byzantine ones' set must never be decided.
        if let Some((_, _, want)) = &self.plan
            && next.epoch() == 1
            && next.keys() != want.as_slice()
        {
            self.violate(format!(
                "replica {i} decided a replica set no quorum voted for: {:?}",
                next.keys()
            ));
        }
        match self.epochs.get(next.epoch() as usize) {
            None => self.epochs.push(next),
            Some(known) if *known != next => self.violate(format!(
                "correct replicas decided different configurations for epoch {}",
                next.epoch()
            )),
            Some(_) => {}
        }
    }

    /// Replica `i` saw its epoch end at `seq` (proven by `proof`): it goes
    /// on as its node's replica in the next configuration, or leaves it.
    fn switch(&mut self, i: usize, seq: Seq, proof: Vec<Signed>) {
        let node = &mut self.nodes[i];
        let old = node.config.epoch();
        let next = node.app.reconfig.config.clone();
        if next.epoch() != old + 1 || next.start() != seq {
            if self.correct(i) {
                self.violate(format!(
                    "replica {i} ended epoch {old} at {seq} without its next configuration"
                ));
            }
            return;
        }
        node.ends.insert(old, (seq, proof.clone()));
        let key = node.key.verifying_key().to_bytes();
        if let Some(id) = next.id_of(&key) {
            // The plan keeps every staying replica's id.
            assert_eq!(id as usize, i, "replacement in place");
            let mut replica = Replica::new(
                id,
                next.clone(),
                node.key.clone(),
                self.cfg.settings.clone(),
            );
            for r in node.replica.waiting_requests() {
                replica.forwarded(r);
            }
            let old = std::mem::replace(&mut node.replica, replica);
            Self::count_retired(&mut self.report, &old);
            node.config = next.clone();
            // What the engine keeps at a new epoch: the state it starts
            // from, with the old set's proof; the old epoch's records go.
            node.disk = Disk {
                checkpoint: Some((seq, proof, node.app.clone())),
                ..Disk::default()
            };
            node.snapshots.insert(seq, node.app.clone());
            self.adversary.epochs.insert(i as ReplicaId, next.epoch());
            if self.correct(i) {
                self.report.epoch_changes += 1;
            }
        }
        self.admit(&next);
    }

    /// Once a replica proved the end of the epoch before `next`, the
    /// planned newcomer takes the place of the replica it replaces (which
    /// leaves, Byzantine or not): it checks the proof against the old set,
    /// fetches the state at the end, and orders from there.
    fn admit(&mut self, next: &ReplicaSet) {
        let Some((j, spare, _)) = &self.plan else {
            return;
        };
        let j = *j;
        if self.nodes[j].config.epoch() >= next.epoch()
            || next.id_of(&spare.verifying_key().to_bytes()) != Some(j as ReplicaId)
        {
            return;
        }
        let old = next.epoch() - 1;
        let Some((end, proof)) = self.nodes.iter().find_map(|n| n.ends.get(&old).cloned()) else {
            return;
        };
        let digest = match crate::pbft::validate::checkpoint_proof(
            &self.epochs[old as usize],
            end,
            &proof,
            &mut crate::pbft::message::SigCache::default(),
        ) {
            Ok(d) => d,
            Err(e) => {
                self.violate(format!("the proof of epoch {old}'s end does not hold: {e}"));
                return;
            }
        };
        self.adversary.retire(j as ReplicaId);
        let key = spare.clone();
        let mut replica = Replica::new(
            j as ReplicaId,
            next.clone(),
            key.clone(),
            self.cfg.settings.clone(),
        );
        replica.join(digest);
        let crashed = self.nodes[j].crashed;
        Self::count_retired(&mut self.report, &self.nodes[j].replica);
        self.nodes[j] = Node {
            key,
            replica,
            disk: Disk {
                join: Some(digest),
                ..Disk::default()
            },
            app: AppState::genesis(next.clone()),
            snapshots: BTreeMap::new(),
            fetching: None,
            crashed,
            read: None,
            last_seq: 0,
            config: next.clone(),
            ends: BTreeMap::new(),
            helped: BTreeMap::new(),
        };
        if !crashed {
            self.drain(j);
        }
    }

    fn output(&mut self, i: usize, o: Output) {
        let n = self.cfg.n;
        let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        let byzantine = self.adversary.is_byzantine(i as ReplicaId);
        match o {
            Output::Broadcast(env) if byzantine => {
                let lies = self
                    .adversary
                    .broadcast(i as ReplicaId, &env, &others, &mut self.rng);
                for Lie {
                    to,
                    env,
                    extra_delay_us,
                } in lies
                {
                    self.send(i, to, &Wire::Protocol(env), extra_delay_us);
                }
            }
            Output::Broadcast(env) => {
                let wire = Wire::Protocol(env);
                for to in others {
                    self.send(i, to, &wire, 0);
                }
            }
            Output::Send { to, env } => {
                let lies = if byzantine {
                    self.adversary
                        .broadcast(i as ReplicaId, &env, &[to as usize], &mut self.rng)
                } else {
                    vec![Lie {
                        to: to as usize,
                        env,
                        extra_delay_us: 0,
                    }]
                };
                for l in lies {
                    self.send(i, l.to, &Wire::Protocol(l.env), l.extra_delay_us);
                }
            }
            Output::Forward { to, request } => {
                let wire = Wire::Request(request);
                let targets = match to {
                    Some(p) => vec![p as usize],
                    None => others,
                };
                for t in targets {
                    self.send(i, t, &wire, 0);
                }
            }
            Output::Execute {
                seq,
                batch,
                checkpoint,
            } => self.execute(i, seq, batch, checkpoint),
            Output::FetchState { seq, state } => {
                self.nodes[i].fetching = Some((seq, state, 0));
                self.ask_state(i, seq);
            }
            Output::Evidence(e) => {
                self.report.evidence += 1;
                let culprit = e.culprit();
                // The culprit by key: an id names another replica in
                // another epoch (a replaced liar's evidence may arrive late).
                let epoch = match &e {
                    Evidence::Equivocation { a, .. } | Evidence::ConflictingVotes { a, .. } => {
                        a.epoch
                    }
                };
                let liar = self
                    .epochs
                    .get(epoch as usize)
                    .is_some_and(|set| self.byzantine_keys.contains(&set.keys()[culprit as usize]));
                if !byzantine && !liar {
                    self.violate(format!(
                        "replica {i} holds evidence against correct replica {culprit}"
                    ));
                }
            }
            Output::Reserve { view, seq } => self.nodes[i].disk.reserve = Some((view, seq)),
            Output::Persist(Record::Prepared { .. }) if self.cfg.forget_prepared => {}
            Output::Persist(record) => {
                let disk = &mut self.nodes[i].disk;
                let urgent = record.urgent();
                disk.unsynced.push(record);
                if urgent {
                    disk.records.append(&mut disk.unsynced);
                }
            }
            Output::Sync => {
                let disk = &mut self.nodes[i].disk;
                disk.records.append(&mut disk.unsynced);
            }
            Output::FetchEntries { after, view } => {
                for to in others {
                    self.send(i, to, &Wire::FetchEntries(after, view), 0);
                }
            }
            Output::EpochEnd { seq, proof } => self.switch(i, seq, proof),
            Output::ViewChanged { .. } => {
                if !byzantine {
                    self.report.view_changes += 1;
                }
            }
        }
    }

    fn execute(&mut self, i: usize, seq: Seq, batch: Vec<Request>, checkpoint: bool) {
        let correct = self.correct(i);
        if correct {
            let digest = batch_digest(&batch);
            match self.decided.get(&seq) {
                Some((d, other)) if *d != digest => {
                    let other = *other;
                    self.violate(format!(
                        "safety: correct replicas {other} and {i} executed different batches at sequence {seq}"
                    ));
                }
                Some(_) => {}
                None => {
                    self.decided.insert(seq, (digest, i as ReplicaId));
                }
            }
            if seq != self.nodes[i].last_seq + 1 {
                let last = self.nodes[i].last_seq;
                self.violate(format!(
                    "replica {i} executed {seq} after {last}: out of order"
                ));
            }
        }
        self.nodes[i].last_seq = seq;
        let settings = self.cfg.settings.clone();
        for r in &batch {
            let Some((ts, result)) = self.nodes[i].app.execute(r, seq, &settings) else {
                continue;
            };
            if correct {
                let key = (r.client, ts);
                match self.results.get(&key) {
                    Some(x) if *x != result => {
                        self.violate(format!(
                            "correct replicas computed different results for a request at {ts}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.results.insert(key, result.clone());
                        self.result_seq.insert(key, seq);
                    }
                }
            }
            self.reply(i, r, ts, result);
        }
        self.nodes[i].app.end_batch(seq);
        if correct {
            self.check_chain(i, seq);
        }
        if checkpoint {
            let node = &mut self.nodes[i];
            let d = node.app.digest();
            node.snapshots.insert(seq, node.app.clone());
            // The state at an epoch's end stays: a replica still in that
            // epoch can only move on from it.
            let ends: Vec<Seq> = node.ends.values().map(|e| e.0).collect();
            while node.snapshots.len() > 4 + ends.len() {
                let Some(&oldest) = node.snapshots.keys().find(|s| !ends.contains(s)) else {
                    break;
                };
                node.snapshots.remove(&oldest);
            }
            node.replica.state_digest(seq, d);
        }
        self.after_state(i);
    }

    /// Replica `i` answers request `r` with `result`.
    fn reply(&mut self, i: usize, r: &Request, ts: u64, result: Vec<u8>) {
        let Some(&c) = self.client_index.get(&r.client) else {
            return; // the adversary's own client
        };
        // A Byzantine replica answers with a result of its own making (a
        // silent one not at all); f + 1 matching replies outvote it.
        let result = match self.adversary.behaviour.get(&(i as ReplicaId)) {
            None => result,
            Some(Behaviour::Silent) => return,
            Some(_) => b"a lie".to_vec(),
        };
        let reply = self.nodes[i].replica.reply(r.client, ts, result);
        self.send(i, self.cfg.n + c, &Wire::Reply(reply), 0);
    }

    fn client_reply(&mut self, c: usize, msg: &Signed) {
        let Some(set) = self.epochs.get(msg.epoch as usize) else {
            return;
        };
        let accepted = self.clients[c].on_reply(set, msg);
        if !accepted {
            return;
        }
        let client = &mut self.clients[c];
        let ts = client.current - 1;
        let result = client.accepted[&ts].clone();
        let key = (client.id, ts);
        let name = client.name.clone();
        client.sent_at = 0;
        if let Some(&seq) = self.result_seq.get(&key) {
            self.acked_seq = self.acked_seq.max(seq);
            if seq > self.fault_seq {
                self.note_accepted();
            }
        }
        match self.results.get(&key) {
            Some(x) if *x == result => {}
            _ => {
                self.violate(format!(
                    "client {name} accepted a result for request {ts} no correct replica computed"
                ));
            }
        }
    }
}
