//! etcd's Watch service against a real server process, through the
//! `etcd-client` crate, and through a raw gRPC stream where the crate hides
//! a field (a response's `fragment`): watch IDs, key/range/prefix watches,
//! start revisions in the past, present and future, prev_kv, filters,
//! progress notifications, RequestProgress, fragments, cancel, compaction,
//! revision grouping and order across the key space, 10,000 watchers, and
//! a watcher that stops reading.
//!
//! Every expectation here is etcd 3.4's: `COREKV_IT_REFERENCE=etcd cargo
//! test --test watch` runs the same tests against /usr/bin/etcd. Every wait
//! is bounded ([`WAIT`] per expected response, a deadline for the big
//! tests): a missing event fails the test instead of hanging it. No test
//! asserts a speed; the slow-watcher test asserts relations only.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{b, revision, Rng, Server};
use corekv::api::proto::{etcdserverpb as pb, mvccpb};
use etcd_client::{
    Client, CompactionOptions, DeleteOptions, Event, EventType, KeyValue, Txn, TxnOp, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};
use prost::Message;

/// Longest wait for one expected watch response.
const WAIT: Duration = Duration::from_secs(20);
/// Longest time a test reads one stream for the events it expects: bounds
/// the loops even against a server that keeps sending empty responses.
const READ_MAX: Duration = Duration::from_secs(180);

/// A bound on a reading loop.
struct Deadline(Instant);

impl Deadline {
    fn new() -> Deadline {
        Deadline(Instant::now() + READ_MAX)
    }

    #[track_caller]
    fn check(&self, what: &str) {
        assert!(Instant::now() < self.0, "{what}: still reading after {READ_MAX:?}");
    }
}

fn reference() -> bool {
    std::env::var("COREKV_IT_REFERENCE").as_deref() == Ok("etcd")
}

/// The server under test with `cores` reactors (corekv shards the key space
/// over them), or etcd in reference mode.
fn server_on_cores(name: &str, cores: usize, flags: &[&str]) -> Server {
    if reference() {
        return Server::etcd(name, flags);
    }
    let cores = cores.to_string();
    let mut all = vec!["--cores", cores.as_str()];
    all.extend_from_slice(flags);
    Server::corekv(name, &all)
}

async fn start(name: &str) -> (Server, Client) {
    start_with(name, &[]).await
}

async fn start_with(name: &str, flags: &[&str]) -> (Server, Client) {
    let s = Server::under_test(name, flags);
    let c = s.client().await;
    (s, c)
}

// ------------------------------------------------------------- helpers

/// One event as the tests compare them: revision, kind, key, value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Ev {
    rev: i64,
    kind: &'static str,
    key: String,
    value: String,
}

#[allow(non_snake_case)]
fn P(rev: i64, key: &str, value: &str) -> Ev {
    Ev { rev, kind: "PUT", key: key.to_string(), value: value.to_string() }
}

#[allow(non_snake_case)]
fn D(rev: i64, key: &str) -> Ev {
    Ev { rev, kind: "DELETE", key: key.to_string(), value: String::new() }
}

fn ev(e: &Event) -> Ev {
    let kv = e.kv().expect("an event carries a kv");
    Ev {
        rev: kv.mod_revision(),
        kind: match e.event_type() {
            EventType::Put => "PUT",
            EventType::Delete => "DELETE",
        },
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
    }
}

fn evs(r: &WatchResponse) -> Vec<Ev> {
    r.events().iter().map(ev).collect()
}

/// (key, value, create_revision, mod_revision, version, lease) of a pair.
fn kv(kv: &KeyValue) -> (String, String, i64, i64, i64, i64) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    )
}

fn t(k: &str, v: &str, c: i64, m: i64, ver: i64) -> (String, String, i64, i64, i64, i64) {
    (k.to_string(), v.to_string(), c, m, ver, 0)
}

fn header_rev(r: &WatchResponse) -> i64 {
    r.header().expect("a watch response carries a header").revision()
}

/// The next response of a stream, within [`WAIT`].
async fn next(ws: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(WAIT, ws.message()).await {
        Err(_) => panic!("no watch response within {WAIT:?}"),
        Ok(Err(e)) => panic!("the watch stream failed: {e}"),
        Ok(Ok(None)) => panic!("the watch stream ended"),
        Ok(Ok(Some(r))) => r,
    }
}

/// Opens a stream with one watch; returns it with the created response.
async fn open(c: &mut Client, key: impl Into<Vec<u8>>, opts: WatchOptions) -> (WatchStream, WatchResponse) {
    let mut ws = c.watch(key, Some(opts)).await.expect("watch");
    let r = next(&mut ws).await;
    assert!(r.created() && !r.canceled(), "the first response answers the create request: {r:?}");
    assert!(r.events().is_empty(), "a created response carries no events: {r:?}");
    (ws, r)
}

/// Adds a watch to an idle stream; returns the created response.
async fn add(ws: &mut WatchStream, key: impl Into<Vec<u8>>, opts: WatchOptions) -> WatchResponse {
    ws.watch(key, Some(opts)).await.expect("send create request");
    let r = next(ws).await;
    assert!(r.created(), "expected the created response: {r:?}");
    r
}

/// Reads a stream until every watch in `want` (watch id → event count) has
/// its events; returns each watch's responses (as event lists). Fails on a
/// cancel, an unknown watch id, or more events than wanted.
async fn read_events(ws: &mut WatchStream, want: &[(i64, usize)]) -> HashMap<i64, Vec<Vec<Ev>>> {
    let want: HashMap<i64, usize> = want.iter().copied().collect();
    let mut got: HashMap<i64, Vec<Vec<Ev>>> = want.keys().map(|&id| (id, Vec::new())).collect();
    let count = |got: &HashMap<i64, Vec<Vec<Ev>>>, id: i64| got[&id].iter().map(Vec::len).sum::<usize>();
    let deadline = Deadline::new();
    while want.iter().any(|(&id, &n)| count(&got, id) < n) {
        deadline.check("read_events");
        let r = next(ws).await;
        assert!(!r.canceled() && !r.created(), "unexpected response while reading events: {r:?}");
        let id = r.watch_id();
        assert!(want.contains_key(&id), "events for watch {id}, which is not expected: {r:?}");
        if r.events().is_empty() {
            continue; // A progress notification.
        }
        got.get_mut(&id).unwrap().push(evs(&r));
        assert!(
            count(&got, id) <= want[&id],
            "watch {id} got more events than the {} expected: {:?}",
            want[&id],
            got[&id]
        );
    }
    got
}

/// The events of one watch, flattened.
async fn read_n(ws: &mut WatchStream, id: i64, n: usize) -> Vec<Ev> {
    read_events(ws, &[(id, n)]).await.remove(&id).unwrap().concat()
}

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    let r = c.put(key, value, None).await.expect("put");
    r.header().expect("header").revision()
}

async fn del(c: &mut Client, key: &str, opts: Option<DeleteOptions>) -> i64 {
    let r = c.delete(key, opts).await.expect("delete");
    r.header().expect("header").revision()
}

