//! The streaming workloads' I/O: `watch` (streams of prefix watches that
//! are read, and writers whose puts they must see), `watch-slow` (watch
//! streams on connections of their own that are never read while `put`
//! runs) and `lease-keepalive` (LeaseKeepAlive streams). Set-up happens in
//! two phases so the server's RSS can be read between them: [`open`]
//! opens the streams (each confirmed by a progress request, which etcd 3.4
//! and corekv both answer on a stream without watches), [`prepare`]
//! creates the watches or grants the leases. The request shapes and the
//! delivery bookkeeping are sans-IO, in `watch` and `lease`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use corekv::api::grpc::{ClientSink, ClientStream, Code, GrpcClient, Status};
use corekv::api::proto::etcdserverpb::{PutResponse, WatchResponse};
use prost::Message;

use crate::args::{Options, WorkloadKind};
use crate::lease::{self, KeepAlive};
use crate::run::{bump, connect_share, first_of_share, share, SetupCounts, Shared, ThreadCtx, UNAVAILABLE_BACKOFF};
use crate::watch::{self, Keys, Layout, PutRecord, Receipt, StampedPut};
use crate::workload::PUT;

const WATCH: &str = "/etcdserverpb.Watch/Watch";
/// How long the server may take to answer one set-up step (a progress
/// request, a batch of watch creations, a lease grant).
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lease grants in flight per thread during set-up.
const GRANT_TASKS_MAX: usize = 64;
/// How often a thread whose writers finished looks for the end of the drain.
const DRAIN_POLL: Duration = Duration::from_millis(2);

/// A watch stream and the watches created on it.
pub struct WatchStream {
    /// Kept open: dropping it would end the stream.
    sink: ClientSink,
    replies: ClientStream,
    /// `watch_id` -> global watcher number.
    watchers: HashMap<i64, u32>,
}

/// What a thread opened before its set-up phase.
pub enum Opened {
    Nothing,
    /// `watch`: the measured streams, without watches yet.
    Watch(Vec<WatchStream>),
    /// `watch-slow`: connections of their own and streams on them.
    Slow {
        conns: Vec<GrpcClient>,
        streams: Vec<WatchStream>,
    },
}

/// What a thread has ready when measuring starts.
pub enum Prepared {
    /// KV workloads.
    Kv,
    /// `watch-slow`: streams with watches that are never read again.
    Slow(SlowSet),
    Watch(WatchSet),
    Lease(LeaseSet),
    /// `k8s`: leases granted, keys preloaded (see `k8s_run`).
    K8s(Box<crate::k8s_run::K8sThread>),
}

impl Prepared {
    pub fn counts(&self) -> SetupCounts {
        match self {
            Prepared::Kv => SetupCounts::default(),
            Prepared::Slow(s) => SetupCounts {
                streams: s.streams.len() as u64,
                watchers: s.streams.iter().map(|s| s.watchers.len() as u64).sum(),
                extra_conns: s.conns.len() as u64,
                ..Default::default()
            },
            Prepared::Watch(w) => SetupCounts {
                streams: w.streams.len() as u64,
                watchers: w.streams.iter().map(|s| s.watchers.len() as u64).sum(),
                ..Default::default()
            },
            Prepared::Lease(l) => {
                SetupCounts { streams: l.streams.len() as u64, leases: l.leases.len() as u64, ..Default::default() }
            }
            Prepared::K8s(k) => SetupCounts { leases: k.leases() as u64, ..Default::default() },
        }
    }
}

/// Opens this thread's streams (none for KV and lease workloads).
pub async fn open(
    options: &Options,
    addrs: &[SocketAddr],
    conns: &[GrpcClient],
    thread: usize,
) -> Result<Opened, String> {
    let threads = options.threads;
    match options.workload {
        WorkloadKind::Watch => {
            let count = share(options.watch.streams as u64, threads, thread) as usize;
            let mut streams = Vec::with_capacity(count);
            for i in 0..count {
                streams.push(open_watch_stream(&conns[i % conns.len()]).await?);
            }
            Ok(Opened::Watch(streams))
        }
        WorkloadKind::WatchSlow => {
            let slow = &options.slow;
            let conns = connect_share(addrs, slow.conns, threads, thread).await?;
            let count = share(slow.streams as u64, threads, thread) as usize;
            let mut streams = Vec::with_capacity(count);
            for i in 0..count {
                streams.push(open_watch_stream(&conns[i % conns.len()]).await?);
            }
            Ok(Opened::Slow { conns, streams })
        }
        _ => Ok(Opened::Nothing),
    }
}

