//! The command line of `corekv-bench`: parsing and validation into
//! [`Options`]. Owns no I/O; every error names the flag at fault.

use std::path::PathBuf;
use std::time::Duration;

/// Longest run a `--duration` may ask for; bounds the per-second timeline.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// Largest `--key-space-size`: keys are zero-padded decimal numbers.
const KEY_SPACE_SIZE_MAX: u64 = 1_000_000_000_000;
/// Largest `--key-size` and `--val-size`, well under etcd's 1.5 MiB request
/// limit so the generator never measures its own rejected requests.
const KEY_SIZE_MAX: usize = 64 * 1024;
const VAL_SIZE_MAX: usize = 1024 * 1024;
/// Bounds on concurrency: one monoio runtime per thread, tasks per client.
const THREADS_MAX: usize = 256;
const CLIENTS_MAX: usize = 1_000_000;
/// Largest `--lease-ttl`, etcd's own bound.
const LEASE_TTL_MAX: i64 = corekv::lease::LEASE_TTL_MAX;
/// `--lease-ttl` by default: far longer than any run's gap between renewals.
const LEASE_TTL_DEFAULT: i64 = 60;
/// `k8s` by default: lease TTL (kube-apiserver's event TTL is one hour),
/// leases granted, layout, page size, value size and compaction interval.
const K8S_LEASE_TTL_DEFAULT: i64 = 3600;
const K8S_LEASES_DEFAULT: usize = 4;
const K8S_RESOURCES_DEFAULT: &str = "pods,configmaps,secrets,services,events";
const K8S_NAMESPACES_DEFAULT: u64 = 10;
const K8S_OBJECTS_DEFAULT: u64 = 200;
const K8S_LIMIT_DEFAULT: i64 = 500;
const K8S_VAL_SIZE_DEFAULT: usize = 1024;
const K8S_COMPACT_INTERVAL_DEFAULT: Duration = Duration::from_secs(2);
/// Largest `k8s` key space: a generator thread tracks every key it owns.
const K8S_KEYS_MAX: u64 = 100_000_000;
/// `watch-slow` by default: issue 5's "1,000 watchers stop reading", over
/// 10 streams on 10 connections of their own.
const SLOW_WATCHERS_DEFAULT: usize = 1000;
const SLOW_STREAMS_DEFAULT: usize = 10;

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
corekv-bench: an etcd v3 load generator (gRPC), for corekv and etcd alike

USAGE: corekv-bench [OPTIONS] <WORKLOAD>

