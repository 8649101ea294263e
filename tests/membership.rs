//! Membership changes on real corekv processes on loopback: a learner is
//! added and started with `--initial-cluster-state existing`, catches up,
//! is promoted; an original member is removed and stops; everything
//! restarts on the same data directories and keeps serving. etcd's errors
//! for what it refuses.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Kind, Server};
use etcd_client::{Client, GetOptions, MemberAddOptions};

async fn connect(s: &Server) -> Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(15));
    Client::connect([s.endpoint()], Some(opts)).await.expect("connect")
}

/// The flags of member `name` at `s` in a cluster listed by `initial`.
fn member_flags(s: &Server, name: &str, initial: &str, state: &str, token: &str, extra: &[&str]) -> Vec<String> {
    let peer = format!("http://{}", s.peer_addr());
    let mut f: Vec<String> = [
        "--cores",
        "2",
        "--name",
        name,
        "--listen-peer-urls",
        &peer,
        "--initial-advertise-peer-urls",
        &peer,
        "--initial-cluster",
        initial,
        "--initial-cluster-state",
        state,
        "--initial-cluster-token",
        token,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

fn launch(s: &mut Server, flags: &[String]) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    s.set_flags(&flags);
    if let Err(f) = s.launch() {
        panic!("member did not start ({}):\n{}", f.status, f.stderr);
    }
}

/// Every key under `prefix`, read locally (serializable).
async fn dump(s: &Server, prefix: &str) -> BTreeMap<String, (String, i64)> {
    let mut c = connect(s).await;
    let r = c.get(prefix, Some(GetOptions::new().with_prefix().with_serializable())).await.expect("get");
    r.kvs()
        .iter()
        .map(|kv| {
            (kv.key_str().expect("utf-8").to_string(), (kv.value_str().expect("utf-8").to_string(), kv.mod_revision()))
        })
        .collect()
}

/// Waits until every given member holds the same keys under `prefix`, and
/// at least `at_least` of them.
async fn converged(members: &[&Server], prefix: &str, at_least: usize) -> BTreeMap<String, (String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut dumps = Vec::new();
        for s in members {
            dumps.push(dump(s, prefix).await);
        }
        if dumps.windows(2).all(|w| w[0] == w[1]) && dumps[0].len() >= at_least {
            return dumps.swap_remove(0);
        }
        let sizes: Vec<usize> = dumps.iter().map(BTreeMap::len).collect();
        assert!(Instant::now() < deadline, "members did not converge within 60 s: {sizes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn member_id(s: &Server) -> u64 {
    connect(s).await.status().await.expect("status").header().expect("header").member_id()
}

/// Waits for a leader every given member agrees on.
async fn leader_of(members: &[&Server]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for s in members {
            if let Ok(st) = connect(s).await.status().await {
                leaders.push(st.leader());
            }
        }
        if leaders.len() == members.len() && leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `s` has applied its promotion.
async fn wait_voter(s: &Server) {
    let mut c = connect(s).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.status().await.expect("status").is_learner() {
        assert!(Instant::now() < deadline, "the promotion never reached the member");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_keys(s: &Server, prefix: &str, range: std::ops::Range<usize>) {
    let mut c = connect(s).await;
    for i in range {
        c.put(format!("{prefix}{i:05}"), format!("v{i}"), None).await.expect("put");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_catches_up_is_promoted_and_replaces_a_removed_member() {
    let token = "grow";
    let mut members: Vec<Server> = (0..4).map(|i| Server::prepare(Kind::Corekv, &format!("grow-{i}"), &[])).collect();
    let url = |s: &Server| format!("http://{}", s.peer_addr());
    let initial: String = (0..3).map(|i| format!("m{i}={}", url(&members[i]))).collect::<Vec<_>>().join(",");
    // A small snapshot count: the log is compacted long before the learner
    // joins, so it catches up from a snapshot.
    let extra = ["--snapshot-count", "50"];
    let flags: Vec<Vec<String>> =
        (0..3).map(|i| member_flags(&members[i], &format!("m{i}"), &initial, "new", token, &extra)).collect();
    for (i, f) in flags.iter().enumerate() {
        launch(&mut members[i], f);
    }
    let three: Vec<&Server> = members[..3].iter().collect();
    leader_of(&three).await;
    put_keys(&members[0], "/k/", 0..300).await;

    // etcd's refusals.
    let mut c = connect(&members[1]).await;
    let e = c.member_add([url(&members[0])], None).await.expect_err("a taken peer URL");
    assert_eq!(common::status_of(&e), (9, "etcdserver: Peer URLs already exists".into()));
    let e = c.member_add(["not a url"], None).await.expect_err("a bad URL");
    assert_eq!(common::status_of(&e), (3, "etcdserver: given member URLs are invalid".into()));
    let e = c.member_remove(0x1234).await.expect_err("no such member");
    assert_eq!(common::status_of(&e), (5, "etcdserver: member not found".into()));
    let m0 = member_id(&members[0]).await;
    let e = c.member_promote(m0).await.expect_err("a voter");
    assert_eq!(common::status_of(&e), (9, "etcdserver: can only promote a learner member".into()));

    // Add the learner through a follower or the leader alike.
    let added = c.member_add([url(&members[3])], Some(MemberAddOptions::new().with_is_learner())).await.expect("add");
    let new = added.member().expect("the added member").clone();
    assert!(new.is_learner());
    assert_eq!(new.peer_urls(), [url(&members[3])]);
    assert_eq!(added.member_list().len(), 4);
    let e = c
        .member_add(["http://127.0.0.1:9"], Some(MemberAddOptions::new().with_is_learner()))
        .await
        .expect_err("one learner at a time");
    assert_eq!(common::status_of(&e), (9, "etcdserver: too many learner members in cluster".into()));
    // The learner is not started yet: it cannot be in sync.
    let e = c.member_promote(new.id()).await.expect_err("not in sync");
    assert_eq!(
        common::status_of(&e),
        (9, "etcdserver: can only promote a learner member which is in sync with leader".into())
    );

    let four = format!("{initial},m3={}", url(&members[3]));
    let learner_flags = member_flags(&members[3], "m3", &four, "existing", token, &extra);
    launch(&mut members[3], &learner_flags);
    assert_eq!(member_id(&members[3]).await, new.id(), "the new member computes the ID MemberAdd gave it");
    // A learner serves serializable reads only (once the log it receives
    // has told it that it is one).
    let mut lc = connect(&members[3]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lc.status().await.expect("status").is_learner() {
        assert!(Instant::now() < deadline, "the new member never learnt it is a learner");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = lc.get("/k/00000", None).await.expect_err("linearizable read on a learner");
    assert_eq!(common::status_of(&e), (14, "etcdserver: rpc not supported for learner".into()));
    let e = lc.put("/x", "y", None).await.expect_err("write on a learner");
    assert_eq!(common::status_of(&e), (14, "etcdserver: rpc not supported for learner".into()));
    let with_learner: Vec<&Server> = members.iter().collect();
    converged(&with_learner, "/k/", 300).await;
    let st = lc.status().await.expect("status");
    assert!(st.is_learner());
    assert_eq!(st.header().expect("header").cluster_id(), added.header().expect("header").cluster_id());
    let log = members[3].stderr();
    assert!(log.contains("installed a snapshot"), "the learner caught up from a snapshot:\n{log}");

    // Promote once in sync (the leader decides).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.member_promote(new.id()).await {
            Ok(r) => {
                assert!(r.members().iter().all(|m| !m.is_learner()));
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "promote: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    wait_voter(&members[3]).await;
    put_keys(&members[3], "/k/", 300..350).await;

    // Remove an original member: it stops by itself; the rest serve.
    let removed = c.member_remove(m0).await.expect("remove");
    assert_eq!(removed.members().len(), 3);
    assert!(removed.members().iter().all(|m| m.id() != m0));
    // It learns it was removed from the commit of its removal, or else
    // from a peer it calls (members call those with higher IDs): unless
    // it has the highest ID, it stops by itself.
    let mut others = Vec::new();
    for s in &members[1..] {
        others.push(member_id(s).await);
    }
    if others.iter().any(|id| *id > m0) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !members[0].stderr().contains("the member has been permanently removed from the cluster") {
            assert!(Instant::now() < deadline, "the removed member did not notice:\n{}", members[0].stderr());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    members[0].kill();
    put_keys(&members[1], "/k/", 350..400).await;
    let rest: Vec<&Server> = members[1..].iter().collect();
    let before = converged(&rest, "/k/", 400).await;

    // MemberUpdate changes what MemberList shows.
    let m1 = member_id(&members[1]).await;
    let same = vec![url(&members[1])];
    c.member_update(m1, same.clone()).await.expect("update to the same URLs");

    // Restart everything on the same data directories.
    for s in members[1..].iter_mut() {
        s.kill();
    }
    for i in 1..4 {
        let f = if i == 3 { learner_flags.clone() } else { flags[i].clone() };
        launch(&mut members[i], &f);
    }
    let rest: Vec<&Server> = members[1..].iter().collect();
    leader_of(&rest).await;
    assert_eq!(converged(&rest, "/k/", 400).await, before);
    let list = connect(&members[2]).await.member_list().await.expect("member list");
    let ids: Vec<u64> = list.members().iter().map(|m| m.id()).collect();
    assert_eq!(ids.len(), 3, "{list:?}");
    assert!(!ids.contains(&m0));
    assert!(list.members().iter().all(|m| !m.is_learner()));
    let listed = list.members().iter().find(|m| m.id() == new.id()).expect("the promoted member");
    assert_eq!(listed.peer_urls(), [url(&members[3])]);
    put_keys(&members[2], "/k/", 400..410).await;
    converged(&rest, "/k/", 410).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_grows_into_a_cluster_of_two_voters() {
    let token = "solo";
    let mut members: Vec<Server> = (0..2).map(|i| Server::prepare(Kind::Corekv, &format!("solo-{i}"), &[])).collect();
    let url = |s: &Server| format!("http://{}", s.peer_addr());
    let initial = format!("a={}", url(&members[0]));
    let first = member_flags(&members[0], "a", &initial, "new", token, &[]);
    launch(&mut members[0], &first);
    put_keys(&members[0], "/s/", 0..50).await;
    let mut c = connect(&members[0]).await;
    // etcdctl's member add, as an operator runs it: it prints the flags
    // the new member starts with.
    let ep = members[0].endpoint();
    let out = common::etcdctl(&ep, &["member", "add", "b", "--learner", &format!("--peer-urls={}", url(&members[1]))]);
    let hex = out
        .split_whitespace()
        .nth(1)
        .filter(|_| out.starts_with("Member "))
        .unwrap_or_else(|| panic!("member add printed:\n{out}"));
    let id = u64::from_str_radix(hex, 16).expect("a hex member ID");
    let both = format!("{initial},b={}", url(&members[1]));
    assert!(out.contains("ETCD_NAME=\"b\""), "{out}");
    assert!(
        out.contains(&format!("ETCD_INITIAL_CLUSTER=\"{both}\""))
            || out.contains(&format!("ETCD_INITIAL_CLUSTER=\"b={},a={}\"", url(&members[1]), url(&members[0]))),
        "{out}"
    );
    assert!(out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "{out}");
    let list = common::etcdctl(&ep, &["member", "list"]);
    assert!(list.lines().any(|l| l.starts_with(hex) && l.contains("unstarted") && l.ends_with(", true")), "{list}");
    let second = member_flags(&members[1], "b", &both, "existing", token, &[]);
    launch(&mut members[1], &second);
    let all: Vec<&Server> = members.iter().collect();
    converged(&all, "/s/", 50).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = c.member_promote(id).await {
        assert!(Instant::now() < deadline, "promote: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two voters: writes need both, and both serve linearizable reads
    // (once the promoted member applied its promotion).
    wait_voter(&members[1]).await;
    let mut b = connect(&members[1]).await;
    put_keys(&members[1], "/s/", 50..60).await;
    assert_eq!(b.get("/s/00055", None).await.expect("get").kvs().len(), 1);
    members[0].restart();
    let all: Vec<&Server> = members.iter().collect();
    leader_of(&all).await;
    put_keys(&members[0], "/s/", 60..70).await;
    converged(&all, "/s/", 70).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_learner_auto_promote_a_learner_that_caught_up_becomes_a_voter() {
    let token = "auto";
    let mut members: Vec<Server> = (0..2).map(|i| Server::prepare(Kind::Corekv, &format!("auto-{i}"), &[])).collect();
    let url = |s: &Server| format!("http://{}", s.peer_addr());
    let initial = format!("a={}", url(&members[0]));
    let first = member_flags(&members[0], "a", &initial, "new", token, &["--learner-auto-promote"]);
    launch(&mut members[0], &first);
    put_keys(&members[0], "/p/", 0..20).await;
    let mut c = connect(&members[0]).await;
    let added = c.member_add([url(&members[1])], Some(MemberAddOptions::new().with_is_learner())).await.expect("add");
    assert!(added.member().expect("member").is_learner());
    // Not started: not in sync, so it stays a learner.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = c.member_list().await.expect("list");
    assert!(list.members().iter().any(|m| m.is_learner()), "promoted before it caught up: {list:?}");
    let both = format!("{initial},b={}", url(&members[1]));
    let second = member_flags(&members[1], "b", &both, "existing", token, &[]);
    launch(&mut members[1], &second);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = c.member_list().await.expect("list");
        if list.members().len() == 2 && list.members().iter().all(|m| !m.is_learner()) {
            break;
        }
        assert!(Instant::now() < deadline, "never promoted: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put_keys(&members[1], "/p/", 20..30).await;
    let all: Vec<&Server> = members.iter().collect();
    converged(&all, "/p/", 30).await;
}
