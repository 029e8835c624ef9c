//! A pBFT replica's files (the engine's side of [`super::durable`]):
//!
//! - `log/NNNNNNNNNNNNNNNNNNNN.log`: the replica's [`Record`]s, appended and
//!   synced before anything that depends on them leaves the engine (one
//!   sync for all records of one pass: group commit). Each record is framed
//!   as `u32 length (LE) | first 8 bytes of its SHA-256 | postcard`, so a
//!   record torn by a crash is recognised: the newest segment is cut there
//!   (it was never synced, so nothing depended on it). A new segment starts
//!   at every start and after every stored checkpoint; a segment whose
//!   records are all at or below the stored checkpoint is deleted.
//! - `checkpoint.bin`: the last stable checkpoint this replica holds the
//!   state of: its sequence number, the 2f + 1 signed checkpoint messages
//!   that prove it, and the state ([`super::machine::PbftApp::snapshot`]),
//!   framed like a record; written to a temporary file, synced and renamed.
//!
//! (`position.json`, the signing reservation, sits beside them; see
//! [`super::engine::POSITION_FILE`].)

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::config::Seq;
use super::durable::Record;
use super::message::Signed;

const LOG_DIR: &str = "log";
/// Name of the stored stable checkpoint's file in the replica's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// Largest record (a batch of requests with its certificate).
const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// The stored stable checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCheckpoint {
    /// The checkpoint's sequence number.
    pub seq: Seq,
    /// 2f + 1 signed checkpoint messages proving its state digest.
    pub proof: Vec<Signed>,
    /// The state at `seq`, as [`super::machine::PbftApp::snapshot`] encodes it.
    pub snapshot: Vec<u8>,
}

/// What [`Store::open`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The stored stable checkpoint, if one was written.
    pub checkpoint: Option<StoredCheckpoint>,
    /// Records in the order they were written.
    pub records: Vec<Record>,
    /// Bytes cut from the end of the newest segment (a torn record).
    pub torn_bytes: u64,
}

/// The open log of one replica.
pub struct Store {
    dir: PathBuf,
    current: File,
    current_no: u64,
    /// Segment number → the highest sequence number recorded in it.
    segments: BTreeMap<u64, Seq>,
    /// Framed records not written yet.
    buf: Vec<u8>,
    checkpoint_seq: Seq,
    /// Records appended so far (status).
    pub records: u64,
    /// Bytes written to the log so far (status).
    pub bytes_written: u64,
    /// Log syncs so far (status).
    pub syncs: u64,
}

/// The 12 bytes before a framed body: its length and checksum.
fn header(body: &[u8]) -> [u8; 12] {
    let mut h = [0; 12];
    h[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[4..].copy_from_slice(&Sha256::digest(body)[..8]);
    h
}

/// [`StoredCheckpoint`] borrowed (the same encoding), so storing one does
/// not copy the state.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    seq: Seq,
    proof: &'a [Signed],
    snapshot: &'a [u8],
}

/// The next framed body in `bytes` at `at`: Some((body, end)) or None when
/// what is there is not a whole, intact frame.
fn unframe(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = bytes.get(at..at + 12)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let body = bytes.get(at + 12..at + 12 + len)?;
    (Sha256::digest(body)[..8] == head[4..12]).then_some((body, at + 12 + len))
}

