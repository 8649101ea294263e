//! QUIC links to the other members: the peer transport of DESIGN.md §8.
//!
//! Owns one UDP socket (the peer URL's host and port), the QUIC endpoint on
//! it (quinn-proto, driven directly from the reactor), one authenticated
//! connection per peer, and bounded per-peer, per-class send queues. Hands
//! whole messages (opaque bytes) up and takes whole messages down; it never
//! looks inside them, never knows Raft, and never decides membership (the
//! caller says who the peers are with [`TransportHandle::set_peers`]).
//!
//! Layers, outside in:
//! - `reactor`: the thin monoio shell: the socket, a receive task that never
//!   cancels its in-flight `recv_from`, a driver task for timers, queue
//!   flushing and `send_to`, and [`TransportHandle`].
//! - `engine`: the sans-IO state machine: the quinn-proto endpoint and
//!   connections, who dials whom, the hello, stream framing, queues, inbox,
//!   statistics. It takes `now` and datagrams and returns datagrams.
//! - `wire`: byte formats and their defensive decoders.
//! - `tls`: rustls/quinn configs from PEM files or a self-signed certificate.
//!
//! Links. One QUIC connection per pair of members: **the member with the
//! lower ID dials, the higher one accepts**. A dialer redials with backoff
//! (100 ms doubling to 300 ms; a dial that hears nothing for 300 ms starts
//! over) when its link goes away; an acceptor replaces an older link from the
//! same member when a newer one authenticates (the dialer restarted). QUIC
//! stateless-reset keys are derived from a per-member secret that survives a
//! restart, so a restarted member resets its peers' stale links at once
//! instead of leaving them to the 5 s idle timeout.
//!
//! Streams. The dialer opens one bidirectional control stream for the hello.
//! After authentication each side opens, lazily, one unidirectional stream per
//! [`MessageClass`] it sends, starting with a 4-byte preamble (`"CKV"` + class
//! tag), then frames `len:u32 LE` + payload. Stream priorities (Raft first,
//! then Forward, then Snapshot) and per-stream flow-control windows smaller
//! than the connection's keep a snapshot transfer from delaying Raft messages. All
//! messages queued for a peer in one reactor tick go into its stream in one
//! write (small ones coalesced into one buffer, large ones zero-copy).
//!
//! Authentication. TLS 1.3 in every mode: with [`TlsSetup::Files`] the
//! certificates are checked against the trusted CA (client certificates too
//! with `client_cert_auth`); with [`TlsSetup::Auto`] each member makes a
//! self-signed certificate and certificates are not checked. Then, in every
//! mode, each side sends a hello on the control stream: its member ID, the
//! member ID it believes it talks to, and
//! `HMAC-SHA256(key = cluster token, "corekv peer hello v1" || role || sender
//! || receiver || EKM)`, where EKM is 32 bytes exported from this TLS session
//! (label `EXPORTER-corekv-peer-hello-v1`). A hello that does not verify
//! (other cluster token, or relayed from another session by a
//! man-in-the-middle), names a member that is not a peer, a member other than
//! the one dialed, or arrives out of turn closes the connection with a log
//! line. Nothing from a data stream is read before the hello verified.
//!
//! Limits ([`Limits`]): frame size per class, queue length and bytes per peer
//! and class, and inbox bytes per class. A full Raft queue drops its oldest
//! message (Raft retries); a full Snapshot or Forward queue refuses the new one
//! ([`SendError::QueueFull`]). When the inbox of a class is full, reading
//! stops and QUIC flow control pushes back on the senders of that class only.
//! A malformed frame from an authenticated peer closes that link; nothing a
//! peer sends can panic the node.

mod engine;
mod reactor;
mod tls;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::types::MemberId;

pub use reactor::{Transport, TransportHandle};

