//! etcd's KV service through the `etcd-client` crate against a real
//! `corekv` process: every option of Put, Range, DeleteRange, Txn and
//! Compact, and the revision bookkeeping etcd clients rely on (which
//! requests take a revision, mod/create revisions and versions).
//!
//! Every expectation here is etcd's: `COREKV_IT_REFERENCE=etcd cargo test
//! --test kv` runs the same tests against /usr/bin/etcd.

mod common;

use common::{code, expect_status, msg, revision, Server};
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};

macro_rules! rev {
    ($r:expr) => {
        $r.header().expect("response header").revision()
    };
}

/// (key, value, create_revision, mod_revision, version) of a pair.
fn kv(kv: &KeyValue) -> (String, String, i64, i64, i64) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
    )
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|k| String::from_utf8_lossy(k.key()).into_owned()).collect()
}

fn t(k: &str, v: &str, c: i64, m: i64, ver: i64) -> (String, String, i64, i64, i64) {
    (k.to_string(), v.to_string(), c, m, ver)
}

async fn start(name: &str) -> (Server, Client) {
    let s = Server::under_test(name, &[]);
    let c = s.client().await;
    (s, c)
}

async fn put_all(c: &mut Client, keys: &[&str]) {
    for k in keys {
        c.put(*k, format!("v-{k}"), None).await.expect("put");
    }
}

async fn get_keys(c: &mut Client, key: &str, opts: GetOptions) -> Vec<String> {
    keys(c.get(key, Some(opts)).await.expect("get").kvs())
}

// ------------------------------------------------------------------- put

#[tokio::test]
async fn first_put_on_a_fresh_server_takes_revision_2_and_each_put_one_more() {
    let (_s, mut c) = start("first_put").await;
    let r = c.get("k", None).await.unwrap();
    assert_eq!((rev!(r), r.count(), r.kvs().len()), (1, 0, 0), "a fresh store is at revision 1");
    assert_eq!(rev!(c.put("k", "v1", None).await.unwrap()), 2);
    assert_eq!(rev!(c.put("k", "v2", None).await.unwrap()), 3);
    assert_eq!(rev!(c.put("other", "x", None).await.unwrap()), 4);
    let r = c.get("k", None).await.unwrap();
    assert_eq!(rev!(r), 4);
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("k", "v2", 2, 3, 2)]);
    assert_eq!(r.kvs()[0].lease(), 0);
}

