//! Clusters of real corekv processes on loopback, replicating with Raft
//! over QUIC: they elect, replicate and serve from every member; killing
//! the leader under load loses no acknowledged write; a majority keeps
//! serving when a minority is gone, and nothing is served without one.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
        Cluster::start_with(name, n, |s, _| s.peer_addr(), "http", |_, _| Vec::new())
    }

    /// Starts `n` members of a new cluster whose members reach member `i`
    /// at `advertised(member, i)` (its own peer address, or a relay's),
    /// with peer URLs of `scheme` and member `i` given `extra(member, i)`.
    fn start_with(
        name: &str,
        n: usize,
        advertised: impl Fn(&Server, usize) -> SocketAddr,
        scheme: &str,
        extra: impl Fn(&Server, usize) -> Vec<String>,
    ) -> Cluster {
        let mut members: Vec<Server> =
            (0..n).map(|i| Server::prepare(Kind::Corekv, &format!("{name}-{i}"), &[])).collect();
        let initial: Vec<String> =
            members.iter().enumerate().map(|(i, s)| format!("m{i}={scheme}://{}", advertised(s, i))).collect();
        let initial = initial.join(",");
        for (i, s) in members.iter_mut().enumerate() {
            let listen = format!("{scheme}://{}", s.peer_addr());
            let advertise = format!("{scheme}://{}", advertised(s, i));
            let extra = extra(s, i);
            let member_name = format!("m{i}");
            let mut flags: Vec<&str> = vec![
                "--cores",
                "2",
                "--name",
                &member_name,
                "--listen-peer-urls",
                &listen,
                "--initial-advertise-peer-urls",
                &advertise,
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                name,
            ];
            flags.extend(extra.iter().map(String::as_str));
            s.set_flags(&flags);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_with_their_urls_and_leadership_moves_on_request() {
    let cluster = Cluster::start("roster", 3);
    let leader = cluster.leader().await;
    let mut ids = Vec::new();
    for s in &cluster.members {
        let mut c = connect(s).await.expect("connect");
        ids.push(c.status().await.expect("status").header().expect("header").member_id());
    }
    // Every member publishes its name and client URLs through the log;
    // every member lists all of them, by ID.
    let deadline = Instant::now() + Duration::from_secs(30);
    for s in &cluster.members {
        let mut c = connect(s).await.expect("connect");
        loop {
            let list = c.member_list().await.expect("member list");
            let members = list.members();
            assert_eq!(members.len(), 3);
            assert!(members.windows(2).all(|w| w[0].id() < w[1].id()), "listed by ID");
            if members.iter().all(|m| !m.client_urls().is_empty()) {
                for (i, m) in cluster.members.iter().enumerate() {
                    let listed = members.iter().find(|x| x.id() == ids[i]).expect("every member is listed");
                    assert_eq!(listed.name(), format!("m{i}"));
                    assert_eq!(listed.peer_urls(), [format!("http://{}", m.peer_addr())]);
                    assert_eq!(listed.client_urls(), [m.endpoint()]);
                    assert!(!listed.is_learner());
                }
                break;
            }
            assert!(Instant::now() < deadline, "not every member published: {members:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // MoveLeader: refused by a follower and for a stranger, done by the
    // leader for a member.
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let mut c = connect(&cluster.members[follower]).await.expect("connect");
    let err = c.move_leader(ids[leader]).await.expect_err("a follower cannot move leadership");
    assert_eq!(common::status_of(&err), (9, "etcdserver: not leader".to_string()));
    let mut c = connect(&cluster.members[leader]).await.expect("connect");
    let err = c.move_leader(12345).await.expect_err("a stranger cannot lead");
    assert_eq!(common::status_of(&err), (9, "etcdserver: bad leader transferee".to_string()));
    c.move_leader(ids[follower]).await.expect("move leader");
    assert_eq!(cluster.leader().await, follower, "the target leads once MoveLeader returns");
    let mut c = connect(&cluster.members[follower]).await.expect("connect");
    c.put("/after-move", "ok", None).await.expect("the new leader serves writes");

    // etcdctl sees the same: member list, endpoint status over the cluster
    // found through any one member, and move-leader.
    let one = cluster.members[leader].endpoint();
    let list = common::etcdctl(&one, &["member", "list"]);
    for i in 0..3 {
        let line = list.lines().find(|l| l.contains(&format!(", m{i}, "))).unwrap_or_else(|| panic!("m{i}: {list}"));
        assert!(line.contains(", started, ") && line.ends_with(", false"), "{line}");
        assert!(line.contains(&cluster.members[i].endpoint()), "{line}");
    }
    let status = common::etcdctl(&one, &["endpoint", "status", "--cluster", "-w", "json"]);
    for i in 0..3 {
        assert!(status.contains(&cluster.members[i].endpoint()), "{status}");
    }
    let leader_hex = format!("{:x}", ids[follower]);
    let json_leader = format!("\"leader\":{}", ids[follower]);
    assert!(status.matches(&json_leader).count() == 3, "every member names the new leader {leader_hex}: {status}");
    // etcdctl finds the leader among the endpoints it is given.
    let all: Vec<String> = cluster.members.iter().map(|s| s.endpoint()).collect();
    let back = common::etcdctl(&all.join(","), &["move-leader", &format!("{:x}", ids[leader])]);
    assert!(back.contains("Leadership transferred"), "{back}");
    assert_eq!(cluster.leader().await, leader);
}

/// A fault-injecting UDP relay between the members of a cluster: member
/// `i` is advertised at `front[i]`; a datagram from member `j` to `front[i]`
/// leaves through a socket of the pair (j, i) towards member `i`, whose
/// answers come back to that socket and go out of `front[i]` to `j`, so
/// every QUIC connection sees the addresses it expects. Members in the cut
/// set neither send nor receive.
struct Relay {
    front: Vec<SocketAddr>,
    /// Bit `i`: member `i` is cut off.
    cut: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Binds the front sockets; `start` wires them to the members.
    fn bind(n: usize) -> (Relay, Vec<UdpSocket>) {
        let sockets: Vec<UdpSocket> =
            (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind a relay socket")).collect();
        let front = sockets.iter().map(|s| s.local_addr().expect("local_addr")).collect();
        let relay = Relay { front, cut: Arc::default(), stop: Arc::default(), threads: Vec::new() };
        (relay, sockets)
    }

    /// Relays between the members' own peer addresses `back`.
    fn start(&mut self, fronts: Vec<UdpSocket>, back: Vec<SocketAddr>) {
        let n = back.len();
        let tick = Some(Duration::from_millis(50));
        let fronts: Vec<Arc<UdpSocket>> = fronts.into_iter().map(Arc::new).collect();
        // pair[j][i]: carries j -> i, and i's answers back to j.
        let mut pair: Vec<Vec<Option<Arc<UdpSocket>>>> = vec![vec![None; n]; n];
        for (j, row) in pair.iter_mut().enumerate() {
            for (i, slot) in row.iter_mut().enumerate() {
                if i != j {
                    *slot = Some(Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind a relay socket")));
                }
            }
        }
        let blocked = |cut: &AtomicU64, a: usize, b: usize| cut.load(Ordering::Relaxed) & (1 << a | 1 << b) != 0;
        for i in 0..n {
            let front = fronts[i].clone();
            front.set_read_timeout(tick).expect("timeout");
            let outs: Vec<Option<Arc<UdpSocket>>> = (0..n).map(|j| pair[j][i].clone()).collect();
            let (members, cut, stop) = (back.clone(), self.cut.clone(), self.stop.clone());
            self.threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = front.recv_from(&mut buf) else { continue };
                    let Some(j) = members.iter().position(|a| *a == from) else { continue };
                    if let Some(out) = &outs[j] {
                        if !blocked(&cut, i, j) {
                            let _ = out.send_to(&buf[..len], members[i]);
                        }
                    }
                }
            }));
            for j in (0..n).filter(|&j| j != i) {
                let sock = pair[j][i].clone().expect("a pair socket");
                sock.set_read_timeout(tick).expect("timeout");
                let (front, to, cut, stop) = (fronts[i].clone(), back[j], self.cut.clone(), self.stop.clone());
                self.threads.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((len, _)) = sock.recv_from(&mut buf) else { continue };
                        if !blocked(&cut, i, j) {
                            let _ = front.send_to(&buf[..len], to);
                        }
                    }
                }));
            }
        }
    }

    fn isolate(&self, member: usize) {
        self.cut.store(1 << member, Ordering::Relaxed);
    }

    fn heal(&self) {
        self.cut.store(0, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_refuses_with_etcds_errors_and_catches_up_when_healed() {
    let (mut relay, fronts) = Relay::bind(3);
    let front = relay.front.clone();
    let cluster = Cluster::start_with("partition", 3, |_, i| front[i], "http", |_, _| Vec::new());
    relay.start(fronts, cluster.members.iter().map(|s| s.peer_addr()).collect());
    let leader = cluster.leader().await;
    let cut = (0..3).find(|&i| i != leader).expect("a follower");
    let majority: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let mut c = connect(&cluster.members[cut]).await.expect("connect");
    c.put("/p/before", "1", None).await.expect("put before the partition");

    relay.isolate(cut);
    // The minority: writes and linearizable reads fail with etcd's errors,
    // serializable reads still answer from its own (stale) state.
    let refused = |e: &etcd_client::Error| {
        let (code, msg) = common::status_of(e);
        code == common::code::UNAVAILABLE && (msg == "etcdserver: no leader" || msg == "etcdserver: request timed out")
    };
    let mut c = connect(&cluster.members[cut]).await.expect("connect");
    let err = c.put("/p/minority", "x", None).await.expect_err("an isolated member must not commit");
    assert!(refused(&err), "{err:?}");
    let err = c.get("/p/before", None).await.expect_err("nor read linearizably");
    assert!(refused(&err), "{err:?}");
    let stale = c.get("/p/", Some(GetOptions::new().with_prefix().with_serializable())).await.expect("serializable");
    assert_eq!(stale.count(), 1);
    // The majority elects (if it must) and serves.
    let mut n = 0;
    for &i in &majority {
        let mut c = connect(&cluster.members[i]).await.expect("connect");
        for _ in 0..50 {
            c.put(format!("/p/majority/{n:03}"), "y", None).await.expect("the majority keeps writing");
            n += 1;
        }
        c.get("/p/before", None).await.expect("and reading linearizably");
    }

    relay.heal();
    // Healed, the minority catches up and serves linearizable reads again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = connect(&cluster.members[cut]).await.expect("connect");
        match c.get("/p/majority/", Some(GetOptions::new().with_prefix().with_count_only())).await {
            Ok(r) if r.count() == n => break,
            Ok(_) | Err(_) => {}
        }
        assert!(Instant::now() < deadline, "the healed member did not catch up within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut c = connect(&cluster.members[cut]).await.expect("connect");
    c.put("/p/after", "z", None).await.expect("the healed member writes again");
    let all = converged(&cluster, "/p/").await;
    assert_eq!(all.len(), n as usize + 2, "before, {n} majority writes, after");
    assert!(!all.contains_key("/p/minority"), "the refused write never committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_link_with_mutual_tls_from_certificate_files() {
    // A CA and one certificate per member for its peer IP address.
    let dir = common::test_dir("peer-tls-pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "corekv test CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params.clone(), rcgen::KeyPair::generate().expect("key")).expect("ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    // Another CA with the same name: its certificates must not be trusted.
    let rogue = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key")).expect("ca");
    let issue_by = |ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>, s: &Server, i: usize| -> Vec<String> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::IpAddress(s.peer_addr().ip())];
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("m{i}"));
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        let tag = if std::ptr::eq(ca, &rogue) { "rogue" } else { "ok" };
        let (cert_file, key_file) = (dir.join(format!("m{i}-{tag}.pem")), dir.join(format!("m{i}-{tag}-key.pem")));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        let path = |p: &std::path::Path| p.display().to_string();
        vec![
            "--peer-cert-file".into(),
            path(&cert_file),
            "--peer-key-file".into(),
            path(&key_file),
            "--peer-trusted-ca-file".into(),
            path(&ca_file),
            "--peer-client-cert-auth".into(),
        ]
    };
    let mut cluster = Cluster::start_with("peer-tls", 3, |s, _| s.peer_addr(), "https", |s, i| issue_by(&ca, s, i));
    cluster.leader().await;
    for (i, s) in cluster.members.iter().enumerate() {
        let mut c = connect(s).await.expect("connect");
        c.put(format!("/tls/{i}"), "x", None).await.expect("put over mutually authenticated links");
    }
    assert_eq!(converged(&cluster, "/tls/").await.len(), 3);

    // A follower restarted with a certificate of another CA is refused by
    // its peers: it misses what the others commit meanwhile.
    let leader = cluster.leader().await;
    let odd = (0..3).find(|&i| i != leader).expect("a follower");
    let swap = |cluster: &mut Cluster, ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>| {
        let s = &mut cluster.members[odd];
        s.kill();
        let mut flags = s.flags();
        let tls_at = flags.iter().position(|f| f == "--peer-cert-file").expect("TLS flags");
        flags.truncate(tls_at);
        flags.extend(issue_by(ca, s, odd));
        s.set_flags(&flags.iter().map(String::as_str).collect::<Vec<_>>());
        s.restart();
    };
    swap(&mut cluster, &rogue);
    let mut c = connect(&cluster.members[leader]).await.expect("connect");
    c.put("/tls/while-refused", "x", None).await.expect("the two trusted members commit");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let behind = dump(&cluster.members[odd], "/tls/").await;
    assert!(!behind.contains_key("/tls/while-refused"), "a member with an untrusted certificate got the log");
    // With a trusted certificate again, it catches up.
    swap(&mut cluster, &ca);
    assert_eq!(converged(&cluster, "/tls/").await.len(), 4);
}
