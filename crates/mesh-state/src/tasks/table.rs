//! The task table: every task, the queues they wait in, the leases of running
//! ones, and the moves between states. Called by the state machine while it
//! applies a command, with the command's stamp (`now`), its log index and a
//! seeded generator: everything here is deterministic.
//!
//! Where tasks wait:
//! - `ready`: ready tasks by priority, then submission order;
//! - `retry`: tasks back from a lost or failed attempt, first in first out,
//!   taken before `ready`;
//! - `queues`: per agent, tasks assigned to it and not started (`steal`,
//!   `auction` awards, rebalancing);
//! - `auctions`: tasks collecting bids until their window closes.
//!
//! Running tasks have an expiry (lease end or attempt timeout, whichever is
//! first); a command applied after it sends the task back (retry queue, or the
//! dead-letter list once its retry budget is spent). Leases end early when the
//! membership layer confirms the agent's node dead (`node_dead`).
//!
//! Queues and sets hold a task's submission number ([`Key`]), not its id (see
//! [`super::store`]); ids appear only where a command names a task.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::{RngExt, rngs::Xoshiro256PlusPlus};
use serde::{Deserialize, Serialize};

use super::model::*;
use super::store::TaskStore;
use crate::agents::Agent;
use crate::error::StateError;

/// A task's submission number: its key in the store and in every queue.
pub type Key = u64;

/// An agent's open claim: tasks that become ready start for it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenClaim {
    /// Tasks it may still start for the agent.
    pub slots: u32,
    /// When it closes, in Unix ms.
    pub until_ms: u64,
    /// Lease each task started through it gets, in ms.
    pub lease_ms: u64,
}

/// Completions and failures, for auction scoring and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Attempts completed.
    pub completed: u64,
    /// Attempts that ended without completing (lost, timed out or failed).
    pub failed: u64,
    /// Sum of the completed attempts' run times.
    pub total_ms: u64,
}

impl Stat {
    /// Mean run time of the completed attempts, in ms; `None` before the first.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.completed > 0).then(|| self.total_ms as f64 / self.completed as f64)
    }
}

/// Totals since the state began (the node turns them into rates).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskCounters {
    /// Tasks submitted (a repeat with a known idempotency key not counted).
    pub submitted: u64,
    /// Attempts started.
    pub started: u64,
    /// Tasks completed.
    pub completed: u64,
    /// Attempts that ended without completing (lost lease, timeout, failure, dead node).
    pub attempts_lost: u64,
    /// Tasks sent back for another attempt.
    pub retried: u64,
    /// Tasks failed for good (a failure reported as not retryable).
    pub failed: u64,
    /// Tasks that spent their retry budget.
    pub dead_lettered: u64,
    /// Tasks cancelled, directly or because a dependency ended without completing.
    pub cancelled: u64,
    /// Queued tasks an idle agent stole from another agent's queue.
    pub stolen: u64,
    /// Queued tasks moved to another agent's queue by a transfer.
    pub transferred: u64,
}

/// The latest time running tasks lost their agents at once (a dead node, an
/// unregistered agent): when, how many, and how long until all ran again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// What caused the loss (a dead node, an unregistered agent, a failover).
    pub why: String,
    /// Stamp (Unix ms) of the command that caused it.
    pub at_ms: u64,
    /// Running tasks that lost their agents.
    pub tasks: usize,
    /// Tasks not started again yet.
    pub waiting: BTreeSet<Key>,
    /// From the loss until the last of them started again (`None` until then).
    pub took_ms: Option<u64>,
}

/// Most (agent, kind of task) statistics kept.
const MAX_STATS: usize = 10_000;

/// The task table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTable {
    /// Every task remembered: all unfinished ones, and the latest
    /// [`MAX_FINISHED_TASKS`] finished ones.
    pub tasks: TaskStore,
    next_seq: u64,
    /// Counts starts; a claim's cursor is its value after the claim.
    pub start_seq: u64,
    /// (priority rank, task).
    ready: BTreeSet<(u8, Key)>,
    retry: VecDeque<Key>,
    queues: BTreeMap<String, VecDeque<Key>>,
    running: BTreeMap<String, BTreeSet<Key>>,
    /// (expiry, task) of running tasks.
    expiries: BTreeSet<(u64, Key)>,
    /// The lease length each running task was claimed with.
    lease_ms: BTreeMap<Key, u64>,
    /// Open claims by agent: tasks that become ready start for them at once.
    pub open: BTreeMap<String, OpenClaim>,
    /// (closing time, task).
    auctions: BTreeSet<(u64, Key)>,
    idem: BTreeMap<String, Key>,
    dead_letter: VecDeque<Key>,
    finished: VecDeque<Key>,
    /// Per agent, per kind of task (its sorted required capabilities).
    pub stats: BTreeMap<String, BTreeMap<String, Stat>>,
    /// Per kind of task, over all agents.
    pub fleet: BTreeMap<String, Stat>,
    /// Totals since the state began.
    pub counters: TaskCounters,
    /// The routing strategy of tasks that name none.
    pub default_route: Route,
    /// Per agent: its slots as its latest claim showed them (running + asked for).
    pub capacity: BTreeMap<String, u32>,
    /// The latest time running tasks lost their agents at once, if any.
    pub recovery: Option<Recovery>,
    /// Ring replicas that may run a `hash` task (the owner first).
    pub hash_replicas: u32,
    /// The agent being failed over, only while its tasks are re-routed (so
    /// none goes straight back to it); never set between commands.
    #[serde(skip)]
    fencing: Option<String>,
}

impl Default for TaskTable {
    fn default() -> Self {
        TaskTable {
            tasks: TaskStore::default(),
            next_seq: 0,
            start_seq: 0,
            ready: BTreeSet::new(),
            retry: VecDeque::new(),
            queues: BTreeMap::new(),
            running: BTreeMap::new(),
            expiries: BTreeSet::new(),
            lease_ms: BTreeMap::new(),
            open: BTreeMap::new(),
            auctions: BTreeSet::new(),
            idem: BTreeMap::new(),
            dead_letter: VecDeque::new(),
            finished: VecDeque::new(),
            stats: BTreeMap::new(),
            fleet: BTreeMap::new(),
            counters: TaskCounters::default(),
            default_route: Route::Capability,
            capacity: BTreeMap::new(),
            recovery: None,
            hash_replicas: mesh_sched::ring::DEFAULT_REPLICAS as u32,
            fencing: None,
        }
    }
}

/// What a command applies with.
pub struct Ctx<'a> {
    /// The command's stamp (the leader's clock), in Unix ms.
    pub now: u64,
    /// The log index of the entry being applied.
    pub index: u64,
    /// The registered agents, as the state holds them.
    pub agents: &'a BTreeMap<String, Agent>,
    /// Where the command's events go (task transitions among them).
    pub events: &'a mut Vec<crate::command::Event>,
}

