//! [`PbftOrdering`]: the [`Ordering`] trait over the pBFT core, for a node.
//!
//! One task owns the [`Replica`] and the application: it takes frames from
//! the other replicas, this node's proposals and a 5 ms clock, and carries
//! out what the core returns (send, execute, checkpoint, fetch state).
//!
//! The node is also a pBFT client, with its replica key as client key (the
//! two signatures are domain-separated). It keeps one request in flight
//! (§4.1: a client's timestamps order its requests, and a later timestamp
//! executed first would make an earlier one stale); commands proposed while
//! one is in flight go together into the next request, so load batches
//! itself. A request is acknowledged once this node's own replica executed
//! it: the node trusts itself, and execution means 2f + 1 replicas committed
//! it (§4.2), so it survives any f faulty replicas. Clients of other nodes
//! would need f + 1 matching replies; nodes do not.
//!
//! A read barrier asks every replica for its read index (§5.1.3, see
//! [`super::read_only`]): with 2f + 1 signed answers, the read waits until
//! this replica executed the highest of them, then reads its state. One
//! round serves every read that arrived before it began. If the round or
//! the wait takes longer than [`READ_FALLBACK_MS`] (replicas unreachable,
//! or one naming a number far ahead), the read takes the ordered path: a
//! request without commands, after which everything ordered before it is
//! in this replica's state.
//!
//! Reconfiguration ([`super::epoch`]): [`PbftOrdering::reconfigure`] sends
//! this node's vote for a new replica set, as a request of its replica key.
//! When the epoch ends ([`Output::EpochEnd`]) the driver stores the state at
//! the end with the old set's proof and the new configuration
//! ([`EPOCH_FILE`]), starts the replica of the next epoch, and helps
//! replicas still in the old one (see [`epochs`]). Peers are addressed by
//! node name, which stays the same across epochs while replica ids do not.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use mesh_state::{Command, Event, Reply, RequestId, StateMachine};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::config::{Epoch, ReplicaId, Seq, View};
use super::epoch::{VoteError, VoteOutcome};
use super::machine::{ClientOp, PbftApp, Proposal, snapshot_digest};
use super::message::{
    ClientId, CommitCert, Digest, Envelope, Request, SigCache, Signed, VerifyError,
};
use super::read_only::ReadRound;
use super::replica::{Evidence, Output, Refused, Replica, Settings};
use super::store::{Store, write_checkpoint};
use crate::ordering::{Applied, OrderError, OrderStatus, Ordering, SharedState};
use crate::raft::node_id_of;

mod epochs;
mod evidence_file;
pub use epochs::{EPOCH_FILE, EpochConfig, EpochFile};

/// First byte of a pBFT frame's payload (after the length).
pub const MAGIC: u8 = b'P';
const VERSION: u8 = 3;
/// Largest pBFT frame: a state snapshot.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
/// Most commands in one request of this node.
const MAX_COMMANDS_PER_REQUEST: usize = 1024;
/// A request not executed after this long goes to every replica again.
const RESEND_AFTER_MS: u64 = 1_000;
/// How often a state being fetched is asked for again.
const FETCH_AGAIN_MS: u64 = 500;
/// Checkpoint snapshots kept to answer state requests.
const SNAPSHOTS_KEPT: usize = 3;

/// Keeps the state at checkpoint `seq` to answer state requests, and only
/// the latest [`SNAPSHOTS_KEPT`].
fn keep_snapshot(
    snapshots: &mut BTreeMap<Seq, Arc<Vec<u8>>>,
    seq: Seq,
    snapshot: impl Into<Arc<Vec<u8>>>,
) {
    snapshots.insert(seq, snapshot.into());
    while snapshots.len() > SNAPSHOTS_KEPT {
        snapshots.pop_first();
    }
}
/// Commit certificates go to one replica at most this often.
const SERVE_EVERY_MS: u64 = 50;
/// Evidence records kept for status.
const EVIDENCE_KEPT: usize = 32;
/// At most one bad-signature event per claimed sender this often (ms).
const BAD_SIGNATURE_EVENT_MS: u64 = 10_000;
/// A read whose read index is not in hand and executed by then takes the
/// ordered path.
pub const READ_FALLBACK_MS: u64 = 500;

/// What travels between replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Wire {
    /// A signed protocol message (with its batch, for a pre-prepare).
    Protocol(Envelope),
    /// A client request forwarded to every replica (§4.4: so every backup's
    /// timer watches the primary).
    Request(Request),
    /// Node `from` asks for the checkpoint state at `seq`.
    StateRequest {
        /// The asking node's name (where to send the state).
        from: String,
        /// The checkpoint whose state is wanted.
        seq: Seq,
    },
    /// The checkpoint state at `seq` ([`PbftApp::snapshot`]); checked against
    /// the digest 2f + 1 replicas signed before it is used (§4.5).
    State {
        /// The checkpoint's sequence number.
        seq: Seq,
        /// The encoded state at it.
        snapshot: Vec<u8>,
    },
    /// Node `from`, in `view`, asks for commit certificates above `after`
    /// (and for the NEW-VIEW of a later view, if there is one).
    FetchEntries {
        /// The asking node's name (where to send the answer).
        from: String,
        /// The asker's last executed sequence number.
        after: Seq,
        /// The asker's current view.
        view: View,
    },
    /// Commit certificates, each checked before it counts.
    Entries(Vec<CommitCert>),
    /// Replica `from`, as a client, asks for read indexes (§5.1.3).
    ReadIndex {
        /// The asking replica's id (its node is the reading client).
        from: ReplicaId,
        /// The round's nonce, echoed in each signed answer.
        nonce: u64,
    },
    /// A signed answer ([`super::message::Body::ReadIndex`]).
    ReadIndexAnswer(super::message::Signed),
    /// Node `from` is still in `epoch` and got a message of a later one:
    /// whoever saw that epoch end answers with [`Wire::EpochEnded`].
    Behind {
        /// The lagging node's name (where to send the proof).
        from: String,
        /// The epoch it is still in.
        epoch: Epoch,
    },
    /// The proof that an epoch ended (its last checkpoint's 2f + 1
    /// signatures, checked like any): the replica fetches the state there.
    EpochEnded(Vec<Signed>),
}