// ------------------------------------------------------------ watch ids

#[tokio::test]
async fn server_chosen_watch_ids_start_at_0_on_every_stream_and_count_up() {
    let (_s, mut c) = start("watch_ids_auto").await;
    put(&mut c, "x", "1").await; // 2
    let (mut a, r) = open(&mut c, "k0", WatchOptions::new()).await;
    assert_eq!(r.watch_id(), 0);
    assert_eq!(header_rev(&r), 2, "a created response carries the current revision");
    assert_eq!(add(&mut a, "k1", WatchOptions::new()).await.watch_id(), 1);
    assert_eq!(add(&mut a, "k2", WatchOptions::new()).await.watch_id(), 2);
    let (mut other, r) = open(&mut c, "k1", WatchOptions::new()).await;
    assert_eq!(r.watch_id(), 0, "IDs are per stream");
    assert_eq!(add(&mut other, "k2", WatchOptions::new()).await.watch_id(), 1);

    let rev = put(&mut c, "k1", "v").await;
    let r = next(&mut a).await;
    assert_eq!((r.watch_id(), evs(&r)), (1, vec![P(rev, "k1", "v")]), "events carry the watch's id");
    assert_eq!(header_rev(&r), rev, "a live event's header carries its revision");
    let r = next(&mut other).await;
    assert_eq!((r.watch_id(), evs(&r)), (0, vec![P(rev, "k1", "v")]));
    let rev = put(&mut c, "k2", "w").await;
    assert_eq!(read_n(&mut a, 2, 1).await, [P(rev, "k2", "w")]);
    assert_eq!(read_n(&mut other, 1, 1).await, [P(rev, "k2", "w")]);
}

#[tokio::test]
async fn client_chosen_watch_ids_are_kept_and_server_chosen_ids_skip_them() {
    let (_s, mut c) = start("watch_ids_client").await;
    let (mut ws, r) = open(&mut c, "a", WatchOptions::new().with_watch_id(7)).await;
    assert_eq!(r.watch_id(), 7);
    assert_eq!(add(&mut ws, "b", WatchOptions::new()).await.watch_id(), 0);
    assert_eq!(add(&mut ws, "c", WatchOptions::new().with_watch_id(1)).await.watch_id(), 1);
    assert_eq!(add(&mut ws, "d", WatchOptions::new()).await.watch_id(), 2, "1 is taken");
    assert_eq!(add(&mut ws, "e", WatchOptions::new().with_watch_id(1 << 40)).await.watch_id(), 1 << 40);
    assert_eq!(add(&mut ws, "f", WatchOptions::new().with_watch_id(-3)).await.watch_id(), -3, "negative ids too");
    for (id, key) in [(7, "a"), (0, "b"), (1, "c"), (2, "d"), (1 << 40, "e"), (-3, "f")] {
        let rev = put(&mut c, key, "v").await;
        let r = next(&mut ws).await;
        assert_eq!((r.watch_id(), evs(&r)), (id, vec![P(rev, key, "v")]));
    }
}

#[tokio::test]
async fn a_duplicate_client_chosen_watch_id_is_answered_created_and_canceled_with_id_minus_1() {
    let (_s, mut c) = start("watch_ids_dup").await;
    let (mut ws, r) = open(&mut c, "a", WatchOptions::new().with_watch_id(3)).await;
    assert_eq!(r.watch_id(), 3);
    ws.watch("b", Some(WatchOptions::new().with_watch_id(3))).await.unwrap();
    let r = next(&mut ws).await;
    assert!(r.created() && r.canceled(), "{r:?}");
    assert_eq!(r.watch_id(), -1);
    assert_eq!(r.cancel_reason(), "mvcc: duplicate watch ID provided on the WatchStream");
    assert_eq!(header_rev(&r), 1);
    // A server-chosen id is a duplicate too.
    assert_eq!(add(&mut ws, "c", WatchOptions::new()).await.watch_id(), 0);
    ws.watch("d", Some(WatchOptions::new().with_watch_id(0).with_prefix())).await.unwrap();
    assert_eq!(next(&mut ws).await.watch_id(), 1, "watch_id 0 asks the server to choose");
    ws.watch("e", Some(WatchOptions::new().with_watch_id(1))).await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.created(), r.canceled(), r.watch_id()), (true, true, -1), "{r:?}");
    // The refused requests changed nothing: the first watch on "a" still
    // works, "b" and "e" are not watched.
    put(&mut c, "b", "x").await;
    put(&mut c, "e", "x").await;
    let rev = put(&mut c, "a", "v").await;
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), evs(&r)), (3, vec![P(rev, "a", "v")]));
}

// ------------------------------------------------------- key selection

#[tokio::test]
async fn a_single_key_watch_sees_that_key_only_with_full_pairs_and_delete_tombstones() {
    let (_s, mut c) = start("watch_single_key").await;
    let (mut ws, r) = open(&mut c, "k", WatchOptions::new()).await;
    let id = r.watch_id();
    put(&mut c, "k", "v1").await; // 2
    put(&mut c, "k2", "x").await; // 3
    put(&mut c, "j", "x").await; // 4
    put(&mut c, "k", "v2").await; // 5
    del(&mut c, "k", None).await; // 6
    del(&mut c, "k", None).await; // deletes nothing: no revision, no event
    put(&mut c, "k", "v3").await; // 7
    let mut responses = Vec::new();
    for _ in 0..4 {
        let r = next(&mut ws).await;
        assert_eq!(r.watch_id(), id);
        assert_eq!(r.events().len(), 1, "one event per revision: {r:?}");
        let e = &r.events()[0];
        responses.push((header_rev(&r), e.event_type(), kv(e.kv().unwrap()), e.prev_kv().is_none()));
    }
    assert_eq!(
        responses,
        [
            (2, EventType::Put, t("k", "v1", 2, 2, 1), true),
            (5, EventType::Put, t("k", "v2", 2, 5, 2), true),
            (6, EventType::Delete, t("k", "", 0, 6, 0), true),
            (7, EventType::Put, t("k", "v3", 7, 7, 1), true),
        ],
        "a DELETE's kv holds only the key and the deleting revision"
    );
}

