//! Checks of the certificates pBFT's view changes carry (TOCS 2002 §4.4),
//! and the computation of a new view's pre-prepares, as pure functions: the
//! new primary and every backup run the same code on the same messages, so
//! a backup accepts a NEW-VIEW only if it would have built the same one.
//!
//! A certificate counts only if every signature in it verifies against the
//! replica set and its messages agree with each other; one bad part rejects
//! the whole message (a correct replica never sends one).

use std::collections::{BTreeMap, BTreeSet};

use super::config::{ReplicaId, ReplicaSet, Seq, View};
use super::message::{
    Body, CommitCert, Digest, PreparedCert, Request, SigCache, Signed, batch_digest,
};

/// Why a certificate, VIEW-CHANGE or NEW-VIEW does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// A message inside is of another epoch, from a non-member, or badly signed.
    #[error(transparent)]
    Signature(#[from] super::message::VerifyError),
    /// A checkpoint proof without a quorum of matching checkpoint messages.
    #[error("the checkpoint proof for {seq} has {got} matching signatures, {need} needed")]
    WeakCheckpoint {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// Distinct replicas that signed the most common state digest.
        got: usize,
        /// The quorum, 2f + 1.
        need: usize,
    },
    /// A message of the wrong kind, or for another slot or view, where a
    /// certificate, proof or NEW-VIEW needs a specific one.
    #[error("a message of the wrong kind inside a certificate")]
    WrongKind,
    /// A prepared certificate in a VIEW-CHANGE is not from a view below the
    /// one it changes to.
    #[error("a prepared certificate for {seq} is not for a view below {view}")]
    CertView {
        /// The certificate's sequence number.
        seq: Seq,
        /// The view the VIEW-CHANGE moves to.
        view: View,
    },
    /// A prepared certificate in a VIEW-CHANGE is not in the window above its
    /// stable checkpoint.
    #[error("a prepared certificate for {seq} outside ({low}, {high}]")]
    CertOutsideWindow {
        /// The certificate's sequence number.
        seq: Seq,
        /// The VIEW-CHANGE's stable checkpoint (exclusive).
        low: Seq,
        /// That checkpoint plus the window (inclusive).
        high: Seq,
    },
    /// One VIEW-CHANGE carries two prepared certificates for this sequence number.
    #[error("two prepared certificates for {0} in one view change")]
    DuplicateCert(Seq),
    /// A prepared or commit certificate with too few matching votes from
    /// different replicas.
    #[error("the prepared certificate for {seq} has {got} matching prepares, {need} needed")]
    WeakCert {
        /// The certificate's sequence number.
        seq: Seq,
        /// Distinct replicas whose votes match.
        got: usize,
        /// Votes needed (2f for prepares, 2f + 1 for commits).
        need: usize,
    },
    /// A certificate's pre-prepare, or a NEW-VIEW, signed by a replica that
    /// is not the primary of its view.
    #[error("a pre-prepare in a certificate is not from the primary of its view")]
    NotPrimary,
    /// A certificate's batch does not hash to its pre-prepare's digest.
    #[error("a certificate's batch does not match its digest")]
    BatchMismatch,
    /// A NEW-VIEW carries fewer than a quorum of valid VIEW-CHANGEs for its view.
    #[error("a NEW-VIEW with {got} view changes for view {view}, {need} needed")]
    TooFewViewChanges {
        /// The view the NEW-VIEW starts.
        view: View,
        /// Valid VIEW-CHANGEs for it from distinct replicas.
        got: usize,
        /// The quorum, 2f + 1.
        need: usize,
    },
    /// A NEW-VIEW's pre-prepares differ from those its VIEW-CHANGEs determine.
    #[error("the NEW-VIEW's pre-prepares are not the ones its view changes determine")]
    WrongPrePrepares,
}

