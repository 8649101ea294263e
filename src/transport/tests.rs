//! Loopback tests of the peer transport: real UDP sockets on 127.0.0.x, one
//! monoio runtime per test, every wait bounded.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::engine::Engine;
use super::*;
use crate::types::MemberId;

const TOKEN: &str = "test-cluster-token";
/// Bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(20);

fn run<F: Future>(f: F) -> F::Output {
    let mut rt =
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("a monoio runtime");
    rt.block_on(f)
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match monoio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn sleep_ms(ms: u64) {
    monoio::time::sleep(Duration::from_millis(ms)).await;
}

/// Waits until `cond` holds, polling every few milliseconds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            sleep_ms(5).await;
        }
    })
    .await
}

fn ident(id: u64, token: &str) -> PeerIdentity {
    PeerIdentity { member_id: MemberId(id), cluster_token: token.to_string() }
}

fn addr(host: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, host], 0))
}

/// Starts transports `ids[i]` on 127.0.0.`hosts[i]` and introduces them all
/// to each other (auto TLS, one cluster token).
fn mesh(ids: &[u64], host: u8) -> Vec<TransportHandle> {
    let handles: Vec<TransportHandle> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Transport::start(addr(host + i as u8), ident(*id, TOKEN), TlsSetup::Auto, Vec::new())
                .expect("start a transport")
        })
        .collect();
    let all: Vec<(MemberId, SocketAddr)> =
        ids.iter().zip(&handles).map(|(id, h)| (MemberId(*id), h.local_addr())).collect();
    for h in &handles {
        h.set_peers(all.clone());
    }
    handles
}

/// A payload that says who sent it, in which class, with which sequence
/// number; its size varies with `seq` so frames straddle packets, and every
/// 97th is large enough to go out without a copy.
fn payload(from: u64, class: MessageClass, seq: u64) -> Bytes {
    let len = if seq.is_multiple_of(97) { 40_000 } else { 17 + (seq as usize * 31) % 3000 };
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&from.to_le_bytes());
    v.push(class.tag());
    v.extend_from_slice(&seq.to_le_bytes());
    while v.len() < len {
        v.push((v.len() as u64 ^ seq) as u8);
    }
    Bytes::from(v)
}

fn parse(msg: &[u8]) -> (u64, u8, u64) {
    let from = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
    let seq = u64::from_le_bytes(msg[9..17].try_into().expect("8 bytes"));
    for (i, b) in msg.iter().enumerate().skip(17) {
        assert_eq!(*b, (i as u64 ^ seq) as u8, "payload byte {i} of seq {seq}");
    }
    (from, msg[8], seq)
}

/// Sends `msg`, waiting while a Snapshot or Forward queue is full.
async fn send_retrying(h: &TransportHandle, to: MemberId, class: MessageClass, msg: Bytes) {
    loop {
        match h.send(to, class, msg.clone()) {
            Ok(()) => return,
            Err(SendError::QueueFull { .. }) => sleep_ms(1).await,
            Err(e) => panic!("send to {to:?} failed: {e}"),
        }
    }
}

const COUNTS: [(MessageClass, u64); 3] =
    [(MessageClass::Raft, 600), (MessageClass::Snapshot, 60), (MessageClass::Forward, 400)];

/// Sends `COUNTS` messages of every class from `h` (member `from`) to each of `to`.
async fn send_all_classes(h: &TransportHandle, from: u64, to: &[u64]) {
    for seq in 0..600u64 {
        for (class, n) in COUNTS {
            if seq < n {
                for peer in to {
                    send_retrying(h, MemberId(*peer), class, payload(from, class, seq)).await;
                }
            }
        }
        if seq % 50 == 0 {
            sleep_ms(1).await; // let some ticks pass: batches of varying sizes
        }
    }
}

