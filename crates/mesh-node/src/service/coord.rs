//! Agents, proposals with signed votes, and barriers, over the replicated state.
//!
//! Agents hold their ed25519 secret keys themselves (the CLI keeps them in a
//! file); the mesh stores only public keys and verifies every vote's signature
//! in the state machine, on every replica. Waiting for a decision or a barrier
//! is a push: the caller subscribes to applied events before it looks at the
//! state, then sleeps until the event for its id arrives or its wait runs out.

use std::time::Duration;

use serde::Serialize;

use super::{Service, ServiceError, unix_ms};
use mesh_proto::hex;
use mesh_state::agents::{Agent, AgentState};
use mesh_state::barriers::{Barrier, BarrierSpec};
use mesh_state::proposals::{Proposal, ProposalStatus};
use mesh_state::{Command, CoordCmd, Event, RequestId, StateMachine};

/// Longest wait a client may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Default voting window.
pub const DEFAULT_DEADLINE_SECS: u64 = 300;
/// Longest voting window: thirty days.
pub const MAX_DEADLINE_SECS: u64 = 30 * 24 * 3600;

/// An agent registration.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// The agent's id, unique in the mesh.
    pub id: String,
    /// The agent's type (`claude`, `script`, ...), free-form.
    pub kind: String,
    /// Capabilities the agent offers, matched against tasks' requirements.
    pub caps: Vec<String>,
    /// The hosting node; this node when `None`.
    pub node: Option<String>,
    /// ed25519 public key, hex.
    pub public_key_hex: String,
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// The agent's id.
    pub id: String,
    /// The agent's type (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: String,
    /// Capabilities the agent offers.
    pub caps: Vec<String>,
    /// The node that hosts it.
    pub node: String,
    /// Its ed25519 public key, hex: it verifies the agent's votes.
    pub public_key: String,
    /// `ACTIVE`, `WAITING` or `COMPLETE`.
    pub state: AgentState,
    /// When it first registered, Unix ms (kept across re-registrations).
    pub registered_at_ms: u64,
    /// Its last registration, state change, heartbeat or task report, Unix ms.
    pub last_seen_ms: u64,
    /// When the hosting node was confirmed dead (`null`: it was not).
    pub node_dead_at_ms: Option<u64>,
    /// Its node's zone (`null`: none known).
    pub zone: Option<String>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            id: a.id.clone(),
            kind: a.kind.clone(),
            caps: a.caps.clone(),
            node: a.node.clone(),
            public_key: hex::encode(&a.public_key),
            state: a.state,
            registered_at_ms: a.registered_at_ms,
            last_seen_ms: a.last_seen_ms,
            node_dead_at_ms: a.node_dead_at_ms,
            zone: a.zone.clone(),
        }
    }
}

/// A new proposal.
#[derive(Debug, Clone)]
pub struct NewProposal {
    /// Generated when `None`.
    pub id: Option<String>,
    /// Any JSON value.
    pub body: serde_json::Value,
    /// Who proposes it (an agent id or any name), for the record.
    pub proposer: Option<String>,
    /// Eligible voters; every registered agent when `None`.
    pub voters: Option<Vec<String>>,
    /// Fraction of eligible voters needed, in (0, 1]; two thirds by default.
    pub threshold: Option<f64>,
    /// Voting window in seconds, 1 to [`MAX_DEADLINE_SECS`];
    /// [`DEFAULT_DEADLINE_SECS`] when `None`.
    pub deadline_secs: Option<u64>,
}

/// A signed vote as a client submits it.
#[derive(Debug, Clone)]
pub struct SignedVote {
    /// The voting agent; its registered key must verify the signature.
    pub agent_id: String,
    /// `true` approves, `false` rejects.
    pub approve: bool,
    /// Why, in the voter's words (signed too).
    pub reason: Option<String>,
    /// The agent's vote counter: a vote replaces the agent's earlier one only
    /// with a higher `seq`.
    pub seq: u64,
    /// ed25519 signature over `vote_signing_bytes`, hex.
    pub signature_hex: String,
}

/// One counted vote.
#[derive(Debug, Clone, Serialize)]
pub struct VoteView {
    /// `approve` or `reject`.
    pub vote: &'static str,
    /// The voter's reason, if given.
    pub reason: Option<String>,
    /// The vote's counter (see [`SignedVote::seq`]).
    pub seq: u64,
    /// When it was counted, Unix ms.
    pub at_ms: u64,
    /// Its ed25519 signature, hex.
    pub signature: String,
}

