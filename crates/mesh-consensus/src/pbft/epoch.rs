//! Reconfiguration: changing the replica set by a committed decision.
//!
//! The paper fixes the replica set (TOCS 2002 §4.1, and §6 leaves
//! membership changes to future work). Ours changes only by agreement of
//! the replicas in charge, ordered like any request, and in a way that no
//! sequence number is ever ordered by two configurations:
//!
//! - **Who decides.** A replica *votes* for a new replica set (a list of
//!   ed25519 keys: the order fixes the new ids) with a request signed by its
//!   own replica key. Votes are replicated state ([`Reconfig`]); a proposal
//!   is decided when a quorum (2f + 1) of the current replicas voted for the
//!   same list, so f liars can neither force a change nor block one.
//! - **When it takes effect.** A change decided by the batch at `s` ends
//!   the epoch at `end = ⌈(s + window) / K⌉ · K` ([`epoch_end`]): a
//!   checkpoint, at least a window above `s`. A replica that has not yet
//!   executed `s` (so does not know of the change) has its low watermark
//!   below `s` and so takes part in nothing above `s - 1 + window ≤ end`:
//!   no correct replica ever prepares a sequence number above `end` in the
//!   old epoch, so no certificate for one exists (Lamport's α in
//!   "Reconfiguring a State Machine", 2010, with α the window). Once the
//!   end is known, the high watermark stops there and the primary fills the
//!   slots up to it with null requests (so a quiet mesh changes too); the
//!   view-change timer runs until `end` executes (so a silent primary
//!   cannot stall the change).
//! - **Handing over.** Executing `end` switches the application's
//!   configuration (so the checkpoint digest at `end` covers the new set);
//!   when the checkpoint at `end` is stable (2f + 1 signatures of the old
//!   set) the replica reports [`Output::EpochEnd`] and orders nothing more.
//!   The runtime starts the replica of the next epoch (if this node is in
//!   it) from the state at `end`: view 0, low watermark `end`, its waiting
//!   requests handed over. A new member fetches the state at `end` and
//!   checks it against the old set's proof, like any state transfer (§4.5).
//! - **Separation.** Every signed message names its epoch and signatures
//!   cover it ([`super::message::Signed`]): a message of one configuration
//!   never counts in another, and one from a replica that is merely behind
//!   is no evidence of anything ([`VerifyError::OtherEpoch`]). A replica
//!   still in the old epoch is sent the proof of its end, then fetches.
//!
//! [`Output::EpochEnd`]: super::replica::Output::EpochEnd
//! [`VerifyError::OtherEpoch`]: super::message::VerifyError::OtherEpoch

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{ConfigError, ReplicaId, ReplicaSet, Seq};
use super::message::{ClientId, Request};
use super::replica::{Output, Replica, Settings};

/// The last sequence number of an epoch whose change was decided by the
/// batch at `decided_at` (see the module docs).
pub fn epoch_end(decided_at: Seq, settings: &Settings) -> Seq {
    let k = settings.checkpoint_interval;
    (decided_at + settings.window).div_ceil(k) * k
}

/// A change the current replicas decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// The sequence number of the batch that decided it.
    pub at: Seq,
    /// The last sequence number the current configuration orders.
    pub end: Seq,
    /// The next configuration (epoch + 1, starting after `end`).
    pub next: ReplicaSet,
    /// Its replicas' names, by id (empty when the runtime names none).
    pub names: Vec<String>,
}

/// Longest replica name a vote may carry.
pub const MAX_NAME_BYTES: usize = 128;

/// The replicated configuration: the replica set in force, the votes for
/// the next one, and a decided change not yet in force. Part of the
/// application state, so checkpoints digest it and state transfer moves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconfig {
    /// The replica set in force.
    pub config: ReplicaSet,
    /// The names the runtime addresses the replicas in force by (node names
    /// in a mesh), by id; empty when it names none. Part of what is voted
    /// on, so f liars cannot misdirect the others to addresses of theirs.
    pub names: Vec<String>,
    /// Each current replica's latest proposal: keys, and names.
    pub votes: BTreeMap<ReplicaId, (Vec<[u8; 32]>, Vec<String>)>,
    /// The change a quorum decided, until it is in force.
    pub decided: Option<Decided>,
}

