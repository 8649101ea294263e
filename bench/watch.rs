//! The `watch` workload's shape and bookkeeping, sans-IO.
//!
//! Layout: watcher `w` (numbered over all streams, `w = stream *
//! per_stream + j`) watches prefix `w mod prefixes`; key number `n` lives
//! under prefix `n mod prefixes`. Keys are `--prefix`, the watch prefix
//! number, `/`, the key number, zero-padded to a fixed size, so a put is a
//! template patched in place; its value starts with the put's send time
//! (nanoseconds since the run's epoch, little endian), the rest filler.
//!
//! Bookkeeping: writers record every acknowledged put (revision, prefix,
//! sent, acknowledged); watchers record every event they receive
//! (watcher, revision, the value's send stamp, received). Nothing is
//! shared while measuring; [`check`] matches the two at the end: every
//! acknowledged put must reach every watcher of its prefix exactly once,
//! and each watcher must see revisions in increasing order.

use bytes::{Bytes, BytesMut};
use corekv::api::proto::etcdserverpb::{
    watch_request, PutRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use hdrhistogram::Histogram;
use prost::Message;

use crate::args::{decimal_digits, WatchOptions};
use crate::keys::prefix_end;
use crate::stats::LATENCY_NS_MAX;

/// Bytes of the send stamp at the start of every watch value.
pub const STAMP_BYTES: usize = 8;

/// The least key size that holds `--prefix`, the watch prefix number, a
/// `/` and the key number.
pub fn least_key_size(prefix_len: usize, prefixes: usize, key_space_size: u64) -> usize {
    prefix_len + decimal_digits(prefixes as u64 - 1) + 1 + decimal_digits(key_space_size - 1)
}

/// Who watches what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub streams: u32,
    pub per_stream: u32,
    pub prefixes: u32,
}

impl Layout {
    pub fn new(o: &WatchOptions) -> Layout {
        let to = |n: usize| u32::try_from(n).expect("bounded by the option parser");
        Layout { streams: to(o.streams), per_stream: to(o.watchers_per_stream), prefixes: to(o.prefixes) }
    }

    /// Watchers in all.
    pub fn watchers(&self) -> u32 {
        self.streams * self.per_stream
    }

    /// The global number of watch `j` of stream `stream`.
    pub fn watcher(&self, stream: u32, j: u32) -> u32 {
        stream * self.per_stream + j
    }

    /// The prefix watcher `w` watches.
    pub fn prefix_of_watcher(&self, w: u32) -> u32 {
        w % self.prefixes
    }

    /// The prefix key number `n` lives under.
    pub fn prefix_of_key(&self, n: u64) -> u32 {
        (n % u64::from(self.prefixes)) as u32
    }

    /// How many watchers watch prefix `p`.
    pub fn watchers_of(&self, p: u32) -> u32 {
        let (w, n) = (self.watchers(), self.prefixes);
        w / n + u32::from(p < w % n)
    }

    /// Watcher `w`'s place among the watchers of its prefix.
    fn slot(&self, w: u32) -> u32 {
        w / self.prefixes
    }
}

/// The watch workload's keys: `--prefix`, the prefix number, `/`, the key
/// number; numbers zero-padded so every key is `key_size` bytes.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: Vec<u8>,
    prefix_digits: usize,
    number_digits: usize,
    prefixes: u64,
    size: u64,
}

impl Keys {
    pub fn new(prefix: &[u8], key_size: usize, prefixes: usize, size: u64) -> Keys {
        let prefix_digits = decimal_digits(prefixes as u64 - 1);
        assert!(key_size >= least_key_size(prefix.len(), prefixes, size), "keys of {key_size} bytes do not fit");
        Keys {
            prefix: prefix.to_vec(),
            prefix_digits,
            number_digits: key_size - prefix.len() - prefix_digits - 1,
            prefixes: prefixes as u64,
            size,
        }
    }

    pub fn key_size(&self) -> usize {
        self.prefix.len() + self.prefix_digits + 1 + self.number_digits
    }

