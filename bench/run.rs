//! Runs a benchmark: one OS thread per `--threads`, each with its own monoio
//! runtime, its connections and its client tasks. Nothing is shared on the
//! hot path: each thread keeps its statistics, key picker and known
//! revisions in thread-local cells and hands them to the main thread when
//! its measured phase ends; the only cross-thread writes during the run are
//! each thread's own counters (progress; for `watch`, events expected and
//! received), each on its own cache line.
//!
//! Phases, each ending at a barrier of every thread and the main thread:
//! connect (the main thread then reads the server's RSS) -> open streams
//! (watch streams, confirmed by a progress request; RSS again) -> set up
//! (preload, create watches, grant leases; RSS again, CPU counters) -> all
//! start together -> measure -> (`watch`: drain outstanding events) ->
//! each thread reports -> the main thread samples again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use corekv::api::grpc::{Code, GrpcClient};

use crate::args::{Options, Stop, WorkloadKind};
use crate::keys::KeyPicker;
use crate::stats::Stats;
use crate::streams::{self, Prepared, WatchThread};
use crate::sys::{self, CpuTime};
use crate::watch::{self, Delivery, Layout};
use crate::workload::{ClientBuf, Outcomes, Workload};

/// io_uring submission queue entries per generator runtime.
const URING_ENTRIES: u32 = 4096;
/// Preload tasks per thread at most (preload is not measured; this only
/// keeps it quick without flooding the server).
pub(crate) const PRELOAD_TASKS_MAX: usize = 256;
/// Pause after an UNAVAILABLE reply so a dead connection does not turn the
/// client into a busy loop of instant failures.
pub(crate) const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(1);
/// How long opening one connection (TCP and HTTP/2 handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the main thread looks at the drain of a `watch` run.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What the measured phase and its preparation produced.
#[derive(Debug)]
pub struct RunResult {
    /// Every thread's measurements, merged.
    pub stats: Stats,
    /// From the first thread's start to the last thread's end (for
    /// `watch`: to the last writer's end; the drain is not counted).
    pub elapsed: Duration,
    /// CPU the generator threads used in the measured phase (the sum of
    /// each thread's own usage, so setup and preload are left out).
    pub generator_cpu: CpuTime,
    /// CPU the whole generator process used during the measured phase,
    /// main thread and runtime internals included.
    pub process_cpu: CpuTime,
    pub preload: PreloadResult,
    /// Streams, watches and leases set up before measuring.
    pub setup: SetupResult,
    /// The server's usage, with `--server-pid`.
    pub server: Option<ServerUsage>,
    /// `watch`: what the watchers received, checked against the puts.
    pub watch: Option<WatchResult>,
}

/// The unmeasured puts before the run.
#[derive(Clone, Debug, Default)]
pub struct PreloadResult {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// What each thread set up before measuring, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetupCounts {
    /// Watch streams (`watch`: measured ones; `watch-slow`: slow ones) or
    /// keep-alive streams.
    pub streams: u64,
    /// Watches created.
    pub watchers: u64,
    /// Leases granted.
    pub leases: u64,
    /// Connections opened besides `--conns` (`watch-slow`).
    pub extra_conns: u64,
}

impl SetupCounts {
    fn add(&mut self, other: &SetupCounts) {
        self.streams += other.streams;
        self.watchers += other.watchers;
        self.leases += other.leases;
        self.extra_conns += other.extra_conns;
    }
}

/// The set-up phases: what they made and how long they took.
#[derive(Clone, Debug, Default)]
pub struct SetupResult {
    pub counts: SetupCounts,
    /// Opening streams (after connecting).
    pub open_elapsed: Duration,
    /// Preload, watch creation, lease grants.
    pub create_elapsed: Duration,
}

