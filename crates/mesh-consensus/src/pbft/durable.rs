//! What a replica must find again after it restarts, and restoring it
//! (sans-IO: the replica says what to store with [`Output::Persist`]; the
//! runtime stores it and hands it back to [`Replica::restore`]).
//!
//! Three kinds of record:
//! - **prepared certificates**, synced before the commit they justify is sent.
//!   Safety across view changes rests on them (TOCS 2002 §4.4): a batch
//!   committed at `seq` was prepared at 2f + 1 replicas, so any 2f + 1
//!   VIEW-CHANGEs carry its certificate from one of them, and the new view
//!   keeps it. A replica that forgot its certificates in a restart would
//!   no longer count among those 2f + 1; if every replica restarted at once
//!   (a power cut), a committed batch could be replaced. Stored, they come
//!   back into the replica's VIEW-CHANGE;
//! - **executed batches with their commit certificates**: a restarted
//!   replica executes them again on top of its last stored checkpoint and
//!   can prove them to others that missed them. They need no sync of their
//!   own (the next urgent record takes them along): a batch executed is
//!   committed, so its prepared certificates are stored at f + 1 correct
//!   replicas at least, and the view change after any crash brings it back
//!   (that is what keeps an acknowledged write). They must be durable only
//!   before this replica signs a checkpoint after them
//!   ([`Output::Sync`](super::replica::Output::Sync)):
//!   once 2f + 1 replicas call a checkpoint stable, the certificates below
//!   it are dropped, and the state up to it must be restorable;
//! - **stable checkpoint proofs** (2f + 1 signed checkpoint messages),
//!   synced as the low watermark moves: the runtime stores a checkpoint's state a
//!   little later (or, when the replica is fetching it, not at all), and a
//!   replica restarted in between still claims the checkpoint it knew to
//!   be stable, so its VIEW-CHANGE and window are the ones it had.
//!
//! Records at or below the stable checkpoint are no longer needed; the
//! runtime drops them when it has stored that checkpoint's state.

use serde::{Deserialize, Serialize};

use super::config::Seq;
use super::message::{Body, ClientId, CommitCert, Envelope, PreparedCert, Request, Signed};
use super::replica::{Replica, Slot};

/// Something a replica needs after a restart; see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// This replica became prepared at `seq` (its commit follows).
    Prepared {
        /// The prepared sequence number.
        seq: Seq,
        /// The pre-prepare, its batch and 2f matching prepares.
        cert: PreparedCert,
    },
    /// This replica executed `seq`.
    Executed {
        /// The executed sequence number.
        seq: Seq,
        /// The pre-prepare, its batch and 2f + 1 matching commits.
        cert: CommitCert,
    },
    /// The checkpoint at `seq` became stable here, proven by `proof`.
    Stable {
        /// The checkpoint's sequence number (the new low watermark).
        seq: Seq,
        /// 2f + 1 signed checkpoint messages for it.
        proof: Vec<Signed>,
    },
    /// The NEW-VIEW of the view this replica entered last, stored as it
    /// enters and again at each stable checkpoint (`seq` is the one after
    /// it, so it outlives the records the checkpoint makes useless). A
    /// replica restarted after entering a view can still show a replica
    /// that missed it the NEW-VIEW (as primary it may be the only one to
    /// hold it); without it, a replica can stay stuck changing to a view
    /// that has begun (the simulator shows it).
    NewView {
        /// The sequence number it is filed under (see above).
        seq: Seq,
        /// The signed NEW-VIEW message.
        env: Envelope,
    },
}

impl Record {
    /// Whether it must be durable before the replica's next output (see
    /// the module docs); an executed batch need not.
    pub fn urgent(&self) -> bool {
        !matches!(self, Record::Executed { .. })
    }
}

impl Record {
    /// The epoch of the signed messages it holds (a record of an earlier
    /// epoch left in the log after the change is skipped at restart).
    pub fn epoch(&self) -> Option<super::config::Epoch> {
        match self {
            Record::Prepared { cert, .. } => Some(cert.pre_prepare.epoch),
            Record::Executed { cert, .. } => Some(cert.pre_prepare.epoch),
            Record::Stable { proof, .. } => proof.first().map(|m| m.epoch),
            Record::NewView { env, .. } => Some(env.msg.epoch),
        }
    }

