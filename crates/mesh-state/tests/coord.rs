//! Agents, proposals with signed votes, and barriers.

use ed25519_dalek::{Signer, SigningKey};
use mesh_state::agents::AgentState;
use mesh_state::barriers::BarrierSpec;
use mesh_state::command::*;
use mesh_state::proposals::{ProposalStatus, vote_signing_bytes};
use mesh_state::{StateError, StateMachine};

struct M {
    sm: StateMachine,
    index: u64,
    now: u64,
    events: Vec<Event>,
}

fn key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

impl M {
    fn new() -> Self {
        M {
            sm: StateMachine::new(),
            index: 0,
            now: 10_000,
            events: vec![],
        }
    }
    fn run(&mut self, cmd: CoordCmd) -> Result<Reply, StateError> {
        self.index += 1;
        self.now += 10;
        let s = Stamped {
            now_ms: self.now,
            seed: 0,
            request_id: None,
            command: Command::Coord(cmd),
        };
        self.sm.apply_with_events(self.index, &s, &mut self.events)
    }
    fn tick(&mut self, now: u64) {
        self.index += 1;
        self.now = now;
        let s = Stamped {
            now_ms: now,
            seed: 0,
            request_id: None,
            command: Command::Tick,
        };
        self.sm
            .apply_with_events(self.index, &s, &mut self.events)
            .unwrap();
    }
    fn agent(&mut self, id: &str, kind: &str, node: &str, k: u8) {
        let public_key = key(k).verifying_key().to_bytes().to_vec();
        let cmd = CoordCmd::RegisterAgent {
            id: id.into(),
            kind: kind.into(),
            caps: vec!["rust".into()],
            node: node.into(),
            public_key,
            zone: None,
        };
        self.run(cmd).unwrap();
    }
    fn vote(
        &mut self,
        p: &str,
        agent: &str,
        k: u8,
        approve: bool,
        seq: u64,
    ) -> Result<Reply, StateError> {
        let reason = Some("looks right".to_string());
        let sig = key(k)
            .sign(&vote_signing_bytes(
                p,
                agent,
                approve,
                reason.as_deref(),
                seq,
            ))
            .to_bytes()
            .to_vec();
        self.run(CoordCmd::Vote {
            proposal_id: p.into(),
            agent_id: agent.into(),
            approve,
            reason,
            seq,
            signature: sig,
        })
    }
    fn propose(
        &mut self,
        id: &str,
        voters: Option<Vec<&str>>,
        threshold: Option<f64>,
    ) -> Result<Reply, StateError> {
        let deadline_ms = self.now + 60_000;
        self.run(CoordCmd::Propose {
            id: id.into(),
            body: r#"{"merge":"pr-12"}"#.into(),
            proposer: Some("a1".into()),
            voters: voters.map(|v| v.into_iter().map(String::from).collect()),
            threshold,
            deadline_ms,
        })
    }
    fn status(&self, p: &str) -> ProposalStatus {
        self.sm.proposals[p].status
    }
}

fn three_agents() -> M {
    let mut m = M::new();
    m.agent("a1", "coder", "node-1", 1);
    m.agent("a2", "coder", "node-2", 2);
    m.agent("a3", "reviewer", "node-2", 3);
    m
}

#[test]
fn two_of_three_signed_approvals_decide_by_default() {
    let mut m = three_agents();
    m.propose("p1", None, None).unwrap();
    assert_eq!(
        m.vote("p1", "a1", 1, true, 1),
        Ok(Reply::Bulk(b"open".to_vec()))
    );
    assert_eq!(
        m.vote("p1", "a2", 2, true, 1),
        Ok(Reply::Bulk(b"approved".to_vec()))
    );
    let p = &m.sm.proposals["p1"];
    assert_eq!(p.status, ProposalStatus::Approved);
    assert_eq!(p.decision_latency_ms(), Some(20));
    let decided = m
        .events
        .iter()
        .find(|e| matches!(e, Event::ProposalDecided { .. }))
        .unwrap();
    assert_eq!(
        decided,
        &Event::ProposalDecided {
            id: "p1".into(),
            status: ProposalStatus::Approved,
            latency_ms: 20,
            participation: 2.0 / 3.0
        }
    );
    // After the decision no vote counts.
    assert!(matches!(
        m.vote("p1", "a3", 3, false, 1),
        Err(StateError::Conflict(_))
    ));
}