/// What kind of traffic a message is. Each class has its own stream per link,
/// its own queue per peer and its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageClass {
    /// Raft protocol messages (appends, votes, heartbeats). Small, latency
    /// sensitive, droppable: a full queue drops its oldest message.
    Raft,
    /// Snapshot chunks. Large; a full queue refuses new chunks.
    Snapshot,
    /// Client requests forwarded to the leader and their replies. A full
    /// queue refuses new ones.
    Forward,
}

impl MessageClass {
    /// All classes, in wire-tag order.
    pub const ALL: [MessageClass; 3] = [MessageClass::Raft, MessageClass::Snapshot, MessageClass::Forward];

    /// Position in per-class arrays, equal to the wire tag.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The tag in a data stream's preamble.
    pub(crate) const fn tag(self) -> u8 {
        self as u8
    }

    /// The class a preamble tag names, if any.
    pub(crate) const fn from_tag(tag: u8) -> Option<MessageClass> {
        match tag {
            0 => Some(MessageClass::Raft),
            1 => Some(MessageClass::Snapshot),
            2 => Some(MessageClass::Forward),
            _ => None,
        }
    }

    /// QUIC send priority of the class's stream: higher goes first.
    pub(crate) const fn priority(self) -> i32 {
        match self {
            MessageClass::Raft => 2,
            MessageClass::Forward => 1,
            MessageClass::Snapshot => 0,
        }
    }

    /// The class's name in logs and errors.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageClass::Raft => "raft",
            MessageClass::Snapshot => "snapshot",
            MessageClass::Forward => "forward",
        }
    }
}

impl fmt::Display for MessageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who this member is on peer links.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// This member's ID.
    pub member_id: MemberId,
    /// `--initial-cluster-token`: the key of every hello; members with another
    /// token are refused.
    pub cluster_token: String,
}

/// How peer links are encrypted and which certificates are trusted.
#[derive(Clone, Debug)]
pub enum TlsSetup {
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`. With a trusted CA, a dialer checks the
    /// server certificate against it and the peer's name (its IP address
    /// unless [`PeerAddr::server_name`] says otherwise); without one the
    /// server certificate is not checked and the hello alone authenticates.
    Files {
        /// This member's certificate chain (PEM).
        cert: PathBuf,
        /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
        /// CA certificates that sign peer certificates (PEM).
        trusted_ca: Option<PathBuf>,
        /// Require and check client certificates on links this member
        /// accepts (needs `trusted_ca`).
        client_cert_auth: bool,
    },
    /// `--peer-auto-tls`, and plain `http://` peer URLs: a self-signed
    /// certificate made at start; links are encrypted and peers authenticated
    /// by the hello's proof over the cluster token.
    Auto,
}

/// Where a peer listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's member ID.
    pub id: MemberId,
    /// Its peer URL's address (UDP).
    pub addr: SocketAddr,
    /// The name its certificate must carry, when the peer URL names a host
    /// rather than an IP address (files mode with a trusted CA only).
    pub server_name: Option<String>,
}

impl From<(MemberId, SocketAddr)> for PeerAddr {
    fn from((id, addr): (MemberId, SocketAddr)) -> PeerAddr {
        PeerAddr { id, addr, server_name: None }
    }
}

/// Bounds for one message class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassLimits {
    /// Largest message, in bytes. Must be the same on every member: a frame
    /// above the receiver's limit closes the link.
    pub frame_bytes_max: u32,
    /// Messages queued per peer before the class's full-queue policy applies.
    pub queue_msgs_max: usize,
    /// Bytes queued per peer before the class's full-queue policy applies
    /// (an empty queue always takes one message).
    pub queue_bytes_max: usize,
    /// Received bytes held for [`TransportHandle::recv`] before reading from
    /// peers stops (may be exceeded by one frame).
    pub inbox_bytes_max: usize,
}

/// Every bound of the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Raft messages.
    pub raft: ClassLimits,
    /// Snapshot chunks.
    pub snapshot: ClassLimits,
    /// Forwarded requests and replies.
    pub forward: ClassLimits,
}

