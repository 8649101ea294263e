//! Which shard owns which keys.
//!
//! The key space is cut into contiguous ranges, one per shard, in shard
//! order: shard 0 owns the smallest keys. The map belongs to the node, not
//! the cluster: results never depend on it, only which core does the work.

use crate::mvcc::End;
use crate::types::ShardId;

/// Split points of the key space. Shard `i` owns `[splits[i-1], splits[i])`,
/// with an empty lower bound for shard 0 and no upper bound for the last.
/// Each change of the split points makes a new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeMap {
    splits: Vec<Vec<u8>>,
    version: u64,
}

impl RangeMap {
    /// A map for `shards` shards whose split points are spread evenly over
    /// the byte after the common Kubernetes prefix `/registry/`, so that an
    /// empty node starts with every shard owning some resource names. The
    /// balancer moves the points to where the keys really are.
    pub fn initial(shards: usize) -> RangeMap {
        assert!(shards >= 1, "a node has at least one shard");
        // Resource names are lower-case letters: spread the split points over
        // three letters' worth of positions ('aaa'..'zzz'), strictly
        // ascending for up to 26^3 shards.
        const SPAN: usize = 26 * 26 * 26;
        let splits = (1..shards)
            .map(|i| {
                let p = i * SPAN / shards;
                let mut k = b"/registry/".to_vec();
                k.extend([b'a' + (p / 676) as u8, b'a' + (p / 26 % 26) as u8, b'a' + (p % 26) as u8]);
                k
            })
            .collect();
        RangeMap { splits, version: 0 }
    }

    /// A map with explicit split points, which must be strictly ascending
    /// and non-empty.
    pub fn from_splits(splits: Vec<Vec<u8>>) -> RangeMap {
        assert!(splits.windows(2).all(|w| w[0] < w[1]), "split points must ascend");
        assert!(splits.iter().all(|s| !s.is_empty()), "a split point is never the empty key");
        RangeMap { splits, version: 0 }
    }

    /// A map read back from a checkpoint record, which checked that the
    /// split points ascend and are non-empty.
    pub fn restored(splits: Vec<Vec<u8>>, version: u64) -> RangeMap {
        debug_assert!(splits.windows(2).all(|w| w[0] < w[1]) && splits.iter().all(|s| !s.is_empty()));
        RangeMap { splits, version }
    }

    /// The next version of this map, with split point `i` moved to `key`,
    /// or `None` if `key` does not lie strictly between its neighbours.
    pub fn with_split(&self, i: usize, key: Vec<u8>) -> Option<RangeMap> {
        let above_lower = i == 0 || self.splits[i - 1] < key;
        let below_upper = self.splits.get(i + 1).is_none_or(|upper| key < *upper);
        if i >= self.splits.len() || key.is_empty() || !above_lower || !below_upper {
            return None;
        }
        let mut splits = self.splits.clone();
        splits[i] = key;
        Some(RangeMap { splits, version: self.version + 1 })
    }

    /// The map's version: 0 for the initial map, one more per change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the ranges of `a` in this map and of `b` in `other` share a
    /// key.
    pub fn ranges_meet(&self, a: ShardId, other: &RangeMap, b: ShardId) -> bool {
        let (lo_a, hi_a) = self.bounds(a);
        let (lo_b, hi_b) = other.bounds(b);
        let lo = lo_a.max(lo_b);
        match (hi_a, hi_b) {
            (None, None) => true,
            (Some(h), None) | (None, Some(h)) => lo < h,
            (Some(x), Some(y)) => lo < x.min(y),
        }
    }

