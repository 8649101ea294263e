//! The sans-IO state machine of the peer transport: the quinn-proto endpoint
//! and its connections, who dials whom, the hello, stream framing, per-peer
//! queues, the inbox and the counters.
//!
//! It owns no socket and no clock: the shell hands it datagrams and `now`,
//! and asks it for datagrams to send and for the next instant it wants to be
//! woken. It never blocks and never awaits; one peer's state can only make
//! that peer's link wait.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, ConnectionIdGenerator, DatagramEvent, Dir, Endpoint,
    EndpointConfig, Event, HashedConnectionIdGenerator, Incoming, ReadError, StreamEvent, StreamId, VarInt, WriteError,
};
use ring::hmac;

use super::tls::{TlsParts, AUTO_SERVER_NAME};
use super::wire::{self, Role, StreamDecoder, EKM_LABEL, EKM_LEN, HELLO_LEN};
use super::{ClassStats, Limits, MessageClass, PeerAddr, PeerIdentity, PeerStats, SendError, TransportStats};
use crate::types::MemberId;

/// A link must be authenticated this long after it started (handshake and
/// hello), or it is closed. Also bounds one dial attempt.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// A dial that has heard nothing at all from the peer for this long is
/// abandoned and redialed: a peer that restarts answers a fresh Initial at
/// once, while the old attempt's retransmissions back off towards seconds.
const DIAL_SILENCE: Duration = Duration::from_millis(300);
/// First redial delay after a failed dial or a lost link; doubles per failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Largest redial delay: with `DIAL_SILENCE`, a restarted peer is linked
/// again within about 0.6 s.
const BACKOFF_MAX: Duration = Duration::from_millis(300);
/// Raft and Forward messages taken from a queue into the stream in one write.
const BATCH_BYTES_MAX: usize = 4 << 20;
/// Messages up to this size are copied into the batch buffer; larger ones are
/// written as their own chunk, without a copy.
const COPY_BYTES_MAX: usize = 16 << 10;
/// Endpoint-level replies (refusals, stateless resets) waiting to be sent.
const RESPONSES_MAX: usize = 256;
/// Received messages of one class held for the application, whatever their
/// size (empty messages count too).
const INBOX_MSGS_MAX: usize = 1 << 16;
/// Connections beyond twice the peers that may be open at once (handshakes
/// from members not yet known, stale links draining).
const SPARE_LINKS: usize = 8;

/// Application close codes on peer links.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_AUTH: u32 = 1;
const CLOSE_PROTOCOL: u32 = 2;
const CLOSE_REPLACED: u32 = 3;
const CLOSE_REMOVED: u32 = 4;
const CLOSE_TIMEOUT: u32 = 5;
/// The peer was removed from the cluster: it should stop.
const CLOSE_GONE: u32 = 6;

/// Data streams a peer may open: one per class.
const DATA_STREAMS: u32 = 3;
/// Classes in the order their queues are flushed and their inbox is read.
const BY_PRIORITY: [MessageClass; 3] = [MessageClass::Raft, MessageClass::Forward, MessageClass::Snapshot];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// QUIC/TLS handshake in progress.
    Handshaking,
    /// Handshake done; waiting for the peer's hello.
    AwaitingHello,
    /// Authenticated: the link of this member.
    Up(MemberId),
    /// Closed by us or lost; kept only until QUIC has drained it.
    Closed,
}

/// One of our outgoing data streams.
struct OutStream {
    id: StreamId,
    /// Framed bytes taken from the queue but not yet accepted by QUIC.
    chunks: VecDeque<Bytes>,
}

/// One of the peer's data streams.
struct InStream {
    id: StreamId,
    dec: StreamDecoder,
    /// Reading paused because the class's inbox is full.
    stalled: bool,
}

/// One QUIC connection, authenticated or not.
struct Link {
    conn: Connection,
    remote: SocketAddr,
    /// The member we dialed, if we dialed.
    dialed: Option<MemberId>,
    state: LinkState,
    /// Exported keying material of the TLS session, once connected.
    ekm: [u8; EKM_LEN],
    control: Option<StreamId>,
    hello_in: Vec<u8>,
    /// Until when the link may stay unauthenticated.
    deadline: Option<Instant>,
    /// For a dial: when to give up if the peer has not sent a datagram.
    silence_deadline: Option<Instant>,
    out: [Option<OutStream>; 3],
    inbound: Vec<InStream>,
}

impl Link {
    fn new(conn: Connection, remote: SocketAddr, dialed: Option<MemberId>, now: Instant) -> Link {
        Link {
            conn,
            remote,
            dialed,
            state: LinkState::Handshaking,
            ekm: [0; EKM_LEN],
            control: None,
            hello_in: Vec::with_capacity(HELLO_LEN),
            deadline: Some(now + HELLO_TIMEOUT),
            silence_deadline: dialed.map(|_| now + DIAL_SILENCE),
            out: [None, None, None],
            inbound: Vec::new(),
        }
    }

    fn up(&self) -> Option<MemberId> {
        match self.state {
            LinkState::Up(id) => Some(id),
            _ => None,
        }
    }