/// What a counted vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteOutcome {
    /// The proposal has `votes` of the `need` it takes.
    Counted {
        /// Current replicas whose latest vote is for this proposal.
        votes: usize,
        /// Votes that decide it: the quorum, 2f + 1.
        need: usize,
    },
    /// This vote decided it.
    Decided(Decided),
}

/// Why a vote does not count (on every replica alike: it is ordered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// The vote's client key is not the key of a current replica.
    #[error("only a replica of the current configuration votes on the next (with its replica key)")]
    NotAReplica,
    /// The proposed keys do not make a valid replica set.
    #[error("the proposed replica set is not valid: {0}")]
    BadSet(#[from] ConfigError),
    /// The proposed keys and names are those in force.
    #[error("the proposed replica set is the current one")]
    Unchanged,
    /// The proposed names are not one per key, empty, too long, or repeated
    /// (the text says which).
    #[error("the proposed names are not valid: {0}")]
    BadNames(String),
    /// The vote's operation is not an encoded proposal.
    #[error("the proposal does not decode")]
    Undecodable,
    /// A change is decided and not yet in force: no vote counts until it is.
    #[error(
        "a change is already decided (epoch {epoch} from sequence {end}); vote again once it is in force"
    )]
    AlreadyDecided {
        /// The decided configuration's epoch.
        epoch: u64,
        /// The last sequence number of the current epoch.
        end: Seq,
    },
}

impl Reconfig {
    /// The configuration `config` in force, its replicas unnamed, with no votes.
    pub fn new(config: ReplicaSet) -> Self {
        Self::named(config, Vec::new())
    }

    /// The genesis configuration with its replicas' names (by id).
    pub fn named(config: ReplicaSet, names: Vec<String>) -> Self {
        Reconfig {
            config,
            names,
            votes: BTreeMap::new(),
            decided: None,
        }
    }

    /// Counts `voter`'s vote, ordered at `seq`, for the replica set `keys`
    /// named `names` (one per key, or none); a voter's later vote replaces
    /// its earlier one, and only votes for the same keys and names count
    /// together.
    pub fn vote(
        &mut self,
        voter: &ClientId,
        keys: Vec<[u8; 32]>,
        names: Vec<String>,
        seq: Seq,
        settings: &Settings,
    ) -> Result<VoteOutcome, VoteError> {
        let id = self.config.id_of(voter).ok_or(VoteError::NotAReplica)?;
        if let Some(d) = &self.decided {
            return Err(VoteError::AlreadyDecided {
                epoch: d.next.epoch(),
                end: d.end,
            });
        }
        if keys == self.config.keys() && names == self.names {
            return Err(VoteError::Unchanged);
        }
        check_names(&names, keys.len())?;
        let end = epoch_end(seq, settings);
        let next = self.config.next(end, keys.clone())?;
        let proposal = (keys, names);
        self.votes.insert(id, proposal.clone());
        let votes = self.votes.values().filter(|p| **p == proposal).count();
        let need = self.config.quorum();
        if votes < need {
            return Ok(VoteOutcome::Counted { votes, need });
        }
        let d = Decided {
            at: seq,
            end,
            next,
            names: proposal.1,
        };
        self.decided = Some(d.clone());
        self.votes.clear();
        Ok(VoteOutcome::Decided(d))
    }

