//! Dispatch of etcd's gRPC methods and the plain HTTP endpoints of the
//! client port.

use std::rc::Rc;

use bytes::Bytes;
use prost::Message;

use super::backend::{Backend, MemberRequest};
use super::grpc::{
    CallContext, Code, HttpReply, LocalBoxFuture, MethodKind, RequestStream, ResponseSink, Service, Status,
};
use super::kv::{self, Limits};
use super::proto::etcdserverpb as pb;
use crate::types::MemberId;

/// The server version corekv reports: an etcd 3.5 release, so clients
/// (kube-apiserver among them) enable the features they gate on it.
pub const SERVER_VERSION: &str = "3.5.17";
/// The room etcd leaves for gRPC framing above `--max-request-bytes`.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The cluster version corekv reports.
pub const CLUSTER_VERSION: &str = "3.5.0";

/// etcd's services and methods; `true` marks a streaming method.
const METHODS: &[(&str, &[(&str, bool)])] = &[
    (
        "etcdserverpb.KV",
        &[("Range", false), ("Put", false), ("DeleteRange", false), ("Txn", false), ("Compact", false)],
    ),
    ("etcdserverpb.Watch", &[("Watch", true)]),
    (
        "etcdserverpb.Lease",
        &[
            ("LeaseGrant", false),
            ("LeaseRevoke", false),
            ("LeaseKeepAlive", true),
            ("LeaseTimeToLive", false),
            ("LeaseLeases", false),
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            ("MemberAdd", false),
            ("MemberRemove", false),
            ("MemberUpdate", false),
            ("MemberList", false),
            ("MemberPromote", false),
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            ("Alarm", false),
            ("Status", false),
            ("Defragment", false),
            ("Hash", false),
            ("HashKV", false),
            ("Snapshot", true),
            ("MoveLeader", false),
            ("Downgrade", false),
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            ("AuthEnable", false),
            ("AuthDisable", false),
            ("AuthStatus", false),
            ("Authenticate", false),
            ("UserAdd", false),
            ("UserGet", false),
            ("UserList", false),
            ("UserDelete", false),
            ("UserChangePassword", false),
            ("UserGrantRole", false),
            ("UserRevokeRole", false),
            ("RoleAdd", false),
            ("RoleGet", false),
            ("RoleList", false),
            ("RoleDelete", false),
            ("RoleGrantPermission", false),
            ("RoleRevokePermission", false),
        ],
    ),
    (
        "v3electionpb.Election",
        &[("Campaign", false), ("Proclaim", false), ("Leader", false), ("Observe", true), ("Resign", false)],
    ),
    ("v3lockpb.Lock", &[("Lock", false), ("Unlock", false)]),
];