/// A server process's use of the machine during the measured phase.
#[derive(Clone, Debug)]
pub struct ServerUsage {
    pub pid: i32,
    /// utime + stime consumed during the measured phase.
    pub cpu: Duration,
    /// Peak resident set (VmHWM) at the end, in KiB: the process's lifetime
    /// peak, preload included.
    pub peak_rss_kib: Option<u64>,
    /// Resident set (VmRSS) in KiB at each phase.
    pub rss: RssSamples,
}

/// The server's VmRSS (KiB) after connecting, after opening streams,
/// after set-up (watches created, leases granted) and at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssSamples {
    pub connected: Option<u64>,
    pub streams_open: Option<u64>,
    pub set_up: Option<u64>,
    pub end: Option<u64>,
}

impl RssSamples {
    /// KiB per stream: the growth while opening `streams` streams.
    pub fn per_stream_kib(&self, streams: u64) -> Option<f64> {
        per_kib(self.connected?, self.streams_open?, streams)
    }

    /// KiB per watcher (or lease): the growth while creating `n` of them.
    pub fn per_item_kib(&self, n: u64) -> Option<f64> {
        per_kib(self.streams_open?, self.set_up?, n)
    }
}

fn per_kib(before: u64, after: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (after as f64 - before as f64) / n as f64)
}

/// `watch`: delivery checked, and the troubles the streams had.
#[derive(Debug)]
pub struct WatchResult {
    pub layout: Layout,
    pub delivery: Delivery,
    /// Delivered events per second, from the start to the last delivery.
    pub events_per_second: f64,
    /// From the last writer's end until every expected event had come (or
    /// `--watch-drain` ran out).
    pub drain: Duration,
    /// Every expected event arrived within the drain.
    pub drained: bool,
    /// Responses that cancelled a watch.
    pub canceled: u64,
    /// Responses that did not decode, or named an unknown watch.
    pub bad_responses: u64,
    /// Streams that ended while measuring, and the first reason.
    pub stream_errors: u64,
    pub first_error: Option<String>,
}

/// One thread's report.
struct ThreadResult {
    stats: Stats,
    cpu: CpuTime,
    start: Instant,
    end: Instant,
    preload: PreloadResult,
    setup: SetupCounts,
    watch: Option<WatchThread>,
}

/// What the threads and the main thread share: per-thread counters (each
/// written by its own thread only), the time origin of `watch` stamps and
/// the main thread's word that the drain is over.
pub(crate) struct Shared {
    pub epoch: Instant,
    pub threads: Vec<PerThread>,
    pub stop: AtomicBool,
}

#[repr(align(64))]
#[derive(Default)]
pub(crate) struct PerThread {
    /// Requests completed.
    pub done: AtomicU64,
    /// `watch`: events the thread's acknowledged puts should produce.
    pub expected: AtomicU64,
    /// `watch`: events the thread's watchers received.
    pub received: AtomicU64,
    /// `watch`: the thread's writers have finished.
    pub writers_done: AtomicBool,
}

