//! Whole Raft nodes under seeded faults, many seeds, in virtual time.
//!
//! Each seed runs 3 or 5 nodes on the in-process network with seeded delay
//! (reordering), lost requests and lost replies, plus a schedule of partitions
//! (a node cut off), crashes with restarts and whole-cluster power losses (the
//! vote and the flushed part of the log survive, as they do on disk: appends
//! become durable 0-3 ms after they are made and a crash loses the rest; the
//! state machine is rebuilt from the log). Clients write
//! and read a few keys through whichever node they pick throughout. The tokio
//! clock is paused, so timeouts and delays cost no real time: hundreds of seeds
//! take seconds. Checked, for every seed:
//!
//! - election safety: at most one leader per term (Raft §5.2; openraft runs in
//!   standard mode, feature `single-term-leader`);
//! - log matching: two logs with an entry of the same index and term hold the
//!   same entry (§5.3);
//! - state machine safety: every committed index holds the same entry on every
//!   node, and all replicas end in the same state (§5.4.3);
//! - linearizability of each key's history (Wing & Gong, with unknown outcomes
//!   for writes that timed out), which also means no acknowledged write is lost.
//!
//! A failure names its seed: `MESH_RAFT_SIM_SEED=S cargo test -p mesh-consensus
//! --test raft_sim` replays the fault schedule (openraft's own election timers
//! are randomised by it, so a replay is close, not bit-identical).
//! `MESH_RAFT_SIM_SEEDS=N` runs N seeds (default 200).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_consensus::Ordering;
use mesh_consensus::raft::engine::lan_config;
use mesh_consensus::raft::log_store::MemLogStore;
use mesh_consensus::raft::net_mem::MemRouter;
use mesh_consensus::raft::sm_store::SmStore;
use mesh_consensus::raft::{NodeId, RaftOrdering, TypeConfig};
use mesh_sim::linearizability::{Operation, RegisterOp, check_register};
use mesh_state::Command;
use openraft::{BasicNode, Entry, RaftLogReader, ServerState};
use tokio::time::Instant;

mod common;
use common::{History, Leaders, recorded_read, recorded_write};

/// xorshift64*: the seeded schedule.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Sim {
    router: MemRouter,
    logs: BTreeMap<NodeId, MemLogStore>,
    nodes: Arc<Mutex<BTreeMap<NodeId, RaftOrdering>>>,
    leaders: Leaders,
}

impl Sim {
    async fn start_node(&self, id: NodeId) -> Result<(), String> {
        let o = RaftOrdering::start(
            id,
            lan_config("sim"),
            self.router.network(id),
            self.logs[&id].clone(),
            SmStore::new(),
        )
        .await
        .map_err(|e| format!("node {id} cannot start from its log: {e}"))?;
        self.router.add(id, o.raft().clone());
        common::watch_leaders(&o, self.leaders.clone());
        self.nodes.lock().unwrap().insert(id, o);
        Ok(())
    }

    async fn crash(&self, id: NodeId) {
        self.router.remove(id);
        let o = self.nodes.lock().unwrap().remove(&id);
        if let Some(o) = o {
            let _ = o.raft().shutdown().await;
        }
        // What the disk had not made durable is gone.
        self.logs[&id].lose_unflushed();
    }

    fn node(&self, id: NodeId) -> Option<RaftOrdering> {
        self.nodes.lock().unwrap().get(&id).cloned()
    }
}

/// One client: writes and reads keys k0..k2 through nodes it picks at random.
async fn client(
    id: u64,
    seed: u64,
    ids: Vec<NodeId>,
    nodes: Arc<Mutex<BTreeMap<NodeId, RaftOrdering>>>,
    history: History,
    start: Instant,
    until: Instant,
) {
    let mut rng = Rng::new(seed ^ (id << 32));
    let now = || start.elapsed().as_micros() as u64;
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20 + rng.next(60))).await;
        n += 1;
        let key = format!("k{}", rng.next(3));
        let target = ids[rng.next(ids.len() as u64) as usize];
        let Some(o) = nodes.lock().unwrap().get(&target).cloned() else {
            continue;
        };
        let limit = Duration::from_millis(800);
        if rng.next(2) == 0 {
            let value = format!("c{id}-{n}").into_bytes();
            recorded_write(&o, &key, value, limit, now, &history).await;
        } else {
            recorded_read(&o, &key, limit, now, &history).await;
        }
    }
}

/// What task agents saw acknowledged: submitted ids, and accepted completions.
#[derive(Default)]
struct TaskLog {
    submitted: BTreeSet<String>,
    completions: BTreeMap<String, usize>,
}

