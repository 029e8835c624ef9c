//! Byzantine replicas of the pBFT simulation. A Byzantine replica runs a
//! correct [`Replica`](crate::pbft::replica::Replica) inside (so it knows
//! what a plausible message looks like) and lies about it on the way out:
//! it can sign anything with its own key, and nothing with anyone else's.
//! With `collude`, the Byzantine replicas act as one omniscient adversary:
//! a Byzantine primary splits the correct backups into two groups with
//! different batches, and every Byzantine replica votes, to each recipient,
//! for whatever that recipient was told (with f + 1 of them this breaks
//! safety, which is the point of that test).

use std::collections::HashMap;

use ed25519_dalek::SigningKey;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::pbft::config::{ReplicaId, Seq, View};
use crate::pbft::message::{Body, Envelope, Request, Signed, batch_digest};

/// How a Byzantine replica misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Behaviour {
    /// Sends nothing at all (a silent primary, when it is the primary).
    Silent,
    /// Sends everything late, just under the view-change timeout.
    Slow,
    /// As primary, sends different pre-prepares to different backups.
    Equivocate,
    /// Signs prepares and commits for other digests too, different ones to
    /// different replicas.
    ConflictingVotes,
    /// Sends messages with forged signatures, replays others' old
    /// messages, signs with a key outside the replica set, and asks for
    /// view changes nobody needs.
    Forger,
    /// Corrupts the bytes of what it sends.
    Malformed,
}

impl Behaviour {
    /// Every behaviour, for drawing one at random.
    pub const ALL: [Behaviour; 6] = [
        Behaviour::Silent,
        Behaviour::Slow,
        Behaviour::Equivocate,
        Behaviour::ConflictingVotes,
        Behaviour::Forger,
        Behaviour::Malformed,
    ];

    /// The behaviour named `s` in kebab case (`conflicting-votes`), as the
    /// command line spells it.
    pub fn parse(s: &str) -> Option<Behaviour> {
        Some(match s {
            "silent" => Behaviour::Silent,
            "slow" => Behaviour::Slow,
            "equivocate" => Behaviour::Equivocate,
            "conflicting-votes" => Behaviour::ConflictingVotes,
            "forger" => Behaviour::Forger,
            "malformed" => Behaviour::Malformed,
            _ => return None,
        })
    }
}

/// One protocol message as the adversary sends it: to whom, and how late.
pub(crate) struct Lie {
    pub to: usize,
    pub env: Envelope,
    pub extra_delay_us: u64,
}

/// The adversary: the Byzantine replicas' keys, what they told whom, and
/// messages they overheard (to replay).
pub(crate) struct Adversary {
    pub keys: HashMap<ReplicaId, SigningKey>,
    pub behaviour: HashMap<ReplicaId, Behaviour>,
    pub collude: bool,
    /// (view, seq, recipient) → the batch a colluding primary gave it.
    told: HashMap<(View, Seq, usize), Vec<Request>>,
    overheard: Vec<Envelope>,
    outsider: SigningKey,
    pub slow_us: u64,
    /// Each Byzantine replica's epoch (it signs its lies in it).
    pub epochs: HashMap<ReplicaId, u64>,
}

impl Adversary {
    pub fn new(
        keys: HashMap<ReplicaId, SigningKey>,
        behaviour: HashMap<ReplicaId, Behaviour>,
        collude: bool,
        slow_us: u64,
    ) -> Self {
        Adversary {
            keys,
            behaviour,
            collude,
            told: HashMap::new(),
            overheard: Vec::new(),
            outsider: SigningKey::from_bytes(&[0xEE; 32]),
            slow_us,
            epochs: HashMap::new(),
        }
    }

    pub fn is_byzantine(&self, id: ReplicaId) -> bool {
        self.behaviour.contains_key(&id)
    }

    /// Remembers a message a Byzantine replica received (for replays).
    pub fn overhear(&mut self, env: &Envelope) {
        if self.overheard.len() < 256 {
            self.overheard.push(env.clone());
        }
    }

    fn epoch(&self, of: ReplicaId) -> u64 {
        self.epochs.get(&of).copied().unwrap_or(0)
    }

    fn sign(&self, from: ReplicaId, body: Body) -> Signed {
        Signed::sign_in(self.epoch(from), from, body, &self.keys[&from])
    }

    /// Replica `id` left the replica set: it does nothing more.
    pub fn retire(&mut self, id: ReplicaId) {
        self.behaviour.remove(&id);
        self.keys.remove(&id);
    }

