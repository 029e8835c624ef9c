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
use super::message::{Body, Digest, PreparedCert, Request, Signed, batch_digest};

/// Why a certificate, VIEW-CHANGE or NEW-VIEW does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Signature(#[from] super::message::VerifyError),
    #[error("the checkpoint proof for {seq} has {got} matching signatures, {need} needed")]
    WeakCheckpoint { seq: Seq, got: usize, need: usize },
    #[error("a message of the wrong kind inside a certificate")]
    WrongKind,
    #[error("a prepared certificate for {seq} is not for a view below {view}")]
    CertView { seq: Seq, view: View },
    #[error("a prepared certificate for {seq} outside ({low}, {high}]")]
    CertOutsideWindow { seq: Seq, low: Seq, high: Seq },
    #[error("two prepared certificates for {0} in one view change")]
    DuplicateCert(Seq),
    #[error("the prepared certificate for {seq} has {got} matching prepares, {need} needed")]
    WeakCert { seq: Seq, got: usize, need: usize },
    #[error("a pre-prepare in a certificate is not from the primary of its view")]
    NotPrimary,
    #[error("a certificate's batch does not match its digest")]
    BatchMismatch,
    #[error("a NEW-VIEW with {got} view changes for view {view}, {need} needed")]
    TooFewViewChanges { view: View, got: usize, need: usize },
    #[error("the NEW-VIEW's pre-prepares are not the ones its view changes determine")]
    WrongPrePrepares,
}

/// A checkpoint proof: `proof` holds at least a quorum of checkpoint
/// messages from different replicas, all for `seq` with the same state
/// digest. Sequence 0 (the initial state) needs no proof. Returns the
/// state digest (zeroes for sequence 0).
pub fn checkpoint_proof(
    replicas: &ReplicaSet,
    seq: Seq,
    proof: &[Signed],
) -> Result<Digest, CertError> {
    if seq == 0 {
        return Ok([0; 32]);
    }
    let mut by_state: BTreeMap<Digest, BTreeSet<ReplicaId>> = BTreeMap::new();
    for m in proof {
        m.verify(replicas)?;
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

/// A prepared certificate, for a view below `before`: the primary's signed
/// pre-prepare, 2f matching prepares from different backups, and the batch
/// its digest names. Returns (view, seq, digest).
pub fn prepared_cert(
    replicas: &ReplicaSet,
    cert: &PreparedCert,
    before: View,
) -> Result<(View, Seq, Digest), CertError> {
    cert.pre_prepare.verify(replicas)?;
    let Body::PrePrepare { view, seq, digest } = cert.pre_prepare.body else {
        return Err(CertError::WrongKind);
    };
    if view >= before {
        return Err(CertError::CertView { seq, view: before });
    }
    let primary = replicas.primary(view);
    if cert.pre_prepare.from != primary {
        return Err(CertError::NotPrimary);
    }
    if batch_digest(&cert.batch) != digest {
        return Err(CertError::BatchMismatch);
    }
    let mut from = BTreeSet::new();
    for p in &cert.prepares {
        p.verify(replicas)?;
        match p.body {
            Body::Prepare {
                view: v,
                seq: s,
                digest: d,
            } if v == view && s == seq && d == digest && p.from != primary => {
                from.insert(p.from);
            }
            _ => return Err(CertError::WrongKind),
        }
    }
    let need = replicas.quorum() - 1;
    if from.len() < need {
        return Err(CertError::WeakCert {
            seq,
            got: from.len(),
            need,
        });
    }
    Ok((view, seq, digest))
}

/// What a valid VIEW-CHANGE says: its stable checkpoint and the prepared
/// requests after it, by sequence number (view, digest, batch).
#[derive(Debug, Clone)]
pub struct ViewChangeInfo {
    pub from: ReplicaId,
    pub view: View,
    pub stable: Seq,
    pub state: Digest,
    pub checkpoint_proof: Vec<Signed>,
    pub prepared: BTreeMap<Seq, (View, Digest, Vec<Request>)>,
}

/// Checks a signed VIEW-CHANGE completely (§4.4): the signature, the
/// checkpoint proof, and each prepared certificate (for a view below the
/// new one, inside the window above the checkpoint, one per sequence).
pub fn view_change(
    replicas: &ReplicaSet,
    window: u64,
    msg: &Signed,
) -> Result<ViewChangeInfo, CertError> {
    msg.verify(replicas)?;
    let Body::ViewChange {
        view,
        stable,
        checkpoint_proof: proof,
        prepared,
    } = &msg.body
    else {
        return Err(CertError::WrongKind);
    };
    let state = checkpoint_proof(replicas, *stable, proof)?;
    let mut certs = BTreeMap::new();
    for cert in prepared {
        let (v, seq, digest) = prepared_cert(replicas, cert, *view)?;
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
    pub stable: Seq,
    pub state: Digest,
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
) -> Result<(View, NewViewPlan, Vec<Signed>), CertError> {
    msg.verify(replicas)?;
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
        let info = view_change(replicas, window, vc)?;
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
        pp.verify(replicas)?;
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
