//! One pBFT replica's normal case (Castro & Liskov, TOCS 2002 §4.2): the
//! primary of the view batches requests and assigns sequence numbers within
//! the watermarks (pre-prepare); a backup accepts a pre-prepare that is
//! signed by the primary, in its view and window, and not in conflict with
//! one it accepted, and says so to all (prepare); a replica with the
//! pre-prepare and 2f matching prepares from different backups is prepared
//! and says so (commit); with 2f + 1 matching commits it is committed-local,
//! and batches execute in sequence order.
//!
//! Sans-IO: [`Replica::request`], [`Replica::handle`] and [`Replica::tick`]
//! take input; [`Replica::drain_outputs`] gives what to send and execute.
//! Checkpoints (§4.3): after executing a multiple of K the runtime reports
//! the state's digest; 2f + 1 matching signed checkpoints make it stable,
//! which discards everything at or below it and moves the watermarks.
//! In progress (issue 7): view changes, state transfer and read-only
//! requests come next.

use std::collections::{BTreeMap, VecDeque};

use ed25519_dalek::SigningKey;

use super::config::{ReplicaId, ReplicaSet, Seq, View};
use super::message::{Body, Digest, Envelope, Request, Signed, batch_digest};

/// Settings of a replica.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sequence numbers in flight above the low watermark (the paper's
    /// `H - h`; twice the checkpoint interval of 128).
    pub window: u64,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// A checkpoint every this many sequence numbers (K = 128 in the paper, §4.3).
    pub checkpoint_interval: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: 256,
            max_batch: 256,
            checkpoint_interval: 128,
        }
    }
}

/// What the replica asks its runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to every other replica.
    Broadcast(Envelope),
    /// Execute this batch, the next in sequence order. With `checkpoint`,
    /// report the state's digest after it with [`Replica::state_digest`].
    Execute {
        seq: Seq,
        batch: Vec<Request>,
        checkpoint: bool,
    },
    /// Provable misbehaviour of a replica, with the signed messages that prove it.
    Evidence(Evidence),
}

/// Proof that a replica lied.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// Two different signed pre-prepares for one view and sequence number.
    Equivocation { a: Signed, b: Signed },
}

impl Evidence {
    /// The replica it accuses.
    pub fn culprit(&self) -> ReplicaId {
        match self {
            Evidence::Equivocation { a, .. } => a.from,
        }
    }
}

/// Why a message was not taken (counted by the runtime; nothing changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Signature(#[from] super::message::VerifyError),
    #[error("a pre-prepare from replica {from}, which is not the primary of view {view}")]
    NotPrimary { from: ReplicaId, view: View },
    #[error("view {got} is not this replica's view {current}")]
    WrongView { got: View, current: View },
    #[error("sequence number {seq} is outside the window ({low}, {high}]")]
    OutsideWindow { seq: Seq, low: Seq, high: Seq },
    #[error("the batch does not match the pre-prepare's digest")]
    DigestMismatch,
    #[error("a pre-prepare without its batch")]
    MissingBatch,
    #[error("a conflicting pre-prepare for view {view}, sequence {seq}")]
    Conflict { view: View, seq: Seq },
    #[error("a prepare from the primary (only backups prepare)")]
    PrepareFromPrimary,
    #[error("a message this replica does not handle yet")]
    Unsupported,
}

/// What one sequence number has gathered in the current view.
#[derive(Debug, Default)]
struct Slot {
    pre_prepare: Option<Signed>,
    batch: Option<Vec<Request>>,
    digest: Option<Digest>,
    prepares: BTreeMap<ReplicaId, Signed>,
    commits: BTreeMap<ReplicaId, Signed>,
    sent_commit: bool,
    committed: bool,
}

/// One replica.
pub struct Replica {
    id: ReplicaId,
    replicas: ReplicaSet,
    key: SigningKey,
    settings: Settings,
    view: View,
    /// The low watermark (the last stable checkpoint).
    low: Seq,
    /// The primary's last assigned sequence number.
    assigned: Seq,
    last_executed: Seq,
    slots: BTreeMap<Seq, Slot>,
    /// Checkpoint messages above the low watermark: seq → sender → signed.
    checkpoints: BTreeMap<Seq, BTreeMap<ReplicaId, Signed>>,
    /// The proof of the last stable checkpoint: 2f + 1 matching signed
    /// checkpoint messages (what view changes and state transfer carry).
    stable_proof: Vec<Signed>,
    /// Requests waiting for the primary to batch them.
    pending: VecDeque<Request>,
    outputs: Vec<Output>,
}

