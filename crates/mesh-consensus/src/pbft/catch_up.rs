//! Catching up on committed batches a replica missed (TOCS 2002 §4.5 fetches
//! "missing entries" beside the checkpoint state): a replica that sees
//! others commit sequence numbers it cannot execute (it missed a
//! pre-prepare or the votes, say while cut off or during a view change)
//! asks for commit certificates. Each certificate carries the primary's
//! pre-prepare, the batch and 2f + 1 matching commits, so it proves the
//! batch committed without trusting whoever sent it; the replica then
//! executes in order as if it had voted. What is older than the others'
//! stable checkpoint comes by state transfer instead.

use super::config::{Seq, View};
use super::message::{Body, CommitCert, Digest, Envelope};
use super::replica::{Output, Refused, Replica};
use super::validate;
use std::collections::BTreeMap;

/// Most certificates in one answer.
pub const MAX_CERTS: usize = 64;

/// How often a replica that waits for nothing asks whether it is behind.
pub const IDLE_PROBE_MS: u64 = 1_000;

/// What a replica answers to another's "anything above `after`?" (see
/// [`Replica::entries_after`]).
#[derive(Debug, Default)]
pub struct EntriesAnswer {
    /// Commit certificates of batches above `after`, oldest first.
    pub certs: Vec<CommitCert>,
    /// When `after` is below this replica's stable checkpoint (the
    /// certificates there are discarded): that checkpoint's 2f + 1 signed
    /// messages, for the asker to fetch the state (§4.5).
    pub checkpoint_proof: Vec<super::message::Signed>,
    /// When the asker is in an earlier view than the one this replica
    /// entered: the NEW-VIEW of that view, which the asker checks in full
    /// before it enters (it missed it: restarted, cut off).
    pub new_view: Option<Envelope>,
}

impl Replica {
    /// Whether this replica is stuck behind: something above its next
    /// sequence number is committed (here, or by a quorum of others) while
    /// the next one is not. Asks once the gap has lasted a retransmission
    /// period, and again every period while it lasts.
    pub(super) fn check_gap(&mut self) {
        let next = self.last_executed + 1;
        let quorum = self.replicas.quorum();
        let next_committed = self.slots.get(&next).is_some_and(|n| n.committed);
        let gap = self.fetching.is_none()
            && !next_committed
            && (self
                .slots
                .range(next..)
                .any(|(&s, slot)| slot.committed && s > next || slot.commits.len() >= quorum)
                || self.checkpoint_vouched_from(next));
        match (gap, self.stalled) {
            (false, _) => self.stalled = None,
            (true, Some((at, since))) if at == self.last_executed => {
                if self.now.saturating_sub(since) >= self.settings.retransmit_ms {
                    self.stalled = Some((at, self.now));
                    self.ask_entries();
                }
            }
            (true, _) => self.stalled = Some((self.last_executed, self.now)),
        }
    }

    /// Asks the others for what they executed above this replica, in case
    /// it is behind without a sign of it. Votes are sent again only for
    /// slots the sender has not committed (see [`super::replica`]), so a
    /// replica that lost the votes of the last slots the others committed
    /// (a restart dropped its unsynced tail; a broken connection dropped
    /// frames) hears of the gap only from a later batch or checkpoint: in
    /// a quiet mesh, never. Its timer would then blame a correct primary
    /// for its own requests (executed everywhere else) and it would stand
    /// alone in a view change nobody joins. Castro's library multicasts
    /// status messages for this; here the question is the status, and
    /// peers answer only when they are ahead. Asked when a request has
    /// waited half the view-change timeout (before the timer blames the
    /// primary), every timeout during a view change, and every
    /// [`IDLE_PROBE_MS`] otherwise.
    pub(super) fn probe(&mut self) {
        if self.fetching.is_some() {
            return; // a state transfer is under way: it asks by itself
        }
        let every = match (self.active, self.timer_since) {
            // A replica of a later view signed something: this one missed
            // a NEW-VIEW (a restart, a cut), so it is out of the others'
            // view and leaves them no spare until it learns of it.
            _ if self.later_view_seen => self.settings.retransmit_ms,
            (false, _) => self.timeout(),
            (true, Some(since)) if self.now.saturating_sub(since) >= self.timeout() / 2 => {
                self.timeout() / 2
            }
            _ => IDLE_PROBE_MS,
        };
        if self.now.saturating_sub(self.probed) >= every {
            self.ask_entries();
        }
    }

