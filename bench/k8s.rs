//! The `k8s` workload's shape, sans-IO: the requests kube-apiserver's etcd3
//! storage sends, mixed in one run, and what their replies mean.
//!
//! Keys are `<prefix><resource>/ns-<n>/obj-<m>` (`--prefix` defaults to
//! `/registry/`): `--k8s-resources` × `--k8s-namespaces` × `--k8s-objects`
//! keys. Key number `i` is resource `i mod R`, namespace `(i / R) mod N`,
//! object `i / (R N)`, so keys `0..n` spread over every resource and
//! namespace (the preload fills the first half of the objects of each).
//!
//! Operations, picked by `--k8s-mix` weights:
//!
//! - create: `Txn(mod_revision(key) == 0 -> Put(key, value, lease?), else Range(key))`;
//! - update: `Txn(mod_revision(key) == R -> Put(key, value, lease?), else Range(key))`,
//!   R the revision this generator last saw for the key (GuaranteedUpdate);
//! - delete: `Txn(mod_revision(key) == R -> DeleteRange(key), else Range(key))`;
//! - get: `Range(key)`;
//! - list: `Range(resource prefix, limit)`, then the next pages from
//!   `last key + "\0"` at the first page's header revision until `more` is
//!   false (GetList with pagination);
//! - count: `Range(resource prefix, count_only)` (the object-count metric).
//!
//! And every `--k8s-compact-interval`, on one thread, the compactor of
//! kube-apiserver (`storage/etcd3/compact.go`): `Txn(version("compact_rev_key")
//! == V -> Put("compact_rev_key", R_prev), else Range("compact_rev_key"))`,
//! then, when the compare held and a revision was recorded one interval
//! before, `Compact(R_prev)`.
//!
//! Each generator thread owns the keys `k` with `k mod threads == thread`
//! and knows each one's mod revision ([`Population`]); a key is taken out
//! while a request on it is in flight, so no two requests of the generator
//! race on a key. A failed compare (a conflict) therefore means that
//! something else wrote the key, or the server forgot a write; it is
//! counted apart from errors and teaches the generator the key's revision.

use bytes::{Bytes, BytesMut};
use corekv::api::proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use prost::Message;

use crate::args::{decimal_digits, K8sOptions, Options};
use crate::keys::{prefix_end, Rng};
use crate::workload::value_bytes;

pub const RANGE: &str = "/etcdserverpb.KV/Range";
pub const TXN: &str = "/etcdserverpb.KV/Txn";
pub const COMPACT: &str = "/etcdserverpb.KV/Compact";
/// The key kube-apiserver's compactors agree through.
pub const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";

/// One kind of operation; a paginated list is one operation of several
/// Range requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Update,
    Delete,
    Get,
    List,
    Count,
    /// The compactor's `compact_rev_key` transaction.
    CompactTxn,
    /// `Compact(revision)`.
    Compact,
}

impl Op {
    /// Every kind, in report order; `Op as usize` indexes per-kind stats.
    pub const ALL: [Op; 8] =
        [Op::Create, Op::Update, Op::Delete, Op::Get, Op::List, Op::Count, Op::CompactTxn, Op::Compact];
    /// The kinds clients pick by weight.
    pub const CLIENT: [Op; 6] = [Op::Create, Op::Update, Op::Delete, Op::Get, Op::List, Op::Count];

    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Get => "get",
            Op::List => "list",
            Op::Count => "count",
            Op::CompactTxn => "compact-txn",
            Op::Compact => "compact",
        }
    }

    /// Every kind's name, indexed like [`Op::ALL`].
    pub fn names() -> [&'static str; 8] {
        Op::ALL.map(Op::name)
    }

    /// The position in [`Op::ALL`] (and in per-kind stats).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Weights of the client operations, indexed like [`Op::CLIENT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    pub weights: [u32; 6],
}

impl Default for Mix {
    /// A busy cluster: mostly updates (status, heartbeats) and gets, some
    /// lists, creates and deletes about even, a few counts.
    fn default() -> Mix {
        Mix { weights: [8, 50, 7, 28, 5, 2] }
    }
}

