//! etcd's Lease service against a real server process, through the
//! `etcd-client` crate, and a raw gRPC stream for LeaseKeepAlive answers the
//! crate turns into errors: LeaseGrant (server- and client-chosen IDs, the
//! TTL bounds), LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases,
//! Put with a lease, expiry deleting keys with DELETE events, and leases
//! after SIGKILL and restart.
//!
//! Every expectation here is etcd 3.4's: `COREKV_IT_REFERENCE=etcd cargo
//! test --test lease` runs the same tests against /usr/bin/etcd. Every wait
//! is bounded: an expiry that never comes fails the test.

mod common;

use std::time::{Duration, Instant};

use common::{code, expect_status, msg, revision, Server};
use corekv::api::proto::etcdserverpb as pb;
use etcd_client::{
    Client, Error, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
    WatchResponse, WatchStream,
};

const FAILED_PRECONDITION: i32 = 9;
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// etcd's largest TTL (`lease.MaxLeaseTTL`).
const MAX_TTL: i64 = 9_000_000_000;
/// The smallest TTL with etcd's default flags (heartbeat 100 ms, election
/// timeout 1 s): 3/2 of the election timeout, rounded up to a second.
const MIN_TTL: i64 = 2;
/// Longest wait for an expiry or an event.
const WAIT: Duration = Duration::from_secs(20);

async fn start(name: &str) -> (Server, Client) {
    let s = Server::under_test(name, &[]);
    let c = s.client().await;
    (s, c)
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    let r = c.lease_grant(ttl, None).await.expect("lease grant");
    assert_eq!(r.error(), "");
    r.id()
}

async fn put_leased(c: &mut Client, key: &str, lease: i64) -> i64 {
    let r = c.put(key, format!("v-{key}"), Some(PutOptions::new().with_lease(lease))).await.expect("put with lease");
    r.header().unwrap().revision()
}

/// (ttl, granted_ttl, sorted keys) of a lease.
async fn ttl_of(c: &mut Client, id: i64) -> (i64, i64, Vec<String>) {
    let r = c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.expect("time to live");
    assert_eq!(r.id(), id);
    let mut keys: Vec<String> = r.keys().iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    keys.sort();
    (r.ttl(), r.granted_ttl(), keys)
}

async fn lease_ids(c: &mut Client) -> Vec<i64> {
    let mut ids: Vec<i64> = c.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
    ids.sort();
    ids
}

