//! etcdctl 3.4 (Debian's etcd-client) against a real corekv: every `lease`
//! subcommand, and `watch` with its options (key, --prefix, --rev,
//! --prev-kv, a range, interactive mode), checked against the exact text
//! etcdctl prints for etcd.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Server;

/// Runs etcdctl against `s`; its stdout, or a panic with its output.
fn ctl(s: &Server, args: &[&str]) -> String {
    common::etcdctl(&s.endpoint(), args)
}

/// A long-running etcdctl whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(s: &Server, args: &[&str], stdin: bool) -> Running {
        let mut child = common::etcdctl_command(&s.endpoint())
            .args(args)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcdctl");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The next `n` lines, waiting at most 10 s in all.
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => got.push(l),
                Err(_) => panic!("etcdctl printed {got:?}, expected {n} lines"),
            }
        }
        got
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to etcdctl");
        stdin.flush().expect("flush");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a watcher has registered (etcdctl prints nothing when it
/// does): puts on a probe key it watches until one comes through, then
/// drops whatever further probe events arrive.
fn sync(s: &Server, w: &Running, key: &str) {
    for _ in 0..50 {
        ctl(s, &["put", key, "sync"]);
        if let Ok(first) = w.lines.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(first, "PUT");
            assert_eq!(w.take(2), [key, "sync"]);
            std::thread::sleep(Duration::from_millis(300));
            let rest: Vec<String> = w.lines.try_iter().collect();
            // Later probes (with --prev-kv, also their previous versions).
            assert!(rest.iter().all(|l| l == "PUT" || l == key || l == "sync"), "{rest:?}");
            return;
        }
    }
    panic!("the watch on {key} never saw a put");
}

#[test]
fn etcdctl_lease_subcommands_print_what_they_print_for_etcd() {
    let s = Server::under_test("etcdctl_lease", &[]);
    let granted = ctl(&s, &["lease", "grant", "60"]);
    // "lease 694d7a8c1a0d2a04 granted with TTL(60s)"
    let id = granted
        .strip_prefix("lease ")
        .and_then(|r| r.strip_suffix(" granted with TTL(60s)\n"))
        .unwrap_or_else(|| panic!("{granted:?}"))
        .to_string();
    assert!(u64::from_str_radix(&id, 16).is_ok(), "{id}");
    assert_eq!(ctl(&s, &["put", "--lease", &id, "leased", "v"]), "OK\n");
    assert_eq!(ctl(&s, &["put", "--lease", &id, "leased2", "v"]), "OK\n");

    let ttl = ctl(&s, &["lease", "timetolive", &id, "--keys"]);
    let prefix = format!("lease {id} granted with TTL(60s), remaining(");
    let rest = ttl.strip_prefix(&prefix).unwrap_or_else(|| panic!("{ttl:?}"));
    let (remaining, keys) = rest.split_once("s), attached keys(").unwrap_or_else(|| panic!("{ttl:?}"));
    let remaining: i64 = remaining.parse().expect("remaining seconds");
    assert!((55..=60).contains(&remaining), "{ttl}");
    assert_eq!(keys, "[leased leased2])\n");
    let ttl = ctl(&s, &["lease", "timetolive", &id]);
    assert!(ttl.starts_with(&prefix) && ttl.ends_with("s)\n"), "{ttl:?}");

    assert_eq!(ctl(&s, &["lease", "list"]), format!("found 1 leases\n{id}\n"));
    assert_eq!(ctl(&s, &["lease", "keep-alive", "--once", &id]), format!("lease {id} keepalived with TTL(60)\n"));
    // The streaming keep-alive prints a line per renewal.
    let ka = Running::start(&s, &["lease", "keep-alive", &id], false);
    assert_eq!(ka.take(1), [format!("lease {id} keepalived with TTL(60)")]);
    drop(ka);

    assert_eq!(ctl(&s, &["lease", "revoke", &id]), format!("lease {id} revoked\n"));
    assert_eq!(ctl(&s, &["get", "leased", "--prefix"]), "", "revoking deleted the lease's keys");
    assert_eq!(ctl(&s, &["lease", "list"]), "found 0 leases\n");
    assert_eq!(ctl(&s, &["lease", "timetolive", &id]), format!("lease {id} already expired\n"));

    // A chosen TTL under the minimum is raised to it, as etcd does.
    let short = ctl(&s, &["lease", "grant", "1"]);
    assert!(short.ends_with(" granted with TTL(2s)\n"), "{short:?}");
}

#[test]
fn etcdctl_watch_prints_events_for_every_option() {
    let s = Server::under_test("etcdctl_watch", &[]);
    // A single key.
    let w = Running::start(&s, &["watch", "k"], false);
    sync(&s, &w, "k");
    ctl(&s, &["put", "k", "v1"]);
    ctl(&s, &["put", "other", "x"]);
    ctl(&s, &["del", "k"]);
    assert_eq!(w.take(6), ["PUT", "k", "v1", "DELETE", "k", ""]);
    drop(w);

    // A prefix, with the previous versions.
    let w = Running::start(&s, &["watch", "--prefix", "--prev-kv", "p/"], false);
    sync(&s, &w, "p/sync");
    ctl(&s, &["put", "p/a", "1"]);
    ctl(&s, &["put", "p/a", "2"]);
    ctl(&s, &["put", "q/a", "x"]);
    ctl(&s, &["del", "p/a"]);
    assert_eq!(w.take(3), ["PUT", "p/a", "1"]);
    assert_eq!(w.take(5), ["PUT", "p/a", "1", "p/a", "2"]);
    assert_eq!(w.take(5), ["DELETE", "p/a", "2", "p/a", ""]);
    drop(w);

    // A range [r/b, r/d).
    let w = Running::start(&s, &["watch", "r/b", "r/d"], false);
    sync(&s, &w, "r/b");
    for k in ["r/a", "r/c", "r/d"] {
        ctl(&s, &["put", k, k]);
    }
    assert_eq!(w.take(3), ["PUT", "r/c", "r/c"]);
    drop(w);

    // From a past revision: the history replays, then live events follow.
    let first = ctl(&s, &["put", "h", "1", "-w", "json"]);
    let rev: i64 = first
        .split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    ctl(&s, &["put", "h", "2"]);
    let w = Running::start(&s, &["watch", "--rev", &rev.to_string(), "h"], false);
    assert_eq!(w.take(6), ["PUT", "h", "1", "PUT", "h", "2"]);
    ctl(&s, &["put", "h", "3"]);
    assert_eq!(w.take(3), ["PUT", "h", "3"]);
    drop(w);

    // Interactive: watch commands from stdin.
    let mut w = Running::start(&s, &["watch", "-i"], true);
    w.send("watch i1");
    w.send("watch --prefix j/");
    std::thread::sleep(Duration::from_millis(300));
    sync(&s, &w, "i1");
    ctl(&s, &["put", "j/x", "y"]);
    assert_eq!(w.take(3), ["PUT", "j/x", "y"]);
}
