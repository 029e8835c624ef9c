//! Tasks through the state machine: submit, route, claim, lease, retry,
//! complete exactly once, dependencies, strategies, and bad input refused
//! without changing anything.

use ed25519_dalek::SigningKey;
use mesh_state::command::*;
use mesh_state::tasks::*;
use mesh_state::{StateError, StateMachine};

struct M {
    sm: StateMachine,
    index: u64,
    now: u64,
    seed: u64,
    events: Vec<Event>,
}

impl M {
    fn new() -> Self {
        M {
            sm: StateMachine::new(),
            index: 0,
            now: 1_000_000,
            seed: 7,
            events: vec![],
        }
    }

    fn apply(&mut self, command: Command) -> Result<Reply, StateError> {
        self.index += 1;
        self.now += 1;
        self.seed += 1;
        let s = Stamped {
            now_ms: self.now,
            seed: self.seed,
            request_id: None,
            command,
        };
        self.sm.apply_with_events(self.index, &s, &mut self.events)
    }

    fn task(&mut self, cmd: TaskCmd) -> Result<TaskReply, StateError> {
        match self.apply(Command::Task(cmd))? {
            Reply::Task(r) => Ok(r),
            other => panic!("not a task reply: {other:?}"),
        }
    }

    fn at(&mut self, now: u64) {
        self.now = now - 1;
        self.apply(Command::Tick).unwrap();
    }

    fn agent(&mut self, id: &str, node: &str, caps: &[&str]) {
        let k = SigningKey::from_bytes(&[id.len() as u8 + 1; 32]);
        self.apply(Command::Coord(CoordCmd::RegisterAgent {
            id: id.into(),
            kind: "worker".into(),
            caps: caps.iter().map(|c| c.to_string()).collect(),
            node: node.into(),
            public_key: k.verifying_key().to_bytes().to_vec(),
            zone: None,
        }))
        .unwrap();
    }

    fn submit(&mut self, specs: Vec<TaskSpec>) -> Result<Vec<String>, StateError> {
        match self.task(TaskCmd::Submit { tasks: specs })? {
            TaskReply::Submitted(v) => Ok(v.into_iter().map(|(id, _)| id).collect()),
            r => panic!("{r:?}"),
        }
    }

    fn claim(&mut self, agent: &str, max: u32) -> Vec<ClaimedTask> {
        self.claim_opts(agent, max, 0)
    }

    fn claim_opts(&mut self, agent: &str, max: u32, wait_ms: u64) -> Vec<ClaimedTask> {
        match self
            .task(TaskCmd::Claim {
                agent: agent.into(),
                max,
                lease_ms: 1_000,
                wait_ms,
                since: self.sm.tasks.start_seq,
            })
            .unwrap()
        {
            TaskReply::Claimed { tasks, .. } => tasks,
            r => panic!("{r:?}"),
        }
    }

    fn complete(&mut self, agent: &str, c: &ClaimedTask) -> Result<(), StateError> {
        self.outcome(agent, &c.id, c.attempt, Ok(b"done".to_vec()), true)
    }

    fn outcome(
        &mut self,
        agent: &str,
        id: &str,
        attempt: u32,
        result: Result<Vec<u8>, String>,
        retryable: bool,
    ) -> Result<(), StateError> {
        match self.task(TaskCmd::Finish {
            agent: agent.into(),
            outcomes: vec![Outcome {
                id: id.into(),
                attempt,
                result,
                retryable,
            }],
            then_claim: None,
        })? {
            TaskReply::Finished { mut outcomes, .. } => outcomes.remove(0),
            r => panic!("{r:?}"),
        }
    }

    fn state(&self, id: &str) -> TaskState {
        self.sm.tasks.tasks[id].state
    }
}

fn spec(id: &str) -> TaskSpec {
    let mut s = TaskSpec::new(Payload::Json(format!("{{\"n\":\"{id}\"}}")));
    s.id = Some(id.into());
    s
}

fn needs(s: &mut TaskSpec, caps: &[&str]) {
    s.needs = caps
        .iter()
        .map(|c| Need {
            name: c.to_string(),
            weight: 1,
        })
        .collect();
}

