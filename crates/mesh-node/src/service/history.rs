//! A retained history of this node's measured figures, for performance
//! reports and the dashboard's charts.
//!
//! A sampler takes one [`Sample`] every [`SAMPLE_EVERY`] and keeps the last
//! [`KEEP`] (24 hours). Rates are differences of counters between two samples
//! divided by the real time between them; a figure that could not be measured
//! (no earlier sample, no task ended yet, the node alone) is `None` (JSON
//! `null`), never zero.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Service;

/// Time between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: 24 hours.
pub const KEEP: usize = 24 * 3600 / 5;

/// One look at the node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// When it was taken, Unix ms.
    pub at_unix_ms: u64,
    /// Members alive in this node's view.
    pub members_alive: usize,
    /// Members suspected in this node's view.
    pub members_suspect: usize,
    /// Members dead or left in this node's view.
    pub members_dead: usize,
    /// Whether this node led (Raft) or was the primary (pBFT).
    pub is_leader: bool,
    /// The Raft term (pBFT: the view).
    pub term: u64,
    /// Highest log index known committed.
    pub commit_index: Option<u64>,
    /// Log entries committed per second since the previous sample.
    pub commits_per_sec: Option<f64>,
    /// Process CPU use, percent of one core.
    pub cpu_percent: Option<f32>,
    /// Process resident memory, bytes.
    pub resident_bytes: Option<u64>,
    /// Membership traffic: packets and frames received per second.
    pub gossip_messages_in_per_sec: Option<f64>,
    /// Membership traffic: packets and frames sent per second.
    pub gossip_messages_out_per_sec: Option<f64>,
    /// Tasks submitted per second, mesh-wide.
    pub tasks_submitted_per_sec: Option<f64>,
    /// Tasks completed per second, mesh-wide.
    pub tasks_completed_per_sec: Option<f64>,
    /// Tasks failed or dead-lettered per second, mesh-wide.
    pub tasks_failed_per_sec: Option<f64>,
    /// Tasks running, mesh-wide.
    pub tasks_running: Option<usize>,
    /// Ready tasks no agent has taken.
    pub tasks_waiting: Option<usize>,
    /// Submit to first start, median ms, over the tasks the replica holds.
    pub dispatch_p50_ms: Option<u64>,
    /// Submit to first start, 99th percentile ms.
    pub dispatch_p99_ms: Option<u64>,
    /// Submit to completion, median ms, over the completed tasks the replica holds.
    pub end_to_end_p50_ms: Option<u64>,
    /// Standard deviation / mean of running + queued tasks over live agents.
    pub load_variance: Option<f64>,
    /// Publish calls accepted on this node per second.
    pub messages_published_per_sec: Option<f64>,
    /// Messages handed to this node's subscriptions per second (one per subscription).
    pub messages_delivered_per_sec: Option<f64>,
}

/// Counters kept between samples for rates.
#[derive(Clone, Copy)]
struct Counters {
    at: Instant,
    commit: Option<u64>,
    submitted: Option<u64>,
    completed: Option<u64>,
    failed: Option<u64>,
    published: Option<u64>,
    delivered: Option<u64>,
}

/// The retained samples, oldest first.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    /// The counters of the latest retained sample, for the next one's rates.
    last: Mutex<Option<Counters>>,
}

impl History {
    fn push(&self, s: Sample) {
        let mut v = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= KEEP {
            v.pop_front();
        }
        v.push_back(s);
    }

    /// Samples taken in the last `secs` seconds (all with `None`).
    pub fn since(&self, secs: Option<u64>) -> Vec<Sample> {
        let v = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let from = secs.map_or(0, |s| super::unix_ms().saturating_sub(s * 1000));
        v.iter().filter(|s| s.at_unix_ms >= from).cloned().collect()
    }
}

fn rate(now: Option<u64>, before: Option<u64>, secs: f64) -> Option<f64> {
    match (now, before) {
        (Some(a), Some(b)) if secs > 0.0 && a >= b => Some((a - b) as f64 / secs),
        _ => None,
    }
}

impl Service {
    /// The retained samples of the last `secs` seconds (all without).
    pub fn history(&self, secs: Option<u64>) -> Vec<Sample> {
        self.inner.history.since(secs)
    }

    /// A sample taken now (not retained), its rates over the time since the
    /// latest retained one.
    pub async fn sample_now(&self) -> Sample {
        let prev = *self
            .inner
            .history
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.take_sample(prev).await.0
    }

    async fn take_sample(&self, prev: Option<Counters>) -> (Sample, Counters) {
        let mut s = Sample {
            at_unix_ms: super::unix_ms(),
            ..Default::default()
        };
        let at = Instant::now();
        let members = self.inner.members.borrow().clone();
        for m in members.iter() {
            match m.state.as_str() {
                "alive" => s.members_alive += 1,
                "suspect" => s.members_suspect += 1,
                _ => s.members_dead += 1,
            }
        }
        let c = self.consensus_status();
        s.is_leader = c.order.leader == Some(c.order.node_id);
        s.term = c.order.term;
        s.commit_index = c.order.commit_index;
        if let Some(m) = self.membership_status().await {
            s.cpu_percent = m.health.cpu_percent;
            s.resident_bytes = m.health.resident_bytes;
            s.gossip_messages_in_per_sec = m.health.messages_in_per_sec;
            s.gossip_messages_out_per_sec = m.health.messages_out_per_sec;
        }
        let (mut submitted, mut completed, mut failed) = (None, None, None);
        if let Ok(t) = self.task_metrics().await {
            submitted = Some(t.totals.submitted);
            completed = Some(t.totals.completed);
            failed = Some(t.totals.failed + t.totals.dead_lettered);
            s.tasks_running = Some(t.running.values().sum());
            s.tasks_waiting = Some(t.waiting);
            s.dispatch_p50_ms = t.dispatch_ms.p50;
            s.dispatch_p99_ms = t.dispatch_ms.p99;
            s.end_to_end_p50_ms = t.end_to_end_ms.p50;
            s.load_variance = t.load_variance;
        }
        let (mut published, mut delivered) = (None, None);
        if let Ok(m) = self.messaging_status().await {
            published = Some(m.stats.published);
            delivered = Some(m.stats.delivered);
        }
        let now = Counters {
            at,
            commit: s.commit_index,
            submitted,
            completed,
            failed,
            published,
            delivered,
        };
        if let Some(p) = prev {
            let secs = at.duration_since(p.at).as_secs_f64();
            s.commits_per_sec = rate(now.commit, p.commit, secs);
            s.tasks_submitted_per_sec = rate(now.submitted, p.submitted, secs);
            s.tasks_completed_per_sec = rate(now.completed, p.completed, secs);
            s.tasks_failed_per_sec = rate(now.failed, p.failed, secs);
            s.messages_published_per_sec = rate(now.published, p.published, secs);
            s.messages_delivered_per_sec = rate(now.delivered, p.delivered, secs);
        }
        (s, now)
    }
}

/// Samples the node every [`SAMPLE_EVERY`] until the node stops.
pub fn spawn(svc: Service) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let prev = *svc
                .inner
                .history
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let (s, c) = svc.take_sample(prev).await;
            svc.inner.history.push(s);
            *svc.inner
                .history
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(c);
            if svc.inner.requests.is_closed() {
                return;
            }
        }
    });
}