/// Adds `n` to a counter only its own thread writes (no atomic RMW).
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl Shared {
    fn sum(&self, field: impl Fn(&PerThread) -> &AtomicU64) -> u64 {
        self.threads.iter().map(|t| field(t).load(Ordering::Relaxed)).sum()
    }

    /// Nanoseconds from the epoch to `t`.
    pub fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The meeting points of the threads and the main thread.
struct Phases {
    /// Connected; streams open; set up (reused for each).
    step: Barrier,
    /// Counters sampled: go.
    go: Barrier,
    /// The first thread that could not set up says why.
    setup_error: Mutex<Option<String>>,
}

impl Phases {
    /// A thread ends a set-up phase: on failure it records why, and
    /// either way it meets the others.
    fn end_step<T>(&self, result: Result<T, String>) -> Option<T> {
        let value = match result {
            Ok(value) => Some(value),
            Err(error) => {
                set_setup_error(self, error);
                None
            }
        };
        self.step.wait();
        value
    }

    /// The main thread waits for a set-up phase to end everywhere.
    fn await_step(&self) -> Result<(), String> {
        self.step.wait();
        match self.setup_error.lock().expect("setup error lock").take() {
            // The threads wait at the next barrier forever; the caller
            // exits the process.
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Resolves `host:port` endpoints; the error names the one that failed.
pub fn resolve(endpoints: &[String]) -> Result<Vec<SocketAddr>, String> {
    endpoints
        .iter()
        .map(|endpoint| {
            endpoint
                .to_socket_addrs()
                .map_err(|e| format!("endpoint {endpoint}: {e}"))?
                .next()
                .ok_or_else(|| format!("endpoint {endpoint}: no address"))
        })
        .collect()
}

/// `total` split into `parts` shares that differ by at most one; share `i`.
pub fn share(total: u64, parts: usize, i: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((i as u64) < total % parts)
}

/// The first index of share `part` when `total` things are split into
/// `parts` shares (connections and streams are numbered over all threads;
/// connection `g` goes to endpoint `g % endpoints`).
pub(crate) fn first_of_share(total: usize, parts: usize, part: usize) -> usize {
    (0..part).map(|t| share(total as u64, parts, t) as usize).sum()
}

/// Runs the benchmark `options` describe.
pub fn run(options: &Options, show_progress: bool) -> Result<RunResult, String> {
    let addrs = Arc::new(resolve(&options.endpoints)?);
    let threads = options.threads;
    let phases = Arc::new(Phases {
        step: Barrier::new(threads + 1),
        go: Barrier::new(threads + 1),
        setup_error: Mutex::new(None),
    });
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        threads: (0..threads).map(|_| PerThread::default()).collect(),
        stop: AtomicBool::new(false),
    });
    let (done_tx, done_rx) = mpsc::channel::<ThreadResult>();
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let (options, addrs, phases, shared, done_tx) =
            (options.clone(), addrs.clone(), phases.clone(), shared.clone(), done_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{thread}"))
            .spawn(move || {
                if let Some(result) = thread_main(&options, &addrs, thread, &phases, shared) {
                    let _ = done_tx.send(result);
                }
            })
            .map_err(|e| format!("could not start generator thread {thread}: {e}"))?;
        handles.push(handle);
    }
    drop(done_tx);

    let rss = || options.server_pid.and_then(|pid| sys::rss_kib(pid).ok());
    let mut samples = RssSamples::default();
    phases.await_step()?;
    samples.connected = rss();
    let opening = Instant::now();
    phases.await_step()?;
    let open_elapsed = opening.elapsed();
    samples.streams_open = rss();
    let creating = Instant::now();
    phases.await_step()?;
    let create_elapsed = creating.elapsed();
    samples.set_up = rss();
    let server_before = options.server_pid.map(sys::process_cpu).transpose().map_err(server_error(options))?;
    let process_before = sys::self_cpu();
    phases.go.wait();
    let started = Instant::now();

    let watching = options.workload == WorkloadKind::Watch;
    let mut results = Vec::with_capacity(threads);
    let mut last_progress = started;
    let mut drain_from: Option<Instant> = None;
    let (mut drain, mut drained) = (Duration::ZERO, false);
    while results.len() < threads {
        match done_rx.recv_timeout(POLL_INTERVAL) {
            Ok(result) => results.push(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("a generator thread died".into()),
        }
        if show_progress && last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            print_progress(options, started.elapsed(), shared.sum(|t| &t.done));
        }
        let writers_done = shared.threads.iter().all(|t| t.writers_done.load(Ordering::Acquire));
        if watching && writers_done && !shared.stop.load(Ordering::Relaxed) {
            let from = *drain_from.get_or_insert_with(Instant::now);
            let all_in = shared.sum(|t| &t.received) >= shared.sum(|t| &t.expected);
            if all_in || from.elapsed() >= options.watch.drain {
                (drain, drained) = (from.elapsed(), all_in);
                shared.stop.store(true, Ordering::Release);
            }
        }
    }
    let process_after = sys::self_cpu();
    samples.end = rss();
    let server = match (options.server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = sys::process_cpu(pid).map_err(server_error(options))?;
            Some(ServerUsage {
                pid,
                cpu: after.saturating_sub(before),
                peak_rss_kib: sys::peak_rss_kib(pid).ok(),
                rss: samples,
            })
        }
        _ => None,
    };
    if show_progress {
        eprintln!();
    }
    for handle in handles {
        let _ = handle.join();
    }

    let mut stats = Stats::new();
    let mut generator_cpu = CpuTime::default();
    let mut preload = PreloadResult::default();
    let mut counts = SetupCounts::default();
    for result in &results {
        stats.merge(&result.stats);
        generator_cpu = generator_cpu + result.cpu;
        preload.ok += result.preload.ok;
        preload.failed += result.preload.failed;
        preload.elapsed = preload.elapsed.max(result.preload.elapsed);
        if preload.first_error.is_none() {
            preload.first_error = result.preload.first_error.clone();
        }
        counts.add(&result.setup);
    }
    let start = results.iter().map(|r| r.start).min().expect("at least one thread");
    let end = results.iter().map(|r| r.end).max().expect("at least one thread");
    let watch = watching.then(|| {
        let threads: Vec<WatchThread> = results.iter_mut().filter_map(|r| r.watch.take()).collect();
        watch_result(options, &shared, start, threads, drain, drained)
    });
    Ok(RunResult {
        stats,
        elapsed: end.duration_since(start),
        generator_cpu,
        process_cpu: process_after.saturating_sub(process_before),
        preload,
        setup: SetupResult { counts, open_elapsed, create_elapsed },
        server,
        watch,
    })
}

/// Merges the threads' watch records and checks delivery.
fn watch_result(
    options: &Options,
    shared: &Shared,
    start: Instant,
    threads: Vec<WatchThread>,
    drain: Duration,
    drained: bool,
) -> WatchResult {
    let layout = Layout::new(&options.watch);
    let mut puts = Vec::with_capacity(threads.iter().map(|t| t.puts.len()).sum());
    let mut receipts = Vec::with_capacity(threads.iter().map(|t| t.receipts.len()).sum());
    let (mut canceled, mut bad_responses, mut stream_errors, mut first_error) = (0, 0, 0, None);
    for t in threads {
        puts.extend(t.puts);
        receipts.extend(t.receipts);
        canceled += t.faults.canceled;
        bad_responses += t.faults.bad_responses;
        stream_errors += t.faults.stream_errors;
        if first_error.is_none() {
            first_error = t.faults.first_error;
        }
    }
    let delivery = watch::check(&layout, puts, &receipts);
    let span = delivery.last_recv_ns.saturating_sub(shared.ns(start)) as f64 / 1e9;
    let events_per_second = if span > 0.0 { delivery.delivered as f64 / span } else { 0.0 };
    WatchResult {
        layout,
        delivery,
        events_per_second,
        drain,
        drained,
        canceled,
        bad_responses,
        stream_errors,
        first_error,
    }
}

fn server_error(options: &Options) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("--server-pid {}: cannot read /proc: {e}", options.server_pid.unwrap_or_default())
}

