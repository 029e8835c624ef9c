//! Agents' ed25519 keys, kept by the agent's side (never sent to a node).
//!
//! `mesh agent register` creates `<dir>/<agent-id>.key` (the 32-byte secret in
//! hex, mode 0600) unless it exists; `mesh vote cast` signs with it. The
//! directory is `--keys-dir`, `MESH_KEYS_DIR`, or `~/.config/agent-mesh/keys`.

use std::io::Read;
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
    let path = path_of(dir, agent)?;
    if path.exists() {
        return Ok((load_file(&path)?, false));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create key directory {}: {e}", dir.display()))?;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom for a new key: {e}"))?;
    let key = SigningKey::from_bytes(&secret);
    let tmp = path.with_extension("key.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(mesh_proto::hex::encode(&secret).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok((key, true))
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key {}: {e}", path.display()))?;
    let bytes = mesh_proto::hex::decode(&text)
        .map_err(|e| anyhow::anyhow!("key file {} is not hex: {e}", path.display()))?;
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("key file {} must hold 32 bytes", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
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
