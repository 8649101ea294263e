//! Runs a benchmark: one OS thread per `--threads`, each with its own monoio
//! runtime, its connections and its client tasks. Nothing is shared on the
//! hot path: each thread keeps its statistics, key picker and known
//! revisions in thread-local cells and hands them to the main thread when
//! its measured phase ends; the only cross-thread writes during the run are
//! each thread's own progress counter.
//!
//! Phases: connect and preload (not measured) -> every thread and the main
//! thread meet at a barrier -> the main thread samples CPU counters -> all
//! start together -> measure -> each thread reports -> the main thread
//! samples again.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use corekv::api::grpc::{Code, GrpcClient};

use crate::args::{Options, Stop};
use crate::keys::KeyPicker;
use crate::stats::Stats;
use crate::sys::{self, CpuTime};
use crate::workload::{ClientBuf, Outcomes, Workload};

/// io_uring submission queue entries per generator runtime.
const URING_ENTRIES: u32 = 4096;
/// Preload tasks per thread at most (preload is not measured; this only
/// keeps it quick without flooding the server).
const PRELOAD_TASKS_MAX: usize = 256;
/// Pause after an UNAVAILABLE reply so a dead connection does not turn the
/// client into a busy loop of instant failures.
const UNAVAILABLE_BACKOFF: Duration = Duration::from_millis(1);
/// How long opening one connection (TCP and HTTP/2 handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the progress line is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What the measured phase and its preparation produced.
#[derive(Debug)]
pub struct RunResult {
    /// Every thread's measurements, merged.
    pub stats: Stats,
    /// From the first thread's start to the last thread's end.
    pub elapsed: Duration,
    /// CPU the generator threads used in the measured phase (the sum of
    /// each thread's own usage, so setup and preload are left out).
    pub generator_cpu: CpuTime,
    /// CPU the whole generator process used during the measured phase,
    /// main thread and runtime internals included.
    pub process_cpu: CpuTime,
    pub preload: PreloadResult,
    /// The server's usage, with `--server-pid`.
    pub server: Option<ServerUsage>,
}

/// The unmeasured puts before the run.
#[derive(Clone, Debug, Default)]
pub struct PreloadResult {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
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
}

/// One thread's report.
struct ThreadResult {
    stats: Stats,
    cpu: CpuTime,
    start: Instant,
    end: Instant,
    preload: PreloadResult,
}

/// Every thread's progress counter, each on its own cache line.
struct Progress {
    done: Vec<PaddedCounter>,
}

#[repr(align(64))]
#[derive(Default)]
struct PaddedCounter(AtomicU64);

