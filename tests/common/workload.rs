//! A seeded random KV workload as raw protobuf requests, and the replies as
//! comparable values: the differential tests send the same sequence to
//! several servers and compare every reply.
//!
//! The generator tracks the store's revision and compact revision from the
//! replies it is shown, so reads at past revisions, compactions and their
//! errors (compacted, future revision) hit interesting points.

use bytes::Bytes;
use corekv::api::proto::etcdserverpb as pb;

use super::{b, prefix_end, Grpc, Rng, Status};

/// One KV request.
#[derive(Clone, Debug)]
pub enum Req {
    Range(pb::RangeRequest),
    Put(pb::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
}

/// One reply, comparable across servers.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Range(pb::RangeResponse),
    Put(pb::PutResponse),
    Delete(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compact(pb::CompactionResponse),
    Err(Status),
}

impl Reply {
    /// The top-level header's revision of a successful reply.
    pub fn revision(&self) -> Option<i64> {
        let h = match self {
            Reply::Range(r) => &r.header,
            Reply::Put(r) => &r.header,
            Reply::Delete(r) => &r.header,
            Reply::Txn(r) => &r.header,
            Reply::Compact(r) => &r.header,
            Reply::Err(_) => return None,
        };
        h.as_ref().map(|h| h.revision)
    }

    /// The reply without what differs between servers by identity: the
    /// top-level header's cluster and member ids (and, with `term`, the
    /// raft term).
    pub fn normalized(mut self, term: bool) -> Reply {
        let h = match &mut self {
            Reply::Range(r) => &mut r.header,
            Reply::Put(r) => &mut r.header,
            Reply::Delete(r) => &mut r.header,
            Reply::Txn(r) => &mut r.header,
            Reply::Compact(r) => &mut r.header,
            Reply::Err(_) => return self,
        };
        if let Some(h) = h.as_mut() {
            h.cluster_id = 0;
            h.member_id = 0;
            if term {
                h.raft_term = 0;
            }
        }
        self
    }
}

/// Sends `req` and wraps the answer.
pub async fn send(g: &Grpc, req: &Req) -> Reply {
    let r = match req {
        Req::Range(r) => g.range(r).await.map(Reply::Range),
        Req::Put(r) => g.put(r).await.map(Reply::Put),
        Req::Delete(r) => g.delete_range(r).await.map(Reply::Delete),
        Req::Txn(r) => g.txn(r).await.map(Reply::Txn),
        Req::Compact(r) => g.compact(r).await.map(Reply::Compact),
    };
    r.unwrap_or_else(Reply::Err)
}

/// Knobs of a [`Workload`].
#[derive(Clone, Debug)]
pub struct Shape {
    /// The keys requests use.
    pub keys: Vec<Vec<u8>>,
    /// Prefixes for prefix ranges (each non-empty).
    pub prefixes: Vec<Vec<u8>>,
    /// Percent of requests that are deliberately invalid (empty key,
    /// ignore_value with a value, unknown lease, bad revisions).
    pub invalid_percent: u64,
    /// Percent of requests that are compactions.
    pub compact_percent: u64,
}

/// The generator.
pub struct Workload {
    rng: Rng,
    shape: Shape,
    values: Vec<Bytes>,
    /// The store's revision as last seen.
    pub rev: i64,
    /// The last successful compaction's revision (0 if none).
    pub compact_rev: i64,
    pending_compact: Option<i64>,
}

impl Workload {
    pub fn new(seed: u64, shape: Shape) -> Workload {
        assert!(!shape.keys.is_empty() && !shape.prefixes.is_empty());
        let values = (0..6).map(|i| Bytes::from(format!("v{i}"))).chain([Bytes::new()]).collect();
        Workload { rng: Rng::new(seed), shape, values, rev: 1, compact_rev: 0, pending_compact: None }
    }

    /// Feeds back the reply to the request `next` returned last.
    pub fn observe(&mut self, reply: &Reply) {
        if let Some(r) = reply.revision() {
            self.rev = self.rev.max(r);
        }
        if let (Some(c), Reply::Compact(_)) = (self.pending_compact.take(), reply) {
            self.compact_rev = self.compact_rev.max(c);
        }
    }

    fn key(&mut self) -> Bytes {
        let k = self.rng.pick(&self.shape.keys).clone();
        Bytes::from(k)
    }

    fn value(&mut self) -> Bytes {
        self.rng.pick(&self.values).clone()
    }

    /// A key and a range end: one key, a prefix, from a key, or up to
    /// another key (which may lie below the start: an empty range).
    fn range(&mut self) -> (Bytes, Bytes) {
        self.range_for(false)
    }

