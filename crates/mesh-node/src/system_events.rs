//! The mesh's own events, published on the `mesh.*` system channels to this
//! node's subscribers.
//!
//! Every node derives them from what it sees itself, so they cost no network
//! traffic: membership events from its membership core (`mesh.member.*`,
//! `mesh.topology.updated`, `mesh.mode.changed`), leader changes from its Raft
//! metrics or pBFT view (`mesh.leader.changed`), evidence its pBFT replica
//! holds against a replica that lied (`mesh.pbft.evidence`), and task, proposal, agent and barrier
//! events from the commands its replica applies (`mesh.task.<state>`, ...),
//! which are the same on every replica. Payloads are JSON objects with the
//! observing node in `node`. Nothing is serialized while nobody subscribes.

use mesh_consensus::raft::node_id_of;
use mesh_membership::{EventKind, MemberInfo, MembershipEvent};
use mesh_msg::channel::system;
use serde_json::json;

use crate::consensus::{Engine, MembersView};
use crate::messaging::Messaging;

/// Publishes a membership event (called by the membership loop).
pub fn membership(
    messaging: &Messaging,
    ev: &MembershipEvent,
    members: impl FnOnce() -> Vec<MemberInfo>,
) {
    if !messaging.has_subscribers() {
        return;
    }
    let channel = match ev.kind {
        EventKind::Joined | EventKind::Restarted { .. } | EventKind::Rejoined => {
            system::MEMBER_JOINED
        }
        EventKind::Suspected => system::MEMBER_SUSPECTED,
        EventKind::Dead => system::MEMBER_FAILED,
        EventKind::Left => system::MEMBER_LEFT,
        EventKind::ModeChanged { .. } => system::MODE_CHANGED,
        EventKind::Connected | EventKind::Isolated | EventKind::Renewed => system::TOPOLOGY_UPDATED,
        EventKind::JoinRetry { .. } | EventKind::SoftUpdated { .. } => return,
    };
    let mut body = serde_json::to_value(ev).unwrap_or_default();
    body["node"] = json!(messaging.node());
    publish(messaging, channel, &body);
    if channel != system::TOPOLOGY_UPDATED && channel != system::MODE_CHANGED {
        // Who is in the mesh now, in the states this node sees.
        let list: Vec<_> = members()
            .into_iter()
            .map(|m| json!({"id": m.id, "state": m.state.as_str(), "zone": m.zone}))
            .collect();
        let body = json!({
            "node": messaging.node(),
            "cause": ev.kind.name(),
            "subject": ev.subject,
            "members": list,
        });
        publish(messaging, system::TOPOLOGY_UPDATED, &body);
    }
}

fn publish(messaging: &Messaging, channel: &str, body: &serde_json::Value) {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    messaging.publish_local(channel, bytes);
}

/// Follows the replica's applied events and the Raft leader.
pub fn spawn(engine: Engine, members: MembersView, messaging: Messaging) {
    let mut events = engine.subscribe();
    let m = messaging.clone();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let (index, ev) = match events.recv().await {
                Ok(x) => x,
                Err(RecvError::Lagged(n)) => {
                    if m.has_subscribers() {
                        let body = json!({"node": m.node(), "missed": n});
                        publish(&m, "mesh.events.lagged", &body);
                    }
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            if !m.has_subscribers() {
                continue;
            }
            use mesh_state::Event;
            let (channel, mut body) = match &ev {
                Event::Task(t) => (
                    format!("{}{}", system::TASK_PREFIX, t.state.as_str()),
                    serde_json::to_value(t).unwrap_or_default(),
                ),
                Event::ProposalDecided { .. } => (
                    system::PROPOSAL_DECIDED.to_string(),
                    serde_json::to_value(&ev).unwrap_or_default(),
                ),
                Event::AgentStateChanged { .. } | Event::AgentsOrphaned { .. } => (
                    system::AGENT_STATE.to_string(),
                    serde_json::to_value(&ev).unwrap_or_default(),
                ),
                Event::BarrierReleased { .. } => (
                    system::BARRIER_RELEASED.to_string(),
                    serde_json::to_value(&ev).unwrap_or_default(),
                ),
            };
            if let Some(obj) = body.as_object_mut() {
                obj.insert("node".into(), json!(m.node()));
                obj.insert("log_index".into(), json!(index));
            }
            publish(&m, &channel, &body);
        }
    });
    if let Some(p) = engine.pbft() {
        let mut evidence = p.subscribe_evidence();
        let (m, members) = (messaging.clone(), members.clone());
        tokio::spawn(async move {
            loop {
                let e = match evidence.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let name = e.culprit_node.and_then(|id| {
                    members
                        .borrow()
                        .iter()
                        .find(|x| node_id_of(&x.id) == id)
                        .map(|x| x.id.clone())
                });
                let mut body = serde_json::to_value(&e).unwrap_or_default();
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("node".into(), json!(m.node()));
                    obj.insert("culprit_name".into(), json!(name));
                }
                publish(&m, system::PBFT_EVIDENCE, &body);
            }
        });
    }
    tokio::spawn(async move {
        // Raft's leader and term, or pBFT's primary and view.
        let mut raft = engine.raft().map(|r| r.raft().metrics());
        let mut pbft = engine.pbft().map(|p| p.watch_primary());
        let mut last: Option<(Option<u64>, u64)> = None;
        loop {
            let (leader, term) = match (&mut raft, &mut pbft) {
                (Some(m), _) => {
                    let now = m.borrow_and_update();
                    (now.current_leader, now.current_term)
                }
                (None, Some(p)) => {
                    let (view, primary) = *p.borrow_and_update();
                    (primary, view)
                }
                (None, None) => return,
            };
            if last.is_some_and(|(l, _)| l != leader) && messaging.has_subscribers() {
                let name = leader.and_then(|id| {
                    members
                        .borrow()
                        .iter()
                        .find(|m| node_id_of(&m.id) == id)
                        .map(|m| m.id.clone())
                });
                let body = json!({
                    "node": messaging.node(),
                    "leader": name,
                    "leader_id": leader,
                    "previous_id": last.and_then(|(l, _)| l),
                    "term": term,
                });
                publish(&messaging, system::LEADER_CHANGED, &body);
            }
            last = Some((leader, term));
            let changed = match (&mut raft, &mut pbft) {
                (Some(m), _) => m.changed().await.is_ok(),
                (None, Some(p)) => p.changed().await.is_ok(),
                (None, None) => false,
            };
            if !changed {
                return;
            }
        }
    });
}
