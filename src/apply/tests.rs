//! The apply engine without a reactor: shards in one thread, exchanges
//! passed by hand.

use super::command::*;
use super::engine::{BatchRun, Exchange};
use super::rangemap::RangeMap;
use super::reply::{merge, Outcome, Response};
use super::ApplyError;
use crate::lease::LeaseTable;
use crate::mvcc::{End, Event, KeyValue, MemStore, MvccStore};
use crate::types::{RaftIndex, ShardId};

const MEMBER: u64 = 7;

/// A node's shards driven in lockstep.
struct Shards {
    map: RangeMap,
    stores: Vec<MemStore>,
    leases: Vec<LeaseTable>,
    /// Every shard's events of the last batch, merged in revision order.
    events: Vec<Event>,
    rev: i64,
    compact_rev: i64,
    index: u64,
    seq: u64,
}

impl Shards {
    fn new(map: RangeMap) -> Shards {
        let stores = (0..map.shards()).map(|_| MemStore::default()).collect();
        let leases = (0..map.shards()).map(|_| LeaseTable::default()).collect();
        Shards { map, stores, leases, events: Vec::new(), rev: 1, compact_rev: -1, index: 0, seq: 0 }
    }

    fn with(n: usize) -> Shards {
        let splits: Vec<Vec<u8>> = match n {
            1 => vec![],
            2 => vec![b"m".to_vec()],
            3 => vec![b"f".to_vec(), b"p".to_vec()],
            _ => vec![b"d".to_vec(), b"h".to_vec(), b"m".to_vec(), b"s".to_vec()][..n - 1].to_vec(),
        };
        Shards::new(RangeMap::from_splits(splits))
    }

    /// Applies one batch of commands; returns each command's outcome.
    fn batch(&mut self, cmds: Vec<Command>) -> Vec<Outcome> {
        self.index += 1;
        let first_seq = self.seq + 1;
        let items = cmds
            .into_iter()
            .map(|cmd| {
                self.seq += 1;
                Item { origin: Origin { member: MEMBER, reactor: 0, boot: 1, seq: self.seq }, cmd }
            })
            .collect();
        let bytes = encode_batch(&Batch { items });
        let batch = access_batch(&bytes).expect("valid batch");
        let n = self.map.shards();
        let mut runs: Vec<BatchRun<'_, '_>> = (0..n)
            .map(|s| {
                BatchRun::new(batch, RaftIndex(self.index), &self.map, ShardId(s as u16), self.rev, self.compact_rev)
            })
            .collect();
        loop {
            let exchanges: Vec<Exchange> = runs
                .iter_mut()
                .zip(self.stores.iter().zip(self.leases.iter()))
                .map(|(r, (s, l))| r.plan_segment(s, l))
                .collect();
            for (r, l) in runs.iter_mut().zip(self.leases.iter()) {
                r.absorb(exchanges.clone(), l);
            }
            let done: Vec<bool> = runs.iter().map(|r| r.done()).collect();
            assert!(done.iter().all(|d| *d == done[0]), "shards disagree on segments");
            if done[0] {
                break;
            }
        }
        let mut replies = Vec::new();
        let mut revs = Vec::new();
        self.events.clear();
        for (run, (store, leases)) in runs.into_iter().zip(self.stores.iter_mut().zip(self.leases.iter_mut())) {
            let applied = run.apply(store, leases, (MEMBER, 1), true);
            revs.push((applied.rev, applied.compact_rev));
            replies.extend(applied.replies);
            self.events.extend(applied.events);
        }
        self.events.sort_by_key(|e| e.rev);
        assert!(revs.iter().all(|r| *r == revs[0]), "shards disagree on revisions: {revs:?}");
        (self.rev, self.compact_rev) = revs[0];
        for s in &mut self.stores {
            while !s.compact_step(1000) {}
        }
        (first_seq..=self.seq)
            .map(|seq| {
                let mine: Vec<_> = replies.iter().filter(|r| r.origin.seq == seq).cloned().collect();
                assert!(!mine.is_empty(), "no reply for seq {seq}");
                assert_eq!(mine.len(), mine[0].parts_total as usize, "parts for seq {seq}");
                merge(mine)
            })
            .collect()
    }

    fn one(&mut self, cmd: Command) -> Outcome {
        self.batch(vec![cmd]).remove(0)
    }

