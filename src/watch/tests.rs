//! The hub without a reactor: feeds and history answers by hand.

use std::sync::Arc;

use super::*;
use crate::mvcc::{KeyValue, Rev};

fn put(key: &str, main: i64, sub: i64) -> Event {
    Event {
        rev: Rev { main, sub },
        kind: EventKind::Put,
        kv: KeyValue { key: key.into(), value: b"v".to_vec(), mod_revision: main, ..KeyValue::default() },
        prev: Some(KeyValue { key: key.into(), ..KeyValue::default() }),
    }
}

fn del(key: &str, main: i64) -> Event {
    Event {
        rev: Rev { main, sub: 0 },
        kind: EventKind::Delete,
        kv: KeyValue { key: key.into(), mod_revision: main, ..KeyValue::default() },
        prev: None,
    }
}

fn prefix(p: &str, start_rev: i64) -> Spec {
    let mut end = p.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Spec { key: p.into(), end: Some(RangeEnd::Before(end)), start_rev, ..Default::default() }
}

fn joined(shards: usize, rev: i64) -> Hub {
    let mut h = Hub::new(shards);
    for s in 0..shards {
        h.shard_joined(s, rev);
    }
    h.open(1);
    h
}

fn drain(h: &mut Hub, stream: StreamId) -> Vec<Out> {
    std::iter::from_fn(|| h.pop(stream)).collect()
}

