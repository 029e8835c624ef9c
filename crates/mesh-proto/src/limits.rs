//! Hard size limits on everything that arrives from the network.
//!
//! A packet or frame over its limit is dropped and counted; it never allocates
//! its claimed size first.

/// Largest SWIM datagram we send. Under the common 1500-byte Ethernet MTU minus
/// IP/UDP headers, so a datagram is never fragmented.
pub const MAX_DATAGRAM_BYTES: usize = 1400;

/// Largest UDP datagram we accept. Anything longer is oversized garbage; the
/// receive buffer is one byte larger so an oversized packet is detectable.
pub const MAX_DATAGRAM_ACCEPT_BYTES: usize = MAX_DATAGRAM_BYTES + 64;

/// Largest TCP frame (anti-entropy snapshots of soft state travel on TCP).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// Most simultaneous inbound TCP connections a node serves.
pub const MAX_INBOUND_CONNECTIONS: usize = 256;

/// Most capabilities a node may advertise.
pub const MAX_CAPS: usize = 64;
/// Longest capability, zone or node name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
