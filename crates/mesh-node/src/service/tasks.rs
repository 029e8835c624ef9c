//! Tasks over the replicated state: submit, look, wait, claim (long-poll),
//! renew, report outcomes, cancel, bid.
//!
//! A claim that finds nothing stays open in the state machine for its wait, so
//! a task submitted meanwhile starts for this agent while the submit applies;
//! the caller subscribed to applied events before proposing, wakes on the
//! event that says a task started for its agent, and reads what started since
//! its cursor from the local replica.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;

use super::coord::{check_wait, wait_for_event};
use super::{Service, ServiceError};
use mesh_state::tasks::{
    Attempt, ClaimedTask, DEFAULT_LEASE_MS, Outcome, Payload, Task, TaskCmd, TaskReply, TaskSpec,
    TaskState, Transition,
};
use mesh_state::{Command, Event, Reply, RequestId, StateError};

/// Most tasks a listing returns.
pub const MAX_LIST: usize = 10_000;

/// A payload or result as JSON shows it: JSON as itself, text as a string,
/// other bytes as base64.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DataView {
    /// JSON data (a JSON payload, or a result that parses as JSON), as itself.
    Json(serde_json::Value),
    /// UTF-8 text that is not shown as JSON, as a string.
    Text(String),
    /// Any other bytes, as `{"base64": ...}`.
    Base64 {
        /// The bytes, standard base64.
        base64: String,
    },
}

/// Shows `bytes` as JSON when `json` is set and they parse, else as text or base64.
pub(crate) fn data_view(bytes: &[u8], json: bool) -> DataView {
    if json && let Ok(v) = serde_json::from_slice(bytes) {
        return DataView::Json(v);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => DataView::Text(s.to_string()),
        Err(_) => DataView::Base64 {
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        },
    }
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// The task's id.
    pub id: String,
    /// Where it is in its life (`pending`, `ready`, ..., `cancelled`).
    pub state: TaskState,
    /// `low`, `medium`, `high` or `critical`; higher runs first.
    pub priority: &'static str,
    /// Its routing strategy: `capability`, `hash`, `auction` or `steal`.
    pub strategy: &'static str,
    /// Required capabilities, `name` or `name=weight`.
    pub needs: Vec<String>,
    /// Lowest capability score an agent needs to take it, 0 to 1.
    pub min_score: f64,
    /// Tasks that must complete before it starts.
    pub deps: Vec<String>,
    /// How many of `deps` have not completed.
    pub unmet_deps: u32,
    /// Only agents whose node is in this zone take it.
    pub zone: Option<String>,
    /// The agent holding it (assigned or running), or that ran it last.
    pub agent: Option<String>,
    /// The current or last attempt's number (0 before the first).
    pub attempt: u32,
    /// Retry budget: attempts allowed after the first.
    pub retries: u32,
    /// How long one attempt may run, ms.
    pub timeout_ms: u64,
    /// When it was submitted, Unix ms (leader's clock).
    pub submitted_ms: u64,
    /// When it reached a final state, Unix ms.
    pub finished_ms: Option<u64>,
    /// While running: when the lease runs out unless renewed, Unix ms.
    pub lease_until_ms: Option<u64>,
    /// Why no agent can take it now (`null`: some agent can).
    pub unroutable: Option<String>,
    /// From submit to the first start (`null` until it started).
    pub dispatch_ms: Option<u64>,
    /// From submit to completion (`null` until completed).
    pub end_to_end_ms: Option<u64>,
    /// Its input.
    pub payload: DataView,
    /// What a completed attempt returned.
    pub result: Option<DataView>,
    /// Every run so far, first first.
    pub attempts: Vec<Attempt>,
    /// Every state change, oldest first.
    pub history: Vec<Transition>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        let json = matches!(t.payload, Payload::Json(_));
        TaskView {
            id: t.id.clone(),
            state: t.state,
            priority: t.priority.as_str(),
            strategy: t.route.as_str(),
            needs: t
                .needs
                .iter()
                .map(|n| {
                    if n.weight == 1 {
                        n.name.clone()
                    } else {
                        format!("{}={}", n.name, n.weight)
                    }
                })
                .collect(),
            min_score: t.min_score,
            deps: t.deps.clone(),
            unmet_deps: t.unmet_deps,
            zone: t.zone.clone(),
            agent: t.agent.clone(),
            attempt: t.attempt,
            retries: t.retries,
            timeout_ms: t.timeout_ms,
            submitted_ms: t.submitted_ms,
            finished_ms: t.finished_ms,
            lease_until_ms: t.lease_until_ms,
            unroutable: t.unroutable.clone(),
            dispatch_ms: t
                .attempts
                .first()
                .map(|a| a.started_ms.saturating_sub(t.submitted_ms)),
            end_to_end_ms: (t.state == TaskState::Completed)
                .then(|| t.finished_ms.map(|f| f.saturating_sub(t.submitted_ms)))
                .flatten(),
            payload: data_view(t.payload.as_bytes(), json),
            result: t.result.as_deref().map(|r| data_view(r, true)),
            attempts: t.attempts.clone(),
            history: t.history.clone(),
        }
    }
}