fn print_progress(options: &Options, elapsed: Duration, done: u64) {
    let goal = match options.stop {
        Stop::Total(total) => format!("{done}/{total} requests"),
        Stop::Duration(d) => format!("{:.0}/{:.0} s, {done} requests", elapsed.as_secs_f64(), d.as_secs_f64()),
    };
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    eprint!("\r  {goal}, {rate:.0} req/s   ");
}

/// A generator thread: builds its runtime and runs its share. Returns
/// `None` when setup failed (the reason is in `phases.setup_error`).
fn thread_main(
    options: &Options,
    addrs: &[SocketAddr],
    thread: usize,
    phases: &Phases,
    shared: Arc<Shared>,
) -> Option<ThreadResult> {
    let runtime =
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new().with_entries(URING_ENTRIES).enable_timer().build();
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            phases.end_step::<()>(Err(format!("thread {thread}: cannot start a monoio runtime: {e}")));
            return None;
        }
    };
    runtime.block_on(thread_async(options, addrs, thread, phases, shared))
}

fn set_setup_error(phases: &Phases, error: String) {
    let mut slot = phases.setup_error.lock().expect("setup error lock");
    slot.get_or_insert(error);
}

/// What the client tasks of one thread share (all single-threaded).
pub(crate) struct ThreadCtx {
    pub workload: Workload,
    pub picker: RefCell<KeyPicker>,
    /// Last seen mod revision per key (CAS workloads only).
    pub revisions: RefCell<HashMap<u64, i64>>,
    pub stats: RefCell<Stats>,
    pub budget: Budget,
    pub pacer: Option<Pacer>,
    pub start: Instant,
    pub shared: Arc<Shared>,
    pub thread: usize,
}