    /// Every live key at `rev`, across shards, in key order.
    fn dump(&self, rev: i64) -> Vec<KeyValue> {
        let mut out = Vec::new();
        for s in &self.stores {
            s.scan(b"", End::Unbounded, rev, &mut |kv| {
                out.push(kv.to_owned_kv());
                std::ops::ControlFlow::Continue(())
            });
        }
        out
    }
}

fn put(k: &str, v: &str) -> Command {
    Command::Put(Put { key: k.into(), value: v.into(), ..Put::default() })
}

fn del(k: &str, end: &str) -> Command {
    Command::DeleteRange(DeleteRange { key: k.into(), range_end: end.into(), prev_kv: true })
}

fn cmp(k: &str, result: CompareResult, value: CompareValue) -> Compare {
    Compare { result, value, key: k.into(), range_end: vec![] }
}

fn get_op(k: &str, end: &str) -> Op {
    Op::Range(Range { key: k.into(), range_end: end.into(), ..Range::default() })
}

fn put_op(k: &str, v: &str) -> Op {
    Op::Put(Put { key: k.into(), value: v.into(), prev_kv: true, ..Put::default() })
}

fn txn(compare: Vec<Compare>, success: Vec<Op>, failure: Vec<Op>) -> Command {
    Command::Txn(Txn { compare, success, failure })
}

#[test]
fn revisions_follow_etcd_rules() {
    for n in [1, 2, 3] {
        let mut s = Shards::with(n);
        assert_eq!(s.one(put("a", "1")).revision, 2, "first put takes revision 2");
        assert_eq!(s.one(put("z", "1")).revision, 3);
        // A delete that deletes nothing takes no revision.
        let o = s.one(del("nothing", ""));
        assert_eq!(o.revision, 3);
        assert_eq!(o.result, Ok(Response::Delete { deleted: 0, prev_kvs: vec![] }));
        // A Txn whose taken branch only reads takes no revision.
        let o = s.one(txn(
            vec![cmp("a", CompareResult::Equal, CompareValue::Value(b"nope".to_vec()))],
            vec![put_op("a", "2")],
            vec![get_op("a", "")],
        ));
        assert_eq!(o.revision, 3);
        let Ok(Response::Txn { succeeded: false, responses }) = o.result else { panic!("{o:?}") };
        let Response::Range { result, rev } = &responses[0] else { panic!() };
        assert_eq!(result.kvs[0].value, b"1");
        assert_eq!(*rev, 3);
        // A Txn that writes on two shards takes one revision.
        let o = s.one(txn(vec![], vec![put_op("a", "3"), put_op("z", "3")], vec![]));
        assert_eq!(o.revision, 4);
        let kvs = s.dump(4);
        assert_eq!(kvs.len(), 2);
        assert!(kvs.iter().all(|kv| kv.mod_revision == 4 && kv.version == 2));
        // A range delete across shards takes one revision.
        let o = s.one(del("a", "\0"));
        assert_eq!(o.revision, 5);
        let Ok(Response::Delete { deleted: 2, prev_kvs }) = o.result else { panic!() };
        assert_eq!(prev_kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"z".to_vec()]);
    }
}

#[test]
fn one_batch_gives_each_command_its_own_revision() {
    for n in [1, 2, 4] {
        let mut s = Shards::with(n);
        let out = s.batch(vec![
            put("a", "1"),
            del("x", ""),
            put("z", "1"),
            txn(vec![cmp("a", CompareResult::Equal, CompareValue::Version(1))], vec![put_op("k", "v")], vec![]),
            txn(vec![cmp("a", CompareResult::Equal, CompareValue::Version(5))], vec![put_op("k", "w")], vec![]),
            del("a", ""),
        ]);
        let revs: Vec<i64> = out.iter().map(|o| o.revision).collect();
        assert_eq!(revs, vec![2, 2, 3, 4, 4, 5], "shards {n}");
    }
}

