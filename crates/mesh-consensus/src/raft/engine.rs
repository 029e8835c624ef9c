//! [`RaftOrdering`]: the [`Ordering`] trait over an openraft `Raft`.
//!
//! The leader stamps each command with its clock and a fresh seed before it goes
//! into the log (the state machine itself reads neither). Reads use openraft's
//! read-index (`ensure_linearizable`): the leader confirms it still leads with a
//! quorum round, then waits until the read point is applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::RaftError;
use openraft::{Config, Raft, RaftNetworkFactory};

use super::sm_store::SmStore;
use super::{NodeId, TypeConfig};
use crate::ordering::{Applied, OrderError, OrderStatus, Ordering, SharedState};
use mesh_state::{Command, RequestId, Stamped};

/// Raft timings for a LAN: heartbeats every 50 ms, elections after 150–300 ms.
pub fn lan_config(cluster: &str) -> Config {
    Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Entries hold batches of up to 1 MiB (or one command of up to 4 MiB):
        // 16 per AppendEntries keeps an RPC well under the frame limit.
        max_payload_entries: 16,
        ..Default::default()
    }
}

/// The leader's id and address, as `raft` knows them.
fn leader_addr_of(raft: &Raft<TypeConfig>) -> Option<(NodeId, String)> {
    let m = raft.metrics().borrow().clone();
    let leader = m.current_leader?;
    let addr = m
        .membership_config
        .membership()
        .get_node(&leader)?
        .addr
        .clone();
    Some((leader, addr))
}

/// How the membership layer sees a peer, for [`RaftOrdering::reconcile_voters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerHealth {
    /// Membership sees it alive: a learner in this state may become a voter.
    Alive,
    /// Membership suspects it: neither promoted nor replaced.
    Suspect,
    /// Confirmed dead (or left) this long ago.
    Dead {
        /// Milliseconds since it was confirmed dead or left.
        for_ms: u64,
    },
    /// Not in the membership view (yet).
    Unknown,
}

/// One node's Raft engine.
#[derive(Clone)]
pub struct RaftOrdering {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: SmStore,
    seeds: Arc<AtomicU64>,
    /// Forward writes and read-index requests to the leader over TCP.
    forward: bool,
    /// The log store's commit index, when it reports one.
    commit_index: Option<super::redb_store::CommitIndex>,
    /// Groups concurrent writes into one log entry.
    batcher: tokio::sync::mpsc::Sender<super::batcher::Proposal>,
    /// Sends writes to the leader in batches (set by [`RaftOrdering::with_forwarding`]).
    forwarder: Option<tokio::sync::mpsc::Sender<super::forwarder::Forward>>,
}

