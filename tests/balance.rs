//! The balancer moves shard boundaries while clients read and write, and
//! nobody can tell: every read sees exactly the keys written before it.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use etcd_client::GetOptions;

/// Keys written in one burst, all under one Kubernetes resource prefix, so
/// that they start on one shard.
const KEYS: usize = 6000;
/// Keys per Txn when loading.
const TXN_KEYS: usize = 100;

fn key(i: usize) -> String {
    format!("/registry/pods/ns-{:02}/pod-{i:05}", i % 37)
}

async fn load(client: &mut etcd_client::Client, from: usize, to: usize) {
    let mut i = from;
    while i < to {
        let ops: Vec<etcd_client::TxnOp> =
            (i..(i + TXN_KEYS).min(to)).map(|k| etcd_client::TxnOp::put(key(k), format!("v{k}"), None)).collect();
        client.txn(etcd_client::Txn::new().and_then(ops)).await.expect("load txn");
        i += TXN_KEYS;
    }
}

/// Counts the keys under /registry/pods/ and checks they are exactly
/// `expected` (in key order, with their values).
async fn check_all(client: &mut etcd_client::Client, expected: usize) {
    let resp = client.get("/registry/pods/", Some(GetOptions::new().with_prefix())).await.expect("get prefix");
    assert_eq!(resp.count() as usize, expected, "count of keys under the prefix");
    assert_eq!(resp.kvs().len(), expected, "keys returned");
    let mut want: Vec<String> = (0..expected).map(key).collect();
    want.sort();
    for (kv, k) in resp.kvs().iter().zip(&want) {
        assert_eq!(kv.key_str().expect("utf-8 key"), k);
        let i: usize = k.rsplit('-').next().and_then(|n| n.parse().ok()).expect("key number");
        assert_eq!(kv.value_str().expect("utf-8 value"), format!("v{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_exact_while_shard_boundaries_move() {
    let server = Server::corekv("balance", &["--cores", "4"]);
    let mut client = server.client().await;
    let mut written = 0;
    // Load in steps, checking the whole prefix after each: boundaries move
    // between and during the steps.
    let deadline = Instant::now() + Duration::from_secs(60);
    while written < KEYS && Instant::now() < deadline {
        load(&mut client, written, written + 1000).await;
        written += 1000;
        check_all(&mut client, written).await;
    }
    assert_eq!(written, KEYS, "loading took over a minute");
    // Keep reading until the balancer has moved at least two boundaries
    // (it logs each move), checking every read.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        check_all(&mut client, KEYS).await;
        let moves = server.stderr().matches("moving a shard boundary").count();
        if moves >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the balancer moved {moves} boundaries in 20 s with every key on one shard");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Single-key reads and writes route to the new owners.
    for i in (0..KEYS).step_by(397) {
        let r = client.get(key(i), None).await.expect("get");
        assert_eq!(r.kvs()[0].value_str().expect("utf-8"), format!("v{i}"));
        client.put(key(i), "again", None).await.expect("put");
        let r = client.get(key(i), None).await.expect("get");
        assert_eq!(r.kvs()[0].value_str().expect("utf-8"), "again");
        assert_eq!(r.kvs()[0].version(), 2);
    }
}