/// A task handed to an agent.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimedView {
    /// The task's id.
    pub id: String,
    /// This attempt's number: outcomes and renewals name it.
    pub attempt: u32,
    /// How long this attempt may run, ms.
    pub timeout_ms: u64,
    /// When the lease runs out unless renewed, Unix ms.
    pub lease_until_ms: u64,
    /// Its input (JSON as itself, text as a string, other bytes as base64).
    pub payload: DataView,
    /// The payload's bytes, base64 (what a worker writes to the command's stdin).
    pub payload_base64: String,
}

impl From<&ClaimedTask> for ClaimedView {
    fn from(c: &ClaimedTask) -> Self {
        ClaimedView {
            id: c.id.clone(),
            attempt: c.attempt,
            timeout_ms: c.timeout_ms,
            lease_until_ms: c.lease_until_ms,
            payload: data_view(c.payload.as_bytes(), matches!(c.payload, Payload::Json(_))),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(c.payload.as_bytes()),
        }
    }
}

/// What a claim returns: the tasks, and the cursor to pass to the next claim.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimView {
    /// Tasks now running for the agent.
    pub tasks: Vec<ClaimedView>,
    /// Where the next claim picks up: tasks started for the agent after it
    /// come back then.
    pub cursor: u64,
}

/// Filters for listing tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks this agent holds or ran last.
    pub agent: Option<String>,
    /// Most tasks returned: 1,000 by default, at most [`MAX_LIST`].
    pub limit: Option<usize>,
}

/// A claim's parameters.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    /// The claiming agent.
    pub agent: String,
    /// Most tasks to take.
    pub max: u32,
    /// Lease each task gets, ms; renewed while it runs (default
    /// `mesh_state::tasks::DEFAULT_LEASE_MS`).
    pub lease_ms: Option<u64>,
    /// How long to wait for work when none is ready.
    pub wait: Option<Duration>,
    /// The cursor from the previous claim (0 the first time).
    pub since: u64,
}

fn task_reply(r: Reply) -> Result<TaskReply, ServiceError> {
    match r {
        Reply::Task(t) => Ok(t),
        other => Err(ServiceError::Stopped(format!(
            "unexpected reply to a task command: {other:?}"
        ))),
    }
}

impl Service {
    async fn task_write(
        &self,
        cmd: TaskCmd,
        request_id: Option<RequestId>,
    ) -> Result<TaskReply, ServiceError> {
        task_reply(self.write_ok(Command::Task(cmd), request_id).await?)
    }

    /// Submits tasks; all or none. Returns each task's id and whether it
    /// already existed (same idempotency key).
    pub async fn submit_tasks(
        &self,
        tasks: Vec<TaskSpec>,
        request_id: Option<RequestId>,
    ) -> Result<Vec<(String, bool)>, ServiceError> {
        for t in &tasks {
            t.validate()?;
        }
        match self
            .task_write(TaskCmd::Submit { tasks }, request_id)
            .await?
        {
            TaskReply::Submitted(v) => Ok(v),
            other => Err(ServiceError::Stopped(format!("unexpected reply {other:?}"))),
        }
    }

