//! What corekv does not do (yet), as two tables.
//!
//! [`UNSUPPORTED`]: settings whose feature corekv lacks. Asking for one is
//! refused with one line naming the setting and the missing feature, never
//! silently ignored. When a feature lands, delete its rows.
//!
//! [`NO_EFFECT`]: etcd settings that tune machinery corekv does not have
//! (bbolt, rafthttp, etcd's WAL file retention). They are accepted, and a
//! warning is logged when one is set away from its default.
//!
//! A setting at its default value never matches a row.

use super::flags::{Note, Settings, Value};
use super::parse_retention;
use crate::log::Level;

/// One row: a flag, why it cannot be honoured, and when the row applies.
pub(super) struct Gap {
    /// The flag (the same row covers its `ETCD_*` variable and file key).
    pub flag: &'static str,
    /// The missing feature, for the error or warning line.
    pub why: &'static str,
    /// Whether the current value asks for the missing feature.
    pub applies: fn(&Settings, &str) -> bool,
}

const fn row(flag: &'static str, applies: fn(&Settings, &str) -> bool, why: &'static str) -> Gap {
    Gap { flag, why, applies }
}

const CLIENT_TLS: &str = "client TLS is not supported yet";
const CLIENT_HTTPS: &str = "https:// URLs need client TLS, which is not supported yet";
const PEER_TLS: &str = "this peer TLS setting is not supported yet";
const TLS: &str = "TLS is not supported yet";
const UNIX: &str = "unix socket URLs are not supported yet";
const DISCOVERY: &str = "discovery is not supported yet";
const V2: &str = "the etcd v2 API is not supported";
const CORRUPT: &str = "corruption checks are not supported yet";
const LEASE_CHECKPOINT: &str = "lease checkpoints are not supported yet";

/// Settings corekv refuses. Delete a row when its feature lands.
#[rustfmt::skip]
pub(super) const UNSUPPORTED: &[Gap] = &[
    row("cert-file", non_empty, CLIENT_TLS),
    row("key-file", non_empty, CLIENT_TLS),
    row("client-cert-file", non_empty, CLIENT_TLS),
    row("client-key-file", non_empty, CLIENT_TLS),
    row("trusted-ca-file", non_empty, CLIENT_TLS),
    row("client-crl-file", non_empty, CLIENT_TLS),
    row("client-cert-allowed-hostname", non_empty, CLIENT_TLS),
    row("client-cert-auth", is_true, "client certificate authentication is not supported yet"),
    row("auto-tls", is_true, CLIENT_TLS),
    row("listen-client-urls", has_https, CLIENT_HTTPS),
    row("advertise-client-urls", has_https, CLIENT_HTTPS),
    row("peer-client-cert-file", non_empty, PEER_TLS),
    row("peer-client-key-file", non_empty, PEER_TLS),
    row("peer-crl-file", non_empty, PEER_TLS),
    row("peer-cert-allowed-cn", non_empty, PEER_TLS),
    row("peer-cert-allowed-hostname", non_empty, PEER_TLS),
    row("experimental-peer-skip-client-san-verification", is_true, PEER_TLS),
    row("cipher-suites", non_empty, TLS),
    row("tls-min-version", not_default, TLS),
    row("tls-max-version", not_default, TLS),
    row("self-signed-cert-validity", not_default, TLS),
    row("listen-client-urls", has_unix, UNIX),
    row("advertise-client-urls", has_unix, UNIX),
    row("listen-peer-urls", has_unix, UNIX),
    row("initial-advertise-peer-urls", has_unix, UNIX),
    row("listen-client-http-urls", non_empty, "a separate HTTP client listener is not supported yet"),
    row("listen-metrics-urls", non_empty, "a separate metrics listener is not supported yet"),
    row("cors", restricts, "CORS restrictions are not supported yet"),
    row("host-whitelist", restricts, "Host header restrictions are not supported yet"),
    row("discovery", non_empty, DISCOVERY),
    row("discovery-proxy", non_empty, DISCOVERY),
    row("discovery-srv", non_empty, DISCOVERY),
    row("discovery-srv-name", non_empty, DISCOVERY),
    row("force-new-cluster", is_true, "forcing a new cluster is not supported yet"),
    row("wal-dir", non_empty, "a dedicated WAL directory is not supported yet"),
    row("unsafe-no-fsync", is_true, "running without fsync is not supported"),
    row("enable-v2", is_true, V2),
    row("experimental-enable-v2v3", non_empty, V2),
    row("proxy", not_default, "the v2 proxy is not supported"),
    row("auto-compaction-retention", retention_set, "automatic compaction is not supported yet"),
    row("experimental-initial-corrupt-check", is_true, CORRUPT),
    row("experimental-corrupt-check-time", not_default, CORRUPT),
    row("experimental-compact-hash-check-enabled", is_true, CORRUPT),
    row("experimental-enable-lease-checkpoint", is_true, LEASE_CHECKPOINT),
    row("experimental-enable-lease-checkpoint-persist", is_true, LEASE_CHECKPOINT),
    row("experimental-memory-mlock", is_true, "locking memory is not supported yet"),
    row("experimental-enable-distributed-tracing", is_true, "distributed tracing is not supported yet"),
    row("enable-pprof", is_true, "pprof profiling is a Go runtime feature; corekv has no equivalent"),
    row("auth-token", not_default, "only --auth-token=simple is supported yet"),
    row("enable-log-rotation", is_true, "log rotation is not supported yet"),
    row("log-outputs", to_journal, "logging to the systemd journal is not supported yet"),
];