impl Mix {
    /// `create=10,update=50,...`: the kinds named make the whole mix (the
    /// others get weight 0).
    pub fn parse(spec: &str) -> Result<Mix, String> {
        let mut weights = [0u32; 6];
        let mut seen = [false; 6];
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, weight) =
                item.split_once('=').ok_or_else(|| format!("{item:?} is not kind=weight (e.g. update=50)"))?;
            let slot = Op::CLIENT.iter().position(|op| op.name() == name.trim()).ok_or_else(|| {
                let names: Vec<_> = Op::CLIENT.iter().map(|op| op.name()).collect();
                format!("unknown operation {name:?}; expected one of {}", names.join(", "))
            })?;
            if seen[slot] {
                return Err(format!("{name} is given twice"));
            }
            seen[slot] = true;
            weights[slot] = weight.trim().parse().map_err(|_| format!("{item:?}: the weight is not a whole number"))?;
            if weights[slot] > 1_000_000 {
                return Err(format!("{item:?}: weights go up to 1000000"));
            }
        }
        if weights.iter().all(|&w| w == 0) {
            return Err(format!("{spec:?} gives every operation weight 0"));
        }
        Ok(Mix { weights })
    }

    pub fn weight(&self, op: Op) -> u32 {
        Op::CLIENT.iter().position(|&o| o == op).map_or(0, |i| self.weights[i])
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }

    /// The operation for a uniform draw `r` in `0..total`.
    fn pick(&self, mut r: u64) -> Op {
        for (op, &w) in Op::CLIENT.iter().zip(&self.weights) {
            if r < u64::from(w) {
                return *op;
            }
            r -= u64::from(w);
        }
        unreachable!("a draw below the total weight")
    }

    /// `create=8,update=50,...`, every kind.
    pub fn describe(&self) -> String {
        let items: Vec<String> =
            Op::CLIENT.iter().zip(&self.weights).map(|(op, w)| format!("{}={w}", op.name())).collect();
        items.join(",")
    }
}

/// Where keys live: resources × namespaces × objects.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: Vec<u8>,
    resources: Vec<String>,
    namespaces: u64,
    objects: u64,
    ns_digits: usize,
    obj_digits: usize,
}

impl Layout {
    pub fn new(prefix: &[u8], resources: &[String], namespaces: u64, objects: u64) -> Layout {
        assert!(!resources.is_empty() && namespaces > 0 && objects > 0);
        Layout {
            prefix: prefix.to_vec(),
            resources: resources.to_vec(),
            namespaces,
            objects,
            ns_digits: decimal_digits(namespaces - 1),
            obj_digits: decimal_digits(objects - 1),
        }
    }

    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// Keys in all.
    pub fn keys(&self) -> u64 {
        self.resources.len() as u64 * self.namespaces * self.objects
    }

    /// `(resource, namespace, object)` of key number `index`.
    pub fn parts(&self, index: u64) -> (usize, u64, u64) {
        assert!(index < self.keys(), "key {index} is outside the {} keys", self.keys());
        let r = self.resources.len() as u64;
        ((index % r) as usize, (index / r) % self.namespaces, index / (r * self.namespaces))
    }

    /// Appends key number `index` to `out`.
    pub fn write_key(&self, index: u64, out: &mut BytesMut) {
        let (resource, namespace, object) = self.parts(index);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(self.resources[resource].as_bytes());
        out.extend_from_slice(b"/ns-");
        push_padded(out, namespace, self.ns_digits);
        out.extend_from_slice(b"/obj-");
        push_padded(out, object, self.obj_digits);
    }

    /// Key number `index`.
    #[cfg(test)]
    pub fn key(&self, index: u64) -> Bytes {
        let mut out = BytesMut::new();
        self.write_key(index, &mut out);
        out.freeze()
    }

    /// `<prefix><resource>/`: every key of resource `r`.
    pub fn resource_prefix(&self, r: usize) -> Vec<u8> {
        let mut p = self.prefix.clone();
        p.extend_from_slice(self.resources[r].as_bytes());
        p.push(b'/');
        p
    }

    /// The longest key.
    pub fn max_key_len(&self) -> usize {
        let longest = self.resources.iter().map(String::len).max().unwrap_or(0);
        self.prefix.len() + longest + "/ns-".len() + self.ns_digits + "/obj-".len() + self.obj_digits
    }
}

