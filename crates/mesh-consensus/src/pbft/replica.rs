//! One pBFT replica (Castro & Liskov, TOCS 2002 §4): the normal case here,
//! view changes in [`super::view_change`].
//!
//! Normal case (§4.2): the primary of the view batches requests and assigns
//! sequence numbers within the watermarks (pre-prepare); a backup accepts a
//! pre-prepare that is signed by the primary, in its view and window, and
//! not in conflict with one it accepted, and says so to all (prepare); a
//! replica with the pre-prepare and 2f matching prepares from different
//! backups is prepared and says so (commit); with 2f + 1 matching commits it
//! is committed-local, and batches execute in sequence order.
//!
//! Checkpoints (§4.3): after executing a multiple of K the runtime reports
//! the state's digest; 2f + 1 matching signed checkpoints make it stable,
//! which discards everything at or below it and moves the watermarks. A
//! replica that sees a quorum agree on a checkpoint it has not reached asks
//! its runtime to fetch that state (§4.5 state transfer) and is told when it
//! is installed.
//!
//! Lost messages: the paper leaves retransmission to the implementation.
//! When a replica executed nothing for `retransmit_ms` (the wait doubles
//! while that lasts), it sends again its own messages for slots not
//! yet committed, its unstable checkpoints, its VIEW-CHANGE while the view
//! change lasts, and re-forwards requests no pre-prepare carries yet; a
//! replica that hears from one in an older view sends it the NEW-VIEW.
//! What the others committed is not sent again: a replica asks for it
//! (commit certificates, [`super::catch_up`]) when it sees a gap, and
//! also now and then without one, since in a quiet mesh the lost votes of
//! the last batches leave no trace.
//!
//! Sans-IO: [`Replica::request`], [`Replica::forwarded`], [`Replica::handle`]
//! and [`Replica::tick`] (with the time) take input; [`Replica::drain_outputs`]
//! gives what to send and execute.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use ed25519_dalek::SigningKey;

use super::config::{ReplicaId, ReplicaSet, Seq, View};
use super::message::{
    Body, ClientId, Digest, Envelope, PreparedCert, Request, SigCache, Signed, batch_digest,
};
use super::validate::{self, CertError};

/// A tick this much later than the last means this replica stalled.
const STALL_MS: u64 = 50;

/// Retransmission waits at most 2^3 periods while nothing progresses.
const MAX_RETRANSMIT_BACKOFF: u32 = 3;

/// Settings of a replica.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sequence numbers in flight above the low watermark (the paper's
    /// `H - h`; twice the checkpoint interval of 128).
    pub window: u64,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Most sequence numbers the primary keeps assigned and not executed:
    /// requests that arrive meanwhile wait and go out together in the
    /// next batch, so under load each three-phase round carries many.
    pub max_in_flight: u64,
    /// A checkpoint every this many sequence numbers (K = 128 in the paper, §4.3).
    pub checkpoint_interval: u64,
    /// How long a request may wait before a view change (§4.4), doubled on
    /// each view change that brings no progress.
    pub view_change_timeout_ms: u64,
    /// How often lost messages are sent again.
    pub retransmit_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window: 256,
            max_batch: 256,
            max_in_flight: 2,
            checkpoint_interval: 128,
            view_change_timeout_ms: 500,
            retransmit_ms: 100,
        }
    }
}

/// What the replica asks its runtime to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send to every other replica.
    Broadcast(Envelope),
    /// Send to one replica.
    Send {
        /// The replica to send to.
        to: ReplicaId,
        /// The message.
        env: Envelope,
    },
    /// Send this client request to `to`, or to every other replica.
    Forward {
        /// The replica (the primary) to send to; `None` for every other replica.
        to: Option<ReplicaId>,
        /// The client's signed request.
        request: Request,
    },
    /// Execute this batch, the next in sequence order. With `checkpoint`,
    /// report the state's digest after it with [`Replica::state_digest`].
    Execute {
        /// The batch's sequence number.
        seq: Seq,
        /// Its requests, in order (empty for a null batch).
        batch: Vec<Request>,
        /// Whether `seq` is a checkpoint, whose state digest is wanted.
        checkpoint: bool,
    },
    /// A quorum agrees the state after `seq` has digest `state` and this
    /// replica is behind it: fetch that state from the others, check its
    /// digest, and call [`Replica::installed_state`].
    FetchState {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// The digest the fetched state must have.
        state: Digest,
    },
    /// Provable misbehaviour of a replica, with the signed messages that prove it.
    Evidence(Evidence),
    /// The replica entered a new view.
    ViewChanged {
        /// The view it entered.
        view: View,
    },
    /// Store durably, before carrying out any later output, that this
    /// replica may sign pre-prepares, prepares and commits up to `view` and
    /// `seq`; after a restart pass it to [`Replica::resume`]. Comes once per
    /// window of sequence numbers and once per view.
    Reserve {
        /// Highest view it may sign in.
        view: View,
        /// Highest sequence number it may sign for.
        seq: Seq,
    },
    /// Others committed batches this replica cannot execute yet, or it may
    /// be behind without knowing: ask them what they have above `after` and
    /// above `view` ([`Replica::entries_after`]); pass the commit
    /// certificates to [`Replica::on_commit_certs`] and the rest to
    /// [`Replica::handle`].
    FetchEntries {
        /// This replica's last executed sequence number.
        after: Seq,
        /// This replica's current view.
        view: View,
    },
    /// Store this (see [`super::durable`]); after a restart hand it to
    /// [`Replica::restore`]. If [`Record::urgent`](super::durable::Record::urgent),
    /// durably before carrying out any later output; otherwise by the next
    /// urgent record or [`Output::Sync`].
    Persist(super::durable::Record),
    /// Make every record so far durable before carrying out later outputs.
    Sync,
    /// The epoch ended: `seq`, its last sequence number, executed here and
    /// its checkpoint stable with `proof`. The next configuration orders
    /// what follows (see [`super::epoch`]); this replica orders nothing more.
    EpochEnd {
        /// The epoch's last sequence number.
        seq: Seq,
        /// 2f + 1 signed checkpoint messages for `seq`.
        proof: Vec<Signed>,
    },
}

