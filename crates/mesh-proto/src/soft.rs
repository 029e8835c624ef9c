//! Soft state: what a node says about itself, gossiped and eventually consistent.
//!
//! Each node owns its own entry and bumps `version` whenever it changes; everyone
//! else keeps the highest version they have seen (newer versions win). Soft state
//! is never used for decisions that must not be lost: those go through the
//! replicated log.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_CAPS, MAX_NAME_BYTES};

/// Measured load of a node. Every figure is measured; `None` means not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// Process CPU use over the last sampling window, in percent of one core.
    pub cpu_percent: Option<f32>,
    /// Work items running on this node now.
    pub running: u32,
    /// Work items queued on this node now.
    pub queued: u32,
    /// Work items its agents can run at once (their claims' slots; 0: unknown).
    pub slots: u32,
}

impl Load {
    /// Running work over slots, if the slots are known.
    pub fn fraction(&self) -> Option<f64> {
        (self.slots > 0).then(|| self.running as f64 / self.slots as f64)
    }
}

/// A node's self-description.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SoftState {
    /// Bumped by the owner on every change; receivers keep the highest.
    pub version: u64,
    /// Failure domain (rack, zone, host) chosen by the operator.
    pub zone: Option<String>,
    /// Capabilities the node offers (`gpu`, `rust`, `review`, ...).
    pub caps: Vec<String>,
    /// Software version of the node.
    pub software_version: String,
    /// Measured load.
    pub load: Load,
    /// Where the node serves HTTP, if it does (so peers and tools can find it).
    pub http_addr: Option<String>,
}

/// Why a soft state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoftStateError {
    /// The node advertises more capabilities than [`MAX_CAPS`].
    #[error("too many capabilities: {count} (at most {max})")]
    TooManyCaps {
        /// Capabilities advertised.
        count: usize,
        /// The most allowed ([`MAX_CAPS`]).
        max: usize,
    },
    /// A capability, zone or node name is empty, too long, or has a character
    /// outside `a-z`, `0-9`, `-`, `_`, `.`, `:`.
    #[error(
        "'{value}' is not a valid {what}: use 1 to {max} characters from a-z, 0-9, '-', '_', '.', ':'"
    )]
    BadName {
        /// Which kind of name it is (`capability`, `zone`, ...), for the message.
        what: &'static str,
        /// The name as given.
        value: String,
        /// Longest name allowed, in bytes ([`MAX_NAME_BYTES`]).
        max: usize,
    },
}

/// Checks a capability, zone or node name: short, printable, no spaces.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), SoftStateError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_BYTES
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(SoftStateError::BadName {
            what,
            value: value.to_string(),
            max: MAX_NAME_BYTES,
        })
    }
}

impl SoftState {
    /// Checks the operator-supplied parts (zone and capabilities).
    pub fn validate(&self) -> Result<(), SoftStateError> {
        if self.caps.len() > MAX_CAPS {
            return Err(SoftStateError::TooManyCaps {
                count: self.caps.len(),
                max: MAX_CAPS,
            });
        }
        for cap in &self.caps {
            validate_name("capability", cap)?;
        }
        if let Some(zone) = &self.zone {
            validate_name("zone", zone)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("capability", "gpu").is_ok());
        assert!(validate_name("capability", "has space").is_err());
        assert!(validate_name("zone", "").is_err());
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(validate_name("zone", &long).is_err());
    }

    proptest! {
        #[test]
        fn postcard_roundtrip(version in any::<u64>(), cpu in proptest::option::of(0f32..800.0),
                              caps in proptest::collection::vec("[a-z]{1,8}", 0..8),
                              zone in proptest::option::of("[a-z0-9-]{1,12}"), running in any::<u32>()) {
            let s = SoftState { version, zone, caps, software_version: "0.1.0".into(),
                load: Load { cpu_percent: cpu, running, queued: 3, slots: 4 }, http_addr: Some("127.0.0.1:7070".into()) };
            let bytes = postcard::to_allocvec(&s).unwrap();
            let back: SoftState = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = postcard::from_bytes::<SoftState>(&bytes);
        }
    }
}