    /// The part of `shard`'s range in this map that `to` owns in `new`, as
    /// a start key and an end.
    pub fn moved_range<'a>(&'a self, shard: ShardId, new: &'a RangeMap, to: ShardId) -> Option<(&'a [u8], End<'a>)> {
        let (lo, hi) = new.bounds(to);
        let end = hi.map_or(End::Unbounded, End::Before);
        self.clip(shard, lo, end)
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.splits.len() + 1
    }

    /// The split points.
    pub fn splits(&self) -> &[Vec<u8>] {
        &self.splits
    }

    /// The shard that owns `key`.
    pub fn owner(&self, key: &[u8]) -> ShardId {
        // Number of split points <= key.
        let i = self.splits.partition_point(|s| s.as_slice() <= key);
        ShardId(i as u16)
    }

    /// The owned range of `shard`: lower bound (inclusive) and upper bound
    /// (exclusive, `None` for the last shard).
    pub fn bounds(&self, shard: ShardId) -> (&[u8], Option<&[u8]>) {
        let i = shard.idx();
        let lo: &[u8] = if i == 0 { &[] } else { &self.splits[i - 1] };
        let hi = self.splits.get(i).map(|s| s.as_slice());
        (lo, hi)
    }

    /// Whether `shard` owns `key`.
    pub fn owns(&self, shard: ShardId, key: &[u8]) -> bool {
        self.owner(key) == shard
    }

    /// The shards whose ranges meet `[start, end)`, as an inclusive span of
    /// shard indexes, or `None` for an empty range.
    pub fn overlapping(&self, start: &[u8], end: End<'_>) -> Option<(ShardId, ShardId)> {
        let first = self.owner(start);
        let last = match end {
            End::Single => first,
            End::Unbounded => ShardId((self.shards() - 1) as u16),
            End::Before(e) if e <= start => return None,
            // The last key of [start, e) is below e: the owner of the
            // largest split point strictly below e, or `first`.
            End::Before(e) => {
                let i = self.splits.partition_point(|s| s.as_slice() < e);
                ShardId(i as u16)
            }
        };
        Some((first, last.max(first)))
    }

    /// Clips `[start, end)` to `shard`'s range: the part that shard serves,
    /// or `None` if it serves none of it.
    pub fn clip<'a>(&'a self, shard: ShardId, start: &'a [u8], end: End<'a>) -> Option<(&'a [u8], End<'a>)> {
        let (lo, hi) = self.bounds(shard);
        if let End::Single = end {
            return self.owns(shard, start).then_some((start, End::Single));
        }
        let s = if start < lo { lo } else { start };
        let e = match (end, hi) {
            (End::Unbounded, None) => End::Unbounded,
            (End::Unbounded, Some(h)) => End::Before(h),
            (End::Before(e), None) => End::Before(e),
            (End::Before(e), Some(h)) => End::Before(if e < h { e } else { h }),
            (End::Single, _) => unreachable!("handled above"),
        };
        match e {
            End::Before(e) if e <= s => None,
            _ => Some((s, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> RangeMap {
        RangeMap::from_splits(vec![b"f".to_vec(), b"m".to_vec()])
    }

    #[test]
    fn owner_follows_split_points() {
        let m = map();
        assert_eq!(m.owner(b"a"), ShardId(0));
        assert_eq!(m.owner(b"f"), ShardId(1));
        assert_eq!(m.owner(b"lzz"), ShardId(1));
        assert_eq!(m.owner(b"m"), ShardId(2));
        assert_eq!(m.owner(b"\xff"), ShardId(2));
    }

    #[test]
    fn overlapping_spans_only_the_shards_a_range_meets() {
        let m = map();
        assert_eq!(m.overlapping(b"a", End::Single), Some((ShardId(0), ShardId(0))));
        assert_eq!(m.overlapping(b"a", End::Before(b"f")), Some((ShardId(0), ShardId(0))));
        assert_eq!(m.overlapping(b"a", End::Before(b"f\0")), Some((ShardId(0), ShardId(1))));
        assert_eq!(m.overlapping(b"g", End::Unbounded), Some((ShardId(1), ShardId(2))));
        assert_eq!(m.overlapping(b"g", End::Before(b"a")), None);
    }

    #[test]
    fn clip_cuts_a_range_to_each_shard() {
        let m = map();
        assert_eq!(m.clip(ShardId(0), b"a", End::Unbounded), Some((&b"a"[..], End::Before(b"f"))));
        assert_eq!(m.clip(ShardId(1), b"a", End::Unbounded), Some((&b"f"[..], End::Before(b"m"))));
        assert_eq!(m.clip(ShardId(2), b"a", End::Unbounded), Some((&b"m"[..], End::Unbounded)));
        assert_eq!(m.clip(ShardId(2), b"a", End::Before(b"m")), None);
        assert_eq!(m.clip(ShardId(1), b"g", End::Single), Some((&b"g"[..], End::Single)));
        assert_eq!(m.clip(ShardId(0), b"g", End::Single), None);
    }

    #[test]
    fn moving_a_split_point_moves_exactly_the_keys_between() {
        let m = map();
        let n = m.with_split(0, b"c".to_vec()).expect("valid split");
        assert_eq!(n.version(), 1);
        assert_eq!(n.owner(b"d"), ShardId(1));
        assert_eq!(m.moved_range(ShardId(0), &n, ShardId(1)), Some((&b"c"[..], End::Before(b"f"))));
        assert_eq!(m.moved_range(ShardId(0), &n, ShardId(2)), None);
        assert!(m.ranges_meet(ShardId(0), &n, ShardId(1)));
        assert!(!m.ranges_meet(ShardId(2), &n, ShardId(1)));
        assert!(m.with_split(0, b"m".to_vec()).is_none(), "must stay below the next split");
        assert!(m.with_split(1, b"f".to_vec()).is_none(), "must stay above the previous split");
    }

    #[test]
    fn initial_map_spreads_kubernetes_resources() {
        let m = RangeMap::initial(4);
        assert_eq!(m.shards(), 4);
        assert_ne!(m.owner(b"/registry/configmaps/x"), m.owner(b"/registry/pods/x"));
        assert_eq!(RangeMap::initial(1).shards(), 1);
        let big = RangeMap::initial(1024);
        assert!(big.splits().windows(2).all(|w| w[0] < w[1]), "split points strictly ascend");
    }
}
