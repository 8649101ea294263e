//! The table of every setting corekv accepts, and the raw settings store.
//!
//! Owns: the flag table (name, kind, default, one-line meaning), value
//! parsing with Go's `flag` package semantics and wording (so error lines
//! read like etcd's), command-line parsing (`--flag value`, `--flag=value`,
//! `-flag`, bare booleans, `--` and the first non-flag argument ending the
//! flags), the `ETCD_*` environment rules, and the `--help` text. Turning
//! settings into a typed `Config` is the parent module's job.

use std::time::Duration;

use super::url::{self, Url};
use super::ConfigError;

/// How a flag's value is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Any string.
    Str,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// Go `bool`: `--flag` alone means true.
    Bool,
    /// Go `uint`/`uint64` (base prefixes allowed, as `strconv.ParseUint(s, 0, 64)`).
    Uint,
    /// Go `uint32` in decimal.
    Uint32,
    /// Go `int`/`int64`.
    Int,
    /// Go `time.Duration` (`100ms`, `1h30m`).
    Duration,
    /// Comma-separated URLs, sorted and deduplicated.
    Urls,
    /// Comma-separated strings.
    List,
}

/// One accepted flag.
pub(super) struct Flag {
    /// The name without dashes.
    pub name: &'static str,
    /// How its value parses.
    pub kind: Kind,
    /// The default, as a string of the flag's kind.
    pub default: &'static str,
    /// What `--help` shows as the default when it differs from `default`.
    pub shown: Option<&'static str>,
    /// One line for `--help`.
    pub help: &'static str,
}

const fn f(name: &'static str, kind: Kind, default: &'static str, help: &'static str) -> Flag {
    Flag { name, kind, default, shown: None, help }
}

const fn shown(name: &'static str, kind: Kind, default: &'static str, shown: &'static str, help: &'static str) -> Flag {
    Flag { name, kind, default, shown: Some(shown), help }
}

use Kind::{Bool, Choice, Duration as Dur, Int, List, Str, Uint, Uint32, Urls};

