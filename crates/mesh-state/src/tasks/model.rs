//! The task and what a client submits, with limits and validation.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::StateError;

/// Default time a task may run, per attempt.
pub const DEFAULT_TIMEOUT_MS: u64 = 300_000;
/// Longest timeout accepted (a week).
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long past its timeout an attempt may still report (its agent kills it
/// at the timeout and says so) before the state machine gives up on it.
pub const TIMEOUT_GRACE_MS: u64 = 2_000;
/// Default retry budget: attempts after the first.
pub const DEFAULT_RETRIES: u32 = 3;
/// Largest retry budget a task may ask for.
pub const MAX_RETRIES: u32 = 100;
/// Default lease a claim grants; the agent renews it while the task runs.
pub const DEFAULT_LEASE_MS: u64 = 5_000;
/// Shortest lease a claim may ask for.
pub const MIN_LEASE_MS: u64 = 200;
/// Longest lease a claim may ask for.
pub const MAX_LEASE_MS: u64 = 300_000;
/// Largest task payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest result a completed attempt may report, in bytes.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// Most tasks in one submit.
pub const MAX_TASKS_PER_SUBMIT: usize = 10_000;
/// Most dependencies per task.
pub const MAX_DEPS: usize = 1_000;
/// Most required capabilities per task.
pub const MAX_NEEDS: usize = 64;
/// Most tasks one claim takes, and most outcomes one finish reports.
pub const MAX_CLAIM: u32 = 1_000;
/// Longest a claim stays open for tasks that become ready later.
pub const MAX_CLAIM_WAIT_MS: u64 = 60_000;
/// How long an auction collects bids.
pub const AUCTION_WINDOW_MS: u64 = 50;
/// Finished tasks kept for status queries, at most (oldest forgotten first).
pub const MAX_FINISHED_TASKS: usize = 100_000;
/// Longest reason text kept.
pub const MAX_REASON_BYTES: usize = 1_024;

/// A task's priority; higher runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Runs after every other priority.
    Low,
    /// The default.
    Medium,
    /// Runs before low and medium tasks.
    High,
    /// Runs before every other priority.
    Critical,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Critical,
    ];
    /// The lower-case name used in commands and JSON (`low`, ..., `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown priority '{s}': expected low, medium, high or critical")
            })
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for dependencies.
    Pending,
    /// Waiting for an agent.
    Ready,
    /// In an agent's queue, not started.
    Assigned,
    /// Started by its agent, under a lease.
    Running,
    /// Its agent reported success; the result is kept.
    Completed,
    /// Failed for good (the agent said retrying would not help).
    Failed,
    /// Out of retries: every attempt's reason is kept.
    DeadLetter,
    /// Cancelled by a client, or because a dependency ended without completing.
    Cancelled,
}

impl TaskState {
    /// Every state, in the order of a task's life.
    pub const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::DeadLetter,
        TaskState::Cancelled,
    ];
    /// The snake_case name used in commands and JSON (`pending`, ..., `dead_letter`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Assigned => "assigned",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::DeadLetter => "dead_letter",
            TaskState::Cancelled => "cancelled",
        }
    }
    /// Whether the task has ended (completed, failed, dead-lettered or
    /// cancelled): no command moves it again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::DeadLetter | TaskState::Cancelled
        )
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskState::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown task state '{s}': expected pending, ready, assigned, running, completed, failed, dead_letter or cancelled"
                )
            })
    }
}

/// The routing strategy: `mesh_sched`'s, stored as it is.
pub use mesh_sched::Strategy as Route;

/// A task's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Raw bytes, opaque to the mesh.
    Bytes(Vec<u8>),
    /// JSON, kept as the client's text.
    Json(String),
}

impl Payload {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Json(s) => s.len(),
        }
    }
    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its bytes (JSON as its text's UTF-8 bytes).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b,
            Payload::Json(s) => s.as_bytes(),
        }
    }
}

/// A required capability with its weight: `mesh_sched`'s, stored as it is.
pub use mesh_sched::capability::Need;