    fn ask_entries(&mut self) {
        self.probed = self.now;
        self.later_view_seen = false;
        self.outputs.push(Output::FetchEntries {
            after: self.last_executed,
            view: self.view,
        });
    }

    /// The answer to another replica in `view` asking for what this one
    /// executed above `after`: commit certificates (at most `max`), if
    /// `after` is below the stable checkpoint that checkpoint's proof, and
    /// if `view` is below the view this replica entered last, its NEW-VIEW.
    /// Empty when this replica is not ahead.
    pub fn entries_after(&self, after: Seq, view: View, max: usize) -> EntriesAnswer {
        EntriesAnswer {
            certs: self.commit_certs(after, max),
            checkpoint_proof: if after < self.low {
                self.stable_proof.clone()
            } else {
                Vec::new()
            },
            new_view: if view < self.entered_view {
                self.new_view.clone()
            } else {
                None
            },
        }
    }

    /// Whether f + 1 others signed one digest for a checkpoint at or above
    /// `seq`: at least one correct replica executed through it, so `seq` is
    /// committed somewhere. This is the only sign of a gap when nothing
    /// follows the slot this replica missed (the last slot before a pause,
    /// or the end of an epoch, when a quorum of commits reached the others
    /// but not this replica and nobody retransmits a committed slot's
    /// votes).
    fn checkpoint_vouched_from(&self, seq: Seq) -> bool {
        self.checkpoints.range(seq..).any(|(_, msgs)| {
            let mut by_state: BTreeMap<Digest, usize> = BTreeMap::new();
            msgs.values()
                .filter(|m| m.from != self.id)
                .filter_map(|m| match m.body {
                    Body::Checkpoint { state, .. } => Some(state),
                    _ => None,
                })
                .for_each(|d| *by_state.entry(d).or_default() += 1);
            by_state.values().any(|&c| c >= self.replicas.weak())
        })
    }

    /// Commit certificates of executed batches above `after` still kept
    /// here (above the low watermark), oldest first, at most `max`.
    pub fn commit_certs(&self, after: Seq, max: usize) -> Vec<CommitCert> {
        if after >= self.last_executed {
            return Vec::new();
        }
        (after.max(self.low) + 1..=self.last_executed)
            .filter_map(|seq| {
                let slot = self.slots.get(&seq).and_then(|s| self.slot_cert(s));
                slot.or_else(|| self.kept_certs.get(&seq).cloned())
            })
            .take(max)
            .collect()
    }