    /// As `range`; for a delete, wide ranges (everything, from a key) are
    /// rarer so the store does not stay empty.
    fn range_for(&mut self, delete: bool) -> (Bytes, Bytes) {
        let pick = self.rng.below(6);
        let pick = if delete && (pick == 3 || pick == 5) && self.rng.chance(80) { 0 } else { pick };
        match pick {
            0 | 1 => (self.key(), Bytes::new()),
            2 => {
                let p = self.rng.pick(&self.shape.prefixes).clone();
                let end = prefix_end(&p);
                (Bytes::from(p), Bytes::from(end))
            }
            3 => (self.key(), b("\0")),
            4 => (self.key(), self.key()),
            _ => {
                if self.rng.chance(50) {
                    (b("\0"), b("\0"))
                } else {
                    let k = self.key();
                    (k.clone(), Bytes::from(prefix_end(&k)))
                }
            }
        }
    }

    /// A revision to read at: mostly the newest, else one between the
    /// compact revision and now, sometimes (when `invalid`) a compacted or
    /// future one.
    fn read_revision(&mut self, invalid: bool) -> i64 {
        if invalid {
            if self.compact_rev > 1 && self.rng.chance(50) {
                return self.rng.range_i64(1, self.compact_rev - 1);
            }
            return self.rev + self.rng.range_i64(1, 3);
        }
        if self.rng.chance(60) {
            0
        } else {
            self.rng.range_i64(self.compact_rev.max(1), self.rev)
        }
    }

    fn range_req(&mut self, invalid: bool) -> pb::RangeRequest {
        let (key, range_end) = self.range();
        let mut r = pb::RangeRequest { key, range_end, ..Default::default() };
        r.revision = self.read_revision(invalid);
        if self.rng.chance(30) {
            r.limit = self.rng.range_i64(1, 4);
        }
        if self.rng.chance(35) {
            r.sort_order = self.rng.range_i64(0, 2) as i32;
            r.sort_target = self.rng.range_i64(0, 4) as i32;
        }
        r.keys_only = self.rng.chance(15);
        r.count_only = self.rng.chance(10);
        r.serializable = self.rng.chance(20);
        let around = |w: &mut Workload| w.rng.range_i64(0, w.rev + 1);
        if self.rng.chance(10) {
            r.min_mod_revision = around(self);
        }
        if self.rng.chance(10) {
            r.max_mod_revision = around(self);
        }
        if self.rng.chance(10) {
            r.min_create_revision = around(self);
        }
        if self.rng.chance(10) {
            r.max_create_revision = around(self);
        }
        r
    }

    fn put_req(&mut self, key: Bytes, invalid: bool) -> pb::PutRequest {
        let mut p = pb::PutRequest { key, value: self.value(), ..Default::default() };
        p.prev_kv = self.rng.chance(30);
        if self.rng.chance(8) {
            p.ignore_value = true;
            p.value = Bytes::new();
        }
        p.ignore_lease = self.rng.chance(8);
        if invalid {
            match self.rng.below(3) {
                0 => p.key = Bytes::new(),
                1 => {
                    p.ignore_value = true;
                    p.value = b("x");
                }
                _ => p.lease = self.rng.range_i64(1, 1000),
            }
        }
        p
    }

    fn delete_req(&mut self, invalid: bool) -> pb::DeleteRangeRequest {
        let (key, range_end) = self.range_for(true);
        let key = if invalid { Bytes::new() } else { key };
        pb::DeleteRangeRequest { key, range_end, prev_kv: self.rng.chance(50) }
    }

    fn compare(&mut self) -> pb::Compare {
        use pb::compare::TargetUnion as U;
        let key = self.key();
        let range_end = if self.rng.chance(25) { self.range().1 } else { Bytes::new() };
        let result = self.rng.range_i64(0, 3) as i32;
        let target = self.rng.range_i64(0, 4) as i32;
        let near = |w: &mut Workload| w.rng.range_i64(0, w.rev + 1);
        let target_union = Some(match target {
            0 => U::Version(self.rng.range_i64(0, 4)),
            1 => U::CreateRevision(near(self)),
            2 => U::ModRevision(near(self)),
            3 => U::Value(self.value()),
            _ => U::Lease(self.rng.range_i64(-1, 1)),
        });
        pb::Compare { result, target, key, range_end, target_union }
    }