impl ThreadCtx {
    /// One more request completed (the progress line counts them).
    pub fn count_done(&self) {
        bump(&self.shared.threads[self.thread].done, 1);
    }

    /// When the next request starts: its pacing slot (slept until), or now.
    pub async fn begin(&self) -> Instant {
        match &self.pacer {
            Some(pacer) => {
                let slot = pacer.slot();
                if slot > Instant::now() {
                    monoio::time::sleep_until(monoio::time::Instant::from_std(slot)).await;
                }
                slot
            }
            None => Instant::now(),
        }
    }
}

/// How many more requests a thread may start.
pub(crate) enum Budget {
    Count(Cell<u64>),
    Until(Instant),
}

impl Budget {
    pub fn take(&self) -> bool {
        match self {
            Budget::Count(left) => match left.get() {
                0 => false,
                n => {
                    left.set(n - 1);
                    true
                }
            },
            Budget::Until(deadline) => Instant::now() < *deadline,
        }
    }
}

/// Open-loop pacing: request `i` of a thread is due at `start + i / rate`.
pub(crate) struct Pacer {
    next: Cell<Instant>,
    interval: Duration,
}

impl Pacer {
    fn slot(&self) -> Instant {
        let slot = self.next.get();
        self.next.set(slot + self.interval);
        slot
    }
}

async fn thread_async(
    options: &Options,
    addrs: &[SocketAddr],
    thread: usize,
    phases: &Phases,
    shared: Arc<Shared>,
) -> Option<ThreadResult> {
    let threads = options.threads;
    let workload = Workload::new(options);
    let clients = share(options.clients as u64, threads, thread) as usize;

    let conns = phases.end_step(connect(options, addrs, thread).await)?;
    let opened = phases.end_step(streams::open(options, addrs, &conns, thread).await)?;
    let mut revisions = HashMap::new();
    let setup = async {
        if options.workload == WorkloadKind::K8s {
            let (preload, k8s) = crate::k8s_run::prepare(options, &conns, thread, clients).await?;
            return Ok((preload, Prepared::K8s(Box::new(k8s))));
        }
        let preload = preload(options, &workload, &conns, thread, clients, &mut revisions).await;
        let prepared = streams::prepare(options, &conns, thread, clients, opened).await?;
        Ok::<_, String>((preload, prepared))
    };
    let (preload, prepared) = phases.end_step(setup.await)?;
    let setup_counts = prepared.counts();
    phases.go.wait();

    let cpu_before = sys::thread_cpu();
    let start = Instant::now();
    let budget = match options.stop {
        Stop::Total(total) => Budget::Count(Cell::new(share(total, threads, thread))),
        Stop::Duration(duration) => Budget::Until(start + duration),
    };
    let pacer = options
        .rate
        .map(|rate| Pacer { next: Cell::new(start), interval: Duration::from_secs_f64(threads as f64 / rate) });
    let partitioned = workload.tracks_revisions();
    let picker =
        KeyPicker::new(options.sequential_keys, options.seed, thread, threads, options.key_space_size, partitioned);
    let ctx = Rc::new(ThreadCtx {
        workload,
        picker: RefCell::new(picker),
        revisions: RefCell::new(revisions),
        stats: RefCell::new(match options.workload {
            WorkloadKind::K8s => Stats::with_ops(&crate::k8s::Op::names()),
            _ => Stats::new(),
        }),
        budget,
        pacer,
        start,
        shared: shared.clone(),
        thread,
    });
    let mut watch = None;
    let end = match prepared {
        // The slow watchers stay open, unread, until the thread ends.
        Prepared::Kv | Prepared::Slow(_) => {
            let tasks: Vec<_> =
                (0..clients).map(|i| monoio::spawn(client(ctx.clone(), conns[i % conns.len()].clone()))).collect();
            for task in tasks {
                task.await;
            }
            Instant::now()
        }
        Prepared::Lease(lease) => {
            lease.run(&ctx, &conns).await;
            Instant::now()
        }
        Prepared::K8s(k8s) => {
            k8s.run(&ctx, &conns, clients).await;
            Instant::now()
        }
        Prepared::Watch(watching) => {
            let (end, records) = watching.run(ctx.clone(), &conns, options, &shared).await;
            watch = Some(records);
            end
        }
    };
    let cpu = sys::thread_cpu().saturating_sub(cpu_before);
    let stats = ctx.stats.replace(Stats::new());
    Some(ThreadResult { stats, cpu, start, end, preload, setup: setup_counts, watch })
}

