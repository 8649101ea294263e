//! etcd's command line, `ETCD_*` environment and YAML configuration file,
//! turned into one typed [`Config`].
//!
//! Owns: which settings exist and their defaults (etcd 3.5's), precedence
//! (command line over environment over defaults; a configuration file
//! replaces both, as in etcd), etcd's validation and its error wording, the
//! refusal of settings whose feature corekv lacks (one table, in
//! `config/unsupported.rs`), and member and cluster IDs computed as etcd
//! computes them. Never touches: sockets, the data directory, or the logger.
//! Lines worth logging while parsing are returned in [`Config::notices`]
//! and written by [`Config::log_notices`] once the logger is up.
//!
//! Submodules: `flags` (the flag table, Go flag syntax, environment, help),
//! `file` (configuration file keys), `yaml` (the YAML subset), `url`
//! (URL parsing), `unsupported` (the refusal and no-effect tables).

#[path = "config/file.rs"]
mod file;
#[path = "config/flags.rs"]
mod flags;
#[path = "config/unsupported.rs"]
mod unsupported;
#[path = "config/url.rs"]
mod url;
#[path = "config/yaml.rs"]
mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use flags::{CommandLine, Note, Origin, Settings, Value};

use crate::log::{Level, LogValue, Output};
use crate::types::{ClusterId, MemberId};

pub use url::{Scheme, Url};

/// etcd's default space quota, used when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;
/// Above this quota etcd (and corekv) warns.
pub const MAX_QUOTA_BACKEND_BYTES: u64 = 8 << 30;
/// Above this request size etcd (and corekv) warns.
pub const MAX_RECOMMENDED_REQUEST_BYTES: u64 = 10 << 20;
/// etcd's upper bound on `--election-timeout`.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;
/// Upper bound on `--cores`.
pub const CORES_MAX: usize = 1024;

/// What the command line asks for.
// A Config is built once per process; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed {
    /// Start the server with this configuration.
    Run(Config),
    /// Print this text to stdout and exit 0 (`-h`, `--help`).
    Help(String),
    /// Print the version and exit 0 (`--version`).
    Version,
}

/// Why the configuration was refused. Print as `corekv: {error}`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The command line does not parse (Go `flag` package wording, e.g.
    /// `flag provided but not defined: -x`).
    #[error("{0}")]
    Flag(String),
    /// An `ETCD_*` variable is invalid or conflicts with a flag.
    #[error("{0}")]
    Env(String),
    /// The configuration file cannot be read.
    #[error("--config-file: cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The configuration file has a bad line.
    #[error("{path}:{line}: {msg}")]
    File {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong, starting with the key.
        msg: String,
    },
    /// A setting asks for a feature corekv does not have (yet):
    /// `--cert-file: client TLS is not supported yet`.
    #[error("{0}")]
    Unsupported(String),
    /// The settings are inconsistent (etcd's wording where etcd has one).
    #[error("{0}")]
    Invalid(String),
}

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster.
    New,
    /// Join an existing cluster.
    Existing,
}

/// `--auto-compaction-mode` and `--auto-compaction-retention` together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// No automatic compaction (retention 0).
    Off,
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(u64),
}

impl AutoCompaction {
    /// Whether automatic compaction is disabled.
    pub const fn is_off(self) -> bool {
        matches!(self, AutoCompaction::Off)
    }
}

/// `--metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metrics {
    /// etcd's basic metrics.
    Basic,
    /// Basic plus server-side gRPC histograms.
    Extensive,
}

/// One member of `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name.
    pub name: String,
    /// Its peer URLs, sorted (not deduplicated: etcd refuses duplicates).
    pub peer_urls: Vec<Url>,
}

/// A line to log once the logger is initialised (which variables were used,
/// which settings are ignored, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Its level.
    pub level: Level,
    /// The message.
    pub msg: String,
    /// Its fields, as strings.
    pub fields: Vec<(&'static str, String)>,
}

/// The server's configuration. Field names follow etcd's flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (`${name}.etcd` when empty).
    pub data_dir: PathBuf,
    /// `--snapshot-count`: committed entries between Raft snapshots.
    pub snapshot_count: u64,
    /// `--heartbeat-interval`.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--initial-election-tick-advance`.
    pub initial_election_tick_advance: bool,
    /// `--listen-peer-urls` (sorted, unique).
    pub listen_peer_urls: Vec<Url>,
    /// `--listen-client-urls` (sorted, unique).
    pub listen_client_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls` (sorted, unique).
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--advertise-client-urls` (sorted, unique).
    pub advertise_client_urls: Vec<Url>,
    /// `--initial-cluster`, sorted by name.
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--peer-cert-file` and `--peer-key-file`, when given.
    pub peer_cert: Option<(PathBuf, PathBuf)>,
    /// `--peer-trusted-ca-file`, when given.
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// `--peer-client-cert-auth`.
    pub peer_client_cert_auth: bool,
    /// `--peer-auto-tls`.
    pub peer_auto_tls: bool,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    /// `--pre-vote`.
    pub pre_vote: bool,
    /// `--auto-compaction-mode` with `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
    /// `--quota-backend-bytes` resolved: 0 became 2 GiB, `None` means a
    /// negative value disabled the quota.
    pub quota_backend_bytes: Option<u64>,
    /// `--max-request-bytes`.
    pub max_request_bytes: u64,
    /// `--max-txn-ops`.
    pub max_txn_ops: u64,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-min-time`.
    pub grpc_keepalive_min_time: Duration,
    /// `--grpc-keepalive-interval` (zero disables).
    pub grpc_keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout` (zero disables).
    pub grpc_keepalive_timeout: Duration,
    /// `--auth-token` (only `simple` is accepted for now).
    pub auth_token: String,
    /// `--bcrypt-cost` (out-of-range values became 10, as in etcd).
    pub bcrypt_cost: u32,
    /// `--auth-token-ttl`.
    pub auth_token_ttl: Duration,
    /// `--metrics`.
    pub metrics: Metrics,
    /// `--log-level`.
    pub log_level: Level,
    /// `--log-outputs` (`default` is stderr).
    pub log_outputs: Vec<Output>,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_notify_interval: Duration,
    /// `--experimental-warning-apply-duration`.
    pub warning_apply_duration: Duration,
    /// `--experimental-warning-unary-request-duration`.
    pub warning_unary_request_duration: Duration,
    /// `--cores`: reactors to run (default: the CPUs in this process's
    /// affinity mask).
    pub cores: usize,
    /// `--learner-auto-promote`: the leader promotes learners once in sync.
    pub learner_auto_promote: bool,
    /// `--wal-buffered-io`: buffered WAL writes where O_DIRECT is refused.
    pub wal_buffered_io: bool,
    /// `--page-cache-bytes`: each reactor's page cache budget (0: a
    /// quarter of the machine's memory over the reactors).
    pub page_cache_bytes: u64,
    /// `--config-file`, when the settings came from one.
    pub config_file: Option<PathBuf>,
    /// Lines to log once the logger is up; see [`Config::log_notices`].
    pub notices: Vec<Notice>,
}