/// Creates this thread's watches or grants its leases.
pub async fn prepare(
    options: &Options,
    conns: &[GrpcClient],
    thread: usize,
    clients: usize,
    opened: Opened,
) -> Result<Prepared, String> {
    let threads = options.threads;
    match opened {
        Opened::Watch(mut streams) => {
            let layout = Layout::new(&options.watch);
            let keys = Keys::new(&options.prefix, options.key_size, options.watch.prefixes, options.key_space_size);
            let first = first_of_share(options.watch.streams, threads, thread) as u32;
            for (i, stream) in streams.iter_mut().enumerate() {
                let s = first + i as u32;
                let watches: Vec<(u32, Vec<u8>)> = (0..layout.per_stream)
                    .map(|j| layout.watcher(s, j))
                    .map(|w| (w, keys.watch_prefix(layout.prefix_of_watcher(w))))
                    .collect();
                create_watches(stream, &watches).await?;
            }
            Ok(Prepared::Watch(WatchSet { streams, layout, keys, writers: clients }))
        }
        Opened::Slow { conns, mut streams } => {
            let slow = &options.slow;
            let first = first_of_share(slow.streams, threads, thread);
            for (i, stream) in streams.iter_mut().enumerate() {
                let count = share(slow.watchers as u64, slow.streams, first + i);
                // Every slow watcher sees every key the writers put.
                let watches: Vec<(u32, Vec<u8>)> = (0..count as u32).map(|j| (j, options.prefix.clone())).collect();
                create_watches(stream, &watches).await?;
            }
            Ok(Prepared::Slow(SlowSet { conns, streams }))
        }
        Opened::Nothing if options.workload == WorkloadKind::LeaseKeepAlive => {
            let count = share(options.lease.leases as u64, threads, thread) as usize;
            let leases = grant_leases(conns, count, options.lease.ttl).await?;
            let mut streams = Vec::with_capacity(clients);
            for i in 0..clients {
                let conn = &conns[i % conns.len()];
                let (mut sink, mut replies) = conn
                    .streaming(lease::KEEP_ALIVE)
                    .await
                    .map_err(|s| format!("cannot open a keep-alive stream: {s}"))?;
                // One keep-alive first: the stream works and the lease lives.
                let id = leases[lease::lease_index(i, clients, 0, leases.len())];
                let mut scratch = BytesMut::new();
                sink.send(lease::keep_alive_request(id, &mut scratch))
                    .await
                    .map_err(|s| format!("cannot send a keep-alive: {s}"))?;
                let reply = setup_reply(&mut replies, "a keep-alive").await?;
                if !matches!(lease::keep_alive_outcome(reply, id), KeepAlive::Renewed(_)) {
                    return Err(format!("the first keep-alive of lease {id} did not renew it"));
                }
                streams.push((sink, replies));
            }
            Ok(Prepared::Lease(LeaseSet { leases, streams }))
        }
        Opened::Nothing => Ok(Prepared::Kv),
    }
}

/// Opens a watch stream and waits for the answer to a progress request,
/// so the server has set the stream up when this returns.
async fn open_watch_stream(conn: &GrpcClient) -> Result<WatchStream, String> {
    let (mut sink, mut replies) =
        conn.streaming(WATCH).await.map_err(|s| format!("cannot open a watch stream: {s}"))?;
    sink.send(watch::progress_request()).await.map_err(|s| format!("cannot send on a watch stream: {s}"))?;
    let reply = setup_reply(&mut replies, "a progress request").await?;
    let r = WatchResponse::decode(reply).map_err(|e| format!("undecodable watch response: {e}"))?;
    if r.created || r.canceled || !r.events.is_empty() {
        return Err(format!("a progress request on a new watch stream was answered with {r:?}"));
    }
    Ok(WatchStream { sink, replies, watchers: HashMap::new() })
}

