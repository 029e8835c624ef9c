//! Length-prefixed frames for TCP streams.
//!
//! A frame is a 4-byte big-endian length followed by that many payload bytes.
//! The length is checked against [`MAX_FRAME_BYTES`](crate::limits::MAX_FRAME_BYTES)
//! before anything is allocated, so a hostile length prefix costs nothing.

use crate::limits::MAX_FRAME_BYTES;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header or the announced payload: read more and retry.
    #[error("incomplete frame: need {needed} more bytes")]
    Incomplete {
        /// Bytes still missing before the header or the whole frame is in the buffer.
        needed: usize,
    },
    /// The length prefix is over the limit: the stream must be closed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload length the prefix announced, in bytes.
        len: usize,
        /// The frame limit it broke, in bytes ([`MAX_FRAME_BYTES`]).
        max: usize,
    },
    /// A zero-length frame carries nothing and is never sent by a well-behaved peer.
    #[error("empty frame")]
    Empty,
}

/// Prefixes `payload` with its length.
///
/// Panics if `payload` exceeds the frame limit: callers build payloads from
/// bounded data, so a larger one is a programming error.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    assert!(
        payload.len() <= MAX_FRAME_BYTES,
        "frame payload of {} bytes over the limit",
        payload.len()
    );
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes one frame from the front of `buf`, returning the payload and the
/// number of bytes consumed.
pub fn decode_frame(buf: &[u8]) -> Result<(&[u8], usize), FrameError> {
    if buf.len() < 4 {
        return Err(FrameError::Incomplete {
            needed: 4 - buf.len(),
        });
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let total = 4 + len;
    if buf.len() < total {
        return Err(FrameError::Incomplete {
            needed: total - buf.len(),
        });
    }
    Ok((&buf[4..total], total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let buf = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(
            decode_frame(&buf),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: MAX_FRAME_BYTES
            })
        );
    }

    #[test]
    fn empty_frame_is_an_error() {
        assert_eq!(decode_frame(&[0, 0, 0, 0]), Err(FrameError::Empty));
    }

    proptest! {
        #[test]
        fn roundtrip(payload in proptest::collection::vec(any::<u8>(), 1..4096)) {
            let framed = encode_frame(&payload);
            let (decoded, used) = decode_frame(&framed).unwrap();
            prop_assert_eq!(decoded, &payload[..]);
            prop_assert_eq!(used, framed.len());
        }

        #[test]
        fn truncated_is_incomplete(payload in proptest::collection::vec(any::<u8>(), 1..512), cut in 0usize..516) {
            let framed = encode_frame(&payload);
            let cut = cut.min(framed.len() - 1);
            let is_incomplete = matches!(decode_frame(&framed[..cut]), Err(FrameError::Incomplete { .. }));
            prop_assert!(is_incomplete);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_frame(&bytes);
        }
    }
}