impl Replica {
    pub fn new(id: ReplicaId, replicas: ReplicaSet, key: SigningKey, settings: Settings) -> Self {
        assert!(
            replicas.contains(id),
            "replica {id} is not in its replica set"
        );
        Replica {
            id,
            replicas,
            key,
            settings,
            view: 0,
            low: 0,
            assigned: 0,
            last_executed: 0,
            slots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            stable_proof: Vec::new(),
            pending: VecDeque::new(),
            outputs: Vec::new(),
        }
    }

    pub fn id(&self) -> ReplicaId {
        self.id
    }
    pub fn view(&self) -> View {
        self.view
    }
    pub fn last_executed(&self) -> Seq {
        self.last_executed
    }
    /// The low watermark: the last stable checkpoint.
    pub fn low_watermark(&self) -> Seq {
        self.low
    }
    /// The signed checkpoint messages that make the low watermark stable.
    pub fn stable_proof(&self) -> &[Signed] {
        &self.stable_proof
    }
    /// Sequence numbers whose messages are still kept.
    pub fn slots_kept(&self) -> usize {
        self.slots.len()
    }
    fn is_primary(&self) -> bool {
        self.replicas.primary(self.view) == self.id
    }
    fn high(&self) -> Seq {
        self.low + self.settings.window
    }

