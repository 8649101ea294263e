//! Injected I/O errors (a store that fails after a countdown) surface as
//! errors and never as wrong answers; a failed checkpoint leaves a file
//! that reopens to the previous or the new checkpoint.

use std::ops::Bound;

use super::util::{assert_matches, collect, for_seeds, model_range, random_key, random_value, FaultyStore, Model, Rng};
use crate::btree::{Cursor, Error, MemStore, Tree};

fn assert_injected(e: &Error) {
    assert!(matches!(e, Error::Io { .. }), "expected the injected I/O error, got {e}");
}

/// Everything the tree holds, read with faults off.
fn contents(tree: &Tree, store: &FaultyStore) -> Model {
    let entries = collect(tree, store, Cursor::forward(Bound::Unbounded), usize::MAX).unwrap();
    entries.into_iter().collect()
}

#[test]
fn injected_io_errors_surface_as_errors_never_as_wrong_answers() {
    for_seeds("injected_io_errors", 6, |seed| {
        let mut rng = Rng::new(seed);
        let mut store = FaultyStore::new(MemStore::new());
        let mut tree = Tree::create(&mut store).unwrap();
        let (mut model, mut durable) = (Model::new(), Model::new());
        let mut counter = 0;
        for op in 0..2500u64 {
            if rng.percent(4) {
                store.arm(rng.below(40));
            } else if rng.percent(3) {
                store.disarm();
            }
            let key = random_key(&mut rng, &mut counter);
            match rng.below(100) {
                0..=49 => {
                    let value = random_value(&mut rng);
                    match tree.insert(&store, &key, &value) {
                        Ok(replaced) => assert_eq!(replaced, model.insert(key, value).is_some(), "op {op}"),
                        Err(e) => assert_injected(&e),
                    }
                }
                50..=64 => match tree.delete(&store, &key) {
                    Ok(deleted) => assert_eq!(deleted, model.remove(&key).is_some(), "op {op}"),
                    Err(e) => assert_injected(&e),
                },
                65..=79 => match tree.get_value(&store, &key) {
                    Ok(value) => assert_eq!(value.as_ref(), model.get(&key), "op {op}"),
                    Err(e) => assert_injected(&e),
                },
                80..=94 => match collect(&tree, &store, Cursor::forward(Bound::Included(&key)), 20) {
                    Ok(got) => assert!(got == model_range(&model, Bound::Included(&key), true, 20), "op {op}"),
                    Err(e) => assert_injected(&e),
                },
                _ => match tree.checkpoint(&mut store, &op.to_le_bytes()) {
                    Ok(_) => durable = model.clone(),
                    Err(e) => {
                        assert_injected(&e);
                        store.disarm();
                        tree = Tree::open(&store).unwrap();
                        let reopened = contents(&tree, &store);
                        assert!(reopened == durable || reopened == model, "op {op}: reopened to neither state");
                        model = reopened.clone();
                        durable = reopened;
                    }
                },
            }
        }
        store.disarm();
        assert!(store.injected.get() > 0, "no fault was injected");
        assert_matches(&tree, &store, &model);
    });
}

#[test]
fn open_with_a_failing_store_reports_the_error() {
    let mut store = FaultyStore::new(MemStore::new());
    let mut tree = Tree::create(&mut store).unwrap();
    for i in 0..3000u32 {
        tree.insert(&store, &i.to_be_bytes(), &[1; 64]).unwrap();
    }
    for i in (0..3000u32).step_by(2) {
        tree.delete(&store, &i.to_be_bytes()).unwrap();
    }
    tree.checkpoint(&mut store, b"").unwrap();
    tree.checkpoint(&mut store, b"").unwrap();
    for countdown in 0..6 {
        store.arm(countdown);
        match Tree::open(&store) {
            Ok(_) => {}
            Err(e) => assert_injected(&e),
        }
    }
    store.disarm();
    tree = Tree::open(&store).unwrap();
    assert_eq!(tree.len(), 1500);
}