/// Parses etcd's command line (`args` without the program name) and
/// environment into a configuration, or help or version.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Parsed, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    let env: Vec<(String, String)> = env.into_iter().collect();
    let command_line = match flags::parse_args(&args)? {
        CommandLine::Help => return Ok(Parsed::Help(help())),
        CommandLine::Settings(s) => s,
    };
    if command_line.bool("version") {
        return Ok(Parsed::Version);
    }
    let mut notes: Vec<Note> = Vec::new();
    let config_file = match command_line.str("config-file") {
        "" => env.iter().rev().find(|(k, v)| k == "ETCD_CONFIG_FILE" && !v.is_empty()).map(|(_, v)| v.clone()),
        path => Some(path.to_string()),
    };
    let mut settings = match &config_file {
        Some(path) => from_file(path, &command_line, &env, &mut notes)?,
        None => from_command_line(command_line, &env, &mut notes)?,
    };
    default_initial_cluster(&mut settings);
    if let Some(refusal) = unsupported::first_refusal(&settings) {
        return Err(ConfigError::Unsupported(refusal));
    }
    unsupported::no_effect_notes(&settings, &mut notes);
    let config = build(&settings, config_file.map(PathBuf::from), notes)?;
    Ok(Parsed::Run(config))
}

/// The `--help` text.
pub fn help() -> String {
    flags::help_text(&unsupported::help_mark)
}

fn from_command_line(
    mut settings: Settings,
    env: &[(String, String)],
    notes: &mut Vec<Note>,
) -> Result<Settings, ConfigError> {
    flags::apply_env(&mut settings, env, notes)?;
    // Like etcd: listening on chosen client URLs without saying which to
    // advertise is an error, not a silent "http://localhost:2379".
    if settings.is_set("listen-client-urls") && !settings.is_set("advertise-client-urls") {
        settings.put("advertise-client-urls", Value::Urls(Vec::new()), Origin::Default);
    }
    Ok(settings)
}

fn from_file(
    path: &str,
    command_line: &Settings,
    env: &[(String, String)],
    notes: &mut Vec<Note>,
) -> Result<Settings, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_string(), source })?;
    notes.push((
        Level::Info,
        "loaded server configuration, other configuration command line flags and \
         environment variables will be ignored if provided"
            .into(),
        vec![("path", path.to_string())],
    ));
    let ignored_flags: Vec<&str> =
        command_line.set_on_command_line().into_iter().filter(|f| *f != "config-file").collect();
    if !ignored_flags.is_empty() {
        notes.push((
            Level::Warn,
            "ignoring command-line flags because a configuration file is given".into(),
            vec![("flags", ignored_flags.join(","))],
        ));
    }
    let ignored_vars: Vec<&str> =
        env.iter().map(|(k, _)| k.as_str()).filter(|k| k.starts_with("ETCD_") && *k != "ETCD_CONFIG_FILE").collect();
    if !ignored_vars.is_empty() {
        notes.push((
            Level::Warn,
            "ignoring environment variables because a configuration file is given".into(),
            vec![("variables", ignored_vars.join(","))],
        ));
    }
    let mut settings = Settings::defaults()?;
    file::apply(&mut settings, path, &text, notes)?;
    Ok(settings)
}

/// etcd's rule: when the name is not "default" and `--initial-cluster` still
/// reads "default=http://localhost:2380" (unset, or set to exactly that), it
/// becomes `name=url` for each advertised peer URL.
fn default_initial_cluster(settings: &mut Settings) {
    let default = flags::lookup("initial-cluster").map_or("", |fl| fl.default);
    let name = settings.str("name");
    if name == "default" || settings.str("initial-cluster") != default {
        return;
    }
    let name = if name.is_empty() { "default" } else { name };
    let cluster = settings
        .urls("initial-advertise-peer-urls")
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let origin = settings.origin("initial-cluster");
    settings.put("initial-cluster", Value::Str(cluster), origin);
}

/// Splits `name=url,name=url` into pairs (the URL unparsed).
fn split_initial_cluster(s: &str) -> Vec<(&str, &str)> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(|pair| pair.split_once('=').unwrap_or((pair, ""))).collect()
}

/// Parses `--initial-cluster` into members sorted by name, each with its
/// peer URLs sorted, as etcd's `URLsMap` does.
fn parse_initial_cluster(s: &str) -> Result<Vec<InitialMember>, String> {
    let mut members: BTreeMap<&str, Vec<Url>> = BTreeMap::new();
    for (name, raw) in split_initial_cluster(s) {
        let u = Url::parse(raw).map_err(|e| format!("error setting up initial cluster: {e}"))?;
        members.entry(name).or_default().push(u);
    }
    Ok(members
        .into_iter()
        .map(|(name, mut peer_urls)| {
            peer_urls.sort();
            InitialMember { name: name.to_string(), peer_urls }
        })
        .collect())
}

/// etcd's `parseCompactionRetention`: a bare integer is hours (periodic) or
/// revisions (revision); otherwise a Go duration.
fn parse_retention(mode: &str, retention: &str) -> Result<AutoCompaction, String> {
    if let Ok(n) = retention.parse::<u64>() {
        return Ok(match (n, mode) {
            (0, _) => AutoCompaction::Off,
            (n, "revision") => AutoCompaction::Revision(n),
            (n, _) => AutoCompaction::Periodic(Duration::from_secs(n.saturating_mul(3600))),
        });
    }
    if mode == "revision" {
        return Err(format!(
            "--auto-compaction-retention: {retention:?} is not a number of revisions \
             (--auto-compaction-mode=revision)"
        ));
    }
    match flags::parse_go_duration(retention) {
        Some(d) if d.is_zero() => Ok(AutoCompaction::Off),
        Some(d) => Ok(AutoCompaction::Periodic(d)),
        None => Err(format!("error parsing CompactionRetention: time: invalid duration {retention:?}")),
    }
}

