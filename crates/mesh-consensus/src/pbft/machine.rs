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
//! A replica's vote for a new replica set is a request of its replica key
//! whose operation is [`RECONFIGURE_OP`] then a [`Proposal`]; it goes to the
//! replicated [`Reconfig`] (see [`super::epoch`]), not to the state machine.
//!
//! The checkpoint digest (§4.3) is SHA-256 over [`PbftApp::snapshot`]: the
//! state machine's snapshot, the client table and the configuration, so two
//! replicas agree on a digest only if they hold the same state and would
//! treat every request the same.

use std::collections::BTreeMap;

use mesh_state::{Command, Event, Reply, RequestId, Stamped, StateError, StateMachine};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::config::{ReplicaSet, Seq};
use super::epoch::{Reconfig, VoteError, VoteOutcome};
use super::message::{ClientId, Digest, Request};
use super::replica::Settings;

/// How a vote's operation starts. A node's [`ClientOp`] never does: its
/// encoding starts with the clock, and no node's clock reads 0.
pub const RECONFIGURE_OP: &[u8] = b"\0agent-mesh/pbft/reconfigure\0";

/// A proposed replica set: keys in id order, and the nodes' names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The new replicas' ed25519 public keys; index = replica id.
    pub keys: Vec<[u8; 32]>,
    /// Their node names, by id (empty: unnamed).
    pub names: Vec<String>,
}

impl Proposal {
    /// The operation of a vote for it.
    pub fn op(&self) -> Vec<u8> {
        let mut op = RECONFIGURE_OP.to_vec();
        op.extend(postcard::to_allocvec(self).expect("encoding to a Vec cannot fail"));
        op
    }
}

/// What a node's request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientOp {
    /// The requesting node's clock (Unix milliseconds) when it sent the
    /// request: the state machine's clock never runs backwards, so a stale
    /// stamp changes nothing.
    pub now_ms: u64,
    /// The commands to apply in order, each with its caller's request id
    /// (for deduplication), if any.
    pub commands: Vec<(Command, Option<RequestId>)>,
}

/// One executed request: whose, and what each of its commands returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// The client (node key) that sent it.
    pub client: ClientId,
    /// The request's timestamp.
    pub timestamp: u64,
    /// The state-machine index the request was applied at.
    pub index: u64,
    /// One reply per command, in order (none for a vote).
    pub replies: Vec<Result<Reply, StateError>>,
    /// What a vote did (None for commands).
    pub vote: Option<Result<VoteOutcome, VoteError>>,
}

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("undecodable pBFT snapshot: {0}")]
pub struct SnapshotError(#[from] postcard::Error);

/// The part of the replicated state pBFT adds to the state machine: each
/// client's last executed timestamp, and the replica configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PbftApp {
    /// Each client's last executed timestamp (older requests are not executed).
    pub clients: BTreeMap<ClientId, u64>,
    /// The replica set in force, the votes for the next one and a decided change.
    pub reconfig: Reconfig,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: Vec<u8>,
    clients: BTreeMap<ClientId, u64>,
    reconfig: Reconfig,
}

impl PbftApp {
    /// The state before anything executed: the genesis replica set and its
    /// replicas' names.
    pub fn genesis(replicas: ReplicaSet, names: Vec<String>) -> Self {
        PbftApp {
            clients: BTreeMap::new(),
            reconfig: Reconfig::named(replicas, names),
        }
    }

