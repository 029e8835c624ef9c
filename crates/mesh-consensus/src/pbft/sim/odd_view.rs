//! A scripted fault for the simulation: one correct replica ends up in
//! another view than the others, then one more replica fails for good.
//!
//! With n = 3f + 1 and f = 1, three replicas must take part in each view.
//! A replica that sits in another view than the rest leaves no spare: if it
//! stayed there, the next fault would stop the mesh. Two ways to get there:
//!
//! - [`OddView::Behind`]: the primary crashes, the others change view
//!   without it, and it restarts (from its disk) in the view it left. It
//!   catches up on what the others execute, but from fetched certificates,
//!   not as a member of their view.
//! - [`OddView::Ahead`]: a backup is cut off from the other replicas with
//!   one client whose request it forwards in vain, so its timer blames the
//!   primary and it moves to the next view alone; its VIEW-CHANGE is lost.
//!   A lone replica cannot come back down (its VIEW-CHANGE is signed and
//!   may yet be used), so the others must be able to meet it there.
//!
//! Once the odd replica has had time to catch up, a replica among the
//! others crashes and stays down (the current primary or a backup, by
//! seed). With the network calm from then on, every request must still be
//! accepted: the liveness check of the run, with that replica left out.

use rand::RngExt;
use serde::Serialize;

use super::{Event, Sim};

/// Which odd view the scripted fault leaves a replica in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OddView {
    /// Restarted in the view it left, below the others'.
    Behind,
    /// Alone in a view change above the others' view.
    Ahead,
}

/// When the script starts, and how long each fault lasts (virtual time).
const START_US: u64 = 300_000;
const HOLD_US: u64 = 1_500_000;
/// From the end of the odd replica's fault to the second fault.
const SETTLE_US: u64 = 1_000_000;

/// What the script did, for the run's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OddViewReport {
    /// The replica left in another view.
    pub odd: Option<usize>,
    /// The replica that failed for good at the second fault.
    pub down: Option<usize>,
    /// Whether the replica that failed for good was the others' primary.
    pub down_was_primary: bool,
    /// At the second fault: whether the odd replica was still in another
    /// view than the others (or changing view alone).
    pub odd_at_fault: bool,
    /// Every replica's view at the second fault, as `i: view v (changing)`.
    pub positions: String,
    /// From the second fault to the first request accepted after it.
    pub resumed_after_ms: Option<u64>,
}

impl Sim {
    pub(super) fn schedule_odd_view(&mut self) {
        let t = START_US + self.rng.random_range(0..500_000);
        self.at(t, Event::OddViewStart);
    }

    /// The view most correct, running replicas are in, and its primary.
    fn common_view(&self) -> u64 {
        let mut views: Vec<u64> = (0..self.cfg.n)
            .filter(|&i| self.correct(i) && !self.nodes[i].crashed)
            .map(|i| self.nodes[i].replica.view())
            .collect();
        views.sort_unstable();
        views.get(views.len() / 2).copied().unwrap_or(0)
    }

    pub(super) fn odd_view_start(&mut self) {
        let Some(kind) = self.cfg.odd_view else {
            return;
        };
        let n = self.cfg.n;
        let primary = (self.common_view() % n as u64) as usize;
        let r = match kind {
            OddView::Behind => primary,
            OddView::Ahead => (primary + 1 + self.rng.random_range(0..n - 1)) % n,
        };
        if !self.correct(r) || self.nodes[r].crashed {
            return;
        }
        self.odd_report.odd = Some(r);
        match kind {
            OddView::Behind => {
                self.nodes[r].crashed = true;
                self.report.crashes += 1;
            }
            // Cut off with client 0: the client's request reaches it and
            // nothing of the others does.
            OddView::Ahead => self.partitions.isolate(&[r as u32, n as u32], false),
        }
        self.at(self.now_us + HOLD_US, Event::OddViewEnd);
    }

    pub(super) fn odd_view_end(&mut self) {
        let Some(r) = self.odd_report.odd else {
            return;
        };
        match self.cfg.odd_view {
            Some(OddView::Behind) => self.restart(r),
            Some(OddView::Ahead) => self.partitions.heal(),
            None => {}
        }
        self.at(self.now_us + SETTLE_US, Event::SecondFault);
    }

    /// One of the others crashes for good: the primary of their view or a
    /// backup, by seed.
    pub(super) fn second_fault(&mut self) {
        let Some(r) = self.odd_report.odd else {
            return;
        };
        let n = self.cfg.n;
        let others: Vec<usize> = (0..n)
            .filter(|&i| i != r && self.correct(i) && !self.nodes[i].crashed)
            .collect();
        let view = others
            .iter()
            .map(|&i| self.nodes[i].replica.view())
            .max()
            .unwrap_or(0);
        let primary = (view % n as u64) as usize;
        let x = if self.rng.random_bool(0.5) && others.contains(&primary) {
            primary
        } else {
            let backups: Vec<usize> = others.iter().copied().filter(|&i| i != primary).collect();
            backups[self.rng.random_range(0..backups.len())]
        };
        let odd = &self.nodes[r].replica;
        let odd_at_fault = others.iter().any(|&i| {
            let o = &self.nodes[i].replica;
            o.view() != odd.view() || o.is_active() != odd.is_active()
        });
        self.odd_report.positions = (0..n)
            .map(|i| {
                let rep = &self.nodes[i].replica;
                format!(
                    "{i}: view {}{}",
                    rep.view(),
                    if rep.is_active() { "" } else { " (changing)" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        self.odd_report.odd_at_fault = odd_at_fault;
        // A replica behind in view learns the later view from the others
        // (its NEW-VIEW comes with their answer to its status question):
        // a second after its restart the spare is back.
        if odd_at_fault && self.cfg.odd_view == Some(OddView::Behind) {
            let positions = self.odd_report.positions.clone();
            self.violate(format!(
                "replica {r} restarted {} ms ago and is still out of the others' view: {positions}",
                SETTLE_US / 1000
            ));
        }
        self.odd_report.down = Some(x);
        self.odd_report.down_was_primary = x == primary;
        self.odd_report.resumed_after_ms = None;
        self.fault_at_us = Some(self.now_us);
        self.fault_seq = self.decided.keys().next_back().copied().unwrap_or(0);
        self.nodes[x].crashed = true;
        self.report.crashes += 1;
    }

    /// A client accepted a result ordered after everything decided at the
    /// second fault: the first such says when writes resumed.
    pub(super) fn note_accepted(&mut self) {
        if let Some(t) = self.fault_at_us
            && self.odd_report.resumed_after_ms.is_none()
        {
            self.odd_report.resumed_after_ms = Some((self.now_us - t) / 1000);
        }
    }
}