impl RaftOrdering {
    /// Starts the engine. `network` reaches the other nodes.
    pub async fn start<N, L>(
        id: NodeId,
        config: Config,
        network: N,
        log: L,
        sm: SmStore,
    ) -> Result<Self, OrderError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        L: openraft::storage::RaftLogStorage<TypeConfig>,
    {
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| OrderError::Stopped(e.to_string()))?,
        );
        let raft = Raft::new(id, config, network, log, sm.clone())
            .await
            .map_err(|e| OrderError::Stopped(e.to_string()))?;
        let batcher = super::batcher::spawn(raft.clone());
        super::unstick::spawn(raft.clone(), id);
        Ok(Self {
            id,
            batcher,
            forwarder: None,
            raft,
            sm,
            seeds: Arc::new(AtomicU64::new(id)),
            forward: false,
            commit_index: None,
        })
    }

    /// Reports `commit` (from [`super::redb_store::RedbLogStore::commit_index`]) as
    /// the commit index in [`Ordering::status`].
    pub fn with_commit_index(mut self, commit: super::redb_store::CommitIndex) -> Self {
        self.commit_index = Some(commit);
        self
    }

    /// This node's Raft id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Makes a non-leader forward writes and read-index requests to the leader
    /// (at its `BasicNode::addr`, served by [`super::net_tcp`]), so clients may use
    /// any node.
    pub fn with_forwarding(mut self) -> Self {
        self.forward = true;
        let raft = self.raft.clone();
        let leader: super::forwarder::LeaderLookup = Arc::new(move || leader_addr_of(&raft));
        self.forwarder = Some(super::forwarder::spawn(leader));
        self
    }

    /// The leader's id and address, if known.
    pub(crate) fn leader_addr(&self) -> Option<(NodeId, String)> {
        leader_addr_of(&self.raft)
    }

    /// Orders `command` here; fails unless this node leads (no re-forwarding).
    pub async fn propose_local(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Applied, OrderError> {
        self.enqueue_local(command, request_id).await?.await
    }

    /// Orders several writes here (a batch a follower forwarded): all are queued
    /// for the batcher before any outcome is awaited, so they share log entries;
    /// outcomes come back in order.
    pub async fn propose_many_local(
        &self,
        items: Vec<(Command, Option<RequestId>)>,
    ) -> Vec<Result<Applied, OrderError>> {
        let mut pending = Vec::with_capacity(items.len());
        for (command, request_id) in items {
            pending.push(self.enqueue_local(command, request_id).await);
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(match p {
                Ok(outcome) => outcome.await,
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Stamps `command` and queues it for the batcher; the future resolves to its outcome.
    async fn enqueue_local(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<impl std::future::Future<Output = Result<Applied, OrderError>> + use<>, OrderError>
    {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return Err(OrderError::NotLeader { leader });
        }
        let stamped = self.stamp(command, request_id);
        let bytes = postcard::experimental::serialized_size(&stamped).unwrap_or(0);
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.batcher
            .send(super::batcher::Proposal {
                stamped,
                bytes,
                reply,
            })
            .await
            .map_err(|_| OrderError::Stopped("the batcher stopped".into()))?;
        Ok(async move {
            rx.await
                .map_err(|_| OrderError::Stopped("the batcher dropped a write".into()))?
        })
    }

    /// On the leader: confirms leadership with a quorum and returns the index a
    /// linearizable read must wait for (read-index).
    pub async fn read_index_local(&self) -> Result<u64, OrderError> {
        match self.raft.ensure_linearizable().await {
            Ok(id) => Ok(id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(OrderError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_))) => {
                Err(OrderError::ReadOnly)
            }
            Err(e) => Err(OrderError::Stopped(e.to_string())),
        }
    }

    /// On the leader: adds node `id` at `addr` as a learner (waiting until it has
    /// caught up), then promotes it to voter if there are fewer than
    /// `target_voters`. Returns whether it is a voter now.
    pub async fn join_local(
        &self,
        id: NodeId,
        addr: String,
        target_voters: usize,
    ) -> Result<bool, OrderError> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return Err(OrderError::NotLeader { leader });
        }
        let write_err = super::write_error;
        let (voters, known_addr) = {
            let m = self.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            (voters, membership.get_node(&id).map(|n| n.addr.clone()))
        };
        if known_addr.as_ref().is_some_and(|a| *a != addr) {
            // A member restarted on another address: update it (ids are derived
            // from unique node names, so no two members can swap addresses).
            let nodes = [(id, openraft::BasicNode::new(addr.clone()))].into();
            self.raft
                .change_membership(openraft::ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(write_err)?;
        }
        if voters.contains(&id) {
            return Ok(true);
        }
        self.raft
            .add_learner(id, openraft::BasicNode::new(addr), true)
            .await
            .map_err(write_err)?;
        if voters.len() >= target_voters {
            return Ok(false);
        }
        let ids: BTreeSet<NodeId> = [id].into();
        self.raft
            .change_membership(openraft::ChangeMembers::AddVoterIds(ids), true)
            .await
            .map_err(write_err)?;
        Ok(true)
    }

    /// Joins the cluster through any member at `via` (it forwards to the leader).
    /// Returns whether this node became a voter.
    pub async fn join(
        &self,
        via: &str,
        own_addr: &str,
        target_voters: usize,
    ) -> Result<bool, OrderError> {
        super::net_tcp::request_join(via, self.id, own_addr, target_voters).await
    }

    /// Makes this node the first member (a one-voter cluster at `own_addr`) if
    /// it has never been part of one. Returns whether it did.
    pub async fn bootstrap_if_new(&self, own_addr: &str) -> Result<bool, OrderError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| OrderError::Stopped(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        let members: BTreeMap<NodeId, openraft::BasicNode> =
            [(self.id, openraft::BasicNode::new(own_addr))].into();
        self.raft
            .initialize(members)
            .await
            .map_err(|e| OrderError::Stopped(e.to_string()))?;
        Ok(true)
    }

    /// On the leader: keeps `target` voters, as far as the members allow. A voter
    /// the membership layer has confirmed dead for at least `replace_after_ms` is
    /// replaced by a healthy learner (it stays a learner, so it catches up if it
    /// returns); missing voters are filled from healthy learners, lowest id first.
    /// A dead voter with no learner to replace it stays: removing it would not
    /// make the rest tolerate more failures, and keeping it lets it heal by coming
    /// back. Returns the new voter set if it changed anything.
    pub async fn reconcile_voters(
        &self,
        health: &BTreeMap<NodeId, PeerHealth>,
        target: usize,
        replace_after_ms: u64,
    ) -> Result<Option<BTreeSet<NodeId>>, OrderError> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return Ok(None);
        }
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return Ok(None); // a change is in flight; look again next time
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let of = |id: &NodeId| health.get(id).copied().unwrap_or(PeerHealth::Unknown);
        let replaceable: BTreeSet<NodeId> = voters
            .iter()
            .filter(|v| **v != self.id)
            .filter(|v| matches!(of(v), PeerHealth::Dead { for_ms } if for_ms >= replace_after_ms))
            .copied()
            .collect();
        let mut spare = membership
            .learner_ids()
            .filter(|l| of(l) == PeerHealth::Alive)
            .collect::<Vec<_>>()
            .into_iter();
        let mut desired: BTreeSet<NodeId> = voters.difference(&replaceable).copied().collect();
        // Each replaceable voter goes only if a learner takes its place.
        for dead in &replaceable {
            desired.insert(spare.next().unwrap_or(*dead));
        }
        while desired.len() < target {
            match spare.next() {
                Some(l) => {
                    desired.insert(l);
                }
                None => break,
            }
        }
        if desired == voters {
            return Ok(None);
        }
        tracing::info!(?voters, ?desired, "changing Raft voters");
        self.raft
            .change_membership(
                openraft::ChangeMembers::ReplaceAllVoters(desired.clone()),
                true,
            )
            .await
            .map_err(super::write_error)?;
        Ok(Some(desired))
    }

    /// Waits until some leader is known (or `until`); returns it.
    pub async fn wait_for_leader(&self, until: tokio::time::Instant) -> Option<NodeId> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow_and_update().current_leader {
                return Some(l);
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }

    /// Waits until this replica has applied `index` (or `until`); returns whether it has.
    pub async fn wait_applied(&self, index: u64, until: tokio::time::Instant) -> bool {
        let timeout = until.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read your writes")
            .await
            .is_ok()
    }

    /// Every member of the Raft configuration (voters and learners) with its address.
    pub fn member_addrs(&self) -> BTreeMap<NodeId, String> {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    /// True if this node leads now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// The openraft handle (for membership changes and RPC handlers).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Events caused by applied entries.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(u64, mesh_state::Event)> {
        self.sm.subscribe()
    }

    fn stamp(&self, command: Command, request_id: Option<RequestId>) -> Stamped {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // SplitMix64 over a counter and the clock: a fresh seed per command.
        let mut z = self
            .seeds
            .fetch_add(0x9e37_79b9_7f4a_7c15, AtomicOrdering::Relaxed)
            ^ now.as_nanos() as u64;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Stamped {
            now_ms: now.as_millis() as u64,
            seed: z ^ (z >> 31),
            request_id,
            command,
        }
    }
}

