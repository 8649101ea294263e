//! The bytes on a peer link: stream preambles, length-prefixed frames and the
//! authentication hello. Pure functions and small state machines, no I/O: the
//! link code feeds them whatever chunks QUIC hands over and acts on the result.
//!
//! Layout (all integers little-endian):
//! - data stream (unidirectional, one per class and direction):
//!   `"CKV" class:u8` once, then frames `len:u32 payload[len]`;
//! - control stream (the dialer's one bidirectional stream): one hello each
//!   way, `"CKVH" version:u8 role:u8 sender:u64 receiver:u64 mac[32]`.
//!
//! Every decoder bounds what it accepts before it allocates: a length above
//! the class's maximum is an error, and a frame's buffer grows with the bytes
//! that actually arrived, never to the announced length up front.

use bytes::{Bytes, BytesMut};
use ring::hmac;

use super::MessageClass;
use crate::types::MemberId;

/// First three bytes of every data stream.
const STREAM_MAGIC: [u8; 3] = *b"CKV";
/// Length of a data stream's preamble: magic and class tag.
pub(crate) const PREAMBLE_LEN: usize = 4;
/// Length of a frame's length prefix.
pub(crate) const FRAME_HEADER_LEN: usize = 4;
/// A frame body is first allocated at most this large; it grows as data
/// arrives, so a hostile length prefix costs nothing until the bytes come.
const FRAME_INITIAL_ALLOC_BYTES_MAX: usize = 1 << 20;

/// First four bytes of a hello.
const HELLO_MAGIC: [u8; 4] = *b"CKVH";
/// The hello format's version.
const HELLO_VERSION: u8 = 1;
/// Length of a hello on the wire.
pub(crate) const HELLO_LEN: usize = 4 + 1 + 1 + 8 + 8 + MAC_LEN;
/// Length of the HMAC-SHA256 proof.
const MAC_LEN: usize = 32;
/// Length of the keying material exported from the TLS session.
pub(crate) const EKM_LEN: usize = 32;
/// RFC 5705 / RFC 8446 §7.5 exporter label binding a hello to its session.
pub(crate) const EKM_LABEL: &[u8] = b"EXPORTER-corekv-peer-hello-v1";
/// Domain separation for the MAC input.
const MAC_CONTEXT: &[u8] = b"corekv peer hello v1";

/// The preamble that opens a data stream of `class`.
pub(crate) fn preamble(class: MessageClass) -> [u8; PREAMBLE_LEN] {
    [STREAM_MAGIC[0], STREAM_MAGIC[1], STREAM_MAGIC[2], class.tag()]
}

/// The length prefix of a frame carrying `len` bytes. The caller has checked
/// `len` against the class maximum, which is below `u32::MAX`.
pub(crate) fn frame_header(len: usize) -> [u8; FRAME_HEADER_LEN] {
    debug_assert!(len <= u32::MAX as usize);
    (len as u32).to_le_bytes()
}

/// Why bytes from a peer were refused. Each one closes the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// A data stream did not start with `CKV`.
    #[error("data stream preamble {0:02x?} is not \"CKV\"+class")]
    BadPreamble([u8; 3]),
    /// A data stream announced a class this build does not know.
    #[error("data stream announced unknown message class {0}")]
    UnknownClass(u8),
    /// A frame's length prefix exceeds the class maximum.
    #[error("{class} frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// The stream's class.
        class: MessageClass,
        /// The announced length.
        len: u32,
        /// The limit for the class.
        max: u32,
    },
}

/// Decodes one incoming data stream: the preamble, then frames.
#[derive(Debug)]
pub(crate) struct StreamDecoder {
    preamble: [u8; PREAMBLE_LEN],
    preamble_have: usize,
    class: Option<MessageClass>,
    frame_max: [u32; 3],
    frame: FrameState,
}

