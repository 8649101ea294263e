//! The fuzz entry points never panic: random bytes, and real pages of
//! every kind with random damage.

use super::util::{random_key, random_value, Rng};
use crate::btree::{fuzz_meta, fuzz_page, MemStore, Page, PageId, PageStore, Tree, HEADER_BYTES, PAGE_BYTES};

/// Every page of a small tree with leaves, branches, overflow values and
/// a free list.
fn real_pages() -> Vec<Page> {
    let mut rng = Rng::new(5);
    let mut store = MemStore::new();
    let mut tree = Tree::create(&mut store).unwrap();
    let mut counter = 0;
    for _ in 0..1500 {
        let key = random_key(&mut rng, &mut counter);
        tree.insert(&store, &key, &random_value(&mut rng)).unwrap();
    }
    tree.checkpoint(&mut store, b"blob").unwrap();
    for _ in 0..300 {
        let key = random_key(&mut rng, &mut counter);
        tree.delete(&store, &key).unwrap();
    }
    tree.checkpoint(&mut store, b"blob").unwrap();
    (0..store.page_count()).filter_map(|id| store.raw(PageId(id)).map(|p| (**p).clone())).collect()
}

fn damage(rng: &mut Rng, bytes: &mut [u8]) {
    for _ in 0..1 + rng.below(8) {
        let at = if rng.percent(50) { rng.below(HEADER_BYTES as u64 + 64) } else { rng.below(PAGE_BYTES as u64) };
        bytes[at as usize] = rng.next_u64() as u8;
    }
}

#[test]
fn decoders_never_panic_on_random_bytes() {
    let mut rng = Rng::new(1);
    for _ in 0..3000 {
        let len = if rng.percent(70) { PAGE_BYTES } else { rng.below(PAGE_BYTES as u64 + 64) as usize };
        let mut bytes = rng.bytes(len);
        if len == PAGE_BYTES && rng.percent(50) {
            // Plausible kinds and small counts get the decoders further.
            bytes[12] = 1 + rng.below(6) as u8;
            bytes[13] = rng.below(3) as u8;
            bytes[14..16].copy_from_slice(&(rng.below(40) as u16).to_le_bytes());
        }
        fuzz_page(&bytes);
        fuzz_meta(&bytes);
    }
}

#[test]
fn decoders_never_panic_on_damaged_real_pages() {
    let pages = real_pages();
    assert!(pages.len() > 50);
    let mut rng = Rng::new(2);
    for i in 0..6000 {
        let mut page = pages[i % pages.len()].clone();
        damage(&mut rng, page.bytes_mut());
        fuzz_page(page.bytes());
        fuzz_meta(page.bytes());
    }
}