impl Wire {
    /// A one-line summary for debug logs (`MESH_LOG=mesh_consensus=debug`).
    pub fn describe(&self) -> String {
        use super::message::Body as B;
        let signed = |m: &super::message::Signed| {
            let what = match &m.body {
                B::PrePrepare { view, seq, .. } => format!("pre-prepare v{view} s{seq}"),
                B::Prepare { view, seq, .. } => format!("prepare v{view} s{seq}"),
                B::Commit { view, seq, .. } => format!("commit v{view} s{seq}"),
                B::Checkpoint { seq, .. } => format!("checkpoint s{seq}"),
                B::ViewChange { view, stable, .. } => {
                    format!("view-change v{view} stable {stable}")
                }
                B::NewView { view, .. } => format!("new-view v{view}"),
                B::Reply {
                    view, timestamp, ..
                } => format!("reply v{view} t{timestamp}"),
                B::ReadIndex { nonce, seq, .. } => format!("read-index n{nonce} s{seq}"),
            };
            format!("{what} from {} (epoch {})", m.from, m.epoch)
        };
        match self {
            Wire::Protocol(env) => signed(&env.msg),
            Wire::Request(r) => format!(
                "request t{} from {:02x}{:02x}",
                r.timestamp, r.client[0], r.client[1]
            ),
            Wire::StateRequest { from, seq } => format!("state request s{seq} from {from}"),
            Wire::State { seq, snapshot } => format!("state s{seq} ({} bytes)", snapshot.len()),
            Wire::FetchEntries { from, after, view } => {
                format!("fetch entries after {after} in view {view} from {from}")
            }
            Wire::Entries(certs) => format!("{} commit certificates", certs.len()),
            Wire::ReadIndex { from, nonce } => format!("read index n{nonce} from {from}"),
            Wire::ReadIndexAnswer(m) => signed(m),
            Wire::Behind { from, epoch } => format!("behind in epoch {epoch}: {from}"),
            Wire::EpochEnded(proof) => format!("epoch ended ({} signatures)", proof.len()),
        }
    }
}

/// Encodes `wire` as a length-prefixed frame.
pub fn encode(wire: &Wire) -> Vec<u8> {
    let body = postcard::to_allocvec(wire).expect("encoding to a Vec cannot fail");
    let mut out = Vec::with_capacity(6 + body.len());
    out.extend_from_slice(&((body.len() + 2) as u32).to_be_bytes());
    out.extend_from_slice(&[MAGIC, VERSION]);
    out.extend_from_slice(&body);
    out
}

/// Decodes a frame's payload (without its length).
pub fn decode(payload: &[u8]) -> Option<Wire> {
    match payload {
        [MAGIC, VERSION, body @ ..] => postcard::from_bytes(body).ok(),
        _ => None,
    }
}

/// Carries frames to other replicas, by node name (replica ids change from
/// one epoch to the next; names do not). Best effort: the protocol
/// retransmits what matters.
pub trait Transport: Send + Sync + 'static {
    /// Queues an encoded frame for the node named `to`; never blocks.
    fn send(&self, to: &str, frame: Arc<Vec<u8>>);
    /// Frames dropped so far because a peer could not take them.
    fn dropped(&self) -> u64 {
        0
    }
}

/// Who this replica is, among whom.
pub struct PbftSetup {
    /// This node's replica key: it signs protocol messages and, as client,
    /// this node's requests.
    pub key: SigningKey,
    /// The configuration to start in: the genesis one, or for a node joining
    /// a later epoch, that epoch's with the proof of the previous one's end
    /// ([`EpochFile`]). The one stored in `dir` wins if it is later.
    pub config: EpochFile,
    /// The replica's protocol settings (window, batch size, timeouts).
    pub settings: Settings,
    /// Where the replica keeps its signing reservation (see [`POSITION_FILE`]),
    /// its log and its last stable checkpoint (see [`super::store`]); `None`
    /// keeps nothing (tests in one process).
    pub dir: Option<std::path::PathBuf>,
}

/// The replica's durable signing reservation, `{"view": V, "seq": S}`: it
/// may have signed pre-prepares, prepares and commits up to view V and
/// sequence number S, and after a restart signs none there again.
pub const POSITION_FILE: &str = "position.json";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Position {
    /// The epoch it is for (a reservation of an earlier one binds nothing:
    /// signatures name their epoch).
    #[serde(default)]
    epoch: Epoch,
    view: View,
    seq: Seq,
}

fn read_position(dir: &std::path::Path) -> Result<Option<Position>, String> {
    read_json(&dir.join(POSITION_FILE))
}

/// A JSON file the replica wrote (None if there is none).
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Option<T>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the reservation durably: a temporary file, synced, renamed over
/// the old one, and the directory synced.
fn write_position(dir: &std::path::Path, p: Position) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("position.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&p).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(POSITION_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// What [`restore`] rebuilt from the replica's files.
struct Restored {
    store: Store,
    sm: StateMachine,
    app: PbftApp,
    snapshots: BTreeMap<Seq, Arc<Vec<u8>>>,
}

/// Opens the replica's files in `dir` and rebuilds from them: the stored
/// checkpoint (its proof and digest checked, as for a state transfer), the
/// batches executed after it, the replica's certificates.
fn restore(
    dir: &std::path::Path,
    config: &EpochFile,
    start_digest: Digest,
    replica: &mut Replica,
    stats: &mut PbftStatus,
) -> Result<Restored, String> {
    let replicas = &config.current.replicas;
    let (store, loaded) = Store::open(dir)
        .map_err(|e| format!("cannot open the pBFT log in {}: {e}", dir.display()))?;
    if loaded.torn_bytes > 0 {
        tracing::warn!(
            bytes = loaded.torn_bytes,
            "pBFT log: a record torn by a crash was cut off (it was never synced, so nothing depended on it)"
        );
    }
    let mut sm = StateMachine::new();
    let mut app = PbftApp::genesis(replicas.clone(), config.current.names.clone());
    let mut snapshots = BTreeMap::new();
    let mut stable = None;
    // A checkpoint of an earlier epoch (the switch stopped before the
    // state at the start was stored) is of no use: that state is fetched.
    let checkpoint = loaded
        .checkpoint
        .filter(|cp| config.epoch() == 0 || cp.seq >= replicas.start());
    if let Some(cp) = checkpoint {
        let bad = |what: String| {
            format!(
                "{}: {what}",
                dir.join(super::store::CHECKPOINT_FILE).display()
            )
        };
        // The state an epoch starts from is proven by the epoch before.
        let digest = if config.epoch() > 0 && cp.seq == replicas.start() {
            start_digest
        } else {
            super::validate::checkpoint_proof(replicas, cp.seq, &cp.proof, &mut SigCache::default())
                .map_err(|e| bad(format!("its proof does not check out: {e}")))?
        };
        if snapshot_digest(&cp.snapshot) != digest {
            return Err(bad(
                "its state does not match the digest its proof signs".into()
            ));
        }
        (sm, app) = PbftApp::restore(&cp.snapshot).map_err(|e| bad(e.to_string()))?;
        stats.stored_checkpoint = Some(cp.seq);
        keep_snapshot(&mut snapshots, cp.seq, cp.snapshot);
        stable = Some((cp.seq, cp.proof));
    }
    let replay = replica.restore(stable, app.executed_clients(), loaded.records);
    for (seq, batch) in &replay {
        app.execute(&mut sm, *seq, batch, &mut Vec::new(), &replica.settings);
        // The state at a checkpoint passed again is kept to serve: the
        // others may need it from this replica (after a power cut, this may
        // be the only replica that stored the batches up to it).
        if seq.is_multiple_of(replica.settings.checkpoint_interval) {
            let snapshot = app.snapshot(&sm);
            // Signed again: the checkpoint may still need this replica's
            // signature to become stable.
            replica.state_digest(*seq, snapshot_digest(&snapshot));
            keep_snapshot(&mut snapshots, *seq, snapshot);
        }
    }
    stats.replayed = replay.len() as u64;
    if stats.stored_checkpoint.is_some() || !replay.is_empty() {
        tracing::info!(
            checkpoint = stats.stored_checkpoint,
            replayed = replay.len(),
            last_executed = replica.last_executed(),
            "pBFT state restored from this replica's log"
        );
    }
    Ok(Restored {
        store,
        sm,
        app,
        snapshots,
    })
}

/// Evidence of a replica's misbehaviour, as status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceRecord {
    /// The accused replica's id in the epoch in force.
    pub culprit: ReplicaId,
    /// The accused replica's node id, if its name is known.
    pub culprit_node: Option<u64>,
    /// `equivocation` (two pre-prepares for one view and sequence number),
    /// `conflicting_votes` (two prepares or commits for one slot), or
    /// `bad_signature` (a message naming the culprit as its sender whose
    /// signature does not verify).
    pub kind: &'static str,
    /// The view of the conflicting messages (none for a bad signature).
    pub view: Option<View>,
    /// When this node found it (Unix milliseconds).
    pub unix_ms: u64,
    /// Whether the record proves the culprit misbehaved (signed by it) and
    /// counts against its reputation. A bad signature does not: anyone who
    /// can reach this node can send one under any replica's name.
    pub provable: bool,
}