    /// A task; with `wait`, not before it ended or the wait ran out.
    pub async fn task(
        &self,
        id: &str,
        wait: Option<Duration>,
        stale: bool,
    ) -> Result<TaskView, ServiceError> {
        self.look_until(
            "task",
            id,
            wait,
            stale,
            |sm| sm.tasks.tasks.get(id).map(TaskView::from),
            |v| v.state.is_final(),
            |e| matches!(e, Event::Task(t) if t.id == id && t.state.is_final()),
        )
        .await
    }

    /// Tasks matching `f`, in submission order.
    pub async fn tasks(&self, f: TaskFilter, stale: bool) -> Result<Vec<TaskView>, ServiceError> {
        let limit = f.limit.unwrap_or(1_000).min(MAX_LIST);
        self.read(stale, |sm| {
            sm.tasks
                .tasks
                .values()
                .filter(|t| f.state.is_none_or(|s| t.state == s))
                .filter(|t| {
                    f.agent
                        .as_deref()
                        .is_none_or(|a| t.agent.as_deref() == Some(a))
                })
                .take(limit)
                .map(TaskView::from)
                .collect()
        })
        .await
    }

    /// Claims up to `max` tasks for an agent; waits up to `wait` for work when none is ready.
    pub async fn claim_tasks(&self, p: ClaimParams) -> Result<ClaimView, ServiceError> {
        let wait = check_wait(p.wait)?;
        let until = tokio::time::Instant::now() + wait;
        // Subscribed before the claim is proposed: a start cannot fall in between.
        let mut events = self.subscribe();
        let cmd = TaskCmd::Claim {
            agent: p.agent.clone(),
            max: p.max,
            lease_ms: p.lease_ms.unwrap_or(DEFAULT_LEASE_MS),
            wait_ms: wait.as_millis() as u64,
            since: p.since,
        };
        let (tasks, mut cursor) = match self.task_write(cmd, None).await? {
            TaskReply::Claimed { tasks, cursor } => (tasks, cursor),
            other => return Err(ServiceError::Stopped(format!("unexpected reply {other:?}"))),
        };
        if !tasks.is_empty() || p.max == 0 || wait.is_zero() {
            return Ok(ClaimView {
                tasks: tasks.iter().map(ClaimedView::from).collect(),
                cursor,
            });
        }
        let agent = p.agent.as_str();
        wait_for_event(&mut events, until, |e| {
            matches!(e, Event::Task(t) if t.state == TaskState::Running && t.agent.as_deref() == Some(agent))
        })
        .await;
        // The event came from this replica's apply: the local state has it.
        let (tasks, at) = self
            .read(true, |sm| {
                (sm.tasks.delivered(agent, cursor), sm.tasks.start_seq)
            })
            .await?;
        cursor = cursor.max(at);
        Ok(ClaimView {
            tasks: tasks.iter().map(ClaimedView::from).collect(),
            cursor,
        })
    }

    /// Renews leases; per task, the new lease end or why not.
    pub async fn renew_tasks(
        &self,
        agent: &str,
        tasks: Vec<String>,
    ) -> Result<Vec<Result<u64, StateError>>, ServiceError> {
        let cmd = TaskCmd::Renew {
            agent: agent.to_string(),
            tasks,
        };
        match self.task_write(cmd, None).await? {
            TaskReply::Renewed(v) => Ok(v),
            other => Err(ServiceError::Stopped(format!("unexpected reply {other:?}"))),
        }
    }

    /// Reports outcomes (and optionally claims more in the same command).
    pub async fn finish_tasks(
        &self,
        agent: &str,
        outcomes: Vec<Outcome>,
        then_claim: Option<mesh_state::tasks::ThenClaim>,
        request_id: Option<RequestId>,
    ) -> Result<(Vec<Result<(), StateError>>, ClaimView), ServiceError> {
        let cmd = TaskCmd::Finish {
            agent: agent.to_string(),
            outcomes,
            then_claim,
        };
        match self.task_write(cmd, request_id).await? {
            TaskReply::Finished {
                outcomes,
                claimed,
                cursor,
            } => Ok((
                outcomes,
                ClaimView {
                    tasks: claimed.iter().map(ClaimedView::from).collect(),
                    cursor,
                },
            )),
            other => Err(ServiceError::Stopped(format!("unexpected reply {other:?}"))),
        }
    }

