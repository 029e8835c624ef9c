//! The application pBFT orders in a node: mesh-state's [`StateMachine`] (the
//! same one Raft orders) plus each pBFT client's last executed timestamp.
//!
//! A request's operation is a [`ClientOp`]: the commands one node gathered
//! while its previous request was in flight, stamped with that node's clock.
//! Executing a committed batch applies each request's commands in order, one
//! state-machine index per request, with a seed derived from the sequence
//! number and position (so no replica's randomness enters the state). A
//! request whose timestamp is not above its client's last executed one
//! executes nothing (TOCS 2002 §4.1: exactly once); an operation that does
//! not decode (a faulty client) executes nothing either, on every replica
//! alike.
//!
//! The checkpoint digest (§4.3) is SHA-256 over [`PbftApp::snapshot`]: the
//! state machine's snapshot and the client table, so two replicas agree on
//! a digest only if they hold the same state and would treat every request
//! the same.

use std::collections::BTreeMap;

use mesh_state::{Command, Event, Reply, RequestId, Stamped, StateError, StateMachine};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::config::Seq;
use super::message::{ClientId, Digest, Request};

/// What a node's request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientOp {
    /// The requesting node's clock (Unix milliseconds) when it sent the
    /// request: the state machine's clock never runs backwards, so a stale
    /// stamp changes nothing.
    pub now_ms: u64,
    pub commands: Vec<(Command, Option<RequestId>)>,
}

/// One executed request: whose, and what each of its commands returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    pub client: ClientId,
    pub timestamp: u64,
    /// The state-machine index the request was applied at.
    pub index: u64,
    pub replies: Vec<Result<Reply, StateError>>,
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("undecodable pBFT snapshot: {0}")]
pub struct SnapshotError(#[from] postcard::Error);

/// The part of the replicated state pBFT adds to the state machine: each
/// client's last executed timestamp.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PbftApp {
    pub clients: BTreeMap<ClientId, u64>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: Vec<u8>,
    clients: BTreeMap<ClientId, u64>,
}

impl PbftApp {
    /// Executes a committed batch (sequence number `seq`) on `sm`, collecting
    /// what the commands caused into `events`. Only requests that executed
    /// are returned.
    pub fn execute(
        &mut self,
        sm: &mut StateMachine,
        seq: Seq,
        batch: &[Request],
        events: &mut Vec<Event>,
    ) -> Vec<Executed> {
        let mut out = Vec::new();
        for (position, r) in batch.iter().enumerate() {
            let last = self.clients.entry(r.client).or_insert(0);
            if r.timestamp <= *last {
                continue;
            }
            *last = r.timestamp;
            let Ok(op) = postcard::from_bytes::<ClientOp>(&r.op) else {
                continue;
            };
            let stamped: Vec<Stamped> = op
                .commands
                .into_iter()
                .enumerate()
                .map(|(i, (command, request_id))| Stamped {
                    now_ms: op.now_ms,
                    seed: seed(seq, position, i),
                    request_id,
                    command,
                })
                .collect();
            let index = sm.applied_index + 1;
            let replies = sm.apply_batch_with_events(index, &stamped, events);
            out.push(Executed {
                client: r.client,
                timestamp: r.timestamp,
                index,
                replies,
            });
        }
        out
    }

    /// The state and the client table, encoded (what checkpoints digest and
    /// state transfer moves).
    pub fn snapshot(&self, sm: &StateMachine) -> Vec<u8> {
        postcard::to_allocvec(&SnapshotBody {
            state: sm.snapshot(),
            clients: self.clients.clone(),
        })
        .expect("encoding to a Vec cannot fail")
    }

    pub fn restore(bytes: &[u8]) -> Result<(StateMachine, Self), SnapshotError> {
        let body: SnapshotBody = postcard::from_bytes(bytes)?;
        Ok((
            StateMachine::restore(&body.state)?,
            PbftApp {
                clients: body.clients,
            },
        ))
    }
}

/// The checkpoint digest of a snapshot.
pub fn snapshot_digest(snapshot: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"agent-mesh/pbft/state\0");
    h.update(snapshot);
    h.finalize().into()
}

/// The randomness of command `i` of the request at `position` in the batch
/// at `seq`: the same on every replica, chosen by no one.
fn seed(seq: Seq, position: usize, i: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(seq.to_le_bytes());
    h.update((position as u64).to_le_bytes());
    h.update((i as u64).to_le_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbft::testing::keys;
    use mesh_state::KvCmd;

    fn op(now_ms: u64, keys_values: &[(&str, &str)]) -> Vec<u8> {
        let commands = keys_values
            .iter()
            .map(|(k, v)| {
                (
                    Command::Kv(KvCmd::Set {
                        key: k.as_bytes().to_vec(),
                        value: v.as_bytes().to_vec(),
                        cond: mesh_state::command::SetCond::Always,
                        get: false,
                        expiry: mesh_state::command::Expiry::Never,
                    }),
                    None,
                )
            })
            .collect();
        postcard::to_allocvec(&ClientOp { now_ms, commands }).unwrap()
    }

    #[test]
    fn executes_each_request_once_and_skips_garbage_alike() {
        let k = keys(2);
        let a1 = Request::signed(&k[0], 1, op(10, &[("x", "1"), ("y", "2")]));
        let garbage = Request::signed(&k[1], 5, b"not an op".to_vec());
        let a2 = Request::signed(&k[0], 2, op(11, &[("x", "3")]));
        let (mut one, mut sm1) = (PbftApp::default(), StateMachine::new());
        let (mut two, mut sm2) = (PbftApp::default(), StateMachine::new());
        let mut ev = Vec::new();
        let batch = vec![a1.clone(), garbage, a2.clone()];
        let ran = one.execute(&mut sm1, 1, &batch, &mut ev);
        assert_eq!(ran.len(), 2, "the undecodable op executes nothing");
        assert_eq!(ran[0].replies.len(), 2);
        assert_eq!((ran[0].index, ran[1].index), (1, 2));
        two.execute(&mut sm2, 1, &batch, &mut ev);
        let digest = |a: &PbftApp, sm: &StateMachine| snapshot_digest(&a.snapshot(sm));
        assert_eq!(digest(&one, &sm1), digest(&two, &sm2));
        // TOCS 2002 §4.1: an old timestamp executes nothing.
        assert!(one.execute(&mut sm1, 2, &[a1, a2], &mut ev).is_empty());
        assert_eq!(digest(&one, &sm1), digest(&two, &sm2));
        let (sm3, three) = PbftApp::restore(&one.snapshot(&sm1)).unwrap();
        assert_eq!(digest(&three, &sm3), digest(&one, &sm1));
        assert!(PbftApp::restore(b"\xff\xff").is_err());
    }
}
