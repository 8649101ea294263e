//! The fuzz entry points of the store's decoders never panic: random
//! bytes, and real encodings with random damage.

use super::util::Rng;
use crate::mvcc::disk::blob::Blob;
use crate::mvcc::disk::keys::tree_key;
use crate::mvcc::disk::value::{encode, PutMeta};
use crate::mvcc::disk::{fuzz_blob, fuzz_tree_key, fuzz_value};
use crate::mvcc::Rev;

fn damage(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(3) {
            0 if !bytes.is_empty() => {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
            1 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
            _ => bytes.push(rng.next_u64() as u8),
        }
    }
}

#[test]
fn decoders_of_tree_keys_values_and_blobs_never_panic() {
    let mut rng = Rng::new(99);
    for _ in 0..20_000 {
        let random: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect();
        fuzz_tree_key(&random);
        fuzz_value(&random);
        fuzz_blob(&random);
        let key = rng.key();
        let rev = Rev { main: rng.next_u64() as i64, sub: rng.below(4) as i64 };
        let mut tk = tree_key(&key, rev);
        fuzz_tree_key(&tk);
        damage(&mut rng, &mut tk);
        fuzz_tree_key(&tk);
        let meta = PutMeta { create_revision: 1, version: 2, lease: 3 };
        let value = rng.value();
        let full_key = (key.len() > crate::mvcc::disk::SHORT_KEY_BYTES_MAX).then_some(&key[..]);
        let mut v = encode(full_key, rng.percent(80).then_some((meta, &value[..])));
        fuzz_value(&v);
        damage(&mut rng, &mut v);
        fuzz_value(&v);
        let mut b = Blob { applied_index: 1, extra: value[..value.len().min(100)].to_vec(), ..Blob::default() }
            .encode()
            .unwrap();
        fuzz_blob(&b);
        damage(&mut rng, &mut b);
        fuzz_blob(&b);
    }
}