#[test]
fn compares_see_earlier_commands_of_the_same_batch() {
    for n in [1, 2, 4] {
        let mut s = Shards::with(n);
        s.one(put("a", "0"));
        // Create revision of a key made earlier in the batch is above any
        // revision before the batch; a mod-revision compare with a constant
        // above the base revision needs the exact revision (a barrier).
        let out = s.batch(vec![
            put("b", "1"),
            txn(
                vec![cmp("b", CompareResult::Greater, CompareValue::CreateRevision(2))],
                vec![put_op("c", "yes")],
                vec![put_op("c", "no")],
            ),
            txn(
                vec![cmp("b", CompareResult::Equal, CompareValue::ModRevision(3))],
                vec![put_op("d", "yes")],
                vec![put_op("d", "no")],
            ),
            txn(
                vec![cmp("c", CompareResult::Equal, CompareValue::ModRevision(4))],
                vec![put_op("e", "yes")],
                vec![put_op("e", "no")],
            ),
        ]);
        let succeeded: Vec<bool> =
            out.iter().skip(1).map(|o| matches!(o.result, Ok(Response::Txn { succeeded: true, .. }))).collect();
        assert_eq!(succeeded, vec![true, true, true], "shards {n}");
        assert_eq!(out.iter().map(|o| o.revision).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    }
}

#[test]
fn request_errors_write_nothing_and_take_no_revision() {
    for n in [1, 3] {
        let mut s = Shards::with(n);
        s.one(put("a", "1"));
        let o = s.one(Command::Put(Put { key: b"new".to_vec(), ignore_value: true, ..Put::default() }));
        assert_eq!(o.result, Err(ApplyError::KeyNotFound));
        let o = s.one(Command::Put(Put { key: b"a".to_vec(), lease: 99, ..Put::default() }));
        assert_eq!(o.result, Err(ApplyError::LeaseNotFound));
        let o = s.one(txn(
            vec![],
            vec![put_op("b", "x"), Op::Put(Put { key: b"zz".to_vec(), ignore_lease: true, ..Put::default() })],
            vec![],
        ));
        assert_eq!(o.result, Err(ApplyError::KeyNotFound));
        assert_eq!(s.rev, 2);
        assert_eq!(s.dump(2).len(), 1);
        // ignore_value keeps the value.
        let o = s.one(Command::Put(Put { key: b"a".to_vec(), ignore_value: true, prev_kv: true, ..Put::default() }));
        assert_eq!(o.revision, 3);
        assert_eq!(s.dump(3)[0].value, b"1");
    }
}

#[test]
fn compaction_checks_and_reads_in_txn_at_revisions() {
    for n in [1, 2] {
        let mut s = Shards::with(n);
        for i in 0..5 {
            s.one(put("a", &i.to_string()));
        }
        assert_eq!(s.rev, 6);
        assert_eq!(s.one(Command::Compact(Compact { revision: 7, physical: true })).result, Err(ApplyError::FutureRev));
        assert_eq!(s.one(Command::Compact(Compact { revision: 4, physical: true })).result, Ok(Response::Compact));
        assert_eq!(
            s.one(Command::Compact(Compact { revision: 4, physical: false })).result,
            Err(ApplyError::Compacted)
        );
        let read_at =
            |rev| txn(vec![], vec![Op::Range(Range { key: b"a".to_vec(), revision: rev, ..Range::default() })], vec![]);
        assert_eq!(s.one(read_at(3)).result, Err(ApplyError::Compacted));
        assert_eq!(s.one(read_at(9)).result, Err(ApplyError::FutureRev));
        let o = s.one(read_at(4));
        let Ok(Response::Txn { responses, .. }) = o.result else { panic!() };
        let Response::Range { result, .. } = &responses[0] else { panic!() };
        assert_eq!(result.kvs[0].value, b"2");
        assert_eq!(s.rev, 6, "compaction takes no revision");
    }
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    for n in [1, 2] {
        let mut s = Shards::with(n);
        let o = s.one(txn(
            vec![],
            vec![
                put_op("a", "1"),
                Op::Txn(Txn {
                    compare: vec![cmp("a", CompareResult::Equal, CompareValue::Version(0))],
                    success: vec![put_op("z", "nested")],
                    failure: vec![],
                }),
                get_op("a", "\0"),
            ],
            vec![],
        ));
        let Ok(Response::Txn { succeeded: true, responses }) = o.result else { panic!("{o:?}") };
        assert!(matches!(responses[1], Response::Txn { succeeded: true, .. }));
        let Response::Range { result, rev } = &responses[2] else { panic!() };
        assert_eq!(result.kvs.len(), 2, "a read sees the txn's own writes");
        assert_eq!(*rev, 2);
    }
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn key(&mut self) -> Vec<u8> {
        let first = b"abcdefghijklmnopqrstuvwxyz"[self.below(26) as usize];
        vec![first, b'0' + self.below(3) as u8]
    }
}

fn random_op(r: &mut Rng, depth: u32) -> Op {
    match r.below(if depth < 2 { 5 } else { 4 }) {
        0 => Op::Range(Range {
            key: r.key(),
            range_end: if r.below(2) == 0 { vec![] } else { r.key() },
            limit: r.below(3) as i64,
            sort_order: r.below(3) as i32,
            sort_target: r.below(5) as i32,
            ..Range::default()
        }),
        1 | 2 => Op::Put(Put {
            key: r.key(),
            value: r.below(4).to_string().into_bytes(),
            prev_kv: r.below(2) == 0,
            ..Put::default()
        }),
        3 => Op::DeleteRange(DeleteRange { key: r.key(), range_end: random_end(r), prev_kv: r.below(2) == 0 }),
        _ => Op::Txn(random_txn(r, depth + 1)),
    }
}

fn random_end(r: &mut Rng) -> Vec<u8> {
    match r.below(3) {
        0 => vec![],
        1 => vec![0],
        _ => r.key(),
    }
}

fn random_txn(r: &mut Rng, depth: u32) -> Txn {
    let compare = (0..r.below(3))
        .map(|_| Compare {
            result: [CompareResult::Equal, CompareResult::Greater, CompareResult::Less, CompareResult::NotEqual]
                [r.below(4) as usize],
            value: match r.below(5) {
                0 => CompareValue::Version(r.below(3) as i64),
                1 => CompareValue::CreateRevision(r.below(40) as i64),
                2 => CompareValue::ModRevision(r.below(40) as i64),
                3 => CompareValue::Value(r.below(4).to_string().into_bytes()),
                _ => CompareValue::Lease(0),
            },
            key: r.key(),
            range_end: if r.below(4) == 0 { random_end(r) } else { vec![] },
        })
        .collect();
    // Keys written in one Txn path are distinct, as the API layer enforces.
    let mut success: Vec<Op> = (0..r.below(4)).map(|_| random_op(r, depth)).collect();
    let mut failure: Vec<Op> = (0..r.below(3)).map(|_| random_op(r, depth)).collect();
    dedup_writes(&mut success);
    dedup_writes(&mut failure);
    Txn { compare, success, failure }
}

/// Keeps the random Txns within etcd's duplicate-key rule: writes of one
/// branch never overlap (puts and deletes become reads if they would).
fn dedup_writes(ops: &mut [Op]) {
    let mut written: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let overlaps = |w: &[(Vec<u8>, Vec<u8>)], k: &[u8], e: &[u8]| {
        w.iter().any(|(a, b)| {
            let (a_end, b_end) = (End::from_range_end(b), End::from_range_end(e));
            a_end.contains(a, k) || b_end.contains(k, a)
        })
    };
    for op in ops.iter_mut() {
        let (k, e) = match op {
            Op::Put(p) => (p.key.clone(), vec![]),
            Op::DeleteRange(d) => (d.key.clone(), d.range_end.clone()),
            _ => continue,
        };
        if overlaps(&written, &k, &e) {
            *op = Op::Range(Range { key: k, range_end: e, ..Range::default() });
        } else {
            written.push((k, e));
        }
    }
}

fn random_cmd(r: &mut Rng, rev: i64) -> Command {
    match r.below(10) {
        0..=3 => Command::Put(Put {
            key: r.key(),
            value: r.below(4).to_string().into_bytes(),
            prev_kv: r.below(2) == 0,
            ignore_value: r.below(8) == 0,
            ..Put::default()
        }),
        4 | 5 => Command::DeleteRange(DeleteRange { key: r.key(), range_end: random_end(r), prev_kv: true }),
        6..=8 => Command::Txn(random_txn(r, 0)),
        _ => Command::Compact(Compact { revision: (rev - 3 + r.below(6) as i64).max(1), physical: r.below(2) == 0 }),
    }
}

#[test]
fn results_do_not_depend_on_the_number_of_shards() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut nodes: Vec<Shards> = [1, 2, 3, 5].iter().map(|&n| Shards::with(n)).collect();
        for _ in 0..60 {
            let size = 1 + rng.below(12) as usize;
            let cmds: Vec<Command> = (0..size).map(|_| random_cmd(&mut rng, nodes[0].rev)).collect();
            let outcomes: Vec<Vec<Outcome>> = nodes.iter_mut().map(|n| n.batch(cmds.clone())).collect();
            for (i, o) in outcomes.iter().enumerate().skip(1) {
                assert_eq!(&outcomes[0], o, "seed {seed}: outcomes differ with {} shards", nodes[i].map.shards());
            }
            let rev = nodes[0].rev;
            let lo = nodes[0].compact_rev.max(1);
            for n in &nodes[1..] {
                assert_eq!((n.rev, n.compact_rev), (rev, nodes[0].compact_rev), "seed {seed}");
                for at in [lo, (lo + rev) / 2, rev] {
                    assert_eq!(n.dump(at), nodes[0].dump(at), "seed {seed}: state at {at} differs");
                }
            }
        }
    }
}

