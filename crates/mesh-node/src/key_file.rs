//! ed25519 secret keys in files: 32 bytes as hex, mode 0600, written to a
//! temporary file, synced and renamed (a crash never leaves half a key).
//! Used for pBFT replica keys and for agents' vote keys (`mesh agent`).

use std::io::{Read, Write};
use std::path::Path;

use ed25519_dalek::SigningKey;

/// Loads the secret key at `path`, or creates one there (from /dev/urandom,
/// written to a temporary file with mode 0600, synced, then renamed).
/// Returns it and whether it was created.
pub fn load_or_create_key(path: &Path) -> Result<(SigningKey, bool), String> {
    if path.exists() {
        return load_key(path).map(|k| (k, false));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|e| format!("cannot read /dev/urandom for a new key: {e}"))?;
    let tmp = path.with_extension("key.tmp");
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(mesh_proto::hex::encode(&secret).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write key {}: {e}", path.display()))?;
    Ok((SigningKey::from_bytes(&secret), true))
}

/// Loads an existing secret key (32 bytes, hex).
pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
    let bytes = mesh_proto::hex::decode(text.trim())
        .map_err(|e| format!("key file {} is not hex: {e}", path.display()))?;
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("key file {} must hold 32 bytes", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}