    /// What Byzantine replica `from` sends instead of broadcasting `env` to
    /// `recipients`.
    pub fn broadcast(
        &mut self,
        from: ReplicaId,
        env: &Envelope,
        recipients: &[usize],
        rng: &mut Xoshiro256PlusPlus,
    ) -> Vec<Lie> {
        let plain = |to: usize, env: Envelope| Lie {
            to,
            env,
            extra_delay_us: 0,
        };
        let behaviour = self.behaviour[&from];
        let mut out = Vec::new();
        match (&env.msg.body, behaviour) {
            (_, Behaviour::Silent) => {}
            (_, Behaviour::Slow) => {
                for &to in recipients {
                    out.push(Lie {
                        to,
                        env: env.clone(),
                        extra_delay_us: self.slow_us,
                    });
                }
            }
            (Body::PrePrepare { view, seq, .. }, b)
                if (b == Behaviour::Equivocate || self.collude) && env.batch.is_some() =>
            {
                let batch = env.batch.clone().expect("checked");
                let mut other = batch.clone();
                // A request of the adversary's own client (it cannot sign
                // in a correct client's name).
                other.push(Request::signed(
                    &self.outsider,
                    rng.random_range(1..u64::MAX),
                    b"forged".to_vec(),
                ));
                for (i, &to) in recipients.iter().enumerate() {
                    // Colluding: split by position, so both groups are
                    // non-empty; otherwise at random.
                    let lie = if self.collude {
                        i % 2 == 1
                    } else {
                        rng.random_bool(0.5)
                    };
                    let given = if lie { other.clone() } else { batch.clone() };
                    let pp = self.sign(
                        from,
                        Body::PrePrepare {
                            view: *view,
                            seq: *seq,
                            digest: batch_digest(&given),
                        },
                    );
                    self.told.insert((*view, *seq, to), given.clone());
                    out.push(plain(
                        to,
                        Envelope {
                            msg: pp,
                            batch: Some(given),
                        },
                    ));
                }
            }
            (Body::Prepare { view, seq, digest } | Body::Commit { view, seq, digest }, b)
                if b == Behaviour::ConflictingVotes || self.collude =>
            {
                let commit = matches!(env.msg.body, Body::Commit { .. });
                let vote = |d| {
                    let (view, seq, digest) = (*view, *seq, d);
                    if commit {
                        Body::Commit { view, seq, digest }
                    } else {
                        Body::Prepare { view, seq, digest }
                    }
                };
                for &to in recipients {
                    if self.collude {
                        let d = self
                            .told
                            .get(&(*view, *seq, to))
                            .map(|b| batch_digest(b))
                            .unwrap_or(*digest);
                        out.push(plain(
                            to,
                            Envelope {
                                msg: self.sign(from, vote(d)),
                                batch: None,
                            },
                        ));
                        continue;
                    }
                    let fake: [u8; 32] = rng.random();
                    match rng.random_range(0..3) {
                        0 => out.push(plain(to, env.clone())),
                        1 => out.push(plain(
                            to,
                            Envelope {
                                msg: self.sign(from, vote(fake)),
                                batch: None,
                            },
                        )),
                        _ => {
                            out.push(plain(to, env.clone()));
                            out.push(plain(
                                to,
                                Envelope {
                                    msg: self.sign(from, vote(fake)),
                                    batch: None,
                                },
                            ));
                        }
                    }
                }
            }
            _ => {
                for &to in recipients {
                    out.push(plain(to, env.clone()));
                }
            }
        }
        out
    }

    /// A Forger's unprompted mischief for this tick, if any.
    pub fn forge(
        &mut self,
        from: ReplicaId,
        n: usize,
        view: View,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Option<Envelope> {
        if self.behaviour.get(&from) != Some(&Behaviour::Forger) || !rng.random_bool(0.2) {
            return None;
        }
        let victim = loop {
            let v = rng.random_range(0..n as ReplicaId);
            if v != from {
                break v;
            }
        };
        let vote = Body::Prepare {
            view,
            seq: rng.random_range(1..64),
            digest: rng.random(),
        };
        Some(match rng.random_range(0..5) {
            // Claims to be another replica, signed with its own key.
            0 => Envelope {
                msg: Signed {
                    from: victim,
                    ..self.sign(from, vote)
                },
                batch: None,
            },
            // Replays something it heard.
            1 if !self.overheard.is_empty() => {
                self.overheard[rng.random_range(0..self.overheard.len())].clone()
            }
            // Signed by a key outside the replica set, as an outsider...
            2 => Envelope {
                msg: Signed::sign_in(self.epoch(from), n as ReplicaId + 3, vote, &self.outsider),
                batch: None,
            },
            // ...and as a member.
            3 => Envelope {
                msg: Signed::sign_in(self.epoch(from), victim, vote, &self.outsider),
                batch: None,
            },
            // A valid view change for a later view, alone.
            _ => Envelope {
                msg: self.sign(
                    from,
                    Body::ViewChange {
                        view: view + 1 + rng.random_range(0..4),
                        stable: 0,
                        checkpoint_proof: Vec::new(),
                        prepared: Vec::new(),
                    },
                ),
                batch: None,
            },
        })
    }

    /// Corrupts `bytes` (Malformed), half of the time.
    pub fn mangle(&self, from: ReplicaId, bytes: &mut Vec<u8>, rng: &mut Xoshiro256PlusPlus) {
        if self.behaviour.get(&from) != Some(&Behaviour::Malformed) || !rng.random_bool(0.5) {
            return;
        }
        match rng.random_range(0..3) {
            0 if !bytes.is_empty() => {
                for _ in 0..rng.random_range(1..5) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= rng.random_range(1..=255u8);
                }
            }
            1 => bytes.truncate(rng.random_range(0..=bytes.len())),
            _ => {
                let len = rng.random_range(0..200);
                *bytes = (0..len).map(|_| rng.random()).collect();
            }
        }
    }
}