fn grant(id: i64) -> Command {
    Command::LeaseGrant(LeaseGrant { id, ttl: 10 })
}

fn revoke(id: i64) -> Command {
    Command::LeaseRevoke(LeaseRevoke { id })
}

fn put_with_lease(k: &str, lease: i64) -> Command {
    Command::Put(Put { key: k.into(), value: b"v".to_vec(), lease, ..Put::default() })
}

#[test]
fn revoking_a_lease_deletes_its_keys_on_every_shard_in_one_revision() {
    for n in [1, 3] {
        let mut s = Shards::with(n);
        let out = s.batch(vec![grant(5), put_with_lease("a", 5), put_with_lease("z", 5), put("k", "plain")]);
        assert!(out.iter().all(|o| o.result.is_ok()), "{out:?}");
        assert_eq!(s.one(grant(5)).result, Err(ApplyError::LeaseExists));
        // Moving a key to no lease detaches it.
        s.one(put("z", "free"));
        let o = s.one(revoke(5));
        assert_eq!(o.result, Ok(Response::Lease));
        assert_eq!(o.revision, 6, "one revision for all the lease's deletes");
        let keys: Vec<Vec<u8>> = s.dump(6).into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, vec![b"k".to_vec(), b"z".to_vec()]);
        assert_eq!(s.events.len(), 1, "one delete event");
        assert_eq!(s.events[0].kv.key, b"a");
        assert_eq!(s.one(revoke(5)).result, Err(ApplyError::LeaseNotFound));
        assert_eq!(s.one(put_with_lease("b", 5)).result, Err(ApplyError::LeaseNotFound));
    }
}

