//! etcd's Election (`v3electionpb.Election`: Campaign, Proclaim, Leader,
//! Observe, Resign) and Lock (`v3lockpb.Lock`: Lock, Unlock) services
//! through the `etcd-client` crate against a real server process. Both are
//! built on leases and create revisions: a candidate's or holder's key is
//! `<name>/<lease in hex>`, the lowest create revision under `<name>/` leads
//! or holds, and waiting callers wake when the keys before theirs are
//! deleted (resign, unlock, revoke or expiry).
//!
//! Every expectation here is etcd 3.4's: `COREKV_IT_REFERENCE=etcd cargo
//! test --test election` runs the same tests against /usr/bin/etcd. A
//! blocked Campaign or Lock is checked as a state (its key exists, it has
//! not returned, the leader is still the first) at the moment its
//! predecessor is still there; every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{code, expect_status, msg, Server};
use etcd_client::{Client, LeaderKey, LeaderResponse, LockOptions, ObserveStream, ProclaimOptions, ResignOptions};
use tokio::task::JoinHandle;

/// Longest wait for a blocked call to return or an observation to arrive.
const WAIT: Duration = Duration::from_secs(20);
/// etcd's election errors (plain Go errors: gRPC code Unknown).
const NO_LEADER: &str = "election: no leader";
const NOT_LEADER: &str = "election: not leader";

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

/// (key, value, lease) of a Leader/Observe answer.
fn leader_kv(r: &LeaderResponse) -> (String, String, i64) {
    let kv = r.kv().expect("a leader answer carries the leader's kv");
    (s(kv.key()), s(kv.value()), kv.lease())
}

/// Waits until `key` exists.
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

async fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, h).await.unwrap_or_else(|_| panic!("{what} did not return within {WAIT:?}")).unwrap()
}

async fn observed(o: &mut ObserveStream) -> (String, String, i64) {
    let r = tokio::time::timeout(WAIT, o.message())
        .await
        .expect("an observation")
        .expect("observe")
        .expect("observe ended");
    leader_kv(&r)
}

fn campaign(c: &Client, name: &'static str, value: &'static str, lease: i64) -> JoinHandle<LeaderKey> {
    let mut c = c.clone();
    tokio::spawn(async move {
        let r = c.campaign(name, value, lease).await.expect("campaign");
        r.leader().expect("leader key").clone()
    })
}

// ------------------------------------------------------------- election

#[tokio::test]
async fn campaign_on_a_free_election_wins_at_once_with_a_key_named_after_the_lease() {
    let (_s, mut c) = start("election_campaign").await;
    c.put("other", "x", None).await.unwrap(); // 2
    let lease = grant(&mut c, 60).await;
    let r = c.campaign("job", "alpha", lease).await.unwrap();
    let l = r.leader().unwrap();
    let key = format!("job/{lease:x}");
    assert_eq!((s(l.name()), s(l.key()), l.rev(), l.lease()), ("job".to_string(), key.clone(), 3, lease));
    assert_eq!(r.header().unwrap().revision(), 3);
    // The leader key is an ordinary key attached to the lease.
    let g = c.get(key.as_str(), None).await.unwrap();
    let kv = &g.kvs()[0];
    assert_eq!((s(kv.value()), kv.lease(), kv.create_revision(), kv.version()), ("alpha".to_string(), lease, 3, 1));
    let r = c.leader("job").await.unwrap();
    assert_eq!(leader_kv(&r), (key.clone(), "alpha".to_string(), lease));
    assert_eq!(r.header().unwrap().revision(), 3);
    // Another election's name is another prefix.
    let e = expect_status(c.leader("jo").await);
    assert_eq!(e, (code::UNKNOWN, NO_LEADER.to_string()));
}

#[tokio::test]
async fn leader_of_an_election_without_candidates_is_the_no_leader_error() {
    let (_s, mut c) = start("election_no_leader").await;
    let e = expect_status(c.leader("nobody").await);
    assert_eq!(e, (code::UNKNOWN, NO_LEADER.to_string()));
    // A key that merely starts with the name is not a candidate.
    c.put("nobody-else/1", "x", None).await.unwrap();
    let e = expect_status(c.leader("nobody").await);
    assert_eq!(e, (code::UNKNOWN, NO_LEADER.to_string()));
}

