//! Differential test against the reference: etcd 3.4 (`/usr/bin/etcd`,
//! Debian's etcd-server) and corekv run side by side and get the same
//! seeded sequence of KV requests (puts, gets with every option, deletes,
//! txns nested and read-only, compactions, invalid requests); every reply
//! must be the same field by field, nested Txn headers included. Only the
//! top-level header's cluster_id, member_id and raft_term are ignored: they
//! name the cluster, not the data.
//!
//! The key space is 12 keys, so every sorted range has at most 12 pairs:
//! etcd sorts with Go's sort.Sort, which is only stable (ties in key order)
//! up to 12 elements, and tie order above that is not a contract.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::workload::{dump_at, send, Reply, Req, Shape, Workload};
use common::{b, code, get, op_put, op_range, op_txn, put, Grpc, Rng, Server, Status};
use corekv::api::proto::etcdserverpb as pb;

const REQUESTS: usize = 1500;
const LOOP_TIME_MAX: Duration = Duration::from_secs(240);
/// Differences listed before the test gives up.
const DIFFS_MAX: usize = 12;

fn shape() -> Shape {
    let keys = [
        &b"a"[..],
        b"ab",
        b"b",
        b"/registry/",
        b"/registry/a",
        b"/registry/g",
        b"/registry/n",
        b"/registry/nz",
        b"/registry/t",
        b"/registry0",
        b"z",
        b"\xff",
    ];
    let prefixes = [&b"a"[..], b"/registry/", b"/registry/n", b"/", b"\xff"];
    Shape {
        keys: keys.iter().map(|k| k.to_vec()).collect(),
        prefixes: prefixes.iter().map(|k| k.to_vec()).collect(),
        invalid_percent: 5,
        compact_percent: 2,
    }
}

/// A value's Debug text, cut to a readable length.
fn clip(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    if s.len() <= 3000 {
        return s;
    }
    let cut = (0..=3000).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{}... ({} bytes)", &s[..cut], s.len())
}

struct Pair {
    _etcd: Server,
    _corekv: Server,
    etcd: Grpc,
    corekv: Grpc,
}

async fn pair(name: &str) -> Pair {
    let etcd_server = Server::etcd(&format!("{name}-etcd"), &[]);
    let corekv_server = Server::corekv(&format!("{name}-corekv"), &["--cores", "2"]);
    let etcd = etcd_server.grpc().await;
    let corekv = corekv_server.grpc().await;
    Pair { _etcd: etcd_server, _corekv: corekv_server, etcd, corekv }
}