    /// Executes a committed batch (sequence number `seq`) on `sm`, collecting
    /// what the commands caused into `events`. Only requests that executed
    /// are returned. At a decided epoch end the next configuration comes
    /// into force after the batch.
    pub fn execute(
        &mut self,
        sm: &mut StateMachine,
        seq: Seq,
        batch: &[Request],
        events: &mut Vec<Event>,
        settings: &Settings,
    ) -> Vec<Executed> {
        let mut out = Vec::new();
        for (position, r) in batch.iter().enumerate() {
            let last = self.clients.entry(r.client).or_insert(0);
            if r.timestamp <= *last {
                continue;
            }
            *last = r.timestamp;
            if let Some(proposal) = r.op.strip_prefix(RECONFIGURE_OP) {
                let vote = match postcard::from_bytes::<Proposal>(proposal) {
                    Ok(p) => self
                        .reconfig
                        .vote(&r.client, p.keys, p.names, seq, settings),
                    Err(_) => Err(VoteError::Undecodable),
                };
                out.push(Executed {
                    client: r.client,
                    timestamp: r.timestamp,
                    index: sm.applied_index,
                    replies: Vec::new(),
                    vote: Some(vote),
                });
                continue;
            }
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
                vote: None,
            });
        }
        self.reconfig.executed(seq);
        out
    }

    /// Each client's last executed timestamp (what a replica restored or
    /// handed a state needs to know).
    pub fn executed_clients(&self) -> impl Iterator<Item = (ClientId, u64)> + '_ {
        self.clients.iter().map(|(c, t)| (*c, *t))
    }

    /// The state and the client table, encoded (what checkpoints digest and
    /// state transfer moves).
    pub fn snapshot(&self, sm: &StateMachine) -> Vec<u8> {
        postcard::to_allocvec(&SnapshotBody {
            state: sm.snapshot(),
            clients: self.clients.clone(),
            reconfig: self.reconfig.clone(),
        })
        .expect("encoding to a Vec cannot fail")
    }

    /// Decodes a [`PbftApp::snapshot`] back into the state machine and the
    /// pBFT part.
    pub fn restore(bytes: &[u8]) -> Result<(StateMachine, Self), SnapshotError> {
        let body: SnapshotBody = postcard::from_bytes(bytes)?;
        Ok((
            StateMachine::restore(&body.state)?,
            PbftApp {
                clients: body.clients,
                reconfig: body.reconfig,
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
    use crate::pbft::testing::{keys, replica_set};
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
        let genesis = || PbftApp::genesis(replica_set(&keys(4)), Vec::new());
        let (mut one, mut sm1) = (genesis(), StateMachine::new());
        let (mut two, mut sm2) = (genesis(), StateMachine::new());
        let s = Settings::default();
        let mut ev = Vec::new();
        let batch = vec![a1.clone(), garbage, a2.clone()];
        let ran = one.execute(&mut sm1, 1, &batch, &mut ev, &s);
        assert_eq!(ran.len(), 2, "the undecodable op executes nothing");
        assert_eq!(ran[0].replies.len(), 2);
        assert_eq!((ran[0].index, ran[1].index), (1, 2));
        two.execute(&mut sm2, 1, &batch, &mut ev, &s);
        let digest = |a: &PbftApp, sm: &StateMachine| snapshot_digest(&a.snapshot(sm));
        assert_eq!(digest(&one, &sm1), digest(&two, &sm2));
        // TOCS 2002 §4.1: an old timestamp executes nothing.
        assert!(one.execute(&mut sm1, 2, &[a1, a2], &mut ev, &s).is_empty());
        assert_eq!(digest(&one, &sm1), digest(&two, &sm2));
        let (sm3, three) = PbftApp::restore(&one.snapshot(&sm1)).unwrap();
        assert_eq!(digest(&three, &sm3), digest(&one, &sm1));
        assert!(PbftApp::restore(b"\xff\xff").is_err());
    }

    /// Votes are requests of replica keys ordered like any other: they go
    /// to the configuration, count once per replica, decide with 2f + 1,
    /// and the next set is in force after the end's batch (and in the
    /// snapshot a newcomer fetches).
    #[test]
    fn votes_change_the_configuration_at_the_decided_end() {
        let k = keys(5);
        let set = replica_set(&k[..4]);
        let names: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
        let mut app = PbftApp::genesis(set, names);
        let mut sm = StateMachine::new();
        let s = Settings::default();
        let proposal = Proposal {
            keys: k[1..5]
                .iter()
                .map(|k| k.verifying_key().to_bytes())
                .collect(),
            names: (1..5).map(|i| format!("n{i}")).collect(),
        };
        let vote = |i: usize, t: u64| Request::signed(&k[i], t, proposal.op());
        let mut ev = Vec::new();
        let out = app.execute(&mut sm, 1, &[vote(4, 1), vote(0, 1)], &mut ev, &s);
        assert_eq!(out[0].vote, Some(Err(VoteError::NotAReplica)));
        assert_eq!(
            out[1].vote,
            Some(Ok(VoteOutcome::Counted { votes: 1, need: 3 }))
        );
        // The same request again executes nothing (§4.1).
        assert!(
            app.execute(&mut sm, 2, &[vote(0, 1)], &mut ev, &s)
                .is_empty()
        );
        let out = app.execute(&mut sm, 3, &[vote(1, 1), vote(2, 1)], &mut ev, &s);
        let Some(Ok(VoteOutcome::Decided(d))) = &out[1].vote else {
            panic!("the third vote decides: {out:?}")
        };
        let end = d.end;
        assert_eq!(end, crate::pbft::epoch::epoch_end(3, &s));
        assert_eq!(sm.applied_index, 0, "votes do not touch the state machine");
        app.execute(&mut sm, end - 1, &[], &mut ev, &s);
        assert_eq!(app.reconfig.config.epoch(), 0);
        app.execute(&mut sm, end, &[], &mut ev, &s);
        assert_eq!(app.reconfig.config.epoch(), 1);
        assert_eq!(app.reconfig.names[3], "n4");
        let (_, back) = PbftApp::restore(&app.snapshot(&sm)).unwrap();
        assert_eq!(back, app);
    }
}