/// Receives exactly what `send_all_classes` sends from each of `from`, and
/// checks that every (sender, class) sequence arrives complete and in order.
async fn receive_all_classes(h: &TransportHandle, from: &[u64]) {
    let total: u64 = COUNTS.iter().map(|(_, n)| n).sum::<u64>() * from.len() as u64;
    let mut next: HashMap<(u64, u8), u64> = HashMap::new();
    for _ in 0..total {
        let (peer, class, msg) = within("all messages", h.recv()).await;
        let (sender, tag, seq) = parse(&msg);
        assert_eq!(peer, MemberId(sender), "transport names the sender");
        assert_eq!(tag, class.tag(), "class preserved");
        let want = next.entry((sender, tag)).or_insert(0);
        assert_eq!(seq, *want, "{class} messages from {sender} in order");
        *want += 1;
    }
    for f in from {
        for (class, n) in COUNTS {
            assert_eq!(next.get(&(*f, class.tag())).copied(), Some(n), "all {class} messages from {f}");
        }
    }
}

#[test]
fn two_transports_exchange_every_class_in_order_both_ways() {
    run(async {
        let h = mesh(&[1, 2], 11);
        let (a, b) = (&h[0], &h[1]);
        let started = Instant::now();
        let sends = async {
            futures_join(send_all_classes(a, 1, &[2]), send_all_classes(b, 2, &[1])).await;
        };
        let recvs = async {
            futures_join(receive_all_classes(a, &[2]), receive_all_classes(b, &[1])).await;
        };
        futures_join(sends, recvs).await;
        eprintln!("exchange took {:?}", started.elapsed());
        let stats = a.stats();
        let to_b = stats.peer(MemberId(2)).expect("peer 2");
        assert!(to_b.connected);
        assert_eq!(to_b.class(MessageClass::Raft).sent_msgs, 600);
        assert_eq!(to_b.class(MessageClass::Raft).received_msgs, 600);
        assert_eq!(to_b.class(MessageClass::Raft).dropped_msgs, 0);
        assert_eq!(stats.auth_failures + stats.protocol_errors, 0);
        for t in h {
            t.shutdown().await;
        }
    });
}

#[test]
fn three_transports_exchange_every_class_in_order() {
    run(async {
        let h = mesh(&[1, 2, 3], 21);
        let sends = async {
            futures_join(
                send_all_classes(&h[0], 1, &[2, 3]),
                futures_join(send_all_classes(&h[1], 2, &[1, 3]), send_all_classes(&h[2], 3, &[1, 2])),
            )
            .await;
        };
        let recvs = async {
            futures_join(
                receive_all_classes(&h[0], &[2, 3]),
                futures_join(receive_all_classes(&h[1], &[1, 3]), receive_all_classes(&h[2], &[1, 2])),
            )
            .await;
        };
        futures_join(sends, recvs).await;
        for t in &h {
            let s = t.stats();
            assert!(s.peers.iter().all(|p| p.connected && p.connects == 1), "{s:?}");
        }
        for t in h {
            t.shutdown().await;
        }
    });
}

