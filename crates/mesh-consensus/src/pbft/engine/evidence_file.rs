//! The proofs of misbehaviour this replica holds, kept across restarts in
//! `evidence.jsonl` in its directory: one JSON line per proof (the two
//! signed messages, so anyone can check them, and when it was found).
//!
//! A restarted replica reloads them, checks each again against the replica
//! set in force (a line that does not verify, or belongs to another
//! configuration, is skipped and counted), and reports them as before, so a
//! replica that lied does not regain its reputation by outliving one
//! restart of its accuser. The file is bounded: a lying replica can produce
//! a proof per slot, so after [`STORED_MAX`] lines further proofs are
//! counted in memory only.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pbft::config::ReplicaSet;
use crate::pbft::replica::Evidence;

pub(super) const FILE: &str = "evidence.jsonl";
/// Lines kept in the file at most.
pub(super) const STORED_MAX: usize = 1024;

#[derive(Serialize, Deserialize)]
struct Line {
    unix_ms: u64,
    evidence: Evidence,
}

/// Appends one proof and syncs it (proofs are rare; losing one to a crash
/// would let the culprit's reputation recover).
pub(super) fn append(dir: &Path, unix_ms: u64, evidence: &Evidence) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&Line {
        unix_ms,
        evidence: evidence.clone(),
    })
    .map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(FILE))?;
    f.write_all(&line)?;
    f.sync_data()
}

/// What [`load`] found.
#[derive(Default)]
pub(super) struct Loaded {
    /// Proofs that check out against the replica set, with when each was found.
    pub proofs: Vec<(u64, Evidence)>,
    /// Lines skipped: unreadable (a torn last line), or not a proof under
    /// the replica set in force.
    pub skipped: usize,
}

/// Reads the file in `dir` (none: nothing held).
pub(super) fn load(dir: &Path, replicas: &ReplicaSet) -> std::io::Result<Loaded> {
    let f = match std::fs::File::open(dir.join(FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(e),
    };
    let mut loaded = Loaded::default();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        match serde_json::from_str::<Line>(&line) {
            Ok(l) if l.evidence.holds(replicas) => loaded.proofs.push((l.unix_ms, l.evidence)),
            _ => loaded.skipped += 1,
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbft::message::{Body, Signed};
    use crate::pbft::testing::{keys, replica_set};

    fn prepare(from: u32, digest: u8, key: &ed25519_dalek::SigningKey) -> Signed {
        Signed::sign(
            from,
            Body::Prepare {
                view: 0,
                seq: 3,
                digest: [digest; 32],
            },
            key,
        )
    }

    /// Proofs survive a reopen; a tampered line, a torn last line and a
    /// pair that does not conflict are skipped, not believed.
    #[test]
    fn proofs_come_back_and_bad_lines_are_skipped() {
        let k = keys(4);
        let set = replica_set(&k);
        let dir = std::env::temp_dir().join(format!("mesh-evidence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let proof = Evidence::ConflictingVotes {
            a: prepare(2, 1, &k[2]),
            b: prepare(2, 2, &k[2]),
        };
        append(&dir, 7, &proof).unwrap();
        // Signed with another key under replica 2's name.
        let forged = Evidence::ConflictingVotes {
            a: prepare(2, 1, &k[1]),
            b: prepare(2, 2, &k[1]),
        };
        append(&dir, 8, &forged).unwrap();
        // Two identical votes prove nothing.
        let same = Evidence::ConflictingVotes {
            a: prepare(2, 1, &k[2]),
            b: prepare(2, 1, &k[2]),
        };
        append(&dir, 9, &same).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .unwrap();
        f.write_all(b"{\"unix_ms\": 10, \"evid").unwrap();
        let loaded = load(&dir, &set).unwrap();
        assert_eq!(loaded.proofs, vec![(7, proof)]);
        assert_eq!(loaded.skipped, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