    /// The member this link is (or is meant to be) with, for logs.
    fn member(&self) -> Option<MemberId> {
        self.up().or(self.dialed)
    }
}

/// Messages waiting for one peer, of one class.
#[derive(Default)]
struct OutQueue {
    msgs: VecDeque<Bytes>,
    bytes: usize,
}

impl OutQueue {
    fn pop(&mut self) -> Option<Bytes> {
        let m = self.msgs.pop_front()?;
        self.bytes -= m.len();
        Some(m)
    }
}

struct Peer {
    addr: SocketAddr,
    server_name: Option<String>,
    queues: [OutQueue; 3],
    /// The authenticated link in use.
    link: Option<ConnectionHandle>,
    /// Our dial in progress (dialers only).
    dialing: Option<ConnectionHandle>,
    next_dial: Instant,
    backoff: Duration,
    connects: u64,
    disconnects: u64,
    failed_dials: u64,
    classes: [ClassStats; 3],
}

impl Peer {
    fn new(addr: &PeerAddr, now: Instant) -> Peer {
        Peer {
            addr: addr.addr,
            server_name: addr.server_name.clone(),
            queues: Default::default(),
            link: None,
            dialing: None,
            next_dial: now,
            backoff: BACKOFF_MIN,
            connects: 0,
            disconnects: 0,
            failed_dials: 0,
            classes: Default::default(),
        }
    }
}

/// Messages received and not yet taken by the application.
struct Inbox {
    queues: [VecDeque<(MemberId, Bytes)>; 3],
    bytes: [usize; 3],
    bytes_max: [usize; 3],
}

impl Inbox {
    fn full(&self, class: MessageClass) -> bool {
        let i = class.index();
        self.bytes[i] >= self.bytes_max[i] || self.queues[i].len() >= INBOX_MSGS_MAX
    }

    fn push(&mut self, from: MemberId, class: MessageClass, msg: Bytes) {
        self.bytes[class.index()] += msg.len();
        self.queues[class.index()].push_back((from, msg));
    }