/// Polls two futures to completion on this task.
async fn futures_join<A: Future<Output = ()>, B: Future<Output = ()>>(a: A, b: B) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut a_done, mut b_done) = (false, false);
    std::future::poll_fn(|cx| {
        if !a_done {
            a_done = a.as_mut().poll(cx).is_ready();
        }
        if !b_done {
            b_done = b.as_mut().poll(cx).is_ready();
        }
        if a_done && b_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

#[test]
fn raft_messages_overtake_a_50_mib_snapshot() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: u64 = 50;
    run(async {
        let h = mesh(&[1, 2], 31);
        let (a, b) = (&h[0], &h[1]);
        // Link up first, so the measurement is about streams, not the handshake.
        a.send(MemberId(2), MessageClass::Raft, Bytes::from_static(b"hi")).expect("send");
        let (_, _, first) = within("link up", b.recv()).await;
        assert_eq!(&first[..], b"hi");

        // For each Raft message: how many snapshot chunks had been queued
        // when it was sent (None: sent after the last chunk was queued).
        let sent_log: RefCell<Vec<Option<u64>>> = RefCell::new(Vec::new());
        let sender_done = Cell::new(false);
        let send_raft = |after: Option<u64>| {
            let mut log = sent_log.borrow_mut();
            let seq = log.len() as u64;
            a.send(MemberId(2), MessageClass::Raft, Bytes::copy_from_slice(&seq.to_le_bytes())).expect("raft send");
            log.push(after);
        };
        let sender = async {
            let mut queued = 0u64;
            while queued < CHUNKS {
                let mut chunk = vec![0u8; CHUNK];
                chunk[..8].copy_from_slice(&queued.to_le_bytes());
                match a.send(MemberId(2), MessageClass::Snapshot, Bytes::from(chunk)) {
                    Ok(()) => queued += 1,
                    Err(SendError::QueueFull { .. }) => {}
                    Err(e) => panic!("snapshot send: {e}"),
                }
                send_raft(if queued < CHUNKS { Some(queued) } else { None });
                sleep_ms(2).await;
            }
            for i in 0..10 {
                send_raft(None);
                if i == 9 {
                    sender_done.set(true);
                }
                sleep_ms(2).await;
            }
        };
        // For each Raft message received: snapshot chunks received before it.
        let received_log: RefCell<Vec<u64>> = RefCell::new(Vec::new());
        let last_chunk_at_raft: Cell<Option<usize>> = Cell::new(None);
        let receiver = async {
            let mut chunks = 0u64;
            while chunks < CHUNKS || !sender_done.get() || received_log.borrow().len() < sent_log.borrow().len() {
                let (_, class, msg) = within("snapshot and raft messages", b.recv()).await;
                match class {
                    MessageClass::Snapshot => {
                        assert_eq!(msg.len(), CHUNK);
                        assert_eq!(u64::from_le_bytes(msg[..8].try_into().expect("8")), chunks, "chunks in order");
                        chunks += 1;
                        if chunks == CHUNKS {
                            last_chunk_at_raft.set(Some(received_log.borrow().len()));
                        }
                    }
                    MessageClass::Raft => {
                        let seq = u64::from_le_bytes(msg[..8].try_into().expect("8"));
                        let mut log = received_log.borrow_mut();
                        assert_eq!(seq, log.len() as u64, "raft in order");
                        log.push(chunks);
                    }
                    MessageClass::Forward => panic!("no forward messages were sent"),
                }
            }
        };
        let started = Instant::now();
        futures_join(sender, receiver).await;
        eprintln!("50 MiB snapshot with raft traffic took {:?}", started.elapsed());
        let raft_sent_after_chunks = sent_log.into_inner();
        let raft_received_after_chunks = received_log.into_inner();
        let last_chunk_at_raft = last_chunk_at_raft.get();

        assert_eq!(raft_received_after_chunks.len(), raft_sent_after_chunks.len(), "every raft message arrived");
        let during: Vec<usize> =
            (0..raft_sent_after_chunks.len()).filter(|i| raft_sent_after_chunks[*i].is_some()).collect();
        let last_chunk_at_raft = last_chunk_at_raft.expect("the last chunk arrived");
        let spread: Vec<u64> = during.iter().map(|i| raft_received_after_chunks[*i]).collect();
        eprintln!("raft messages during the snapshot: {}; chunks received before each: {spread:?}", during.len());
        assert!(during.len() > 10, "raft messages were sent during the snapshot");
        for i in &during {
            assert!(
                *i < last_chunk_at_raft,
                "raft message {i}, sent during the snapshot, arrived after its last chunk"
            );
            // Sent when k chunks were queued, so at most chunk k+1 may have
            // been completed ahead of it unless a whole 1 MiB chunk held it back.
            let k = raft_sent_after_chunks[*i].expect("during");
            assert!(
                raft_received_after_chunks[*i] <= k + 1,
                "raft message {i} sent after {k} chunks queued arrived after {} chunks",
                raft_received_after_chunks[*i]
            );
        }
        for t in h {
            t.shutdown().await;
        }
    });
}

#[test]
fn a_peer_with_another_cluster_token_is_refused() {
    run(async {
        let a = Transport::start(addr(41), ident(1, "token-one"), TlsSetup::Auto, Vec::new()).expect("start");
        let b = Transport::start(addr(42), ident(2, "token-two"), TlsSetup::Auto, Vec::new()).expect("start");
        a.set_peers(vec![(MemberId(2), b.local_addr())]);
        b.set_peers(vec![(MemberId(1), a.local_addr())]);
        a.send(MemberId(2), MessageClass::Raft, Bytes::from_static(b"secret")).expect("queued");
        b.send(MemberId(1), MessageClass::Raft, Bytes::from_static(b"secret")).expect("queued");
        until("both sides to refuse", || a.stats().auth_failures >= 1 && b.stats().auth_failures >= 1).await;
        // It keeps being refused on redial, and nothing is ever delivered.
        until("a redial refused too", || a.stats().peer(MemberId(2)).is_some_and(|p| p.failed_dials >= 2)).await;
        assert!(a.try_recv().is_none() && b.try_recv().is_none());
        for (t, peer) in [(&a, 2), (&b, 1)] {
            let p = t.stats().peer(MemberId(peer)).cloned().expect("peer");
            assert!(!p.connected && p.connects == 0, "{p:?}");
        }
        a.shutdown().await;
        b.shutdown().await;
    });
}

#[test]
fn a_peer_claiming_another_member_id_is_refused() {
    run(async {
        // Member 1 expects member 3 at an address where member 2 answers.
        let one = Transport::start(addr(51), ident(1, TOKEN), TlsSetup::Auto, Vec::new()).expect("start");
        let impostor = Transport::start(addr(52), ident(2, TOKEN), TlsSetup::Auto, Vec::new()).expect("start");
        one.set_peers(vec![(MemberId(3), impostor.local_addr())]);
        impostor.set_peers(vec![(MemberId(1), one.local_addr())]);
        one.send(MemberId(3), MessageClass::Raft, Bytes::from_static(b"for 3 only")).expect("queued");
        until("the dialer to refuse", || one.stats().auth_failures >= 1).await;
        until("the impostor to see the refusal", || impostor.stats().auth_failures >= 1).await;
        assert!(impostor.try_recv().is_none());

        // A member the acceptor does not know (5 is not among 9's peers).
        let nine = Transport::start(addr(53), ident(9, TOKEN), TlsSetup::Auto, Vec::new()).expect("start");
        let stranger = Transport::start(addr(54), ident(5, TOKEN), TlsSetup::Auto, Vec::new()).expect("start");
        nine.set_peers(vec![(MemberId(4), stranger.local_addr())]);
        stranger.set_peers(vec![(MemberId(9), nine.local_addr())]);
        stranger.send(MemberId(9), MessageClass::Forward, Bytes::from_static(b"let me in")).expect("queued");
        until("the acceptor to refuse", || nine.stats().auth_failures >= 1).await;
        until("the stranger to see the refusal", || stranger.stats().auth_failures >= 1).await;
        assert!(nine.try_recv().is_none());
        assert!(!nine.stats().peers.iter().any(|p| p.connected));
        for t in [one, impostor, nine, stranger] {
            t.shutdown().await;
        }
    });
}

/// Sends `msg` from `from` to `to` (Raft class) until `to` receives it: a
/// message written into a link that is just going away is lost with it.
async fn deliver(from: &TransportHandle, to: &TransportHandle, msg: Bytes) {
    let dest = from
        .stats()
        .peers
        .iter()
        .map(|p| p.addr)
        .position(|a| a == to.local_addr())
        .map(|i| from.stats().peers[i].id)
        .expect("to is a peer of from");
    within("delivery", async {
        loop {
            let _ = from.send(dest, MessageClass::Raft, msg.clone());
            sleep_ms(20).await;
            if std::iter::from_fn(|| to.try_recv()).any(|(_, _, m)| m == msg) {
                return;
            }
        }
    })
    .await
}

#[test]
fn garbage_datagrams_and_malformed_frames_do_not_crash_the_endpoint() {
    run(async {
        let h = mesh(&[1, 2], 61);
        let (a, b) = (&h[0], &h[1]);
        a.send(MemberId(2), MessageClass::Raft, Bytes::from_static(b"before")).expect("send");
        assert_eq!(&within("first message", b.recv()).await.2[..], b"before");

        // Garbage datagrams of every shape at both endpoints.
        let junk = std::net::UdpSocket::bind(addr(63)).expect("bind junk socket");
        let mut long_header = vec![0xc0u8, 0, 0, 0, 1, 8];
        long_header.resize(1200, 0x5a);
        let shapes: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0xff; 1200],
            long_header,
            (0..1500u32).map(|i| (i * 7) as u8).collect(),
            vec![0x40; 30],
        ];
        for target in [a.local_addr(), b.local_addr()] {
            for s in &shapes {
                junk.send_to(s, target).expect("send junk");
            }
        }

        // Malformed frames on the authenticated link, each from a fresh link.
        type Inject<'a> = Box<dyn Fn() -> bool + 'a>;
        let cases: Vec<(&str, Inject)> = vec![
            (
                "oversized frame",
                Box::new(|| {
                    let mut raw = Vec::from(&u32::MAX.to_le_bytes()[..]);
                    raw.extend_from_slice(b"tail");
                    a.inject_into(MemberId(2), MessageClass::Raft, Bytes::from(raw))
                }),
            ),
            ("unknown class", Box::new(|| a.inject_stream(MemberId(2), b"CKV\x07\x00\x00\x00\x00"))),
            ("bad preamble", Box::new(|| a.inject_stream(MemberId(2), b"GET / HTTP/1.1\r\n"))),
            ("second raft stream", Box::new(|| a.inject_stream(MemberId(2), b"CKV\x00\x01\x00\x00\x00x"))),
        ];
        for (n, (what, inject)) in cases.iter().enumerate() {
            let errors_before = b.stats().protocol_errors;
            // Make sure the link is up and its Raft stream open.
            deliver(a, b, Bytes::from(format!("marker {n}"))).await;
            assert!(inject(), "{what}: injected");
            until(what, || b.stats().protocol_errors > errors_before).await;
        }

        // Both endpoints still work: the link comes back and carries messages.
        deliver(a, b, Bytes::from_static(b"after")).await;
        deliver(b, a, Bytes::from_static(b"after")).await;
        assert!(b.stats().peer(MemberId(1)).is_some_and(|p| p.connects >= 5));
        drop(cases);
        for t in h {
            t.shutdown().await;
        }
    });
}

