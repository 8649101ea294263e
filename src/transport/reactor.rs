//! The monoio shell around the engine: one UDP socket, a receive task, a
//! driver task, and the handle the node uses.
//!
//! - The receive task keeps exactly one `recv_from` in flight and never
//!   cancels it (a cancelled io_uring recv loses its datagram). To stop, the
//!   driver sends the socket a datagram of its own and the task sees the stop
//!   flag when that recv completes.
//! - The driver task runs timers (`monoio::time`), flushes queues into
//!   streams, and sends every datagram the engine has with `send_to`, one
//!   datagram per call: UDP GRO is switched off on the socket and QUIC's
//!   segmentation offload is off, so no datagram is ever coalesced.
//! - The engine sits in a `RefCell` shared by both tasks and the handle; no
//!   borrow is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use monoio::net::udp::UdpSocket;
use monoio::task::JoinHandle;

use super::engine::Engine;
use super::{tls, Limits, MessageClass, PeerAddr, PeerIdentity, SendError, TlsSetup, TransportStats};
use crate::types::MemberId;

/// Receive buffer: larger than any UDP payload, so nothing is truncated.
const RECV_BUF_BYTES: usize = 64 << 10;
/// Socket buffer sizes asked of the kernel (it may cap them).
const SOCKET_BUF_BYTES: libc::c_int = 4 << 20;
/// Datagrams sent per driver pass before timers and queues get a turn again,
/// so a long snapshot burst cannot hold back a Raft message queued meanwhile.
const SENDS_PER_PASS_MAX: usize = 64;
/// How long a stopping driver waits for the receive task to see its wake-up.
const STOP_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    /// Close every link, telling the peers, then stop.
    Graceful,
    /// Stop without a word (a crash, for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Abort,
}