/// A checkpoint proof: `proof` holds at least a quorum of checkpoint
/// messages from different replicas, all for `seq` with the same state
/// digest. The epoch's start (0 for genesis) needs no proof: every replica
/// of the epoch starts from it. Returns the state digest (zeroes for the
/// start).
pub fn checkpoint_proof(
    replicas: &ReplicaSet,
    seq: Seq,
    proof: &[Signed],
    cache: &mut SigCache,
) -> Result<Digest, CertError> {
    if seq == replicas.start() {
        return Ok([0; 32]);
    }
    let mut by_state: BTreeMap<Digest, BTreeSet<ReplicaId>> = BTreeMap::new();
    for m in proof {
        cache.verify(replicas, m)?;
        match m.body {
            Body::Checkpoint { seq: s, state } if s == seq => {
                by_state.entry(state).or_default().insert(m.from);
            }
            _ => return Err(CertError::WrongKind),
        }
    }
    let need = replicas.quorum();
    let (state, got) = by_state
        .into_iter()
        .map(|(d, who)| (d, who.len()))
        .max_by_key(|(_, n)| *n)
        .unwrap_or(([0; 32], 0));
    if got < need {
        return Err(CertError::WeakCheckpoint { seq, got, need });
    }
    Ok(state)
}

/// The pre-prepare a certificate starts with: signed by the primary of its
/// view, naming the digest of the batch beside it. Returns (view, seq, digest).
fn certified_pre_prepare(
    replicas: &ReplicaSet,
    pre_prepare: &Signed,
    batch: &[Request],
    before: Option<View>,
    cache: &mut SigCache,
) -> Result<(View, Seq, Digest), CertError> {
    cache.verify(replicas, pre_prepare)?;
    let Body::PrePrepare { view, seq, digest } = pre_prepare.body else {
        return Err(CertError::WrongKind);
    };
    if let Some(before) = before
        && view >= before
    {
        return Err(CertError::CertView { seq, view: before });
    }
    if pre_prepare.from != replicas.primary(view) {
        return Err(CertError::NotPrimary);
    }
    if batch_digest(batch) != digest {
        return Err(CertError::BatchMismatch);
    }
    Ok((view, seq, digest))
}

/// The votes of a certificate: each verified and `matching`, from at least
/// `need` different replicas (for sequence number `seq`, in errors).
fn votes(
    replicas: &ReplicaSet,
    msgs: &[Signed],
    seq: Seq,
    need: usize,
    cache: &mut SigCache,
    matching: impl Fn(&Signed) -> bool,
) -> Result<(), CertError> {
    let mut from = BTreeSet::new();
    for m in msgs {
        cache.verify(replicas, m)?;
        if !matching(m) {
            return Err(CertError::WrongKind);
        }
        from.insert(m.from);
    }
    if from.len() < need {
        return Err(CertError::WeakCert {
            seq,
            got: from.len(),
            need,
        });
    }
    Ok(())
}

/// A prepared certificate, for a view below `before`: the primary's signed
/// pre-prepare, 2f matching prepares from different backups, and the batch
/// its digest names. Returns (view, seq, digest).
pub fn prepared_cert(
    replicas: &ReplicaSet,
    cert: &PreparedCert,
    before: View,
    cache: &mut SigCache,
) -> Result<(View, Seq, Digest), CertError> {
    let (view, seq, digest) = certified_pre_prepare(
        replicas,
        &cert.pre_prepare,
        &cert.batch,
        Some(before),
        cache,
    )?;
    let primary = replicas.primary(view);
    votes(
        replicas,
        &cert.prepares,
        seq,
        replicas.quorum() - 1,
        cache,
        |m| {
            matches!(m.body, Body::Prepare { view: v, seq: s, digest: d }
            if v == view && s == seq && d == digest && m.from != primary)
        },
    )?;
    Ok((view, seq, digest))
}

