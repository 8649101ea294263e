//! Serving a Range on one shard, and merging the shards' parts.
//!
//! A Range that spans shards is answered by each shard for its own keys
//! ([`read_part`]) at one common revision; the parts are merged in shard
//! order ([`merge_parts`]), which is key order. Both steps follow etcd's
//! `applyRange`: the filters, then the sort, then the limit; `count` is the
//! number of keys in the range before filters, and `more` says whether the
//! limit cut anything.

use std::cmp::Ordering;
use std::ops::ControlFlow;

use super::command::{ArchivedRange, Range};
use crate::mvcc::{End, KeyValue, KvRef, MvccStore};

/// etcd's sort orders.
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
/// etcd's sort targets.
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;

/// The parameters of a Range that shape its result, independent of where
/// the request came from (a client's Range or an op inside a Txn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// At most this many keys; 0 for no limit.
    pub limit: i64,
    /// etcd's sort order.
    pub sort_order: i32,
    /// etcd's sort target.
    pub sort_target: i32,
    /// Drop values.
    pub keys_only: bool,
    /// Count only.
    pub count_only: bool,
    /// Filters; 0 disables each.
    pub min_mod: i64,
    /// See `min_mod`.
    pub max_mod: i64,
    /// See `min_mod`.
    pub min_create: i64,
    /// See `min_mod`.
    pub max_create: i64,
}

impl Shape {
    /// The shape of an owned Range command.
    pub fn of(r: &Range) -> Shape {
        Shape {
            limit: r.limit,
            sort_order: r.sort_order,
            sort_target: r.sort_target,
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod: r.min_mod_revision,
            max_mod: r.max_mod_revision,
            min_create: r.min_create_revision,
            max_create: r.max_create_revision,
        }
    }

    /// The shape of an archived Range command.
    pub fn of_archived(r: &ArchivedRange) -> Shape {
        Shape {
            limit: r.limit.to_native(),
            sort_order: r.sort_order.to_native(),
            sort_target: r.sort_target.to_native(),
            keys_only: r.keys_only,
            count_only: r.count_only,
            min_mod: r.min_mod_revision.to_native(),
            max_mod: r.max_mod_revision.to_native(),
            min_create: r.min_create_revision.to_native(),
            max_create: r.max_create_revision.to_native(),
        }
    }

    fn has_filters(&self) -> bool {
        self.min_mod != 0 || self.max_mod != 0 || self.min_create != 0 || self.max_create != 0
    }

    /// How etcd orders and cuts the result (its `applyRange`).
    fn mode(&self) -> Mode {
        match (self.sort_order, self.sort_target) {
            (SORT_DESCEND, TARGET_KEY) => Mode::KeysDescending,
            (SORT_DESCEND, t) => Mode::SortAll { target: t, desc: true },
            (SORT_ASCEND, t) if t != TARGET_KEY => Mode::SortAll { target: t, desc: false },
            // No order but a target other than the key: etcd cuts the
            // key-ordered range at limit + 1 first and sorts only that
            // (unless filters made it read everything).
            (SORT_NONE, t) if t != TARGET_KEY && !self.has_filters() => Mode::SortFirst { target: t },
            (SORT_NONE, t) if t != TARGET_KEY => Mode::SortAll { target: t, desc: false },
            _ => Mode::Keys,
        }
    }

    fn keeps(&self, kv: &KvRef<'_>) -> bool {
        !((self.max_mod != 0 && kv.mod_revision > self.max_mod)
            || (self.min_mod != 0 && kv.mod_revision < self.min_mod)
            || (self.max_create != 0 && kv.create_revision > self.max_create)
            || (self.min_create != 0 && kv.create_revision < self.min_create))
    }
}

/// How a Range's result is ordered and cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Key order; stop one past the limit.
    Keys,
    /// Descending key order; stop one past the limit.
    KeysDescending,
    /// Every match, sorted by `target`, then cut at the limit.
    SortAll { target: i32, desc: bool },
    /// The first limit + 1 keys in key order, then sorted ascending by
    /// `target` and cut at the limit.
    SortFirst { target: i32 },
}

impl Mode {
    fn sorts_by_value(self) -> bool {
        matches!(self, Mode::SortAll { target: TARGET_VALUE, .. } | Mode::SortFirst { target: TARGET_VALUE })
    }
}

/// One shard's answer to a Range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePart {
    /// Matching versions, filtered, in the requested order, at most `limit`
    /// (values kept when a keys-only result sorts by value: the merge drops
    /// them).
    pub kvs: Vec<KeyValue>,
    /// Keys in the shard's part of the range (before filters).
    pub count: i64,
    /// More keys passed the filters than `limit`.
    pub truncated: bool,
}

