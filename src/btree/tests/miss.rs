//! Misses: with a store that holds only the pages loaded so far, every
//! operation that misses changes nothing and succeeds once the page is
//! loaded; cursors resume where they were.

use std::collections::HashSet;
use std::ops::Bound;

use super::util::{assert_matches, for_seeds, model_range, random_key, random_value, MissStore, Model, Pairs, Rng};
use crate::btree::{Cursor, Error, MemStore, PageStore, Tree};

/// Calls `op` until it stops missing, loading each missed page.
fn retry<T>(store: &mut MissStore, mut op: impl FnMut(&MissStore) -> Result<T, Error>) -> T {
    for _ in 0..10_000 {
        match op(store) {
            Err(Error::Miss(id)) => store.load(id),
            other => return other.unwrap(),
        }
    }
    panic!("operation kept missing");
}

/// A range read through misses, values included.
fn range(tree: &Tree, store: &mut MissStore, mut cursor: Cursor, limit: usize) -> Pairs {
    let mut out = Vec::new();
    while out.len() < limit {
        let entry = match cursor.next(tree, store) {
            Ok(Some(entry)) => (entry.key.to_vec(), entry.value),
            Ok(None) => break,
            Err(Error::Miss(id)) => {
                store.load(id);
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let value = retry(store, |s| {
            let mut bytes = Vec::new();
            tree.read_value(s, entry.1, &mut bytes).map(|()| bytes)
        });
        out.push((entry.0, value));
    }
    out
}

/// Runs a mutation through misses, checking that each miss left the tree
/// as it was.
fn mutate<T>(
    tree: &mut Tree,
    store: &mut MissStore,
    mut op: impl FnMut(&mut Tree, &MissStore) -> Result<T, Error>,
) -> T {
    retry(store, |s| {
        let (generation, len, dirty) = (tree.generation(), tree.len(), tree.dirty_pages());
        let result = op(tree, s);
        if let Err(Error::Miss(_)) = result {
            assert_eq!((tree.generation(), tree.len(), tree.dirty_pages()), (generation, len, dirty));
        }
        result
    })
}

#[test]
fn operations_that_miss_change_nothing_and_succeed_after_loading() {
    for_seeds("misses", 4, |seed| {
        let mut rng = Rng::new(seed);
        let mut inner = MemStore::new();
        let mut tree = Tree::create(&mut inner).unwrap();
        let mut model = Model::new();
        let mut counter = 0;
        for _ in 0..3000 {
            let key = random_key(&mut rng, &mut counter);
            let value = random_value(&mut rng);
            tree.insert(&inner, &key, &value).unwrap();
            model.insert(key, value);
        }
        tree.checkpoint(&mut inner, b"").unwrap();
        let mut store = MissStore { inner, resident: HashSet::new(), misses: 0 };
        let mut tree = retry(&mut store, Tree::open);
        for _ in 0..1500 {
            if rng.percent(5) {
                store.resident.clear();
            }
            let key = random_key(&mut rng, &mut counter);
            match rng.below(100) {
                0..=39 => {
                    let value = random_value(&mut rng);
                    let replaced = mutate(&mut tree, &mut store, |t, s| t.insert(s, &key, &value));
                    assert_eq!(replaced, model.insert(key, value).is_some());
                }
                40..=64 => {
                    let first = model.range(key..).next().map(|(k, _)| k.clone()).unwrap_or_default();
                    let deleted = mutate(&mut tree, &mut store, |t, s| t.delete(s, &first));
                    assert_eq!(deleted, model.remove(&first).is_some());
                }
                65..=79 => {
                    let got = retry(&mut store, |s| tree.get_value(s, &key));
                    assert_eq!(got.as_ref(), model.get(&key));
                }
                80..=94 => {
                    let forward = rng.percent(50);
                    let from = Bound::Included(&key[..]);
                    let cursor = if forward { Cursor::forward(from) } else { Cursor::backward(from) };
                    let got = range(&tree, &mut store, cursor, 40);
                    assert!(got == model_range(&model, from, forward, 40));
                }
                _ => {
                    tree.checkpoint(&mut store, b"").unwrap();
                }
            }
        }
        assert!(store.misses > 100, "only {} misses", store.misses);
        store.resident.clear();
        let all = range(&tree, &mut store, Cursor::backward(Bound::Unbounded), usize::MAX);
        assert!(all.into_iter().rev().eq(model.clone()));
        store.resident = (0..store.inner.page_count()).map(crate::btree::PageId).collect();
        assert_matches(&tree, &store, &model);
    });
}

/// Loads what `missing_pages` lists until it lists nothing; returns the
/// number of rounds.
fn plan_and_load(tree: &Tree, store: &mut MissStore, from: Bound<&[u8]>, to: Bound<&[u8]>, values: bool) -> usize {
    for round in 0..64 {
        let mut out = Vec::new();
        tree.missing_pages(&*store, from, to, values, usize::MAX, &mut out).unwrap();
        if out.is_empty() {
            return round;
        }
        out.into_iter().for_each(|id| store.load(id));
    }
    panic!("planning never converged");
}

/// The entries from `cursor` until `stop` (excluded going forward,
/// included going backward stops below it), values read if `values`; any
/// miss fails the test.
fn planned_read(tree: &Tree, store: &MissStore, mut cursor: Cursor, stop: &[u8], values: bool) -> Pairs {
    let forward = cursor.direction() == crate::btree::Direction::Forward;
    let mut got = Vec::new();
    while let Some(e) = cursor.next(tree, store).unwrap_or_else(|e| panic!("planned read: {e}")) {
        if (forward && e.key >= stop) || (!forward && e.key < stop) {
            break;
        }
        let mut bytes = Vec::new();
        if values {
            tree.read_value(store, e.value, &mut bytes).unwrap();
        }
        got.push((e.key.to_vec(), bytes));
    }
    got
}

#[test]
fn missing_pages_lists_everything_a_range_read_needs_one_level_per_round() {
    for_seeds("missing_pages", 4, |seed| {
        let mut rng = Rng::new(seed);
        let mut inner = MemStore::new();
        let mut tree = Tree::create(&mut inner).unwrap();
        let mut model = Model::new();
        let mut counter = 0;
        for _ in 0..4000 {
            let key = random_key(&mut rng, &mut counter);
            let value = random_value(&mut rng);
            tree.insert(&inner, &key, &value).unwrap();
            model.insert(key, value);
        }
        tree.checkpoint(&mut inner, b"").unwrap();
        let mut store = MissStore { inner, resident: HashSet::new(), misses: 0 };
        let tree = retry(&mut store, Tree::open);
        let mut entries_read = 0;
        for _ in 0..20 {
            store.resident.clear();
            let (a, b) = (random_key(&mut rng, &mut counter), random_key(&mut rng, &mut counter));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let values = rng.percent(70);
            let rounds = plan_and_load(&tree, &mut store, Bound::Included(&lo), Bound::Excluded(&hi), values);
            assert!(rounds <= 8, "{rounds} rounds");
            let got = planned_read(&tree, &store, Cursor::forward(Bound::Included(&lo)), &hi, values);
            let mut backward = planned_read(&tree, &store, Cursor::backward(Bound::Excluded(&hi)), &lo, values);
            backward.reverse();
            assert!(backward == got, "backward planned read differs");
            entries_read += got.len();
            let expected = model.range(lo.clone()..hi.clone());
            let expected = expected.map(|(k, v)| (k.clone(), if values { v.clone() } else { Vec::new() }));
            assert!(got.into_iter().eq(expected), "planned read differs from the model");
        }
        assert!(entries_read > 100, "ranges too small to test anything: {entries_read} entries");
    });
}
