//! The node's replicated log: opens the Raft engine over the data directory,
//! bootstraps the first node or joins through the seeds, and, on the leader,
//! turns what the membership layer confirmed into consensus actions: keep the
//! voter target (promote healthy learners, replace voters dead long enough) and
//! issue `NodeDead` for nodes confirmed dead that still host agents.
//!
//! Raft frames share the gossip port: the accept loop hands connections whose
//! first frame starts with `'R'` to [`mesh_consensus::raft::net_tcp::serve_connection`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::node::Request;

use mesh_consensus::Ordering;
use mesh_consensus::raft::engine::{PeerHealth, lan_config};
use mesh_consensus::raft::net_tcp::TcpNetwork;
use mesh_consensus::raft::redb_store::RedbLogStore;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering, node_id_of};

use mesh_membership::{MemberInfo, MemberState};
use mesh_state::{Command, CoordCmd};

pub use crate::engine::Engine;

/// The membership view the loop publishes for consensus and the service.
pub type MembersView = watch::Receiver<Arc<Vec<MemberInfo>>>;

/// Where the Raft files live under the data directory.
pub const RAFT_DIR: &str = "raft";

/// Opens the durable log and state under `data_dir/raft` and starts the engine.
pub async fn open_raft(data_dir: &Path, name: &str) -> Result<Engine, String> {
    let dir = data_dir.join(RAFT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = RedbLogStore::open(&dir.join("log.redb")).map_err(|e| e.to_string())?;
    let sm = SmStore::open(&dir).map_err(|e| e.to_string())?;
    let commit = log.commit_index();
    let engine = RaftOrdering::start(
        node_id_of(name),
        lan_config("agent-mesh"),
        TcpNetwork,
        log,
        sm,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Engine::Raft(
        engine.with_forwarding().with_commit_index(commit),
    ))
}

/// Settings of the consensus tasks.
#[derive(Debug, Clone)]
pub struct ConsensusSettings {
    /// Target number of Raft voters (1, 3, 5 or 7).
    pub voters: usize,
    /// A voter confirmed dead this long (ms) is replaced by a healthy learner.
    pub replace_dead_after_ms: u64,
}

/// Raft: bootstraps (no seeds) or joins through the seeds, retrying with
/// backoff until a seed answers. A node that was a member before rejoins too:
/// that updates its address if it changed and lets a removed node come back
/// as a learner. (pBFT's replicas are fixed by the genesis file.)
pub fn spawn_join(engine: Engine, own_addr: SocketAddr, seeds: Vec<SocketAddr>, voters: usize) {
    let Engine::Raft(engine) = engine else {
        return;
    };
    let seeds: Vec<SocketAddr> = seeds.into_iter().filter(|s| *s != own_addr).collect();
    tokio::spawn(async move {
        if seeds.is_empty() {
            match engine.bootstrap_if_new(&own_addr.to_string()).await {
                Ok(true) => tracing::info!("bootstrapped a new replicated log (first node)"),
                Ok(false) => tracing::info!("resuming the replicated log from disk"),
                Err(e) => tracing::error!(error = %e, "cannot bootstrap the replicated log"),
            }
            return;
        }
        let mut backoff = Duration::from_millis(100);
        for attempt in 1u32.. {
            for seed in &seeds {
                match engine
                    .join(&seed.to_string(), &own_addr.to_string(), voters)
                    .await
                {
                    Ok(voter) => {
                        tracing::info!(via = %seed, voter, "joined the replicated log");
                        return;
                    }
                    Err(e) => {
                        if attempt % 10 == 1 {
                            tracing::warn!(via = %seed, attempt, error = %e, "Raft join not accepted yet; retrying")
                        }
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    });
}

/// How the membership view sees each member, as Raft ids. A member whose name
/// is also alive under a newer generation counts as alive.
pub fn health_view(
    members: &[MemberInfo],
    dead_since: &mut BTreeMap<NodeId, Instant>,
) -> BTreeMap<NodeId, PeerHealth> {
    let mut out: BTreeMap<NodeId, PeerHealth> = BTreeMap::new();
    let now = Instant::now();
    for m in members {
        let id = node_id_of(&m.id);
        let h = match m.state {
            MemberState::Alive => PeerHealth::Alive,
            MemberState::Suspect => PeerHealth::Suspect,
            MemberState::Dead | MemberState::Left => {
                // The longer of what the view says and what this task has seen.
                let seen = now.duration_since(*dead_since.entry(id).or_insert(now));
                let for_ms = m.last_change_ms.unwrap_or(0).max(seen.as_millis() as u64);
                PeerHealth::Dead { for_ms }
            }
        };
        let better = matches!(
            (out.get(&id), h),
            (None, _)
                | (Some(PeerHealth::Dead { .. }), _)
                | (Some(PeerHealth::Suspect), PeerHealth::Alive)
        );
        if better {
            out.insert(id, h);
        }
    }
    dead_since.retain(|id, _| matches!(out.get(id), Some(PeerHealth::Dead { .. })));
    out
}

/// Every few seconds, asks members of the Raft configuration that the gossip
/// view does not hold alive to let this node in. This heals a membership view
/// split by restarts (a node restarted without seeds, or one that declared the
/// others dead while they were away), as Serf's reconnect does.
async fn reconnect(
    engine: &Engine,
    view: &[MemberInfo],
    requests: &mpsc::Sender<Request>,
    contacted: &mut BTreeMap<String, Instant>,
) {
    let now = Instant::now();
    for addr in engine.member_addrs().into_values() {
        let alive = view.iter().any(|m| {
            m.addr == addr && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        });
        let recent = contacted
            .get(&addr)
            .is_some_and(|t| now.duration_since(*t) < RECONNECT_EVERY);
        if alive || recent {
            continue;
        }
        if let Ok(sock) = addr.parse::<SocketAddr>() {
            contacted.insert(addr, now);
            let _ = requests.send(Request::Contact(sock)).await;
        }
    }
}

/// How often an unreachable Raft member is asked again.
const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// On the leader, every half second and whenever the membership view changes:
/// keep the voter target, rebalance queued tasks from nodes above 80% of their
/// slots to nodes below 30% (loads as the nodes gossip them), and report
/// confirmed deaths of nodes that host agents (at once: their tasks move on
/// when that report is applied). Stops with the engine.
pub fn spawn_keeper(
    engine: Engine,
    mut members: MembersView,
    requests: mpsc::Sender<Request>,
    cfg: ConsensusSettings,
) {
    tokio::spawn(async move {
        let mut dead_since = BTreeMap::new();
        let mut contacted: BTreeMap<String, Instant> = BTreeMap::new();
        let mut reported_fatal = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = members.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let view = members.borrow_and_update().clone();
            let health = health_view(&view, &mut dead_since);
            reconnect(&engine, &view, &requests, &mut contacted).await;
            if let (Some(why), false) = (engine.status().fatal, reported_fatal) {
                reported_fatal = true;
                tracing::error!(%why, "the replicated log stopped: this node orders nothing until restarted (/healthz reports 503)");
            }
            if !engine.is_leader() {
                continue;
            }
            if let Some(raft) = engine.raft()
                && let Err(e) = raft
                    .reconcile_voters(&health, cfg.voters, cfg.replace_dead_after_ms)
                    .await
            {
                tracing::warn!(error = %e, "cannot change the voters yet");
            }
            if proposal_past_deadline(&engine) {
                // Proposals expire when a command is applied at or after their
                // deadline; when nothing else is written, a tick is that command.
                if let Err(e) = engine.propose(Command::Tick, None).await {
                    tracing::debug!(error = %e, "tick not ordered");
                }
            }
            let plan = {
                let state = engine.state();
                let sm = state.read().unwrap_or_else(|e| e.into_inner());
                crate::service::tasks::rebalance_plan(&view, &sm)
            };
            for cmd in plan {
                // Refused if the task started meanwhile: nothing to undo.
                let _ = engine.propose(Command::Task(cmd), None).await;
            }
            for node in orphaning_nodes(&engine, &view) {
                let cmd = Command::Coord(CoordCmd::NodeDead { node: node.clone() });
                match engine.propose(cmd, None).await {
                    Ok(_) => tracing::info!(%node, "marked the agents of a dead node"),
                    Err(e) => {
                        tracing::warn!(%node, error = %e, "cannot mark a dead node's agents yet")
                    }
                }
            }
        }
    });
}

/// Names of nodes the membership layer confirms dead (or left), not alive under
/// any generation, that still host agents not marked yet.
fn orphaning_nodes(engine: &Engine, members: &[MemberInfo]) -> Vec<String> {
    let gone: std::collections::BTreeSet<&str> = members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Dead | MemberState::Left))
        .map(|m| m.id.as_str())
        .filter(|name| {
            !members.iter().any(|m| {
                m.id == *name && matches!(m.state, MemberState::Alive | MemberState::Suspect)
            })
        })
        .collect();
    if gone.is_empty() {
        return Vec::new();
    }
    let state = engine.state();
    let sm = state.read().unwrap_or_else(|e| e.into_inner());
    gone.into_iter()
        .filter(|name| {
            sm.agents
                .values()
                .any(|a| a.node == *name && a.node_dead_at_ms.is_none())
        })
        .map(str::to_string)
        .collect()
}

/// On the leader: a `Tick` as soon as something in the task table falls due
/// (a lease or an attempt's timeout runs out, an auction closes), since those
/// happen only when a command is applied at or after that time. Checks at least
/// every 200 ms, and sleeps until the next due time when it is sooner.
pub fn spawn_task_clock(engine: Engine) {
    tokio::spawn(async move {
        loop {
            let due = {
                let state = engine.state();
                let sm = state.read().unwrap_or_else(|e| e.into_inner());
                sm.tasks.next_due()
            };
            let now = crate::service::unix_ms();
            if let Some(d) = due
                && d <= now
                && engine.is_leader()
                && let Err(e) = engine.propose(Command::Tick, None).await
            {
                tracing::debug!(error = %e, "task tick not ordered");
            }
            let wait_ms = due
                .map(|d| d.saturating_sub(crate::service::unix_ms()))
                .unwrap_or(200)
                .clamp(2, 200);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        }
    });
}

/// True if an open proposal's deadline has passed by the wall clock.
fn proposal_past_deadline(engine: &Engine) -> bool {
    let now = crate::service::unix_ms();
    let state = engine.state();
    let sm = state.read().unwrap_or_else(|e| e.into_inner());
    sm.proposals
        .values()
        .any(|p| p.status == mesh_state::proposals::ProposalStatus::Open && p.deadline_ms <= now)
}