async fn lease_of(c: &mut Client, key: &str) -> Option<i64> {
    c.get(key, None).await.expect("get").kvs().first().map(|kv| kv.lease())
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn next(ws: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(WAIT, ws.message()).await {
        Err(_) => panic!("no watch response within {WAIT:?}"),
        Ok(r) => r.expect("watch stream").expect("watch stream ended"),
    }
}

async fn watch_all(c: &mut Client) -> WatchStream {
    let mut ws = c.watch("", Some(WatchOptions::new().with_all_keys())).await.expect("watch");
    assert!(next(&mut ws).await.created());
    ws
}

/// (type, key, mod_revision) of a response's events.
fn events(r: &WatchResponse) -> Vec<(EventType, String, i64)> {
    r.events()
        .iter()
        .map(|e| {
            let kv = e.kv().unwrap();
            (e.event_type(), String::from_utf8_lossy(kv.key()).into_owned(), kv.mod_revision())
        })
        .collect()
}

/// Reads a watch until a response carries DELETE events; returns them.
async fn next_deletes(ws: &mut WatchStream) -> Vec<(EventType, String, i64)> {
    for _ in 0..100 {
        let r = next(ws).await;
        if r.events().iter().any(|e| e.event_type() == EventType::Delete) {
            return events(&r);
        }
    }
    panic!("no DELETE event in 100 responses");
}

// ---------------------------------------------------------------- grant

#[tokio::test]
async fn lease_grant_with_a_server_chosen_id_returns_a_positive_unique_id_and_takes_no_revision() {
    let (_s, mut c) = start("lease_grant_auto").await;
    c.put("k", "v", None).await.unwrap(); // 2
    let mut ids = Vec::new();
    for ttl in [60, 120, 7] {
        let r = c.lease_grant(ttl, None).await.unwrap();
        assert_eq!((r.ttl(), r.error()), (ttl, ""));
        assert_eq!(r.header().unwrap().revision(), 2, "the header carries the current revision");
        assert!(r.id() > 0, "a server-chosen id is positive: {}", r.id());
        ids.push(r.id());
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "{ids:?}");
    assert_eq!(revision(&mut c).await, 2, "granting takes no revision");
    assert_eq!(lease_ids(&mut c).await, unique);
    assert_eq!(ttl_of(&mut c, ids[2]).await.1, 7);
}

#[tokio::test]
async fn lease_grant_with_a_client_chosen_id_keeps_it_and_a_duplicate_is_refused_with_lease_already_exists() {
    let (_s, mut c) = start("lease_grant_id").await;
    let r = c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(1000))).await.unwrap();
    assert_eq!((r.id(), r.ttl()), (1000, 60));
    let e = expect_status(c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(1000))).await);
    assert_eq!(e, (FAILED_PRECONDITION, LEASE_EXISTS.to_string()));
    let e = expect_status(c.lease_grant(5, Some(LeaseGrantOptions::new().with_id(1000))).await);
    assert_eq!(e, (FAILED_PRECONDITION, LEASE_EXISTS.to_string()), "whatever the TTL");
    assert_eq!(ttl_of(&mut c, 1000).await.1, 60, "the refused grant changed nothing");
    let big = i64::MAX;
    let r = c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(big))).await.unwrap();
    assert_eq!(r.id(), big);
    // A server-chosen id never collides with a client-chosen one.
    let auto = grant(&mut c, 60).await;
    assert!(auto != 1000 && auto != big);
    assert_eq!(lease_ids(&mut c).await, {
        let mut v = vec![1000, big, auto];
        v.sort();
        v
    });
    // Negative ids are ids like any other.
    let r = c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(-5))).await.unwrap();
    assert_eq!((r.id(), r.ttl()), (-5, 60));
    put_leased(&mut c, "neg", -5).await;
    assert_eq!(lease_of(&mut c, "neg").await, Some(-5));
    assert_eq!(ttl_of(&mut c, -5).await.2, strs(&["neg"]));
    assert!(lease_ids(&mut c).await.contains(&-5));
    c.lease_revoke(-5).await.unwrap();
    assert_eq!(lease_of(&mut c, "neg").await, None);
    // A revoked id can be granted again.
    c.lease_revoke(1000).await.unwrap();
    let r = c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(1000))).await.unwrap();
    assert_eq!((r.id(), r.ttl()), (1000, 30));
}

#[tokio::test]
async fn lease_grant_raises_a_ttl_under_the_minimum_to_2_seconds() {
    let (_s, mut c) = start("lease_grant_min_ttl").await;
    for (asked, got) in [(1, MIN_TTL), (0, MIN_TTL), (-5, MIN_TTL), (2, 2), (3, 3)] {
        let r = c.lease_grant(asked, None).await.unwrap();
        assert_eq!(r.ttl(), got, "asked for {asked}");
        assert_eq!(ttl_of(&mut c, r.id()).await.1, got, "granted_ttl of a lease asked for {asked}");
    }
}

#[tokio::test]
async fn lease_grant_refuses_a_ttl_above_9_billion_seconds_with_out_of_range() {
    let (_s, mut c) = start("lease_grant_max_ttl").await;
    for ttl in [MAX_TTL + 1, i64::MAX] {
        let e = expect_status(c.lease_grant(ttl, None).await);
        assert_eq!(e, (code::OUT_OF_RANGE, TTL_TOO_LARGE.to_string()), "ttl {ttl}");
    }
    let e = expect_status(c.lease_grant(MAX_TTL + 1, Some(LeaseGrantOptions::new().with_id(5))).await);
    assert_eq!(e, (code::OUT_OF_RANGE, TTL_TOO_LARGE.to_string()));
    assert!(lease_ids(&mut c).await.is_empty());
    let r = c.lease_grant(MAX_TTL, None).await.unwrap();
    assert_eq!(r.ttl(), MAX_TTL);
    let (ttl, granted, _) = ttl_of(&mut c, r.id()).await;
    assert_eq!(granted, MAX_TTL);
    assert!(ttl > MAX_TTL - 10 && ttl <= MAX_TTL, "{ttl}");
}

// ------------------------------------------------- attach, time to live