    fn pop(&mut self) -> Option<(MemberId, MessageClass, Bytes)> {
        for class in BY_PRIORITY {
            if let Some((from, msg)) = self.queues[class.index()].pop_front() {
                self.bytes[class.index()] -= msg.len();
                return Some((from, class, msg));
            }
        }
        None
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

#[derive(Default)]
struct Counters {
    auth_failures: u64,
    protocol_errors: u64,
    refused_connections: u64,
    datagrams_received: u64,
    datagrams_sent: u64,
}

/// The transport's state machine. See the module comment.
pub(crate) struct Engine {
    me: MemberId,
    hello_key: hmac::Key,
    endpoint: Endpoint,
    client_config: ClientConfig,
    verify_server_name: bool,
    limits: Limits,
    links: HashMap<ConnectionHandle, Link>,
    /// Links in transmit round-robin order.
    order: Vec<ConnectionHandle>,
    next_in_order: usize,
    peers: BTreeMap<MemberId, Peer>,
    inbox: Inbox,
    responses: VecDeque<(SocketAddr, Vec<u8>)>,
    counters: Counters,
    reads_stalled: bool,
    closing: bool,
    /// Members removed from the cluster: told so when they call.
    removed: BTreeSet<MemberId>,
    /// A peer said this member was removed from the cluster.
    gone: bool,
}

fn derive_key(secret: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), label);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn min_time(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Engine {
    /// An engine for `identity` with `peers` (this member is skipped if
    /// listed). `allow_mtud` says the socket sets don't-fragment, so QUIC may
    /// probe for a larger path MTU.
    pub(crate) fn new(
        identity: &PeerIdentity,
        tls: TlsParts,
        allow_mtud: bool,
        peers: Vec<PeerAddr>,
        limits: Limits,
        now: Instant,
    ) -> Engine {
        let reset_key = derive_key(&tls.endpoint_secret, b"quic stateless reset");
        let cid_bytes = derive_key(&tls.endpoint_secret, b"quic connection id");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&cid_bytes[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        let mut config = EndpointConfig::new(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &reset_key)));
        config.cid_generator(move || -> Box<dyn ConnectionIdGenerator> {
            Box::new(HashedConnectionIdGenerator::from_key(cid_key))
        });
        let endpoint = Endpoint::new(Arc::new(config), Some(tls.server), allow_mtud, None);
        let mut engine = Engine {
            me: identity.member_id,
            hello_key: wire::hello_key(&identity.cluster_token),
            endpoint,
            client_config: tls.client,
            verify_server_name: tls.verify_server_name,
            limits,
            links: HashMap::new(),
            order: Vec::new(),
            next_in_order: 0,
            peers: BTreeMap::new(),
            inbox: Inbox {
                queues: Default::default(),
                bytes: [0; 3],
                bytes_max: MessageClass::ALL.map(|c| limits.of(c).inbox_bytes_max),
            },
            responses: VecDeque::new(),
            counters: Counters::default(),
            reads_stalled: false,
            closing: false,
            removed: BTreeSet::new(),
            gone: false,
        };
        engine.set_peers(peers, now);
        engine
    }

    // ----- the application side -----

    /// Queues `msg` for `peer`. Never blocks; see [`SendError`] and the
    /// class's full-queue policy.
    pub(crate) fn send(&mut self, peer: MemberId, class: MessageClass, msg: Bytes) -> Result<(), SendError> {
        if self.closing {
            return Err(SendError::Closed);
        }
        let limits = *self.limits.of(class);
        if msg.len() > limits.frame_bytes_max as usize {
            return Err(SendError::TooLarge { class, len: msg.len(), max: limits.frame_bytes_max });
        }
        let p = self.peers.get_mut(&peer).ok_or(SendError::UnknownPeer(peer))?;
        let i = class.index();
        let fits = |q: &OutQueue| {
            q.msgs.is_empty() || (q.msgs.len() < limits.queue_msgs_max && q.bytes + msg.len() <= limits.queue_bytes_max)
        };
        if !fits(&p.queues[i]) {
            match class {
                MessageClass::Raft => {
                    while !fits(&p.queues[i]) && p.queues[i].pop().is_some() {
                        p.classes[i].dropped_msgs += 1;
                    }
                }
                MessageClass::Snapshot | MessageClass::Forward => {
                    p.classes[i].rejected_msgs += 1;
                    return Err(SendError::QueueFull { peer, class });
                }
            }
        }
        p.queues[i].bytes += msg.len();
        p.queues[i].msgs.push_back(msg);
        Ok(())
    }

    /// The next received message: Raft first, then Forward, then Snapshot.
    pub(crate) fn pop_inbox(&mut self) -> Option<(MemberId, MessageClass, Bytes)> {
        self.inbox.pop()
    }

    pub(crate) fn inbox_is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// Whether some stream waits for inbox room ([`Engine::resume_reads`]).
    pub(crate) fn reads_stalled(&self) -> bool {
        self.reads_stalled
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Members removed from the cluster: links to them close with a code
    /// that tells them so, and their calls are answered the same way.
    pub(crate) fn set_removed(&mut self, removed: Vec<MemberId>) {
        self.removed = removed.into_iter().collect();
    }

    /// Whether a peer said this member was removed from the cluster.
    pub(crate) fn removed_from_cluster(&self) -> bool {
        self.gone
    }

    /// Replaces the peer set. Links to removed peers, and to peers whose
    /// address changed, are closed; queues of removed peers are dropped.
    pub(crate) fn set_peers(&mut self, peers: Vec<PeerAddr>, now: Instant) {
        let mut wanted: BTreeMap<MemberId, PeerAddr> =
            peers.into_iter().filter(|p| p.id != self.me).map(|p| (p.id, p)).collect();
        let current: Vec<MemberId> = self.peers.keys().copied().collect();
        for id in current {
            let Some(p) = self.peers.get_mut(&id) else { continue };
            let handles = [p.link, p.dialing];
            match wanted.remove(&id) {
                None => {
                    self.peers.remove(&id);
                    crate::log_info!("peer removed from the transport", "peer" => id);
                    let (code, why) = if self.removed.contains(&id) {
                        (CLOSE_GONE, "member permanently removed from the cluster")
                    } else {
                        (CLOSE_REMOVED, "member removed")
                    };
                    for ch in handles.into_iter().flatten() {
                        self.close_handle(ch, now, code, why);
                    }
                }
                Some(addr) if addr.addr != p.addr || addr.server_name != p.server_name => {
                    crate::log_info!("peer address changed", "peer" => id, "address" => addr.addr);
                    p.addr = addr.addr;
                    p.server_name = addr.server_name;
                    for ch in handles.into_iter().flatten() {
                        self.close_handle(ch, now, CLOSE_REMOVED, "member address changed");
                    }
                    // Redial the new address at once, whatever the old one cost.
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.next_dial = now;
                        p.backoff = BACKOFF_MIN;
                    }
                }
                Some(_) => {}
            }
        }
        for (id, addr) in wanted {
            crate::log_info!("peer added to the transport", "peer" => id, "address" => addr.addr);
            self.peers.insert(id, Peer::new(&addr, now));
        }
    }

    /// Closes every link (telling the peers) and refuses new work.
    pub(crate) fn close_all(&mut self, now: Instant) {
        self.closing = true;
        let handles: Vec<ConnectionHandle> = self.links.keys().copied().collect();
        for ch in handles {
            self.close_handle(ch, now, CLOSE_SHUTDOWN, "member shutting down");
        }
    }

    /// Test hook: opens a new data stream to `peer` and writes `raw` on it,
    /// unframed. False if there is no link up or no stream credit.
    #[cfg(test)]
    pub(crate) fn inject_stream(&mut self, peer: MemberId, raw: &[u8]) -> bool {
        let Some(link) = self.peers.get(&peer).and_then(|p| p.link).and_then(|ch| self.links.get_mut(&ch)) else {
            return false;
        };
        let Some(id) = link.conn.streams().open(Dir::Uni) else { return false };
        link.conn.send_stream(id).write(raw) == Ok(raw.len())
    }

    /// Test hook: appends `raw`, unframed, to the open `class` stream to `peer`.
    #[cfg(test)]
    pub(crate) fn inject_into(&mut self, peer: MemberId, class: MessageClass, raw: Bytes) -> bool {
        let Some(link) = self.peers.get(&peer).and_then(|p| p.link).and_then(|ch| self.links.get_mut(&ch)) else {
            return false;
        };
        let Some(out) = link.out[class.index()].as_mut() else { return false };
        out.chunks.push_back(raw);
        true
    }

    /// Stops all work without telling anyone (a crash, for tests).
    #[cfg(test)]
    pub(crate) fn abort(&mut self) {
        self.closing = true;
    }

    pub(crate) fn stats(&self) -> TransportStats {
        let peers = self
            .peers
            .iter()
            .map(|(id, p)| {
                let mut classes = p.classes;
                for (i, c) in classes.iter_mut().enumerate() {
                    c.queued_msgs = p.queues[i].msgs.len();
                    c.queued_bytes = p.queues[i].bytes;
                }
                PeerStats {
                    id: *id,
                    addr: p.addr,
                    connected: p.link.is_some(),
                    connects: p.connects,
                    disconnects: p.disconnects,
                    failed_dials: p.failed_dials,
                    classes,
                }
            })
            .collect();
        TransportStats {
            peers,
            auth_failures: self.counters.auth_failures,
            protocol_errors: self.counters.protocol_errors,
            refused_connections: self.counters.refused_connections,
            datagrams_received: self.counters.datagrams_received,
            datagrams_sent: self.counters.datagrams_sent,
            open_connections: self.links.len(),
        }
    }

    // ----- the network side -----

    /// Handles one UDP datagram from `remote`.
    pub(crate) fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, data: BytesMut) {
        self.counters.datagrams_received += 1;
        let mut buf = Vec::new();
        match self.endpoint.handle(now, remote, None, None, data, &mut buf) {
            None => {}
            Some(DatagramEvent::ConnectionEvent(ch, event)) => {
                if let Some(link) = self.links.get_mut(&ch) {
                    link.conn.handle_event(event);
                }
                self.drive(ch, now);
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(incoming, now),
            Some(DatagramEvent::Response(t)) => {
                buf.truncate(t.size);
                self.push_response(t.destination, buf);
            }
        }
    }

    /// Runs expired timers, fails links that did not authenticate in time,
    /// and starts due dials.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let handles: Vec<ConnectionHandle> = self.links.keys().copied().collect();
        for ch in handles {
            let Some(mut link) = self.links.remove(&ch) else { continue };
            if link.conn.poll_timeout().is_some_and(|t| t <= now) {
                link.conn.handle_timeout(now);
            }
            if link.state != LinkState::Closed && link.up().is_none() && link.deadline.is_some_and(|d| d <= now) {
                self.unauthenticated_timeout(ch, &mut link, now);
            }
            if link.silence_deadline.is_some_and(|d| d <= now) {
                link.silence_deadline = None;
                if link.state == LinkState::Handshaking && link.conn.stats().udp_rx.datagrams == 0 {
                    crate::log_debug!("dialed peer is silent; redialing", "peer" => link.member(), "remote" => link.remote);
                    self.end_link(ch, &mut link, now, Some((CLOSE_TIMEOUT, "no answer")));
                }
            }
            self.links.insert(ch, link);
            self.drive(ch, now);
        }
        self.dial_due(now);
    }

