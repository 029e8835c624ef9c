//! pBFT's messages (Castro & Liskov, TOCS 2002 §4.2-§4.4) and their
//! signatures. Every protocol message is signed by its sender with ed25519
//! over a domain-separated, canonical encoding (postcard of the body after a
//! fixed tag), and verified against the replica set before it counts; a
//! batch of requests is named by its SHA-256 digest.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::config::{Epoch, ReplicaId, ReplicaSet, Seq, View};

/// A SHA-256 digest (of a batch, or of the state at a checkpoint).
pub type Digest = [u8; 32];

/// Tag in front of every signed encoding: a signature made for this protocol
/// and version can never be taken for one over anything else.
const DOMAIN: &[u8] = b"agent-mesh/pbft/v1\0";

/// A client: its ed25519 public key. A client id cannot be claimed without
/// the key, so no replica can make up requests in another client's name.
pub type ClientId = [u8; 32];

/// A client request (§4.2 `REQUEST, o, t, c`): an operation, the client's
/// timestamp (strictly increasing per client, for exactly-once), the
/// client, and the client's signature over them (TOCS 2002 §4.1: requests
/// are authenticated, or a faulty replica could forge them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The client that signed it (its public key).
    pub client: ClientId,
    /// The client's timestamp: strictly increasing per client.
    pub timestamp: u64,
    /// The encoded state-machine command.
    pub op: Vec<u8>,
    /// The client's ed25519 signature over client, timestamp and operation.
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

/// Tag in front of a request's signed bytes.
const REQUEST_DOMAIN: &[u8] = b"agent-mesh/pbft/request/v1\0";

impl Request {
    /// A request signed by the client whose key is `key`.
    pub fn signed(key: &SigningKey, timestamp: u64, op: Vec<u8>) -> Request {
        let client = key.verifying_key().to_bytes();
        let signature = key.sign(&request_bytes(&client, timestamp, &op)).to_bytes();
        Request {
            client,
            timestamp,
            op,
            signature,
        }
    }

    /// The client's signature is valid.
    pub fn verify(&self) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.client) else {
            return false;
        };
        key.verify(
            &request_bytes(&self.client, self.timestamp, &self.op),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }

    /// Identifies the request: a client's timestamps are unique.
    pub fn id(&self) -> (ClientId, u64) {
        (self.client, self.timestamp)
    }
}

fn request_bytes(client: &ClientId, timestamp: u64, op: &[u8]) -> Vec<u8> {
    let mut out = REQUEST_DOMAIN.to_vec();
    out.extend_from_slice(client);
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(op);
    out
}

/// The digest of a batch of requests (what pre-prepares, prepares and
/// commits agree on).
pub fn batch_digest(batch: &[Request]) -> Digest {
    let mut h = Sha256::new();
    h.update(b"batch\0");
    h.update(postcard::to_allocvec(batch).expect("encoding to a Vec cannot fail"));
    h.finalize().into()
}

/// A message body; [`Signed`] carries it with its sender and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// §4.2: the primary of `view` assigns `seq` to the batch with `digest`
    /// (the batch itself travels beside it, in [`Envelope::batch`]).
    PrePrepare {
        /// The view whose primary sends it.
        view: View,
        /// The sequence number assigned to the batch.
        seq: Seq,
        /// The batch's [`batch_digest`].
        digest: Digest,
    },
    /// §4.2: a backup accepted that pre-prepare.
    Prepare {
        /// The pre-prepare's view.
        view: View,
        /// The pre-prepare's sequence number.
        seq: Seq,
        /// The pre-prepare's batch digest.
        digest: Digest,
    },
    /// §4.2: the sender has a prepared certificate for (view, seq, digest).
    Commit {
        /// The view it prepared in.
        view: View,
        /// The prepared sequence number.
        seq: Seq,
        /// The prepared batch's digest.
        digest: Digest,
    },
    /// §4.3: the state after executing `seq` has digest `state`.
    Checkpoint {
        /// The checkpoint's sequence number (a multiple of the checkpoint interval).
        seq: Seq,
        /// SHA-256 of the whole state after executing `seq`.
        state: Digest,
    },
    /// §4.4: the sender moves to `view`; `stable` is its last stable
    /// checkpoint with its proof, `prepared` its prepared certificates after it.
    ViewChange {
        /// The view the sender moves to.
        view: View,
        /// Sequence number of its last stable checkpoint.
        stable: Seq,
        /// 2f + 1 signed checkpoint messages proving `stable` (empty at the
        /// epoch's start).
        checkpoint_proof: Vec<Signed>,
        /// Its prepared certificates above `stable`.
        prepared: Vec<PreparedCert>,
    },
    /// §4.4: the new primary's proof (2f + 1 view changes) and the
    /// pre-prepares it re-issues for the new view.
    NewView {
        /// The view that begins.
        view: View,
        /// 2f + 1 signed VIEW-CHANGE messages for `view`.
        view_changes: Vec<Signed>,
        /// The new primary's pre-prepares of `view` for every slot above the
        /// latest stable checkpoint up to the highest prepared one (null
        /// batches where none prepared).
        pre_prepares: Vec<Signed>,
    },
    /// §4.1: a replica's answer to a client's request.
    Reply {
        /// The replica's current view (tells the client who is primary).
        view: View,
        /// The client the request came from.
        client: ClientId,
        /// The request's timestamp.
        timestamp: u64,
        /// The encoded result of executing the request.
        result: Vec<u8>,
    },
    /// §5.1.3, as a read index: the sender's answer to `client`'s read-only
    /// question `nonce`: `seq` is the highest sequence number it knows
    /// committed or prepared (see [`super::read_only`]).
    ReadIndex {
        /// The client that asked.
        client: ClientId,
        /// The question's nonce, unique per client.
        nonce: u64,
        /// The highest sequence number the sender knows committed or prepared.
        seq: Seq,
    },
}