#[tokio::test]
async fn put_with_prev_kv_returns_the_pair_it_replaced() {
    let (_s, mut c) = start("put_prev_kv").await;
    let p = c.put("k", "v1", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert!(p.prev_key().is_none(), "a new key has no previous pair");
    c.put("k", "v2", None).await.unwrap();
    let p = c.put("k", "v3", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(rev!(p), 4);
    assert_eq!(kv(p.prev_key().expect("prev_kv")), t("k", "v2", 2, 3, 2));
    let p = c.put("k", "v4", None).await.unwrap();
    assert!(p.prev_key().is_none(), "no prev_kv unless asked");
}

#[tokio::test]
async fn put_with_ignore_value_keeps_the_value_and_takes_a_revision() {
    let (_s, mut c) = start("put_ignore_value").await;
    c.put("k", "v1", None).await.unwrap();
    let p = c.put("k", "", Some(PutOptions::new().with_ignore_value().with_prev_key())).await.unwrap();
    assert_eq!(rev!(p), 3);
    assert_eq!(kv(p.prev_key().expect("prev_kv")), t("k", "v1", 2, 2, 1));
    let r = c.get("k", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("k", "v1", 2, 3, 2));

    let e = expect_status(c.put("missing", "", Some(PutOptions::new().with_ignore_value())).await);
    assert_eq!(e, (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND.to_string()));
    let e = expect_status(c.put("k", "v9", Some(PutOptions::new().with_ignore_value())).await);
    assert_eq!(e, (code::INVALID_ARGUMENT, msg::VALUE_PROVIDED.to_string()));
    assert_eq!(revision(&mut c).await, 3, "refused puts take no revision");
    assert!(c.get("missing", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn put_with_ignore_lease_replaces_the_value_and_keeps_the_lease() {
    let (_s, mut c) = start("put_ignore_lease").await;
    c.put("k", "v1", None).await.unwrap();
    let p = c.put("k", "v2", Some(PutOptions::new().with_ignore_lease())).await.unwrap();
    assert_eq!(rev!(p), 3);
    let r = c.get("k", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("k", "v2", 2, 3, 2));
    assert_eq!(r.kvs()[0].lease(), 0);

    let e = expect_status(c.put("missing", "v", Some(PutOptions::new().with_ignore_lease())).await);
    assert_eq!(e, (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND.to_string()));
    let e = expect_status(c.put("k", "v", Some(PutOptions::new().with_ignore_lease().with_lease(7))).await);
    assert_eq!(e, (code::INVALID_ARGUMENT, msg::LEASE_PROVIDED.to_string()));
    assert_eq!(revision(&mut c).await, 3, "refused puts take no revision");
}

#[tokio::test]
async fn put_with_an_unknown_lease_is_refused_and_takes_no_revision() {
    let (_s, mut c) = start("put_unknown_lease").await;
    c.put("k", "v1", None).await.unwrap();
    let e = expect_status(c.put("k", "v2", Some(PutOptions::new().with_lease(12345))).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
    let e = expect_status(c.put("new", "v", Some(PutOptions::new().with_lease(0x7fff_ffff_ffff))).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
    // The lease is checked before ignore_value looks for the key.
    let e = expect_status(c.put("new", "", Some(PutOptions::new().with_lease(99).with_ignore_value())).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()), "unknown lease and missing key");
    assert_eq!(revision(&mut c).await, 2);
    let r = c.get("k", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("k", "v1", 2, 2, 1), "the refused put changed nothing");
    assert!(c.get("new", None).await.unwrap().kvs().is_empty());
    assert_eq!(rev!(c.put("k", "v3", None).await.unwrap()), 3);
}

// ------------------------------------------------------------------- get

#[tokio::test]
async fn get_single_key_prefix_from_key_and_range_select_exactly_their_keys() {
    let (_s, mut c) = start("get_ranges").await;
    put_all(&mut c, &["a", "ab", "abc", "ac", "b", "c"]).await;
    assert_eq!(get_keys(&mut c, "ab", GetOptions::new()).await, ["ab"]);
    assert_eq!(get_keys(&mut c, "aa", GetOptions::new()).await, Vec::<String>::new());
    assert_eq!(get_keys(&mut c, "ab", GetOptions::new().with_prefix()).await, ["ab", "abc"]);
    assert_eq!(get_keys(&mut c, "ab", GetOptions::new().with_from_key()).await, ["ab", "abc", "ac", "b", "c"]);
    assert_eq!(get_keys(&mut c, "ab", GetOptions::new().with_range("b")).await, ["ab", "abc", "ac"]);
    assert_eq!(get_keys(&mut c, "ab", GetOptions::new().with_range("ab")).await, Vec::<String>::new());
    assert_eq!(get_keys(&mut c, "b", GetOptions::new().with_range("a")).await, Vec::<String>::new());
    assert_eq!(get_keys(&mut c, "", GetOptions::new().with_all_keys()).await, ["a", "ab", "abc", "ac", "b", "c"]);
    let r = c.get("a", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!((r.count(), r.more()), (4, false));
    assert_eq!(kv(&r.kvs()[1]), t("ab", "v-ab", 3, 3, 1));
    assert_eq!(rev!(r), 7);
}

#[tokio::test]
async fn limit_truncates_the_kvs_sets_more_and_count_stays_the_total() {
    let (_s, mut c) = start("get_limit").await;
    put_all(&mut c, &["l1", "l2", "l3", "l4", "l5"]).await;
    let cases: &[(i64, &[&str], bool)] = &[
        (1, &["l1"], true),
        (2, &["l1", "l2"], true),
        (4, &["l1", "l2", "l3", "l4"], true),
        (5, &["l1", "l2", "l3", "l4", "l5"], false),
        (6, &["l1", "l2", "l3", "l4", "l5"], false),
        (0, &["l1", "l2", "l3", "l4", "l5"], false),
    ];
    for &(limit, want, more) in cases {
        let r = c.get("l", Some(GetOptions::new().with_prefix().with_limit(limit))).await.unwrap();
        assert_eq!(keys(r.kvs()), want, "limit {limit}");
        assert_eq!((r.more(), r.count()), (more, 5), "limit {limit}");
    }
    let r = c.get("l4", Some(GetOptions::new().with_from_key().with_limit(1))).await.unwrap();
    assert_eq!((keys(r.kvs()), r.more(), r.count()), (vec!["l4".to_string()], true, 2));
}

#[tokio::test]
async fn get_at_a_past_revision_sees_that_revision_and_the_header_shows_the_current_one() {
    let (_s, mut c) = start("get_revision").await;
    c.put("a", "1", None).await.unwrap(); // 2
    c.put("a", "2", None).await.unwrap(); // 3
    c.put("b", "x", None).await.unwrap(); // 4
    c.delete("a", None).await.unwrap(); // 5
    c.put("a", "3", None).await.unwrap(); // 6
    let at = |r: i64| GetOptions::new().with_revision(r);
    let r = c.get("a", Some(at(2))).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("a", "1", 2, 2, 1)]);
    assert_eq!(rev!(r), 6, "the header carries the store's revision, not the one read");
    let r = c.get("a", Some(at(3))).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("a", "2", 2, 3, 2)]);
    let r = c.get("a", Some(at(5))).await.unwrap();
    assert_eq!((r.kvs().len(), r.count()), (0, 0), "deleted at 5");
    let r = c.get("a", Some(at(6))).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("a", "3", 6, 6, 1)], "a new life starts at version 1");
    let r = c.get("", Some(GetOptions::new().with_all_keys().with_revision(4))).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("a", "2", 2, 3, 2), t("b", "x", 4, 4, 1)]);
    let e = expect_status(c.get("a", Some(at(7))).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::FUTURE_REV.to_string()));
    // The revision is checked even when the range holds no key at all.
    let e = expect_status(c.get("b", Some(at(7).with_range("a"))).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::FUTURE_REV.to_string()), "empty interval at a future revision");
}

