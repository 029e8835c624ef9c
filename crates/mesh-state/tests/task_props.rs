//! Random sequences of task commands, dead nodes and passing time against the
//! state machine; after every step the task table's invariants hold
//! (`TaskTable::check_invariants`: every task in exactly the place its state
//! says, completed at most once, attempts within the budget, never started
//! before its dependencies completed), no acknowledged submit is lost, and no
//! task is reported completed twice.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use mesh_state::command::*;
use mesh_state::tasks::*;
use mesh_state::{StateError, StateMachine};
use proptest::prelude::*;

const AGENTS: [(&str, &str, &[&str]); 4] = [
    ("a0", "n0", &["x"]),
    ("a1", "n0", &["x", "y"]),
    ("a2", "n1", &["y"]),
    ("a3", "n1", &["x", "y"]),
];

#[derive(Debug, Clone)]
enum Op {
    Submit {
        n: usize,
        needs: u8,
        dep: Option<usize>,
        route: u8,
        retries: u32,
    },
    Claim {
        agent: usize,
        max: u32,
        wait: bool,
    },
    Finish {
        agent: usize,
        pick: usize,
        ok: bool,
        retryable: bool,
        stale: bool,
    },
    Renew {
        agent: usize,
    },
    Cancel {
        pick: usize,
    },
    Bid {
        agent: usize,
        pick: usize,
    },
    NodeDead {
        node: usize,
    },
    Failover {
        agent: usize,
    },
    Register {
        agent: usize,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            1usize..4,
            0u8..4,
            proptest::option::of(0usize..64),
            0u8..4,
            0u32..3
        )
            .prop_map(|(n, needs, dep, route, retries)| Op::Submit {
                n,
                needs,
                dep,
                route,
                retries
            }),
        (0usize..4, 0u32..4, any::<bool>()).prop_map(|(agent, max, wait)| Op::Claim {
            agent,
            max,
            wait
        }),
        (
            0usize..4,
            0usize..64,
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(agent, pick, ok, retryable, stale)| Op::Finish {
                agent,
                pick,
                ok,
                retryable,
                stale
            }),
        (0usize..4).prop_map(|agent| Op::Renew { agent }),
        (0usize..64).prop_map(|pick| Op::Cancel { pick }),
        (0usize..4, 0usize..64).prop_map(|(agent, pick)| Op::Bid { agent, pick }),
        (0usize..2).prop_map(|node| Op::NodeDead { node }),
        (0usize..4).prop_map(|agent| Op::Failover { agent }),
        (0usize..4).prop_map(|agent| Op::Register { agent }),
        (0u64..3_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

struct World {
    sm: StateMachine,
    index: u64,
    now: u64,
    submitted: Vec<String>,
    completions: BTreeMap<String, usize>,
}

impl World {
    fn apply(&mut self, command: Command) -> Result<Reply, StateError> {
        self.index += 1;
        self.now += 1;
        let s = Stamped {
            now_ms: self.now,
            seed: self.index,
            request_id: None,
            command,
        };
        self.sm.apply_with_events(self.index, &s, &mut Vec::new())
    }

    fn register(&mut self, i: usize) {
        let (id, node, caps) = AGENTS[i];
        let k = SigningKey::from_bytes(&[i as u8 + 1; 32]);
        self.apply(Command::Coord(CoordCmd::RegisterAgent {
            id: id.into(),
            kind: "w".into(),
            caps: caps.iter().map(|c| c.to_string()).collect(),
            node: node.into(),
            public_key: k.verifying_key().to_bytes().to_vec(),
            zone: None,
        }))
        .unwrap();
    }

    fn held_by(&self, agent: &str) -> Vec<(String, u32)> {
        self.sm
            .tasks
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running && t.agent.as_deref() == Some(agent))
            .map(|t| (t.id.clone(), t.attempt))
            .collect()
    }

    fn step(&mut self, op: &Op) {
        match op.clone() {
            Op::Submit {
                n,
                needs,
                dep,
                route,
                retries,
            } => {
                let specs: Vec<TaskSpec> = (0..n)
                    .map(|_| {
                        let mut s = TaskSpec::new(Payload::Bytes(vec![]));
                        s.needs = match needs {
                            0 => vec![],
                            1 => vec![need("x")],
                            2 => vec![need("y")],
                            _ => vec![need("x"), need("y")],
                        };
                        s.retries = Some(retries);
                        s.route = Some(
                            [Route::Capability, Route::Hash, Route::Auction, Route::Steal]
                                [route as usize],
                        );
                        if let Some(d) = dep
                            && !self.submitted.is_empty()
                        {
                            s.deps = vec![self.submitted[d % self.submitted.len()].clone()];
                        }
                        s
                    })
                    .collect();
                if let Ok(Reply::Task(TaskReply::Submitted(ids))) =
                    self.apply(Command::Task(TaskCmd::Submit { tasks: specs }))
                {
                    self.submitted.extend(ids.into_iter().map(|(id, _)| id));
                }
            }
            Op::Claim { agent, max, wait } => {
                let _ = self.apply(Command::Task(TaskCmd::Claim {
                    agent: AGENTS[agent].0.into(),
                    max,
                    lease_ms: 1_000,
                    wait_ms: if wait { 2_000 } else { 0 },
                    since: 0,
                }));
            }
            Op::Finish {
                agent,
                pick,
                ok,
                retryable,
                stale,
            } => {
                let me = AGENTS[agent].0;
                let held = self.held_by(me);
                let (id, attempt) = if held.is_empty() || stale {
                    // Someone else's or a finished task: must be refused.
                    match self.submitted.get(pick % self.submitted.len().max(1)) {
                        Some(id) => (id.clone(), 1),
                        None => return,
                    }
                } else {
                    held[pick % held.len()].clone()
                };
                let outcome = Outcome {
                    id: id.clone(),
                    attempt,
                    result: if ok { Ok(vec![]) } else { Err("boom".into()) },
                    retryable,
                };
                if let Ok(Reply::Task(TaskReply::Finished { outcomes, .. })) =
                    self.apply(Command::Task(TaskCmd::Finish {
                        agent: me.into(),
                        outcomes: vec![outcome],
                        then_claim: None,
                    }))
                    && outcomes[0].is_ok()
                    && ok
                {
                    *self.completions.entry(id).or_default() += 1;
                }
            }
            Op::Renew { agent } => {
                let me = AGENTS[agent].0;
                let tasks = self.held_by(me).into_iter().map(|(id, _)| id).collect();
                let _ = self.apply(Command::Task(TaskCmd::Renew {
                    agent: me.into(),
                    tasks,
                }));
            }
            Op::Cancel { pick } => {
                if let Some(id) = self.submitted.get(pick % self.submitted.len().max(1)) {
                    let _ = self.apply(Command::Task(TaskCmd::Cancel {
                        id: id.clone(),
                        reason: "test".into(),
                    }));
                }
            }
            Op::Bid { agent, pick } => {
                if let Some(id) = self.submitted.get(pick % self.submitted.len().max(1)) {
                    let _ = self.apply(Command::Task(TaskCmd::Bid {
                        task: id.clone(),
                        agent: AGENTS[agent].0.into(),
                        resources: 0.5,
                    }));
                }
            }
            Op::NodeDead { node } => {
                let _ = self.apply(Command::Coord(CoordCmd::NodeDead {
                    node: format!("n{node}"),
                }));
            }
            Op::Failover { agent } => {
                let _ = self.apply(Command::Task(TaskCmd::Failover {
                    agent: AGENTS[agent].0.into(),
                    reason: "test".into(),
                }));
            }
            Op::Register { agent } => self.register(agent),
            Op::Advance { ms } => {
                self.now += ms;
                let _ = self.apply(Command::Tick);
            }
        }
    }
}

fn need(n: &str) -> Need {
    Need {
        name: n.into(),
        weight: 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn task_invariants_hold_at_every_step(ops in proptest::collection::vec(op(), 1..120)) {
        let mut w = World {
            sm: StateMachine::new(),
            index: 0,
            now: 1_000_000,
            submitted: Vec::new(),
            completions: BTreeMap::new(),
        };
        for i in 0..AGENTS.len() {
            w.register(i);
        }
        for (n, op) in ops.iter().enumerate() {
            w.step(op);
            if let Err(e) = w.sm.tasks.check_invariants() {
                prop_assert!(false, "after step {n} ({op:?}): {e}");
            }
            for id in &w.submitted {
                prop_assert!(w.sm.tasks.tasks.contains(id), "acknowledged task {id} lost");
            }
            for (id, n) in &w.completions {
                prop_assert!(*n <= 1, "task {id} accepted {n} completions");
            }
            // Now and then continue from a snapshot: the restored table (with
            // its id index rebuilt) equals the live one and takes the next steps.
            if n % 10 == 9 {
                let restored = StateMachine::restore(&w.sm.snapshot()).unwrap();
                prop_assert!(restored == w.sm, "a snapshot restored differently after step {n}");
                w.sm = restored;
            }
        }
    }
}
