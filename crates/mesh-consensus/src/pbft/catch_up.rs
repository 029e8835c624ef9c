//! Catching up on committed batches a replica missed (TOCS 2002 §4.5 fetches
//! "missing entries" beside the checkpoint state): a replica that sees
//! others commit sequence numbers it cannot execute (it missed a
//! pre-prepare or the votes, say while cut off or during a view change)
//! asks for commit certificates. Each certificate carries the primary's
//! pre-prepare, the batch and 2f + 1 matching commits, so it proves the
//! batch committed without trusting whoever sent it; the replica then
//! executes in order as if it had voted. What is older than the others'
//! stable checkpoint comes by state transfer instead.

use super::config::Seq;
use super::message::CommitCert;
use super::replica::{Output, Refused, Replica};
use super::validate;

/// Most certificates in one answer.
pub const MAX_CERTS: usize = 64;

impl Replica {
    /// Whether this replica is stuck behind: something above its next
    /// sequence number is committed (here, or by a quorum of others) while
    /// the next one is not. Asks once the gap has lasted a retransmission
    /// period, and again every period while it lasts.
    pub(super) fn check_gap(&mut self) {
        let next = self.last_executed + 1;
        let quorum = self.replicas.quorum();
        let gap = self.fetching.is_none()
            && self.slots.range(next..).any(|(&s, slot)| {
                !self.slots.get(&next).is_some_and(|n| n.committed)
                    && (slot.committed && s > next || slot.commits.len() >= quorum)
            });
        match (gap, self.stalled) {
            (false, _) => self.stalled = None,
            (true, Some((at, since))) if at == self.last_executed => {
                if self.now.saturating_sub(since) >= self.settings.retransmit_ms {
                    self.stalled = Some((at, self.now));
                    self.outputs.push(Output::FetchEntries {
                        after: self.last_executed,
                    });
                }
            }
            (true, _) => self.stalled = Some((self.last_executed, self.now)),
        }
    }

    /// Commit certificates of executed batches above `after` still kept
    /// here (above the low watermark), oldest first, at most `max`.
    pub fn commit_certs(&self, after: Seq, max: usize) -> Vec<CommitCert> {
        if after >= self.last_executed {
            return Vec::new();
        }
        self.slots
            .range(after + 1..=self.last_executed)
            .filter_map(|(_, slot)| {
                let pre_prepare = slot.pre_prepare.clone()?;
                let digest = slot.digest?;
                let commits: Vec<_> = slot
                    .commits
                    .values()
                    .filter(|c| {
                        matches!(c.body, super::message::Body::Commit { view, digest: d, .. }
                            if view == slot.view && d == digest)
                    })
                    .cloned()
                    .collect();
                (slot.committed && commits.len() >= self.replicas.quorum()).then(|| CommitCert {
                    pre_prepare,
                    commits,
                    batch: slot.batch.clone().unwrap_or_default(),
                })
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