/// What the engine reports beyond [`OrderStatus`]. Every figure is counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PbftStatus {
    /// The configuration in force (0: genesis).
    pub epoch: Epoch,
    /// This replica's id in it.
    pub replica: ReplicaId,
    /// n: how many replicas it has.
    pub replicas: usize,
    /// f: how many of them may be Byzantine.
    pub f: usize,
    /// This replica's current view.
    pub view: View,
    /// The replica id of that view's primary.
    pub primary: ReplicaId,
    /// In normal operation (false during a view change).
    pub active: bool,
    /// The highest sequence number executed here.
    pub last_executed: Seq,
    /// The last stable checkpoint.
    pub low_watermark: Seq,
    /// Messages this node's replicas signed, over every epoch.
    pub signatures_made: u64,
    /// Signatures this node's replicas verified, over every epoch.
    pub signatures_verified: u64,
    /// Bytes of frames handed to the transport.
    pub bytes_sent: u64,
    /// Frames handed to the transport.
    pub frames_sent: u64,
    /// Frames the transport dropped (a peer's queue full or unreachable).
    pub frames_dropped: u64,
    /// Messages refused (bad signature, wrong view, outside the window, ...).
    pub refused: u64,
    /// Frames received that did not decode.
    pub undecodable: u64,
    /// Views this replica entered.
    pub view_changes: u64,
    /// Checkpoint states fetched from other replicas and installed.
    pub state_transfers: u64,
    /// Records stored in the replica's log since start.
    pub log_records: u64,
    /// Syncs of the replica's log since start.
    pub log_syncs: u64,
    /// Bytes written to the replica's log since start.
    pub log_bytes: u64,
    /// The stable checkpoint whose state is stored (null without files).
    pub stored_checkpoint: Option<Seq>,
    /// Batches executed again from the log at start.
    pub replayed: u64,
    /// Reads served by a read index (§5.1.3).
    pub reads_fast: u64,
    /// Reads that fell back to the ordered path.
    pub reads_ordered: u64,
    /// Read-index rounds asked.
    pub read_rounds: u64,
    /// Requests of this node executed.
    pub own_requests: u64,
    /// Commands those requests carried.
    pub own_commands: u64,
    /// Provable pieces of evidence held, new and reloaded from disk.
    pub evidence_total: u64,
    /// Pieces of evidence held against each replica, by replica id (what
    /// the membership view reports as its reputation).
    pub evidence_against: Vec<u64>,
    /// The latest evidence records, provable ones only (at most 32).
    pub evidence: Vec<EvidenceRecord>,
    /// Messages refused because their signature did not verify, by the
    /// replica they claim to come from (not proof against it: see
    /// [`EvidenceRecord::provable`]).
    pub bad_signatures: Vec<u64>,
    /// The epoch whose replica set left this node out (it orders nothing
    /// more), if one did.
    pub retired: Option<Epoch>,
    /// Why the engine stopped, if it did.
    pub fatal: Option<String>,
}

enum Input {
    /// A command to order, or a barrier (`None`).
    Propose {
        command: Option<Command>,
        request_id: Option<RequestId>,
        reply: ReplyTo,
    },
    /// A read barrier.
    Read {
        reply: ReplyTo,
    },
    /// This node's vote for a new replica set.
    Vote {
        proposal: Proposal,
        reply: VoteReply,
    },
    Frame(Vec<u8>),
    /// A checkpoint's state, encoded and digested off the driver's thread.
    Checkpoint {
        seq: Seq,
        snapshot: Vec<u8>,
        digest: Digest,
    },
    /// The stable checkpoint at `seq` was written to disk (or why not).
    CheckpointStored {
        seq: Seq,
        result: Result<(), String>,
    },
}

struct Shared {
    node_id: u64,
    /// The configuration in force (the driver updates it at a switch).
    config: Arc<RwLock<EpochFile>>,
    inbox: mpsc::Sender<Input>,
    state: SharedState,
    applied: watch::Receiver<u64>,
    status: watch::Receiver<PbftStatus>,
    primary: watch::Receiver<(View, Option<u64>)>,
    events: broadcast::Sender<(u64, Event)>,
    evidence: broadcast::Sender<EvidenceRecord>,
}

/// One node's pBFT engine.
#[derive(Clone)]
pub struct PbftOrdering {
    shared: Arc<Shared>,
}