#[tokio::test]
async fn a_second_candidate_waits_until_the_leader_resigns_then_leads() {
    let (_s, mut c) = start("election_second").await;
    let la = grant(&mut c, 60).await;
    let lb = grant(&mut c, 60).await;
    let a = c.campaign("job", "alpha", la).await.unwrap().leader().unwrap().clone();
    let b = campaign(&c, "job", "beta", lb);
    let b_rev = wait_key(&mut c, &format!("job/{lb:x}")).await;
    assert!(b_rev > a.rev());
    // While the first leads, the second's Campaign has not returned.
    c.proclaim("alpha2", Some(ProclaimOptions::new().with_leader(a.clone()))).await.unwrap();
    assert_eq!(leader_kv(&c.leader("job").await.unwrap()), (s(a.key()), "alpha2".to_string(), la));
    assert!(!b.is_finished(), "the second candidate won while the first still leads");

    let r = c.resign(Some(ResignOptions::new().with_leader(a.clone()))).await.unwrap();
    let resign_rev = r.header().unwrap().revision();
    let b = join(b, "the second campaign").await;
    assert_eq!((s(b.key()), b.rev(), b.lease()), (format!("job/{lb:x}"), b_rev, lb));
    assert_eq!(leader_kv(&c.leader("job").await.unwrap()), (format!("job/{lb:x}"), "beta".to_string(), lb));
    assert!(c.get(a.key(), None).await.unwrap().kvs().is_empty(), "resign deleted the leader key");
    assert_eq!(
        c.get("job/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap().header().unwrap().revision(),
        resign_rev
    );

    // The resigned leader can no longer proclaim; resigning again is a no-op.
    let e = expect_status(c.proclaim("late", Some(ProclaimOptions::new().with_leader(a.clone()))).await);
    assert_eq!(e, (code::UNKNOWN, NOT_LEADER.to_string()));
    let r = c.resign(Some(ResignOptions::new().with_leader(a.clone()))).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), resign_rev, "a stale resign deletes nothing");
    assert_eq!(leader_kv(&c.leader("job").await.unwrap()).1, "beta");
}

#[tokio::test]
async fn proclaim_changes_the_value_and_observe_streams_each_leader_value_in_order() {
    let (_s, mut c) = start("election_observe").await;
    let la = grant(&mut c, 60).await;
    let lb = grant(&mut c, 60).await;
    let a = c.campaign("obs", "v1", la).await.unwrap().leader().unwrap().clone();
    let mut o = c.observe("obs").await.unwrap();
    let ka = format!("obs/{la:x}");
    assert_eq!(observed(&mut o).await, (ka.clone(), "v1".to_string(), la), "first the current leader");
    for v in ["v2", "v3"] {
        let r = c.proclaim(v, Some(ProclaimOptions::new().with_leader(a.clone()))).await.unwrap();
        assert!(r.header().unwrap().revision() > a.rev());
        assert_eq!(observed(&mut o).await, (ka.clone(), v.to_string(), la));
    }
    let g = c.get(ka.as_str(), None).await.unwrap();
    assert_eq!((g.kvs()[0].version(), g.kvs()[0].create_revision()), (3, a.rev()), "proclaim rewrites the same key");
    // A leader key with the wrong revision is not the leader.
    let stale = LeaderKey::new().with_name("obs").with_key(ka.as_str()).with_rev(a.rev() + 1).with_lease(la);
    let e = expect_status(c.proclaim("nope", Some(ProclaimOptions::new().with_leader(stale))).await);
    assert_eq!(e, (code::UNKNOWN, NOT_LEADER.to_string()));
    // Leadership passes: the observer sees the next leader.
    let b = campaign(&c, "obs", "b1", lb);
    wait_key(&mut c, &format!("obs/{lb:x}")).await;
    c.resign(Some(ResignOptions::new().with_leader(a))).await.unwrap();
    let b = join(b, "the second campaign").await;
    assert_eq!(observed(&mut o).await, (format!("obs/{lb:x}"), "b1".to_string(), lb));
    c.proclaim("b2", Some(ProclaimOptions::new().with_leader(b))).await.unwrap();
    assert_eq!(observed(&mut o).await, (format!("obs/{lb:x}"), "b2".to_string(), lb));
}

#[tokio::test]
async fn observe_before_any_candidate_answers_once_the_first_leader_is_elected() {
    let (_s, mut c) = start("election_observe_empty").await;
    // etcd answers an Observe (response headers included) only once there
    // is a leader, so the crate's observe() itself blocks until then.
    let mut oc = c.clone();
    let first = tokio::spawn(async move {
        let mut o = oc.observe("later").await.expect("observe");
        let first = observed(&mut o).await;
        (o, first)
    });
    // Give the Observe a head start (an ordering hint, not a check: the
    // answer is the same either way).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "Observe answered with no candidate");
    let l = grant(&mut c, 60).await;
    let leader = c.campaign("later", "first", l).await.unwrap().leader().unwrap().clone();
    let (mut o, first) = join(first, "the observation of the first leader").await;
    assert_eq!(first, (format!("later/{l:x}"), "first".to_string(), l));
    c.proclaim("second", Some(ProclaimOptions::new().with_leader(leader))).await.unwrap();
    assert_eq!(observed(&mut o).await, (format!("later/{l:x}"), "second".to_string(), l));
}

#[tokio::test]
async fn the_leaders_lease_expiring_hands_leadership_to_the_next_candidate() {
    let (_s, mut c) = start("election_expiry").await;
    let short = grant(&mut c, 2).await;
    let long = grant(&mut c, 60).await;
    let a = c.campaign("exp", "a", short).await.unwrap().leader().unwrap().clone();
    let b = campaign(&c, "exp", "b", long);
    wait_key(&mut c, &format!("exp/{long:x}")).await;
    // Nobody keeps the short lease alive (the service does not either).
    let b = join(b, "the campaign behind an expiring leader").await;
    assert_eq!(b.lease(), long);
    assert!(c.get(a.key(), None).await.unwrap().kvs().is_empty());
    assert_eq!(leader_kv(&c.leader("exp").await.unwrap()).1, "b");
}