WORKLOADS
  put         Put(key, value)
  range       Range of one key, or with --range-prefix of every key under
              --prefix (with --limit, --count-only)
  txn-put     Kubernetes create: Txn(mod_revision(key) == 0 -> Put)
  txn-cas     Kubernetes update: Txn(mod_revision(key) == R -> Put, else Get);
              R is the revision this thread last saw for the key
  txn-delete  Kubernetes delete: Txn(mod_revision(key) == R -> Delete, else Get)
  delete      DeleteRange(key)
  watch       event delivery: --watch-streams streams (over --conns) with
              --watchers-per-stream prefix watches each, on --watch-prefixes
              prefixes, created before measuring; --clients writers put keys
              under those prefixes; reports put -> event latency, events/s,
              missing and duplicate events, and server RSS per stream and per
              watcher (with --server-pid)
  watch-fanout
              watch with every watcher on one prefix: each put reaches all
              of them
  watch-slow  put, while --slow-watchers watchers (on their own streams and
              connections) watch every key written and never read
  lease-keepalive
              --leases leases granted first; --clients LeaseKeepAlive streams
              each send the next keep-alive as soon as the last is answered
  k8s         what kube-apiserver sends, mixed (see K8S OPTIONS): create
              Txn(mod(key) == 0 -> Put(lease?), else Get), update
              Txn(mod(key) == R -> Put, else Get), delete
              Txn(mod(key) == R -> Delete, else Get), get Range(key),
              paginated list (Range of a resource prefix with --limit, next
              pages from last key + \\0 at the first page's revision),
              count-only Range of a resource prefix, and every
              --k8s-compact-interval the compact_rev_key Txn then Compact
              of the revision recorded one interval before; thread 0 also
              keeps kube-apiserver's watch cache: per resource, a list for
              a revision, then a prefix watch from the next one (prev_kv,
              progress_notify), listed and watched again after compaction;
              reports each kind's latency, conflicts (failed compares),
              errors, and watch events, restarts and errors

OPTIONS
  --endpoints LIST       comma-separated host:port or http://host:port
                         [default: 127.0.0.1:2379]
  --threads N            generator threads, one monoio runtime each [1]
  --conns N              gRPC connections in all, split over threads [1]
  --clients N            concurrent client tasks in all; client i of a
                         thread uses its connection i mod conns [1]
  --total N              stop after N requests [10000]
  --duration D           stop after D (10s, 500ms, 2m); instead of --total
  --rate R               at most R requests/s in all; latency then counts
                         from each request's scheduled start [unlimited]
  --key-size N           bytes per key: --prefix, then a zero-padded
                         decimal key number [8; watch: the least that fits
                         --prefix, the watch prefix number, '/' and the key
                         number]
  --val-size N           bytes per value [8]
  --key-space-size N     distinct keys [100000]
  --sequential-keys      keys in order 0, 1, 2... instead of uniform random
  --prefix P             key prefix [empty]
  --consistency l|s      range: linearizable or serializable [l]
  --range-prefix         range: every key under --prefix instead of one key
  --limit N              range: at most N keys per response [0: no limit]
  --count-only           range: ask only for the count
  --preload N            put keys 0..N before measuring [range, txn-cas,
                         txn-delete, delete: the key space; others: 0]
  --seed S               random key seed [1]
  --server-pid PID       also report this server process's CPU seconds per
                         1,000 requests (measured phase only), peak RSS and
                         RSS (VmRSS) before set-up, after it and at the end

WATCH OPTIONS
  --watch-streams N      watch streams in all, stream i on connection
                         i mod --conns (at least --conns) [1]
  --watchers-per-stream N  watches created on each stream [1]
  --watch-prefixes N     distinct prefixes; watcher w watches prefix
                         w mod N, key k is under prefix k mod N [1]
  --watch-drain D        after the writers stop, wait at most D for every
                         expected event [5s]
  --slow-watchers N      watch-slow: watchers that never read [1000]
  --slow-streams N       watch-slow: streams they are spread over [10]
  --slow-conns N         watch-slow: connections of their own for those
                         streams [--slow-streams]

LEASE OPTIONS
  --leases N             lease-keepalive: leases granted before measuring;
                         keep-alive stream c renews lease c, c + clients, ...
                         of its thread's leases in turn [--clients]
  --lease-ttl S          lease-keepalive: TTL in seconds of each lease [60]

K8S OPTIONS (keys <--prefix><resource>/ns-<n>/obj-<m>, --prefix [/registry/])
  --k8s-resources LIST   resources [pods,configmaps,secrets,services,
                         events]
  --k8s-namespaces N     namespaces [10]
  --k8s-objects N        objects per resource and namespace [200]
  --k8s-mix SPEC         operation weights; kinds left out get 0
                         [create=8,update=50,delete=7,get=28,list=5,count=2]
  --k8s-lease-fraction F creates and updates of this fraction of the keys
                         carry a lease [the keys of events only]
  --k8s-compact-interval D  compaction round every D; 0: never [2s;
                         kube-apiserver's default is 5m]
  --limit N              list page size; 0: one page [500]
  --leases N             leases granted first and reused [4, at least
                         --threads]
  --lease-ttl S          their TTL in seconds [3600]
  --consistency l|s      gets, lists and counts [l]
  --preload N            keys put before measuring [half of the keys]
  --val-size N           [1024]

OUTPUT
  --json FILE            write the result as JSON to FILE
  --plot PREFIX          write PREFIX-latency.svg (latency by percentile,
                         overall and per operation kind) and
                         PREFIX-throughput.svg (requests completed per
                         second over the run)
  --progress / --no-progress   a progress line on stderr [on a terminal]
  -h, --help             this text
";

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `Put(key, value)`.
    Put,
    /// `Range` of one key or of a prefix.
    Range,
    /// `Txn(mod_revision == 0 -> Put)`.
    TxnPut,
    /// `Txn(mod_revision == R -> Put, else Get)`.
    TxnCas,
    /// `Txn(mod_revision == R -> Delete, else Get)`.
    TxnDelete,
    /// `DeleteRange(key)`.
    Delete,
    /// Prefix watches on streams; puts under the prefixes; event delivery.
    Watch,
    /// `put` while watchers that never read watch every key written.
    WatchSlow,
    /// LeaseKeepAlive streams renewing pre-granted leases.
    LeaseKeepAlive,
    /// kube-apiserver's request shapes, mixed.
    K8s,
}

impl WorkloadKind {
    const ALL: [WorkloadKind; 10] = [
        WorkloadKind::Put,
        WorkloadKind::Range,
        WorkloadKind::TxnPut,
        WorkloadKind::TxnCas,
        WorkloadKind::TxnDelete,
        WorkloadKind::Delete,
        WorkloadKind::Watch,
        WorkloadKind::WatchSlow,
        WorkloadKind::LeaseKeepAlive,
        WorkloadKind::K8s,
    ];

    /// The workload's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Put => "put",
            WorkloadKind::Range => "range",
            WorkloadKind::TxnPut => "txn-put",
            WorkloadKind::TxnCas => "txn-cas",
            WorkloadKind::TxnDelete => "txn-delete",
            WorkloadKind::Delete => "delete",
            WorkloadKind::Watch => "watch",
            WorkloadKind::WatchSlow => "watch-slow",
            WorkloadKind::LeaseKeepAlive => "lease-keepalive",
            WorkloadKind::K8s => "k8s",
        }
    }

    fn parse(name: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Workloads that read or change existing keys start from a filled key
    /// space unless told otherwise.
    fn preloads_by_default(self) -> bool {
        matches!(self, WorkloadKind::Range | WorkloadKind::TxnCas | WorkloadKind::TxnDelete | WorkloadKind::Delete)
    }
}

