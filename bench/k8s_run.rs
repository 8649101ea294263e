//! The `k8s` workload's I/O: set-up (grant this thread's leases, put its
//! share of the preloaded keys and learn their revisions), the clients
//! (one operation after another, picked by the mix) and, on thread 0, the
//! compactor. The shapes and bookkeeping are sans-IO, in `k8s`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corekv::api::grpc::{Code, GrpcClient, Status};
use corekv::api::proto::etcdserverpb::{
    watch_request, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use prost::Message;

use crate::args::Options;
use crate::k8s::{self, Choice, Compactor, K8s, Op, Page, Population};
use crate::keys::Rng;
use crate::run::{share, PreloadResult, ThreadCtx, PRELOAD_TASKS_MAX, UNAVAILABLE_BACKOFF};
use crate::streams::grant_leases;
use crate::workload::PUT;

/// What one thread has ready when measuring starts.
pub struct K8sThread {
    k8s: K8s,
    population: Population,
    leases: Vec<i64>,
    /// Thread 0 only, unless compaction is off.
    compact_interval: Option<Duration>,
    /// Thread 0: one prefix watch per resource, as kube-apiserver's watch
    /// cache keeps.
    watch: bool,
    seed: u64,
}

impl K8sThread {
    /// Leases this thread granted.
    pub fn leases(&self) -> usize {
        self.leases.len()
    }
}

/// Grants this thread's share of `--leases` (when any key carries one)
/// and puts its share of keys `0..--preload`.
pub async fn prepare(
    options: &Options,
    conns: &[GrpcClient],
    thread: usize,
    clients: usize,
) -> Result<(PreloadResult, K8sThread), String> {
    let k8s = K8s::new(options);
    let threads = options.threads;
    let leases = if k8s.uses_leases() {
        grant_leases(conns, share(options.lease.leases as u64, threads, thread) as usize, options.lease.ttl).await?
    } else {
        Vec::new()
    };
    let mut population = Population::new(k8s.layout.keys(), thread, threads);
    let preload = preload(&k8s, &leases, conns, &mut population, options.preload, clients).await;
    let compact_interval = if thread == 0 { options.k8s.compact_interval } else { None };
    let seed = options.seed ^ (thread as u64).wrapping_mul(0xd6e8_feb8_6659_fd93);
    Ok((preload, K8sThread { k8s, population, leases, compact_interval, watch: thread == 0, seed }))
}

/// Puts the thread's keys below `count` (with their leases) and records
/// each one's revision.
async fn preload(
    k8s: &K8s,
    leases: &[i64],
    conns: &[GrpcClient],
    population: &mut Population,
    count: u64,
    clients: usize,
) -> PreloadResult {
    let started = Instant::now();
    let keys: Vec<u64> = population.owned().take_while(|&i| i < count).collect();
    if keys.is_empty() {
        return PreloadResult::default();
    }
    let shared = Rc::new((k8s.clone(), leases.to_vec(), keys));
    let next = Rc::new(Cell::new(0usize));
    let learned = Rc::new(RefCell::new(Vec::new()));
    let result = Rc::new(RefCell::new(PreloadResult::default()));
    let tasks: Vec<_> = (0..clients.min(PRELOAD_TASKS_MAX))
        .map(|i| {
            let (shared, next, learned, result) = (shared.clone(), next.clone(), learned.clone(), result.clone());
            let conn = conns[i % conns.len()].clone();
            monoio::spawn(async move {
                let (k8s, leases, keys) = &*shared;
                let mut scratch = BytesMut::new();
                while let Some(&index) = keys.get(next.get()) {
                    next.set(next.get() + 1);
                    scratch.clear();
                    k8s.layout.write_key(index, &mut scratch);
                    let key = scratch.split().freeze();
                    let lease = k8s.lease_of(index, leases);
                    let put = PutRequest { key, value: k8s.value().clone(), lease, ..Default::default() };
                    let reply = conn.unary(PUT, k8s::encode(&put, &mut scratch)).await;
                    let mut result = result.borrow_mut();
                    match reply.map(PutResponse::decode) {
                        Ok(Ok(PutResponse { header: Some(h), .. })) if h.revision > 0 => {
                            result.ok += 1;
                            learned.borrow_mut().push((index, h.revision));
                        }
                        Ok(_) => {
                            result.failed += 1;
                            result.first_error.get_or_insert_with(|| "a Put reply without a revision".into());
                        }
                        Err(status) => {
                            result.failed += 1;
                            result.first_error.get_or_insert_with(|| status.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    for (index, revision) in learned.take() {
        population.settle(index, revision);
    }
    let mut result = result.take();
    result.elapsed = started.elapsed();
    result
}

/// What a thread's clients share while measuring.
struct State {
    k8s: K8s,
    population: RefCell<Population>,
    leases: Vec<i64>,
    rng: RefCell<Rng>,
}

impl K8sThread {
    /// Runs the clients (and the compactor, on thread 0) until the budget
    /// is spent. The compactor is left behind when the clients end; it
    /// ends with the runtime.
    pub async fn run(self, ctx: &Rc<ThreadCtx>, conns: &[GrpcClient], clients: usize) {
        let state = Rc::new(State {
            k8s: self.k8s,
            population: RefCell::new(self.population),
            leases: self.leases,
            rng: RefCell::new(Rng::new(self.seed)),
        });
        let stop = Rc::new(Cell::new(false));
        if let Some(interval) = self.compact_interval {
            drop(monoio::spawn(compactor(ctx.clone(), conns[0].clone(), interval, stop.clone())));
        }
        if self.watch {
            for r in 0..state.k8s.layout.resources().len() {
                let prefix = state.k8s.layout.resource_prefix(r);
                let conn = conns[r % conns.len()].clone();
                drop(monoio::spawn(watch_cache(ctx.clone(), conn, prefix, stop.clone())));
            }
        }
        let tasks: Vec<_> = (0..clients)
            .map(|i| monoio::spawn(client(ctx.clone(), state.clone(), conns[i % conns.len()].clone())))
            .collect();
        for task in tasks {
            task.await;
        }
        stop.set(true);
    }
}

/// What an operation's replies said.
#[derive(Debug, Default)]
struct Done {
    /// Keys returned, counted or deleted.
    keys: u64,
    /// A keyed txn: whether its compare held.
    txn: Option<bool>,
    /// A get saw another revision than the generator knew.
    stale: bool,
    /// A list's pages disagreed.
    mismatch: bool,
    /// A reply did not decode.
    bad_reply: bool,
}

/// One client: operations back to back (or paced) until the budget is spent.
async fn client(ctx: Rc<ThreadCtx>, state: Rc<State>, conn: GrpcClient) {
    let mut scratch = BytesMut::new();
    let resources = state.k8s.layout.resources().len();
    while ctx.budget.take() {
        let choice = state.population.borrow_mut().choose(&state.k8s.mix, resources, &mut state.rng.borrow_mut());
        let began = ctx.begin().await;
        let (requests, result) = match choice {
            Choice::Keyed { op, index, revision } => keyed(&state, &conn, op, index, revision, &mut scratch).await,
            Choice::Prefix { op: Op::List, resource } => list(&state, &conn, resource, &mut scratch).await,
            Choice::Prefix { resource, .. } => count(&state, &conn, resource, &mut scratch).await,
        };
        let done = Instant::now();
        let unavailable = matches!(&result, Err(status) if status.code == Code::Unavailable);
        record(&ctx, choice.op(), requests, result, done - began, done - ctx.start);
        if unavailable {
            monoio::time::sleep(UNAVAILABLE_BACKOFF).await;
        }
        ctx.count_done();
    }
}

/// Counts an operation overall, for its kind and in the outcomes.
fn record(
    ctx: &ThreadCtx,
    op: Op,
    requests: u64,
    result: Result<Done, Status>,
    latency: Duration,
    since_start: Duration,
) {
    let mut stats = ctx.stats.borrow_mut();
    let done = match result {
        Ok(done) => done,
        Err(status) => {
            stats.record_op_error(op.index(), &status).requests += requests;
            return;
        }
    };
    let kind = stats.record_op_ok(op.index(), latency, since_start);
    kind.requests += requests;
    kind.keys += done.keys;
    if done.txn == Some(false) {
        kind.conflicts += 1;
    }
    let o = &mut stats.outcomes;
    match done.txn {
        Some(true) => o.txn_succeeded += 1,
        Some(false) => o.txn_failed += 1,
        None => {}
    }
    match op {
        Op::Get | Op::List | Op::Count => o.keys_read += done.keys,
        Op::Delete => o.keys_deleted += done.keys,
        _ => {}
    }
    o.stale_reads += u64::from(done.stale);
    o.list_mismatches += u64::from(done.mismatch);
    o.bad_replies += u64::from(done.bad_reply);
}

/// A create, update, delete or get of key `index`. The key's new state is
/// settled from the reply; after an error its old one is kept (a conflict
/// will correct it if the request did apply).
async fn keyed(
    state: &State,
    conn: &GrpcClient,
    op: Op,
    index: u64,
    revision: i64,
    scratch: &mut BytesMut,
) -> (u64, Result<Done, Status>) {
    let lease = state.k8s.lease_of(index, &state.leases);
    let request = state.k8s.keyed_request(op, index, revision, lease, scratch);
    let reply = conn.unary(if op == Op::Get { k8s::RANGE } else { k8s::TXN }, request).await;
    let mut done = Done::default();
    let now = match reply {
        Err(status) => {
            state.population.borrow_mut().settle(index, revision);
            return (1, Err(status));
        }
        Ok(reply) if op == Op::Get => match RangeResponse::decode(reply) {
            Ok(r) => {
                let seen = k8s::revision_seen(&r);
                done.keys = r.kvs.len() as u64;
                done.stale = seen != revision;
                seen
            }
            Err(_) => {
                done.bad_reply = true;
                revision
            }
        },
        Ok(reply) => match TxnResponse::decode(reply) {
            Ok(r) => {
                done.txn = Some(r.succeeded);
                if op == Op::Delete && r.succeeded {
                    done.keys = 1;
                }
                k8s::revision_after(op, &r)
            }
            Err(_) => {
                done.bad_reply = true;
                revision
            }
        },
    };
    state.population.borrow_mut().settle(index, now);
    (1, Ok(done))
}

/// A paginated list of resource `resource`: page after page at the first
/// page's revision until `more` is false.
async fn list(
    state: &State,
    conn: &GrpcClient,
    resource: usize,
    scratch: &mut BytesMut,
) -> (u64, Result<Done, Status>) {
    let mut pager = state.k8s.list(resource);
    // A server that says `more` forever must not hold the client forever.
    let pages_max = state.k8s.layout.keys() + 2;
    let mut requests = 0;
    loop {
        let request = k8s::encode(&pager.request(), scratch);
        requests += 1;
        let reply = match conn.unary(k8s::RANGE, request).await {
            Ok(reply) => reply,
            Err(status) => return (requests, Err(status)),
        };
        let Ok(page) = RangeResponse::decode(reply) else {
            return (requests, Ok(Done { keys: pager.keys, bad_reply: true, ..Default::default() }));
        };
        if pager.observe(&page) == Page::Done || pager.pages >= pages_max {
            let mismatch = pager.inconsistent || pager.pages >= pages_max;
            return (requests, Ok(Done { keys: pager.keys, mismatch, ..Default::default() }));
        }
    }
}

/// A count-only range of resource `resource`.
async fn count(
    state: &State,
    conn: &GrpcClient,
    resource: usize,
    scratch: &mut BytesMut,
) -> (u64, Result<Done, Status>) {
    let request = state.k8s.count_request(resource, scratch);
    let result = conn.unary(k8s::RANGE, request).await.map(|reply| match RangeResponse::decode(reply) {
        Ok(r) => Done { keys: r.count.max(0) as u64, ..Default::default() },
        Err(_) => Done { bad_reply: true, ..Default::default() },
    });
    (1, result)
}

/// kube-apiserver's compactor: a round at once (which records a revision),
/// then one every `interval`, each compacting the revision recorded one
/// round before when its `compact_rev_key` txn wins.
async fn compactor(ctx: Rc<ThreadCtx>, conn: GrpcClient, interval: Duration, stop: Rc<Cell<bool>>) {
    let mut compactor = Compactor::default();
    let mut scratch = BytesMut::new();
    let mut next = Instant::now();
    while !stop.get() {
        let began = Instant::now();
        let reply = conn.unary(k8s::TXN, k8s::encode(&compactor.txn(), &mut scratch)).await;
        let done = Instant::now();
        let (compact, result) = match reply {
            Err(status) => (None, Err(status)),
            Ok(reply) => match TxnResponse::decode(reply) {
                Ok(r) => (compactor.observe(&r), Ok(Done { txn: Some(r.succeeded), ..Default::default() })),
                Err(_) => (None, Ok(Done { bad_reply: true, ..Default::default() })),
            },
        };
        record(&ctx, Op::CompactTxn, 1, result, done - began, done - ctx.start);
        if let Some(revision) = compact {
            let began = Instant::now();
            let reply = conn.unary(k8s::COMPACT, k8s::compact_request(revision)).await;
            let done = Instant::now();
            record(&ctx, Op::Compact, 1, reply.map(|_| Done::default()), done - began, done - ctx.start);
        }
        next += interval;
        if next > Instant::now() {
            monoio::time::sleep_until(monoio::time::Instant::from_std(next)).await;
        }
    }
}

/// kube-apiserver's watch cache for one resource: list (for a revision),
/// then watch the resource's prefix from the next revision with previous
/// versions and progress notifications; when the revision has been
/// compacted away, list and watch again. Counts events and checks that
/// revisions never go back. Left behind when the clients end, like the
/// compactor.
async fn watch_cache(ctx: Rc<ThreadCtx>, conn: GrpcClient, prefix: Vec<u8>, stop: Rc<Cell<bool>>) {
    while !stop.get() {
        let revision = match list_revision(&conn, &prefix).await {
            Ok(r) => r,
            Err(_) => {
                ctx.stats.borrow_mut().outcomes.watch_errors += 1;
                monoio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        match watch_from(&ctx, &conn, &prefix, revision + 1, &stop).await {
            WatchEnd::Stopped => return,
            WatchEnd::Compacted => ctx.stats.borrow_mut().outcomes.watch_restarts += 1,
            WatchEnd::Failed => {
                ctx.stats.borrow_mut().outcomes.watch_errors += 1;
                monoio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}

/// Pause before listing and watching again after a failure.
const WATCH_RETRY: Duration = Duration::from_millis(100);
/// How often a watch checks whether the run is over.
const WATCH_POLL: Duration = Duration::from_millis(200);

enum WatchEnd {
    Stopped,
    Compacted,
    Failed,
}

/// The store's revision, from the first page of a list of `prefix`.
async fn list_revision(conn: &GrpcClient, prefix: &[u8]) -> Result<i64, Status> {
    let req = RangeRequest {
        key: prefix.to_vec().into(),
        range_end: crate::keys::prefix_end(prefix).into(),
        limit: 1,
        ..Default::default()
    };
    let reply = conn.unary(k8s::RANGE, req.encode_to_vec().into()).await?;
    match RangeResponse::decode(reply) {
        Ok(RangeResponse { header: Some(h), .. }) if h.revision > 0 => Ok(h.revision),
        _ => Err(Status::internal("a list reply without a revision")),
    }
}

const WATCH_METHOD: &str = "/etcdserverpb.Watch/Watch";

/// Watches `prefix` from `start` until the run stops or the watch ends.
async fn watch_from(ctx: &ThreadCtx, conn: &GrpcClient, prefix: &[u8], start: i64, stop: &Cell<bool>) -> WatchEnd {
    let Ok((mut sink, mut replies)) = conn.streaming(WATCH_METHOD).await else { return WatchEnd::Failed };
    let create = WatchCreateRequest {
        key: prefix.to_vec().into(),
        range_end: crate::keys::prefix_end(prefix).into(),
        start_revision: start,
        progress_notify: true,
        prev_kv: true,
        ..Default::default()
    };
    let req = WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    if sink.send(req.encode_to_vec().into()).await.is_err() {
        return WatchEnd::Failed;
    }
    let mut last = start - 1;
    loop {
        if stop.get() {
            return WatchEnd::Stopped;
        }
        let message = match monoio::time::timeout(WATCH_POLL, replies.message()).await {
            Err(_) => continue,
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None) | Err(_)) => return if stop.get() { WatchEnd::Stopped } else { WatchEnd::Failed },
        };
        let Ok(r) = WatchResponse::decode(message) else { return WatchEnd::Failed };
        if r.canceled {
            return if r.compact_revision > 0 { WatchEnd::Compacted } else { WatchEnd::Failed };
        }
        let mut o = ctx.stats.borrow_mut();
        for e in &r.events {
            let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
            if rev < last || rev < start {
                o.outcomes.watch_errors += 1;
            }
            last = last.max(rev);
            o.outcomes.watch_events += 1;
        }
    }
}
