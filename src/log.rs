//! Structured logs: one JSON object per line, as etcd's zap logger writes them.
//!
//! Owns the process-wide logger (the level filter and the output sinks), the
//! line format (`level`, `ts`, `caller`, `msg`, then the fields, in that
//! order), JSON escaping, and the `log_debug!` / `log_info!` / `log_warn!` /
//! `log_error!` macros. It never parses flags (config hands it a [`Level`] and
//! [`Output`]s) and never sits on a request path beyond a level check: a
//! disabled level costs one relaxed atomic load. Writers are behind a `Mutex`,
//! which is fine because logging is not on the hot path.
//!
//! ```
//! let addr = "127.0.0.1:2379";
//! corekv::log_info!("ready to serve client requests", "address" => addr, "n" => 3);
//! ```

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::types::{ClusterId, LeaseId, MemberId, RaftIndex, ReactorId, Revision, ShardId, Term};

/// A log level, ordered from most to least verbose. Names are zap's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for developers.
    Debug = 0,
    /// Normal operation.
    Info = 1,
    /// Something unexpected that the server survives.
    Warn = 2,
    /// An operation failed.
    Error = 3,
    /// zap's panic level (accepted by `--log-level`; corekv logs at it rarely).
    Panic = 4,
    /// zap's fatal level: the process is about to exit.
    Fatal = 5,
}

impl Level {
    /// The name as it appears in the `"level"` field and in `--log-level`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Panic => "panic",
            Level::Fatal => "fatal",
        }
    }

    const fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Debug,
            1 => Level::Info,
            2 => Level::Warn,
            3 => Level::Error,
            4 => Level::Panic,
            _ => Level::Fatal,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = LogError;

    /// Parses etcd's `--log-level` values (case-insensitive, as zap is).
    fn from_str(s: &str) -> Result<Level, LogError> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            "panic" | "dpanic" => Ok(Level::Panic),
            "fatal" => Ok(Level::Fatal),
            _ => Err(LogError::UnknownLevel(s.to_string())),
        }
    }
}

/// Where log lines go (`--log-outputs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard error (etcd's `stderr` and `default`).
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, opened for appending and created if missing.
    File(PathBuf),
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Stderr => f.write_str("stderr"),
            Output::Stdout => f.write_str("stdout"),
            Output::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why the logger could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `--log-level` named no known level.
    #[error("--log-level: unknown level {0:?} (want debug, info, warn, error, panic or fatal)")]
    UnknownLevel(String),
    /// A file named in `--log-outputs` could not be opened for appending.
    #[error("--log-outputs: cannot open {} for appending: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `--log-outputs` named no output at all.
    #[error("--log-outputs: no output given (use stderr, stdout or a file path)")]
    NoOutputs,
    /// [`init`] was called a second time.
    #[error("the logger is already initialised")]
    AlreadyInitialised,
}

/// One destination, opened.
enum Sink {
    Stderr,
    Stdout,
    File(File),
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(line),
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line)?;
                out.flush()
            }
            // One write(2) per line with O_APPEND: lines from several
            // processes sharing a file do not interleave mid-line.
            Sink::File(f) => f.write_all(line),
        }
    }
}

/// The minimum level that is written. Info until [`init`] says otherwise.
static MIN_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// The outputs, once [`init`] has run; before that lines go to stderr.
static SINKS: OnceLock<Mutex<Vec<Sink>>> = OnceLock::new();

/// Sets the process-wide level and outputs. Call once, early in `main`.
///
/// Every file is opened before anything changes, so a failure leaves the
/// default logger (info, stderr) in place. Lines logged before `init` go to
/// stderr at level info.
pub fn init(level: Level, outputs: &[Output]) -> Result<(), LogError> {
    if outputs.is_empty() {
        return Err(LogError::NoOutputs);
    }
    if SINKS.get().is_some() {
        return Err(LogError::AlreadyInitialised);
    }
    let mut sinks = Vec::with_capacity(outputs.len());
    for out in outputs {
        sinks.push(match out {
            Output::Stderr => Sink::Stderr,
            Output::Stdout => Sink::Stdout,
            Output::File(path) => Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LogError::Open { path: path.clone(), source })?,
            ),
        });
    }
    SINKS.set(Mutex::new(sinks)).map_err(|_| LogError::AlreadyInitialised)?;
    MIN_LEVEL.store(level as u8, Ordering::Relaxed);
    Ok(())
}

