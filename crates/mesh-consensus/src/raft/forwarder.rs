//! Followers forward their clients' writes to the leader in batches, over
//! reused connections: one RPC carries every write queued since the last one
//! left (up to [`MAX_BATCH`]), and [`MAX_IN_FLIGHT`] RPCs may be out at once.
//! The leader proposes each write of a batch on its own (its batcher groups
//! them again into log entries) and answers with every outcome, in order.
//!
//! A batch that fails in transit fails each of its writes with
//! `LeaderUnreachable` (it may have applied): callers retry with the same
//! request id, which the state machine deduplicates.

use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::NodeId;
use crate::ordering::{Applied, OrderError};
use mesh_state::{Command, RequestId};

/// Most writes in one forwarded batch.
pub const MAX_BATCH: usize = 256;
/// Forwarded batches out at once.
pub const MAX_IN_FLIGHT: usize = 4;
const QUEUE: usize = 16 * 1024;

pub(crate) struct Forward {
    pub command: Command,
    pub request_id: Option<RequestId>,
    pub reply: oneshot::Sender<Result<Applied, OrderError>>,
}

/// Where to send: the leader's id and address, looked up per batch.
pub(crate) type LeaderLookup = Arc<dyn Fn() -> Option<(NodeId, String)> + Send + Sync>;

/// Idle connections to the leader, by address.
type Pool = Arc<Mutex<Vec<(String, TcpStream)>>>;

pub(crate) fn spawn(leader: LeaderLookup) -> mpsc::Sender<Forward> {
    let (tx, mut rx) = mpsc::channel::<Forward>(QUEUE);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let pool: Pool = Arc::default();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => break,
                }
            }
            let Some((leader_id, addr)) = leader() else {
                for f in batch {
                    let _ = f.reply.send(Err(OrderError::NotLeader { leader: None }));
                }
                continue;
            };
            let pool = pool.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let (items, waiters): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .map(|f| ((f.command, f.request_id), f.reply))
                    .unzip();
                let idle = {
                    let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
                    p.iter()
                        .position(|(a, _)| *a == addr)
                        .map(|i| p.swap_remove(i).1)
                };
                match super::net_tcp::forward_batch(leader_id, &addr, idle, &items).await {
                    Ok((results, conn)) if results.len() == waiters.len() => {
                        pool.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((addr, conn));
                        for (w, r) in waiters.into_iter().zip(results) {
                            let _ = w.send(r);
                        }
                    }
                    Ok(_) => {
                        for w in waiters {
                            let _ = w.send(Err(OrderError::LeaderUnreachable {
                                leader: leader_id,
                                detail: "reply of the wrong length".into(),
                            }));
                        }
                    }
                    Err(e) => {
                        for w in waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                    }
                }
            });
        }
    });
    tx
}
