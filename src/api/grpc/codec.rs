//! gRPC message framing: every message on a stream is a 1-byte compressed
//! flag, a 4-byte big-endian length and the payload. This module turns
//! payloads into frames and a sequence of HTTP/2 DATA chunks back into
//! payloads, enforcing the receive size limit before buffering. Sans-IO.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::status::{Code, Status};

/// Bytes of the prefix before every message.
pub const PREFIX_BYTES: usize = 5;

/// The 5-byte prefix of an uncompressed message of `len` bytes; `None` when
/// the length does not fit gRPC's 32-bit length field.
pub fn encode_prefix(len: usize) -> Option<[u8; PREFIX_BYTES]> {
    let len = u32::try_from(len).ok()?;
    let mut prefix = [0u8; PREFIX_BYTES];
    prefix[1..].copy_from_slice(&len.to_be_bytes());
    Some(prefix)
}

/// One framed message (prefix and payload in one buffer), for senders that
/// want a single `Bytes`.
pub fn encode(message: &[u8]) -> Result<Bytes, Status> {
    let prefix = encode_prefix(message.len()).ok_or_else(|| {
        Status::resource_exhausted(format!("grpc: message of {} bytes exceeds the 4 GiB frame limit", message.len()))
    })?;
    let mut framed = BytesMut::with_capacity(PREFIX_BYTES + message.len());
    framed.put_slice(&prefix);
    framed.put_slice(message);
    Ok(framed.freeze())
}

/// Reassembles messages from DATA chunks of any size.
///
/// Fast path: a chunk holding whole messages is sliced, not copied. Only a
/// message split across chunks is copied once into `partial`. The length in
/// a prefix is checked against `max_message_bytes` before any payload is
/// buffered, so a peer cannot make the decoder hold more than one prefix plus
/// `max_message_bytes`.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes of an incomplete message, collected across chunks.
    partial: BytesMut,
    /// The unparsed rest of the latest chunk (only when `partial` is empty).
    chunk: Bytes,
    max_message_bytes: usize,
}

