//! pBFT: Byzantine-fault-tolerant ordering (Castro & Liskov, OSDI '99 and
//! ACM TOCS 2002), our own sans-IO core: no clock, socket or unseeded
//! randomness inside; the node runtime and the simulator feed it messages and
//! time and carry out what it returns.
//!
//! In progress (issue 7). So far:
//! - [`config`]: the replica set (ed25519 identities), f, quorum sizes, the
//!   primary of a view;
//! - [`message`]: the protocol's messages, signed over a domain-separated
//!   canonical encoding and verified against the replica set; batch digests;
//! - [`replica`]: the normal case (pre-prepare with batching inside the
//!   watermarks, prepare, commit, execution in sequence order), evidence of
//!   an equivocating primary, checkpoints every K (stable with 2f + 1
//!   matching signed digests; older messages discarded, the window moves).
//!
//! Next: view changes, state transfer,
//! read-only requests, client replies; the simulator with Byzantine actors;
//! the engine behind `Ordering`.

#![forbid(unsafe_code)]

pub mod config;
pub mod message;
pub mod replica;
pub mod sim;
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