    /// The watched prefix number `p`.
    pub fn watch_prefix(&self, p: u32) -> Vec<u8> {
        let mut out = vec![0; self.prefix.len() + self.prefix_digits + 1];
        self.write_prefix(u64::from(p), &mut out);
        out
    }

    fn write_prefix(&self, p: u64, out: &mut [u8]) {
        let (head, rest) = out.split_at_mut(self.prefix.len());
        head.copy_from_slice(&self.prefix);
        write_padded(&mut rest[..self.prefix_digits], p);
        rest[self.prefix_digits] = b'/';
    }

    /// Writes key number `n` into `out` (`key_size` bytes).
    pub fn write(&self, n: u64, out: &mut [u8]) {
        assert!(n < self.size, "key {n} is outside the key space of {}", self.size);
        assert_eq!(out.len(), self.key_size());
        let (head, number) = out.split_at_mut(self.key_size() - self.number_digits);
        self.write_prefix(n % self.prefixes, head);
        write_padded(number, n);
    }

    #[cfg(test)]
    pub fn key(&self, n: u64) -> Vec<u8> {
        let mut out = vec![0; self.key_size()];
        self.write(n, &mut out);
        out
    }
}

/// `n` in decimal, zero-padded to fill `out`.
fn write_padded(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    assert_eq!(n, 0, "the number does not fit its digits");
}

/// `WatchRequest{create: prefix watch of `prefix`}`, the server choosing
/// the watch ID (etcd 3.4 numbers them per stream from 0).
pub fn create_request(prefix: &[u8]) -> Bytes {
    let (key, range_end) = if prefix.is_empty() { (vec![0], vec![0]) } else { (prefix.to_vec(), prefix_end(prefix)) };
    let create = WatchCreateRequest { key: key.into(), range_end: range_end.into(), ..Default::default() };
    WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) }.encode_to_vec().into()
}

/// `WatchRequest{progress}`: both etcd 3.4 and corekv answer it (watch ID
/// -1) even on a stream without watches, which tells the stream is open.
pub fn progress_request() -> Bytes {
    WatchRequest { request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})) }
        .encode_to_vec()
        .into()
}

/// A Put encoded once; each use patches the key and the value's stamp.
#[derive(Clone, Debug)]
pub struct StampedPut {
    bytes: Vec<u8>,
    key_offset: usize,
    key_size: usize,
    stamp_offset: usize,
}

impl StampedPut {
    /// A put of `key_size`-byte keys and `val_size`-byte values.
    pub fn new(key_size: usize, val_size: usize) -> StampedPut {
        assert!(val_size >= STAMP_BYTES);
        let filler = crate::workload::value_bytes(val_size - STAMP_BYTES);
        let make = |key: u8, stamp: u8| {
            let mut value = vec![stamp; STAMP_BYTES];
            value.extend_from_slice(&filler);
            PutRequest { key: vec![key; key_size].into(), value: value.into(), ..Default::default() }.encode_to_vec()
        };
        let (a, b, c) = (make(0xaa, 0xaa), make(0x55, 0xaa), make(0xaa, 0x55));
        assert!(a.len() == b.len() && a.len() == c.len(), "lengths must not depend on the bytes");
        let first_diff = |x: &[u8]| (0..a.len()).find(|&i| a[i] != x[i]).expect("the field appears");
        StampedPut { key_offset: first_diff(&b), key_size, stamp_offset: first_diff(&c), bytes: a }
    }

    /// The put of key `n` stamped `stamp_ns`, built in `scratch` (whose
    /// allocation is reused once the returned bytes are dropped).
    pub fn render(&self, keys: &Keys, n: u64, stamp_ns: u64, scratch: &mut BytesMut) -> Bytes {
        scratch.clear();
        scratch.extend_from_slice(&self.bytes);
        keys.write(n, &mut scratch[self.key_offset..self.key_offset + self.key_size]);
        scratch[self.stamp_offset..self.stamp_offset + STAMP_BYTES].copy_from_slice(&stamp_ns.to_le_bytes());
        scratch.split().freeze()
    }
}