/// Opens this thread's share of the connections, spread over endpoints.
async fn connect(options: &Options, addrs: &[SocketAddr], thread: usize) -> Result<Vec<GrpcClient>, String> {
    connect_share(addrs, options.conns, options.threads, thread).await
}

/// Opens share `thread` of `total` connections numbered over `threads`.
pub(crate) async fn connect_share(
    addrs: &[SocketAddr],
    total: usize,
    threads: usize,
    thread: usize,
) -> Result<Vec<GrpcClient>, String> {
    let count = share(total as u64, threads, thread) as usize;
    let first = first_of_share(total, threads, thread);
    let mut conns = Vec::with_capacity(count);
    for g in first..first + count {
        let addr = addrs[g % addrs.len()];
        let conn = monoio::time::timeout(CONNECT_TIMEOUT, GrpcClient::connect(addr))
            .await
            .map_err(|_| format!("cannot connect to {addr}: no answer in {} s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        conns.push(conn);
    }
    Ok(conns)
}

/// Puts keys `thread, thread + threads, ...` below `--preload`, recording
/// each key's revision (CAS workloads compare against it).
async fn preload(
    options: &Options,
    workload: &Workload,
    conns: &[GrpcClient],
    thread: usize,
    clients: usize,
    revisions: &mut HashMap<u64, i64>,
) -> PreloadResult {
    let started = Instant::now();
    if options.preload == 0 {
        return PreloadResult::default();
    }
    let put = Rc::new(Workload::put(workload.keys().clone(), workload.value().clone()));
    let next = Rc::new(Cell::new(thread as u64));
    let learned = Rc::new(RefCell::new(HashMap::new()));
    let result = Rc::new(RefCell::new(PreloadResult::default()));
    let (threads, count) = (options.threads as u64, options.preload);
    let tasks: Vec<_> = (0..clients.min(PRELOAD_TASKS_MAX))
        .map(|i| {
            let (put, next, learned, result, conn) =
                (put.clone(), next.clone(), learned.clone(), result.clone(), conns[i % conns.len()].clone());
            monoio::spawn(async move {
                let mut buf = ClientBuf::default();
                let mut outcomes = Outcomes::default();
                loop {
                    let index = next.get();
                    if index >= count {
                        break;
                    }
                    next.set(index + threads);
                    let reply = conn.unary(put.path(), put.request(index, 0, &mut buf)).await;
                    let mut result = result.borrow_mut();
                    match reply {
                        Ok(reply) => {
                            result.ok += 1;
                            if let Some(revision) = put.observe(reply, &mut outcomes) {
                                learned.borrow_mut().insert(index, revision);
                            }
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
    if workload.tracks_revisions() {
        *revisions = learned.take();
    }
    let mut result = result.take();
    result.elapsed = started.elapsed();
    result
}

/// One client: requests back to back (or paced) until the budget is spent.
async fn client(ctx: Rc<ThreadCtx>, conn: GrpcClient) {
    let mut buf = ClientBuf::default();
    let workload = &ctx.workload;
    let (uses_key, tracks) = (workload.uses_key(), workload.tracks_revisions());
    while ctx.budget.take() {
        let index = if uses_key { ctx.picker.borrow_mut().next_index() } else { 0 };
        let known = if tracks { ctx.revisions.borrow().get(&index).copied().unwrap_or(0) } else { 0 };
        let request = workload.request(index, known, &mut buf);
        let began = ctx.begin().await;
        let reply = conn.unary(workload.path(), request).await;
        let done = Instant::now();
        match reply {
            Ok(reply) => {
                let mut stats = ctx.stats.borrow_mut();
                let revision = workload.observe(reply, &mut stats.outcomes);
                stats.record_ok(done - began, done - ctx.start);
                if let (true, Some(revision)) = (tracks, revision) {
                    ctx.revisions.borrow_mut().insert(index, revision);
                }
            }
            Err(status) => {
                ctx.stats.borrow_mut().record_error(&status);
                if status.code == Code::Unavailable {
                    monoio::time::sleep(UNAVAILABLE_BACKOFF).await;
                }
            }
        }
        ctx.count_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_differ_by_at_most_one_and_sum_to_the_total() {
        for (total, parts) in [(10u64, 3usize), (3, 3), (2, 4), (1000, 7)] {
            let shares: Vec<u64> = (0..parts).map(|i| share(total, parts, i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1, "{shares:?}");
        }
    }

    #[test]
    fn connections_are_numbered_over_threads() {
        assert_eq!((0..3).map(|t| first_of_share(10, 3, t)).collect::<Vec<_>>(), vec![0, 4, 7]);
    }

    #[test]
    fn budgets_stop_at_their_count() {
        let budget = Budget::Count(Cell::new(2));
        assert!(budget.take() && budget.take() && !budget.take());
        assert!(!Budget::Until(Instant::now()).take());
    }

    #[test]
    fn rss_growth_is_split_per_stream_and_per_watcher() {
        let rss = RssSamples { connected: Some(10_000), streams_open: Some(10_500), set_up: Some(30_500), end: None };
        assert_eq!(rss.per_stream_kib(100), Some(5.0));
        assert_eq!(rss.per_item_kib(10_000), Some(2.0));
        assert_eq!(rss.per_item_kib(0), None);
        assert_eq!(RssSamples::default().per_stream_kib(3), None);
        // Memory given back while opening shows as negative, not hidden.
        let shrank = RssSamples { connected: Some(100), streams_open: Some(90), ..Default::default() };
        assert_eq!(shrank.per_stream_kib(10), Some(-1.0));
    }

    #[test]
    fn the_pacer_spaces_requests_evenly() {
        let start = Instant::now();
        let pacer = Pacer { next: Cell::new(start), interval: Duration::from_millis(2) };
        let slots: Vec<_> = (0..3).map(|_| pacer.slot().duration_since(start)).collect();
        assert_eq!(slots, vec![Duration::ZERO, Duration::from_millis(2), Duration::from_millis(4)]);
    }

    #[test]
    fn endpoints_resolve_or_name_the_bad_one() {
        assert_eq!(resolve(&["127.0.0.1:2379".into()]).unwrap()[0].port(), 2379);
        assert!(resolve(&["no-such-host.invalid:1".into()]).unwrap_err().contains("no-such-host.invalid:1"));
    }
}