/// The level currently in force.
pub fn level() -> Level {
    Level::from_u8(MIN_LEVEL.load(Ordering::Relaxed))
}

/// Whether a line at `level` would be written. The macros check this before
/// evaluating anything else.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line at `level` if that level is enabled. The macros call this;
/// call it directly when the fields are only known at run time.
///
/// Never panics and never fails: a write error on one output is dropped (there
/// is nowhere left to report it).
pub fn emit(level: Level, caller: &str, msg: &str, fields: &[(&str, &dyn LogValue)]) {
    if !enabled(level) {
        return;
    }
    let line = format_line(SystemTime::now(), level, caller, msg, fields);
    match SINKS.get() {
        Some(sinks) => {
            let mut sinks = sinks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for sink in sinks.iter_mut() {
                let _ = sink.write_line(line.as_bytes());
            }
        }
        None => {
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Formats one log line, newline included. Pure: the clock is an argument.
pub fn format_line(now: SystemTime, level: Level, caller: &str, msg: &str, fields: &[(&str, &dyn LogValue)]) -> String {
    let mut out = String::with_capacity(96 + msg.len() + 24 * fields.len());
    out.push_str("{\"level\":\"");
    out.push_str(level.as_str());
    out.push_str("\",\"ts\":\"");
    write_rfc3339_millis(now, &mut out);
    out.push_str("\",\"caller\":");
    write_json_str(short_caller(caller), &mut out);
    out.push_str(",\"msg\":");
    write_json_str(msg, &mut out);
    for (key, value) in fields {
        out.push(',');
        write_json_str(key, &mut out);
        out.push(':');
        value.write_json(&mut out);
    }
    out.push_str("}\n");
    out
}

/// `src/node/mod.rs:42` becomes `node/mod.rs:42`, like zap's short caller.
fn short_caller(caller: &str) -> &str {
    if let Some(rest) = caller.strip_prefix("src/") {
        return rest;
    }
    match caller.rfind("/src/") {
        Some(at) => &caller[at + "/src/".len()..],
        None => caller,
    }
}

/// Writes `t` as RFC 3339 UTC with milliseconds: `2026-11-25T13:44:01.123Z`.
/// Times before 1970 are written as the epoch.
pub fn write_rfc3339_millis(t: SystemTime, out: &mut String) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        since.subsec_millis()
    );
}

/// Converts a count of days since 1970-01-01 to a proleptic Gregorian date.
///
/// Works in 400-year eras (146097 days each) counted from 0000-03-01, so that
/// the leap day is the last day of its "year" and needs no special case.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    const EPOCH_SHIFT: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let z = days + EPOCH_SHIFT;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z % DAYS_PER_ERA;
    // Leap days are every 4 years except every 100, except every 400.
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 31,30,31,30,31,31,30,31,30,31,31,28/29 repeat in a
    // 153-day five-month pattern.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `s` as a JSON string with zap's escaping: `"` and `\` escaped,
/// `\n` `\r` `\t` short, other control characters as `\u00XX`.
pub fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a duration as Go's `time.Duration.String()` does (`1.5s`, `100ms`,
/// `1h0m0s`), which is how etcd's logs show durations.
pub fn write_go_duration(d: Duration, out: &mut String) {
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    let ns = d.as_nanos();
    if ns == 0 {
        out.push_str("0s");
    } else if ns < US {
        let _ = write!(out, "{ns}ns");
    } else if ns < MS {
        write_fraction(ns, US, 3, out);
        out.push_str("µs");
    } else if ns < S {
        write_fraction(ns, MS, 6, out);
        out.push_str("ms");
    } else {
        let hours = ns / (3600 * S);
        let minutes = ns / (60 * S) % 60;
        if hours > 0 {
            let _ = write!(out, "{hours}h{minutes}m");
        } else if minutes > 0 {
            let _ = write!(out, "{minutes}m");
        }
        write_fraction(ns % (60 * S), S, 9, out);
        out.push('s');
    }
}

/// `value / unit` with the remainder as decimals, trailing zeros dropped.
fn write_fraction(value: u128, unit: u128, digits: usize, out: &mut String) {
    let whole = value / unit;
    let rest = value % unit;
    let _ = write!(out, "{whole}");
    if rest != 0 {
        let mut frac = format!("{rest:0digits$}");
        while frac.ends_with('0') {
            frac.pop();
        }
        out.push('.');
        out.push_str(&frac);
    }
}

/// A value that can be a log field. Implemented for strings, numbers, bools,
/// durations, paths, addresses, the ID newtypes, slices and options of these;
/// wrap any other `Display` type in [`display`].
pub trait LogValue {
    /// Appends the value as JSON.
    fn write_json(&self, out: &mut String);
}

impl<T: LogValue + ?Sized> LogValue for &T {
    fn write_json(&self, out: &mut String) {
        (**self).write_json(out);
    }
}

impl LogValue for str {
    fn write_json(&self, out: &mut String) {
        write_json_str(self, out);
    }
}

impl LogValue for String {
    fn write_json(&self, out: &mut String) {
        write_json_str(self, out);
    }
}

impl LogValue for char {
    fn write_json(&self, out: &mut String) {
        let mut buf = [0u8; 4];
        write_json_str(self.encode_utf8(&mut buf), out);
    }
}

impl LogValue for bool {
    fn write_json(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

macro_rules! integer_log_values {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn write_json(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_log_values!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

macro_rules! float_log_values {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn write_json(&self, out: &mut String) {
                // JSON has no NaN or infinities; zap writes them as strings.
                if self.is_nan() {
                    out.push_str("\"NaN\"");
                } else if self.is_infinite() {
                    out.push_str(if *self > 0.0 { "\"+Inf\"" } else { "\"-Inf\"" });
                } else {
                    let _ = write!(out, "{self}");
                }
            }
        }
    )*};
}
float_log_values!(f32, f64);

impl<T: LogValue> LogValue for Option<T> {
    fn write_json(&self, out: &mut String) {
        match self {
            Some(v) => v.write_json(out),
            None => out.push_str("null"),
        }
    }
}

impl<T: LogValue> LogValue for [T] {
    fn write_json(&self, out: &mut String) {
        out.push('[');
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write_json(out);
        }
        out.push(']');
    }
}

impl<T: LogValue> LogValue for Vec<T> {
    fn write_json(&self, out: &mut String) {
        self.as_slice().write_json(out);
    }
}

impl LogValue for Duration {
    fn write_json(&self, out: &mut String) {
        out.push('"');
        write_go_duration(*self, out);
        out.push('"');
    }
}

impl LogValue for Path {
    fn write_json(&self, out: &mut String) {
        write_json_str(&self.to_string_lossy(), out);
    }
}

impl LogValue for PathBuf {
    fn write_json(&self, out: &mut String) {
        self.as_path().write_json(out);
    }
}

impl LogValue for io::Error {
    fn write_json(&self, out: &mut String) {
        write_json_str(&self.to_string(), out);
    }
}

impl LogValue for Level {
    fn write_json(&self, out: &mut String) {
        write_json_str(self.as_str(), out);
    }
}

impl LogValue for Output {
    fn write_json(&self, out: &mut String) {
        write_json_str(&self.to_string(), out);
    }
}

macro_rules! display_log_values {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn write_json(&self, out: &mut String) {
                write_json_str(&self.to_string(), out);
            }
        }
    )*};
}
display_log_values!(SocketAddr, IpAddr);