/// (watch id, [(key, revision)]) of each Events response.
fn events(outs: &[Out]) -> Vec<(i64, Vec<(String, i64)>)> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Events { id, events, .. } => Some((
                *id,
                events.iter().map(|e| (String::from_utf8_lossy(&e.kv.key).into_owned(), e.rev.main)).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn changes_are_released_in_revision_order_once_every_shard_reached_them() {
    let mut h = joined(2, 5);
    h.create(1, prefix("/", 0));
    assert_eq!(drain(&mut h, 1), vec![Out::Created { id: 0, revision: 5 }]);
    // Shard 1 is ahead: nothing is released until shard 0 reaches 7.
    h.feed(1, 6, Arc::new(vec![put("/z", 6, 1)]));
    h.feed(1, 7, Arc::new(vec![put("/y", 7, 0)]));
    assert!(drain(&mut h, 1).is_empty());
    h.feed(0, 6, Arc::new(vec![put("/a", 6, 0)]));
    assert_eq!(events(&drain(&mut h, 1)), vec![(0, vec![("/a".into(), 6), ("/z".into(), 6)])]);
    h.feed(0, 7, Arc::new(vec![]));
    assert_eq!(events(&drain(&mut h, 1)), vec![(0, vec![("/y".into(), 7)])]);
    assert_eq!(h.watermark(), 7);
}

#[test]
fn watches_get_only_their_range_and_filters_and_ids_follow_etcd() {
    let mut h = joined(1, 1);
    h.create(1, prefix("/a/", 0));
    h.create(1, Spec { no_put: true, ..prefix("/", 0) });
    h.create(1, Spec { id: 7, ..prefix("/b/", 0) });
    h.create(1, Spec { id: 7, ..prefix("/c/", 0) });
    h.create(1, Spec { end: Some(RangeEnd::Before(b"/a".to_vec())), ..prefix("/b", 0) });
    let outs = drain(&mut h, 1);
    assert_eq!(outs[0], Out::Created { id: 0, revision: 1 });
    assert_eq!(outs[1], Out::Created { id: 1, revision: 1 });
    assert_eq!(outs[2], Out::Created { id: 7, revision: 1 });
    assert!(matches!(&outs[3], Out::Refused { reason, .. } if reason.contains("duplicate watch ID")));
    assert!(matches!(&outs[4], Out::Refused { reason, .. } if reason.contains("range is empty")));
    h.feed(0, 2, Arc::new(vec![put("/a/x", 2, 0)]));
    h.feed(0, 3, Arc::new(vec![del("/b/y", 3)]));
    assert_eq!(
        events(&drain(&mut h, 1)),
        vec![(0, vec![("/a/x".into(), 2)]), (1, vec![("/b/y".into(), 3)]), (7, vec![("/b/y".into(), 3)])]
    );
    h.cancel(1, 7, 0);
    h.cancel(1, 99, 0);
    assert_eq!(drain(&mut h, 1), vec![Out::Canceled { id: 7, revision: 3, compact_revision: 0 }]);
}

#[test]
fn a_watch_from_the_past_catches_up_then_goes_live_without_gap_or_duplicate() {
    let mut h = joined(1, 10);
    h.create(1, prefix("/k", 4));
    let q = h.take_queries();
    assert_eq!((q[0].from, q[0].to), (4, 10));
    // A live change arrives while the history read is out: not sent twice.
    h.feed(0, 11, Arc::new(vec![put("/k1", 11, 0)]));
    h.history(&q[0], Ok(vec![put("/k1", 4, 0), put("/k2", 9, 0)]));
    // The watermark moved on: another window, then live.
    let q = h.take_queries();
    assert_eq!((q[0].from, q[0].to), (11, 11));
    h.history(&q[0], Ok(vec![put("/k1", 11, 0)]));
    h.feed(0, 12, Arc::new(vec![put("/k3", 12, 0)]));
    let got: Vec<(String, i64)> = events(&drain(&mut h, 1)).into_iter().flat_map(|(_, e)| e).collect();
    assert_eq!(got, vec![("/k1".into(), 4), ("/k2".into(), 9), ("/k1".into(), 11), ("/k3".into(), 12)]);
}

#[test]
fn a_compacted_start_cancels_the_watch_with_the_compact_revision() {
    let mut h = joined(1, 10);
    h.create(1, prefix("/k", 2));
    let q = h.take_queries();
    h.history(&q[0], Err(5));
    let outs = drain(&mut h, 1);
    assert_eq!(outs[1], Out::Canceled { id: 0, revision: 0, compact_revision: 5 });
    assert_eq!(h.watches(), 0);
}

#[test]
fn a_full_stream_stops_queueing_and_catches_up_when_drained() {
    let mut h = joined(1, 1);
    h.create(1, prefix("/", 0));
    let big = vec![b'x'; 1 << 20];
    let mut rev = 1;
    // Fill the queue past its bound without reading.
    while h.streams[&1].queued_bytes < STREAM_QUEUE_BYTES_MAX {
        rev += 1;
        let mut e = put("/big", rev, 0);
        e.kv.value = big.clone();
        h.feed(0, rev, Arc::new(vec![e]));
    }
    let queued_to = rev;
    for _ in 0..5 {
        rev += 1;
        h.feed(0, rev, Arc::new(vec![put("/small", rev, 0)]));
    }
    assert!(h.streams[&1].queued_bytes < STREAM_QUEUE_BYTES_MAX + (2 << 20), "memory stays bounded");
    assert!(h.take_queries().is_empty(), "no catch-up while the client is not reading");
    let outs = drain(&mut h, 1);
    let delivered: Vec<i64> = events(&outs).into_iter().flat_map(|(_, e)| e.into_iter().map(|x| x.1)).collect();
    assert_eq!(delivered, (2..=queued_to).collect::<Vec<_>>());
    let q = h.take_queries();
    assert_eq!((q[0].from, q[0].to), (queued_to + 1, rev));
    h.history(&q[0], Ok(((queued_to + 1)..=rev).map(|r| put("/small", r, 0)).collect()));
    let rest: Vec<i64> = events(&drain(&mut h, 1)).into_iter().flat_map(|(_, e)| e.into_iter().map(|x| x.1)).collect();
    assert_eq!(rest, ((queued_to + 1)..=rev).collect::<Vec<_>>());
}

#[test]
fn progress_goes_to_quiet_watches_that_asked_and_requests_get_id_minus_one() {
    let mut h = joined(1, 3);
    h.create(1, Spec { progress_notify: true, ..prefix("/a", 0) });
    h.create(1, Spec { progress_notify: true, ..prefix("/b", 0) });
    h.create(1, prefix("/c", 0));
    drain(&mut h, 1);
    h.feed(0, 4, Arc::new(vec![put("/a", 4, 0)]));
    drain(&mut h, 1);
    h.progress_tick(1);
    assert_eq!(drain(&mut h, 1), vec![Out::Progress { id: 1, revision: 4 }]);
    h.progress_tick(1);
    assert_eq!(drain(&mut h, 1), vec![Out::Progress { id: 0, revision: 4 }, Out::Progress { id: 1, revision: 4 }]);
    h.request_progress(1);
    assert_eq!(drain(&mut h, 1), vec![Out::Progress { id: -1, revision: 4 }]);
}

#[test]
fn feeds_that_arrive_before_the_last_join_answer_are_kept() {
    // Shard 0 answers the join at 5 and feeds revision 6 before shard 1's
    // answer (also 5) arrives: revision 6 must still reach a watch created
    // once the join is done.
    let mut h = Hub::new(2);
    h.open(1);
    h.begin_join();
    // A feed from an earlier join, sent before the shard saw the leave.
    h.feed(0, 4, Arc::new(vec![put("/old", 4, 0)]));
    h.feed(0, 6, Arc::new(vec![put("/a", 6, 0)]));
    h.shard_joined(0, 5);
    h.shard_joined(1, 5);
    assert!(h.joined());
    h.create(1, prefix("/", 0));
    assert_eq!(drain(&mut h, 1), vec![Out::Created { id: 0, revision: 5 }]);
    h.feed(1, 6, Arc::new(vec![put("/z", 6, 1)]));
    assert_eq!(events(&drain(&mut h, 1)), vec![(0, vec![("/a".into(), 6), ("/z".into(), 6)])]);
    assert_eq!(h.watermark(), 6);
}

#[test]
fn without_a_join_under_way_feeds_of_unjoined_shards_are_dropped() {
    let mut h = Hub::new(1);
    h.feed(0, 6, Arc::new(vec![put("/a", 6, 0)]));
    h.begin_join();
    h.shard_joined(0, 5);
    h.open(1);
    h.create(1, prefix("/", 0));
    assert_eq!(drain(&mut h, 1), vec![Out::Created { id: 0, revision: 5 }]);
    h.feed(0, 8, Arc::new(vec![put("/b", 8, 0)]));
    assert_eq!(events(&drain(&mut h, 1)), vec![(0, vec![("/b".into(), 8)])]);
}

#[test]
fn after_a_shard_installed_a_snapshot_live_watches_catch_up_from_the_store() {
    let mut h = joined(2, 5);
    h.create(1, prefix("/", 0));
    drain(&mut h, 1);
    // Shard 1 jumps from 5 to 9 (a snapshot); shard 0 reaches 9 normally.
    h.resync(1, 9);
    h.feed(0, 7, Arc::new(vec![put("/a", 7, 0)]));
    assert!(drain(&mut h, 1).is_empty());
    h.feed(0, 9, Arc::new(vec![]));
    // The gap is read from the store, in windows, up to 9.
    let store = [put("/a", 7, 0), put("/z", 8, 0)];
    let mut windows = Vec::new();
    loop {
        let qs = h.take_queries();
        if qs.is_empty() {
            break;
        }
        for q in qs {
            windows.push((q.from, q.to));
            let answer = store.iter().filter(|e| e.rev.main >= q.from && e.rev.main <= q.to).cloned().collect();
            h.history(&q, Ok(answer));
        }
    }
    assert_eq!(windows.first().map(|w| w.0), Some(6));
    assert_eq!(windows.last().map(|w| w.1), Some(9));
    let got: Vec<(String, i64)> = events(&drain(&mut h, 1)).into_iter().flat_map(|(_, e)| e).collect();
    assert_eq!(got, vec![("/a".into(), 7), ("/z".into(), 8)]);
    // Then live again.
    h.feed(0, 10, Arc::new(vec![put("/b", 10, 0)]));
    h.feed(1, 10, Arc::new(vec![]));
    assert_eq!(events(&drain(&mut h, 1)), vec![(0, vec![("/b".into(), 10)])]);
}