/// Every flag, grouped as etcd's `--help` groups them. Defaults are etcd
/// 3.5's. The order inside a group is the order `--help` prints.
#[rustfmt::skip]
pub(super) const SECTIONS: &[(&str, &[Flag])] = &[
    ("Member", &[
        f("name", Str, "default", "Human-readable name for this member."),
        shown("data-dir", Str, "", "${name}.etcd", "Path to the data directory."),
        f("wal-dir", Str, "", "Path to a dedicated WAL directory."),
        f("snapshot-count", Uint, "100000", "Committed entries between two Raft snapshots."),
        f("heartbeat-interval", Uint, "100", "Time (in milliseconds) between two Raft heartbeats."),
        f("election-timeout", Uint, "1000", "Time (in milliseconds) without a heartbeat before an election starts."),
        f("initial-election-tick-advance", Bool, "true", "Fast-forward election ticks on boot for a faster first election."),
        f("listen-peer-urls", Urls, "http://localhost:2380", "URLs to listen on for peer traffic."),
        f("listen-client-urls", Urls, "http://localhost:2379", "URLs to listen on for client traffic."),
        f("listen-client-http-urls", Urls, "", "URLs to listen on for HTTP-only client traffic."),
        f("max-snapshots", Uint, "5", "Maximum number of snapshot files to retain (0 is unlimited)."),
        f("max-wals", Uint, "5", "Maximum number of WAL files to retain (0 is unlimited)."),
        f("quota-backend-bytes", Int, "0", "Raise the NOSPACE alarm above this many bytes of storage (0 means 2 GiB, negative disables)."),
        f("backend-bbolt-freelist-type", Choice(&["map", "array"]), "map", "etcd's bbolt free-list type (map or array)."),
        shown("backend-batch-interval", Dur, "0s", "", "Maximum time before etcd commits a backend transaction."),
        f("backend-batch-limit", Int, "0", "Maximum operations before etcd commits a backend transaction."),
        f("max-txn-ops", Uint, "128", "Maximum number of operations in one transaction."),
        f("max-request-bytes", Uint, "1572864", "Maximum client request size in bytes."),
        shown("max-concurrent-streams", Uint32, "4294967295", "math.MaxUint32", "Maximum concurrent gRPC streams per client connection."),
        f("enable-grpc-gateway", Bool, "true", "Serve etcd's JSON gRPC gateway."),
        f("grpc-keepalive-min-time", Dur, "5s", "Minimum interval a client should wait between pings."),
        f("grpc-keepalive-interval", Dur, "2h", "Interval of server-to-client pings on idle connections (0 disables)."),
        f("grpc-keepalive-timeout", Dur, "20s", "Time to wait for a ping reply before closing the connection (0 disables)."),
        f("socket-reuse-port", Bool, "false", "Set SO_REUSEPORT on listeners."),
        f("socket-reuse-address", Bool, "false", "Set SO_REUSEADDR on listeners."),
        f("raft-read-timeout", Dur, "5s", "Read timeout of etcd's rafthttp connections."),
        f("raft-write-timeout", Dur, "5s", "Write timeout of etcd's rafthttp connections."),
    ]),
    ("Clustering", &[
        f("initial-advertise-peer-urls", Urls, "http://localhost:2380", "This member's peer URLs, as advertised to the rest of the cluster."),
        f("initial-cluster", Str, "default=http://localhost:2380", "Initial cluster configuration for bootstrapping (name=peer-url,...)."),
        f("initial-cluster-state", Choice(&["new", "existing"]), "new", "Initial cluster state: 'new' to bootstrap, 'existing' to join."),
        f("initial-cluster-token", Str, "etcd-cluster", "Token that makes member and cluster IDs unique to this cluster."),
        f("advertise-client-urls", Urls, "http://localhost:2379", "This member's client URLs, as advertised to clients."),
        f("discovery", Str, "", "Discovery URL used to bootstrap the cluster."),
        f("discovery-fallback", Choice(&["exit", "proxy"]), "proxy", "What to do when discovery fails ('exit' or 'proxy')."),
        f("discovery-proxy", Str, "", "HTTP proxy for the discovery service."),
        f("discovery-srv", Str, "", "DNS SRV domain used to bootstrap the cluster."),
        f("discovery-srv-name", Str, "", "Suffix of the DNS SRV name queried when bootstrapping."),
        f("strict-reconfig-check", Bool, "true", "Reject membership changes that would cause quorum loss."),
        f("pre-vote", Bool, "true", "Run Raft's pre-vote phase before an election."),
        f("auto-compaction-retention", Str, "0", "Auto compaction retention (0 disables auto compaction)."),
        f("auto-compaction-mode", Str, "periodic", "How to read the retention: periodic (a duration, hours if unitless) or revision."),
        f("enable-v2", Bool, "false", "Serve the etcd v2 API."),
        f("v2-deprecation", Choice(&["not-yet", "write-only", "write-only-drop-data", "gone"]), "not-yet", "Phase of etcd's v2 store deprecation."),
    ]),
    ("Security", &[
        f("cert-file", Str, "", "Client TLS certificate file."),
        f("key-file", Str, "", "Client TLS key file."),
        f("client-cert-auth", Bool, "false", "Require client certificates."),
        f("client-cert-file", Str, "", "Certificate presented when this server acts as a client."),
        f("client-key-file", Str, "", "Key for --client-cert-file."),
        f("client-crl-file", Str, "", "Client certificate revocation list file."),
        f("client-cert-allowed-hostname", List, "", "Comma-separated SAN hostnames allowed in client certificates."),
        f("trusted-ca-file", Str, "", "CA bundle that verifies client certificates."),
        f("auto-tls", Bool, "false", "Client TLS with generated certificates."),
        f("peer-cert-file", Str, "", "Peer TLS certificate file."),
        f("peer-key-file", Str, "", "Peer TLS key file."),
        f("peer-client-cert-auth", Bool, "false", "Require peer certificates."),
        f("peer-trusted-ca-file", Str, "", "CA bundle that verifies peer certificates."),
        f("peer-cert-allowed-cn", List, "", "Comma-separated CNs allowed in peer certificates."),
        f("peer-cert-allowed-hostname", List, "", "Comma-separated SAN hostnames allowed in peer certificates."),
        f("peer-auto-tls", Bool, "false", "Peer TLS with generated certificates."),
        f("peer-client-cert-file", Str, "", "Certificate presented when dialing peers."),
        f("peer-client-key-file", Str, "", "Key for --peer-client-cert-file."),
        f("peer-crl-file", Str, "", "Peer certificate revocation list file."),
        f("self-signed-cert-validity", Uint, "1", "Validity (in years) of generated certificates."),
        f("cipher-suites", List, "", "Comma-separated TLS cipher suites."),
        f("cors", List, "*", "Comma-separated CORS origins (empty or * allows all)."),
        f("host-whitelist", List, "*", "Comma-separated Host headers accepted on plain HTTP (empty or * allows all)."),
        f("tls-min-version", Str, "TLS1.2", "Minimum TLS version (TLS1.2 or TLS1.3)."),
        f("tls-max-version", Str, "", "Maximum TLS version (TLS1.2 or TLS1.3)."),
    ]),
    ("Auth", &[
        f("auth-token", Str, "simple", "Auth token type and options ('simple' or 'jwt,...')."),
        f("bcrypt-cost", Uint, "10", "bcrypt cost for password hashes (4 to 31)."),
        f("auth-token-ttl", Uint, "300", "Lifetime (in seconds) of a simple auth token."),
    ]),
    ("Profiling and Monitoring", &[
        f("enable-pprof", Bool, "false", "Serve Go's pprof endpoints."),
        f("metrics", Choice(&["basic", "extensive"]), "basic", "Metrics detail: 'basic' or 'extensive' (adds histograms)."),
        f("listen-metrics-urls", Urls, "", "Extra URLs serving only /metrics and /health."),
    ]),
    ("Logging", &[
        f("logger", Str, "zap", "Logger: only 'zap' (structured JSON)."),
        f("log-outputs", List, "default", "Comma-separated outputs: stderr, stdout or file paths ('default' is stderr)."),
        f("log-level", Str, "info", "Log level: debug, info, warn, error, panic or fatal."),
        f("enable-log-rotation", Bool, "false", "Rotate a single file log output."),
        f("log-rotation-config-json", Str, "{\"maxsize\": 100, \"maxage\": 0, \"maxbackups\": 0, \"localtime\": false, \"compress\": false}", "Log rotation settings, as JSON."),
    ]),
    ("Experimental distributed tracing", &[
        f("experimental-enable-distributed-tracing", Bool, "false", "Export OpenTelemetry traces."),
        f("experimental-distributed-tracing-address", Str, "localhost:4317", "Trace collector address."),
        f("experimental-distributed-tracing-service-name", Str, "etcd", "Service name in traces."),
        f("experimental-distributed-tracing-instance-id", Str, "", "Instance ID in traces."),
        f("experimental-distributed-tracing-sampling-rate", Int, "0", "Spans sampled per million."),
    ]),
    ("v2 Proxy", &[
        f("proxy", Choice(&["off", "readonly", "on"]), "off", "v2 proxy mode ('off', 'readonly' or 'on')."),
        f("proxy-failure-wait", Uint, "5000", "Time (in milliseconds) an endpoint stays failed."),
        f("proxy-refresh-interval", Uint, "30000", "Time (in milliseconds) between endpoint refreshes."),
        f("proxy-dial-timeout", Uint, "1000", "Dial timeout in milliseconds."),
        f("proxy-write-timeout", Uint, "5000", "Write timeout in milliseconds."),
        f("proxy-read-timeout", Uint, "0", "Read timeout in milliseconds."),
    ]),
    ("Experimental feature", &[
        f("experimental-initial-corrupt-check", Bool, "false", "Check data for corruption before serving."),
        f("experimental-corrupt-check-time", Dur, "0s", "Interval between cluster corruption checks."),
        f("experimental-compact-hash-check-enabled", Bool, "false", "Leader checks followers' compaction hashes."),
        f("experimental-compact-hash-check-time", Dur, "1m", "Interval between compaction hash checks."),
        f("experimental-enable-v2v3", Str, "", "Serve v2 requests from the v3 store under this prefix."),
        f("experimental-enable-lease-checkpoint", Bool, "false", "Checkpoint lease remaining TTLs through Raft."),
        f("experimental-enable-lease-checkpoint-persist", Bool, "false", "Persist lease checkpoints."),
        f("experimental-compaction-batch-limit", Int, "1000", "Maximum revisions deleted per compaction batch."),
        f("experimental-compaction-sleep-interval", Dur, "10ms", "Pause between compaction batches."),
        f("experimental-peer-skip-client-san-verification", Bool, "false", "Skip SAN checks on peer client certificates."),
        f("experimental-watch-progress-notify-interval", Dur, "10m", "Interval of watch progress notifications."),
        f("experimental-downgrade-check-time", Dur, "5s", "Interval between downgrade status checks."),
        f("experimental-memory-mlock", Bool, "false", "Lock the store's pages in RAM."),
        f("experimental-warning-apply-duration", Dur, "100ms", "Warn when applying a request takes longer than this."),
        f("experimental-warning-unary-request-duration", Dur, "300ms", "Warn when a unary request takes longer than this."),
        f("experimental-txn-mode-write-with-shared-buffer", Bool, "true", "etcd's shared read buffer for write transactions."),
        f("experimental-bootstrap-defrag-threshold-megabytes", Uint, "0", "Defragment on boot if that frees at least this many MB."),
        f("experimental-stop-grpc-service-on-defrag", Bool, "false", "Stop serving clients while defragmenting."),
    ]),
    ("Unsafe feature", &[
        f("force-new-cluster", Bool, "false", "Force a new one-member cluster from existing data."),
        f("unsafe-no-fsync", Bool, "false", "Do not fsync (loses data on crash)."),
    ]),
    ("corekv", &[
        shown("cores", Uint, "0", "all CPUs in the affinity mask", "Number of reactors (one pinned thread per core)."),
        f("wal-buffered-io", Bool, "false", "Write the WAL with buffered I/O when the file system refuses O_DIRECT (e.g. tmpfs)."),
        shown("page-cache-bytes", Uint, "0", "a quarter of RAM over the reactors", "Memory each reactor's page cache over its store file may hold."),
        f("learner-auto-promote", Bool, "false", "The leader promotes a learner to voter once its log is in sync (etcd#15107)."),
    ]),
    ("Other", &[
        f("config-file", Str, "", "YAML configuration file; when given, other flags and ETCD_* variables are ignored."),
        f("version", Bool, "false", "Print the version and exit."),
    ]),
];