/// What a client submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The client's id for the task, or one is made up (`t-` and 16 hex digits).
    pub id: Option<String>,
    /// The task's input, handed to the agent that runs it.
    pub payload: Payload,
    /// Capabilities an agent needs to take it, with their weights.
    pub needs: Vec<Need>,
    /// Lowest capability score an agent needs (default 0.7).
    pub min_score: Option<f64>,
    /// Its priority (default medium).
    pub priority: Priority,
    /// Tasks (existing, or earlier in the same submit) that must complete first.
    pub deps: Vec<String>,
    /// Time one attempt may run, in ms (default [`DEFAULT_TIMEOUT_MS`]).
    pub timeout_ms: Option<u64>,
    /// Retry budget: attempts after the first (default [`DEFAULT_RETRIES`]).
    pub retries: Option<u32>,
    /// A second submit with the same key returns the first task.
    pub idempotency_key: Option<String>,
    /// `None`: the mesh's default.
    pub route: Option<Route>,
    /// Only agents whose node is in this zone.
    pub zone: Option<String>,
    /// For `steal`: the agent, or the node whose agent, whose queue gets the task.
    pub queue: Option<String>,
}

impl TaskSpec {
    /// A task with defaults everywhere.
    pub fn new(payload: Payload) -> Self {
        TaskSpec {
            id: None,
            payload,
            needs: Vec::new(),
            min_score: None,
            priority: Priority::Medium,
            deps: Vec::new(),
            timeout_ms: None,
            retries: None,
            idempotency_key: None,
            route: None,
            zone: None,
            queue: None,
        }
    }

    /// Checks everything that does not depend on the state.
    pub fn validate(&self) -> Result<(), StateError> {
        if let Some(id) = &self.id {
            crate::agents::check_name("task id", id)?;
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(StateError::TooLarge {
                what: "task payload".into(),
                len: self.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        if self.needs.len() > MAX_NEEDS {
            return Err(StateError::Invalid(format!(
                "{} required capabilities (at most {MAX_NEEDS})",
                self.needs.len()
            )));
        }
        for n in &self.needs {
            crate::agents::check_name("capability", &n.name)?;
            if n.weight == 0 || n.weight > 1000 {
                return Err(StateError::Invalid(format!(
                    "capability '{}' has weight {}: weights are 1 to 1000",
                    n.name, n.weight
                )));
            }
        }
        if let Some(s) = self.min_score
            && !(0.0..=1.0).contains(&s)
        {
            return Err(StateError::Invalid(format!(
                "min_score {s} is outside 0 to 1"
            )));
        }
        if self.deps.len() > MAX_DEPS {
            return Err(StateError::Invalid(format!(
                "{} dependencies (at most {MAX_DEPS})",
                self.deps.len()
            )));
        }
        for d in &self.deps {
            crate::agents::check_name("dependency", d)?;
        }
        if let Some(t) = self.timeout_ms
            && (t == 0 || t > MAX_TIMEOUT_MS)
        {
            return Err(StateError::Invalid(format!(
                "timeout of {t} ms is outside 1 ms to {MAX_TIMEOUT_MS} ms"
            )));
        }
        if let Some(r) = self.retries
            && r > MAX_RETRIES
        {
            return Err(StateError::Invalid(format!(
                "{r} retries (at most {MAX_RETRIES})"
            )));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > 128)
        {
            return Err(StateError::Invalid(
                "idempotency key must be 1 to 128 bytes".into(),
            ));
        }
        if let Some(z) = &self.zone {
            crate::agents::check_name("zone", z)?;
        }
        if let Some(q) = &self.queue {
            crate::agents::check_name("queue", q)?;
        }
        Ok(())
    }
}

/// One state change, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Stamp (Unix ms) of the command that made the change.
    pub at_ms: u64,
    /// The state entered.
    pub state: TaskState,
    /// The agent involved (holding the task, or that held it), if any.
    pub agent: Option<String>,
    /// Most reasons are fixed text: borrowed, not copied into every transition.
    pub reason: Cow<'static, str>,
}

/// One run of a task by an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first run.
    pub number: u32,
    /// The agent that ran it.
    pub agent: String,
    /// Stamp (Unix ms) of its start.
    pub started_ms: u64,
    /// Stamp (Unix ms) of its end; `None` while it runs.
    pub ended_ms: Option<u64>,
    /// How it ended: "completed", or why not.
    pub outcome: Option<Cow<'static, str>>,
}

/// A bid in an open auction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BidRecord {
    /// The bidding agent.
    pub agent: String,
    /// The bidder's own measurement of its free machine share, 0 to 1.
    pub resources: f64,
    /// Stamp (Unix ms) of the bid.
    pub at_ms: u64,
}