#[derive(Debug)]
enum FrameState {
    /// Collecting the 4-byte length prefix.
    Header { buf: [u8; FRAME_HEADER_LEN], have: usize },
    /// Collecting a body of `len` bytes.
    Body { len: usize, buf: BytesMut },
}

impl StreamDecoder {
    /// A decoder for a stream whose class is not known yet; `frame_max[c]`
    /// bounds frames of class `c` (indexed by [`MessageClass::index`]).
    pub(crate) fn new(frame_max: [u32; 3]) -> StreamDecoder {
        StreamDecoder {
            preamble: [0; PREAMBLE_LEN],
            preamble_have: 0,
            class: None,
            frame_max,
            frame: FrameState::Header { buf: [0; FRAME_HEADER_LEN], have: 0 },
        }
    }

    /// The stream's class, once its preamble has arrived.
    pub(crate) fn class(&self) -> Option<MessageClass> {
        self.class
    }

    /// Feeds the next chunk of the stream, in order. Calls `deliver` with
    /// every frame completed by it; returns the class's frames' payloads
    /// zero-copy when a frame lies inside one chunk.
    pub(crate) fn feed(
        &mut self,
        mut data: Bytes,
        deliver: &mut dyn FnMut(MessageClass, Bytes),
    ) -> Result<(), WireError> {
        let class = match self.class {
            Some(class) => class,
            None => {
                let take = (PREAMBLE_LEN - self.preamble_have).min(data.len());
                self.preamble[self.preamble_have..self.preamble_have + take].copy_from_slice(&data[..take]);
                self.preamble_have += take;
                let _ = data.split_to(take);
                if self.preamble_have < PREAMBLE_LEN {
                    return Ok(());
                }
                let magic = [self.preamble[0], self.preamble[1], self.preamble[2]];
                if magic != STREAM_MAGIC {
                    return Err(WireError::BadPreamble(magic));
                }
                let class =
                    MessageClass::from_tag(self.preamble[3]).ok_or(WireError::UnknownClass(self.preamble[3]))?;
                self.class = Some(class);
                class
            }
        };
        let max = self.frame_max[class.index()];
        while !data.is_empty() {
            match &mut self.frame {
                FrameState::Header { buf, have } => {
                    if *have == 0 && data.len() >= FRAME_HEADER_LEN {
                        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                        check_len(class, len, max)?;
                        let len = len as usize;
                        if data.len() >= FRAME_HEADER_LEN + len {
                            // The whole frame is in this chunk: no copy.
                            let _ = data.split_to(FRAME_HEADER_LEN);
                            deliver(class, data.split_to(len));
                            continue;
                        }
                        let _ = data.split_to(FRAME_HEADER_LEN);
                        self.frame = FrameState::Body { len, buf: body_buf(len) };
                        continue;
                    }
                    let take = (FRAME_HEADER_LEN - *have).min(data.len());
                    buf[*have..*have + take].copy_from_slice(&data[..take]);
                    *have += take;
                    let _ = data.split_to(take);
                    if *have == FRAME_HEADER_LEN {
                        let len = u32::from_le_bytes(*buf);
                        check_len(class, len, max)?;
                        let len = len as usize;
                        if len == 0 {
                            deliver(class, Bytes::new());
                            self.frame = FrameState::Header { buf: [0; FRAME_HEADER_LEN], have: 0 };
                        } else {
                            self.frame = FrameState::Body { len, buf: body_buf(len) };
                        }
                    }
                }
                FrameState::Body { len, buf } => {
                    let take = (*len - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    let _ = data.split_to(take);
                    if buf.len() == *len {
                        let frame = std::mem::take(buf).freeze();
                        self.frame = FrameState::Header { buf: [0; FRAME_HEADER_LEN], have: 0 };
                        deliver(class, frame);
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_len(class: MessageClass, len: u32, max: u32) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::Oversized { class, len, max });
    }
    Ok(())
}

fn body_buf(len: usize) -> BytesMut {
    BytesMut::with_capacity(len.min(FRAME_INITIAL_ALLOC_BYTES_MAX))
}

/// Which end of the connection wrote a hello. Part of the MAC input, so a
/// hello can never be reflected back to its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The side that opened the QUIC connection.
    Dialer = 1,
    /// The side that accepted it.
    Acceptor = 2,
}

/// A decoded hello, not yet checked against the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) role: Role,
    pub(crate) sender: MemberId,
    pub(crate) receiver: MemberId,
}

/// Why a hello was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HelloError {
    /// Not a corekv hello at all.
    #[error("hello has bad magic {0:02x?}")]
    NotAHello([u8; 4]),
    /// A hello format this build does not speak.
    #[error("hello version {0} is not supported (want {HELLO_VERSION})")]
    UnsupportedVersion(u8),
    /// A role byte other than dialer or acceptor.
    #[error("hello role byte {0} is unknown")]
    UnknownRole(u8),
    /// The proof does not verify: the peer has another cluster token, or the
    /// hello was not made for this TLS session.
    #[error("hello proof does not verify (cluster token mismatch, or a relayed hello)")]
    ProofMismatch,
}

/// The 32-byte key that signs hellos: the cluster token itself (HMAC takes
/// keys of any length).
pub(crate) fn hello_key(cluster_token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, cluster_token.as_bytes())
}

