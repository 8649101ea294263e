//! Model-based tests: random operations against a `BTreeMap`, with
//! checkpoints, reopens and crashes (reopen without checkpoint) in between.

use std::ops::Bound;

use super::util::{
    assert_matches, collect, for_seeds, model_range, random_key, random_key_with, random_value, Model, Rng,
};
use crate::btree::{
    Cursor, Error, MemStore, PageStore, Tree, KEY_BYTES_MAX, META_BLOB_BYTES_MAX, PAGE_BODY_BYTES, VALUE_BYTES_MAX,
};

/// Random operations; returns the final model so callers can check more.
fn run_model(seed: u64, ops: usize) {
    let mut rng = Rng::new(seed);
    let long_percent = if seed.is_multiple_of(2) { 5 } else { 35 };
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let (mut model, mut durable) = (Model::new(), Model::new());
    let (mut counter, mut keys) = (0u64, Vec::<Vec<u8>>::new());
    for op in 0..ops {
        let known = |rng: &mut Rng, keys: &[Vec<u8>]| keys[rng.below(keys.len() as u64) as usize].clone();
        let existing = !keys.is_empty() && rng.percent(60);
        let key = if existing { known(&mut rng, &keys) } else { random_key_with(&mut rng, &mut counter, long_percent) };
        match rng.below(100) {
            0..=52 => {
                let value = random_value(&mut rng);
                let replaced = tree.insert(&store, &key, &value).unwrap();
                assert_eq!(replaced, model.insert(key.clone(), value).is_some(), "insert at op {op}");
                keys.push(key);
            }
            53..=69 => {
                let deleted = tree.delete(&store, &key).unwrap();
                assert_eq!(deleted, model.remove(&key).is_some(), "delete at op {op}");
            }
            70..=84 => assert_eq!(tree.get_value(&store, &key).unwrap().as_ref(), model.get(&key), "get at op {op}"),
            85..=94 => check_range(&mut rng, &tree, &store, &model, &key),
            95..=98 => {
                tree.checkpoint(&mut store, &(op as u64).to_le_bytes()).unwrap();
                durable = model.clone();
                tree.verify(&store).unwrap();
                if rng.percent(30) {
                    tree = Tree::open(&store).unwrap();
                    assert_eq!(tree.blob(), (op as u64).to_le_bytes());
                    assert_matches(&tree, &store, &model);
                }
            }
            _ if rng.percent(50) => {
                // A crash: everything since the last checkpoint is lost.
                tree = Tree::open(&store).unwrap();
                model = durable.clone();
                assert_matches(&tree, &store, &model);
            }
            _ => {}
        }
    }
    assert_matches(&tree, &store, &model);
    tree.checkpoint(&mut store, b"end").unwrap();
    assert_eq!(store.page_count(), tree.page_count());
    let tree = Tree::open(&store).unwrap();
    assert_matches(&tree, &store, &model);
}

/// A random range read, either direction, compared with the model.
fn check_range(rng: &mut Rng, tree: &Tree, store: &MemStore, model: &Model, key: &[u8]) {
    let from = match rng.below(3) {
        0 => Bound::Included(key),
        1 => Bound::Excluded(key),
        _ => Bound::Unbounded,
    };
    let limit = 1 + rng.below(60) as usize;
    let forward = rng.percent(50);
    let cursor = if forward { Cursor::forward(from) } else { Cursor::backward(from) };
    let got = collect(tree, store, cursor, limit).unwrap();
    assert!(got == model_range(model, from, forward, limit), "range from {from:?} forward={forward}");
}

#[test]
fn random_operations_match_a_btreemap_across_checkpoints_and_reopens() {
    let ops = std::env::var("BTREE_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    for_seeds("random_operations_match_a_btreemap", 6, |seed| run_model(seed, ops));
}

#[test]
fn ascending_inserts_fill_leaves_almost_completely() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let (count, value) = (20_000u64, [7u8; 100]);
    for i in 0..count {
        tree.insert(&store, &i.to_be_bytes(), &value).unwrap();
    }
    tree.checkpoint(&mut store, b"").unwrap();
    let stats = tree.verify(&store).unwrap();
    let cell_bytes = 2 + 7 + 8 + value.len() as u64;
    let ideal_leaves = (count * cell_bytes).div_ceil(PAGE_BODY_BYTES as u64);
    assert!(
        stats.node_pages * 100 <= ideal_leaves * 103,
        "{} node pages for {ideal_leaves} ideal leaves",
        stats.node_pages
    );
}

#[test]
fn random_inserts_keep_pages_at_least_half_full() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let mut rng = Rng::new(7);
    for _ in 0..20_000 {
        tree.insert(&store, &rng.next_u64().to_be_bytes(), &[1; 100]).unwrap();
    }
    let stats = tree.verify(&store).unwrap();
    let ideal = (20_000 * (2 + 7 + 8 + 100u64)).div_ceil(PAGE_BODY_BYTES as u64);
    assert!(stats.node_pages <= ideal * 2, "{} node pages for {ideal} ideal", stats.node_pages);
}