/// A task as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id, unique in the mesh.
    pub id: String,
    /// Its input, handed to the agent that runs it.
    pub payload: Payload,
    /// Capabilities an agent needs to take it, with their weights.
    pub needs: Vec<Need>,
    /// Lowest capability score an agent needs, 0 to 1.
    pub min_score: f64,
    /// Its priority; higher runs first.
    pub priority: Priority,
    /// Tasks that must complete before it becomes ready.
    pub deps: Vec<String>,
    /// Time one attempt may run, in ms.
    pub timeout_ms: u64,
    /// Retry budget: attempts allowed after the first.
    pub retries: u32,
    /// The submitter's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
    /// How it is routed to an agent.
    pub route: Route,
    /// Only agents whose node is in this zone may take it.
    pub zone: Option<String>,
    /// For `steal`: the agent, or the node, whose queue the submitter asked for.
    pub queue_hint: Option<String>,
    /// Where it is in its life.
    pub state: TaskState,
    /// Submission order.
    pub seq: u64,
    /// Stamp (Unix ms) of its submit.
    pub submitted_ms: u64,
    /// The agent holding it (assigned or running), or that ran it last.
    pub agent: Option<String>,
    /// The current or last attempt's number (0 before the first).
    pub attempt: u32,
    /// While running: when the lease runs out unless renewed.
    pub lease_until_ms: Option<u64>,
    /// While running: when this attempt times out.
    pub timeout_at_ms: Option<u64>,
    /// The table's start number of the current attempt: claims deliver what
    /// started after the cursor they were given. (Finer than a log index:
    /// several commands share one log entry.)
    pub start_seq: u64,
    /// Dependencies not completed yet.
    pub unmet_deps: u32,
    /// Tasks that depend on this one.
    pub dependents: Vec<String>,
    /// Why no agent can take it now, if none can (reported, not hidden).
    pub unroutable: Option<String>,
    /// An open auction: when it closes and the bids so far.
    pub auction: Option<(u64, Vec<BidRecord>)>,
    /// Every run so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// Every state change, in order.
    pub history: Vec<Transition>,
    /// The result its agent reported, once completed.
    pub result: Option<Vec<u8>>,
    /// Stamp (Unix ms) of the command that ended it; `None` until it ends.
    pub finished_ms: Option<u64>,
    /// Its sorted required capabilities (statistics are kept per kind).
    pub kind: String,
}

impl Task {
    /// A task just submitted (state `pending`, no dependencies counted yet).
    pub fn new(id: String, spec: &TaskSpec, seq: u64, now: u64, default_route: Route) -> Task {
        Task {
            id,
            payload: spec.payload.clone(),
            needs: spec.needs.clone(),
            min_score: spec
                .min_score
                .unwrap_or(mesh_sched::capability::DEFAULT_THRESHOLD),
            priority: spec.priority,
            deps: spec.deps.clone(),
            timeout_ms: spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            retries: spec.retries.unwrap_or(DEFAULT_RETRIES),
            idempotency_key: spec.idempotency_key.clone(),
            route: spec.route.unwrap_or(default_route),
            zone: spec.zone.clone(),
            queue_hint: spec.queue.clone(),
            state: TaskState::Pending,
            seq,
            submitted_ms: now,
            agent: None,
            attempt: 0,
            lease_until_ms: None,
            timeout_at_ms: None,
            start_seq: 0,
            unmet_deps: 0,
            dependents: Vec::new(),
            unroutable: None,
            auction: None,
            attempts: Vec::with_capacity(1),
            // submitted, ready, assigned, running, completed: one allocation.
            history: Vec::with_capacity(5),
            result: None,
            finished_ms: None,
            kind: kind(&spec.needs),
        }
    }
}

