//! Wire-level types shared by every Agent Mesh layer.
//!
//! Nothing here does I/O. The protocol cores (`mesh-membership`, `mesh-msg`,
//! `mesh-state`), the runtime (`mesh-node`) and its front ends agree on:
//!
//! - [`profile`]: the timing presets (`local`, `lan`, `wan`) every node of one mesh shares;
//! - [`soft`]: the soft state a node gossips about itself (load, capabilities, zone, version);
//! - [`frame`]: the length-prefixed frame codec used on TCP streams, with its size limit;
//! - [`limits`]: the hard caps on packet and frame sizes, so bad input is bounded;
//! - [`hex`]: hex encoding of keys and signatures;
//! - [`resp`]: the Redis wire format (RESP2/RESP3 requests and replies);
//! - [`units`]: parsing of durations (`250ms`, `5s`) and probabilities (`10%`);
//! - [`glob`]: Redis-style patterns for keys and pub/sub channels;
//! - [`url`]: percent-encoding of URL path segments for HTTP clients.
#![forbid(unsafe_code)]

pub mod frame;
pub mod glob;
pub mod hex;
pub mod limits;
pub mod profile;
pub mod resp;
pub mod soft;
pub mod units;
pub mod url;

pub use frame::{FrameError, decode_frame, encode_frame};
pub use profile::{Profile, Timings};
pub use soft::{Load, SoftState};

/// The version of this software, gossiped in soft state so mixed-version meshes are visible.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
