//! What the apply engine needs from a shard's lease table.
//!
//! Every shard keeps the whole table (lease IDs and TTLs: commands check
//! them) and the keys of its own range attached to each lease (a revoke
//! deletes them). Changes come only from applying the log, so every shard's
//! table is the same at the same log position.

/// A lease granted or revoked by an applied command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    /// Granted with this TTL (seconds).
    Granted {
        /// The lease.
        id: i64,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// Revoked (or expired).
    Revoked {
        /// The lease.
        id: i64,
    },
}

/// A shard's lease table, as the apply engine reads and changes it.
pub trait LeaseState {
    /// Whether lease `id` exists.
    fn exists(&self, id: i64) -> bool;
    /// This shard's keys attached to lease `id`, in key order.
    fn attached(&self, id: i64) -> Vec<Vec<u8>>;
    /// Adds lease `id`.
    fn grant(&mut self, id: i64, ttl: i64);
    /// Removes lease `id` (its keys are deleted by the same command).
    fn revoke(&mut self, id: i64);
    /// Records that `key` now carries lease `id`.
    fn attach(&mut self, id: i64, key: &[u8]);
    /// Records that `key` no longer carries lease `id`.
    fn detach(&mut self, id: i64, key: &[u8]);
}