#[tokio::test]
async fn put_with_a_lease_attaches_the_key_and_time_to_live_lists_the_keys_only_when_asked() {
    let (_s, mut c) = start("lease_attach").await;
    let id = grant(&mut c, 60).await;
    let other = grant(&mut c, 60).await;
    for k in ["c", "a", "b"] {
        put_leased(&mut c, k, id).await;
    }
    c.put("plain", "v", None).await.unwrap();
    assert_eq!(lease_of(&mut c, "a").await, Some(id));
    assert_eq!(lease_of(&mut c, "plain").await, Some(0));
    let (ttl, granted, keys) = ttl_of(&mut c, id).await;
    assert_eq!((granted, keys), (60, strs(&["a", "b", "c"])));
    assert!(ttl > 0 && ttl <= 60, "{ttl}");
    let r = c.lease_time_to_live(id, None).await.unwrap();
    assert!(r.keys().is_empty(), "keys only when asked");
    assert_eq!((r.id(), r.granted_ttl()), (id, 60));
    assert_eq!(r.header().unwrap().revision(), revision(&mut c).await);

    // A put without a lease detaches the key; a put with another moves it;
    // ignore_lease keeps it.
    c.put("a", "v2", None).await.unwrap();
    put_leased(&mut c, "b", other).await;
    c.put("c", "v3", Some(PutOptions::new().with_ignore_lease())).await.unwrap();
    assert_eq!(ttl_of(&mut c, id).await.2, strs(&["c"]));
    assert_eq!(ttl_of(&mut c, other).await.2, strs(&["b"]));
    assert_eq!(lease_of(&mut c, "a").await, Some(0));
    assert_eq!(lease_of(&mut c, "c").await, Some(id));
    // A deleted key leaves its lease.
    c.delete("c", None).await.unwrap();
    assert!(ttl_of(&mut c, id).await.2.is_empty());

    let rev = revision(&mut c).await;
    let e = expect_status(c.put("x", "v", Some(PutOptions::new().with_lease(12345))).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
    assert_eq!(revision(&mut c).await, rev, "a put with an unknown lease takes no revision");
}

#[tokio::test]
async fn time_to_live_of_a_missing_lease_answers_ttl_minus_1_without_an_error() {
    let (_s, mut c) = start("lease_ttl_missing").await;
    for id in [1234, 0, -7] {
        let r = c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
        assert_eq!((r.id(), r.ttl(), r.granted_ttl(), r.keys().len()), (id, -1, 0, 0), "lease {id}");
        assert_eq!(r.header().unwrap().revision(), 1);
    }
}

// --------------------------------------------------------------- revoke

#[tokio::test]
async fn lease_revoke_deletes_the_attached_keys_in_one_revision_with_delete_events_in_key_order() {
    let (_s, mut c) = start("lease_revoke").await;
    let mut ws = watch_all(&mut c).await;
    let id = grant(&mut c, 60).await;
    for k in ["c", "a", "b"] {
        put_leased(&mut c, k, id).await; // 2, 3, 4
    }
    c.put("plain", "v", None).await.unwrap(); // 5
    let r = c.lease_revoke(id).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 6, "the revoke's deletes take one revision");
    assert_eq!(
        next_deletes(&mut ws).await,
        [(EventType::Delete, "a".into(), 6), (EventType::Delete, "b".into(), 6), (EventType::Delete, "c".into(), 6)]
    );
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(r.kvs().len(), 1, "only the key without a lease is left");
    assert_eq!(ttl_of(&mut c, id).await, (-1, 0, vec![]));
    assert!(lease_ids(&mut c).await.is_empty());

    let e = expect_status(c.lease_revoke(id).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()), "revoked twice");
    let e = expect_status(c.lease_revoke(424242).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
    let e = expect_status(c.put("a", "v", Some(PutOptions::new().with_lease(id))).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()), "a revoked lease takes no keys");

    // A lease without keys: revoking it deletes nothing and takes no revision.
    let empty = grant(&mut c, 60).await;
    let r = c.lease_revoke(empty).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 6);
    assert_eq!(revision(&mut c).await, 6);
}

#[tokio::test]
async fn lease_leases_lists_every_live_lease() {
    let (_s, mut c) = start("lease_leases").await;
    assert!(lease_ids(&mut c).await.is_empty());
    let a = grant(&mut c, 60).await;
    let b = c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(77))).await.unwrap().id();
    let d = grant(&mut c, 600).await;
    let mut want = vec![a, b, d];
    want.sort();
    assert_eq!(lease_ids(&mut c).await, want);
    c.lease_revoke(a).await.unwrap();
    want.retain(|&x| x != a);
    assert_eq!(lease_ids(&mut c).await, want);
    let r = c.leases().await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 1);
}

// ------------------------------------------------------------ keepalive