    /// Reports one outcome; an outcome the state refused is an error.
    pub async fn finish_task(
        &self,
        agent: &str,
        outcome: Outcome,
        request_id: Option<RequestId>,
    ) -> Result<(), ServiceError> {
        let (mut r, _) = self
            .finish_tasks(agent, vec![outcome], None, request_id)
            .await?;
        r.remove(0).map_err(ServiceError::State)
    }

    /// Cancels a task and everything that depends on it; returns the tasks
    /// cancelled (the one asked for first).
    pub async fn cancel_task(&self, id: &str, reason: &str) -> Result<Vec<String>, ServiceError> {
        let cmd = TaskCmd::Cancel {
            id: id.to_string(),
            reason: reason.to_string(),
        };
        match self.task_write(cmd, None).await? {
            TaskReply::Cancelled(v) => Ok(v),
            other => Err(ServiceError::Stopped(format!("unexpected reply {other:?}"))),
        }
    }

    /// Fails an agent over now: its running and queued tasks go to other
    /// agents; returns them.
    pub async fn failover_agent(
        &self,
        agent: &str,
        reason: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let cmd = TaskCmd::Failover {
            agent: agent.to_string(),
            reason: reason.to_string(),
        };
        match self.task_write(cmd, None).await? {
            TaskReply::FailedOver(v) => Ok(v),
            other => Err(ServiceError::Stopped(format!("unexpected reply {other:?}"))),
        }
    }

    /// One rebalancing round now, planned from this node's view (the same
    /// plan the leader makes every half second): each move is a replicated
    /// transfer, refused if the task started meanwhile. Also each peer's
    /// health as this node sees it.
    pub async fn rebalance_now(&self) -> Result<RebalanceReport, ServiceError> {
        self.check_quorum()?;
        let view = self.inner.members.borrow().clone();
        let plan = self.read(true, |sm| rebalance_plan(&view, sm)).await?;
        let mut moves = Vec::new();
        for cmd in plan {
            let TaskCmd::Transfer {
                task,
                to_agent,
                reason,
            } = &cmd
            else {
                continue;
            };
            let (task, to_agent, reason) = (task.clone(), to_agent.clone(), reason.clone());
            let result = self.task_write(cmd, None).await;
            moves.push(RebalanceMove {
                task,
                to_agent,
                reason,
                applied: result.is_ok(),
                refused: result.err().map(|e| e.to_string()),
            });
        }
        let peers = view
            .iter()
            .map(|m| PeerHealth {
                node: m.id.clone(),
                state: m.state.as_str(),
                is_self: m.is_self,
                rtt_ms: m.rtt_ms,
                load_fraction: m.load.as_ref().and_then(|l| l.fraction()),
                cpu_percent: m.load.as_ref().and_then(|l| l.cpu_percent),
                running: m.load.as_ref().map(|l| l.running),
                queued: m.load.as_ref().map(|l| l.queued),
                slots: m.load.as_ref().map(|l| l.slots),
                suspected_by: m.suspected_by.clone(),
                last_change_ms: m.last_change_ms,
            })
            .collect();
        Ok(RebalanceReport {
            moved: moves.iter().filter(|m| m.applied).count(),
            moves,
            peers,
        })
    }

    /// Places `agent`'s bid in `task`'s open auction; `resources` is the
    /// bidder's measured free machine share, 0 to 1.
    pub async fn bid_task(
        &self,
        task: &str,
        agent: &str,
        resources: f64,
    ) -> Result<(), ServiceError> {
        let cmd = TaskCmd::Bid {
            task: task.to_string(),
            agent: agent.to_string(),
            resources,
        };
        self.task_write(cmd, None).await.map(|_| ())
    }
}

/// Median and 99th percentile, in milliseconds (`null` with no samples).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// How many figures they are taken over.
    pub samples: usize,
    /// The median.
    pub p50: Option<u64>,
    /// The 99th percentile.
    pub p99: Option<u64>,
}

