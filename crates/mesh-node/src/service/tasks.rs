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
    Json(serde_json::Value),
    Text(String),
    Base64 { base64: String },
}

pub fn data_view(bytes: &[u8], json: bool) -> DataView {
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
    pub id: String,
    pub state: TaskState,
    pub priority: &'static str,
    pub strategy: &'static str,
    pub needs: Vec<String>,
    pub min_score: f64,
    pub deps: Vec<String>,
    pub unmet_deps: u32,
    pub zone: Option<String>,
    pub agent: Option<String>,
    pub attempt: u32,
    pub retries: u32,
    pub timeout_ms: u64,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub lease_until_ms: Option<u64>,
    /// Why no agent can take it now (`null`: some agent can).
    pub unroutable: Option<String>,
    /// From submit to the first start (`null` until it started).
    pub dispatch_ms: Option<u64>,
    /// From submit to completion (`null` until completed).
    pub end_to_end_ms: Option<u64>,
    pub payload: DataView,
    pub result: Option<DataView>,
    pub attempts: Vec<Attempt>,
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
    pub id: String,
    pub attempt: u32,
    pub timeout_ms: u64,
    pub lease_until_ms: u64,
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
    pub tasks: Vec<ClaimedView>,
    pub cursor: u64,
}

/// Filters for listing tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub agent: Option<String>,
    pub limit: Option<usize>,
}

/// A claim's parameters.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    pub agent: String,
    pub max: u32,
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
