//! Agents' ed25519 keys, kept by the agent's side (never sent to a node).
//!
//! `mesh agent register` creates `<dir>/<agent-id>.key` (the 32-byte secret in
//! hex, mode 0600) unless it exists; `mesh vote cast` signs with it. The
//! directory is `--keys-dir`, `MESH_KEYS_DIR`, or `~/.config/agent-mesh/keys`.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};

/// The default key directory.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(x).join("agent-mesh/keys");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config/agent-mesh/keys"),
        None => PathBuf::from(".agent-mesh-keys"),
    }
}

fn path_of(dir: &Path, agent: &str) -> anyhow::Result<PathBuf> {
    // Agent ids may hold '/' and ':'; keep the file name flat and unambiguous.
    let safe: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() {
        anyhow::bail!("empty agent id");
    }
    Ok(dir.join(format!("{safe}.key")))
}

/// Loads the agent's key, or creates and stores a new one. Returns it and
/// whether it was created.
pub fn load_or_create(dir: &Path, agent: &str) -> anyhow::Result<(SigningKey, bool)> {
    mesh_node::key_file::load_or_create_key(&path_of(dir, agent)?).map_err(anyhow::Error::msg)
}

/// Loads an existing key.
pub fn load(dir: &Path, agent: &str) -> anyhow::Result<SigningKey> {
    let path = path_of(dir, agent)?;
    if !path.exists() {
        anyhow::bail!(
            "no key for agent '{agent}' at {} (register the agent with `mesh agent register` from this machine, or pass --keys-dir)",
            path.display()
        );
    }
    load_file(&path)
}

fn load_file(path: &Path) -> anyhow::Result<SigningKey> {
    mesh_node::key_file::load_key(path).map_err(anyhow::Error::msg)
}

/// Signs a vote the way the state machine verifies it.
pub fn sign_vote(
    key: &SigningKey,
    proposal: &str,
    agent: &str,
    approve: bool,
    reason: Option<&str>,
    seq: u64,
) -> String {
    let msg = mesh_state::proposals::vote_signing_bytes(proposal, agent, approve, reason, seq);
    mesh_proto::hex::encode(&key.sign(&msg).to_bytes())
}
