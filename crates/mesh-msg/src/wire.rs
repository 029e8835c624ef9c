//! What nodes exchange, and what a subscriber receives.
//!
//! A [`Wire::Data`] carries a run of consecutive items of one stream; the
//! receiver answers with a [`Wire::Ack`] up to the last item it delivered in
//! order, with each newly delivered item's result. A [`Wire::Reset`] tells a
//! sender that it addressed an earlier incarnation of the receiver.
//! Encoded with postcard; the runtime frames it.

use serde::{Deserialize, Serialize};

/// Who a direct message is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Recipient {
    /// The agent with this id, on whichever node it is registered.
    Agent(String),
    /// The node with this name.
    Node(String),
    /// Every node of the mesh (channel `inbox.all`).
    All,
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Agent(a) => write!(f, "agent {a}"),
            Recipient::Node(n) => write!(f, "node {n}"),
            Recipient::All => f.write_str("all"),
        }
    }
}

/// A message's identity: the node it entered the mesh on, that node's
/// incarnation, and a number that grows with every message the incarnation
/// sends, so one publisher's messages can be put in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId {
    /// Name of the node the message entered the mesh on.
    pub origin: String,
    /// That node's incarnation number when it sent the message.
    pub epoch: u64,
    /// Per-incarnation message counter, from 1.
    pub n: u64,
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.origin, self.epoch, self.n)
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Mesh-wide identity, assigned by the origin node.
    pub id: MessageId,
    /// The channel it was published on (`inbox.*` for a direct message).
    pub channel: String,
    /// Who sent it, as the sender named itself (an agent id, a client name).
    pub from: String,
    /// For direct messages, the recipient as addressed.
    pub to: Option<Recipient>,
    /// The application's bytes, at most [`crate::MAX_PAYLOAD_BYTES`].
    pub payload: Vec<u8>,
    /// The origin's clock when it was sent (ms since its Unix epoch), for
    /// display and latency figures only; nothing orders by it.
    pub sent_unix_ms: u64,
}

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A pub/sub message, for every matching subscriber of the receiver.
    Publish(Message),
    /// A direct message; `ttl_ms` is what was left of its time to live when sent.
    Direct {
        /// The message, addressed to an `inbox.*` channel.
        msg: Message,
        /// Milliseconds it may wait in the receiver's mailbox.
        ttl_ms: u64,
    },
    /// A place holder for an item that expired before it was acknowledged: it
    /// keeps the sequence contiguous and is never delivered.
    Skip,
}

impl Message {
    /// Roughly its encoded size, for batching and queue bounds.
    pub fn weight(&self) -> usize {
        self.payload.len() + self.channel.len() + self.from.len() + self.id.origin.len() + 32
    }
}

impl Item {
    /// Roughly its encoded size (see [`Message::weight`]).
    pub fn weight(&self) -> usize {
        match self {
            Item::Publish(m) | Item::Direct { msg: m, .. } => m.weight(),
            Item::Skip => 1,
        }
    }
}

/// What happened to an item at its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemResult {
    /// Handed to this many subscribers.
    Delivered(u32),
    /// A direct message with no listener yet: kept in the recipient's mailbox.
    Queued,
    /// A direct message whose mailbox was full: dropped.
    MailboxFull,
    /// A [`Item::Skip`] place holder: nothing was delivered.
    Skipped,
}

/// A message between two nodes' messengers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// A run of consecutive items of one stream, sender to receiver.
    Data {
        /// The sender's incarnation.
        epoch: u64,
        /// Which of the sender's streams (a new one each time it starts over
        /// with a peer, even of the same incarnation).
        stream: u64,
        /// The receiver's incarnation the stream is addressed to.
        dest_epoch: u64,
        /// Sequence number of `items[0]`; the rest follow one by one.
        first_seq: u64,
        /// The oldest item the sender still waits to hear about: the ack
        /// carries results from here, so a lost ack loses no result.
        base: u64,
        /// The items, from `first_seq` on.
        items: Vec<Item>,
    },
    /// The receiver's cumulative acknowledgement of a stream, with results.
    Ack {
        /// The acknowledged stream's sender incarnation.
        epoch: u64,
        /// The acknowledged stream's number (see [`Wire::Data`]'s `stream`).
        stream: u64,
        /// The acknowledging receiver's incarnation.
        dest_epoch: u64,
        /// Every item up to and including this one was delivered in order.
        upto: u64,
        /// Results of items up to `upto`, as far as the receiver remembers them.
        results: Vec<(u64, ItemResult)>,
    },
    /// "You addressed my incarnation `wanted`; I am `current`."
    Reset {
        /// The incarnation the data message was addressed to.
        wanted: u64,
        /// The receiver's actual incarnation.
        current: u64,
    },
    /// "Which subscriptions do you have?" (Redis's `PUBSUB` counts them
    /// mesh-wide). Best effort, outside the streams: the node runtime answers.
    SubsQuery {
        /// Query number chosen by the asker, echoed in the report.
        id: u64,
    },
    /// The answer: each subscription pattern of the node and how many
    /// subscriptions hold it.
    SubsReport {
        /// The [`Wire::SubsQuery`] id this answers.
        id: u64,
        /// Each pattern and how many of the node's subscriptions hold it.
        patterns: Vec<(String, u32)>,
    },
}

/// The largest encoded wire message a node accepts.
pub const MAX_WIRE_BYTES: usize = 8 * 1024 * 1024;

impl Wire {
    /// Its postcard encoding, unframed.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encoding to a Vec cannot fail")
    }

    /// Parses a postcard encoding; refuses anything over [`MAX_WIRE_BYTES`].
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        if bytes.len() > MAX_WIRE_BYTES {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item() -> impl Strategy<Value = Item> {
        (
            "[a-z]{1,8}",
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u64>(),
            0u8..3,
        )
            .prop_map(|(origin, epoch, n, payload, ttl, kind)| {
                let msg = Message {
                    id: MessageId {
                        origin: origin.clone(),
                        epoch,
                        n,
                    },
                    channel: format!("c.{origin}"),
                    from: origin.clone(),
                    to: (kind == 1).then_some(Recipient::Agent(origin)),
                    payload,
                    sent_unix_ms: n,
                };
                match kind {
                    0 => Item::Publish(msg),
                    1 => Item::Direct { msg, ttl_ms: ttl },
                    _ => Item::Skip,
                }
            })
    }

    proptest! {
        #[test]
        fn wire_round_trips(items in proptest::collection::vec(item(), 0..8), e in any::<u64>(), s in any::<u64>()) {
            let w = Wire::Data { epoch: e, stream: 3, dest_epoch: e ^ 1, first_seq: s, base: s / 2, items };
            prop_assert_eq!(Wire::decode(&w.encode()).unwrap(), w);
            let a = Wire::Ack { epoch: e, stream: 3, dest_epoch: 2, upto: s, results: vec![(s, ItemResult::Delivered(3)), (s, ItemResult::Queued)] };
            prop_assert_eq!(Wire::decode(&a.encode()).unwrap(), a);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Wire::decode(&bytes);
        }
    }
}