#[test]
fn a_stopped_peer_does_not_block_the_others_and_reconnects_after_restart() {
    run(async {
        let mut h = mesh(&[1, 2, 3], 71);
        let c_addr = h[2].local_addr();
        let all: Vec<(MemberId, SocketAddr)> =
            h.iter().enumerate().map(|(i, t)| (MemberId(i as u64 + 1), t.local_addr())).collect();
        for t in &h {
            until("mesh up", || t.stats().peers.iter().all(|p| p.connected)).await;
        }
        let c = h.pop().expect("c");
        c.kill().await;
        let (a, b) = (&h[0], &h[1]);

        // Sends to the dead member never block or fail for Raft; sends to
        // the live one keep being delivered, in order.
        for seq in 0..3000u64 {
            a.send(MemberId(3), MessageClass::Raft, payload(1, MessageClass::Raft, seq)).expect("raft to dead peer");
            let _ = a.send(MemberId(3), MessageClass::Forward, payload(1, MessageClass::Forward, seq));
            a.send(MemberId(2), MessageClass::Raft, payload(1, MessageClass::Raft, seq)).expect("raft to live peer");
            if seq % 100 == 0 {
                sleep_ms(1).await;
            }
        }
        for seq in 0..3000u64 {
            let (from, class, msg) = within("messages to the live peer", b.recv()).await;
            assert_eq!((from, class), (MemberId(1), MessageClass::Raft));
            assert_eq!(parse(&msg).2, seq);
        }

        // Restart member 3 on the same address: both peers link to it again.
        let c = Transport::start(c_addr, ident(3, TOKEN), TlsSetup::Auto, all).expect("restart");
        let fresh = Bytes::from_static(b"after restart");
        let mut from_seen = [false; 2];
        within("messages from both peers after the restart", async {
            while from_seen != [true, true] {
                for t in [a, b] {
                    let _ = t.send(MemberId(3), MessageClass::Forward, fresh.clone());
                }
                sleep_ms(50).await;
                while let Some((from, _, m)) = c.try_recv() {
                    if m == fresh {
                        from_seen[from.get() as usize - 1] = true;
                    }
                }
            }
        })
        .await;
        assert!(a.stats().peer(MemberId(3)).is_some_and(|p| p.connected && p.connects >= 2));
        for t in [h.remove(0), h.remove(0), c] {
            t.shutdown().await;
        }
    });
}