fn segment_name(no: u64) -> String {
    format!("{no:020}.log")
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

impl Store {
    /// Opens (creating) the files in `dir` and reads what they hold. A
    /// damaged checkpoint file, or a damaged record before the newest
    /// segment's end, is an error: the disk lost what was synced.
    pub fn open(dir: &Path) -> io::Result<(Store, Loaded)> {
        let log_dir = dir.join(LOG_DIR);
        std::fs::create_dir_all(&log_dir)?;
        let mut loaded = Loaded {
            checkpoint: read_checkpoint(dir)?,
            ..Loaded::default()
        };
        let mut numbers: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(&log_dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(no) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
                numbers.push(no);
            }
        }
        numbers.sort_unstable();
        let mut segments = BTreeMap::new();
        for (i, &no) in numbers.iter().enumerate() {
            let path = log_dir.join(segment_name(no));
            let mut bytes = Vec::new();
            File::open(&path)?.read_to_end(&mut bytes)?;
            let mut at = 0;
            let mut max_seq = 0;
            while at < bytes.len() {
                let Some((body, end)) = unframe(&bytes, at) else {
                    break;
                };
                let record: Record = postcard::from_bytes(body)
                    .map_err(|e| invalid(&path, format!("record at byte {at}: {e}")))?;
                max_seq = max_seq.max(record.seq());
                loaded.records.push(record);
                at = end;
            }
            if at < bytes.len() {
                if i + 1 < numbers.len() {
                    return Err(invalid(
                        &path,
                        format!(
                            "damaged record at byte {at} of {} (a later segment exists, so this one was synced: the disk lost data)",
                            bytes.len()
                        ),
                    ));
                }
                // The newest segment's unsynced tail, torn by the crash.
                loaded.torn_bytes = (bytes.len() - at) as u64;
                OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(at as u64)?;
            }
            segments.insert(no, max_seq);
        }
        let current_no = numbers.last().map_or(1, |n| n + 1);
        let current = new_segment(&log_dir, current_no)?;
        segments.insert(current_no, 0);
        let checkpoint_seq = loaded.checkpoint.as_ref().map_or(0, |c| c.seq);
        let mut store = Store {
            dir: dir.to_path_buf(),
            current,
            current_no,
            segments,
            buf: Vec::new(),
            checkpoint_seq,
            records: 0,
            bytes_written: 0,
            syncs: 0,
        };
        store.drop_segments()?;
        Ok((store, loaded))
    }

    /// Queues a record (written and synced by [`Store::sync`]).
    pub fn append(&mut self, record: &Record) {
        let body = postcard::to_allocvec(record).expect("encoding to a Vec cannot fail");
        self.buf.extend_from_slice(&header(&body));
        self.buf.extend_from_slice(&body);
        self.records += 1;
        let max = self.segments.entry(self.current_no).or_insert(0);
        *max = (*max).max(record.seq());
    }

    /// Writes the queued records and syncs them.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.current.write_all(&self.buf)?;
        self.current.sync_data()?;
        self.bytes_written += self.buf.len() as u64;
        self.syncs += 1;
        self.buf.clear();
        Ok(())
    }

    /// The stored checkpoint's sequence number (0: none).
    pub fn checkpoint_seq(&self) -> Seq {
        self.checkpoint_seq
    }

    /// The replica's directory (holding `log/` and `checkpoint.bin`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// [`write_checkpoint`] finished for `seq`: records at or below it are
    /// no longer needed. Starts a new segment (queued records first go to
    /// the old one) and deletes the segments holding only those.
    pub fn checkpoint_stored(&mut self, seq: Seq) -> io::Result<()> {
        if seq <= self.checkpoint_seq {
            return Ok(());
        }
        self.checkpoint_seq = seq;
        self.sync()?;
        let no = self.current_no + 1;
        self.current = new_segment(&self.dir.join(LOG_DIR), no)?;
        self.current_no = no;
        self.segments.insert(no, 0);
        self.drop_segments()
    }

    fn drop_segments(&mut self) -> io::Result<()> {
        let old: Vec<u64> = self
            .segments
            .iter()
            .filter(|&(&no, &max)| no != self.current_no && max <= self.checkpoint_seq)
            .map(|(&no, _)| no)
            .collect();
        for no in old {
            match std::fs::remove_file(self.dir.join(LOG_DIR).join(segment_name(no))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.segments.remove(&no);
        }
        Ok(())
    }

    /// Log segments on disk now.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

fn new_segment(log_dir: &Path, no: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(segment_name(no)))?;
    sync_dir(log_dir)?;
    Ok(f)
}

fn read_checkpoint(dir: &Path) -> io::Result<Option<StoredCheckpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (body, end) = unframe(&bytes, 0).ok_or_else(|| invalid(&path, "damaged"))?;
    if end != bytes.len() {
        return Err(invalid(&path, "trailing bytes"));
    }
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|e| invalid(&path, e))
}