/// Reads `[start, end)` of `store` at `rev` in the given shape.
pub fn read_part<S: MvccStore + ?Sized>(store: &S, start: &[u8], end: End<'_>, rev: i64, shape: &Shape) -> RangePart {
    let limit = if shape.limit > 0 { shape.limit as usize } else { usize::MAX };
    let count = store.count(start, end, rev) as i64;
    if shape.count_only {
        return RangePart { kvs: Vec::new(), count, truncated: false };
    }
    let mode = shape.mode();
    let mut kvs = Vec::new();
    let mut passed = 0usize;
    // Sorting everything needs every match; otherwise one past the limit
    // tells whether there is more.
    let keep_all = matches!(mode, Mode::SortAll { .. });
    // Values sort a keys-only result too: they go only after the merge.
    let strip = shape.keys_only && !mode.sorts_by_value();
    // etcd sorts the first limit + 1 keys in SortFirst mode.
    let cap = if let Mode::SortFirst { .. } = mode { limit.saturating_add(1) } else { limit };
    let mut visit = |kv: KvRef<'_>| {
        if shape.keeps(&kv) {
            passed += 1;
            if keep_all || kvs.len() < cap {
                kvs.push(owned(&kv, strip));
            } else {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    };
    if mode == Mode::KeysDescending {
        store.scan_rev(start, end, rev, &mut visit);
    } else {
        store.scan(start, end, rev, &mut visit);
    }
    let truncated = passed > kvs.len() || kvs.len() > limit;
    if let Mode::SortAll { target, desc } = mode {
        sort(&mut kvs, target, desc);
        kvs.truncate(limit);
    }
    // A SortFirst part stays in key order: the merge picks the first
    // limit + 1 keys of all shards before sorting.
    RangePart { kvs, count, truncated }
}

fn owned(kv: &KvRef<'_>, keys_only: bool) -> KeyValue {
    KeyValue {
        key: kv.key.to_vec(),
        value: if keys_only { Vec::new() } else { kv.value.to_vec() },
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

/// Sorts by `target`; ties stay in ascending key order in both directions
/// (what etcd's sort does for the result sizes where it is stable), so the
/// order never depends on which shard a key came from.
fn sort(kvs: &mut [KeyValue], target: i32, desc: bool) {
    kvs.sort_by(|a, b| {
        let o = match target {
            TARGET_VERSION => a.version.cmp(&b.version),
            TARGET_CREATE => a.create_revision.cmp(&b.create_revision),
            TARGET_MOD => a.mod_revision.cmp(&b.mod_revision),
            TARGET_VALUE => a.value.cmp(&b.value),
            _ => Ordering::Equal,
        };
        let o = if desc { o.reverse() } else { o };
        o.then_with(|| a.key.cmp(&b.key))
    });
}

/// A merged Range result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The versions to return.
    pub kvs: Vec<KeyValue>,
    /// Total keys in the range (before filters), as etcd's `count`.
    pub count: i64,
    /// etcd's `more`.
    pub more: bool,
}

/// Merges the parts of the shards a Range spanned, given in shard order.
pub fn merge_parts(mut parts: Vec<RangePart>, shape: &Shape) -> RangeResult {
    let limit = if shape.limit > 0 { shape.limit as usize } else { usize::MAX };
    let mode = shape.mode();
    if mode == Mode::KeysDescending {
        // Shard order is ascending key order: take the shards backwards.
        parts.reverse();
    }
    let mut count = 0i64;
    let mut truncated = false;
    let mut kvs = Vec::new();
    for p in parts {
        count += p.count;
        truncated |= p.truncated;
        kvs.extend(p.kvs);
    }
    match mode {
        Mode::SortAll { target, desc } => sort(&mut kvs, target, desc),
        Mode::SortFirst { target } => {
            // etcd's cut: the first limit + 1 keys in key order, sorted.
            truncated |= kvs.len() > limit;
            kvs.truncate(limit.saturating_add(1));
            sort(&mut kvs, target, false);
        }
        Mode::Keys | Mode::KeysDescending => {}
    }
    let more = truncated || kvs.len() > limit;
    kvs.truncate(limit);
    if shape.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    RangeResult { kvs, count, more }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{MemStore, Rev};

    /// A store holding `keys`, the i-th written at revision i + 2 unless
    /// the key names its revision after a colon ("c:5").
    fn store(keys: &[(&str, &str)]) -> MemStore {
        let mut s = MemStore::default();
        for (i, (k, v)) in keys.iter().enumerate() {
            let (k, rev) = match k.split_once(':') {
                Some((k, r)) => (k, r.parse().expect("test revision")),
                None => (*k, i as i64 + 2),
            };
            s.put(k.as_bytes(), v.as_bytes(), 0, Rev { main: rev, sub: 0 });
        }
        s
    }

    fn keys(kvs: &[KeyValue]) -> Vec<String> {
        kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
    }

    #[test]
    fn limit_counts_everything_and_flags_more() {
        let s = store(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let shape = Shape { limit: 2, ..Shape::default() };
        let p = read_part(&s, b"a", End::Unbounded, 10, &shape);
        assert_eq!(keys(&p.kvs), ["a", "b"]);
        assert_eq!(p.count, 3);
        let r = merge_parts(vec![p], &shape);
        assert!(r.more);
        assert_eq!(r.count, 3);
    }

    #[test]
    fn sorted_merge_across_shards_matches_a_single_shard() {
        let all = store(&[("a", "3"), ("b", "1"), ("c", "2"), ("d", "0")]);
        let left = store(&[("a", "3"), ("b", "1")]);
        let right = store(&[("c:4", "2"), ("d:5", "0")]);
        for (order, target) in [(1, 4), (2, 4), (2, 0), (0, 0), (1, 3), (2, 3), (0, 4), (0, 3), (0, 1)] {
            for limit in [0, 1, 3, 4] {
                let shape = Shape { limit, sort_order: order, sort_target: target, ..Shape::default() };
                let whole = merge_parts(vec![read_part(&all, b"a", End::Unbounded, 10, &shape)], &shape);
                let split = merge_parts(
                    vec![
                        read_part(&left, b"a", End::Unbounded, 10, &shape),
                        read_part(&right, b"a", End::Unbounded, 10, &shape),
                    ],
                    &shape,
                );
                // Revisions differ between the stores; compare keys and flags.
                assert_eq!(keys(&whole.kvs), keys(&split.kvs), "order {order} target {target} limit {limit}");
                assert_eq!((whole.count, whole.more), (split.count, split.more));
            }
        }
    }

    /// What etcd 3.4 prints for k1=d (version 2), k2=g (3), k3=c (1),
    /// k4=e (1), as observed with etcdctl.
    #[test]
    fn sort_order_and_limit_follow_etcd() {
        let mut s = MemStore::default();
        let mut rev = 1;
        for (k, v, times) in [("k1", "d", 2), ("k2", "g", 3), ("k3", "c", 1), ("k4", "e", 1)] {
            for _ in 0..times {
                rev += 1;
                s.put(k.as_bytes(), v.as_bytes(), 0, Rev { main: rev, sub: 0 });
            }
        }
        let values = |shape: Shape| {
            let r = merge_parts(vec![read_part(&s, b"k", End::Before(b"l"), 100, &shape)], &shape);
            r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect::<Vec<_>>()
        };
        // Descending by version: ties keep ascending key order.
        assert_eq!(values(Shape { sort_order: 2, sort_target: 1, ..Shape::default() }), ["g", "d", "c", "e"]);
        // A target without an order: the first limit + 1 keys, sorted, cut.
        assert_eq!(values(Shape { limit: 1, sort_target: 4, ..Shape::default() }), ["d"]);
        assert_eq!(values(Shape { limit: 2, sort_target: 1, ..Shape::default() }), ["c", "d"]);
        // With an explicit order everything is sorted first.
        assert_eq!(values(Shape { limit: 1, sort_order: 1, sort_target: 4, ..Shape::default() }), ["c"]);
    }

    #[test]
    fn filters_apply_before_limit_but_not_to_count() {
        let s = store(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
        // Mod revisions are 2, 3, 4, 5.
        let shape = Shape { limit: 1, min_mod: 4, ..Shape::default() };
        let r = merge_parts(vec![read_part(&s, b"a", End::Unbounded, 10, &shape)], &shape);
        assert_eq!(keys(&r.kvs), ["c"]);
        assert_eq!(r.count, 4);
        assert!(r.more);
    }

    #[test]
    fn keys_only_and_count_only() {
        let s = store(&[("a", "1"), ("b", "2")]);
        let ko = Shape { keys_only: true, ..Shape::default() };
        let r = read_part(&s, b"a", End::Unbounded, 10, &ko);
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
        let co = Shape { count_only: true, ..Shape::default() };
        let r = read_part(&s, b"a", End::Unbounded, 10, &co);
        assert!(r.kvs.is_empty());
        assert_eq!(r.count, 2);
    }
}
