//! pBFT: Byzantine-fault-tolerant ordering (Castro & Liskov, OSDI '99 and
//! ACM TOCS 2002), our own sans-IO core: no clock, socket or unseeded
//! randomness inside; the node runtime and the simulator feed it messages and
//! time and carry out what it returns.
//!
//! In progress (issue 7). So far:
//! - [`config`]: the replica set (ed25519 identities), f, quorum sizes, the
//!   primary of a view;
//! - [`message`]: the protocol's messages, signed over a domain-separated
//!   canonical encoding and verified against the replica set (once: a cache
//!   of verified messages); client requests signed by their client; batch
//!   digests; commit certificates;
//! - [`replica`]: the normal case (§4.2) with a bounded number of sequence
//!   numbers in flight (so load batches), checkpoints and garbage collection
//!   (§4.3), hooks for state transfer, retransmission while stuck, evidence,
//!   and the signing reservation that lets a replica restart without its
//!   memory and never sign twice for one slot;
//! - `catch_up`: a replica that missed committed batches takes them from
//!   commit certificates (2f + 1 commits prove them);
//! - `view_change`: view changes (§4.4) with request timers, timeout
//!   doubling, joining on f + 1, NEW-VIEW built and checked in full;
//! - [`validate`]: the certificate checks and the new-view computation;
//! - [`sim`]: the deterministic simulation with Byzantine replicas;
//! - [`engine`]: [`engine::PbftOrdering`], the [`crate::Ordering`] trait over
//!   the core for a node (`mesh up --consensus pbft`), with [`machine`] (the
//!   mesh's state machine under pBFT: requests of commands, exactly once per
//!   client timestamp, checkpoint digests) and [`net_tcp`] (frames between
//!   replicas).
//!
//! Not yet: durable log and state (a restarted replica fetches them from the
//! others; see `ALGORITHM.md`), read-only requests (§5.1.3), reconfiguration
//! of the replica set, evidence held against a replica's reputation (it is
//! in the engine's status and published on `mesh.pbft.evidence`).

#![forbid(unsafe_code)]

pub use catch_up::MAX_CERTS;

mod catch_up;
pub mod config;
pub mod durable;
pub mod engine;
pub mod machine;
pub mod message;
pub mod net_tcp;
pub mod read_only;
pub mod replica;
pub mod sim;
pub mod store;
pub mod validate;
mod view_change;

/// Deterministic keys and replica sets for the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use ed25519_dalek::SigningKey;

    use super::config::ReplicaSet;

    pub fn keys(n: usize) -> Vec<SigningKey> {
        (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect()
    }

    pub fn replica_set(k: &[SigningKey]) -> ReplicaSet {
        ReplicaSet::new(k.iter().map(|k| k.verifying_key().to_bytes()).collect())
            .expect("valid keys")
    }
}