impl Body {
    /// The view the message belongs to, if any.
    pub fn view(&self) -> Option<View> {
        match self {
            Body::PrePrepare { view, .. }
            | Body::Prepare { view, .. }
            | Body::Commit { view, .. }
            | Body::ViewChange { view, .. }
            | Body::NewView { view, .. }
            | Body::Reply { view, .. } => Some(*view),
            Body::Checkpoint { .. } | Body::ReadIndex { .. } => None,
        }
    }
}

/// A prepared certificate (§4.4): a pre-prepare and 2f matching prepares
/// from different backups, with the batch the digest names (so a new
/// primary can re-issue it without fetching the requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCert {
    /// The primary's signed pre-prepare.
    pub pre_prepare: Signed,
    /// 2f signed prepares matching it, from different backups.
    pub prepares: Vec<Signed>,
    /// The requests whose digest the pre-prepare names.
    pub batch: Vec<Request>,
}

/// A commit certificate: the pre-prepare of the primary of its view, 2f + 1
/// matching commits from different replicas, and the batch. It proves the
/// batch committed at that sequence number (§4.2: committed-local at one
/// correct replica at least), so a replica that missed the messages can
/// execute it without having taken part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCert {
    /// The signed pre-prepare of the view's primary.
    pub pre_prepare: Signed,
    /// 2f + 1 signed commits matching it, from different replicas.
    pub commits: Vec<Signed>,
    /// The requests whose digest the pre-prepare names.
    pub batch: Vec<Request>,
}

/// A body signed by replica `from` of epoch `epoch` (replica ids, views
/// and sequence numbers mean something only within one configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The configuration it was signed in.
    pub epoch: Epoch,
    /// The signing replica's id in that configuration.
    pub from: ReplicaId,
    /// What it says.
    pub body: Body,
    /// ed25519 signature over the domain tag, epoch, sender and body.
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &[u8; 64], ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_bytes(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<[u8; 64], D::Error> {
        let v: Vec<u8> = serde_bytes_vec(de)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }

    fn serde_bytes_vec<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u8>, D::Error> {
        <Vec<u8>>::deserialize(de)
    }
}

/// Why a signed message does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The claimed sender id is not in the replica set.
    #[error("replica {0} is not a member of the replica set")]
    NotAMember(ReplicaId),
    /// The signature is not the claimed sender's over this message.
    #[error("the signature of replica {0} does not verify")]
    BadSignature(ReplicaId),
    /// Not a lie: a replica still in an earlier configuration, or already
    /// in a later one (the runtime helps it along, see [`super::epoch`]).
    #[error("a message of epoch {got}, not this configuration's epoch {current}")]
    OtherEpoch {
        /// The epoch the message names.
        got: Epoch,
        /// The verifying replica set's epoch.
        current: Epoch,
    },
}

/// The bytes a signature covers: the domain tag, the epoch, the signer,
/// the body.
fn signing_bytes(epoch: Epoch, from: ReplicaId, body: &Body) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    postcard::to_extend(body, out).expect("encoding to a Vec cannot fail")
}

impl Signed {
    /// Signs `body` as replica `from` of the genesis configuration (epoch 0).
    pub fn sign(from: ReplicaId, body: Body, key: &SigningKey) -> Signed {
        Signed::sign_in(0, from, body, key)
    }

    /// Signs `body` as replica `from` of epoch `epoch`.
    pub fn sign_in(epoch: Epoch, from: ReplicaId, body: Body, key: &SigningKey) -> Signed {
        let signature = key.sign(&signing_bytes(epoch, from, &body)).to_bytes();
        Signed {
            epoch,
            from,
            body,
            signature,
        }
    }