    /// Commit certificates from another replica: each that checks out and
    /// is ahead of this replica is taken as committed, then whatever is
    /// ready executes. One bad certificate refuses the rest.
    pub fn on_commit_certs(&mut self, certs: Vec<CommitCert>) -> Result<usize, Refused> {
        let mut taken = 0;
        for cert in certs {
            let (view, seq, digest) =
                validate::commit_cert(&self.replicas, &cert, &mut self.cache)?;
            // At or below the low watermark is the stable checkpoint's
            // business (a state transfer may be under way to there).
            let floor = self.last_executed.max(self.low);
            if seq <= floor || seq > floor + self.settings.window {
                continue;
            }
            let slot = self.slots.entry(seq).or_default();
            if slot.committed {
                continue;
            }
            slot.view = view;
            slot.digest = Some(digest);
            slot.pre_prepare = Some(cert.pre_prepare);
            slot.batch = Some(cert.batch);
            slot.prepares.clear();
            slot.commits = cert.commits.into_iter().map(|c| (c.from, c)).collect();
            slot.committed = true;
            taken += 1;
        }
        self.execute_ready();
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::pbft::config::ReplicaId;
    use crate::pbft::message::{Body, Envelope, Request};
    use crate::pbft::replica::{Output, Settings};
    use crate::pbft::testing::{keys, replica_set};
    use crate::pbft::validate::CertError;

    fn req(t: u64) -> Request {
        Request::signed(&SigningKey::from_bytes(&[9; 32]), t, vec![t as u8])
    }

    /// Delivers broadcasts among `rs` until nothing moves; returns what
    /// each executed and every broadcast message.
    fn run(rs: &mut [Replica]) -> (Vec<Vec<Seq>>, Vec<Envelope>) {
        let mut executed = vec![Vec::new(); rs.len()];
        let mut all = Vec::new();
        loop {
            let mut mail = Vec::new();
            for (i, r) in rs.iter_mut().enumerate() {
                for o in r.drain_outputs() {
                    match o {
                        Output::Broadcast(e) => mail.push((r.id(), e)),
                        Output::Execute { seq, .. } => executed[i].push(seq),
                        _ => {}
                    }
                }
            }
            if mail.is_empty() {
                return (executed, all);
            }
            for (from, e) in mail {
                all.push(e.clone());
                for r in rs.iter_mut().filter(|r| r.id() != from) {
                    let _ = r.handle(e.clone());
                }
            }
        }
    }

    /// TOCS 2002 §4.5: a replica that missed a run of committed batches
    /// takes them from commit certificates (pre-prepare, batch, 2f + 1
    /// commits) and executes them in order; a certificate with another
    /// batch or too few commits is refused and changes nothing.
    #[test]
    fn a_replica_that_missed_batches_executes_them_from_commit_certificates() {
        let k = keys(4);
        let set = replica_set(&k);
        let mut rs: Vec<Replica> = k
            .into_iter()
            .enumerate()
            .map(|(i, key)| Replica::new(i as ReplicaId, set.clone(), key, Settings::default()))
            .collect();
        let mut behind = rs.pop().expect("four");
        for t in 1..=3 {
            rs[0].request(req(t));
        }
        let (executed, sent) = run(&mut rs);
        assert_eq!(executed[1], vec![1, 2, 3]);

        // The commits the others sent: the replica behind sees a quorum
        // commit sequence numbers it cannot execute, and asks once the gap
        // lasted a retransmission period.
        for e in sent
            .iter()
            .filter(|e| matches!(e.msg.body, Body::Commit { .. }))
        {
            let _ = behind.handle(e.clone());
        }
        behind.tick(1);
        behind.tick(1 + Settings::default().retransmit_ms);
        let asked = behind
            .drain_outputs()
            .into_iter()
            .any(|o| o == Output::FetchEntries { after: 0, view: 0 });
        assert!(asked, "a replica behind a quorum's commits asks for them");

        let certs = rs[1].commit_certs(0, MAX_CERTS);
        assert_eq!(certs.len(), 3);
        let mut forged = certs.clone();
        forged[0].batch = vec![req(99)];
        assert_eq!(
            behind.on_commit_certs(forged),
            Err(Refused::Certificate(CertError::BatchMismatch))
        );
        let mut weak = certs.clone();
        weak[1].commits.truncate(2);
        assert!(matches!(
            behind.on_commit_certs(weak.split_off(1)),
            Err(Refused::Certificate(CertError::WeakCert { .. }))
        ));
        assert_eq!(
            behind.last_executed(),
            0,
            "refused certificates change nothing"
        );

        assert_eq!(behind.on_commit_certs(certs), Ok(3));
        let seqs: Vec<Seq> = behind
            .drain_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Execute { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(behind.waiting(), 0);
    }

    /// The asks a replica made in this pass.
    fn asks(r: &mut Replica) -> Vec<Seq> {
        r.drain_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::FetchEntries { after, .. } => Some(after),
                _ => None,
            })
            .collect()
    }