#[tokio::test]
async fn range_from_key_and_all_keys_watches_see_exactly_their_keys() {
    let (_s, mut c) = start("watch_ranges").await;
    let (mut ws, r) = open(&mut c, "b", WatchOptions::new().with_range("d")).await;
    let range = r.watch_id();
    let from = add(&mut ws, "c", WatchOptions::new().with_from_key()).await.watch_id();
    let all = add(&mut ws, "", WatchOptions::new().with_all_keys()).await.watch_id();
    // An empty range is refused like a duplicate id.
    ws.watch("d", Some(WatchOptions::new().with_range("b"))).await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.created(), r.canceled(), r.watch_id()), (true, true, -1), "{r:?}");
    assert_eq!(r.cancel_reason(), "mvcc: watcher range is empty");
    ws.watch("d", Some(WatchOptions::new().with_range("d"))).await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.created(), r.canceled(), r.watch_id()), (true, true, -1), "key = range_end: {r:?}");
    let keys = ["a", "b", "bz", "c", "c\0", "d", "da", "\u{7f}"];
    let mut all_evs = Vec::new();
    for k in keys {
        let rev = put(&mut c, k, "v").await;
        all_evs.push(P(rev, k, "v"));
    }
    let sel = |f: &dyn Fn(&str) -> bool| all_evs.iter().filter(|e| f(&e.key)).cloned().collect::<Vec<_>>();
    let want_range = sel(&|k| ("b".."d").contains(&k));
    let want_from = sel(&|k| k >= "c");
    let got = read_events(&mut ws, &[(range, want_range.len()), (from, want_from.len()), (all, keys.len())]).await;
    assert_eq!(got[&range].concat(), want_range, "[b, d)");
    assert_eq!(got[&from].concat(), want_from, "[c, ∞)");
    assert_eq!(got[&all].concat(), all_evs, "every key");
}

#[tokio::test]
async fn a_prefix_watch_sees_its_prefix_and_nothing_else() {
    let (_s, mut c) = start("watch_prefix").await;
    let (mut ws, r) = open(&mut c, "/p/", WatchOptions::new().with_prefix()).await;
    let p = r.watch_id();
    let top = add(&mut ws, vec![0xffu8], WatchOptions::new().with_prefix()).await.watch_id();
    let mut want_p = Vec::new();
    for k in ["/p", "/p/", "/p/a", "/p0", "/q", "/p/a/b", "/o/p/"] {
        let rev = put(&mut c, k, "v").await;
        if k.starts_with("/p/") {
            want_p.push(P(rev, k, "v"));
        }
    }
    // A prefix ending in 0xff: etcd's range end drops trailing 0xff bytes.
    let mut want_top = Vec::new();
    for k in [vec![0xfeu8], vec![0xff], vec![0xff, 0xff, 1], vec![0xff, 0]] {
        let r = c.put(k.clone(), "v", None).await.unwrap();
        if k[0] == 0xff {
            want_top.push(P(r.header().unwrap().revision(), &String::from_utf8_lossy(&k), "v"));
        }
    }
    let got = read_events(&mut ws, &[(p, want_p.len()), (top, want_top.len())]).await;
    assert_eq!(got[&p].concat(), want_p);
    assert_eq!(got[&top].concat(), want_top);
}

// ---------------------------------------------------------- revisions

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_past_revision_replays_history_then_goes_live_without_gap_or_duplicate() {
    let (_s, mut c) = start("watch_catch_up").await;
    let mut history = Vec::new();
    for i in 0..50 {
        let k = format!("h/{:02}", i % 20);
        let v = format!("old{i}");
        let rev = put(&mut c, &k, &v).await;
        history.push(P(rev, &k, &v));
    }
    let rev = del(&mut c, "h/03", None).await;
    history.push(D(rev, "h/03"));
    put(&mut c, "elsewhere", "x").await;
    assert_eq!(history.last().unwrap().rev, 52);

    // A writer keeps going while the watch is created and catches up.
    const LIVE: usize = 400;
    let mut wc = c.clone();
    let writer = tokio::spawn(async move {
        let mut log = Vec::new();
        for i in 0..LIVE {
            let k = format!("h/{:02}", i % 20);
            let v = format!("new{i}");
            let rev = put(&mut wc, &k, &v).await;
            log.push(P(rev, &k, &v));
        }
        log
    });
    let deadline = Instant::now() + WAIT;
    while revision(&mut c).await < 80 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut ws, r) = open(&mut c, "h/", WatchOptions::new().with_prefix().with_start_revision(10)).await;
    assert!(header_rev(&r) >= 80, "created at the current revision: {r:?}");
    let live = tokio::time::timeout(Duration::from_secs(120), writer).await.expect("writer done").unwrap();
    let want: Vec<Ev> = history.iter().chain(&live).filter(|e| e.rev >= 10).cloned().collect();
    let got = read_n(&mut ws, r.watch_id(), want.len()).await;
    assert_eq!(got.len(), want.len());
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        panic!("event {i} differs: got {:?}, want {:?}", got[i], want[i]);
    }
}

#[tokio::test]
async fn a_watch_at_the_current_revision_includes_it_and_one_in_the_future_waits_for_it() {
    let (_s, mut c) = start("watch_current_future").await;
    put(&mut c, "k", "a").await; // 2
    let now = put(&mut c, "k", "b").await; // 3
    let (mut at, r) = open(&mut c, "k", WatchOptions::new().with_start_revision(now)).await;
    assert_eq!(header_rev(&r), now);
    let (mut future, r) = open(&mut c, "k", WatchOptions::new().with_start_revision(now + 3)).await;
    assert_eq!(header_rev(&r), now, "the header of a future watch's created response is the current revision");
    let (mut fresh, _) = open(&mut c, "k", WatchOptions::new()).await;
    assert_eq!(read_n(&mut at, 0, 1).await, [P(now, "k", "b")], "start_revision = current replays the current one");
    put(&mut c, "k", "c").await; // 4
    put(&mut c, "k", "d").await; // 5
    put(&mut c, "k", "e").await; // 6
    put(&mut c, "k", "f").await; // 7
    assert_eq!(read_n(&mut at, 0, 4).await, [P(4, "k", "c"), P(5, "k", "d"), P(6, "k", "e"), P(7, "k", "f")]);
    assert_eq!(read_n(&mut fresh, 0, 4).await, [P(4, "k", "c"), P(5, "k", "d"), P(6, "k", "e"), P(7, "k", "f")]);
    assert_eq!(read_n(&mut future, 0, 2).await, [P(6, "k", "e"), P(7, "k", "f")], "nothing before revision 6");
}

#[tokio::test]
async fn prev_kv_carries_the_replaced_pair_of_puts_and_the_deleted_pair_of_deletes() {
    let (_s, mut c) = start("watch_prev_kv").await;
    let (mut ws, r) = open(&mut c, "k", WatchOptions::new().with_prefix().with_prev_key()).await;
    let id = r.watch_id();
    let (mut plain, _) = open(&mut c, "k", WatchOptions::new().with_prefix()).await;
    put(&mut c, "k", "v1").await; // 2
    put(&mut c, "k", "v2").await; // 3
    put(&mut c, "k2", "w").await; // 4
    let r = c.delete("k", Some(DeleteOptions::new().with_prefix())).await.unwrap(); // 5
    assert_eq!(r.deleted(), 2);
    let mut got = Vec::new();
    let deadline = Deadline::new();
    while got.len() < 5 {
        deadline.check("prev_kv watch");
        let r = next(&mut ws).await;
        assert_eq!(r.watch_id(), id);
        for e in r.events() {
            got.push((ev(e), e.prev_kv().map(kv)));
        }
    }
    assert_eq!(
        got,
        [
            (P(2, "k", "v1"), None),
            (P(3, "k", "v2"), Some(t("k", "v1", 2, 2, 1))),
            (P(4, "k2", "w"), None),
            (D(5, "k"), Some(t("k", "v2", 2, 3, 2))),
            (D(5, "k2"), Some(t("k2", "w", 4, 4, 1))),
        ]
    );
    let mut n = 0;
    while n < 5 {
        deadline.check("plain watch");
        let r = next(&mut plain).await;
        assert!(r.events().iter().all(|e| e.prev_kv().is_none()), "no prev_kv unless asked: {r:?}");
        n += r.events().len();
    }
}

