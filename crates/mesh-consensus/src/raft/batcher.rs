//! Group commit for client writes on the leader.
//!
//! One command per entry would cost a log append, a replication message and an
//! fsync on every node per write. Instead, proposals queue here; a batch is everything queued when a slot frees up (up
//! to [`MAX_BATCH`] commands or [`MAX_BATCH_BYTES`]), written as one entry, and
//! [`MAX_IN_FLIGHT`] batches may be in the log at once. Under load a batch
//! carries many commands per fsync; an idle leader sends a lone command at once.
//! Commands that are in flight together have no order among them (they were
//! concurrent); one client's sequential writes keep their order.

use std::sync::Arc;

use openraft::Raft;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Request, TypeConfig};
use crate::ordering::{Applied, OrderError};
use mesh_state::Stamped;

/// Most commands in one entry.
pub const MAX_BATCH: usize = 256;
/// A batch is closed once it holds this many bytes (a bigger single command
/// still goes, alone).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches in the log at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Proposals waiting for a batch; beyond it, callers wait to queue.
const QUEUE: usize = 16 * 1024;
/// A batch whose outcome has not come back by then frees its slot and is
/// reported as unknown (openraft may keep the reply of an entry appended by a
/// leader that then lost its leadership until that entry is resolved, which can
/// take long; a stuck slot must not stall every later write).
pub const OUTCOME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A proposal and where its outcome goes.
pub(crate) struct Proposal {
    pub stamped: Stamped,
    pub bytes: usize,
    pub reply: oneshot::Sender<Result<Applied, OrderError>>,
}

/// Starts the batcher for `raft`; it stops when every sender is dropped.
pub(crate) fn spawn(raft: Raft<TypeConfig>) -> mpsc::Sender<Proposal> {
    let (tx, mut rx) = mpsc::channel::<Proposal>(QUEUE);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.bytes;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            let raft = raft.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (stamps, waiters): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|p| (p.stamped, p.reply)).unzip();
                let outcome =
                    tokio::time::timeout(OUTCOME_TIMEOUT, raft.client_write(Request(stamps))).await;
                let Ok(outcome) = outcome else {
                    for w in waiters {
                        let _ = w.send(Err(OrderError::Stopped(
                            "no outcome in time; the write may still apply".into(),
                        )));
                    }
                    return;
                };
                match outcome {
                    Ok(resp) => {
                        let index = resp.data.index;
                        for (w, reply) in waiters.into_iter().zip(resp.data.replies) {
                            let _ = w.send(Ok(Applied { index, reply }));
                        }
                    }
                    Err(e) => {
                        let err = super::write_error(e);
                        for w in waiters {
                            let _ = w.send(Err(err.clone()));
                        }
                    }
                }
            });
        }
    });
    tx
}