/// When a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests (successful or not).
    Total(u64),
    /// After this much time; requests in flight then still complete.
    Duration(Duration),
}

/// Everything a run needs to know, validated.
#[derive(Clone, Debug)]
pub struct Options {
    pub workload: WorkloadKind,
    /// `host:port` strings, scheme stripped.
    pub endpoints: Vec<String>,
    pub threads: usize,
    pub conns: usize,
    pub clients: usize,
    pub stop: Stop,
    /// Requests per second over all threads.
    pub rate: Option<f64>,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space_size: u64,
    pub sequential_keys: bool,
    pub prefix: Vec<u8>,
    pub serializable: bool,
    pub range_prefix: bool,
    pub limit: i64,
    pub count_only: bool,
    /// Keys `0..preload` are put before the measured phase.
    pub preload: u64,
    pub seed: u64,
    pub server_pid: Option<i32>,
    pub json: Option<PathBuf>,
    /// `None`: show progress when stderr is a terminal.
    pub progress: Option<bool>,
    /// `watch`: streams, watches per stream and distinct prefixes.
    pub watch: WatchOptions,
    /// `watch-slow`: the watchers that never read.
    pub slow: SlowOptions,
    /// `lease-keepalive` and `k8s`: how many leases, of what TTL.
    pub lease: LeaseOptions,
    /// `k8s`: layout, mix, leases and compaction.
    pub k8s: K8sOptions,
    /// Write `<plot>-latency.svg` and `<plot>-throughput.svg`.
    pub plot: Option<String>,
}

/// The `k8s` workload's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct K8sOptions {
    pub resources: Vec<String>,
    pub namespaces: u64,
    /// Objects per resource and namespace.
    pub objects: u64,
    pub mix: crate::k8s::Mix,
    /// `None`: every key of `events` carries a lease, no other.
    pub lease_fraction: Option<f64>,
    /// `None`: no compaction.
    pub compact_interval: Option<Duration>,
}

impl Default for K8sOptions {
    fn default() -> K8sOptions {
        K8sOptions {
            resources: K8S_RESOURCES_DEFAULT.split(',').map(String::from).collect(),
            namespaces: K8S_NAMESPACES_DEFAULT,
            objects: K8S_OBJECTS_DEFAULT,
            mix: crate::k8s::Mix::default(),
            lease_fraction: None,
            compact_interval: Some(K8S_COMPACT_INTERVAL_DEFAULT),
        }
    }
}

impl K8sOptions {
    /// Keys in all.
    pub fn keys(&self) -> u64 {
        self.resources.len() as u64 * self.namespaces * self.objects
    }
}

/// The `watch` workload's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    pub streams: usize,
    pub watchers_per_stream: usize,
    pub prefixes: usize,
    /// How long to wait for outstanding events after the writers stop.
    pub drain: Duration,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions { streams: 1, watchers_per_stream: 1, prefixes: 1, drain: Duration::from_secs(5) }
    }
}

impl WatchOptions {
    /// Watchers in all.
    pub fn watchers(&self) -> usize {
        self.streams * self.watchers_per_stream
    }
}

/// The `watch-slow` workload's non-reading watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowOptions {
    pub watchers: usize,
    pub streams: usize,
    pub conns: usize,
}

/// The `lease-keepalive` workload's leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    pub leases: usize,
    pub ttl: i64,
}

/// What the command line asks for (made once per process, so the size
/// difference of its variants does not matter).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Run a benchmark.
    Run(Options),
}

