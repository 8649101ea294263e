//! End to end: a corekv node started inside the test process (on its own
//! threads, a fresh data directory under /var/tmp, a free loopback port)
//! driven through every workload by the real generator. Short runs; they
//! check that requests succeed and replies mean what the workload expects,
//! not how fast anything is.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::args::{parse, Command, Options};
use crate::run::run;

/// How long the node may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Data directories are `/var/tmp/corekv-bench-e2e-<pid>` (a real disk:
/// the WAL uses O_DIRECT). The node runs until the process exits, so each
/// test process removes the directories of earlier, finished ones.
const DATA_DIR_PREFIX: &str = "/var/tmp/corekv-bench-e2e-";

fn remove_stale_data_dirs() {
    let Ok(entries) = std::fs::read_dir("/var/tmp") else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = path.to_str().and_then(|p| p.strip_prefix(DATA_DIR_PREFIX)) else { continue };
        if pid.parse::<u32>().is_ok() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The address of the node every test shares (started once).
fn node() -> SocketAddr {
    static NODE: OnceLock<SocketAddr> = OnceLock::new();
    *NODE.get_or_init(|| {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        remove_stale_data_dirs();
        let dir = PathBuf::from(format!("{DATA_DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = format!("http://{addr}");
        let args = ["--data-dir", dir.to_str().expect("utf-8 path"), "--listen-client-urls", &url]
            .into_iter()
            .chain(["--advertise-client-urls", &url, "--cores", "2", "--log-level", "error"])
            .map(String::from)
            .collect::<Vec<_>>();
        let config = match corekv::config::parse(args, Vec::new()).expect("a valid server command line") {
            corekv::config::Parsed::Run(config) => config,
            _ => panic!("the server command line did not ask to run"),
        };
        // Quiet: only errors reach stderr.
        let _ = corekv::log::init(config.log_level, &config.log_outputs);
        // The node runs until the test process exits.
        std::thread::spawn(move || corekv::node::run(&config).expect("the node starts"));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "corekv did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Listening is not serving yet: the first put may wait about a
        // second for the node to be ready, which would distort the first
        // short run. One put first.
        let args: Vec<String> = format!("put --total 1 --prefix /e2e/ready/ --key-size 16 --endpoints {addr}")
            .split_whitespace()
            .map(String::from)
            .collect();
        let Ok(Command::Run(ready)) = parse(&args) else { panic!("a valid command line") };
        let put = run(&ready, false).expect("the first put runs");
        assert_eq!(put.stats.ok(), 1, "the first put failed: {:?}", put.stats.errors_by_code());
        addr
    })
}

fn options(line: &str) -> Options {
    let mut args: Vec<String> = line.split_whitespace().map(String::from).collect();
    args.extend(["--endpoints".to_string(), node().to_string()]);
    match parse(&args).expect("valid options") {
        Command::Run(options) => options,
        Command::Help => unreachable!(),
    }
}

#[test]
fn puts_and_ranges_succeed_against_a_real_node() {
    let put =
        run(&options("put --total 300 --conns 2 --clients 8 --threads 2 --prefix /e2e/put/ --key-size 16"), false)
            .expect("put runs");
    assert_eq!((put.stats.ok(), put.stats.failed(), put.stats.outcomes.bad_replies), (300, 0, 0));
    assert!(put.generator_cpu.total() > Duration::ZERO);
    assert_eq!(put.stats.summary(put.elapsed).ok, 300);

    let range = run(
        &options("range --total 200 --clients 4 --consistency s --prefix /e2e/r/ --key-size 16 --key-space-size 50"),
        false,
    )
    .expect("range runs");
    assert_eq!((range.preload.ok, range.stats.ok(), range.stats.failed()), (50, 200, 0));
    assert_eq!(range.stats.outcomes.keys_read, 200, "every key was preloaded, so every range finds one");

    let list = run(
        &options("range --total 20 --range-prefix --limit 7 --prefix /e2e/l/ --key-size 16 --key-space-size 30"),
        false,
    )
    .expect("prefix range runs");
    assert_eq!(list.stats.outcomes.keys_read, 20 * 7);
    let count = run(
        &options("range --total 5 --range-prefix --count-only --prefix /e2e/c/ --key-size 16 --key-space-size 30"),
        false,
    )
    .expect("count-only range runs");
    assert_eq!(count.stats.outcomes.keys_read, 5 * 30);
}

#[test]
fn kubernetes_shaped_txns_behave_like_kubernetes_expects() {
    // Creates of distinct fresh keys all succeed.
    let create =
        run(&options("txn-put --total 100 --clients 4 --sequential-keys --prefix /e2e/tp/ --key-size 16"), false)
            .expect("txn-put runs");
    assert_eq!((create.stats.outcomes.txn_succeeded, create.stats.failed()), (100, 0));

    // One client updating keys it preloaded always knows the revision.
    let update = run(&options("txn-cas --total 200 --prefix /e2e/cas/ --key-size 16 --key-space-size 20"), false)
        .expect("txn-cas runs");
    assert_eq!((update.stats.outcomes.txn_succeeded, update.stats.outcomes.txn_failed), (200, 0));

    // Two threads own disjoint keys, so they do not invalidate each other.
    let threads = run(&options("txn-cas --total 200 --threads 2 --conns 2 --clients 2 --prefix /e2e/cas2/ --key-size 16 --key-space-size 20"), false)
        .expect("txn-cas on two threads runs");
    assert_eq!(threads.stats.outcomes.txn_failed, 0);

    let delete = run(
        &options("txn-delete --total 10 --sequential-keys --prefix /e2e/td/ --key-size 16 --key-space-size 10"),
        false,
    )
    .expect("txn-delete runs");
    assert_eq!(delete.stats.outcomes.txn_succeeded, 10);
}

#[test]
fn deletes_remove_preloaded_keys_once() {
    let delete =
        run(&options("delete --total 40 --sequential-keys --prefix /e2e/d/ --key-size 16 --key-space-size 20"), false)
            .expect("delete runs");
    assert_eq!((delete.stats.ok(), delete.stats.outcomes.keys_deleted), (40, 20));
}

#[test]
fn a_duration_bound_run_stops_on_time_and_paces_to_its_rate() {
    let paced = run(&options("put --duration 1s --rate 200 --clients 4 --prefix /e2e/rate/ --key-size 16"), false)
        .expect("paced put runs");
    let ok = paced.stats.ok();
    assert!((150..=210).contains(&ok), "{ok} requests in 1 s at 200/s");
    assert!(paced.elapsed < Duration::from_millis(1500), "{:?}", paced.elapsed);
}

#[test]
fn every_watcher_gets_every_put_under_its_prefix_exactly_once() {
    // 100 watchers over 10 prefixes: each put reaches 10 of them.
    let w = run(
        &options(
            "watch --total 300 --threads 2 --conns 2 --clients 4 --watch-streams 4 --watchers-per-stream 25 \
             --watch-prefixes 10 --prefix /e2e/w/ --val-size 32",
        ),
        false,
    )
    .expect("watch runs");
    let watch = w.watch.as_ref().expect("a watch result");
    assert_eq!((w.stats.ok(), w.stats.failed()), (300, 0));
    assert_eq!((w.setup.counts.streams, w.setup.counts.watchers), (4, 100));
    let d = &watch.delivery;
    assert_eq!((d.expected, d.delivered, d.errors()), (3000, 3000, 0), "{d:?}");
    assert_eq!((watch.canceled, watch.bad_responses, watch.stream_errors), (0, 0, 0), "{:?}", watch.first_error);
    assert!(watch.drained && watch.events_per_second > 0.0);
    assert_eq!(d.from_ack.len(), 3000);
}

#[test]
fn puts_run_while_watchers_that_never_read_hold_their_streams() {
    let slow = run(
        &options(
            "watch-slow --total 200 --clients 4 --slow-watchers 20 --slow-streams 4 --slow-conns 2 \
             --prefix /e2e/slow/ --key-size 16 --val-size 1000",
        ),
        false,
    )
    .expect("watch-slow runs");
    assert_eq!((slow.stats.ok(), slow.stats.failed()), (200, 0));
    let c = &slow.setup.counts;
    assert_eq!((c.watchers, c.streams, c.extra_conns), (20, 4, 2));
}

#[test]
fn keep_alives_renew_granted_leases() {
    let keep = run(&options("lease-keepalive --total 500 --threads 2 --conns 2 --clients 4 --leases 10"), false)
        .expect("lease-keepalive runs");
    assert_eq!((keep.stats.ok(), keep.stats.failed()), (500, 0));
    let o = &keep.stats.outcomes;
    assert_eq!((o.leases_expired, o.bad_replies), (0, 0));
    assert_eq!((keep.setup.counts.leases, keep.setup.counts.streams), (10, 4));
}

#[test]
fn kubernetes_mixes_every_request_shape_without_errors_or_conflicts() {
    // Lists of 3 resources x 2 namespaces x 30 objects, half preloaded: 30
    // keys per resource, so lists of page size 7 take several pages.
    // Compaction every 200 ms compacts within the run.
    let k = run(
        &options(
            "k8s --duration 1500ms --threads 2 --conns 2 --clients 8 --prefix /e2e/k8s/ --val-size 64 \
             --k8s-resources pods,configmaps,events --k8s-namespaces 2 --k8s-objects 30 --limit 7 \
             --k8s-compact-interval 200ms --k8s-mix create=10,update=40,delete=10,get=20,list=15,count=5",
        ),
        false,
    )
    .expect("k8s runs");
    assert_eq!((k.preload.ok, k.preload.failed), (90, 0), "{:?}", k.preload.first_error);
    assert_eq!(k.setup.counts.leases, 4, "events carry leases: 4 granted over 2 threads");
    assert_eq!(k.stats.failed(), 0, "{:?}", k.stats.errors_by_code());
    let o = &k.stats.outcomes;
    assert_eq!((o.stale_reads, o.list_mismatches, o.bad_replies), (0, 0, 0), "{o:?}");
    // The watch cache of every resource saw the writes, in order.
    assert!(o.watch_events > 0 && o.watch_errors == 0, "{o:?}");
    let by_name = |name: &str| k.stats.ops.iter().find(|op| op.name == name).expect("a kind");
    for name in ["create", "update", "delete", "get", "list", "count", "compact-txn", "compact"] {
        let op = by_name(name);
        assert!(op.ok() > 0, "no {name} succeeded");
        assert_eq!(op.errors, 0, "{name}");
        if name != "compact-txn" {
            // Each thread alone writes its keys and knows their revisions.
            assert_eq!(op.conflicts, 0, "{name}");
        }
    }
    let list = by_name("list");
    assert!(list.requests > list.ok(), "lists of ~30 keys in pages of 7 take several requests");
    assert!(list.keys > 0 && by_name("count").keys > 0);
    assert_eq!(by_name("delete").keys, by_name("delete").ok(), "each delete removes its key");
    let ok: u64 = k.stats.ops.iter().map(|op| op.ok()).sum();
    assert_eq!(ok, k.stats.ok(), "every operation is counted once overall");
}