/// Proof that a replica lied: two messages it signed that no correct
/// replica signs together.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Evidence {
    /// Two different pre-prepares for one view and sequence number.
    Equivocation {
        /// One signed pre-prepare (the one this replica held first).
        a: Signed,
        /// Another for the same view and sequence number, with another digest.
        b: Signed,
    },
    /// Two prepares, or two commits, for one view and sequence number with
    /// different digests.
    ConflictingVotes {
        /// One signed vote (the one this replica held first).
        a: Signed,
        /// Another of the same kind for the same slot, with another digest.
        b: Signed,
    },
}

impl Evidence {
    /// The replica it accuses.
    pub fn culprit(&self) -> ReplicaId {
        match self {
            Evidence::Equivocation { a, .. } | Evidence::ConflictingVotes { a, .. } => a.from,
        }
    }

    /// Whether it proves what it claims under `replicas`: both messages
    /// verify, come from one replica and conflict (one slot and view, two
    /// digests, of the kind it names). Proofs read back from disk are
    /// checked with it.
    pub fn holds(&self, replicas: &ReplicaSet) -> bool {
        let (a, b, kind) = match self {
            Evidence::Equivocation { a, b } => (a, b, matches!(a.body, Body::PrePrepare { .. })),
            Evidence::ConflictingVotes { a, b } => (
                a,
                b,
                matches!(a.body, Body::Prepare { .. } | Body::Commit { .. }),
            ),
        };
        let slot = |m: &Signed| match m.body {
            Body::PrePrepare { view, seq, digest }
            | Body::Prepare { view, seq, digest }
            | Body::Commit { view, seq, digest } => Some((view, seq, digest)),
            _ => None,
        };
        let conflict = match (slot(a), slot(b)) {
            (Some((va, sa, da)), Some((vb, sb, db))) => (va, sa) == (vb, sb) && da != db,
            _ => false,
        };
        kind && conflict
            && std::mem::discriminant(&a.body) == std::mem::discriminant(&b.body)
            && a.from == b.from
            && a.verify(replicas).is_ok()
            && b.verify(replicas).is_ok()
    }
}

/// Why a message was not taken (counted by the runtime; nothing changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The message is of another epoch, from a non-member, or badly signed.
    #[error(transparent)]
    Signature(#[from] super::message::VerifyError),
    /// A certificate inside a VIEW-CHANGE or NEW-VIEW does not hold.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// A pre-prepare signed by a backup.
    #[error("a pre-prepare from replica {from}, which is not the primary of view {view}")]
    NotPrimary {
        /// The replica that signed it.
        from: ReplicaId,
        /// The view it names.
        view: View,
    },
    /// A normal-case message of an earlier or a later view.
    #[error("view {got} is not this replica's view {current}")]
    WrongView {
        /// The view the message names.
        got: View,
        /// This replica's view.
        current: View,
    },
    /// A normal-case message that arrived while this replica changes to this view.
    #[error("replica is changing to view {0}")]
    ViewChanging(View),
    /// A sequence number at or below the low watermark or above the high one.
    #[error("sequence number {seq} is outside the window ({low}, {high}]")]
    OutsideWindow {
        /// The sequence number the message names.
        seq: Seq,
        /// The low watermark (exclusive).
        low: Seq,
        /// The high watermark (inclusive).
        high: Seq,
    },
    /// A pre-prepare whose batch does not hash to its digest.
    #[error("the batch does not match the pre-prepare's digest")]
    DigestMismatch,
    /// A pre-prepare that arrived without the batch it names.
    #[error("a pre-prepare without its batch")]
    MissingBatch,
    /// A second pre-prepare for a slot with another digest (recorded as evidence).
    #[error("a conflicting pre-prepare for view {view}, sequence {seq}")]
    Conflict {
        /// The slot's view.
        view: View,
        /// The slot's sequence number.
        seq: Seq,
    },
    /// A second prepare or commit from one replica for a slot, with another
    /// digest (recorded as evidence).
    #[error("a conflicting vote for view {view}, sequence {seq}")]
    ConflictingVote {
        /// The slot's view.
        view: View,
        /// The slot's sequence number.
        seq: Seq,
    },
    /// A prepare signed by the view's primary, which only pre-prepares.
    #[error("a prepare from the primary (only backups prepare)")]
    PrepareFromPrimary,
    /// A batched request whose client signature does not verify.
    #[error("a request its client did not sign")]
    UnsignedRequest,
    /// A batch beside a message other than a pre-prepare.
    #[error("a batch in a message that carries none")]
    UnexpectedBatch,
    /// A checkpoint at 0 or at a sequence number that is not a multiple of
    /// the checkpoint interval.
    #[error("a checkpoint for {0}, not a multiple of the checkpoint interval")]
    OddCheckpoint(Seq),
    /// A reply or read-index answer, which only clients take.
    #[error("a reply (replicas do not take replies)")]
    NotForReplicas,
}

/// Signatures this replica made and checked (the cost per request the
/// benchmarks report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages this replica signed.
    pub signed: u64,
    /// Signatures it verified (messages and client requests).
    pub verified: u64,
}

/// What one sequence number has gathered in the current view.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// The view of its pre-prepare.
    pub(super) view: View,
    pub(super) pre_prepare: Option<Signed>,
    pub(super) batch: Option<Vec<Request>>,
    pub(super) digest: Option<Digest>,
    pub(super) prepares: BTreeMap<ReplicaId, Signed>,
    pub(super) commits: BTreeMap<ReplicaId, Signed>,
    pub(super) sent_commit: bool,
    pub(super) committed: bool,
}