/// The TTL LeaseTimeToLive reports, once it has dropped to `at_most`.
async fn wait_ttl_at_most(c: &mut Client, id: i64, at_most: i64) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let (ttl, _, _) = ttl_of(c, id).await;
        if ttl <= at_most {
            return ttl;
        }
        assert!(Instant::now() < deadline, "lease {id} still has {ttl}s after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn keep_alive_answers_the_granted_ttl_and_refreshes_the_remaining_time() {
    let (_s, mut c) = start("lease_keepalive").await;
    let id = grant(&mut c, 20).await;
    let before = wait_ttl_at_most(&mut c, id, 18).await;
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    assert_eq!(keeper.id(), id);
    let (ttl, _, _) = ttl_of(&mut c, id).await;
    assert!(ttl >= 19 && ttl > before, "refreshed from {before} to {ttl}");
    // More keepalives on the same stream, each answered in order.
    for _ in 0..3 {
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(WAIT, stream.message()).await.expect("keepalive answer").unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (id, 20));
        assert_eq!(r.header().unwrap().revision(), 1);
    }
    // The crate reports a missing lease's answer (TTL 0) as an error.
    match c.lease_keep_alive(12345).await {
        Err(Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
        other => panic!("expected the crate's lease-not-found error, got {other:?}"),
    }
}

#[tokio::test]
async fn one_keep_alive_stream_serves_several_leases_and_answers_ttl_0_for_a_missing_one() {
    let (s, mut c) = start("lease_keepalive_raw").await;
    let a = grant(&mut c, 20).await;
    let b = grant(&mut c, 30).await;
    c.put("k", "v", None).await.unwrap(); // 2
    let g = s.grpc().await;
    let mut ka = g.open_stream("/etcdserverpb.Lease/LeaseKeepAlive").await.unwrap();
    let missing = 12345;
    for id in [a, b, missing, a, 0] {
        ka.send(&pb::LeaseKeepAliveRequest { id }).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let r: pb::LeaseKeepAliveResponse = ka.recv_within(WAIT).await.expect("keepalive stream").expect("answer");
        assert_eq!(r.header.as_ref().expect("header").revision, 2);
        got.push((r.id, r.ttl));
    }
    assert_eq!(got, [(a, 20), (b, 30), (missing, 0), (a, 20), (0, 0)]);
    // The stream stays usable after those answers.
    ka.send(&pb::LeaseKeepAliveRequest { id: b }).unwrap();
    let r: pb::LeaseKeepAliveResponse = ka.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!((r.id, r.ttl), (b, 30));
    // Revoked while the stream is open: TTL 0 from then on.
    c.lease_revoke(b).await.unwrap();
    ka.send(&pb::LeaseKeepAliveRequest { id: b }).unwrap();
    let r: pb::LeaseKeepAliveResponse = ka.recv_within(WAIT).await.unwrap().unwrap();
    assert_eq!((r.id, r.ttl), (b, 0));
}

#[tokio::test]
async fn keep_alive_extends_a_lease_past_its_original_expiry_until_it_stops() {
    let (_s, mut c) = start("lease_keepalive_extends").await;
    let mut ws = watch_all(&mut c).await;
    let r = c.lease_grant(MIN_TTL, None).await.unwrap();
    let id = r.id();
    let granted = Instant::now();
    put_leased(&mut c, "held", id).await; // 2
    assert_eq!(events(&next(&mut ws).await), [(EventType::Put, "held".into(), 2)]);
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    // Keep it alive for three times its TTL.
    let mut answers = 0;
    while granted.elapsed() < Duration::from_secs(3 * MIN_TTL as u64) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        keeper.keep_alive().await.unwrap();
        let r = tokio::time::timeout(WAIT, stream.message()).await.expect("keepalive answer").unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (id, MIN_TTL), "alive after {:?}", granted.elapsed());
        answers += 1;
    }
    assert!(answers >= 10);
    assert_eq!(lease_of(&mut c, "held").await, Some(id), "the key outlived the lease's first TTL");
    let (ttl, granted_ttl, keys) = ttl_of(&mut c, id).await;
    assert!(ttl >= 1 && granted_ttl == MIN_TTL && keys == strs(&["held"]), "{ttl} {granted_ttl} {keys:?}");
    // Without keepalives it expires, deleting the key.
    drop(keeper);
    drop(stream);
    assert_eq!(next_deletes(&mut ws).await, [(EventType::Delete, "held".into(), 3)]);
    assert_eq!(ttl_of(&mut c, id).await, (-1, 0, vec![]));
}

// --------------------------------------------------------------- expiry