impl PbftOrdering {
    /// Starts the engine with an empty state; `transport` reaches the other
    /// replicas, and frames from them go to [`PbftOrdering::deliver`].
    /// Fails if the replica's reservation cannot be read.
    /// With a directory, it first restores what the replica stored there:
    /// the last stable checkpoint's state and every batch executed after it
    /// (so nothing it acknowledged is lost, even if every replica stopped at
    /// once), its prepared certificates, its reservation. Fails if those
    /// cannot be read or do not check out.
    pub fn start(setup: PbftSetup, transport: Arc<dyn Transport>) -> Result<Self, String> {
        let client_id = setup.key.verifying_key().to_bytes();
        // The configuration this replica stored wins over the one it was
        // started with, unless that one is later (a newcomer's).
        let stored = match &setup.dir {
            Some(dir) => EpochFile::read(dir)?,
            None => None,
        };
        let config = match stored {
            Some(s) if s.epoch() >= setup.config.epoch() => s,
            _ => {
                if let Some(dir) = &setup.dir {
                    setup.config.write(dir).map_err(|e| {
                        format!(
                            "cannot store the pBFT configuration in {}: {e}",
                            dir.display()
                        )
                    })?;
                }
                setup.config
            }
        };
        let start_digest = config.check()?;
        let Some(me) = config.current.replicas.id_of(&client_id) else {
            return Err(format!(
                "this node's replica key is not in the replica set of epoch {} (its replicas: {})",
                config.epoch(),
                config.current.names.join(", ")
            ));
        };
        let my_name = config.current.names[me as usize].clone();
        let node_id = node_id_of(&my_name);
        let resume = match &setup.dir {
            Some(dir) => read_position(dir)?.filter(|p| p.epoch == config.epoch()),
            None => None,
        };
        let mut replica = Replica::new(
            me,
            config.current.replicas.clone(),
            setup.key.clone(),
            setup.settings.clone(),
        );
        let mut stats = PbftStatus::default();
        let restored = match &setup.dir {
            Some(dir) => Some(restore(
                dir,
                &config,
                start_digest,
                &mut replica,
                &mut stats,
            )?),
            None => None,
        };
        let (store, sm, app, snapshots) = match restored {
            Some(r) => (Some(r.store), r.sm, r.app, r.snapshots),
            None => (
                None,
                StateMachine::new(),
                PbftApp::genesis(
                    config.current.replicas.clone(),
                    config.current.names.clone(),
                ),
                BTreeMap::new(),
            ),
        };
        // A member of a later epoch without the state at its start (a
        // newcomer, or one whose switch stopped before storing it) fetches
        // the state the previous epoch's proof names.
        let start = config.current.replicas.start();
        if config.epoch() > 0 && stats.stored_checkpoint.is_none_or(|s| s < start) {
            replica.join(start_digest);
        }
        let shared_config = Arc::new(RwLock::new(config.clone()));
        let last_timestamp = app.clients.get(&client_id).copied().unwrap_or(0);
        let applied_index = sm.applied_index;
        let state: SharedState = Arc::new(RwLock::new(sm));
        let (inbox, rx) = mpsc::channel(8_192);
        let (applied_tx, applied) = watch::channel(applied_index);
        let (status_tx, status) = watch::channel(PbftStatus::default());
        let (primary_tx, primary) = watch::channel((0, None));
        let (events, _) = broadcast::channel(4_096);
        let (evidence, _) = broadcast::channel(256);
        if let Some(p) = resume {
            tracing::info!(
                view = p.view,
                seq = p.seq,
                "pBFT replica restarted: it signs nothing at or below its last reservation and catches up from the others"
            );
            replica.resume(p.view, p.seq);
        }
        let mut driver = Driver {
            own_inbox: inbox.downgrade(),
            config: config.clone(),
            settings: setup.settings,
            my_name,
            helped: BTreeMap::new(),
            bad_signature_events: BTreeMap::new(),
            evidence_stored: 0,
            retired_counters: Default::default(),
            shared_config: shared_config.clone(),
            client_id,
            client_key: setup.key,
            dir: setup.dir,
            store,
            storing_checkpoint: false,
            fatal: None,
            replica,
            node_ids: Vec::new(),
            transport,
            state: state.clone(),
            app,
            applied: applied_tx,
            status: status_tx,
            primary: primary_tx,
            events: events.clone(),
            evidence: evidence.clone(),
            lane: Lane {
                last_timestamp,
                ..Lane::default()
            },
            // Nonces never repeat, across restarts too: an answer to an
            // older question says nothing of the state after a read began.
            reads: Reads {
                nonce: unix_micros(),
                ..Reads::default()
            },
            snapshots,
            fetching: None,
            stats,
            started: tokio::time::Instant::now(),
            served: BTreeMap::new(),
        };
        driver.set_config(config);
        driver.load_evidence();
        // A change decided before the restart still ends this epoch.
        driver.after_state();
        tokio::spawn(driver.run(rx));
        Ok(PbftOrdering {
            shared: Arc::new(Shared {
                node_id,
                config: shared_config,
                inbox,
                state,
                applied,
                status,
                primary,
                events,
                evidence,
            }),
        })
    }

    /// A frame's payload from another replica (see [`decode`]). Waits while
    /// the engine is busy (backpressure on the connection).
    pub async fn deliver(&self, payload: Vec<u8>) -> bool {
        self.shared.inbox.send(Input::Frame(payload)).await.is_ok()
    }

    /// The latest pBFT-specific status (view, watermarks, counters, evidence).
    pub fn pbft_status(&self) -> PbftStatus {
        self.shared.status.borrow().clone()
    }

    /// Each replica's node id, by replica id, in the epoch in force.
    pub fn node_ids(&self) -> Vec<u64> {
        // Read in place: status asks often, and the configuration carries
        // the proof of the last epoch's end.
        let config = self.shared.config.read().unwrap_or_else(|e| e.into_inner());
        config.current.names.iter().map(|n| node_id_of(n)).collect()
    }