fn push_padded(out: &mut BytesMut, mut n: u64, digits: usize) {
    let start = out.len();
    out.resize(start + digits, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    debug_assert_eq!(n, 0);
}

/// Which keys' creates (and updates) carry a lease.
#[derive(Clone, Debug, PartialEq)]
enum Leased {
    /// Every key of these resources (by position).
    Resources(Vec<bool>),
    /// This fraction of all keys, picked by a hash of the key number.
    Fraction(f64),
}

/// The workload: layout, mix and request options. Shared read-only by a
/// thread's clients.
#[derive(Clone, Debug)]
pub struct K8s {
    pub layout: Layout,
    pub mix: Mix,
    leased: Leased,
    /// Page size of lists (0: one page).
    pub limit: i64,
    pub serializable: bool,
    value: Bytes,
}

impl K8s {
    pub fn new(options: &Options) -> K8s {
        K8s::from_parts(&options.k8s, &options.prefix, options.val_size, options.limit, options.serializable)
    }

    pub fn from_parts(o: &K8sOptions, prefix: &[u8], val_size: usize, limit: i64, serializable: bool) -> K8s {
        let layout = Layout::new(prefix, &o.resources, o.namespaces, o.objects);
        let leased = match o.lease_fraction {
            Some(fraction) => Leased::Fraction(fraction),
            None => Leased::Resources(o.resources.iter().map(|r| r == "events").collect()),
        };
        K8s { layout, mix: o.mix.clone(), leased, limit, serializable, value: value_bytes(val_size) }
    }

    /// Whether key `index` is written with a lease.
    pub fn leased(&self, index: u64) -> bool {
        match &self.leased {
            Leased::Resources(leased) => leased[self.layout.parts(index).0],
            Leased::Fraction(f) => ((mix64(index) >> 11) as f64 / (1u64 << 53) as f64) < *f,
        }
    }

    /// Whether any key is written with a lease (leases are granted first).
    pub fn uses_leases(&self) -> bool {
        match &self.leased {
            Leased::Resources(leased) => leased.iter().any(|&l| l),
            Leased::Fraction(f) => *f > 0.0,
        }
    }

    /// The lease key `index` is written with, out of `leases` (0: none).
    pub fn lease_of(&self, index: u64, leases: &[i64]) -> i64 {
        if leases.is_empty() || !self.leased(index) {
            return 0;
        }
        leases[(mix64(index ^ 0x5bd1_e995) % leases.len() as u64) as usize]
    }

    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// The request of a keyed operation on key `index`, whose known mod
    /// revision is `revision` (0: absent), encoded in `scratch`.
    pub fn keyed_request(&self, op: Op, index: u64, revision: i64, lease: i64, scratch: &mut BytesMut) -> Bytes {
        scratch.clear();
        self.layout.write_key(index, scratch);
        let key = scratch.split().freeze();
        match op {
            Op::Create => encode(&create_txn(key, self.value.clone(), lease), scratch),
            Op::Update => encode(&update_txn(key, self.value.clone(), lease, revision), scratch),
            Op::Delete => encode(&delete_txn(key, revision), scratch),
            Op::Get => encode(&get_request(key, self.serializable), scratch),
            other => unreachable!("{other:?} names no key"),
        }
    }

    /// A count-only Range over resource `r`.
    pub fn count_request(&self, r: usize, scratch: &mut BytesMut) -> Bytes {
        let prefix = self.layout.resource_prefix(r);
        encode(&count_request(prefix.clone().into(), prefix_end(&prefix).into(), self.serializable), scratch)
    }

    /// The pager of a list of resource `r`.
    pub fn list(&self, r: usize) -> ListPager {
        ListPager::new(&self.layout.resource_prefix(r), self.limit, self.serializable)
    }
}

/// splitmix64's finalizer: a well-mixed hash of a key number.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `message` encoded into `scratch`; the returned bytes share its
/// allocation, reused once they are dropped.
pub fn encode(message: &impl Message, scratch: &mut BytesMut) -> Bytes {
    scratch.clear();
    scratch.reserve(message.encoded_len());
    message.encode(scratch).expect("BytesMut grows as needed");
    scratch.split().freeze()
}

fn compare_mod(key: Bytes, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key,
        range_end: Bytes::new(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
    }
}

fn put_op(key: Bytes, value: Bytes, lease: i64) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key, value, lease, ..Default::default() })) }
}

fn get_op(key: Bytes) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(RangeRequest { key, ..Default::default() })) }
}

/// create: `Txn(mod_revision(key) == 0 -> Put(key, value, lease), else Range(key))`.
pub fn create_txn(key: Bytes, value: Bytes, lease: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![compare_mod(key.clone(), 0)],
        success: vec![put_op(key.clone(), value, lease)],
        failure: vec![get_op(key)],
    }
}

/// update: `Txn(mod_revision(key) == revision -> Put(key, value, lease), else Range(key))`.
pub fn update_txn(key: Bytes, value: Bytes, lease: i64, revision: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![compare_mod(key.clone(), revision)],
        success: vec![put_op(key.clone(), value, lease)],
        failure: vec![get_op(key)],
    }
}

/// delete: `Txn(mod_revision(key) == revision -> DeleteRange(key), else Range(key))`.
pub fn delete_txn(key: Bytes, revision: i64) -> TxnRequest {
    let delete = DeleteRangeRequest { key: key.clone(), ..Default::default() };
    TxnRequest {
        compare: vec![compare_mod(key.clone(), revision)],
        success: vec![RequestOp { request: Some(request_op::Request::RequestDeleteRange(delete)) }],
        failure: vec![get_op(key)],
    }
}

/// get: `Range(key)`.
pub fn get_request(key: Bytes, serializable: bool) -> RangeRequest {
    RangeRequest { key, serializable, ..Default::default() }
}

/// count: `Range(key, range_end, count_only)`.
pub fn count_request(key: Bytes, range_end: Bytes, serializable: bool) -> RangeRequest {
    RangeRequest { key, range_end, serializable, count_only: true, ..Default::default() }
}