/// A commit certificate: the pre-prepare of the primary of its view, the
/// batch its digest names, and a quorum of matching commits from different
/// replicas. Returns (view, seq, digest).
pub fn commit_cert(
    replicas: &ReplicaSet,
    cert: &CommitCert,
    cache: &mut SigCache,
) -> Result<(View, Seq, Digest), CertError> {
    let (view, seq, digest) =
        certified_pre_prepare(replicas, &cert.pre_prepare, &cert.batch, None, cache)?;
    votes(
        replicas,
        &cert.commits,
        seq,
        replicas.quorum(),
        cache,
        |m| {
            matches!(m.body, Body::Commit { view: v, seq: s, digest: d }
            if v == view && s == seq && d == digest)
        },
    )?;
    Ok((view, seq, digest))
}

/// What a valid VIEW-CHANGE says: its stable checkpoint and the prepared
/// requests after it, by sequence number (view, digest, batch).
#[derive(Debug, Clone)]
pub struct ViewChangeInfo {
    /// The replica that sent the VIEW-CHANGE.
    pub from: ReplicaId,
    /// The view it moves to.
    pub view: View,
    /// Its last stable checkpoint's sequence number.
    pub stable: Seq,
    /// The state digest that checkpoint proves (zeroes at the epoch's start).
    pub state: Digest,
    /// The signed checkpoint messages proving it.
    pub checkpoint_proof: Vec<Signed>,
    /// Its prepared certificates: sequence number → (view, digest, batch).
    pub prepared: BTreeMap<Seq, (View, Digest, Vec<Request>)>,
}

/// Checks a signed VIEW-CHANGE completely (§4.4): the signature, the
/// checkpoint proof, and each prepared certificate (for a view below the
/// new one, inside the window above the checkpoint, one per sequence).
pub fn view_change(
    replicas: &ReplicaSet,
    window: u64,
    msg: &Signed,
    cache: &mut SigCache,
) -> Result<ViewChangeInfo, CertError> {
    cache.verify(replicas, msg)?;
    let Body::ViewChange {
        view,
        stable,
        checkpoint_proof: proof,
        prepared,
    } = &msg.body
    else {
        return Err(CertError::WrongKind);
    };
    let state = checkpoint_proof(replicas, *stable, proof, cache)?;
    let mut certs = BTreeMap::new();
    for cert in prepared {
        let (v, seq, digest) = prepared_cert(replicas, cert, *view, cache)?;
        if seq <= *stable || seq > stable + window {
            return Err(CertError::CertOutsideWindow {
                seq,
                low: *stable,
                high: stable + window,
            });
        }
        if certs.insert(seq, (v, digest, cert.batch.clone())).is_some() {
            return Err(CertError::DuplicateCert(seq));
        }
    }
    Ok(ViewChangeInfo {
        from: msg.from,
        view: *view,
        stable: *stable,
        state,
        checkpoint_proof: proof.clone(),
        prepared: certs,
    })
}

/// What a new view starts from (§4.4): the latest stable checkpoint among
/// the view changes (`min-s` in the paper) with its proof, and for every
/// sequence number after it up to the highest prepared one (`max-s`) the
/// batch to re-issue: the one prepared in the highest view, or the null
/// request (an empty batch) where none prepared.
#[derive(Debug, Clone, PartialEq)]
pub struct NewViewPlan {
    /// The latest stable checkpoint among the view changes (`min-s`).
    pub stable: Seq,
    /// Its state digest.
    pub state: Digest,
    /// Its proof, from the view change that carried it.
    pub checkpoint_proof: Vec<Signed>,
    /// (seq, digest, batch) for every seq in (stable, max-s], in order.
    pub pre_prepares: Vec<(Seq, Digest, Vec<Request>)>,
}

