//! The membership wire format: a 3-byte header, then a body.
//!
//! ```text
//! +------+---------+------+----------------------------------+
//! | 'M'  | version | kind | body (foca packet, or postcard)   |
//! +------+---------+------+----------------------------------+
//! ```
//!
//! `kind` says what the body is. SWIM packets are foca's own encoding and travel
//! as UDP datagrams, as do the small join and suspicion-notice messages. The
//! anti-entropy exchange carries whole soft-state tables and travels in TCP frames
//! (see `mesh_proto::frame`). Anything that fails to decode is dropped by the
//! caller and counted under [`WireError::reason`].

use serde::{Deserialize, Serialize};

use crate::identity::MeshIdentity;
use mesh_proto::SoftState;

/// First byte of every packet.
pub const MAGIC: u8 = b'M';
/// Protocol version; a node drops packets of another version (and counts them).
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 3;

const KIND_SWIM: u8 = 1;
const KIND_JOIN: u8 = 2;
const KIND_WELCOME: u8 = 3;
const KIND_SUSPECT_NOTICE: u8 = 4;
const KIND_SYNC_DIGEST: u8 = 5;
const KIND_SYNC_REPLY: u8 = 6;
const KIND_SYNC_PUSH: u8 = 7;

/// The foca packet inside a well-formed SWIM datagram, without copying it.
pub fn swim_body(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        [MAGIC, VERSION, KIND_SWIM, body @ ..] if !body.is_empty() => Some(body),
        _ => None,
    }
}

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A UDP datagram: may be lost, must fit [`mesh_proto::limits::MAX_DATAGRAM_BYTES`].
    Datagram,
    /// A TCP frame: reliable while the peer is reachable, bounded by the frame limit.
    Stream,
}

/// One soft-state entry in an anti-entropy exchange: whose it is and what it says.
pub type SoftEntry<I> = (I, SoftState);

/// Every message of the membership protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope<I: MeshIdentity> {
    /// A foca SWIM packet.
    Swim(Vec<u8>),
    /// "I want to join": sent to a seed's address, whose identity we don't know yet.
    Join {
        /// The joiner's identity.
        from: I,
    },
    /// The seed's answer, so the joiner can ask it for the member list.
    Welcome {
        /// The seed's identity.
        from: I,
    },
    /// "I suspect you": sent straight to a suspected member so it can refute
    /// quickly instead of waiting for the suspicion to reach it by gossip.
    SuspectNotice {
        /// The suspecting member, which the suspect answers directly.
        from: I,
        /// The suspect's incarnation under suspicion; the suspect refutes with a higher one.
        incarnation: u16,
    },
    /// Anti-entropy step 1: the sender's soft-state digest (key, generation, version).
    SyncDigest {
        /// The member starting the exchange; the reply goes to it.
        from: I,
        /// One line per soft state the sender holds.
        digest: Vec<DigestEntry<I>>,
    },
    /// Step 2: entries the receiver has that are newer, and the keys it wants.
    SyncReply {
        /// The replying member; the push goes to it.
        from: I,
        /// Soft states the replier holds newer than the digest (or missing from it).
        entries: Vec<SoftEntry<I>>,
        /// Keys whose soft state the digest lists newer than the replier holds.
        want: Vec<<I as foca::Identity>::Addr>,
    },
    /// Step 3: the entries asked for.
    SyncPush {
        /// The member that started the exchange.
        from: I,
        /// The soft states the reply asked for.
        entries: Vec<SoftEntry<I>>,
    },
}

/// One line of a soft-state digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry<I> {
    /// Whose soft state it is: identity, and so key and generation.
    pub key: I,
    /// The soft-state version the sender holds for it.
    pub version: u64,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The packet is shorter than the header, or is a SWIM packet with no body.
    #[error("packet too short ({len} bytes)")]
    Truncated {
        /// The packet's length in bytes.
        len: usize,
    },
    /// The first byte is not [`MAGIC`].
    #[error("bad magic byte 0x{found:02x}")]
    BadMagic {
        /// The first byte found.
        found: u8,
    },
    /// The packet is for another protocol version than [`VERSION`].
    #[error("unsupported protocol version {found} (this node speaks {VERSION})")]
    BadVersion {
        /// The version byte found.
        found: u8,
    },
    /// The kind byte names no message of this protocol.
    #[error("unknown message kind {kind}")]
    UnknownKind {
        /// The kind byte found.
        kind: u8,
    },
    /// The body does not decode as its kind's message, or has trailing bytes.
    #[error("undecodable {kind} body: {detail}")]
    Body {
        /// The message kind the header named (`join`, `sync-reply`, ...).
        kind: &'static str,
        /// The decoder's error, or how many bytes trailed the message.
        detail: String,
    },
}

