//! raft-rs logs through `slog`; this drain hands its records to `crate::log`
//! (or drops them), so consensus events land in the node's structured log.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

use crate::log::{self, Level};

/// Where raft-rs's own log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RaftLogging {
    /// Nowhere (tests, the simulator).
    #[default]
    Discard,
    /// To the process's structured log (`crate::log`), at raft-rs's level
    /// mapped to ours: critical and error to error, warning to warn, info to
    /// info, debug and trace to debug.
    CrateLog,
}

/// Builds the slog logger raft-rs wants.
pub(super) fn logger(how: RaftLogging, member: u64) -> slog::Logger {
    match how {
        RaftLogging::Discard => slog::Logger::root(slog::Discard, slog::o!()),
        RaftLogging::CrateLog => slog::Logger::root(Bridge { member }, slog::o!()),
    }
}

struct Bridge {
    member: u64,
}

impl Drain for Bridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => Level::Error,
            slog::Level::Warning => Level::Warn,
            slog::Level::Info => Level::Info,
            slog::Level::Debug | slog::Level::Trace => Level::Debug,
        };
        if !log::enabled(level) {
            return Ok(());
        }
        let msg = record.msg().to_string();
        let mut kv = KvLine(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let fields = kv.0.trim_end().to_string();
        log::emit(level, "raft-rs", &msg, &[("member", &self.member), ("raft", &fields)]);
        Ok(())
    }
}

/// Collects slog key-value pairs as `key=value` words.
struct KvLine(String);

impl Serializer for KvLine {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, "{key}={val} ");
        Ok(())
    }
}