#[tokio::test]
async fn filters_noput_and_nodelete_drop_those_events() {
    let (_s, mut c) = start("watch_filters").await;
    let (mut ws, r) = open(&mut c, "f", WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut])).await;
    let noput = r.watch_id();
    let nodelete = add(&mut ws, "f", WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoDelete])).await;
    let nodelete = nodelete.watch_id();
    let both = add(
        &mut ws,
        "f",
        WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut, WatchFilterType::NoDelete]),
    )
    .await
    .watch_id();
    let all = add(&mut ws, "f", WatchOptions::new().with_prefix()).await.watch_id();
    put(&mut c, "f1", "a").await; // 2
    put(&mut c, "f2", "b").await; // 3
    del(&mut c, "f1", None).await; // 4
    let txn = Txn::new().and_then([TxnOp::put("f3", "c", None), TxnOp::delete("f2", None)]);
    c.txn(txn).await.unwrap(); // 5

    // read_events fails on any event for the watch that filters both kinds:
    // by the time the others have all theirs, it has had every chance to
    // misfire.
    let got = read_events(&mut ws, &[(noput, 2), (nodelete, 3), (all, 5), (both, 0)]).await;
    assert_eq!(got[&noput].concat(), [D(4, "f1"), D(5, "f2")]);
    assert_eq!(got[&nodelete].concat(), [P(2, "f1", "a"), P(3, "f2", "b"), P(5, "f3", "c")]);
    assert_eq!(got[&noput][1], [D(5, "f2")], "a revision's filtered events are dropped, the rest sent");
    assert_eq!(got[&all].concat().len(), 5);
}

// ----------------------------------------------- progress notifications

#[tokio::test]
async fn progress_notify_sends_idle_watches_empty_responses_at_the_current_revision() {
    let (_s, mut c) =
        start_with("watch_progress_notify", &["--experimental-watch-progress-notify-interval", "1s"]).await;
    put(&mut c, "elsewhere", "1").await; // 2
    let (mut ws, r) = open(&mut c, "k", WatchOptions::new().with_progress_notify()).await;
    let notified = r.watch_id();
    let quiet = add(&mut ws, "k", WatchOptions::new()).await.watch_id();
    let (mut other, r) = open(&mut c, "k", WatchOptions::new()).await;
    assert_eq!(r.watch_id(), 0);

    // Two notifications while nothing happens to the watched key; writes
    // elsewhere move the revision they report.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let rev = put(&mut c, "elsewhere", "x").await;
        let r = next(&mut ws).await;
        assert_eq!(r.watch_id(), notified, "only the watch that asked gets notifications: {r:?}");
        assert!(r.events().is_empty() && !r.created() && !r.canceled(), "{r:?}");
        assert_eq!(r.compact_revision(), 0);
        assert!(header_rev(&r) >= rev, "a notification carries the current revision: {r:?} after {rev}");
        seen.push(header_rev(&r));
    }
    let rev = put(&mut c, "k", "v").await;
    let got = read_events(&mut ws, &[(notified, 1), (quiet, 1)]).await;
    assert_eq!(got[&notified].concat(), [P(rev, "k", "v")]);
    for n in 0.. {
        assert!(n < 10, "no notification at revision {rev} among the next 10 responses");
        let r = next(&mut ws).await;
        assert_eq!(r.watch_id(), notified, "{r:?}");
        if r.events().is_empty() && header_rev(&r) >= rev {
            break;
        }
    }
    // The stream without progress_notify got its event and nothing else.
    let r = next(&mut other).await;
    assert_eq!(evs(&r), [P(rev, "k", "v")]);
}

#[tokio::test]
async fn request_progress_on_an_idle_stream_answers_watch_id_minus_1_with_the_current_revision() {
    let (_s, mut c) = start("watch_request_progress").await;
    let (mut ws, r) = open(&mut c, "k", WatchOptions::new()).await;
    assert_eq!(r.watch_id(), 0);
    ws.request_progress().await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), r.created(), r.canceled(), r.events().len()), (-1, false, false, 0), "{r:?}");
    assert_eq!(header_rev(&r), 1);
    for i in 0..5 {
        put(&mut c, &format!("other{i}"), "x").await;
    }
    ws.request_progress().await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), r.events().len()), (-1, 0), "{r:?}");
    assert_eq!(header_rev(&r), 6, "the revision moved with writes the stream does not watch");
    let rev = put(&mut c, "k", "v").await;
    assert_eq!(read_n(&mut ws, 0, 1).await, [P(rev, "k", "v")]);
    ws.request_progress().await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), header_rev(&r)), (-1, rev), "{r:?}");
    // With no watch left on the stream the answer is the same.
    ws.cancel(0).await.unwrap();
    assert!(next(&mut ws).await.canceled());
    ws.request_progress().await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), header_rev(&r), r.events().len()), (-1, rev, 0), "{r:?}");
}

// ------------------------------------------------------------ fragment

fn create(c: pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)) }
}

async fn raw_next(s: &mut common::RawStream) -> pb::WatchResponse {
    match s.recv_within::<pb::WatchResponse>(WAIT).await {
        Ok(Some(r)) => r,
        Ok(None) => panic!("the raw watch stream ended"),
        Err(e) => panic!("the raw watch stream failed: {e}"),
    }
}

fn raw_ev(e: &mvccpb::Event) -> (Ev, Option<(String, usize)>) {
    let kv = e.kv.as_ref().expect("kv");
    let ev = Ev {
        rev: kv.mod_revision,
        kind: if e.r#type == 0 { "PUT" } else { "DELETE" },
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: String::from_utf8_lossy(&kv.value).into_owned(),
    };
    let prev = e.prev_kv.as_ref().map(|p| (String::from_utf8_lossy(&p.value).into_owned(), p.value.len()));
    (ev, prev)
}

/// gRPC headroom etcd adds to `--max-request-bytes` for the messages it
/// receives; its watch server splits responses at the same sum.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