/// The CPUs this process may run on (`sched_getaffinity`), at least 1.
fn affinity_cpus() -> usize {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and the
    // kernel writes at most size_of::<cpu_set_t>() bytes into it.
    let count = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set)
        } else {
            0
        }
    };
    match usize::try_from(count) {
        Ok(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Checks the settings as etcd's `Config.Validate` and bootstrap checks do,
/// and builds the typed configuration.
fn build(s: &Settings, config_file: Option<PathBuf>, mut notes: Vec<Note>) -> Result<Config, ConfigError> {
    let (log_level, log_outputs) = logging(s)?;
    check_bind_urls(s, "listen-peer-urls")?;
    check_bind_urls(s, "listen-client-urls")?;
    check_host_urls(s, "initial-advertise-peer-urls")?;
    check_host_urls(s, "advertise-client-urls")?;
    let heartbeat_ms = s.uint("heartbeat-interval");
    let election_ms = s.uint("election-timeout");
    if heartbeat_ms == 0 {
        return Err(invalid(format!("--heartbeat-interval must be >0 (set to {heartbeat_ms}ms)")));
    }
    if election_ms == 0 {
        return Err(invalid(format!("--election-timeout must be >0 (set to {election_ms}ms)")));
    }
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(invalid(format!(
            "--election-timeout[{election_ms}ms] should be at least as 5 times as \
             --heartbeat-interval[{heartbeat_ms}ms]"
        )));
    }
    if election_ms > MAX_ELECTION_TIMEOUT_MS {
        return Err(invalid(format!(
            "--election-timeout[{election_ms}ms] is too long, and should be set less than \
             {MAX_ELECTION_TIMEOUT_MS}ms"
        )));
    }
    if !s.urls("listen-client-urls").is_empty() && s.urls("advertise-client-urls").is_empty() {
        return Err(invalid("--advertise-client-urls is required when --listen-client-urls is set explicitly"));
    }
    let mode = match s.str("auto-compaction-mode") {
        "" => "periodic",
        m @ ("periodic" | "revision") => m,
        other => return Err(invalid(format!("unknown auto-compaction-mode {other:?}"))),
    };
    let auto_compaction = parse_retention(mode, s.str("auto-compaction-retention")).map_err(invalid)?;

    let name = s.str("name").to_string();
    let initial_cluster = parse_initial_cluster(s.str("initial-cluster")).map_err(invalid)?;
    verify_bootstrap(&name, s.urls("initial-advertise-peer-urls"), &initial_cluster)?;

    let data_dir = match s.str("data-dir") {
        "" => {
            let dir = format!("{name}.etcd");
            notes.push((Level::Warn, "'data-dir' was empty; using default".into(), vec![("data-dir", dir.clone())]));
            PathBuf::from(dir)
        }
        dir => PathBuf::from(dir),
    };
    let quota_backend_bytes = quota(s.int("quota-backend-bytes"), &mut notes);
    let max_request_bytes = s.uint("max-request-bytes");
    if max_request_bytes > MAX_RECOMMENDED_REQUEST_BYTES {
        notes.push((
            Level::Warn,
            "exceeded recommended request limit".into(),
            vec![
                ("max-request-bytes", max_request_bytes.to_string()),
                ("recommended-request-bytes", MAX_RECOMMENDED_REQUEST_BYTES.to_string()),
            ],
        ));
    }
    let bcrypt_cost = match u32::try_from(s.uint("bcrypt-cost")) {
        Ok(c) if (4..=31).contains(&c) => c,
        _ => {
            notes.push((
                Level::Warn,
                "use default bcrypt cost instead of the invalid given cost".into(),
                vec![("given-cost", s.uint("bcrypt-cost").to_string()), ("default-cost", "10".into())],
            ));
            10
        }
    };
    let cores = cores(s, &mut notes)?;
    let peer_cert = match (s.str("peer-cert-file"), s.str("peer-key-file")) {
        ("", "") => None,
        (c, k) if !c.is_empty() && !k.is_empty() => Some((PathBuf::from(c), PathBuf::from(k))),
        _ => return Err(invalid("--peer-cert-file and --peer-key-file must be given together")),
    };
    let peer_trusted_ca_file = Some(s.str("peer-trusted-ca-file")).filter(|f| !f.is_empty()).map(PathBuf::from);
    if s.bool("peer-client-cert-auth") && (peer_cert.is_none() || peer_trusted_ca_file.is_none()) {
        return Err(invalid(
            "--peer-client-cert-auth needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file",
        ));
    }
    if peer_trusted_ca_file.is_some() && peer_cert.is_none() {
        return Err(invalid("--peer-trusted-ca-file needs --peer-cert-file and --peer-key-file"));
    }
    let notices = notes.into_iter().map(|(level, msg, fields)| Notice { level, msg, fields }).collect();
    Ok(Config {
        name,
        data_dir,
        snapshot_count: s.uint("snapshot-count"),
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout: Duration::from_millis(election_ms),
        initial_election_tick_advance: s.bool("initial-election-tick-advance"),
        listen_peer_urls: s.urls("listen-peer-urls").to_vec(),
        listen_client_urls: s.urls("listen-client-urls").to_vec(),
        initial_advertise_peer_urls: s.urls("initial-advertise-peer-urls").to_vec(),
        advertise_client_urls: s.urls("advertise-client-urls").to_vec(),
        initial_cluster,
        initial_cluster_state: match s.str("initial-cluster-state") {
            "existing" => ClusterState::Existing,
            _ => ClusterState::New,
        },
        initial_cluster_token: s.str("initial-cluster-token").to_string(),
        peer_cert,
        peer_trusted_ca_file,
        peer_client_cert_auth: s.bool("peer-client-cert-auth"),
        peer_auto_tls: s.bool("peer-auto-tls"),
        strict_reconfig_check: s.bool("strict-reconfig-check"),
        pre_vote: s.bool("pre-vote"),
        auto_compaction,
        quota_backend_bytes,
        max_request_bytes,
        max_txn_ops: s.uint("max-txn-ops"),
        max_concurrent_streams: u32::try_from(s.uint("max-concurrent-streams")).unwrap_or(u32::MAX),
        grpc_keepalive_min_time: s.duration("grpc-keepalive-min-time"),
        grpc_keepalive_interval: s.duration("grpc-keepalive-interval"),
        grpc_keepalive_timeout: s.duration("grpc-keepalive-timeout"),
        auth_token: s.str("auth-token").to_string(),
        bcrypt_cost,
        auth_token_ttl: Duration::from_secs(s.uint("auth-token-ttl")),
        metrics: match s.str("metrics") {
            "extensive" => Metrics::Extensive,
            _ => Metrics::Basic,
        },
        log_level,
        log_outputs,
        watch_progress_notify_interval: s.duration("experimental-watch-progress-notify-interval"),
        warning_apply_duration: s.duration("experimental-warning-apply-duration"),
        warning_unary_request_duration: s.duration("experimental-warning-unary-request-duration"),
        cores,
        wal_buffered_io: s.bool("wal-buffered-io"),
        page_cache_bytes: s.uint("page-cache-bytes"),
        learner_auto_promote: s.bool("learner-auto-promote"),
        config_file,
        notices,
    })
}

fn logging(s: &Settings) -> Result<(Level, Vec<Output>), ConfigError> {
    match s.str("logger") {
        "zap" => {}
        "capnslog" => return Err(invalid("--logger=capnslog is removed in v3.5")),
        other => return Err(invalid(format!("unknown logger option {other:?}"))),
    }
    let level: Level = s.str("log-level").parse().map_err(|e: crate::log::LogError| invalid(e.to_string()))?;
    let mut outputs: Vec<Output> = Vec::new();
    for target in s.list("log-outputs") {
        let out = match target.as_str() {
            "default" | "stderr" => Output::Stderr,
            "stdout" => Output::Stdout,
            path => Output::File(PathBuf::from(path)),
        };
        if !outputs.contains(&out) {
            outputs.push(out);
        }
    }
    if outputs.is_empty() {
        outputs.push(Output::Stderr);
    }
    Ok((level, outputs))
}

/// etcd's `checkBindURLs`: a listen URL's host must be an IP or `localhost`.
fn check_bind_urls(s: &Settings, flag: &str) -> Result<(), ConfigError> {
    for u in s.urls(flag) {
        if u.is_unix() || u.host == "localhost" {
            continue;
        }
        if u.host.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!("expected IP in URL for binding ({u})")));
        }
    }
    Ok(())
}

