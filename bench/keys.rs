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
        assert!(
            key_size >= prefix.len() + decimal_digits(size - 1),
            "keys of {key_size} bytes cannot hold the key numbers"
        );
        KeySpace { prefix: prefix.to_vec(), key_size, size }
    }

    /// Bytes per key.
    pub fn key_size(&self) -> usize {
        self.key_size
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

    /// Key number `index` as a new vector.
    #[cfg(test)]
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

/// The order in which one generator thread visits keys: random or
/// sequential, over the whole key space or over the thread's own share.
#[derive(Clone, Debug)]
pub struct KeyPicker {
    order: Order,
    /// Positions `0..count` map to key numbers `offset + stride * position`.
    count: u64,
    stride: u64,
    offset: u64,
}

#[derive(Clone, Debug)]
enum Order {
    Random(Rng),
    /// The next position and the step between positions.
    Sequential {
        next: u64,
        step: u64,
    },
}

impl KeyPicker {
    /// The picker of thread `thread` of `threads` over keys `0..size`.
    ///
    /// Shared: every thread may pick any key; sequential threads interleave
    /// (`t, t + n, t + 2n, ...` modulo `size`) so that together they go
    /// through the keys in order. Partitioned (`partitioned`): thread `t`
    /// picks only keys `k` with `k % threads == t`, so one thread alone
    /// writes each key (CAS workloads keep per-thread revisions); needs
    /// `size >= threads`.
    pub fn new(sequential: bool, seed: u64, thread: usize, threads: usize, size: u64, partitioned: bool) -> KeyPicker {
        let (thread, threads) = (thread as u64, threads as u64);
        assert!(thread < threads);
        let (count, stride, offset, first, step) = if partitioned {
            assert!(size >= threads, "a partitioned key space needs at least one key per thread");
            ((size - thread).div_ceil(threads), threads, thread, 0, 1)
        } else {
            (size, 1, 0, thread % size, threads % size)
        };
        let order = if sequential {
            Order::Sequential { next: first, step }
        } else {
            // Spread thread seeds apart so threads do not share a stream.
            Order::Random(Rng::new(seed ^ thread.wrapping_mul(0xd6e8_feb8_6659_fd93)))
        };
        KeyPicker { order, count, stride, offset }
    }

    /// The next key number.
    pub fn next_index(&mut self) -> u64 {
        let position = match &mut self.order {
            Order::Random(rng) => rng.below(self.count),
            Order::Sequential { next, step } => {
                let position = *next;
                *next = (*next + *step) % self.count;
                position
            }
        };
        self.offset + self.stride * position
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
        let mut picker = KeyPicker::new(false, 7, 0, 1, 10, false);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[picker.next_index() as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn random_keys_are_reproducible_by_seed_and_differ_by_thread() {
        let take = |seed, thread| {
            let mut p = KeyPicker::new(false, seed, thread, 2, 1 << 40, false);
            (0..8).map(|_| p.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(take(1, 0), take(1, 0));
        assert_ne!(take(1, 0), take(1, 1));
        assert_ne!(take(1, 0), take(2, 0));
    }

    #[test]
    fn sequential_threads_interleave_and_wrap() {
        let take = |thread| {
            let mut p = KeyPicker::new(true, 0, thread, 3, 7, false);
            (0..5).map(|_| p.next_index()).collect::<Vec<_>>()
        };
        assert_eq!(take(0), vec![0, 3, 6, 2, 5]);
        assert_eq!(take(1), vec![1, 4, 0, 3, 6]);
        let mut single = KeyPicker::new(true, 0, 0, 1, 3, false);
        assert_eq!((0..4).map(|_| single.next_index()).collect::<Vec<_>>(), vec![0, 1, 2, 0]);
    }

    #[test]
    fn partitioned_threads_own_disjoint_keys_that_cover_the_space() {
        let mut seen = vec![0u32; 10];
        for thread in 0..3 {
            let mut random = KeyPicker::new(false, 1, thread, 3, 10, true);
            for _ in 0..1000 {
                let k = random.next_index();
                assert_eq!(k % 3, thread as u64);
                seen[k as usize] += 1;
            }
            let mut ordered = KeyPicker::new(true, 1, thread, 3, 10, true);
            let keys: Vec<u64> = (0..5).map(|_| ordered.next_index()).collect();
            let want: Vec<u64> = match thread {
                0 => vec![0, 3, 6, 9, 0],
                1 => vec![1, 4, 7, 1, 4],
                _ => vec![2, 5, 8, 2, 5],
            };
            assert_eq!(keys, want);
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
