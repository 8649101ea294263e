//! Corrupt pages are detected by their checksum and reported with the page
//! id (and byte offset); a damaged newest meta page falls back to the other.

use std::ops::Bound;

use super::util::{assert_matches, collect, Model};
use crate::btree::{Corruption, Cursor, Error, FileStore, MemStore, Page, PageId, PageStore, Tree, PAGE_BYTES};

/// A tree of 2000 keys, checkpointed.
fn sample_tree(store: &mut MemStore) -> (Tree, Model) {
    let mut tree = Tree::create(store).unwrap();
    let mut model = Model::new();
    for i in 0..2000u32 {
        let (key, value) = (format!("key{i:05}").into_bytes(), vec![i as u8; 50]);
        tree.insert(store, &key, &value).unwrap();
        model.insert(key, value);
    }
    tree.checkpoint(store, b"").unwrap();
    (tree, model)
}

/// `store` with byte `offset` of page `id` flipped.
fn flipped(store: &MemStore, id: PageId, offset: usize) -> MemStore {
    let mut damaged = store.clone();
    let mut page = (**store.raw(id).unwrap()).clone();
    page.bytes_mut()[offset] ^= 0x40;
    damaged.set_raw(id, Some(page));
    damaged
}

fn assert_corrupt(e: &Error, page: PageId) {
    match e {
        Error::Corrupt { page: p, corruption: Corruption::Checksum { .. } } if *p == page => {}
        other => panic!("expected a checksum error on page {page}, got {other}"),
    }
    let message = e.to_string();
    assert!(message.contains(&format!("page {page} ")), "{message}");
    assert!(message.contains(&format!("offset {}", page.byte_offset())), "{message}");
}

#[test]
fn a_flipped_byte_in_a_leaf_is_reported_with_its_page() {
    let mut store = MemStore::new();
    let (tree, _) = sample_tree(&mut store);
    let leaf = tree.descend(&store, b"key01000").unwrap().last().unwrap().id;
    for offset in [0, 5, 13, 100, PAGE_BYTES - 1] {
        let damaged = flipped(&store, leaf, offset);
        let tree = Tree::open(&damaged).unwrap();
        assert_corrupt(&tree.get(&damaged, b"key01000").err().unwrap(), leaf);
        let scan = collect(&tree, &damaged, Cursor::forward(Bound::Unbounded), usize::MAX);
        assert_corrupt(&scan.err().unwrap(), leaf);
        assert!(tree.verify(&damaged).is_err());
    }
}

#[test]
fn a_flipped_byte_in_the_root_fails_open() {
    let mut store = MemStore::new();
    let (tree, _) = sample_tree(&mut store);
    let root = tree.descend(&store, b"").unwrap()[0].id;
    assert_corrupt(&Tree::open(&flipped(&store, root, 2000)).err().unwrap(), root);
}

#[test]
fn a_damaged_newest_meta_page_falls_back_to_the_older_one() {
    let mut store = MemStore::new();
    let (mut tree, model) = sample_tree(&mut store);
    tree.insert(&store, b"later", b"x").unwrap();
    tree.checkpoint(&mut store, b"newest").unwrap();
    let newest = PageId(tree.checkpoint_number() % 2);
    let fallback = Tree::open(&flipped(&store, newest, 60)).unwrap();
    assert_eq!(fallback.checkpoint_number(), tree.checkpoint_number() - 1);
    assert_matches(&fallback, &store, &model);
    let both = flipped(&flipped(&store, PageId(0), 60), PageId(1), 60);
    assert!(matches!(Tree::open(&both), Err(Error::NoValidMeta { .. })));
    assert!(matches!(Tree::open(&MemStore::new()), Err(Error::NotFormatted)));
    assert!(matches!(Tree::create(&mut store.clone()), Err(Error::NotEmpty { .. })));
}

#[test]
fn a_file_store_round_trips_shrinks_and_reports_corruption_with_offsets() {
    let dir = std::env::temp_dir().join(format!("btree-test-{}-{}", std::process::id(), line!()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shard.btree");
    let _ = std::fs::remove_file(&path);
    let mut store = FileStore::open(&path).unwrap();
    let mut tree = Tree::open_or_create(&mut store).unwrap();
    let mut model = Model::new();
    for i in 0..3000u32 {
        let (key, value) = (i.to_be_bytes().to_vec(), vec![i as u8; 200]);
        tree.insert(&store, &key, &value).unwrap();
        model.insert(key, value);
    }
    tree.checkpoint(&mut store, b"applied=42").unwrap();
    drop(store);
    let mut store = FileStore::open(&path).unwrap();
    let mut tree = Tree::open_or_create(&mut store).unwrap();
    assert_eq!(tree.blob(), b"applied=42");
    assert_matches(&tree, &store, &model);
    let full_bytes = std::fs::metadata(&path).unwrap().len();
    for i in 0..3000u32 {
        tree.delete(&store, &i.to_be_bytes()).unwrap();
    }
    for _ in 0..3 {
        tree.checkpoint(&mut store, b"").unwrap();
    }
    let small_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(small_bytes * 20 < full_bytes, "file went from {full_bytes} to {small_bytes} bytes");
    tree.insert(&store, b"k", b"v").unwrap();
    tree.checkpoint(&mut store, b"").unwrap();
    let leaf = tree.descend(&store, b"k").unwrap()[0].id;
    let mut page = Page::zeroed();
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&path).unwrap(),
        page.bytes_mut(),
        leaf.byte_offset(),
    )
    .unwrap();
    page.bytes_mut()[3000] ^= 1;
    let damaged = Page::from_bytes(page.bytes()).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::File::options().write(true).open(&path).unwrap(),
        damaged.bytes(),
        leaf.byte_offset(),
    )
    .unwrap();
    let store = FileStore::open(&path).unwrap();
    let error = Tree::open(&store).err().unwrap();
    assert_corrupt(&error, leaf);
    assert_eq!(store.page_count(), std::fs::metadata(&path).unwrap().len() / PAGE_BYTES as u64);
    std::fs::remove_dir_all(&dir).unwrap();
}