#[tokio::test]
async fn fragment_splits_a_revision_over_max_request_bytes_plus_512_kib_and_flags_every_part_but_the_last() {
    const MAX: usize = 1024 * 1024;
    const SPLIT_AT: usize = MAX + GRPC_OVERHEAD_BYTES;
    const VALUE: usize = 120_000;
    let (s, mut c) = start_with("watch_fragment", &["--max-request-bytes", "1048576"]).await;
    let g = s.grpc().await;
    let watch = |fragment: bool| pb::WatchCreateRequest {
        key: b("f/"),
        range_end: b("f0"),
        prev_kv: true,
        fragment,
        ..Default::default()
    };
    let mut fragmented = g.open_stream("/etcdserverpb.Watch/Watch").await.unwrap();
    fragmented.send(&create(watch(true))).unwrap();
    let r = raw_next(&mut fragmented).await;
    assert!(r.created && r.watch_id == 0 && !r.fragment, "{r:?}");
    let mut whole = g.open_stream("/etcdserverpb.Watch/Watch").await.unwrap();
    whole.send(&create(watch(false))).unwrap();
    assert!(raw_next(&mut whole).await.created);

    let value = |tag: char| tag.to_string().repeat(VALUE);
    for i in 0..24 {
        c.put(format!("f/{i:02}"), value('a'), None).await.unwrap(); // 2..=25
    }
    // A txn that fits under the request limit makes a revision whose
    // events (with prev_kv) are about 1.9 MB, above the split size.
    let ops: Vec<TxnOp> = (0..8).map(|i| TxnOp::put(format!("f/{i:02}"), value('b'), None)).collect();
    let txn_rev = c.txn(Txn::new().and_then(ops)).await.unwrap().header().unwrap().revision();
    assert_eq!(txn_rev, 26);
    // 10 DELETEs with prev_kv: about 1.2 MB, above --max-request-bytes but
    // under the split size: not split.
    let between_rev = del(&mut c, "f/00", Some(DeleteOptions::new().with_range("f/10"))).await;
    // 14 DELETEs: about 1.7 MB, split.
    let del_rev = del(&mut c, "f/10", Some(DeleteOptions::new().with_range("f/24"))).await;
    assert_eq!((between_rev, del_rev), (27, 28));
    let last = put(&mut c, "f/z", "small").await;
    const EVENTS: usize = 24 + 8 + 10 + 14 + 1;

    // The watch without fragment gets each revision in one response.
    let mut unsplit: Vec<pb::WatchResponse> = Vec::new();
    let deadline = Deadline::new();
    while unsplit.iter().map(|r| r.events.len()).sum::<usize>() < EVENTS {
        deadline.check("unfragmented watch");
        let r = raw_next(&mut whole).await;
        assert!(!r.fragment, "fragment is off for this watch: {} events", r.events.len());
        unsplit.push(r);
    }
    let counts: Vec<usize> = unsplit.iter().map(|r| r.events.len()).collect();
    assert_eq!(counts[24..], [8, 10, 14, 1]);
    assert!(counts[..24].iter().all(|&n| n == 1));
    let size = |rev: i64| unsplit.iter().find(|r| r.header.as_ref().unwrap().revision == rev).unwrap().encoded_len();
    assert!(size(txn_rev) > SPLIT_AT && size(del_rev) > SPLIT_AT, "the test's big revisions exceed the split size");
    assert!(size(between_rev) > MAX && size(between_rev) < SPLIT_AT);

    // The fragmented watch: the big revisions in parts, each part but the
    // last flagged; everything else whole.
    let mut parts: Vec<pb::WatchResponse> = Vec::new();
    while parts.iter().map(|r| r.events.len()).sum::<usize>() < EVENTS {
        deadline.check("fragmented watch");
        parts.push(raw_next(&mut fragmented).await);
    }
    let rev_of = |r: &pb::WatchResponse| r.events[0].kv.as_ref().unwrap().mod_revision;
    let whole_ones: Vec<&pb::WatchResponse> =
        parts.iter().filter(|r| rev_of(r) != txn_rev && rev_of(r) != del_rev).collect();
    assert_eq!(whole_ones.len(), 24 + 1 + 1);
    assert!(whole_ones.iter().all(|r| !r.fragment), "revisions under the split size come whole");
    assert_eq!(whole_ones[24].events.len(), 10, "1.2 MB, over --max-request-bytes, is not split");
    for rev in [txn_rev, del_rev] {
        let of_rev: Vec<&pb::WatchResponse> = parts.iter().filter(|r| rev_of(r) == rev).collect();
        assert!(of_rev.len() >= 2, "revision {rev} came in {} parts", of_rev.len());
        let flags: Vec<bool> = of_rev.iter().map(|r| r.fragment).collect();
        let mut want = vec![true; of_rev.len()];
        *want.last_mut().unwrap() = false;
        assert_eq!(flags, want, "revision {rev}: fragment on every part but the last");
        for r in &of_rev {
            assert_eq!(r.watch_id, 0);
            assert!(!r.created && !r.canceled);
            assert_eq!(r.header.as_ref().unwrap().revision, rev, "every part carries the revision's header");
            assert!(r.events.iter().all(|e| e.kv.as_ref().unwrap().mod_revision == rev));
            assert!(
                r.events.len() == 1 || r.encoded_len() < SPLIT_AT,
                "a part of several events stays under the split size"
            );
        }
        assert!(
            of_rev[0].encoded_len() > MAX,
            "revision {rev}: parts are filled up to the split size, past --max-request-bytes ({} bytes)",
            of_rev[0].encoded_len()
        );
        let joined: Vec<_> = of_rev.iter().flat_map(|r| r.events.iter().map(raw_ev)).collect();
        let i = unsplit.iter().position(|r| r.header.as_ref().unwrap().revision == rev).unwrap();
        let original: Vec<_> = unsplit[i].events.iter().map(raw_ev).collect();
        assert_eq!(joined, original, "revision {rev}: the parts reassemble to the whole");
    }
    let tail = parts.last().unwrap();
    assert_eq!((tail.fragment, raw_ev(&tail.events[0]).0), (false, P(last, "f/z", "small")));
    let i = unsplit.iter().position(|r| r.header.as_ref().unwrap().revision == del_rev).unwrap();
    assert!(unsplit[i].events.iter().all(|e| e.prev_kv.as_ref().unwrap().value.len() == VALUE));
}

// -------------------------------------------------------------- cancel