    /// The next instant [`Engine::handle_timeout`] has work.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next = None;
        for link in self.links.values_mut() {
            next = min_time(next, link.conn.poll_timeout());
            if link.state != LinkState::Closed && link.up().is_none() {
                next = min_time(next, link.deadline);
                next = min_time(next, link.silence_deadline);
            }
        }
        if !self.closing {
            for (id, p) in &self.peers {
                if *id > self.me && p.link.is_none() && p.dialing.is_none() {
                    next = min_time(next, Some(p.next_dial));
                }
            }
        }
        next
    }

    /// The next datagram to send, written into `buf`; returns its
    /// destination. Links take turns, one datagram each.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some((dest, data)) = self.responses.pop_front() {
            *buf = data;
            self.counters.datagrams_sent += 1;
            return Some(dest);
        }
        let n = self.order.len();
        for k in 0..n {
            let at = (self.next_in_order + k) % n;
            let Some(link) = self.links.get_mut(&self.order[at]) else { continue };
            buf.clear();
            if let Some(t) = link.conn.poll_transmit(now, 1, buf) {
                buf.truncate(t.size);
                self.next_in_order = at + 1;
                self.counters.datagrams_sent += 1;
                return Some(t.destination);
            }
        }
        None
    }

    /// Moves queued messages into the peers' streams, as far as QUIC takes
    /// them: one write per class and peer, highest priority first.
    pub(crate) fn flush(&mut self, now: Instant) {
        let mut failed = Vec::new();
        let Engine { peers, links, .. } = self;
        for peer in peers.values_mut() {
            let Some(ch) = peer.link else { continue };
            let Some(link) = links.get_mut(&ch) else { continue };
            if link.up().is_none() {
                continue;
            }
            for class in BY_PRIORITY {
                if let Err(e) = flush_class(link, peer, class) {
                    failed.push((ch, e));
                    break;
                }
            }
        }
        for (ch, e) in failed {
            if let Some(mut link) = self.links.remove(&ch) {
                self.violation(ch, &mut link, now, e);
                self.links.insert(ch, link);
            }
        }
    }

    /// Reads streams that were paused for inbox room, where there is room now.
    pub(crate) fn resume_reads(&mut self, now: Instant) {
        if !self.reads_stalled {
            return;
        }
        let handles: Vec<ConnectionHandle> = self.links.keys().copied().collect();
        for ch in handles {
            let Some(mut link) = self.links.remove(&ch) else { continue };
            let ready: Vec<StreamId> = link
                .inbound
                .iter()
                .filter(|s| s.stalled && s.dec.class().is_some_and(|c| !self.inbox.full(c)))
                .map(|s| s.id)
                .collect();
            for id in ready {
                self.read_data(ch, &mut link, id, now);
            }
            self.links.insert(ch, link);
        }
        self.reads_stalled = self.links.values().any(|l| l.inbound.iter().any(|s| s.stalled));
    }

    // ----- links -----

    fn push_response(&mut self, dest: SocketAddr, data: Vec<u8>) {
        if self.responses.len() < RESPONSES_MAX {
            self.responses.push_back((dest, data));
        }
    }

    fn insert_link(&mut self, ch: ConnectionHandle, link: Link) {
        self.links.insert(ch, link);
        self.order.push(ch);
    }

    fn on_incoming(&mut self, incoming: Incoming, now: Instant) {
        let mut buf = Vec::new();
        if self.closing || self.links.len() >= 2 * self.peers.len() + SPARE_LINKS {
            self.counters.refused_connections += 1;
            crate::log_warn!("refusing a peer connection: too many open", "remote" => incoming.remote_address());
            let t = self.endpoint.refuse(incoming, &mut buf);
            buf.truncate(t.size);
            self.push_response(t.destination, buf);
            return;
        }
        let remote = incoming.remote_address();
        match self.endpoint.accept(incoming, now, &mut buf, None) {
            Ok((ch, conn)) => {
                self.insert_link(ch, Link::new(conn, remote, None, now));
                self.drive(ch, now);
            }
            Err(e) => {
                crate::log_debug!(
                    "peer connection failed at accept",
                    "remote" => remote, "error" => e.cause.to_string()
                );
                if let Some(t) = e.response {
                    buf.truncate(t.size);
                    self.push_response(t.destination, buf);
                }
            }
        }
    }

    fn dial_due(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        let Engine { peers, links, order, endpoint, client_config, me, verify_server_name, .. } = self;
        for (id, p) in peers.iter_mut() {
            if *id < *me || p.link.is_some() || p.dialing.is_some() || p.next_dial > now {
                continue;
            }
            let name = match (&p.server_name, *verify_server_name) {
                (Some(name), true) => name.clone(),
                (None, true) => p.addr.ip().to_string(),
                (_, false) => AUTO_SERVER_NAME.to_string(),
            };
            match endpoint.connect(now, client_config.clone(), p.addr, &name) {
                Ok((ch, conn)) => {
                    crate::log_debug!("dialing peer", "peer" => *id, "address" => p.addr);
                    links.insert(ch, Link::new(conn, p.addr, Some(*id), now));
                    order.push(ch);
                    p.dialing = Some(ch);
                }
                Err(e) => {
                    crate::log_warn!("cannot dial peer", "peer" => *id, "address" => p.addr, "error" => e.to_string());
                    p.next_dial = now + p.backoff;
                    p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Processes everything the connection has to say; forgets it once
    /// QUIC has drained it.
    fn drive(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(mut link) = self.links.remove(&ch) else { return };
        loop {
            while let Some(ev) = link.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    link.conn.handle_event(back);
                }
            }
            let Some(event) = link.conn.poll() else { break };
            self.on_event(ch, &mut link, event, now);
        }
        if link.conn.is_drained() {
            self.end_link(ch, &mut link, now, None);
            self.order.retain(|c| *c != ch);
        } else {
            self.links.insert(ch, link);
        }
    }

    fn on_event(&mut self, ch: ConnectionHandle, link: &mut Link, event: Event, now: Instant) {
        if link.state == LinkState::Closed {
            return;
        }
        match event {
            Event::Connected => self.on_connected(ch, link, now),
            Event::ConnectionLost { reason } => self.on_lost(ch, link, reason, now),
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => self.on_control_opened(ch, link, now),
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                // Data streams wait, unread, in QUIC until the hello verified.
                if link.up().is_some() {
                    self.accept_data_streams(ch, link, now);
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                if link.control == Some(id) {
                    self.read_control(ch, link, now);
                } else if link.up().is_some() {
                    self.read_data(ch, link, id, now);
                }
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                self.violation(ch, link, now, format!("peer stopped our stream {id} (code {error_code})"));
            }
            // Writable, Finished, Available: the flush of every tick retries.
            Event::Stream(_) | Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }

    fn on_connected(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant) {
        if link.state != LinkState::Handshaking {
            return;
        }
        link.state = LinkState::AwaitingHello;
        if let Err(e) = link.conn.crypto_session().export_keying_material(&mut link.ekm, EKM_LABEL, b"") {
            return self.violation(ch, link, now, format!("cannot export TLS keying material: {e:?}"));
        }
        match link.dialed {
            Some(peer) => {
                let Some(id) = link.conn.streams().open(Dir::Bi) else {
                    return self.violation(ch, link, now, "peer allows no control stream".to_string());
                };
                link.control = Some(id);
                let hello = wire::encode_hello(&self.hello_key, Role::Dialer, self.me, peer, &link.ekm);
                if !matches!(link.conn.send_stream(id).write(&hello), Ok(HELLO_LEN)) {
                    self.violation(ch, link, now, "cannot write the hello".to_string());
                }
            }
            None if link.hello_in.len() == HELLO_LEN => self.check_hello(ch, link, now),
            None => {}
        }
    }

    fn on_lost(&mut self, ch: ConnectionHandle, link: &mut Link, reason: ConnectionError, now: Instant) {
        let member = link.member();
        match &reason {
            ConnectionError::ApplicationClosed(close) if close.error_code == VarInt::from_u32(CLOSE_GONE) => {
                self.gone = true;
                crate::log_warn!(
                    "a peer says this member was removed from the cluster",
                    "peer" => member, "remote" => link.remote
                );
            }
            ConnectionError::ApplicationClosed(close) if close.error_code == VarInt::from_u32(CLOSE_AUTH) => {
                self.counters.auth_failures += 1;
                crate::log_warn!(
                    "peer refused this member's hello",
                    "peer" => member, "remote" => link.remote,
                    "reason" => String::from_utf8_lossy(&close.reason).into_owned()
                );
            }
            ConnectionError::ApplicationClosed(close)
                if close.error_code == VarInt::from_u32(CLOSE_SHUTDOWN)
                    || close.error_code == VarInt::from_u32(CLOSE_REPLACED) =>
            {
                crate::log_info!(
                    "peer closed its link",
                    "peer" => member, "remote" => link.remote,
                    "reason" => String::from_utf8_lossy(&close.reason).into_owned()
                );
            }
            _ if link.up().is_some() => {
                crate::log_warn!(
                    "peer link lost",
                    "peer" => member, "remote" => link.remote, "error" => reason.to_string()
                );
            }
            _ => {
                crate::log_debug!(
                    "peer connection failed",
                    "peer" => member, "remote" => link.remote, "error" => reason.to_string()
                );
            }
        }
        self.end_link(ch, link, now, None);
    }

    fn on_control_opened(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant) {
        let Some(id) = link.conn.streams().accept(Dir::Bi) else { return };
        if link.dialed.is_some() || link.control.is_some() {
            return self.violation(ch, link, now, "unexpected bidirectional stream".to_string());
        }
        link.control = Some(id);
        self.read_control(ch, link, now);
    }

    fn read_control(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant) {
        let Some(id) = link.control else { return };
        let (mut excess, mut ended, mut reset) = (false, false, false);
        {
            let Link { conn, hello_in, .. } = &mut *link;
            let mut recv = conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else { return };
            loop {
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        if hello_in.len() + chunk.bytes.len() > HELLO_LEN {
                            excess = true;
                            break;
                        }
                        hello_in.extend_from_slice(&chunk.bytes);
                    }
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(_)) => {
                        reset = true;
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
        }
        if excess {
            return self.violation(ch, link, now, "unexpected bytes on the control stream".to_string());
        }
        if reset || (ended && link.hello_in.len() < HELLO_LEN) {
            return self.refuse(ch, link, now, "control stream ended before a whole hello".to_string());
        }
        if link.hello_in.len() == HELLO_LEN && link.state == LinkState::AwaitingHello {
            self.check_hello(ch, link, now);
        }
    }

    /// Verifies the peer's hello; on success the link becomes the peer's.
    fn check_hello(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant) {
        let mut bytes = [0u8; HELLO_LEN];
        bytes.copy_from_slice(&link.hello_in);
        let hello = match wire::verify_hello(&self.hello_key, &bytes, &link.ekm) {
            Ok(hello) => hello,
            Err(e) => return self.refuse(ch, link, now, e.to_string()),
        };
        let expected_role = if link.dialed.is_some() { Role::Acceptor } else { Role::Dialer };
        if hello.role != expected_role {
            return self.refuse(ch, link, now, format!("hello from a {:?}, expected a {expected_role:?}", hello.role));
        }
        if hello.receiver != self.me {
            return self.refuse(
                ch,
                link,
                now,
                format!("hello is for member {:x}, this is member {:x}", hello.receiver.get(), self.me.get()),
            );
        }
        match link.dialed {
            Some(expected) if hello.sender != expected => {
                return self.refuse(
                    ch,
                    link,
                    now,
                    format!("the member at {} is {:x}, expected {:x}", link.remote, hello.sender.get(), expected.get()),
                );
            }
            Some(_) => {}
            None => {
                let sender = hello.sender;
                let refusal = if sender == self.me {
                    Some(format!("peer claims this member's own ID {:x}", sender.get()))
                } else if !self.peers.contains_key(&sender) && self.removed.contains(&sender) {
                    crate::log_info!("refusing a removed member", "peer" => sender, "remote" => link.remote);
                    return self.end_link(
                        ch,
                        link,
                        now,
                        Some((CLOSE_GONE, "member permanently removed from the cluster")),
                    );
                } else if !self.peers.contains_key(&sender) {
                    Some(format!("member {:x} is not a peer", sender.get()))
                } else if sender > self.me {
                    Some(format!("member {:x} dialed out of turn (the lower member ID dials)", sender.get()))
                } else {
                    None
                };
                if let Some(why) = refusal {
                    return self.refuse(ch, link, now, why);
                }
                let reply = wire::encode_hello(&self.hello_key, Role::Acceptor, self.me, sender, &link.ekm);
                let Some(id) = link.control else { return };
                if !matches!(link.conn.send_stream(id).write(&reply), Ok(HELLO_LEN)) {
                    return self.violation(ch, link, now, "cannot write the hello".to_string());
                }
            }
        }
        self.adopt(ch, link, hello.sender, now);
    }

    /// Makes the authenticated `link` the link of `peer`, retiring an older one.
    fn adopt(&mut self, ch: ConnectionHandle, link: &mut Link, peer: MemberId, now: Instant) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return self.end_link(ch, link, now, Some((CLOSE_REMOVED, "member removed")));
        };
        link.state = LinkState::Up(peer);
        link.deadline = None;
        let old = p.link.replace(ch).filter(|old| *old != ch);
        if p.dialing == Some(ch) {
            p.dialing = None;
        }
        p.backoff = BACKOFF_MIN;
        p.connects += 1;
        if old.is_some() {
            p.disconnects += 1;
        }
        crate::log_info!(
            "peer link up",
            "peer" => peer, "remote" => link.remote,
            "dialed" => link.dialed.is_some()
        );
        if let Some(old) = old {
            self.close_handle(old, now, CLOSE_REPLACED, "replaced by a newer link");
        }
        // Now, and only now, the peer may open its data streams.
        link.conn.set_max_concurrent_streams(Dir::Uni, VarInt::from_u32(DATA_STREAMS));
        self.accept_data_streams(ch, link, now);
    }

    fn accept_data_streams(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant) {
        while link.state != LinkState::Closed {
            let Some(id) = link.conn.streams().accept(Dir::Uni) else { break };
            link.inbound.push(InStream { id, dec: StreamDecoder::new(self.limits.frame_max()), stalled: false });
            // No Readable event comes for data that arrived with the stream.
            self.read_data(ch, link, id, now);
        }
    }

    /// Reads what the peer sent on data stream `id`, into the inbox, until
    /// the stream has nothing more or the class's inbox is full.
    fn read_data(&mut self, ch: ConnectionHandle, link: &mut Link, id: StreamId, now: Instant) {
        let Some(peer) = link.up() else { return };
        let Some(idx) = link.inbound.iter().position(|s| s.id == id) else { return };
        let mut taken = [false; 3];
        for (j, s) in link.inbound.iter().enumerate() {
            if let (true, Some(c)) = (j != idx, s.dec.class()) {
                taken[c.index()] = true;
            }
        }
        let mut failure = None;
        let mut duplicate = None;
        let mut finished = false;
        let mut stalled = false;
        {
            let Link { conn, inbound, .. } = &mut *link;
            let stream = &mut inbound[idx];
            let inbox = &mut self.inbox;
            let mut no_counters = [ClassStats::default(); 3];
            let counters = match self.peers.get_mut(&peer) {
                Some(p) => &mut p.classes,
                None => &mut no_counters,
            };
            let mut recv = conn.recv_stream(id);
            let Ok(mut chunks) = recv.read(true) else { return };
            loop {
                if stream.dec.class().is_some_and(|c| inbox.full(c)) {
                    stalled = true;
                    break;
                }
                match chunks.next(usize::MAX) {
                    Ok(Some(chunk)) => {
                        let mut deliver = |class: MessageClass, msg: Bytes| {
                            if taken[class.index()] {
                                duplicate = Some(class);
                                return;
                            }
                            let c = &mut counters[class.index()];
                            c.received_msgs += 1;
                            c.received_bytes += msg.len() as u64;
                            inbox.push(peer, class, msg);
                        };
                        if let Err(e) = stream.dec.feed(chunk.bytes, &mut deliver) {
                            failure = Some(e.to_string());
                            break;
                        }
                        if duplicate.is_some() {
                            break;
                        }
                    }
                    Ok(None) => {
                        finished = true;
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        failure = Some(format!("peer reset its data stream {id} (code {code})"));
                        break;
                    }
                }
            }
            let _ = chunks.finalize();
            stream.stalled = stalled;
        }
        if stalled {
            self.reads_stalled = true;
        }
        if let Some(class) = duplicate {
            return self.violation(ch, link, now, format!("peer opened a second {class} stream"));
        }
        if let Some(e) = failure {
            return self.violation(ch, link, now, e);
        }
        if finished {
            // Peers never finish data streams; a finished one carries nothing more.
            link.inbound.remove(idx);
        }
    }

    fn unauthenticated_timeout(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant) {
        if link.state == LinkState::AwaitingHello {
            self.refuse(ch, link, now, format!("no hello within {HELLO_TIMEOUT:?}"));
        } else {
            crate::log_debug!("peer handshake timed out", "peer" => link.member(), "remote" => link.remote);
            self.end_link(ch, link, now, Some((CLOSE_TIMEOUT, "handshake timed out")));
        }
    }

    /// Refuses an unauthenticated peer: log, count, close.
    fn refuse(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant, why: String) {
        self.counters.auth_failures += 1;
        crate::log_warn!("refusing peer connection", "remote" => link.remote, "peer" => link.dialed, "error" => why);
        self.end_link(ch, link, now, Some((CLOSE_AUTH, "authentication failed")));
    }

    /// Closes a link whose peer broke the framing or stream rules.
    fn violation(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant, what: String) {
        self.counters.protocol_errors += 1;
        crate::log_warn!(
            "closing peer link: malformed or unexpected data",
            "peer" => link.member(), "remote" => link.remote, "error" => what
        );
        self.end_link(ch, link, now, Some((CLOSE_PROTOCOL, "protocol violation")));
    }

    fn close_handle(&mut self, ch: ConnectionHandle, now: Instant, code: u32, reason: &'static str) {
        if let Some(mut link) = self.links.remove(&ch) {
            self.end_link(ch, &mut link, now, Some((code, reason)));
            self.links.insert(ch, link);
        }
    }

    /// Ends a link once: closes it (when `close` says why) and detaches it
    /// from its peer, scheduling a redial where this member dials.
    fn end_link(&mut self, ch: ConnectionHandle, link: &mut Link, now: Instant, close: Option<(u32, &'static str)>) {
        if link.state == LinkState::Closed {
            return;
        }
        if let Some((code, reason)) = close {
            link.conn.close(now, VarInt::from_u32(code), Bytes::from_static(reason.as_bytes()));
        }
        link.state = LinkState::Closed;
        link.out = [None, None, None];
        link.inbound.clear();
        let Some(p) = link.member().and_then(|m| self.peers.get_mut(&m)) else { return };
        if p.link == Some(ch) {
            p.link = None;
            p.disconnects += 1;
            p.backoff = BACKOFF_MIN;
            p.next_dial = now + BACKOFF_MIN;
        }
        if p.dialing == Some(ch) {
            p.dialing = None;
            p.failed_dials += 1;
            p.next_dial = now + p.backoff;
            p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Writes `class`'s queued messages to the link's stream for that class,
/// opening it on first use. Err: the peer stopped the stream.
fn flush_class(link: &mut Link, peer: &mut Peer, class: MessageClass) -> Result<(), String> {
    let i = class.index();
    if link.out[i].is_none() {
        if peer.queues[i].msgs.is_empty() {
            return Ok(());
        }
        // None: the peer's stream limit is reached for now; an Available
        // event and the next tick's flush retry.
        let Some(id) = link.conn.streams().open(Dir::Uni) else { return Ok(()) };
        let _ = link.conn.send_stream(id).set_priority(class.priority());
        let preamble = Bytes::copy_from_slice(&wire::preamble(class));
        link.out[i] = Some(OutStream { id, chunks: VecDeque::from([preamble]) });
    }
    let Some(out) = link.out[i].as_mut() else { return Ok(()) };
    loop {
        if out.chunks.is_empty() && !take_batch(&mut peer.queues[i], &mut peer.classes[i], class, &mut out.chunks) {
            return Ok(());
        }
        match link.conn.send_stream(out.id).write_chunks(out.chunks.make_contiguous()) {
            Ok(written) => {
                out.chunks.drain(..written.chunks);
                if !out.chunks.is_empty() {
                    return Ok(()); // QUIC took part: blocked until Writable
                }
            }
            Err(WriteError::Blocked) => return Ok(()),
            Err(e) => return Err(format!("cannot write the {class} stream: {e}")),
        }
    }
}

/// Frames the next batch of `queue` into `chunks`: every queued message up to
/// [`BATCH_BYTES_MAX`] (Raft, Forward) or one chunk (Snapshot), small messages
/// coalesced with their headers into one buffer. False if the queue is empty.
fn take_batch(queue: &mut OutQueue, stats: &mut ClassStats, class: MessageClass, chunks: &mut VecDeque<Bytes>) -> bool {
    let mut acc = BytesMut::new();
    let mut taken_bytes = 0usize;
    let mut taken = 0usize;
    while let Some(next) = queue.msgs.front() {
        let full = match class {
            MessageClass::Snapshot => taken > 0,
            MessageClass::Raft | MessageClass::Forward => taken > 0 && taken_bytes + next.len() > BATCH_BYTES_MAX,
        };
        if full {
            break;
        }
        let Some(msg) = queue.pop() else { break };
        taken += 1;
        taken_bytes += msg.len();
        stats.sent_msgs += 1;
        stats.sent_bytes += msg.len() as u64;
        acc.extend_from_slice(&wire::frame_header(msg.len()));
        if msg.len() <= COPY_BYTES_MAX {
            acc.extend_from_slice(&msg);
        } else {
            chunks.push_back(acc.split().freeze());
            chunks.push_back(msg);
        }
    }
    if !acc.is_empty() {
        chunks.push_back(acc.freeze());
    }
    taken > 0
}
