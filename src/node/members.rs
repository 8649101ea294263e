//! The member table and etcd's membership changes (MemberAdd, MemberRemove,
//! MemberUpdate, MemberPromote) as Raft configuration changes. Sans-IO: the
//! consensus loop proposes what [`plan`] returns and applies what commits
//! with [`MemberTable::apply`].
//!
//! Every change is one Raft conf change whose context (encoded here) says
//! what etcd operation it is, the member's peer URLs, the cluster ID and
//! who asked. Raft knows voters and learners; the table adds peer URLs
//! (from the contexts, or from `--initial-cluster` for the members a new
//! cluster bootstraps with, whose conf changes carry no context) and the
//! names and client URLs members publish through the log. Every member
//! applies the same entries in the same order, so every member's table is
//! the same. MemberUpdate changes no role: it is a conf change that adds
//! the member again with the role it has (a no-op for Raft), so that peer
//! URL changes are ordered with the other membership changes.
//!
//! IDs: an added member's ID is etcd's ID of a bootstrapping member
//! (SHA-1 of its sorted peer URLs and the cluster token), so a member
//! started with `--initial-cluster-state existing` computes its own ID from
//! its flags, as the initial members do. A member removed and added again
//! with the same peer URLs gets the same ID back.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::command::Publish;
use crate::config::Url;
use crate::raft::{ChangeKind, MemberChange, Membership};
use crate::types::{ClusterId, MemberId};

/// At most this many learners at once (etcd's `--experimental-max-learners`
/// default).
pub const LEARNERS_MAX: usize = 1;
/// etcd promotes a learner only once its log reaches this share of the
/// leader's.
pub const PROMOTE_READY_SHARE: f64 = 0.9;
/// Bounds on what a context may carry.
const URLS_MAX: usize = 16;
const URL_BYTES_MAX: usize = 1024;
const MAGIC: &[u8; 4] = b"CKVM";
const VERSION: u8 = 1;

/// One member, as the table knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Its peer URLs (canonical text, no trailing slash).
    pub peer_urls: Vec<String>,
    /// Whether it is a learner.
    pub learner: bool,
}

/// Every member of the cluster, and what members published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    /// Members by ID.
    pub members: BTreeMap<MemberId, Member>,
    /// Names and client URLs members published (etcd's publish), by ID.
    pub published: BTreeMap<u64, Publish>,
    /// The cluster's ID, once a change carried it (a joining member learns
    /// it this way).
    pub cluster: Option<ClusterId>,
    /// Members removed from the cluster (and not added again): the peer
    /// transport tells them so when they call.
    pub removed: BTreeSet<MemberId>,
}

pub use crate::api::backend::MemberRequest as MemberOp;

/// Why a membership request was refused (etcd's errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberError {
    /// etcd's ErrGRPCMemberNotFound.
    NotFound,
    /// etcd's ErrGRPCMemberExist.
    Exists,
    /// etcd's ErrGRPCPeerURLExist.
    PeerUrlExists,
    /// etcd's ErrGRPCMemberBadURLs.
    BadUrls,
    /// etcd's ErrGRPCMemberNotLearner.
    NotLearner,
    /// etcd's ErrGRPCLearnerNotReady.
    LearnerNotReady,
    /// etcd's ErrGRPCTooManyLearners.
    TooManyLearners,
}

impl From<MemberError> for crate::api::backend::ClusterError {
    fn from(e: MemberError) -> Self {
        use crate::api::backend::ClusterError as C;
        match e {
            MemberError::NotFound => C::MemberNotFound,
            MemberError::Exists => C::MemberExists,
            MemberError::PeerUrlExists => C::PeerUrlExists,
            MemberError::BadUrls => C::BadUrls,
            MemberError::NotLearner => C::NotLearner,
            MemberError::LearnerNotReady => C::LearnerNotReady,
            MemberError::TooManyLearners => C::TooManyLearners,
        }
    }
}