/// The kind of a task, for statistics: its sorted required capabilities.
pub fn kind(needs: &[Need]) -> String {
    let mut names: Vec<&str> = needs.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    names.join(",")
}

/// A task handed to an agent by a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedTask {
    /// The task's id.
    pub id: String,
    /// The attempt's number: the agent reports its outcome with it.
    pub attempt: u32,
    /// The task's input.
    pub payload: Payload,
    /// Time the attempt may run, in ms; the agent stops it then.
    pub timeout_ms: u64,
    /// When the lease runs out unless renewed, in Unix ms.
    pub lease_until_ms: u64,
}

/// How an attempt ended, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The task's id.
    pub id: String,
    /// The attempt reported on, as its claim gave it; another one is refused (lease lost).
    pub attempt: u32,
    /// `Ok(result)` or `Err(reason)`.
    pub result: Result<Vec<u8>, String>,
    /// For a failure: whether another attempt may succeed.
    pub retryable: bool,
}

/// The reply to a task command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskReply {
    /// Per submitted task: its id and whether it already existed (idempotency key).
    Submitted(Vec<(String, bool)>),
    /// Tasks started for the agent, and the cursor for its next claim.
    Claimed {
        /// Tasks running for the agent that started after its cursor, by
        /// priority, then submission order.
        tasks: Vec<ClaimedTask>,
        /// The cursor to give as `since` in its next claim.
        cursor: u64,
    },
    /// Per outcome: accepted or why not; then what the follow-up claim started.
    Finished {
        /// One per reported outcome, in order: accepted, or why not.
        outcomes: Vec<Result<(), StateError>>,
        /// What the follow-up claim delivered (empty without one).
        claimed: Vec<ClaimedTask>,
        /// The cursor to give as `since` in the agent's next claim.
        cursor: u64,
    },
    /// Per renewed task: the new lease end, or why not (a cancelled task says so).
    Renewed(Vec<Result<u64, StateError>>),
    /// The tasks cancelled (the one asked for, then its dependents).
    Cancelled(Vec<String>),
    /// Done, nothing to report (a bid, a transfer, a setting).
    Done,
    /// The tasks a failover took from the agent (running first, then queued).
    FailedOver(Vec<String>),
}