// etcd prints member and cluster IDs as lower-case hex without padding.
impl LogValue for MemberId {
    fn write_json(&self, out: &mut String) {
        let _ = write!(out, "\"{:x}\"", self.get());
    }
}

impl LogValue for ClusterId {
    fn write_json(&self, out: &mut String) {
        let _ = write!(out, "\"{:x}\"", self.get());
    }
}

macro_rules! newtype_log_values {
    ($($t:ty),*) => {$(
        impl LogValue for $t {
            fn write_json(&self, out: &mut String) {
                self.get().write_json(out);
            }
        }
    )*};
}
newtype_log_values!(Revision, RaftIndex, Term, LeaseId, ReactorId, ShardId);

/// A field value written through its `Display` impl, as a JSON string.
pub struct Disp<T>(pub T);

impl<T: fmt::Display> LogValue for Disp<T> {
    fn write_json(&self, out: &mut String) {
        write_json_str(&self.0.to_string(), out);
    }
}

/// Wraps any `Display` value for use as a log field:
/// `log_warn!("bad peer", "addr" => log::display(&addr))`.
pub fn display<T: fmt::Display>(value: T) -> Disp<T> {
    Disp(value)
}

/// Logs at an explicit level; the `log_*!` macros expand to this.
#[doc(hidden)]
#[macro_export]
macro_rules! log_at {
    ($level:expr, $msg:expr $(, $key:expr => $val:expr)* $(,)?) => {{
        let level = $level;
        if $crate::log::enabled(level) {
            $crate::log::emit(
                level,
                ::core::concat!(::core::file!(), ":", ::core::line!()),
                ::core::convert::AsRef::<str>::as_ref(&$msg),
                &[$(($key, &$val as &dyn $crate::log::LogValue)),*],
            );
        }
    }};
}