/// One replica.
pub struct Replica {
    pub(super) id: ReplicaId,
    pub(super) replicas: ReplicaSet,
    key: SigningKey,
    pub(super) settings: Settings,
    pub(super) view: View,
    /// In normal operation in `view`; false between sending VIEW-CHANGE for
    /// `view` and entering it.
    pub(super) active: bool,
    /// The low watermark (the last stable checkpoint).
    pub(super) low: Seq,
    /// The primary's last assigned sequence number.
    pub(super) assigned: Seq,
    pub(super) last_executed: Seq,
    pub(super) slots: BTreeMap<Seq, Slot>,
    /// The highest-view prepared certificate of each sequence number above
    /// the low watermark (what a VIEW-CHANGE carries).
    pub(super) prepared: BTreeMap<Seq, PreparedCert>,
    /// Checkpoint messages in (low, low + 2 windows]: seq → sender → signed.
    pub(super) checkpoints: BTreeMap<Seq, BTreeMap<ReplicaId, Signed>>,
    /// Each replica's latest checkpoint beyond that (how a replica far
    /// behind learns it is).
    ahead: BTreeMap<ReplicaId, Signed>,
    /// The proof of the last stable checkpoint: 2f + 1 matching signed
    /// checkpoint messages (what view changes and state transfer carry).
    pub(super) stable_proof: Vec<Signed>,
    /// A state being fetched: (seq, digest).
    pub(super) fetching: Option<(Seq, Digest)>,
    /// Requests the primary has yet to batch.
    pub(super) pending: VecDeque<Request>,
    /// Requests known and not executed yet (the view-change timer runs
    /// while there are any): id → request.
    pub(super) waiting: BTreeMap<(ClientId, u64), Request>,
    /// Each client's last executed timestamp (older requests are stale).
    done: HashMap<ClientId, u64>,
    /// Checked VIEW-CHANGEs by (view, sender): of each sender the one for
    /// our view and its latest.
    pub(super) vcs: BTreeMap<(View, ReplicaId), (Signed, validate::ViewChangeInfo)>,
    /// The NEW-VIEW of the current view (sent to replicas still behind).
    pub(super) new_view: Option<Envelope>,
    /// When each replica was last sent the NEW-VIEW.
    pub(super) helped: BTreeMap<ReplicaId, u64>,
    /// When each replica was last sent a view change for a lower view.
    pub(super) answered_vc: BTreeMap<ReplicaId, u64>,
    /// When the primary was last answered a repeated pre-prepare.
    answered_pp: BTreeMap<ReplicaId, u64>,
    pub(super) now: u64,
    /// Since when the oldest waiting request waits (reset on progress).
    pub(super) timer_since: Option<u64>,
    /// Since when this replica holds 2f + 1 view changes for the view it
    /// is changing to (the NEW-VIEW timer runs only from then, §4.5.2).
    pub(super) vc_quorum_since: Option<u64>,
    /// The last view this replica was active in.
    pub(super) entered_view: View,
    /// View changes since the last progress (the timeout doubles with each).
    pub(super) vc_attempts: u32,
    last_retransmit: u64,
    /// Last executed at the last retransmission check, and how many
    /// periods without progress since (each doubles the next wait).
    retransmit_mark: Seq,
    retransmit_backoff: u32,
    /// A gap behind what others committed: (last executed, since when).
    pub(super) stalled: Option<(Seq, u64)>,
    /// Commit certificates of batches executed here whose slots a NEW-VIEW
    /// replaced (it re-issues them in the new view, where they need not
    /// commit again before the next checkpoint): still served to replicas
    /// catching up ([`Replica::commit_certs`]). Discarded with the log.
    pub(super) kept_certs: BTreeMap<Seq, super::message::CommitCert>,
    /// When this replica last asked whether it is behind (see
    /// [`Replica::probe`]).
    pub(super) probed: u64,
    /// A replica signed a normal-case message of a later view than this
    /// one's: ask soon (see [`Replica::probe`]).
    pub(super) later_view_seen: bool,
    /// After a restart: what this replica may have signed before it (views
    /// up to .0 and sequence numbers up to .1); it signs nothing there again.
    floor: Option<(View, Seq)>,
    /// What is durably reserved for signing (see [`Output::Reserve`]).
    reserved: (View, Seq),
    /// The last sequence number of this epoch, once a reconfiguration
    /// decided it (see [`super::epoch`]): nothing above it is ordered here.
    pub(super) end: Option<Seq>,
    /// [`Output::EpochEnd`] went out.
    pub(super) ended: bool,
    pub(super) counters: Counters,
    pub(super) cache: SigCache,
    pub(super) outputs: Vec<Output>,
}

impl Replica {
    /// Replica `id` of the configuration `replicas`, starting after its
    /// start (`ReplicaSet::start`): the runtime holds the state there.
    pub fn new(id: ReplicaId, replicas: ReplicaSet, key: SigningKey, settings: Settings) -> Self {
        assert!(
            replicas.contains(id),
            "replica {id} is not in its replica set"
        );
        let start = replicas.start();
        Replica {
            id,
            replicas,
            key,
            settings,
            view: 0,
            active: true,
            low: start,
            assigned: start,
            last_executed: start,
            slots: BTreeMap::new(),
            prepared: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            ahead: BTreeMap::new(),
            stable_proof: Vec::new(),
            fetching: None,
            pending: VecDeque::new(),
            waiting: BTreeMap::new(),
            done: HashMap::new(),
            vcs: BTreeMap::new(),
            new_view: None,
            helped: BTreeMap::new(),
            answered_vc: BTreeMap::new(),
            answered_pp: BTreeMap::new(),
            now: 0,
            timer_since: None,
            vc_quorum_since: None,
            entered_view: 0,
            vc_attempts: 0,
            last_retransmit: 0,
            retransmit_mark: start,
            retransmit_backoff: 0,
            stalled: None,
            probed: 0,
            later_view_seen: false,
            kept_certs: BTreeMap::new(),
            floor: None,
            reserved: (0, start),
            end: None,
            ended: false,
            counters: Counters::default(),
            cache: SigCache::default(),
            outputs: Vec::new(),
        }
    }

