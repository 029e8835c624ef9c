//! Custom gossip piggybacked on SWIM packets: soft state and detection reports.
//!
//! foca carries opaque "custom broadcasts" next to its own membership updates and
//! asks a [`foca::BroadcastHandler`] whether each received item is new. An item
//! that is new is applied here and re-broadcast by foca a bounded number of times
//! (epidemic dissemination); one that is stale stops spreading.
//!
//! Two kinds of rumour travel this way:
//! - **soft state** of a node (`Rumor::Soft`): newer `(generation, version)` wins;
//! - **detection reports** (`Rumor::Detection`): "X suspected S", "X confirmed S
//!   dead", "S left". They let every node record who suspected and who confirmed a
//!   failure, which SWIM's own updates don't say, and tell a graceful leave from a
//!   crash.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::identity::MeshIdentity;
use mesh_proto::SoftState;

/// What a detection report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DetectionKind {
    /// `by` failed to reach `subject` directly and through k peers.
    Suspected,
    /// `by`'s suspicion ran out without a refutation: `subject` is dead.
    Confirmed,
    /// `subject` announced it is leaving (graceful shutdown).
    Left,
}

/// A custom broadcast item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Rumor<I> {
    Soft {
        origin: I,
        state: SoftState,
    },
    Detection {
        subject: I,
        incarnation: u16,
        kind: DetectionKind,
        by: I,
    },
}

/// Identifies a rumour so a newer one replaces an older one in foca's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RumorKey<K> {
    Soft {
        origin: K,
        generation: u64,
        version: u64,
    },
    Detection {
        subject: K,
        generation: u64,
        incarnation: u16,
        kind: DetectionKind,
        by: K,
    },
}

impl<K: PartialEq> foca::Invalidates for RumorKey<K> {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                RumorKey::Soft {
                    origin,
                    generation,
                    version,
                },
                RumorKey::Soft {
                    origin: o2,
                    generation: g2,
                    version: v2,
                },
            ) => origin == o2 && (generation, version) >= (g2, v2),
            (a @ RumorKey::Detection { .. }, b @ RumorKey::Detection { .. }) => a == b,
            _ => false,
        }
    }
}

/// A soft-state entry as this node knows it.
#[derive(Debug, Clone)]
pub struct KnownSoft<I> {
    /// Whose state it is, at the generation that wrote it.
    pub identity: I,
    /// What that node says about itself (zone, capabilities, load, ...).
    pub state: SoftState,
    /// Local time it arrived.
    pub received_at_ms: u64,
}

/// What we know about one failure or leave of one identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct DetectionRecord<K> {
    pub subject: K,
    pub generation: u64,
    pub incarnation: u16,
    /// Who suspected, with the local time we learned it.
    pub suspected_by: Vec<(K, u64)>,
    /// Who confirmed, with the local time we learned it.
    pub confirmed_by: Vec<(K, u64)>,
    /// The subject said it was leaving.
    pub left: bool,
}

/// Something the handler learned, for the core to turn into events.
#[derive(Debug, Clone)]
pub(crate) enum Learned<K> {
    Soft {
        origin: K,
        version: u64,
    },
    Detection {
        subject: K,
        generation: u64,
        kind: DetectionKind,
        by: K,
    },
}

/// Most detection records kept (oldest dropped first).
pub const MAX_DETECTION_RECORDS: usize = 512;

/// The handler foca calls for each custom broadcast item.
pub(crate) struct RumorHandler<I: MeshIdentity> {
    pub(crate) own_key: I::Addr,
    pub(crate) now_ms: u64,
    pub(crate) soft: BTreeMap<I::Addr, KnownSoft<I>>,
    pub(crate) detections: VecDeque<DetectionRecord<I::Addr>>,
    pub(crate) learned: Vec<Learned<I::Addr>>,
}

/// A rumour that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable rumour: {0}")]
pub(crate) struct RumorError(String);

impl<I: MeshIdentity> RumorHandler<I> {
    pub(crate) fn new(own_key: I::Addr) -> Self {
        Self {
            own_key,
            now_ms: 0,
            soft: BTreeMap::new(),
            detections: VecDeque::new(),
            learned: Vec::new(),
        }
    }

