//! What one generator thread measured: a latency histogram (nanoseconds,
//! 3 significant digits), errors by gRPC code with a sample message each,
//! reply outcomes and completions per second. Threads fill their own
//! [`Stats`] with no sharing; the main thread merges them at the end and
//! reduces them to a [`Summary`]. Sans-IO.

use std::time::Duration;

use corekv::api::grpc::{Code, Status};
use hdrhistogram::Histogram;

use crate::workload::Outcomes;

/// Latencies above this are recorded as this (a minute is far past any
/// timeout an etcd client would use).
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// gRPC codes 0..=16.
pub const CODES: usize = 17;
/// Longest error message kept as a sample, in bytes.
const SAMPLE_BYTES_MAX: usize = 200;

/// One thread's measurements (or all threads', after [`Stats::merge`]).
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of successful requests, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed requests by gRPC code.
    pub errors: [u64; CODES],
    /// The first message seen for each code that occurred.
    pub error_samples: [Option<String>; CODES],
    /// What successful replies said.
    pub outcomes: Outcomes,
    /// Successful requests completed in each second of the run.
    pub timeline: Vec<u64>,
    /// Per operation kind, for workloads that mix kinds (`k8s`); empty
    /// otherwise. Every operation is also counted in the fields above.
    pub ops: Vec<OpStats>,
}

/// One operation kind's measurements.
#[derive(Clone, Debug)]
pub struct OpStats {
    pub name: &'static str,
    /// Latency of successful operations, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Failed operations (any gRPC error).
    pub errors: u64,
    /// Transactions whose compare failed: answered, not errors.
    pub conflicts: u64,
    /// gRPC requests sent (a paginated list sends one per page).
    pub requests: u64,
    /// Keys returned or counted.
    pub keys: u64,
}

impl OpStats {
    fn new(name: &'static str) -> OpStats {
        OpStats { name, latency: new_histogram(), errors: 0, conflicts: 0, requests: 0, keys: 0 }
    }

    fn merge(&mut self, other: &OpStats) {
        assert_eq!(self.name, other.name, "per-kind stats of different layouts");
        self.latency.add(&other.latency).expect("histograms of equal bounds add");
        self.errors += other.errors;
        self.conflicts += other.conflicts;
        self.requests += other.requests;
        self.keys += other.keys;
    }