/// A wake-up flag for one waiting task.
#[derive(Default)]
struct Notify {
    set: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.set.replace(false) {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

struct Shared {
    engine: RefCell<Engine>,
    /// Wakes the driver: new messages queued, datagrams handled, inbox room.
    driver: Notify,
    /// Wakes a task waiting in `recv`.
    receiver: Notify,
    stop: Cell<Stop>,
}

impl Shared {
    /// After the engine did work: wake whoever has something to do now.
    fn after_engine_work(&self) {
        if !self.engine.borrow().inbox_is_empty() {
            self.receiver.notify();
        }
        self.driver.notify();
    }
}

/// Starts peer transports.
pub struct Transport;

impl Transport {
    /// Binds `bind` (UDP) on the current monoio runtime, which must have its
    /// timer enabled, and starts linking to `peers` (this member may be
    /// listed; it is skipped). Default [`Limits`].
    pub fn start(
        bind: SocketAddr,
        identity: PeerIdentity,
        tls: TlsSetup,
        peers: Vec<(MemberId, SocketAddr)>,
    ) -> io::Result<TransportHandle> {
        Transport::start_with(bind, identity, tls, peers.into_iter().map(PeerAddr::from).collect(), Limits::default())
    }

    /// [`Transport::start`] with peer names and explicit limits.
    pub fn start_with(
        bind: SocketAddr,
        identity: PeerIdentity,
        tls: TlsSetup,
        peers: Vec<PeerAddr>,
        limits: Limits,
    ) -> io::Result<TransportHandle> {
        let parts = tls::build(&tls, &identity)?;
        let socket = UdpSocket::bind(bind)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind the peer address {bind} (UDP): {e}")))?;
        let local = socket.local_addr()?;
        let allow_mtud = tune_socket(&socket, local);
        let engine = Engine::new(&identity, parts, allow_mtud, peers, limits, Instant::now());
        let shared = Rc::new(Shared {
            engine: RefCell::new(engine),
            driver: Notify::default(),
            receiver: Notify::default(),
            stop: Cell::new(Stop::Running),
        });
        let socket = Rc::new(socket);
        let rx = monoio::spawn(receive_loop(shared.clone(), socket.clone()));
        let driver = monoio::spawn(drive_loop(shared.clone(), socket, local, rx));
        crate::log_info!(
            "peer transport listening",
            "address" => local, "member" => identity.member_id,
            "tls" => match tls { TlsSetup::Files { .. } => "files", TlsSetup::Auto => "auto" }
        );
        Ok(TransportHandle { inner: Rc::new(HandleInner { shared, driver: RefCell::new(Some(driver)), local }) })
    }
}

/// Switches GRO off, enlarges the socket buffers and sets don't-fragment
/// (for QUIC's path MTU discovery). Returns whether don't-fragment is set.
fn tune_socket(socket: &UdpSocket, local: SocketAddr) -> bool {
    let fd = socket.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| -> bool {
        // SAFETY: fd is a live socket owned by `socket`; the option value is a
        // c_int on the stack, passed with its exact size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    // Off is the kernel default; say it anyway: one recv is one datagram.
    let _ = set(libc::SOL_UDP, libc::UDP_GRO, 0);
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if !set(libc::SOL_SOCKET, force, SOCKET_BUF_BYTES) {
            let _ = set(libc::SOL_SOCKET, plain, SOCKET_BUF_BYTES);
        }
    }
    match local {
        SocketAddr::V4(_) => set(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE),
        SocketAddr::V6(_) => set(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_PROBE),
    }
}

async fn receive_loop(shared: Rc<Shared>, socket: Rc<UdpSocket>) {
    let mut buf = Vec::with_capacity(RECV_BUF_BYTES);
    loop {
        buf.clear();
        let (res, b) = socket.recv_from(buf).await;
        buf = b;
        if shared.stop.get() != Stop::Running {
            return;
        }
        match res {
            Ok((n, from)) => {
                let data = BytesMut::from(&buf[..n]);
                shared.engine.borrow_mut().handle_datagram(Instant::now(), from, data);
                shared.after_engine_work();
            }
            // ICMP errors and the like: the next datagram is unaffected.
            Err(e) => crate::log_debug!("peer socket receive error", "error" => e),
        }
    }
}

async fn drive_loop(shared: Rc<Shared>, socket: Rc<UdpSocket>, local: SocketAddr, rx: JoinHandle<()>) {
    let mut buf = Vec::with_capacity(2048);
    loop {
        let stop = shared.stop.get();
        if stop == Stop::Abort {
            #[cfg(test)]
            shared.engine.borrow_mut().abort();
            break;
        }
        {
            let mut engine = shared.engine.borrow_mut();
            let now = Instant::now();
            if stop == Stop::Graceful && !engine.is_closing() {
                engine.close_all(now);
            }
            engine.handle_timeout(now);
            engine.resume_reads(now);
            engine.flush(now);
        }
        if !shared.engine.borrow().inbox_is_empty() {
            shared.receiver.notify();
        }
        // A stopping driver gets one longer pass to send the close frames.
        let sends_max = if stop == Stop::Graceful { 4 * SENDS_PER_PASS_MAX } else { SENDS_PER_PASS_MAX };
        let mut sent = 0;
        while sent < sends_max {
            let dest = shared.engine.borrow_mut().poll_transmit(Instant::now(), &mut buf);
            let Some(dest) = dest else { break };
            let (res, b) = socket.send_to(buf, dest).await;
            buf = b;
            sent += 1;
            if let Err(e) = res {
                // EMSGSIZE on an MTU probe, unreachable routes: QUIC treats
                // the datagram as lost and recovers.
                crate::log_debug!("peer socket send error", "to" => dest, "error" => e);
            }
        }
        if stop == Stop::Graceful {
            break;
        }
        if sent == SENDS_PER_PASS_MAX {
            continue;
        }
        let deadline = shared.engine.borrow_mut().poll_timeout();
        wait(&shared.driver, deadline).await;
    }
    // Wake the receive task with a datagram instead of cancelling its recv.
    let wake_to = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), local.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), local.port()),
        _ => local,
    };
    let (res, _) = socket.send_to(vec![0u8], wake_to).await;
    if let Err(e) = res {
        crate::log_warn!("cannot wake the peer receive task to stop it", "error" => e);
    }
    if monoio::time::timeout(STOP_WAIT, rx).await.is_err() {
        crate::log_warn!("peer receive task did not stop in time", "address" => local);
    }
    crate::log_info!("peer transport stopped", "address" => local);
}