#[tokio::test]
async fn campaign_with_an_unknown_lease_fails_with_lease_not_found() {
    let (_s, mut c) = start("election_bad_lease").await;
    let e = expect_status(c.campaign("job", "v", 0x1234_5678).await);
    assert_eq!(e, (code::UNKNOWN, msg::LEASE_NOT_FOUND.to_string()), "the service relays the KV error as code Unknown");
    assert!(c.get("job/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap().kvs().is_empty());
}

// ----------------------------------------------------------------- lock

fn lock(c: &Client, name: &'static str, lease: i64) -> JoinHandle<String> {
    let mut c = c.clone();
    tokio::spawn(async move { s(c.lock(name, Some(LockOptions::new().with_lease(lease))).await.expect("lock").key()) })
}

#[tokio::test]
async fn lock_returns_a_key_named_after_the_lease_and_unlock_deletes_it() {
    let (_s, mut c) = start("lock_basic").await;
    let lease = grant(&mut c, 60).await;
    let r = c.lock("mutex", Some(LockOptions::new().with_lease(lease))).await.unwrap();
    let key = format!("mutex/{lease:x}");
    assert_eq!(s(r.key()), key);
    assert_eq!(r.header().unwrap().revision(), 2);
    let g = c.get(key.as_str(), None).await.unwrap();
    assert_eq!((g.kvs()[0].lease(), g.kvs()[0].create_revision(), s(g.kvs()[0].value())), (lease, 2, String::new()));
    let r = c.unlock(key.as_str()).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 3);
    assert!(c.get(key.as_str(), None).await.unwrap().kvs().is_empty());
    // Unlocking a key that is not held is not an error and writes nothing.
    let r = c.unlock(key.as_str()).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 3);
    // The lease is untouched: the lock can be taken again with it.
    let r = c.lock("mutex", Some(LockOptions::new().with_lease(lease))).await.unwrap();
    assert_eq!(s(r.key()), key);
}

#[tokio::test]
async fn a_second_lock_waits_until_the_holder_unlocks() {
    let (_s, mut c) = start("lock_wait").await;
    let la = grant(&mut c, 60).await;
    let lb = grant(&mut c, 60).await;
    let lc = grant(&mut c, 60).await;
    let a = s(c.lock("m", Some(LockOptions::new().with_lease(la))).await.unwrap().key());
    let b = lock(&c, "m", lb);
    wait_key(&mut c, &format!("m/{lb:x}")).await;
    let cc = lock(&c, "m", lc);
    wait_key(&mut c, &format!("m/{lc:x}")).await;
    assert!(!b.is_finished() && !cc.is_finished(), "a lock was granted while held");
    // A lock on another name is independent.
    let ld = grant(&mut c, 60).await;
    c.lock("m2", Some(LockOptions::new().with_lease(ld))).await.unwrap();

    c.unlock(a.as_str()).await.unwrap();
    let b = join(b, "the second lock").await;
    assert_eq!(b, format!("m/{lb:x}"));
    assert!(!cc.is_finished(), "the third waiter got the lock with the second");
    c.unlock(b.as_str()).await.unwrap();
    assert_eq!(join(cc, "the third lock").await, format!("m/{lc:x}"));
}

#[tokio::test]
async fn a_lock_whose_lease_is_revoked_or_expires_passes_to_the_next_waiter() {
    let (_s, mut c) = start("lock_lease").await;
    let la = grant(&mut c, 60).await;
    let lb = grant(&mut c, 2).await;
    let lc = grant(&mut c, 60).await;
    c.lock("m", Some(LockOptions::new().with_lease(la))).await.unwrap();
    let b = lock(&c, "m", lb);
    wait_key(&mut c, &format!("m/{lb:x}")).await;
    c.lease_revoke(la).await.unwrap();
    assert_eq!(join(b, "the lock behind a revoked holder").await, format!("m/{lb:x}"));
    // Nobody keeps the short lease alive: it expires and the lock moves on.
    let cl = lock(&c, "m", lc);
    assert_eq!(join(cl, "the lock behind an expiring holder").await, format!("m/{lc:x}"));
    assert!(c.get(format!("m/{lb:x}"), None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn lock_with_an_unknown_lease_fails_with_lease_not_found() {
    let (_s, mut c) = start("lock_bad_lease").await;
    let e = expect_status(c.lock("m", Some(LockOptions::new().with_lease(0x4242))).await);
    assert_eq!(e, (code::UNKNOWN, msg::LEASE_NOT_FOUND.to_string()), "the service relays the KV error as code Unknown");
    assert!(c.get("m/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap().kvs().is_empty());
}