/// Parses the arguments after the program name. Accepts `--flag value`
/// and `--flag=value`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut workload = None;
    let mut endpoints = vec!["127.0.0.1:2379".to_string()];
    let (mut threads, mut conns, mut clients) = (1usize, 1usize, 1usize);
    let (mut total, mut duration) = (None, None);
    let mut rate = None;
    let (mut key_size, mut val_size, mut key_space_size) = (8usize, 8usize, 100_000u64);
    let mut sequential_keys = false;
    let mut prefix = Vec::new();
    let mut serializable = false;
    let (mut range_prefix, mut limit, mut count_only) = (false, 0i64, false);
    let mut preload = None;
    let mut seed = 1u64;
    let mut server_pid = None;
    let mut json = None;
    let mut progress = None;
    let mut key_size_given = false;
    let (mut watch_streams, mut watchers_per_stream, mut watch_prefixes) = (None, None, None);
    let mut fanout = false;
    let mut watch_drain = None;
    let (mut slow_watchers, mut slow_streams, mut slow_conns) = (None, None, None);
    let (mut leases, mut lease_ttl) = (None, None);
    let (mut val_size_given, mut key_space_given, mut limit_given, mut prefix_given) = (false, false, false, false);
    let mut k8s = K8sOptions::default();
    let mut k8s_given = false;
    let mut plot = None;

    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if workload.is_some() {
                return Err(format!("unexpected argument {arg:?}: the workload is given already"));
            }
            if arg == "watch-fanout" {
                // The watch workload with every watcher on one prefix: each
                // put fans out to all of them.
                workload = Some(WorkloadKind::Watch);
                fanout = true;
                continue;
            }
            workload = Some(WorkloadKind::parse(arg).ok_or_else(|| {
                let names: Vec<_> = WorkloadKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown workload {arg:?}; expected one of {}", names.join(", "))
            })?);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (flag, None),
        };
        // Boolean flags take no separate value; `--flag=false` turns them off.
        let boolean = |inline: Option<String>| -> Result<bool, String> {
            match inline.as_deref() {
                None | Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(other) => Err(format!("--{name}: expected true or false, got {other:?}")),
            }
        };
        match name {
            "sequential-keys" => sequential_keys = boolean(inline)?,
            "range-prefix" => range_prefix = boolean(inline)?,
            "count-only" => count_only = boolean(inline)?,
            "progress" => progress = Some(boolean(inline)?),
            "no-progress" => progress = Some(!boolean(inline)?),
            _ => {
                let value = match inline {
                    Some(value) => value,
                    None => {
                        let value = args.get(i).ok_or_else(|| format!("--{name} needs a value"))?;
                        i += 1;
                        value.clone()
                    }
                };
                let value = value.as_str();
                match name {
                    "endpoints" => endpoints = parse_endpoints(value)?,
                    "threads" => threads = parse_count(name, value, 1, THREADS_MAX)?,
                    "conns" => conns = parse_count(name, value, 1, CLIENTS_MAX)?,
                    "clients" => clients = parse_count(name, value, 1, CLIENTS_MAX)?,
                    "total" => total = Some(parse_count(name, value, 1, usize::MAX)? as u64),
                    "duration" => duration = Some(parse_duration(value).map_err(|e| format!("--duration: {e}"))?),
                    "rate" => rate = parse_rate(value)?,
                    "key-size" => {
                        key_size = parse_count(name, value, 1, KEY_SIZE_MAX)?;
                        key_size_given = true;
                    }
                    "val-size" => {
                        val_size = parse_count(name, value, 0, VAL_SIZE_MAX)?;
                        val_size_given = true;
                    }
                    "key-space-size" => {
                        key_space_size = parse_count(name, value, 1, KEY_SPACE_SIZE_MAX as usize)? as u64;
                        key_space_given = true;
                    }
                    "prefix" => {
                        prefix = value.as_bytes().to_vec();
                        prefix_given = true;
                    }
                    "consistency" => serializable = parse_consistency(value)?,
                    "limit" => {
                        limit = parse_count(name, value, 0, i64::MAX as usize)? as i64;
                        limit_given = true;
                    }
                    "preload" => preload = Some(parse_count(name, value, 0, KEY_SPACE_SIZE_MAX as usize)? as u64),
                    "seed" => seed = parse_count(name, value, 0, usize::MAX)? as u64,
                    "server-pid" => server_pid = Some(parse_count(name, value, 1, i32::MAX as usize)? as i32),
                    "json" => json = Some(PathBuf::from(value)),
                    "watch-streams" => watch_streams = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "watchers-per-stream" => watchers_per_stream = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "watch-prefixes" => watch_prefixes = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "watch-drain" => {
                        watch_drain = Some(parse_duration(value).map_err(|e| format!("--watch-drain: {e}"))?)
                    }
                    "slow-watchers" => slow_watchers = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "slow-streams" => slow_streams = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "slow-conns" => slow_conns = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "leases" => leases = Some(parse_count(name, value, 1, CLIENTS_MAX)?),
                    "lease-ttl" => lease_ttl = Some(parse_count(name, value, 1, LEASE_TTL_MAX as usize)? as i64),
                    "plot" if value.is_empty() => return Err("--plot: the file prefix is empty".into()),
                    "plot" => plot = Some(value.to_string()),
                    k8s_flag if k8s_flag.starts_with("k8s-") => {
                        parse_k8s_flag(&mut k8s, name, value)?;
                        k8s_given = true;
                    }
                    _ => return Err(format!("unknown option --{name} (see --help)")),
                }
            }
        }
    }

    let workload = workload.ok_or("no workload given (see --help)")?;
    let stop = match (total, duration) {
        (Some(_), Some(_)) => return Err("give --total or --duration, not both".into()),
        (None, Some(duration)) => Stop::Duration(duration),
        (Some(total), None) => Stop::Total(total),
        (None, None) => Stop::Total(10_000),
    };
    if conns < threads {
        return Err(format!("--conns {conns} is less than --threads {threads}: every thread needs a connection"));
    }
    let is = |kind: WorkloadKind| workload == kind;
    if fanout {
        if watch_prefixes.is_some_and(|p| p != 1) {
            return Err("--watch-prefixes: watch-fanout puts every watcher on one prefix".into());
        }
        watch_prefixes = Some(1);
    }
    let watch = match (watch_streams, watchers_per_stream, watch_prefixes, watch_drain) {
        (None, None, None, None) if !is(WorkloadKind::Watch) => WatchOptions::default(),
        _ if !is(WorkloadKind::Watch) => {
            return Err("--watch-streams, --watchers-per-stream, --watch-prefixes and --watch-drain apply to the \
                        watch workload only"
                .into())
        }
        (streams, per_stream, prefixes, drain) => {
            let d = WatchOptions::default();
            WatchOptions {
                streams: streams.unwrap_or(d.streams),
                watchers_per_stream: per_stream.unwrap_or(d.watchers_per_stream),
                prefixes: prefixes.unwrap_or(d.prefixes),
                drain: drain.unwrap_or(d.drain),
            }
        }
    };
    let slow = match (slow_watchers, slow_streams, slow_conns) {
        _ if is(WorkloadKind::WatchSlow) => {
            let watchers = slow_watchers.unwrap_or(SLOW_WATCHERS_DEFAULT);
            let streams = slow_streams.unwrap_or(SLOW_STREAMS_DEFAULT.min(watchers));
            let conns = slow_conns.unwrap_or(streams);
            SlowOptions { watchers, streams, conns }
        }
        (None, None, None) => SlowOptions { watchers: 0, streams: 0, conns: 0 },
        _ => {
            return Err("--slow-watchers, --slow-streams and --slow-conns apply to the watch-slow workload only".into())
        }
    };
    let lease = match (leases, lease_ttl) {
        _ if is(WorkloadKind::LeaseKeepAlive) => {
            LeaseOptions { leases: leases.unwrap_or(clients), ttl: lease_ttl.unwrap_or(LEASE_TTL_DEFAULT) }
        }
        _ if is(WorkloadKind::K8s) => LeaseOptions {
            leases: leases.unwrap_or(K8S_LEASES_DEFAULT.max(threads)),
            ttl: lease_ttl.unwrap_or(K8S_LEASE_TTL_DEFAULT),
        },
        (None, None) => LeaseOptions { leases: 0, ttl: LEASE_TTL_DEFAULT },
        _ => return Err("--leases and --lease-ttl apply to the lease-keepalive and k8s workloads only".into()),
    };
    if k8s_given && !is(WorkloadKind::K8s) {
        return Err("the --k8s-* options apply to the k8s workload only".into());
    }
    if is(WorkloadKind::K8s) {
        if key_size_given || key_space_given || sequential_keys || range_prefix || count_only {
            return Err("--key-size, --key-space-size, --sequential-keys, --range-prefix and --count-only do not \
                        apply to k8s: its keys are <prefix><resource>/ns-<n>/obj-<m> (see --k8s-resources, \
                        --k8s-namespaces, --k8s-objects)"
                .into());
        }
        if k8s.keys() > K8S_KEYS_MAX {
            return Err(format!(
                "k8s: {} resources x {} namespaces x {} objects is {} keys, more than {K8S_KEYS_MAX}",
                k8s.resources.len(),
                k8s.namespaces,
                k8s.objects,
                k8s.keys()
            ));
        }
        if !prefix_given {
            prefix = b"/registry/".to_vec();
        }
        if !val_size_given {
            val_size = K8S_VAL_SIZE_DEFAULT;
        }
        if !limit_given {
            limit = K8S_LIMIT_DEFAULT;
        }
        key_space_size = k8s.keys();
        key_size = crate::k8s::Layout::new(&prefix, &k8s.resources, k8s.namespaces, k8s.objects).max_key_len();
        let uses_leases = k8s.lease_fraction.map_or(k8s.resources.iter().any(|r| r == "events"), |f| f > 0.0);
        if uses_leases && lease.leases < threads {
            return Err(format!(
                "--leases {} is less than --threads {threads}: every thread needs a lease",
                lease.leases
            ));
        }
    }
    if is(WorkloadKind::Watch) {
        // Writers may be fewer than connections; every connection carries
        // at least one watch stream and every thread at least one writer.
        if watch.streams < conns {
            return Err(format!(
                "--watch-streams {} is less than --conns {conns}: a connection would carry no stream",
                watch.streams
            ));
        }
        if clients < threads {
            return Err(format!("--clients {clients} is less than --threads {threads}: every thread needs a writer"));
        }
        if watch.prefixes > watch.watchers() {
            return Err(format!(
                "--watch-prefixes {} is more than the {} watchers: some prefixes would have no watcher",
                watch.prefixes,
                watch.watchers()
            ));
        }
        if key_space_size < watch.prefixes as u64 {
            return Err(format!(
                "--key-space-size {key_space_size} is less than --watch-prefixes {}: some prefixes would get no put",
                watch.prefixes
            ));
        }
        if val_size < crate::watch::STAMP_BYTES {
            return Err(format!(
                "--val-size {val_size} is too small: watch values start with an {}-byte send timestamp",
                crate::watch::STAMP_BYTES
            ));
        }
        let least = crate::watch::least_key_size(prefix.len(), watch.prefixes, key_space_size);
        if !key_size_given {
            key_size = least;
        } else if key_size < least {
            return Err(format!(
                "--key-size {key_size} is too small for --prefix of {} bytes, {} watch prefixes and \
                 --key-space-size {key_space_size}: use --key-size {least} or more",
                prefix.len(),
                watch.prefixes
            ));
        }
    } else if clients < conns {
        return Err(format!("--clients {clients} is less than --conns {conns}: a connection would carry no client"));
    }
    if is(WorkloadKind::WatchSlow) {
        if slow.streams > slow.watchers {
            return Err(format!(
                "--slow-streams {} is more than --slow-watchers {}: a stream would carry no watcher",
                slow.streams, slow.watchers
            ));
        }
        if slow.conns > slow.streams || slow.conns < threads {
            return Err(format!(
                "--slow-conns {} must be between --threads {threads} and --slow-streams {}",
                slow.conns, slow.streams
            ));
        }
    }
    if is(WorkloadKind::LeaseKeepAlive) && lease.leases < threads {
        return Err(format!("--leases {} is less than --threads {threads}: every thread needs a lease", lease.leases));
    }
    let digits = decimal_digits(key_space_size - 1);
    if key_size < prefix.len() + digits {
        return Err(format!(
            "--key-size {key_size} is too small for --prefix of {} bytes and --key-space-size {key_space_size} \
             ({digits} digits): use --key-size {} or more",
            prefix.len(),
            prefix.len() + digits
        ));
    }
    let cas = matches!(workload, WorkloadKind::TxnCas | WorkloadKind::TxnDelete);
    if cas && key_space_size < threads as u64 {
        return Err(format!(
            "--key-space-size {key_space_size} is less than --threads {threads}: {} gives each thread its own keys",
            workload.name()
        ));
    }
    if matches!(workload, WorkloadKind::Watch | WorkloadKind::LeaseKeepAlive) && preload.unwrap_or(0) > 0 {
        return Err(format!("--preload does not apply to {}", workload.name()));
    }
    let preload = preload.unwrap_or(match workload {
        WorkloadKind::K8s => key_space_size / 2,
        _ if workload.preloads_by_default() => key_space_size,
        _ => 0,
    });
    if preload > key_space_size {
        return Err(format!("--preload {preload} is larger than --key-space-size {key_space_size}"));
    }
    if !matches!(workload, WorkloadKind::Range | WorkloadKind::K8s) && (range_prefix || limit != 0 || count_only) {
        return Err("--range-prefix, --limit and --count-only apply to the range workload only (k8s: --limit)".into());
    }
    Ok(Command::Run(Options {
        workload,
        endpoints,
        threads,
        conns,
        clients,
        stop,
        rate,
        key_size,
        val_size,
        key_space_size,
        sequential_keys,
        prefix,
        serializable,
        range_prefix,
        limit,
        count_only,
        preload,
        seed,
        server_pid,
        json,
        progress,
        watch,
        slow,
        lease,
        k8s,
        plot,
    }))
}

