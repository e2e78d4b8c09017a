//! Length-prefixed framing: `be32(len) || message`.
//!
//! [`FrameDecoder`] is sans-IO: the caller pushes whatever bytes arrived and
//! pulls complete frames out. A length above the decoder's limit is an error
//! before any of the body is buffered, so a peer cannot make us allocate more
//! than one maximum frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// No frame of protocol version 1 may exceed this, whatever a relay or client
/// is configured to accept: a fetch page of 64 KiB blobs fits with room.
pub const PROTOCOL_MAX_FRAME: usize = 1024 * 1024;

/// Framing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left over.
        buffered: usize,
    },
}

/// Appends `message` as one frame to `out`.
pub fn encode_frame<M: Message>(message: &M, out: &mut BytesMut) {
    let len = message.encoded_len();
    out.reserve(FRAME_HEADER_LEN + len);
    // Lengths above u32 cannot be produced: every encoder caps its frames
    // far below PROTOCOL_MAX_FRAME, and the decoder refuses anything larger.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message
        .encode(out)
        .expect("invariant: BytesMut grows, so encoding cannot run out of space");
}

/// Incremental frame decoder with a size limit.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max` (capped at
    /// [`PROTOCOL_MAX_FRAME`]).
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max: max.min(PROTOCOL_MAX_FRAME),
        }
    }

    /// The size limit in force.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Adds bytes received from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header.copy_from_slice(&self.buf[..FRAME_HEADER_LEN]);
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < FRAME_HEADER_LEN + len {
            self.buf.reserve(FRAME_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Call when the peer finished sending: an error if a partial frame is
    /// left over.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use proptest::prelude::*;

    fn ping(id: u64) -> wire::ClientFrame {
        wire::ClientFrame {
            id,
            request: Some(wire::client_frame::Request::Ping(wire::Ping {})),
        }
    }

    #[test]
    fn oversize_length_is_refused_before_buffering_the_body() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&1000u32.to_be_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                len: 1000,
                max: 100
            })
        );
    }

    #[test]
    fn a_partial_frame_at_the_end_is_truncation() {
        let mut out = BytesMut::new();
        encode_frame(&ping(7), &mut out);
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&out[..out.len() - 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert!(matches!(
            decoder.finish(),
            Err(FrameError::Truncated { .. })
        ));
    }

    proptest! {
        /// Frames survive any split of the byte stream into chunks.
        #[test]
        fn frames_round_trip_through_any_chunking(
            ids in proptest::collection::vec(any::<u64>(), 1..20),
            cuts in proptest::collection::vec(1usize..17, 1..50),
        ) {
            let mut wire_bytes = BytesMut::new();
            for id in &ids {
                encode_frame(&ping(*id), &mut wire_bytes);
            }
            let mut decoder = FrameDecoder::new(1024);
            let mut got = Vec::new();
            let mut rest: &[u8] = &wire_bytes;
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                decoder.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(frame) = decoder.next_frame().unwrap() {
                    got.push(wire::ClientFrame::decode(frame).unwrap().id);
                }
            }
            decoder.finish().unwrap();
            prop_assert_eq!(got, ids);
        }
    }
}