#[tokio::test]
async fn cancel_answers_canceled_with_the_current_revision_and_stops_that_watch_only() {
    let (_s, mut c) = start("watch_cancel").await;
    let (mut ws, _) = open(&mut c, "a", WatchOptions::new()).await;
    assert_eq!(add(&mut ws, "b", WatchOptions::new()).await.watch_id(), 1);
    put(&mut c, "x", "1").await; // 2
    ws.cancel(0).await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), r.canceled(), r.created(), r.events().len()), (0, true, false, 0), "{r:?}");
    assert_eq!(header_rev(&r), 2);
    assert_eq!(r.cancel_reason(), "");
    put(&mut c, "a", "1").await; // 3
    let rev = put(&mut c, "b", "1").await; // 4
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), evs(&r)), (1, vec![P(rev, "b", "1")]), "the canceled watch got nothing");
    // Canceling an unknown or already canceled watch is not answered: the
    // next response is the progress answer requested after it.
    ws.cancel(42).await.unwrap();
    ws.cancel(0).await.unwrap();
    ws.request_progress().await.unwrap();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), r.canceled(), header_rev(&r)), (-1, false, rev), "{r:?}");
    // A new watch does not reuse the canceled id.
    assert_eq!(add(&mut ws, "a", WatchOptions::new()).await.watch_id(), 2);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    let (_s, mut c) = start("watch_compacted").await;
    for i in 0..9 {
        put(&mut c, "k", &format!("v{i}")).await; // 2..=10
    }
    c.compact(8, Some(CompactionOptions::new().with_physical())).await.unwrap();
    let (mut ws, r) = open(&mut c, "k", WatchOptions::new().with_start_revision(5)).await;
    assert_eq!(header_rev(&r), 10);
    let id = r.watch_id();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), r.canceled(), r.created(), r.compact_revision()), (id, true, false, 8), "{r:?}");
    assert!(r.events().is_empty());
    assert_eq!(r.cancel_reason(), "");
    assert_eq!(header_rev(&r), 0, "etcd 3.4 sends the compaction cancel with header revision 0");
    // The id stays dead: an event on the key reaches only live watches.
    let w = add(&mut ws, "k", WatchOptions::new().with_start_revision(8)).await.watch_id();
    assert_eq!(
        read_n(&mut ws, w, 3).await,
        [P(8, "k", "v6"), P(9, "k", "v7"), P(10, "k", "v8")],
        "the compacted revision itself is kept"
    );
    let rev = put(&mut c, "k", "new").await;
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), evs(&r)), (w, vec![P(rev, "k", "new")]));
    // Start revision 1 (before anything) is compacted too.
    let w1 = add(&mut ws, "k", WatchOptions::new().with_start_revision(1)).await.watch_id();
    let r = next(&mut ws).await;
    assert_eq!((r.watch_id(), r.canceled(), r.compact_revision()), (w1, true, 8), "{r:?}");
}

// ------------------------------------------- grouping and global order

#[tokio::test]
async fn events_of_one_revision_arrive_in_one_response_in_operation_order() {
    let (_s, mut c) = start("watch_grouping").await;
    let (mut ws, r) = open(&mut c, "", WatchOptions::new().with_all_keys()).await;
    let id = r.watch_id();
    put(&mut c, "c", "0").await; // 2
    put(&mut c, "g/1", "0").await; // 3
    put(&mut c, "g/2", "0").await; // 4
    put(&mut c, "g/3", "0").await; // 5
    let txn = Txn::new().and_then([
        TxnOp::put("b", "1", None),
        TxnOp::put("a", "1", None),
        TxnOp::delete("c", None),
        TxnOp::put("z", "1", None),
        TxnOp::delete("missing", None),
    ]);
    c.txn(txn).await.unwrap(); // 6
    del(&mut c, "g/", Some(DeleteOptions::new().with_prefix())).await; // 7
    let got = read_events(&mut ws, &[(id, 4 + 4 + 3)]).await.remove(&id).unwrap();
    let want6 = vec![P(6, "b", "1"), P(6, "a", "1"), D(6, "c"), P(6, "z", "1")];
    let want7 = vec![D(7, "g/1"), D(7, "g/2"), D(7, "g/3")];
    assert_eq!(got[4], want6, "a txn's events in its order, together");
    assert_eq!(got[5], want7, "a range delete's events in key order, together");

    // Catching up from storage keeps a revision in one response too.
    let (mut old, r) = open(&mut c, "", WatchOptions::new().with_all_keys().with_start_revision(2)).await;
    let got = read_events(&mut old, &[(r.watch_id(), 11)]).await.remove(&r.watch_id()).unwrap();
    for resp in &got {
        let revs: Vec<i64> = resp.iter().map(|e| e.rev).collect();
        assert!(revs.windows(2).all(|w| w[0] <= w[1]), "in order: {resp:?}");
    }
    let mut by_rev: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, resp) in got.iter().enumerate() {
        for e in resp {
            by_rev.entry(e.rev).or_default().push(i);
        }
    }
    for (rev, responses) in &by_rev {
        assert!(responses.windows(2).all(|w| w[0] == w[1]), "revision {rev} split over responses {responses:?}");
    }
    let flat = got.concat();
    assert_eq!(flat[4..8], want6[..]);
    assert_eq!(flat[8..], want7[..]);
}

/// Keys in every shard of a 4-core corekv (cut at /registry/g, /n, /t) and
/// outside /registry/.
const SPREAD_KEYS: [&str; 14] = [
    "/a",
    "/registry/",
    "/registry/a1",
    "/registry/b",
    "/registry/fz",
    "/registry/g",
    "/registry/h/x",
    "/registry/n",
    "/registry/p",
    "/registry/t",
    "/registry/zz",
    "/registry0",
    "a",
    "z",
];

/// One write with its revision and the events it made.
async fn random_write(c: &mut Client, rng: &mut Rng, tag: &str) -> Option<(i64, Vec<Ev>)> {
    match rng.below(10) {
        0..=4 => {
            let k = *rng.pick(&SPREAD_KEYS);
            let v = tag.to_string();
            let rev = put(c, k, &v).await;
            Some((rev, vec![P(rev, k, &v)]))
        }
        5..=7 => {
            // A txn writing keys far apart: one revision over several shards.
            let first = rng.below(SPREAD_KEYS.len() as u64) as usize;
            let step = 1 + rng.below(4) as usize;
            let keys: Vec<&str> = (0..3).map(|j| SPREAD_KEYS[(first + j * step) % SPREAD_KEYS.len()]).collect();
            let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::put(*k, format!("{tag}-{k}"), None)).collect();
            let r = c.txn(Txn::new().and_then(ops)).await.expect("txn");
            let rev = r.header().unwrap().revision();
            Some((rev, keys.iter().map(|k| P(rev, k, &format!("{tag}-{k}"))).collect()))
        }
        8 => {
            let k = *rng.pick(&SPREAD_KEYS);
            let r = c.delete(k, Some(DeleteOptions::new().with_prev_key())).await.expect("delete");
            let rev = r.header().unwrap().revision();
            (r.deleted() > 0).then(|| (rev, vec![D(rev, k)]))
        }
        _ => {
            // A range delete across shards.
            let r = c
                .delete("/registry/f", Some(DeleteOptions::new().with_range("/registry/o").with_prev_key()))
                .await
                .expect("delete range");
            let rev = r.header().unwrap().revision();
            let mut keys: Vec<String> =
                r.prev_kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
            keys.sort();
            (r.deleted() > 0).then(|| (rev, keys.iter().map(|k| D(rev, k)).collect()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_over_keys_on_different_cores_sees_one_stream_in_revision_order() {
    let s = server_on_cores("watch_cores", 4, &[]);
    let mut c = s.client().await;
    let (mut ws, r) = open(&mut c, "", WatchOptions::new().with_all_keys()).await;
    let all = r.watch_id();
    let registry = add(&mut ws, "/registry/", WatchOptions::new().with_prefix()).await.watch_id();
    let middle = add(&mut ws, "/registry/c", WatchOptions::new().with_range("/registry/w")).await.watch_id();
    let edges = add(&mut ws, "/registry/fz", WatchOptions::new().with_range("/registry/na")).await.watch_id();

    const WRITERS: u64 = 4;
    const WRITES: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut wc = s.client().await;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed + w);
            let mut log = Vec::new();
            for i in 0..WRITES {
                if let Some(x) = random_write(&mut wc, &mut rng, &format!("w{w}-{i}")).await {
                    log.push(x);
                }
            }
            log
        }));
    }
    let mut log: Vec<(i64, Vec<Ev>)> = Vec::new();
    for t in tasks {
        log.extend(tokio::time::timeout(Duration::from_secs(120), t).await.expect("writer done").unwrap());
    }
    log.sort_by_key(|(rev, _)| *rev);
    assert!(log.windows(2).all(|w| w[0].0 < w[1].0), "every write its own revision");
    let want = |f: &dyn Fn(&str) -> bool| -> Vec<Ev> {
        log.iter().flat_map(|(_, evs)| evs.iter().filter(|e| f(&e.key)).cloned()).collect()
    };
    let want_all = want(&|_| true);
    let want_registry = want(&|k| k.starts_with("/registry/"));
    let want_middle = want(&|k| ("/registry/c".."/registry/w").contains(&k));
    let want_edges = want(&|k| ("/registry/fz".."/registry/na").contains(&k));
    let got = read_events(
        &mut ws,
        &[
            (all, want_all.len()),
            (registry, want_registry.len()),
            (middle, want_middle.len()),
            (edges, want_edges.len()),
        ],
    )
    .await;
    for (id, want, name) in [
        (all, &want_all, "all keys"),
        (registry, &want_registry, "/registry/"),
        (middle, &want_middle, "[c, w)"),
        (edges, &want_edges, "[fz, na)"),
    ] {
        check_grouped(&got[&id], want, name);
    }

    // The same history caught up from storage by a new watch.
    let (mut old, r) = open(&mut c, "", WatchOptions::new().with_all_keys().with_start_revision(2)).await;
    let got = read_events(&mut old, &[(r.watch_id(), want_all.len())]).await;
    check_grouped(&got[&r.watch_id()], &want_all, "all keys from revision 2");
}