/// Logs at debug level: `log_debug!("msg", "key" => value, ...)`.
#[macro_export]
macro_rules! log_debug {
    ($($args:tt)+) => { $crate::log_at!($crate::log::Level::Debug, $($args)+) };
}

/// Logs at info level: `log_info!("msg", "key" => value, ...)`.
#[macro_export]
macro_rules! log_info {
    ($($args:tt)+) => { $crate::log_at!($crate::log::Level::Info, $($args)+) };
}

/// Logs at warn level: `log_warn!("msg", "key" => value, ...)`.
#[macro_export]
macro_rules! log_warn {
    ($($args:tt)+) => { $crate::log_at!($crate::log::Level::Warn, $($args)+) };
}

/// Logs at error level: `log_error!("msg", "key" => value, ...)`.
#[macro_export]
macro_rules! log_error {
    ($($args:tt)+) => { $crate::log_at!($crate::log::Level::Error, $($args)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, millis * 1_000_000)
    }

    fn ts(secs: u64, millis: u32) -> String {
        let mut s = String::new();
        write_rfc3339_millis(at(secs, millis), &mut s);
        s
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
        // Values checked with `date -u -d @N`.
        assert_eq!(ts(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(ts(951_868_799, 999), "2000-02-29T23:59:59.999Z");
        assert_eq!(ts(1_709_164_800, 0), "2024-02-29T00:00:00.000Z");
        assert_eq!(ts(1_798_242_241, 123), "2026-12-25T23:44:01.123Z");
        assert_eq!(ts(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
        assert_eq!(ts(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn timestamps_before_the_epoch_clamp_to_it() {
        let mut s = String::new();
        write_rfc3339_millis(UNIX_EPOCH - Duration::from_secs(5), &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_line_has_zaps_field_order_and_ends_with_a_newline() {
        let addr = "127.0.0.1:2379";
        let line = format_line(
            at(1_764_078_241, 123),
            Level::Info,
            "src/api/server.rs:42",
            "ready to serve client requests",
            &[("address", &addr), ("n", &3), ("ok", &true)],
        );
        assert_eq!(
            line,
            "{\"level\":\"info\",\"ts\":\"2025-11-25T13:44:01.123Z\",\
             \"caller\":\"api/server.rs:42\",\"msg\":\"ready to serve client requests\",\
             \"address\":\"127.0.0.1:2379\",\"n\":3,\"ok\":true}\n"
        );
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut s = String::new();
        write_json_str("a\"b\\c\nd\re\tf\u{1}g\u{1f}h\u{7f}é✓", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001fh\u{7f}é✓\"");
        let line = format_line(UNIX_EPOCH, Level::Warn, "x", "m\"\n", &[("k\"", &"v\u{0}")]);
        assert!(line.contains("\"msg\":\"m\\\"\\n\""));
        assert!(line.contains("\"k\\\"\":\"v\\u0000\""));
    }

    #[test]
    fn field_values_of_many_types_are_valid_json() {
        let path = PathBuf::from("/var/lib/corekv");
        let none: Option<u32> = None;
        let fields: [(&str, &dyn LogValue); 12] = [
            ("s", &String::from("x")),
            ("neg", &-5i64),
            ("f", &1.5f64),
            ("nan", &f64::NAN),
            ("d", &Duration::from_millis(1500)),
            ("p", &path),
            ("none", &none),
            ("list", &vec!["a", "b"]),
            ("member", &MemberId(0x8e9e05c52164694d)),
            ("rev", &Revision(7)),
            ("addr", &display(SocketAddr::from(([127, 0, 0, 1], 2379)))),
            ("c", &'q'),
        ];
        let line = format_line(UNIX_EPOCH, Level::Debug, "x", "m", &fields);
        assert!(line.ends_with(
            "\"s\":\"x\",\"neg\":-5,\"f\":1.5,\"nan\":\"NaN\",\"d\":\"1.5s\",\
             \"p\":\"/var/lib/corekv\",\"none\":null,\"list\":[\"a\",\"b\"],\
             \"member\":\"8e9e05c52164694d\",\"rev\":7,\"addr\":\"127.0.0.1:2379\",\"c\":\"q\"}\n"
        ));
    }

    #[test]
    fn durations_print_like_go() {
        let go = |d: Duration| {
            let mut s = String::new();
            write_go_duration(d, &mut s);
            s
        };
        assert_eq!(go(Duration::ZERO), "0s");
        assert_eq!(go(Duration::from_nanos(999)), "999ns");
        assert_eq!(go(Duration::from_nanos(162_462)), "162.462µs");
        assert_eq!(go(Duration::from_nanos(1_879_818)), "1.879818ms");
        assert_eq!(go(Duration::from_millis(100)), "100ms");
        assert_eq!(go(Duration::from_secs(1)), "1s");
        assert_eq!(go(Duration::from_secs(60)), "1m0s");
        assert_eq!(go(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(go(Duration::from_millis(3_723_500)), "1h2m3.5s");
    }

    #[test]
    fn callers_are_shortened_to_the_path_below_src() {
        assert_eq!(short_caller("src/node/mod.rs:42"), "node/mod.rs:42");
        assert_eq!(short_caller("/work/main/src/config.rs:7"), "config.rs:7");
        assert_eq!(short_caller("bench/main.rs:3"), "bench/main.rs:3");
    }

    #[test]
    fn levels_parse_like_zap_and_order_by_severity() {
        assert_eq!("debug".parse::<Level>().ok(), Some(Level::Debug));
        assert_eq!("WARN".parse::<Level>().ok(), Some(Level::Warn));
        assert_eq!("fatal".parse::<Level>().ok(), Some(Level::Fatal));
        let err = "verbose".parse::<Level>().err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("--log-level: unknown level \"verbose\" (want debug, info, warn, error, panic or fatal)")
        );
        assert!(Level::Debug < Level::Info && Level::Error < Level::Fatal);
    }

    // The only test that touches the global logger: it appends to a file,
    // filters by level, and refuses a second init.
    #[test]
    fn init_writes_enabled_levels_to_a_file_and_only_once() {
        let dir = std::env::temp_dir().join(format!("corekv-log-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("out.log");
        let _ = std::fs::remove_file(&file);
        assert!(matches!(init(Level::Warn, &[]), Err(LogError::NoOutputs)));
        let missing = dir.join("no/such/dir/x.log");
        let err = init(Level::Warn, &[Output::File(missing.clone())]).err();
        assert!(matches!(err, Some(LogError::Open { ref path, .. }) if *path == missing));
        assert!(init(Level::Warn, &[Output::File(file.clone())]).is_ok());
        assert_eq!(level(), Level::Warn);
        crate::log_info!("hidden", "k" => 1);
        crate::log_warn!(String::from("shown"), "k" => "v", "n" => 2u8,);
        crate::log_error!("also shown");
        assert!(matches!(init(Level::Info, &[Output::Stderr]), Err(LogError::AlreadyInitialised)));
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // Other tests in the crate may log into the same file meanwhile:
        // count only the lines logged from this file.
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("\"caller\":\"log.rs:")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("{\"level\":\"warn\",\"ts\":\""));
        assert!(lines[0].contains("\"caller\":\"log.rs:"));
        assert!(lines[0].ends_with("\"msg\":\"shown\",\"k\":\"v\",\"n\":2}"));
        assert!(lines[1].contains("\"level\":\"error\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
