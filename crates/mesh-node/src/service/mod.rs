//! The one API every front end (HTTP, CLI through HTTP, MCP and RESP) goes
//! through. Front ends parse their wire format into calls here and encode
//! the results; none of them decides anything about coordination.
//!
//! Writes: checked for a reachable quorum of voters (else [`ServiceError::ReadOnly`]),
//! given a request id (the client's, or a fresh one) so that retries inside the
//! deadline are applied at most once, forwarded to the leader by the engine, and
//! acknowledged only once committed on a majority and applied here. A write that
//! runs out of time says whether it may still apply.
//!
//! Reads: linearizable by default (read-index through the leader, then read the
//! local replica); `stale` reads the local replica, once it has applied every
//! write this node acknowledged (read your writes through the node you wrote to).
//! That wait is on the read, not on the write: a write through a follower is
//! acknowledged when the leader applied it, without waiting for the commit to
//! reach the follower (which saves every forwarded write a wait).
//!
//! - [`kv`]: namespaced keys and values;
//! - [`keyspace`]: the same keyspace by whole keys, for the Redis endpoint;
//! - [`coord`]: agents, proposals and signed votes, barriers;
//! - [`tasks`]: tasks: submit, claim, renew, outcomes, cancel;
//! - [`messages`]: pub/sub, direct messages with receipts, subscriptions;
//! - [`history`]: the retained samples of measured figures;
//! - [`error`]: errors with stable codes.

pub mod coord;
pub mod error;
pub mod history;
pub mod keyspace;
pub mod kv;
pub mod messages;
pub mod pbft;
pub mod tasks;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::consensus::{Engine, MembersView};
use crate::metrics::Metrics;
use crate::node::Request;
use crate::status::StatusSnapshot;
use mesh_consensus::raft::node_id_of;
use mesh_consensus::{Applied, OrderError, OrderStatus, Ordering};
use mesh_membership::MemberState;
use mesh_state::{Command, Reply, RequestId, StateMachine};

pub use error::ServiceError;

/// How long a write may take before the client is told it timed out.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a linearizable read waits for its read point.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stale read waits for this replica to apply the writes this node
/// acknowledged; past it (a replica cut off right after a write) it reads what
/// it has, as a stale read may.
pub const STALE_CATCH_UP: Duration = Duration::from_secs(1);

/// The node's service; clones share everything.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    node: String,
    requests: mpsc::Sender<Request>,
    members: MembersView,
    metrics: Arc<Metrics>,
    next_request: AtomicU64,
    /// The highest log index of a write this node acknowledged: stale reads
    /// wait for this replica to apply it.
    acknowledged: AtomicU64,
    /// The previous look at the task counters, for rates.
    task_rates: std::sync::Mutex<Option<TaskRateSample>>,
    /// Makes generated request ids unique across restarts of this node.
    boot_ms: u64,
    messaging: crate::messaging::Messaging,
    history: history::History,
    /// Linearizable reads waiting for a read-index round (started on first use).
    read_rounds: std::sync::OnceLock<mpsc::Sender<oneshot::Sender<Result<(), ServiceError>>>>,
}

/// Consensus as seen by this node, for `mesh status`.
#[derive(Debug, Clone, Serialize)]
pub struct ConsensusStatus {
    /// The ordering engine: `raft` or `pbft`.
    pub engine: &'static str,
    /// The engine's own status (term, leader, indexes, voters, learners),
    /// flattened into this object.
    #[serde(flatten)]
    pub order: OrderStatus,
    /// Names of the voters and learners, where the membership view knows them.
    pub voter_names: Vec<Option<String>>,
    /// The same for the learners.
    pub learner_names: Vec<Option<String>>,
    /// Whether this node would accept a write now (a quorum of voters reachable).
    pub writable: bool,
    /// pBFT only: view, primary, counters and evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pbft: Option<mesh_consensus::pbft::engine::PbftStatus>,
}

type TaskRateSample = (
    std::time::Instant,
    mesh_state::tasks::table::TaskCounters,
    Option<std::collections::BTreeMap<&'static str, f64>>,
);