    /// Applies a soft-state entry if it is newer than what we hold. Returns true if it was.
    pub(crate) fn apply_soft(&mut self, identity: &I, state: &SoftState) -> bool {
        let key = identity.key();
        let newer = match self.soft.get(&key) {
            Some(known) => {
                (identity.generation(), state.version)
                    > (known.identity.generation(), known.state.version)
            }
            None => true,
        };
        if newer {
            self.soft.insert(
                key.clone(),
                KnownSoft {
                    identity: identity.clone(),
                    state: state.clone(),
                    received_at_ms: self.now_ms,
                },
            );
            self.learned.push(Learned::Soft {
                origin: key,
                version: state.version,
            });
        }
        newer
    }

    /// Records a detection report. Returns true if it was news.
    pub(crate) fn apply_detection(
        &mut self,
        subject: &I,
        incarnation: u16,
        kind: DetectionKind,
        by: &I,
    ) -> bool {
        let key = subject.key();
        let generation = subject.generation();
        let by_key = by.key();
        let now = self.now_ms;
        let pos = self.detections.iter().position(|r| {
            r.subject == key && r.generation == generation && r.incarnation == incarnation
        });
        let record = match pos {
            Some(p) => &mut self.detections[p],
            None => {
                if self.detections.len() >= MAX_DETECTION_RECORDS {
                    self.detections.pop_front();
                }
                self.detections.push_back(DetectionRecord {
                    subject: key.clone(),
                    generation,
                    incarnation,
                    suspected_by: Vec::new(),
                    confirmed_by: Vec::new(),
                    left: false,
                });
                self.detections.back_mut().expect("just pushed")
            }
        };
        let news = match kind {
            DetectionKind::Suspected => push_unique(&mut record.suspected_by, by_key.clone(), now),
            DetectionKind::Confirmed => push_unique(&mut record.confirmed_by, by_key.clone(), now),
            DetectionKind::Left => !std::mem::replace(&mut record.left, true),
        };
        if news {
            self.learned.push(Learned::Detection {
                subject: key,
                generation,
                kind,
                by: by_key,
            });
        }
        news
    }

    /// The newest record about `key` at `generation`, if any.
    pub fn detection(&self, key: &I::Addr, generation: u64) -> Option<&DetectionRecord<I::Addr>> {
        self.detections
            .iter()
            .rev()
            .find(|r| &r.subject == key && r.generation == generation)
    }

    /// True if `key` at `generation` announced a graceful leave.
    pub fn has_left(&self, key: &I::Addr, generation: u64) -> bool {
        self.detections
            .iter()
            .any(|r| &r.subject == key && r.generation == generation && r.left)
    }
}

fn push_unique<K: PartialEq>(list: &mut Vec<(K, u64)>, who: K, at: u64) -> bool {
    if list.iter().any(|(k, _)| *k == who) {
        false
    } else {
        list.push((who, at));
        true
    }
}

impl<I: MeshIdentity> foca::BroadcastHandler<I> for RumorHandler<I> {
    type Key = RumorKey<I::Addr>;
    type Error = RumorError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&I>,
    ) -> Result<Option<Self::Key>, Self::Error> {
        let rumor: Rumor<I> = postcard::from_bytes(data).map_err(|e| RumorError(e.to_string()))?;
        // `sender == None` means we are adding our own rumour: always spread it.
        let local = sender.is_none();
        match rumor {
            Rumor::Soft { origin, state } => {
                if origin.key() == self.own_key && !local {
                    // Our own state echoed back (or an older generation of us): ours is the truth.
                    return Ok(None);
                }
                let news = if local {
                    true
                } else {
                    self.apply_soft(&origin, &state)
                };
                Ok(news.then(|| RumorKey::Soft {
                    origin: origin.key(),
                    generation: origin.generation(),
                    version: state.version,
                }))
            }
            Rumor::Detection {
                subject,
                incarnation,
                kind,
                by,
            } => {
                let news = self.apply_detection(&subject, incarnation, kind, &by) || local;
                Ok(news.then(|| RumorKey::Detection {
                    subject: subject.key(),
                    generation: subject.generation(),
                    incarnation,
                    kind,
                    by: by.key(),
                }))
            }
        }
    }
}
