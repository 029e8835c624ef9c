//! The engine's side of reconfiguration ([`super::super::epoch`]): the
//! configuration file a replica keeps, the switch to the next epoch, and
//! help for replicas still in an epoch that ended.
//!
//! - [`EPOCH_FILE`] (`epoch.json` beside the log) holds the epoch in force,
//!   its nodes' names and, from epoch 1 on, the epoch before and the 2f + 1
//!   checkpoint signatures of that epoch's last checkpoint. It is what a
//!   restarted replica starts from (it wins over the genesis file), and what
//!   an operator hands a new member (`mesh pbft config` prints it): the
//!   newcomer checks the proof against the previous set, which gives it the
//!   digest of the state to fetch (TOCS 2002 §4.5: a state is used only if
//!   2f + 1 replicas signed its digest).
//! - At the end of an epoch the driver writes, in this order and each
//!   durably, the checkpoint at the end (its state, the old set's proof),
//!   the new [`EPOCH_FILE`], and the new epoch's signing reservation; a
//!   crash between any two restarts in the old epoch with the end's state,
//!   which ends the epoch again. Only then does the next epoch's replica
//!   start (view 0, low watermark at the end), with the old one's waiting
//!   requests handed over. A node the new set leaves out stops ordering and
//!   says so in its status.
//! - A replica that gets a message of an epoch it has not reached says
//!   [`Wire::Behind`] to its epoch's peers; one who saw that epoch end
//!   answers [`Wire::EpochEnded`] with the proof, and the replica fetches
//!   the state at the end from whoever has it. One that gets a message of
//!   the epoch before its own answers the sender with the proof directly.
//!   Both at most once per retransmission period per peer.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Driver, Position, Wire, encode, keep_snapshot, write_position};
use crate::pbft::config::{Epoch, ReplicaSet, Seq};
use crate::pbft::message::{Digest, Envelope, SigCache, Signed};
use crate::pbft::replica::Replica;
use crate::pbft::store::write_checkpoint;
use crate::pbft::validate;

/// The replica's configuration file, beside its log.
pub const EPOCH_FILE: &str = "epoch.json";

/// One epoch's configuration: its replica set and its nodes' names, by
/// replica id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochConfig {
    /// The epoch's replica set (epoch number, start and keys).
    pub replicas: ReplicaSet,
    /// The node name of each replica, by replica id (one per replica).
    pub names: Vec<String>,
}

/// What a replica starts from (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochFile {
    /// The epoch in force.
    pub current: EpochConfig,
    /// The epoch before (none for the genesis epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<EpochConfig>,
    /// The previous epoch's last checkpoint, signed by 2f + 1 of its
    /// replicas (empty for the genesis epoch).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end_proof: Vec<Signed>,
}

impl EpochFile {
    /// The genesis epoch of `replicas`, named `names` (by id).
    pub fn genesis(replicas: ReplicaSet, names: Vec<String>) -> Self {
        EpochFile {
            current: EpochConfig { replicas, names },
            previous: None,
            end_proof: Vec::new(),
        }
    }

    /// The number of the epoch in force.
    pub fn epoch(&self) -> Epoch {
        self.current.replicas.epoch()
    }

    /// Checks it: one name per replica, and from epoch 1 on, the previous
    /// epoch directly before with a proof of its end at this one's start.
    /// Returns the digest of the state at the start (zeroes for genesis).
    pub fn check(&self) -> Result<Digest, String> {
        let c = &self.current;
        if c.names.len() != c.replicas.n() {
            return Err(format!(
                "{} names for {} replicas",
                c.names.len(),
                c.replicas.n()
            ));
        }
        if self.epoch() == 0 {
            return Ok([0; 32]);
        }
        let Some(prev) = &self.previous else {
            return Err(format!(
                "epoch {} needs the epoch before it and the proof of its end",
                self.epoch()
            ));
        };
        if prev.replicas.epoch() + 1 != self.epoch() {
            return Err(format!(
                "the previous configuration is epoch {}, not {}",
                prev.replicas.epoch(),
                self.epoch() - 1
            ));
        }
        validate::checkpoint_proof(
            &prev.replicas,
            c.replicas.start(),
            &self.end_proof,
            &mut SigCache::default(),
        )
        .map_err(|e| {
            format!(
                "the proof that epoch {} ended at {} does not check out: {e}",
                prev.replicas.epoch(),
                c.replicas.start()
            )
        })
    }

    /// Reads the file in `dir` (None if there is none).
    pub fn read(dir: &Path) -> Result<Option<Self>, String> {
        super::read_json(&dir.join(EPOCH_FILE))
    }

    /// Writes it to `dir` durably (temporary file, synced, renamed, the
    /// directory synced).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("epoch.json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(EPOCH_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

impl Driver {
    /// After the state moved (executed or installed): a decided change
    /// tells the replica where its epoch ends.
    pub(super) fn after_state(&mut self) {
        let epoch = self.replica.replicas().epoch();
        if let Some((end, _)) = self.app.reconfig.after(epoch) {
            self.replica.end_epoch(end);
        }
    }

