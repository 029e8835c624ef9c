//! The replica set: who the replicas are (ed25519 identities), how many may
//! be Byzantine (`f`), and the quorum sizes that follow (Castro & Liskov,
//! TOCS 2002 §4.1: n = 3f + 1 replicas tolerate f faulty ones; a quorum of
//! 2f + 1 intersects any other quorum in at least one correct replica).
//!
//! Part of the replicated configuration: it changes only through a committed
//! reconfiguration (see [`super::epoch`]), never from what one replica says.
//! Each configuration is an *epoch*: its number, the sequence number it
//! starts after (its first low watermark), and its replicas. Replica ids,
//! views and signatures belong to one epoch: a message signed in one is
//! never valid in another.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// A replica's index in the replica set (0-based, stable for a configuration).
pub type ReplicaId = u32;

/// A view number: the primary of view `v` is replica `v mod n` (§4.1).
pub type View = u64;

/// A sequence number assigned by a primary.
pub type Seq = u64;

/// A configuration's number: 0 for the genesis replica set, one more at
/// each committed reconfiguration.
pub type Epoch = u64;

/// Why a replica set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Fewer than 4 keys (the number given): no fault could be tolerated.
    #[error("a pBFT replica set needs at least 4 replicas (n = 3f + 1 with f >= 1), not {0}")]
    TooFew(usize),
    /// The key at this index already appears at a lower index.
    #[error("replica {0} appears twice in the replica set")]
    DuplicateKey(ReplicaId),
    /// A key that is not a valid ed25519 public key.
    #[error("replica {id} has an invalid ed25519 public key")]
    BadKey {
        /// Index of the invalid key.
        id: ReplicaId,
    },
}

/// The replicas of one configuration (epoch), by index.
///
/// Serialized as its epoch, start and public keys; the decompressed keys
/// are kept beside them so verifying a signature does not decode the key
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSet", into = "RawSet")]
pub struct ReplicaSet {
    epoch: Epoch,
    /// The epoch orders the sequence numbers after this one: its first low
    /// watermark, a stable checkpoint of the epoch before (0 for genesis).
    start: Seq,
    /// Public keys, indexed by [`ReplicaId`].
    keys: Vec<[u8; 32]>,
    parsed: Vec<VerifyingKey>,
}

/// [`ReplicaSet`] as it is encoded.
#[derive(Serialize, Deserialize)]
struct RawSet {
    epoch: Epoch,
    start: Seq,
    keys: Vec<[u8; 32]>,
}

impl TryFrom<RawSet> for ReplicaSet {
    type Error = ConfigError;
    fn try_from(r: RawSet) -> Result<Self, ConfigError> {
        ReplicaSet::at(r.epoch, r.start, r.keys)
    }
}

impl From<ReplicaSet> for RawSet {
    fn from(s: ReplicaSet) -> Self {
        RawSet {
            epoch: s.epoch,
            start: s.start,
            keys: s.keys,
        }
    }
}

impl ReplicaSet {
    /// The genesis replica set of these public keys (replica `i` has
    /// `keys[i]`): epoch 0, starting from the empty state.
    pub fn new(keys: Vec<[u8; 32]>) -> Result<Self, ConfigError> {
        ReplicaSet::at(0, 0, keys)
    }

    /// The configuration that follows this one from `start` (a checkpoint
    /// of this epoch): the next epoch, with these keys.
    pub fn next(&self, start: Seq, keys: Vec<[u8; 32]>) -> Result<Self, ConfigError> {
        ReplicaSet::at(self.epoch + 1, start, keys)
    }