/// The full status: membership, consensus and tasks.
#[derive(Debug, Clone, Serialize)]
pub struct FullStatus {
    /// The membership snapshot, flattened into this object.
    #[serde(flatten)]
    pub membership: StatusSnapshot,
    /// Consensus as this node sees it.
    pub consensus: ConsensusStatus,
    /// `null` if the replica could not be read.
    pub tasks: Option<tasks::TaskMetrics>,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Adds `evidence` and `reputation` to each member (see
/// [`Service::membership_status`]); `pbft`: each replica's node id and the
/// evidence held against it, by replica id.
fn annotate_reputation(members: &mut [serde_json::Value], pbft: Option<&(Vec<u64>, Vec<u64>)>) {
    for m in members {
        let id = m["id"].as_str().map(node_id_of);
        let held = pbft.and_then(|(ids, against)| {
            let replica = ids.iter().position(|n| Some(*n) == id)?;
            Some(against.get(replica).copied().unwrap_or(0))
        });
        if let Some(obj) = m.as_object_mut() {
            obj.insert("evidence".into(), held.into());
            obj.insert(
                "reputation".into(),
                held.map(|e| if e == 0 { "trusted" } else { "accused" })
                    .into(),
            );
        }
    }
}

impl Service {
    /// The service of a node over its engine, node loop, membership view,
    /// metrics and messaging runtime.
    pub fn new(
        engine: Engine,
        node: String,
        requests: mpsc::Sender<Request>,
        members: MembersView,
        metrics: Arc<Metrics>,
        messaging: crate::messaging::Messaging,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                engine,
                node,
                requests,
                members,
                metrics,
                next_request: AtomicU64::new(0),
                acknowledged: AtomicU64::new(0),
                task_rates: std::sync::Mutex::new(None),
                boot_ms: unix_ms(),
                messaging,
                history: history::History::default(),
                read_rounds: std::sync::OnceLock::new(),
            }),
        }
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.node
    }

    /// The zone of a member, as the membership view knows it.
    pub fn member_zone(&self, node: &str) -> Option<String> {
        self.inner
            .members
            .borrow()
            .iter()
            .find(|m| m.id == node)
            .and_then(|m| m.zone.clone())
    }

    /// The node's Prometheus metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The membership loop's snapshot (`None` while the node stops). Under
    /// pBFT each member that is a replica also says what this node's
    /// replica holds against it: `evidence` (pieces of proof that it lied)
    /// and `reputation`, `trusted` or `accused` (one piece is enough: a
    /// correct replica never signs two conflicting messages). Members that
    /// are not replicas, and every member under Raft, have them `null`.
    pub async fn membership_status(&self) -> Option<StatusSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.inner.requests.send(Request::Status(tx)).await.ok()?;
        let mut snapshot = rx.await.ok()?;
        let pbft = self.inner.engine.pbft().map(|p| {
            let against = p.pbft_status().evidence_against;
            (p.node_ids().to_vec(), against)
        });
        annotate_reputation(&mut snapshot.members, pbft.as_ref());
        Some(snapshot)
    }

    /// Membership and consensus together.
    pub async fn status(&self) -> Option<FullStatus> {
        let membership = self.membership_status().await?;
        Some(FullStatus {
            membership,
            consensus: self.consensus_status(),
            tasks: self.task_metrics().await.ok(),
        })
    }

    /// Consensus as this node sees it now: engine status, members named,
    /// writability.
    pub fn consensus_status(&self) -> ConsensusStatus {
        let order = self.inner.engine.status();
        let members = self.inner.members.borrow().clone();
        let addrs = self.inner.engine.member_addrs();
        // The member's name, or its address if the membership view lacks it.
        let name_of = |id: &u64| {
            members
                .iter()
                .find(|m| node_id_of(&m.id) == *id)
                .map(|m| m.id.clone())
                .or_else(|| addrs.get(id).cloned())
        };
        ConsensusStatus {
            engine: self.inner.engine.kind().name(),
            pbft: self.inner.engine.pbft().map(|p| p.pbft_status()),
            voter_names: order.voters.iter().map(name_of).collect(),
            learner_names: order.learners.iter().map(name_of).collect(),
            writable: order.fatal.is_none() && self.check_quorum().is_ok(),
            order,
        }
    }

    /// Sets the Raft gauges of `/metrics` from the engine's status now.
    pub fn sample_consensus_metrics(&self) {
        let s = self.inner.engine.status();
        let m = &self.inner.metrics;
        let idx = |i: Option<u64>| i.map(|x| x as i64).unwrap_or(-1);
        m.raft_term.set(s.term as i64);
        m.raft_commit_index.set(idx(s.commit_index));
        m.raft_applied_index.set(idx(s.applied_index));
        m.raft_is_leader.set(i64::from(s.leader == Some(s.node_id)));
        m.raft_voters.set(s.voters.len() as i64);
        m.raft_learners.set(s.learners.len() as i64);
    }

    /// `Err(why)` when the ordering engine has stopped on a fatal error.
    pub fn engine_health(&self) -> Result<(), String> {
        match self.inner.engine.status().fatal {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Refuses writes when this node cannot reach a majority of the voters, as
    /// the membership layer sees them (voters it has not confirmed dead count as
    /// reachable: an unconfirmed doubt does not make a node read-only).
    pub fn check_quorum(&self) -> Result<(), ServiceError> {
        let (reachable, voters) = self.reachable_voters();
        if voters > 0 && reachable < self.inner.engine.quorum(voters) {
            return Err(ServiceError::ReadOnly {
                reachable_voters: reachable,
                voters,
            });
        }
        Ok(())
    }

    /// The engine found no quorum: say how many voters this node reaches.
    fn read_only_error(&self) -> ServiceError {
        let (reachable_voters, voters) = self.reachable_voters();
        ServiceError::ReadOnly {
            reachable_voters,
            voters,
        }
    }

    /// (voters not confirmed dead, voters). Zero voters: not initialised yet (a
    /// write then waits for a leader instead of failing as read-only).
    fn reachable_voters(&self) -> (usize, usize) {
        let voters = self.inner.engine.status().voters;
        let members = self.inner.members.borrow().clone();
        let dead = voters
            .iter()
            .filter(|v| {
                let rows: Vec<_> = members
                    .iter()
                    .filter(|m| node_id_of(&m.id) == **v)
                    .collect();
                !rows.is_empty()
                    && rows
                        .iter()
                        .all(|m| matches!(m.state, MemberState::Dead | MemberState::Left))
            })
            .count();
        (voters.len() - dead, voters.len())
    }

    fn fresh_request_id(&self) -> RequestId {
        let n = self
            .inner
            .next_request
            .fetch_add(1, AtomicOrdering::Relaxed);
        RequestId(format!("{}:{}:{n}", self.inner.node, self.inner.boot_ms))
    }

    /// Orders `command` and returns its reply once applied on this node.
    pub async fn write(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Applied, ServiceError> {
        let result = self.write_inner(command, request_id).await;
        let outcome = match &result {
            Ok(a) if a.reply.is_ok() => "ok",
            Ok(_) => "refused",
            Err(e) => e.code(),
        };
        self.inner
            .metrics
            .writes
            .get_or_create(&crate::metrics::ResultLabel {
                result: outcome.to_string(),
            })
            .inc();
        result
    }

    async fn write_inner(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Applied, ServiceError> {
        self.check_quorum()?;
        let request_id = request_id.unwrap_or_else(|| self.fresh_request_id());
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let engine = &self.inner.engine;
        // Whether an attempt may have reached a leader (then a timeout cannot
        // promise that nothing applies).
        let mut maybe_sent = false;
        let mut backoff = Duration::from_millis(10);
        loop {
            let attempt = tokio::time::timeout_at(
                deadline,
                engine.propose(command.clone(), Some(request_id.clone())),
            )
            .await;
            match attempt {
                Ok(Ok(applied)) => {
                    self.inner
                        .acknowledged
                        .fetch_max(applied.index, AtomicOrdering::Relaxed);
                    return Ok(applied);
                }
                Err(_) => {
                    return Err(ServiceError::Timeout {
                        request_id: request_id.0,
                        may_have_applied: true,
                    });
                }
                Ok(Err(OrderError::ReadOnly)) => return Err(self.read_only_error()),
                Ok(Err(OrderError::Stopped(detail))) => {
                    return Err(ServiceError::Stopped(detail));
                }
                Ok(Err(OrderError::NotLeader { leader: None })) => {
                    // An election is under way: wait for its outcome.
                    if engine.wait_for_leader(deadline).await.is_none() {
                        break;
                    }
                    continue;
                }
                Ok(Err(OrderError::NotLeader { leader: Some(_) }))
                | Ok(Err(OrderError::LeaderUnreachable { .. })) => {
                    maybe_sent = true;
                }
            }
            // Same request id on every retry: the state machine applies it once.
            if tokio::time::Instant::now() + backoff >= deadline {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            self.check_quorum()?;
        }
        if !maybe_sent && engine.status().leader.is_none() {
            return Err(ServiceError::NoLeader);
        }
        Err(ServiceError::Timeout {
            request_id: request_id.0,
            may_have_applied: maybe_sent,
        })
    }

    /// A write whose reply must not be an error of the state machine.
    pub async fn write_ok(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Reply, ServiceError> {
        let applied = self.write(command, request_id).await?;
        applied.reply.map_err(ServiceError::State)
    }

    /// Runs `f` on the replica's state: after a read-index round unless `stale`.
    pub async fn read<T>(
        &self,
        stale: bool,
        f: impl FnOnce(&StateMachine) -> T,
    ) -> Result<T, ServiceError> {
        if stale {
            // Read your writes: what this node acknowledged is visible here.
            let floor = self.inner.acknowledged.load(AtomicOrdering::Relaxed);
            if floor > 0 {
                let until = tokio::time::Instant::now() + STALE_CATCH_UP;
                self.inner.engine.wait_applied(floor, until).await;
            }
        } else {
            self.read_barrier().await?;
        }
        let state = self.inner.engine.state();
        let sm = state.read().unwrap_or_else(|e| e.into_inner());
        Ok(f(&sm))
    }

    /// Waits for a read-index round that started after this call: reads
    /// arriving while a round is under way share the next one, so a burst of
    /// reads costs one round trip to a quorum, not one each (the read-index
    /// batching of the Raft thesis, §6.4).
    async fn read_barrier(&self) -> Result<(), ServiceError> {
        let rounds = self.inner.read_rounds.get_or_init(|| {
            let (tx, mut rx) = mpsc::channel::<oneshot::Sender<Result<(), ServiceError>>>(4_096);
            // Weak: the task must not keep the service (which holds `tx`) alive.
            let weak = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut batch = Vec::new();
                while let Some(first) = rx.recv().await {
                    batch.push(first);
                    // Everyone who asked before the round starts shares it.
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let Some(inner) = weak.upgrade() else { break };
                    let result = Service { inner }.read_barrier_round().await;
                    for waiter in batch.drain(..) {
                        let _ = waiter.send(result.clone());
                    }
                }
            });
            tx
        });
        let (tx, rx) = oneshot::channel();
        rounds
            .send(tx)
            .await
            .map_err(|_| ServiceError::Stopped("the read-index task stopped".into()))?;
        rx.await
            .map_err(|_| ServiceError::Stopped("the read-index task stopped".into()))?
    }

    /// One read-index round, with retries until it succeeds or times out.
    async fn read_barrier_round(&self) -> Result<(), ServiceError> {
        let engine = &self.inner.engine;
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, engine.read_barrier()).await {
                Ok(Ok(())) => return Ok(()),
                Err(_) => return Err(ServiceError::ReadTimeout),
                Ok(Err(OrderError::NotLeader { leader: None })) => {
                    if engine.wait_for_leader(deadline).await.is_none() {
                        return Err(ServiceError::NoLeader);
                    }
                }
                // The leader missed a quorum's answers in time. With the
                // membership layer also finding no quorum, it is real; else
                // the answers were only late (a loaded machine, a large
                // entry in flight) and the round is tried again.
                Ok(Err(OrderError::ReadOnly)) if self.check_quorum().is_err() => {
                    return Err(self.read_only_error());
                }
                Ok(Err(OrderError::Stopped(d))) => return Err(ServiceError::Stopped(d)),
                Ok(Err(_)) => {
                    if tokio::time::Instant::now() + Duration::from_millis(20) >= deadline {
                        return Err(ServiceError::ReadTimeout);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Events from applied commands (decisions, released barriers, ...).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(u64, mesh_state::Event)> {
        self.inner.engine.subscribe()
    }

    /// The clock reads use for TTLs: the wall clock, never behind the newest
    /// stamp applied (so a key the log expired never reappears here).
    pub(crate) fn read_clock(sm: &StateMachine) -> u64 {
        unix_ms().max(sm.clock_ms)
    }
}

#[cfg(test)]
mod reputation_tests {
    use super::*;

    /// TOCS 2002 evidence held against a replica lowers its reputation in
    /// the membership view: replicas with none are `trusted`, one with
    /// evidence `accused` with the count; a member that is no replica, and
    /// every member without pBFT, has neither (null, not invented).
    #[test]
    fn members_carry_the_evidence_held_against_them() {
        let names = ["a", "b", "c"];
        let members = || -> Vec<serde_json::Value> {
            names
                .iter()
                .map(|n| serde_json::json!({ "id": n }))
                .collect()
        };
        let ids = vec![node_id_of("a"), node_id_of("b")];
        let mut m = members();
        annotate_reputation(&mut m, Some(&(ids, vec![0, 2])));
        assert_eq!(m[0]["reputation"], "trusted");
        assert_eq!(m[0]["evidence"], 0);
        assert_eq!(m[1]["reputation"], "accused");
        assert_eq!(m[1]["evidence"], 2);
        assert!(m[2]["reputation"].is_null() && m[2]["evidence"].is_null());
        let mut raft = members();
        annotate_reputation(&mut raft, None);
        assert!(raft.iter().all(|x| x["reputation"].is_null()));
    }
}