/// The key's mod revision after a create, update or delete txn: the txn's
/// revision when it wrote, 0 when it deleted, else what the else-branch
/// Range saw (0: absent).
pub fn revision_after(op: Op, reply: &TxnResponse) -> i64 {
    if reply.succeeded {
        return match op {
            Op::Delete => 0,
            _ => reply.header.as_ref().map_or(0, |h| h.revision),
        };
    }
    match reply.responses.first().and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(range)) => range.kvs.first().map_or(0, |kv| kv.mod_revision),
        _ => 0,
    }
}

/// The mod revision a get saw (0: absent).
pub fn revision_seen(reply: &RangeResponse) -> i64 {
    reply.kvs.first().map_or(0, |kv| kv.mod_revision)
}

/// The key after `last` in key order: `last + "\0"`, where the next page starts.
pub fn next_page_key(last: &[u8]) -> Bytes {
    let mut key = Vec::with_capacity(last.len() + 1);
    key.extend_from_slice(last);
    key.push(0);
    key.into()
}

/// A paginated list of one prefix, page by page, pinned at the first
/// page's revision, and its consistency check: at one revision, each
/// page's `count` is what remains from its first key on, the keys of all
/// pages add up to the first page's count, and `more` is set exactly when
/// keys remain after the page.
#[derive(Clone, Debug)]
pub struct ListPager {
    key: Bytes,
    range_end: Bytes,
    limit: i64,
    serializable: bool,
    /// 0 until the first page's reply sets it.
    revision: i64,
    /// The first page's count.
    total: Option<i64>,
    /// Keys received so far.
    pub keys: u64,
    /// Replies read so far.
    pub pages: u64,
    /// Some page disagreed with the others.
    pub inconsistent: bool,
}

/// What a list page's reply means for the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// Ask for the next page.
    Next,
    /// The list is complete.
    Done,
}

impl ListPager {
    pub fn new(prefix: &[u8], limit: i64, serializable: bool) -> ListPager {
        ListPager {
            key: prefix.to_vec().into(),
            range_end: prefix_end(prefix).into(),
            limit,
            serializable,
            revision: 0,
            total: None,
            keys: 0,
            pages: 0,
            inconsistent: false,
        }
    }

    /// The next page's request.
    pub fn request(&self) -> RangeRequest {
        RangeRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            limit: self.limit,
            revision: self.revision,
            serializable: self.serializable,
            ..Default::default()
        }
    }

    /// Reads a page.
    pub fn observe(&mut self, reply: &RangeResponse) -> Page {
        self.pages += 1;
        if self.revision == 0 {
            self.revision = reply.header.as_ref().map_or(0, |h| h.revision);
            self.total = Some(reply.count);
        }
        let remaining = self.total.unwrap_or(0) - self.keys as i64;
        let got = reply.kvs.len() as i64;
        if reply.count != remaining || reply.more != (got < reply.count) || (self.limit > 0 && got > self.limit) {
            self.inconsistent = true;
        }
        self.keys += got as u64;
        match reply.kvs.last() {
            Some(last) if reply.more => {
                self.key = next_page_key(&last.key);
                Page::Next
            }
            // `more` without a key to continue from cannot be followed.
            None if reply.more => {
                self.inconsistent = true;
                Page::Done
            }
            _ => {
                if self.total != Some(self.keys as i64) {
                    self.inconsistent = true;
                }
                Page::Done
            }
        }
    }
}

/// kube-apiserver's compactor: the `compact_rev_key` dance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compactor {
    /// The version of `compact_rev_key` last seen ("compact time").
    pub version: i64,
    /// The revision recorded at the previous round, compacted at this one.
    pub revision: i64,
}

impl Compactor {
    /// `Txn(version(compact_rev_key) == V -> Put(compact_rev_key, R), else Range(compact_rev_key))`.
    pub fn txn(&self) -> TxnRequest {
        let key = Bytes::from_static(COMPACT_REV_KEY);
        TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                key: key.clone(),
                range_end: Bytes::new(),
                target_union: Some(compare::TargetUnion::Version(self.version)),
            }],
            success: vec![put_op(key.clone(), self.revision.to_string().into(), 0)],
            failure: vec![get_op(key)],
        }
    }

    /// Reads the txn's reply; returns the revision to compact now, if any:
    /// the one recorded a round ago, when this compactor won the round.
    pub fn observe(&mut self, reply: &TxnResponse) -> Option<i64> {
        let current = reply.header.as_ref().map_or(0, |h| h.revision);
        if !reply.succeeded {
            // Another compactor (or an earlier run) moved the key on:
            // adopt its version and compact nothing this round.
            self.version = match reply.responses.first().and_then(|r| r.response.as_ref()) {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.first().map_or(0, |kv| kv.version),
                _ => 0,
            };
            self.revision = current;
            return None;
        }
        self.version += 1;
        let compact = self.revision;
        self.revision = current;
        (compact > 0).then_some(compact)
    }
}

