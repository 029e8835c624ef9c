//! `mesh sim membership`: one measured run of a simulated mesh.
//!
//! Timeline (virtual time): N nodes boot already knowing each other, spread over
//! one probe period; traffic is counted over a steady window (1 s to 4 s); at
//! 4 s node 0 publishes a new fact (a soft-state change) and we time its spread;
//! at 7 s a random node is crashed and we time the first suspicion, the first
//! confirmed death and the moment every survivor agrees; the run continues to
//! the requested duration, counting healthy nodes declared dead (false positives).
//! Every figure is measured in the run; one that could not be (say, a crash that
//! was never agreed on in time) is `null`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
use serde::Serialize;

use crate::net::{Latency, NetConfig};
use crate::sim::{Sim, SimConfig};
use mesh_membership::EventKind;
use mesh_proto::Profile;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct MembershipRun {
    /// Simulated nodes (at least 3).
    pub nodes: usize,
    /// Seed of every random choice, the crashed node included.
    pub seed: u64,
    /// Datagram loss probability (0.0 to 1.0).
    pub loss: f64,
    /// Virtual run length, ms (raised to [`MIN_DURATION_MS`] if shorter).
    pub duration_ms: u64,
    /// Timing profile every node runs.
    pub profile: Profile,
    /// One-way delay of every message.
    pub latency: Latency,
}

const STEADY_FROM_MS: u64 = 1_000;
const FACT_AT_MS: u64 = 4_000;
const CRASH_AT_MS: u64 = 7_000;
/// Shortest run that fits the timeline with time to detect the crash.
pub const MIN_DURATION_MS: u64 = 12_000;

/// How fast node 0's new fact (a soft-state change) reached the other nodes.
/// Times are ms after publication; `None`: that share was never reached.
#[derive(Debug, Clone, Serialize)]
pub struct Dissemination {
    /// Virtual time of the publication, ms.
    pub published_at_ms: u64,
    /// Until half of the other nodes had it.
    pub to_50pct_ms: Option<u64>,
    /// Until 99% of the other nodes had it.
    pub to_99pct_ms: Option<u64>,
    /// Until 99.99% of the other nodes had it.
    pub to_99_99pct_ms: Option<u64>,
    /// Until every other node had it.
    pub to_100pct_ms: Option<u64>,
    /// Other nodes that had it by the end of the run.
    pub reached: usize,
    /// Other nodes: all but node 0.
    pub of: usize,
}

/// How fast the survivors noticed the crash of one random node. Times are ms
/// after the crash; `None`: it did not happen before the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct CrashDetection {
    /// The crashed node (`n<index>`).
    pub node: String,
    /// Virtual time of the crash, ms.
    pub crashed_at_ms: u64,
    /// Until the first `suspected` event about it.
    pub first_suspicion_ms: Option<u64>,
    /// Until the first node declared it dead.
    pub first_detection_ms: Option<u64>,
    /// Until every survivor had declared it dead.
    pub full_agreement_ms: Option<u64>,
    /// Survivors that declared it dead by the end of the run.
    pub agreed: usize,
    /// Survivors: all nodes but the crashed one.
    pub of: usize,
}

/// Message counts of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    /// Datagrams sent per member per second over the steady window (before any fact or crash).
    pub steady_messages_per_member_per_sec: f64,
    /// Datagram bytes sent per member per second over the same steady window.
    pub steady_bytes_per_member_per_sec: f64,
    /// The same over the whole run (includes dissemination and detection).
    pub run_messages_per_member_per_sec: f64,
    /// Datagrams the network model lost over the whole run.
    pub datagrams_lost: u64,
    /// Stream (anti-entropy) messages sent over the whole run.
    pub stream_messages: u64,
}

/// Everything one membership run measured, and how to replay it.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipReport {
    /// Simulated nodes.
    pub nodes: usize,
    /// The run's seed.
    pub seed: u64,
    /// Datagram loss probability.
    pub loss: f64,
    /// Timing profile name.
    pub profile: String,
    /// Members each gossip round goes to.
    pub gossip_fanout: usize,
    /// SWIM protocol period, ms.
    pub probe_period_ms: u64,
    /// Suspicion timeout for this mesh size, ms.
    pub suspect_to_down_ms: u64,
    /// Virtual time simulated, ms.
    pub virtual_duration_ms: u64,
    /// Real time the run took, ms.
    pub wall_ms: u64,
    /// Spread of node 0's new fact.
    pub dissemination: Dissemination,
    /// Detection of the crash.
    pub crash: CrashDetection,
    /// (observer, subject) pairs where a healthy node was declared dead.
    pub false_positives: usize,
    /// Distinct healthy nodes declared dead by anyone.
    pub false_positive_subjects: usize,
    /// Healthy nodes that were told they were dead and rejoined under a new generation.
    pub renewals: usize,
    /// Message counts.
    pub traffic: Traffic,
    /// The first invariant violation, if any (it stops the simulation there).
    pub invariant_violation: Option<String>,
    /// The `mesh sim membership` command that replays this run.
    pub replay: String,
}

