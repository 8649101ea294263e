//! Turns a run into what people and scripts read: the header (command line
//! and machine), the human summary, and the JSON result. A minimal JSON
//! writer lives here too (the package has no serde). No I/O but strings.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::args::{Options, Stop, WorkloadKind};
use crate::run::{RunResult, ServerUsage, WatchResult};
use crate::stats::{OpStats, Summary};
use crate::sys::Machine;

/// A JSON value, written with sorted-as-given object keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i128),
    /// Written with at most three decimals; non-finite numbers as `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs.
    pub fn obj<const N: usize>(pairs: [(&str, Json); N]) -> Json {
        Json::Obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// Pretty-printed with two-space indentation.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |out: &mut String, depth: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n("  ", depth));
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(n) => write!(out, "{n}").expect("write to String"),
            Json::Num(x) if !x.is_finite() => out.push_str("null"),
            Json::Num(x) => {
                let rounded = (x * 1000.0).round() / 1000.0;
                write!(out, "{rounded}").expect("write to String");
            }
            Json::Str(s) => write_string(out, s),
            Json::Arr(items) if items.iter().all(|i| matches!(i, Json::Int(_) | Json::Num(_))) => {
                // Numbers stay on one line (timelines would be very long).
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, depth);
                }
                out.push(']');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i > 0 { "," } else { "" });
                    pad(out, depth + 1);
                    item.write(out, depth + 1);
                }
                if !items.is_empty() {
                    pad(out, depth);
                }
                out.push(']');
            }
            Json::Obj(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    out.push_str(if i > 0 { "," } else { "" });
                    pad(out, depth + 1);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                }
                if !pairs.is_empty() {
                    pad(out, depth);
                }
                out.push('}');
            }
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).expect("write to String"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn int(n: impl Into<i128>) -> Json {
    Json::Int(n.into())
}

fn num(x: f64) -> Json {
    Json::Num(x)
}

fn string(s: impl Into<String>) -> Json {
    Json::Str(s.into())
}

/// Everything the report shows about one run.
pub struct Report<'a> {
    pub command: &'a str,
    pub argv: &'a [String],
    pub machine: &'a Machine,
    pub options: &'a Options,
    pub result: &'a RunResult,
}