    /// A replica that missed every vote of the last batches (its restart
    /// lost them, a broken connection dropped them) gets no sign of it
    /// in a quiet mesh: nobody sends a committed slot's votes again. It
    /// asks all the same, every [`IDLE_PROBE_MS`], and sooner (half the
    /// view-change timeout) while a request waits, before its timer could
    /// blame the primary for what the others executed; those ahead answer
    /// with commit certificates, the others with nothing.
    #[test]
    fn a_replica_behind_in_a_quiet_mesh_asks_and_catches_up() {
        let k = keys(4);
        let set = replica_set(&k);
        let mut rs: Vec<Replica> = k
            .into_iter()
            .enumerate()
            .map(|(i, key)| Replica::new(i as ReplicaId, set.clone(), key, Settings::default()))
            .collect();
        let mut behind = rs.pop().expect("four");
        for t in 1..=3 {
            rs[0].request(req(t));
        }
        let (executed, _) = run(&mut rs);
        assert_eq!(executed[1], vec![1, 2, 3]);

        behind.tick(1);
        assert!(asks(&mut behind).is_empty(), "not at once");
        behind.tick(1 + IDLE_PROBE_MS);
        assert_eq!(asks(&mut behind), vec![0], "asks when idle");
        behind.tick(2 + IDLE_PROBE_MS);
        assert!(asks(&mut behind).is_empty(), "not again at once");

        // A request waits: it asks at half the timeout, not a second later.
        let timeout = Settings::default().view_change_timeout_ms;
        behind.request(req(1));
        let _ = behind.drain_outputs();
        let since = 3 + IDLE_PROBE_MS;
        // In steps: a tick much later than the last is this replica's own
        // stall, which the timers do not count.
        for t in (since..=since + timeout / 2 + 1).step_by(10) {
            behind.tick(t);
        }
        assert_eq!(
            asks(&mut behind),
            vec![0],
            "asks before blaming the primary"
        );
        assert!(behind.is_active(), "and the timer has not fired yet");

        // Those ahead answer; one as far as this replica answers nothing.
        let answer = rs[1].entries_after(0, 0, MAX_CERTS);
        assert_eq!(answer.certs.len(), 3);
        assert!(
            answer.checkpoint_proof.is_empty(),
            "nothing is discarded yet"
        );
        assert_eq!(behind.on_commit_certs(answer.certs), Ok(3));
        assert_eq!(behind.last_executed(), 3);
        assert_eq!(behind.waiting(), 0, "its request was among them");
        assert!(behind.entries_after(3, 0, MAX_CERTS).certs.is_empty());
    }
}

#[cfg(test)]
mod restart_tests {
    use ed25519_dalek::SigningKey;

    use crate::pbft::config::ReplicaId;
    use crate::pbft::message::{Body, Request};
    use crate::pbft::replica::{Output, Replica, Settings};
    use crate::pbft::testing::{keys, replica_set};

    /// A replica that restarted without its memory signs no pre-prepare,
    /// prepare or commit at or below its last reservation (it may have
    /// signed different ones there before: equivocation, TOCS 2002 §4.4's
    /// reason for keeping them), and reserves before it signs beyond.
    #[test]
    fn a_restarted_replica_signs_nothing_it_may_have_signed_before() {
        let k = keys(4);
        let set = replica_set(&k);
        let mut primary = Replica::new(0, set.clone(), k[0].clone(), Settings::default());
        let mut reserved = None;
        let r = Request::signed(&SigningKey::from_bytes(&[3; 32]), 1, vec![1]);
        primary.request(r);
        for o in primary.drain_outputs() {
            match o {
                Output::Reserve { view, seq } => reserved = Some((view, seq)),
                Output::Broadcast(e) if matches!(e.msg.body, Body::PrePrepare { .. }) => {
                    assert!(
                        reserved.is_some(),
                        "reserved before the pre-prepare went out"
                    )
                }
                _ => {}
            }
        }
        let (view, seq) = reserved.expect("a reservation");
        assert_eq!((view, seq), (0, 1 + Settings::default().window));

        // Restarted: the same primary's next pre-prepare is above the floor.
        let mut again = Replica::new(0, set.clone(), k[0].clone(), Settings::default());
        again.resume(view, seq);
        again.request(Request::signed(
            &SigningKey::from_bytes(&[4; 32]),
            1,
            vec![2],
        ));
        let pre_prepared: Vec<u64> = again
            .drain_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Broadcast(e) => match e.msg.body {
                    Body::PrePrepare { seq, .. } => Some(seq),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert!(pre_prepared.iter().all(|&s| s > seq), "{pre_prepared:?}");

        // A restarted backup does not prepare a slot below its floor.
        let mut backup = Replica::new(1 as ReplicaId, set, k[1].clone(), Settings::default());
        backup.resume(0, 10);
        let mut p = Replica::new(0, replica_set(&k), k[0].clone(), Settings::default());
        p.request(Request::signed(
            &SigningKey::from_bytes(&[5; 32]),
            1,
            vec![3],
        ));
        for o in p.drain_outputs() {
            if let Output::Broadcast(e) = o {
                let _ = backup.handle(e);
            }
        }
        let prepared = backup.drain_outputs().into_iter().any(
            |o| matches!(o, Output::Broadcast(e) if matches!(e.msg.body, Body::Prepare { .. })),
        );
        assert!(!prepared, "seq 1 is below the floor of 10");
    }
}