    /// The configuration in force: what a node joining this epoch starts
    /// from (`mesh pbft config`).
    pub fn config(&self) -> EpochFile {
        self.shared
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Votes for the replica set `proposal` (keys in id order, names of
    /// the nodes) as this replica: a request of its replica key, ordered
    /// like any. Returns what the vote did once it executed here, or why
    /// it did not count (the same on every replica).
    pub async fn reconfigure(
        &self,
        proposal: Proposal,
    ) -> Result<Result<VoteOutcome, VoteError>, OrderError> {
        self.ask(|reply| Input::Vote { proposal, reply }).await
    }

    /// True on the primary of the current view, in normal operation.
    pub fn is_primary(&self) -> bool {
        let s = self.shared.status.borrow();
        s.active && s.primary == s.replica
    }

    /// The primary's node id, once known (none during a view change).
    pub fn primary(&self) -> Option<u64> {
        self.shared.primary.borrow().1
    }

    /// Waits until a primary is in normal operation, or `until`.
    pub async fn wait_for_primary(&self, until: tokio::time::Instant) -> Option<u64> {
        let mut rx = self.shared.status.clone();
        loop {
            if let Some(p) = self.primary() {
                return Some(p);
            }
            if tokio::time::timeout_at(until, rx.changed()).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until this replica applied state-machine index `index`, or `until`.
    pub async fn wait_applied(&self, index: u64, until: tokio::time::Instant) -> bool {
        let mut rx = self.shared.applied.clone();
        tokio::time::timeout_at(until, rx.wait_for(|a| *a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Events of applied commands, with their state-machine index.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, Event)> {
        self.shared.events.subscribe()
    }

    /// Evidence as this replica finds it.
    pub fn subscribe_evidence(&self) -> broadcast::Receiver<EvidenceRecord> {
        self.shared.evidence.subscribe()
    }

    /// Status changes (view, primary, counters: often).
    pub fn watch_status(&self) -> watch::Receiver<PbftStatus> {
        self.shared.status.clone()
    }

    /// The view and its primary's node id (none during a view change), on
    /// every change.
    pub fn watch_primary(&self) -> watch::Receiver<(View, Option<u64>)> {
        self.shared.primary.clone()
    }

    /// Sends the driver an input carrying a reply channel, and waits for
    /// the reply.
    async fn ask<T>(
        &self,
        input: impl FnOnce(oneshot::Sender<Result<T, OrderError>>) -> Input,
    ) -> Result<T, OrderError> {
        let stopped = || OrderError::Stopped("the pBFT engine stopped".into());
        let (reply, rx) = oneshot::channel();
        self.shared
            .inbox
            .send(input(reply))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Ordering for PbftOrdering {
    async fn propose(
        &self,
        command: Command,
        request_id: Option<RequestId>,
    ) -> Result<Applied, OrderError> {
        self.ask(|reply| Input::Propose {
            command: Some(command),
            request_id,
            reply,
        })
        .await
    }

    async fn read_barrier(&self) -> Result<(), OrderError> {
        self.ask(|reply| Input::Read { reply }).await.map(|_| ())
    }

    fn status(&self) -> OrderStatus {
        let s = self.shared.status.borrow().clone();
        let applied = *self.shared.applied.borrow();
        OrderStatus {
            node_id: self.shared.node_id,
            leader: self.primary(),
            term: s.view,
            commit_index: Some(applied),
            applied_index: Some(applied),
            last_log_index: None,
            millis_since_quorum_ack: None,
            voters: self.node_ids(),
            learners: Vec::new(),
            fatal: s.fatal,
        }
    }

    fn state(&self) -> SharedState {
        self.shared.state.clone()
    }
}

/// A proposal waiting for its request to execute.
struct Waiter {
    command: Option<Command>,
    request_id: Option<RequestId>,
    reply: ReplyTo,
}

/// This node as a pBFT client: one request in flight, the rest queued.
/// Votes go alone, one request each, before queued commands.
#[derive(Default)]
struct Lane {
    last_timestamp: u64,
    queue: Vec<Waiter>,
    votes: Vec<(Proposal, VoteReply)>,
    in_flight: Option<InFlight>,
}

struct InFlight {
    request: Request,
    waiters: Vec<Waiter>,
    /// Set when the request is a vote.
    vote: Option<VoteReply>,
    sent_at: u64,
}

/// Where the driver answers a proposal or a read.
type ReplyTo = oneshot::Sender<Result<Applied, OrderError>>;
/// Where the driver answers a vote.
type VoteReply = oneshot::Sender<Result<Result<VoteOutcome, VoteError>, OrderError>>;

/// Reads waiting for their read index (see the module docs).
#[derive(Default)]
struct Reads {
    /// Waiting for the next round.
    queued: Vec<ReplyTo>,
    /// The round asked, and the reads it serves.
    round: Option<(ReadRound, Vec<ReplyTo>)>,
    /// Read index in hand: (index, round started at, reads) waiting for
    /// this replica to execute up to it.
    waiting: Vec<(Seq, u64, Vec<ReplyTo>)>,
    nonce: u64,
}

struct Driver {
    /// For results of work done off the driver's thread (weak: the driver
    /// stops once every handle is gone).
    own_inbox: mpsc::WeakSender<Input>,
    /// The configuration in force (see [`epochs`]).
    config: EpochFile,
    settings: Settings,
    /// This node's name (how peers address it).
    my_name: String,
    /// When each peer was last sent epoch help ("" for the broadcast).
    helped: BTreeMap<String, u64>,
    /// When a bad signature under each replica's name was last published
    /// (at most one event per name every [`BAD_SIGNATURE_EVENT_MS`]: a
    /// flood of garbage must not flood the event channel).
    bad_signature_events: BTreeMap<ReplicaId, u64>,
    /// Lines in the evidence file (bounded by [`evidence_file::STORED_MAX`]).
    evidence_stored: usize,
    /// Signatures of the replicas of earlier epochs (status counts all).
    retired_counters: super::replica::Counters,
    shared_config: Arc<RwLock<EpochFile>>,
    client_key: SigningKey,
    /// This node as a pBFT client (its key's public half).
    client_id: ClientId,
    dir: Option<std::path::PathBuf>,
    /// The replica's log (with `dir`).
    store: Option<Store>,
    /// A stable checkpoint is being written.
    storing_checkpoint: bool,
    /// Why the engine stopped (the reservation or the log could not be stored).
    fatal: Option<String>,
    replica: Replica,
    node_ids: Vec<u64>,
    transport: Arc<dyn Transport>,
    state: SharedState,
    app: PbftApp,
    applied: watch::Sender<u64>,
    status: watch::Sender<PbftStatus>,
    primary: watch::Sender<(View, Option<u64>)>,
    events: broadcast::Sender<(u64, Event)>,
    evidence: broadcast::Sender<EvidenceRecord>,
    lane: Lane,
    reads: Reads,
    /// Checkpoint states by sequence number, to answer state requests.
    snapshots: BTreeMap<Seq, Arc<Vec<u8>>>,
    /// A state being fetched: (seq, digest, last asked at).
    fetching: Option<(Seq, Digest, u64)>,
    stats: PbftStatus,
    /// Where the replica's clock (`now`) starts.
    started: tokio::time::Instant,
    /// When each node was last sent commit certificates.
    served: BTreeMap<String, u64>,
}

/// One more against replica `who` in a per-replica count of `n` replicas.
fn count_against(counts: &mut Vec<u64>, n: usize, who: ReplicaId) {
    counts.resize(n, 0);
    if let Some(c) = counts.get_mut(who as usize) {
        *c += 1;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Driver {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish_status();
        loop {
            tokio::select! {
                input = rx.recv() => {
                    let Some(input) = input else { return };
                    self.input(input);
                    // Take what else arrived before acting on outputs, so a
                    // burst is handled in one pass (and batches).
                    for _ in 0..256 {
                        match rx.try_recv() {
                            Ok(more) => self.input(more),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = self.now();
                    self.replica.tick(now);
                    self.resend(now);
                }
            }
            // Reads before the request goes out (one falling back to the
            // ordered path rides in it) and after execution (one whose
            // index was just reached is served now, not a tick later).
            self.reads();
            self.send_request();
            self.outputs();
            self.reads();
            self.store_checkpoint();
            self.publish_status();
            if let Some(why) = &self.fatal {
                self.stats.fatal = Some(why.clone());
                self.publish_status();
                // Dropping the receiver fails every proposal from now on.
                return;
            }
        }
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Propose {
                command,
                request_id,
                reply,
            } => self.lane.queue.push(Waiter {
                command,
                request_id,
                reply,
            }),
            Input::Read { reply } => self.reads.queued.push(reply),
            Input::Vote { proposal, reply } => self.lane.votes.push((proposal, reply)),
            Input::Frame(payload) => self.frame(&payload),
            Input::Checkpoint {
                seq,
                snapshot,
                digest,
            } => {
                keep_snapshot(&mut self.snapshots, seq, snapshot);
                self.replica.state_digest(seq, digest);
            }
            Input::CheckpointStored { seq, result } => {
                self.storing_checkpoint = false;
                let done = result.and_then(|()| match &mut self.store {
                    Some(store) => store.checkpoint_stored(seq).map_err(|e| e.to_string()),
                    None => Ok(()),
                });
                match done {
                    Ok(()) => self.stats.stored_checkpoint = Some(seq),
                    // The log keeps growing until a later one is stored.
                    Err(e) => tracing::warn!(seq, error = %e, "cannot store the pBFT checkpoint"),
                }
            }
        }
    }

    /// Writes the replica's stable checkpoint to disk once its state is at
    /// hand (off the driver's thread: a large state takes a while); records
    /// at or below it are dropped after.
    fn store_checkpoint(&mut self) {
        let Some(store) = &self.store else { return };
        let low = self.replica.low_watermark();
        if self.storing_checkpoint || low <= store.checkpoint_seq() {
            return;
        }
        let Some(snapshot) = self.snapshots.get(&low).cloned() else {
            return; // its state is still being encoded, or was fetched elsewhere
        };
        self.storing_checkpoint = true;
        let dir = store.dir().to_path_buf();
        let proof = self.replica.stable_proof().to_vec();
        let inbox = self.own_inbox.clone();
        tokio::task::spawn_blocking(move || {
            let result = write_checkpoint(&dir, low, &proof, &snapshot).map_err(|e| e.to_string());
            if let Some(tx) = inbox.upgrade() {
                let _ = tx.blocking_send(Input::CheckpointStored { seq: low, result });
            }
        });
    }

    fn frame(&mut self, payload: &[u8]) {
        let Some(wire) = decode(payload) else {
            self.stats.undecodable += 1;
            return;
        };
        tracing::debug!(frame = %wire.describe(), "pBFT frame in");
        match wire {
            Wire::Protocol(env) if env.msg.epoch != self.replica.replicas().epoch() => {
                self.other_epoch(&env);
            }
            Wire::Protocol(env) => {
                if let Err(e) = self.replica.handle(env) {
                    self.stats.refused += 1;
                    if let Refused::Signature(VerifyError::BadSignature(claimed)) = e {
                        self.bad_signature(claimed);
                    }
                    tracing::trace!(error = %e, "pBFT message refused");
                }
            }
            Wire::Request(r) => self.replica.forwarded(r),
            Wire::StateRequest { from, seq } => {
                if let Some(s) = self.snapshots.get(&seq)
                    && self.known_peer(&from)
                {
                    let frame = encode(&Wire::State {
                        seq,
                        snapshot: s.as_ref().clone(),
                    });
                    self.send_name(&from, Arc::new(frame));
                }
            }
            Wire::State { seq, snapshot } => self.install(seq, &snapshot),
            Wire::FetchEntries { from, after, view } => {
                let now = self.now();
                if self.config.current.names.contains(&from)
                    && super::replica::due(&mut self.served, from.clone(), now, SERVE_EVERY_MS)
                {
                    let answer = self.replica.entries_after(after, view, super::MAX_CERTS);
                    let envs = (answer.checkpoint_proof.into_iter())
                        .map(|msg| Envelope { msg, batch: None })
                        .chain(answer.new_view);
                    for env in envs {
                        let wire = Wire::Protocol(env);
                        self.send_name(&from, Arc::new(encode(&wire)));
                    }
                    if !answer.certs.is_empty() {
                        let wire = Wire::Entries(answer.certs);
                        self.send_name(&from, Arc::new(encode(&wire)));
                    }
                }
            }
            Wire::Entries(certs) => {
                if let Err(e) = self.replica.on_commit_certs(certs) {
                    self.stats.refused += 1;
                    tracing::debug!(error = %e, "pBFT commit certificates refused");
                }
            }
            Wire::ReadIndex { from, nonce } => {
                if let Some(key) = self.replica.replicas().key(from) {
                    let client = key.to_bytes();
                    let answer = self.replica.answer_read_index(client, nonce);
                    self.send(from, Arc::new(encode(&Wire::ReadIndexAnswer(answer))));
                }
            }
            Wire::ReadIndexAnswer(msg) => self.read_answer(&msg),
            Wire::Behind { from, epoch } => self.behind(from, epoch),
            Wire::EpochEnded(proof) => self.epoch_ended(proof),
        }
        self.outputs();
    }

    /// A read-index answer for the round in flight: with 2f + 1, the
    /// round's reads wait for this replica to execute up to the index.
    fn read_answer(&mut self, msg: &super::message::Signed) {
        let Some((round, _)) = &self.reads.round else {
            return;
        };
        let nonce = round.nonce;
        if !matches!(msg.body, super::message::Body::ReadIndex { nonce: n, .. } if n == nonce) {
            return; // a late answer to an earlier round: not refused, just old
        }
        let Some((from, seq)) = self.replica.check_read_index(msg, self.client_id, nonce) else {
            self.stats.refused += 1;
            return;
        };
        let quorum = self.replica.replicas().quorum();
        let Some((round, _)) = &mut self.reads.round else {
            return;
        };
        round.answer(from, seq);
        if let Some(index) = round.index(quorum) {
            let (round, readers) = self.reads.round.take().expect("present");
            self.reads.waiting.push((index, round.started, readers));
        }
    }

    /// Serves reads whose index this replica executed, sends the slow ones
    /// down the ordered path, and asks a new round for queued reads.
    fn reads(&mut self) {
        let now = self.now();
        let executed = self.replica.last_executed();
        let applied = *self.applied.borrow();
        let mut ready = Vec::new();
        let mut slow = Vec::new();
        for (index, since, readers) in std::mem::take(&mut self.reads.waiting) {
            if index <= executed {
                ready.extend(readers);
            } else if now.saturating_sub(since) >= READ_FALLBACK_MS {
                slow.extend(readers);
            } else {
                self.reads.waiting.push((index, since, readers));
            }
        }
        if self
            .reads
            .round
            .as_ref()
            .is_some_and(|(r, _)| now.saturating_sub(r.started) >= READ_FALLBACK_MS)
        {
            let (_, readers) = self.reads.round.take().expect("present");
            slow.extend(readers);
        }
        self.stats.reads_fast += ready.len() as u64;
        for reply in ready {
            let _ = reply.send(Ok(Applied {
                index: applied,
                reply: Ok(Reply::Ok),
            }));
        }
        self.stats.reads_ordered += slow.len() as u64;
        for reply in slow {
            self.lane.queue.push(Waiter {
                command: None,
                request_id: None,
                reply,
            });
        }
        if self.reads.round.is_none() && !self.reads.queued.is_empty() {
            self.reads.nonce += 1;
            let me = self.replica.id();
            let round = ReadRound::new(self.reads.nonce, now, (me, self.replica.read_index()));
            let readers = std::mem::take(&mut self.reads.queued);
            self.reads.round = Some((round, readers));
            self.stats.read_rounds += 1;
            let frame = Arc::new(encode(&Wire::ReadIndex {
                from: me,
                nonce: self.reads.nonce,
            }));
            self.broadcast(frame);
        }
    }

    /// Sends this node's next request if none is in flight.
    fn send_request(&mut self) {
        if self.lane.in_flight.is_some() {
            return;
        }
        if !self.lane.votes.is_empty() {
            let (proposal, reply) = self.lane.votes.remove(0);
            let request = self.next_request(proposal.op());
            self.lane.in_flight = Some(InFlight {
                request,
                waiters: Vec::new(),
                vote: Some(reply),
                sent_at: self.now(),
            });
            return;
        }
        if self.lane.queue.is_empty() {
            return;
        }
        let n = self.lane.queue.len().min(MAX_COMMANDS_PER_REQUEST);
        let waiters: Vec<Waiter> = self.lane.queue.drain(..n).collect();
        let op = ClientOp {
            now_ms: unix_ms(),
            commands: waiters
                .iter()
                .filter_map(|w| Some((w.command.clone()?, w.request_id.clone())))
                .collect(),
        };
        let request =
            self.next_request(postcard::to_allocvec(&op).expect("encoding to a Vec cannot fail"));
        self.lane.in_flight = Some(InFlight {
            request,
            waiters,
            vote: None,
            sent_at: self.now(),
        });
    }

    /// Signs this node's next request with `op` and hands it to the replica.
    fn next_request(&mut self, op: Vec<u8>) -> Request {
        // Timestamps grow across restarts too: microseconds since the epoch,
        // or one more than the last when the clock has not moved.
        let timestamp = unix_micros().max(self.lane.last_timestamp + 1);
        self.lane.last_timestamp = timestamp;
        let request = Request::signed(&self.client_key, timestamp, op);
        self.replica.own_request(request.clone());
        request
    }

    /// A request in flight for long goes to every replica again (a replica
    /// may have restarted, or a connection dropped it).
    fn resend(&mut self, now: u64) {
        if let Some(f) = &mut self.lane.in_flight
            && now.saturating_sub(f.sent_at) >= RESEND_AFTER_MS
        {
            f.sent_at = now;
            let request = f.request.clone();
            self.replica.own_request(request.clone());
            self.broadcast(Arc::new(encode(&Wire::Request(request))));
        }
        if let Some((seq, _, asked)) = self.fetching
            && now.saturating_sub(asked) >= FETCH_AGAIN_MS
        {
            self.ask_state(seq);
        }
    }

    fn outputs(&mut self) {
        loop {
            let outputs = self.replica.drain_outputs();
            if outputs.is_empty() {
                return;
            }
            self.persist(&outputs);
            for o in outputs {
                if self.fatal.is_some() {
                    return; // nothing goes out once a reservation failed
                }
                self.output(o);
            }
        }
    }

    /// Queues this pass's records and, if one of them is urgent or the
    /// replica asked for a sync, writes and syncs everything queued before
    /// any of the pass's messages or results leave (one sync for all).
    fn persist(&mut self, outputs: &[Output]) {
        let Some(store) = &mut self.store else { return };
        let mut sync = false;
        for o in outputs {
            match o {
                Output::Persist(record) => {
                    store.append(record);
                    sync |= record.urgent();
                }
                Output::Sync => sync = true,
                _ => {}
            }
        }
        if !sync {
            return;
        }
        if let Err(e) = store.sync() {
            let why = format!(
                "cannot write the pBFT log in {}: {e}",
                store.dir().display()
            );
            tracing::error!("{why}; this replica stops (what it would send next depends on it)");
            self.fatal = Some(why);
        }
    }

    fn output(&mut self, o: Output) {
        match o {
            Output::Persist(_) | Output::Sync => {} // done by `persist`, first
            Output::Broadcast(env) => {
                let wire = Wire::Protocol(env);
                tracing::debug!(frame = %wire.describe(), "pBFT frame out to all");
                self.broadcast(Arc::new(encode(&wire)));
            }
            Output::Send { to, env } => {
                let wire = Wire::Protocol(env);
                tracing::debug!(frame = %wire.describe(), to, "pBFT frame out");
                self.send(to, Arc::new(encode(&wire)));
            }
            Output::Forward { to, request } => {
                tracing::debug!(timestamp = request.timestamp, ?to, "pBFT request forwarded");
                let frame = Arc::new(encode(&Wire::Request(request)));
                match to {
                    Some(p) => self.send(p, frame),
                    None => self.broadcast(frame),
                }
            }
            Output::Execute {
                seq,
                batch,
                checkpoint,
            } => self.execute(seq, &batch, checkpoint),
            Output::FetchState { seq, state } => {
                self.fetching = Some((seq, state, 0));
                self.ask_state(seq);
            }
            Output::Evidence(e) => self.evidence(&e),
            Output::Reserve { view, seq } => {
                if let Some(dir) = &self.dir
                    && let Err(e) = write_position(
                        dir,
                        Position {
                            epoch: self.config.epoch(),
                            view,
                            seq,
                        },
                    )
                {
                    let why = format!(
                        "cannot store the pBFT signing reservation in {}: {e}",
                        dir.display()
                    );
                    tracing::error!(
                        "{why}; this replica stops (signing on could equivocate after a restart)"
                    );
                    self.fatal = Some(why);
                }
            }
            Output::FetchEntries { after, view } => {
                let frame = Arc::new(encode(&Wire::FetchEntries {
                    from: self.my_name.clone(),
                    after,
                    view,
                }));
                self.broadcast(frame);
            }
            Output::EpochEnd { seq, proof } => self.switch(seq, proof),
            Output::ViewChanged { view } => {
                self.stats.view_changes += 1;
                tracing::info!(
                    view,
                    primary = self.replica.replicas().primary(view),
                    "pBFT view changed"
                );
            }
        }
    }

    /// Sends to replica `to` of this epoch.
    fn send(&mut self, to: ReplicaId, frame: Arc<Vec<u8>>) {
        if let Some(name) = self.config.current.names.get(to as usize).cloned() {
            self.send_name(&name, frame);
        }
    }

    fn send_name(&mut self, to: &str, frame: Arc<Vec<u8>>) {
        if to == self.my_name {
            return;
        }
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        self.transport.send(to, frame);
    }

    fn broadcast(&mut self, frame: Arc<Vec<u8>>) {
        for to in 0..self.replica.replicas().n() as ReplicaId {
            self.send(to, frame.clone());
        }
    }

    fn ask_state(&mut self, seq: Seq) {
        let now = self.now();
        if let Some(f) = &mut self.fetching {
            f.2 = now;
        }
        let frame = Arc::new(encode(&Wire::StateRequest {
            from: self.my_name.clone(),
            seq,
        }));
        self.broadcast(frame);
    }

    fn execute(&mut self, seq: Seq, batch: &[Request], checkpoint: bool) {
        let mut events = Vec::new();
        let (executed, applied, copy) = {
            let mut sm = self.state.write().unwrap_or_else(|e| e.into_inner());
            let executed = self
                .app
                .execute(&mut sm, seq, batch, &mut events, &self.settings);
            // The state at a checkpoint is copied here, encoded and digested
            // on another thread: a large state would otherwise stall this
            // replica for as long.
            let copy = checkpoint.then(|| (sm.clone(), self.app.clone()));
            (executed, sm.applied_index, copy)
        };
        for ex in executed {
            if ex.client == self.client_id {
                self.own_executed(ex);
            }
        }
        for e in events {
            let _ = self.events.send((applied, e));
        }
        self.applied.send_replace(applied);
        if let Some((sm, app)) = copy {
            let inbox = self.own_inbox.clone();
            tokio::task::spawn_blocking(move || {
                let snapshot = app.snapshot(&sm);
                let digest = snapshot_digest(&snapshot);
                if let Some(tx) = inbox.upgrade() {
                    let _ = tx.blocking_send(Input::Checkpoint {
                        seq,
                        snapshot,
                        digest,
                    });
                }
            });
        }
        self.settle_in_flight();
        self.after_state();
    }

    /// This node's request executed here: its waiters get their replies.
    fn own_executed(&mut self, ex: super::machine::Executed) {
        let Some(f) = self
            .lane
            .in_flight
            .take_if(|f| f.request.timestamp == ex.timestamp)
        else {
            return;
        };
        if let (Some(reply), Some(vote)) = (f.vote, ex.vote) {
            let _ = reply.send(Ok(vote));
            return;
        }
        self.stats.own_requests += 1;
        let mut replies = ex.replies.into_iter();
        for w in f.waiters {
            let reply = match w.command {
                Some(_) => {
                    self.stats.own_commands += 1;
                    replies.next().unwrap_or(Ok(Reply::Ok))
                }
                None => Ok(Reply::Ok),
            };
            let _ = w.reply.send(Ok(Applied {
                index: ex.index,
                reply,
            }));
        }
    }

    /// The request in flight is older than what the state holds for this
    /// client (it came by state transfer, not executed here): its replies
    /// are not known here. Barriers are done; commands with a request id go
    /// out again in the next request, where the state machine's
    /// deduplication answers them with their stored replies; commands
    /// without one answer "may have applied".
    fn settle_in_flight(&mut self) {
        let done = self.app.clients.get(&self.client_id).copied().unwrap_or(0);
        let Some(f) = self.lane.in_flight.take_if(|f| f.request.timestamp <= done) else {
            return;
        };
        self.lane.last_timestamp = self.lane.last_timestamp.max(done);
        if let Some(reply) = f.vote {
            let _ = reply.send(Err(OrderError::Stopped(
                "the vote executed while this replica was fetching state: its outcome is in the configuration (see status)".into(),
            )));
            return;
        }
        let index = *self.applied.borrow();
        let mut again = Vec::new();
        for w in f.waiters {
            let r = match w.command {
                None => Ok(Applied {
                    index,
                    reply: Ok(Reply::Ok),
                }),
                Some(_) if w.request_id.is_some() => {
                    again.push(w);
                    continue;
                }
                Some(_) => Err(OrderError::LeaderUnreachable {
                    leader: self.node_ids[self.replica.id() as usize],
                    detail: "executed while this replica was fetching state".into(),
                }),
            };
            let _ = w.reply.send(r);
        }
        again.append(&mut self.lane.queue);
        self.lane.queue = again;
    }

    /// A state arrived: used only if it is the one 2f + 1 replicas signed.
    fn install(&mut self, seq: Seq, snapshot: &[u8]) {
        let Some((want, digest, _)) = self.fetching else {
            return;
        };
        if want != seq || snapshot_digest(snapshot) != digest {
            return;
        }
        let Ok((sm, app)) = PbftApp::restore(snapshot) else {
            return; // 2f + 1 signed its digest: cannot happen unless SHA-256 broke
        };
        self.fetching = None;
        let applied = sm.applied_index;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = sm;
        self.app = app;
        keep_snapshot(&mut self.snapshots, seq, snapshot.to_vec());
        self.stats.state_transfers += 1;
        self.applied.send_replace(applied);
        self.replica
            .installed_state(seq, self.app.executed_clients());
        self.settle_in_flight();
        self.after_state();
        tracing::info!(seq, "pBFT state transferred");
    }

    /// A proof found now: held, published, and stored (while the file is
    /// under its bound) so it outlives a restart.
    fn evidence(&mut self, e: &Evidence) {
        let now = unix_ms();
        let record = self.hold_evidence(e, now);
        tracing::warn!(
            culprit = record.culprit,
            kind = record.kind,
            "pBFT: proof that a replica misbehaved"
        );
        let _ = self.evidence.send(record);
        if let Some(dir) = &self.dir
            && self.evidence_stored < evidence_file::STORED_MAX
        {
            match evidence_file::append(dir, now, e) {
                Ok(()) => self.evidence_stored += 1,
                Err(err) => tracing::warn!(error = %err, "cannot store the pBFT evidence"),
            }
        }
    }

    /// Reloads the proofs stored before a restart (see [`evidence_file`]).
    fn load_evidence(&mut self) {
        let Some(dir) = &self.dir else { return };
        let loaded = match evidence_file::load(dir, self.replica.replicas()) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored pBFT evidence");
                return;
            }
        };
        if loaded.skipped > 0 {
            tracing::warn!(
                skipped = loaded.skipped,
                "stored pBFT evidence lines that are unreadable or prove nothing under the replica set in force were skipped"
            );
        }
        self.evidence_stored = loaded.proofs.len() + loaded.skipped;
        for (at, e) in &loaded.proofs {
            self.hold_evidence(e, *at);
        }
    }

    /// Counts a proof against its culprit and keeps its record for status.
    fn hold_evidence(&mut self, e: &Evidence, unix_ms: u64) -> EvidenceRecord {
        let culprit = e.culprit();
        let (kind, view) = match e {
            Evidence::Equivocation { a, .. } => ("equivocation", a.body.view()),
            Evidence::ConflictingVotes { a, .. } => ("conflicting_votes", a.body.view()),
        };
        self.stats.evidence_total += 1;
        let n = self.replica.replicas().n();
        count_against(&mut self.stats.evidence_against, n, culprit);
        let record = self.record(culprit, kind, view, unix_ms, true);
        self.stats.evidence.push(record.clone());
        if self.stats.evidence.len() > EVIDENCE_KEPT {
            self.stats.evidence.remove(0);
        }
        record
    }

    /// A message under replica `claimed`'s name whose signature does not
    /// verify: counted and published (TOCS 2002 §4.1: only a signature binds
    /// a message to its sender, so this one proves nothing against
    /// `claimed` and leaves its reputation alone).
    fn bad_signature(&mut self, claimed: ReplicaId) {
        let n = self.replica.replicas().n();
        count_against(&mut self.stats.bad_signatures, n, claimed);
        let now = self.now();
        if !super::replica::due(
            &mut self.bad_signature_events,
            claimed,
            now,
            BAD_SIGNATURE_EVENT_MS,
        ) {
            return;
        }
        tracing::warn!(
            claimed,
            "pBFT: a message under this replica's name with a signature that does not verify (refused; not proof against it)"
        );
        let record = self.record(claimed, "bad_signature", None, unix_ms(), false);
        let _ = self.evidence.send(record);
    }

    fn record(
        &self,
        culprit: ReplicaId,
        kind: &'static str,
        view: Option<View>,
        unix_ms: u64,
        provable: bool,
    ) -> EvidenceRecord {
        EvidenceRecord {
            culprit,
            culprit_node: self.node_ids.get(culprit as usize).copied(),
            kind,
            view,
            unix_ms,
            provable,
        }
    }

    fn publish_status(&mut self) {
        let r = &self.replica;
        let c = r.counters();
        let s = &mut self.stats;
        s.replica = r.id();
        s.replicas = r.replicas().n();
        s.evidence_against.resize(s.replicas, 0);
        s.f = r.replicas().f();
        s.view = r.view();
        s.primary = r.replicas().primary(r.view());
        s.active = r.is_active();
        s.last_executed = r.last_executed();
        s.low_watermark = r.low_watermark();
        s.signatures_made = self.retired_counters.signed + c.signed;
        s.signatures_verified = self.retired_counters.verified + c.verified;
        s.frames_dropped = self.transport.dropped();
        if let Some(store) = &self.store {
            s.log_records = store.records;
            s.log_syncs = store.syncs;
            s.log_bytes = store.bytes_written;
        }
        let primary = (
            s.view,
            s.active
                .then(|| self.node_ids.get(s.primary as usize).copied())
                .flatten(),
        );
        self.primary.send_if_modified(|old| {
            let changed = *old != primary;
            *old = primary;
            changed
        });
        let next = s.clone();
        self.status.send_if_modified(|old| {
            if *old == next {
                false
            } else {
                *old = next;
                true
            }
        });
    }
}