/// `got` (responses of events) is `want` in order, and no revision is split
/// over two responses.
#[track_caller]
fn check_grouped(got: &[Vec<Ev>], want: &[Ev], name: &str) {
    let flat = got.concat();
    if let Some(i) = (0..want.len()).find(|&i| flat[i] != want[i]) {
        panic!(
            "{name}: event {i} is {:?}, want {:?} (events before: {:?})",
            flat[i],
            want[i],
            &want[i.saturating_sub(3)..i]
        );
    }
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for (i, resp) in got.iter().enumerate() {
        for e in resp {
            let first = *seen.entry(e.rev).or_insert(i);
            assert_eq!(first, i, "{name}: revision {} split over responses {first} and {i}", e.rev);
        }
    }
}

// ---------------------------------------------------------------- scale

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_over_a_thousand_prefixes_each_get_every_event_once_in_order() {
    const PREFIXES: usize = 1000;
    const STREAMS: usize = 1000;
    const WATCHES_PER_STREAM: usize = 10;
    const CONNECTIONS: usize = 10;
    const PUTS: usize = 3000;
    const WRITERS: usize = 16;
    let deadline = Instant::now() + Duration::from_secs(400);
    let prefix = |p: usize| format!("/w/{p:04}/");
    let s = Server::under_test("watch_10k", &[]);
    let mut c = s.client().await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(s.client().await);
    }
    let start = revision(&mut c).await + 1;

    // Stream `i` watches prefixes 10i..10i+9 (mod 1,000): every prefix has
    // 10 watchers, on 10 streams spread over the connections.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(STREAMS);
    let mut readers = Vec::new();
    for i in 0..STREAMS {
        let mut cl = clients[i % CONNECTIONS].clone();
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let ps: Vec<usize> = (0..WATCHES_PER_STREAM).map(|j| (i * WATCHES_PER_STREAM + j) % PREFIXES).collect();
            let opts =
                |p: usize| WatchOptions::new().with_prefix().with_start_revision(start).with_watch_id(p as i64 + 1);
            let (mut ws, r) = open(&mut cl, prefix(ps[0]), opts(ps[0])).await;
            assert_eq!(r.watch_id(), ps[0] as i64 + 1);
            for &p in &ps[1..] {
                let r = add(&mut ws, prefix(p), opts(p)).await;
                assert_eq!(r.watch_id(), p as i64 + 1);
            }
            ready.send(()).await.unwrap();
            // Read until every watch has seen its prefix's end marker.
            let mut got: HashMap<usize, Vec<Ev>> = ps.iter().map(|&p| (p, Vec::new())).collect();
            let mut open_watches = ps.len();
            while open_watches > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                let r = match tokio::time::timeout(left, ws.message()).await {
                    Ok(Ok(Some(r))) => r,
                    other => panic!("stream {i}: {other:?} with {open_watches} watches short of their end"),
                };
                assert!(!r.canceled() && !r.created(), "stream {i}: {r:?}");
                let p = (r.watch_id() - 1) as usize;
                let list = got.get_mut(&p).unwrap_or_else(|| panic!("stream {i}: unknown watch {}", r.watch_id()));
                for e in r.events() {
                    let e = ev(e);
                    assert!(
                        !list.last().is_some_and(|l| l.key.ends_with("~end")),
                        "stream {i}: {e:?} after the end marker"
                    );
                    if e.key.ends_with("~end") {
                        open_watches -= 1;
                    }
                    list.push(e);
                }
            }
            got
        }));
    }
    drop(ready_tx);
    for n in 0..STREAMS {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ready_rx.recv()).await {
            Ok(Some(())) => {}
            other => panic!("only {n} of {STREAMS} streams created their watches: {other:?}"),
        }
    }

    // Puts to random prefixes from several writers, then one end marker
    // per prefix.
    let mut rng = Rng::new(1000);
    let plan: Vec<(String, String)> = (0..PUTS)
        .map(|i| {
            let p = rng.below(PREFIXES as u64) as usize;
            (format!("{}k{}", prefix(p), rng.below(5)), format!("v{i}"))
        })
        .collect();
    let ends: Vec<(String, String)> =
        (0..PREFIXES).map(|p| (format!("{}~end", prefix(p)), "end".to_string())).collect();
    let mut log: Vec<Ev> = Vec::new();
    for batch in [plan, ends] {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let mut wc = clients[w % CONNECTIONS].clone();
            let mine: Vec<(String, String)> = batch.iter().skip(w).step_by(WRITERS).cloned().collect();
            writers.push(tokio::spawn(async move {
                let mut log = Vec::new();
                for (k, v) in mine {
                    let rev = put(&mut wc, &k, &v).await;
                    log.push(P(rev, &k, &v));
                }
                log
            }));
        }
        for w in writers {
            let left = deadline.saturating_duration_since(Instant::now());
            log.extend(tokio::time::timeout(left, w).await.expect("writers within the deadline").unwrap());
        }
    }
    log.sort();
    let mut want: HashMap<usize, Vec<Ev>> = HashMap::new();
    for e in &log {
        let p: usize = e.key[3..7].parse().unwrap();
        want.entry(p).or_default().push(e.clone());
    }

    let mut delivered = 0;
    for (i, r) in readers.into_iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, r).await.expect("readers within the deadline").unwrap();
        for (p, evs) in got {
            assert_eq!(evs, want[&p], "stream {i}, prefix {p}");
            delivered += evs.len();
        }
    }
    assert_eq!(delivered, (PUTS + PREFIXES) * 10);
}