/// A proposal as the API shows it, with its measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct ProposalView {
    /// The proposal's id.
    pub id: String,
    /// What is proposed: any JSON value (a string when the stored text is not JSON).
    pub body: serde_json::Value,
    /// Who proposed it, if named.
    pub proposer: Option<String>,
    /// Eligible voters, fixed at creation.
    pub voters: Vec<String>,
    /// Fraction of eligible voters whose approval decides it, in (0, 1].
    pub threshold: f64,
    /// Approvals needed: ceil(threshold x voters).
    pub needed: usize,
    /// Votes to approve so far.
    pub approvals: usize,
    /// Votes to reject so far.
    pub rejections: usize,
    /// Open, approved, rejected or expired.
    pub status: ProposalStatus,
    /// When it was created, Unix ms.
    pub created_at_ms: u64,
    /// When voting closes, Unix ms.
    pub deadline_ms: u64,
    /// When it was decided or expired, Unix ms (`null` while open).
    pub decided_at_ms: Option<u64>,
    /// From creation to decision or expiry; `null` while open.
    pub decision_latency_ms: Option<u64>,
    /// Fraction of eligible voters who voted.
    pub participation: f64,
    /// Each counted vote, by agent id.
    pub votes: std::collections::BTreeMap<String, VoteView>,
}

