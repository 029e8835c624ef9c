//! View changes (Castro & Liskov, TOCS 2002 §4.4): how the replicas replace
//! a primary that is faulty or slow, without losing any request that may
//! have committed anywhere.
//!
//! A replica whose oldest waiting request has not executed within the
//! timeout moves to view v + 1: it stops taking normal-case messages and
//! sends VIEW-CHANGE with its stable checkpoint's proof and its prepared
//! certificates. It joins a view change early when f + 1 others are already
//! in later views (one of them is correct). The primary of v + 1 builds
//! NEW-VIEW from 2f + 1 view changes and re-issues, for every sequence
//! number between the latest stable checkpoint and the highest prepared one,
//! the request prepared in the highest view (or a null request); every
//! replica checks it in full ([`super::validate::new_view`]) before entering
//! the view. If the new view does not come in time the replica moves on to
//! v + 2 with twice the timeout.

use std::collections::BTreeMap;

use super::config::{ReplicaId, View};
use super::message::{Body, Envelope, Signed};
use super::replica::{Output, Refused, Replica, Slot, due};
use super::validate::{self, NewViewPlan};

/// The doubling stops at 16 times the base timeout. Doubling lets the
/// correct replicas' timers outgrow message delays and meet in one view
/// (§4.5.2); without a cap, a replica that saw no progress for a long
/// stretch (a partition) would wait minutes once the network healed.
const MAX_DOUBLINGS: u32 = 4;

impl Replica {
    /// The view-change timeout now: the base, doubled for every view change
    /// since the last progress, up to [`MAX_DOUBLINGS`] times.
    pub(super) fn timeout(&self) -> u64 {
        self.settings.view_change_timeout_ms << self.vc_attempts.min(MAX_DOUBLINGS)
    }

    pub(super) fn check_timers(&mut self) {
        if self.active {
            if !self.expecting() {
                self.timer_since = None;
                return;
            }
            let since = *self.timer_since.get_or_insert(self.now);
            if self.now.saturating_sub(since) >= self.timeout() {
                self.start_view_change(self.view + 1);
            }
        } else if let Some(since) = self.vc_quorum_since
            && self.now.saturating_sub(since) >= self.timeout()
        {
            self.start_view_change(self.view + 1);
        }
    }

    /// Moves to view `v` (above the current one): sends VIEW-CHANGE.
    pub(super) fn start_view_change(&mut self, v: View) {
        if v <= self.view && !self.active {
            return;
        }
        self.view = v;
        self.active = false;
        self.vc_quorum_since = None;
        self.vc_attempts += 1;
        self.pending.clear();
        let msg = self.view_change_msg(v);
        let info =
            validate::view_change(&self.replicas, self.settings.window, &msg, &mut self.cache)
                .expect("a correct replica's own view change is valid");
        self.vcs.insert((v, self.id), (msg.clone(), info));
        self.prune_view_changes();
        self.broadcast(msg, None);
        self.note_vc_quorum();
        self.try_new_view();
    }

    /// This replica's VIEW-CHANGE for view `v`: its stable checkpoint with
    /// the proof, and its prepared certificates above it.
    fn view_change_msg(&mut self, v: View) -> Signed {
        let prepared = self
            .prepared
            .range(self.low + 1..)
            .map(|(_, c)| c.clone())
            .collect();
        self.sign(Body::ViewChange {
            view: v,
            stable: self.low,
            checkpoint_proof: self.stable_proof.clone(),
            prepared,
        })
    }

    /// Keeps, of each replica's view changes, the one for the view this
    /// replica is changing to and its latest (bounded memory, whatever a
    /// faulty replica sends).
    fn prune_view_changes(&mut self) {
        let current = self.view;
        let mut latest: BTreeMap<ReplicaId, View> = BTreeMap::new();
        for &(v, id) in self.vcs.keys() {
            latest.insert(id, v);
        }
        self.vcs
            .retain(|(v, id), _| *v >= current && (*v == current || latest.get(id) == Some(v)));
    }

    /// Starts the NEW-VIEW timer once 2f + 1 replicas (this one among them)
    /// are changing to this replica's view. A replica alone in a view
    /// change does not time out further: it would only run ahead of the
    /// others, which then never meet it in one view.
    fn note_vc_quorum(&mut self) {
        if self.active || self.vc_quorum_since.is_some() {
            return;
        }
        let v = self.view;
        let n = self.vcs.range((v, 0)..=(v, ReplicaId::MAX)).count();
        if n >= self.replicas.quorum() {
            self.vc_quorum_since = Some(self.now);
        }
    }

    /// A replica changing to a view this one has already left (between the
    /// last view it was active in and the one it is changing to) may be
    /// missing this replica's view change for it: sign one. Safe, since
    /// this replica will never take part in that view.
    fn answer_lower_view_change(&mut self, to: ReplicaId, v: View) {
        if self.active || v <= self.entered_view || v >= self.view {
            return;
        }
        if !due(
            &mut self.answered_vc,
            to,
            self.now,
            self.settings.retransmit_ms,
        ) {
            return;
        }
        let msg = self.view_change_msg(v);
        self.outputs.push(Output::Send {
            to,
            env: Envelope { msg, batch: None },
        });
    }