fn mac_input(role: Role, sender: MemberId, receiver: MemberId, ekm: &[u8; EKM_LEN]) -> Vec<u8> {
    let mut input = Vec::with_capacity(MAC_CONTEXT.len() + 1 + 16 + EKM_LEN);
    input.extend_from_slice(MAC_CONTEXT);
    input.push(role as u8);
    input.extend_from_slice(&sender.get().to_le_bytes());
    input.extend_from_slice(&receiver.get().to_le_bytes());
    input.extend_from_slice(ekm);
    input
}

/// Encodes the hello `sender` sends to `receiver` over the session whose
/// exported keying material is `ekm`.
pub(crate) fn encode_hello(
    key: &hmac::Key,
    role: Role,
    sender: MemberId,
    receiver: MemberId,
    ekm: &[u8; EKM_LEN],
) -> [u8; HELLO_LEN] {
    let tag = hmac::sign(key, &mac_input(role, sender, receiver, ekm));
    let mut out = [0u8; HELLO_LEN];
    out[..4].copy_from_slice(&HELLO_MAGIC);
    out[4] = HELLO_VERSION;
    out[5] = role as u8;
    out[6..14].copy_from_slice(&sender.get().to_le_bytes());
    out[14..22].copy_from_slice(&receiver.get().to_le_bytes());
    out[22..].copy_from_slice(tag.as_ref());
    out
}