/// One `--k8s-*` flag into `k8s`.
fn parse_k8s_flag(k8s: &mut K8sOptions, name: &str, value: &str) -> Result<(), String> {
    match name {
        "k8s-resources" => {
            let resources: Vec<String> =
                value.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
            if resources.is_empty() {
                return Err("--k8s-resources: no resource given".into());
            }
            for (i, r) in resources.iter().enumerate() {
                if r.contains('/') || resources[..i].contains(r) {
                    return Err(format!("--k8s-resources: {r:?} contains '/' or is given twice"));
                }
            }
            k8s.resources = resources;
        }
        "k8s-namespaces" => k8s.namespaces = parse_count(name, value, 1, 1_000_000)? as u64,
        "k8s-objects" => k8s.objects = parse_count(name, value, 1, K8S_KEYS_MAX as usize)? as u64,
        "k8s-mix" => k8s.mix = crate::k8s::Mix::parse(value).map_err(|e| format!("--k8s-mix: {e}"))?,
        "k8s-lease-fraction" => {
            let f: f64 = value.parse().map_err(|_| format!("--k8s-lease-fraction: {value:?} is not a number"))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("--k8s-lease-fraction: {value:?} is outside 0..=1"));
            }
            k8s.lease_fraction = Some(f);
        }
        "k8s-compact-interval" => {
            k8s.compact_interval = match value {
                "0" | "0s" | "off" | "never" => None,
                _ => Some(parse_duration(value).map_err(|e| format!("--k8s-compact-interval: {e}"))?),
            }
        }
        _ => return Err(format!("unknown option --{name} (see --help)")),
    }
    Ok(())
}

