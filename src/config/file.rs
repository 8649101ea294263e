//! etcd's YAML configuration file: which key sets which setting.
//!
//! Owns the mapping from etcd's file keys (`name`, `data-dir`,
//! `client-transport-security: {cert-file, ...}`, `socket-options`, ...) to
//! flags, and the conversion of YAML values to each flag's kind. A key etcd
//! would silently ignore is warned about here, with its line. Reading the file
//! and precedence are the parent module's job.

use super::flags::{self, Kind, Note, Origin, Settings, Value};
use super::yaml::{self, Entry, Node};
use super::ConfigError;
use crate::log::Level;

/// `client-transport-security` keys and the flags they set.
const CLIENT_SECURITY: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-file", "client-cert-file"),
    ("client-key-file", "client-key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
    ("crl-file", "client-crl-file"),
    ("allowed-hostname", "client-cert-allowed-hostname"),
];

/// `peer-transport-security` keys and the flags they set.
const PEER_SECURITY: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-file", "peer-client-cert-file"),
    ("client-key-file", "peer-client-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
    ("crl-file", "peer-crl-file"),
    ("allowed-cn", "peer-cert-allowed-cn"),
    ("allowed-hostname", "peer-cert-allowed-hostname"),
    ("skip-client-san-verification", "experimental-peer-skip-client-san-verification"),
];

/// `socket-options` keys and the flags they set.
const SOCKET_OPTIONS: &[(&str, &str)] =
    &[("reuse-port", "socket-reuse-port"), ("reuse-address", "socket-reuse-address")];

/// Top-level keys that are flags but mean nothing inside a file.
const NOT_FILE_KEYS: &[&str] = &["config-file", "version"];

/// Applies the file's settings on top of `settings` (normally the defaults).
pub(super) fn apply(settings: &mut Settings, path: &str, text: &str, notes: &mut Vec<Note>) -> Result<(), ConfigError> {
    let entries =
        yaml::parse(text).map_err(|e| ConfigError::File { path: path.to_string(), line: e.line, msg: e.msg })?;
    for entry in &entries {
        let nested = match entry.key.as_str() {
            "client-transport-security" => Some(CLIENT_SECURITY),
            "peer-transport-security" => Some(PEER_SECURITY),
            "socket-options" => Some(SOCKET_OPTIONS),
            _ => None,
        };
        if let Some(table) = nested {
            apply_nested(settings, path, entry, table, notes)?;
        } else if flags::lookup(&entry.key).is_some() && !NOT_FILE_KEYS.contains(&entry.key.as_str()) {
            apply_one(settings, path, &entry.key, &entry.key, entry)?;
        } else {
            unrecognized(notes, path, &entry.key, entry.line);
        }
    }
    Ok(())
}

fn apply_nested(
    settings: &mut Settings,
    path: &str,
    entry: &Entry,
    table: &[(&str, &str)],
    notes: &mut Vec<Note>,
) -> Result<(), ConfigError> {
    let inner = match &entry.value {
        Node::Null => return Ok(()),
        Node::Map(inner) => inner,
        _ => {
            return Err(ConfigError::File {
                path: path.to_string(),
                line: entry.line,
                msg: format!("{}: expected a mapping of keys to values", entry.key),
            })
        }
    };
    for sub in inner {
        let full_key = format!("{}.{}", entry.key, sub.key);
        match table.iter().find(|(k, _)| *k == sub.key) {
            Some((_, flag)) => apply_one(settings, path, flag, &full_key, sub)?,
            None => unrecognized(notes, path, &full_key, sub.line),
        }
    }
    Ok(())
}

fn unrecognized(notes: &mut Vec<Note>, path: &str, key: &str, line: usize) {
    notes.push((
        Level::Warn,
        "ignoring unrecognized key in configuration file".into(),
        vec![("key", key.to_string()), ("path", path.to_string()), ("line", line.to_string())],
    ));
}

/// Sets `flag` from the YAML value of `key`. A null leaves the default.
fn apply_one(settings: &mut Settings, path: &str, flag: &str, key: &str, entry: &Entry) -> Result<(), ConfigError> {
    let kind = flags::lookup(flag).map_or(Kind::Str, |fl| fl.kind);
    let bad =
        |line: usize, msg: String| ConfigError::File { path: path.to_string(), line, msg: format!("{key}: {msg}") };
    let raw = match &entry.value {
        Node::Null => return Ok(()),
        Node::Scalar(s) => s.clone(),
        Node::Seq(items) if matches!(kind, Kind::List | Kind::Urls) => {
            let mut parts = Vec::with_capacity(items.len());
            for (line, item) in items {
                match item {
                    Node::Scalar(s) => parts.push(s.clone()),
                    Node::Null => {}
                    _ => return Err(bad(*line, "expected a list of strings".into())),
                }
            }
            parts.join(",")
        }
        Node::Seq(_) => return Err(bad(entry.line, "expected a single value, found a list".into())),
        Node::Map(_) => return Err(bad(entry.line, "expected a single value, found a mapping".into())),
    };
    let origin = Origin::File { path: path.to_string(), line: entry.line, key: key.to_string() };
    let value = file_value(kind, &raw).map_err(|reason| bad(entry.line, format!("invalid value {raw:?}: {reason}")))?;
    settings.put(flag, value, origin);
    Ok(())
}