const NO_BBOLT: &str = "has no effect: corekv's store is not bbolt";
const NO_ETCD_FILES: &str = "has no effect: corekv's WAL and checkpoints are not etcd's files";

/// Settings corekv accepts and ignores, with a warning when they are set
/// away from their default.
#[rustfmt::skip]
pub(super) const NO_EFFECT: &[Gap] = &[
    row("max-snapshots", not_default, NO_ETCD_FILES),
    row("max-wals", not_default, NO_ETCD_FILES),
    row("backend-bbolt-freelist-type", not_default, NO_BBOLT),
    row("backend-batch-interval", not_default, NO_BBOLT),
    row("backend-batch-limit", not_default, NO_BBOLT),
    row("experimental-txn-mode-write-with-shared-buffer", not_default, NO_BBOLT),
    row("experimental-bootstrap-defrag-threshold-megabytes", not_default, "has no effect: corekv defragments online"),
    row("experimental-stop-grpc-service-on-defrag", is_true, "has no effect: corekv defragments online"),
    row("experimental-compaction-batch-limit", not_default, "has no effect: corekv compacts incrementally in the background"),
    row("experimental-compaction-sleep-interval", not_default, "has no effect: corekv compacts incrementally in the background"),
    row("experimental-downgrade-check-time", not_default, "has no effect: corekv has no downgrade process"),
    row("raft-read-timeout", not_default, "has no effect: corekv peers talk QUIC, not rafthttp"),
    row("raft-write-timeout", not_default, "has no effect: corekv peers talk QUIC, not rafthttp"),
    row("socket-reuse-port", is_true, "has no effect: corekv always sets SO_REUSEPORT (one listener per core)"),
    row("socket-reuse-address", is_true, "has no effect: corekv decides SO_REUSEADDR itself"),
    row("enable-grpc-gateway", set_true, "has no effect: corekv serves no JSON gRPC gateway"),
    row("v2-deprecation", not_default, "has no effect: corekv has no v2 store"),
];

fn non_empty(s: &Settings, flag: &str) -> bool {
    match s.value(flag) {
        Some(Value::Str(v)) => !v.is_empty(),
        Some(Value::List(v)) => !v.is_empty(),
        Some(Value::Urls(v)) => !v.is_empty(),
        _ => false,
    }
}

fn is_true(s: &Settings, flag: &str) -> bool {
    s.bool(flag)
}

fn set_true(s: &Settings, flag: &str) -> bool {
    s.is_set(flag) && s.bool(flag)
}

fn not_default(s: &Settings, flag: &str) -> bool {
    s.differs_from_default(flag)
}

fn has_https(s: &Settings, flag: &str) -> bool {
    s.urls(flag).iter().any(|u| u.is_tls() && !u.is_unix())
}

fn has_unix(s: &Settings, flag: &str) -> bool {
    s.urls(flag).iter().any(|u| u.is_unix())
}

fn restricts(s: &Settings, flag: &str) -> bool {
    s.list(flag).iter().any(|v| v != "*")
}

fn to_journal(s: &Settings, flag: &str) -> bool {
    s.list(flag).iter().any(|v| v == "systemd/journal")
}

fn retention_set(s: &Settings, flag: &str) -> bool {
    parse_retention(s.str("auto-compaction-mode"), s.str(flag)).is_ok_and(|r| !r.is_off())
}

/// The first refusal that applies, as `--flag: why`.
pub(super) fn first_refusal(s: &Settings) -> Option<String> {
    UNSUPPORTED.iter().find(|gap| (gap.applies)(s, gap.flag)).map(|gap| format!("{}: {}", s.label(gap.flag), gap.why))
}

/// A warning for every ignored setting that is set away from its default.
pub(super) fn no_effect_notes(s: &Settings, notes: &mut Vec<Note>) {
    for gap in NO_EFFECT.iter().filter(|gap| (gap.applies)(s, gap.flag)) {
        notes.push((
            Level::Warn,
            "ignoring a setting that has no effect in corekv".into(),
            vec![("setting", s.label(gap.flag)), ("reason", gap.why.into())],
        ));
    }
}

/// The note `--help` shows next to a flag that a table mentions.
pub(super) fn help_mark(flag: &str) -> Option<&'static str> {
    UNSUPPORTED.iter().chain(NO_EFFECT).find(|gap| gap.flag == flag).map(|gap| gap.why)
}

#[cfg(test)]
mod tests {
    use super::super::flags::{self, Origin};
    use super::*;

    #[test]
    fn every_row_names_a_known_flag_and_defaults_match_no_row() {
        let Ok(defaults) = Settings::defaults() else {
            panic!("defaults do not parse");
        };
        for gap in UNSUPPORTED.iter().chain(NO_EFFECT) {
            assert!(flags::lookup(gap.flag).is_some(), "--{}", gap.flag);
            assert!(!(gap.applies)(&defaults, gap.flag), "--{} at default", gap.flag);
        }
        assert_eq!(first_refusal(&defaults), None);
    }

    #[test]
    fn explicit_defaults_are_accepted() {
        let Ok(mut s) = Settings::defaults() else {
            panic!("defaults do not parse");
        };
        for (flag, raw) in [
            ("enable-v2", "false"),
            ("cors", "*"),
            ("auth-token", "simple"),
            ("initial-cluster-state", "new"),
            ("auto-compaction-retention", "0s"),
            ("tls-min-version", "TLS1.2"),
            ("max-wals", "5"),
        ] {
            assert!(s.set(flag, raw, Origin::Flag).is_ok());
        }
        assert_eq!(first_refusal(&s), None);
        let mut notes = Vec::new();
        no_effect_notes(&s, &mut notes);
        assert!(notes.is_empty());
    }
}