#[test]
fn a_lease_granted_and_revoked_within_one_batch_is_seen_in_order() {
    for n in [1, 2, 4] {
        let mut s = Shards::with(n);
        let out = s.batch(vec![
            put_with_lease("a", 9),
            grant(9),
            put_with_lease("a", 9),
            put_with_lease("x", 9),
            revoke(9),
            put_with_lease("b", 9),
        ]);
        let results: Vec<bool> = out.iter().map(|o| o.result.is_ok()).collect();
        assert_eq!(results, vec![false, true, true, true, true, false], "shards {n}");
        assert_eq!(out.iter().map(|o| o.revision).collect::<Vec<_>>(), vec![1, 1, 2, 3, 4, 4]);
        assert!(s.dump(4).is_empty());
    }
}

#[test]
fn events_carry_the_written_version_and_the_one_it_replaced() {
    for n in [1, 2] {
        let mut s = Shards::with(n);
        s.one(put("a", "1"));
        s.one(put("a", "2"));
        let e = &s.events[0];
        assert_eq!((e.kv.version, e.kv.create_revision, e.kv.mod_revision), (2, 2, 3));
        assert_eq!(e.prev.as_ref().map(|p| p.value.clone()), Some(b"1".to_vec()));
        s.one(txn(
            vec![],
            vec![put_op("z", "q"), Op::DeleteRange(DeleteRange { key: b"a".to_vec(), ..DeleteRange::default() })],
            vec![],
        ));
        let kinds: Vec<(Vec<u8>, i64, i64)> =
            s.events.iter().map(|e| (e.kv.key.clone(), e.rev.main, e.rev.sub)).collect();
        assert_eq!(kinds, vec![(b"z".to_vec(), 4, 0), (b"a".to_vec(), 4, 1)], "shards {n}");
    }
}