#[test]
fn rejection_as_soon_as_the_threshold_is_out_of_reach() {
    let mut m = three_agents();
    m.propose("p", Some(vec!["a1", "a2", "a3"]), Some(1.0))
        .unwrap();
    assert_eq!(
        m.vote("p", "a3", 3, false, 1),
        Ok(Reply::Bulk(b"rejected".to_vec()))
    );
}

#[test]
fn expiry_at_the_deadline() {
    let mut m = three_agents();
    m.propose("p", None, None).unwrap();
    let deadline = m.sm.proposals["p"].deadline_ms;
    m.tick(deadline - 1);
    assert_eq!(m.status("p"), ProposalStatus::Open);
    m.tick(deadline);
    assert_eq!(m.status("p"), ProposalStatus::Expired);
    assert!(matches!(
        m.vote("p", "a1", 1, true, 1),
        Err(StateError::Conflict(_))
    ));
}

#[test]
fn bad_signatures_and_ineligible_voters_change_nothing() {
    let mut m = three_agents();
    m.propose("p", Some(vec!["a1", "a2"]), None).unwrap();
    let before = m.sm.proposals["p"].clone();
    // a2's vote signed with a1's key.
    assert_eq!(m.vote("p", "a2", 1, true, 1), Err(StateError::BadSignature));
    // A signature over other bytes (a tampered reason).
    let sig = key(1)
        .sign(&vote_signing_bytes("p", "a1", true, Some("x"), 1))
        .to_bytes()
        .to_vec();
    let tampered = CoordCmd::Vote {
        proposal_id: "p".into(),
        agent_id: "a1".into(),
        approve: true,
        reason: Some("y".into()),
        seq: 1,
        signature: sig,
    };
    assert!(m.run(tampered).is_err());
    assert!(matches!(
        m.vote("p", "a3", 3, true, 1),
        Err(StateError::Forbidden(_))
    ));
    assert!(matches!(
        m.vote("p", "ghost", 9, true, 1),
        Err(StateError::NotFound { .. })
    ));
    assert_eq!(m.sm.proposals["p"], before);
}

#[test]
fn a_vote_may_change_before_the_decision_but_never_be_replayed() {
    let mut m = three_agents();
    m.propose("p", Some(vec!["a1", "a2", "a3"]), Some(1.0))
        .unwrap();
    m.vote("p", "a1", 1, true, 1).unwrap();
    m.vote("p", "a2", 2, true, 1).unwrap();
    // a1 changes its mind... then someone replays a1's first (approve) vote.
    assert!(matches!(
        m.vote("p", "a1", 1, true, 1),
        Err(StateError::Conflict(_))
    ));
    assert_eq!(
        m.vote("p", "a1", 1, false, 2),
        Ok(Reply::Bulk(b"rejected".to_vec()))
    );
}

#[test]
fn proposal_input_is_checked() {
    let mut m = three_agents();
    assert!(matches!(
        m.propose("p", Some(vec!["nobody"]), None),
        Err(StateError::NotFound { .. })
    ));
    assert!(matches!(
        m.propose("p", None, Some(1.5)),
        Err(StateError::Invalid(_))
    ));
    assert!(matches!(
        m.propose("bad id!", None, None),
        Err(StateError::Invalid(_))
    ));
    m.propose("p", None, None).unwrap();
    assert!(matches!(
        m.propose("p", None, None),
        Err(StateError::Conflict(_))
    ));
    let mut empty = M::new();
    assert!(
        matches!(empty.propose("p", None, None), Err(StateError::Invalid(_))),
        "no agents, no voters"
    );
}