fn percentiles(mut v: Vec<u64>) -> Percentiles {
    v.sort_unstable();
    let at = |q: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize]);
    Percentiles {
        samples: v.len(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

/// What the mesh's task figures are, measured on this replica (stamps are the
/// leader's clock, so latencies have millisecond resolution).
#[derive(Debug, Clone, Serialize)]
pub struct TaskMetrics {
    /// Totals since the state began.
    pub totals: mesh_state::tasks::table::TaskCounters,
    /// Per second over the last interval of at least a second between two
    /// looks at this node (`null` until there were two).
    pub per_sec: Option<std::collections::BTreeMap<&'static str, f64>>,
    /// Tasks held by this replica, by state.
    pub by_state: std::collections::BTreeMap<&'static str, usize>,
    /// Ready tasks no agent has taken yet.
    pub waiting: usize,
    /// Assigned, not started, per agent.
    pub queue_depth: std::collections::BTreeMap<String, usize>,
    /// Running tasks, per agent.
    pub running: std::collections::BTreeMap<String, usize>,
    /// Standard deviation / mean of running + queued tasks over live agents
    /// (`null` with no agents or no load).
    pub load_variance: Option<f64>,
    /// Agents running more than 85% of their slots (as their claims showed them).
    pub hotspots: Vec<String>,
    /// Completed / (completed + failed + dead-lettered); `null` before any ended.
    pub completion_rate: Option<f64>,
    /// Retries per submitted task; `null` before any was submitted.
    pub retries_per_task: Option<f64>,
    /// Submit to first start, over the tasks this replica still holds.
    pub dispatch_ms: Percentiles,
    /// Submit to completion, over the completed tasks it still holds.
    pub end_to_end_ms: Percentiles,
    /// The latest loss of running tasks at once (a dead node): how long until
    /// they all ran again (`recovered_ms` null while some wait).
    pub recovery: Option<serde_json::Value>,
}

fn counters_map(c: &mesh_state::tasks::table::TaskCounters) -> [(&'static str, u64); 6] {
    [
        ("submitted", c.submitted),
        ("started", c.started),
        ("completed", c.completed),
        ("failed", c.failed + c.dead_lettered),
        ("retried", c.retried),
        ("cancelled", c.cancelled),
    ]
}

impl Service {
    /// The task figures, from the local replica.
    pub async fn task_metrics(&self) -> Result<TaskMetrics, ServiceError> {
        let mut m = self
            .read(true, |sm| {
                let t = &sm.tasks;
                let mut by_state = std::collections::BTreeMap::new();
                let (mut dispatch, mut e2e) = (Vec::new(), Vec::new());
                for task in t.tasks.values() {
                    *by_state.entry(task.state.as_str()).or_insert(0) += 1;
                    if let Some(a) = task.attempts.first() {
                        dispatch.push(a.started_ms.saturating_sub(task.submitted_ms));
                    }
                    if task.state == TaskState::Completed
                        && let Some(f) = task.finished_ms
                    {
                        e2e.push(f.saturating_sub(task.submitted_ms));
                    }
                }
                let queue_depth = t.queue_depths();
                let running = t.running_counts();
                let live: Vec<&str> = sm
                    .agents
                    .values()
                    .filter(|a| a.node_dead_at_ms.is_none())
                    .map(|a| a.id.as_str())
                    .collect();
                let loads: Vec<f64> = live
                    .iter()
                    .map(|a| {
                        (running.get(*a).copied().unwrap_or(0)
                            + queue_depth.get(*a).copied().unwrap_or(0))
                            as f64
                    })
                    .collect();
                let n = loads.len() as f64;
                let mean = loads.iter().sum::<f64>() / n.max(1.0);
                let load_variance = (n > 0.0 && mean > 0.0).then(|| {
                    (loads.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n).sqrt() / mean
                });
                let hotspots = live
                    .iter()
                    .filter(|a| {
                        let cap = t.capacity.get(**a).copied().unwrap_or(0);
                        cap > 0 && running.get(**a).copied().unwrap_or(0) as f64 > 0.85 * cap as f64
                    })
                    .map(|a| a.to_string())
                    .collect();
                let c = &t.counters;
                let ended = c.completed + c.failed + c.dead_lettered;
                TaskMetrics {
                    totals: c.clone(),
                    per_sec: None,
                    by_state,
                    waiting: t.waiting(),
                    queue_depth,
                    running,
                    load_variance,
                    hotspots,
                    completion_rate: (ended > 0).then(|| c.completed as f64 / ended as f64),
                    retries_per_task: (c.submitted > 0)
                        .then(|| c.retried as f64 / c.submitted as f64),
                    dispatch_ms: percentiles(dispatch),
                    end_to_end_ms: percentiles(e2e),
                    recovery: t.recovery.as_ref().map(|r| {
                        serde_json::json!({"why": r.why, "at_ms": r.at_ms, "tasks": r.tasks,
                                           "recovered_ms": r.took_ms})
                    }),
                }
            })
            .await?;
        m.per_sec = self.task_rates(&m.totals);
        Ok(m)
    }

    /// Rates from the previous look at least a second ago.
    fn task_rates(
        &self,
        now: &mesh_state::tasks::table::TaskCounters,
    ) -> Option<std::collections::BTreeMap<&'static str, f64>> {
        let mut last = self
            .inner
            .task_rates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let t = std::time::Instant::now();
        match &*last {
            Some((at, prev, rates)) if t.duration_since(*at) < Duration::from_secs(1) => {
                return rates.clone();
            }
            _ => {}
        }
        let rates = last.as_ref().map(|(at, prev, _)| {
            let secs = t.duration_since(*at).as_secs_f64();
            counters_map(now)
                .iter()
                .zip(counters_map(prev))
                .map(|((k, n), (_, p))| (*k, n.saturating_sub(p) as f64 / secs))
                .collect()
        });
        *last = Some((t, now.clone(), rates.clone()));
        rates
    }
}

impl Service {
    /// Sets the task gauges of `/metrics` from [`Service::task_metrics`].
    pub async fn sample_task_metrics(&self) {
        let Ok(t) = self.task_metrics().await else {
            return;
        };
        use crate::metrics::{AgentLabel, KindLabel, QuantileLabel, StateLabel};
        let m = self.metrics();
        for s in TaskState::ALL {
            let n = t.by_state.get(s.as_str()).copied().unwrap_or(0);
            m.tasks
                .get_or_create(&StateLabel {
                    state: s.as_str().into(),
                })
                .set(n as i64);
        }
        let c = &t.totals;
        for (k, v) in [
            ("submitted", c.submitted),
            ("started", c.started),
            ("completed", c.completed),
            ("attempts_lost", c.attempts_lost),
            ("retried", c.retried),
            ("failed", c.failed),
            ("dead_lettered", c.dead_lettered),
            ("cancelled", c.cancelled),
            ("stolen", c.stolen),
            ("transferred", c.transferred),
        ] {
            m.task_totals
                .get_or_create(&KindLabel { kind: k.into() })
                .set(v as i64);
        }
        m.task_queue_depth.clear();
        for (a, n) in &t.queue_depth {
            m.task_queue_depth
                .get_or_create(&AgentLabel { agent: a.clone() })
                .set(*n as i64);
        }
        m.task_running.clear();
        for (a, n) in &t.running {
            m.task_running
                .get_or_create(&AgentLabel { agent: a.clone() })
                .set(*n as i64);
        }
        m.task_load_variance.set(t.load_variance.unwrap_or(-1.0));
        m.task_hotspots.set(t.hotspots.len() as i64);
        for (fam, p) in [
            (&m.task_dispatch_ms, &t.dispatch_ms),
            (&m.task_end_to_end_ms, &t.end_to_end_ms),
        ] {
            for (q, v) in [("0.5", p.p50), ("0.99", p.p99)] {
                fam.get_or_create(&QuantileLabel { quantile: q.into() })
                    .set(v.map(|x| x as i64).unwrap_or(-1));
            }
        }
    }
}

/// What a rebalancing round did.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceReport {
    /// Moves the state machine applied.
    pub moved: usize,
    /// Every move planned, applied or refused.
    pub moves: Vec<RebalanceMove>,
    /// Each member's health, as this node saw it when planning.
    pub peers: Vec<PeerHealth>,
}

/// One queued task a rebalancing round moved, or tried to.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceMove {
    /// The task moved.
    pub task: String,
    /// The agent on the cold node that receives it.
    pub to_agent: String,
    /// Why: the two nodes and their loads.
    pub reason: String,
    /// Whether the transfer applied.
    pub applied: bool,
    /// Why the state machine refused it (the task started meanwhile, ...).
    pub refused: Option<String>,
}