// --------------------------------------------------------- slow watcher

/// Puts `n` values of `size` bytes under `prefix` from `writers` clients;
/// the events they make, in revision order.
async fn bulk_puts(s: &Server, prefix: &str, n: usize, size: usize, writers: usize) -> Vec<Ev> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut wc = s.client().await;
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut log = Vec::new();
            for i in (w..n).step_by(writers) {
                let k = format!("{prefix}{:03}", i % 500);
                let mut v = format!("{i}:");
                v.extend(std::iter::repeat_n('x', size - v.len()));
                let rev = put(&mut wc, &k, &v).await;
                log.push(P(rev, &k, &v));
            }
            log
        }));
    }
    let mut log = Vec::new();
    for t in tasks {
        log.extend(tokio::time::timeout(Duration::from_secs(300), t).await.expect("the writes finish").unwrap());
    }
    log.sort();
    log
}

/// Reads `n` events of watch `id` (flattened), checking each against `want`.
async fn read_checked(ws: &mut WatchStream, id: i64, want: &[Ev], who: &str) {
    let mut i = 0;
    let deadline = Deadline::new();
    while i < want.len() {
        deadline.check(who);
        let r = next(ws).await;
        assert_eq!(r.watch_id(), id, "{who}: {r:?}");
        assert!(!r.canceled(), "{who}: canceled after {i} of {} events: {r:?}", want.len());
        for e in r.events() {
            assert!(i < want.len(), "{who}: more events than written");
            assert_eq!(ev(e), want[i], "{who}: event {i}");
            i += 1;
        }
    }
}

const SLOW_PUTS: usize = 3000;
const SLOW_VALUE: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_holds_back_neither_writes_nor_other_watchers_and_loses_nothing() {
    let s = Server::under_test("watch_slow", &[]);
    let mut fast_client = s.client().await;
    let mut slow_client = s.client().await; // Its own connection.
    let start = revision(&mut fast_client).await + 1;
    let opts = WatchOptions::new().with_prefix().with_start_revision(start);
    let (mut slow, r) = open(&mut slow_client, "s/", opts.clone()).await;
    let slow_id = r.watch_id();
    let (mut fast, r) = open(&mut fast_client, "s/", opts).await;
    let fast_id = r.watch_id();

    // The fast watcher reads as events come, concurrently with the writes.
    let fast_reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let deadline = Deadline::new();
        while got.len() < SLOW_PUTS {
            deadline.check("fast watcher");
            let r = next(&mut fast).await;
            assert_eq!(r.watch_id(), fast_id, "fast watcher: {r:?}");
            assert!(!r.canceled(), "fast watcher canceled after {} events: {r:?}", got.len());
            got.extend(evs(&r));
        }
        got
    });
    // The slow one reads nothing while ~12 MB of events are written: far
    // more than the connection's flow-control windows.
    let written = bulk_puts(&s, "s/", SLOW_PUTS, SLOW_VALUE, 8).await;
    assert_eq!(written.len(), SLOW_PUTS);
    let fast_got = tokio::time::timeout(Duration::from_secs(120), fast_reader)
        .await
        .expect("the fast watcher gets every event while the slow one reads nothing")
        .unwrap();
    if let Some(i) = (0..written.len()).find(|&i| fast_got[i] != written[i]) {
        panic!("fast watcher: event {i} is {:?}, want {:?}", fast_got[i], written[i]);
    }
    assert_eq!(fast_got.len(), written.len());
    // Writes still go through.
    let rev = put(&mut fast_client, "elsewhere", "x").await;
    assert_eq!(rev, written.last().unwrap().rev + 1);

    // The slow watcher resumes and gets every event in order.
    read_checked(&mut slow, slow_id, &written, "slow watcher").await;
    slow.request_progress().await.unwrap();
    let r = next(&mut slow).await;
    assert_eq!((r.watch_id(), r.events().len()), (-1, 0), "nothing more for the slow watcher: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_whose_next_revision_is_compacted_gets_a_gapless_prefix_then_a_compaction_cancel() {
    let s = Server::under_test("watch_slow_compacted", &[]);
    let mut c = s.client().await;
    let mut slow_client = s.client().await;
    let start = revision(&mut c).await + 1;
    let (mut slow, r) =
        open(&mut slow_client, "s/", WatchOptions::new().with_prefix().with_start_revision(start)).await;
    let slow_id = r.watch_id();
    let written = bulk_puts(&s, "s/", SLOW_PUTS, SLOW_VALUE, 8).await;
    let compact_rev = put(&mut c, "elsewhere", "x").await;
    c.compact(compact_rev, Some(CompactionOptions::new().with_physical())).await.unwrap();

    // What the slow watcher was sent before it stalled is delivered in
    // order without gaps; from the first event it still needed, either it
    // catches up (still in storage) or it is canceled with the compaction.
    let mut i = 0;
    let mut canceled = false;
    let deadline = Deadline::new();
    loop {
        deadline.check("slow watcher");
        let r = next(&mut slow).await;
        assert_eq!(r.watch_id(), slow_id, "{r:?}");
        if r.canceled() {
            assert_eq!(r.compact_revision(), compact_rev, "{r:?}");
            assert!(r.events().is_empty());
            assert!(i < written.len(), "canceled after receiving everything");
            assert!(
                written[i].rev < compact_rev,
                "canceled though its next revision {} was not compacted",
                written[i].rev
            );
            eprintln!("slow watcher: {i} of {} events, then canceled at compact revision {compact_rev}", written.len());
            canceled = true;
            break;
        }
        for e in r.events() {
            assert!(i < written.len(), "more events than written");
            assert_eq!(ev(e), written[i], "event {i}");
            i += 1;
        }
        if i == written.len() {
            eprintln!("slow watcher: all {i} events delivered before the compaction caught it");
            break;
        }
    }
    // A canceled watcher gets nothing more; either way new writes reach new
    // watches on the same stream.
    let w = add(&mut slow, "s/", WatchOptions::new().with_prefix()).await.watch_id();
    let rev = put(&mut c, "s/new", "v").await;
    for n in 0.. {
        assert!(n < 3, "the new watch got no event");
        let r = next(&mut slow).await;
        if r.watch_id() == w {
            assert_eq!(evs(&r), [P(rev, "s/new", "v")]);
            break;
        }
        assert_eq!(r.watch_id(), slow_id, "{r:?}");
        assert!(!canceled, "a canceled watch got {r:?}");
        assert_eq!(evs(&r), [P(rev, "s/new", "v")]);
    }
}