/// Creates prefix watches `(watcher number, prefix)` on `stream`: sends
/// every create request, then reads the confirmations in order (etcd and
/// corekv confirm creates in the order they were asked).
async fn create_watches(stream: &mut WatchStream, watches: &[(u32, Vec<u8>)]) -> Result<(), String> {
    for (_, prefix) in watches {
        stream.sink.send(watch::create_request(prefix)).await.map_err(|s| format!("cannot create a watch: {s}"))?;
    }
    for &(watcher, _) in watches {
        let reply = setup_reply(&mut stream.replies, "a watch create request").await?;
        let r = WatchResponse::decode(reply).map_err(|e| format!("undecodable watch response: {e}"))?;
        if !r.created || r.canceled {
            return Err(format!("watch create refused or unanswered: {r:?}"));
        }
        if stream.watchers.insert(r.watch_id, watcher).is_some() {
            return Err(format!("watch ID {} was given twice on one stream", r.watch_id));
        }
    }
    Ok(())
}

/// The next message of a set-up exchange, or why there is none.
async fn setup_reply(replies: &mut ClientStream, what: &str) -> Result<Bytes, String> {
    match monoio::time::timeout(SETUP_TIMEOUT, replies.message()).await {
        Err(_) => Err(format!("no answer to {what} in {} s", SETUP_TIMEOUT.as_secs())),
        Ok(Err(status)) => Err(format!("the stream ended after {what}: {status}")),
        Ok(Ok(None)) => Err(format!("the stream ended without answering {what}")),
        Ok(Ok(Some(reply))) => Ok(reply),
    }
}