    /// Checks the message is of this configuration, the sender is a member
    /// and the signature is its own.
    pub fn verify(&self, replicas: &ReplicaSet) -> Result<(), VerifyError> {
        if self.epoch != replicas.epoch() {
            return Err(VerifyError::OtherEpoch {
                got: self.epoch,
                current: replicas.epoch(),
            });
        }
        let key = replicas
            .key(self.from)
            .ok_or(VerifyError::NotAMember(self.from))?;
        key.verify(
            &signing_bytes(self.epoch, self.from, &self.body),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| VerifyError::BadSignature(self.from))
    }
}

/// Signed messages already verified, by the SHA-256 of their whole encoding
/// (sender, body and signature: an equal key is the identical message, so
/// the earlier result stands). Retransmissions, and certificates carried
/// again inside view changes, cost a hash instead of a verification.
#[derive(Debug, Default)]
pub struct SigCache {
    seen: std::collections::HashSet<[u8; 32]>,
    /// Signatures actually verified (cache misses).
    pub verified: u64,
}

/// Entries kept before the cache starts over (bounded memory).
const SIG_CACHE_CAP: usize = 1 << 16;

impl SigCache {
    /// [`Signed::verify`], remembered.
    pub fn verify(&mut self, replicas: &ReplicaSet, m: &Signed) -> Result<(), VerifyError> {
        let key: [u8; 32] =
            Sha256::digest(postcard::to_allocvec(m).expect("encoding to a Vec cannot fail")).into();
        if self.seen.contains(&key) {
            return Ok(());
        }
        self.verified += 1;
        m.verify(replicas)?;
        if self.seen.len() >= SIG_CACHE_CAP {
            self.seen.clear();
        }
        self.seen.insert(key);
        Ok(())
    }
}

/// What travels between replicas: a signed message, and for a pre-prepare
/// the batch it names (§4.2 sends the requests beside the signed part, so
/// the signature stays small and the digest binds them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The signed message.
    pub msg: Signed,
    /// For a pre-prepare, the batch it names; `None` otherwise.
    pub batch: Option<Vec<Request>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pbft::testing::keys;

    use crate::pbft::testing::replica_set as replicas;

    fn req(t: u64) -> Request {
        Request::signed(&SigningKey::from_bytes(&[9; 32]), t, vec![1, 2, 3])
    }

    /// TOCS 2002 §4.2: messages are signed, and a replica checks every
    /// signature before a message counts.
    #[test]
    fn signatures_verify_only_for_their_signer_and_body() {
        let k = keys(4);
        let r = replicas(&k);
        let digest = batch_digest(&[req(1)]);
        let m = Signed::sign(
            2,
            Body::Prepare {
                view: 0,
                seq: 1,
                digest,
            },
            &k[2],
        );
        assert_eq!(m.verify(&r), Ok(()));
        // Forged: signed by 3 but claiming to come from 2.
        let forged = Signed {
            from: 2,
            ..Signed::sign(3, m.body.clone(), &k[3])
        };
        assert_eq!(forged.verify(&r), Err(VerifyError::BadSignature(2)));
        // Tampered body.
        let mut tampered = m.clone();
        tampered.body = Body::Prepare {
            view: 0,
            seq: 2,
            digest,
        };
        assert_eq!(tampered.verify(&r), Err(VerifyError::BadSignature(2)));
        // A Prepare's signature is not a Commit's, even with equal fields.
        let mut retyped = m.clone();
        retyped.body = Body::Commit {
            view: 0,
            seq: 1,
            digest,
        };
        assert_eq!(retyped.verify(&r), Err(VerifyError::BadSignature(2)));
        // From outside the replica set.
        let outsider = Signed::sign(7, m.body.clone(), &keys(8)[7]);
        assert_eq!(outsider.verify(&r), Err(VerifyError::NotAMember(7)));
    }

    #[test]
    fn digests_bind_the_whole_batch() {
        let a = batch_digest(&[req(1), req(2)]);
        assert_eq!(a, batch_digest(&[req(1), req(2)]));
        assert_ne!(a, batch_digest(&[req(2), req(1)]), "order matters");
        assert_ne!(a, batch_digest(&[req(1)]));
        let mut other = req(2);
        other.op.push(0);
        assert!(req(2).verify() && !other.verify(), "the op is signed");
        assert_ne!(a, batch_digest(&[req(1), other]));
    }

    #[test]
    fn envelopes_round_trip_and_still_verify() {
        let k = keys(4);
        let r = replicas(&k);
        let batch = vec![req(1)];
        let pp = Signed::sign(
            0,
            Body::PrePrepare {
                view: 0,
                seq: 1,
                digest: batch_digest(&batch),
            },
            &k[0],
        );
        let env = Envelope {
            msg: pp,
            batch: Some(batch),
        };
        let bytes = postcard::to_allocvec(&env).unwrap();
        let back: Envelope = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.msg.verify(&r), Ok(()));
        assert!(postcard::from_bytes::<Envelope>(&bytes[..bytes.len() - 1]).is_err());
    }
}