// ----- mutual TLS with files -----

struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("corekv-transport-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Pki { dir }
    }

    fn write(&self, name: &str, pem: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    }

    /// A CA and, for each host, a certificate with that IP in its SANs.
    fn issue(&self, ca_name: &str, hosts: &[u8]) -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca cert");
        let ca_file = self.write(&format!("{ca_name}.pem"), &ca.pem());
        let certs = hosts
            .iter()
            .map(|host| {
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
                params.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, *host]))];
                params.distinguished_name.push(rcgen::DnType::CommonName, format!("peer-{host}"));
                params.extended_key_usages =
                    vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
                let key = rcgen::KeyPair::generate().expect("key");
                let cert = params.signed_by(&key, &ca).expect("sign");
                (
                    self.write(&format!("{ca_name}-{host}.pem"), &cert.pem()),
                    self.write(&format!("{ca_name}-{host}-key.pem"), &key.serialize_pem()),
                )
            })
            .collect();
        (ca_file, certs)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn files(ca: &Path, cert: &(PathBuf, PathBuf)) -> TlsSetup {
    TlsSetup::Files {
        cert: cert.0.clone(),
        key: cert.1.clone(),
        trusted_ca: Some(ca.to_path_buf()),
        client_cert_auth: true,
    }
}