/// Builds keys a..d whose orders by key, create revision, mod revision,
/// version and value are five different permutations.
async fn sortable_keys(c: &mut Client) {
    for (k, v) in [("d", "v2"), ("b", "v4"), ("a", "v3"), ("c", "v1")] {
        c.put(k, v, None).await.unwrap();
    }
    for (k, v) in [("b", "v4"), ("d", "v2"), ("d", "v2"), ("d", "v2"), ("c", "v1"), ("b", "v4")] {
        c.put(k, v, None).await.unwrap();
    }
}

#[tokio::test]
async fn sort_orders_by_every_target_in_every_direction() {
    let (_s, mut c) = start("get_sort").await;
    sortable_keys(&mut c).await;
    let all = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    let base: Vec<_> = all.kvs().iter().map(kv).collect();
    assert_eq!(
        base,
        [t("a", "v3", 4, 4, 1), t("b", "v4", 3, 11, 3), t("c", "v1", 5, 10, 2), t("d", "v2", 2, 9, 4)],
        "the fixture"
    );
    type Key = fn(&(String, String, i64, i64, i64)) -> String;
    let targets: [(SortTarget, Key); 5] = [
        (SortTarget::Key, |k| k.0.clone()),
        (SortTarget::Version, |k| format!("{:08}", k.4)),
        (SortTarget::Create, |k| format!("{:08}", k.2)),
        (SortTarget::Mod, |k| format!("{:08}", k.3)),
        (SortTarget::Value, |k| k.1.clone()),
    ];
    let mut orders_seen = Vec::new();
    for (target, key) in targets {
        let mut ascending: Vec<String> = {
            let mut v = base.clone();
            v.sort_by_key(key);
            v.into_iter().map(|k| k.0).collect()
        };
        orders_seen.push(ascending.clone());
        for order in [SortOrder::None, SortOrder::Ascend, SortOrder::Descend] {
            let want = if order == SortOrder::Descend {
                ascending.iter().rev().cloned().collect()
            } else {
                // No order sorts ascending by the target, as etcd does
                // for every target (by key that is the natural order).
                ascending.clone()
            };
            let got = get_keys(&mut c, "", GetOptions::new().with_all_keys().with_sort(target, order)).await;
            assert_eq!(got, want, "sort by {target:?} {order:?}");
            let r = c
                .get("", Some(GetOptions::new().with_all_keys().with_sort(target, order).with_limit(2)))
                .await
                .unwrap();
            let want_limited: Vec<String> = if order == SortOrder::None && target != SortTarget::Key {
                // etcd quirk: with no sort order the limit is applied to the
                // range first (limit + 1 keys in key order, to learn
                // `more`), then those are sorted ascending by the target
                // and truncated.
                let mut first: Vec<_> = base[..3].to_vec();
                first.sort_by_key(key);
                first.into_iter().take(2).map(|k| k.0).collect()
            } else {
                want[..2].to_vec()
            };
            assert_eq!(keys(r.kvs()), want_limited, "sort by {target:?} {order:?} limit 2");
            assert_eq!((r.more(), r.count()), (true, 4));
        }
        ascending.dedup();
        assert_eq!(ascending.len(), 4);
    }
    orders_seen.sort();
    orders_seen.dedup();
    assert_eq!(orders_seen.len(), 5, "the fixture gives every target its own order");
}

#[tokio::test]
async fn keys_only_sorted_by_value_sorts_by_the_values_it_does_not_return() {
    let (_s, mut c) = start("get_keys_only_sort_value").await;
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2")] {
        c.put(k, v, None).await.unwrap();
    }
    for (order, want) in [(SortOrder::Ascend, ["b", "c", "a"]), (SortOrder::Descend, ["a", "c", "b"])] {
        let opts = GetOptions::new().with_all_keys().with_keys_only().with_sort(SortTarget::Value, order);
        let r = c.get("", Some(opts)).await.unwrap();
        assert_eq!(keys(r.kvs()), want, "keys_only, sorted by value {order:?}");
        assert!(r.kvs().iter().all(|k| k.value().is_empty()));
    }
}

#[tokio::test]
async fn keys_only_drops_values_and_count_only_drops_kvs() {
    let (_s, mut c) = start("get_keys_count_only").await;
    put_all(&mut c, &["k1", "k2", "k3"]).await;
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    assert_eq!(
        r.kvs().iter().map(kv).collect::<Vec<_>>(),
        [t("k1", "", 2, 2, 1), t("k2", "", 3, 3, 1), t("k3", "", 4, 4, 1)]
    );
    assert_eq!(r.count(), 3);
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((r.kvs().len(), r.count(), r.more()), (0, 3, false));
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_count_only().with_limit(1))).await.unwrap();
    assert_eq!((r.kvs().len(), r.count()), (0, 3), "count_only with limit still counts everything");
    let r = c.get("k", Some(GetOptions::new().with_prefix().with_keys_only().with_limit(2))).await.unwrap();
    assert_eq!((keys(r.kvs()), r.more(), r.count()), (vec!["k1".to_string(), "k2".to_string()], true, 3));
    assert!(r.kvs().iter().all(|k| k.value().is_empty()));
}