/// Decodes a hello and verifies its proof against this session's `ekm`
/// (in constant time). The caller still checks the member IDs and role.
pub(crate) fn verify_hello(key: &hmac::Key, bytes: &[u8; HELLO_LEN], ekm: &[u8; EKM_LEN]) -> Result<Hello, HelloError> {
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != HELLO_MAGIC {
        return Err(HelloError::NotAHello(magic));
    }
    if bytes[4] != HELLO_VERSION {
        return Err(HelloError::UnsupportedVersion(bytes[4]));
    }
    let role = match bytes[5] {
        1 => Role::Dialer,
        2 => Role::Acceptor,
        other => return Err(HelloError::UnknownRole(other)),
    };
    let id_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        MemberId(u64::from_le_bytes(b))
    };
    let (sender, receiver) = (id_at(6), id_at(14));
    hmac::verify(key, &mac_input(role, sender, receiver, ekm), &bytes[22..]).map_err(|_| HelloError::ProofMismatch)?;
    Ok(Hello { role, sender, receiver })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: [u32; 3] = [16, 64, 16];

    type Decoded = (Vec<(MessageClass, Vec<u8>)>, Result<(), WireError>);

    fn decode_all(chunks: &[&[u8]]) -> Decoded {
        let mut dec = StreamDecoder::new(MAX);
        let mut out = Vec::new();
        for chunk in chunks {
            let r = dec.feed(Bytes::copy_from_slice(chunk), &mut |c, b| out.push((c, b.to_vec())));
            if r.is_err() {
                return (out, r);
            }
        }
        (out, Ok(()))
    }

    fn stream(class: MessageClass, frames: &[&[u8]]) -> Vec<u8> {
        let mut v = preamble(class).to_vec();
        for f in frames {
            v.extend_from_slice(&frame_header(f.len()));
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn frames_survive_any_chunking() {
        let bytes = stream(MessageClass::Snapshot, &[b"hello", b"", b"0123456789abcdef0123", b"z"]);
        for split in 1..bytes.len() {
            let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
            let (out, r) = decode_all(&chunks);
            assert_eq!(r, Ok(()));
            let got: Vec<&[u8]> = out.iter().map(|(_, b)| b.as_slice()).collect();
            assert_eq!(got, vec![&b"hello"[..], b"", b"0123456789abcdef0123", b"z"], "split {split}");
            assert!(out.iter().all(|(c, _)| *c == MessageClass::Snapshot));
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body_arrives() {
        let mut bytes = preamble(MessageClass::Raft).to_vec();
        bytes.extend_from_slice(&17u32.to_le_bytes());
        let (out, r) = decode_all(&[&bytes]);
        assert!(out.is_empty());
        assert_eq!(r, Err(WireError::Oversized { class: MessageClass::Raft, len: 17, max: 16 }));
        let (_, r) = decode_all(&[&bytes[..5], &bytes[5..]]);
        assert!(matches!(r, Err(WireError::Oversized { .. })));
        let mut huge = preamble(MessageClass::Forward).to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_all(&[&huge]).1, Err(WireError::Oversized { .. })));
    }

    #[test]
    fn a_bad_preamble_or_unknown_class_is_refused() {
        assert_eq!(decode_all(&[b"XKV\x00"]).1, Err(WireError::BadPreamble(*b"XKV")));
        assert_eq!(decode_all(&[b"CK", b"V\x09"]).1, Err(WireError::UnknownClass(9)));
    }

    #[test]
    fn a_hello_verifies_only_with_the_same_token_session_and_role() {
        let key = hello_key("cluster-a");
        let ekm = [7u8; EKM_LEN];
        let h = encode_hello(&key, Role::Dialer, MemberId(1), MemberId(2), &ekm);
        let ok = verify_hello(&key, &h, &ekm);
        assert_eq!(ok.as_ref().map(|h| (h.role, h.sender, h.receiver)), Ok((Role::Dialer, MemberId(1), MemberId(2))));
        assert_eq!(verify_hello(&hello_key("cluster-b"), &h, &ekm), Err(HelloError::ProofMismatch));
        assert_eq!(verify_hello(&key, &h, &[8u8; EKM_LEN]), Err(HelloError::ProofMismatch));
        let mut reflected = h;
        reflected[5] = Role::Acceptor as u8;
        assert_eq!(verify_hello(&key, &reflected, &ekm), Err(HelloError::ProofMismatch));
        let mut other_sender = h;
        other_sender[6] = 3;
        assert_eq!(verify_hello(&key, &other_sender, &ekm), Err(HelloError::ProofMismatch));
        let mut bad = h;
        bad[0] = b'X';
        assert!(matches!(verify_hello(&key, &bad, &ekm), Err(HelloError::NotAHello(_))));
        bad = h;
        bad[4] = 2;
        assert_eq!(verify_hello(&key, &bad, &ekm), Err(HelloError::UnsupportedVersion(2)));
        bad = h;
        bad[5] = 0;
        assert_eq!(verify_hello(&key, &bad, &ekm), Err(HelloError::UnknownRole(0)));
    }
}