    /// The epoch ended at `seq`, proven by `proof`: store the switch, then
    /// go on as the next epoch's replica (or stop, if left out).
    pub(super) fn switch(&mut self, seq: Seq, proof: Vec<Signed>) {
        let next = EpochConfig {
            replicas: self.app.reconfig.config.clone(),
            names: self.app.reconfig.names.clone(),
        };
        let old = self.config.current.clone();
        if next.replicas.epoch() != old.replicas.epoch() + 1 || next.replicas.start() != seq {
            self.fatal = Some(format!(
                "epoch {} ended at {seq} but the state there holds no configuration for epoch {} from it",
                old.replicas.epoch(),
                old.replicas.epoch() + 1
            ));
            return;
        }
        let file = EpochFile {
            current: next.clone(),
            previous: Some(old.clone()),
            end_proof: proof.clone(),
        };
        if let Err(e) = file.check() {
            self.fatal = Some(format!("cannot switch epochs: {e}"));
            return;
        }
        let snapshot = match self.snapshots.get(&seq) {
            Some(s) => s.clone(),
            None => {
                // Nothing executes past the end in this epoch: the state
                // now is the state there.
                let sm = self.state.read().unwrap_or_else(|e| e.into_inner());
                let s = Arc::new(self.app.snapshot(&sm));
                drop(sm);
                keep_snapshot(&mut self.snapshots, seq, s.clone());
                s
            }
        };
        if let Some(dir) = self.dir.clone() {
            let me = self.client_id;
            let stored = write_checkpoint(&dir, seq, &proof, &snapshot)
                .and_then(|()| match &mut self.store {
                    Some(store) => store.checkpoint_stored(seq),
                    None => Ok(()),
                })
                .and_then(|()| file.write(&dir))
                .and_then(|()| match next.replicas.id_of(&me) {
                    Some(_) => write_position(
                        &dir,
                        Position {
                            epoch: next.replicas.epoch(),
                            view: 0,
                            seq,
                        },
                    ),
                    None => Ok(()),
                });
            if let Err(e) = stored {
                self.fatal = Some(format!(
                    "cannot store the switch to epoch {} in {}: {e}",
                    next.replicas.epoch(),
                    dir.display()
                ));
                return;
            }
            self.stats.stored_checkpoint = Some(seq);
        }
        tracing::info!(
            epoch = next.replicas.epoch(),
            start = seq,
            replicas = ?next.names,
            "pBFT configuration changed"
        );
        self.set_config(file);
        match next.replicas.id_of(&self.client_id) {
            Some(id) => {
                let mut replica = Replica::new(
                    id,
                    next.replicas.clone(),
                    self.client_key.clone(),
                    self.settings.clone(),
                );
                replica.restore(Some((seq, proof)), self.app.executed_clients(), Vec::new());
                for r in self.replica.waiting_requests() {
                    replica.forwarded(r);
                }
                let old = std::mem::replace(&mut self.replica, replica).counters();
                self.retired_counters.signed += old.signed;
                self.retired_counters.verified += old.verified;
                self.after_state();
            }
            None => {
                let why = format!(
                    "this node is not a replica of epoch {} (its replicas: {}); it orders nothing more",
                    next.replicas.epoch(),
                    next.names.join(", ")
                );
                // Both in the same status update (a watcher sees them together).
                self.stats.retired = Some(next.replicas.epoch());
                self.stats.fatal = Some(why.clone());
                self.fatal = Some(why);
            }
        }
    }

    /// Takes `file` as the configuration in force: names, node ids.
    pub(super) fn set_config(&mut self, file: EpochFile) {
        self.node_ids = file
            .current
            .names
            .iter()
            .map(|n| super::node_id_of(n))
            .collect();
        *self
            .shared_config
            .write()
            .unwrap_or_else(|e| e.into_inner()) = file.clone();
        self.stats.epoch = file.epoch();
        self.config = file;
    }

    /// A protocol message of another epoch than this replica's.
    pub(super) fn other_epoch(&mut self, env: &Envelope) {
        let mine = self.replica.replicas().epoch();
        if env.msg.epoch < mine {
            // The sender is still in the epoch before: the proof of its end.
            let Some(prev) = &self.config.previous else {
                return;
            };
            if prev.replicas.epoch() != env.msg.epoch {
                return;
            }
            if let Some(name) = prev.names.get(env.msg.from as usize).cloned() {
                self.send_end_proof(name);
            }
        } else {
            // This replica is behind: it says so to its epoch's peers.
            let now = self.now();
            if super::super::replica::due(
                &mut self.helped,
                String::new(),
                now,
                self.settings.retransmit_ms,
            ) {
                let frame = Arc::new(encode(&Wire::Behind {
                    from: self.my_name.clone(),
                    epoch: mine,
                }));
                self.broadcast(frame);
            }
        }
    }

    /// `from` says it is still in `epoch`: if that is the epoch before this
    /// one and `from` was in it, it gets the proof of the end.
    pub(super) fn behind(&mut self, from: String, epoch: Epoch) {
        let Some(prev) = &self.config.previous else {
            return;
        };
        if prev.replicas.epoch() == epoch && prev.names.contains(&from) {
            self.send_end_proof(from);
        }
    }

    fn send_end_proof(&mut self, to: String) {
        let now = self.now();
        if !super::super::replica::due(
            &mut self.helped,
            to.clone(),
            now,
            self.settings.retransmit_ms,
        ) {
            return;
        }
        let frame = Arc::new(encode(&Wire::EpochEnded(self.config.end_proof.clone())));
        self.send_name(&to, frame);
    }

    /// The proof that this replica's epoch ended: its checkpoint messages
    /// count like any (the replica then fetches the state at the end).
    pub(super) fn epoch_ended(&mut self, proof: Vec<Signed>) {
        for msg in proof {
            if msg.epoch != self.replica.replicas().epoch() {
                continue;
            }
            if let Err(e) = self.replica.handle(Envelope { msg, batch: None }) {
                self.stats.refused += 1;
                tracing::debug!(error = %e, "pBFT proof of an epoch's end refused");
            }
        }
    }

    /// Whether `name` is a replica of this epoch or the one before (only
    /// those are sent states and certificates).
    pub(super) fn known_peer(&self, name: &str) -> bool {
        self.config.current.names.iter().any(|n| n == name)
            || self
                .config
                .previous
                .as_ref()
                .is_some_and(|p| p.names.iter().any(|n| n == name))
    }
}
