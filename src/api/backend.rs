//! What the etcd services need from the node: the boundary between `api`
//! (requests and replies) and `node` (the wiring of log, shards and
//! reactors). One implementation per reactor; nothing here is `Send`.

use crate::api::grpc::LocalBoxFuture;
use crate::apply::command::{Command, Range};
use crate::apply::range::RangeResult;
use crate::apply::{ApplyError, Outcome};

/// The result of a Range served by the shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The store's revision the read saw (etcd's header revision).
    pub revision: i64,
    /// The merged result.
    pub result: RangeResult,
}

/// Who this member is, for response headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster's ID.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
}

/// Figures for Maintenance.Status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusInfo {
    /// The store's revision.
    pub revision: i64,
    /// Bytes the store holds (all shards).
    pub db_size: u64,
    /// Bytes in use (all shards).
    pub db_size_in_use: u64,
    /// Last log index.
    pub raft_index: u64,
    /// Last log index applied by every shard.
    pub raft_applied_index: u64,
    /// Current Raft term.
    pub raft_term: u64,
    /// The leader's member ID (0: none).
    pub leader: u64,
}

/// The node as the services see it.
pub trait Backend: 'static {
    /// Cluster and member ID.
    fn identity(&self) -> Identity;
    /// The current Raft term, for response headers.
    fn raft_term(&self) -> u64;
    /// Proposes a write and waits for its outcome (durable and applied).
    fn propose(&self, cmd: Command) -> LocalBoxFuture<'static, Outcome>;
    /// Serves a Range; `linearizable` waits for every write acknowledged
    /// before it.
    fn range(&self, req: Range, linearizable: bool) -> LocalBoxFuture<'static, Result<ReadResult, ApplyError>>;
    /// Status figures.
    fn status(&self) -> StatusInfo;
}