impl Report<'_> {
    fn summary(&self) -> Summary {
        self.result.stats.summary(self.result.elapsed)
    }

    /// Generator CPU per completed request (ok or failed), in microseconds.
    fn generator_us_per_request(&self) -> f64 {
        let requests = self.result.stats.ok() + self.result.stats.failed();
        per(self.result.generator_cpu.total().as_secs_f64() * 1e6, requests)
    }

    /// The result as JSON.
    pub fn json(&self) -> Json {
        let (r, o, s) = (self.result, self.options, self.summary());
        let errors = r
            .stats
            .errors_by_code()
            .into_iter()
            .map(|(name, count, sample)| (name, Json::obj([("count", int(count)), ("sample", string(sample))])));
        let outcomes = &r.stats.outcomes;
        let m = self.machine;
        let server = match &r.server {
            None => Json::Null,
            Some(server) => Json::obj([
                ("pid", int(server.pid)),
                ("cpu_s", num(server.cpu.as_secs_f64())),
                ("cpu_s_per_1000_requests", num(per(server.cpu.as_secs_f64() * 1000.0, s.ok + s.failed))),
                ("peak_rss_kib", server.peak_rss_kib.map_or(Json::Null, int)),
                (
                    "rss_kib",
                    Json::obj([
                        ("connected", server.rss.connected.map_or(Json::Null, int)),
                        ("streams_open", server.rss.streams_open.map_or(Json::Null, int)),
                        ("set_up", server.rss.set_up.map_or(Json::Null, int)),
                        ("end", server.rss.end.map_or(Json::Null, int)),
                    ]),
                ),
                ("rss_kib_per_stream", opt_num(server.rss.per_stream_kib(r.setup.counts.streams))),
                ("rss_kib_per_watcher", opt_num(server.rss.per_item_kib(r.setup.counts.watchers))),
                (
                    "rss_kib_per_lease",
                    // Only lease-keepalive's set-up is nothing but leases.
                    opt_num(
                        server
                            .rss
                            .per_item_kib(r.setup.counts.leases)
                            .filter(|_| o.workload == WorkloadKind::LeaseKeepAlive),
                    ),
                ),
            ]),
        };
        let c = &r.setup.counts;
        let setup = Json::obj([
            ("streams", int(c.streams)),
            ("watchers", int(c.watchers)),
            ("leases", int(c.leases)),
            ("extra_conns", int(c.extra_conns)),
            ("open_seconds", num(r.setup.open_elapsed.as_secs_f64())),
            ("create_seconds", num(r.setup.create_elapsed.as_secs_f64())),
        ]);
        let watch = r.watch.as_ref().map_or(Json::Null, watch_json);
        Json::obj([
            ("tool", string("corekv-bench")),
            ("version", string(env!("CARGO_PKG_VERSION"))),
            ("command", string(self.command)),
            ("argv", Json::Arr(self.argv.iter().map(|a| string(a.as_str())).collect())),
            (
                "machine",
                Json::obj([
                    ("hostname", string(m.hostname.as_str())),
                    ("nproc", int(m.nproc as u64)),
                    ("cpu_model", string(m.cpu_model.as_str())),
                    ("kernel", string(m.kernel.as_str())),
                    ("mem_total_kib", int(m.mem_total_kib)),
                    ("load_average", string(m.load_average.as_str())),
                ]),
            ),
            ("config", config_json(o)),
            ("setup", setup),
            (
                "preload",
                Json::obj([
                    ("ok", int(r.preload.ok)),
                    ("failed", int(r.preload.failed)),
                    ("seconds", num(r.preload.elapsed.as_secs_f64())),
                    ("first_error", r.preload.first_error.clone().map_or(Json::Null, string)),
                ]),
            ),
            (
                "result",
                Json::obj([
                    ("ok", int(s.ok)),
                    ("failed", int(s.failed)),
                    ("elapsed_s", num(s.elapsed_s)),
                    ("qps", num(s.qps)),
                    (
                        "latency_us",
                        Json::obj([
                            ("min", num(s.min_us)),
                            ("mean", num(s.mean_us)),
                            ("p50", num(s.p50_us)),
                            ("p90", num(s.p90_us)),
                            ("p99", num(s.p99_us)),
                            ("p99_9", num(s.p999_us)),
                            ("p99_99", num(s.p9999_us)),
                            ("max", num(s.max_us)),
                        ]),
                    ),
                    ("errors_by_code", Json::Obj(errors.collect())),
                    (
                        "outcomes",
                        Json::obj([
                            ("txn_succeeded", int(outcomes.txn_succeeded)),
                            ("txn_failed", int(outcomes.txn_failed)),
                            ("keys_deleted", int(outcomes.keys_deleted)),
                            ("keys_read", int(outcomes.keys_read)),
                            ("bad_replies", int(outcomes.bad_replies)),
                            ("leases_expired", int(outcomes.leases_expired)),
                            ("stale_reads", int(outcomes.stale_reads)),
                            ("list_mismatches", int(outcomes.list_mismatches)),
                            ("watch_events", int(outcomes.watch_events)),
                            ("watch_restarts", int(outcomes.watch_restarts)),
                            ("watch_errors", int(outcomes.watch_errors)),
                        ]),
                    ),
                    ("operations", operations_json(&r.stats.ops, s.elapsed_s)),
                    ("ok_per_second", Json::Arr(r.stats.timeline.iter().map(|&n| int(n)).collect())),
                ]),
            ),
            (
                "generator",
                Json::obj([
                    ("threads_cpu_s", num(r.generator_cpu.total().as_secs_f64())),
                    ("user_s", num(r.generator_cpu.user.as_secs_f64())),
                    ("system_s", num(r.generator_cpu.system.as_secs_f64())),
                    ("process_cpu_s", num(r.process_cpu.total().as_secs_f64())),
                    ("cpu_us_per_request", num(self.generator_us_per_request())),
                    ("cores_busy", num(r.generator_cpu.total().as_secs_f64() / s.elapsed_s.max(1e-9))),
                ]),
            ),
            ("server", server),
            ("watch", watch),
        ])
    }

    /// The human summary printed after the run.
    pub fn text(&self) -> String {
        let (r, s) = (self.result, self.summary());
        let mut out = String::new();
        let line = |out: &mut String, label: &str, text: String| {
            writeln!(out, "{label:<11}{text}").expect("write to String");
        };
        if self.options.preload > 0 {
            line(
                &mut out,
                "preload",
                format!(
                    "{} keys in {:.2} s ({} failed{})",
                    r.preload.ok,
                    r.preload.elapsed.as_secs_f64(),
                    r.preload.failed,
                    r.preload.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default()
                ),
            );
        }
        line(&mut out, "requests", format!("{} ok, {} failed in {:.3} s", s.ok, s.failed, s.elapsed_s));
        line(&mut out, "throughput", format!("{:.1} requests/s", s.qps));
        line(
            &mut out,
            "latency",
            format!(
                "min {}  mean {}  p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (ms)",
                ms(s.min_us),
                ms(s.mean_us),
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.p999_us),
                ms(s.p9999_us),
                ms(s.max_us)
            ),
        );
        let errors = r.stats.errors_by_code();
        let errors = if errors.is_empty() {
            "none".to_string()
        } else {
            errors.iter().map(|(name, n, sample)| format!("{name} x{n} ({sample:?})")).collect::<Vec<_>>().join(", ")
        };
        line(&mut out, "errors", errors);
        let o = &r.stats.outcomes;
        let mut outcomes = Vec::new();
        if o.txn_succeeded + o.txn_failed > 0 {
            outcomes.push(format!("txn compare held {}, failed {}", o.txn_succeeded, o.txn_failed));
        }
        if o.keys_deleted > 0 {
            outcomes.push(format!("keys deleted {}", o.keys_deleted));
        }
        if o.keys_read > 0 && r.stats.ops.is_empty() {
            outcomes.push(format!("keys read {} ({:.1} per range)", o.keys_read, per(o.keys_read as f64, s.ok)));
        } else if o.keys_read > 0 {
            outcomes.push(format!("keys read or counted {}", o.keys_read));
        }
        if o.leases_expired > 0 {
            outcomes.push(format!("LEASES EXPIRED (keep-alive answered TTL 0) {}", o.leases_expired));
        }
        if o.stale_reads > 0 {
            outcomes.push(format!("STALE gets (another revision than last written or read) {}", o.stale_reads));
        }
        if o.list_mismatches > 0 {
            outcomes.push(format!("INCONSISTENT lists (pages disagree with count or more) {}", o.list_mismatches));
        }
        if o.watch_events + o.watch_restarts + o.watch_errors > 0 {
            outcomes.push(format!("watch events {}, restarts after compaction {}", o.watch_events, o.watch_restarts));
        }
        if o.watch_errors > 0 {
            outcomes.push(format!("WATCH ERRORS (failed streams, out-of-order events) {}", o.watch_errors));
        }
        if o.bad_replies > 0 {
            outcomes.push(format!("UNDECODABLE replies {}", o.bad_replies));
        }
        if !outcomes.is_empty() {
            line(&mut out, "outcomes", outcomes.join("; "));
        }
        if !r.stats.ops.is_empty() {
            line(&mut out, "operations", "(conflicts: txns whose compare failed; answered, not errors)".to_string());
            out.push_str(&operations_markdown(&r.stats.ops, s.elapsed_s));
        }
        if let Some(setup) = self.setup_text() {
            line(&mut out, "set-up", setup);
        }
        if let Some(w) = &r.watch {
            for (label, text) in watch_text(w) {
                line(&mut out, label, text);
            }
        }
        let g = r.generator_cpu;
        line(
            &mut out,
            "generator",
            format!(
                "CPU {:.2} s (user {:.2}, sys {:.2}) = {:.2} cores busy, {:.1} us per request; process {:.2} s",
                g.total().as_secs_f64(),
                g.user.as_secs_f64(),
                g.system.as_secs_f64(),
                g.total().as_secs_f64() / s.elapsed_s.max(1e-9),
                self.generator_us_per_request(),
                r.process_cpu.total().as_secs_f64()
            ),
        );
        if let Some(server) = &r.server {
            let rss =
                server.peak_rss_kib.map_or("unknown".to_string(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
            line(
                &mut out,
                "server",
                format!(
                    "pid {}: CPU {:.2} s = {:.3} s per 1,000 requests ({:.2} cores busy), peak RSS {rss}",
                    server.pid,
                    server.cpu.as_secs_f64(),
                    per(server.cpu.as_secs_f64() * 1000.0, s.ok + s.failed),
                    server.cpu.as_secs_f64() / s.elapsed_s.max(1e-9)
                ),
            );
            line(&mut out, "server RSS", self.rss_text(server));
        }
        out
    }

    /// What was set up before measuring, if anything.
    fn setup_text(&self) -> Option<String> {
        let (c, r) = (&self.result.setup.counts, &self.result.setup);
        let (open, create) = (r.open_elapsed.as_secs_f64(), r.create_elapsed.as_secs_f64());
        match self.options.workload {
            WorkloadKind::Watch => Some(format!(
                "{} watch streams opened in {open:.2} s; {} watchers created in {create:.2} s",
                c.streams, c.watchers
            )),
            WorkloadKind::WatchSlow => Some(format!(
                "{} slow watchers on {} streams over {} connections of their own, created in {create:.2} s and \
                 never read",
                c.watchers, c.streams, c.extra_conns
            )),
            WorkloadKind::LeaseKeepAlive => Some(format!(
                "{} leases granted (TTL {} s) and {} keep-alive streams opened in {create:.2} s",
                c.leases, self.options.lease.ttl, c.streams
            )),
            WorkloadKind::K8s if c.leases > 0 => Some(format!(
                "{} leases granted (TTL {} s){} in {create:.2} s",
                c.leases,
                self.options.lease.ttl,
                if self.options.preload > 0 { " and keys preloaded" } else { "" }
            )),
            _ => None,
        }
    }

    /// The server's RSS at each phase, and per stream / watcher / lease.
    fn rss_text(&self, server: &ServerUsage) -> String {
        let mib = |kib: Option<u64>| kib.map_or("unknown".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let per = |kib: Option<f64>, what: &str| kib.map_or(String::new(), |k| format!(" ({k:+.2} KiB per {what})"));
        let (c, rss) = (&self.result.setup.counts, &server.rss);
        let mut text = format!("connected {}", mib(rss.connected));
        if c.streams > 0 && self.options.workload != WorkloadKind::LeaseKeepAlive {
            text += &format!(
                "; {} streams open {}{}",
                c.streams,
                mib(rss.streams_open),
                per(rss.per_stream_kib(c.streams), "stream")
            );
        }
        if c.watchers > 0 {
            text += &format!(
                "; {} watchers {}{}",
                c.watchers,
                mib(rss.set_up),
                per(rss.per_item_kib(c.watchers), "watcher")
            );
        } else if c.leases > 0 && self.options.workload == WorkloadKind::LeaseKeepAlive {
            text += &format!("; {} leases {}{}", c.leases, mib(rss.set_up), per(rss.per_item_kib(c.leases), "lease"));
        } else {
            text += &format!("; set up {}", mib(rss.set_up));
        }
        text + &format!("; end {}", mib(rss.end))
    }
}

/// Percentiles of a latency histogram (ns) in microseconds.
fn percentiles(h: &Histogram<u64>) -> [(&'static str, f64); 8] {
    let us = |nanos: u64| nanos as f64 / 1e3;
    let at = |q: f64| if h.is_empty() { 0.0 } else { us(h.value_at_quantile(q)) };
    let (min, mean, max) = if h.is_empty() { (0.0, 0.0, 0.0) } else { (us(h.min()), h.mean() / 1e3, us(h.max())) };
    [
        ("min", min),
        ("mean", mean),
        ("p50", at(0.5)),
        ("p90", at(0.9)),
        ("p99", at(0.99)),
        ("p99_9", at(0.999)),
        ("p99_99", at(0.9999)),
        ("max", max),
    ]
}

fn percentiles_json(h: &Histogram<u64>) -> Json {
    Json::Obj(percentiles(h).into_iter().map(|(k, v)| (k.to_string(), num(v))).collect())
}

fn percentiles_text(h: &Histogram<u64>) -> String {
    let p = percentiles(h);
    let shown: Vec<String> =
        p.iter().filter(|(k, _)| *k != "min").map(|(k, v)| format!("{} {}", k.replace('_', "."), ms(*v))).collect();
    format!("{}  (ms)", shown.join("  "))
}

/// Each operation kind's figures, keyed by name (`null` when the workload
/// does not mix kinds).
fn operations_json(ops: &[OpStats], elapsed_s: f64) -> Json {
    if ops.is_empty() {
        return Json::Null;
    }
    Json::Obj(
        ops.iter()
            .map(|op| {
                let value = Json::obj([
                    ("ok", int(op.ok())),
                    ("errors", int(op.errors)),
                    ("conflicts", int(op.conflicts)),
                    ("requests", int(op.requests)),
                    ("keys", int(op.keys)),
                    ("per_second", num(if elapsed_s > 0.0 { op.ok() as f64 / elapsed_s } else { 0.0 })),
                    ("latency_us", percentiles_json(&op.latency)),
                ]);
                (op.name.to_string(), value)
            })
            .collect(),
    )
}

/// Each operation kind's figures as a Markdown table.
fn operations_markdown(ops: &[OpStats], elapsed_s: f64) -> String {
    let mut out = String::from(
        "| operation | ok | ok/s | conflicts | errors | requests | keys | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for op in ops {
        let p = percentiles(&op.latency);
        let at = |name: &str| ms(p.iter().find(|(k, _)| *k == name).map_or(0.0, |(_, v)| *v));
        let rate = if elapsed_s > 0.0 { op.ok() as f64 / elapsed_s } else { 0.0 };
        writeln!(
            out,
            "| {} | {} | {rate:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            op.name,
            op.ok(),
            op.conflicts,
            op.errors,
            op.requests,
            op.keys,
            at("p50"),
            at("p90"),
            at("p99"),
            at("p99_9"),
            at("max")
        )
        .expect("write to String");
    }
    out
}

fn watch_json(w: &WatchResult) -> Json {
    let d = &w.delivery;
    Json::obj([
        ("streams", int(w.layout.streams)),
        ("watchers_per_stream", int(w.layout.per_stream)),
        ("watchers", int(w.layout.watchers())),
        ("prefixes", int(w.layout.prefixes)),
        ("expected", int(d.expected)),
        ("delivered", int(d.delivered)),
        ("events_per_second", num(w.events_per_second)),
        ("latency_from_ack_us", percentiles_json(&d.from_ack)),
        ("latency_from_sent_us", percentiles_json(&d.from_sent)),
        ("before_ack", int(d.before_ack)),
        (
            "errors",
            Json::obj([
                ("total", int(d.errors() + w.canceled + w.bad_responses + w.stream_errors)),
                ("missing", int(d.missing)),
                ("duplicates", int(d.duplicates)),
                ("out_of_order", int(d.out_of_order)),
                ("unmatched", int(d.unmatched)),
                ("foreign", int(d.foreign)),
                ("wrong_value", int(d.wrong_value)),
                ("canceled", int(w.canceled)),
                ("bad_responses", int(w.bad_responses)),
                ("stream_errors", int(w.stream_errors)),
                ("first_error", w.first_error.clone().map_or(Json::Null, string)),
            ]),
        ),
        ("drain_s", num(w.drain.as_secs_f64())),
        ("drained", Json::Bool(w.drained)),
    ])
}

fn watch_text(w: &WatchResult) -> Vec<(&'static str, String)> {
    let d = &w.delivery;
    let l = &w.layout;
    let faults = d.errors() + w.canceled + w.bad_responses + w.stream_errors;
    let check = if faults == 0 {
        "every event exactly once, in order".to_string()
    } else {
        format!(
            "ERRORS: missing {}, duplicates {}, out of order {}, unmatched {}, foreign {}, wrong value {}, \
             canceled {}, bad responses {}, stream errors {}{}",
            d.missing,
            d.duplicates,
            d.out_of_order,
            d.unmatched,
            d.foreign,
            d.wrong_value,
            w.canceled,
            w.bad_responses,
            w.stream_errors,
            w.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        )
    };
    vec![
        (
            "watchers",
            format!(
                "{} = {} streams x {}, on {} prefixes ({}..{} per prefix)",
                l.watchers(),
                l.streams,
                l.per_stream,
                l.prefixes,
                l.watchers_of(l.prefixes - 1),
                l.watchers_of(0)
            ),
        ),
        (
            "delivery",
            format!(
                "{} of {} expected events; {check}; drain {:.3} s{}",
                d.delivered,
                d.expected,
                w.drain.as_secs_f64(),
                if w.drained { "" } else { " (TIMED OUT)" }
            ),
        ),
        ("events", format!("{:.1} delivered/s (start to last delivery)", w.events_per_second)),
        ("event lat.", format!("put acknowledged -> event received: {}", percentiles_text(&d.from_ack))),
        ("", format!("put sent -> event received:         {}", percentiles_text(&d.from_sent))),
        (
            "",
            format!(
                "{} of the events arrived before their put's reply reached the writer (counted as 0 after the ack)",
                d.before_ack
            ),
        ),
    ]
}

fn opt_num(x: Option<f64>) -> Json {
    x.map_or(Json::Null, num)
}

/// The header printed before the run: what runs, where, on what.
pub fn header(command: &str, machine: &Machine, options: &Options) -> String {
    let o = options;
    let order = if o.sequential_keys { "sequential" } else { "random" };
    let stop = match o.stop {
        Stop::Total(n) => format!("total {n}"),
        Stop::Duration(d) => format!("duration {:.3} s", d.as_secs_f64()),
    };
    let rate = o.rate.map_or("unlimited".to_string(), |r| format!("{r} req/s"));
    let mut shape = String::new();
    if o.workload == WorkloadKind::Watch {
        shape = format!(
            " {} streams x {} watchers on {} prefixes, drain up to {:.1} s",
            o.watch.streams,
            o.watch.watchers_per_stream,
            o.watch.prefixes,
            o.watch.drain.as_secs_f64()
        );
    }
    if o.workload == WorkloadKind::WatchSlow {
        shape = format!(
            " {} non-reading watchers on {} streams over {} own connections",
            o.slow.watchers, o.slow.streams, o.slow.conns
        );
    }
    if o.workload == WorkloadKind::LeaseKeepAlive {
        shape = format!(" {} leases of TTL {} s", o.lease.leases, o.lease.ttl);
    }
    if o.workload == WorkloadKind::K8s {
        let k = &o.k8s;
        let leased = match k.lease_fraction {
            Some(f) => format!("{f} of the keys"),
            None => "keys of events".to_string(),
        };
        let compaction = k.compact_interval.map_or("off".to_string(), |d| format!("every {:.1} s", d.as_secs_f64()));
        shape = format!(
            " {} x {} namespaces x {} objects = {} keys, {} preloaded; mix {}; list page {}; {}; leases on {leased} \
             ({} of TTL {} s); compaction {compaction}",
            k.resources.join(","),
            k.namespaces,
            k.objects,
            k.keys(),
            o.preload,
            k.mix.describe(),
            o.limit,
            if o.serializable { "serializable" } else { "linearizable" },
            o.lease.leases,
            o.lease.ttl,
        );
    }
    if o.workload == WorkloadKind::Range {
        shape = format!(
            " {}{}{}{}",
            if o.serializable { "serializable" } else { "linearizable" },
            if o.range_prefix { ", whole prefix" } else { ", one key" },
            if o.limit > 0 { format!(", limit {}", o.limit) } else { String::new() },
            if o.count_only { ", count only" } else { "" },
        );
    }
    format!(
        "corekv-bench {}\n\
         command    {command}\n\
         machine    {} CPUs ({}), Linux {}, {:.1} GiB, host {}, load average {}\n\
         workload   {}{shape}; keys {} B {order} over {} (prefix {:?}), values {} B\n\
         load       endpoints {}; threads {}, conns {}, clients {}; {stop}; rate {rate}\n",
        env!("CARGO_PKG_VERSION"),
        machine.nproc,
        machine.cpu_model,
        machine.kernel,
        machine.mem_total_kib as f64 / (1024.0 * 1024.0),
        machine.hostname,
        machine.load_average,
        o.workload.name(),
        o.key_size,
        o.key_space_size,
        String::from_utf8_lossy(&o.prefix),
        o.val_size,
        o.endpoints.join(","),
        o.threads,
        o.conns,
        o.clients,
    )
}

fn config_json(o: &Options) -> Json {
    let (total, duration) = match o.stop {
        Stop::Total(n) => (int(n), Json::Null),
        Stop::Duration(d) => (Json::Null, num(d.as_secs_f64())),
    };
    Json::obj([
        ("workload", string(o.workload.name())),
        ("endpoints", Json::Arr(o.endpoints.iter().map(|e| string(e.as_str())).collect())),
        ("threads", int(o.threads as u64)),
        ("conns", int(o.conns as u64)),
        ("clients", int(o.clients as u64)),
        ("total", total),
        ("duration_s", duration),
        ("rate", o.rate.map_or(Json::Null, num)),
        ("key_size", int(o.key_size as u64)),
        ("val_size", int(o.val_size as u64)),
        ("key_space_size", int(o.key_space_size)),
        ("sequential_keys", Json::Bool(o.sequential_keys)),
        ("prefix", string(String::from_utf8_lossy(&o.prefix))),
        ("consistency", string(if o.serializable { "s" } else { "l" })),
        ("range_prefix", Json::Bool(o.range_prefix)),
        ("limit", int(o.limit)),
        ("count_only", Json::Bool(o.count_only)),
        ("preload", int(o.preload)),
        ("seed", int(o.seed)),
        ("watch_streams", int(o.watch.streams as u64)),
        ("watchers_per_stream", int(o.watch.watchers_per_stream as u64)),
        ("watch_prefixes", int(o.watch.prefixes as u64)),
        ("watch_drain_s", num(o.watch.drain.as_secs_f64())),
        ("slow_watchers", int(o.slow.watchers as u64)),
        ("slow_streams", int(o.slow.streams as u64)),
        ("slow_conns", int(o.slow.conns as u64)),
        ("leases", int(o.lease.leases as u64)),
        ("lease_ttl", int(o.lease.ttl)),
        ("k8s", if o.workload == WorkloadKind::K8s { k8s_config_json(o) } else { Json::Null }),
        ("plot", o.plot.as_deref().map_or(Json::Null, string)),
    ])
}

fn k8s_config_json(o: &Options) -> Json {
    let k = &o.k8s;
    Json::obj([
        ("resources", Json::Arr(k.resources.iter().map(|r| string(r.as_str())).collect())),
        ("namespaces", int(k.namespaces)),
        ("objects_per_namespace", int(k.objects)),
        ("keys", int(k.keys())),
        (
            "mix",
            Json::Obj(
                crate::k8s::Op::CLIENT.iter().map(|op| (op.name().to_string(), int(k.mix.weight(*op)))).collect(),
            ),
        ),
        ("lease_fraction", k.lease_fraction.map_or(Json::Null, num)),
        ("compact_interval_s", k.compact_interval.map_or(Json::Null, |d| num(d.as_secs_f64()))),
    ])
}

/// `amount / count`, 0 for no count.
fn per(amount: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        amount / count as f64
    }
}

/// Microseconds as milliseconds with three decimals.
fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_strings_and_nulls_non_finite_numbers() {
        let value = Json::obj([
            ("s", string("a\"b\\c\nd\u{1}é")),
            ("x", num(f64::NAN)),
            ("y", num(1.23456)),
            ("n", int(-5)),
            ("e", Json::Arr(vec![])),
            ("o", Json::Obj(vec![])),
        ]);
        let text = value.render();
        assert!(text.contains(r#""s": "a\"b\\c\nd\u0001é""#), "{text}");
        assert!(text.contains(r#""x": null"#));
        assert!(text.contains(r#""y": 1.235"#));
        assert!(text.contains(r#""n": -5"#));
        assert!(text.contains(r#""e": []"#) && text.contains(r#""o": {}"#));
    }

    #[test]
    fn json_nests_with_indentation_and_keeps_number_arrays_on_one_line() {
        let value = Json::obj([("a", Json::Arr(vec![int(1), int(2)])), ("b", Json::obj([("c", Json::Bool(true))]))]);
        assert_eq!(value.render(), "{\n  \"a\": [1, 2],\n  \"b\": {\n    \"c\": true\n  }\n}\n");
    }

    #[test]
    fn operations_show_as_json_and_a_markdown_table() {
        use std::time::Duration;
        let mut stats = crate::stats::Stats::with_ops(&["update", "list"]);
        stats.record_op_ok(0, Duration::from_micros(1500), Duration::ZERO).conflicts += 2;
        let list = stats.record_op_ok(1, Duration::from_micros(3000), Duration::ZERO);
        list.requests += 3;
        list.keys += 1200;
        stats.record_op_error(1, &corekv::api::grpc::Status::unavailable("down"));
        let json = operations_json(&stats.ops, 2.0).render();
        assert!(json.contains("\"update\": {\n    \"ok\": 1,\n    \"errors\": 0,\n    \"conflicts\": 2"), "{json}");
        assert!(
            json.contains("\"requests\": 3") && json.contains("\"keys\": 1200") && json.contains("\"per_second\": 0.5")
        );
        let table = operations_markdown(&stats.ops, 2.0);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].starts_with("| operation | ok |") && rows[1].starts_with("|---|"));
        assert!(rows[2].starts_with("| update | 1 | 0.5 | 2 | 0 | 0 | 0 | 1.50"), "{}", rows[2]);
        assert!(rows[3].starts_with("| list | 1 | 0.5 | 0 | 1 | 3 | 1200 | 3.00"), "{}", rows[3]);
        assert_eq!(operations_json(&[], 1.0), Json::Null);
    }

    #[test]
    fn per_guards_against_zero() {
        assert_eq!(per(5.0, 0), 0.0);
        assert_eq!(per(5.0, 2), 2.5);
    }
}