    /// What to send and execute, in order.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    fn sign(&self, body: Body) -> Signed {
        Signed::sign(self.id, body, &self.key)
    }

    fn broadcast(&mut self, msg: Signed, batch: Option<Vec<Request>>) {
        self.outputs
            .push(Output::Broadcast(Envelope { msg, batch }));
    }

    /// A client request reaches this replica. The primary batches it; a
    /// backup keeps nothing yet (forwarding and the view-change timer come
    /// with view changes).
    pub fn request(&mut self, req: Request) {
        if self.is_primary() {
            self.pending.push_back(req);
            self.propose();
        }
    }

    /// The primary assigns sequence numbers to waiting requests while the
    /// window has room (§4.2).
    fn propose(&mut self) {
        while !self.pending.is_empty() && self.assigned < self.high() {
            let n = self.pending.len().min(self.settings.max_batch);
            let batch: Vec<Request> = self.pending.drain(..n).collect();
            self.assigned += 1;
            let seq = self.assigned;
            let digest = batch_digest(&batch);
            let pp = self.sign(Body::PrePrepare {
                view: self.view,
                seq,
                digest,
            });
            let slot = self.slots.entry(seq).or_default();
            slot.pre_prepare = Some(pp.clone());
            slot.batch = Some(batch.clone());
            slot.digest = Some(digest);
            self.broadcast(pp, Some(batch));
            self.check(seq);
        }
    }

    /// Time passes: the primary proposes what the window now allows.
    pub fn tick(&mut self) {
        if self.is_primary() {
            self.propose();
        }
    }

    /// A message from another replica. Verified before anything counts.
    pub fn handle(&mut self, env: Envelope) -> Result<(), Refused> {
        env.msg.verify(&self.replicas)?;
        match env.msg.body.clone() {
            Body::PrePrepare { view, seq, digest } => {
                self.on_pre_prepare(env.msg, env.batch, view, seq, digest)
            }
            Body::Prepare { view, seq, digest } => {
                self.in_view_and_window(view, seq)?;
                if env.msg.from == self.replicas.primary(view) {
                    return Err(Refused::PrepareFromPrimary);
                }
                let slot = self.slots.entry(seq).or_default();
                slot.prepares.entry(env.msg.from).or_insert(env.msg);
                let _ = digest;
                self.check(seq);
                Ok(())
            }
            Body::Commit { view, seq, .. } => {
                self.in_view_and_window(view, seq)?;
                let slot = self.slots.entry(seq).or_default();
                slot.commits.entry(env.msg.from).or_insert(env.msg);
                self.check(seq);
                Ok(())
            }
            Body::Checkpoint { seq, .. } => {
                if seq <= self.low || seq > self.high() {
                    return Err(Refused::OutsideWindow {
                        seq,
                        low: self.low,
                        high: self.high(),
                    });
                }
                self.checkpoints
                    .entry(seq)
                    .or_default()
                    .entry(env.msg.from)
                    .or_insert(env.msg);
                self.check_stable(seq);
                Ok(())
            }
            _ => Err(Refused::Unsupported),
        }
    }

    fn in_view_and_window(&self, view: View, seq: Seq) -> Result<(), Refused> {
        if view != self.view {
            return Err(Refused::WrongView {
                got: view,
                current: self.view,
            });
        }
        if seq <= self.low || seq > self.high() {
            return Err(Refused::OutsideWindow {
                seq,
                low: self.low,
                high: self.high(),
            });
        }
        Ok(())
    }

    /// §4.2: accept a pre-prepare signed by the primary of this view, within
    /// the watermarks, whose batch matches its digest, unless another one was
    /// accepted for the same view and sequence number (that is evidence).
    fn on_pre_prepare(
        &mut self,
        msg: Signed,
        batch: Option<Vec<Request>>,
        view: View,
        seq: Seq,
        digest: Digest,
    ) -> Result<(), Refused> {
        if msg.from != self.replicas.primary(view) {
            return Err(Refused::NotPrimary {
                from: msg.from,
                view,
            });
        }
        self.in_view_and_window(view, seq)?;
        if let Some(existing) = self.slots.get(&seq).and_then(|s| s.pre_prepare.clone()) {
            if existing.body == msg.body {
                return Ok(()); // a duplicate
            }
            // The primary signed two different pre-prepares for (view, seq).
            self.outputs.push(Output::Evidence(Evidence::Equivocation {
                a: existing,
                b: msg,
            }));
            return Err(Refused::Conflict { view, seq });
        }
        let batch = batch.ok_or(Refused::MissingBatch)?;
        if batch_digest(&batch) != digest {
            return Err(Refused::DigestMismatch);
        }
        let slot = self.slots.entry(seq).or_default();
        slot.pre_prepare = Some(msg);
        slot.batch = Some(batch);
        slot.digest = Some(digest);
        let prepare = self.sign(Body::Prepare { view, seq, digest });
        self.slots
            .get_mut(&seq)
            .expect("just inserted")
            .prepares
            .insert(self.id, prepare.clone());
        self.broadcast(prepare, None);
        self.check(seq);
        Ok(())
    }

    /// Moves `seq` along: prepared → send a commit; committed-local →
    /// execute everything that is next in order.
    fn check(&mut self, seq: Seq) {
        let quorum = self.replicas.quorum();
        let (view, id) = (self.view, self.id);
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        let Some(digest) = slot.digest else {
            return;
        };
        let matching = |m: &Signed| match &m.body {
            Body::Prepare {
                view: v, digest: d, ..
            }
            | Body::Commit {
                view: v, digest: d, ..
            } => *v == view && *d == digest,
            _ => false,
        };
        // Prepared: the pre-prepare and 2f matching prepares from backups (§4.2).
        let prepares = slot.prepares.values().filter(|m| matching(m)).count();
        let prepared = prepares >= quorum - 1;
        if prepared && !slot.sent_commit {
            slot.sent_commit = true;
            let commit = Signed::sign(id, Body::Commit { view, seq, digest }, &self.key);
            slot.commits.insert(id, commit.clone());
            self.outputs.push(Output::Broadcast(Envelope {
                msg: commit,
                batch: None,
            }));
        }
        let slot = self.slots.get_mut(&seq).expect("present");
        let commits = slot.commits.values().filter(|m| matching(m)).count();
        if slot.sent_commit && commits >= quorum {
            slot.committed = true;
        }
        self.execute_ready();
    }

    /// The runtime executed up to `seq` (a checkpoint) and the state there
    /// has digest `state`: say so to all (§4.3).
    pub fn state_digest(&mut self, seq: Seq, state: Digest) {
        if seq <= self.low || seq > self.last_executed {
            return;
        }
        let msg = self.sign(Body::Checkpoint { seq, state });
        self.checkpoints
            .entry(seq)
            .or_default()
            .insert(self.id, msg.clone());
        self.broadcast(msg, None);
        self.check_stable(seq);
    }

    /// §4.3: a checkpoint is stable once 2f + 1 replicas (this one among
    /// them: it must have the state itself) signed the same digest for it;
    /// then everything at or below it is discarded and the window moves.
    fn check_stable(&mut self, seq: Seq) {
        let Some(mine) = self
            .checkpoints
            .get(&seq)
            .and_then(|c| c.get(&self.id))
            .map(|m| m.body.clone())
        else {
            return;
        };
        let proof: Vec<Signed> = self.checkpoints[&seq]
            .values()
            .filter(|m| m.body == mine)
            .cloned()
            .collect();
        if proof.len() < self.replicas.quorum() {
            return;
        }
        self.low = seq;
        self.stable_proof = proof;
        self.slots = self.slots.split_off(&(seq + 1));
        self.checkpoints = self.checkpoints.split_off(&(seq + 1));
        if self.is_primary() {
            self.propose();
        }
    }

    /// Executes committed batches in sequence order (§4.2).
    fn execute_ready(&mut self) {
        while let Some(slot) = self.slots.get(&(self.last_executed + 1)) {
            if !slot.committed {
                break;
            }
            self.last_executed += 1;
            let batch = slot.batch.clone().unwrap_or_default();
            self.outputs.push(Output::Execute {
                seq: self.last_executed,
                batch,
                checkpoint: self
                    .last_executed
                    .is_multiple_of(self.settings.checkpoint_interval),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pbft::testing::keys;

    fn group(n: usize) -> Vec<Replica> {
        group_with(n, Settings::default())
    }

    fn group_with(n: usize, settings: Settings) -> Vec<Replica> {
        let k = keys(n);
        let set = crate::pbft::testing::replica_set(&k);
        k.into_iter()
            .enumerate()
            .map(|(i, key)| Replica::new(i as ReplicaId, set.clone(), key, settings.clone()))
            .collect()
    }

    fn req(t: u64) -> Request {
        Request {
            client: "c".into(),
            timestamp: t,
            op: t.to_le_bytes().to_vec(),
        }
    }

    /// Delivers every broadcast to every other replica until nothing moves;
    /// `drop_from` replicas are silent. Returns what each executed.
    fn run(rs: &mut [Replica], drop_from: &[ReplicaId]) -> Vec<Vec<(Seq, Vec<Request>)>> {
        let mut executed = vec![Vec::new(); rs.len()];
        loop {
            let mut mail = Vec::new();
            let mut moved = false;
            for r in rs.iter_mut() {
                for o in r.drain_outputs() {
                    moved = true;
                    match o {
                        Output::Broadcast(e) if !drop_from.contains(&r.id()) => {
                            mail.push((r.id(), e))
                        }
                        Output::Execute {
                            seq,
                            batch,
                            checkpoint,
                        } => {
                            executed[r.id() as usize].push((seq, batch));
                            if checkpoint {
                                // Every correct replica has the same state there.
                                r.state_digest(seq, [seq as u8; 32]);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return executed;
            }
            for (from, e) in mail {
                for r in rs.iter_mut().filter(|r| r.id() != from) {
                    let _ = r.handle(e.clone());
                }
            }
        }
    }

    /// TOCS 2002 §4.2: a request goes through pre-prepare, prepare and
    /// commit, and every replica executes the same batches in the same order.
    #[test]
    fn the_normal_case_executes_everywhere_in_order() {
        let mut rs = group(4);
        for t in 1..=3 {
            rs[0].request(req(t));
        }
        let ex = run(&mut rs, &[]);
        for e in &ex {
            assert_eq!(e, &ex[0]);
        }
        let seqs: Vec<Seq> = ex[0].iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(rs.iter().all(|r| r.last_executed() == 3));
    }

    /// With f = 1 silent backup the other three still commit (2f + 1 = 3).
    #[test]
    fn one_silent_backup_does_not_stop_progress() {
        let mut rs = group(4);
        rs[0].request(req(1));
        let ex = run(&mut rs, &[3]);
        assert_eq!(ex[0].len(), 1);
        assert_eq!(ex[1], ex[0]);
        assert_eq!(ex[2], ex[0]);
    }

    /// Two silent backups (f + 1) leave no quorum: nothing executes.
    #[test]
    fn two_silent_backups_stop_progress() {
        let mut rs = group(4);
        rs[0].request(req(1));
        let ex = run(&mut rs, &[2, 3]);
        assert!(ex.iter().all(Vec::is_empty));
    }

    /// §4.2: a backup accepts only the primary's pre-prepares, in its view
    /// and window, matching their batch; two different ones for one (view,
    /// sequence) are evidence against the primary.
    #[test]
    fn bad_pre_prepares_are_refused_and_equivocation_is_evidence() {
        let k = keys(4);
        let mut rs = group(4);
        let batch = vec![req(1)];
        let pp = |from: ReplicaId, view, seq, batch: &Vec<Request>| Envelope {
            msg: Signed::sign(
                from,
                Body::PrePrepare {
                    view,
                    seq,
                    digest: batch_digest(batch),
                },
                &k[from as usize],
            ),
            batch: Some(batch.clone()),
        };
        let b = &mut rs[1];
        assert_eq!(
            b.handle(pp(2, 0, 1, &batch)),
            Err(Refused::NotPrimary { from: 2, view: 0 })
        );
        assert_eq!(
            b.handle(pp(1, 1, 1, &batch)),
            Err(Refused::WrongView { got: 1, current: 0 })
        );
        assert_eq!(
            b.handle(pp(0, 0, 300, &batch)),
            Err(Refused::OutsideWindow {
                seq: 300,
                low: 0,
                high: 256
            })
        );
        let mut wrong = pp(0, 0, 1, &batch);
        wrong.batch = Some(vec![req(2)]);
        assert_eq!(b.handle(wrong), Err(Refused::DigestMismatch));
        let mut forged = pp(0, 0, 1, &batch);
        forged.msg.signature[0] ^= 1;
        assert!(matches!(b.handle(forged), Err(Refused::Signature(_))));
        assert!(b.drain_outputs().is_empty(), "nothing counted");
        // The real one is accepted (a prepare goes out); a second one with
        // another batch for the same (view, seq) is evidence.
        assert_eq!(b.handle(pp(0, 0, 1, &batch)), Ok(()));
        assert!(matches!(&b.drain_outputs()[..], [Output::Broadcast(_)]));
        assert_eq!(
            b.handle(pp(0, 0, 1, &vec![req(9)])),
            Err(Refused::Conflict { view: 0, seq: 1 })
        );
        let out = b.drain_outputs();
        assert!(
            matches!(&out[..], [Output::Evidence(e)] if e.culprit() == 0),
            "{out:?}"
        );
    }

    fn small_window() -> Settings {
        Settings {
            window: 4,
            max_batch: 1,
            checkpoint_interval: 2,
        }
    }

    /// TOCS 2002 §4.3: checkpoints every K sequence numbers become stable
    /// with 2f + 1 matching signed checkpoint messages; older messages are
    /// discarded and the watermarks move, so a small window keeps flowing.
    #[test]
    fn stable_checkpoints_collect_garbage_and_move_the_window() {
        let mut first = group_with(4, small_window());
        for t in 1..=10 {
            first[0].request(req(t));
        }
        let proposed = first[0]
            .drain_outputs()
            .iter()
            .filter(|o| matches!(o, Output::Broadcast(_)))
            .count();
        assert_eq!(proposed, 4, "only the window's four are proposed at first");
        let mut rs = group_with(4, small_window());
        for t in 1..=10 {
            rs[0].request(req(t));
        }
        let ex = run(&mut rs, &[]);
        for e in &ex {
            assert_eq!(e.len(), 10, "all ten executed through a window of four");
            assert_eq!(e, &ex[0]);
        }
        for r in &rs {
            assert_eq!(r.low_watermark(), 10);
            assert!(r.stable_proof().len() >= 3, "2f + 1 signed checkpoints");
            assert_eq!(r.slots_kept(), 0, "everything at or below 10 discarded");
        }
    }

    /// A checkpoint signed with another digest (a replica whose state
    /// diverged) does not count towards the 2f + 1.
    #[test]
    fn checkpoints_need_2f_plus_1_matching_digests() {
        let k = keys(4);
        let mut rs = group_with(4, small_window());
        rs[0].request(req(1));
        rs[0].request(req(2));
        let ex = run(&mut rs, &[]);
        assert_eq!(ex[1].len(), 2);
        let r = &mut rs[1];
        assert_eq!(r.low_watermark(), 2, "stable after the run");
        let cp = |from: usize, d: u8| Envelope {
            msg: Signed::sign(
                from as ReplicaId,
                Body::Checkpoint {
                    seq: 4,
                    state: [d; 32],
                },
                &k[from],
            ),
            batch: None,
        };
        r.last_executed = 4; // as if 3 and 4 had executed here
        r.state_digest(4, [4; 32]);
        r.handle(cp(0, 4)).unwrap();
        r.handle(cp(2, 9)).unwrap();
        assert_eq!(r.low_watermark(), 2, "two matching of three are not enough");
        r.handle(cp(3, 4)).unwrap();
        assert_eq!(r.low_watermark(), 4);
    }
}
