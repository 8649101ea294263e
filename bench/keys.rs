//! Which key each request uses: the key space (prefix plus a zero-padded
//! decimal key number, every key exactly `key_size` bytes), a small fast
//! random generator, and random or sequential key order. Sans-IO.

use crate::args::decimal_digits;

/// Keys `0..size`, each `prefix` followed by its number in decimal,
/// left-padded with zeros to `key_size` bytes. Fixed-size keys let a
/// request be encoded once and patched in place (see `workload`).
#[derive(Clone, Debug)]
pub struct KeySpace {
    prefix: Vec<u8>,
    key_size: usize,
    size: u64,
}

impl KeySpace {
    /// A key space; `key_size` must hold the prefix and `size - 1` in decimal.
    pub fn new(prefix: &[u8], key_size: usize, size: u64) -> KeySpace {
        assert!(size >= 1, "an empty key space");
        assert!(key_size >= prefix.len() + decimal_digits(size - 1), "keys of {key_size} bytes cannot hold the key numbers");
        KeySpace { prefix: prefix.to_vec(), key_size, size }
    }

    /// Bytes per key.
    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// Number of distinct keys.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes key number `index` into `out`, which is `key_size` bytes.
    pub fn write(&self, index: u64, out: &mut [u8]) {
        assert!(index < self.size, "key {index} is outside the key space of {}", self.size);
        assert_eq!(out.len(), self.key_size);
        let (head, digits) = out.split_at_mut(self.prefix.len());
        head.copy_from_slice(&self.prefix);
        let mut n = index;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        debug_assert_eq!(n, 0);
    }

    /// Key number `index` as a new vector (preload and tests).
    pub fn key(&self, index: u64) -> Vec<u8> {
        let mut out = vec![0; self.key_size];
        self.write(index, &mut out);
        out
    }

    /// `(key, range_end)` of a Range over every key under the prefix; an
    /// empty prefix means every key (`"\0"`, `"\0"` in etcd's terms).
    pub fn prefix_range(&self) -> (Vec<u8>, Vec<u8>) {
        if self.prefix.is_empty() {
            return (vec![0], vec![0]);
        }
        (self.prefix.clone(), prefix_end(&self.prefix))
    }
}

/// The smallest key greater than every key starting with `prefix`, as
/// etcd's clientv3 `GetPrefixRangeEnd` computes it: increment the last byte
/// below 0xff and drop what follows; a prefix of only 0xff bytes has no
/// end, written `"\0"` (to the end of the key space).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// splitmix64: fast, good enough for picking keys, reproducible by seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed; distinct seeds give distinct streams.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias below 2^-64 · n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The order in which one generator thread visits keys.
#[derive(Clone, Debug)]
pub enum KeyPicker {
    /// Uniformly random keys.
    Random { rng: Rng, size: u64 },
    /// Thread `t` of `n` visits `t, t + n, t + 2n, ...` modulo the key
    /// space, so all threads together go through the keys in order.
    Sequential { next: u64, stride: u64, size: u64 },
}

impl KeyPicker {
    /// The picker of thread `thread` of `threads`.
    pub fn new(sequential: bool, seed: u64, thread: usize, threads: usize, size: u64) -> KeyPicker {
        if sequential {
            KeyPicker::Sequential { next: thread as u64 % size, stride: threads as u64, size }
        } else {
            // Spread thread seeds apart so threads do not share a stream.
            let seed = seed ^ (thread as u64).wrapping_mul(0xd6e8_feb8_6659_fd93);
            KeyPicker::Random { rng: Rng::new(seed), size }
        }
    }

    /// The next key number.
    pub fn next_index(&mut self) -> u64 {
        match self {
            KeyPicker::Random { rng, size } => rng.below(*size),
            KeyPicker::Sequential { next, stride, size } => {
                let index = *next;
                *next = (*next + *stride % *size) % *size;
                index
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefix_then_zero_padded_number_of_fixed_size() {
        let space = KeySpace::new(b"/r/", 8, 100_000);
        assert_eq!(space.key(0), b"/r/00000");
        assert_eq!(space.key(42), b"/r/00042");
        assert_eq!(space.key(99_999), b"/r/99999");
        let wide = KeySpace::new(b"", 6, 10);
        assert_eq!(wide.key(7), b"000007");
    }

    #[test]
    fn keys_sort_like_their_numbers() {
        let space = KeySpace::new(b"k", 5, 1000);
        let keys: Vec<_> = (0..1000).map(|i| space.key(i)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    #[should_panic(expected = "outside the key space")]
    fn a_key_outside_the_space_is_a_bug() {
        KeySpace::new(b"", 3, 10).key(10);
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        let (key, end) = KeySpace::new(b"", 3, 10).prefix_range();
        assert_eq!((key, end), (vec![0], vec![0]));
        let (key, end) = KeySpace::new(b"/p/", 5, 10).prefix_range();
        assert_eq!((key.as_slice(), end.as_slice()), (&b"/p/"[..], &b"/p0"[..]));
    }

    #[test]
    fn random_keys_cover_the_space_roughly_uniformly() {
        let mut picker = KeyPicker::new(false, 7, 0, 1, 10);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[picker.next_index() as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn random_keys_are_reproducible_by_seed_and_differ_by_thread() {
        let take = |seed, thread| {
            let mut p = KeyPicker::new(false, seed, thread, 2, 1 << 40);
            (0..8).map(|_| p.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(take(1, 0), take(1, 0));
        assert_ne!(take(1, 0), take(1, 1));
        assert_ne!(take(1, 0), take(2, 0));
    }

    #[test]
    fn sequential_threads_interleave_and_wrap() {
        let take = |thread| {
            let mut p = KeyPicker::new(true, 0, thread, 3, 7);
            (0..5).map(|_| p.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(take(0), vec![0, 3, 6, 2, 5]);
        assert_eq!(take(1), vec![1, 4, 0, 3, 6]);
        let mut single = KeyPicker::new(true, 0, 0, 1, 3);
        assert_eq!((0..4).map(|_| single.next_index()).collect::<Vec<_>>(), vec![0, 1, 2, 0]);
    }
}