/// `Compact(revision)`, not physical (as kube-apiserver asks).
pub fn compact_request(revision: i64) -> Bytes {
    CompactionRequest { revision, physical: false }.encode_to_vec().into()
}

/// A set of local key positions with O(1) insert, remove and random pick.
#[derive(Clone, Debug)]
struct Bag {
    items: Vec<u32>,
    /// Position of each local key in `items`, or `NONE`.
    at: Vec<u32>,
}

const NONE: u32 = u32::MAX;

impl Bag {
    fn new(size: usize) -> Bag {
        Bag { items: Vec::new(), at: vec![NONE; size] }
    }

    fn insert(&mut self, local: u32) {
        if self.at[local as usize] == NONE {
            self.at[local as usize] = self.items.len() as u32;
            self.items.push(local);
        }
    }

    fn remove(&mut self, local: u32) {
        let at = self.at[local as usize];
        if at == NONE {
            return;
        }
        self.items.swap_remove(at as usize);
        if let Some(&moved) = self.items.get(at as usize) {
            self.at[moved as usize] = at;
        }
        self.at[local as usize] = NONE;
    }

    fn pick(&self, rng: &mut Rng) -> Option<u32> {
        (!self.items.is_empty()).then(|| self.items[rng.below(self.items.len() as u64) as usize])
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }
}

/// What one generator thread knows of its keys (`k mod threads == thread`):
/// each one's mod revision, 0 for absent, and which are present, absent
/// or in flight.
#[derive(Clone, Debug)]
pub struct Population {
    thread: u64,
    threads: u64,
    revisions: Vec<i64>,
    present: Bag,
    absent: Bag,
}

/// What a client does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// A keyed operation on key `index`, whose known revision is `revision`.
    Keyed { op: Op, index: u64, revision: i64 },
    /// A list or count of resource `resource`.
    Prefix { op: Op, resource: usize },
}

impl Choice {
    pub fn op(&self) -> Op {
        match *self {
            Choice::Keyed { op, .. } | Choice::Prefix { op, .. } => op,
        }
    }
}

impl Population {
    /// Thread `thread` of `threads`' share of `keys` keys, all absent.
    pub fn new(keys: u64, thread: usize, threads: usize) -> Population {
        let (thread, threads) = (thread as u64, threads as u64);
        assert!(thread < threads);
        let size = usize::try_from(keys.saturating_sub(thread).div_ceil(threads)).expect("a bounded key space");
        assert!(size < NONE as usize, "too many keys for one thread");
        let mut absent = Bag::new(size);
        for local in 0..size as u32 {
            absent.insert(local);
        }
        Population { thread, threads, revisions: vec![0; size], present: Bag::new(size), absent }
    }