    /// The sequence number it is filed under: the runtime drops records at
    /// or below the stored stable checkpoint.
    pub fn seq(&self) -> Seq {
        match self {
            Record::Prepared { seq, .. }
            | Record::Executed { seq, .. }
            | Record::Stable { seq, .. }
            | Record::NewView { seq, .. } => *seq,
        }
    }
}

/// The view and digest a pre-prepare names.
fn pre_prepare_of(msg: &Signed) -> Option<(super::config::View, super::message::Digest)> {
    match msg.body {
        Body::PrePrepare { view, digest, .. } => Some((view, digest)),
        _ => None,
    }
}

impl Replica {
    /// Restores a replica that restarted, before [`Replica::resume`]:
    /// `stable` is the last stable checkpoint whose state the runtime stored
    /// and restored (its sequence number and the 2f + 1 checkpoint messages
    /// proving it), `clients` each client's last executed timestamp in that
    /// state, `records` what the replica asked to store since (any order).
    ///
    /// Returns the batches executed after the checkpoint, in order: the
    /// runtime applies them to the restored state again (no
    /// [`Output::Execute`](super::replica::Output::Execute) comes for them).
    /// Executed batches count only from the checkpoint on without a gap
    /// (one after a gap was taken after a state transfer whose state was not
    /// stored: it comes again from the others). A later stable checkpoint
    /// than the stored state's moves the low watermark there, and if the
    /// batches do not reach it either, the replica fetches its state again
    /// ([`Output::FetchState`](super::replica::Output::FetchState)), as it
    /// was doing before the restart.
    pub fn restore(
        &mut self,
        stable: Option<(Seq, Vec<Signed>)>,
        clients: impl IntoIterator<Item = (ClientId, u64)>,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<(Seq, Vec<Request>)> {
        if let Some((seq, proof)) = stable {
            self.low = seq;
            self.last_executed = seq;
            self.stable_proof = proof;
        }
        for (client, t) in clients {
            self.note_done(client, t);
        }
        let mut executed = std::collections::BTreeMap::new();
        let mut stable: Option<(Seq, Vec<Signed>)> = None;
        let mut new_view: Option<(super::config::View, Envelope)> = None;
        let mut prepared = Vec::new();
        let epoch = self.replicas.epoch();
        for record in records {
            if record.epoch().is_some_and(|e| e != epoch) {
                continue;
            }
            match record {
                Record::Prepared { seq, cert } if seq > self.low => prepared.push((seq, cert)),
                Record::Executed { seq, cert } if seq > self.low => {
                    executed.insert(seq, cert);
                }
                Record::Stable { seq, proof } if stable.as_ref().is_none_or(|s| s.0 < seq) => {
                    stable = Some((seq, proof));
                }
                Record::NewView { env, .. } => {
                    let Some(view) = env.msg.body.view() else {
                        continue;
                    };
                    if new_view.as_ref().is_none_or(|(v, _)| *v < view) {
                        new_view = Some((view, env));
                    }
                }
                _ => {}
            }
        }
        let mut replay = Vec::new();
        while let Some(cert) = executed.remove(&(self.last_executed + 1)) {
            let Some((view, digest)) = pre_prepare_of(&cert.pre_prepare) else {
                break;
            };
            let seq = self.last_executed + 1;
            for r in &cert.batch {
                self.note_done(r.client, r.timestamp);
            }
            replay.push((seq, cert.batch.clone()));
            self.slots.insert(
                seq,
                Slot {
                    view,
                    pre_prepare: Some(cert.pre_prepare),
                    batch: Some(cert.batch),
                    digest: Some(digest),
                    prepares: Default::default(),
                    commits: cert.commits.into_iter().map(|c| (c.from, c)).collect(),
                    sent_commit: true,
                    committed: true,
                },
            );
            self.last_executed = seq;
        }
        if let Some((seq, proof)) = stable.filter(|s| s.0 > self.low) {
            let state = proof.iter().find_map(|m| match m.body {
                Body::Checkpoint { state, .. } => Some(state),
                _ => None,
            });
            match state {
                Some(state) if self.last_executed < seq => self.fetch(seq, state, proof),
                _ => self.move_low(seq, proof),
            }
        }
        for (seq, cert) in prepared {
            if seq <= self.low {
                continue;
            }
            let view = cert.pre_prepare.body.view();
            let newer = self
                .prepared
                .get(&seq)
                .is_none_or(|old| old.pre_prepare.body.view() < view);
            if newer {
                self.prepared.insert(seq, cert);
            }
        }
        if let Some((view, env)) = new_view
            && view >= self.view
        {
            self.view = view;
            self.entered_view = view;
            self.new_view = Some(env);
        }
        self.assigned = self.assigned.max(self.last_executed).max(self.low);
        replay
    }

    /// The commit certificate of an executed slot (its pre-prepare, batch
    /// and the 2f + 1 commits matching them), if it holds one.
    pub(super) fn slot_cert(&self, slot: &Slot) -> Option<CommitCert> {
        let pre_prepare = slot.pre_prepare.clone()?;
        let digest = slot.digest?;
        let commits: Vec<_> = slot
            .commits
            .values()
            .filter(|c| {
                matches!(c.body, Body::Commit { view, digest: d, .. }
                    if view == slot.view && d == digest)
            })
            .cloned()
            .collect();
        (slot.committed && commits.len() >= self.replicas.quorum()).then(|| CommitCert {
            pre_prepare,
            commits,
            batch: slot.batch.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::pbft::config::ReplicaId;
    use crate::pbft::replica::{Output, Settings};
    use crate::pbft::testing::{group, keys, replica_set, settle};

    fn req(t: u64) -> Request {
        Request::signed(&SigningKey::from_bytes(&[9; 32]), t, vec![t as u8])
    }

    /// Runs 4 replicas to completion on `reqs`, keeping each one's records.
    fn run_with_records(reqs: &[Request]) -> (Vec<Replica>, Vec<Vec<Record>>, Vec<Vec<Output>>) {
        let mut rs = group(4);
        let mut records = vec![Vec::new(); 4];
        let mut seen = vec![Vec::new(); 4];
        for r in reqs {
            rs[0].request(r.clone());
        }
        settle(&mut rs, 4, |i, o| {
            if let Output::Persist(r) = o {
                records[i].push(r.clone());
            }
            seen[i].push(o.clone());
        });
        (rs, records, seen)
    }

    /// Every record is asked for before the message or result it backs:
    /// the prepared certificate before this replica's commit (TOCS 2002
    /// §4.4: the certificates in 2f + 1 VIEW-CHANGEs keep committed batches
    /// across views), the executed batch before its execution.
    #[test]
    fn records_come_before_what_they_back() {
        let (rs, records, seen) = run_with_records(&[req(1), req(2)]);
        for i in 0..4 {
            assert_eq!(rs[i].last_executed(), 2, "replica {i}");
            let prepared = records[i]
                .iter()
                .filter(|r| matches!(r, Record::Prepared { .. }))
                .count();
            let executed = records[i]
                .iter()
                .filter(|r| matches!(r, Record::Executed { .. }))
                .count();
            assert_eq!(
                (prepared, executed),
                (2, 2),
                "replica {i}: {:?}",
                records[i]
            );
            let pos = |f: &dyn Fn(&Output) -> bool| seen[i].iter().position(f).expect("present");
            for seq in 1..=2 {
                let persisted_prepared = pos(
                    &|o| matches!(o, Output::Persist(Record::Prepared { seq: s, .. }) if *s == seq),
                );
                let commit = pos(&|o| {
                    matches!(o, Output::Broadcast(e)
                        if matches!(e.msg.body, Body::Commit { seq: s, .. } if s == seq) && e.msg.from == i as ReplicaId)
                });
                assert!(persisted_prepared < commit, "replica {i} seq {seq}");
                let persisted_executed = pos(
                    &|o| matches!(o, Output::Persist(Record::Executed { seq: s, .. }) if *s == seq),
                );
                let execute = pos(&|o| matches!(o, Output::Execute { seq: s, .. } if *s == seq));
                assert!(persisted_executed < execute, "replica {i} seq {seq}");
            }
        }
    }

    /// A replica rebuilt from its records knows what it executed (and
    /// gives the batches back to replay), carries its prepared certificates
    /// into a VIEW-CHANGE, and can prove its executed batches to others.
    #[test]
    fn a_restored_replica_has_its_executed_batches_and_certificates() {
        let (rs, records, _) = run_with_records(&[req(1), req(2), req(3)]);
        let k = keys(4);
        let mut fresh = Replica::new(1, replica_set(&k), k[1].clone(), Settings::default());
        // Shuffled order: the store may hand them back in any order.
        let mut recs = records[1].clone();
        recs.reverse();
        let replay = fresh.restore(None, [], recs);
        let seqs: Vec<Seq> = replay.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(replay[0].1, vec![req(1)]);
        assert_eq!(fresh.last_executed(), 3);
        assert_eq!(fresh.prepared.len(), 3);
        let certs = fresh.commit_certs(0, 10);
        assert_eq!(certs.len(), 3);
        // The same batches as the live replica's (its commits may be more:
        // the record holds the 2f + 1 it executed on).
        let live = rs[1].commit_certs(0, 10);
        let key = |c: &CommitCert| (c.pre_prepare.clone(), c.batch.clone());
        assert_eq!(
            certs.iter().map(key).collect::<Vec<_>>(),
            live.iter().map(key).collect::<Vec<_>>()
        );
        // A replica that missed them takes them from the restored one.
        let mut behind = Replica::new(2, replica_set(&k), k[2].clone(), Settings::default());
        assert_eq!(behind.on_commit_certs(certs), Ok(3));
        assert_eq!(behind.last_executed(), 3);
    }

    /// Executed records after a gap (taken after a state transfer whose
    /// state was not stored) are not replayed; records at or below the
    /// stored checkpoint are ignored.
    #[test]
    fn restore_replays_only_from_the_checkpoint_without_gaps() {
        let (_, records, _) = run_with_records(&[req(1), req(2), req(3)]);
        let k = keys(4);
        let without_2: Vec<Record> = records[0]
            .iter()
            .filter(|r| !matches!(r, Record::Executed { seq: 2, .. }))
            .cloned()
            .collect();
        let mut a = Replica::new(0, replica_set(&k), k[0].clone(), Settings::default());
        let replay = a.restore(None, [], without_2);
        assert_eq!(replay.len(), 1);
        assert_eq!(a.last_executed(), 1);
        let mut b = Replica::new(0, replica_set(&k), k[0].clone(), Settings::default());
        let replay = b.restore(Some((2, Vec::new())), [], records[0].clone());
        assert_eq!(replay.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3]);
        assert_eq!(b.low_watermark(), 2);
        assert_eq!(b.prepared.keys().copied().collect::<Vec<_>>(), vec![3]);
    }

    /// A replica restarted after entering a view still holds its NEW-VIEW
    /// (to show replicas that missed it) and is in that view.
    #[test]
    fn a_restored_replica_keeps_the_new_view_it_entered() {
        let mut rs = group(4);
        let mut records = vec![Vec::new(); 4];
        for r in rs.iter_mut() {
            r.start_view_change(1);
        }
        settle(&mut rs, 4, |i, o| {
            if let Output::Persist(r) = o {
                records[i].push(r.clone());
            }
        });
        assert!(rs.iter().all(|r| r.view() == 1 && r.is_active()));
        let k = keys(4);
        for i in 0..4 {
            assert!(
                records[i]
                    .iter()
                    .any(|r| matches!(r, Record::NewView { .. })),
                "replica {i} stored its NEW-VIEW"
            );
            let mut fresh = Replica::new(
                i as ReplicaId,
                replica_set(&k),
                k[i].clone(),
                Settings::default(),
            );
            fresh.restore(None, [], records[i].clone());
            assert_eq!(fresh.view(), 1);
            assert_eq!(fresh.new_view, rs[i].new_view);
        }
    }
}