/// Looks a flag up by name.
pub(super) fn lookup(name: &str) -> Option<&'static Flag> {
    SECTIONS.iter().flat_map(|(_, flags)| flags.iter()).find(|fl| fl.name == name)
}

/// All flags in table order.
pub(super) fn all() -> impl Iterator<Item = &'static Flag> {
    SECTIONS.iter().flat_map(|(_, flags)| flags.iter())
}

/// `ETCD_` + upper-case name with dashes as underscores, as etcd maps flags
/// to environment variables.
pub(super) fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
    Str(String),
    Bool(bool),
    Uint(u64),
    Int(i64),
    Duration(Duration),
    Urls(Vec<Url>),
    List(Vec<String>),
}

/// Where a setting's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// The table's default.
    Default,
    /// The command line.
    Flag,
    /// An `ETCD_*` variable.
    Env(String),
    /// A configuration file key.
    File { path: String, line: usize, key: String },
}

/// Why a raw value did not parse, in Go `flag`'s words.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BadValue {
    /// Not a value of the kind (`parse error`).
    Syntax,
    /// A number out of range (`value out of range`).
    Range,
    /// A choice outside the set (`invalid value`).
    Choice,
    /// An etcd URL error, already worded.
    Url(String),
}

impl BadValue {
    pub(super) fn reason(&self) -> &str {
        match self {
            BadValue::Syntax => "parse error",
            BadValue::Range => "value out of range",
            BadValue::Choice => "invalid value",
            BadValue::Url(msg) => msg,
        }
    }
}