/// Grants `count` leases of `ttl` seconds over `conns`.
pub(crate) async fn grant_leases(conns: &[GrpcClient], count: usize, ttl: i64) -> Result<Vec<i64>, String> {
    let left = Rc::new(std::cell::Cell::new(count));
    let granted = Rc::new(RefCell::new(Vec::with_capacity(count)));
    let tasks: Vec<_> = (0..count.min(GRANT_TASKS_MAX))
        .map(|i| {
            let (left, granted, conn) = (left.clone(), granted.clone(), conns[i % conns.len()].clone());
            monoio::spawn(async move {
                while left.get() > 0 {
                    left.set(left.get() - 1);
                    let reply =
                        monoio::time::timeout(SETUP_TIMEOUT, conn.unary(lease::GRANT, lease::grant_request(ttl)))
                            .await
                            .map_err(|_| format!("no answer to LeaseGrant in {} s", SETUP_TIMEOUT.as_secs()))?
                            .map_err(|s| format!("LeaseGrant failed: {s}"))?;
                    granted.borrow_mut().push(lease::granted_id(reply)?);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(granted.take())
}

/// `watch-slow`'s streams, kept open and unread while measuring.
pub struct SlowSet {
    #[allow(dead_code)]
    conns: Vec<GrpcClient>,
    streams: Vec<WatchStream>,
}

/// A `watch` thread's measured streams and what its writers put.
pub struct WatchSet {
    streams: Vec<WatchStream>,
    layout: Layout,
    keys: Keys,
    writers: usize,
}

/// What a `watch` thread recorded, handed to the main thread.
#[derive(Debug, Default)]
pub struct WatchThread {
    pub puts: Vec<PutRecord>,
    pub receipts: Vec<Receipt>,
    pub faults: Faults,
}

/// What went wrong on a thread's watch streams.
#[derive(Debug, Default)]
pub struct Faults {
    pub canceled: u64,
    pub bad_responses: u64,
    pub stream_errors: u64,
    pub first_error: Option<String>,
}

impl Faults {
    fn note(&mut self, error: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }
}

/// What a `watch` thread's readers and writers share.
struct WatchCtx {
    layout: Layout,
    keys: Keys,
    put: StampedPut,
    puts: RefCell<Vec<PutRecord>>,
    receipts: RefCell<Vec<Receipt>>,
    faults: RefCell<Faults>,
}

impl WatchSet {
    /// Reads every stream and runs the writers; when they finish, tells
    /// the main thread and keeps reading until it ends the drain. Returns
    /// when the writers finished, and the records.
    pub async fn run(
        self,
        ctx: Rc<ThreadCtx>,
        conns: &[GrpcClient],
        options: &Options,
        shared: &Arc<Shared>,
    ) -> (Instant, WatchThread) {
        let w = Rc::new(WatchCtx {
            layout: self.layout,
            put: StampedPut::new(self.keys.key_size(), options.val_size),
            keys: self.keys,
            puts: RefCell::new(Vec::new()),
            receipts: RefCell::new(Vec::new()),
            faults: RefCell::new(Faults::default()),
        });
        // Readers are detached: they end with the runtime.
        for stream in self.streams {
            drop(monoio::spawn(reader(stream, w.clone(), shared.clone(), ctx.thread)));
        }
        let writers: Vec<_> = (0..self.writers)
            .map(|i| monoio::spawn(writer(ctx.clone(), w.clone(), conns[i % conns.len()].clone())))
            .collect();
        for task in writers {
            task.await;
        }
        let end = Instant::now();
        shared.threads[ctx.thread].writers_done.store(true, Ordering::Release);
        while !shared.stop.load(Ordering::Acquire) {
            monoio::time::sleep(DRAIN_POLL).await;
        }
        let records = WatchThread { puts: w.puts.take(), receipts: w.receipts.take(), faults: w.faults.take() };
        (end, records)
    }
}

/// Reads one watch stream: every event becomes a receipt stamped with the
/// time its response was decoded.
async fn reader(mut stream: WatchStream, w: Rc<WatchCtx>, shared: Arc<Shared>, thread: usize) {
    loop {
        let message = stream.replies.message().await;
        let recv_ns = shared.ns(Instant::now());
        let reply = match message {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                let mut faults = w.faults.borrow_mut();
                faults.stream_errors += 1;
                faults.note(|| "a watch stream ended".into());
                return;
            }
            Err(status) => {
                let mut faults = w.faults.borrow_mut();
                faults.stream_errors += 1;
                faults.note(|| format!("a watch stream failed: {status}"));
                return;
            }
        };
        let Ok(r) = WatchResponse::decode(reply) else {
            w.faults.borrow_mut().bad_responses += 1;
            continue;
        };
        if r.canceled {
            let mut faults = w.faults.borrow_mut();
            faults.canceled += 1;
            faults.note(|| format!("watch {} canceled: {:?}", r.watch_id, r.cancel_reason));
        }
        if r.events.is_empty() {
            continue;
        }
        let Some(&watcher) = stream.watchers.get(&r.watch_id) else {
            w.faults.borrow_mut().bad_responses += 1;
            continue;
        };
        let mut receipts = w.receipts.borrow_mut();
        for event in &r.events {
            let (revision, stamp_ns) = match &event.kv {
                Some(kv) => (kv.mod_revision, watch::read_stamp(&kv.value).unwrap_or(u64::MAX)),
                None => (0, u64::MAX),
            };
            receipts.push(Receipt { watcher, revision, stamp_ns, recv_ns });
        }
        bump(&shared.threads[thread].received, r.events.len() as u64);
    }
}

/// One writer: puts under the watched prefixes, each value stamped with
/// its send time (the pacing slot with `--rate`), until the budget is spent.
async fn writer(ctx: Rc<ThreadCtx>, w: Rc<WatchCtx>, conn: GrpcClient) {
    let mut scratch = BytesMut::new();
    let expected = &ctx.shared.threads[ctx.thread].expected;
    while ctx.budget.take() {
        let n = ctx.picker.borrow_mut().next_index();
        let prefix = w.layout.prefix_of_key(n);
        let began = ctx.begin().await;
        let sent_ns = ctx.shared.ns(began);
        let request = w.put.render(&w.keys, n, sent_ns, &mut scratch);
        let reply = conn.unary(PUT, request).await;
        let done = Instant::now();
        match reply {
            Ok(reply) => {
                let mut stats = ctx.stats.borrow_mut();
                stats.record_ok(done - began, done - ctx.start);
                match PutResponse::decode(reply).ok().and_then(|r| r.header).map(|h| h.revision) {
                    Some(revision) if revision > 0 => {
                        let acked_ns = ctx.shared.ns(done);
                        w.puts.borrow_mut().push(PutRecord { revision, prefix, sent_ns, acked_ns });
                        bump(expected, u64::from(w.layout.watchers_of(prefix)));
                    }
                    _ => stats.outcomes.bad_replies += 1,
                }
            }
            Err(status) => record_failure(&ctx, &status).await,
        }
        ctx.count_done();
    }
}

async fn record_failure(ctx: &ThreadCtx, status: &Status) {
    ctx.stats.borrow_mut().record_error(status);
    if status.code == Code::Unavailable {
        monoio::time::sleep(UNAVAILABLE_BACKOFF).await;
    }
}

/// A `lease-keepalive` thread's leases and keep-alive streams.
pub struct LeaseSet {
    leases: Vec<i64>,
    streams: Vec<(ClientSink, ClientStream)>,
}

impl LeaseSet {
    /// Runs one keeper per stream until the budget is spent.
    pub async fn run(self, ctx: &Rc<ThreadCtx>, conns: &[GrpcClient]) {
        let leases = Rc::new(self.leases);
        let clients = self.streams.len();
        let tasks: Vec<_> = self
            .streams
            .into_iter()
            .enumerate()
            .map(|(i, stream)| {
                let conn = conns[i % conns.len()].clone();
                monoio::spawn(keeper(ctx.clone(), leases.clone(), i, clients, stream, conn))
            })
            .collect();
        for task in tasks {
            task.await;
        }
    }
}

/// One keep-alive stream: the next keep-alive as soon as the last is
/// answered (or at its pacing slot). A stream that fails is reopened.
async fn keeper(
    ctx: Rc<ThreadCtx>,
    leases: Rc<Vec<i64>>,
    client: usize,
    clients: usize,
    stream: (ClientSink, ClientStream),
    conn: GrpcClient,
) {
    let mut scratch = BytesMut::new();
    let mut stream = Some(stream);
    let mut round = 1u64;
    while ctx.budget.take() {
        let id = leases[lease::lease_index(client, clients, round, leases.len())];
        round += 1;
        let request = lease::keep_alive_request(id, &mut scratch);
        let began = ctx.begin().await;
        let reply = match &mut stream {
            Some(open) => keep_alive(open, request).await,
            None => match conn.streaming(lease::KEEP_ALIVE).await {
                Ok(mut open) => {
                    let reply = keep_alive(&mut open, request).await;
                    stream = Some(open);
                    reply
                }
                Err(status) => Err(status),
            },
        };
        let done = Instant::now();
        match reply {
            Ok(reply) => {
                let mut stats = ctx.stats.borrow_mut();
                stats.record_ok(done - began, done - ctx.start);
                match lease::keep_alive_outcome(reply, id) {
                    KeepAlive::Renewed(_) => {}
                    KeepAlive::Expired => stats.outcomes.leases_expired += 1,
                    KeepAlive::Bad => stats.outcomes.bad_replies += 1,
                }
            }
            Err(status) => {
                stream = None;
                record_failure(&ctx, &status).await;
            }
        }
        ctx.count_done();
    }
    if let Some((mut sink, _)) = stream {
        let _ = sink.close();
    }
}

/// One keep-alive request and its reply on an open stream.
async fn keep_alive((sink, replies): &mut (ClientSink, ClientStream), request: Bytes) -> Result<Bytes, Status> {
    sink.send(request).await?;
    match replies.message().await? {
        Some(reply) => Ok(reply),
        None => Err(Status::internal("the keep-alive stream ended")),
    }
}