    /// Epoch `epoch` from `start` with these keys.
    pub fn at(epoch: Epoch, start: Seq, keys: Vec<[u8; 32]>) -> Result<Self, ConfigError> {
        if keys.len() < 4 {
            return Err(ConfigError::TooFew(keys.len()));
        }
        let mut parsed = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let Ok(key) = VerifyingKey::from_bytes(k) else {
                return Err(ConfigError::BadKey { id: i as ReplicaId });
            };
            if keys[..i].contains(k) {
                return Err(ConfigError::DuplicateKey(i as ReplicaId));
            }
            parsed.push(key);
        }
        Ok(ReplicaSet {
            epoch,
            start,
            keys,
            parsed,
        })
    }

    /// The configuration's number (0 for genesis).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The sequence number the epoch starts after.
    pub fn start(&self) -> Seq {
        self.start
    }

    /// The public keys, by replica id.
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys
    }

    /// The id of the replica with public key `key`, if it is a member.
    pub fn id_of(&self, key: &[u8; 32]) -> Option<ReplicaId> {
        self.keys
            .iter()
            .position(|k| k == key)
            .map(|i| i as ReplicaId)
    }

    /// n: how many replicas.
    pub fn n(&self) -> usize {
        self.keys.len()
    }

    /// f: the most Byzantine replicas tolerated, `floor((n - 1) / 3)`.
    pub fn f(&self) -> usize {
        (self.n() - 1) / 3
    }

    /// A quorum: any two intersect in at least one correct replica,
    /// `ceil((n + f + 1) / 2)`, which is 2f + 1 when n = 3f + 1 (§4.1).
    pub fn quorum(&self) -> usize {
        (self.n() + self.f() + 1).div_ceil(2)
    }

    /// f + 1: enough matching messages that one is from a correct replica
    /// (a client accepts a result with f + 1 matching replies, §4.1).
    pub fn weak(&self) -> usize {
        self.f() + 1
    }

    /// The primary of view `v` (§4.1: `p = v mod |R|`).
    pub fn primary(&self, v: View) -> ReplicaId {
        (v % self.n() as u64) as ReplicaId
    }

    /// Replica `id`'s key, if it is a member.
    pub fn key(&self, id: ReplicaId) -> Option<&VerifyingKey> {
        self.parsed.get(id as usize)
    }

    /// True if `id` is a replica of this set (below n).
    pub fn contains(&self, id: ReplicaId) -> bool {
        (id as usize) < self.n()
    }

    /// Every replica id, 0 to n - 1.
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        0..self.n() as ReplicaId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pbft::testing::keys;

    fn set(n: usize) -> Result<ReplicaSet, ConfigError> {
        ReplicaSet::new(
            keys(n)
                .iter()
                .map(|k| k.verifying_key().to_bytes())
                .collect(),
        )
    }

    /// TOCS 2002 §4.1: n = 3f + 1; quorums of 2f + 1; f + 1 matching replies.
    #[test]
    fn quorums_follow_n_and_f() {
        for (n, f, q) in [
            (4, 1, 3),
            (5, 1, 4),
            (6, 1, 4),
            (7, 2, 5),
            (10, 3, 7),
            (13, 4, 9),
        ] {
            let s = set(n).unwrap();
            assert_eq!((s.f(), s.quorum(), s.weak()), (f, q, f + 1), "n = {n}");
            // Two quorums share at least f + 1 replicas: one of them is correct.
            assert!(2 * s.quorum() - n > s.f(), "n = {n}");
        }
        assert_eq!(set(3), Err(ConfigError::TooFew(3)));
    }

    #[test]
    fn the_primary_rotates_with_the_view() {
        let s = set(4).unwrap();
        let primaries: Vec<ReplicaId> = (0..6).map(|v| s.primary(v)).collect();
        assert_eq!(primaries, vec![0, 1, 2, 3, 0, 1]);
        assert!(s.contains(3) && !s.contains(4));
        assert!(s.key(0).is_some() && s.key(4).is_none());
    }

    #[test]
    fn duplicate_and_invalid_keys_are_refused() {
        let mut k: Vec<[u8; 32]> = keys(4)
            .iter()
            .map(|k| k.verifying_key().to_bytes())
            .collect();
        k[3] = k[1];
        assert_eq!(
            ReplicaSet::new(k.clone()),
            Err(ConfigError::DuplicateKey(3))
        );
        // A 32-byte string that is not a point on the curve.
        let bad = (0u8..=255)
            .map(|b| [b; 32])
            .find(|c| VerifyingKey::from_bytes(c).is_err())
            .expect("some byte pattern is not a curve point");
        k[3] = bad;
        assert_eq!(ReplicaSet::new(k), Err(ConfigError::BadKey { id: 3 }));
    }
}