/// Parses `raw` as a value of `kind`.
pub(super) fn parse_value(kind: Kind, raw: &str) -> Result<Value, BadValue> {
    match kind {
        Kind::Str => Ok(Value::Str(raw.to_string())),
        Kind::Choice(valid) => {
            if valid.contains(&raw) {
                Ok(Value::Str(raw.to_string()))
            } else {
                Err(BadValue::Choice)
            }
        }
        Kind::Bool => parse_go_bool(raw).map(Value::Bool).ok_or(BadValue::Syntax),
        Kind::Uint => parse_go_uint(raw).map(Value::Uint),
        Kind::Uint32 => match raw.parse::<u64>() {
            Ok(v) if v <= u64::from(u32::MAX) => Ok(Value::Uint(v)),
            Ok(_) => Err(BadValue::Range),
            Err(_) if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => Err(BadValue::Range),
            Err(_) => Err(BadValue::Syntax),
        },
        Kind::Int => parse_go_int(raw).map(Value::Int),
        Kind::Duration => parse_go_duration(raw).map(Value::Duration).ok_or(BadValue::Syntax),
        Kind::Urls => url::parse_list(raw).map(Value::Urls).map_err(BadValue::Url),
        Kind::List => Ok(Value::List(split_list(raw))),
    }
}