#[tokio::test]
async fn revision_filters_drop_kvs_outside_their_bounds_but_count_stays_unfiltered() {
    let (_s, mut c) = start("get_filters").await;
    put_all(&mut c, &["f1", "f2", "f3"]).await; // create 2, 3, 4
    c.put("f1", "again", None).await.unwrap(); // f1 mod 5
    let p = || GetOptions::new().with_prefix();
    let cases: Vec<(GetOptions, &[&str])> = vec![
        (p().with_min_mod_revision(4), &["f1", "f3"]),
        (p().with_max_mod_revision(4), &["f2", "f3"]),
        (p().with_min_create_revision(3), &["f2", "f3"]),
        (p().with_max_create_revision(3), &["f1", "f2"]),
        (p().with_min_mod_revision(4).with_max_create_revision(3), &["f1"]),
        (p().with_min_mod_revision(3).with_max_mod_revision(4), &["f2", "f3"]),
        (p().with_min_mod_revision(6), &[]),
    ];
    for (i, (opts, want)) in cases.into_iter().enumerate() {
        let r = c.get("f", Some(opts)).await.unwrap();
        assert_eq!(keys(r.kvs()), want, "case {i}");
        // etcd counts the range before filtering.
        assert_eq!(r.count(), 3, "case {i}");
    }
    let r = c.get("f", Some(p().with_min_mod_revision(4).with_limit(1))).await.unwrap();
    assert_eq!((keys(r.kvs()), r.more()), (vec!["f1".to_string()], true), "limit applies after filtering");
    let r = c.get("f", Some(p().with_min_mod_revision(5).with_limit(1))).await.unwrap();
    assert_eq!((keys(r.kvs()), r.more()), (vec!["f1".to_string()], false));
}

#[tokio::test]
async fn serializable_get_sees_every_acknowledged_write() {
    let (_s, mut c) = start("get_serializable").await;
    for i in 0..20 {
        let p = c.put("s", format!("{i}"), None).await.unwrap();
        let r = c.get("s", Some(GetOptions::new().with_serializable())).await.unwrap();
        assert_eq!(kv(&r.kvs()[0]), t("s", &format!("{i}"), 2, rev!(p), i + 1));
        assert_eq!(rev!(r), rev!(p));
    }
}

// ---------------------------------------------------------------- delete

#[tokio::test]
async fn delete_of_one_key_takes_a_revision_and_reports_one_deleted() {
    let (_s, mut c) = start("delete_single").await;
    put_all(&mut c, &["a", "ab"]).await;
    let d = c.delete("a", None).await.unwrap();
    assert_eq!((rev!(d), d.deleted(), d.prev_kvs().len()), (4, 1, 0));
    assert_eq!(get_keys(&mut c, "", GetOptions::new().with_all_keys()).await, ["ab"]);
    let r = c.get("a", Some(GetOptions::new().with_revision(3))).await.unwrap();
    assert_eq!(keys(r.kvs()), ["a"], "history keeps the deleted key");
}