    /// The key numbers this thread owns, in order.
    pub fn owned(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.revisions.len() as u64).map(|local| self.thread + local * self.threads)
    }

    fn local(&self, index: u64) -> u32 {
        assert_eq!(index % self.threads, self.thread, "key {index} belongs to another thread");
        (index / self.threads) as u32
    }

    /// Keys known present, and known absent (keys in flight are neither).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.present.len(), self.absent.len())
    }

    /// The known revision of key `index` (0: absent).
    #[cfg(test)]
    pub fn revision(&self, index: u64) -> i64 {
        self.revisions[self.local(index) as usize]
    }

    /// Key `index` is now at `revision` (0: absent) and no longer in flight.
    pub fn settle(&mut self, index: u64, revision: i64) {
        let local = self.local(index);
        self.revisions[local as usize] = revision;
        if revision > 0 {
            self.absent.remove(local);
            self.present.insert(local);
        } else {
            self.present.remove(local);
            self.absent.insert(local);
        }
    }

    /// Takes key `index` out while a request on it is in flight.
    fn take(&mut self, local: u32) -> (u64, i64) {
        self.present.remove(local);
        self.absent.remove(local);
        (self.thread + u64::from(local) * self.threads, self.revisions[local as usize])
    }

    /// Picks the next operation by `mix` and, for keyed ones, a key (taken
    /// out until [`Population::settle`]): creates take an absent key,
    /// updates, deletes and gets a present one. When none is left, a
    /// create becomes an update and the others a create; with every key in
    /// flight, a list.
    pub fn choose(&mut self, mix: &Mix, resources: usize, rng: &mut Rng) -> Choice {
        let op = mix.pick(rng.below(mix.total()));
        let prefix = |op, rng: &mut Rng| Choice::Prefix { op, resource: rng.below(resources as u64) as usize };
        let wants_absent = match op {
            Op::List | Op::Count => return prefix(op, rng),
            Op::Create => true,
            _ => false,
        };
        let (first, second) = if wants_absent { (&self.absent, &self.present) } else { (&self.present, &self.absent) };
        let (op, local) = match (first.pick(rng), second.pick(rng)) {
            (Some(local), _) => (op, local),
            (None, Some(local)) => (if wants_absent { Op::Update } else { Op::Create }, local),
            (None, None) => return prefix(Op::List, rng),
        };
        let (index, revision) = self.take(local);
        Choice::Keyed { op, index, revision }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};
    use corekv::api::proto::etcdserverpb::{ResponseHeader, ResponseOp};
    use corekv::api::proto::mvccpb::KeyValue;

    fn k8s(line: &str) -> K8s {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args).unwrap() {
            Command::Run(options) => K8s::new(&options),
            Command::Help => unreachable!(),
        }
    }

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..Default::default() })
    }

    fn kv(key: &[u8], mod_revision: i64, version: i64) -> KeyValue {
        KeyValue { key: key.to_vec().into(), mod_revision, version, ..Default::default() }
    }

    fn range_op(kvs: Vec<KeyValue>) -> ResponseOp {
        let count = kvs.len() as i64;
        ResponseOp {
            response: Some(response_op::Response::ResponseRange(RangeResponse { kvs, count, ..Default::default() })),
        }
    }

    #[test]
    fn keys_are_registry_paths_spread_over_resources_and_namespaces() {
        let w = k8s("k8s --k8s-resources pods,events --k8s-namespaces 3 --k8s-objects 100");
        let l = &w.layout;
        assert_eq!(l.keys(), 600);
        assert_eq!(&l.key(0)[..], b"/registry/pods/ns-0/obj-00");
        assert_eq!(&l.key(1)[..], b"/registry/events/ns-0/obj-00");
        assert_eq!(&l.key(2)[..], b"/registry/pods/ns-1/obj-00");
        assert_eq!(&l.key(599)[..], b"/registry/events/ns-2/obj-99");
        assert_eq!(l.max_key_len(), l.key(599).len());
        assert_eq!(l.resource_prefix(1), b"/registry/events/");
        assert_eq!(l.parts(7), (1, 0, 1));
    }

    #[test]
    fn creates_compare_revision_zero_and_read_on_failure() {
        let w = k8s("k8s --k8s-resources pods --k8s-namespaces 1 --k8s-objects 10 --val-size 3");
        let txn = TxnRequest::decode(w.keyed_request(Op::Create, 4, 0, 77, &mut BytesMut::new())).unwrap();
        let key = Bytes::from_static(b"/registry/pods/ns-0/obj-4");
        assert_eq!(txn, create_txn(key.clone(), Bytes::from_static(b"abc"), 77));
        let c = &txn.compare[0];
        assert_eq!((c.target, c.result), (compare::CompareTarget::Mod as i32, compare::CompareResult::Equal as i32));
        // The compare on revision 0 is sent, not elided as a default.
        assert_eq!(c.target_union, Some(compare::TargetUnion::ModRevision(0)));
        let Some(request_op::Request::RequestPut(put)) = &txn.success[0].request else { panic!("{txn:?}") };
        assert_eq!((&put.key, put.lease), (&key, 77));
        let Some(request_op::Request::RequestRange(get)) = &txn.failure[0].request else { panic!("{txn:?}") };
        assert_eq!((&get.key, get.range_end.is_empty()), (&key, true));
    }

    #[test]
    fn updates_and_deletes_compare_the_known_revision() {
        let w = k8s("k8s --k8s-resources pods --k8s-namespaces 1 --k8s-objects 10 --val-size 2");
        let key = Bytes::from_static(b"/registry/pods/ns-0/obj-3");
        let update = TxnRequest::decode(w.keyed_request(Op::Update, 3, 1234, 0, &mut BytesMut::new())).unwrap();
        assert_eq!(update, update_txn(key.clone(), Bytes::from_static(b"ab"), 0, 1234));
        assert_eq!(update.compare[0].target_union, Some(compare::TargetUnion::ModRevision(1234)));
        let delete = TxnRequest::decode(w.keyed_request(Op::Delete, 3, 99, 0, &mut BytesMut::new())).unwrap();
        assert_eq!(delete, delete_txn(key.clone(), 99));
        assert!(matches!(&delete.success[0].request, Some(request_op::Request::RequestDeleteRange(d)) if d.key == key));
        assert!(matches!(&delete.failure[0].request, Some(request_op::Request::RequestRange(r)) if r.key == key));
        let get = RangeRequest::decode(w.keyed_request(Op::Get, 3, 99, 0, &mut BytesMut::new())).unwrap();
        assert_eq!(get, get_request(key, false));
    }

    #[test]
    fn events_carry_leases_by_default_or_a_fraction_of_all_keys() {
        let w = k8s("k8s --k8s-resources pods,events --k8s-namespaces 2 --k8s-objects 50");
        assert!(w.uses_leases());
        assert!((0..200).all(|i| w.leased(i) == (i % 2 == 1)));
        assert_eq!(w.lease_of(0, &[5, 6]), 0);
        assert!([5, 6].contains(&w.lease_of(1, &[5, 6])));
        assert_eq!(w.lease_of(1, &[]), 0);
        let w = k8s("k8s --k8s-resources pods --k8s-lease-fraction 0.25 --k8s-objects 1000 --k8s-namespaces 4");
        let leased = (0..4000).filter(|&i| w.leased(i)).count();
        assert!((850..1150).contains(&leased), "{leased} of 4000");
        let w = k8s("k8s --k8s-resources pods,configmaps");
        assert!(!w.uses_leases());
    }

    #[test]
    fn counts_and_lists_range_over_a_resource_prefix() {
        let w = k8s("k8s --k8s-resources pods,events --consistency s --limit 2");
        let count = RangeRequest::decode(w.count_request(1, &mut BytesMut::new())).unwrap();
        assert_eq!((&count.key[..], &count.range_end[..]), (&b"/registry/events/"[..], &b"/registry/events0"[..]));
        assert!(count.count_only && count.serializable && count.limit == 0);
        let list = w.list(0).request();
        assert_eq!((&list.key[..], &list.range_end[..]), (&b"/registry/pods/"[..], &b"/registry/pods0"[..]));
        assert_eq!((list.limit, list.revision, list.count_only, list.keys_only), (2, 0, false, false));
    }

    fn page(keys: &[&[u8]], count: i64, more: bool, revision: i64) -> RangeResponse {
        RangeResponse { header: header(revision), kvs: keys.iter().map(|k| kv(k, 1, 1)).collect(), more, count }
    }

    #[test]
    fn lists_follow_pages_at_the_first_pages_revision() {
        let mut pager = ListPager::new(b"/r/p/", 2, false);
        assert_eq!(pager.observe(&page(&[b"/r/p/a", b"/r/p/b"], 5, true, 40)), Page::Next);
        let second = pager.request();
        assert_eq!((&second.key[..], second.revision, second.limit), (&b"/r/p/b\0"[..], 40, 2));
        assert_eq!(&second.range_end[..], b"/r/p0");
        // Writes after revision 40 do not show: the pages stay pinned.
        assert_eq!(pager.observe(&page(&[b"/r/p/c", b"/r/p/d"], 3, true, 55)), Page::Next);
        assert_eq!(pager.request().revision, 40);
        assert_eq!(pager.observe(&page(&[b"/r/p/e"], 1, false, 60)), Page::Done);
        assert_eq!((pager.keys, pager.pages, pager.inconsistent), (5, 3, false));
    }

    #[test]
    fn lists_that_disagree_with_their_count_are_flagged() {
        // The second page counts more than remained after the first.
        let mut pager = ListPager::new(b"/r/", 2, false);
        pager.observe(&page(&[b"/r/a", b"/r/b"], 3, true, 9));
        assert_eq!(pager.observe(&page(&[b"/r/c", b"/r/d"], 2, false, 9)), Page::Done);
        assert!(pager.inconsistent);
        // `more` false although the count says keys remain.
        let mut pager = ListPager::new(b"/r/", 2, false);
        assert_eq!(pager.observe(&page(&[b"/r/a", b"/r/b"], 3, false, 9)), Page::Done);
        assert!(pager.inconsistent);
        // `more` with no key to go on from.
        let mut pager = ListPager::new(b"/r/", 2, false);
        assert_eq!(pager.observe(&page(&[], 3, true, 9)), Page::Done);
        assert!(pager.inconsistent);
        // One page without a limit.
        let mut pager = ListPager::new(b"/r/", 0, false);
        assert_eq!(pager.observe(&page(&[b"/r/a"], 1, false, 9)), Page::Done);
        assert!(!pager.inconsistent);
    }

    #[test]
    fn txn_replies_teach_the_keys_revision() {
        let won = TxnResponse { header: header(40), succeeded: true, responses: vec![] };
        assert_eq!(revision_after(Op::Create, &won), 40);
        assert_eq!(revision_after(Op::Update, &won), 40);
        assert_eq!(revision_after(Op::Delete, &won), 0);
        let lost =
            TxnResponse { header: header(41), succeeded: false, responses: vec![range_op(vec![kv(b"k", 33, 2)])] };
        assert_eq!(revision_after(Op::Update, &lost), 33);
        let gone = TxnResponse { header: header(41), succeeded: false, responses: vec![range_op(vec![])] };
        assert_eq!(revision_after(Op::Delete, &gone), 0);
        assert_eq!(revision_seen(&RangeResponse { kvs: vec![kv(b"k", 7, 1)], ..Default::default() }), 7);
        assert_eq!(revision_seen(&RangeResponse::default()), 0);
    }

    #[test]
    fn the_compactor_follows_kube_apiserver() {
        let mut c = Compactor::default();
        let txn = c.txn();
        let cmp = &txn.compare[0];
        assert_eq!(&cmp.key[..], COMPACT_REV_KEY);
        assert_eq!(cmp.target, compare::CompareTarget::Version as i32);
        assert_eq!(cmp.target_union, Some(compare::TargetUnion::Version(0)));
        let Some(request_op::Request::RequestPut(put)) = &txn.success[0].request else { panic!("{txn:?}") };
        assert_eq!(&put.value[..], b"0");
        assert!(
            matches!(&txn.failure[0].request, Some(request_op::Request::RequestRange(r)) if r.key == COMPACT_REV_KEY)
        );
        // Bootstrap: the compare holds, nothing to compact yet.
        let won = |revision| TxnResponse { header: header(revision), succeeded: true, responses: vec![] };
        assert_eq!(c.observe(&won(100)), None);
        assert_eq!(c, Compactor { version: 1, revision: 100 });
        // Next round: compact what was recorded one round ago.
        let txn = c.txn();
        assert_eq!(txn.compare[0].target_union, Some(compare::TargetUnion::Version(1)));
        let Some(request_op::Request::RequestPut(put)) = &txn.success[0].request else { panic!("{txn:?}") };
        assert_eq!(&put.value[..], b"100");
        assert_eq!(c.observe(&won(250)), Some(100));
        assert_eq!(c, Compactor { version: 2, revision: 250 });
        // Someone else moved the key on: adopt its version, skip a round.
        let lost = TxnResponse {
            header: header(300),
            succeeded: false,
            responses: vec![range_op(vec![kv(COMPACT_REV_KEY, 290, 7)])],
        };
        assert_eq!(c.observe(&lost), None);
        assert_eq!(c, Compactor { version: 7, revision: 300 });
        assert_eq!(
            CompactionRequest::decode(compact_request(100)).unwrap(),
            CompactionRequest { revision: 100, physical: false }
        );
    }

    #[test]
    fn mixes_parse_by_name_and_leave_the_rest_out() {
        assert_eq!(Mix::parse("update=3,get=1").unwrap().weights, [0, 3, 0, 1, 0, 0]);
        assert!(Mix::parse("update=3,update=1").is_err());
        assert!(Mix::parse("patch=3").unwrap_err().contains("unknown operation"));
        assert!(Mix::parse("get=0").is_err());
        assert!(Mix::parse("get").is_err());
        let d = Mix::default();
        assert_eq!(Mix::parse(&d.describe()).unwrap(), d);
        assert_eq!(d.weights.iter().sum::<u32>(), 100);
        assert!(d.weight(Op::Update) > d.weight(Op::Create) && d.weight(Op::Get) > d.weight(Op::List));
    }

    #[test]
    fn the_mix_is_followed_in_proportion() {
        let mix = Mix::parse("create=1,update=3,list=1").unwrap();
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 6];
        for _ in 0..50_000 {
            let op = mix.pick(rng.below(mix.total()));
            counts[Op::CLIENT.iter().position(|&o| o == op).unwrap()] += 1;
        }
        assert!((9_000..11_000).contains(&counts[0]) && (29_000..31_000).contains(&counts[1]), "{counts:?}");
        assert_eq!((counts[2], counts[3], counts[5]), (0, 0, 0));
    }

    #[test]
    fn populations_hand_out_keys_by_state_and_take_them_while_in_flight() {
        let mut p = Population::new(10, 1, 3);
        assert_eq!(p.owned().collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(p.counts(), (0, 3));
        let mut rng = Rng::new(1);
        let creates = Mix::parse("create=1").unwrap();
        let updates = Mix::parse("update=1").unwrap();
        // Nothing present: an update becomes a create.
        let Choice::Keyed { op, index, revision } = p.choose(&updates, 2, &mut rng) else { panic!() };
        assert_eq!((op, revision), (Op::Create, 0));
        assert_eq!(p.counts(), (0, 2), "the key is in flight");
        p.settle(index, 50);
        assert_eq!((p.counts(), p.revision(index)), ((1, 2), 50));
        let Choice::Keyed { op, index: again, revision } = p.choose(&updates, 2, &mut rng) else { panic!() };
        assert_eq!((op, again, revision), (Op::Update, index, 50));
        // The only present key is in flight: creates take absent keys.
        for _ in 0..2 {
            assert!(matches!(p.choose(&creates, 2, &mut rng), Choice::Keyed { op: Op::Create, revision: 0, .. }));
        }
        // Every key is in flight: a list.
        assert!(matches!(p.choose(&creates, 2, &mut rng), Choice::Prefix { op: Op::List, .. }));
        p.settle(again, 0);
        assert_eq!(p.counts(), (0, 1));
    }

    #[test]
    #[should_panic(expected = "another thread")]
    fn a_population_refuses_other_threads_keys() {
        Population::new(10, 1, 3).settle(2, 5);
    }
}
