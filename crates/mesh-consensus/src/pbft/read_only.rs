//! Read-only requests without the three phases (TOCS 2002 §5.1.3), as a
//! read index.
//!
//! In the paper a client sends a read-only request to every replica, each
//! executes it at once in its tentative state, and the client takes the
//! result once 2f + 1 replicas answered alike, falling back to the ordered
//! path otherwise. Here the client is a node reading its own replica's
//! state (the node trusts itself; its own clients trust it), so what it
//! needs from the others is only freshness: that its state holds every
//! write acknowledged anywhere before the read began. It asks every replica
//! for the highest sequence number it knows committed or has prepared, and
//! takes the highest of 2f + 1 signed answers (its own among them):
//!
//! - a write acknowledged anywhere was committed, so 2f + 1 replicas sent a
//!   commit for it, each after preparing it; any 2f + 1 answers share f + 1
//!   replicas with those, at least one correct, whose answer is at or above
//!   the write's sequence number. No answer can lower the highest one, so
//!   f liars cannot make a read stale.
//! - a liar can name a sequence number far ahead, which this node would
//!   wait for; the runtime gives up after a while and orders the read
//!   instead (the paper's fallback), so a liar costs time, not correctness.
//!
//! The node then reads once its own replica executed up to that number.
//! Answers are signed (a forged one could lower the index), bound to the
//! asking client and a nonce (no replay from an older round).

use std::collections::BTreeMap;

use super::config::{ReplicaId, Seq};
use super::message::{Body, ClientId, Signed};
use super::replica::Replica;

impl Replica {
    /// The highest sequence number this replica knows committed, executed,
    /// or prepared (it sent a commit, or holds a prepared certificate,
    /// perhaps restored after a restart).
    pub fn read_index(&self) -> Seq {
        let slots = self
            .slots
            .iter()
            .rev()
            .find(|(_, s)| s.sent_commit || s.committed)
            .map_or(0, |(&seq, _)| seq);
        let prepared = self.prepared.keys().next_back().copied().unwrap_or(0);
        self.last_executed.max(slots).max(prepared)
    }

    /// This replica's signed answer to `client`'s read-only question `nonce`.
    pub fn answer_read_index(&mut self, client: ClientId, nonce: u64) -> Signed {
        let seq = self.read_index();
        self.sign(Body::ReadIndex { client, nonce, seq })
    }

    /// An answer to this replica's own question `nonce` as client `client`:
    /// the sender and its sequence number if the signature checks out and
    /// it is an answer to that question.
    pub fn check_read_index(
        &mut self,
        msg: &Signed,
        client: ClientId,
        nonce: u64,
    ) -> Option<(ReplicaId, Seq)> {
        match msg.body {
            Body::ReadIndex {
                client: c,
                nonce: n,
                seq,
            } if c == client && n == nonce => {
                // Not through the cache: each answer is seen once.
                self.counters.verified += 1;
                msg.verify(&self.replicas).ok()?;
                Some((msg.from, seq))
            }
            _ => None,
        }
    }
}

/// One round of a reader's question: the answers so far.
#[derive(Debug, Clone)]
pub struct ReadRound {
    /// The question's nonce, which the answers must echo.
    pub nonce: u64,
    /// When the round began (in the runtime's clock, for its fallback).
    pub started: u64,
    answers: BTreeMap<ReplicaId, Seq>,
}

impl ReadRound {
    /// A round that counts this replica's own index as its first answer.
    pub fn new(nonce: u64, started: u64, own: (ReplicaId, Seq)) -> Self {
        ReadRound {
            nonce,
            started,
            answers: BTreeMap::from([own]),
        }
    }

    /// A checked answer (one per replica counts).
    pub fn answer(&mut self, from: ReplicaId, seq: Seq) {
        self.answers.entry(from).or_insert(seq);
    }

    /// The read index once `quorum` replicas answered: the highest answer.
    pub fn index(&self, quorum: usize) -> Option<Seq> {
        (self.answers.len() >= quorum).then(|| self.answers.values().copied().max().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::pbft::message::Request;
    use crate::pbft::testing::{group, keys, settle};

    /// Four replicas; requests ordered with replica 3 cut off from
    /// everything (it knows nothing of them).
    fn four_with_one_behind(requests: u64) -> Vec<Replica> {
        let mut rs = group(4);
        let client = SigningKey::from_bytes(&[9; 32]);
        for t in 1..=requests {
            rs[0].request(Request::signed(&client, t, vec![t as u8]));
        }
        settle(&mut rs, 3, |_, _| {});
        rs
    }

    /// TOCS 2002 §5.1.3 (as a read index): replica 3 executed nothing, yet
    /// any 2f + 1 answers it collects, however they are chosen, name the
    /// last committed sequence number, so its read waits for it.
    #[test]
    fn any_quorum_of_answers_reaches_the_last_committed_write() {
        let mut rs = four_with_one_behind(3);
        assert_eq!(rs[0].last_executed(), 3);
        assert_eq!(rs[3].last_executed(), 0);
        let me = keys(4)[3].verifying_key().to_bytes();
        // Replica 3 asks; it and any two others answer.
        for others in [[0, 1], [0, 2], [1, 2]] {
            let own = rs[3].read_index();
            let mut round = ReadRound::new(7, 0, (3, own));
            for o in others {
                let a = rs[o].answer_read_index(me, 7);
                let (from, seq) = rs[3].check_read_index(&a, me, 7).expect("valid answer");
                round.answer(from, seq);
            }
            assert_eq!(round.index(3), Some(3), "answers from 3 and {others:?}");
        }
    }

    /// An answer counts only if it is signed by its replica, for this
    /// client and this question; one replica counts once; fewer than
    /// 2f + 1 answers give no index.
    #[test]
    fn forged_replayed_and_repeated_answers_do_not_count() {
        let mut rs = four_with_one_behind(2);
        let me = keys(4)[3].verifying_key().to_bytes();
        let good = rs[0].answer_read_index(me, 5);
        // Another question's answer (a replay).
        assert_eq!(rs[3].check_read_index(&good, me, 6), None);
        // Another client's.
        assert_eq!(rs[3].check_read_index(&good, [1; 32], 5), None);
        // A lowered sequence number under the same signature.
        let mut forged = good.clone();
        forged.body = Body::ReadIndex {
            client: me,
            nonce: 5,
            seq: 0,
        };
        assert_eq!(rs[3].check_read_index(&forged, me, 5), None);
        let mut round = ReadRound::new(5, 0, (3, 0));
        let (from, seq) = rs[3].check_read_index(&good, me, 5).unwrap();
        round.answer(from, seq);
        round.answer(from, seq);
        assert_eq!(round.index(3), None, "two replicas answered");
        round.answer(1, 2);
        assert_eq!(round.index(3), Some(2));
    }
}