/// Splits "/pkg.Service/Method".
fn split(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

fn lookup(path: &str) -> Option<bool> {
    let (service, method) = split(path)?;
    let (_, methods) = METHODS.iter().find(|(s, _)| *s == service)?;
    methods.iter().find(|(m, _)| *m == method).map(|(_, streaming)| *streaming)
}

fn not_yet(path: &str) -> Status {
    Status::unimplemented(format!("corekv: {} is not implemented yet", path.trim_start_matches('/')))
}

/// etcd's gRPC status for a failed cluster operation.
fn cluster_error(e: super::backend::ClusterError) -> Status {
    use super::backend::ClusterError as E;
    match e {
        E::NotLeader => Status::new(Code::FailedPrecondition, "etcdserver: not leader"),
        E::BadTransferee => Status::new(Code::FailedPrecondition, "etcdserver: bad leader transferee"),
        E::TransferTimeout => {
            Status::new(Code::Unknown, "etcdserver: request timed out, leader transfer took too long")
        }
        E::Stopped => Status::unavailable("etcdserver: server stopped"),
        E::MemberNotFound => Status::new(Code::NotFound, "etcdserver: member not found"),
        E::MemberExists => Status::new(Code::FailedPrecondition, "etcdserver: member ID already exist"),
        E::PeerUrlExists => Status::new(Code::FailedPrecondition, "etcdserver: Peer URLs already exists"),
        E::BadUrls => Status::new(Code::InvalidArgument, "etcdserver: given member URLs are invalid"),
        E::NotLearner => Status::new(Code::FailedPrecondition, "etcdserver: can only promote a learner member"),
        E::LearnerNotReady => Status::new(
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        ),
        E::TooManyLearners => Status::new(Code::FailedPrecondition, "etcdserver: too many learner members in cluster"),
        E::NoLeader => Status::unavailable("etcdserver: no leader"),
        E::Timeout => Status::unavailable("etcdserver: request timed out"),
    }
}

fn pb_member(m: super::backend::MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

/// What etcd serves a learner's clients: Status and serializable ranges.
fn learner_may_serve(path: &str, body: &Bytes) -> bool {
    match path {
        "/etcdserverpb.Maintenance/Status" => true,
        "/etcdserverpb.KV/Range" => pb::RangeRequest::decode(body.clone()).is_ok_and(|r| r.serializable),
        _ => false,
    }
}

fn not_for_learner() -> Status {
    Status::unavailable("etcdserver: rpc not supported for learner")
}

/// The etcd services over one reactor's [`Backend`].
pub struct EtcdService<B: Backend> {
    backend: B,
    limits: Limits,
}

impl<B: Backend> EtcdService<B> {
    /// Services over `backend` with the given request limits.
    pub fn new(backend: B, limits: Limits) -> Self {
        EtcdService { backend, limits }
    }

    async fn call(self: Rc<Self>, path: String, body: Bytes) -> Result<Bytes, Status> {
        let b = &self.backend;
        if b.is_learner() && !learner_may_serve(&path, &body) && lookup(&path).is_some() {
            return Err(not_for_learner());
        }
        match path.as_str() {
            "/etcdserverpb.KV/Range" => kv::range(b, body).await,
            "/etcdserverpb.KV/Put" => kv::put(b, body, &self.limits).await,
            "/etcdserverpb.KV/DeleteRange" => kv::delete_range(b, body, &self.limits).await,
            "/etcdserverpb.KV/Txn" => kv::txn(b, body, &self.limits).await,
            "/etcdserverpb.KV/Compact" => kv::compact(b, body).await,
            "/etcdserverpb.Maintenance/Status" => Ok(self.status()),
            "/etcdserverpb.Cluster/MemberList" => {
                let _: pb::MemberListRequest = super::kv::decode(&body)?;
                let members = b.members().into_iter().map(pb_member).collect();
                Ok(Bytes::from(pb::MemberListResponse { header: self.header(), members }.encode_to_vec()))
            }
            "/etcdserverpb.Cluster/MemberAdd" => {
                let r: pb::MemberAddRequest = super::kv::decode(&body)?;
                let req = MemberRequest::Add { peer_urls: r.peer_ur_ls, learner: r.is_learner };
                let done = b.member_change(req).await.map_err(cluster_error)?;
                let members = done.members.into_iter().map(pb_member).collect();
                let member = Some(pb_member(done.member));
                Ok(Bytes::from(pb::MemberAddResponse { header: self.header(), member, members }.encode_to_vec()))
            }
            "/etcdserverpb.Cluster/MemberRemove" => {
                let r: pb::MemberRemoveRequest = super::kv::decode(&body)?;
                let done =
                    b.member_change(MemberRequest::Remove { id: MemberId(r.id) }).await.map_err(cluster_error)?;
                let members = done.members.into_iter().map(pb_member).collect();
                Ok(Bytes::from(pb::MemberRemoveResponse { header: self.header(), members }.encode_to_vec()))
            }
            "/etcdserverpb.Cluster/MemberUpdate" => {
                let r: pb::MemberUpdateRequest = super::kv::decode(&body)?;
                let req = MemberRequest::Update { id: MemberId(r.id), peer_urls: r.peer_ur_ls };
                let done = b.member_change(req).await.map_err(cluster_error)?;
                let members = done.members.into_iter().map(pb_member).collect();
                Ok(Bytes::from(pb::MemberUpdateResponse { header: self.header(), members }.encode_to_vec()))
            }
            "/etcdserverpb.Cluster/MemberPromote" => {
                let r: pb::MemberPromoteRequest = super::kv::decode(&body)?;
                let done =
                    b.member_change(MemberRequest::Promote { id: MemberId(r.id) }).await.map_err(cluster_error)?;
                let members = done.members.into_iter().map(pb_member).collect();
                Ok(Bytes::from(pb::MemberPromoteResponse { header: self.header(), members }.encode_to_vec()))
            }
            "/etcdserverpb.Maintenance/MoveLeader" => {
                let r: pb::MoveLeaderRequest = super::kv::decode(&body)?;
                b.move_leader(r.target_id).await.map_err(cluster_error)?;
                Ok(Bytes::from(pb::MoveLeaderResponse { header: self.header() }.encode_to_vec()))
            }
            "/etcdserverpb.Maintenance/HashKV" => {
                let r: pb::HashKvRequest = super::kv::decode(&body)?;
                let (hash, compact_revision, rev) = b.hash_kv(r.revision).await.map_err(super::kv::apply_error)?;
                let id = b.identity();
                let header = Some(pb::ResponseHeader {
                    cluster_id: id.cluster_id,
                    member_id: id.member_id,
                    revision: rev,
                    raft_term: b.raft_term(),
                });
                Ok(Bytes::from(
                    pb::HashKvResponse { header, hash, compact_revision, ..Default::default() }.encode_to_vec(),
                ))
            }
            "/etcdserverpb.Lease/LeaseGrant" => super::lease::grant(b, body).await,
            "/etcdserverpb.Lease/LeaseRevoke" => super::lease::revoke(b, body).await,
            "/etcdserverpb.Lease/LeaseTimeToLive" => super::lease::time_to_live(b, body).await,
            "/etcdserverpb.Lease/LeaseLeases" => super::lease::leases(b, body).await,
            "/v3electionpb.Election/Campaign" => super::election::campaign(b, body, &self.limits).await,
            "/v3electionpb.Election/Proclaim" => super::election::proclaim(b, body, &self.limits).await,
            "/v3electionpb.Election/Leader" => super::election::leader(b, body).await,
            "/v3electionpb.Election/Resign" => super::election::resign(b, body).await,
            "/v3lockpb.Lock/Lock" => super::lock::lock(b, body, &self.limits).await,
            "/v3lockpb.Lock/Unlock" => super::lock::unlock(b, body).await,
            other => Err(not_yet(other)),
        }
    }

    /// A response header at the current revision.
    fn header(&self) -> Option<pb::ResponseHeader> {
        let s = self.backend.status();
        let id = self.backend.identity();
        Some(pb::ResponseHeader {
            cluster_id: id.cluster_id,
            member_id: id.member_id,
            revision: s.revision,
            raft_term: s.raft_term,
        })
    }

    fn status(&self) -> Bytes {
        let s = self.backend.status();
        let id = self.backend.identity();
        let resp = pb::StatusResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: id.cluster_id,
                member_id: id.member_id,
                revision: s.revision,
                raft_term: s.raft_term,
            }),
            version: SERVER_VERSION.to_string(),
            db_size: s.db_size as i64,
            leader: s.leader,
            raft_index: s.raft_index,
            raft_term: s.raft_term,
            raft_applied_index: s.raft_applied_index,
            errors: Vec::new(),
            db_size_in_use: s.db_size_in_use as i64,
            is_learner: self.backend.is_learner(),
            ..Default::default()
        };
        Bytes::from(resp.encode_to_vec())
    }

    fn metrics(&self) -> String {
        let s = self.backend.status();
        let id = self.backend.identity();
        let has_leader = u8::from(s.leader != 0);
        let is_leader = u8::from(s.leader == id.member_id);
        format!(
            "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader {has_leader}\n\
             # TYPE etcd_server_is_leader gauge\netcd_server_is_leader {is_leader}\n\
             # TYPE etcd_server_version gauge\netcd_server_version{{server_version=\"{SERVER_VERSION}\"}} 1\n\
             # TYPE etcd_mvcc_db_total_size_in_bytes gauge\netcd_mvcc_db_total_size_in_bytes {}\n\
             # TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge\netcd_mvcc_db_total_size_in_use_in_bytes {}\n\
             # TYPE etcd_debugging_mvcc_current_revision gauge\netcd_debugging_mvcc_current_revision {}\n\
             # TYPE etcd_server_proposals_committed_total gauge\netcd_server_proposals_committed_total {}\n\
             # TYPE etcd_server_proposals_applied_total gauge\netcd_server_proposals_applied_total {}\n",
            s.db_size, s.db_size_in_use, s.revision, s.raft_index, s.raft_applied_index
        )
    }
}

