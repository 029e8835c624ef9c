//! Prometheus metrics (`GET /metrics`), with the prometheus-client crate.
//!
//! Counters are bumped by the node loop as traffic happens; gauges are set from
//! the loop's periodic sample, so every exported figure is measured.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuantileLabel {
    pub quantile: String,
}

/// Every metric a node exports.
pub struct Metrics {
    pub registry: Registry,
    pub messages_in: Counter,
    pub messages_out: Counter,
    /// HTTP requests refused for a missing or wrong bearer token.
    pub http_unauthorized: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub dropped: Family<ReasonLabel, Counter>,
    pub events: Family<KindLabel, Counter>,
    pub members: Family<StateLabel, Gauge>,
    pub read_only: Gauge,
    pub peer_rtt_ms: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    pub cpu_percent: Gauge<f64, AtomicU64>,
    pub resident_bytes: Gauge,
    pub raft_term: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_voters: Gauge,
    pub raft_learners: Gauge,
    /// Writes through the service, by outcome (ok, or the error code).
    pub writes: Family<ResultLabel, Counter>,
    /// Tasks by state, on this replica.
    pub tasks: Family<StateLabel, Gauge>,
    /// Task totals since the state began (submitted, started, completed, ...).
    pub task_totals: Family<KindLabel, Gauge>,
    pub task_queue_depth: Family<AgentLabel, Gauge>,
    pub task_running: Family<AgentLabel, Gauge>,
    /// -1 when there is no load to compare.
    pub task_load_variance: Gauge<f64, AtomicU64>,
    pub task_hotspots: Gauge,
    /// -1 with no samples.
    pub task_dispatch_ms: Family<QuantileLabel, Gauge>,
    pub task_end_to_end_ms: Family<QuantileLabel, Gauge>,
    /// Messaging totals and queue sizes, by kind (published, delivered, ...).
    pub msg: Family<KindLabel, Gauge>,
    /// Sum over every drop reason (for the status document).
    dropped_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh");
        let m = Metrics {
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            http_unauthorized: Counter::default(),
            dropped: Family::default(),
            events: Family::default(),
            members: Family::default(),
            read_only: Gauge::default(),
            peer_rtt_ms: Family::default(),
            cpu_percent: Gauge::default(),
            resident_bytes: Gauge::default(),
            raft_term: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_voters: Gauge::default(),
            raft_learners: Gauge::default(),
            writes: Family::default(),
            tasks: Family::default(),
            task_totals: Family::default(),
            task_queue_depth: Family::default(),
            task_running: Family::default(),
            task_load_variance: Gauge::default(),
            task_hotspots: Gauge::default(),
            task_dispatch_ms: Family::default(),
            task_end_to_end_ms: Family::default(),
            msg: Family::default(),
            dropped_total: AtomicU64::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "messaging",
            "Pub/sub and direct messages of this node since it started, by kind (queued_now and mailboxed_now are current sizes)",
            m.msg.clone(),
        );
        registry.register(
            "messages_in",
            "Membership packets and frames received",
            m.messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Membership packets and frames sent",
            m.messages_out.clone(),
        );
        registry.register(
            "http_unauthorized",
            "HTTP requests refused for a missing or wrong bearer token",
            m.http_unauthorized.clone(),
        );
        registry.register("bytes_in", "Membership bytes received", m.bytes_in.clone());
        registry.register("bytes_out", "Membership bytes sent", m.bytes_out.clone());
        registry.register(
            "packets_dropped",
            "Packets and frames dropped, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "membership_events",
            "Membership events seen by this node, by kind",
            m.events.clone(),
        );
        registry.register(
            "members",
            "Members in this node's view, by state",
            m.members.clone(),
        );
        registry.register(
            "read_only",
            "1 when this node reaches no majority of the known members",
            m.read_only.clone(),
        );
        registry.register(
            "peer_rtt_ms",
            "Smoothed round-trip time of direct probes, per peer",
            m.peer_rtt_ms.clone(),
        );
        registry.register(
            "process_cpu_percent",
            "Process CPU use over the last sample, percent of one core",
            m.cpu_percent.clone(),
        );
        registry.register(
            "process_resident_bytes",
            "Process resident memory",
            m.resident_bytes.clone(),
        );
        for (name, help, g) in [
            ("raft_term", "Current Raft term", &m.raft_term),
            (
                "raft_commit_index",
                "Highest log index known committed (-1: unknown)",
                &m.raft_commit_index,
            ),
            (
                "raft_applied_index",
                "Highest log index applied here (-1: none)",
                &m.raft_applied_index,
            ),
            (
                "raft_is_leader",
                "1 when this node leads",
                &m.raft_is_leader,
            ),
            (
                "raft_voters",
                "Voters in the Raft configuration",
                &m.raft_voters,
            ),
            (
                "raft_learners",
                "Learners in the Raft configuration",
                &m.raft_learners,
            ),
        ] {
            registry.register(name, help, g.clone());
        }
        registry.register("tasks", "Tasks by state", m.tasks.clone());
        registry.register(
            "task_totals",
            "Task totals since the state began, by kind (submitted, started, completed, attempts_lost, retried, failed, dead_lettered, cancelled, stolen, transferred)",
            m.task_totals.clone(),
        );
        registry.register(
            "task_queue_depth",
            "Tasks assigned to an agent and not started",
            m.task_queue_depth.clone(),
        );
        registry.register(
            "task_running",
            "Tasks running per agent",
            m.task_running.clone(),
        );
        registry.register(
            "task_load_variance",
            "Standard deviation / mean of running + queued tasks over live agents (-1: no load)",
            m.task_load_variance.clone(),
        );
        registry.register(
            "task_hotspots",
            "Agents running more than 85% of their slots",
            m.task_hotspots.clone(),
        );
        registry.register(
            "task_dispatch_ms",
            "Submit to first start, over the tasks this replica holds (-1: none)",
            m.task_dispatch_ms.clone(),
        );
        registry.register(
            "task_end_to_end_ms",
            "Submit to completion, over the completed tasks this replica holds (-1: none)",
            m.task_end_to_end_ms.clone(),
        );
        registry.register(
            "writes",
            "Writes through this node's service, by outcome (ok or error code)",
            m.writes.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn drop_packet(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
        self.dropped_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Packets and frames dropped so far, every reason together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