/// The send stamp at the start of a watch value.
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.get(..STAMP_BYTES)?.try_into().ok()?))
}

/// An acknowledged put (times in ns since the run's epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutRecord {
    pub revision: i64,
    pub prefix: u32,
    pub sent_ns: u64,
    pub acked_ns: u64,
}

/// An event a watcher received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub watcher: u32,
    pub revision: i64,
    /// The stamp read from the event's value (`u64::MAX`: none).
    pub stamp_ns: u64,
    pub recv_ns: u64,
}

/// What [`check`] found.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Acknowledged puts times the watchers of their prefixes.
    pub expected: u64,
    /// Distinct (watcher, put) deliveries.
    pub delivered: u64,
    /// Expected deliveries that never came.
    pub missing: u64,
    /// A watcher got the same put again.
    pub duplicates: u64,
    /// A watcher got a revision lower than one it had already seen.
    pub out_of_order: u64,
    /// Events of no acknowledged put (e.g. a put that failed yet applied).
    pub unmatched: u64,
    /// Events of a put under another prefix than the watcher's.
    pub foreign: u64,
    /// Events whose value did not carry the put's stamp.
    pub wrong_value: u64,
    /// Deliveries that arrived before the writer had the put's reply
    /// (recorded as 0 in the acknowledged-to-received histogram).
    pub before_ack: u64,
    /// Put acknowledged -> event received, ns, first deliveries.
    pub from_ack: Histogram<u64>,
    /// Put sent -> event received, ns, first deliveries.
    pub from_sent: Histogram<u64>,
    /// The last first delivery, ns since the epoch.
    pub last_recv_ns: u64,
}