impl Pair {
    async fn both(&self, req: &Req) -> (Reply, Reply) {
        let e = send(&self.etcd, req).await.normalized(true);
        let c = send(&self.corekv, req).await.normalized(true);
        (e, c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_workload_gets_the_same_replies_as_etcd() {
    let (mut rng, seed) = Rng::from_env(3_400_023);
    let p = pair("compat_workload").await;
    let mut work = Workload::new(rng.next_u64(), shape());
    let mut diffs: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut sent = 0;
    let (mut errors, mut txns) = (0, 0);
    while sent < REQUESTS && started.elapsed() < LOOP_TIME_MAX && diffs.len() < DIFFS_MAX {
        let req = work.next();
        let (e, c) = p.both(&req).await;
        if e != c {
            diffs.push(format!("request #{sent}: {}\n  etcd:   {}\n  corekv: {}", clip(&req), clip(&e), clip(&c)));
            // Differences in what was written make everything after them
            // differ: stop at the first one of those.
            let (de, dc) = p.both(&dump_at(0)).await;
            if de != dc {
                diffs.push(format!("the stores now differ:\n  etcd:   {}\n  corekv: {}", clip(&de), clip(&dc)));
                break;
            }
        }
        errors += usize::from(matches!(e, Reply::Err(_)));
        txns += usize::from(matches!(req, Req::Txn(_)));
        work.observe(&e);
        sent += 1;
    }
    eprintln!("seed {seed}: {sent} requests ({txns} txns, {errors} errors), revision {}", work.rev);
    assert!(diffs.is_empty(), "seed {seed}: corekv differs from etcd {} time(s):\n{}", diffs.len(), diffs.join("\n\n"));
    assert!(sent >= 300, "only {sent} requests in {LOOP_TIME_MAX:?}");
    assert!(work.compact_rev > 1, "no compaction happened");
    // The stores agree at every revision still readable.
    let now = p.etcd.revision().await;
    for rev in work.compact_rev..=now {
        let (e, c) = p.both(&dump_at(rev)).await;
        assert_eq!(e, c, "seed {seed}: the stores differ at revision {rev}");
    }
}

/// Requests whose answers are errors, or sit at the edges of the API.
#[allow(clippy::vec_init_then_push)]
fn edge_cases() -> Vec<(&'static str, Req)> {
    let mut v: Vec<(&'static str, Req)> = Vec::new();
    v.push(("put k", Req::Put(put("k", "v1"))));
    v.push(("put k again", Req::Put(put("k", "v2"))));
    v.push(("empty key put", Req::Put(put("", "v"))));
    v.push(("empty key get", Req::Range(get(""))));
    v.push(("empty key delete", Req::Delete(common::delete("", ""))));
    v.push(("ignore_value with a value", Req::Put(pb::PutRequest { ignore_value: true, ..put("k", "x") })));
    v.push(("ignore_lease with a lease", Req::Put(pb::PutRequest { ignore_lease: true, lease: 3, ..put("k", "x") })));
    v.push(("ignore_value on a missing key", Req::Put(pb::PutRequest { ignore_value: true, ..put("nokey", "") })));
    v.push(("unknown lease", Req::Put(pb::PutRequest { lease: 77, ..put("k", "x") })));
    v.push(("future revision", Req::Range(pb::RangeRequest { revision: 100, ..get("k") })));
    v.push(("compact future", Req::Compact(pb::CompactionRequest { revision: 100, physical: false })));
    v.push(("compact 0", Req::Compact(pb::CompactionRequest { revision: 0, physical: false })));
    v.push(("compact at 2", Req::Compact(pb::CompactionRequest { revision: 2, physical: true })));
    v.push(("compact at 2 again", Req::Compact(pb::CompactionRequest { revision: 2, physical: false })));
    v.push(("compact at 1", Req::Compact(pb::CompactionRequest { revision: 1, physical: false })));
    v.push(("read compacted", Req::Range(pb::RangeRequest { revision: 1, ..get("k") })));
    v.push(("read at compact revision", Req::Range(pb::RangeRequest { revision: 2, ..get("k") })));
    v.push(("negative revision", Req::Range(pb::RangeRequest { revision: -5, ..get("k") })));
    v.push(("negative limit", Req::Range(pb::RangeRequest { limit: -1, ..get("k") })));
    v.push(("range end below key", Req::Range(pb::RangeRequest { range_end: b("a"), ..get("k") })));
    v.push(("key \\0 to \\0", Req::Range(common::get_all())));
    v.push(("delete end below key", Req::Delete(common::delete("k", "a"))));
    let dup = pb::TxnRequest { success: vec![op_put(put("d", "1")), op_put(put("d", "2"))], ..Default::default() };
    v.push(("duplicate put", Req::Txn(dup)));
    let too_many = pb::TxnRequest { success: vec![op_range(get("k")); 129], ..Default::default() };
    v.push(("129 ops", Req::Txn(too_many)));
    let nested_budget = pb::TxnRequest {
        success: [
            vec![op_range(get("k")); 100],
            vec![op_txn(pb::TxnRequest { success: vec![op_range(get("k")); 30], ..Default::default() })],
        ]
        .concat(),
        ..Default::default()
    };
    v.push(("nested ops over what the outer txn leaves", Req::Txn(nested_budget)));
    let empty_op = pb::TxnRequest { success: vec![pb::RequestOp { request: None }], ..Default::default() };
    v.push(("empty op", Req::Txn(empty_op)));
    let empty_txn = pb::TxnRequest::default();
    v.push(("empty txn", Req::Txn(empty_txn)));
    let nested = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b("k"),
            target: 0,
            result: 0,
            target_union: Some(pb::compare::TargetUnion::Version(2)),
            range_end: Bytes::new(),
        }],
        success: vec![
            op_put(put("n1", "x")),
            op_txn(pb::TxnRequest { success: vec![op_range(get("n1")), op_put(put("n2", "y"))], ..Default::default() }),
            op_range(get("n2")),
        ],
        failure: vec![],
    };
    v.push(("nested txn", Req::Txn(nested)));
    let read_only_nested = pb::TxnRequest {
        success: vec![op_txn(pb::TxnRequest { success: vec![op_range(get("n1"))], ..Default::default() })],
        ..Default::default()
    };
    v.push(("read-only nested txn", Req::Txn(read_only_nested)));
    // A compare whose target and union disagree: etcd reads the union's
    // field for the target, which is zero.
    let mismatched = pb::TxnRequest {
        compare: vec![pb::Compare {
            key: b("k"),
            target: 2, // MOD
            result: 0,
            target_union: Some(pb::compare::TargetUnion::Version(0)),
            range_end: Bytes::new(),
        }],
        ..Default::default()
    };
    v.push(("compare target and union disagree", Req::Txn(mismatched)));
    for k in ["s4", "s3", "s2", "s1"] {
        v.push(("put s*", Req::Put(put(k, format!("value of {k}")))));
    }
    let sort_limit = pb::RangeRequest { range_end: b("t"), sort_target: 2, sort_order: 0, limit: 2, ..get("s") };
    v.push(("no sort order, target create, limit 2", Req::Range(sort_limit)));
    let keys_only_by_value =
        pb::RangeRequest { range_end: b("t"), sort_target: 4, sort_order: 2, keys_only: true, ..get("s") };
    v.push(("keys_only sorted by value", Req::Range(keys_only_by_value)));
    let empty_future = pb::RangeRequest { range_end: b("a"), revision: 1000, ..get("s") };
    v.push(("empty interval at a future revision", Req::Range(empty_future)));
    let empty_compacted = pb::RangeRequest { range_end: b("a"), revision: 1, ..get("s") };
    v.push(("empty interval at a compacted revision", Req::Range(empty_compacted)));
    let lease_and_missing = pb::PutRequest { ignore_value: true, lease: 5, ..put("nokey", "") };
    v.push(("put: unknown lease and ignore_value on a missing key", Req::Put(lease_and_missing)));
    let read_then_bad_put = pb::TxnRequest {
        success: vec![
            op_range(pb::RangeRequest { revision: 1000, ..get("s1") }),
            op_put(pb::PutRequest { ignore_value: true, ..put("nokey", "") }),
        ],
        ..Default::default()
    };
    v.push(("txn: future read, then put with ignore_value on a missing key", Req::Txn(read_then_bad_put)));
    let big_read_only = pb::TxnRequest { success: vec![op_range(get(vec![b'x'; 1_700_000]))], ..Default::default() };
    v.push(("read-only txn over --max-request-bytes", Req::Txn(big_read_only)));
    let sort_desc = pb::RangeRequest { range_end: b("\0"), sort_target: 1, sort_order: 2, ..get("\0") };
    v.push(("descending version with ties", Req::Range(sort_desc)));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_cases_and_errors_match_etcd() {
    let p = pair("compat_edges").await;
    let mut diffs = Vec::new();
    for (name, req) in edge_cases() {
        let (e, c) = p.both(&req).await;
        if e != c {
            diffs.push(format!("{name}: {}\n  etcd:   {}\n  corekv: {}", clip(&req), clip(&e), clip(&c)));
        }
    }
    let (e, c) = p.both(&dump_at(0)).await;
    assert_eq!(e, c, "the stores differ after the edge cases");
    assert!(diffs.is_empty(), "corekv differs from etcd {} time(s):\n{}", diffs.len(), diffs.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_malformed_protobuf_get_etcds_codes() {
    let p = pair("compat_grpc").await;
    let body = Bytes::from(prost::Message::encode_to_vec(&get("k")));
    for path in ["/etcdserverpb.KV/Nope", "/etcdserverpb.Nope/Range", "/foo.Bar/Baz"] {
        let e = p.etcd.call_raw(path, body.clone()).await.expect_err("etcd: unknown method");
        let c = p.corekv.call_raw(path, body.clone()).await.expect_err("corekv: unknown method");
        assert_eq!(c, e, "{path}");
    }
    for method in ["Range", "Put", "DeleteRange", "Txn", "Compact"] {
        let path = format!("/etcdserverpb.KV/{method}");
        let bad = Bytes::from_static(b"\x0a\xff\xff\xff\x0f");
        let e: Status = p.etcd.call_raw(&path, bad.clone()).await.expect_err("etcd: malformed");
        let c: Status = p.corekv.call_raw(&path, bad).await.expect_err("corekv: malformed");
        // The text after the prefix is each decoder's own description.
        let prefix = "grpc: error unmarshalling request";
        assert_eq!(
            (c.code, c.message.starts_with(prefix)),
            (e.code, e.message.starts_with(prefix)),
            "{path}: {e} vs {c}"
        );
        assert_eq!(e.code, code::INTERNAL);
    }
}