/// Converts a file scalar: YAML's boolean words count as booleans, and a
/// bare integer for a duration is nanoseconds, as etcd's file decoder reads
/// `time.Duration` fields.
fn file_value(kind: Kind, raw: &str) -> Result<Value, String> {
    match kind {
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Ok(Value::Bool(true)),
            "false" | "no" | "off" | "n" => Ok(Value::Bool(false)),
            _ => Err("want true or false".into()),
        },
        Kind::Duration if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => raw
            .parse::<u64>()
            .map(|ns| Value::Duration(std::time::Duration::from_nanos(ns)))
            .map_err(|_| "value out of range".into()),
        Kind::Uint | Kind::Uint32 if raw.starts_with('-') => Err("want a non-negative integer".into()),
        _ => flags::parse_value(kind, raw).map_err(|e| e.reason().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn applied(text: &str) -> Result<(Settings, Vec<Note>), String> {
        let mut s = Settings::defaults().map_err(|e| e.to_string())?;
        let mut notes = Vec::new();
        apply(&mut s, "etcd.yml", text, &mut notes).map_err(|e| e.to_string())?;
        Ok((s, notes))
    }

    #[test]
    fn keys_set_their_flags_and_null_keeps_the_default() {
        let text = "name: n1\ndata-dir:\nsnapshot-count: 42\nenable-v2: no\n\
                    listen-client-urls: http://127.0.0.1:1,http://127.0.0.1:2\n\
                    log-outputs: [stdout, stderr]\nexperimental-watch-progress-notify-interval: 1000000000\n\
                    grpc-keepalive-timeout: 3s\n";
        let Ok((s, notes)) = applied(text) else {
            panic!("{:?}", applied(text).err());
        };
        assert_eq!(s.str("name"), "n1");
        assert_eq!(s.str("data-dir"), "");
        assert!(!s.is_set("data-dir"));
        assert_eq!(s.uint("snapshot-count"), 42);
        assert!(!s.bool("enable-v2"));
        assert_eq!(s.urls("listen-client-urls").len(), 2);
        assert_eq!(s.list("log-outputs"), ["stdout", "stderr"]);
        assert_eq!(s.duration("experimental-watch-progress-notify-interval"), Duration::from_secs(1));
        assert_eq!(s.duration("grpc-keepalive-timeout"), Duration::from_secs(3));
        assert!(notes.is_empty());
        assert_eq!(s.label("name"), "--name (name at etcd.yml:1)");
    }

    #[test]
    fn transport_security_maps_to_the_tls_flags() {
        let text = "client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n\
                    peer-transport-security:\n  key-file: /k.pem\n  allowed-cn: a,b\n\
                    socket-options:\n  reuse-port: true\n";
        let Ok((s, _)) = applied(text) else {
            panic!("{:?}", applied(text).err());
        };
        assert_eq!(s.str("cert-file"), "/c.pem");
        assert!(s.bool("client-cert-auth"));
        assert_eq!(s.str("peer-key-file"), "/k.pem");
        assert_eq!(s.list("peer-cert-allowed-cn"), ["a", "b"]);
        assert!(s.bool("socket-reuse-port"));
        assert_eq!(s.label("cert-file"), "--cert-file (client-transport-security.cert-file at etcd.yml:2)");
    }

    #[test]
    fn unknown_keys_are_warned_with_their_line() {
        let Ok((_, notes)) = applied("name: a\nbogus-key: 5\nversion: true\n") else {
            panic!("apply failed");
        };
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].0, Level::Warn);
        assert!(notes[0].2.contains(&("key", "bogus-key".to_string())));
        assert!(notes[0].2.contains(&("line", "2".to_string())));
    }

    #[test]
    fn bad_values_name_the_file_line_and_key() {
        let e = |t: &str| applied(t).err().unwrap_or_default();
        assert_eq!(
            e("name: a\nsnapshot-count: abc\n"),
            "etcd.yml:2: snapshot-count: invalid value \"abc\": parse error"
        );
        assert_eq!(
            e("heartbeat-interval: -1\n"),
            "etcd.yml:1: heartbeat-interval: invalid value \"-1\": want a non-negative integer"
        );
        assert_eq!(e("enable-v2: maybe\n"), "etcd.yml:1: enable-v2: invalid value \"maybe\": want true or false");
        assert_eq!(e("name: [a, b]\n"), "etcd.yml:1: name: expected a single value, found a list");
        assert_eq!(
            e("client-transport-security: x\n"),
            "etcd.yml:1: client-transport-security: expected a mapping of keys to values"
        );
        assert_eq!(
            e("listen-peer-urls: 127.0.0.1:2380\n"),
            "etcd.yml:1: listen-peer-urls: invalid value \"127.0.0.1:2380\": \
             URL scheme must be http, https, unix, or unixs: 127.0.0.1:2380"
        );
        assert_eq!(e("a: 1\na: 2\n"), "etcd.yml:2: key \"a\" is already defined at line 1");
    }
}
