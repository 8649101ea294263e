//! Which watches a key change concerns.
//!
//! Single-key watches sit in a hash map. Range watches sit in a vector
//! sorted by start key with the running maximum of their ends: a key can
//! only be in ranges that start at or before it, and the walk back from the
//! nearest start stops as soon as no earlier range reaches the key. For
//! disjoint prefixes (Kubernetes' resource prefixes) that is one or two
//! comparisons.

use std::collections::HashMap;

/// The end of a watched range: exclusive, or unbounded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RangeEnd {
    /// `[start, end)`.
    Before(Vec<u8>),
    /// Every key from `start`.
    Unbounded,
}

impl RangeEnd {
    fn above(&self, key: &[u8]) -> bool {
        match self {
            RangeEnd::Before(e) => key < e.as_slice(),
            RangeEnd::Unbounded => true,
        }
    }
}

/// An index from keys to the watches (of type `W`) whose ranges hold them.
#[derive(Debug)]
pub struct Index<W: Copy + Eq + std::hash::Hash> {
    single: HashMap<Vec<u8>, Vec<W>>,
    ranges: Vec<(Vec<u8>, RangeEnd, W)>,
    /// `max_end[i]`: the largest end among `ranges[..=i]`.
    max_end: Vec<RangeEnd>,
}

impl<W: Copy + Eq + std::hash::Hash> Default for Index<W> {
    fn default() -> Self {
        Index { single: HashMap::new(), ranges: Vec::new(), max_end: Vec::new() }
    }
}

impl<W: Copy + Eq + std::hash::Hash> Index<W> {
    /// Adds a watch of one key.
    pub fn add_key(&mut self, key: Vec<u8>, w: W) {
        self.single.entry(key).or_default().push(w);
    }

    /// Adds a watch of `[start, end)`.
    pub fn add_range(&mut self, start: Vec<u8>, end: RangeEnd, w: W) {
        let at = self.ranges.partition_point(|(s, _, _)| *s <= start);
        self.ranges.insert(at, (start, end, w));
        self.rebuild();
    }

    /// Removes a watch wherever it is.
    pub fn remove(&mut self, w: W) {
        self.single.retain(|_, ws| {
            ws.retain(|x| *x != w);
            !ws.is_empty()
        });
        let before = self.ranges.len();
        self.ranges.retain(|(_, _, x)| *x != w);
        if self.ranges.len() != before {
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        self.max_end.clear();
        let mut max: Option<RangeEnd> = None;
        for (_, end, _) in &self.ranges {
            let m = match max {
                Some(m) if m >= *end => m,
                _ => end.clone(),
            };
            self.max_end.push(m.clone());
            max = Some(m);
        }
    }

    /// Calls `f` for every watch whose range holds `key`.
    pub fn matching(&self, key: &[u8], f: &mut impl FnMut(W)) {
        if let Some(ws) = self.single.get(key) {
            ws.iter().copied().for_each(&mut *f);
        }
        let mut i = self.ranges.partition_point(|(s, _, _)| s.as_slice() <= key);
        while i > 0 {
            i -= 1;
            if !self.max_end[i].above(key) {
                break;
            }
            let (_, end, w) = &self.ranges[i];
            if end.above(key) {
                f(*w);
            }
        }
    }

    /// Number of watches indexed.
    pub fn len(&self) -> usize {
        self.single.values().map(Vec::len).sum::<usize>() + self.ranges.len()
    }

    /// Whether no watch is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(ix: &Index<u32>, key: &str) -> Vec<u32> {
        let mut v = Vec::new();
        ix.matching(key.as_bytes(), &mut |w| v.push(w));
        v.sort_unstable();
        v
    }

    #[test]
    fn keys_match_single_watches_and_every_range_that_holds_them() {
        let mut ix = Index::default();
        ix.add_key(b"/a/x".to_vec(), 1);
        ix.add_range(b"/a/".to_vec(), RangeEnd::Before(b"/a0".to_vec()), 2);
        ix.add_range(b"/".to_vec(), RangeEnd::Unbounded, 3);
        ix.add_range(b"/b/".to_vec(), RangeEnd::Before(b"/b0".to_vec()), 4);
        ix.add_range(b"/a/x".to_vec(), RangeEnd::Before(b"/a/y".to_vec()), 5);
        assert_eq!(found(&ix, "/a/x"), vec![1, 2, 3, 5]);
        assert_eq!(found(&ix, "/a/z"), vec![2, 3]);
        assert_eq!(found(&ix, "/b/q"), vec![3, 4]);
        assert_eq!(found(&ix, "."), Vec::<u32>::new());
        ix.remove(3);
        assert_eq!(found(&ix, "/b/q"), vec![4]);
        assert_eq!(found(&ix, "/c"), Vec::<u32>::new());
        assert_eq!(ix.len(), 4);
    }

    #[test]
    fn matches_equal_a_linear_scan_on_random_ranges() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut ix = Index::default();
        let mut all = Vec::new();
        for w in 0..200u32 {
            let a = vec![b'a' + next(20) as u8, b'a' + next(20) as u8];
            let end = if next(5) == 0 { RangeEnd::Unbounded } else { RangeEnd::Before(vec![b'a' + next(22) as u8]) };
            ix.add_range(a.clone(), end.clone(), w);
            all.push((a, end, w));
        }
        for _ in 0..500 {
            let key = vec![b'a' + next(22) as u8, b'a' + next(22) as u8];
            let mut want: Vec<u32> =
                all.iter().filter(|(s, e, _)| s.as_slice() <= key.as_slice() && e.above(&key)).map(|x| x.2).collect();
            want.sort_unstable();
            let mut got = Vec::new();
            ix.matching(&key, &mut |w| got.push(w));
            got.sort_unstable();
            assert_eq!(got, want);
        }
    }
}