#[test]
fn a_task_runs_and_completes_once() {
    let mut m = M::new();
    m.agent("a1", "n1", &["sh"]);
    let ids = m.submit(vec![spec("t1")]).unwrap();
    assert_eq!(ids, vec!["t1"]);
    assert_eq!(m.state("t1"), TaskState::Ready);
    let got = m.claim("a1", 5);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id.as_str(), got[0].attempt), ("t1", 1));
    assert_eq!(m.state("t1"), TaskState::Running);
    m.complete("a1", &got[0]).unwrap();
    assert_eq!(m.state("t1"), TaskState::Completed);
    // A second completion is refused: the first valid one won.
    let e = m.complete("a1", &got[0]).unwrap_err();
    assert!(e.to_string().contains("lease lost"), "{e}");
    let t = &m.sm.tasks.tasks["t1"];
    assert_eq!(t.result.as_deref(), Some(&b"done"[..]));
    let states: Vec<TaskState> = t.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        vec![
            TaskState::Ready,
            TaskState::Assigned,
            TaskState::Running,
            TaskState::Completed
        ]
    );
    assert!(
        t.history
            .iter()
            .all(|h| h.at_ms > 0 && !h.reason.is_empty())
    );
    assert_eq!(m.sm.tasks.counters.completed, 1);
}

#[test]
fn ids_are_made_up_deterministically_and_keys_are_idempotent() {
    let run = || {
        let mut m = M::new();
        let mut s = TaskSpec::new(Payload::Bytes(vec![1, 2]));
        s.idempotency_key = Some("job-42".into());
        let first = m.submit(vec![s.clone()]).unwrap();
        let again = m.submit(vec![s]).unwrap();
        assert_eq!(first, again, "the same key returns the first task");
        assert_eq!(m.sm.tasks.tasks.len(), 1);
        first[0].clone()
    };
    let id = run();
    assert!(id.starts_with("t-") && id.len() == 18, "{id}");
    assert_eq!(run(), id, "every replica makes up the same id");
}

#[test]
fn dependencies_run_in_order_and_cycles_are_refused() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    let mut b = spec("b");
    b.deps = vec!["a".into()];
    let mut c = spec("c");
    c.deps = vec!["a".into(), "b".into()];
    // Listed out of order on purpose: the batch is ordered by its dependencies.
    m.submit(vec![c, b, spec("a")]).unwrap();
    assert_eq!(m.state("a"), TaskState::Ready);
    assert_eq!(m.state("b"), TaskState::Pending);
    assert_eq!(m.state("c"), TaskState::Pending);
    let got = m.claim("a1", 10);
    assert_eq!(
        got.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    m.complete("a1", &got[0]).unwrap();
    let got = m.claim("a1", 10);
    assert_eq!(
        got.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    m.complete("a1", &got[0]).unwrap();
    let got = m.claim("a1", 10);
    assert_eq!(
        got.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec!["c"]
    );

    let before = m.sm.tasks.clone();
    let mut x = spec("x");
    x.deps = vec!["y".into()];
    let mut y = spec("y");
    y.deps = vec!["x".into()];
    let e = m.submit(vec![x, y]).unwrap_err();
    assert!(e.to_string().contains("dependency cycle"), "{e}");
    let mut z = spec("z");
    z.deps = vec!["z".into()];
    assert!(
        m.submit(vec![z])
            .unwrap_err()
            .to_string()
            .contains("itself")
    );
    let mut w = spec("w");
    w.deps = vec!["nope".into()];
    assert!(
        m.submit(vec![w])
            .unwrap_err()
            .to_string()
            .contains("does not exist")
    );
    assert_eq!(m.sm.tasks, before, "refused submits change nothing");
}

#[test]
fn a_lost_lease_retries_then_dead_letters_with_every_reason() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    let mut s = spec("t");
    s.retries = Some(1);
    m.submit(vec![s]).unwrap();
    let first = m.claim("a1", 1);
    let t0 = m.now;
    m.at(t0 + 1_000);
    assert_eq!(m.state("t"), TaskState::Ready, "the lease expired");
    // The old attempt's completion is refused.
    let e = m.complete("a1", &first[0]).unwrap_err();
    assert!(e.to_string().contains("lease lost"), "{e}");
    let second = m.claim("a1", 1);
    assert_eq!(second[0].attempt, 2);
    m.outcome("a1", "t", 2, Err("exit status 3".into()), true)
        .unwrap();
    assert_eq!(m.state("t"), TaskState::DeadLetter);
    let t = &m.sm.tasks.tasks["t"];
    let reasons: Vec<&str> = t
        .attempts
        .iter()
        .map(|a| a.outcome.as_deref().unwrap())
        .collect();
    assert!(reasons[0].contains("lease expired"), "{reasons:?}");
    assert!(reasons[1].contains("exit status 3"), "{reasons:?}");
    assert_eq!(m.sm.tasks.dead_letter(), vec!["t"]);
}