fn rank(p: Priority) -> u8 {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Medium => 2,
        Priority::Low => 3,
    }
}

/// At most `MAX_REASON_BYTES` of a reason (on a character boundary).
fn clip(reason: Cow<'static, str>) -> Cow<'static, str> {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(reason[..end].to_string())
}

fn live(a: &Agent) -> bool {
    a.node_dead_at_ms.is_none()
}

fn lease_lost(t: &Task, agent: &str, attempt: u32) -> StateError {
    if t.state == TaskState::Cancelled {
        return StateError::Conflict(format!("task '{}' was cancelled: stop it", t.id));
    }
    StateError::Conflict(format!(
        "lease lost: task '{}' attempt {attempt} is not held by agent '{agent}' (it is {}, attempt {}{})",
        t.id,
        t.state.as_str(),
        t.attempt,
        t.agent
            .as_deref()
            .map(|a| format!(", agent '{a}'"))
            .unwrap_or_default()
    ))
}

fn task_not_found(id: &str) -> StateError {
    StateError::NotFound {
        what: "task".into(),
        id: id.into(),
    }
}

impl TaskTable {
    /// The capability score of `agent` for `task`, if it may take it at all
    /// (alive, in the task's zone, at or above the task's threshold).
    pub fn fit(task: &Task, agent: &Agent) -> Option<f64> {
        if !live(agent) {
            return None;
        }
        if let Some(z) = &task.zone
            && agent.zone.as_ref() != Some(z)
        {
            return None;
        }
        let s = mesh_sched::capability::score(&task.needs, &agent.caps);
        (s >= task.min_score).then_some(s)
    }

    /// For `hash` tasks: the nodes whose agents may take it, in ring order of
    /// the live nodes (owner first), up to the replication factor.
    fn hash_nodes(task: &Task, agents: &BTreeMap<String, Agent>, replicas: u32) -> Vec<String> {
        let nodes: BTreeSet<&str> = agents
            .values()
            .filter(|a| live(a))
            .map(|a| a.node.as_str())
            .collect();
        let ring = mesh_sched::ring::HashRing::with_nodes(
            mesh_sched::ring::DEFAULT_VNODES,
            nodes.iter().copied(),
        );
        ring.replicas(task.id.as_bytes(), replicas as usize)
            .into_iter()
            // The first replica with an agent that can take it: the owner unless
            // it has none (then the next replica takes over).
            .filter(|n| {
                agents
                    .values()
                    .any(|a| a.node == *n && Self::fit(task, a).is_some())
            })
            .take(1)
            .map(String::from)
            .collect()
    }

    /// Whether `agent` may take `task` under its route (a `hash` task only on
    /// its owner node); with its score.
    fn may_take(
        &self,
        task: &Task,
        agent: &Agent,
        agents: &BTreeMap<String, Agent>,
    ) -> Option<f64> {
        let s = Self::fit(task, agent)?;
        if task.route == Route::Hash
            && !Self::hash_nodes(task, agents, self.hash_replicas).contains(&agent.node)
        {
            return None;
        }
        Some(s)
    }

    fn record(
        &mut self,
        k: Key,
        state: TaskState,
        agent: Option<&str>,
        reason: impl Into<Cow<'static, str>>,
        ctx: &mut Ctx,
    ) {
        let t = self.tasks.at_mut(k);
        t.state = state;
        let reason = clip(reason.into());
        t.history.push(Transition {
            at_ms: ctx.now,
            state,
            agent: agent.map(String::from),
            reason: reason.clone(),
        });
        ctx.events.push(crate::command::Event::Task(TaskEvent {
            id: t.id.clone(),
            state,
            agent: agent.map(String::from),
            attempt: t.attempt,
            reason,
            auction_closes_ms: None,
        }));
    }

    /// Why no registered agent can take the task, if none can.
    fn unroutable_reason(task: &Task, agents: &BTreeMap<String, Agent>) -> Option<String> {
        if agents.values().any(|a| Self::fit(task, a).is_some()) {
            return None;
        }
        let needs: Vec<&str> = task.needs.iter().map(|n| n.name.as_str()).collect();
        Some(format!(
            "no live agent offers [{}] with a score of at least {}{}",
            needs.join(", "),
            task.min_score,
            task.zone
                .as_deref()
                .map(|z| format!(" in zone '{z}'"))
                .unwrap_or_default()
        ))
    }

    /// Re-checks unroutable tasks after agents changed.
    pub fn agents_changed(&mut self, agents: &BTreeMap<String, Agent>) {
        for t in self.tasks.values_mut().filter(|t| !t.state.is_final()) {
            t.unroutable = Self::unroutable_reason(t, agents);
        }
    }

    // ---- submit -------------------------------------------------------------

    pub(crate) fn submit(
        &mut self,
        specs: &[TaskSpec],
        rng: &mut Xoshiro256PlusPlus,
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        if specs.is_empty() {
            return Err(StateError::Invalid("no tasks to submit".into()));
        }
        if specs.len() > MAX_TASKS_PER_SUBMIT {
            return Err(StateError::Invalid(format!(
                "{} tasks in one submit (at most {MAX_TASKS_PER_SUBMIT})",
                specs.len()
            )));
        }
        // Everything is checked before anything changes.
        let mut ids: Vec<String> = Vec::with_capacity(specs.len());
        let mut existing: Vec<bool> = Vec::with_capacity(specs.len());
        let mut batch_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut batch_keys: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            spec.validate()?;
            if let Some(k) = &spec.idempotency_key {
                if let Some(&key) = self.idem.get(k) {
                    ids.push(self.tasks.at(key).id.clone());
                    existing.push(true);
                    continue;
                }
                if let Some(&j) = batch_keys.get(k.as_str()) {
                    ids.push(ids[j].clone());
                    existing.push(true);
                    continue;
                }
                batch_keys.insert(k, i);
            }
            let id = match &spec.id {
                Some(id) => id.clone(),
                None => loop {
                    let id = format!("t-{:016x}", rng.random::<u64>());
                    if !self.tasks.contains(&id) && !batch_ids.contains_key(&id) {
                        break id;
                    }
                },
            };
            if self.tasks.contains(&id) || batch_ids.contains_key(&id) {
                return Err(StateError::Conflict(format!("task '{id}' already exists")));
            }
            if let Some(q) = &spec.queue
                && !ctx.agents.contains_key(q)
                && !ctx.agents.values().any(|a| a.node == *q)
            {
                return Err(StateError::Invalid(format!(
                    "queue '{q}' is neither an agent nor a node with agents"
                )));
            }
            batch_ids.insert(id.clone(), i);
            ids.push(id);
            existing.push(false);
        }
        // Dependencies: existing tasks that can still complete, or new ones in
        // this batch; no cycles (only new tasks can form one).
        for (i, spec) in specs.iter().enumerate() {
            if existing[i] {
                continue;
            }
            for d in &spec.deps {
                if *d == ids[i] {
                    return Err(StateError::Invalid(format!(
                        "task '{}' depends on itself",
                        ids[i]
                    )));
                }
                if batch_ids.contains_key(d) {
                    continue;
                }
                match self.tasks.get(d) {
                    None => {
                        return Err(StateError::Invalid(format!(
                            "task '{}' depends on '{d}', which does not exist",
                            ids[i]
                        )));
                    }
                    Some(t) if t.state.is_final() && t.state != TaskState::Completed => {
                        return Err(StateError::Invalid(format!(
                            "task '{}' depends on '{d}', which ended {} and will never complete",
                            ids[i],
                            t.state.as_str()
                        )));
                    }
                    _ => {}
                }
            }
        }
        let order = topo_order(specs, &ids, &existing, &batch_ids)?;

        for i in order {
            let spec = &specs[i];
            self.next_seq += 1;
            let k = self.next_seq;
            let unmet = spec
                .deps
                .iter()
                .filter(|d| {
                    self.tasks
                        .get(d)
                        .is_none_or(|t| t.state != TaskState::Completed)
                })
                .count() as u32;
            let mut task = Task::new(ids[i].clone(), spec, k, ctx.now, self.default_route);
            task.unmet_deps = unmet;
            task.unroutable = Self::unroutable_reason(&task, ctx.agents);
            for d in &spec.deps {
                if let Some(dep) = self.tasks.get_mut(d) {
                    dep.dependents.push(ids[i].clone());
                }
            }
            if let Some(key) = &spec.idempotency_key {
                self.idem.insert(key.clone(), k);
            }
            self.tasks.insert(task);
            self.counters.submitted += 1;
            if unmet == 0 {
                self.record(k, TaskState::Ready, None, "submitted", ctx);
                self.route(k, ctx);
            } else {
                self.record(
                    k,
                    TaskState::Pending,
                    None,
                    format!("submitted; waiting for {unmet} dependencies"),
                    ctx,
                );
            }
        }
        Ok(TaskReply::Submitted(
            ids.into_iter().zip(existing).collect(),
        ))
    }

    // ---- routing ------------------------------------------------------------

    /// Routes a task that just became ready.
    fn route(&mut self, k: Key, ctx: &mut Ctx) {
        let t = self.tasks.at(k);
        match t.route {
            Route::Auction if t.auction.is_none() => {
                let closes = ctx.now + AUCTION_WINDOW_MS;
                self.tasks.at_mut(k).auction = Some((closes, Vec::new()));
                self.auctions.insert((closes, k));
                // The announcement: agents that see it bid until it closes.
                let why = format!("auction open for bids until {closes} ms");
                self.record(k, TaskState::Ready, None, why, ctx);
                if let Some(crate::command::Event::Task(e)) = ctx.events.last_mut() {
                    e.auction_closes_ms = Some(closes);
                }
            }
            Route::Steal => {
                let hint = t.queue_hint.as_deref();
                let best = ctx
                    .agents
                    .values()
                    .filter(|a| Self::fit(t, a).is_some())
                    .filter(|a| self.fencing.as_deref() != Some(a.id.as_str()))
                    .filter(|a| match hint {
                        Some(h) if ctx.agents.contains_key(h) => a.id == h,
                        Some(h) => a.node == h,
                        None => true,
                    })
                    .min_by(|a, b| {
                        self.queue_len(&a.id)
                            .cmp(&self.queue_len(&b.id))
                            .then_with(|| a.id.cmp(&b.id))
                    })
                    .map(|a| a.id.clone());
                match best {
                    Some(agent) => {
                        self.enqueue(k, &agent, "queued (steal)", ctx);
                        self.serve_open(&agent, ctx);
                    }
                    None => self.wait_ready(k, false),
                }
            }
            _ => {
                // Capability and hash (and auctions that drew no bid): the best
                // agent waiting in an open claim, else the ready queue.
                let best = self
                    .open
                    .iter()
                    .filter(|(_, c)| c.slots > 0 && c.until_ms >= ctx.now)
                    .filter_map(|(a, c)| {
                        let agent = ctx.agents.get(a)?;
                        let s = self.may_take(t, agent, ctx.agents)?;
                        Some((s, c.slots, a))
                    })
                    .max_by(|x, y| {
                        x.0.total_cmp(&y.0)
                            .then_with(|| x.1.cmp(&y.1))
                            .then_with(|| y.2.cmp(x.2))
                    })
                    .map(|(_, _, a)| a.clone());
                match best {
                    Some(agent) => {
                        let lease = self.open[&agent].lease_ms;
                        self.use_open_slot(&agent);
                        self.start(k, &agent, lease, "routed to a waiting agent", ctx);
                    }
                    None => {
                        let retry = t.attempt > 0;
                        self.wait_ready(k, retry);
                    }
                }
            }
        }
    }

    fn wait_ready(&mut self, k: Key, retry: bool) {
        if retry {
            self.retry.push_back(k);
        } else {
            self.ready.insert((rank(self.tasks.at(k).priority), k));
        }
    }

    fn queue_len(&self, agent: &str) -> usize {
        self.queues.get(agent).map_or(0, |q| q.len())
    }

    fn use_open_slot(&mut self, agent: &str) {
        if let Some(c) = self.open.get_mut(agent) {
            c.slots -= 1;
            if c.slots == 0 {
                self.open.remove(agent);
            }
        }
    }

    fn enqueue(
        &mut self,
        k: Key,
        agent: &str,
        reason: impl Into<Cow<'static, str>>,
        ctx: &mut Ctx,
    ) {
        self.queues
            .entry(agent.to_string())
            .or_default()
            .push_back(k);
        self.tasks.at_mut(k).agent = Some(agent.to_string());
        self.record(k, TaskState::Assigned, Some(agent), reason, ctx);
    }

    /// Starts queued tasks for an agent with open slots.
    fn serve_open(&mut self, agent: &str, ctx: &mut Ctx) {
        while let Some(c) = self.open.get(agent).cloned() {
            if c.until_ms < ctx.now {
                self.open.remove(agent);
                return;
            }
            let Some(k) = self.queues.get_mut(agent).and_then(|q| q.pop_front()) else {
                return;
            };
            if self.queues.get(agent).is_some_and(|q| q.is_empty()) {
                self.queues.remove(agent);
            }
            self.use_open_slot(agent);
            self.start(k, agent, c.lease_ms, "started from its queue", ctx);
        }
    }

    /// Starts a task for `agent` (the task is out of every waiting place).
    fn start(&mut self, k: Key, agent: &str, lease_ms: u64, reason: &'static str, ctx: &mut Ctx) {
        if self.tasks.at(k).state == TaskState::Ready {
            self.tasks.at_mut(k).agent = Some(agent.to_string());
            self.record(k, TaskState::Assigned, Some(agent), reason, ctx);
        }
        self.start_seq += 1;
        let seq = self.start_seq;
        self.recovered(k, ctx.now);
        let t = self.tasks.at_mut(k);
        t.attempt += 1;
        t.agent = Some(agent.to_string());
        let lease_until = ctx.now + lease_ms;
        // The agent kills a task at its timeout and reports it; the state
        // machine gives up on the attempt a little later, if no report came.
        let timeout_at = ctx.now + t.timeout_ms + TIMEOUT_GRACE_MS;
        t.lease_until_ms = Some(lease_until);
        t.timeout_at_ms = Some(timeout_at);
        t.start_seq = seq;
        t.attempts.push(Attempt {
            number: t.attempt,
            agent: agent.to_string(),
            started_ms: ctx.now,
            ended_ms: None,
            outcome: None,
        });
        self.expiries.insert((lease_until.min(timeout_at), k));
        self.lease_ms.insert(k, lease_ms);
        match self.running.get_mut(agent) {
            Some(r) => {
                r.insert(k);
            }
            None => {
                self.running.insert(agent.to_string(), BTreeSet::from([k]));
            }
        }
        self.counters.started += 1;
        self.record(k, TaskState::Running, Some(agent), "started", ctx);
    }

    /// Takes a task out of wherever it waits or runs (not its state).
    fn detach(&mut self, k: Key) {
        let t = self.tasks.at(k);
        match t.state {
            TaskState::Ready => {
                if !self.ready.remove(&(rank(t.priority), k)) {
                    self.retry.retain(|x| *x != k);
                }
                if let Some((closes, _)) = t.auction {
                    self.auctions.remove(&(closes, k));
                }
            }
            TaskState::Assigned => {
                if let Some(a) = &t.agent
                    && let Some(q) = self.queues.get_mut(a)
                {
                    q.retain(|x| *x != k);
                    if q.is_empty() {
                        self.queues.remove(a);
                    }
                }
            }
            TaskState::Running => {
                if let (Some(l), Some(to)) = (t.lease_until_ms, t.timeout_at_ms) {
                    self.expiries.remove(&(l.min(to), k));
                }
                if let Some(a) = &t.agent
                    && let Some(r) = self.running.get_mut(a)
                {
                    r.remove(&k);
                    if r.is_empty() {
                        self.running.remove(a);
                    }
                }
                self.lease_ms.remove(&k);
            }
            _ => {}
        }
        let t = self.tasks.at_mut(k);
        t.auction = None;
        t.lease_until_ms = None;
        t.timeout_at_ms = None;
    }

    /// An assigned or running task lost its agent (lease, timeout, dead node,
    /// failure): another attempt if the budget allows, else the dead-letter list.
    fn lose(&mut self, k: Key, reason: Cow<'static, str>, ctx: &mut Ctx) {
        let reason = clip(reason);
        let was_running = self.tasks.at(k).state == TaskState::Running;
        self.detach(k);
        if was_running {
            let t = self.tasks.at_mut(k);
            if let Some(a) = t.attempts.last_mut() {
                a.ended_ms = Some(ctx.now);
                a.outcome = Some(reason.clone());
            }
            self.counters.attempts_lost += 1;
            let t = self.tasks.at(k);
            let (agent, kind) = (t.agent.clone().unwrap_or_default(), t.kind.clone());
            self.stat(&agent, &kind, |s| s.failed += 1);
        }
        let t = self.tasks.at(k);
        if was_running && t.attempt > t.retries {
            self.counters.dead_lettered += 1;
            self.dead_letter.push_back(k);
            let why = format!(
                "{reason}; retry budget of {} spent after {} attempts",
                t.retries, t.attempt
            );
            self.finish(k, TaskState::DeadLetter, why, ctx);
            return;
        }
        if was_running {
            self.counters.retried += 1;
        }
        let agent = t.agent.clone();
        self.record(k, TaskState::Ready, agent.as_deref(), reason, ctx);
        self.tasks.at_mut(k).agent = None;
        self.route(k, ctx);
    }

    /// Notes that a task lost in the latest recovery runs again.
    fn recovered(&mut self, k: Key, now: u64) {
        if let Some(r) = self.recovery.as_mut()
            && r.waiting.remove(&k)
            && r.waiting.is_empty()
        {
            r.took_ms = Some(now.saturating_sub(r.at_ms));
        }
    }

    /// A final state: record it, release or cancel dependents, remember it for a while.
    fn finish(
        &mut self,
        k: Key,
        state: TaskState,
        reason: impl Into<Cow<'static, str>>,
        ctx: &mut Ctx,
    ) {
        self.recovered(k, ctx.now);
        let agent = self.tasks.at(k).agent.clone();
        self.record(k, state, agent.as_deref(), reason, ctx);
        let t = self.tasks.at_mut(k);
        t.finished_ms = Some(ctx.now);
        self.finished.push_back(k);
        if !t.dependents.is_empty() {
            let (id, dependents) = (t.id.clone(), t.dependents.clone());
            for d in dependents {
                let Some(dk) = self.tasks.key(&d) else {
                    continue;
                };
                let dt = self.tasks.at_mut(dk);
                if dt.state != TaskState::Pending {
                    continue;
                }
                if state == TaskState::Completed {
                    dt.unmet_deps = dt.unmet_deps.saturating_sub(1);
                    if dt.unmet_deps == 0 {
                        let why = format!("dependency '{id}' completed");
                        self.record(dk, TaskState::Ready, None, why, ctx);
                        self.route(dk, ctx);
                    }
                } else {
                    self.counters.cancelled += 1;
                    let why = format!("dependency '{id}' ended {}", state.as_str());
                    self.finish(dk, TaskState::Cancelled, why, ctx);
                }
            }
        }
        self.forget_old();
    }

    fn forget_old(&mut self) {
        while self.finished.len() > MAX_FINISHED_TASKS {
            let Some(k) = self.finished.pop_front() else {
                break;
            };
            if self.tasks.try_at(k).is_some_and(|t| t.state.is_final()) {
                let t = self.tasks.remove(k).expect("exists");
                if let Some(key) = &t.idempotency_key {
                    self.idem.remove(key);
                }
                if t.state == TaskState::DeadLetter {
                    self.dead_letter.retain(|x| *x != k);
                }
            }
        }
    }

    fn stat(&mut self, agent: &str, kind: &str, f: impl Fn(&mut Stat)) {
        // Looked up by reference first: no key is allocated for an existing entry.
        if let Some(s) = self.stats.get_mut(agent).and_then(|m| m.get_mut(kind)) {
            f(s);
        } else if self.stats.values().map(BTreeMap::len).sum::<usize>() < MAX_STATS {
            // Counted only when a new (agent, kind) appears: rare.
            f(self
                .stats
                .entry(agent.to_string())
                .or_default()
                .entry(kind.to_string())
                .or_default());
        }
        if let Some(s) = self.fleet.get_mut(kind) {
            f(s);
        } else if self.fleet.len() < MAX_STATS {
            f(self.fleet.entry(kind.to_string()).or_default());
        }
    }

    /// The statistics of `agent` on tasks of `kind`.
    pub fn stat_of(&self, agent: &str, kind: &str) -> Option<&Stat> {
        self.stats.get(agent)?.get(kind)
    }

    // ---- claims, renewals, outcomes -----------------------------------------

    /// The agent, registered and alive. (Borrowed from the agents map, not
    /// from `ctx`, so `ctx` stays free for the changes that follow.)
    fn check_agent<'a>(
        agent: &str,
        agents: &'a BTreeMap<String, Agent>,
    ) -> Result<&'a Agent, StateError> {
        let a = agents.get(agent).ok_or_else(|| StateError::NotFound {
            what: "agent".into(),
            id: agent.into(),
        })?;
        if !live(a) {
            return Err(StateError::Conflict(format!(
                "agent '{agent}' is on node '{}', which was confirmed dead; register it again",
                a.node
            )));
        }
        Ok(a)
    }

    pub(crate) fn claim(
        &mut self,
        agent: &str,
        max: u32,
        lease_ms: u64,
        wait_ms: u64,
        since: u64,
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        if max > MAX_CLAIM {
            return Err(StateError::Invalid(format!(
                "claiming {max} tasks at once (at most {MAX_CLAIM})"
            )));
        }
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&lease_ms) {
            return Err(StateError::Invalid(format!(
                "lease of {lease_ms} ms is outside {MIN_LEASE_MS} to {MAX_LEASE_MS} ms"
            )));
        }
        if wait_ms > MAX_CLAIM_WAIT_MS {
            return Err(StateError::Invalid(format!(
                "claim wait of {wait_ms} ms is over {MAX_CLAIM_WAIT_MS} ms"
            )));
        }
        let me = Self::check_agent(agent, ctx.agents)?;
        self.open.remove(agent);
        let mut started = 0;
        // 1. Its own queue.
        while started < max {
            let Some(k) = self.queues.get_mut(agent).and_then(|q| q.pop_front()) else {
                break;
            };
            if self.queues.get(agent).is_some_and(|q| q.is_empty()) {
                self.queues.remove(agent);
            }
            self.start(k, agent, lease_ms, "claimed from its queue", ctx);
            started += 1;
        }
        // 2. The retry queue, oldest first, then the ready queue.
        while started < max {
            let next = self
                .retry
                .iter()
                .position(|k| self.may_take(self.tasks.at(*k), me, ctx.agents).is_some());
            let Some(pos) = next else { break };
            let k = self.retry.remove(pos).expect("position exists");
            self.start(k, agent, lease_ms, "claimed (retry)", ctx);
            started += 1;
        }
        while started < max {
            let next = self
                .ready
                .iter()
                .find(|(_, k)| self.may_take(self.tasks.at(*k), me, ctx.agents).is_some())
                .copied();
            let Some(key) = next else { break };
            self.ready.remove(&key);
            self.start(key.1, agent, lease_ms, "claimed", ctx);
            started += 1;
        }
        // 3. Idle: steal from the longest queue holding work it can do.
        while started < max {
            let lens: Vec<(&str, usize)> = self
                .queues
                .iter()
                .map(|(a, q)| {
                    let n = q
                        .iter()
                        .filter(|k| Self::fit(self.tasks.at(**k), me).is_some())
                        .count();
                    (a.as_str(), n)
                })
                .collect();
            let Some(victim) =
                mesh_sched::steal::victim(lens, agent, mesh_sched::steal::DEFAULT_STEAL_THRESHOLD)
                    .map(String::from)
            else {
                break;
            };
            let q = &self.queues[&victim];
            let pos = q
                .iter()
                .position(|k| Self::fit(self.tasks.at(*k), me).is_some())
                .expect("victim holds fitting work");
            let q = self.queues.get_mut(&victim).expect("victim has a queue");
            let k = q.remove(pos).expect("position exists");
            if q.is_empty() {
                self.queues.remove(&victim);
            }
            self.counters.stolen += 1;
            self.tasks.at_mut(k).agent = Some(agent.to_string());
            self.record(
                k,
                TaskState::Assigned,
                Some(agent),
                format!("stolen from agent '{victim}'"),
                ctx,
            );
            self.start(k, agent, lease_ms, "started after stealing", ctx);
            started += 1;
        }
        let running = self.running.get(agent).map_or(0, |r| r.len()) as u32;
        self.capacity
            .insert(agent.to_string(), running + (max - started));
        if started < max && wait_ms > 0 {
            self.open.insert(
                agent.to_string(),
                OpenClaim {
                    slots: max - started,
                    until_ms: ctx.now + wait_ms,
                    lease_ms,
                },
            );
        }
        Ok(TaskReply::Claimed {
            tasks: self.delivered(agent, since),
            cursor: self.start_seq,
        })
    }

    /// Running tasks of `agent` started after cursor `since`.
    pub fn delivered(&self, agent: &str, since: u64) -> Vec<ClaimedTask> {
        let Some(keys) = self.running.get(agent) else {
            return Vec::new();
        };
        let mut out: Vec<&Task> = keys
            .iter()
            .map(|k| self.tasks.at(*k))
            .filter(|t| t.start_seq > since)
            .collect();
        out.sort_by_key(|t| (rank(t.priority), t.seq));
        out.into_iter()
            .map(|t| ClaimedTask {
                id: t.id.clone(),
                attempt: t.attempt,
                payload: t.payload.clone(),
                timeout_ms: t.timeout_ms,
                lease_until_ms: t.lease_until_ms.unwrap_or(0),
            })
            .collect()
    }

    pub(crate) fn renew(
        &mut self,
        agent: &str,
        ids: &[String],
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        Self::check_agent(agent, ctx.agents)?;
        if ids.len() > MAX_CLAIM as usize {
            return Err(StateError::Invalid(format!(
                "renewing {} tasks at once (at most {MAX_CLAIM})",
                ids.len()
            )));
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(k) = self.tasks.key(id) else {
                out.push(Err(task_not_found(id)));
                continue;
            };
            let t = self.tasks.at(k);
            if t.state != TaskState::Running || t.agent.as_deref() != Some(agent) {
                out.push(Err(lease_lost(t, agent, t.attempt)));
                continue;
            }
            let (old, timeout_at) = (t.lease_until_ms.unwrap_or(0), t.timeout_at_ms.unwrap_or(0));
            let lease = self.lease_ms.get(&k).copied().unwrap_or(DEFAULT_LEASE_MS);
            let until = ctx.now + lease;
            self.expiries.remove(&(old.min(timeout_at), k));
            self.expiries.insert((until.min(timeout_at), k));
            self.tasks.at_mut(k).lease_until_ms = Some(until);
            out.push(Ok(until));
        }
        Ok(TaskReply::Renewed(out))
    }

    pub(crate) fn finish_many(
        &mut self,
        agent: &str,
        outcomes: &[Outcome],
        then_claim: Option<ThenClaim>,
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        Self::check_agent(agent, ctx.agents)?;
        if outcomes.len() > MAX_CLAIM as usize {
            return Err(StateError::Invalid(format!(
                "{} outcomes at once (at most {MAX_CLAIM})",
                outcomes.len()
            )));
        }
        let mut results = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            results.push(self.finish_one(agent, o, ctx));
        }
        let (claimed, cursor) = match then_claim {
            Some(c) => match self.claim(agent, c.max, c.lease_ms, c.wait_ms, c.since, ctx)? {
                TaskReply::Claimed { tasks, cursor } => (tasks, cursor),
                _ => unreachable!("claim replies Claimed"),
            },
            None => (Vec::new(), self.start_seq),
        };
        Ok(TaskReply::Finished {
            outcomes: results,
            claimed,
            cursor,
        })
    }

    fn finish_one(&mut self, agent: &str, o: &Outcome, ctx: &mut Ctx) -> Result<(), StateError> {
        let k = self.tasks.key(&o.id).ok_or_else(|| task_not_found(&o.id))?;
        let t = self.tasks.at(k);
        if t.state != TaskState::Running
            || t.agent.as_deref() != Some(agent)
            || t.attempt != o.attempt
        {
            return Err(lease_lost(t, agent, o.attempt));
        }
        match &o.result {
            Ok(result) => {
                if result.len() > MAX_RESULT_BYTES {
                    return Err(StateError::TooLarge {
                        what: "task result".into(),
                        len: result.len(),
                        max: MAX_RESULT_BYTES,
                    });
                }
                let started = t.attempts.last().map_or(ctx.now, |a| a.started_ms);
                self.detach(k);
                let t = self.tasks.at_mut(k);
                t.result = Some(result.clone());
                if let Some(a) = t.attempts.last_mut() {
                    a.ended_ms = Some(ctx.now);
                    a.outcome = Some(Cow::Borrowed("completed"));
                }
                let kind = std::mem::take(&mut t.kind);
                self.counters.completed += 1;
                let ran = ctx.now.saturating_sub(started);
                self.stat(agent, &kind, |s| {
                    s.completed += 1;
                    s.total_ms += ran;
                });
                self.tasks.at_mut(k).kind = kind;
                self.finish(k, TaskState::Completed, "completed", ctx);
            }
            Err(reason) => {
                let reason = clip(Cow::Owned(format!("failed: {reason}")));
                if o.retryable {
                    self.lose(k, reason, ctx);
                } else {
                    self.detach(k);
                    let t = self.tasks.at_mut(k);
                    if let Some(a) = t.attempts.last_mut() {
                        a.ended_ms = Some(ctx.now);
                        a.outcome = Some(reason.clone());
                    }
                    let kind = t.kind.clone();
                    self.stat(agent, &kind, |s| s.failed += 1);
                    self.counters.failed += 1;
                    self.finish(
                        k,
                        TaskState::Failed,
                        format!("{reason} (not retryable)"),
                        ctx,
                    );
                }
            }
        }
        Ok(())
    }

    pub(crate) fn cancel(
        &mut self,
        id: &str,
        reason: &str,
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        let k = self.tasks.key(id).ok_or_else(|| task_not_found(id))?;
        let t = self.tasks.at(k);
        if t.state.is_final() {
            return Err(StateError::Conflict(format!(
                "task '{id}' already ended {}",
                t.state.as_str()
            )));
        }
        let was_running = t.state == TaskState::Running;
        let mark = ctx.events.len();
        self.detach(k);
        self.counters.cancelled += 1;
        let why: Cow<'static, str> = if reason.is_empty() {
            Cow::Borrowed("cancelled")
        } else {
            clip(Cow::Owned(reason.to_string()))
        };
        if was_running && let Some(a) = self.tasks.at_mut(k).attempts.last_mut() {
            a.ended_ms = Some(ctx.now);
            a.outcome = Some(clip(Cow::Owned(format!("cancelled: {why}"))));
        }
        self.finish(k, TaskState::Cancelled, why, ctx);
        // What this cancelled, in order: the task, then what depended on it.
        let out = ctx.events[mark..]
            .iter()
            .filter_map(|e| match e {
                crate::command::Event::Task(t) if t.state == TaskState::Cancelled => {
                    Some(t.id.clone())
                }
                _ => None,
            })
            .collect();
        Ok(TaskReply::Cancelled(out))
    }

    pub(crate) fn bid(
        &mut self,
        task: &str,
        agent: &str,
        resources: f64,
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        let me = Self::check_agent(agent, ctx.agents)?;
        if !(0.0..=1.0).contains(&resources) {
            return Err(StateError::Invalid(format!(
                "resources {resources} is outside 0 to 1"
            )));
        }
        let t = self
            .tasks
            .get_mut(task)
            .ok_or_else(|| task_not_found(task))?;
        if Self::fit(t, me).is_none() {
            return Err(StateError::Forbidden(format!(
                "agent '{agent}' does not offer what task '{task}' needs"
            )));
        }
        let Some((closes, bids)) = t.auction.as_mut() else {
            return Err(StateError::Conflict(format!(
                "task '{task}' has no open auction"
            )));
        };
        if *closes < ctx.now {
            return Err(StateError::Conflict(format!(
                "the auction for task '{task}' closed"
            )));
        }
        bids.retain(|b| b.agent != agent);
        bids.push(BidRecord {
            agent: agent.to_string(),
            resources,
            at_ms: ctx.now,
        });
        Ok(TaskReply::Done)
    }

    pub(crate) fn transfer(
        &mut self,
        task: &str,
        to: &str,
        reason: &str,
        ctx: &mut Ctx,
    ) -> Result<TaskReply, StateError> {
        let dest = Self::check_agent(to, ctx.agents)?;
        let k = self.tasks.key(task).ok_or_else(|| task_not_found(task))?;
        let t = self.tasks.at(k);
        if t.state != TaskState::Assigned {
            return Err(StateError::Conflict(format!(
                "task '{task}' is {}: only queued (assigned, not running) tasks move",
                t.state.as_str()
            )));
        }
        if Self::fit(t, dest).is_none() {
            return Err(StateError::Forbidden(format!(
                "agent '{to}' does not offer what task '{task}' needs"
            )));
        }
        self.detach(k);
        self.counters.transferred += 1;
        self.enqueue(k, to, reason.to_string(), ctx);
        self.serve_open(to, ctx);
        Ok(TaskReply::Done)
    }

    // ---- time ---------------------------------------------------------------

    /// Everything due by `now`: expired leases and timeouts, closed auctions, stale open claims.
    pub fn advance(&mut self, ctx: &mut Ctx) {
        while let Some(&(at, k)) = self.expiries.first() {
            if at > ctx.now {
                break;
            }
            let t = self.tasks.at(k);
            let reason = if t.timeout_at_ms.is_some_and(|to| to <= ctx.now) {
                format!(
                    "timed out: no outcome {} ms after the attempt started (timeout {} ms)",
                    t.timeout_ms + TIMEOUT_GRACE_MS,
                    t.timeout_ms
                )
            } else {
                format!(
                    "lease expired: agent '{}' stopped renewing",
                    t.agent.as_deref().unwrap_or("?")
                )
            };
            self.lose(k, Cow::Owned(reason), ctx);
        }
        while let Some(&(at, k)) = self.auctions.first() {
            if at > ctx.now {
                break;
            }
            self.auctions.pop_first();
            self.close_auction(k, ctx);
        }
        self.open.retain(|_, c| c.until_ms >= ctx.now);
    }

    /// The earliest time something here falls due, for the leader's ticks.
    pub fn next_due(&self) -> Option<u64> {
        let a = self.expiries.first().map(|(t, _)| *t);
        let b = self.auctions.first().map(|(t, _)| *t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (x, y) => x.or(y),
        }
    }

    fn close_auction(&mut self, k: Key, ctx: &mut Ctx) {
        let Some((_, bids)) = self.tasks.at_mut(k).auction.take() else {
            return;
        };
        let t = self.tasks.at(k);
        let fleet_mean = self.fleet.get(&t.kind).and_then(Stat::mean_ms);
        let scored: Vec<(&str, [f64; 4])> = bids
            .iter()
            .filter_map(|b| {
                let agent = ctx.agents.get(&b.agent)?;
                let capability = Self::fit(t, agent)?;
                let open = self.open.get(&b.agent).map_or(0, |c| c.slots) as f64;
                let busy = (self.running.get(&b.agent).map_or(0, |r| r.len())
                    + self.queue_len(&b.agent)) as f64;
                let spare = if open + busy > 0.0 {
                    open / (open + busy)
                } else {
                    0.0
                };
                let st = self.stat_of(&b.agent, &t.kind);
                let performance = mesh_sched::auction::performance(
                    st.map_or(0, |s| s.completed),
                    st.map_or(0, |s| s.failed),
                    st.and_then(Stat::mean_ms),
                    fleet_mean,
                );
                Some((
                    b.agent.as_str(),
                    [capability, spare, performance, b.resources],
                ))
            })
            .collect();
        let sched_bids: Vec<mesh_sched::auction::Bid> = scored
            .iter()
            .map(|(a, s)| mesh_sched::auction::Bid {
                agent: a,
                capability: s[0],
                spare: s[1],
                performance: s[2],
                resources: s[3],
            })
            .collect();
        match mesh_sched::auction::award(&sched_bids) {
            Some(i) => {
                let winner = scored[i].0.to_string();
                let score = mesh_sched::auction::score(&sched_bids[i]);
                let why = format!("auction won with score {score:.3} of {} bids", scored.len());
                self.enqueue(k, &winner, why, ctx);
                self.serve_open(&winner, ctx);
            }
            None => {
                // No bid: route it by capability instead of leaving it stuck.
                self.tasks.at_mut(k).route = Route::Capability;
                self.route(k, ctx);
            }
        }
    }

    /// Agents that are gone (their node confirmed dead, or unregistered): their
    /// running and queued tasks move on now, and their open claims close.
    pub fn agents_gone(&mut self, agents: &[String], reason: &str, ctx: &mut Ctx) {
        let lost: BTreeSet<Key> = agents
            .iter()
            .filter_map(|a| self.running.get(a))
            .flatten()
            .copied()
            .collect();
        if !lost.is_empty() {
            self.recovery = Some(Recovery {
                why: reason.to_string(),
                at_ms: ctx.now,
                tasks: lost.len(),
                waiting: lost,
                took_ms: None,
            });
        }
        for a in agents {
            self.open.remove(a);
            let running: Vec<Key> = self
                .running
                .get(a)
                .map(|r| r.iter().copied().collect())
                .unwrap_or_default();
            let queued: Vec<Key> = self
                .queues
                .get(a)
                .map(|q| q.iter().copied().collect())
                .unwrap_or_default();
            for k in running.into_iter().chain(queued) {
                self.lose(k, Cow::Owned(reason.to_string()), ctx);
            }
        }
    }

    /// Moves an agent's running and queued tasks on now and closes its claim
    /// (see `TaskCmd::Failover`); returns the tasks moved.
    pub fn failover(&mut self, agent: &str, reason: &str, ctx: &mut Ctx) -> TaskReply {
        let mut moved: Vec<String> = self
            .running
            .get(agent)
            .map(|r| r.iter().map(|k| self.tasks.at(*k).id.clone()).collect())
            .unwrap_or_default();
        moved.extend(self.queued_tasks(agent));
        let why = format!("failover of agent '{agent}': {reason}");
        self.fencing = Some(agent.to_string());
        self.agents_gone(&[agent.to_string()], &why, ctx);
        self.fencing = None;
        TaskReply::FailedOver(moved)
    }

    /// An agent's queued (assigned, not running) tasks, oldest first.
    pub fn queued_tasks(&self, agent: &str) -> Vec<String> {
        self.queues
            .get(agent)
            .map(|q| q.iter().map(|k| self.tasks.at(*k).id.clone()).collect())
            .unwrap_or_default()
    }

    /// Dead-lettered tasks still remembered, oldest first.
    pub fn dead_letter(&self) -> Vec<&str> {
        self.dead_letter
            .iter()
            .map(|k| self.tasks.at(*k).id.as_str())
            .collect()
    }

    /// Tasks lost in the latest recovery that have not started again.
    pub fn recovery_waiting(&self) -> Vec<&str> {
        self.recovery.as_ref().map_or_else(Vec::new, |r| {
            r.waiting
                .iter()
                .filter_map(|k| self.tasks.try_at(*k))
                .map(|t| t.id.as_str())
                .collect()
        })
    }

    /// Sets the mesh's task settings.
    pub fn configure(
        &mut self,
        default_route: Option<Route>,
        hash_replicas: Option<u32>,
    ) -> Result<TaskReply, StateError> {
        if let Some(r) = hash_replicas
            && !(1..=7).contains(&r)
        {
            return Err(StateError::Invalid(format!(
                "hash_replicas {r} is outside 1 to 7"
            )));
        }
        if let Some(r) = default_route {
            self.default_route = r;
        }
        if let Some(r) = hash_replicas {
            self.hash_replicas = r;
        }
        Ok(TaskReply::Done)
    }

    /// Queued (assigned, not running) tasks per agent.
    pub fn queue_depths(&self) -> BTreeMap<String, usize> {
        self.queues
            .iter()
            .map(|(a, q)| (a.clone(), q.len()))
            .collect()
    }

    /// Running tasks per agent.
    pub fn running_counts(&self) -> BTreeMap<String, usize> {
        self.running
            .iter()
            .map(|(a, r)| (a.clone(), r.len()))
            .collect()
    }

    /// Ready tasks waiting for an agent (ready queue, retry queue, auctions).
    pub fn waiting(&self) -> usize {
        self.ready.len() + self.retry.len() + self.auctions.len()
    }
}