/// A member's health as this node sees it; `null` where not measured.
#[derive(Debug, Clone, Serialize)]
pub struct PeerHealth {
    /// The member's node name.
    pub node: String,
    /// `alive`, `suspect`, `dead` or `left`.
    pub state: &'static str,
    /// Whether it is this node (`self` in JSON).
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Smoothed round-trip time of this node's direct probes to it.
    pub rtt_ms: Option<f64>,
    /// Share of its slots in use (running over slots).
    pub load_fraction: Option<f64>,
    /// Its process CPU use, percent of one core, as it gossips it.
    pub cpu_percent: Option<f32>,
    /// Tasks running on it, as it gossips them.
    pub running: Option<u32>,
    /// Tasks queued on it, as it gossips them.
    pub queued: Option<u32>,
    /// Tasks its agents can run at once (0: unknown).
    pub slots: Option<u32>,
    /// Members that suspected it at its current generation.
    pub suspected_by: Vec<String>,
    /// Milliseconds since this node saw its state change (`null`: not since
    /// this node started).
    pub last_change_ms: Option<u64>,
}

/// Most queued tasks one rebalancing round moves per pair of nodes.
pub const REBALANCE_MOVES: usize = 4;

/// Rebalancing, decided on the leader from the loads the nodes gossip: each
/// node above 80% of its slots (`mesh_sched::steal::HIGH_LOAD`) is paired with
/// one below 30%, and up to [`REBALANCE_MOVES`] of its agents' queued (not
/// running) tasks, newest first, move to the least-queued agent of the cold node
/// that can take them. Each move is a replicated `Transfer`; the state machine
/// refuses it if the task started meanwhile.
pub fn rebalance_plan(
    members: &[mesh_membership::MemberInfo],
    sm: &mesh_state::StateMachine,
) -> Vec<TaskCmd> {
    use mesh_membership::MemberState;
    use mesh_state::tasks::TaskTable;
    let loads: Vec<(&str, f64)> = members
        .iter()
        .filter(|m| m.state == MemberState::Alive)
        .filter_map(|m| Some((m.id.as_str(), m.load.as_ref()?.fraction()?)))
        .collect();
    let mut out = Vec::new();
    let mut queue_len = sm.tasks.queue_depths();
    for (hot, cold) in mesh_sched::steal::rebalance_pairs(&loads) {
        let hot_load = loads.iter().find(|(n, _)| *n == hot).map_or(0.0, |l| l.1);
        let cold_load = loads.iter().find(|(n, _)| *n == cold).map_or(0.0, |l| l.1);
        let cold_agents: Vec<&mesh_state::agents::Agent> = sm
            .agents
            .values()
            .filter(|a| a.node == cold && a.node_dead_at_ms.is_none())
            .collect();
        let mut moved = 0;
        for a in sm.agents.values().filter(|a| a.node == hot) {
            for id in sm.tasks.queued_tasks(&a.id).into_iter().rev() {
                if moved == REBALANCE_MOVES {
                    break;
                }
                let task = &sm.tasks.tasks[&id];
                let Some(to) = cold_agents
                    .iter()
                    .filter(|c| TaskTable::fit(task, c).is_some())
                    .min_by_key(|c| (queue_len.get(&c.id).copied().unwrap_or(0), c.id.clone()))
                else {
                    continue;
                };
                *queue_len.entry(to.id.clone()).or_default() += 1;
                moved += 1;
                out.push(TaskCmd::Transfer {
                    task: id,
                    to_agent: to.id.clone(),
                    reason: format!(
                        "rebalanced: node '{hot}' at {:.0}% of its slots, '{cold}' at {:.0}%",
                        hot_load * 100.0,
                        cold_load * 100.0
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_membership::{MemberInfo, MemberState};
    use mesh_state::tasks::Route;
    use mesh_state::{Stamped, StateMachine};

    fn member(id: &str, running: u32, slots: u32) -> MemberInfo {
        MemberInfo {
            id: id.into(),
            addr: String::new(),
            state: MemberState::Alive,
            incarnation: 0,
            generation: 0,
            zone: None,
            caps: vec![],
            software_version: None,
            http_addr: None,
            load: Some(mesh_proto::Load {
                cpu_percent: None,
                running,
                queued: 0,
                slots,
            }),
            rtt_ms: None,
            last_change_ms: None,
            suspected_by: vec![],
            confirmed_by: vec![],
            is_self: false,
        }
    }

    #[test]
    fn a_hot_node_hands_queued_work_to_a_cold_one() {
        let mut sm = StateMachine::new();
        let mut i = 0;
        let mut run = |sm: &mut StateMachine, c: mesh_state::Command| {
            i += 1;
            let s = Stamped {
                now_ms: 1_000 + i,
                seed: i,
                request_id: None,
                command: c,
            };
            sm.apply(i, &s).unwrap()
        };
        for (id, node) in [("hot-a", "n1"), ("cold-a", "n2")] {
            let key = ed25519_dalek::SigningKey::from_bytes(&[id.len() as u8; 32]);
            run(
                &mut sm,
                mesh_state::Command::Coord(mesh_state::CoordCmd::RegisterAgent {
                    id: id.into(),
                    kind: "w".into(),
                    caps: vec![],
                    node: node.into(),
                    public_key: key.verifying_key().to_bytes().to_vec(),
                    zone: None,
                }),
            );
        }
        let tasks = (0..6)
            .map(|k| {
                let mut t = TaskSpec::new(Payload::Bytes(vec![]));
                t.id = Some(format!("q{k}"));
                t.route = Some(Route::Steal);
                t.queue = Some("hot-a".into());
                t
            })
            .collect();
        run(
            &mut sm,
            mesh_state::Command::Task(TaskCmd::Submit { tasks }),
        );
        let members = [member("n1", 9, 10), member("n2", 1, 10)];
        let plan = rebalance_plan(&members, &sm);
        assert_eq!(plan.len(), REBALANCE_MOVES);
        let TaskCmd::Transfer {
            task,
            to_agent,
            reason,
        } = &plan[0]
        else {
            panic!("{plan:?}")
        };
        assert_eq!((task.as_str(), to_agent.as_str()), ("q5", "cold-a"));
        assert!(reason.contains("90%") && reason.contains("10%"), "{reason}");
        // Balanced nodes: nothing moves.
        assert!(rebalance_plan(&[member("n1", 5, 10), member("n2", 4, 10)], &sm).is_empty());
        // Unknown slots: nothing is guessed.
        assert!(rebalance_plan(&[member("n1", 9, 0), member("n2", 0, 0)], &sm).is_empty());
    }
}

/// The mesh's task settings.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSettings {
    /// The routing strategy of tasks that name none.
    pub strategy: &'static str,
    /// Ring replicas that may run a `hash` task (the owner first).
    pub hash_replicas: u32,
}

impl Service {
    /// The mesh's task settings.
    pub async fn task_settings(&self, stale: bool) -> Result<TaskSettings, ServiceError> {
        self.read(stale, |sm| TaskSettings {
            strategy: sm.tasks.default_route.as_str(),
            hash_replicas: sm.tasks.hash_replicas,
        })
        .await
    }

    /// Changes the settings given; the others stay.
    pub async fn configure_tasks(
        &self,
        default_route: Option<mesh_state::tasks::Route>,
        hash_replicas: Option<u32>,
    ) -> Result<TaskSettings, ServiceError> {
        let cmd = TaskCmd::Configure {
            default_route,
            hash_replicas,
        };
        self.task_write(cmd, None).await?;
        self.task_settings(true).await
    }
}