#[test]
fn renewing_keeps_the_lease_and_a_lost_one_is_an_error() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    m.agent("a2", "n2", &[]);
    m.submit(vec![spec("t")]).unwrap();
    let got = m.claim("a1", 1);
    for _ in 0..5 {
        let now = m.now + 600;
        m.at(now);
        match m
            .task(TaskCmd::Renew {
                agent: "a1".into(),
                tasks: vec!["t".into()],
            })
            .unwrap()
        {
            TaskReply::Renewed(r) => assert!(r[0].is_ok()),
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(m.state("t"), TaskState::Running);
    match m
        .task(TaskCmd::Renew {
            agent: "a2".into(),
            tasks: vec!["t".into()],
        })
        .unwrap()
    {
        TaskReply::Renewed(r) => {
            assert!(
                r[0].as_ref()
                    .unwrap_err()
                    .to_string()
                    .contains("lease lost")
            )
        }
        r => panic!("{r:?}"),
    }
    m.complete("a1", &got[0]).unwrap();
}

#[test]
fn a_dead_node_sends_its_tasks_elsewhere_now() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    m.agent("a2", "n2", &[]);
    m.submit(vec![spec("t1"), spec("t2")]).unwrap();
    assert_eq!(m.claim("a1", 2).len(), 2);
    m.apply(Command::Coord(CoordCmd::NodeDead { node: "n1".into() }))
        .unwrap();
    assert_eq!(m.state("t1"), TaskState::Ready);
    let got = m.claim("a2", 5);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|t| t.attempt == 2));
    // The dead node's agent can no longer claim or complete.
    let e = m
        .task(TaskCmd::Claim {
            agent: "a1".into(),
            max: 1,
            lease_ms: 1_000,
            wait_ms: 0,
            since: 0,
        })
        .unwrap_err();
    assert!(e.to_string().contains("confirmed dead"), "{e}");
}

#[test]
fn a_waiting_claim_gets_a_task_as_it_is_submitted() {
    let mut m = M::new();
    m.agent("a1", "n1", &["sh"]);
    assert!(m.claim_opts("a1", 4, 30_000).is_empty());
    let since = m.sm.tasks.start_seq;
    let mut s = spec("t");
    needs(&mut s, &["sh"]);
    m.submit(vec![s]).unwrap();
    assert_eq!(
        m.state("t"),
        TaskState::Running,
        "started in the submit itself"
    );
    let delivered = m.sm.tasks.delivered("a1", since);
    assert_eq!(delivered.len(), 1);
    assert_eq!(m.sm.tasks.open["a1"].slots, 3);
}

#[test]
fn capability_routing_respects_the_threshold_and_reports_unroutable() {
    let mut m = M::new();
    m.agent("cpu", "n1", &["sh"]);
    m.agent("gpu", "n2", &["sh", "cuda"]);
    let mut s = spec("t");
    needs(&mut s, &["sh", "cuda"]);
    m.submit(vec![s]).unwrap();
    assert!(
        m.claim("cpu", 1).is_empty(),
        "0.5 is under the 0.7 threshold"
    );
    assert_eq!(m.claim("gpu", 1).len(), 1);

    let mut s = spec("never");
    needs(&mut s, &["quantum"]);
    m.submit(vec![s]).unwrap();
    let t = &m.sm.tasks.tasks["never"];
    assert_eq!(t.state, TaskState::Ready);
    assert!(t.unroutable.as_deref().unwrap().contains("quantum"));
    m.agent("q", "n3", &["quantum"]);
    assert!(m.sm.tasks.tasks["never"].unroutable.is_none());
}

#[test]
fn hash_tasks_go_to_their_owner_node_then_the_next_replica() {
    let mut m = M::new();
    for n in ["n1", "n2", "n3", "n4"] {
        m.agent(&format!("a-{n}"), n, &[]);
    }
    let mut specs = Vec::new();
    for i in 0..20 {
        let mut s = spec(&format!("h{i}"));
        s.route = Some(Route::Hash);
        specs.push(s);
    }
    m.submit(specs).unwrap();
    let ring = mesh_sched::ring::HashRing::with_nodes(128, ["n1", "n2", "n3", "n4"]);
    for n in ["n1", "n2", "n3", "n4"] {
        for t in m.claim(&format!("a-{n}"), 100) {
            assert_eq!(
                ring.owner(t.id.as_bytes()),
                Some(n),
                "{} ran off its owner",
                t.id
            );
        }
    }
    assert_eq!(m.sm.tasks.waiting(), 0);
}