    /// This replica's id in its replica set.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Restarts a replica that lost its memory: `view` and `seq` are its
    /// last [`Output::Reserve`]. It starts in that view and signs no
    /// pre-prepare, prepare or commit at or below it again (two different
    /// ones for one slot would be equivocation); the slots it cannot vote on
    /// come to it by commit certificates and state transfer.
    pub fn resume(&mut self, view: View, seq: Seq) {
        // A restored NEW-VIEW may name a later view (one entered without
        // signing anything in it).
        self.view = self.view.max(view);
        self.entered_view = self.entered_view.max(view);
        self.floor = Some((view, seq));
        self.reserved = (view, seq);
        self.assigned = seq;
    }

    /// Where this replica may have signed before a restart.
    fn below_floor(&self, view: View, seq: Seq) -> bool {
        self.floor.is_some_and(|(fv, fs)| view <= fv && seq <= fs)
    }

    /// Whether this replica may sign a pre-prepare, prepare or commit for
    /// (`view`, `seq`): not where it may have signed before a restart.
    /// Reserves first when the slot is beyond what is durably reserved.
    pub(super) fn may_sign(&mut self, view: View, seq: Seq) -> bool {
        if self.below_floor(view, seq) {
            return false;
        }
        if view > self.reserved.0 || seq > self.reserved.1 {
            self.reserved = (
                self.reserved.0.max(view),
                self.reserved.1.max(seq + self.settings.window),
            );
            let (view, seq) = self.reserved;
            self.outputs.push(Output::Reserve { view, seq });
        }
        true
    }
    /// The current view (the one being changed to, during a view change).
    pub fn view(&self) -> View {
        self.view
    }
    /// In normal operation (not in the middle of a view change).
    pub fn is_active(&self) -> bool {
        self.active
    }
    /// The highest sequence number executed here (all below it are too).
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
    /// Requests known here and not executed yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
    /// Signatures made, and verified (message signatures that missed the
    /// cache plus client request signatures).
    pub fn counters(&self) -> Counters {
        Counters {
            signed: self.counters.signed,
            verified: self.counters.verified + self.cache.verified,
        }
    }
    /// The configuration this replica belongs to.
    pub fn replicas(&self) -> &ReplicaSet {
        &self.replicas
    }
    /// True if this replica is the primary of its current view.
    pub fn is_primary(&self) -> bool {
        self.replicas.primary(self.view) == self.id
    }
    /// A one-line summary of the replica's position (for failure reports).
    pub fn debug_state(&self) -> String {
        format!(
            "r{} epoch {} end {:?} view {}{} low {} exec {} assigned {} slots {:?} waiting {} pending {} fetching {:?}",
            self.id,
            self.replicas.epoch(),
            self.end,
            self.view,
            if self.active { "" } else { " (changing)" },
            self.low,
            self.last_executed,
            self.assigned,
            self.slots
                .iter()
                .map(|(s, x)| (*s, x.prepares.len(), x.commits.len(), x.committed))
                .collect::<Vec<_>>(),
            self.waiting.len(),
            self.pending.len(),
            self.fetching.map(|f| f.0)
        )
    }

    /// The high watermark: the window above the low one, never beyond
    /// the epoch's end.
    pub(super) fn high(&self) -> Seq {
        let high = self.low + self.settings.window;
        self.end.map_or(high, |end| high.min(end))
    }