/// A task agent: through nodes it picks at random, submits small batches
/// (some depending on earlier tasks), claims for one of three agents under
/// short leases, and completes, fails or abandons what it holds.
async fn task_agent(
    id: u64,
    seed: u64,
    ids: Vec<NodeId>,
    nodes: Arc<Mutex<BTreeMap<NodeId, RaftOrdering>>>,
    log: Arc<Mutex<TaskLog>>,
    until: Instant,
) {
    use mesh_state::tasks::{Outcome, Payload, TaskCmd, TaskReply, TaskSpec};
    let mut rng = Rng::new(seed ^ (id << 40) ^ 0x7a5c);
    let agent = format!("agent-{id}");
    let mut held: Vec<(String, u32)> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10 + rng.next(50))).await;
        let target = ids[rng.next(ids.len() as u64) as usize];
        let Some(o) = nodes.lock().unwrap().get(&target).cloned() else {
            continue;
        };
        let cmd = match rng.next(3) {
            0 => {
                let known: Vec<String> = log.lock().unwrap().submitted.iter().cloned().collect();
                let tasks = (0..1 + rng.next(3))
                    .map(|_| {
                        n += 1;
                        let mut t = TaskSpec::new(Payload::Bytes(vec![]));
                        t.id = Some(format!("t{id}-{n}"));
                        t.retries = Some(rng.next(3) as u32);
                        if !known.is_empty() && rng.next(3) == 0 {
                            t.deps = vec![known[rng.next(known.len() as u64) as usize].clone()];
                        }
                        t
                    })
                    .collect();
                TaskCmd::Submit { tasks }
            }
            1 if !held.is_empty() => {
                let (task, attempt) = held.swap_remove(rng.next(held.len() as u64) as usize);
                let result = match rng.next(4) {
                    0 => Err("failed".to_string()),
                    // Abandoned: the lease runs out and the task goes back.
                    1 => continue,
                    _ => Ok(vec![]),
                };
                TaskCmd::Finish {
                    agent: agent.clone(),
                    outcomes: vec![Outcome {
                        id: task,
                        attempt,
                        result,
                        retryable: true,
                    }],
                    then_claim: None,
                }
            }
            _ => TaskCmd::Claim {
                agent: agent.clone(),
                max: 2,
                lease_ms: 300,
                wait_ms: 0,
                since: 0,
            },
        };
        let finished = match &cmd {
            TaskCmd::Finish { outcomes, .. } => {
                Some((outcomes[0].id.clone(), outcomes[0].result.is_ok()))
            }
            _ => None,
        };
        let r = tokio::time::timeout(
            Duration::from_millis(800),
            o.propose(Command::Task(cmd), None),
        )
        .await;
        let Ok(Ok(applied)) = r else { continue };
        match applied.reply {
            Ok(mesh_state::Reply::Task(TaskReply::Submitted(v))) => {
                log.lock()
                    .unwrap()
                    .submitted
                    .extend(v.into_iter().map(|(id, _)| id));
            }
            Ok(mesh_state::Reply::Task(TaskReply::Claimed { tasks, .. })) => {
                held = tasks.into_iter().map(|t| (t.id, t.attempt)).collect();
            }
            Ok(mesh_state::Reply::Task(TaskReply::Finished { outcomes, .. })) => {
                if let (Some((task, true)), Some(Ok(()))) = (finished, outcomes.first()) {
                    *log.lock().unwrap().completions.entry(task).or_default() += 1;
                }
            }
            _ => {}
        }
    }
}

async fn entries(log: &MemLogStore) -> BTreeMap<u64, Entry<TypeConfig>> {
    let mut l = log.clone();
    l.try_get_log_entries(0..)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.log_id.index, e))
        .collect()
}

