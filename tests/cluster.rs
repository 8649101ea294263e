//! Clusters of real corekv processes on loopback, replicating with Raft
//! over QUIC: they elect, replicate and serve from every member; killing
//! the leader under load loses no acknowledged write; a majority keeps
//! serving when a minority is gone, and nothing is served without one.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Kind, Server};
use etcd_client::{Client, GetOptions};

/// A cluster's members, in member order.
struct Cluster {
    members: Vec<Server>,
}

impl Cluster {
    /// Starts `n` members of a new cluster.
    fn start(name: &str, n: usize) -> Cluster {
        let mut members: Vec<Server> =
            (0..n).map(|i| Server::prepare(Kind::Corekv, &format!("{name}-{i}"), &[])).collect();
        let peer = |s: &Server| format!("http://{}", s.peer_addr());
        let initial: Vec<String> = members.iter().enumerate().map(|(i, s)| format!("m{i}={}", peer(s))).collect();
        let initial = initial.join(",");
        for (i, s) in members.iter_mut().enumerate() {
            let p = peer(s);
            s.set_flags(&[
                "--cores",
                "2",
                "--name",
                &format!("m{i}"),
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                name,
            ]);
        }
        for s in &mut members {
            if let Err(f) = s.launch() {
                panic!("member did not start ({}):\n{}", f.status, f.stderr);
            }
        }
        Cluster { members }
    }

    /// Waits until the running members agree on a leader; returns its index.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for (i, s) in self.members.iter().enumerate() {
                if !s.is_running_now() {
                    continue;
                }
                if let Ok(mut c) = connect(s).await {
                    if let Ok(st) = c.status().await {
                        seen.push((i, st.leader(), st.header().map_or(0, |h| h.member_id())));
                    }
                }
            }
            let leader_id = seen.first().map(|x| x.1).unwrap_or(0);
            if leader_id != 0 && seen.iter().all(|x| x.1 == leader_id) {
                if let Some((i, _, _)) = seen.iter().find(|x| x.2 == leader_id) {
                    return *i;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within 30 s: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connect(s: &Server) -> Result<Client, etcd_client::Error> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    Client::connect([s.endpoint()], Some(opts)).await
}

/// Every key under `prefix` on `s`, read locally (serializable), with its
/// value and mod revision.
async fn dump(s: &Server, prefix: &str) -> BTreeMap<String, (String, i64)> {
    let mut c = connect(s).await.expect("connect");
    let r = c.get(prefix, Some(GetOptions::new().with_prefix().with_serializable())).await.expect("get");
    r.kvs()
        .iter()
        .map(|kv| {
            (kv.key_str().expect("utf-8").to_string(), (kv.value_str().expect("utf-8").to_string(), kv.mod_revision()))
        })
        .collect()
}

/// Waits until every running member holds the same keys under `prefix`.
async fn converged(cluster: &Cluster, prefix: &str) -> BTreeMap<String, (String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut dumps = Vec::new();
        for s in cluster.members.iter().filter(|s| s.is_running_now()) {
            dumps.push(dump(s, prefix).await);
        }
        if dumps.windows(2).all(|w| w[0] == w[1]) {
            return dumps.swap_remove(0);
        }
        assert!(Instant::now() < deadline, "members did not converge within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_and_serve_from_every_member() {
    let cluster = Cluster::start("trio", 3);
    cluster.leader().await;
    // Write through every member, read back through every member.
    for (i, s) in cluster.members.iter().enumerate() {
        let mut c = connect(s).await.expect("connect");
        let r = c.put(format!("/k/{i}"), format!("v{i}"), None).await.expect("put through a member");
        assert!(r.header().expect("header").revision() > 1);
    }
    for s in &cluster.members {
        let mut c = connect(s).await.expect("connect");
        let r = c.get("/k/", Some(GetOptions::new().with_prefix())).await.expect("linearizable get");
        assert_eq!(r.count(), 3, "a linearizable read on every member sees every acknowledged write");
    }
    let all = converged(&cluster, "/k/").await;
    assert_eq!(all.len(), 3);
    // Every member answers with the same cluster ID and term.
    let mut ids = Vec::new();
    for s in &cluster.members {
        let mut c = connect(s).await.expect("connect");
        let st = c.status().await.expect("status");
        let h = st.header().expect("header");
        ids.push((h.cluster_id(), st.raft_term()));
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start("failover", 3);
    cluster.leader().await;
    let acked: Arc<Mutex<BTreeMap<String, (String, i64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let endpoints: Vec<String> = cluster.members.iter().map(|s| s.endpoint()).collect();
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                let ep = &endpoints[(w + n as usize) % endpoints.len()];
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(10));
                let Ok(mut c) = Client::connect([ep.clone()], Some(opts)).await else {
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                for _ in 0..20 {
                    let key = format!("/load/{w}/{n:05}");
                    let value = format!("{w}-{n}");
                    n += 1;
                    match c.put(key.as_str(), value.as_str(), None).await {
                        Ok(r) => {
                            let rev = r.header().map_or(0, |h| h.revision());
                            acked.lock().expect("lock").insert(key, (value, rev));
                        }
                        // Unacknowledged: it may or may not have applied.
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    for _round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = cluster.leader().await;
        cluster.members[leader].kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.leader().await;
        cluster.members[leader].restart();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    cluster.leader().await;
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 100, "the load made progress: {} writes acknowledged", acked.len());
    let all = converged(&cluster, "/load/").await;
    for (k, (v, rev)) in &acked {
        assert_eq!(all.get(k), Some(&(v.clone(), *rev)), "acknowledged write {k} lost or changed");
    }
    // HashKV at one revision is the same on every member.
    let rev = all.values().map(|(_, r)| *r).max().unwrap_or(1);
    let mut hashes = Vec::new();
    for s in &cluster.members {
        let mut c = connect(s).await.expect("connect");
        hashes.push(c.hash_kv(rev).await.expect("hash_kv").hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "HashKV at {rev} differs: {hashes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_serve_with_a_majority_and_refuse_without_one() {
    let mut cluster = Cluster::start("quintet", 5);
    let leader = cluster.leader().await;
    // Kill two members that are not the leader: three of five remain.
    let others: Vec<usize> = (0..5).filter(|&i| i != leader).collect();
    cluster.members[others[0]].kill();
    cluster.members[others[1]].kill();
    let mut c = connect(&cluster.members[others[2]]).await.expect("connect");
    c.put("/majority", "yes", None).await.expect("a majority of three still writes");
    let r = c.get("/majority", None).await.expect("and reads linearizably");
    assert_eq!(r.kvs()[0].value_str().expect("utf-8"), "yes");
    // Kill one more: two of five cannot elect or commit.
    cluster.members[others[3]].kill();
    let mut c = connect(&cluster.members[others[2]]).await.expect("connect");
    let err = c.put("/minority", "no", None).await.expect_err("a minority must not commit");
    let (code, msg) = common::status_of(&err);
    assert_eq!(code, common::code::UNAVAILABLE, "{msg}");
    assert!(msg == "etcdserver: request timed out" || msg == "etcdserver: no leader", "{msg}");
    // Bring them back: the cluster heals (the timed-out write may or may
    // not commit later, as in etcd).
    for i in [others[0], others[1], others[3]] {
        cluster.members[i].restart();
    }
    cluster.leader().await;
    let all = converged(&cluster, "/").await;
    assert!(all.contains_key("/majority"));
}