#[derive(Default)]
struct Tracker {
    fact_version: u64,
    fact_first_seen: Vec<Option<u64>>,
    crashed: Option<(String, u64)>,
    first_suspicion: Option<u64>,
    first_detection: Option<u64>,
    dead_seen_by: Vec<Option<u64>>,
    false_pairs: usize,
    renewals: usize,
    false_subjects: std::collections::BTreeSet<String>,
}

fn time_to_fraction(mut times: Vec<u64>, of: usize, fraction: f64) -> Option<u64> {
    let need = ((of as f64) * fraction).ceil().max(1.0) as usize;
    if times.len() < need {
        return None;
    }
    times.sort_unstable();
    Some(times[need - 1])
}

impl MembershipRun {
    /// The `mesh sim membership` command line that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "mesh sim membership --nodes {} --seed {} --loss {} --duration {}s --profile {}",
            self.nodes,
            self.seed,
            self.loss,
            self.duration_ms / 1000,
            self.profile
        )
    }

    /// Runs the timeline of the module docs and measures it. Panics below 3 nodes.
    pub fn run(&self) -> MembershipReport {
        assert!(self.nodes >= 3, "a membership run needs at least 3 nodes");
        let duration_ms = self.duration_ms.max(MIN_DURATION_MS);
        let wall = Instant::now();
        let timings = self.profile.timings();
        let mut sim = Sim::new(SimConfig {
            seed: self.seed,
            timings: timings.clone(),
            net: NetConfig {
                latency: self.latency,
                loss: self.loss,
                duplicate: 0.0,
            },
            record_events: false,
        });
        let n = self.nodes;
        let tracker = Rc::new(RefCell::new(Tracker {
            fact_first_seen: vec![None; n],
            dead_seen_by: vec![None; n],
            ..Default::default()
        }));
        let t = tracker.clone();
        sim.on_event = Some(Box::new(move |at_us, observer, ev| {
            let mut t = t.borrow_mut();
            let at_ms = at_us / 1000;
            match &ev.kind {
                EventKind::SoftUpdated { version }
                    if ev.subject == "n0" && t.fact_version > 0 && *version >= t.fact_version =>
                {
                    let slot = &mut t.fact_first_seen[observer as usize];
                    if slot.is_none() {
                        *slot = Some(at_ms);
                    }
                }
                EventKind::Suspected
                    if t.crashed.as_ref().is_some_and(|(s, _)| *s == ev.subject)
                        && t.first_suspicion.is_none() =>
                {
                    t.first_suspicion = Some(at_ms);
                }
                EventKind::Renewed => t.renewals += 1,
                EventKind::Dead => {
                    let crashed_now = t.crashed.as_ref().is_some_and(|(s, _)| *s == ev.subject);
                    if crashed_now {
                        if t.first_detection.is_none() {
                            t.first_detection = Some(at_ms);
                        }
                        let slot = &mut t.dead_seen_by[observer as usize];
                        if slot.is_none() {
                            *slot = Some(at_ms);
                        }
                    } else {
                        t.false_pairs += 1;
                        t.false_subjects.insert(ev.subject.clone());
                    }
                }
                _ => {}
            }
        }));

        sim.start_converged(n);
        sim.run_until(STEADY_FROM_MS * 1000);
        let steady_start = sim.stats.clone();
        sim.run_until(FACT_AT_MS * 1000);
        let steady_end = sim.stats.clone();
        let steady_secs = (FACT_AT_MS - STEADY_FROM_MS) as f64 / 1000.0;

        // The fact.
        let version = sim.publish(0, vec!["fact".into()]);
        tracker.borrow_mut().fact_version = version;
        // `publish` drains node 0's outputs; its own knowledge counts as time zero.
        sim.run_until(CRASH_AT_MS * 1000);

        // The crash: a random node other than 0 (the fact's origin).
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ 0xc7a5_4ed0);
        let victim = rng.random_range(1..n as u32);
        tracker.borrow_mut().crashed = Some((format!("n{victim}"), CRASH_AT_MS));
        sim.crash(victim);
        sim.run_until(duration_ms * 1000);

        let end = sim.stats.clone();
        let t = tracker.borrow();
        let fact_times: Vec<u64> = t
            .fact_first_seen
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 0)
            .filter_map(|(_, x)| x.map(|v| v - FACT_AT_MS))
            .collect();
        let others = n - 1;
        let dead_times: Vec<u64> = t
            .dead_seen_by
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 != victim)
            .filter_map(|(_, x)| x.map(|v| v - CRASH_AT_MS))
            .collect();
        let survivors = n - 1;
        let steady_msgs = (steady_end.datagrams_sent - steady_start.datagrams_sent) as f64;
        let steady_bytes =
            (steady_end.datagram_bytes_sent - steady_start.datagram_bytes_sent) as f64;
        MembershipReport {
            nodes: n,
            seed: self.seed,
            loss: self.loss,
            profile: self.profile.to_string(),
            gossip_fanout: timings.gossip_fanout,
            probe_period_ms: timings.probe_period_ms,
            suspect_to_down_ms: timings.suspect_to_down_ms(n),
            virtual_duration_ms: duration_ms,
            wall_ms: wall.elapsed().as_millis() as u64,
            dissemination: Dissemination {
                published_at_ms: FACT_AT_MS,
                to_50pct_ms: time_to_fraction(fact_times.clone(), others, 0.5),
                to_99pct_ms: time_to_fraction(fact_times.clone(), others, 0.99),
                to_99_99pct_ms: time_to_fraction(fact_times.clone(), others, 0.9999),
                to_100pct_ms: time_to_fraction(fact_times.clone(), others, 1.0),
                reached: fact_times.len(),
                of: others,
            },
            crash: CrashDetection {
                node: format!("n{victim}"),
                crashed_at_ms: CRASH_AT_MS,
                first_suspicion_ms: t.first_suspicion.map(|x| x - CRASH_AT_MS),
                first_detection_ms: t.first_detection.map(|x| x - CRASH_AT_MS),
                full_agreement_ms: time_to_fraction(dead_times.clone(), survivors, 1.0),
                agreed: dead_times.len(),
                of: survivors,
            },
            false_positives: t.false_pairs,
            false_positive_subjects: t.false_subjects.len(),
            renewals: t.renewals,
            traffic: Traffic {
                steady_messages_per_member_per_sec: steady_msgs / n as f64 / steady_secs,
                steady_bytes_per_member_per_sec: steady_bytes / n as f64 / steady_secs,
                run_messages_per_member_per_sec: end.datagrams_sent as f64
                    / n as f64
                    / (duration_ms as f64 / 1000.0),
                datagrams_lost: end.datagrams_lost,
                stream_messages: end.stream_messages_sent,
            },
            invariant_violation: sim.violation().map(str::to_string),
            replay: self.replay_command(),
        }
    }
}