#[test]
fn a_failover_moves_running_and_queued_tasks_off_the_agent_now() {
    let mut m = M::new();
    m.agent("stuck", "n1", &[]);
    m.agent("fresh", "n2", &[]);
    let mut specs = vec![spec("r1")];
    for i in 0..3 {
        // Steal tasks pinned to n1's queue: without the fence they would go
        // straight back to the only agent there.
        let mut s = spec(&format!("q{i}"));
        s.route = Some(Route::Steal);
        s.queue = Some("n1".into());
        specs.push(s);
    }
    m.submit(specs).unwrap();
    let running = m.claim("stuck", 1);
    assert_eq!(running.len(), 1);
    let moved = match m
        .task(TaskCmd::Failover {
            agent: "stuck".into(),
            reason: "no heartbeat for 30 s".into(),
        })
        .unwrap()
    {
        TaskReply::FailedOver(ids) => ids,
        other => panic!("{other:?}"),
    };
    // Its queue starts first (q0 runs); r1 was never its task.
    assert_eq!(moved, vec!["q0", "q1", "q2"], "running first, then queued");
    assert_eq!(moved[0], running[0].id);
    assert!(
        m.sm.tasks
            .queue_depths()
            .get("stuck")
            .is_none_or(|d| *d == 0)
    );
    // The other agent gets them and r1; the running one as its second attempt.
    let got = m.claim("fresh", 10);
    assert_eq!(got.len(), 4);
    let r = got.iter().find(|t| t.id == running[0].id).unwrap();
    assert_eq!(r.attempt, 2);
    // The stuck agent's late report is refused: its lease was lost.
    assert!(m.complete("stuck", &running[0]).is_err());
    // It stays registered; an unknown agent is refused and changes nothing.
    assert!(m.sm.agents.contains_key("stuck"));
    let e = m
        .task(TaskCmd::Failover {
            agent: "ghost".into(),
            reason: "x".into(),
        })
        .unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
}

#[test]
fn an_idle_agent_steals_from_the_longest_queue() {
    let mut m = M::new();
    m.agent("busy", "n1", &[]);
    m.agent("idle", "n2", &[]);
    let specs: Vec<TaskSpec> = (0..6)
        .map(|i| {
            let mut s = spec(&format!("s{i}"));
            s.route = Some(Route::Steal);
            s.queue = Some("n1".into());
            s
        })
        .collect();
    m.submit(specs).unwrap();
    assert_eq!(m.sm.tasks.queue_depths()["busy"], 6);
    let got = m.claim("idle", 3);
    assert_eq!(got.len(), 3);
    assert_eq!(m.sm.tasks.queue_depths()["busy"], 3);
    assert_eq!(m.sm.tasks.counters.stolen, 3);
    let t = &m.sm.tasks.tasks[got[0].id.as_str()];
    assert!(
        t.history
            .iter()
            .any(|h| h.reason.contains("stolen from agent 'busy'"))
    );
}

#[test]
fn an_auction_goes_to_the_best_bid() {
    let mut m = M::new();
    m.agent("a", "n1", &["sh"]);
    m.agent("b", "n2", &["sh"]);
    let mut s = spec("job");
    s.route = Some(Route::Auction);
    needs(&mut s, &["sh"]);
    m.submit(vec![s]).unwrap();
    for (agent, res) in [("a", 0.2), ("b", 0.9)] {
        m.task(TaskCmd::Bid {
            task: "job".into(),
            agent: agent.into(),
            resources: res,
        })
        .unwrap();
    }
    let closes = m.sm.tasks.tasks["job"].auction.as_ref().unwrap().0;
    // The auction was announced, with its closing time, for agents to bid on.
    let announced: Vec<Option<u64>> = m
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Task(t) if t.id == "job" => Some(t.auction_closes_ms),
            _ => None,
        })
        .collect();
    assert_eq!(
        announced,
        [None, Some(closes)],
        "ready, then the announcement"
    );
    m.at(closes);
    let t = &m.sm.tasks.tasks["job"];
    assert_eq!(t.state, TaskState::Assigned);
    assert_eq!(
        t.agent.as_deref(),
        Some("b"),
        "more free resources, all else equal"
    );
    assert_eq!(m.claim("b", 1).len(), 1);
}