impl Ordering for RaftOrdering {
    async fn propose(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Applied, OrderError> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader == Some(self.id) || !self.forward {
            return self.propose_local(command, request_id).await;
        }
        let Some(forwarder) = &self.forwarder else {
            return Err(OrderError::NotLeader { leader });
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        forwarder
            .send(super::forwarder::Forward {
                command,
                request_id,
                reply,
            })
            .await
            .map_err(|_| OrderError::Stopped("the forwarder stopped".into()))?;
        rx.await
            .map_err(|_| OrderError::Stopped("the forwarder dropped a write".into()))?
    }

    async fn read_barrier(&self) -> Result<(), OrderError> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader == Some(self.id) || !self.forward {
            // ensure_linearizable already waits for the local apply.
            return self.read_index_local().await.map(|_| ());
        }
        let Some((leader, addr)) = self.leader_addr() else {
            return Err(OrderError::NotLeader { leader });
        };
        let index = super::net_tcp::forward_read_index(leader, &addr).await?;
        // Follower read: wait until this replica has applied the leader's read index.
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|e| OrderError::Stopped(e.to_string()))
    }

    fn status(&self) -> OrderStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        OrderStatus {
            node_id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            // openraft 0.9 does not report the commit index in its metrics: the log
            // store does; without one it is unknown (null).
            commit_index: self.commit_index.as_ref().and_then(|c| c.get()),
            applied_index: m.last_applied.map(|l| l.index),
            last_log_index: m.last_log_index,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            fatal: m.running_state.as_ref().err().map(|e| e.to_string()),
        }
    }

    fn state(&self) -> SharedState {
        self.sm.state()
    }
}
