//! Starting a node on pBFT (`mesh up --consensus pbft`): the replica's key in
//! the data directory, the genesis file that names the replicas, and the
//! engine over TCP with peers found through the membership view.
//!
//! The genesis file (JSON) lists the replicas in order, each with its node
//! name and ed25519 public key:
//! `{"replicas": [{"name": "n1", "key": "<64 hex digits>"}, ...]}`.
//! Every replica must start with the same file: the order fixes replica ids
//! and so the primary of each view (TOCS 2002 §4.1). `mesh pbft keygen`
//! creates a node's key and prints its line; `mesh pbft genesis` gathers
//! them. A node whose name or key is not in the file refuses to start.
//!
//! After a reconfiguration (`mesh pbft reconfigure`) each replica keeps its
//! configuration in `pbft/epoch.json` ([`EpochFile`]), which wins over the
//! genesis file at the next start. A node joining the new replica set starts
//! with `--pbft-genesis` naming a copy of a member's `epoch.json` (`mesh
//! pbft config` prints it): it holds the new set, the old one and the old
//! set's signatures of the state at the change, which the newcomer checks
//! before it fetches that state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_consensus::pbft::config::ReplicaSet;
use mesh_consensus::pbft::engine::{EpochFile, PbftOrdering, PbftSetup};
use mesh_consensus::pbft::net_tcp::TcpTransport;
use mesh_consensus::pbft::replica::Settings;
use mesh_membership::MemberState;
use serde::{Deserialize, Serialize};

use crate::consensus::MembersView;
pub use crate::key_file::{load_key, load_or_create_key};

/// Where pBFT files live under the data directory.
pub const PBFT_DIR: &str = "pbft";
/// The replica's secret key (hex, mode 0600).
pub const KEY_FILE: &str = "replica.key";

/// The replica set a pBFT mesh starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The replicas in order: the position is the replica id.
    pub replicas: Vec<GenesisReplica>,
}

/// One replica of a genesis file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisReplica {
    /// The node's name (`--node-id`).
    pub name: String,
    /// Its ed25519 public key, hex.
    pub key: String,
}

impl Genesis {
    /// Reads and checks a genesis file (names valid and distinct, keys well formed).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the pBFT genesis file {}: {e}", path.display()))?;
        let g: Genesis = serde_json::from_str(&text)
            .map_err(|e| format!("pBFT genesis file {} is not valid: {e}", path.display()))?;
        g.replica_set()
            .map_err(|e| format!("pBFT genesis file {}: {e}", path.display()))?;
        Ok(g)
    }

    /// The replica set it describes; checks names and keys.
    pub fn replica_set(&self) -> Result<ReplicaSet, String> {
        let mut keys = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            mesh_proto::soft::validate_name("replica name", &r.name).map_err(|e| e.to_string())?;
            if self.replicas[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("replica '{}' is listed twice", r.name));
            }
            keys.push(public_key(&r.key).map_err(|e| format!("replica '{}': {e}", r.name))?);
        }
        ReplicaSet::new(keys).map_err(|e| e.to_string())
    }
}

/// Decodes a hex ed25519 public key.
pub fn public_key(hex: &str) -> Result<[u8; 32], String> {
    let bytes = mesh_proto::hex::decode(hex.trim()).map_err(|e| format!("key: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "key: an ed25519 public key is 32 bytes (64 hex digits)".to_string())
}

/// The replica key's path under a data directory.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PBFT_DIR).join(KEY_FILE)
}

/// Reads a `--pbft-genesis` file: a genesis file, or a member's
/// `epoch.json` for a node joining a later epoch (checked, proof included).
pub fn read_config(path: &Path) -> Result<EpochFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the pBFT genesis file {}: {e}", path.display()))?;
    if let Ok(file) = serde_json::from_str::<EpochFile>(&text) {
        file.check()
            .map_err(|e| format!("pBFT configuration {}: {e}", path.display()))?;
        for n in &file.current.names {
            mesh_proto::soft::validate_name("replica name", n)
                .map_err(|e| format!("pBFT configuration {}: {e}", path.display()))?;
        }
        return Ok(file);
    }
    let g = Genesis::read(path)?;
    Ok(EpochFile::genesis(
        g.replica_set()?,
        g.replicas.iter().map(|r| r.name.clone()).collect(),
    ))
}