impl MembershipReport {
    /// A human-readable summary.
    pub fn to_text(&self) -> String {
        let ms = |v: Option<u64>| {
            v.map(|x| format!("{x} ms"))
                .unwrap_or_else(|| "not reached".into())
        };
        let d = &self.dissemination;
        let c = &self.crash;
        let mut s = String::new();
        s += &format!(
            "simulated {} nodes, profile {}, loss {:.1}%, seed {}, {} s virtual in {:.1} s wall\n",
            self.nodes,
            self.profile,
            self.loss * 100.0,
            self.seed,
            self.virtual_duration_ms / 1000,
            self.wall_ms as f64 / 1000.0
        );
        s += &format!(
            "probe period {} ms, suspicion timeout {} ms, gossip fanout {}\n\n",
            self.probe_period_ms, self.suspect_to_down_ms, self.gossip_fanout
        );
        s += &format!("new fact from n0 (reached {}/{}):\n", d.reached, d.of);
        s += &format!(
            "  50%     {}\n  99%     {}\n  99.99%  {}\n  100%    {}\n",
            ms(d.to_50pct_ms),
            ms(d.to_99pct_ms),
            ms(d.to_99_99pct_ms),
            ms(d.to_100pct_ms)
        );
        s += &format!("crash of {} (agreed by {}/{}):\n", c.node, c.agreed, c.of);
        s += &format!(
            "  first suspicion   {}\n  first detection   {}\n  full agreement    {}\n",
            ms(c.first_suspicion_ms),
            ms(c.first_detection_ms),
            ms(c.full_agreement_ms)
        );
        s += &format!(
            "false positives: {} (healthy nodes declared dead: {}); forced rejoins: {}\n",
            self.false_positives, self.false_positive_subjects, self.renewals
        );
        s += &format!(
            "messages per member per second: {:.2} steady ({:.0} bytes/s), {:.2} over the run\n",
            self.traffic.steady_messages_per_member_per_sec,
            self.traffic.steady_bytes_per_member_per_sec,
            self.traffic.run_messages_per_member_per_sec
        );
        if let Some(v) = &self.invariant_violation {
            s += &format!("INVARIANT VIOLATED: {v}\n");
        }
        s += &format!("replay: {}\n", self.replay);
        s
    }
}