impl Decoder {
    /// A decoder that rejects messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Decoder {
        Decoder { partial: BytesMut::new(), chunk: Bytes::new(), max_message_bytes }
    }

    /// Adds the next DATA chunk.
    pub fn push(&mut self, chunk: Bytes) {
        if self.partial.is_empty() && self.chunk.is_empty() {
            self.chunk = chunk;
            return;
        }
        self.spill_chunk();
        self.partial.extend_from_slice(&chunk);
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered_bytes(&self) -> usize {
        self.partial.len() + self.chunk.len()
    }

    /// `true` when no bytes are waiting: the stream may end here cleanly.
    pub fn is_empty(&self) -> bool {
        self.buffered_bytes() == 0
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or
    /// the status to fail the call with (oversized, compressed, bad flag).
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.partial.is_empty() {
            let Some(len) = self.check_prefix(&self.chunk)? else {
                self.spill_chunk();
                return Ok(None);
            };
            if self.chunk.len() < PREFIX_BYTES + len {
                self.spill_chunk();
                self.reserve_for(len);
                return Ok(None);
            }
            let message = self.chunk.slice(PREFIX_BYTES..PREFIX_BYTES + len);
            self.chunk.advance(PREFIX_BYTES + len);
            return Ok(Some(message));
        }
        let Some(len) = self.check_prefix(&self.partial)? else {
            return Ok(None);
        };
        if self.partial.len() < PREFIX_BYTES + len {
            self.reserve_for(len);
            return Ok(None);
        }
        let mut framed = self.partial.split_to(PREFIX_BYTES + len);
        framed.advance(PREFIX_BYTES);
        Ok(Some(framed.freeze()))
    }

    /// The status for a stream that ended with bytes still buffered.
    pub fn truncated_status(&self) -> Status {
        Status::internal(format!(
            "grpc: stream ended inside a message ({} bytes of an incomplete message)",
            self.buffered_bytes()
        ))
    }

    /// Parses the prefix at the start of `buf`: `Ok(None)` when fewer than
    /// five bytes are there, else the payload length after the checks.
    fn check_prefix(&self, buf: &[u8]) -> Result<Option<usize>, Status> {
        let Some(prefix) = buf.get(..PREFIX_BYTES) else {
            return Ok(None);
        };
        match prefix[0] {
            0 => {}
            1 => return Err(Status::unimplemented("grpc: compressed messages not supported")),
            flag => return Err(Status::internal(format!("grpc: received unexpected payload format {flag}"))),
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.max_message_bytes {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!("grpc: received message larger than max ({len} vs. {})", self.max_message_bytes),
            ));
        }
        Ok(Some(len))
    }

    /// Moves the unparsed chunk into `partial`.
    fn spill_chunk(&mut self) {
        if !self.chunk.is_empty() {
            self.partial.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
    }

    /// Makes room for the rest of a message of `len` payload bytes once
    /// half of it has arrived, so the last chunks append without regrowing.
    /// Not earlier: a bare prefix must not make the server allocate a whole
    /// message's worth of memory.
    fn reserve_for(&mut self, len: usize) {
        let total = PREFIX_BYTES + len;
        if self.partial.len().saturating_mul(2) >= total {
            self.partial.reserve(total.saturating_sub(self.partial.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        encode(payload).map(|b| b.to_vec()).unwrap_or_default()
    }

    fn drain(decoder: &mut Decoder) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Ok(Some(message)) = decoder.next_message() {
            out.push(message);
        }
        out
    }

    #[test]
    fn prefix_is_flag_then_big_endian_length() {
        assert_eq!(encode_prefix(0x0102_0304), Some([0, 1, 2, 3, 4]));
        assert_eq!(frame(b"ab"), vec![0, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn message_split_across_many_chunks_is_reassembled() {
        let payload: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        let wire = frame(&payload);
        let mut decoder = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            decoder.push(Bytes::copy_from_slice(piece));
            got.extend(drain(&mut decoder));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref(), payload.as_slice());
        assert!(decoder.is_empty());
    }

    #[test]
    fn several_messages_in_one_chunk_come_out_in_order() {
        let mut wire = frame(b"one");
        wire.extend(frame(b""));
        wire.extend(frame(b"three"));
        let mut decoder = Decoder::new(64);
        decoder.push(Bytes::from(wire));
        let got = drain(&mut decoder);
        let got: Vec<&[u8]> = got.iter().map(|b| b.as_ref()).collect();
        assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
        assert!(decoder.is_empty());
    }

    #[test]
    fn message_tail_and_next_message_share_a_chunk() {
        let mut wire = frame(b"first message");
        wire.extend(frame(b"second"));
        let (a, b) = wire.split_at(9);
        let mut decoder = Decoder::new(64);
        decoder.push(Bytes::copy_from_slice(a));
        assert_eq!(drain(&mut decoder).len(), 0);
        decoder.push(Bytes::copy_from_slice(b));
        let got = drain(&mut decoder);
        assert_eq!(got, vec![&b"first message"[..], &b"second"[..]]);
    }

    #[test]
    fn oversized_message_is_rejected_from_its_prefix_alone() {
        let mut decoder = Decoder::new(4);
        decoder.push(Bytes::from_static(&[0, 0, 0, 0, 5]));
        let err = decoder.next_message().err();
        assert_eq!(err, Some(Status::resource_exhausted("grpc: received message larger than max (5 vs. 4)")));
    }

    #[test]
    fn huge_declared_length_is_rejected_without_allocating() {
        let mut decoder = Decoder::new(1 << 20);
        decoder.push(Bytes::from_static(&[0, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2]));
        let err = decoder.next_message().err().map(|s| s.code);
        assert_eq!(err, Some(Code::ResourceExhausted));
        assert!(decoder.partial.capacity() < 1024);
    }

    #[test]
    fn bare_prefix_does_not_reserve_the_whole_message() {
        let mut decoder = Decoder::new(1 << 20);
        decoder.push(Bytes::from_static(&[0, 0, 0x10, 0, 0, 1]));
        assert_eq!(decoder.next_message(), Ok(None));
        assert!(decoder.partial.capacity() < 64 * 1024);
    }

    #[test]
    fn truncated_message_leaves_bytes_buffered() {
        let wire = frame(b"hello world");
        let mut decoder = Decoder::new(64);
        decoder.push(Bytes::copy_from_slice(&wire[..8]));
        assert_eq!(decoder.next_message(), Ok(None));
        assert!(!decoder.is_empty());
        assert_eq!(decoder.truncated_status().code, Code::Internal);
    }

    #[test]
    fn truncated_prefix_waits_for_more_bytes() {
        let mut decoder = Decoder::new(64);
        decoder.push(Bytes::from_static(&[0, 0]));
        assert_eq!(decoder.next_message(), Ok(None));
        decoder.push(Bytes::from_static(&[0, 0, 1, b'x']));
        assert_eq!(decoder.next_message(), Ok(Some(Bytes::from_static(b"x"))));
    }

    #[test]
    fn compressed_flag_is_unimplemented_and_unknown_flag_internal() {
        let mut decoder = Decoder::new(64);
        decoder.push(Bytes::from_static(&[1, 0, 0, 0, 0]));
        let err = decoder.next_message().err();
        assert_eq!(err, Some(Status::unimplemented("grpc: compressed messages not supported")));
        let mut decoder = Decoder::new(64);
        decoder.push(Bytes::from_static(&[7, 0, 0, 0, 0]));
        assert_eq!(decoder.next_message().err().map(|s| s.code), Some(Code::Internal));
    }
}