    /// What to send and execute, in order.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    pub(super) fn sign(&mut self, body: Body) -> Signed {
        self.counters.signed += 1;
        Signed::sign_in(self.replicas.epoch(), self.id, body, &self.key)
    }

    /// Signs a reply to a client (§4.1) for the runtime, which executed the
    /// request and knows the result.
    pub fn reply(&mut self, client: ClientId, timestamp: u64, result: Vec<u8>) -> Signed {
        self.sign(Body::Reply {
            view: self.view,
            client,
            timestamp,
            result,
        })
    }

    pub(super) fn broadcast(&mut self, msg: Signed, batch: Option<Vec<Request>>) {
        self.outputs
            .push(Output::Broadcast(Envelope { msg, batch }));
    }

    /// A request from a client of this replica's node: every replica learns
    /// of it (so every backup's timer watches the primary, §4.4) and the
    /// primary batches it.
    pub fn request(&mut self, req: Request) {
        self.client_request(req, true);
    }

    /// [`Replica::request`] for a request this process signed itself (its
    /// node's client key): checking that signature again would only delay
    /// the pre-prepare.
    pub fn own_request(&mut self, req: Request) {
        self.client_request(req, false);
    }

    fn client_request(&mut self, req: Request, verify: bool) {
        if self.learn(req.clone(), verify) {
            self.outputs.push(Output::Forward {
                to: None,
                request: req,
            });
        }
    }

    /// A request another replica forwarded.
    pub fn forwarded(&mut self, req: Request) {
        self.learn(req, true);
    }

    /// Remembers a new request; false for a duplicate, a stale one, or one
    /// its client did not sign (checked unless `verify` is false).
    fn learn(&mut self, req: Request, verify: bool) -> bool {
        if self
            .done
            .get(&req.client)
            .is_some_and(|&t| t >= req.timestamp)
        {
            return false;
        }
        let id = req.id();
        if self.waiting.contains_key(&id) {
            return false;
        }
        if verify {
            self.counters.verified += 1;
            if !req.verify() {
                return false;
            }
        }
        if !self.expecting() {
            self.timer_since = Some(self.now);
        }
        self.waiting.insert(id, req.clone());
        if self.is_primary() && self.active {
            self.pending.push_back(req);
            self.propose();
        }
        true
    }

    /// The primary assigns sequence numbers to waiting requests while the
    /// window has room (§4.2).
    pub(super) fn propose(&mut self) {
        if !self.active || !self.is_primary() {
            return;
        }
        self.assigned = self.assigned.max(self.low);
        while (!self.pending.is_empty() || self.filling())
            && self.assigned < self.high()
            && self.assigned < self.last_executed + self.settings.max_in_flight
        {
            if !self.may_sign(self.view, self.assigned + 1) {
                // Assigned before a restart, perhaps: skip past (the gap
                // ends this view; the next primary fills it).
                self.assigned = self.floor.map_or(self.assigned, |f| f.1);
                continue;
            }
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
            slot.view = self.view;
            slot.pre_prepare = Some(pp.clone());
            slot.batch = Some(batch.clone());
            slot.digest = Some(digest);
            self.broadcast(pp, Some(batch));
            self.check(seq);
        }
    }

    /// Time passes (milliseconds on the runtime's monotonic clock): the
    /// primary proposes what the window allows, timers fire, lost messages
    /// go out again.
    pub fn tick(&mut self, now: u64) {
        // Time this replica itself did not run (its process stalled, say
        // on a large checkpoint) says nothing about the primary: the
        // timers do not count it. Nor does the time before its first tick:
        // a replica built on a running clock (a restart in the simulator,
        // the next epoch's replica in a node) that took a message before
        // any tick started its timers at 0, and would otherwise blame the
        // primary at once and change view alone.
        let gap = now.saturating_sub(self.now);
        if gap > STALL_MS {
            let lost = gap - STALL_MS;
            for t in [&mut self.timer_since, &mut self.vc_quorum_since]
                .into_iter()
                .flatten()
            {
                *t += lost;
            }
        }
        self.now = self.now.max(now);
        self.propose();
        self.check_timers();
        self.check_gap();
        self.probe();
        // Retransmission only while this replica makes no progress, and
        // less often the longer that lasts: under load, messages are late,
        // not lost, and sending everything again would only add load.
        let every = self.settings.retransmit_ms << self.retransmit_backoff;
        if self.now.saturating_sub(self.last_retransmit) >= every {
            self.last_retransmit = self.now;
            if self.last_executed > self.retransmit_mark {
                self.retransmit_mark = self.last_executed;
                self.retransmit_backoff = 0;
            } else {
                self.retransmit();
                self.resend_uncarried();
                self.retransmit_backoff = (self.retransmit_backoff + 1).min(MAX_RETRANSMIT_BACKOFF);
            }
        }
    }

    /// A message from another replica. Verified before anything counts.
    pub fn handle(&mut self, env: Envelope) -> Result<(), Refused> {
        let result = self.handle_message(env);
        // What executed may have made room for the waiting requests.
        self.propose();
        result
    }

    fn handle_message(&mut self, env: Envelope) -> Result<(), Refused> {
        if env.batch.is_none() && self.adds_nothing(&env.msg) {
            return Ok(());
        }
        self.cache.verify(&self.replicas, &env.msg)?;
        let from = env.msg.from;
        if env.batch.is_some() && !matches!(env.msg.body, Body::PrePrepare { .. }) {
            return Err(Refused::UnexpectedBatch);
        }
        match env.msg.body.clone() {
            Body::PrePrepare { view, seq, digest } => {
                self.on_pre_prepare(env.msg, env.batch, view, seq, digest)
            }
            Body::Prepare { view, seq, digest } => {
                self.in_view_and_window(from, view, seq)?;
                if from == self.replicas.primary(view) {
                    return Err(Refused::PrepareFromPrimary);
                }
                self.vote(env.msg, seq, digest, false)
            }
            Body::Commit { view, seq, digest } => {
                // A commit counts for a slot prepared in its view even while
                // this replica changes view: 2f + 1 of them prove the
                // request committed, whatever view comes next.
                let prepared_there = self
                    .slots
                    .get(&seq)
                    .is_some_and(|s| s.view == view && s.pre_prepare.is_some())
                    && seq > self.low;
                if !prepared_there {
                    self.in_view_and_window(from, view, seq)?;
                }
                self.vote(env.msg, seq, digest, true)
            }
            Body::Checkpoint { seq, .. } => self.on_checkpoint(env.msg, seq),
            Body::ViewChange { .. } => self.on_view_change(env.msg),
            Body::NewView { .. } => self.on_new_view(env),
            Body::Reply { .. } | Body::ReadIndex { .. } => Err(Refused::NotForReplicas),
        }
    }

    /// A prepare or commit that matches a slot which already has its quorum
    /// of that kind (prepared and its commit sent; committed) counts for
    /// nothing, so it is dropped before its signature is checked: in the
    /// normal case one prepare in three and one commit in three arrive
    /// after the quorum, and verifying is most of a replica's work. A vote
    /// with another view or digest is verified as ever (it may be
    /// evidence), and so is a prepare for a committed slot (it is answered).
    fn adds_nothing(&self, m: &Signed) -> bool {
        let (view, seq, digest, commit) = match m.body {
            Body::Prepare { view, seq, digest } => (view, seq, digest, false),
            Body::Commit { view, seq, digest } => (view, seq, digest, true),
            _ => return false,
        };
        if m.epoch != self.replicas.epoch() {
            return false;
        }
        self.slots.get(&seq).is_some_and(|slot| {
            slot.view == view
                && slot.digest == Some(digest)
                && if commit {
                    slot.committed
                } else {
                    slot.sent_commit && !slot.committed
                }
        })
    }

    fn in_view_and_window(&mut self, from: ReplicaId, view: View, seq: Seq) -> Result<(), Refused> {
        if view < self.view || (view == self.view && !self.active) {
            if view < self.view {
                self.help_behind(from);
            }
            return Err(if self.active {
                Refused::WrongView {
                    got: view,
                    current: self.view,
                }
            } else {
                Refused::ViewChanging(self.view)
            });
        }
        if view > self.view {
            self.later_view_seen = true;
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

    /// A prepare or commit: kept per sender; a second one with another
    /// digest for the same slot is evidence.
    fn vote(&mut self, msg: Signed, seq: Seq, digest: Digest, commit: bool) -> Result<(), Refused> {
        let slot = self.slots.entry(seq).or_default();
        let votes = if commit {
            &mut slot.commits
        } else {
            &mut slot.prepares
        };
        let from = msg.from;
        match votes.get(&from) {
            Some(existing) if existing.body == msg.body => {}
            // Two votes for one slot conflict only within one view (a slot
            // taken from a commit certificate may hold another view's).
            Some(existing) if existing.body.view() == msg.body.view() => {
                let e = Evidence::ConflictingVotes {
                    a: existing.clone(),
                    b: msg,
                };
                self.outputs.push(Output::Evidence(e));
                return Err(Refused::ConflictingVote {
                    view: slot.view,
                    seq,
                });
            }
            _ => {
                votes.insert(from, msg);
            }
        }
        let _ = digest;
        // A replica still sending its prepare for a slot committed here
        // (votes go out again only while uncommitted) may have missed the
        // commits: send it ours. Only prepares are answered, and only with
        // a commit, which is never answered: no two replicas can keep
        // answering each other.
        if slot.committed {
            if !commit && let Some(msg) = slot.commits.get(&self.id).cloned() {
                self.outputs.push(Output::Send {
                    to: from,
                    env: Envelope { msg, batch: None },
                });
            }
            return Ok(());
        }
        self.check(seq);
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
        self.in_view_and_window(msg.from, view, seq)?;
        if let Some(slot) = self.slots.get(&seq)
            && slot.committed
            && slot.view != view
        {
            // Committed here from another view's commit certificate: its
            // pre-prepare is no rival of this one (and nothing is left to do).
            return Ok(());
        }
        if let Some(existing) = self.slots.get(&seq).and_then(|s| s.pre_prepare.clone()) {
            if existing.body == msg.body {
                // A duplicate. A primary sends its pre-prepare again only
                // while it has not committed the slot: if this replica has,
                // its commit may be what the primary misses (nothing answers
                // a commit, so this cannot ping-pong).
                let from = msg.from;
                let ours = self
                    .slots
                    .get(&seq)
                    .filter(|s| s.committed)
                    .and_then(|s| s.commits.get(&self.id).cloned());
                if let Some(msg) = ours
                    && due(
                        &mut self.answered_pp,
                        from,
                        self.now,
                        self.settings.retransmit_ms,
                    )
                {
                    self.outputs.push(Output::Send {
                        to: from,
                        env: Envelope { msg, batch: None },
                    });
                }
                return Ok(());
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
        // Every request in it must be its client's (checked once: a request
        // already known here was checked when it arrived).
        for r in &batch {
            if self.waiting.get(&r.id()) != Some(r) {
                self.counters.verified += 1;
                if !r.verify() {
                    return Err(Refused::UnsignedRequest);
                }
            }
        }
        let prepare = self
            .may_sign(view, seq)
            .then(|| self.sign(Body::Prepare { view, seq, digest }));
        for r in &batch {
            self.note_in_flight(r);
        }
        let slot = self.slots.entry(seq).or_default();
        slot.view = view;
        slot.pre_prepare = Some(msg);
        slot.batch = Some(batch);
        slot.digest = Some(digest);
        if let Some(prepare) = prepare {
            slot.prepares.insert(self.id, prepare.clone());
            self.broadcast(prepare, None);
        }
        self.check(seq);
        Ok(())
    }

    /// A request is in a pre-prepare: still waited for (the timer watches it
    /// until it executes), no longer pending at the primary.
    fn note_in_flight(&mut self, r: &Request) {
        if self.done.get(&r.client).is_none_or(|&t| t < r.timestamp) {
            if !self.expecting() {
                self.timer_since = Some(self.now);
            }
            self.waiting.entry(r.id()).or_insert_with(|| r.clone());
        }
    }

    /// Moves `seq` along: prepared → record the certificate and send a
    /// commit; committed-local → execute everything that is next in order.
    pub(super) fn check(&mut self, seq: Seq) {
        let quorum = self.replicas.quorum();
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        let view = slot.view;
        let (Some(digest), Some(pp)) = (slot.digest, slot.pre_prepare.clone()) else {
            return;
        };
        let matching = |m: &&Signed| match &m.body {
            Body::Prepare {
                view: v, digest: d, ..
            }
            | Body::Commit {
                view: v, digest: d, ..
            } => *v == view && *d == digest,
            _ => false,
        };
        if !slot.sent_commit && !self.below_floor(view, seq) {
            if view != self.view || !self.active {
                return; // no new prepared certificates in an old view
            }
            // Prepared: the pre-prepare and 2f matching prepares from backups (§4.2).
            let prepares: Vec<Signed> = slot.prepares.values().filter(matching).cloned().collect();
            if prepares.len() < quorum - 1 {
                return;
            }
            let cert = PreparedCert {
                pre_prepare: pp,
                prepares: prepares.into_iter().take(quorum - 1).collect(),
                batch: slot.batch.clone().unwrap_or_default(),
            };
            let fresh = self
                .prepared
                .get(&seq)
                .is_none_or(|c| c.pre_prepare != cert.pre_prepare);
            if fresh {
                self.outputs
                    .push(Output::Persist(super::durable::Record::Prepared {
                        seq,
                        cert: cert.clone(),
                    }));
            }
            self.prepared.insert(seq, cert);
            if !self.may_sign(view, seq) {
                return;
            }
            let commit = self.sign(Body::Commit { view, seq, digest });
            let slot = self.slots.get_mut(&seq).expect("present");
            slot.sent_commit = true;
            slot.commits.insert(self.id, commit.clone());
            self.broadcast(commit, None);
        }
        let slot = self.slots.get_mut(&seq).expect("present");
        if !slot.committed && slot.commits.values().filter(matching).count() >= quorum {
            slot.committed = true;
            self.execute_ready();
        }
    }

    /// Executes committed batches in sequence order (§4.2).
    pub(super) fn execute_ready(&mut self) {
        while let Some(slot) = self.slots.get(&(self.last_executed + 1)) {
            if !slot.committed {
                break;
            }
            if let Some(cert) = self.slot_cert(slot) {
                self.outputs
                    .push(Output::Persist(super::durable::Record::Executed {
                        seq: self.last_executed + 1,
                        cert,
                    }));
            }
            let batch = slot.batch.clone().unwrap_or_default();
            self.last_executed += 1;
            for r in &batch {
                self.waiting.remove(&r.id());
                self.note_done(r.client, r.timestamp);
            }
            // Progress: the timer restarts for what still waits, and the
            // view-change timeout is back to its base.
            self.timer_since = self.expecting().then_some(self.now);
            self.vc_attempts = 0;
            self.outputs.push(Output::Execute {
                seq: self.last_executed,
                batch,
                checkpoint: self
                    .last_executed
                    .is_multiple_of(self.settings.checkpoint_interval),
            });
        }
    }

    fn on_checkpoint(&mut self, msg: Signed, seq: Seq) -> Result<(), Refused> {
        if !seq.is_multiple_of(self.settings.checkpoint_interval) || seq == 0 {
            return Err(Refused::OddCheckpoint(seq));
        }
        if seq <= self.low {
            return Ok(()); // old news
        }
        if seq > self.low + 2 * self.settings.window {
            // Far ahead of us: keep only each sender's latest.
            let from = msg.from;
            let newer = match self.ahead.get(&from).map(|m| &m.body) {
                Some(Body::Checkpoint { seq: s, .. }) => seq > *s,
                _ => true,
            };
            if newer {
                self.ahead.insert(from, msg);
            }
            self.check_ahead();
            return Ok(());
        }
        self.checkpoints
            .entry(seq)
            .or_default()
            .entry(msg.from)
            .or_insert(msg);
        self.check_stable(seq);
        Ok(())
    }

    /// The runtime executed up to `seq` (a checkpoint) and the state there
    /// has digest `state`: say so to all (§4.3).
    pub fn state_digest(&mut self, seq: Seq, state: Digest) {
        if seq <= self.low || seq > self.last_executed {
            return;
        }
        // The batches up to it must survive a restart of this replica
        // before it helps make the checkpoint stable (see `durable`).
        self.outputs.push(Output::Sync);
        let msg = self.sign(Body::Checkpoint { seq, state });
        self.checkpoints
            .entry(seq)
            .or_default()
            .insert(self.id, msg.clone());
        self.broadcast(msg, None);
        self.check_stable(seq);
    }

    /// §4.3: a checkpoint is stable once 2f + 1 replicas signed the same
    /// digest for it. With this replica among them, everything at or below
    /// it is discarded and the window moves; without (it has not got there),
    /// the proof is enough to fetch that state (§4.5).
    fn check_stable(&mut self, seq: Seq) {
        let Some(msgs) = self.checkpoints.get(&seq) else {
            return;
        };
        let mut by_state: BTreeMap<Digest, Vec<Signed>> = BTreeMap::new();
        for m in msgs.values() {
            if let Body::Checkpoint { state, .. } = m.body {
                by_state.entry(state).or_default().push(m.clone());
            }
        }
        let Some((state, proof)) = by_state
            .into_iter()
            .find(|(_, p)| p.len() >= self.replicas.quorum())
        else {
            return;
        };
        let mine = msgs.get(&self.id).map(|m| &m.body);
        if mine == Some(&Body::Checkpoint { seq, state }) {
            self.make_stable(seq, proof);
        } else if mine.is_none() && self.last_executed < seq {
            self.fetch(seq, state, proof);
        }
        // A replica whose own digest differs from the quorum's has diverged;
        // it keeps its own until someone proves otherwise.
    }

    /// A quorum of replicas far ahead agree on one checkpoint.
    fn check_ahead(&mut self) {
        let mut groups: BTreeMap<(Seq, Digest), Vec<Signed>> = BTreeMap::new();
        for m in self.ahead.values() {
            if let Body::Checkpoint { seq, state } = m.body {
                groups.entry((seq, state)).or_default().push(m.clone());
            }
        }
        if let Some(((seq, state), proof)) = groups
            .into_iter()
            .filter(|(_, p)| p.len() >= self.replicas.quorum())
            .max_by_key(|((s, _), _)| *s)
        {
            self.fetch(seq, state, proof);
        }
    }

    /// Asks the runtime for the state at `seq`, proven by `proof`; the
    /// window moves there now (nothing below it will be needed again).
    pub(super) fn fetch(&mut self, seq: Seq, state: Digest, proof: Vec<Signed>) {
        if self.fetching.is_some_and(|(s, _)| s >= seq) || self.last_executed >= seq {
            return;
        }
        self.fetching = Some((seq, state));
        self.move_low(seq, proof);
        self.outputs.push(Output::FetchState { seq, state });
    }

    /// The runtime installed the state at `seq` (its digest matched the one
    /// asked for); `executed` is each client's last executed timestamp in
    /// it, so requests it already holds stop waiting.
    pub fn installed_state(
        &mut self,
        seq: Seq,
        executed: impl IntoIterator<Item = (ClientId, u64)>,
    ) {
        if self.fetching.map(|(s, _)| s) != Some(seq) {
            return;
        }
        let (_, state) = self.fetching.take().expect("checked");
        self.last_executed = self.last_executed.max(seq);
        for (client, t) in executed {
            self.note_done(client, t);
        }
        let done = &self.done;
        self.waiting
            .retain(|(c, t), _| done.get(c).is_none_or(|d| d < t));
        self.pending
            .retain(|r| done.get(&r.client).is_none_or(|d| *d < r.timestamp));
        self.timer_since = self.expecting().then_some(self.now);
        let msg = self.sign(Body::Checkpoint { seq, state });
        // Kept with the proof (one more matching signature leaves it
        // valid): retransmission sends it while this replica is idle, which
        // is how others learn where it stands (and a replica still in an
        // ended epoch gets the proof of the end, see `epoch`).
        if seq == self.low && !self.stable_proof.iter().any(|m| m.from == self.id) {
            self.stable_proof.push(msg.clone());
        }
        self.broadcast(msg, None);
        self.execute_ready();
        self.check_end();
    }

    /// Stores the NEW-VIEW this replica entered last, to outlive the
    /// records at or below `low` (see [`super::durable::Record::NewView`]).
    pub(super) fn persist_new_view(&mut self, low: Seq) {
        if let Some(env) = self.new_view.clone() {
            self.outputs
                .push(Output::Persist(super::durable::Record::NewView {
                    seq: low + 1,
                    env,
                }));
        }
    }

    /// `client`'s request at `timestamp` executed (older ones are stale).
    pub(super) fn note_done(&mut self, client: ClientId, timestamp: u64) {
        let d = self.done.entry(client).or_insert(0);
        *d = (*d).max(timestamp);
    }

    fn make_stable(&mut self, seq: Seq, proof: Vec<Signed>) {
        self.move_low(seq, proof);
        self.propose();
    }

    /// The low watermark moves to `seq` (proven by `proof`): everything at
    /// or below it is discarded.
    pub(super) fn move_low(&mut self, seq: Seq, proof: Vec<Signed>) {
        if seq <= self.low {
            return;
        }
        self.low = seq;
        self.outputs
            .push(Output::Persist(super::durable::Record::Stable {
                seq,
                proof: proof.clone(),
            }));
        self.persist_new_view(seq);
        self.stable_proof = proof;
        self.slots = self.slots.split_off(&(seq + 1));
        self.kept_certs = self.kept_certs.split_off(&(seq + 1));
        self.prepared = self.prepared.split_off(&(seq + 1));
        self.checkpoints = self.checkpoints.split_off(&(seq + 1));
        self.ahead.retain(|_, m| match m.body {
            Body::Checkpoint { seq: s, .. } => s > seq,
            _ => false,
        });
        self.check_end();
    }

    /// Sends again what may have been lost (see the module docs).
    fn retransmit(&mut self) {
        let mut again = Vec::new();
        if !self.active {
            if let Some((vc, _)) = self.vcs.get(&(self.view, self.id)) {
                again.push(Envelope {
                    msg: vc.clone(),
                    batch: None,
                });
            }
            // Commits of slots prepared before the view change can still
            // complete (see `handle`).
            for slot in self.slots.values().filter(|s| !s.committed) {
                if let Some(m) = slot.commits.get(&self.id) {
                    again.push(Envelope {
                        msg: m.clone(),
                        batch: None,
                    });
                }
            }
            for env in again {
                self.outputs.push(Output::Broadcast(env));
            }
            return;
        }
        for slot in self.slots.values().filter(|s| !s.committed) {
            if let Some(pp) = &slot.pre_prepare
                && pp.from == self.id
            {
                again.push(Envelope {
                    msg: pp.clone(),
                    batch: slot.batch.clone(),
                });
            }
            for votes in [&slot.prepares, &slot.commits] {
                if let Some(m) = votes.get(&self.id) {
                    again.push(Envelope {
                        msg: m.clone(),
                        batch: None,
                    });
                }
            }
        }
        for msgs in self.checkpoints.values() {
            if let Some(m) = msgs.get(&self.id) {
                again.push(Envelope {
                    msg: m.clone(),
                    batch: None,
                });
            }
        }
        if let Some(m) = self.stable_proof.iter().find(|m| m.from == self.id) {
            again.push(Envelope {
                msg: m.clone(),
                batch: None,
            });
        }
        for env in again {
            self.outputs.push(Output::Broadcast(env));
        }
    }

    /// Requests no pre-prepare carries yet go to the primary again.
    fn resend_uncarried(&mut self) {
        if self.active && !self.is_primary() {
            let primary = self.replicas.primary(self.view);
            let mut resend = self.uncarried();
            resend.truncate(self.settings.max_batch);
            for request in resend {
                self.outputs.push(Output::Forward {
                    to: Some(primary),
                    request,
                });
            }
        }
    }

    /// Waiting requests that no pre-prepare in the current slots carries.
    pub(super) fn uncarried(&self) -> Vec<Request> {
        let carried: BTreeSet<(ClientId, u64)> = self
            .slots
            .values()
            .filter_map(|s| s.batch.as_ref())
            .flatten()
            .map(Request::id)
            .collect();
        self.waiting
            .iter()
            .filter(|(id, _)| !carried.contains(*id))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// `to` sent a message for an older view: it missed the NEW-VIEW.
    pub(super) fn help_behind(&mut self, to: ReplicaId) {
        let Some(nv) = self.new_view.clone() else {
            return;
        };
        if !due(&mut self.helped, to, self.now, self.settings.retransmit_ms) {
            return;
        }
        self.outputs.push(Output::Send { to, env: nv });
    }
}

/// Whether `to` may be sent something again (at most once per `every`
/// ms); if so, notes that it is sent now.
pub(crate) fn due<K: Ord>(last: &mut BTreeMap<K, u64>, to: K, now: u64, every: u64) -> bool {
    if last.get(&to).is_some_and(|&t| now < t + every) {
        return false;
    }
    last.insert(to, now);
    true
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
        Request::signed(
            &SigningKey::from_bytes(&[7; 32]),
            t,
            t.to_le_bytes().to_vec(),
        )
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
        assert!(matches!(
            &b.drain_outputs()[..],
            [Output::Reserve { .. }, Output::Broadcast(_)]
        ));
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
            max_in_flight: 4,
            checkpoint_interval: 2,
            ..Settings::default()
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