/// etcd's `checkHostURLs`: an advertised URL must have a host.
fn check_host_urls(s: &Settings, flag: &str) -> Result<(), ConfigError> {
    let urls = s.urls(flag);
    match urls.iter().find(|u| !u.is_unix() && u.host.is_empty()) {
        Some(u) => {
            Err(invalid(format!("--{flag} {:?} must be \"host:port\" (unexpected empty host ({u}))", url::join(urls))))
        }
        None => Ok(()),
    }
}

/// etcd's bootstrap checks (`VerifyBootstrap`): the local name is in the
/// initial cluster with exactly the advertised peer URLs, and no URL is
/// listed twice. corekv runs them on every start; etcd skips them when the
/// data directory already holds a member.
fn verify_bootstrap(name: &str, advertised: &[Url], cluster: &[InitialMember]) -> Result<(), ConfigError> {
    let Some(local) = cluster.iter().find(|m| m.name == name) else {
        return Err(invalid(format!("couldn't find local name {name:?} in the initial cluster configuration")));
    };
    let listed: Vec<&str> = local.peer_urls.iter().map(Url::as_str).collect();
    let mut ours: Vec<&str> = advertised.iter().map(Url::as_str).collect();
    ours.sort_unstable();
    if listed != ours {
        let why = if listed.len() != ours.len() {
            format!("len({}) != len({})", go_quote_list(&ours), go_quote_list(&listed))
        } else {
            let (a, b) = ours.iter().zip(&listed).find(|(a, b)| a != b).map_or(("", ""), |(a, b)| (*a, *b));
            format!("resolved urls: {a:?} != {b:?}")
        };
        let missing: Vec<String> = listed.iter().filter(|u| !ours.contains(u)).map(|u| format!("{name}={u}")).collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} ({why})",
                missing.join(","),
                ours.join(",")
            )));
        }
        let extra: Vec<&str> = ours.iter().filter(|u| !listed.contains(u)).copied().collect();
        let ours_map: Vec<String> = ours.iter().map(|u| format!("{name}={u}")).collect();
        if !extra.is_empty() {
            return Err(invalid(format!(
                "--initial-advertise-peer-urls has {} but missing from --initial-cluster={}",
                extra.join(","),
                ours_map.join(",")
            )));
        }
        return Err(invalid(format!(
            "failed to resolve {} to match --initial-cluster={} ({why})",
            ours.join(","),
            ours_map.join(",")
        )));
    }
    let mut all: Vec<&str> = cluster.iter().flat_map(|m| m.peer_urls.iter().map(Url::as_str)).collect();
    all.sort_unstable();
    if all.windows(2).any(|w| w[0] == w[1]) {
        let mut pairs: Vec<String> =
            cluster.iter().flat_map(|m| m.peer_urls.iter().map(move |u| format!("{}={u}", m.name))).collect();
        pairs.sort();
        return Err(invalid(format!("initial cluster {} has duplicate url", pairs.join(","))));
    }
    Ok(())
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

fn quota(bytes: i64, notes: &mut Vec<Note>) -> Option<u64> {
    let quota = match u64::try_from(bytes) {
        Err(_) => {
            notes.push((Level::Warn, "disabled backend quota".into(), vec![("quota-size-bytes", bytes.to_string())]));
            return None;
        }
        Ok(0) => DEFAULT_QUOTA_BACKEND_BYTES,
        Ok(n) => n,
    };
    if quota > MAX_QUOTA_BACKEND_BYTES {
        notes.push((
            Level::Warn,
            "quota exceeds the maximum value".into(),
            vec![
                ("quota-size-bytes", quota.to_string()),
                ("quota-maximum-size-bytes", MAX_QUOTA_BACKEND_BYTES.to_string()),
            ],
        ));
    }
    Some(quota)
}

fn cores(s: &Settings, notes: &mut Vec<Note>) -> Result<usize, ConfigError> {
    let available = affinity_cpus();
    if !s.is_set("cores") {
        return Ok(available.min(CORES_MAX));
    }
    let n = s.uint("cores");
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n == 0 || n > CORES_MAX {
        return Err(invalid(format!("{}: {n} is out of range (1 to {CORES_MAX})", s.label("cores"))));
    }
    if n > available {
        notes.push((
            Level::Warn,
            "more reactors than CPUs available to this process".into(),
            vec![("cores", n.to_string()), ("cpus", available.to_string())],
        ));
    }
    Ok(n)
}

/// The member ID etcd gives a member of the initial cluster: the first 8
/// bytes, big-endian, of SHA-1 over its peer URLs (sorted, concatenated with
/// no separator) followed by the cluster token.
pub fn member_id_for(peer_urls: &[Url], token: &str) -> MemberId {
    let mut urls: Vec<&str> = peer_urls.iter().map(Url::as_str).collect();
    urls.sort_unstable();
    let mut sha = sha1_smol::Sha1::new();
    for u in urls {
        sha.update(u.as_bytes());
    }
    sha.update(token.as_bytes());
    MemberId(first_8_bytes_be(&sha.digest().bytes()))
}

/// The cluster ID etcd derives from its members: the first 8 bytes,
/// big-endian, of SHA-1 over the member IDs, sorted, each as 8 bytes
/// big-endian.
pub fn cluster_id_for(member_ids: &[MemberId]) -> ClusterId {
    let mut ids: Vec<u64> = member_ids.iter().map(|m| m.get()).collect();
    ids.sort_unstable();
    let mut sha = sha1_smol::Sha1::new();
    for id in ids {
        sha.update(&id.to_be_bytes());
    }
    ClusterId(first_8_bytes_be(&sha.digest().bytes()))
}