#[test]
fn mutual_tls_with_files_links_members_of_one_ca_only() {
    let pki = Pki::new("mtls");
    let (ca, certs) = pki.issue("cluster-ca", &[81, 82]);
    let (other_ca, other_certs) = pki.issue("other-ca", &[83]);
    run(async {
        let a = Transport::start(addr(81), ident(10, TOKEN), files(&ca, &certs[0]), Vec::new()).expect("start a");
        let b = Transport::start(addr(82), ident(20, TOKEN), files(&ca, &certs[1]), Vec::new()).expect("start b");
        // Member 5 has the right token but a certificate from another CA.
        let rogue =
            Transport::start(addr(83), ident(5, TOKEN), files(&other_ca, &other_certs[0]), Vec::new()).expect("start");
        a.set_peers(vec![(MemberId(20), b.local_addr())]);
        b.set_peers(vec![(MemberId(10), a.local_addr()), (MemberId(5), rogue.local_addr())]);
        rogue.set_peers(vec![(MemberId(20), b.local_addr())]);

        for seq in 0..200u64 {
            a.send(MemberId(20), MessageClass::Forward, payload(10, MessageClass::Forward, seq)).expect("send");
            b.send(MemberId(10), MessageClass::Raft, payload(20, MessageClass::Raft, seq)).expect("send");
        }
        for seq in 0..200u64 {
            let (from, class, msg) = within("a to b", b.recv()).await;
            assert_eq!((from, class, parse(&msg).2), (MemberId(10), MessageClass::Forward, seq));
            let (from, class, msg) = within("b to a", a.recv()).await;
            assert_eq!((from, class, parse(&msg).2), (MemberId(20), MessageClass::Raft, seq));
        }

        rogue.send(MemberId(20), MessageClass::Raft, Bytes::from_static(b"hello?")).expect("queued");
        until("the rogue's dials to fail", || rogue.stats().peer(MemberId(20)).is_some_and(|p| p.failed_dials >= 2))
            .await;
        assert!(rogue.stats().peer(MemberId(20)).is_some_and(|p| p.connects == 0));
        assert!(b.stats().peer(MemberId(5)).is_some_and(|p| !p.connected && p.connects == 0));
        assert!(b.try_recv().is_none());
        for t in [a, b, rogue] {
            t.shutdown().await;
        }
    });
}

#[test]
fn tls_files_errors_name_the_flag_and_file() {
    let missing = PathBuf::from("/nonexistent/peer.pem");
    let setup = TlsSetup::Files { cert: missing.clone(), key: missing, trusted_ca: None, client_cert_auth: false };
    let err = run(async { Transport::start(addr(91), ident(1, TOKEN), setup, Vec::new()).err() }).expect("error");
    assert!(err.to_string().contains("--peer-cert-file /nonexistent/peer.pem"), "{err}");
}

// ----- sans-IO: queue policies -----