/// Splits a comma list, trimming blanks and dropping empty elements.
pub(super) fn split_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: decimal, `0x`, `0o`, `0b`, or a
/// leading `0` for octal; underscores only after a base prefix.
pub(super) fn parse_go_uint(s: &str) -> Result<u64, BadValue> {
    let lower = s.to_ascii_lowercase();
    let (digits, radix, prefixed) = if let Some(r) = lower.strip_prefix("0x") {
        (r, 16, true)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (r, 8, true)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (r, 2, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8, true)
    } else {
        (lower.as_str(), 10, false)
    };
    let digits: String = if prefixed { digits.trim_start_matches('_').replace('_', "") } else { digits.to_string() };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(BadValue::Syntax);
    }
    u64::from_str_radix(&digits, radix).map_err(|_| BadValue::Range)
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
pub(super) fn parse_go_int(s: &str) -> Result<i64, BadValue> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_go_uint(body)?;
    if negative {
        if magnitude > i64::MAX as u64 + 1 {
            return Err(BadValue::Range);
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| BadValue::Range)
    }
}

/// Go's `time.ParseDuration`, for non-negative durations: a sequence of
/// decimal numbers, each with an optional fraction and a unit (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), or a bare `0`.
pub(super) fn parse_go_duration(s: &str) -> Option<Duration> {
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if let Some(r) = rest.strip_prefix('-') {
        // Negative durations make no sense for any of etcd's settings, but
        // Go accepts "-0".
        return (r == "0" || parse_go_duration(r) == Some(Duration::ZERO)).then_some(Duration::ZERO);
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_end);
        rest = after;
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..end];
            rest = &r[end..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_end = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_end);
        rest = after;
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
        total = total.checked_add(whole.checked_mul(unit_nanos)?)?;
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for d in frac_part.bytes().take(24) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = total.checked_add(frac * unit_nanos / scale)?;
        if total > MAX_NANOS {
            return None;
        }
    }
    u64::try_from(total).ok().map(Duration::from_nanos)
}

/// Every flag's value and where it came from, indexed like the table.
pub(super) struct Settings {
    entries: Vec<(&'static Flag, Value, Origin)>,
}

impl Settings {
    /// Every flag at its default.
    pub(super) fn defaults() -> Result<Settings, ConfigError> {
        let mut entries = Vec::new();
        for flag in all() {
            let value = parse_value(flag.kind, flag.default).map_err(|e| {
                ConfigError::Invalid(format!(
                    "internal error: default {:?} of --{} does not parse: {}",
                    flag.default,
                    flag.name,
                    e.reason()
                ))
            })?;
            entries.push((flag, value, Origin::Default));
        }
        Ok(Settings { entries })
    }

    fn entry(&self, name: &str) -> Option<&(&'static Flag, Value, Origin)> {
        let found = self.entries.iter().find(|(fl, _, _)| fl.name == name);
        debug_assert!(found.is_some(), "no flag --{name} in the table");
        found
    }

    /// Stores an already parsed value.
    pub(super) fn put(&mut self, name: &str, value: Value, origin: Origin) {
        if let Some(e) = self.entries.iter_mut().find(|(fl, _, _)| fl.name == name) {
            e.1 = value;
            e.2 = origin;
        }
    }

    /// Parses and stores a raw value.
    pub(super) fn set(&mut self, name: &str, raw: &str, origin: Origin) -> Result<(), BadValue> {
        let kind = lookup(name).map_or(Kind::Str, |fl| fl.kind);
        let value = parse_value(kind, raw)?;
        self.put(name, value, origin);
        Ok(())
    }

    /// Whether anything but the default set this flag.
    pub(super) fn is_set(&self, name: &str) -> bool {
        self.entry(name).is_some_and(|(_, _, o)| *o != Origin::Default)
    }

    /// Where the flag's value came from.
    pub(super) fn origin(&self, name: &str) -> Origin {
        self.entry(name).map_or(Origin::Default, |(_, _, o)| o.clone())
    }

