//! The Election and Lock services seen from several clients at once,
//! through the `etcd-client` crate against a real server process: waiting
//! candidates and lock waiters on their own connections, hand-over on
//! resign, unlock and lease revocation, the errors for callers that do not
//! lead or name no leader, requests with lease 0 (the server grants a lease
//! of its own), and calls cancelled while waiting, which must leave no key
//! behind. (`tests/election.rs` covers each call on its own.)
//!
//! Every expectation here is etcd 3.4's: `COREKV_IT_REFERENCE=etcd cargo
//! test --test election_service` runs the same tests against /usr/bin/etcd.
//! A call that must still be waiting is checked as a state (its key exists
//! and it has not returned) while its predecessor is still there; every
//! wait is bounded.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{code, expect_status, msg, Server};
use etcd_client::{
    Client, GetOptions, LeaderKey, LeaseTimeToLiveOptions, LockOptions, ObserveStream, ProclaimOptions, ResignOptions,
};
use tokio::task::JoinHandle;

/// Longest wait for a blocked call to return, a key to come or go, or an
/// observation to arrive.
const WAIT: Duration = Duration::from_secs(20);
/// How long a call is given to (wrongly) return while it must wait.
const STILL_WAITING: Duration = Duration::from_millis(300);
/// etcd's election errors (plain Go errors: gRPC code Unknown).
const NO_LEADER: &str = "election: no leader";
const NOT_LEADER: &str = "election: not leader";
const MISSING_LEADER: &str = r#""leader" field must be provided"#;
/// The TTL of the lease etcd grants a request with lease 0.
const SESSION_TTL: i64 = 60;