impl WireError {
    /// A short label for the dropped-packets metric.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::BadMagic { .. } => "bad_magic",
            WireError::BadVersion { .. } => "bad_version",
            WireError::UnknownKind { .. } => "unknown_kind",
            WireError::Body { .. } => "bad_body",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Notice<I> {
    from: I,
    incarnation: u16,
}
#[derive(Serialize, Deserialize)]
struct Digest<I> {
    from: I,
    digest: Vec<DigestEntry<I>>,
}
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "I: MeshIdentity"))]
struct Reply<I: MeshIdentity> {
    from: I,
    entries: Vec<SoftEntry<I>>,
    want: Vec<<I as foca::Identity>::Addr>,
}
#[derive(Serialize, Deserialize)]
struct Push<I> {
    from: I,
    entries: Vec<SoftEntry<I>>,
}

impl<I: MeshIdentity> Envelope<I> {
    /// How this message travels.
    pub fn channel(&self) -> Channel {
        match self {
            Envelope::SyncDigest { .. }
            | Envelope::SyncReply { .. }
            | Envelope::SyncPush { .. } => Channel::Stream,
            _ => Channel::Datagram,
        }
    }

    /// Wraps raw foca bytes without copying the body twice.
    pub fn encode_swim(foca_packet: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + foca_packet.len());
        out.extend_from_slice(&[MAGIC, VERSION, KIND_SWIM]);
        out.extend_from_slice(foca_packet);
        out
    }

    /// Encodes the message with its header.
    pub fn encode(&self) -> Vec<u8> {
        fn with<T: Serialize>(kind: u8, body: &T) -> Vec<u8> {
            let out = vec![MAGIC, VERSION, kind];
            postcard::to_extend(body, out).expect("encoding to a Vec cannot fail")
        }
        match self {
            Envelope::Swim(bytes) => Self::encode_swim(bytes),
            Envelope::Join { from } => with(KIND_JOIN, from),
            Envelope::Welcome { from } => with(KIND_WELCOME, from),
            Envelope::SuspectNotice { from, incarnation } => with(
                KIND_SUSPECT_NOTICE,
                &Notice {
                    from: from.clone(),
                    incarnation: *incarnation,
                },
            ),
            Envelope::SyncDigest { from, digest } => with(
                KIND_SYNC_DIGEST,
                &Digest {
                    from: from.clone(),
                    digest: digest.clone(),
                },
            ),
            Envelope::SyncReply {
                from,
                entries,
                want,
            } => with(
                KIND_SYNC_REPLY,
                &Reply {
                    from: from.clone(),
                    entries: entries.clone(),
                    want: want.clone(),
                },
            ),
            Envelope::SyncPush { from, entries } => with(
                KIND_SYNC_PUSH,
                &Push {
                    from: from.clone(),
                    entries: entries.clone(),
                },
            ),
        }
    }

    /// Decodes a packet. Never panics, never allocates more than the packet holds.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() < HEADER_LEN {
            return Err(WireError::Truncated { len: bytes.len() });
        }
        if bytes[0] != MAGIC {
            return Err(WireError::BadMagic { found: bytes[0] });
        }
        if bytes[1] != VERSION {
            return Err(WireError::BadVersion { found: bytes[1] });
        }
        let body = &bytes[HEADER_LEN..];
        fn parse<'a, T: serde::Deserialize<'a>>(
            kind: &'static str,
            body: &'a [u8],
        ) -> Result<T, WireError> {
            let (value, rest) = postcard::take_from_bytes(body).map_err(|e| WireError::Body {
                kind,
                detail: e.to_string(),
            })?;
            if !rest.is_empty() {
                return Err(WireError::Body {
                    kind,
                    detail: format!("{} trailing bytes", rest.len()),
                });
            }
            Ok(value)
        }
        match bytes[2] {
            KIND_SWIM => {
                if body.is_empty() {
                    return Err(WireError::Truncated { len: bytes.len() });
                }
                Ok(Envelope::Swim(body.to_vec()))
            }
            KIND_JOIN => Ok(Envelope::Join {
                from: parse("join", body)?,
            }),
            KIND_WELCOME => Ok(Envelope::Welcome {
                from: parse("welcome", body)?,
            }),
            KIND_SUSPECT_NOTICE => {
                let n: Notice<I> = parse("suspect-notice", body)?;
                Ok(Envelope::SuspectNotice {
                    from: n.from,
                    incarnation: n.incarnation,
                })
            }
            KIND_SYNC_DIGEST => {
                let d: Digest<I> = parse("sync-digest", body)?;
                Ok(Envelope::SyncDigest {
                    from: d.from,
                    digest: d.digest,
                })
            }
            KIND_SYNC_REPLY => {
                let r: Reply<I> = parse("sync-reply", body)?;
                Ok(Envelope::SyncReply {
                    from: r.from,
                    entries: r.entries,
                    want: r.want,
                })
            }
            KIND_SYNC_PUSH => {
                let p: Push<I> = parse("sync-push", body)?;
                Ok(Envelope::SyncPush {
                    from: p.from,
                    entries: p.entries,
                })
            }
            kind => Err(WireError::UnknownKind { kind }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerId;
    use proptest::prelude::*;

    fn peer(name: &str, port: u16, generation: u64) -> PeerId {
        PeerId {
            name: name.into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            generation,
        }
    }

    fn arb_peer() -> impl Strategy<Value = PeerId> {
        ("[a-z][a-z0-9-]{0,12}", 1u16.., any::<u64>()).prop_map(|(n, p, g)| peer(&n, p, g))
    }

    fn arb_soft() -> impl Strategy<Value = SoftState> {
        (any::<u64>(), proptest::collection::vec("[a-z]{1,6}", 0..4)).prop_map(|(v, caps)| {
            SoftState {
                version: v,
                caps,
                ..Default::default()
            }
        })
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope<PeerId>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..200).prop_map(Envelope::Swim),
            arb_peer().prop_map(|from| Envelope::Join { from }),
            arb_peer().prop_map(|from| Envelope::Welcome { from }),
            (arb_peer(), any::<u16>())
                .prop_map(|(from, incarnation)| Envelope::SuspectNotice { from, incarnation }),
            (
                arb_peer(),
                proptest::collection::vec((arb_peer(), any::<u64>()), 0..5)
            )
                .prop_map(|(from, d)| {
                    Envelope::SyncDigest {
                        from,
                        digest: d
                            .into_iter()
                            .map(|(key, version)| DigestEntry { key, version })
                            .collect(),
                    }
                }),
            (
                arb_peer(),
                proptest::collection::vec((arb_peer(), arb_soft()), 0..4),
                proptest::collection::vec("[a-z]{1,5}", 0..3)
            )
                .prop_map(|(from, entries, want)| Envelope::SyncReply {
                    from,
                    entries,
                    want
                }),
            (
                arb_peer(),
                proptest::collection::vec((arb_peer(), arb_soft()), 0..4)
            )
                .prop_map(|(from, entries)| Envelope::SyncPush { from, entries }),
        ]
    }

    #[test]
    fn header_errors_are_named() {
        assert_eq!(
            Envelope::<PeerId>::decode(b"M").unwrap_err().reason(),
            "truncated"
        );
        assert_eq!(
            Envelope::<PeerId>::decode(b"X\x01\x01a")
                .unwrap_err()
                .reason(),
            "bad_magic"
        );
        assert_eq!(
            Envelope::<PeerId>::decode(b"M\x09\x01a")
                .unwrap_err()
                .reason(),
            "bad_version"
        );
        assert_eq!(
            Envelope::<PeerId>::decode(b"M\x01\x63a")
                .unwrap_err()
                .reason(),
            "unknown_kind"
        );
        assert_eq!(
            Envelope::<PeerId>::decode(b"M\x01\x02\xff\xff")
                .unwrap_err()
                .reason(),
            "bad_body"
        );
    }

    proptest! {
        #[test]
        fn roundtrip(env in arb_envelope()) {
            let bytes = env.encode();
            prop_assert_eq!(Envelope::<PeerId>::decode(&bytes).unwrap(), env);
        }

        #[test]
        fn truncation_never_panics(env in arb_envelope(), cut in any::<prop::sample::Index>()) {
            let bytes = env.encode();
            let cut = cut.index(bytes.len());
            let _ = Envelope::<PeerId>::decode(&bytes[..cut]);
        }

        #[test]
        fn garbage_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), kind in 1u8..8) {
            if bytes.len() >= 3 { bytes[0] = MAGIC; bytes[1] = VERSION; bytes[2] = kind; }
            let _ = Envelope::<PeerId>::decode(&bytes);
        }
    }
}