#[test]
fn file_shrinks_once_the_tail_is_free() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    for i in 0..5000u32 {
        tree.insert(&store, &i.to_be_bytes(), &[3; 300]).unwrap();
    }
    tree.checkpoint(&mut store, b"").unwrap();
    let full = store.page_count();
    assert!(full > 300, "{full} pages");
    for i in 0..5000u32 {
        assert!(tree.delete(&store, &i.to_be_bytes()).unwrap());
    }
    for _ in 0..3 {
        tree.checkpoint(&mut store, b"").unwrap();
        tree.verify(&store).unwrap();
    }
    assert!(tree.is_empty());
    assert!(store.page_count() <= 4, "{} pages left of {full}", store.page_count());
    assert_eq!(store.page_count(), tree.page_count());
    let tree = Tree::open(&store).unwrap();
    assert_matches(&tree, &store, &Model::new());
}

#[test]
fn freed_pages_are_reused_under_steady_overwrites() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let mut rng = Rng::new(3);
    let mut sizes = Vec::new();
    for round in 0..30 {
        for _ in 0..500 {
            let key = rng.below(2000).to_be_bytes();
            tree.insert(&store, &key, &rng.bytes(200)).unwrap();
        }
        tree.checkpoint(&mut store, b"").unwrap();
        if round >= 10 {
            sizes.push(store.page_count());
        }
    }
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(*max <= *min + min / 4, "file keeps growing: {sizes:?}");
}

#[test]
fn large_values_round_trip_up_to_the_bound() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let mut rng = Rng::new(11);
    let kube_object = rng.bytes(1536 * 1024);
    let largest = rng.bytes(VALUE_BYTES_MAX);
    tree.insert(&store, b"pod", &kube_object).unwrap();
    tree.insert(&store, b"max", &largest).unwrap();
    assert_eq!(tree.get_value(&store, b"pod").unwrap().unwrap(), kube_object);
    tree.checkpoint(&mut store, b"").unwrap();
    let mut tree = Tree::open(&store).unwrap();
    assert_eq!(tree.get_value(&store, b"max").unwrap().unwrap(), largest);
    assert_eq!(tree.get_value(&store, b"pod").unwrap().unwrap(), kube_object);
    let too_large = vec![0; VALUE_BYTES_MAX + 1];
    assert!(matches!(tree.insert(&store, b"x", &too_large), Err(Error::ValueTooLarge { .. })));
    let long_key = vec![b'k'; KEY_BYTES_MAX + 1];
    assert!(matches!(tree.insert(&store, &long_key, b""), Err(Error::KeyTooLarge { .. })));
    assert!(tree.delete(&store, b"pod").unwrap());
    tree.insert(&store, b"max", b"small now").unwrap();
    tree.checkpoint(&mut store, b"").unwrap();
    tree.checkpoint(&mut store, b"").unwrap();
    let stats = tree.verify(&store).unwrap();
    assert_eq!(stats.overflow_pages, 0);
    // The freed pages are reused: storing the value again does not grow the file.
    let pages = store.page_count();
    assert!(tree.free_pages() as u64 > pages - 20, "{} free of {pages}", tree.free_pages());
    tree.insert(&store, b"pod", &kube_object).unwrap();
    tree.checkpoint(&mut store, b"").unwrap();
    assert!(store.page_count() <= pages, "{} pages, was {pages}", store.page_count());
}

#[test]
fn mutations_during_a_staged_checkpoint_land_in_the_next_one() {
    for_seeds("mutations_during_a_staged_checkpoint", 4, |seed| {
        let mut rng = Rng::new(seed);
        let mut store = MemStore::new();
        let mut tree = Tree::create(&mut store).unwrap();
        let mut model = Model::new();
        let mut counter = 0;
        for round in 0..20u64 {
            random_writes(&mut rng, &mut tree, &store, &mut model, &mut counter, 200);
            let at_begin = model.clone();
            let checkpoint = tree.begin_checkpoint(&round.to_le_bytes()).unwrap();
            assert!(matches!(tree.begin_checkpoint(b""), Err(Error::CheckpointInFlight)));
            // The caller writes asynchronously while the tree keeps serving.
            random_writes(&mut rng, &mut tree, &store, &mut model, &mut counter, 100);
            for (id, page) in checkpoint.pages() {
                store.write(*id, page).unwrap();
            }
            random_writes(&mut rng, &mut tree, &store, &mut model, &mut counter, 50);
            let (meta_id, meta) = checkpoint.meta();
            store.write(meta_id, meta).unwrap();
            let page_count = checkpoint.page_count();
            tree.finish_checkpoint(checkpoint).unwrap();
            store.truncate(page_count).unwrap();
            assert_eq!(tree.blob(), round.to_le_bytes());
            tree.verify(&store).unwrap();
            assert_matches(&Tree::open(&store).unwrap(), &store, &at_begin);
            assert_matches(&tree, &store, &model);
        }
    });
}