/// The operation a context names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// MemberAdd.
    Add = 1,
    /// MemberRemove.
    Remove = 2,
    /// MemberUpdate.
    Update = 3,
    /// MemberPromote.
    Promote = 4,
}

/// What a membership conf change carries besides Raft's change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The operation.
    pub op: OpKind,
    /// The member it is about.
    pub member: MemberId,
    /// Whether the member is (or becomes) a learner.
    pub learner: bool,
    /// Its peer URLs (Add, Update).
    pub peer_urls: Vec<String>,
    /// The cluster's ID.
    pub cluster: ClusterId,
    /// The member whose client asked.
    pub origin: MemberId,
    /// The request's number on that member.
    pub request: u64,
}

impl Context {
    /// The bytes a conf change carries.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(self.op as u8);
        b.push(u8::from(self.learner));
        for n in [self.member.get(), self.cluster.get(), self.origin.get(), self.request] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend_from_slice(&(self.peer_urls.len() as u16).to_le_bytes());
        for u in &self.peer_urls {
            b.extend_from_slice(&(u.len() as u16).to_le_bytes());
            b.extend_from_slice(u.as_bytes());
        }
        b
    }

    /// Decodes a context; `None` for anything that is not one (the
    /// bootstrap entries carry none). Never panics.
    pub fn decode(bytes: &[u8]) -> Option<Context> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return None;
        }
        let op = match r.u8()? {
            1 => OpKind::Add,
            2 => OpKind::Remove,
            3 => OpKind::Update,
            4 => OpKind::Promote,
            _ => return None,
        };
        let learner = match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let (member, cluster, origin, request) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let n = r.u16()? as usize;
        if n > URLS_MAX {
            return None;
        }
        let mut peer_urls = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u16()? as usize;
            if len > URL_BYTES_MAX {
                return None;
            }
            peer_urls.push(String::from_utf8(r.take(len)?.to_vec()).ok()?);
        }
        if !r.0.is_empty() {
            return None;
        }
        Some(Context {
            op,
            member: MemberId(member),
            learner,
            peer_urls,
            cluster: ClusterId(cluster),
            origin: MemberId(origin),
            request,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Parses and normalizes peer URLs as etcd checks them: at least one, each
/// an http(s) URL with a host and a port.
pub fn parse_peer_urls(urls: &[String]) -> Result<Vec<Url>, MemberError> {
    if urls.is_empty() || urls.len() > URLS_MAX {
        return Err(MemberError::BadUrls);
    }
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        if u.len() > URL_BYTES_MAX {
            return Err(MemberError::BadUrls);
        }
        let url = Url::parse(u).map_err(|_| MemberError::BadUrls)?;
        let web = matches!(url.scheme, crate::config::Scheme::Http | crate::config::Scheme::Https);
        if !web || url.host.is_empty() || url.port == 0 {
            return Err(MemberError::BadUrls);
        }
        out.push(url);
    }
    Ok(out)
}

/// The canonical text of a peer URL, as the table and MemberList show it.
pub fn url_text(u: &Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

/// What the leader needs to judge a request beyond the table.
pub struct Judge<'a> {
    /// Raft's configuration now.
    pub membership: &'a Membership,
    /// The cluster token (IDs of added members derive from it).
    pub token: &'a str,
    /// The cluster's ID.
    pub cluster: ClusterId,
    /// Who asked, and the request's number there.
    pub origin: MemberId,
    /// The request number.
    pub request: u64,
    /// A member's replicated log position (the leader's progress), and the
    /// leader's own.
    pub matched: &'a dyn Fn(MemberId) -> Option<u64>,
    /// The leader's last index.
    pub leader_index: u64,
}

/// Turns a request into the Raft change to propose, refusing it as etcd
/// would. Runs on the leader.
pub fn plan(table: &MemberTable, op: &MemberOp, j: &Judge<'_>) -> Result<(MemberChange, Context), MemberError> {
    let known = |id: MemberId| table.members.contains_key(&id) || j.membership.contains(id);
    let learner_now = |id: MemberId| j.membership.learners.contains(&id);
    let urls_taken = |urls: &[String], except: Option<MemberId>| {
        table.members.iter().any(|(id, m)| Some(*id) != except && m.peer_urls.iter().any(|u| urls.contains(u)))
    };
    let ctx = |op, member, learner, peer_urls| Context {
        op,
        member,
        learner,
        peer_urls,
        cluster: j.cluster,
        origin: j.origin,
        request: j.request,
    };
    match op {
        MemberOp::Add { peer_urls, learner } => {
            let parsed = parse_peer_urls(peer_urls)?;
            let urls: Vec<String> = parsed.iter().map(url_text).collect();
            if urls_taken(&urls, None) {
                return Err(MemberError::PeerUrlExists);
            }
            let id = crate::config::member_id_for(&parsed, j.token);
            if known(id) {
                return Err(MemberError::Exists);
            }
            if *learner && j.membership.learners.len() >= LEARNERS_MAX {
                return Err(MemberError::TooManyLearners);
            }
            let kind = if *learner { ChangeKind::AddLearner } else { ChangeKind::AddVoter };
            Ok((MemberChange { kind, member: id }, ctx(OpKind::Add, id, *learner, urls)))
        }
        MemberOp::Remove { id } => {
            if !known(*id) {
                return Err(MemberError::NotFound);
            }
            let learner = learner_now(*id);
            Ok((MemberChange { kind: ChangeKind::Remove, member: *id }, ctx(OpKind::Remove, *id, learner, Vec::new())))
        }
        MemberOp::Update { id, peer_urls } => {
            if !known(*id) {
                return Err(MemberError::NotFound);
            }
            let parsed = parse_peer_urls(peer_urls)?;
            let urls: Vec<String> = parsed.iter().map(url_text).collect();
            if urls_taken(&urls, Some(*id)) {
                return Err(MemberError::PeerUrlExists);
            }
            let learner = learner_now(*id);
            let kind = if learner { ChangeKind::AddLearner } else { ChangeKind::AddVoter };
            Ok((MemberChange { kind, member: *id }, ctx(OpKind::Update, *id, learner, urls)))
        }
        MemberOp::Promote { id } => {
            if !known(*id) {
                return Err(MemberError::NotFound);
            }
            if !learner_now(*id) {
                return Err(MemberError::NotLearner);
            }
            let matched = (j.matched)(*id).unwrap_or(0);
            if (matched as f64) < (j.leader_index as f64) * PROMOTE_READY_SHARE {
                return Err(MemberError::LearnerNotReady);
            }
            Ok((MemberChange { kind: ChangeKind::AddVoter, member: *id }, ctx(OpKind::Promote, *id, false, Vec::new())))
        }
    }
}

impl MemberTable {
    /// Applies a committed conf change that Raft accepted. `fallback` gives
    /// the peer URLs `--initial-cluster` lists for a member (the bootstrap
    /// entries carry no context). Returns the decoded context, if any.
    pub fn apply(
        &mut self,
        changes: &[MemberChange],
        context: &[u8],
        fallback: &dyn Fn(MemberId) -> Vec<String>,
    ) -> Option<Context> {
        let Some(ctx) = Context::decode(context) else {
            for c in changes {
                match c.kind {
                    ChangeKind::AddVoter | ChangeKind::AddLearner => {
                        self.removed.remove(&c.member);
                        let learner = c.kind == ChangeKind::AddLearner;
                        let m = self
                            .members
                            .entry(c.member)
                            .or_insert_with(|| Member { peer_urls: fallback(c.member), learner });
                        m.learner = learner;
                    }
                    ChangeKind::Remove => {
                        self.members.remove(&c.member);
                        self.removed.insert(c.member);
                    }
                }
            }
            return None;
        };
        if ctx.cluster.get() != 0 {
            self.cluster = Some(ctx.cluster);
        }
        match ctx.op {
            OpKind::Add => {
                self.removed.remove(&ctx.member);
                self.members.insert(ctx.member, Member { peer_urls: ctx.peer_urls.clone(), learner: ctx.learner });
            }
            OpKind::Remove => {
                self.members.remove(&ctx.member);
                self.removed.insert(ctx.member);
                self.published.remove(&ctx.member.get());
            }
            OpKind::Update => {
                let m = self.members.entry(ctx.member).or_default();
                m.peer_urls = ctx.peer_urls.clone();
            }
            OpKind::Promote => {
                let m = self
                    .members
                    .entry(ctx.member)
                    .or_insert_with(|| Member { peer_urls: fallback(ctx.member), learner: false });
                m.learner = false;
            }
        }
        Some(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(voters: &[u64], learners: &[u64]) -> Membership {
        Membership {
            voters: voters.iter().map(|v| MemberId(*v)).collect(),
            learners: learners.iter().map(|v| MemberId(*v)).collect(),
            ..Membership::default()
        }
    }

    fn table(members: &[(u64, &str, bool)]) -> MemberTable {
        let mut t = MemberTable::default();
        for (id, url, learner) in members {
            t.members.insert(MemberId(*id), Member { peer_urls: vec![url.to_string()], learner: *learner });
        }
        t
    }

    fn judge<'a>(m: &'a Membership, matched: &'a dyn Fn(MemberId) -> Option<u64>) -> Judge<'a> {
        Judge {
            membership: m,
            token: "tok",
            cluster: ClusterId(7),
            origin: MemberId(1),
            request: 9,
            matched,
            leader_index: 100,
        }
    }

    #[test]
    fn contexts_round_trip_and_garbage_is_refused() {
        let c = Context {
            op: OpKind::Update,
            member: MemberId(42),
            learner: true,
            peer_urls: vec!["http://127.0.0.9:2380".into(), "https://a:1".into()],
            cluster: ClusterId(5),
            origin: MemberId(3),
            request: 77,
        };
        let bytes = c.encode();
        assert_eq!(Context::decode(&bytes), Some(c));
        for cut in 0..bytes.len() {
            assert_eq!(Context::decode(&bytes[..cut]), None, "prefix of {cut} bytes");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Context::decode(&extra), None);
        let mut bad_op = bytes.clone();
        bad_op[5] = 9;
        assert_eq!(Context::decode(&bad_op), None);
        assert_eq!(Context::decode(b""), None);
    }

    #[test]
    fn add_derives_the_id_from_the_urls_and_refuses_what_etcd_refuses() {
        let m = membership(&[1, 2], &[]);
        let t = table(&[(1, "http://127.0.0.1:2380", false), (2, "http://127.0.0.2:2380", false)]);
        let none = |_| None;
        let j = judge(&m, &none);
        let add =
            |urls: &[&str], learner| MemberOp::Add { peer_urls: urls.iter().map(|u| u.to_string()).collect(), learner };
        let (change, ctx) = plan(&t, &add(&["http://127.0.0.3:2380"], true), &j).expect("add");
        let url = Url::parse("http://127.0.0.3:2380").expect("url");
        assert_eq!(
            change,
            MemberChange { kind: ChangeKind::AddLearner, member: crate::config::member_id_for(&[url], "tok") }
        );
        assert_eq!(ctx.peer_urls, vec!["http://127.0.0.3:2380".to_string()]);
        assert_eq!(ctx.cluster, ClusterId(7));
        assert_eq!(plan(&t, &add(&["http://127.0.0.2:2380"], false), &j).err(), Some(MemberError::PeerUrlExists));
        assert_eq!(plan(&t, &add(&[], false), &j).err(), Some(MemberError::BadUrls));
        assert_eq!(plan(&t, &add(&["ftp://x:1"], false), &j).err(), Some(MemberError::BadUrls));
        assert_eq!(plan(&t, &add(&["not a url"], false), &j).err(), Some(MemberError::BadUrls));
        let with_learner = membership(&[1, 2], &[3]);
        let j2 = judge(&with_learner, &none);
        assert_eq!(plan(&t, &add(&["http://127.0.0.4:2380"], true), &j2).err(), Some(MemberError::TooManyLearners));
        assert!(plan(&t, &add(&["http://127.0.0.4:2380"], false), &j2).is_ok());
    }

    #[test]
    fn promote_needs_a_learner_in_sync_and_remove_a_member() {
        let m = membership(&[1], &[5]);
        let t = table(&[(1, "http://127.0.0.1:2380", false), (5, "http://127.0.0.5:2380", true)]);
        let behind = |id: MemberId| (id == MemberId(5)).then_some(10);
        let j = judge(&m, &behind);
        assert_eq!(plan(&t, &MemberOp::Promote { id: MemberId(5) }, &j).err(), Some(MemberError::LearnerNotReady));
        assert_eq!(plan(&t, &MemberOp::Promote { id: MemberId(1) }, &j).err(), Some(MemberError::NotLearner));
        assert_eq!(plan(&t, &MemberOp::Promote { id: MemberId(8) }, &j).err(), Some(MemberError::NotFound));
        let caught_up = |_| Some(95);
        let j = judge(&m, &caught_up);
        let (change, _) = plan(&t, &MemberOp::Promote { id: MemberId(5) }, &j).expect("promote");
        assert_eq!(change.kind, ChangeKind::AddVoter);
        assert_eq!(plan(&t, &MemberOp::Remove { id: MemberId(8) }, &j).err(), Some(MemberError::NotFound));
        let update = MemberOp::Update { id: MemberId(5), peer_urls: vec!["http://127.0.0.1:2380".into()] };
        assert_eq!(plan(&t, &update, &j).err(), Some(MemberError::PeerUrlExists));
        let update = MemberOp::Update { id: MemberId(5), peer_urls: vec!["http://127.0.0.6:2380".into()] };
        let (change, ctx) = plan(&t, &update, &j).expect("update");
        // An update keeps the role: a no-op for Raft.
        assert_eq!(change.kind, ChangeKind::AddLearner);
        assert!(ctx.learner);
    }

    #[test]
    fn the_table_follows_the_committed_changes() {
        let mut t = MemberTable::default();
        let fallback = |id: MemberId| vec![format!("http://127.0.0.{id}:2380")];
        // Bootstrap entries carry no context: URLs come from the flags.
        let add = |id| MemberChange { kind: ChangeKind::AddVoter, member: MemberId(id) };
        assert_eq!(t.apply(&[add(1)], b"", &fallback), None);
        t.apply(&[add(2)], b"", &fallback);
        let ctx = Context {
            op: OpKind::Add,
            member: MemberId(9),
            learner: true,
            peer_urls: vec!["http://127.0.0.9:2390".into()],
            cluster: ClusterId(77),
            origin: MemberId(1),
            request: 1,
        };
        let got =
            t.apply(&[MemberChange { kind: ChangeKind::AddLearner, member: MemberId(9) }], &ctx.encode(), &fallback);
        assert_eq!(got.as_ref(), Some(&ctx));
        assert_eq!(t.cluster, Some(ClusterId(77)));
        assert_eq!(t.members[&MemberId(9)], Member { peer_urls: vec!["http://127.0.0.9:2390".into()], learner: true });
        let promote = Context { op: OpKind::Promote, learner: false, peer_urls: vec![], ..ctx.clone() };
        t.apply(&[add(9)], &promote.encode(), &fallback);
        assert!(!t.members[&MemberId(9)].learner);
        let remove = Context { op: OpKind::Remove, member: MemberId(1), ..promote };
        t.apply(&[MemberChange { kind: ChangeKind::Remove, member: MemberId(1) }], &remove.encode(), &fallback);
        assert_eq!(t.members.keys().copied().collect::<Vec<_>>(), vec![MemberId(2), MemberId(9)]);
        assert_eq!(t.removed.iter().copied().collect::<Vec<_>>(), vec![MemberId(1)]);
        assert_eq!(t.members[&MemberId(2)].peer_urls, vec!["http://127.0.0.2:2380".to_string()]);
    }
}
