//! Damage to a data page on disk (flipped bytes, a page written at the
//! wrong place) is detected when the page is read, and reported as an
//! error naming the file and the page's byte offset: never a panic, never
//! a wrong answer. So is a damaged page handed to `insert_loaded`.

use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::util::{read_file_page, TempDir};
use crate::btree::{PageId, PAGE_BYTES};
use crate::mvcc::disk::{DataFile, DiskError, DiskStore, Touch};
use crate::mvcc::{End, MvccStore, Rev};

const KEYS: u32 = 3000;
const CACHE_BYTES: usize = 1 << 20;

fn key(i: u32) -> Vec<u8> {
    format!("/registry/configmaps/{i:05}").into_bytes()
}

/// A checkpointed file of `KEYS` keys.
fn write_file(path: &Path) {
    let (mut store, _) = DiskStore::open_path(path, CACHE_BYTES).unwrap();
    for i in 0..KEYS {
        store.put(&key(i), &[i as u8; 100], 0, Rev { main: 2 + i64::from(i), sub: 0 });
    }
    store.checkpoint_sync(1, b"").unwrap();
}

/// The leaves a read of `key` may visit (its own and its neighbours: the
/// last round of its load plan), loading the path as the node would.
fn leaves_of(path: &Path, key: &[u8]) -> Vec<PageId> {
    let (store, _) = DiskStore::open_path(path, CACHE_BYTES).unwrap();
    let mut last_round = Vec::new();
    loop {
        let plan = store.plan_loads(&[Touch::Key(key)], 64).unwrap();
        if plan.pages.is_empty() {
            assert!(!last_round.is_empty(), "the root is a branch");
            return last_round;
        }
        for &id in &plan.pages {
            assert!(store.insert_loaded(plan.ticket, id, read_file_page(path, id)).unwrap());
        }
        last_round = plan.pages;
    }
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

/// Reads `target` and everything from a fresh open; the damage to `pages`
/// must break the store with an error naming the file and the offset of
/// one of them.
fn assert_reported(path: &Path, target: &[u8], pages: &[PageId]) {
    let (store, _) = DiskStore::open_path(path, CACHE_BYTES).unwrap();
    assert!(store.latest(target).is_none(), "a damaged leaf gave an answer");
    let e = store.take_error().expect("the damage is reported");
    match &e {
        DiskError::Corrupt { path: p, page, offset, .. } => {
            assert!(pages.contains(page), "page {page} reported, {pages:?} damaged");
            assert_eq!((p.as_path(), *offset), (path, page.0 * PAGE_BYTES as u64));
        }
        other => panic!("expected a corruption error, got {other}"),
    }
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains(&format!("byte offset {}", e.offset().unwrap_or(0))), "{message}");
    // A full scan from a fresh open stops at the damage too, and says so.
    let (store, _) = DiskStore::open_path(path, CACHE_BYTES).unwrap();
    let mut seen = 0u32;
    store.scan(b"", End::Unbounded, i64::MAX, &mut |kv| {
        assert_eq!((kv.key, kv.value), (&key(seen)[..], &[seen as u8; 100][..]), "a key before the damage");
        seen += 1;
        ControlFlow::Continue(())
    });
    assert!(seen < KEYS && store.is_broken(), "a scan over the damage must break the store");
}

#[test]
fn a_flipped_byte_in_a_leaf_on_disk_is_reported_with_file_and_offset() {
    let dir = TempDir::new("corrupt-flip");
    let path = dir.path("shard.db");
    write_file(&path);
    let target = key(1234);
    let leaves = leaves_of(&path, &target);
    for leaf in &leaves {
        let offset = leaf.0 * PAGE_BYTES as u64 + 2000;
        let mut byte = [0u8];
        std::fs::File::open(&path).unwrap().read_exact_at(&mut byte, offset).unwrap();
        overwrite(&path, offset, &[byte[0] ^ 0x40]);
    }
    assert_reported(&path, &target, &leaves);
}

#[test]
fn a_page_written_at_the_wrong_place_is_reported_with_file_and_offset() {
    let dir = TempDir::new("corrupt-misdirected");
    let path = dir.path("shard.db");
    write_file(&path);
    let target = key(77);
    let leaves = leaves_of(&path, &target);
    let other = leaves_of(&path, &key(2900))[0];
    assert!(!leaves.contains(&other));
    // A valid page with a valid checksum, but another page's.
    for leaf in &leaves {
        overwrite(&path, leaf.0 * PAGE_BYTES as u64, read_file_page(&path, other).bytes());
    }
    assert_reported(&path, &target, &leaves);
}

#[test]
fn a_damaged_page_handed_to_insert_loaded_is_refused_with_file_and_offset() {
    let dir = TempDir::new("corrupt-loaded");
    let path = dir.path("shard.db");
    write_file(&path);
    let (store, _) = DiskStore::<DataFile>::open_path(&path, CACHE_BYTES).unwrap();
    let plan = store.plan_loads(&[Touch::Key(&key(5))], 64).unwrap();
    let id = plan.pages[0];
    let mut page = read_file_page(&path, id);
    page.bytes_mut()[3000] ^= 1;
    let e = store.insert_loaded(plan.ticket, id, page).unwrap_err();
    assert_eq!(e.offset(), Some(id.0 * PAGE_BYTES as u64));
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert!(store.is_broken());
    assert!(store.latest(&key(5)).is_none());
}