/// Runs one seed; returns a summary line, or what broke.
async fn run_seed(seed: u64) -> Result<String, String> {
    let mut rng = Rng::new(seed);
    let size = if seed.is_multiple_of(2) { 3 } else { 5 };
    let ids: Vec<NodeId> = (1..=size).collect();
    let router = MemRouter::new();
    let loss = rng.next(8) as f64 / 100.0; // 0-7 % each way
    let max_delay_ms = 1 + rng.next(15);
    router.set_faults(loss, max_delay_ms, seed);
    let sim = Sim {
        router,
        // Appends are durable 0-3 ms after they are made, in order; a crash
        // loses what was not (see `crash`).
        logs: ids
            .iter()
            .map(|i| (*i, MemLogStore::with_flush_delay(3, seed ^ *i)))
            .collect(),
        nodes: Arc::default(),
        leaders: Arc::default(),
    };
    for &id in &ids {
        sim.start_node(id).await?;
    }
    let members: BTreeMap<NodeId, BasicNode> = ids
        .iter()
        .map(|i| (*i, BasicNode::new(format!("n{i}"))))
        .collect();
    sim.node(1)
        .unwrap()
        .raft()
        .initialize(members)
        .await
        .map_err(|e| e.to_string())?;

    // Three task agents, registered before the faults start.
    for a in 0..3u64 {
        let key = ed25519_dalek::SigningKey::from_bytes(&[a as u8 + 1; 32]);
        let cmd = Command::Coord(mesh_state::CoordCmd::RegisterAgent {
            id: format!("agent-{a}"),
            kind: "sim".into(),
            caps: vec![],
            node: format!("n{}", 1 + a % size),
            public_key: key.verifying_key().to_bytes().to_vec(),
            zone: None,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = ids.iter().find_map(|i| {
                sim.node(*i)
                    .filter(|o| o.raft().metrics().borrow().state == ServerState::Leader)
            });
            if let Some(l) = leader
                && l.propose(cmd.clone(), None).await.is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("could not register the task agents".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let task_log: Arc<Mutex<TaskLog>> = Arc::default();

    let history: History = Arc::default();
    let start = Instant::now();
    let until = start + Duration::from_secs(12);
    let agents: Vec<_> = (0..3)
        .map(|a| {
            tokio::spawn(task_agent(
                a,
                seed,
                ids.clone(),
                sim.nodes.clone(),
                task_log.clone(),
                until,
            ))
        })
        .collect();
    let clients: Vec<_> = (0..3)
        .map(|c| {
            tokio::spawn(client(
                c,
                seed,
                ids.clone(),
                sim.nodes.clone(),
                history.clone(),
                start,
                until,
            ))
        })
        .collect();

    // The fault schedule: cut a node off or crash it, then heal or restart it.
    let (mut isolations, mut crashes) = (0, 0);
    while Instant::now() < until - Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(300 + rng.next(700))).await;
        let victim = ids[rng.next(size) as usize];
        let down_ms = 200 + rng.next(1800);
        match rng.next(8) {
            0 => {
                isolations += 1;
                sim.router.isolate(victim);
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                sim.router.heal(victim);
            }
            1 | 2 => {
                crashes += 1;
                sim.crash(victim).await;
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                sim.start_node(victim).await?;
            }
            3 => {
                // Power loss: every node at once; only what is durable survives.
                crashes += size;
                for &id in &ids {
                    sim.crash(id).await;
                }
                tokio::time::sleep(Duration::from_millis(down_ms / 4)).await;
                for &id in &ids {
                    sim.start_node(id).await?;
                }
            }
            4 | 5 => {
                isolations += 1;
                sim.router.isolate(victim);
                tokio::time::sleep(Duration::from_millis(down_ms)).await;
                sim.router.heal(victim);
            }
            _ => {}
        }
    }
    for c in clients.into_iter().chain(agents) {
        c.await.map_err(|e| e.to_string())?;
    }

    // Heal: no more faults; a final write through the leader settles every replica.
    sim.router.set_faults(0.0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let final_index =
        loop {
            let leader = ids.iter().find_map(|i| {
                sim.node(*i)
                    .filter(|o| o.raft().metrics().borrow().state == ServerState::Leader)
            });
            if let Some(l) = leader
                && let Ok(Ok(a)) =
                    tokio::time::timeout(Duration::from_secs(2), l.propose(Command::Tick, None))
                        .await
            {
                break a.index;
            }
            if Instant::now() > deadline {
                let views: Vec<String> = ids
                .iter()
                .map(|i| match sim.node(*i) {
                    Some(o) => {
                        let m = o.raft().metrics().borrow().clone();
                        format!(
                            "n{i}: {:?} term {} leader {:?} last log {:?} applied {:?} voters {:?}",
                            m.state,
                            m.current_term,
                            m.current_leader,
                            m.last_log_index,
                            m.last_applied.map(|l| l.index),
                            m.membership_config.membership().voter_ids().collect::<Vec<_>>()
                        )
                    }
                    None => format!("n{i}: down"),
                })
                .collect();
                return Err(format!(
                    "no leader accepting writes 30 s after the faults stopped:\n  {}",
                    views.join("\n  ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
    for &id in &ids {
        let o = sim.node(id).ok_or("node missing at the end")?;
        o.raft()
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(Some(final_index), "settle")
            .await
            .map_err(|e| format!("node {id} did not catch up: {e}"))?;
    }

    // Election safety.
    for (term, who) in sim.leaders.lock().unwrap().iter() {
        if who.len() > 1 {
            return Err(format!("term {term} had leaders {who:?}"));
        }
    }
    // Log matching and state machine safety.
    let mut logs = BTreeMap::new();
    for &id in &ids {
        logs.insert(id, entries(&sim.logs[&id]).await);
    }
    for (a, la) in &logs {
        for (b, lb) in &logs {
            for (index, ea) in la {
                if let Some(eb) = lb.get(index)
                    && ea.log_id == eb.log_id
                    && ea != eb
                {
                    return Err(format!(
                        "log matching: nodes {a} and {b} differ at index {index} of the same term: {ea:?} vs {eb:?}"
                    ));
                }
                if *index <= final_index && lb.get(index).is_some_and(|eb| eb != ea) {
                    return Err(format!(
                        "state machine safety: nodes {a} and {b} committed different entries at {index}"
                    ));
                }
            }
        }
    }
    // Tasks: every replica's table keeps its invariants (completed at most once,
    // attempts within budget, dependencies first, every task where its state
    // says); no acknowledged submit is lost; an accepted completion is final.
    let (tasks, completed, dead_lettered) = {
        let o = sim.node(ids[0]).unwrap();
        let state = o.state();
        let sm = state.read().unwrap();
        sm.tasks
            .check_invariants()
            .map_err(|e| format!("task invariant: {e}"))?;
        let log = task_log.lock().unwrap();
        for id in &log.submitted {
            if !sm.tasks.tasks.contains(id) {
                return Err(format!("acknowledged task {id} lost"));
            }
        }
        for (id, n) in &log.completions {
            let t = &sm.tasks.tasks[id];
            if *n > 1 || t.state != mesh_state::tasks::TaskState::Completed {
                return Err(format!(
                    "task {id}: {n} accepted completions, now {:?}",
                    t.state
                ));
            }
        }
        let c = &sm.tasks.counters;
        (sm.tasks.tasks.len(), c.completed, c.dead_lettered)
    };
    let digests: BTreeSet<u64> = ids
        .iter()
        .map(|i| sim.node(*i).unwrap().state().read().unwrap().digest())
        .collect();
    if digests.len() != 1 {
        return Err(format!("replicas differ at the end: {digests:?}"));
    }
    // Linearizability per key, with a final read of each key appended.
    let mut ops = 0;
    let mut h = history.lock().unwrap().clone();
    let leader = ids
        .iter()
        .find_map(|i| {
            sim.node(*i)
                .filter(|o| o.raft().metrics().borrow().state == ServerState::Leader)
        })
        .ok_or("no leader for the final reads")?;
    drop(leader);
    let end = start.elapsed().as_micros() as u64 + 1;
    let any = sim.node(ids[0]).unwrap();
    for k in 0..3 {
        let key = format!("k{k}");
        let value = any
            .state()
            .read()
            .unwrap()
            .keyspace
            .get_string(key.as_bytes(), 0)
            .unwrap()
            .map(<[u8]>::to_vec);
        h.entry(key).or_default().push(Operation {
            call: end,
            ret: Some(end + 1),
            op: RegisterOp::Read(value),
        });
    }
    for (key, key_ops) in &h {
        ops += key_ops.len();
        match check_register(key_ops) {
            Ok(true) => {}
            Ok(false) => return Err(format!("history of {key} is not linearizable")),
            Err(e) => return Err(format!("cannot check {key}: {e}")),
        }
    }
    for id in ids {
        sim.crash(id).await;
    }
    Ok(format!(
        "{size} nodes, loss {:.0}%, delay <= {max_delay_ms} ms, {isolations} isolations, {crashes} crashes, {ops} operations, {} terms with a leader, {tasks} tasks ({completed} completed, {dead_lettered} dead-lettered)",
        loss * 100.0,
        sim.leaders.lock().unwrap().len()
    ))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hundreds_of_seeds_keep_every_raft_invariant() {
    let seeds: Vec<u64> = match std::env::var("MESH_RAFT_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("MESH_RAFT_SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("MESH_RAFT_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            (1..=n).collect()
        }
    };
    let started = std::time::Instant::now();
    for &seed in &seeds {
        match run_seed(seed).await {
            Ok(summary) => {
                if seeds.len() == 1 || seed.is_multiple_of(50) {
                    println!("seed {seed}: {summary}");
                }
            }
            Err(e) => panic!(
                "seed {seed}: {e}\nreplay: MESH_RAFT_SIM_SEED={seed} cargo test -p mesh-consensus --release --test raft_sim"
            ),
        }
    }
    println!(
        "{} seeds in {:.1} s of real time",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}
