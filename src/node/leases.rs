//! The node side of leases: grants with a chosen ID, TTL queries with keys
//! gathered from every shard, and the leader's expiry loop.

use std::time::{Duration, Instant};

use super::handle::NodeHandle;
use super::msg::{Answer, Query};
use super::SEQUENCER;
use crate::api::backend::{LeaseGranted, LeaseTtl};
use crate::apply::command::{Command, Item, LeaseGrant, LeaseRevoke, Origin};
use crate::apply::ApplyError;
use crate::types::ReactorId;

/// How often the leader looks for expired leases.
const EXPIRY_CHECK: Duration = Duration::from_millis(100);
/// Most revokes proposed per check (etcd revokes at most 1,000 a second).
const REVOKES_PER_CHECK: usize = 100;
/// Attempts at a node-chosen lease ID that happened to be taken.
const GRANT_ATTEMPTS: usize = 3;

impl NodeHandle {
    /// A lease ID for a grant that did not name one: positive, and unlikely
    /// to be taken (member ID, time and a counter mixed).
    fn new_lease_id(&self) -> i64 {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mix = (self.local().shared.member.get() << 24) ^ (nanos as u64) ^ self.next_seq().rotate_left(40);
        let id = (mix & (i64::MAX as u64)) as i64;
        id.max(1)
    }

    pub(super) async fn grant(self, id: i64, ttl: i64) -> Result<LeaseGranted, ApplyError> {
        let ttl = ttl.max(self.local().shared.min_lease_ttl);
        let attempts = if id == 0 { GRANT_ATTEMPTS } else { 1 };
        let mut last = Err(ApplyError::LeaseExists);
        for _ in 0..attempts {
            let id = if id == 0 { self.new_lease_id() } else { id };
            let o = self.clone().propose_cmd(Command::LeaseGrant(LeaseGrant { id, ttl })).await;
            last = o.result.map(|_| LeaseGranted { id, ttl, revision: o.revision });
            if last != Err(ApplyError::LeaseExists) {
                break;
            }
        }
        last
    }

    pub(super) async fn time_to_live(self, id: i64, keys: bool) -> Option<LeaseTtl> {
        let (granted, remaining) = match self.ask(SEQUENCER, Query::LeaseTimeToLive { id }).await {
            Some(Answer::TimeToLive(t)) => t?,
            _ => return None,
        };
        let mut all = Vec::new();
        if keys {
            let shards = self.local().shared.shards;
            let asks = (0..shards).map(|s| self.ask(ReactorId(s as u16), Query::LeaseKeys { id }));
            for a in futures_util::future::join_all(asks).await {
                if let Some(Answer::Keys(k)) = a {
                    all.extend(k);
                }
            }
            all.sort();
        }
        Some(LeaseTtl { granted, remaining, keys: all })
    }
}

/// The leader's loop: proposes a revoke for every expired lease.
pub(super) async fn expiry_loop(node: NodeHandle) {
    let Some(lessor) = &node.local().lessor else { return };
    // Leases restored from the log get a full TTL from now, as in etcd.
    lessor.borrow_mut().promote(Instant::now());
    let Some(proposals) = node.local().proposals.clone() else { return };
    let shared = &node.local().shared;
    loop {
        monoio::time::sleep(EXPIRY_CHECK).await;
        // Only the leader decides expiry.
        if !node.is_leader() {
            continue;
        }
        let expired = lessor.borrow_mut().take_expired(Instant::now(), REVOKES_PER_CHECK);
        for id in expired {
            // Nobody waits for the outcome: request number 0 is never
            // awaited, and the lessor drops the lease when the revoke applies.
            let origin = Origin { member: shared.member.get(), reactor: SEQUENCER.0, boot: shared.boot, seq: 0 };
            proposals.push(Item { origin, cmd: Command::LeaseRevoke(LeaseRevoke { id }) });
        }
    }
}
