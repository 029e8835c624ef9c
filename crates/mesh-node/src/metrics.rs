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

/// Label of a dropped packet or frame: why it was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: String,
}
/// Label naming a kind of event or total.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}
/// Label naming a member or task state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub(crate) state: String,
}
/// Label of a write's outcome: `ok`, `refused` (by the state machine) or the error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub(crate) result: String,
}
/// Label naming a peer node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub(crate) peer: String,
}
/// Label naming an agent.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AgentLabel {
    pub(crate) agent: String,
}
/// Label of a latency quantile (`0.5`, `0.99`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QuantileLabel {
    pub(crate) quantile: String,
}

/// Every metric a node exports.
pub struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    /// HTTP requests refused for a missing or wrong bearer token.
    pub http_unauthorized: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) dropped: Family<ReasonLabel, Counter>,
    pub(crate) events: Family<KindLabel, Counter>,
    pub(crate) members: Family<StateLabel, Gauge>,
    pub(crate) read_only: Gauge,
    pub(crate) peer_rtt_ms: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    pub(crate) cpu_percent: Gauge<f64, AtomicU64>,
    pub(crate) resident_bytes: Gauge,
    pub(crate) raft_term: Gauge,
    pub(crate) raft_commit_index: Gauge,
    pub(crate) raft_applied_index: Gauge,
    pub(crate) raft_is_leader: Gauge,
    pub(crate) raft_voters: Gauge,
    pub(crate) raft_learners: Gauge,
    /// Writes through the service, by outcome (`ok`, `refused`, or the error code).
    pub(crate) writes: Family<ResultLabel, Counter>,
    /// Tasks by state, on this replica.
    pub(crate) tasks: Family<StateLabel, Gauge>,
    /// Task totals since the state began (submitted, started, completed, ...).
    pub(crate) task_totals: Family<KindLabel, Gauge>,
    pub(crate) task_queue_depth: Family<AgentLabel, Gauge>,
    pub(crate) task_running: Family<AgentLabel, Gauge>,
    /// -1 when there is no load to compare.
    pub(crate) task_load_variance: Gauge<f64, AtomicU64>,
    pub(crate) task_hotspots: Gauge,
    /// -1 with no samples.
    pub(crate) task_dispatch_ms: Family<QuantileLabel, Gauge>,
    pub(crate) task_end_to_end_ms: Family<QuantileLabel, Gauge>,
    /// Messaging totals and queue sizes, by kind (published, delivered, ...).
    pub(crate) msg: Family<KindLabel, Gauge>,
    /// Sum over every drop reason (for the status document).
    dropped_total: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `mesh_` prefix.
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

    /// Counts one packet or frame dropped for `reason` (a label value such as
    /// `queue_full`).
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