/// Waits until notified or until `deadline`.
async fn wait(notify: &Notify, deadline: Option<Instant>) {
    match deadline {
        None => poll_fn(|cx| notify.poll_notified(cx)).await,
        Some(deadline) => {
            let mut sleep = pin!(monoio::time::sleep_until(monoio::time::Instant::from_std(deadline)));
            poll_fn(|cx| {
                if notify.poll_notified(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        }
    }
}

struct HandleInner {
    shared: Rc<Shared>,
    driver: RefCell<Option<JoinHandle<()>>>,
    local: SocketAddr,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        if self.shared.stop.get() == Stop::Running {
            self.shared.stop.set(Stop::Graceful);
            self.shared.driver.notify();
        }
    }
}

/// The node's handle on its peer transport. Clones share one transport; the
/// transport closes its links when the last clone is dropped (or at
/// [`TransportHandle::shutdown`]). Lives on the reactor that started it.
#[derive(Clone)]
pub struct TransportHandle {
    inner: Rc<HandleInner>,
}

impl TransportHandle {
    /// Queues `msg` for `peer`; it goes out with everything else queued in
    /// this reactor tick. Never blocks. A full Raft queue drops its oldest
    /// message; a full Snapshot or Forward queue returns
    /// [`SendError::QueueFull`].
    pub fn send(&self, peer: MemberId, class: MessageClass, msg: Bytes) -> Result<(), SendError> {
        if self.inner.shared.stop.get() != Stop::Running {
            return Err(SendError::Closed);
        }
        self.inner.shared.engine.borrow_mut().send(peer, class, msg)?;
        self.inner.shared.driver.notify();
        Ok(())
    }

    /// The next message from a peer: Raft before Forward before Snapshot;
    /// in order within one peer's class. Meant for one receiving task.
    pub async fn recv(&self) -> (MemberId, MessageClass, Bytes) {
        poll_fn(|cx| loop {
            if let Some(m) = self.try_recv() {
                return Poll::Ready(m);
            }
            // Pending registers the waker; Ready consumed a wake-up that
            // raced with the look above: look again.
            if self.inner.shared.receiver.poll_notified(cx).is_pending() {
                return Poll::Pending;
            }
        })
        .await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Option<(MemberId, MessageClass, Bytes)> {
        let shared = &self.inner.shared;
        let mut engine = shared.engine.borrow_mut();
        let msg = engine.pop_inbox()?;
        if engine.reads_stalled() {
            shared.driver.notify();
        }
        Some(msg)
    }

    /// Replaces the peer set (membership change); this member may be listed.
    pub fn set_peers(&self, peers: Vec<(MemberId, SocketAddr)>) {
        self.set_peer_addrs(peers.into_iter().map(PeerAddr::from).collect());
    }

    /// [`TransportHandle::set_peers`] with certificate names.
    pub fn set_peer_addrs(&self, peers: Vec<PeerAddr>) {
        self.inner.shared.engine.borrow_mut().set_peers(peers, Instant::now());
        self.inner.shared.driver.notify();
    }

    /// Members removed from the cluster: told so when they call (they
    /// stop), instead of being refused as strangers.
    pub fn set_removed(&self, removed: Vec<MemberId>) {
        self.inner.shared.engine.borrow_mut().set_removed(removed);
    }

    /// Whether a peer said this member was removed from the cluster.
    pub fn removed_from_cluster(&self) -> bool {
        self.inner.shared.engine.borrow().removed_from_cluster()
    }

    /// The counters and link states now.
    pub fn stats(&self) -> TransportStats {
        self.inner.shared.engine.borrow().stats()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Closes every link (telling the peers), stops both tasks and releases
    /// the socket. Other clones of the handle stop working.
    pub async fn shutdown(self) {
        self.stop(Stop::Graceful).await;
    }

    /// Test hook: see `Engine::inject_stream`.
    #[cfg(test)]
    pub(crate) fn inject_stream(&self, peer: MemberId, raw: &[u8]) -> bool {
        let ok = self.inner.shared.engine.borrow_mut().inject_stream(peer, raw);
        self.inner.shared.driver.notify();
        ok
    }

    /// Test hook: see `Engine::inject_into`.
    #[cfg(test)]
    pub(crate) fn inject_into(&self, peer: MemberId, class: MessageClass, raw: Bytes) -> bool {
        let ok = self.inner.shared.engine.borrow_mut().inject_into(peer, class, raw);
        self.inner.shared.driver.notify();
        ok
    }

    /// Stops without telling the peers, as a crashed process would.
    #[cfg(test)]
    pub(crate) async fn kill(self) {
        self.stop(Stop::Abort).await;
    }

    async fn stop(self, how: Stop) {
        let shared = &self.inner.shared;
        if shared.stop.get() == Stop::Running {
            shared.stop.set(how);
        }
        shared.driver.notify();
        let driver = self.inner.driver.borrow_mut().take();
        if let Some(driver) = driver {
            driver.await;
        }
    }
}