/// The configuration a node starts in: its stored one, unless the one
/// given is later.
pub fn effective_config(data_dir: &Path, given: &Path) -> Result<EpochFile, String> {
    let given = read_config(given)?;
    Ok(match EpochFile::read(&data_dir.join(PBFT_DIR))? {
        Some(stored) if stored.epoch() >= given.epoch() => stored,
        _ => given,
    })
}

/// Starts the pBFT engine of node `name`: its key from the data directory,
/// the replicas from `genesis` (or the configuration stored since),
/// peers' addresses from the membership view.
pub fn open(
    data_dir: &Path,
    name: &str,
    genesis: &Path,
    members: MembersView,
) -> Result<PbftOrdering, String> {
    let config = effective_config(data_dir, genesis)?;
    let names = &config.current.names;
    let me = names.iter().position(|n| n == name).ok_or_else(|| {
        format!(
            "node '{name}' is not a replica of epoch {} in {} (it lists {})",
            config.epoch(),
            genesis.display(),
            names.join(", ")
        )
    })?;
    let path = key_path(data_dir);
    if !path.exists() {
        return Err(format!(
            "no replica key at {} (create it with `mesh pbft keygen --data-dir {}` and put its public key in the genesis file)",
            path.display(),
            data_dir.display()
        ));
    }
    let key = load_key(&path)?;
    if config.current.replicas.keys().get(me) != Some(&key.verifying_key().to_bytes()) {
        return Err(format!(
            "the key at {} is not the one the configuration of epoch {} lists for '{name}'",
            path.display(),
            config.epoch()
        ));
    }
    let resolve = move |name: &str| -> Option<SocketAddr> {
        let view = members.borrow();
        view.iter()
            .filter(|m| {
                m.id == name && matches!(m.state, MemberState::Alive | MemberState::Suspect)
            })
            .find_map(|m| m.addr.parse().ok())
    };
    PbftOrdering::start(
        PbftSetup {
            key,
            config,
            // The paper's checkpoint interval, a view change after 500 ms
            // without progress: LAN timings.
            settings: Settings::default(),
            dir: Some(data_dir.join(PBFT_DIR)),
        },
        TcpTransport::new(Arc::new(resolve)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn genesis(n: usize) -> (Genesis, Vec<SigningKey>) {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let g = Genesis {
            replicas: keys
                .iter()
                .enumerate()
                .map(|(i, k)| GenesisReplica {
                    name: format!("n{i}"),
                    key: mesh_proto::hex::encode(&k.verifying_key().to_bytes()),
                })
                .collect(),
        };
        (g, keys)
    }

    #[test]
    fn genesis_files_are_checked() {
        let (g, _) = genesis(4);
        assert_eq!(g.replica_set().unwrap().n(), 4);
        let (three, _) = genesis(3);
        assert!(three.replica_set().unwrap_err().contains("at least 4"));
        let mut dup = g.clone();
        dup.replicas[1].name = "n0".into();
        assert!(dup.replica_set().unwrap_err().contains("twice"));
        let mut bad = g.clone();
        bad.replicas[2].key = "abc".into();
        assert!(bad.replica_set().unwrap_err().contains("n2"));
        let dir = std::env::temp_dir().join(format!("mesh-genesis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("g.json");
        std::fs::write(&file, r#"{"replicas": [], "extra": 1}"#).unwrap();
        assert!(Genesis::read(&file).unwrap_err().contains("not valid"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_is_created_once_then_loaded() {
        let dir = std::env::temp_dir().join(format!("mesh-key-{}", std::process::id()));
        let path = key_path(&dir);
        let (a, created) = load_or_create_key(&path).unwrap();
        assert!(created);
        let (b, created) = load_or_create_key(&path).unwrap();
        assert!(!created);
        assert_eq!(a.to_bytes(), b.to_bytes());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "zz").unwrap();
        assert!(load_key(&path).unwrap_err().contains("not hex"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