    pub(super) fn on_view_change(&mut self, msg: Signed) -> Result<(), Refused> {
        let info =
            validate::view_change(&self.replicas, self.settings.window, &msg, &mut self.cache)?;
        let from = info.from;
        if info.view < self.view || (info.view == self.view && self.active) {
            // The sender is behind: it has not seen this view's NEW-VIEW,
            // or (both changing view) it needs our view change for its view.
            self.help_behind(from);
            self.answer_lower_view_change(from, info.view);
            return Ok(());
        }
        if self.vcs.contains_key(&(info.view, from)) {
            return Ok(());
        }
        self.vcs.insert((info.view, from), (msg, info));
        self.prune_view_changes();
        // f + 1 replicas in later views include a correct one: join the
        // smallest of those views without waiting for the timer (§4.4).
        let mut latest: BTreeMap<ReplicaId, View> = BTreeMap::new();
        for &(v, id) in self.vcs.keys() {
            if id != self.id && v > self.view {
                latest.insert(id, v);
            }
        }
        if latest.len() >= self.replicas.weak() {
            let v = *latest.values().min().expect("not empty");
            self.start_view_change(v);
        }
        self.note_vc_quorum();
        self.try_new_view();
        Ok(())
    }

    /// The primary of the view being changed to builds NEW-VIEW once it has
    /// 2f + 1 view changes for it, its own among them.
    fn try_new_view(&mut self) {
        let v = self.view;
        if self.active || !self.is_primary() || !self.vcs.contains_key(&(v, self.id)) {
            return;
        }
        let chosen: Vec<(Signed, validate::ViewChangeInfo)> = self
            .vcs
            .range((v, 0)..=(v, ReplicaId::MAX))
            .map(|(_, x)| x.clone())
            .take(self.replicas.quorum())
            .collect();
        if chosen.len() < self.replicas.quorum() {
            return;
        }
        let infos: Vec<validate::ViewChangeInfo> = chosen.iter().map(|(_, i)| i.clone()).collect();
        let plan = validate::new_view_plan(&infos);
        // A NEW-VIEW re-issues pre-prepares: none where this replica may
        // have signed before a restart (another view change follows).
        let top = plan.pre_prepares.last().map_or(plan.stable, |p| p.0);
        if plan
            .pre_prepares
            .iter()
            .any(|(seq, ..)| !self.may_sign(v, *seq))
            || !self.may_sign(v, top)
        {
            return;
        }
        let pre_prepares: Vec<Signed> = plan
            .pre_prepares
            .iter()
            .map(|(seq, digest, _)| {
                self.sign(Body::PrePrepare {
                    view: v,
                    seq: *seq,
                    digest: *digest,
                })
            })
            .collect();
        let nv = self.sign(Body::NewView {
            view: v,
            view_changes: chosen.into_iter().map(|(m, _)| m).collect(),
            pre_prepares: pre_prepares.clone(),
        });
        let env = Envelope {
            msg: nv,
            batch: None,
        };
        self.outputs.push(Output::Broadcast(env.clone()));
        self.enter_view(v, plan, pre_prepares, env);
    }

    pub(super) fn on_new_view(&mut self, env: Envelope) -> Result<(), Refused> {
        let (v, plan, pre_prepares) = validate::new_view(
            &self.replicas,
            self.settings.window,
            &env.msg,
            &mut self.cache,
        )?;
        if v < self.view || (v == self.view && self.active) {
            return Ok(()); // old or already entered
        }
        self.enter_view(v, plan, pre_prepares, env);
        Ok(())
    }

    /// Enters view `v` from its checked NEW-VIEW: adopts its checkpoint
    /// (fetching the state if this replica is behind it), replaces every
    /// slot above it with the re-issued pre-prepares and prepares them.
    fn enter_view(&mut self, v: View, plan: NewViewPlan, pre_prepares: Vec<Signed>, env: Envelope) {
        self.view = v;
        self.active = true;
        self.entered_view = v;
        self.new_view = Some(env);
        self.helped.clear();
        self.vcs.retain(|(view, _), _| *view > v);
        self.pending.clear();
        self.timer_since = self.expecting().then_some(self.now);
        let low = self.low;
        if plan.stable > self.low {
            if self.last_executed >= plan.stable {
                self.move_low(plan.stable, plan.checkpoint_proof);
            } else {
                self.fetch(plan.stable, plan.state, plan.checkpoint_proof);
            }
        }
        // Moving the window stored the NEW-VIEW with it; otherwise now.
        if self.low == low {
            self.persist_new_view(low);
        }
        // Slots of older views above the checkpoint are void; the NEW-VIEW
        // re-issues every one that may have committed anywhere. What this
        // replica executed keeps its commit certificate for replicas that
        // missed it (in the new view it may never commit again: those that
        // executed it do not retransmit its votes).
        for (seq, slot) in self.slots.range(self.low + 1..) {
            if *seq > self.last_executed {
                break;
            }
            if let Some(cert) = self.slot_cert(slot) {
                self.kept_certs.insert(*seq, cert);
            }
        }
        self.slots.clear();
        let primary = self.is_primary();
        let mut max_s = self.low;
        for ((seq, digest, batch), pp) in plan.pre_prepares.into_iter().zip(pre_prepares) {
            max_s = max_s.max(seq);
            if seq <= self.low {
                continue;
            }
            let mut slot = Slot {
                view: v,
                pre_prepare: Some(pp),
                batch: Some(batch),
                digest: Some(digest),
                ..Slot::default()
            };
            if !primary && self.may_sign(v, seq) {
                let prepare = self.sign(Body::Prepare {
                    view: v,
                    seq,
                    digest,
                });
                slot.prepares.insert(self.id, prepare.clone());
                self.broadcast(prepare, None);
            }
            self.slots.insert(seq, slot);
        }
        self.assigned = max_s;
        let seqs: Vec<_> = self.slots.keys().copied().collect();
        for seq in seqs {
            self.check(seq);
        }
        if primary {
            self.pending = self.uncarried().into_iter().collect();
            self.propose();
        }
        self.outputs.push(Output::ViewChanged { view: v });
    }
}
