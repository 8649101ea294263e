//! Turning committed batches into MVCC changes and replies.
//!
//! Owns: the command types a log entry carries ([`command`]), the range map
//! ([`rangemap`]), the deterministic parallel apply of a batch on one shard
//! ([`engine`], with the evaluation rules in [`eval`]) and reads on a shard
//! ([`range`]). Knows revisions, keys and etcd's request semantics; never
//! knows where batches come from (Raft, the WAL, a test) or how exchanges
//! travel between shards: the caller moves them (DESIGN §4, §9).

pub mod command;
pub mod engine;
pub mod eval;
pub mod lease;
pub mod range;
pub mod rangemap;
pub mod reply;
#[cfg(test)]
mod tests;

pub use engine::{Applied, BatchRun, Exchange, Reply};
pub use eval::{ApplyError, Part};
pub use lease::{LeaseChange, LeaseState};
pub use rangemap::RangeMap;
pub use reply::{merge, Outcome, Response};
