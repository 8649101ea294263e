//! The leader's clock on leases: when each expires, keep-alives, and which
//! expired leases to revoke next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// etcd's largest lease TTL, seconds.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

#[derive(Debug)]
struct Entry {
    ttl: i64,
    expiry: Instant,
    /// A revoke for it has been proposed and not applied yet.
    revoking: bool,
}

/// Expiry times of the leases, on the member that proposes revokes.
#[derive(Debug)]
pub struct Lessor {
    min_ttl: i64,
    leases: HashMap<i64, Entry>,
}

impl Lessor {
    /// A lessor whose leases live at least `min_ttl` seconds (etcd raises
    /// shorter TTLs to it: 1.5 election timeouts, rounded up).
    pub fn new(min_ttl: i64) -> Lessor {
        Lessor { min_ttl, leases: HashMap::new() }
    }

    /// etcd's minimum lease TTL for an election timeout and heartbeat.
    pub fn min_ttl_for(election: Duration, heartbeat: Duration) -> i64 {
        let ticks = (election.as_millis() / heartbeat.as_millis().max(1)) as u64;
        let min = heartbeat * (3 * ticks / 2) as u32;
        min.as_secs() as i64 + i64::from(min.subsec_nanos() > 0)
    }

    /// The TTL a grant asking for `ttl` gets.
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.min_ttl)
    }

    /// Forgets every lease and takes `leases` (ID, TTL) with fresh expiry
    /// times: the state a snapshot brought.
    pub fn reset(&mut self, leases: &[(i64, i64)], now: Instant) {
        self.leases.clear();
        for &(id, ttl) in leases {
            self.granted(id, ttl, now);
        }
    }

    /// A grant was applied.
    pub fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        let expiry = now + secs(ttl);
        self.leases.insert(id, Entry { ttl, expiry, revoking: false });
    }

    /// A revoke was applied.
    pub fn revoked(&mut self, id: i64) {
        self.leases.remove(&id);
    }

    /// Renews lease `id`; its TTL, or `None` if it does not exist.
    pub fn keep_alive(&mut self, id: i64, now: Instant) -> Option<i64> {
        let e = self.leases.get_mut(&id)?;
        if e.revoking {
            return None;
        }
        e.expiry = now + secs(e.ttl);
        Some(e.ttl)
    }

    /// Granted TTL and remaining seconds (rounded up) of lease `id`.
    pub fn time_to_live(&self, id: i64, now: Instant) -> Option<(i64, i64)> {
        let e = self.leases.get(&id)?;
        let left = e.expiry.saturating_duration_since(now);
        let left = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Some((e.ttl, left))
    }

    /// Every lease ID, ascending.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Up to `max` expired leases not yet being revoked, marked as being
    /// revoked.
    pub fn take_expired(&mut self, now: Instant, max: usize) -> Vec<i64> {
        let mut out: Vec<i64> =
            self.leases.iter().filter(|(_, e)| !e.revoking && e.expiry <= now).map(|(id, _)| *id).collect();
        out.sort_unstable();
        out.truncate(max);
        for id in &out {
            if let Some(e) = self.leases.get_mut(id) {
                e.revoking = true;
            }
        }
        out
    }

    /// A proposed revoke failed or was lost: let the lease expire again.
    pub fn retry(&mut self, id: i64) {
        if let Some(e) = self.leases.get_mut(&id) {
            e.revoking = false;
        }
    }

    /// Gives every lease a full TTL from `now`, as etcd does when a member
    /// becomes leader (or restarts).
    pub fn promote(&mut self, now: Instant) {
        for e in self.leases.values_mut() {
            e.expiry = now + secs(e.ttl);
            e.revoking = false;
        }
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.clamp(0, LEASE_TTL_MAX) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(Lessor::min_ttl_for(Duration::from_millis(1000), Duration::from_millis(100)), 2);
        assert_eq!(Lessor::min_ttl_for(Duration::from_millis(5000), Duration::from_millis(500)), 8);
    }

    #[test]
    fn keep_alive_pushes_expiry_and_expired_leases_are_taken_once() {
        let t0 = Instant::now();
        let mut l = Lessor::new(2);
        l.granted(7, 5, t0);
        l.granted(8, 5, t0);
        assert_eq!(l.keep_alive(7, t0 + secs(4)), Some(5));
        assert_eq!(l.take_expired(t0 + secs(6), 10), vec![8]);
        assert_eq!(l.take_expired(t0 + secs(6), 10), Vec::<i64>::new(), "already being revoked");
        assert_eq!(l.keep_alive(8, t0 + secs(6)), None, "no keep-alive for a lease being revoked");
        assert_eq!(l.time_to_live(7, t0 + secs(6)), Some((5, 3)));
        l.revoked(8);
        assert_eq!(l.ids(), vec![7]);
        assert_eq!(l.keep_alive(99, t0), None);
    }
}