#[test]
fn cancelling_takes_the_dependents_along() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    let mut b = spec("b");
    b.deps = vec!["a".into()];
    m.submit(vec![spec("a"), b]).unwrap();
    let got = m.claim("a1", 1);
    match m
        .task(TaskCmd::Cancel {
            id: "a".into(),
            reason: "not needed".into(),
        })
        .unwrap()
    {
        TaskReply::Cancelled(ids) => assert_eq!(ids, vec!["a", "b"]),
        r => panic!("{r:?}"),
    }
    let e = m.complete("a1", &got[0]).unwrap_err();
    assert!(e.to_string().contains("cancelled"), "{e}");
    assert!(
        m.task(TaskCmd::Cancel {
            id: "a".into(),
            reason: String::new()
        })
        .is_err()
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    m.submit(vec![spec("t")]).unwrap();
    let before = m.sm.tasks.clone();
    let mut big = spec("big");
    big.payload = Payload::Bytes(vec![0; MAX_PAYLOAD_BYTES + 1]);
    let cases: Vec<TaskCmd> = vec![
        TaskCmd::Submit {
            tasks: vec![spec("ok"), big],
        },
        TaskCmd::Submit {
            tasks: vec![spec("t")],
        },
        TaskCmd::Submit { tasks: vec![] },
        TaskCmd::Claim {
            agent: "ghost".into(),
            max: 1,
            lease_ms: 1_000,
            wait_ms: 0,
            since: 0,
        },
        TaskCmd::Claim {
            agent: "a1".into(),
            max: 1,
            lease_ms: 1,
            wait_ms: 0,
            since: 0,
        },
        TaskCmd::Cancel {
            id: "nope".into(),
            reason: String::new(),
        },
        TaskCmd::Bid {
            task: "t".into(),
            agent: "a1".into(),
            resources: 0.5,
        },
    ];
    for c in cases {
        assert!(m.task(c.clone()).is_err(), "{c:?} was accepted");
    }
    let mut q = spec("q");
    q.queue = Some("nowhere".into());
    assert!(
        m.submit(vec![q])
            .unwrap_err()
            .to_string()
            .contains("queue 'nowhere'")
    );
    assert_eq!(m.sm.tasks, before);
    // Completing a task one does not hold.
    let e = m.outcome("a1", "t", 1, Ok(vec![]), true).unwrap_err();
    assert!(e.to_string().contains("lease lost"), "{e}");
}

#[test]
fn priorities_come_first_and_retries_before_new_work() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    let mut low = spec("low");
    low.priority = Priority::Low;
    let mut crit = spec("crit");
    crit.priority = Priority::Critical;
    m.submit(vec![low, spec("mid"), crit]).unwrap();
    let order: Vec<String> = m.claim("a1", 3).into_iter().map(|t| t.id).collect();
    assert_eq!(order, vec!["crit", "mid", "low"]);
}

#[test]
fn a_task_started_later_in_the_same_log_entry_is_still_delivered() {
    // Claim cursors count starts, not log indexes: a task started by a submit
    // batched into the same entry as the claim, after it, is still delivered
    // (a log-index cursor would miss it, and it would run unseen until its
    // lease ran out).
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    let claim = TaskCmd::Claim {
        agent: "a1".into(),
        max: 1,
        lease_ms: 1_000,
        wait_ms: 10_000,
        since: 0,
    };
    let submit = TaskCmd::Submit {
        tasks: vec![spec("late")],
    };
    let stamp = |command| Stamped {
        now_ms: m.now + 1,
        seed: 1,
        request_id: None,
        command: Command::Task(command),
    };
    let batch = vec![stamp(claim), stamp(submit)];
    let replies =
        m.sm.apply_batch_with_events(m.index + 1, &batch, &mut m.events);
    let Ok(Reply::Task(TaskReply::Claimed { tasks, cursor })) = &replies[0] else {
        panic!("{replies:?}")
    };
    assert!(tasks.is_empty());
    assert_eq!(m.state("late"), TaskState::Running);
    let d = m.sm.tasks.delivered("a1", *cursor);
    assert_eq!(d.len(), 1, "the next claim from this cursor gets it");
}

#[test]
fn the_mesh_default_strategy_and_hash_replicas_are_settings() {
    let mut m = M::new();
    m.agent("a1", "n1", &[]);
    let bad = m.task(TaskCmd::Configure {
        default_route: None,
        hash_replicas: Some(9),
    });
    assert!(bad.unwrap_err().to_string().contains("hash_replicas 9"));
    assert_eq!(m.sm.tasks.hash_replicas, 3, "refused: unchanged");
    m.task(TaskCmd::Configure {
        default_route: Some(Route::Steal),
        hash_replicas: Some(1),
    })
    .unwrap();
    m.submit(vec![spec("s")]).unwrap();
    let t = &m.sm.tasks.tasks["s"];
    assert_eq!(
        t.route,
        Route::Steal,
        "a task naming no strategy gets the mesh's"
    );
    assert_eq!(t.state, TaskState::Assigned, "queued for the only agent");
    assert_eq!(m.sm.tasks.hash_replicas, 1);
}