impl From<&Proposal> for ProposalView {
    fn from(p: &Proposal) -> Self {
        ProposalView {
            id: p.id.clone(),
            body: serde_json::from_str(&p.body)
                .unwrap_or_else(|_| serde_json::Value::String(p.body.clone())),
            proposer: p.proposer.clone(),
            voters: p.voters.clone(),
            threshold: p.threshold,
            needed: p.needed(),
            approvals: p.approvals(),
            rejections: p.rejections(),
            status: p.status,
            created_at_ms: p.created_at_ms,
            deadline_ms: p.deadline_ms,
            decided_at_ms: p.decided_at_ms,
            decision_latency_ms: p.decision_latency_ms(),
            participation: p.participation(),
            votes: p
                .votes
                .iter()
                .map(|(a, v)| {
                    (
                        a.clone(),
                        VoteView {
                            vote: if v.approve { "approve" } else { "reject" },
                            reason: v.reason.clone(),
                            seq: v.seq,
                            at_ms: v.at_ms,
                            signature: hex::encode(&v.signature),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A barrier as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BarrierView {
    /// The barrier's id.
    pub id: String,
    /// The agents it waits for, or `null` for a group barrier.
    pub agents: Option<Vec<String>>,
    /// `{"type": ..., "count": ...}` for a group barrier.
    pub group: Option<serde_json::Value>,
    /// Whether it has released: its agents, or enough of its group, are `COMPLETE`.
    pub released: bool,
    /// When it was created, Unix ms.
    pub created_at_ms: u64,
    /// When it released, Unix ms (`null` while it holds).
    pub released_at_ms: Option<u64>,
    /// Agents of the barrier not COMPLETE yet (for an agent-list barrier).
    pub waiting_for: Vec<String>,
}

fn barrier_view(b: &Barrier, sm: &StateMachine) -> BarrierView {
    let (agents, group, waiting_for) = match &b.spec {
        BarrierSpec::Agents(list) => (
            Some(list.clone()),
            None,
            list.iter()
                .filter(|a| {
                    sm.agents
                        .get(*a)
                        .is_none_or(|x| x.state != AgentState::Complete)
                })
                .cloned()
                .collect(),
        ),
        BarrierSpec::Group { kind, count } => (
            None,
            Some(serde_json::json!({"type": kind, "count": count})),
            Vec::new(),
        ),
    };
    BarrierView {
        id: b.id.clone(),
        agents,
        group,
        released: b.released_at_ms.is_some(),
        created_at_ms: b.created_at_ms,
        released_at_ms: b.released_at_ms,
        waiting_for,
    }
}

pub(super) fn check_wait(wait: Option<Duration>) -> Result<Duration, ServiceError> {
    let w = wait.unwrap_or_default();
    if w > MAX_WAIT {
        return Err(ServiceError::bad(
            "bad_wait",
            format!(
                "wait of {} s is over the limit of {} s",
                w.as_secs(),
                MAX_WAIT.as_secs()
            ),
        ));
    }
    Ok(w)
}

pub(super) fn fresh_id(prefix: &str) -> String {
    // Unique enough for ids: the clock and a process-wide counter.
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{:x}{:04x}", unix_ms(), n & 0xffff)
}

impl Service {
    /// Registers an agent (or registers it again with the same key: that
    /// makes it `ACTIVE` and moves it to `a.node`) and returns it.
    pub async fn register_agent(
        &self,
        a: NewAgent,
        request_id: Option<RequestId>,
    ) -> Result<AgentView, ServiceError> {
        let public_key = hex::decode(&a.public_key_hex)
            .map_err(|e| ServiceError::bad("bad_public_key", format!("public_key: {e}")))?;
        let id = a.id.clone();
        let node = a.node.unwrap_or_else(|| self.node_name().to_string());
        // The agent's zone is its node's, as the membership view knows it.
        let zone = self.member_zone(&node);
        let cmd = CoordCmd::RegisterAgent {
            id: a.id,
            kind: a.kind,
            caps: a.caps,
            node,
            public_key,
            zone,
        };
        self.write_ok(Command::Coord(cmd), request_id).await?;
        self.agent(&id, true).await
    }

    /// One agent; `stale` reads this replica without a read-index round.
    pub async fn agent(&self, id: &str, stale: bool) -> Result<AgentView, ServiceError> {
        self.read(stale, |sm| sm.agents.get(id).map(AgentView::from))
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "agent",
                id: id.to_string(),
            })
    }

    /// Every registered agent.
    pub async fn agents(&self, stale: bool) -> Result<Vec<AgentView>, ServiceError> {
        self.read(stale, |sm| {
            sm.agents.values().map(AgentView::from).collect()
        })
        .await
    }

    /// Sets an agent's state (barriers may release on `COMPLETE`) and returns it.
    pub async fn set_agent_state(
        &self,
        id: &str,
        state: AgentState,
        request_id: Option<RequestId>,
    ) -> Result<AgentView, ServiceError> {
        let cmd = CoordCmd::SetAgentState {
            id: id.to_string(),
            state,
        };
        self.write_ok(Command::Coord(cmd), request_id).await?;
        self.agent(id, true).await
    }

    /// Records that an agent is alive (its `last_seen_ms`) and returns it.
    pub async fn agent_heartbeat(&self, id: &str) -> Result<AgentView, ServiceError> {
        let cmd = CoordCmd::Heartbeat { id: id.to_string() };
        self.write_ok(Command::Coord(cmd), None).await?;
        self.agent(id, true).await
    }

    /// Removes an agent; its tasks move on first.
    pub async fn unregister_agent(&self, id: &str) -> Result<(), ServiceError> {
        let cmd = CoordCmd::UnregisterAgent { id: id.to_string() };
        self.write_ok(Command::Coord(cmd), None).await.map(|_| ())
    }

    /// Opens a proposal for the eligible agents to vote on and returns it.
    pub async fn propose(
        &self,
        p: NewProposal,
        request_id: Option<RequestId>,
    ) -> Result<ProposalView, ServiceError> {
        let secs = p.deadline_secs.unwrap_or(DEFAULT_DEADLINE_SECS);
        if secs == 0 || secs > MAX_DEADLINE_SECS {
            return Err(ServiceError::bad(
                "bad_deadline",
                format!("deadline of {secs} s is out of range: 1 to {MAX_DEADLINE_SECS} s"),
            ));
        }
        if let Some(t) = p.threshold
            && !(t > 0.0 && t <= 1.0)
        {
            return Err(ServiceError::bad(
                "bad_threshold",
                format!("threshold {t} is not in (0, 1]"),
            ));
        }
        let id = p.id.unwrap_or_else(|| fresh_id("p"));
        let cmd = CoordCmd::Propose {
            id: id.clone(),
            body: p.body.to_string(),
            proposer: p.proposer,
            voters: p.voters,
            threshold: p.threshold,
            deadline_ms: unix_ms() + secs * 1000,
        };
        self.write_ok(Command::Coord(cmd), request_id).await?;
        self.proposal(&id, None, true).await
    }

    /// Counts a signed vote on `proposal_id` (the state machine checks the
    /// signature) and returns the proposal.
    pub async fn vote(
        &self,
        proposal_id: &str,
        v: SignedVote,
        request_id: Option<RequestId>,
    ) -> Result<ProposalView, ServiceError> {
        let signature = hex::decode(&v.signature_hex)
            .map_err(|e| ServiceError::bad("bad_signature", format!("signature: {e}")))?;
        let cmd = CoordCmd::Vote {
            proposal_id: proposal_id.to_string(),
            agent_id: v.agent_id,
            approve: v.approve,
            reason: v.reason,
            seq: v.seq,
            signature,
        };
        self.write_ok(Command::Coord(cmd), request_id).await?;
        self.proposal(proposal_id, None, true).await
    }

    /// A proposal; with `wait`, not before it is decided or the wait ran out.
    pub async fn proposal(
        &self,
        id: &str,
        wait: Option<Duration>,
        stale: bool,
    ) -> Result<ProposalView, ServiceError> {
        self.look_until(
            "proposal",
            id,
            wait,
            stale,
            |sm| sm.proposals.get(id).map(ProposalView::from),
            |v| v.status != ProposalStatus::Open,
            |e| matches!(e, Event::ProposalDecided { id: d, .. } if d == id),
        )
        .await
    }

    /// Reads `what` `id` with `look`; until `done` holds or `wait` runs out,
    /// sleeps until an applied event matching `wakes` and looks again.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn look_until<T>(
        &self,
        what: &'static str,
        id: &str,
        wait: Option<Duration>,
        stale: bool,
        look: impl Fn(&StateMachine) -> Option<T>,
        done: impl Fn(&T) -> bool,
        wakes: impl Fn(&Event) -> bool,
    ) -> Result<T, ServiceError> {
        let wait = check_wait(wait)?;
        let until = tokio::time::Instant::now() + wait;
        // Subscribed before the first look, so no event falls in between.
        let mut events = self.subscribe();
        let mut stale = stale;
        loop {
            let view = self
                .read(stale, &look)
                .await?
                .ok_or_else(|| ServiceError::NotFound {
                    what,
                    id: id.to_string(),
                })?;
            if done(&view) || tokio::time::Instant::now() >= until {
                return Ok(view);
            }
            // Events come from this replica's applies: the next look can be local.
            stale = true;
            wait_for_event(&mut events, until, &wakes).await;
        }
    }

    /// Every proposal, open and decided.
    pub async fn proposals(&self, stale: bool) -> Result<Vec<ProposalView>, ServiceError> {
        self.read(stale, |sm| {
            sm.proposals.values().map(ProposalView::from).collect()
        })
        .await
    }

    /// Creates a barrier on a list of agents or a group (`id` generated when
    /// `None`) and returns it.
    pub async fn create_barrier(
        &self,
        id: Option<String>,
        spec: BarrierSpec,
        request_id: Option<RequestId>,
    ) -> Result<BarrierView, ServiceError> {
        let id = id.unwrap_or_else(|| fresh_id("b"));
        let cmd = CoordCmd::CreateBarrier {
            id: id.clone(),
            spec,
        };
        self.write_ok(Command::Coord(cmd), request_id).await?;
        self.barrier(&id, None, true).await
    }

    /// A barrier; with `wait`, not before it is released or the wait ran out.
    pub async fn barrier(
        &self,
        id: &str,
        wait: Option<Duration>,
        stale: bool,
    ) -> Result<BarrierView, ServiceError> {
        self.look_until(
            "barrier",
            id,
            wait,
            stale,
            |sm| sm.barriers.get(id).map(|b| barrier_view(b, sm)),
            |v| v.released,
            |e| matches!(e, Event::BarrierReleased { id: d } if d == id),
        )
        .await
    }

    /// Every barrier.
    pub async fn barriers(&self, stale: bool) -> Result<Vec<BarrierView>, ServiceError> {
        self.read(stale, |sm| {
            sm.barriers.values().map(|b| barrier_view(b, sm)).collect()
        })
        .await
    }

    /// Removes a barrier.
    pub async fn delete_barrier(&self, id: &str) -> Result<(), ServiceError> {
        let cmd = CoordCmd::DeleteBarrier { id: id.to_string() };
        self.write_ok(Command::Coord(cmd), None).await.map(|_| ())
    }
}

/// Sleeps until an event matching `hit` is applied here, the channel lags (the
/// caller looks at the state again either way), or `until`.
pub(super) async fn wait_for_event(
    events: &mut tokio::sync::broadcast::Receiver<(u64, Event)>,
    until: tokio::time::Instant,
    hit: impl Fn(&Event) -> bool,
) {
    loop {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Ok((_, e))) if hit(&e) => return,
            Ok(Ok(_)) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => return,
            Ok(Err(_)) | Err(_) => return,
        }
    }
}