    /// A Txn whose branches do not write a key twice (mostly: nested
    /// deletes may still overlap, which etcd refuses as a duplicate).
    fn txn_req(&mut self, depth: u32, used: &mut Vec<Bytes>, invalid: bool) -> pb::TxnRequest {
        let compare = (0..self.rng.below(4)).map(|_| self.compare()).collect();
        let success = self.branch(depth, used, invalid);
        // The branches exclude each other: the failure branch may reuse
        // the success branch's keys, not those of enclosing txns.
        let mut used_else = used.clone();
        let failure = self.branch(depth, &mut used_else, false);
        used.extend(used_else);
        used.sort();
        used.dedup();
        pb::TxnRequest { compare, success, failure }
    }

    fn branch(&mut self, depth: u32, used: &mut Vec<Bytes>, invalid: bool) -> Vec<pb::RequestOp> {
        use pb::request_op::Request as R;
        let n = self.rng.below(5);
        let ranged_deletes = self.rng.chance(30);
        let mut ops = Vec::new();
        for i in 0..n {
            let bad = invalid && i == 0;
            let op = match self.rng.below(10) {
                0..=3 if !ranged_deletes => {
                    let Some(k) = self.fresh_key(used) else { continue };
                    R::RequestPut(self.put_req(k, bad))
                }
                4 | 5 => {
                    if ranged_deletes {
                        R::RequestDeleteRange(self.delete_req(bad))
                    } else {
                        let Some(k) = self.fresh_key(used) else { continue };
                        R::RequestDeleteRange(pb::DeleteRangeRequest {
                            key: k,
                            range_end: Bytes::new(),
                            prev_kv: self.rng.chance(50),
                        })
                    }
                }
                6 if depth < 2 && !ranged_deletes => R::RequestTxn(self.txn_req(depth + 1, used, bad)),
                _ => R::RequestRange(self.range_req(bad)),
            };
            ops.push(pb::RequestOp { request: Some(op) });
        }
        ops
    }

    fn fresh_key(&mut self, used: &mut Vec<Bytes>) -> Option<Bytes> {
        for _ in 0..8 {
            let k = self.key();
            if !used.contains(&k) {
                used.push(k.clone());
                return Some(k);
            }
        }
        None
    }

    /// The next request.
    pub fn next(&mut self) -> Req {
        let invalid = self.rng.chance(self.shape.invalid_percent);
        if self.rng.chance(self.shape.compact_percent) {
            let revision = if invalid {
                if self.rng.chance(50) {
                    self.compact_rev
                } else {
                    self.rev + 1
                }
            } else {
                // Mostly into the older half of the history, so reads at
                // past revisions keep something to read.
                let newest = if self.rng.chance(80) { (self.compact_rev + self.rev) / 2 } else { self.rev };
                self.rng.range_i64(self.compact_rev + 1, newest.max(self.compact_rev + 1))
            };
            self.pending_compact = Some(revision);
            return Req::Compact(pb::CompactionRequest { revision, physical: self.rng.chance(50) });
        }
        match self.rng.below(100) {
            0..=39 => {
                let k = self.key();
                Req::Put(self.put_req(k, invalid))
            }
            40..=49 => Req::Delete(self.delete_req(invalid)),
            50..=69 => Req::Range(self.range_req(invalid)),
            _ => Req::Txn(self.txn_req(0, &mut Vec::new(), invalid)),
        }
    }
}

/// Every key of the store at `revision` (0: now), with all fields.
pub fn dump_at(revision: i64) -> Req {
    Req::Range(pb::RangeRequest { key: b("\0"), range_end: b("\0"), revision, ..Default::default() })
}

/// The keys a request writes or deletes (ranges as their start and end),
/// for coverage statistics: every key and range end it names.
pub fn written_keys(req: &Req) -> Vec<(Bytes, Bytes)> {
    fn ops(out: &mut Vec<(Bytes, Bytes)>, list: &[pb::RequestOp]) {
        use pb::request_op::Request as R;
        for op in list {
            match &op.request {
                Some(R::RequestPut(p)) => out.push((p.key.clone(), Bytes::new())),
                Some(R::RequestDeleteRange(d)) => out.push((d.key.clone(), d.range_end.clone())),
                Some(R::RequestTxn(t)) => {
                    ops(out, &t.success);
                    ops(out, &t.failure);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match req {
        Req::Put(p) => out.push((p.key.clone(), Bytes::new())),
        Req::Delete(d) => out.push((d.key.clone(), d.range_end.clone())),
        Req::Txn(t) => {
            ops(&mut out, &t.success);
            ops(&mut out, &t.failure);
        }
        _ => {}
    }
    out
}
