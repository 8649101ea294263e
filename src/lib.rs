//! corekv: an etcd-compatible, replicated key-value store built as an
//! io_uring thread-per-core server. ARCHITECTURE.md is the code map.

pub mod types;
#[macro_use]
pub mod log;
pub mod api;
pub mod apply;
pub mod btree;
pub mod config;
pub mod hwcheck;
pub mod lease;
pub mod mvcc;
pub mod node;
pub mod raft;
pub mod runtime;
pub mod snapshot;
pub mod transport;
pub mod wal;
pub mod watch;
