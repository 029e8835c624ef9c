//! Read-index reads in the simulation (TOCS 2002 §5.1.3, as
//! [`crate::pbft::read_only`] adapts it): every correct replica now and
//! then reads as a node does, asking all replicas for their read index and
//! waiting until it executed the highest of 2f + 1 answers. Byzantine
//! replicas answer with numbers too low (to make a read stale) or far
//! ahead (to stall it). Checked when a read completes: the replica executed
//! every batch holding a request whose result a client had accepted before
//! the read began (a stale read is a violation). A read that waits too
//! long is given up (the engine then orders it instead): counted, not
//! checked.

use crate::pbft::message::{Body, Signed};
use crate::pbft::read_only::ReadRound;

use super::{Sim, Wire};

/// How often a correct replica starts a read, in ticks.
const READ_EVERY_TICKS: u64 = 25;
/// A read not done by then is given up.
const READ_GIVE_UP_US: u64 = 1_000_000;

/// A replica's read in progress.
#[derive(Debug, Clone)]
pub(super) enum Read {
    /// Asking: the round, and the highest sequence number acknowledged to a
    /// client when the read began.
    Asking(ReadRound, u64),
    /// Waiting to execute up to `index`.
    Waiting {
        index: u64,
        since_us: u64,
        acked: u64,
    },
}

impl Sim {
    /// On replica `i`'s tick: starts a read now and then, completes one
    /// whose index it executed (checking it is fresh), gives up a slow one.
    pub(super) fn read_tick(&mut self, i: usize, tick: u64) {
        if !self.correct(i) {
            return;
        }
        let executed = self.nodes[i].replica.last_executed();
        match self.nodes[i].read.clone() {
            None if tick.is_multiple_of(READ_EVERY_TICKS) => {
                self.counter += 1;
                let nonce = self.counter;
                let own = (i as u32, self.nodes[i].replica.read_index());
                let round = ReadRound::new(nonce, self.now_us, own);
                self.nodes[i].read = Some(Read::Asking(round, self.acked_seq));
                for to in (0..self.cfg.n).filter(|&j| j != i) {
                    self.send(i, to, &Wire::ReadIndex(nonce), 0);
                }
            }
            Some(Read::Asking(round, _)) if self.now_us >= round.started + READ_GIVE_UP_US => {
                self.nodes[i].read = None;
                self.report.reads_given_up += 1;
            }
            None | Some(Read::Asking(..)) => {}
            Some(Read::Waiting {
                index,
                since_us,
                acked,
            }) => {
                if executed >= index {
                    self.nodes[i].read = None;
                    self.report.reads += 1;
                    if executed < acked {
                        self.violate(format!(
                            "stale read at replica {i}: read index {index}, executed {executed}, but a client had accepted a result executed at {acked}"
                        ));
                    }
                } else if self.now_us >= since_us + READ_GIVE_UP_US {
                    self.nodes[i].read = None;
                    self.report.reads_given_up += 1;
                }
            }
        }
    }

    /// Replica `to` is asked for its read index by replica `from`. A
    /// Byzantine one lies: far too low or far ahead.
    pub(super) fn answer_read(&mut self, to: usize, from: usize, nonce: u64) {
        let client = self.nodes[from].key.verifying_key().to_bytes();
        let answer = if self.correct(to) {
            self.nodes[to].replica.answer_read_index(client, nonce)
        } else {
            let seq = if self.counter.is_multiple_of(2) {
                0
            } else {
                u64::MAX / 2
            };
            Signed::sign_in(
                self.nodes[to].replica.replicas().epoch(),
                to as u32,
                Body::ReadIndex { client, nonce, seq },
                &self.nodes[to].key,
            )
        };
        self.send(to, from, &Wire::ReadIndexAnswer(answer), 0);
    }

    /// An answer reaches replica `i`: with 2f + 1, its read waits to
    /// execute up to the highest.
    pub(super) fn read_answer(&mut self, i: usize, msg: &Signed) {
        let Some(Read::Asking(mut round, acked)) = self.nodes[i].read.clone() else {
            return;
        };
        let client = self.nodes[i].key.verifying_key().to_bytes();
        let Some((from, seq)) = self.nodes[i]
            .replica
            .check_read_index(msg, client, round.nonce)
        else {
            self.report.refused += 1;
            return;
        };
        round.answer(from, seq);
        let need = self
            .cfg
            .read_answers
            .unwrap_or(self.nodes[i].replica.replicas().quorum());
        self.nodes[i].read = Some(match round.index(need) {
            Some(index) => Read::Waiting {
                index,
                since_us: self.now_us,
                acked,
            },
            None => Read::Asking(round, acked),
        });
    }
}