#[tokio::test]
async fn delete_of_a_range_a_prefix_and_from_a_key_removes_exactly_their_keys_in_one_revision_each() {
    let (_s, mut c) = start("delete_ranges").await;
    put_all(&mut c, &["a", "ab", "abc", "ac", "b", "c", "d"]).await; // revisions 2..=8
    let d = c.delete("ab", Some(DeleteOptions::new().with_range("ac"))).await.unwrap();
    assert_eq!((rev!(d), d.deleted()), (9, 2));
    let d = c.delete("a", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    assert_eq!((rev!(d), d.deleted()), (10, 2));
    let d = c.delete("c", Some(DeleteOptions::new().with_from_key())).await.unwrap();
    assert_eq!((rev!(d), d.deleted()), (11, 2));
    assert_eq!(get_keys(&mut c, "", GetOptions::new().with_all_keys()).await, ["b"]);
    let d = c.delete("", Some(DeleteOptions::new().with_all_keys())).await.unwrap();
    assert_eq!((rev!(d), d.deleted()), (12, 1));
    assert_eq!(c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap().count(), 0);
}

#[tokio::test]
async fn delete_with_prev_kv_returns_the_deleted_pairs_in_key_order() {
    let (_s, mut c) = start("delete_prev_kv").await;
    put_all(&mut c, &["p2", "p1", "p3"]).await;
    c.put("p1", "new", None).await.unwrap(); // 5
    let d = c.delete("p", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!(d.deleted(), 3);
    assert_eq!(
        d.prev_kvs().iter().map(kv).collect::<Vec<_>>(),
        [t("p1", "new", 3, 5, 2), t("p2", "v-p2", 2, 2, 1), t("p3", "v-p3", 4, 4, 1)]
    );
}

#[tokio::test]
async fn delete_that_deletes_nothing_takes_no_revision() {
    let (_s, mut c) = start("delete_nothing").await;
    put_all(&mut c, &["x"]).await;
    let d = c.delete("missing", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!((rev!(d), d.deleted(), d.prev_kvs().len()), (2, 0, 0));
    let d = c.delete("y", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    assert_eq!((rev!(d), d.deleted()), (2, 0));
    c.delete("x", None).await.unwrap(); // 3
    let d = c.delete("x", None).await.unwrap();
    assert_eq!((rev!(d), d.deleted()), (3, 0), "deleting a deleted key changes nothing");
    assert_eq!(rev!(c.put("x", "again", None).await.unwrap()), 4);
}

// ------------------------------------------------------------------- txn

fn cmp_ok(actual: std::cmp::Ordering, op: CompareOp) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Equal => actual == Equal,
        CompareOp::Greater => actual == Greater,
        CompareOp::Less => actual == Less,
        CompareOp::NotEqual => actual != Equal,
    }
}

const OPS: [CompareOp; 4] = [CompareOp::Equal, CompareOp::Greater, CompareOp::Less, CompareOp::NotEqual];

#[tokio::test]
async fn txn_compares_every_target_with_every_result() {
    let (_s, mut c) = start("txn_compares").await;
    c.put("t", "m", None).await.unwrap(); // create 2
    c.put("t", "m", None).await.unwrap(); // mod 3, version 2
                                          // (name, compare for a constant below / equal to / above the actual value)
    type Make = Box<dyn Fn(CompareOp, i64) -> Compare>;
    let targets: Vec<(&str, Make)> = vec![
        ("version", Box::new(|op, d| Compare::version("t", op, 2 + d))),
        ("create", Box::new(|op, d| Compare::create_revision("t", op, 2 + d))),
        ("mod", Box::new(|op, d| Compare::mod_revision("t", op, 3 + d))),
        ("value", Box::new(|op, d| Compare::value("t", op, [(i64::from(b'm') + d) as u8]))),
        ("lease", Box::new(|op, d| Compare::lease("t", op, d))),
    ];
    let mut checked = 0;
    for (name, make) in &targets {
        for delta in [-1i64, 0, 1] {
            // The key's value compared with a constant `delta` away.
            let actual = 0.cmp(&delta);
            for op in OPS {
                let cmp = make(op, delta);
                let r = c.txn(Txn::new().when([cmp])).await.unwrap();
                assert_eq!(r.succeeded(), cmp_ok(actual, op), "{name} {op:?} constant {delta:+}");
                assert_eq!(rev!(r), 3, "an empty txn takes no revision");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 60);
}

#[tokio::test]
async fn txn_compare_on_a_missing_key_sees_zero_revisions_and_never_matches_a_value() {
    let (_s, mut c) = start("txn_missing_key").await;
    c.put("present", "x", None).await.unwrap();
    let cases = [
        (Compare::version("nokey", CompareOp::Equal, 0), true),
        (Compare::create_revision("nokey", CompareOp::Less, 1), true),
        (Compare::mod_revision("nokey", CompareOp::Greater, 0), false),
        (Compare::lease("nokey", CompareOp::Equal, 0), true),
        (Compare::value("nokey", CompareOp::Equal, ""), false),
        (Compare::value("nokey", CompareOp::NotEqual, "x"), false),
        (Compare::value("nokey", CompareOp::Less, "zzz"), false),
    ];
    for (i, (cmp, want)) in cases.into_iter().enumerate() {
        let r = c.txn(Txn::new().when([cmp])).await.unwrap();
        assert_eq!(r.succeeded(), want, "case {i}");
    }
}

#[tokio::test]
async fn txn_compare_over_a_range_holds_only_if_it_holds_for_every_key() {
    let (_s, mut c) = start("txn_range_compare").await;
    c.put("r1", "x", None).await.unwrap();
    c.put("r2", "x", None).await.unwrap();
    c.put("r2", "x", None).await.unwrap(); // r2 version 2
    c.put("s", "y", None).await.unwrap();
    let cases = [
        (Compare::version("r", CompareOp::Greater, 0).with_prefix(), true),
        (Compare::version("r", CompareOp::Equal, 1).with_prefix(), false),
        (Compare::version("r", CompareOp::Less, 3).with_prefix(), true),
        (Compare::value("r", CompareOp::Equal, "x").with_prefix(), true),
        (Compare::value("r", CompareOp::NotEqual, "x").with_prefix(), false),
        (Compare::value("r1", CompareOp::Equal, "x").with_range("t"), false), // s is "y"
        (Compare::value("r1", CompareOp::Less, "z").with_range("t"), true),
        (Compare::mod_revision("r1", CompareOp::Less, 5).with_range("r3"), true),
        (Compare::create_revision("r2", CompareOp::Equal, 3).with_range("r3"), true),
        // An empty range compares like a missing key.
        (Compare::version("zz", CompareOp::Equal, 0).with_prefix(), true),
        (Compare::value("zz", CompareOp::Equal, "").with_prefix(), false),
    ];
    for (i, (cmp, want)) in cases.into_iter().enumerate() {
        let r = c.txn(Txn::new().when([cmp])).await.unwrap();
        assert_eq!(r.succeeded(), want, "case {i}");
    }
}

#[tokio::test]
async fn txn_runs_the_failure_branch_when_any_compare_fails() {
    let (_s, mut c) = start("txn_failure_branch").await;
    c.put("a", "1", None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "1"), Compare::version("a", CompareOp::Equal, 5)])
        .and_then([TxnOp::put("then", "x", None)])
        .or_else([TxnOp::put("else", "y", None), TxnOp::get("else", None), TxnOp::get("then", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(!r.succeeded());
    assert_eq!(rev!(r), 3);
    let ops = r.op_responses();
    assert_eq!(ops.len(), 3);
    match &ops[0] {
        TxnOpResponse::Put(p) => assert_eq!(rev!(p), 3),
        other => panic!("expected a put response, got {other:?}"),
    }
    match &ops[1] {
        TxnOpResponse::Get(g) => {
            assert_eq!(
                g.kvs().iter().map(kv).collect::<Vec<_>>(),
                [t("else", "y", 3, 3, 1)],
                "a txn reads its own writes"
            );
            assert_eq!(rev!(g), 3);
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    match &ops[2] {
        TxnOpResponse::Get(g) => assert_eq!(g.count(), 0),
        other => panic!("expected a get response, got {other:?}"),
    }
    assert!(c.get("then", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn txn_with_several_writes_takes_one_revision() {
    let (_s, mut c) = start("txn_one_revision").await;
    put_all(&mut c, &["w0", "w9"]).await; // 2, 3
    let txn = Txn::new().and_then([
        TxnOp::put("w1", "a", None),
        TxnOp::put("w2", "b", Some(PutOptions::new().with_prev_key())),
        TxnOp::delete("w0", Some(DeleteOptions::new().with_prev_key())),
        TxnOp::put("w9", "c", Some(PutOptions::new().with_prev_key())),
    ]);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev!(r), 4);
    for op in r.op_responses() {
        match op {
            TxnOpResponse::Put(p) => assert_eq!(rev!(p), 4),
            TxnOpResponse::Delete(d) => {
                assert_eq!((rev!(d), d.deleted()), (4, 1));
                assert_eq!(d.prev_kvs().iter().map(kv).collect::<Vec<_>>(), [t("w0", "v-w0", 2, 2, 1)]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let all = c.get("w", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(
        all.kvs().iter().map(kv).collect::<Vec<_>>(),
        [t("w1", "a", 4, 4, 1), t("w2", "b", 4, 4, 1), t("w9", "c", 3, 4, 2)]
    );
    assert_eq!(rev!(c.put("next", "x", None).await.unwrap()), 5);
}

#[tokio::test]
async fn read_only_txn_takes_no_revision() {
    let (_s, mut c) = start("txn_read_only").await;
    put_all(&mut c, &["a", "b"]).await; // 2, 3
    let r = c.txn(Txn::new().and_then([TxnOp::get("a", None), TxnOp::get("b", None)])).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev!(r), 3);
    let got: Vec<_> = r
        .op_responses()
        .into_iter()
        .map(|op| match op {
            TxnOpResponse::Get(g) => (rev!(g), keys(g.kvs())),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, [(3, vec!["a".to_string()]), (3, vec!["b".to_string()])]);
    // The branch taken is read-only even though the other one writes.
    let txn = Txn::new()
        .when([Compare::version("a", CompareOp::Equal, 1)])
        .and_then([TxnOp::get("a", None)])
        .or_else([TxnOp::put("a", "w", None)]);
    let r = c.txn(txn).await.unwrap();
    assert_eq!((r.succeeded(), rev!(r)), (true, 3));
    // A delete that deletes nothing keeps a txn read-only too.
    let r = c.txn(Txn::new().and_then([TxnOp::delete("missing", None), TxnOp::get("b", None)])).await.unwrap();
    assert_eq!(rev!(r), 3);
    match &r.op_responses()[0] {
        TxnOpResponse::Delete(d) => assert_eq!((rev!(d), d.deleted()), (3, 0)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(rev!(c.put("c", "x", None).await.unwrap()), 4);
}

#[tokio::test]
async fn nested_txn_takes_its_branch_by_compares_evaluated_before_the_outer_txn_writes() {
    let (_s, mut c) = start("txn_nested").await;
    c.put("n0", "x", None).await.unwrap(); // 2
    let inner = Txn::new()
        // n1 does not exist before the outer txn: its put earlier in the
        // same txn is not seen by the nested compare (etcd evaluates every
        // compare of the txn tree first).
        .when([Compare::version("n1", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("n2", "inner-then", None), TxnOp::get("n1", None)])
        .or_else([TxnOp::put("n2", "inner-else", None)]);
    let outer = Txn::new()
        .when([Compare::value("n0", CompareOp::Equal, "x")])
        .and_then([TxnOp::put("n1", "outer", None), TxnOp::txn(inner)])
        .or_else([TxnOp::delete("n0", None)]);
    let r = c.txn(outer).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(rev!(r), 3);
    let ops = r.op_responses();
    let TxnOpResponse::Txn(inner) = &ops[1] else { panic!("expected a nested txn response, got {:?}", ops[1]) };
    assert!(inner.succeeded(), "the nested compare saw the state before the txn");
    // etcd gives a nested txn response an empty header: only the outermost
    // txn's header gets a revision.
    assert_eq!(rev!(inner), 0, "nested txn header revision");
    let inner_ops = inner.op_responses();
    match &inner_ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(keys(g.kvs()), ["n1"], "but its reads see the outer put"),
        other => panic!("unexpected {other:?}"),
    }
    let all = c.get("n", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(
        all.kvs().iter().map(kv).collect::<Vec<_>>(),
        [t("n0", "x", 2, 2, 1), t("n1", "outer", 3, 3, 1), t("n2", "inner-then", 3, 3, 1)]
    );
    // Nested failure branch; the outer txn runs its failure branch too.
    let inner = Txn::new()
        .when([Compare::version("n1", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("n3", "inner-then", None)])
        .or_else([TxnOp::put("n3", "inner-else", None)]);
    let outer = Txn::new()
        .when([Compare::value("n0", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("n9", "never", None)])
        .or_else([TxnOp::txn(inner)]);
    let r = c.txn(outer).await.unwrap();
    assert_eq!((r.succeeded(), rev!(r)), (false, 4));
    let TxnOpResponse::Txn(inner) = &r.op_responses()[0] else { panic!("expected a nested txn") };
    assert!(!inner.succeeded());
    let n3 = c.get("n3", None).await.unwrap();
    assert_eq!(kv(&n3.kvs()[0]), t("n3", "inner-else", 4, 4, 1));
    assert!(c.get("n9", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn txn_checks_only_the_branch_it_takes_puts_first() {
    let (_s, mut c) = start("txn_checks_taken_branch").await;
    c.put("a", "1", None).await.unwrap(); // 2
                                          // The branch not taken reads a future revision and puts with
                                          // ignore_value on a missing key: neither is an error.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "nope")])
        .and_then([
            TxnOp::get("a", Some(GetOptions::new().with_revision(50))),
            TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value())),
        ])
        .or_else([TxnOp::put("b", "2", None)]);
    let r = c.txn(txn).await.expect("the untaken branch is not checked");
    assert_eq!((r.succeeded(), rev!(r)), (false, 3));
    // The taken branch is checked in order: its first bad op decides.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "nope")])
        .and_then([TxnOp::get("a", Some(GetOptions::new().with_revision(50)))])
        .or_else([
            TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value())),
            TxnOp::get("a", Some(GetOptions::new().with_revision(50))),
        ]);
    assert_eq!(expect_status(c.txn(txn).await), (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND.to_string()));
    // etcd 3.4 and 3.5 check every put of the taken path before any read's
    // revision, whatever their order (etcd 3.6 checks in op order).
    let txn = Txn::new().and_then([
        TxnOp::get("a", Some(GetOptions::new().with_revision(50))),
        TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value())),
    ]);
    let e = expect_status(c.txn(txn).await);
    assert_eq!(e, (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND.to_string()), "puts are checked before reads");
    // Inside a txn the missing key is reported before an unknown lease
    // (a plain Put checks the lease first).
    let txn =
        Txn::new().and_then([TxnOp::put("missing", "", Some(PutOptions::new().with_ignore_value().with_lease(99)))]);
    assert_eq!(expect_status(c.txn(txn).await), (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND.to_string()));
    assert_eq!(revision(&mut c).await, 3);
}

// ------------------------------------------------------------ compaction

#[tokio::test]
async fn compaction_at_revision_0_or_1_is_accepted_until_something_is_compacted() {
    let (_s, mut c) = start("compact_zero").await;
    c.put("k", "v", None).await.unwrap(); // 2
    let r = c.compact(0, None).await.expect("compact 0 on a never compacted store");
    assert_eq!(rev!(r), 2);
    let e = expect_status(c.compact(0, None).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::COMPACTED.to_string()), "compact 0 again");
    let r = c.compact(1, None).await.expect("compact 1");
    assert_eq!(rev!(r), 2);
    let e = expect_status(c.compact(1, None).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::COMPACTED.to_string()), "compact 1 again");
    assert_eq!(kv(&c.get("k", None).await.unwrap().kvs()[0]), t("k", "v", 2, 2, 1));
}

async fn compaction_fences_reads(name: &str, physical: bool) {
    let (_s, mut c) = start(name).await;
    for i in 1..=5 {
        c.put("c", format!("{i}"), None).await.unwrap(); // revisions 2..=6
    }
    c.put("other", "o", None).await.unwrap(); // 7
    let opts = || if physical { CompactionOptions::new().with_physical() } else { CompactionOptions::new() };
    let r = c.compact(4, Some(opts())).await.unwrap();
    assert_eq!(rev!(r), 7, "compaction takes no revision");
    let at = |r: i64| GetOptions::new().with_revision(r);
    for old in [1, 2, 3] {
        let e = expect_status(c.get("c", Some(at(old))).await);
        assert_eq!(e, (code::OUT_OF_RANGE, msg::COMPACTED.to_string()), "read at {old}");
    }
    let r = c.get("c", Some(at(4))).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("c", "3", 2, 4, 3), "the compact revision itself stays readable");
    let r = c.get("c", Some(at(5))).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("c", "4", 2, 5, 4));
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("c", "5", 2, 6, 5), t("other", "o", 7, 7, 1)]);
    let e = expect_status(c.get("c", Some(at(8))).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::FUTURE_REV.to_string()));
    // Also for a range that holds no key at all (its end below its start).
    let e = expect_status(c.get("c", Some(at(3).with_range("a"))).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::COMPACTED.to_string()), "empty interval at a compacted revision");
    let e = expect_status(c.get("c", Some(at(8).with_range("a"))).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::FUTURE_REV.to_string()), "empty interval at a future revision");
    // A Txn that reads a compacted revision fails as a whole.
    let txn = Txn::new().and_then([TxnOp::put("t", "x", None), TxnOp::get("c", Some(at(3)))]);
    let e = expect_status(c.txn(txn).await);
    assert_eq!(e, (code::OUT_OF_RANGE, msg::COMPACTED.to_string()));
    // Compacting at or below the compact revision, or in the future.
    for (rev, m) in [(4, msg::COMPACTED), (2, msg::COMPACTED), (8, msg::FUTURE_REV), (100, msg::FUTURE_REV)] {
        let e = expect_status(c.compact(rev, Some(opts())).await);
        assert_eq!(e, (code::OUT_OF_RANGE, m.to_string()), "compact {rev}");
    }
    assert_eq!(revision(&mut c).await, 7, "nothing above wrote");
    assert!(c.get("t", None).await.unwrap().kvs().is_empty(), "the failed txn wrote nothing");
    let r = c.compact(7, Some(opts())).await.unwrap();
    assert_eq!(rev!(r), 7, "compacting at the current revision is allowed");
    assert_eq!(rev!(c.put("c", "6", None).await.unwrap()), 8);
    let r = c.get("c", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("c", "6", 2, 8, 6), "versions survive compaction");
}

#[tokio::test]
async fn compaction_makes_older_revisions_unreadable_and_future_ones_stay_refused() {
    compaction_fences_reads("compact_logical", false).await;
}

#[tokio::test]
async fn physical_compaction_makes_older_revisions_unreadable_and_future_ones_stay_refused() {
    compaction_fences_reads("compact_physical", true).await;
}

#[tokio::test]
async fn compaction_keeps_the_latest_version_of_every_live_key_and_forgets_deleted_ones() {
    let (_s, mut c) = start("compact_keeps_latest").await;
    c.put("x", "1", None).await.unwrap(); // 2
    c.put("y", "1", None).await.unwrap(); // 3
    c.put("x", "2", None).await.unwrap(); // 4
    c.delete("y", None).await.unwrap(); // 5
    c.put("z", "1", None).await.unwrap(); // 6
    c.compact(5, Some(CompactionOptions::new().with_physical())).await.unwrap();
    let r = c.get("", Some(GetOptions::new().with_all_keys().with_revision(5))).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("x", "2", 2, 4, 2)]);
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(r.kvs().iter().map(kv).collect::<Vec<_>>(), [t("x", "2", 2, 4, 2), t("z", "1", 6, 6, 1)]);
    let r = c.put("y", "2", None).await.unwrap();
    assert_eq!(rev!(r), 7);
    let r = c.get("y", None).await.unwrap();
    assert_eq!(kv(&r.kvs()[0]), t("y", "2", 7, 7, 1), "a key deleted before compaction starts a new life");
}

// ------------------------------------------------------ revision bookkeeping

#[tokio::test]
async fn versions_count_puts_since_creation_and_restart_after_a_delete() {
    let (_s, mut c) = start("versions").await;
    let mut expect_rev = 1;
    for i in 1..=4 {
        expect_rev += 1;
        let p = c.put("v", format!("{i}"), None).await.unwrap();
        assert_eq!(rev!(p), expect_rev);
        let g = c.get("v", None).await.unwrap();
        assert_eq!(kv(&g.kvs()[0]), t("v", &format!("{i}"), 2, expect_rev, i));
    }
    assert_eq!(rev!(c.delete("v", None).await.unwrap()), 6);
    assert_eq!(rev!(c.put("v", "again", None).await.unwrap()), 7);
    assert_eq!(kv(&c.get("v", None).await.unwrap().kvs()[0]), t("v", "again", 7, 7, 1));
    // Old lives stay readable at their revisions.
    let g = c.get("v", Some(GetOptions::new().with_revision(5))).await.unwrap();
    assert_eq!(kv(&g.kvs()[0]), t("v", "4", 2, 5, 4));
}