#[test]
fn full_queues_drop_oldest_raft_and_refuse_snapshot_and_forward() {
    let identity = ident(1, TOKEN);
    let parts = super::tls::build(&TlsSetup::Auto, &identity).expect("tls");
    let mut limits = Limits::default();
    limits.raft.queue_msgs_max = 3;
    limits.snapshot.queue_bytes_max = 10;
    limits.forward.queue_msgs_max = 2;
    let peer = PeerAddr::from((MemberId(2), SocketAddr::from(([127, 0, 0, 1], 9))));
    let mut e = Engine::new(&identity, parts, false, vec![peer], limits, Instant::now());
    let two = MemberId(2);
    for i in 0..5u8 {
        assert_eq!(e.send(two, MessageClass::Raft, Bytes::from(vec![i])), Ok(()));
    }
    // An empty queue takes one message whatever its size.
    assert_eq!(e.send(two, MessageClass::Snapshot, Bytes::from(vec![0; 64])), Ok(()));
    assert_eq!(
        e.send(two, MessageClass::Snapshot, Bytes::from(vec![0; 1])),
        Err(SendError::QueueFull { peer: two, class: MessageClass::Snapshot })
    );
    assert_eq!(e.send(two, MessageClass::Forward, Bytes::new()), Ok(()));
    assert_eq!(e.send(two, MessageClass::Forward, Bytes::new()), Ok(()));
    assert!(matches!(e.send(two, MessageClass::Forward, Bytes::new()), Err(SendError::QueueFull { .. })));
    assert_eq!(e.send(MemberId(7), MessageClass::Raft, Bytes::new()), Err(SendError::UnknownPeer(MemberId(7))));
    let too_big = vec![0u8; limits.raft.frame_bytes_max as usize + 1];
    assert!(matches!(e.send(two, MessageClass::Raft, Bytes::from(too_big)), Err(SendError::TooLarge { .. })));

    let stats = e.stats();
    let p = stats.peer(two).expect("peer");
    assert_eq!((p.class(MessageClass::Raft).queued_msgs, p.class(MessageClass::Raft).dropped_msgs), (3, 2));
    assert_eq!(p.class(MessageClass::Snapshot).rejected_msgs, 1);
    assert_eq!(p.class(MessageClass::Forward).rejected_msgs, 1);
}

fn thread_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn idle_links_do_not_spin() {
    run(async {
        let h = mesh(&[1, 2, 3], 101);
        for t in &h {
            until("mesh up", || t.stats().peers.iter().all(|p| p.connected)).await;
        }
        // This runtime, and so all three transports, runs on this thread.
        let (cpu, wall) = (thread_cpu_time(), Instant::now());
        sleep_ms(1500).await;
        let (cpu, wall) = (thread_cpu_time() - cpu, wall.elapsed());
        assert!(cpu < wall / 10, "idle transports used {cpu:?} of CPU in {wall:?}");
        let s = h[0].stats();
        assert!(s.peers.iter().all(|p| p.connected && p.connects == 1), "keep-alives hold the links: {s:?}");
        for t in h {
            t.shutdown().await;
        }
    });
}

#[test]
fn membership_changes_move_and_remove_links() {
    run(async {
        let h = mesh(&[1, 2], 111);
        let (a, old_b) = (&h[0], &h[1]);
        deliver(a, old_b, Bytes::from_static(b"to the old address")).await;

        // Member 2 moves to another address.
        let new_b = Transport::start(addr(113), ident(2, TOKEN), TlsSetup::Auto, vec![(MemberId(1), a.local_addr())])
            .expect("start");
        a.set_peers(vec![(MemberId(1), a.local_addr()), (MemberId(2), new_b.local_addr())]);
        deliver(a, &new_b, Bytes::from_static(b"to the new address")).await;
        deliver(&new_b, a, Bytes::from_static(b"from the new address")).await;
        assert!(a.stats().peer(MemberId(2)).is_some_and(|p| p.connects == 2 && p.addr == new_b.local_addr()));

        // Member 2 is removed: its queue and link go, sends are refused.
        a.set_peers(vec![]);
        assert_eq!(a.send(MemberId(2), MessageClass::Raft, Bytes::new()), Err(SendError::UnknownPeer(MemberId(2))));
        assert!(a.stats().peers.is_empty());
        until("the link to close", || a.stats().open_connections == 0).await;
        for t in h.into_iter().chain([new_b]) {
            t.shutdown().await;
        }
    });
}