#[test]
fn agents_register_change_state_and_lose_their_node() {
    let mut m = three_agents();
    // Re-registering with another key is refused (no hijacking an id).
    let other = key(7).verifying_key().to_bytes().to_vec();
    let hijack = CoordCmd::RegisterAgent {
        id: "a1".into(),
        kind: "coder".into(),
        caps: vec![],
        node: "node-9".into(),
        public_key: other,
        zone: None,
    };
    assert!(matches!(m.run(hijack), Err(StateError::Conflict(_))));
    let bad_key = CoordCmd::RegisterAgent {
        id: "a9".into(),
        kind: "coder".into(),
        caps: vec![],
        node: "n".into(),
        public_key: vec![1, 2, 3],
        zone: None,
    };
    assert!(matches!(m.run(bad_key), Err(StateError::Invalid(_))));
    m.run(CoordCmd::SetAgentState {
        id: "a1".into(),
        state: AgentState::Waiting,
    })
    .unwrap();
    assert_eq!(m.sm.agents["a1"].state, AgentState::Waiting);
    assert_eq!(
        m.run(CoordCmd::NodeDead {
            node: "node-2".into()
        }),
        Ok(Reply::Int(2))
    );
    assert!(
        m.sm.agents["a2"].node_dead_at_ms.is_some() && m.sm.agents["a1"].node_dead_at_ms.is_none()
    );
    assert!(m.events.contains(&Event::AgentsOrphaned {
        node: "node-2".into(),
        agents: vec!["a2".into(), "a3".into()]
    }));
    assert_eq!(
        m.run(CoordCmd::NodeDead {
            node: "node-2".into()
        }),
        Ok(Reply::Int(0)),
        "marked once"
    );
}

#[test]
fn barriers_release_when_their_agents_complete() {
    let mut m = three_agents();
    m.run(CoordCmd::CreateBarrier {
        id: "b1".into(),
        spec: BarrierSpec::Agents(vec!["a1".into(), "a3".into()]),
    })
    .unwrap();
    m.run(CoordCmd::CreateBarrier {
        id: "coders".into(),
        spec: BarrierSpec::Group {
            kind: "coder".into(),
            count: 2,
        },
    })
    .unwrap();
    let released = |m: &M| {
        m.events
            .iter()
            .filter_map(|e| {
                if let Event::BarrierReleased { id } = e {
                    Some(id.clone())
                } else {
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    m.run(CoordCmd::SetAgentState {
        id: "a1".into(),
        state: AgentState::Complete,
    })
    .unwrap();
    assert!(released(&m).is_empty());
    m.run(CoordCmd::SetAgentState {
        id: "a3".into(),
        state: AgentState::Complete,
    })
    .unwrap();
    assert_eq!(released(&m), vec!["b1".to_string()]);
    m.run(CoordCmd::SetAgentState {
        id: "a2".into(),
        state: AgentState::Complete,
    })
    .unwrap();
    assert_eq!(released(&m), vec!["b1".to_string(), "coders".to_string()]);
    assert!(m.sm.barriers["coders"].released_at_ms.is_some());
    // A barrier already satisfied releases at creation.
    m.run(CoordCmd::CreateBarrier {
        id: "late".into(),
        spec: BarrierSpec::Agents(vec!["a2".into()]),
    })
    .unwrap();
    assert_eq!(released(&m).last().map(String::as_str), Some("late"));
    assert!(matches!(
        m.run(CoordCmd::CreateBarrier {
            id: "z".into(),
            spec: BarrierSpec::Group {
                kind: "coder".into(),
                count: 0
            }
        }),
        Err(StateError::Invalid(_))
    ));
}

#[test]
fn coordination_state_survives_a_snapshot() {
    let mut m = three_agents();
    m.propose("p", None, None).unwrap();
    m.vote("p", "a1", 1, true, 1).unwrap();
    let restored = StateMachine::restore(&m.sm.snapshot()).unwrap();
    assert_eq!(restored, m.sm);
}