    /// The value, for flags whose kind the caller does not know.
    pub(super) fn value(&self, name: &str) -> Option<&Value> {
        self.entry(name).map(|(_, v, _)| v)
    }

    /// Whether the value differs from the table's default.
    pub(super) fn differs_from_default(&self, name: &str) -> bool {
        match (self.entry(name), lookup(name)) {
            (Some((_, v, _)), Some(fl)) => parse_value(fl.kind, fl.default).ok().as_ref() != Some(v),
            _ => false,
        }
    }

    pub(super) fn str(&self, name: &str) -> &str {
        match self.value(name) {
            Some(Value::Str(s)) => s,
            _ => "",
        }
    }

    pub(super) fn bool(&self, name: &str) -> bool {
        matches!(self.value(name), Some(Value::Bool(true)))
    }

    pub(super) fn uint(&self, name: &str) -> u64 {
        match self.value(name) {
            Some(Value::Uint(v)) => *v,
            _ => 0,
        }
    }

    pub(super) fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        }
    }

    pub(super) fn duration(&self, name: &str) -> Duration {
        match self.value(name) {
            Some(Value::Duration(d)) => *d,
            _ => Duration::ZERO,
        }
    }

    pub(super) fn urls(&self, name: &str) -> &[Url] {
        match self.value(name) {
            Some(Value::Urls(u)) => u,
            _ => &[],
        }
    }

    pub(super) fn list(&self, name: &str) -> &[String] {
        match self.value(name) {
            Some(Value::List(l)) => l,
            _ => &[],
        }
    }

    /// The flag as a user should look for it: `--name`, plus where the value
    /// came from when that was not the command line.
    pub(super) fn label(&self, name: &str) -> String {
        match self.origin(name) {
            Origin::Default | Origin::Flag => format!("--{name}"),
            Origin::Env(var) => format!("--{name} (from {var})"),
            Origin::File { path, line, key } => format!("--{name} ({key} at {path}:{line})"),
        }
    }

    /// The names of the flags set on the command line, in table order.
    pub(super) fn set_on_command_line(&self) -> Vec<&'static str> {
        self.entries.iter().filter(|(_, _, o)| *o == Origin::Flag).map(|(fl, _, _)| fl.name).collect()
    }
}

/// What the command line asked for.
pub(super) enum CommandLine {
    /// Run with these settings.
    Settings(Settings),
    /// `-h`, `-help` or `--help`.
    Help,
}

/// Parses arguments (without the program name) as Go's `flag` package does.
pub(super) fn parse_args(args: &[String]) -> Result<CommandLine, ConfigError> {
    let mut settings = Settings::defaults()?;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg.len() < 2 || !arg.starts_with('-') {
            // The first non-flag argument ends the flags; etcd takes none.
            return Err(ConfigError::Flag(format!("'{arg}' is not a valid flag")));
        }
        let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).unwrap_or(arg);
        if body.is_empty() {
            // "--" ends the flags.
            return match args.get(i) {
                Some(next) => Err(ConfigError::Flag(format!("'{next}' is not a valid flag"))),
                None => Ok(CommandLine::Settings(settings)),
            };
        }
        if body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::Flag(format!("bad flag syntax: {arg}")));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some(flag) = lookup(name) else {
            if name == "help" || name == "h" {
                return Ok(CommandLine::Help);
            }
            return Err(ConfigError::Flag(format!("flag provided but not defined: -{name}")));
        };
        if flag.kind == Kind::Bool {
            let raw = inline.unwrap_or("true");
            settings
                .set(flag.name, raw, Origin::Flag)
                .map_err(|e| ConfigError::Flag(format!("invalid boolean value {raw:?} for -{name}: {}", e.reason())))?;
            continue;
        }
        let raw = match inline {
            Some(v) => v,
            None => {
                let Some(next) = args.get(i) else {
                    return Err(ConfigError::Flag(format!("flag needs an argument: -{name}")));
                };
                i += 1;
                next.as_str()
            }
        };
        settings
            .set(flag.name, raw, Origin::Flag)
            .map_err(|e| ConfigError::Flag(format!("invalid value {raw:?} for flag -{name}: {}", e.reason())))?;
    }
    Ok(CommandLine::Settings(settings))
}