/// Computes the plan from valid view changes (in the order given; the
/// result does not depend on it, but a tie between two certificates of one
/// view and sequence can only come from more than f faulty replicas).
pub fn new_view_plan(vcs: &[ViewChangeInfo]) -> NewViewPlan {
    let best = vcs
        .iter()
        .max_by_key(|v| v.stable)
        .expect("a new view is built from at least one view change");
    let min_s = best.stable;
    let mut chosen: BTreeMap<Seq, (View, Digest, Vec<Request>)> = BTreeMap::new();
    for vc in vcs {
        for (&seq, (view, digest, batch)) in vc.prepared.range(min_s + 1..) {
            match chosen.get(&seq) {
                Some((v, _, _)) if *v >= *view => {}
                _ => {
                    chosen.insert(seq, (*view, *digest, batch.clone()));
                }
            }
        }
    }
    let max_s = chosen.keys().next_back().copied().unwrap_or(min_s);
    let pre_prepares = (min_s + 1..=max_s)
        .map(|seq| match chosen.remove(&seq) {
            Some((_, digest, batch)) => (seq, digest, batch),
            None => (seq, batch_digest(&[]), Vec::new()),
        })
        .collect();
    NewViewPlan {
        stable: min_s,
        state: best.state,
        checkpoint_proof: best.checkpoint_proof.clone(),
        pre_prepares,
    }
}

