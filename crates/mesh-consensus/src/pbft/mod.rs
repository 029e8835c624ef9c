//! pBFT: Byzantine-fault-tolerant ordering (Castro & Liskov, OSDI '99 and
//! ACM TOCS 2002), our own sans-IO core: no clock, socket or unseeded
//! randomness inside; the node runtime and the simulator feed it messages and
//! time and carry out what it returns. With n = 3f + 1 replicas it orders the
//! mesh's state machine while up to f of them are Byzantine. `PBFT.md` (in
//! this crate) describes where it goes beyond the paper, and its known limits.
//!
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
//! - [`durable`]: what a replica stores to restart without losing what it
//!   executed or the certificates view changes rely on, and restoring it;
//!   [`store`] keeps it on disk for the engine;
//! - [`read_only`]: read-only requests (§5.1.3) as a read index from 2f + 1
//!   signed answers;
//! - [`validate`]: the certificate checks and the new-view computation;
//! - [`sim`]: the deterministic simulation with Byzantine replicas;
//! - [`engine`]: [`engine::PbftOrdering`], the [`crate::Ordering`] trait over
//!   the core for a node (`mesh up --consensus pbft`), with [`machine`] (the
//!   mesh's state machine under pBFT: requests of commands, exactly once per
//!   client timestamp, checkpoint digests) and [`net_tcp`] (frames between
//!   replicas);
//! - [`epoch`]: reconfiguration: the replica set changes by 2f + 1 committed
//!   votes, at a checkpoint a window above the decision, into a new epoch
//!   whose messages never count in another (the engine's side is
//!   `engine/epochs.rs`).
//!
//! It does not implement the primary-proposed clock of §5.4: the replicated
//! clock is the maximum of the clocks nodes stamp their requests with (see
//! `PBFT.md`).

#![forbid(unsafe_code)]

pub use catch_up::MAX_CERTS;

mod catch_up;
pub mod config;
pub mod durable;
pub mod engine;
pub mod epoch;
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

    use super::config::{ReplicaId, ReplicaSet};
    use super::replica::{Output, Replica, Settings};

    pub fn keys(n: usize) -> Vec<SigningKey> {
        (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect()
    }

    pub fn replica_set(k: &[SigningKey]) -> ReplicaSet {
        ReplicaSet::new(k.iter().map(|k| k.verifying_key().to_bytes()).collect())
            .expect("valid keys")
    }

    /// `n` replicas of one set with default settings.
    pub fn group(n: usize) -> Vec<Replica> {
        let k = keys(n);
        let set = replica_set(&k);
        k.iter()
            .enumerate()
            .map(|(i, k)| Replica::new(i as ReplicaId, set.clone(), k.clone(), Settings::default()))
            .collect()
    }

    /// Delivers broadcasts among replicas `0..among` (the others hear
    /// nothing) until none has output left; `seen` sees every output.
    pub fn settle(rs: &mut [Replica], among: usize, mut seen: impl FnMut(usize, &Output)) {
        loop {
            let mut moved = false;
            for i in 0..among {
                for o in rs[i].drain_outputs() {
                    moved = true;
                    if let Output::Broadcast(env) = &o {
                        for j in (0..among).filter(|&j| j != i) {
                            let _ = rs[j].handle(env.clone());
                        }
                    }
                    seen(i, &o);
                }
            }
            if !moved {
                return;
            }
        }
    }
}