fn first_8_bytes_be(digest: &[u8; 20]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

impl Config {
    /// This member's ID, as etcd computes it when bootstrapping a new cluster.
    pub fn member_id(&self) -> MemberId {
        match self.initial_cluster.iter().find(|m| m.name == self.name) {
            Some(m) => member_id_for(&m.peer_urls, &self.initial_cluster_token),
            None => member_id_for(&self.initial_advertise_peer_urls, &self.initial_cluster_token),
        }
    }

    /// The ID of every member of the initial cluster, by name.
    pub fn initial_member_ids(&self) -> Vec<(String, MemberId)> {
        self.initial_cluster
            .iter()
            .map(|m| (m.name.clone(), member_id_for(&m.peer_urls, &self.initial_cluster_token)))
            .collect()
    }

    /// The cluster ID etcd computes for the initial cluster.
    pub fn cluster_id(&self) -> ClusterId {
        let ids: Vec<MemberId> = self.initial_member_ids().into_iter().map(|(_, id)| id).collect();
        cluster_id_for(&ids)
    }

    /// Writes [`Config::notices`] to the log. Call right after `log::init`.
    pub fn log_notices(&self) {
        for n in &self.notices {
            let fields: Vec<(&str, &dyn LogValue)> = n.fields.iter().map(|(k, v)| (*k, v as &dyn LogValue)).collect();
            crate::log::emit(n.level, concat!(file!(), ":", line!()), &n.msg, &fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn run_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
        match parse(strings(args), env(vars)) {
            Ok(Parsed::Run(c)) => Ok(c),
            Ok(other) => Err(format!("not a run: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn run(args: &[&str]) -> Result<Config, String> {
        run_env(args, &[])
    }

    fn err(args: &[&str]) -> String {
        run(args).err().unwrap_or_else(|| "accepted".into())
    }

    fn ok(args: &[&str]) -> Config {
        match run(args) {
            Ok(c) => c,
            Err(e) => panic!("{args:?} refused: {e}"),
        }
    }

    fn has_notice(c: &Config, level: Level, msg: &str) -> bool {
        c.notices.iter().any(|n| n.level == level && n.msg == msg)
    }

    fn temp_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("corekv-config-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(name);
        let _ = std::fs::write(&path, text);
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn defaults_are_etcds() {
        let c = ok(&[]);
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert!(has_notice(&c, Level::Warn, "'data-dir' was empty; using default"));
        let texts = |u: &[Url]| url::join(u);
        assert_eq!(texts(&c.listen_client_urls), "http://localhost:2379");
        assert_eq!(texts(&c.advertise_client_urls), "http://localhost:2379");
        assert_eq!(texts(&c.listen_peer_urls), "http://localhost:2380");
        assert_eq!(texts(&c.initial_advertise_peer_urls), "http://localhost:2380");
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.initial_cluster[0].name, "default");
        assert_eq!(texts(&c.initial_cluster[0].peer_urls), "http://localhost:2380");
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.election_timeout, Duration::from_millis(1000));
        assert!(c.initial_election_tick_advance);
        assert_eq!(c.quota_backend_bytes, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.max_concurrent_streams, u32::MAX);
        assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
        assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(7200));
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
        assert_eq!(c.auto_compaction, AutoCompaction::Off);
        assert!(c.strict_reconfig_check);
        assert!(c.pre_vote);
        assert_eq!(c.auth_token, "simple");
        assert_eq!(c.bcrypt_cost, 10);
        assert_eq!(c.auth_token_ttl, Duration::from_secs(300));
        assert_eq!(c.metrics, Metrics::Basic);
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.log_outputs, vec![Output::Stderr]);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
        assert_eq!(c.warning_apply_duration, Duration::from_millis(100));
        assert_eq!(c.warning_unary_request_duration, Duration::from_millis(300));
        assert!(c.cores >= 1);
        assert_eq!(c.cores, affinity_cpus());
        assert!(!c.wal_buffered_io);
        assert_eq!(c.config_file, None);
    }

    #[test]
    fn localhost_binds_ipv4_loopback() {
        let c = ok(&[]);
        let addrs = c.listen_client_urls[0].socket_addrs().ok();
        assert_eq!(addrs, Some(vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2379).into()]));
    }
    use std::net::{Ipv4Addr, SocketAddrV4};

    // Numbers printed by real etcd 3.4.23 (`etcdctl -w json endpoint status`
    // and `member list`) for the same flags.
    #[test]
    fn member_and_cluster_ids_match_real_etcd() {
        let c = ok(&[]);
        assert_eq!(c.member_id(), MemberId(0x8e9e05c52164694d));
        assert_eq!(c.cluster_id(), ClusterId(0xcdf818194e3a8c32));

        let c = ok(&[
            "--name",
            "n1",
            "--listen-client-urls",
            "http://127.0.0.1:32379",
            "--advertise-client-urls",
            "http://127.0.0.1:32379",
            "--listen-peer-urls",
            "http://127.0.0.1:32380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:32380",
            "--initial-cluster-token",
            "tok-42",
        ]);
        assert_eq!(c.member_id(), MemberId(1_214_280_148_412_137_818));
        assert_eq!(c.cluster_id(), ClusterId(12_929_256_600_773_735_912));

        let c = ok(&["--name", "n2", "--initial-advertise-peer-urls", "http://127.0.0.1:32381,http://127.0.0.1:32380"]);
        assert_eq!(url::join(&c.initial_cluster[0].peer_urls), "http://127.0.0.1:32380,http://127.0.0.1:32381");
        assert_eq!(c.member_id(), MemberId(4_429_278_160_370_103_449));
        assert_eq!(c.cluster_id(), ClusterId(12_804_787_774_562_637_605));

        // A three-member cluster (Raft is not built yet, so via the free
        // functions): a, b, c on 127.0.0.1:42380/42382/42384, token "tri".
        let id = |port: u16| {
            let u = Url::parse(&format!("http://127.0.0.1:{port}")).ok();
            member_id_for(&u.into_iter().collect::<Vec<_>>(), "tri")
        };
        let (a, b, c) = (id(42380), id(42382), id(42384));
        assert_eq!(a, MemberId(3_701_659_083_306_986_885));
        assert_eq!(b, MemberId(3_663_975_482_781_468_500));
        assert_eq!(c, MemberId(4_964_857_786_920_376_977));
        assert_eq!(cluster_id_for(&[c, a, b]), ClusterId(6_652_001_527_506_682_257));
    }

    #[test]
    fn flag_forms_all_work() {
        for args in [
            &["--name", "x", "--snapshot-count", "7"][..],
            &["--name=x", "--snapshot-count=7"],
            &["-name", "x", "-snapshot-count", "7"],
            &["-name=x", "-snapshot-count=7"],
        ] {
            let c = ok(args);
            assert_eq!((c.name.as_str(), c.snapshot_count), ("x", 7), "{args:?}");
        }
        assert!(ok(&["--wal-buffered-io"]).wal_buffered_io);
        assert!(ok(&["-wal-buffered-io=true"]).wal_buffered_io);
        assert!(!ok(&["--wal-buffered-io=false"]).wal_buffered_io);
        assert!(!ok(&["--strict-reconfig-check=false"]).strict_reconfig_check);
        assert_eq!(ok(&["--cores", "3"]).cores, 3);
        assert_eq!(
            ok(&["--heartbeat-interval=50", "--election-timeout=250"]).heartbeat_interval,
            Duration::from_millis(50)
        );
        assert_eq!(ok(&["--log-level", "debug"]).log_level, Level::Debug);
        assert_eq!(
            ok(&["--log-outputs", "stdout,/tmp/x.log,stdout"]).log_outputs,
            vec![Output::Stdout, Output::File(PathBuf::from("/tmp/x.log"))]
        );
        assert_eq!(ok(&["--quota-backend-bytes", "-1"]).quota_backend_bytes, None);
        assert_eq!(ok(&["--metrics", "extensive"]).metrics, Metrics::Extensive);
        assert_eq!(
            ok(&["--experimental-watch-progress-notify-interval", "30s"]).watch_progress_notify_interval,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn unknown_flags_and_arguments_are_refused_like_go() {
        assert_eq!(err(&["--bogus"]), "flag provided but not defined: -bogus");
        assert_eq!(err(&["-x"]), "flag provided but not defined: -x");
        assert_eq!(err(&["serve"]), "'serve' is not a valid flag");
        assert_eq!(err(&["--version", "--bogus"]), "flag provided but not defined: -bogus");
    }

    #[test]
    fn help_and_version() {
        match parse(strings(&["--help"]), env(&[])) {
            Ok(Parsed::Help(text)) => {
                assert!(text.contains("  --name 'default'\n"));
                assert!(text.contains("  --data-dir '${name}.etcd'\n"));
                assert!(text.contains("  --cores '"));
                assert!(text.contains(
                    "--cert-file ''\n    Client TLS certificate file. [corekv: client TLS is not supported yet]"
                ));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(strings(&["-h"]), env(&[])), Ok(Parsed::Help(_))));
        assert!(matches!(parse(strings(&["--version"]), env(&[])), Ok(Parsed::Version)));
        assert!(matches!(parse(strings(&["--version=false"]), env(&[])), Ok(Parsed::Run(_))));
    }

    #[test]
    fn environment_sets_what_the_command_line_does_not() {
        let c = run_env(
            &["--snapshot-count", "5"],
            &[
                ("ETCD_NAME", "envname"),
                ("ETCD_DATA_DIR", "/var/lib/x"),
                ("ETCD_ENABLE_V2", ""),
                ("ETCD_WAL_BUFFERED_IO", "true"),
                ("PATH", "/bin"),
            ],
        );
        let Ok(c) = c else { panic!("{c:?}") };
        assert_eq!(c.name, "envname");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(c.snapshot_count, 5);
        assert!(c.wal_buffered_io);
        assert_eq!(c.initial_cluster[0].name, "envname");
        let used: Vec<&Notice> =
            c.notices.iter().filter(|n| n.msg == "recognized and used environment variable").collect();
        assert_eq!(used.len(), 3);
        assert!(used[0].fields.contains(&("variable-name", "ETCD_NAME".to_string())));
        // An empty value is not used, and etcd then calls it unrecognized.
        assert!(c.notices.iter().any(|n| n.msg == "unrecognized environment variable"
            && n.fields.contains(&("environment-variable", "ETCD_ENABLE_V2=".to_string()))));
    }

    #[test]
    fn environment_errors_and_warnings_follow_etcd() {
        let e = |args: &[&str], vars: &[(&str, &str)]| run_env(args, vars).err().unwrap_or_default();
        assert_eq!(
            e(&["--name", "bar"], &[("ETCD_NAME", "foo")]),
            "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding \
             command-line flag (either unset environment variable or disable flag)"
        );
        assert_eq!(
            e(&[], &[("ETCD_SNAPSHOT_COUNT", "abc")]),
            "invalid value \"abc\" for ETCD_SNAPSHOT_COUNT: parse error"
        );
        assert_eq!(e(&[], &[("ETCD_ENABLE_V2", "yes")]), "invalid value \"yes\" for ETCD_ENABLE_V2: parse error");
        assert_eq!(
            e(&[], &[("ETCD_CERT_FILE", "/c.pem")]),
            "--cert-file (from ETCD_CERT_FILE): client TLS is not supported yet"
        );
        let Ok(c) = run_env(&[], &[("ETCD_BOGUS", "1"), ("ETCD_VERSION", "1")]) else {
            panic!("refused");
        };
        assert!(has_notice(&c, Level::Warn, "unrecognized environment variable"));
        assert!(has_notice(&c, Level::Warn, "cannot set special environment variable"));
    }

    #[test]
    fn a_config_file_replaces_flags_and_environment() {
        let path = temp_file(
            "etcd.yml",
            "name: cfgname\ndata-dir: /var/tmp/cfg\nbogus-key: 5\n\
             listen-client-urls: http://127.0.0.1:22379\n\
             listen-peer-urls: http://127.0.0.1:22380\n\
             initial-advertise-peer-urls: http://127.0.0.1:22380\n\
             log-outputs: [stdout]\nlog-level: debug\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n\
             auto-compaction-mode: periodic\nauto-compaction-retention: \"0\"\n\
             cores: 2\nwal-buffered-io: true\n",
        );
        let args = ["--config-file", path.as_str(), "--name", "flagname"];
        let Ok(c) = run_env(&args, &[("ETCD_NAME", "envname")]) else {
            panic!("{:?}", run_env(&args, &[("ETCD_NAME", "envname")]).err());
        };
        assert_eq!(c.name, "cfgname");
        assert_eq!(c.data_dir, PathBuf::from("/var/tmp/cfg"));
        assert_eq!(c.initial_cluster[0].name, "cfgname");
        assert_eq!(url::join(&c.initial_cluster[0].peer_urls), "http://127.0.0.1:22380");
        // Unlike flags, a file that sets listen-client-urls keeps the default
        // advertise-client-urls (etcd does the same).
        assert_eq!(url::join(&c.advertise_client_urls), "http://localhost:2379");
        assert_eq!(c.log_outputs, vec![Output::Stdout]);
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!((c.cores, c.wal_buffered_io), (2, true));
        assert_eq!(c.config_file, Some(PathBuf::from(&path)));
        assert!(c.notices.iter().any(|n| n.msg.starts_with("loaded server configuration, other configuration")
            && n.fields == vec![("path", path.clone())]));
        assert!(c.notices.iter().any(|n| n.msg == "ignoring command-line flags because a configuration file is given"
            && n.fields == vec![("flags", "name".to_string())]));
        assert!(has_notice(&c, Level::Warn, "ignoring environment variables because a configuration file is given"));
        assert!(has_notice(&c, Level::Warn, "ignoring unrecognized key in configuration file"));
        // ETCD_CONFIG_FILE works too, and a conflicting flag is then no error.
        let c = run_env(&["--name", "x"], &[("ETCD_CONFIG_FILE", path.as_str()), ("ETCD_NAME", "y")]);
        assert_eq!(c.map(|c| c.name), Ok("cfgname".to_string()));
    }

    #[test]
    fn config_file_errors_name_the_file_and_line() {
        let missing = "/nonexistent/corekv.yml";
        assert!(err(&["--config-file", missing]).starts_with("--config-file: cannot read /nonexistent/corekv.yml: "));
        let path = temp_file("bad.yml", "name: a\nsnapshot-count: abc\n");
        assert_eq!(
            err(&["--config-file", &path]),
            format!("{path}:2: snapshot-count: invalid value \"abc\": parse error")
        );
        let path = temp_file("tls.yml", "name: a\npeer-transport-security:\n  crl-file: /p.pem\n");
        assert_eq!(
            err(&["--config-file", &path]),
            format!(
                "--peer-crl-file (peer-transport-security.crl-file at {path}:3): this peer TLS setting is not supported yet"
            )
        );
        let path = temp_file("hb.yml", "heartbeat-interval: 300\n");
        assert_eq!(
            err(&["--config-file", &path]),
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
        );
    }

    #[test]
    fn every_unsupported_setting_is_refused_with_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["--cert-file", "c.pem"], "--cert-file: client TLS is not supported yet"),
            (&["--key-file", "k.pem"], "--key-file: client TLS is not supported yet"),
            (&["--client-cert-file", "c"], "--client-cert-file: client TLS is not supported yet"),
            (&["--client-key-file", "k"], "--client-key-file: client TLS is not supported yet"),
            (&["--trusted-ca-file", "ca"], "--trusted-ca-file: client TLS is not supported yet"),
            (&["--client-crl-file", "crl"], "--client-crl-file: client TLS is not supported yet"),
            (
                &["--client-cert-allowed-hostname", "h"],
                "--client-cert-allowed-hostname: client TLS is not supported yet",
            ),
            (&["--client-cert-auth"], "--client-cert-auth: client certificate authentication is not supported yet"),
            (&["--auto-tls"], "--auto-tls: client TLS is not supported yet"),
            (
                &["--listen-client-urls", "https://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379"],
                "--listen-client-urls: https:// URLs need client TLS, which is not supported yet",
            ),
            (
                &["--advertise-client-urls", "https://127.0.0.1:2379"],
                "--advertise-client-urls: https:// URLs need client TLS, which is not supported yet",
            ),
            (&["--peer-client-cert-file", "c"], "--peer-client-cert-file: this peer TLS setting is not supported yet"),
            (&["--peer-client-key-file", "k"], "--peer-client-key-file: this peer TLS setting is not supported yet"),
            (&["--peer-crl-file", "crl"], "--peer-crl-file: this peer TLS setting is not supported yet"),
            (&["--peer-cert-allowed-cn", "cn"], "--peer-cert-allowed-cn: this peer TLS setting is not supported yet"),
            (
                &["--peer-cert-allowed-hostname", "h"],
                "--peer-cert-allowed-hostname: this peer TLS setting is not supported yet",
            ),
            (
                &["--experimental-peer-skip-client-san-verification"],
                "--experimental-peer-skip-client-san-verification: this peer TLS setting is not supported yet",
            ),
            (
                &["--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
                "--cipher-suites: TLS is not supported yet",
            ),
            (&["--tls-min-version", "TLS1.3"], "--tls-min-version: TLS is not supported yet"),
            (&["--tls-max-version", "TLS1.3"], "--tls-max-version: TLS is not supported yet"),
            (&["--self-signed-cert-validity", "2"], "--self-signed-cert-validity: TLS is not supported yet"),
            (
                &["--listen-client-urls", "unix://sock:0", "--advertise-client-urls", "http://127.0.0.1:2379"],
                "--listen-client-urls: unix socket URLs are not supported yet",
            ),
            (
                &["--advertise-client-urls", "unix://sock:0"],
                "--advertise-client-urls: unix socket URLs are not supported yet",
            ),
            (&["--listen-peer-urls", "unix://sock:0"], "--listen-peer-urls: unix socket URLs are not supported yet"),
            (
                &["--initial-advertise-peer-urls", "unixs://sock:0"],
                "--initial-advertise-peer-urls: unix socket URLs are not supported yet",
            ),
            (
                &["--listen-client-http-urls", "http://127.0.0.1:2381"],
                "--listen-client-http-urls: a separate HTTP client listener is not supported yet",
            ),
            (
                &["--listen-metrics-urls", "http://127.0.0.1:2381"],
                "--listen-metrics-urls: a separate metrics listener is not supported yet",
            ),
            (&["--cors", "http://a.example"], "--cors: CORS restrictions are not supported yet"),
            (&["--host-whitelist", "a.example"], "--host-whitelist: Host header restrictions are not supported yet"),
            (&["--discovery", "https://discovery.etcd.io/x"], "--discovery: discovery is not supported yet"),
            (&["--discovery-proxy", "http://p:1"], "--discovery-proxy: discovery is not supported yet"),
            (&["--discovery-srv", "example.com"], "--discovery-srv: discovery is not supported yet"),
            (&["--discovery-srv-name", "x"], "--discovery-srv-name: discovery is not supported yet"),
            (&["--force-new-cluster"], "--force-new-cluster: forcing a new cluster is not supported yet"),
            (&["--wal-dir", "/wal"], "--wal-dir: a dedicated WAL directory is not supported yet"),
            (&["--unsafe-no-fsync"], "--unsafe-no-fsync: running without fsync is not supported"),
            (&["--enable-v2"], "--enable-v2: the etcd v2 API is not supported"),
            (&["--experimental-enable-v2v3", "/v2"], "--experimental-enable-v2v3: the etcd v2 API is not supported"),
            (&["--proxy", "on"], "--proxy: the v2 proxy is not supported"),
            (
                &["--auto-compaction-retention", "1"],
                "--auto-compaction-retention: automatic compaction is not supported yet",
            ),
            (
                &["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000"],
                "--auto-compaction-retention: automatic compaction is not supported yet",
            ),
            (
                &["--auto-compaction-retention", "30m"],
                "--auto-compaction-retention: automatic compaction is not supported yet",
            ),
            (
                &["--experimental-initial-corrupt-check"],
                "--experimental-initial-corrupt-check: corruption checks are not supported yet",
            ),
            (
                &["--experimental-corrupt-check-time", "5m"],
                "--experimental-corrupt-check-time: corruption checks are not supported yet",
            ),
            (
                &["--experimental-compact-hash-check-enabled"],
                "--experimental-compact-hash-check-enabled: corruption checks are not supported yet",
            ),
            (
                &["--experimental-enable-lease-checkpoint"],
                "--experimental-enable-lease-checkpoint: lease checkpoints are not supported yet",
            ),
            (
                &["--experimental-enable-lease-checkpoint-persist"],
                "--experimental-enable-lease-checkpoint-persist: lease checkpoints are not supported yet",
            ),
            (&["--experimental-memory-mlock"], "--experimental-memory-mlock: locking memory is not supported yet"),
            (
                &["--experimental-enable-distributed-tracing"],
                "--experimental-enable-distributed-tracing: distributed tracing is not supported yet",
            ),
            (&["--enable-pprof"], "--enable-pprof: pprof profiling is a Go runtime feature; corekv has no equivalent"),
            (
                &["--auth-token", "jwt,pub-key=a.pub,priv-key=a.key,sign-method=RS256"],
                "--auth-token: only --auth-token=simple is supported yet",
            ),
            (&["--enable-log-rotation"], "--enable-log-rotation: log rotation is not supported yet"),
            (
                &["--log-outputs", "systemd/journal"],
                "--log-outputs: logging to the systemd journal is not supported yet",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(err(args), *want, "{args:?}");
        }
        for gap in unsupported::UNSUPPORTED {
            let line = format!("--{}: {}", gap.flag, gap.why);
            assert!(cases.iter().any(|(_, want)| *want == line), "no case for {line}");
        }
    }

    #[test]
    fn settings_without_effect_are_accepted_with_a_warning() {
        let c = ok(&["--max-wals", "10", "--backend-batch-limit", "5", "--enable-grpc-gateway"]);
        let warned: Vec<&str> = c
            .notices
            .iter()
            .filter(|n| n.msg == "ignoring a setting that has no effect in corekv")
            .filter_map(|n| n.fields.first().map(|(_, v)| v.as_str()))
            .collect();
        assert_eq!(warned, ["--max-wals", "--backend-batch-limit", "--enable-grpc-gateway"]);
        // At their defaults, tuning flags pass quietly.
        let c = ok(&["--max-wals", "5", "--enable-v2=false", "--cors", "*", "--proxy", "off"]);
        assert!(!c.notices.iter().any(|n| n.msg.starts_with("ignoring")));
    }

    #[test]
    fn initial_cluster_follows_the_name_as_etcd_does() {
        let c = ok(&["--name", "foo", "--initial-advertise-peer-urls", "http://127.0.0.1:12380"]);
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.initial_cluster[0].name, "foo");
        assert_eq!(url::join(&c.initial_cluster[0].peer_urls), "http://127.0.0.1:12380");
        assert_eq!(c.data_dir, PathBuf::from("foo.etcd"));
        // With the default name the default initial cluster stays, so changed
        // peer URLs no longer match it: etcd refuses this too.
        assert_eq!(
            err(&["--initial-advertise-peer-urls", "http://127.0.0.1:12380"]),
            "--initial-cluster has default=http://localhost:2380 but missing from \
             --initial-advertise-peer-urls=http://127.0.0.1:12380 \
             (resolved urls: \"http://127.0.0.1:12380\" != \"http://localhost:2380\")"
        );
    }

    #[test]
    fn initial_cluster_consistency_uses_etcds_messages() {
        let peer = ["--name", "foo", "--initial-advertise-peer-urls", "http://127.0.0.1:12380"];
        let with = |cluster: &str| {
            let mut a = peer.to_vec();
            a.extend(["--initial-cluster", cluster]);
            err(&a)
        };
        assert_eq!(
            with("bar=http://127.0.0.1:12380"),
            "couldn't find local name \"foo\" in the initial cluster configuration"
        );
        assert_eq!(with(""), "couldn't find local name \"foo\" in the initial cluster configuration");
        assert_eq!(
            with("foo=http://127.0.0.1:12380,foo=http://127.0.0.1:12381"),
            "--initial-cluster has foo=http://127.0.0.1:12381 but missing from \
             --initial-advertise-peer-urls=http://127.0.0.1:12380 \
             (len([\"http://127.0.0.1:12380\"]) != len([\"http://127.0.0.1:12380\" \"http://127.0.0.1:12381\"]))"
        );
        // Real etcd 3.4.23 prints exactly this for a URL listed twice.
        assert_eq!(
            with("foo=http://127.0.0.1:12380,foo=http://127.0.0.1:12380"),
            "failed to resolve http://127.0.0.1:12380 to match \
             --initial-cluster=foo=http://127.0.0.1:12380 \
             (len([\"http://127.0.0.1:12380\"]) != len([\"http://127.0.0.1:12380\" \"http://127.0.0.1:12380\"]))"
        );
        assert_eq!(with("foo"), "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: ");
        assert_eq!(
            err(&[
                "--name",
                "foo",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:12380,http://127.0.0.1:12381",
                "--initial-cluster",
                "foo=http://127.0.0.1:12380"
            ]),
            "--initial-advertise-peer-urls has http://127.0.0.1:12381 but missing from \
             --initial-cluster=foo=http://127.0.0.1:12380,foo=http://127.0.0.1:12381"
        );
        assert_eq!(
            err(&[
                "--name",
                "foo",
                "--initial-advertise-peer-urls",
                "http://localhost:12380",
                "--initial-cluster",
                "foo=http://127.0.0.1:12380"
            ]),
            "--initial-cluster has foo=http://127.0.0.1:12380 but missing from \
             --initial-advertise-peer-urls=http://localhost:12380 \
             (resolved urls: \"http://localhost:12380\" != \"http://127.0.0.1:12380\")"
        );
        assert!(run(&[
            "--name",
            "foo",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:12380",
            "--initial-cluster",
            "foo=http://127.0.0.1:12380"
        ])
        .is_ok());
    }

    #[test]
    fn peer_tls_settings_come_as_complete_sets() {
        assert_eq!(err(&["--peer-cert-file", "c.pem"]), "--peer-cert-file and --peer-key-file must be given together");
        assert_eq!(
            err(&["--peer-cert-file", "c.pem", "--peer-key-file", "k.pem", "--peer-client-cert-auth"]),
            "--peer-client-cert-auth needs --peer-cert-file, --peer-key-file and --peer-trusted-ca-file"
        );
        assert_eq!(
            err(&["--peer-trusted-ca-file", "ca.pem"]),
            "--peer-trusted-ca-file needs --peer-cert-file and --peer-key-file"
        );
        let c = ok(&["--peer-cert-file", "c.pem", "--peer-key-file", "k.pem", "--peer-trusted-ca-file", "ca.pem"]);
        assert_eq!(c.peer_cert, Some((PathBuf::from("c.pem"), PathBuf::from("k.pem"))));
        assert_eq!(c.peer_trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(!c.peer_client_cert_auth && !c.peer_auto_tls);
        assert!(ok(&["--peer-auto-tls"]).peer_auto_tls);
    }

    #[test]
    fn validation_uses_etcds_messages() {
        assert_eq!(
            err(&["--heartbeat-interval", "300"]),
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
        );
        assert_eq!(
            err(&["--election-timeout", "60000"]),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
        assert_eq!(err(&["--heartbeat-interval", "0"]), "--heartbeat-interval must be >0 (set to 0ms)");
        assert_eq!(
            err(&["--listen-client-urls", "http://127.0.0.1:12379"]),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
        assert_eq!(
            run_env(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:12379")]).err().as_deref(),
            Some("--advertise-client-urls is required when --listen-client-urls is set explicitly")
        );
        assert_eq!(
            err(&[
                "--listen-client-urls",
                "http://example.com:12379",
                "--advertise-client-urls",
                "http://127.0.0.1:12379"
            ]),
            "expected IP in URL for binding (http://example.com:12379)"
        );
        assert_eq!(
            err(&["--advertise-client-urls", "http://:12379"]),
            "--advertise-client-urls \"http://:12379\" must be \"host:port\" (unexpected empty host (http://:12379))"
        );
        assert_eq!(err(&["--logger", "foo"]), "unknown logger option \"foo\"");
        assert_eq!(err(&["--logger", "capnslog"]), "--logger=capnslog is removed in v3.5");
        assert_eq!(
            err(&["--log-level", "verbose"]),
            "--log-level: unknown level \"verbose\" (want debug, info, warn, error, panic or fatal)"
        );
        assert_eq!(err(&["--auto-compaction-mode", "foo"]), "unknown auto-compaction-mode \"foo\"");
        assert_eq!(
            err(&["--auto-compaction-retention", "abc"]),
            "error parsing CompactionRetention: time: invalid duration \"abc\""
        );
        assert_eq!(err(&["--cores", "0"]), "--cores: 0 is out of range (1 to 1024)");
        assert_eq!(err(&["--cores", "5000"]), "--cores: 5000 is out of range (1 to 1024)");
        let c = ok(&["--bcrypt-cost", "3", "--quota-backend-bytes", "10000000000"]);
        assert_eq!(c.bcrypt_cost, 10);
        assert!(has_notice(&c, Level::Warn, "use default bcrypt cost instead of the invalid given cost"));
        assert!(has_notice(&c, Level::Warn, "quota exceeds the maximum value"));
        assert!(run(&["--listen-client-urls", "http://[::1]:12379", "--advertise-client-urls", "http://[::1]:12379"])
            .is_ok());
        assert!(run(&[
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://10.1.2.3:2379"
        ])
        .is_ok());
    }
}