/// New tasks of a batch in an order where each comes after its new
/// dependencies; an error names a task on a cycle.
fn topo_order(
    specs: &[TaskSpec],
    ids: &[String],
    existing: &[bool],
    batch: &BTreeMap<String, usize>,
) -> Result<Vec<usize>, StateError> {
    let mut indegree = vec![0usize; specs.len()];
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); specs.len()];
    for (i, spec) in specs.iter().enumerate() {
        if existing[i] {
            continue;
        }
        let mut seen = BTreeSet::new();
        for d in &spec.deps {
            if let Some(&j) = batch.get(d)
                && seen.insert(j)
            {
                indegree[i] += 1;
                after[j].push(i);
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..specs.len())
        .filter(|&i| !existing[i] && indegree[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(specs.len());
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &k in &after[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                queue.push_back(k);
            }
        }
    }
    let new = existing.iter().filter(|e| !**e).count();
    if order.len() < new {
        let stuck = (0..specs.len())
            .find(|&i| !existing[i] && indegree[i] > 0)
            .expect("a task on the cycle");
        return Err(StateError::Invalid(format!(
            "dependency cycle through task '{}'",
            ids[stuck]
        )));
    }
    Ok(order)
}

impl TaskTable {
    /// Checks that every task is where its state says, and nowhere else, and
    /// the rules no command may break: completed at most once, attempts
    /// within the retry budget, started only after its dependencies completed.
    /// For tests and the simulator; `Err` names the first broken rule.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut places: BTreeMap<Key, Vec<&str>> = BTreeMap::new();
        for &(r, k) in &self.ready {
            places.entry(k).or_default().push("ready");
            if self.tasks.try_at(k).is_some_and(|t| rank(t.priority) != r) {
                return Err(format!("task #{k} is ready under another priority"));
            }
        }
        for k in &self.retry {
            places.entry(*k).or_default().push("retry");
        }
        for (_, k) in &self.auctions {
            places.entry(*k).or_default().push("auction");
        }
        let holder = |k: Key| self.tasks.try_at(k).and_then(|t| t.agent.as_deref());
        for (a, q) in &self.queues {
            for k in q {
                places.entry(*k).or_default().push("queue");
                if holder(*k) != Some(a.as_str()) {
                    return Err(format!("task #{k} is queued for {a} but held by another"));
                }
            }
        }
        for (a, r) in &self.running {
            for k in r {
                places.entry(*k).or_default().push("running");
                if holder(*k) != Some(a.as_str()) {
                    return Err(format!("task #{k} runs for {a} but is held by another"));
                }
            }
        }
        for (_, k) in &self.expiries {
            places.entry(*k).or_default().push("expiry");
        }
        for t in self.tasks.values() {
            let id = &t.id;
            if self.tasks.key(id) != Some(t.seq) {
                return Err(format!("task {id} is not indexed under #{}", t.seq));
            }
            let mut at = places.remove(&t.seq).unwrap_or_default();
            at.sort_unstable();
            let want: &[&str] = match t.state {
                TaskState::Ready if t.auction.is_some() => &["auction"],
                TaskState::Ready => {
                    if at == ["ready"] || at == ["retry"] {
                        &[]
                    } else {
                        return Err(format!("ready task {id} is in {at:?}"));
                    }
                }
                TaskState::Assigned => &["queue"],
                TaskState::Running => &["expiry", "running"],
                _ => &[],
            };
            if (t.state != TaskState::Ready || t.auction.is_some()) && at != want {
                return Err(format!("{} task {id} is in {at:?}", t.state.as_str()));
            }
            let completions = t
                .history
                .iter()
                .filter(|h| h.state == TaskState::Completed)
                .count();
            if completions > 1 {
                return Err(format!("task {id} completed {completions} times"));
            }
            if t.attempt > t.retries + 1 || t.attempts.len() as u32 != t.attempt {
                return Err(format!(
                    "task {id} has {} attempts for a budget of {} retries",
                    t.attempt, t.retries
                ));
            }
            if let Some(first) = t.attempts.first() {
                for d in &t.deps {
                    if let Some(dep) = self.tasks.get(d)
                        && !(dep.state == TaskState::Completed
                            && dep.finished_ms.is_some_and(|f| f <= first.started_ms))
                    {
                        return Err(format!(
                            "task {id} started before its dependency {d} completed"
                        ));
                    }
                }
            }
            let open_attempts = t.attempts.iter().filter(|a| a.ended_ms.is_none()).count();
            let want_open = usize::from(t.state == TaskState::Running);
            if open_attempts != want_open {
                return Err(format!(
                    "{} task {id} has {open_attempts} unfinished attempts",
                    t.state.as_str()
                ));
            }
        }
        if let Some((k, at)) = places.into_iter().next() {
            return Err(format!("unknown task #{k} is in {at:?}"));
        }
        Ok(())
    }
}