/// A line to log once the logger is up.
pub(super) type Note = (crate::log::Level, String, Vec<(&'static str, String)>);

/// Applies `ETCD_*` variables to flags the command line did not set, with
/// etcd's rules: empty values are ignored, a variable for a flag that the
/// command line also set is an error, unknown `ETCD_*` variables are warned
/// about, and `ETCD_VERSION` is never used.
pub(super) fn apply_env(
    settings: &mut Settings,
    env: &[(String, String)],
    notes: &mut Vec<Note>,
) -> Result<(), ConfigError> {
    use crate::log::Level;
    let mut used = Vec::new();
    for flag in all() {
        if flag.name == "config-file" {
            continue;
        }
        let var = env_name(flag.name);
        if settings.is_set(flag.name) {
            continue;
        }
        let Some((_, val)) = env.iter().rev().find(|(k, _)| *k == var) else {
            continue;
        };
        if val.is_empty() || var == "ETCD_VERSION" {
            continue;
        }
        settings
            .set(flag.name, val, Origin::Env(var.clone()))
            .map_err(|e| ConfigError::Env(format!("invalid value {val:?} for {var}: {}", e.reason())))?;
        notes.push((
            Level::Info,
            "recognized and used environment variable".into(),
            vec![("variable-name", var.clone()), ("variable-value", val.clone())],
        ));
        used.push(var);
    }
    for (key, val) in env {
        if used.contains(key) || key == "ETCD_CONFIG_FILE" {
            continue;
        }
        if key == "ETCD_VERSION" {
            notes.push((
                Level::Warn,
                "cannot set special environment variable".into(),
                vec![("key", key.clone()), ("value", val.clone())],
            ));
            continue;
        }
        let shadowed = key
            .strip_prefix("ETCD_")
            .map(|rest| rest.to_ascii_lowercase().replace('_', "-"))
            .is_some_and(|name| lookup(&name).is_some() && settings.origin(&name) == Origin::Flag);
        if shadowed {
            return Err(ConfigError::Env(format!(
                "conflicting environment variable {key:?} is shadowed by corresponding \
                 command-line flag (either unset environment variable or disable flag)"
            )));
        }
        if key.starts_with("ETCD_") {
            notes.push((
                Level::Warn,
                "unrecognized environment variable".into(),
                vec![("environment-variable", format!("{key}={val}"))],
            ));
        }
    }
    Ok(())
}

/// The `--help` text: usage, then every flag with its default and meaning.
/// `marks` returns a note for flags corekv refuses or ignores.
pub(super) fn help_text(marks: &dyn Fn(&str) -> Option<&'static str>) -> String {
    let mut out = String::from(
        "Usage:\n\n  corekv [flags]\n    Start a corekv server. Flags and defaults are etcd's.\n\n  \
         corekv --version\n    Show the version.\n\n  corekv -h | --help\n    Show this help.\n\n  \
         corekv --config-file PATH\n    Read settings from a YAML file (etcd's keys); other flags \
         and ETCD_* variables are then ignored.\n\nEvery flag can also be set with an ETCD_* \
         environment variable (--data-dir: ETCD_DATA_DIR); the command line wins.\n",
    );
    for (section, flags) in SECTIONS {
        out.push_str(&format!("\n{section}:\n"));
        for fl in *flags {
            let default = fl.shown.unwrap_or(fl.default);
            out.push_str(&format!("  --{} '{}'\n    {}", fl.name, default, fl.help));
            if let Some(mark) = marks(fl.name) {
                out.push_str(&format!(" [corekv: {mark}]"));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn parsed(list: &[&str]) -> Result<Settings, String> {
        match parse_args(&args(list)) {
            Ok(CommandLine::Settings(s)) => Ok(s),
            Ok(CommandLine::Help) => Err("help".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn err(list: &[&str]) -> String {
        parsed(list).err().unwrap_or_default()
    }

    #[test]
    fn every_default_parses_and_names_are_unique() {
        assert!(Settings::defaults().is_ok());
        let names: Vec<_> = all().map(|fl| fl.name).collect();
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len());
    }

    #[test]
    fn flag_forms_space_equals_single_dash() {
        for form in [&["--name", "n1"][..], &["--name=n1"], &["-name", "n1"], &["-name=n1"]] {
            let s = parsed(form);
            assert_eq!(s.as_ref().map(|s| s.str("name").to_string()), Ok("n1".into()));
            assert_eq!(s.map(|s| s.origin("name")), Ok(Origin::Flag));
        }
    }

    #[test]
    fn bool_forms() {
        let v = |list: &[&str]| parsed(list).map(|s| s.bool("enable-v2"));
        assert_eq!(v(&["--enable-v2"]), Ok(true));
        assert_eq!(v(&["-enable-v2"]), Ok(true));
        assert_eq!(v(&["--enable-v2=true"]), Ok(true));
        assert_eq!(v(&["--enable-v2=T"]), Ok(true));
        assert_eq!(v(&["--enable-v2=1"]), Ok(true));
        assert_eq!(v(&["--enable-v2", "--enable-v2=false"]), Ok(false));
        assert_eq!(v(&["--enable-v2=0"]), Ok(false));
        assert_eq!(v(&[]), Ok(false));
        // Like Go: a bool flag never takes the next argument.
        assert_eq!(err(&["--enable-v2", "false"]), "'false' is not a valid flag");
        assert_eq!(err(&["--enable-v2=maybe"]), "invalid boolean value \"maybe\" for -enable-v2: parse error");
    }

    #[test]
    fn go_flag_errors() {
        assert_eq!(err(&["--bogus"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["-bogus=1"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["--name"]), "flag needs an argument: -name");
        assert_eq!(err(&["--snapshot-count", "abc"]), "invalid value \"abc\" for flag -snapshot-count: parse error");
        assert_eq!(
            err(&["--snapshot-count=99999999999999999999"]),
            "invalid value \"99999999999999999999\" for flag -snapshot-count: value out of range"
        );
        assert_eq!(
            err(&["--initial-cluster-state", "weird"]),
            "invalid value \"weird\" for flag -initial-cluster-state: invalid value"
        );
        assert_eq!(err(&["---name", "x"]), "bad flag syntax: ---name");
        assert_eq!(err(&["foo"]), "'foo' is not a valid flag");
        assert_eq!(err(&["--", "--name"]), "'--name' is not a valid flag");
        assert!(parsed(&["--"]).is_ok());
        assert_eq!(
            err(&["--listen-client-urls", "http://127.0.0.1:12379/path"]),
            "invalid value \"http://127.0.0.1:12379/path\" for flag -listen-client-urls: \
             URL must not contain a path: http://127.0.0.1:12379/path"
        );
    }

    #[test]
    fn help_flags_and_last_value_wins() {
        for h in ["-h", "--help", "-help", "--h", "--help=false"] {
            assert_eq!(parsed(&[h]).err().as_deref(), Some("help"));
        }
        // A value that looks like a flag is still the value, as in Go.
        assert_eq!(parsed(&["--name", "--data-dir"]).map(|s| s.str("name").to_string()), Ok("--data-dir".into()));
        assert_eq!(parsed(&["--name", "a", "--name", "b"]).map(|s| s.str("name").to_string()), Ok("b".into()));
    }

    #[test]
    fn go_numbers_and_durations() {
        assert_eq!(parse_go_uint("10"), Ok(10));
        assert_eq!(parse_go_uint("0x1f"), Ok(31));
        assert_eq!(parse_go_uint("010"), Ok(8));
        assert_eq!(parse_go_uint("0b101"), Ok(5));
        assert_eq!(parse_go_uint("0x_ff"), Ok(255));
        assert_eq!(parse_go_uint("1_000"), Err(BadValue::Syntax));
        assert_eq!(parse_go_uint("+1"), Err(BadValue::Syntax));
        assert_eq!(parse_go_uint("-1"), Err(BadValue::Syntax));
        assert_eq!(parse_go_int("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), Err(BadValue::Range));
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d(".5m"), Some(Duration::from_secs(30)));
        assert_eq!(d("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(d("1"), None);
        assert_eq!(d("5x"), None);
        assert_eq!(d("-1s"), None);
        assert_eq!(d(""), None);
        assert_eq!(d("3000000h"), None);
    }

    #[test]
    fn env_names_follow_etcd() {
        assert_eq!(env_name("data-dir"), "ETCD_DATA_DIR");
        assert_eq!(env_name("experimental-initial-corrupt-check"), "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK");
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let text = help_text(&|_| None);
        for fl in all() {
            let line = format!("  --{} '{}'\n", fl.name, fl.shown.unwrap_or(fl.default));
            assert!(text.contains(&line), "{line}");
        }
    }
}