impl<B: Backend> Service for EtcdService<B> {
    fn method_kind(&self, path: &str) -> MethodKind {
        match lookup(path) {
            Some(true) => MethodKind::Streaming,
            Some(false) => MethodKind::Unary,
            None => MethodKind::Unknown,
        }
    }

    fn has_service(&self, service: &str) -> bool {
        METHODS.iter().any(|(s, _)| *s == service)
    }

    fn unary(
        self: Rc<Self>,
        path: String,
        request: Bytes,
        _ctx: CallContext,
    ) -> LocalBoxFuture<'static, Result<Bytes, Status>> {
        Box::pin(self.call(path, request))
    }

    fn streaming(
        self: Rc<Self>,
        path: String,
        requests: RequestStream,
        responses: ResponseSink,
        _ctx: CallContext,
    ) -> LocalBoxFuture<'static, Status> {
        Box::pin(async move {
            let b = &self.backend;
            if b.is_learner() && lookup(&path).is_some() {
                return not_for_learner();
            }
            match path.as_str() {
                "/etcdserverpb.Watch/Watch" => {
                    // etcd fragments above its gRPC message limit, which is
                    // --max-request-bytes plus gRPC's overhead allowance.
                    let fragment_bytes = self.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
                    super::watch::watch(b, requests, responses, fragment_bytes).await
                }
                "/etcdserverpb.Lease/LeaseKeepAlive" => super::lease::keep_alive(b, requests, responses).await,
                "/v3electionpb.Election/Observe" => super::election::observe(b, requests, responses).await,
                _ => not_yet(&path),
            }
        })
    }

    fn http_get(&self, target: &str) -> Option<HttpReply> {
        let path = target.split('?').next().unwrap_or(target);
        let json = "application/json";
        let (content_type, body) = match path {
            "/health" | "/livez" | "/readyz" => (json, r#"{"health":"true","reason":""}"#.to_string()),
            "/version" => (json, format!(r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{CLUSTER_VERSION}"}}"#)),
            "/metrics" => ("text/plain; version=0.0.4", self.metrics()),
            _ => return None,
        };
        Some(HttpReply { status: 200, content_type, body: Bytes::from(body) })
    }
}