fn random_writes(rng: &mut Rng, tree: &mut Tree, store: &MemStore, model: &mut Model, counter: &mut u64, n: usize) {
    for _ in 0..n {
        let key = random_key(rng, counter);
        if rng.percent(30) {
            let first = model.range(key.clone()..).next().map(|(k, _)| k.clone());
            if let Some(k) = first {
                assert!(tree.delete(store, &k).unwrap());
                model.remove(&k);
            }
        } else {
            let value = random_value(rng);
            tree.insert(store, &key, &value).unwrap();
            model.insert(key, value);
        }
    }
}

#[test]
fn checkpoint_blob_round_trips_and_is_bounded() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let blob = vec![9u8; META_BLOB_BYTES_MAX];
    tree.checkpoint(&mut store, &blob).unwrap();
    assert_eq!(Tree::open(&store).unwrap().blob(), blob);
    let too_large = vec![0u8; META_BLOB_BYTES_MAX + 1];
    assert!(matches!(tree.begin_checkpoint(&too_large), Err(Error::BlobTooLarge { .. })));
    let number = tree.checkpoint_number();
    let mut other = Tree::open(&store).unwrap();
    let foreign = other.begin_checkpoint(b"").unwrap();
    assert!(matches!(tree.finish_checkpoint(foreign), Err(Error::CheckpointMismatch { .. })));
    assert_eq!(tree.checkpoint_number(), number);
}

#[test]
fn cursor_continues_past_its_last_key_after_the_tree_changes() {
    for_seeds("cursor_continues_after_mutation", 6, |seed| {
        let mut rng = Rng::new(seed);
        let mut store = MemStore::new();
        let mut tree = Tree::create(&mut store).unwrap();
        let mut model = Model::new();
        let mut counter = 0;
        random_writes(&mut rng, &mut tree, &store, &mut model, &mut counter, 1500);
        if rng.percent(50) {
            tree.checkpoint(&mut store, b"").unwrap();
        }
        let forward = rng.percent(50);
        let mut cursor = if forward { Cursor::forward(Bound::Unbounded) } else { Cursor::backward(Bound::Unbounded) };
        let mut last: Option<Vec<u8>> = None;
        loop {
            let expected = match (&last, forward) {
                (None, true) => model.keys().next().cloned(),
                (None, false) => model.keys().next_back().cloned(),
                (Some(k), true) => {
                    model.range::<Vec<u8>, _>((Bound::Excluded(k), Bound::Unbounded)).next().map(|e| e.0.clone())
                }
                (Some(k), false) => model.range::<Vec<u8>, _>(..k).next_back().map(|e| e.0.clone()),
            };
            let got = cursor.next(&tree, &store).unwrap().map(|e| e.key.to_vec());
            assert_eq!(got, expected);
            let Some(key) = got else { break };
            last = Some(key);
            if rng.percent(20) {
                random_writes(&mut rng, &mut tree, &store, &mut model, &mut counter, 5);
            }
        }
        assert_matches(&tree, &store, &model);
    });
}

#[test]
fn draining_a_deep_tree_merges_and_collapses_it_to_empty() {
    for_seeds("draining_a_deep_tree", 4, |seed| {
        let mut rng = Rng::new(seed);
        let mut store = MemStore::new();
        let mut tree = Tree::create(&mut store).unwrap();
        let mut model = Model::new();
        let mut counter = 0;
        while model.len() < 2500 {
            let key = random_key_with(&mut rng, &mut counter, 60);
            let len = rng.below(200) as usize;
            let value = rng.bytes(len);
            tree.insert(&store, &key, &value).unwrap();
            model.insert(key, value);
        }
        let depth = tree.verify(&store).unwrap().depth;
        assert!(depth >= 4, "depth {depth}");
        let mut keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for (i, key) in keys.iter().enumerate() {
            assert!(tree.delete(&store, key).unwrap());
            model.remove(key);
            if i % 97 == 0 && rng.percent(50) {
                tree.checkpoint(&mut store, b"").unwrap();
            }
            if i % 250 == 0 {
                assert_matches(&tree, &store, &model);
            }
        }
        assert_matches(&tree, &store, &model);
        assert_eq!(tree.verify(&store).unwrap().depth, 0);
    });
}

#[test]
fn cursor_current_rereads_the_entry_it_stands_on_in_both_directions() {
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    for i in 0..3000u32 {
        tree.insert(&store, &i.to_be_bytes(), &i.to_le_bytes()).unwrap();
    }
    for mut cursor in [Cursor::forward(Bound::Unbounded), Cursor::backward(Bound::Unbounded)] {
        assert!(cursor.current().unwrap().is_none(), "not positioned yet");
        let mut seen = 0;
        while let Some(key) = cursor.next(&tree, &store).unwrap().map(|e| e.key.to_vec()) {
            let current = cursor.current().unwrap().unwrap();
            assert_eq!(current.key, &key[..]);
            let n = u32::from_be_bytes(key.try_into().unwrap());
            assert_eq!(current.value, crate::btree::Value::Inline(&n.to_le_bytes()));
            seen += 1;
        }
        assert_eq!(seen, 3000);
        assert!(cursor.current().unwrap().is_none(), "past the end");
    }
}