async fn start(name: &str) -> (Server, Client) {
    let s = Server::under_test(name, &[]);
    let c = s.client().await;
    (s, c)
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    c.lease_grant(ttl, None).await.expect("lease grant").id()
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until `key` exists; returns its create revision.
async fn wait_key(c: &mut Client, key: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(kv) = c.get(key, None).await.expect("get").kvs().first() {
            return kv.create_revision();
        }
        assert!(Instant::now() < deadline, "{key} never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until nothing is left under `prefix`.
async fn wait_empty(c: &mut Client, prefix: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c.get(prefix, Some(GetOptions::new().with_prefix())).await.expect("get");
        if r.kvs().is_empty() {
            return;
        }
        let keys: Vec<String> = r.kvs().iter().map(|kv| s(kv.key())).collect();
        assert!(Instant::now() < deadline, "{keys:?} left behind under {prefix}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, h).await.unwrap_or_else(|_| panic!("{what} did not return within {WAIT:?}")).unwrap()
}

/// Asserts `h` has not returned after a moment's grace.
async fn still_waiting<T>(h: &JoinHandle<T>, what: &str) {
    tokio::time::sleep(STILL_WAITING).await;
    assert!(!h.is_finished(), "{what} returned while it had to wait");
}

/// (key, value) of the next observation.
async fn observed(o: &mut ObserveStream) -> (String, String) {
    let r = tokio::time::timeout(WAIT, o.message())
        .await
        .expect("an observation")
        .expect("observe")
        .expect("observe ended");
    let kv = r.kv().expect("an observation carries the leader's kv");
    (s(kv.key()), s(kv.value()))
}

/// A Campaign on a connection of its own.
async fn campaign(s: &Server, name: &'static str, value: &'static str, lease: i64) -> JoinHandle<LeaderKey> {
    let mut c = s.client().await;
    tokio::spawn(
        async move { c.campaign(name, value, lease).await.expect("campaign").leader().expect("leader").clone() },
    )
}

/// A Lock on a connection of its own.
async fn lock(s: &Server, name: &'static str, lease: i64) -> JoinHandle<String> {
    let mut c = s.client().await;
    tokio::spawn(async move {
        let r = c.lock(name, Some(LockOptions::new().with_lease(lease))).await.expect("lock");
        String::from_utf8_lossy(r.key()).into_owned()
    })
}

fn with_leader(l: &LeaderKey) -> Option<ProclaimOptions> {
    Some(ProclaimOptions::new().with_leader(l.clone()))
}

// ------------------------------------------------------------- election

#[tokio::test]
async fn a_candidate_on_another_connection_leads_once_the_leaders_lease_is_revoked() {
    let (srv, mut c) = start("elsvc_revoke").await;
    let la = grant(&mut c, 60).await;
    let lb = grant(&mut c, 60).await;
    let a = c.campaign("svc", "a", la).await.unwrap().leader().unwrap().clone();
    let b = campaign(&srv, "svc", "b", lb).await;
    let b_rev = wait_key(&mut c, &format!("svc/{lb:x}")).await;
    still_waiting(&b, "the second campaign").await;
    assert_eq!(s(c.leader("svc").await.unwrap().kv().unwrap().value()), "a");

    c.lease_revoke(la).await.unwrap();
    let b = join(b, "the campaign behind a revoked leader").await;
    assert_eq!((s(b.name()), s(b.key()), b.rev(), b.lease()), ("svc".into(), format!("svc/{lb:x}"), b_rev, lb));
    assert!(c.get(a.key(), None).await.unwrap().kvs().is_empty(), "the revoke deleted the old leader's key");
    let l = c.leader("svc").await.unwrap();
    assert_eq!((s(l.kv().unwrap().key()), s(l.kv().unwrap().value())), (format!("svc/{lb:x}"), "b".into()));
}

#[tokio::test]
async fn proclaim_and_resign_refuse_a_caller_that_does_not_lead_or_names_no_leader() {
    let (_srv, mut c) = start("elsvc_not_leader").await;
    let la = grant(&mut c, 60).await;
    let a = c.campaign("nl", "a", la).await.unwrap().leader().unwrap().clone();
    // The right key with another create revision is another candidacy.
    let stale = LeaderKey::new().with_name("nl").with_key(a.key()).with_rev(a.rev() - 1).with_lease(la);
    assert_eq!(expect_status(c.proclaim("x", with_leader(&stale)).await), (code::UNKNOWN, NOT_LEADER.into()));
    // A request without a leader key.
    assert_eq!(expect_status(c.proclaim("x", None).await), (code::UNKNOWN, MISSING_LEADER.into()));
    assert_eq!(expect_status(c.resign(None).await), (code::UNKNOWN, MISSING_LEADER.into()));
    assert_eq!(s(c.leader("nl").await.unwrap().kv().unwrap().value()), "a", "nothing was written");
    // Once resigned, the old leader key proclaims nothing.
    c.resign(Some(ResignOptions::new().with_leader(a.clone()))).await.unwrap();
    assert_eq!(expect_status(c.proclaim("x", with_leader(&a)).await), (code::UNKNOWN, NOT_LEADER.into()));
    assert!(c.get(a.key(), None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn leader_is_refused_before_any_campaign_and_after_the_last_candidate_resigns() {
    let (_srv, mut c) = start("elsvc_no_leader").await;
    assert_eq!(expect_status(c.leader("empty").await), (code::UNKNOWN, NO_LEADER.into()));
    let l = grant(&mut c, 60).await;
    let a = c.campaign("empty", "a", l).await.unwrap().leader().unwrap().clone();
    assert_eq!(s(c.leader("empty").await.unwrap().kv().unwrap().key()), format!("empty/{l:x}"));
    let r = c.resign(Some(ResignOptions::new().with_leader(a))).await.unwrap();
    assert_eq!(expect_status(c.leader("empty").await), (code::UNKNOWN, NO_LEADER.into()));
    // The leader's lease is untouched by the resign.
    let ttl = c.lease_time_to_live(l, None).await.unwrap();
    assert!(ttl.ttl() > 0, "resign revoked the lease");
    assert!(r.header().unwrap().revision() > 0);
}

#[tokio::test]
async fn observe_sees_each_leader_in_turn_as_they_resign_or_lose_their_lease() {
    let (srv, mut c) = start("elsvc_observe").await;
    let (la, lb, lc) = (grant(&mut c, 60).await, grant(&mut c, 60).await, grant(&mut c, 60).await);
    let a = c.campaign("turn", "a", la).await.unwrap().leader().unwrap().clone();
    let b = campaign(&srv, "turn", "b", lb).await;
    wait_key(&mut c, &format!("turn/{lb:x}")).await;
    let cc = campaign(&srv, "turn", "c", lc).await;
    wait_key(&mut c, &format!("turn/{lc:x}")).await;
    let mut oc = srv.client().await;
    let mut o = oc.observe("turn").await.unwrap();
    assert_eq!(observed(&mut o).await, (format!("turn/{la:x}"), "a".into()));

    c.resign(Some(ResignOptions::new().with_leader(a))).await.unwrap();
    join(b, "the second campaign").await;
    assert_eq!(observed(&mut o).await, (format!("turn/{lb:x}"), "b".into()));
    assert!(!cc.is_finished(), "the third candidate won with the second");

    c.lease_revoke(lb).await.unwrap();
    let c_key = join(cc, "the third campaign").await;
    assert_eq!(observed(&mut o).await, (format!("turn/{lc:x}"), "c".into()));
    c.proclaim("c2", with_leader(&c_key)).await.unwrap();
    assert_eq!(observed(&mut o).await, (format!("turn/{lc:x}"), "c2".into()));
}

#[tokio::test]
async fn campaigning_again_with_the_same_lease_keeps_the_candidacy_and_proclaims_the_new_value() {
    let (_srv, mut c) = start("elsvc_again").await;
    let l = grant(&mut c, 60).await;
    let first = c.campaign("again", "v1", l).await.unwrap().leader().unwrap().clone();
    let r = c.campaign("again", "v2", l).await.unwrap();
    let second = r.leader().unwrap();
    assert_eq!((s(second.key()), second.rev(), second.lease()), (s(first.key()), first.rev(), l));
    // The header is the one of the lookup, before the value changed.
    assert_eq!(r.header().unwrap().revision(), first.rev());
    let g = c.get(first.key(), None).await.unwrap();
    let kv = &g.kvs()[0];
    assert_eq!((s(kv.value()), kv.version(), kv.create_revision(), kv.lease()), ("v2".into(), 2, first.rev(), l));
}

#[tokio::test]
async fn campaign_and_lock_with_lease_zero_run_under_a_lease_the_server_grants() {
    let (_srv, mut c) = start("elsvc_lease_zero").await;
    let r = c.campaign("z", "v", 0).await.unwrap();
    let l = r.leader().unwrap();
    assert_ne!(l.lease(), 0);
    assert_eq!(s(l.key()), format!("z/{:x}", l.lease()));
    let ttl = c.lease_time_to_live(l.lease(), Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!((ttl.granted_ttl(), ttl.keys().len()), (SESSION_TTL, 1));

    let key = s(c.lock("zl", None).await.unwrap().key());
    let kv = c.get(key.as_str(), None).await.unwrap().kvs()[0].clone();
    assert_ne!(kv.lease(), 0);
    assert_eq!(key, format!("zl/{:x}", kv.lease()));
    assert_eq!(c.lease_time_to_live(kv.lease(), None).await.unwrap().granted_ttl(), SESSION_TTL);
}

#[tokio::test]
async fn a_campaign_cancelled_while_waiting_leaves_no_candidate_behind() {
    let (srv, mut c) = start("elsvc_cancel").await;
    let (la, lb) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    let a = c.campaign("cx", "a", la).await.unwrap().leader().unwrap().clone();
    let mut cb = srv.client().await;
    let key_b = format!("cx/{lb:x}");
    let waiting = tokio::spawn(async move { cb.campaign("cx", "b", lb).await.map(|_| ()) });
    wait_key(&mut c, &key_b).await;
    still_waiting(&waiting, "the second campaign").await;
    waiting.abort(); // drops the call: the client cancels the stream
    let deadline = Instant::now() + WAIT;
    while !c.get(key_b.as_str(), None).await.unwrap().kvs().is_empty() {
        assert!(Instant::now() < deadline, "the cancelled campaign's key stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.resign(Some(ResignOptions::new().with_leader(a))).await.unwrap();
    assert_eq!(expect_status(c.leader("cx").await), (code::UNKNOWN, NO_LEADER.into()));
    // The cancelled candidate's lease is still there for another try.
    assert!(c.lease_time_to_live(lb, None).await.unwrap().ttl() > 0);
}

// ----------------------------------------------------------------- lock

#[tokio::test]
async fn a_lock_on_another_connection_waits_until_the_holder_unlocks() {
    let (srv, mut c) = start("elsvc_lock_wait").await;
    let (la, lb) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    let a = s(c.lock("mx", Some(LockOptions::new().with_lease(la))).await.unwrap().key());
    let b = lock(&srv, "mx", lb).await;
    wait_key(&mut c, &format!("mx/{lb:x}")).await;
    still_waiting(&b, "the second lock").await;
    let u = c.unlock(a.as_str()).await.unwrap();
    assert_eq!(join(b, "the second lock").await, format!("mx/{lb:x}"));
    assert!(c.get(a.as_str(), None).await.unwrap().kvs().is_empty());
    assert!(u.header().unwrap().revision() > 0);
}

#[tokio::test]
async fn lock_serialises_a_read_modify_write_across_clients() {
    const CLIENTS: usize = 3;
    const ROUNDS: usize = 4;
    let (srv, mut c) = start("elsvc_lock_mutex").await;
    c.put("counter", "0", None).await.unwrap();
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut cl = srv.client().await;
        let lease = grant(&mut cl, 60).await;
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let key =
                    cl.lock("ctr", Some(LockOptions::new().with_lease(lease))).await.expect("lock").key().to_vec();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two clients held the lock at once");
                let n: u64 = s(cl.get("counter", None).await.expect("get").kvs()[0].value()).parse().expect("number");
                tokio::time::sleep(Duration::from_millis(10)).await;
                cl.put("counter", (n + 1).to_string(), None).await.expect("put");
                inside.fetch_sub(1, Ordering::SeqCst);
                cl.unlock(key).await.expect("unlock");
            }
        }));
    }
    for t in tasks {
        join(t, "a client's rounds").await;
    }
    let total = s(c.get("counter", None).await.unwrap().kvs()[0].value());
    assert_eq!(total, (CLIENTS * ROUNDS).to_string(), "an increment was lost");
    wait_empty(&mut c, "ctr/").await;
}

#[tokio::test]
async fn locking_again_with_the_same_lease_returns_at_once_with_the_same_key() {
    let (_srv, mut c) = start("elsvc_lock_again").await;
    let l = grant(&mut c, 60).await;
    let first = c.lock("re", Some(LockOptions::new().with_lease(l))).await.unwrap();
    let second = tokio::time::timeout(WAIT, c.lock("re", Some(LockOptions::new().with_lease(l))))
        .await
        .expect("a second Lock with the holder's lease returns at once")
        .unwrap();
    assert_eq!(s(second.key()), s(first.key()));
    let g = c.get(first.key(), None).await.unwrap();
    assert_eq!(g.kvs()[0].version(), 1, "the key was not written again");
}

#[tokio::test]
async fn unlock_deletes_the_key_and_refuses_an_empty_one() {
    let (_srv, mut c) = start("elsvc_unlock").await;
    let l = grant(&mut c, 60).await;
    let key = s(c.lock("ul", Some(LockOptions::new().with_lease(l))).await.unwrap().key());
    let r = c.unlock(key.as_str()).await.unwrap();
    let g = c.get(key.as_str(), None).await.unwrap();
    assert!(g.kvs().is_empty());
    assert_eq!(r.header().unwrap().revision(), g.header().unwrap().revision());
    assert_eq!(expect_status(c.unlock("").await), (code::UNKNOWN, msg::KEY_NOT_PROVIDED.into()));
    // Unlock deletes any key, held or not: it is a plain delete.
    c.put("plain", "x", None).await.unwrap();
    c.unlock("plain").await.unwrap();
    assert!(c.get("plain", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn a_lock_cancelled_while_waiting_leaves_no_waiter_behind() {
    let (srv, mut c) = start("elsvc_lock_cancel").await;
    let (la, lb) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    let a = s(c.lock("lc", Some(LockOptions::new().with_lease(la))).await.unwrap().key());
    let mut cb = srv.client().await;
    let key_b = format!("lc/{lb:x}");
    let waiting = tokio::spawn(async move { cb.lock("lc", Some(LockOptions::new().with_lease(lb))).await.map(|_| ()) });
    wait_key(&mut c, &key_b).await;
    still_waiting(&waiting, "the second lock").await;
    waiting.abort();
    let deadline = Instant::now() + WAIT;
    while !c.get(key_b.as_str(), None).await.unwrap().kvs().is_empty() {
        assert!(Instant::now() < deadline, "the cancelled lock's key stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.unlock(a.as_str()).await.unwrap();
    wait_empty(&mut c, "lc/").await;
    // The lock is free: a new Lock gets it at once.
    let lc = grant(&mut c, 60).await;
    let r = tokio::time::timeout(WAIT, c.lock("lc", Some(LockOptions::new().with_lease(lc)))).await;
    assert_eq!(s(r.expect("a free lock is granted at once").unwrap().key()), format!("lc/{lc:x}"));
}