#[tokio::test]
async fn an_expired_lease_deletes_all_its_keys_in_one_revision_with_delete_events() {
    let (_s, mut c) = start("lease_expiry").await;
    let mut ws = watch_all(&mut c).await;
    let short = grant(&mut c, MIN_TTL).await;
    let long = grant(&mut c, 600).await;
    for k in ["e/3", "e/1", "e/2"] {
        put_leased(&mut c, k, short).await; // 2, 3, 4
    }
    put_leased(&mut c, "e/long", long).await; // 5
    c.put("e/plain", "v", None).await.unwrap(); // 6
    let deletes = next_deletes(&mut ws).await;
    assert_eq!(
        deletes,
        [
            (EventType::Delete, "e/1".into(), 7),
            (EventType::Delete, "e/2".into(), 7),
            (EventType::Delete, "e/3".into(), 7)
        ],
        "the expiry deletes the lease's keys together, in key order, in one revision"
    );
    let r = c.get("e/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let left: Vec<String> = r.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    assert_eq!(left, ["e/long", "e/plain"]);
    assert_eq!(r.header().unwrap().revision(), 7);
    assert_eq!(ttl_of(&mut c, short).await, (-1, 0, vec![]));
    assert_eq!(lease_ids(&mut c).await, [long]);
    let e = expect_status(c.lease_revoke(short).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
}

// -------------------------------------------------------------- restart

#[tokio::test]
async fn leases_survive_sigkill_and_restart_with_their_keys_and_their_ttl_restarted() {
    let (mut s, mut c) = start("lease_restart").await;
    let a = grant(&mut c, 60).await;
    let b = c.lease_grant(3000, Some(LeaseGrantOptions::new().with_id(77))).await.unwrap().id();
    let gone = grant(&mut c, 60).await;
    let short = grant(&mut c, MIN_TTL).await;
    for (k, id) in [("a/1", a), ("a/2", a), ("b/1", b), ("gone/1", gone), ("short/1", short)] {
        put_leased(&mut c, k, id).await;
    }
    c.lease_revoke(gone).await.unwrap();
    // Let `a` run down a few seconds (`short` expires meanwhile).
    let before = wait_ttl_at_most(&mut c, a, 56).await;
    let deadline = Instant::now() + WAIT;
    while !c.get("short/1", None).await.unwrap().kvs().is_empty() {
        assert!(Instant::now() < deadline, "the short lease did not expire within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rev = revision(&mut c).await;
    drop(c);

    s.restart();
    let mut c = s.client().await;
    let (ttl, granted, keys) = ttl_of(&mut c, a).await;
    assert_eq!((granted, keys), (60, strs(&["a/1", "a/2"])));
    eprintln!("lease TTL {before} before the kill, {ttl} after the restart");
    assert!(
        ttl > before && (59..=61).contains(&ttl),
        "the TTL restarts at the granted TTL: {before} before, {ttl} after"
    );
    assert_eq!(ttl_of(&mut c, b).await.2, strs(&["b/1"]));
    assert_eq!(ttl_of(&mut c, gone).await.0, -1, "a revoked lease stays revoked");
    assert_eq!(ttl_of(&mut c, short).await.0, -1, "an expired lease stays expired");
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(lease_ids(&mut c).await, want);
    assert_eq!(lease_of(&mut c, "a/1").await, Some(a));
    assert_eq!(lease_of(&mut c, "b/1").await, Some(b));
    assert_eq!(revision(&mut c).await, rev, "the restart itself wrote nothing");

    // The recovered leases work: keepalive, revoke, new grants.
    let (_keeper, _stream) = c.lease_keep_alive(b).await.unwrap();
    let e = expect_status(c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(77))).await);
    assert_eq!(e, (FAILED_PRECONDITION, LEASE_EXISTS.to_string()));
    let r = c.lease_revoke(a).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), rev + 1);
    assert!(c.get("a/", Some(GetOptions::new().with_prefix())).await.unwrap().kvs().is_empty());
    let fresh = grant(&mut c, 60).await;
    assert!(fresh != a && fresh != b && fresh != gone && fresh != short);
    // A short lease granted after the restart still expires.
    let mut ws = watch_all(&mut c).await;
    let short2 = grant(&mut c, MIN_TTL).await;
    let r = put_leased(&mut c, "short/2", short2).await;
    assert_eq!(next(&mut ws).await.events().len(), 1);
    assert_eq!(next_deletes(&mut ws).await, [(EventType::Delete, "short/2".into(), r + 1)]);
}
