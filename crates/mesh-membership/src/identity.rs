//! Who a member is: the identity foca gossips about.
//!
//! An identity has a stable cluster-wide key (the node name), a transport
//! endpoint (where packets go) and a generation, bumped on every restart and
//! whenever the node must rejoin after being declared dead. Two identities with
//! the same key are the same node: the higher generation wins (foca's
//! `win_addr_conflict`), which is how a restarted node replaces its old self.
//!
//! The core is generic over the identity so the simulator can use a compact one
//! ([`MeshIdentity`] is implemented by the daemon's [`PeerId`] and by the
//! simulator's own 8-byte id) while running exactly the same protocol code.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fmt::{self, Debug, Display};
use std::hash::Hash;
use std::net::SocketAddr;

/// What the membership core needs of an identity.
pub trait MeshIdentity:
    foca::Identity<
        Addr: Ord + Display + Debug + Send + Sync + Serialize + DeserializeOwned + 'static,
    > + Hash
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Where packets for this member are sent.
    type Endpoint: Clone + Eq + Hash + Debug + Display + Send + Sync + 'static;

    /// The stable cluster-wide key (foca's address).
    fn key(&self) -> Self::Addr {
        foca::Identity::addr(self)
    }
    /// Where to send packets.
    fn endpoint(&self) -> Self::Endpoint;
    /// Bumped on restart and on forced rejoin; the higher one wins.
    fn generation(&self) -> u64;
}

/// The daemon's identity: a node name, its gossip address and a generation.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerId {
    /// Stable node name (`--node-id`, persisted in the data directory).
    pub name: String,
    /// UDP gossip and TCP RPC address (one port for both).
    pub addr: SocketAddr,
    /// Start time in Unix milliseconds, bumped by one on each forced rejoin.
    pub generation: u64,
}

impl Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.generation)
    }
}

impl foca::Identity for PeerId {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(PeerId {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

impl MeshIdentity for PeerId {
    type Endpoint = SocketAddr;

    fn endpoint(&self) -> SocketAddr {
        self.addr
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}