/// A task command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskCmd {
    /// Submits tasks (all or none: one bad task refuses the batch).
    Submit {
        /// The tasks, in the order their ids come back.
        tasks: Vec<TaskSpec>,
    },
    /// An agent asks for up to `max` tasks under leases of `lease_ms`; the claim
    /// stays open for `wait_ms` for tasks that become ready later. Tasks started
    /// for it after cursor `since` (from its previous claim's reply) that it has
    /// not seen come back too.
    Claim {
        /// The claiming agent.
        agent: String,
        /// Most tasks it takes (at most [`MAX_CLAIM`]).
        max: u32,
        /// Lease each task gets, [`MIN_LEASE_MS`] to [`MAX_LEASE_MS`].
        lease_ms: u64,
        /// How long the claim stays open, in ms (at most [`MAX_CLAIM_WAIT_MS`]; 0: not at all).
        wait_ms: u64,
        /// The cursor from its previous claim's reply (0 the first time).
        since: u64,
    },
    /// Renews the leases of running tasks the agent holds.
    Renew {
        /// The agent holding them.
        agent: String,
        /// Ids of the tasks renewed.
        tasks: Vec<String>,
    },
    /// Reports outcomes, then optionally claims again in the same command.
    Finish {
        /// The agent reporting.
        agent: String,
        /// One per ended attempt.
        outcomes: Vec<Outcome>,
        /// A claim made once the outcomes are applied.
        then_claim: Option<ThenClaim>,
    },
    /// Cancels a task and everything that depends on it.
    Cancel {
        /// The task cancelled.
        id: String,
        /// Why, recorded in its history (empty: `cancelled`).
        reason: String,
    },
    /// A bid in an open auction.
    Bid {
        /// The task auctioned.
        task: String,
        /// The bidding agent.
        agent: String,
        /// The bidder's own measurement of its free machine share, 0 to 1.
        resources: f64,
    },
    /// Moves a queued (not running) task to another agent's queue (rebalancing).
    Transfer {
        /// The queued task moved.
        task: String,
        /// The agent whose queue receives it.
        to_agent: String,
        /// Why, recorded in its history.
        reason: String,
    },
    /// The mesh's task settings: the default routing strategy, and how many
    /// ring replicas (1 to 7) may run a `hash` task.
    Configure {
        /// The new default routing strategy; `None` keeps the current one.
        default_route: Option<Route>,
        /// The new number of ring replicas; `None` keeps the current one.
        hash_replicas: Option<u32>,
    },
    /// Fails an agent over now (it hangs, or an operator says so): its
    /// running attempts end as lost (counted against their retry budgets),
    /// its queued tasks and those go to other agents, and its open claim
    /// closes, so nothing routes to it until it claims again. The agent stays
    /// registered. Appended last: older log entries keep their encoding.
    Failover {
        /// The agent failed over.
        agent: String,
        /// Why, recorded with each task it loses.
        reason: String,
    },
}

/// A claim made in the same command as a finish: up to `max` tasks under
/// leases of `lease_ms`, open for `wait_ms`; tasks started for the agent after
/// cursor `since` come back too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThenClaim {
    /// Most tasks taken (at most [`MAX_CLAIM`]).
    pub max: u32,
    /// Lease each task gets, [`MIN_LEASE_MS`] to [`MAX_LEASE_MS`].
    pub lease_ms: u64,
    /// How long the claim stays open, in ms (0: not at all).
    pub wait_ms: u64,
    /// The cursor from the agent's previous claim's reply.
    pub since: u64,
}

/// What happened to a task, for the node to publish and for waiting clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The task's id.
    pub id: String,
    /// The state it entered.
    pub state: TaskState,
    /// The agent involved (holding the task, or that held it), if any.
    pub agent: Option<String>,
    /// The task's attempt number at the time (0 before the first).
    pub attempt: u32,
    /// Why, as recorded in its history.
    pub reason: Cow<'static, str>,
    /// Set when the task's auction opened: when it stops taking bids (the
    /// announcement agents bid on).
    pub auction_closes_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
        }
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
        }
        assert!(Priority::Critical > Priority::Low);
        assert!(
            "urgent"
                .parse::<Priority>()
                .unwrap_err()
                .contains("'urgent'")
        );
        assert_eq!("steal".parse::<Route>(), Ok(Route::Steal));
        assert!("random".parse::<Route>().is_err());
    }

    #[test]
    fn bad_specs_are_refused_with_reasons() {
        let mut s = TaskSpec::new(Payload::Json("{}".into()));
        assert_eq!(s.validate(), Ok(()));
        s.timeout_ms = Some(0);
        assert!(s.validate().is_err());
        s.timeout_ms = None;
        s.payload = Payload::Bytes(vec![0; MAX_PAYLOAD_BYTES + 1]);
        assert!(matches!(s.validate(), Err(StateError::TooLarge { .. })));
        s.payload = Payload::Bytes(vec![]);
        s.needs = vec![Need {
            name: "gpu".into(),
            weight: 0,
        }];
        assert!(s.validate().is_err());
        s.needs.clear();
        s.min_score = Some(1.5);
        assert!(s.validate().is_err());
        s.min_score = None;
        s.id = Some("bad id".into());
        assert!(s.validate().is_err());
    }
}