/// Checks a signed NEW-VIEW completely (§4.4): from the primary of its view,
/// a quorum of valid view changes for that view from different replicas,
/// and exactly the pre-prepares they determine, each signed by the primary.
pub fn new_view(
    replicas: &ReplicaSet,
    window: u64,
    msg: &Signed,
    cache: &mut SigCache,
) -> Result<(View, NewViewPlan, Vec<Signed>), CertError> {
    cache.verify(replicas, msg)?;
    let Body::NewView {
        view,
        view_changes,
        pre_prepares,
    } = &msg.body
    else {
        return Err(CertError::WrongKind);
    };
    let primary = replicas.primary(*view);
    if msg.from != primary {
        return Err(CertError::NotPrimary);
    }
    let mut infos = Vec::new();
    let mut from = BTreeSet::new();
    for vc in view_changes {
        let info = view_change(replicas, window, vc, cache)?;
        if info.view != *view {
            return Err(CertError::WrongKind);
        }
        if from.insert(info.from) {
            infos.push(info);
        }
    }
    if infos.len() < replicas.quorum() {
        return Err(CertError::TooFewViewChanges {
            view: *view,
            got: infos.len(),
            need: replicas.quorum(),
        });
    }
    let plan = new_view_plan(&infos);
    if pre_prepares.len() != plan.pre_prepares.len() {
        return Err(CertError::WrongPrePrepares);
    }
    for (pp, (seq, digest, _)) in pre_prepares.iter().zip(&plan.pre_prepares) {
        cache.verify(replicas, pp)?;
        let expected = Body::PrePrepare {
            view: *view,
            seq: *seq,
            digest: *digest,
        };
        if pp.from != primary || pp.body != expected {
            return Err(CertError::WrongPrePrepares);
        }
    }
    Ok((*view, plan, pre_prepares.clone()))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::pbft::testing::{keys, replica_set};

    const W: u64 = 256;

    // The checks with a fresh cache each time (every signature verified).
    fn new_view(
        set: &ReplicaSet,
        w: u64,
        m: &Signed,
    ) -> Result<(View, NewViewPlan, Vec<Signed>), CertError> {
        super::new_view(set, w, m, &mut SigCache::default())
    }
    fn view_change(set: &ReplicaSet, w: u64, m: &Signed) -> Result<ViewChangeInfo, CertError> {
        super::view_change(set, w, m, &mut SigCache::default())
    }
    fn checkpoint_proof(set: &ReplicaSet, seq: Seq, p: &[Signed]) -> Result<Digest, CertError> {
        super::checkpoint_proof(set, seq, p, &mut SigCache::default())
    }

    fn batch(t: u64) -> Vec<Request> {
        vec![Request::signed(
            &SigningKey::from_bytes(&[5; 32]),
            t,
            vec![t as u8],
        )]
    }

    /// A prepared certificate for `seq` in `view`: the primary's
    /// pre-prepare and prepares from `preparers`.
    fn cert(
        k: &[SigningKey],
        view: View,
        seq: Seq,
        b: Vec<Request>,
        preparers: &[u32],
    ) -> PreparedCert {
        let digest = batch_digest(&b);
        let primary = (view % k.len() as u64) as u32;
        PreparedCert {
            pre_prepare: Signed::sign(
                primary,
                Body::PrePrepare { view, seq, digest },
                &k[primary as usize],
            ),
            prepares: preparers
                .iter()
                .map(|&i| Signed::sign(i, Body::Prepare { view, seq, digest }, &k[i as usize]))
                .collect(),
            batch: b,
        }
    }

    fn vc(k: &[SigningKey], from: u32, view: View, prepared: Vec<PreparedCert>) -> Signed {
        Signed::sign(
            from,
            Body::ViewChange {
                view,
                stable: 0,
                checkpoint_proof: Vec::new(),
                prepared,
            },
            &k[from as usize],
        )
    }

    /// The NEW-VIEW for view 1 (primary 1) from these view changes, with
    /// the pre-prepares it should carry.
    fn new_view_msg(k: &[SigningKey], vcs: Vec<Signed>, pps: &[(Seq, Digest)]) -> Signed {
        Signed::sign(
            1,
            Body::NewView {
                view: 1,
                view_changes: vcs,
                pre_prepares: pps
                    .iter()
                    .map(|&(seq, digest)| {
                        Signed::sign(
                            1,
                            Body::PrePrepare {
                                view: 1,
                                seq,
                                digest,
                            },
                            &k[1],
                        )
                    })
                    .collect(),
            },
            &k[1],
        )
    }

    /// TOCS 2002 §4.4: the new view re-issues, for every sequence number up
    /// to the highest prepared one, the request prepared in the highest
    /// view, and a null request in the gaps.
    #[test]
    fn the_plan_keeps_the_highest_view_certificate_and_fills_gaps_with_null() {
        let k = keys(4);
        let set = replica_set(&k);
        // Seq 1 prepared in view 0 with batch a, and (at another replica)
        // in view 1 with batch b; seq 3 prepared; seq 2 in no certificate.
        let a = cert(&k, 0, 1, batch(1), &[1, 2]);
        let b = cert(&k, 1, 1, batch(2), &[0, 2]);
        let c = cert(&k, 0, 3, batch(3), &[2, 3]);
        let infos: Vec<ViewChangeInfo> = [
            vc(&k, 0, 2, vec![a, c]),
            vc(&k, 2, 2, vec![b.clone()]),
            vc(&k, 3, 2, vec![]),
        ]
        .iter()
        .map(|m| view_change(&set, W, m).unwrap())
        .collect();
        let plan = new_view_plan(&infos);
        let seqs: Vec<(Seq, Digest)> = plan.pre_prepares.iter().map(|(s, d, _)| (*s, *d)).collect();
        assert_eq!(
            seqs,
            vec![
                (1, batch_digest(&batch(2))),
                (2, batch_digest(&[])),
                (3, batch_digest(&batch(3)))
            ]
        );
    }

    /// §4.4: backups accept a NEW-VIEW only after checking all of it: the
    /// sender is the new primary, 2f + 1 distinct valid view changes, every
    /// certificate inside them, and exactly the pre-prepares they imply.
    #[test]
    fn a_new_view_is_accepted_only_if_every_part_checks_out() {
        let k = keys(4);
        let set = replica_set(&k);
        let good_cert = cert(&k, 0, 1, batch(1), &[2, 3]);
        let vcs = vec![
            vc(&k, 1, 1, vec![good_cert.clone()]),
            vc(&k, 2, 1, vec![good_cert.clone()]),
            vc(&k, 3, 1, vec![]),
        ];
        let d = batch_digest(&batch(1));
        let ok = new_view_msg(&k, vcs.clone(), &[(1, d)]);
        let (view, plan, _) = new_view(&set, W, &ok).expect("valid");
        assert_eq!((view, plan.pre_prepares.len()), (1, 1));

        // The prepared request left out, or replaced by a null request.
        assert_eq!(
            new_view(&set, W, &new_view_msg(&k, vcs.clone(), &[])).unwrap_err(),
            CertError::WrongPrePrepares
        );
        assert_eq!(
            new_view(
                &set,
                W,
                &new_view_msg(&k, vcs.clone(), &[(1, batch_digest(&[]))])
            )
            .unwrap_err(),
            CertError::WrongPrePrepares
        );
        // Two view changes, or the same one twice, are not 2f + 1.
        let two = new_view_msg(&k, vcs[..2].to_vec(), &[(1, d)]);
        assert!(matches!(
            new_view(&set, W, &two),
            Err(CertError::TooFewViewChanges { got: 2, .. })
        ));
        let twice = new_view_msg(
            &k,
            vec![vcs[0].clone(), vcs[0].clone(), vcs[1].clone()],
            &[(1, d)],
        );
        assert!(matches!(
            new_view(&set, W, &twice),
            Err(CertError::TooFewViewChanges { got: 2, .. })
        ));
        // Sent by a replica that is not the primary of view 1.
        let mut not_primary = ok.clone();
        not_primary = Signed::sign(2, not_primary.body, &k[2]);
        assert_eq!(
            new_view(&set, W, &not_primary).unwrap_err(),
            CertError::NotPrimary
        );
        // A view change carrying a certificate with one prepare (2f = 2 needed).
        let weak = cert(&k, 0, 1, batch(1), &[2]);
        let vcs_weak = vec![vc(&k, 1, 1, vec![weak]), vcs[1].clone(), vcs[2].clone()];
        assert!(matches!(
            new_view(&set, W, &new_view_msg(&k, vcs_weak, &[(1, d)])),
            Err(CertError::WeakCert {
                got: 1,
                need: 2,
                ..
            })
        ));
        // A certificate whose prepare is forged.
        let mut forged = good_cert.clone();
        forged.prepares[1].signature[5] ^= 1;
        let vcs_forged = vec![vc(&k, 1, 1, vec![forged]), vcs[1].clone(), vcs[2].clone()];
        assert!(matches!(
            new_view(&set, W, &new_view_msg(&k, vcs_forged, &[(1, d)])),
            Err(CertError::Signature(_))
        ));
        // A certificate whose batch is not the one its digest names.
        let mut swapped = good_cert.clone();
        swapped.batch = batch(9);
        let vcs_swapped = vec![vc(&k, 1, 1, vec![swapped]), vcs[1].clone(), vcs[2].clone()];
        assert_eq!(
            new_view(&set, W, &new_view_msg(&k, vcs_swapped, &[(1, d)])).unwrap_err(),
            CertError::BatchMismatch
        );
        // A certificate from the view being entered (not below it).
        let same_view = cert(&k, 1, 1, batch(1), &[2, 3]);
        assert!(matches!(
            view_change(&set, W, &vc(&k, 2, 1, vec![same_view])),
            Err(CertError::CertView { .. })
        ));
    }

    /// §4.3-4.4: a checkpoint proof needs 2f + 1 matching signed checkpoint
    /// messages from different replicas.
    #[test]
    fn checkpoint_proofs_need_a_quorum_of_matching_signatures() {
        let k = keys(4);
        let set = replica_set(&k);
        let cp = |i: usize, d: u8| {
            Signed::sign(
                i as u32,
                Body::Checkpoint {
                    seq: 8,
                    state: [d; 32],
                },
                &k[i],
            )
        };
        assert_eq!(
            checkpoint_proof(&set, 8, &[cp(0, 1), cp(1, 1), cp(2, 1)]),
            Ok([1; 32])
        );
        assert!(matches!(
            checkpoint_proof(&set, 8, &[cp(0, 1), cp(1, 1), cp(2, 2)]),
            Err(CertError::WeakCheckpoint { got: 2, .. })
        ));
        assert!(matches!(
            checkpoint_proof(&set, 8, &[cp(0, 1), cp(0, 1), cp(1, 1)]),
            Err(CertError::WeakCheckpoint { got: 2, .. })
        ));
        assert_eq!(
            checkpoint_proof(&set, 16, &[cp(0, 1), cp(1, 1), cp(2, 1)]),
            Err(CertError::WrongKind)
        );
        assert_eq!(checkpoint_proof(&set, 0, &[]), Ok([0; 32]));
    }
}