    /// Where epoch `epoch` ends and the configuration after it, once this
    /// state knows: a change decided in it, or a state at (or past) the end
    /// with the next configuration already in force (it came by state
    /// transfer). What every runtime hands [`Replica::end_epoch`].
    pub fn after(&self, epoch: super::config::Epoch) -> Option<(Seq, &ReplicaSet)> {
        match &self.decided {
            Some(d) if d.next.epoch() == epoch + 1 => Some((d.end, &d.next)),
            _ if self.config.epoch() == epoch + 1 => Some((self.config.start(), &self.config)),
            _ => None,
        }
    }

    /// The batch at `seq` executed: at a decided end, the next
    /// configuration is in force (returned).
    pub fn executed(&mut self, seq: Seq) -> Option<&ReplicaSet> {
        if self.decided.as_ref().is_some_and(|d| d.end == seq) {
            let d = self.decided.take().expect("checked");
            self.config = d.next;
            self.names = d.names;
            self.votes.clear();
            return Some(&self.config);
        }
        None
    }
}

/// Names are optional; given, one per replica, each non-empty, at most
/// [`MAX_NAME_BYTES`], and no two alike.
fn check_names(names: &[String], n: usize) -> Result<(), VoteError> {
    if names.is_empty() {
        return Ok(());
    }
    if names.len() != n {
        return Err(VoteError::BadNames(format!(
            "{} names for {n} replicas",
            names.len()
        )));
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(VoteError::BadNames(format!(
                "a name is 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
        if names[..i].contains(name) {
            return Err(VoteError::BadNames(format!("'{name}' is named twice")));
        }
    }
    Ok(())
}

impl Replica {
    /// The epoch's last sequence number is `end` (the runtime's application
    /// decided it, [`Reconfig`]): nothing above it is ordered in this
    /// epoch. Once known it does not change.
    pub fn end_epoch(&mut self, end: Seq) {
        if self.end.is_some() {
            return;
        }
        debug_assert!(end.is_multiple_of(self.settings.checkpoint_interval));
        let was = self.expecting();
        self.end = Some(end);
        // A change must come even if no client asks for anything: the
        // view-change timer now watches the slots up to the end.
        if !was && self.expecting() {
            self.timer_since = Some(self.now);
        }
        self.propose();
        self.check_end();
    }

    /// The epoch's last sequence number, once known.
    pub fn epoch_end(&self) -> Option<Seq> {
        self.end
    }

    /// Whether this replica ordered its epoch's last batch and saw its
    /// checkpoint stable ([`Output::EpochEnd`] went out).
    pub fn epoch_ended(&self) -> bool {
        self.ended
    }

    /// The primary fills the slots up to a known end with null requests.
    pub(super) fn filling(&self) -> bool {
        self.end.is_some_and(|end| self.assigned < end)
    }

    /// Whether this replica waits for the primary to order something: a
    /// request it knows of, or the slots up to a known end. After the end
    /// nothing: its waiting requests are for the next epoch.
    pub(super) fn expecting(&self) -> bool {
        match self.end {
            Some(end) => self.last_executed < end,
            None => !self.waiting.is_empty(),
        }
    }

    /// Reports the end once the last batch executed here and its
    /// checkpoint is stable.
    pub(super) fn check_end(&mut self) {
        let Some(end) = self.end else {
            return;
        };
        if !self.ended && self.low >= end && self.last_executed >= end {
            self.ended = true;
            self.outputs.push(Output::EpochEnd {
                seq: end,
                proof: self.stable_proof.clone(),
            });
        }
    }

    /// A new member's replica starts without the state at its epoch's
    /// start: it fetches the state with digest `state` (which the runtime
    /// took from the old set's proof of the end) and executes nothing
    /// before [`Replica::installed_state`] says it is there. It votes in
    /// the meantime: ordering does not need the state.
    pub fn join(&mut self, state: super::message::Digest) {
        let start = self.replicas.start();
        self.last_executed = start.saturating_sub(1);
        self.fetching = Some((start, state));
        self.outputs.push(Output::FetchState { seq: start, state });
    }

    /// The requests this replica knows of and has not executed, for the
    /// next epoch's replica.
    pub fn waiting_requests(&self) -> Vec<Request> {
        self.waiting.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbft::message::Body;
    use crate::pbft::testing::{keys, replica_set};

    fn settings() -> Settings {
        Settings {
            window: 16,
            checkpoint_interval: 8,
            ..Settings::default()
        }
    }

    /// A replica with the runtime around it: a toy application (the
    /// hash of everything executed) plus the replicated [`Reconfig`].
    struct Node {
        key: ed25519_dalek::SigningKey,
        replica: Replica,
        reconfig: Reconfig,
        chain: [u8; 32],
        /// (seq, batch digest) executed, in order.
        executed: Vec<(Seq, [u8; 32])>,
        ended: Option<(Seq, Vec<crate::pbft::message::Signed>)>,
        /// Pre-prepares, prepares and commits this replica signed: (epoch, seq).
        signed_slots: Vec<(u64, Seq)>,
        silent: bool,
        /// Falls silent once it executed the decision.
        silent_after_decision: bool,
        decided_at: Option<Seq>,
    }

    const VOTE: &[u8] = b"vote:";

    fn vote_op(keys: &[[u8; 32]]) -> Vec<u8> {
        let mut op = VOTE.to_vec();
        op.extend(postcard::to_allocvec(keys).unwrap());
        op
    }

    impl Node {
        fn new(key: &ed25519_dalek::SigningKey, set: &ReplicaSet) -> Node {
            let id = set.id_of(&key.verifying_key().to_bytes()).unwrap();
            Node {
                key: key.clone(),
                replica: Replica::new(id, set.clone(), key.clone(), settings()),
                reconfig: Reconfig::new(set.clone()),
                chain: [0; 32],
                executed: Vec::new(),
                ended: None,
                signed_slots: Vec::new(),
                silent: false,
                silent_after_decision: false,
                decided_at: None,
            }
        }

        /// The next epoch's replica of this node, from the state at the end.
        fn next_epoch(&self) -> Node {
            let set = self.reconfig.config.clone();
            let mut n = Node::new(&self.key, &set);
            n.chain = self.chain;
            n.executed = self.executed.clone();
            for r in self.replica.waiting_requests() {
                n.replica.forwarded(r);
            }
            n
        }

        fn digest(&self) -> [u8; 32] {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(self.chain);
            h.update(postcard::to_allocvec(&self.reconfig).unwrap());
            h.finalize().into()
        }

        fn execute(&mut self, seq: Seq, batch: &[Request], checkpoint: bool) {
            use sha2::Digest as _;
            for r in batch {
                if let Some(keys) = r.op.strip_prefix(VOTE) {
                    let keys: Vec<[u8; 32]> = postcard::from_bytes(keys).unwrap();
                    if let Ok(VoteOutcome::Decided(d)) =
                        self.reconfig
                            .vote(&r.client, keys, Vec::new(), seq, &settings())
                    {
                        self.decided_at = Some(seq);
                        self.silent |= self.silent_after_decision;
                        self.replica.end_epoch(d.end);
                    }
                }
                let mut h = sha2::Sha256::new();
                h.update(self.chain);
                h.update(&r.op);
                self.chain = h.finalize().into();
            }
            self.reconfig.executed(seq);
            self.executed
                .push((seq, crate::pbft::message::batch_digest(batch)));
            if checkpoint {
                let d = self.digest();
                self.replica.state_digest(seq, d);
            }
        }
    }

    /// Delivers everything among the nodes (a silent one sends nothing)
    /// and runs their outputs until none is left.
    fn settle(nodes: &mut [Node]) {
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                for o in nodes[i].replica.drain_outputs() {
                    moved = true;
                    let env = match o {
                        Output::Broadcast(env) => Some(env),
                        Output::Send { env, .. } => Some(env),
                        Output::Forward { request, .. } => {
                            if !nodes[i].silent {
                                for j in (0..nodes.len()).filter(|&j| j != i) {
                                    nodes[j].replica.forwarded(request.clone());
                                }
                            }
                            None
                        }
                        Output::Execute {
                            seq,
                            batch,
                            checkpoint,
                        } => {
                            nodes[i].execute(seq, &batch, checkpoint);
                            None
                        }
                        Output::EpochEnd { seq, proof } => {
                            nodes[i].ended = Some((seq, proof));
                            None
                        }
                        _ => None,
                    };
                    let Some(env) = env else { continue };
                    if let Body::PrePrepare { seq, .. }
                    | Body::Prepare { seq, .. }
                    | Body::Commit { seq, .. } = env.msg.body
                    {
                        nodes[i].signed_slots.push((env.msg.epoch, seq));
                    }
                    if nodes[i].silent {
                        continue;
                    }
                    for j in (0..nodes.len()).filter(|&j| j != i) {
                        let _ = nodes[j].replica.handle(env.clone());
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn tick_all(nodes: &mut [Node], now: u64) {
        for n in nodes.iter_mut() {
            n.replica.tick(now);
        }
        settle(nodes);
    }

    /// Replicas 0-2 of {0, 1, 2, 3} vote to replace 0 by newcomer 4; the
    /// change is decided, the primary fills the slots up to the end with
    /// null requests, every replica reports the end with a proof the old
    /// set signed, nothing above the end is signed in the old epoch, and
    /// the new set {1, 2, 3, 4} (4 starting from the state at the end)
    /// orders the next request. A message of the old epoch does not count
    /// in the new one, and is not taken for a lie.
    #[test]
    fn a_decided_change_hands_over_at_the_end_checkpoint() {
        let k = keys(5);
        let old = replica_set(&k[..4]);
        let mut nodes: Vec<Node> = k[..4].iter().map(|key| Node::new(key, &old)).collect();
        let new_keys: Vec<[u8; 32]> = k[1..5]
            .iter()
            .map(|k| k.verifying_key().to_bytes())
            .collect();
        // Some ordinary requests first, then the votes.
        let client = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
        for t in 1..=3 {
            nodes[1]
                .replica
                .request(Request::signed(&client, t, vec![t as u8]));
            settle(&mut nodes);
        }
        for (i, t) in [(0usize, 1u64), (1, 1), (2, 1)] {
            let vote = Request::signed(&k[i], t, vote_op(&new_keys));
            nodes[i].replica.request(vote);
            settle(&mut nodes);
        }
        let end = nodes[0].replica.epoch_end().expect("decided");
        let decided_at = nodes[0].decided_at.expect("decided");
        assert_eq!(end, epoch_end(decided_at, &settings()));
        for n in &nodes {
            let (seq, proof) = n.ended.clone().expect("every replica saw the end");
            assert_eq!(seq, end);
            let digest = crate::pbft::validate::checkpoint_proof(
                &old,
                end,
                &proof,
                &mut crate::pbft::message::SigCache::default(),
            )
            .expect("the old set proves the end");
            assert_eq!(digest, n.digest());
            assert_eq!(n.replica.last_executed(), end);
            assert!(n.signed_slots.iter().all(|&(e, s)| e == 0 && s <= end));
            assert_eq!(n.reconfig.config.keys(), &new_keys[..]);
        }
        // Null requests filled the slots after the decision.
        assert!(
            nodes[0].executed[decided_at as usize..]
                .iter()
                .all(|(_, d)| *d == crate::pbft::message::batch_digest(&[]))
        );
        // A request arriving now waits for the next epoch.
        nodes[2]
            .replica
            .request(Request::signed(&client, 4, vec![4]));
        settle(&mut nodes);
        assert_eq!(nodes[2].replica.last_executed(), end);
        assert!(
            nodes
                .iter()
                .all(|n| n.signed_slots.iter().all(|&(_, s)| s <= end))
        );
        // The next epoch: 1, 2, 3 carry on, 4 starts from 1's state (as a
        // state transfer checked against the proof would give it).
        let mut next: Vec<Node> = nodes[1..].iter().map(Node::next_epoch).collect();
        let mut newcomer = nodes[1].next_epoch();
        newcomer.key = k[4].clone();
        newcomer.replica = Replica::new(
            3,
            newcomer.reconfig.config.clone(),
            k[4].clone(),
            settings(),
        );
        next.push(newcomer);
        for n in &next {
            assert_eq!(n.replica.replicas().epoch(), 1);
            assert_eq!(n.replica.low_watermark(), end);
        }
        // The old primary's pre-prepare of the old epoch is refused as
        // another epoch's, not as a forgery.
        let old_pp = crate::pbft::message::Signed::sign(
            0,
            Body::PrePrepare {
                view: 0,
                seq: end + 1,
                digest: crate::pbft::message::batch_digest(&[]),
            },
            &k[0],
        );
        assert_eq!(
            next[1].replica.handle(crate::pbft::message::Envelope {
                msg: old_pp,
                batch: Some(Vec::new()),
            }),
            Err(crate::pbft::replica::Refused::Signature(
                crate::pbft::message::VerifyError::OtherEpoch { got: 0, current: 1 }
            ))
        );
        // Request 4 was handed over; it executes at end + 1 on all four.
        tick_all(&mut next, 1);
        for n in &next {
            assert_eq!(
                n.replica.last_executed(),
                end + 1,
                "{}",
                n.replica.debug_state()
            );
            assert_eq!(n.executed.last().unwrap().0, end + 1);
        }
        assert!(next.iter().all(|n| n.chain == next[0].chain));
    }

    /// The primary goes silent right after the change is decided, and no
    /// client asks for anything: the view-change timer watches the slots
    /// up to the end, a new primary fills them and the epoch ends.
    #[test]
    fn a_silent_primary_cannot_stall_a_decided_change() {
        let k = keys(5);
        let old = replica_set(&k[..4]);
        let mut nodes: Vec<Node> = k[..4].iter().map(|key| Node::new(key, &old)).collect();
        let new_keys: Vec<[u8; 32]> = k[1..5]
            .iter()
            .map(|k| k.verifying_key().to_bytes())
            .collect();
        nodes[0].silent_after_decision = true;
        for (i, key) in k[..3].iter().enumerate() {
            let vote = Request::signed(key, 1, vote_op(&new_keys));
            nodes[i].replica.request(vote);
            settle(&mut nodes);
        }
        assert!(nodes[0].silent);
        let end = nodes[1].replica.epoch_end().expect("decided");
        assert!(nodes[1].replica.last_executed() < end);
        let mut now = 0;
        while nodes[1..].iter().any(|n| n.ended.is_none()) {
            now += 50;
            assert!(now < 20_000, "{}", nodes[1].replica.debug_state());
            tick_all(&mut nodes, now);
        }
        for n in &nodes[1..] {
            assert!(
                n.replica.view() >= 1,
                "a view change replaced the silent primary"
            );
            assert_eq!(n.replica.last_executed(), end);
        }
    }

    #[test]
    fn the_end_is_a_checkpoint_a_window_above_the_decision() {
        let s = settings();
        assert_eq!(epoch_end(1, &s), 24);
        assert_eq!(epoch_end(8, &s), 24);
        assert_eq!(epoch_end(9, &s), 32);
        let d = Settings::default();
        assert_eq!(epoch_end(100, &d), 384);
        assert_eq!(epoch_end(128, &d), 384);
    }

    /// A quorum of the current replicas decides; votes of others, invalid
    /// sets and a second change before the first is in force do not count.
    #[test]
    fn a_quorum_of_current_replicas_decides_a_change() {
        let k = keys(6);
        let set = replica_set(&k[..4]);
        let mut r = Reconfig::new(set.clone());
        let s = settings();
        let new: Vec<[u8; 32]> = k[1..5]
            .iter()
            .map(|k| k.verifying_key().to_bytes())
            .collect();
        let key = |i: usize| k[i].verifying_key().to_bytes();
        assert_eq!(
            r.vote(&key(5), new.clone(), Vec::new(), 3, &s),
            Err(VoteError::NotAReplica)
        );
        assert_eq!(
            r.vote(&key(0), set.keys().to_vec(), Vec::new(), 3, &s),
            Err(VoteError::Unchanged)
        );
        assert!(matches!(
            r.vote(&key(0), new[..3].to_vec(), Vec::new(), 3, &s),
            Err(VoteError::BadSet(ConfigError::TooFew(3)))
        ));
        assert_eq!(
            r.vote(&key(0), new.clone(), Vec::new(), 3, &s),
            Ok(VoteOutcome::Counted { votes: 1, need: 3 })
        );
        // A vote for another list counts for that list only; a voter's
        // later vote replaces its earlier one.
        let other: Vec<[u8; 32]> = k[2..6]
            .iter()
            .map(|k| k.verifying_key().to_bytes())
            .collect();
        assert_eq!(
            r.vote(&key(1), other.clone(), Vec::new(), 4, &s),
            Ok(VoteOutcome::Counted { votes: 1, need: 3 })
        );
        assert_eq!(
            r.vote(&key(1), new.clone(), Vec::new(), 5, &s),
            Ok(VoteOutcome::Counted { votes: 2, need: 3 })
        );
        let Ok(VoteOutcome::Decided(d)) = r.vote(&key(3), new.clone(), Vec::new(), 9, &s) else {
            panic!("a third vote decides")
        };
        assert_eq!(
            (d.at, d.end, d.next.epoch(), d.next.start()),
            (9, 32, 1, 32)
        );
        assert_eq!(d.next.keys(), &new[..]);
        assert!(matches!(
            r.vote(&key(2), other, Vec::new(), 10, &s),
            Err(VoteError::AlreadyDecided { epoch: 1, end: 32 })
        ));
        assert_eq!(r.executed(31), None);
        assert_eq!(r.executed(32).map(|c| c.epoch()), Some(1));
        assert_eq!(r.config, d.next);
        assert!(r.decided.is_none() && r.votes.is_empty());
    }

    /// Names are part of the proposal: a liar voting the right keys under
    /// its own names does not count with the others, and bad name lists
    /// are refused alike on every replica.
    #[test]
    fn names_are_voted_with_the_keys() {
        let k = keys(5);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let set = replica_set(&k[..4]);
        let mut r = Reconfig::named(set, names(&["a", "b", "c", "d"]));
        let s = settings();
        let key = |i: usize| k[i].verifying_key().to_bytes();
        let new: Vec<[u8; 32]> = (1..5).map(key).collect();
        let good = names(&["b", "c", "d", "e"]);
        for (bad, why) in [
            (names(&["b", "c", "d"]), "3 names for 4 replicas"),
            (names(&["b", "c", "c", "e"]), "'c' is named twice"),
            (names(&["b", "", "d", "e"]), "a name is 1 to"),
        ] {
            let err = r.vote(&key(0), new.clone(), bad, 1, &s).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        assert!(r.votes.is_empty(), "a refused vote changes nothing");
        r.vote(&key(0), new.clone(), good.clone(), 2, &s).unwrap();
        r.vote(&key(1), new.clone(), names(&["b", "c", "d", "evil"]), 3, &s)
            .unwrap();
        assert_eq!(
            r.vote(&key(2), new.clone(), good.clone(), 4, &s),
            Ok(VoteOutcome::Counted { votes: 2, need: 3 })
        );
        let Ok(VoteOutcome::Decided(d)) = r.vote(&key(3), new, good.clone(), 5, &s) else {
            panic!("the third matching vote decides")
        };
        assert_eq!(d.names, good);
        r.executed(d.end);
        assert_eq!(r.names, good);
    }
}