    /// Successful operations.
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn clamp_nanos(latency: Duration) -> u64 {
    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).clamp(1, LATENCY_NS_MAX)
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Stats {
        Stats {
            latency: new_histogram(),
            errors: [0; CODES],
            error_samples: Default::default(),
            outcomes: Outcomes::default(),
            timeline: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// Empty measurements with per-kind stats for `names` (indexed alike).
    pub fn with_ops(names: &[&'static str]) -> Stats {
        Stats { ops: names.iter().map(|&name| OpStats::new(name)).collect(), ..Stats::new() }
    }

    /// A successful operation of kind `op`: counted overall (as
    /// [`Stats::record_ok`]) and for its kind, whose stats are returned.
    pub fn record_op_ok(&mut self, op: usize, latency: Duration, since_start: Duration) -> &mut OpStats {
        self.record_ok(latency, since_start);
        let kind = &mut self.ops[op];
        kind.latency.saturating_record(clamp_nanos(latency));
        kind
    }

    /// A failed operation of kind `op`, overall and for its kind.
    pub fn record_op_error(&mut self, op: usize, status: &Status) -> &mut OpStats {
        self.record_error(status);
        let kind = &mut self.ops[op];
        kind.errors += 1;
        kind
    }

    /// A successful request that took `latency` and ended `since_start`
    /// after the measured phase began.
    pub fn record_ok(&mut self, latency: Duration, since_start: Duration) {
        self.latency.saturating_record(clamp_nanos(latency));
        let second = since_start.as_secs() as usize;
        if self.timeline.len() <= second {
            self.timeline.resize(second + 1, 0);
        }
        self.timeline[second] += 1;
    }

    /// A failed request.
    pub fn record_error(&mut self, status: &Status) {
        let code = status.code.as_i32() as usize;
        self.errors[code] += 1;
        if self.error_samples[code].is_none() {
            let mut message = status.message.clone();
            if message.len() > SAMPLE_BYTES_MAX {
                let mut cut = SAMPLE_BYTES_MAX;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            self.error_samples[code] = Some(message);
        }
    }

    /// Adds another thread's measurements.
    pub fn merge(&mut self, other: &Stats) {
        self.latency.add(&other.latency).expect("histograms of equal bounds add");
        for code in 0..CODES {
            self.errors[code] += other.errors[code];
            if self.error_samples[code].is_none() {
                self.error_samples[code] = other.error_samples[code].clone();
            }
        }
        self.outcomes.merge(&other.outcomes);
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            *mine += theirs;
        }
        if self.ops.is_empty() {
            self.ops = other.ops.clone();
        } else if !other.ops.is_empty() {
            assert_eq!(self.ops.len(), other.ops.len(), "per-kind stats of different layouts");
            for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
                mine.merge(theirs);
            }
        }
    }

    /// Successful requests.
    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The figures a report shows, over a measured phase of `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let seconds = elapsed.as_secs_f64();
        let us = |nanos: u64| nanos as f64 / 1e3;
        let h = &self.latency;
        let (min, max, mean) = if h.is_empty() { (0.0, 0.0, 0.0) } else { (us(h.min()), us(h.max()), h.mean() / 1e3) };
        let at = |q: f64| if h.is_empty() { 0.0 } else { us(h.value_at_quantile(q)) };
        Summary {
            ok: self.ok(),
            failed: self.failed(),
            elapsed_s: seconds,
            qps: if seconds > 0.0 { self.ok() as f64 / seconds } else { 0.0 },
            min_us: min,
            mean_us: mean,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            p9999_us: at(0.9999),
            max_us: max,
        }
    }

    /// `(code name, count, sample message)` for every code that occurred.
    pub fn errors_by_code(&self) -> Vec<(String, u64, String)> {
        (0..CODES)
            .filter(|&code| self.errors[code] > 0)
            .map(|code| {
                let name = format!("{:?}", Code::from_i32(code as i32));
                (name, self.errors[code], self.error_samples[code].clone().unwrap_or_default())
            })
            .collect()
    }
}

/// The headline figures of a run. Latencies in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub ok: u64,
    pub failed: u64,
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub qps: f64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut s = Stats::new();
        for i in 1..=1000u64 {
            s.record_ok(Duration::from_micros(i), ms(0));
        }
        let sum = s.summary(Duration::from_secs(2));
        assert_eq!(sum.ok, 1000);
        assert_eq!(sum.qps, 500.0);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(sum.p50_us, 500.0), "{sum:?}");
        assert!(close(sum.p90_us, 900.0), "{sum:?}");
        assert!(close(sum.p99_us, 990.0), "{sum:?}");
        assert!(close(sum.p999_us, 999.0), "{sum:?}");
        assert!(close(sum.max_us, 1000.0) && close(sum.min_us, 1.0), "{sum:?}");
        assert!(close(sum.mean_us, 500.5), "{sum:?}");
    }

    #[test]
    fn merging_threads_equals_recording_in_one() {
        let (mut a, mut b, mut all) = (Stats::new(), Stats::new(), Stats::new());
        for i in 0..500u64 {
            let (one, other) = if i % 3 == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
            one.record_ok(Duration::from_micros(10 + i * 7), Duration::from_millis(i * 5));
            all.record_ok(Duration::from_micros(10 + i * 7), Duration::from_millis(i * 5));
            if i % 50 == 0 {
                other.record_error(&Status::unavailable("down"));
                all.record_error(&Status::unavailable("down"));
            }
        }
        a.merge(&b);
        assert_eq!(a.latency, all.latency);
        assert_eq!(a.errors, all.errors);
        assert_eq!(a.timeline, all.timeline);
        assert_eq!(a.summary(ms(2500)), all.summary(ms(2500)));
    }

    #[test]
    fn timeline_counts_completions_per_second() {
        let mut s = Stats::new();
        for at in [0, 10, 999, 1000, 3500] {
            s.record_ok(Duration::from_micros(5), ms(at));
        }
        assert_eq!(s.timeline, vec![3, 1, 0, 1]);
    }

    #[test]
    fn errors_are_counted_by_code_with_the_first_message() {
        let mut s = Stats::new();
        s.record_error(&Status::unavailable("first"));
        s.record_error(&Status::unavailable("second"));
        s.record_error(&Status::new(Code::ResourceExhausted, "x".repeat(1000)));
        assert_eq!(s.failed(), 3);
        let errors = s.errors_by_code();
        assert_eq!(errors[0].0, "ResourceExhausted");
        assert_eq!(errors[0].2.len(), SAMPLE_BYTES_MAX);
        assert_eq!(errors[1], ("Unavailable".to_string(), 2, "first".to_string()));
    }

    #[test]
    fn extreme_latencies_saturate_instead_of_failing() {
        let mut s = Stats::new();
        s.record_ok(Duration::ZERO, ms(0));
        s.record_ok(Duration::from_secs(3600), ms(0));
        assert_eq!(s.ok(), 2);
        assert!(s.summary(ms(1)).max_us >= LATENCY_NS_MAX as f64 / 1e3 * 0.999);
    }

    #[test]
    fn operation_kinds_count_apart_and_overall_and_merge() {
        let (mut a, mut b) = (Stats::with_ops(&["get", "put"]), Stats::with_ops(&["get", "put"]));
        a.record_op_ok(0, Duration::from_micros(10), ms(0)).keys += 3;
        a.record_op_ok(1, Duration::from_micros(20), ms(1500)).conflicts += 1;
        b.record_op_error(1, &Status::unavailable("down")).requests += 1;
        b.record_op_ok(1, Duration::from_micros(30), ms(0));
        let mut all = Stats::new();
        all.merge(&a);
        all.merge(&b);
        assert_eq!((all.ok(), all.failed(), all.timeline.clone()), (3, 1, vec![2, 1]));
        let (get, put) = (&all.ops[0], &all.ops[1]);
        assert_eq!((get.name, get.ok(), get.keys, get.errors), ("get", 1, 3, 0));
        assert_eq!((put.name, put.ok(), put.conflicts, put.errors, put.requests), ("put", 2, 1, 1, 1));
        assert!(Stats::new().ops.is_empty());
    }

    #[test]
    fn an_empty_run_summarises_to_zeros() {
        let sum = Stats::new().summary(Duration::ZERO);
        assert_eq!((sum.ok, sum.qps, sum.p99_us, sum.max_us), (0, 0.0, 0.0, 0.0));
    }
}
