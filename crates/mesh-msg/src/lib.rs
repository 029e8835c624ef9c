//! Agent Mesh messaging core: pub/sub across the whole mesh and direct messages
//! with receipts, as a sans-IO state machine.
//!
//! Every node runs one [`Messenger`]. A publish on any node is delivered to the
//! matching subscribers of that node at once and sent to every reachable peer
//! over a reliable, ordered stream per (sender incarnation, receiver
//! incarnation) pair ([`stream`]): sequence numbers, cumulative acks that carry
//! each item's delivery result, retransmission on a tick, a reorder buffer, and
//! a fresh stream when either side restarts. So messages of one publisher reach
//! a subscriber in publish order, at most once, and the publish call learns how
//! many subscribers on every node got it. Direct messages (to an agent, a node
//! or everyone) ride the same streams; a recipient without a listener keeps
//! them in a mailbox until its TTL, and a sender keeps retrying a briefly
//! unreachable recipient until the TTL, then reports the message expired.
//!
//! Time comes in as `now_ms` arguments; nothing here reads a clock, a socket or
//! a random source, and every map is ordered, so a run is a pure function of its
//! inputs (the simulator in `mesh-sim` drives it under loss and restarts).
//!
//! - [`channel`]: channel names, patterns, the reserved system and inbox channels;
//! - [`wire`]: the messages nodes exchange, and what subscribers receive;
//! - [`stream`]: one direction of a reliable ordered stream (sender and receiver halves);
//! - [`core`]: the [`Messenger`] itself.
#![forbid(unsafe_code)]

pub mod channel;
pub mod core;
pub mod stream;
pub mod wire;

pub use channel::{ChannelError, MAX_CHANNEL_BYTES, MAX_PAYLOAD_BYTES};
pub use core::{
    Config, DirectReport, DirectStatus, Messenger, MsgError, OpId, Output, PeerInfo, PeerQueue,
    PublishReport, SubId,
};
pub use wire::{Message, MessageId, Recipient, Wire};