impl Progress {
    fn total(&self) -> u64 {
        self.done.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// The meeting points of the threads and the main thread.
struct Phases {
    /// Connected and preloaded.
    ready: Barrier,
    /// Counters sampled: go.
    go: Barrier,
    /// The first thread that could not set up says why.
    setup_error: Mutex<Option<String>>,
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

/// The first connection index of thread `thread` (connections are numbered
/// over all threads; connection `g` goes to endpoint `g % endpoints`).
fn first_conn(conns: usize, threads: usize, thread: usize) -> usize {
    (0..thread).map(|t| share(conns as u64, threads, t) as usize).sum()
}

/// Runs the benchmark `options` describe.
pub fn run(options: &Options, show_progress: bool) -> Result<RunResult, String> {
    let addrs = Arc::new(resolve(&options.endpoints)?);
    let threads = options.threads;
    let phases = Arc::new(Phases {
        ready: Barrier::new(threads + 1),
        go: Barrier::new(threads + 1),
        setup_error: Mutex::new(None),
    });
    let progress = Arc::new(Progress { done: (0..threads).map(|_| PaddedCounter::default()).collect() });
    let (done_tx, done_rx) = mpsc::channel::<ThreadResult>();
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        let (options, addrs, phases, progress, done_tx) =
            (options.clone(), addrs.clone(), phases.clone(), progress.clone(), done_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("bench-{thread}"))
            .spawn(move || {
                if let Some(result) = thread_main(&options, &addrs, thread, &phases, progress) {
                    let _ = done_tx.send(result);
                }
            })
            .map_err(|e| format!("could not start generator thread {thread}: {e}"))?;
        handles.push(handle);
    }
    drop(done_tx);

    phases.ready.wait();
    if let Some(error) = phases.setup_error.lock().expect("setup error lock").take() {
        // The threads wait at `go` forever; the caller exits the process.
        return Err(error);
    }
    let server_before = options.server_pid.map(sys::process_cpu).transpose().map_err(server_error(options))?;
    let process_before = sys::self_cpu();
    phases.go.wait();
    let started = Instant::now();

    let mut results = Vec::with_capacity(threads);
    while results.len() < threads {
        match done_rx.recv_timeout(PROGRESS_INTERVAL) {
            Ok(result) => results.push(result),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if show_progress {
                    print_progress(options, started.elapsed(), progress.total());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("a generator thread died".into()),
        }
    }
    let process_after = sys::self_cpu();
    let server = match (options.server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = sys::process_cpu(pid).map_err(server_error(options))?;
            Some(ServerUsage { pid, cpu: after.saturating_sub(before), peak_rss_kib: sys::peak_rss_kib(pid).ok() })
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
    for result in &results {
        stats.merge(&result.stats);
        generator_cpu = generator_cpu + result.cpu;
        preload.ok += result.preload.ok;
        preload.failed += result.preload.failed;
        preload.elapsed = preload.elapsed.max(result.preload.elapsed);
        if preload.first_error.is_none() {
            preload.first_error = result.preload.first_error.clone();
        }
    }
    let start = results.iter().map(|r| r.start).min().expect("at least one thread");
    let end = results.iter().map(|r| r.end).max().expect("at least one thread");
    Ok(RunResult {
        stats,
        elapsed: end.duration_since(start),
        generator_cpu,
        process_cpu: process_after.saturating_sub(process_before),
        preload,
        server,
    })
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
    progress: Arc<Progress>,
) -> Option<ThreadResult> {
    let runtime =
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new().with_entries(URING_ENTRIES).enable_timer().build();
    let mut runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            set_setup_error(phases, format!("thread {thread}: cannot start a monoio runtime: {e}"));
            phases.ready.wait();
            return None;
        }
    };
    runtime.block_on(thread_async(options, addrs, thread, phases, progress))
}

fn set_setup_error(phases: &Phases, error: String) {
    let mut slot = phases.setup_error.lock().expect("setup error lock");
    slot.get_or_insert(error);
}

/// What the client tasks of one thread share (all single-threaded).
struct ThreadCtx {
    workload: Workload,
    picker: RefCell<KeyPicker>,
    /// Last seen mod revision per key (CAS workloads only).
    revisions: RefCell<HashMap<u64, i64>>,
    stats: RefCell<Stats>,
    budget: Budget,
    pacer: Option<Pacer>,
    start: Instant,
    progress: Arc<Progress>,
    thread: usize,
}

/// How many more requests a thread may start.
enum Budget {
    Count(Cell<u64>),
    Until(Instant),
}

impl Budget {
    fn take(&self) -> bool {
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
struct Pacer {
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
    progress: Arc<Progress>,
) -> Option<ThreadResult> {
    let threads = options.threads;
    let workload = Workload::new(options);
    let mut revisions = HashMap::new();
    let setup = async {
        let conns = connect(options, addrs, thread).await?;
        let clients = share(options.clients as u64, threads, thread) as usize;
        let preload = preload(options, &workload, &conns, thread, clients, &mut revisions).await;
        Ok::<_, String>((conns, clients, preload))
    };
    let (conns, clients, preload) = match setup.await {
        Ok(ready) => ready,
        Err(error) => {
            set_setup_error(phases, error);
            phases.ready.wait();
            return None;
        }
    };
    phases.ready.wait();
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
        stats: RefCell::new(Stats::new()),
        budget,
        pacer,
        start,
        progress,
        thread,
    });
    let tasks: Vec<_> =
        (0..clients).map(|i| monoio::spawn(client(ctx.clone(), conns[i % conns.len()].clone()))).collect();
    for task in tasks {
        task.await;
    }
    let end = Instant::now();
    let cpu = sys::thread_cpu().saturating_sub(cpu_before);
    let stats = ctx.stats.replace(Stats::new());
    Some(ThreadResult { stats, cpu, start, end, preload })
}

/// Opens this thread's share of the connections, spread over endpoints.
async fn connect(options: &Options, addrs: &[SocketAddr], thread: usize) -> Result<Vec<GrpcClient>, String> {
    let count = share(options.conns as u64, options.threads, thread) as usize;
    let first = first_conn(options.conns, options.threads, thread);
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
        let began = match &ctx.pacer {
            Some(pacer) => {
                let slot = pacer.slot();
                if slot > Instant::now() {
                    monoio::time::sleep_until(monoio::time::Instant::from_std(slot)).await;
                }
                slot
            }
            None => Instant::now(),
        };
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
        let counter = &ctx.progress.done[ctx.thread].0;
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
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
        assert_eq!((0..3).map(|t| first_conn(10, 3, t)).collect::<Vec<_>>(), vec![0, 4, 7]);
    }

    #[test]
    fn budgets_stop_at_their_count() {
        let budget = Budget::Count(Cell::new(2));
        assert!(budget.take() && budget.take() && !budget.take());
        assert!(!Budget::Until(Instant::now()).take());
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