impl Delivery {
    /// Any way in which delivery was not exactly once, in order.
    pub fn errors(&self) -> u64 {
        self.missing + self.duplicates + self.out_of_order + self.unmatched + self.foreign + self.wrong_value
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// Matches receipts to puts. `receipts` must hold each watcher's receipts
/// in the order it received them (concatenating per-thread lists in any
/// order keeps that, since a watcher lives on one thread).
pub fn check(layout: &Layout, mut puts: Vec<PutRecord>, receipts: &[Receipt]) -> Delivery {
    puts.sort_unstable_by_key(|p| p.revision);
    // Each put's bitset over the watchers of its prefix, in one vector.
    let mut offsets = Vec::with_capacity(puts.len() + 1);
    let mut words = 0usize;
    let mut expected = 0u64;
    for put in &puts {
        offsets.push(words);
        let n = layout.watchers_of(put.prefix);
        expected += u64::from(n);
        words += (n as usize).div_ceil(64);
    }
    let mut seen = vec![0u64; words];
    let mut last = vec![i64::MIN; layout.watchers() as usize];
    let mut d = Delivery {
        expected,
        delivered: 0,
        missing: 0,
        duplicates: 0,
        out_of_order: 0,
        unmatched: 0,
        foreign: 0,
        wrong_value: 0,
        before_ack: 0,
        from_ack: histogram(),
        from_sent: histogram(),
        last_recv_ns: 0,
    };
    for r in receipts {
        let w = r.watcher as usize;
        if r.revision < last[w] {
            d.out_of_order += 1;
        }
        last[w] = last[w].max(r.revision);
        // Duplicate revisions in `puts` (a server bug) match the first.
        let Ok(i) = puts.binary_search_by_key(&r.revision, |p| p.revision) else {
            d.unmatched += 1;
            continue;
        };
        let put = &puts[i];
        if layout.prefix_of_watcher(r.watcher) != put.prefix {
            d.foreign += 1;
            continue;
        }
        let slot = layout.slot(r.watcher) as usize;
        let (word, bit) = (offsets[i] + slot / 64, 1u64 << (slot % 64));
        if seen[word] & bit != 0 {
            d.duplicates += 1;
            continue;
        }
        seen[word] |= bit;
        d.delivered += 1;
        if r.stamp_ns != put.sent_ns {
            d.wrong_value += 1;
        }
        if r.recv_ns < put.acked_ns {
            d.before_ack += 1;
        }
        record(&mut d.from_ack, r.recv_ns.saturating_sub(put.acked_ns));
        record(&mut d.from_sent, r.recv_ns.saturating_sub(put.sent_ns));
        d.last_recv_ns = d.last_recv_ns.max(r.recv_ns);
    }
    d.missing = expected - d.delivered;
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv::api::proto::etcdserverpb::watch_request::RequestUnion;

    fn layout(streams: u32, per_stream: u32, prefixes: u32) -> Layout {
        Layout { streams, per_stream, prefixes }
    }

    #[test]
    fn ten_thousand_watchers_over_a_thousand_prefixes_get_ten_each() {
        let l = layout(100, 100, 1000);
        assert_eq!(l.watchers(), 10_000);
        let mut per_prefix = vec![0u32; 1000];
        for s in 0..100 {
            for j in 0..100 {
                per_prefix[l.prefix_of_watcher(l.watcher(s, j)) as usize] += 1;
            }
        }
        assert!(per_prefix.iter().all(|&n| n == 10));
        assert!((0..1000).all(|p| l.watchers_of(p) == 10));
        // Uneven: 7 watchers over 3 prefixes.
        let l = layout(1, 7, 3);
        assert_eq!((0..3).map(|p| l.watchers_of(p)).collect::<Vec<_>>(), vec![3, 2, 2]);
        let slots: Vec<u32> = (0..7).filter(|&w| l.prefix_of_watcher(w) == 0).map(|w| l.slot(w)).collect();
        assert_eq!(slots, vec![0, 1, 2]);
    }

    #[test]
    fn keys_live_under_their_watch_prefix() {
        assert_eq!(least_key_size(3, 1000, 100_000), 3 + 3 + 1 + 5);
        let keys = Keys::new(b"/w/", 12, 1000, 100_000);
        assert_eq!(keys.watch_prefix(7), b"/w/007/");
        assert_eq!(keys.key(1007), b"/w/007/01007");
        assert_eq!(keys.key(99_999), b"/w/999/99999");
        let wide = Keys::new(b"", 8, 10, 100);
        assert_eq!(wide.key(42), b"2/000042");
        let l = layout(1, 10, 10);
        for n in [0u64, 5, 42, 99] {
            assert!(wide.key(n).starts_with(&wide.watch_prefix(l.prefix_of_key(n))));
        }
    }

    #[test]
    fn create_requests_watch_the_whole_prefix() {
        let req = WatchRequest::decode(create_request(b"/w/007/")).unwrap();
        let Some(RequestUnion::CreateRequest(c)) = req.request_union else { panic!("{req:?}") };
        assert_eq!((&c.key[..], &c.range_end[..]), (&b"/w/007/"[..], &b"/w/0070"[..]));
        assert_eq!((c.start_revision, c.watch_id, c.prev_kv, c.filters.len()), (0, 0, false, 0));
        let req = WatchRequest::decode(progress_request()).unwrap();
        assert!(matches!(req.request_union, Some(RequestUnion::ProgressRequest(_))));
    }

    #[test]
    fn stamped_puts_carry_key_and_send_time_and_reuse_the_buffer() {
        let keys = Keys::new(b"/w/", 12, 1000, 100_000);
        let put = StampedPut::new(12, 20);
        let mut scratch = BytesMut::new();
        let first = put.render(&keys, 1007, 0x0102_0304_0506_0708, &mut scratch);
        let decoded = PutRequest::decode(first.clone()).unwrap();
        assert_eq!(&decoded.key[..], b"/w/007/01007");
        assert_eq!(decoded.value.len(), 20);
        assert_eq!(read_stamp(&decoded.value), Some(0x0102_0304_0506_0708));
        assert_eq!(&decoded.value[8..], b"abcdefghijkl");
        let address = first.as_ptr();
        drop((first, decoded));
        for n in 0..50u64 {
            let next = put.render(&keys, n, n * 3, &mut scratch);
            assert_eq!(next.as_ptr(), address, "render {n} allocated");
            let decoded = PutRequest::decode(next.clone()).unwrap();
            assert_eq!((&decoded.key[..], read_stamp(&decoded.value)), (&keys.key(n)[..], Some(n * 3)));
        }
        assert_eq!(read_stamp(b"short"), None);
    }

    fn put(revision: i64, prefix: u32, sent_ns: u64, acked_ns: u64) -> PutRecord {
        PutRecord { revision, prefix, sent_ns, acked_ns }
    }

    fn got(watcher: u32, revision: i64, stamp_ns: u64, recv_ns: u64) -> Receipt {
        Receipt { watcher, revision, stamp_ns, recv_ns }
    }

    #[test]
    fn every_watcher_of_the_prefix_gets_each_put_once() {
        // 4 watchers over 2 prefixes: 0 and 2 watch prefix 0; 1 and 3 watch 1.
        let l = layout(2, 2, 2);
        let puts = vec![put(11, 1, 1_000, 2_000), put(10, 0, 0, 1_000)];
        let receipts = [got(0, 10, 0, 3_000), got(2, 10, 0, 5_000), got(1, 11, 1_000, 4_000), got(3, 11, 1_000, 6_000)];
        let d = check(&l, puts, &receipts);
        assert_eq!((d.expected, d.delivered, d.errors(), d.before_ack), (4, 4, 0, 0));
        assert!(d.from_ack.equivalent(d.from_ack.min(), 2_000) && d.from_ack.equivalent(d.from_ack.max(), 4_000));
        assert!(d.from_sent.equivalent(d.from_sent.min(), 3_000) && d.from_sent.equivalent(d.from_sent.max(), 5_000));
        assert_eq!(d.last_recv_ns, 6_000);
    }

    #[test]
    fn missing_duplicate_unordered_unmatched_and_foreign_events_are_counted() {
        let l = layout(2, 2, 2);
        let puts = vec![put(10, 0, 0, 100), put(11, 1, 0, 100), put(12, 0, 0, 100)];
        let receipts = [
            got(0, 10, 0, 200),
            got(0, 12, 0, 300),
            got(0, 12, 0, 310), // duplicate
            got(0, 10, 0, 320), // duplicate and out of order
            got(2, 12, 0, 400), // watcher 2 never gets revision 10: missing
            got(1, 11, 0, 500),
            got(1, 13, 0, 600),   // no such put
            got(3, 12, 0, 700),   // watcher 3 watches prefix 1, put 12 is prefix 0
            got(3, 11, 999, 800), // out of order after 12, and a wrong stamp
        ];
        let d = check(&l, puts, &receipts);
        assert_eq!(d.expected, 6);
        assert_eq!(d.delivered, 5);
        assert_eq!(d.missing, 1);
        assert_eq!(d.duplicates, 2);
        assert_eq!(d.out_of_order, 2);
        assert_eq!((d.unmatched, d.foreign, d.wrong_value), (1, 1, 1));
        assert_eq!(d.errors(), 1 + 2 + 2 + 1 + 1 + 1);
    }

    #[test]
    fn events_before_the_ack_count_as_zero_latency() {
        let l = layout(1, 1, 1);
        let d = check(&l, vec![put(5, 0, 1_000, 9_000)], &[got(0, 5, 1_000, 8_000)]);
        assert_eq!((d.before_ack, d.delivered, d.errors()), (1, 1, 0));
        assert_eq!(d.from_ack.max(), 1);
        assert!(d.from_sent.equivalent(d.from_sent.max(), 7_000));
    }

    #[test]
    fn many_watchers_per_prefix_use_several_bitset_words() {
        let l = layout(3, 50, 1); // 150 watchers of one prefix
        let receipts: Vec<Receipt> = (0..150).map(|w| got(w, 7, 0, 10)).chain([got(149, 7, 0, 11)]).collect();
        let d = check(&l, vec![put(7, 0, 0, 1)], &receipts);
        assert_eq!((d.expected, d.delivered, d.duplicates, d.missing), (150, 150, 1, 0));
    }
}
