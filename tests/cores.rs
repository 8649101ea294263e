//! Results do not depend on the number of cores: the same seeded workload
//! of Puts, DeleteRanges (single key, range, prefix), Txns (single- and
//! cross-shard, nested, with every kind of compare) and Compacts, sent one
//! request at a time in the same order to `corekv --cores 1`, `--cores 2`
//! and `--cores 4`, gets identical replies (bar the header's member and
//! cluster ids), and the three stores end identical at every revision from
//! the last compaction on (DESIGN §4).
//!
//! A node cuts the key space at `/registry/<letter>` (RangeMap::initial),
//! so the keys spread over `/registry/a..z`, exact split points, and keys
//! below and above `/registry/`.

mod common;

use std::time::{Duration, Instant};

use common::workload::{dump_at, send, written_keys, Reply, Req, Shape, Workload};
use common::{Grpc, Rng, Server};
use corekv::apply::RangeMap;
use corekv::mvcc::End;

const CORES: [usize; 3] = [1, 2, 4];
/// Requests per run, and a wall-clock bound on the loop.
const REQUESTS: usize = 10_000;
const LOOP_TIME_MAX: Duration = Duration::from_secs(240);

fn keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    // Below "/registry/<letter>": shard 0 on every node.
    for k in ["!", "/a", "/regis", "/registry", "/registry.x", "/registry/", "/registry/A", "/registry/0"] {
        keys.push(k.as_bytes().to_vec());
    }
    for letter in b'a'..=b'z' {
        let l = letter as char;
        keys.push(format!("/registry/{l}").into_bytes());
        keys.push(format!("/registry/{l}s/default/x{l}").into_bytes());
    }
    // Just below and at the split points of 2 and 4 shards (g, n, t).
    for k in ["/registry/fz", "/registry/f\u{7f}", "/registry/mzz", "/registry/szz"] {
        keys.push(k.as_bytes().to_vec());
    }
    keys.push(b"/registry/m\xff\xff".to_vec());
    // Above "/registry/": the last shard.
    for k in ["/registry0", "/s", "a", "z"] {
        keys.push(k.as_bytes().to_vec());
    }
    keys.push(b"\xff".to_vec());
    keys.push(b"\xff\xff".to_vec());
    keys
}

fn prefixes() -> Vec<Vec<u8>> {
    ["/registry/", "/registry/g", "/registry/n", "/registry/t", "/registry/m", "/registry/ps/", "/", "/registry"]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

/// Which shards of a 4-shard node a request's writes touch.
fn shards_written(map: &RangeMap, req: &Req) -> Vec<u16> {
    let mut out = Vec::new();
    for (key, end) in written_keys(req) {
        if key.is_empty() {
            continue;
        }
        let end = match end.as_ref() {
            b"" => End::Single,
            b"\0" => End::Unbounded,
            e => End::Before(e),
        };
        if let Some((first, last)) = map.overlapping(&key, end) {
            out.extend(first.0..=last.0);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_final_state_are_identical_for_1_2_and_4_cores() {
    let (mut rng, seed) = Rng::from_env(20_240_601);
    let servers: Vec<Server> =
        CORES.iter().map(|n| Server::corekv(&format!("cores{n}"), &["--cores", &n.to_string()])).collect();
    let mut clients: Vec<Grpc> = Vec::new();
    for s in &servers {
        clients.push(s.grpc().await);
    }
    let shape = Shape { keys: keys(), prefixes: prefixes(), invalid_percent: 4, compact_percent: 1 };
    let mut work = Workload::new(rng.next_u64(), shape);
    let map = RangeMap::initial(4);
    let (mut writes_per_shard, mut cross_shard_ok, mut txns_ok, mut errors) = ([0usize; 4], 0usize, 0usize, 0usize);
    let started = Instant::now();
    let mut sent = 0;
    while sent < REQUESTS && started.elapsed() < LOOP_TIME_MAX {
        let req = work.next();
        let replies = futures_join(&clients, &req).await;
        let first = replies[0].clone();
        for (i, r) in replies.iter().enumerate().skip(1) {
            assert_eq!(
                &first, r,
                "seed {seed}, request #{sent} {req:?}:\n--cores {} replied {first:?}\n--cores {} replied {r:?}",
                CORES[0], CORES[i]
            );
        }
        work.observe(&first);
        match &first {
            Reply::Err(_) => errors += 1,
            reply => {
                let touched = shards_written(&map, &req);
                let wrote = matches!(reply, Reply::Put(_) | Reply::Delete(_) | Reply::Txn(_));
                if wrote {
                    for s in &touched {
                        writes_per_shard[*s as usize] += 1;
                    }
                    if touched.len() > 1 && matches!(req, Req::Txn(_)) {
                        cross_shard_ok += 1;
                    }
                }
                if matches!(req, Req::Txn(_)) {
                    txns_ok += 1;
                }
            }
        }
        sent += 1;
    }
    eprintln!(
        "seed {seed}: {sent} requests, {errors} errors, {txns_ok} txns ({cross_shard_ok} writing across shards), \
         writes per shard of 4: {writes_per_shard:?}, revision {}, compacted at {}",
        work.rev, work.compact_rev
    );
    // The workload must have exercised what this test is about.
    assert!(sent >= 500, "only {sent} requests in {LOOP_TIME_MAX:?}");
    assert!(writes_per_shard.iter().all(|&n| n >= sent / 40), "a shard got few writes: {writes_per_shard:?}");
    assert!(cross_shard_ok >= sent / 50, "few cross-shard txns: {cross_shard_ok}");
    assert!(work.compact_rev > 1, "no compaction happened");

    // The final state, at revisions from the compact revision to now.
    let now = clients[0].revision().await;
    assert_eq!(now, work.rev);
    let lo = work.compact_rev;
    let mut revisions: Vec<i64> = (0..8).map(|i| lo + (now - lo) * i / 7).collect();
    revisions.push(0);
    revisions.dedup();
    for rev in revisions {
        let replies = futures_join(&clients, &dump_at(rev)).await;
        let Reply::Range(first) = &replies[0] else { panic!("dump at {rev}: {:?}", replies[0]) };
        if rev == 0 {
            assert!(first.kvs.len() >= 10, "the final store is nearly empty: {} keys", first.kvs.len());
        }
        for (i, r) in replies.iter().enumerate().skip(1) {
            assert_eq!(&replies[0], r, "seed {seed}: dump at revision {rev} differs for --cores {}", CORES[i]);
        }
    }
    // Below the compact revision every node refuses alike.
    let replies = futures_join(&clients, &dump_at(lo - 1)).await;
    assert!(matches!(replies[0], Reply::Err(_)), "read below the compact revision {lo} succeeded");
    for r in &replies[1..] {
        assert_eq!(&replies[0], r);
    }
}

/// Sends `req` to every server at once (each server sees requests one at a
/// time, in the same order) and returns the normalized replies.
async fn futures_join(clients: &[Grpc], req: &Req) -> Vec<Reply> {
    let mut handles = Vec::new();
    for g in clients {
        let (g, req) = (g.clone(), req.clone());
        handles.push(tokio::spawn(async move { send(&g, &req).await }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task").normalized(false));
    }
    out
}