/// Stores the checkpoint at `seq` (its proof and state) in `dir` durably
/// (temporary file, synced, renamed, directory synced); it reads back as a
/// [`StoredCheckpoint`]. Slow for a large state: run it off the engine's
/// thread, then call [`Store::checkpoint_stored`].
pub fn write_checkpoint(dir: &Path, seq: Seq, proof: &[Signed], snapshot: &[u8]) -> io::Result<()> {
    let body = postcard::to_allocvec(&CheckpointRef {
        seq,
        proof,
        snapshot,
    })
    .expect("encoding to a Vec cannot fail");
    // Two writers (the driver's at an epoch's end, a background one) must
    // not share a temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("checkpoint.bin.{n}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&header(&body))?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::pbft::message::{Body, CommitCert, PreparedCert, Request};

    fn signed(seq: Seq) -> Signed {
        Signed {
            epoch: 0,
            from: 0,
            body: Body::PrePrepare {
                view: 0,
                seq,
                digest: [seq as u8; 32],
            },
            signature: [0; 64],
        }
    }

    fn executed(seq: Seq) -> Record {
        Record::Executed {
            seq,
            cert: CommitCert {
                pre_prepare: signed(seq),
                commits: vec![],
                batch: vec![Request::signed(
                    &SigningKey::from_bytes(&[3; 32]),
                    seq,
                    vec![1, 2, 3],
                )],
            },
        }
    }

    fn prepared(seq: Seq) -> Record {
        Record::Prepared {
            seq,
            cert: PreparedCert {
                pre_prepare: signed(seq),
                prepares: vec![],
                batch: vec![],
            },
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mesh-pbft-store-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn records_come_back_in_order_across_restarts() {
        let dir = tempdir("order");
        let (mut s, loaded) = Store::open(&dir).unwrap();
        assert!(loaded.records.is_empty() && loaded.checkpoint.is_none());
        s.append(&prepared(1));
        s.append(&executed(1));
        s.sync().unwrap();
        s.append(&prepared(2));
        s.sync().unwrap();
        drop(s);
        let (mut s, loaded) = Store::open(&dir).unwrap();
        assert_eq!(loaded.records, vec![prepared(1), executed(1), prepared(2)]);
        s.append(&executed(2));
        s.sync().unwrap();
        drop(s);
        let (_, loaded) = Store::open(&dir).unwrap();
        assert_eq!(loaded.records.len(), 4);
        assert_eq!(loaded.records[3], executed(2));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A crash in the middle of an append leaves a torn record at the end
    /// of the newest segment: it is cut off, the rest is read, and the
    /// segment takes records again.
    #[test]
    fn a_torn_tail_is_cut_and_earlier_damage_is_an_error() {
        let dir = tempdir("torn");
        let (mut s, _) = Store::open(&dir).unwrap();
        s.append(&executed(1));
        s.append(&executed(2));
        s.sync().unwrap();
        let path = dir.join(LOG_DIR).join(segment_name(s.current_no));
        drop(s);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let (s, loaded) = Store::open(&dir).unwrap();
        assert_eq!(loaded.records, vec![executed(1)]);
        assert!(loaded.torn_bytes > 0);
        drop(s);
        // That segment is no longer the newest (each open starts one): damage
        // in it is damage to synced data.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = Store::open(&dir)
            .err()
            .expect("damage in a synced segment noticed");
        assert!(err.to_string().contains("damaged record"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A stored checkpoint makes the records at or below it useless: their
    /// segments go, later records stay.
    #[test]
    fn a_stored_checkpoint_drops_older_segments() {
        let dir = tempdir("ckpt");
        let (mut s, _) = Store::open(&dir).unwrap();
        for seq in 1..=4 {
            s.append(&executed(seq));
        }
        s.sync().unwrap();
        let cp = StoredCheckpoint {
            seq: 4,
            proof: vec![signed(4)],
            snapshot: vec![7; 1000],
        };
        write_checkpoint(&dir, cp.seq, &cp.proof, &cp.snapshot).unwrap();
        s.checkpoint_stored(4).unwrap();
        s.append(&executed(5));
        s.sync().unwrap();
        assert_eq!(s.segments(), 1, "the segment with 1..=4 is gone");
        drop(s);
        let (s, loaded) = Store::open(&dir).unwrap();
        assert_eq!(loaded.checkpoint, Some(cp));
        assert_eq!(loaded.records, vec![executed(5)]);
        assert_eq!(s.checkpoint_seq(), 4);
        // A damaged checkpoint file is an error, not an empty state.
        let path = dir.join(CHECKPOINT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = Store::open(&dir).err().expect("damaged checkpoint refused");
        assert!(err.to_string().contains("damaged"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
