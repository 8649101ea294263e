//! Leases: the replicated lease table every shard keeps ([`LeaseTable`]),
//! and the leader's clock on them ([`Lessor`]).
//!
//! Grants and revokes go through the log, so every shard's table is the
//! same at the same log position; expiry is decided by the leader's lessor
//! and proposed as a revoke. Keep-alives touch only the lessor (memory), as
//! in etcd. Sans-IO: time is passed in (DESIGN §7, STYLE).

mod lessor;
mod table;

pub use lessor::{Lessor, LEASE_TTL_MAX};
pub use table::LeaseTable;
