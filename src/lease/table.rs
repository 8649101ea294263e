//! One shard's copy of the lease table.

use std::collections::{BTreeSet, HashMap};

use crate::apply::LeaseState;

/// Lease IDs with their TTLs, and this shard's keys attached to each.
#[derive(Debug, Default)]
pub struct LeaseTable {
    ttl: HashMap<i64, i64>,
    keys: HashMap<i64, BTreeSet<Vec<u8>>>,
}

impl LeaseTable {
    /// The granted TTL of lease `id`, if it exists.
    pub fn ttl(&self, id: i64) -> Option<i64> {
        self.ttl.get(&id).copied()
    }

    /// Every lease with its TTL, by ID.
    pub fn all(&self) -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = self.ttl.iter().map(|(id, ttl)| (*id, *ttl)).collect();
        v.sort_unstable();
        v
    }

    /// Every lease ID, ascending.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.ttl.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

impl LeaseState for LeaseTable {
    fn exists(&self, id: i64) -> bool {
        self.ttl.contains_key(&id)
    }

    fn attached(&self, id: i64) -> Vec<Vec<u8>> {
        self.keys.get(&id).map(|k| k.iter().cloned().collect()).unwrap_or_default()
    }

    fn grant(&mut self, id: i64, ttl: i64) {
        self.ttl.insert(id, ttl);
    }

    fn revoke(&mut self, id: i64) {
        self.ttl.remove(&id);
        self.keys.remove(&id);
    }

    fn attach(&mut self, id: i64, key: &[u8]) {
        self.keys.entry(id).or_default().insert(key.to_vec());
    }

    fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(keys) = self.keys.get_mut(&id) {
            keys.remove(key);
            if keys.is_empty() {
                self.keys.remove(&id);
            }
        }
    }
}