impl Limits {
    /// The bounds of `class`.
    pub const fn of(&self, class: MessageClass) -> &ClassLimits {
        match class {
            MessageClass::Raft => &self.raft,
            MessageClass::Snapshot => &self.snapshot,
            MessageClass::Forward => &self.forward,
        }
    }

    pub(crate) fn frame_max(&self) -> [u32; 3] {
        MessageClass::ALL.map(|c| self.of(c).frame_bytes_max)
    }
}

impl Default for Limits {
    fn default() -> Limits {
        const MIB: usize = 1 << 20;
        Limits {
            raft: ClassLimits {
                frame_bytes_max: 4 << 20,
                queue_msgs_max: 4096,
                queue_bytes_max: 64 * MIB,
                inbox_bytes_max: 64 * MIB,
            },
            snapshot: ClassLimits {
                frame_bytes_max: 64 << 20,
                queue_msgs_max: 16,
                queue_bytes_max: 128 * MIB,
                inbox_bytes_max: 128 * MIB,
            },
            forward: ClassLimits {
                frame_bytes_max: 4 << 20,
                queue_msgs_max: 4096,
                queue_bytes_max: 64 * MIB,
                inbox_bytes_max: 64 * MIB,
            },
        }
    }
}

/// Why [`TransportHandle::send`] did not queue a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The member is not a peer (never added, or removed by `set_peers`).
    #[error("member {:x} is not a peer of this transport", .0.get())]
    UnknownPeer(MemberId),
    /// The message is above the class's frame limit.
    #[error("{class} message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The class.
        class: MessageClass,
        /// The message's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The peer's queue for this class is full (Snapshot and Forward only:
    /// Raft drops its oldest instead). Retry later; the queue drains as the
    /// peer reads.
    #[error("the {class} queue to member {:x} is full", .peer.get())]
    QueueFull {
        /// The peer.
        peer: MemberId,
        /// The class.
        class: MessageClass,
    },
    /// The transport is shutting down.
    #[error("the peer transport is shut down")]
    Closed,
}

/// Counters of one class towards or from one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Messages handed to the peer's stream.
    pub sent_msgs: u64,
    /// Their payload bytes.
    pub sent_bytes: u64,
    /// Messages received from the peer.
    pub received_msgs: u64,
    /// Their payload bytes.
    pub received_bytes: u64,
    /// Messages dropped from a full queue (Raft).
    pub dropped_msgs: u64,
    /// Messages refused by a full queue (Snapshot, Forward).
    pub rejected_msgs: u64,
    /// Messages waiting in the queue now.
    pub queued_msgs: usize,
    /// Their bytes.
    pub queued_bytes: usize,
}

/// The state of the link to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub id: MemberId,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether an authenticated link is up now.
    pub connected: bool,
    /// Links that came up (authenticated) so far.
    pub connects: u64,
    /// Authenticated links that went away so far.
    pub disconnects: u64,
    /// Dials that failed before authenticating (this member dials peers
    /// with higher IDs only).
    pub failed_dials: u64,
    /// Per class, indexed like [`MessageClass::ALL`].
    pub classes: [ClassStats; 3],
}

impl PeerStats {
    /// The counters of `class`.
    pub fn class(&self, class: MessageClass) -> &ClassStats {
        &self.classes[class.index()]
    }
}

/// A snapshot of the transport's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// One entry per peer, by member ID.
    pub peers: Vec<PeerStats>,
    /// Hellos refused (either way): wrong token, wrong member, out of turn,
    /// or no hello in time.
    pub auth_failures: u64,
    /// Links closed because a peer broke the framing or stream rules.
    pub protocol_errors: u64,
    /// Incoming connections refused before the handshake (too many).
    pub refused_connections: u64,
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// QUIC connections open now (authenticated or not).
    pub open_connections: usize,
}

impl TransportStats {
    /// The entry for `peer`, if it is a peer.
    pub fn peer(&self, peer: MemberId) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.id == peer)
    }
}