/// Number of decimal digits needed to write `n`.
pub fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

fn parse_count(name: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = value.replace('_', "").parse().map_err(|_| format!("--{name}: {value:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("--{name}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

fn parse_rate(value: &str) -> Result<Option<f64>, String> {
    let rate: f64 = value.parse().map_err(|_| format!("--rate: {value:?} is not a number"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!("--rate: {value:?} must be a finite number >= 0"));
    }
    Ok((rate > 0.0).then_some(rate))
}

fn parse_consistency(value: &str) -> Result<bool, String> {
    match value {
        "l" | "linearizable" => Ok(false),
        "s" | "serializable" => Ok(true),
        _ => Err(format!("--consistency: expected l or s, got {value:?}")),
    }
}

/// `host:port` from `host:port` or `http://host:port[/]`, comma-separated.
fn parse_endpoints(value: &str) -> Result<Vec<String>, String> {
    let mut endpoints = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.starts_with("https://") || item.starts_with("unixs://") {
            return Err(format!("--endpoints: {item:?}: TLS endpoints are not supported yet"));
        }
        let bare = item.strip_prefix("http://").unwrap_or(item).trim_end_matches('/');
        if !bare.contains(':') {
            return Err(format!("--endpoints: {item:?} has no port"));
        }
        endpoints.push(bare.to_string());
    }
    if endpoints.is_empty() {
        return Err("--endpoints: no endpoint given".into());
    }
    Ok(endpoints)
}

/// `10s`, `1.5s`, `500ms`, `250us`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{value:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{value:?}: unknown unit {unit:?} (use us, ms, s, m or h)")),
    };
    if seconds.is_nan() || seconds <= 0.0 || seconds > DURATION_MAX.as_secs_f64() {
        return Err(format!("{value:?} is outside (0, {}s]", DURATION_MAX.as_secs()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<Options, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args)? {
            Command::Run(options) => Ok(options),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let a = run("put --clients 10 --conns=2 --endpoints http://127.0.0.1:1,127.0.0.2:2/").unwrap();
        assert_eq!(a.clients, 10);
        assert_eq!(a.conns, 2);
        assert_eq!(a.endpoints, vec!["127.0.0.1:1", "127.0.0.2:2"]);
        assert_eq!(a.stop, Stop::Total(10_000));
    }

    #[test]
    fn duration_units_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn total_and_duration_exclude_each_other() {
        assert!(run("put --total 5 --duration 1s").is_err());
        assert_eq!(run("put --duration 3s").unwrap().stop, Stop::Duration(Duration::from_secs(3)));
    }

    #[test]
    fn key_size_must_fit_prefix_and_key_numbers() {
        let err = run("put --prefix /registry/pods/ --key-size 8").unwrap_err();
        assert!(err.contains("--key-size 20 or more"), "{err}");
        assert!(run("put --prefix /r/ --key-size 8 --key-space-size 100000").is_ok());
        assert!(run("put --key-space-size 1 --key-size 1").is_ok());
    }

    #[test]
    fn reading_workloads_preload_the_key_space_by_default() {
        assert_eq!(run("range --key-space-size 50").unwrap().preload, 50);
        assert_eq!(run("put --key-space-size 50").unwrap().preload, 0);
        assert_eq!(run("delete --key-space-size 50 --preload 7").unwrap().preload, 7);
        assert!(run("range --key-space-size 50 --preload 51").is_err());
    }

    #[test]
    fn concurrency_must_give_every_connection_a_client() {
        assert!(run("put --conns 10 --clients 5").is_err());
        assert!(run("put --threads 2 --conns 1 --clients 5").is_err());
        assert!(run("put --threads 2 --conns 2 --clients 5").is_ok());
    }

    #[test]
    fn range_options_parse_and_belong_to_range() {
        let r = run("range --consistency s --range-prefix --limit 10 --count-only").unwrap();
        assert!(r.serializable && r.range_prefix && r.count_only);
        assert_eq!(r.limit, 10);
        assert!(!run("range --consistency=linearizable").unwrap().serializable);
        assert!(run("put --limit 3").is_err());
        assert!(run("range --consistency x").is_err());
    }

    #[test]
    fn unknown_things_are_refused_by_name() {
        assert!(run("put --frobnicate 3").unwrap_err().contains("--frobnicate"));
        assert!(run("watchers").unwrap_err().contains("unknown workload"));
        assert!(run("--clients 3").unwrap_err().contains("no workload"));
        assert!(run("put --endpoints https://a:1").unwrap_err().contains("TLS"));
        assert!(run("put --rate 0").unwrap().rate.is_none());
    }

    #[test]
    fn watch_fanout_puts_every_watcher_on_one_prefix() {
        let w = run("watch-fanout --conns 4 --watch-streams 4 --watchers-per-stream 250").unwrap();
        assert_eq!((w.workload, w.watch.prefixes, w.watch.watchers()), (WorkloadKind::Watch, 1, 1000));
        assert!(run("watch-fanout --watch-prefixes 10").unwrap_err().contains("one prefix"));
    }

    #[test]
    fn watch_options_describe_streams_watchers_and_prefixes() {
        let w = run("watch --conns 10 --watch-streams 100 --watchers-per-stream 100 --watch-prefixes 1000 --clients 5")
            .unwrap();
        assert_eq!(w.watch.watchers(), 10_000);
        assert_eq!((w.watch.streams, w.watch.prefixes, w.watch.drain), (100, 1000, Duration::from_secs(5)));
        // The key size fits the prefix number, '/' and the key number.
        assert_eq!(w.key_size, 3 + 1 + 5);
        assert_eq!(run("watch --prefix /w/ --key-space-size 10").unwrap().key_size, 3 + 1 + 1 + 1);
        assert!(run("watch --key-size 20 --watch-drain 1s").is_ok());
        let err = run("watch --watch-prefixes 10 --watchers-per-stream 10 --key-size 4").unwrap_err();
        assert!(err.contains("--key-size 7 or more"), "{err}");
        // Writers may be fewer than connections; streams may not.
        assert!(run("watch --conns 4 --watch-streams 4 --clients 1").is_ok());
        assert!(run("watch --conns 4 --watch-streams 3").unwrap_err().contains("--watch-streams"));
        assert!(run("watch --watch-prefixes 3 --watch-streams 1").unwrap_err().contains("no watcher"));
        assert!(run("watch --watch-prefixes 3 --watchers-per-stream 3 --key-space-size 2").is_err());
        assert!(run("watch --val-size 7").unwrap_err().contains("timestamp"));
        assert!(run("watch --preload 5").is_err());
        assert!(run("put --watch-streams 3").unwrap_err().contains("watch workload only"));
    }

    #[test]
    fn slow_watchers_default_to_a_thousand_on_ten_streams() {
        let s = run("watch-slow --conns 2 --clients 10").unwrap().slow;
        assert_eq!(s, SlowOptions { watchers: 1000, streams: 10, conns: 10 });
        let s = run("watch-slow --slow-watchers 5").unwrap().slow;
        assert_eq!((s.watchers, s.streams, s.conns), (5, 5, 5));
        assert_eq!(run("watch-slow --slow-streams 4 --slow-conns 2").unwrap().slow.conns, 2);
        assert!(run("watch-slow --slow-watchers 5 --slow-streams 6").is_err());
        assert!(run("watch-slow --slow-streams 2 --slow-conns 3").is_err());
        assert!(run("put --slow-watchers 5").unwrap_err().contains("watch-slow"));
    }

    #[test]
    fn leases_default_to_one_per_client() {
        let l = run("lease-keepalive --conns 2 --clients 8").unwrap().lease;
        assert_eq!(l, LeaseOptions { leases: 8, ttl: 60 });
        let l = run("lease-keepalive --leases 1000 --lease-ttl 5").unwrap().lease;
        assert_eq!((l.leases, l.ttl), (1000, 5));
        assert!(run("lease-keepalive --threads 2 --conns 2 --clients 2 --leases 1").is_err());
        assert!(run("lease-keepalive --lease-ttl 0").is_err());
        assert!(run("put --leases 3").unwrap_err().contains("lease-keepalive"));
    }

    #[test]
    fn k8s_options_shape_keys_and_default_to_a_busy_cluster() {
        let k = run("k8s").unwrap();
        assert_eq!(k.k8s, K8sOptions::default());
        assert_eq!(k.k8s.resources.len(), 5);
        assert_eq!((k.key_space_size, k.preload, k.limit, k.val_size), (10_000, 5_000, 500, 1024));
        assert_eq!(k.prefix, b"/registry/");
        assert_eq!(k.key_size, "/registry/configmaps/ns-0/obj-000".len());
        assert_eq!((k.lease.leases, k.lease.ttl), (4, 3600));
        assert_eq!(k.k8s.compact_interval, Some(Duration::from_secs(2)));
        let k =
            run("k8s --k8s-resources pods --k8s-namespaces 3 --k8s-objects 7 --k8s-mix get=1 --limit 0 --prefix /r/ \
             --k8s-compact-interval 0 --k8s-lease-fraction 0.5 --leases 2 --lease-ttl 30 --val-size 5 --preload 3")
            .unwrap();
        assert_eq!((k.key_space_size, k.preload, k.limit, k.val_size, k.prefix.as_slice()), (21, 3, 0, 5, &b"/r/"[..]));
        assert_eq!((k.k8s.compact_interval, k.k8s.lease_fraction, k.lease.leases), (None, Some(0.5), 2));
        assert_eq!(k.k8s.mix.weights, [0, 0, 0, 1, 0, 0]);
        assert!(run("k8s --key-size 30").is_err());
        assert!(run("k8s --key-space-size 30").is_err());
        assert!(run("k8s --k8s-resources pods,pods").is_err());
        assert!(run("k8s --k8s-resources a/b").is_err());
        assert!(run("k8s --k8s-lease-fraction 1.5").is_err());
        assert!(run("k8s --k8s-mix list=0").is_err());
        assert!(run("k8s --k8s-wat 3").unwrap_err().contains("--k8s-wat"));
        assert!(run("k8s --threads 3 --conns 3 --clients 3 --leases 2").unwrap_err().contains("--leases"));
        assert!(run("k8s --threads 3 --conns 3 --clients 3 --leases 2 --k8s-lease-fraction 0").is_ok());
        assert_eq!(run("k8s --threads 6 --conns 6 --clients 6").unwrap().lease.leases, 6);
        assert!(run("k8s --k8s-objects 100000000").unwrap_err().contains("keys"));
        assert!(run("put --k8s-namespaces 3").unwrap_err().contains("k8s workload only"));
        assert!(run("put --leases 3").unwrap_err().contains("lease-keepalive"));
    }

    #[test]
    fn plots_take_a_file_prefix() {
        assert_eq!(run("put --plot /tmp/x").unwrap().plot.as_deref(), Some("/tmp/x"));
        assert_eq!(run("put").unwrap().plot, None);
        assert!(run("put --plot=").is_err());
    }

    #[test]
    fn decimal_digits_counts() {
        assert_eq!(decimal_digits(0), 1);
        assert_eq!(decimal_digits(9), 1);
        assert_eq!(decimal_digits(10), 2);
        assert_eq!(decimal_digits(99_999), 5);
    }
}
