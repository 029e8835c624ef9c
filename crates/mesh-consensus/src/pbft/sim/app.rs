//! The replicated application of the pBFT simulation and its clients.
//!
//! The application is a counter with a hash chain: each new request
//! increments the counter and extends the chain with the request, and its
//! result is the counter's value, so any two replicas that executed
//! different orders give different results and different checkpoint digests.
//! Like the paper's service (TOCS 2002 §4.1) it keeps each client's last
//! timestamp and reply: an old request executes nothing, and the last one is
//! answered again.
//!
//! Votes for a new replica set (requests of the replicas' own keys whose
//! operation starts with [`VOTE`]) go to the replicated [`Reconfig`], as a
//! node's do.
//!
//! A client sends each request to one replica, accepts a result once f + 1
//! replicas sent the same signed reply (§4.1), and sends the request to all
//! replicas when no result came in time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::pbft::config::{ReplicaSet, Seq};
use crate::pbft::epoch::Reconfig;
use crate::pbft::replica::Settings;
use ed25519_dalek::SigningKey;

use crate::pbft::message::{Body, ClientId, Digest, Request, Signed};

/// The application state (what checkpoints digest and state transfer moves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    pub count: u64,
    pub chain: Digest,
    /// Each client's last executed timestamp and its result.
    pub last: BTreeMap<ClientId, (u64, Vec<u8>)>,
    pub reconfig: Reconfig,
}

/// The operation of a vote: this prefix, then the proposed keys (postcard).
pub const VOTE: &[u8] = b"vote:";

/// A vote's operation for the replica set `keys`.
pub fn vote_op(keys: &[[u8; 32]]) -> Vec<u8> {
    let mut op = VOTE.to_vec();
    op.extend(postcard::to_allocvec(keys).expect("encodes"));
    op
}

impl AppState {
    pub fn genesis(replicas: ReplicaSet) -> Self {
        AppState {
            count: 0,
            chain: [0; 32],
            last: BTreeMap::new(),
            reconfig: Reconfig::new(replicas),
        }
    }

    /// Executes one request of the batch at `seq`: the result, or for an
    /// old request the stored reply of the client's last one (None when
    /// older than that).
    pub fn execute(
        &mut self,
        r: &Request,
        seq: Seq,
        settings: &Settings,
    ) -> Option<(u64, Vec<u8>)> {
        if let Some((t, result)) = self.last.get(&r.client) {
            if r.timestamp < *t {
                return None;
            }
            if r.timestamp == *t {
                return Some((*t, result.clone()));
            }
        }
        if let Some(keys) = r.op.strip_prefix(VOTE)
            && let Ok(keys) = postcard::from_bytes::<Vec<[u8; 32]>>(keys)
        {
            // What the vote did is in the state (a refused one changes
            // nothing there); its result is the counter's, as for any request.
            let _ = self
                .reconfig
                .vote(&r.client, keys, Vec::new(), seq, settings);
        }
        self.count += 1;
        let mut h = Sha256::new();
        h.update(self.chain);
        h.update(postcard::to_allocvec(r).expect("encodes"));
        self.chain = h.finalize().into();
        let result = self.count.to_le_bytes().to_vec();
        self.last.insert(r.client, (r.timestamp, result.clone()));
        Some((r.timestamp, result))
    }

    /// The batch at `seq` executed (a decided change comes into force at its end).
    pub fn end_batch(&mut self, seq: Seq) {
        self.reconfig.executed(seq);
    }

    pub fn digest(&self) -> Digest {
        Sha256::digest(postcard::to_allocvec(self).expect("encodes")).into()
    }

    /// Each client's last executed timestamp.
    pub fn executed(&self) -> Vec<(ClientId, u64)> {
        self.last.iter().map(|(c, (t, _))| (*c, *t)).collect()
    }
}

/// A client of the simulation: sends its requests one after another.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    key: SigningKey,
    pub id: ClientId,
    /// Requests to send in all.
    pub total: u64,
    /// The timestamp of the request in flight (1-based), or total + 1 when done.
    pub current: u64,
    pub sent_at: u64,
    pub retried_at: u64,
    /// Replies to the request in flight: result → replicas that sent it.
    replies: BTreeMap<Vec<u8>, BTreeSet<[u8; 32]>>,
    /// Accepted results by timestamp.
    pub accepted: BTreeMap<u64, Vec<u8>>,
}

impl Client {
    pub fn new(name: String, key: SigningKey, total: u64) -> Self {
        Client {
            name,
            id: key.verifying_key().to_bytes(),
            key,
            total,
            current: 1,
            sent_at: 0,
            retried_at: 0,
            replies: BTreeMap::new(),
            accepted: BTreeMap::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.current > self.total
    }

    pub fn request(&self) -> Request {
        Request::signed(
            &self.key,
            self.current,
            format!("{}:{}", self.name, self.current).into_bytes(),
        )
    }

    /// A reply: counts once verified and for the request in flight; f + 1
    /// matching ones accept the result (true when that happened now).
    /// `replicas` is the configuration of the reply's epoch.
    pub fn on_reply(&mut self, replicas: &ReplicaSet, msg: &Signed) -> bool {
        if self.done() || msg.verify(replicas).is_err() {
            return false;
        }
        let signer = replicas.keys()[msg.from as usize];
        let Body::Reply {
            client,
            timestamp,
            result,
            ..
        } = &msg.body
        else {
            return false;
        };
        if *client != self.id || *timestamp != self.current {
            return false;
        }
        // Counted by key: the same id may be another replica in another epoch.
        let who = self.replies.entry(result.clone()).or_default();
        who.insert(signer);
        if who.len() >= replicas.weak() {
            self.accepted.insert(self.current, result.clone());
            self.current += 1;
            self.replies.clear();
            return true;
        }
        false
    }
}
