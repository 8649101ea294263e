//! etcd's KV service: request checks, translation between protobuf and the
//! apply engine's commands, and response assembly.
//!
//! The checks are etcd's (`v3rpc/key.go`): they run before anything is
//! proposed, so a bad request writes nothing and takes no revision.

use bytes::Bytes;
use prost::Message;

use super::backend::{Backend, Identity};
use super::grpc::{Code, Status};
use super::proto::etcdserverpb as pb;
use super::proto::mvccpb;
use crate::apply::command::{self as cmd, Command};
use crate::apply::range::RangeResult;
use crate::apply::{ApplyError, Outcome, Response};
use crate::mvcc::KeyValue;

/// Request limits from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--max-request-bytes`: the largest write request.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`: the most ops in one branch of a Txn.
    pub max_txn_ops: usize,
}

/// etcd's gRPC error for a failed command.
pub fn apply_error(e: ApplyError) -> Status {
    let code = match e {
        ApplyError::KeyNotFound => Code::InvalidArgument,
        ApplyError::LeaseNotFound => Code::NotFound,
        ApplyError::Compacted | ApplyError::FutureRev => Code::OutOfRange,
        ApplyError::Stopped | ApplyError::NoLeader | ApplyError::Timeout => Code::Unavailable,
        ApplyError::LeaseExists => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}

fn empty_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

pub(super) fn decode<M: Message + Default>(body: &Bytes) -> Result<M, Status> {
    M::decode(body.clone()).map_err(|e| Status::internal(format!("grpc: error unmarshalling request: {e}")))
}

pub(super) fn encode<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

/// A write request's size check, as etcd applies it to what it proposes.
fn check_size(body: &Bytes, limits: &Limits) -> Result<(), Status> {
    if body.len() > limits.max_request_bytes {
        return Err(Status::invalid_argument("etcdserver: request is too large"));
    }
    Ok(())
}

fn check_range(r: &pb::RangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    if !(0..=2).contains(&r.sort_order) || !(0..=4).contains(&r.sort_target) {
        return Err(Status::invalid_argument("etcdserver: invalid sort option"));
    }
    Ok(())
}

fn check_put(r: &pb::PutRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(())
}

fn check_delete(r: &pb::DeleteRangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(empty_key());
    }
    Ok(())
}

fn check_txn(t: &pb::TxnRequest, max_ops: usize) -> Result<(), Status> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_ops {
        return Err(Status::invalid_argument("etcdserver: too many operations in txn request"));
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(empty_key());
    }
    // A nested Txn gets what its parent's ops left of the limit, as in etcd.
    let nested_max = max_ops - ops;
    for op in t.success.iter().chain(t.failure.iter()) {
        match &op.request {
            Some(pb::request_op::Request::RequestRange(r)) => check_range(r)?,
            Some(pb::request_op::Request::RequestPut(r)) => check_put(r)?,
            Some(pb::request_op::Request::RequestDeleteRange(r)) => check_delete(r)?,
            Some(pb::request_op::Request::RequestTxn(r)) => check_txn(r, nested_max)?,
            // An empty op, as etcd answers it.
            None => return Err(Status::invalid_argument("etcdserver: key not found")),
        }
    }
    Ok(())
}

fn duplicate_key() -> Status {
    Status::invalid_argument("etcdserver: duplicate key given in txn request")
}

/// A deleted interval as etcd's duplicate check sees it: `[start, end)` of
/// byte strings where an empty end makes a single key. etcd compares these
/// literally, so a `"\0"` range end makes an empty interval here.
struct Deleted {
    start: Bytes,
    end: Bytes,
}

impl Deleted {
    fn hits(&self, key: &[u8]) -> bool {
        if self.end.is_empty() {
            key == self.start.as_ref()
        } else {
            key >= self.start.as_ref() && key < self.end.as_ref()
        }
    }
}

/// etcd's rule that no key is written twice in one Txn path: returns the
/// keys put and the intervals deleted by `ops` and their nested Txns.
fn check_intervals(ops: &[pb::RequestOp]) -> Result<(Vec<Bytes>, Vec<Deleted>), Status> {
    let mut dels: Vec<Deleted> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(pb::request_op::Request::RequestDeleteRange(d)) => {
                Some(Deleted { start: d.key.clone(), end: d.range_end.clone() })
            }
            _ => None,
        })
        .collect();
    let mut puts: Vec<Bytes> = Vec::new();
    let deleted = |dels: &[Deleted], k: &[u8]| dels.iter().any(|d| d.hits(k));
    for op in ops {
        let Some(pb::request_op::Request::RequestTxn(t)) = &op.request else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(duplicate_key());
            }
            puts.push(k.clone());
        }
        for k in &puts_else {
            // The two branches exclude each other: the same key in both is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(duplicate_key());
            }
            puts.push(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(pb::request_op::Request::RequestPut(p)) = &op.request else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(duplicate_key());
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

fn range_cmd(r: &pb::RangeRequest) -> cmd::Range {
    cmd::Range {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: r.limit,
        revision: r.revision,
        sort_order: r.sort_order,
        sort_target: r.sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

fn put_cmd(p: &pb::PutRequest) -> cmd::Put {
    cmd::Put {
        key: p.key.to_vec(),
        value: p.value.to_vec(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

fn delete_cmd(d: &pb::DeleteRangeRequest) -> cmd::DeleteRange {
    cmd::DeleteRange { key: d.key.to_vec(), range_end: d.range_end.to_vec(), prev_kv: d.prev_kv }
}

fn compare_cmd(c: &pb::Compare) -> cmd::Compare {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        1 => cmd::CompareResult::Greater,
        2 => cmd::CompareResult::Less,
        3 => cmd::CompareResult::NotEqual,
        _ => cmd::CompareResult::Equal,
    };
    // The target decides what is compared; a union of another kind counts
    // as the zero value, as in etcd.
    let value = match (c.target, &c.target_union) {
        (1, Some(U::CreateRevision(v))) => cmd::CompareValue::CreateRevision(*v),
        (1, _) => cmd::CompareValue::CreateRevision(0),
        (2, Some(U::ModRevision(v))) => cmd::CompareValue::ModRevision(*v),
        (2, _) => cmd::CompareValue::ModRevision(0),
        (3, Some(U::Value(v))) => cmd::CompareValue::Value(v.to_vec()),
        (3, _) => cmd::CompareValue::Value(Vec::new()),
        (4, Some(U::Lease(v))) => cmd::CompareValue::Lease(*v),
        (4, _) => cmd::CompareValue::Lease(0),
        (_, Some(U::Version(v))) => cmd::CompareValue::Version(*v),
        (_, _) => cmd::CompareValue::Version(0),
    };
    cmd::Compare { result, value, key: c.key.to_vec(), range_end: c.range_end.to_vec() }
}

fn op_cmd(op: &pb::RequestOp) -> cmd::Op {
    match &op.request {
        Some(pb::request_op::Request::RequestRange(r)) => cmd::Op::Range(range_cmd(r)),
        Some(pb::request_op::Request::RequestPut(p)) => cmd::Op::Put(put_cmd(p)),
        Some(pb::request_op::Request::RequestDeleteRange(d)) => cmd::Op::DeleteRange(delete_cmd(d)),
        Some(pb::request_op::Request::RequestTxn(t)) => cmd::Op::Txn(txn_cmd(t)),
        // Refused by check_txn before translation.
        None => cmd::Op::Range(cmd::Range::default()),
    }
}

fn txn_cmd(t: &pb::TxnRequest) -> cmd::Txn {
    cmd::Txn {
        compare: t.compare.iter().map(compare_cmd).collect(),
        success: t.success.iter().map(op_cmd).collect(),
        failure: t.failure.iter().map(op_cmd).collect(),
    }
}

/// Builds response headers.
#[derive(Clone, Copy)]
pub(super) struct Headers {
    id: Identity,
    term: u64,
}

impl Headers {
    pub(super) fn of<B: Backend>(b: &B) -> Headers {
        Headers { id: b.identity(), term: b.raft_term() }
    }

    pub(super) fn at(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.id.cluster_id,
            member_id: self.id.member_id,
            revision,
            raft_term: self.term,
        })
    }
}

/// etcd sets only the revision in the headers of a Txn's inner responses.
fn inner_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision, ..Default::default() })
}

pub(super) fn kv_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Bytes::from(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes::from(kv.value),
        lease: kv.lease,
    }
}

fn range_pb(result: RangeResult, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: result.kvs.into_iter().map(kv_pb).collect(),
        more: result.more,
        count: result.count,
    }
}

/// Converts a Txn's op responses, giving each the header etcd gives it:
/// the Txn's revision once something in it has written, the revision
/// before it until then.
fn ops_pb(responses: Vec<Response>, rev_before: i64, rev_after: i64, wrote: &mut bool) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response as R;
    responses
        .into_iter()
        .map(|r| {
            let response = match r {
                Response::Put { prev_kv } => {
                    *wrote = true;
                    R::ResponsePut(pb::PutResponse { header: inner_header(rev_after), prev_kv: prev_kv.map(kv_pb) })
                }
                Response::Delete { deleted, prev_kvs } => {
                    *wrote |= deleted > 0;
                    let rev = if *wrote { rev_after } else { rev_before };
                    R::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: inner_header(rev),
                        deleted,
                        prev_kvs: prev_kvs.into_iter().map(kv_pb).collect(),
                    })
                }
                Response::Range { result, rev } => R::ResponseRange(range_pb(result, inner_header(rev))),
                Response::Txn { succeeded, responses } => {
                    let inner = ops_pb(responses, rev_before, rev_after, wrote);
                    // etcd leaves a nested Txn's header empty.
                    R::ResponseTxn(pb::TxnResponse {
                        header: Some(pb::ResponseHeader::default()),
                        succeeded,
                        responses: inner,
                    })
                }
                // Not an op of a Txn.
                Response::Compact | Response::Lease | Response::Published => {
                    R::ResponseRange(pb::RangeResponse::default())
                }
            };
            pb::ResponseOp { response: Some(response) }
        })
        .collect()
}

fn outcome(o: Outcome) -> Result<(i64, Response), Status> {
    o.result.map(|r| (o.revision, r)).map_err(apply_error)
}

/// KV.Range.
pub async fn range<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: pb::RangeRequest = decode(&body)?;
    check_range(&r)?;
    let h = Headers::of(b);
    let read = b.range(range_cmd(&r), !r.serializable).await.map_err(apply_error)?;
    Ok(encode(&range_pb(read.result, h.at(read.revision))))
}

/// KV.Put.
pub async fn put<B: Backend>(b: &B, body: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    check_size(&body, limits)?;
    let p: pb::PutRequest = decode(&body)?;
    check_put(&p)?;
    let h = Headers::of(b);
    let (rev, resp) = outcome(b.propose(Command::Put(put_cmd(&p))).await)?;
    let prev_kv = match resp {
        Response::Put { prev_kv } => prev_kv.map(kv_pb),
        _ => None,
    };
    Ok(encode(&pb::PutResponse { header: h.at(rev), prev_kv }))
}

/// KV.DeleteRange.
pub async fn delete_range<B: Backend>(b: &B, body: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    check_size(&body, limits)?;
    let d: pb::DeleteRangeRequest = decode(&body)?;
    check_delete(&d)?;
    let h = Headers::of(b);
    let (rev, resp) = outcome(b.propose(Command::DeleteRange(delete_cmd(&d))).await)?;
    let (deleted, prev_kvs) = match resp {
        Response::Delete { deleted, prev_kvs } => (deleted, prev_kvs),
        _ => (0, Vec::new()),
    };
    Ok(encode(&pb::DeleteRangeResponse {
        header: h.at(rev),
        deleted,
        prev_kvs: prev_kvs.into_iter().map(kv_pb).collect(),
    }))
}

/// A Txn with no write in either branch at any depth.
fn is_read_only(t: &pb::TxnRequest) -> bool {
    t.success.iter().chain(t.failure.iter()).all(|op| match &op.request {
        Some(pb::request_op::Request::RequestRange(_)) => true,
        Some(pb::request_op::Request::RequestTxn(inner)) => is_read_only(inner),
        _ => false,
    })
}

/// KV.Txn.
pub async fn txn<B: Backend>(b: &B, body: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    let t: pb::TxnRequest = decode(&body)?;
    // etcd serves a read-only Txn without proposing it, so only writing
    // Txns meet the request size limit.
    if !is_read_only(&t) {
        check_size(&body, limits)?;
    }
    check_txn(&t, limits.max_txn_ops)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    let h = Headers::of(b);
    // Read-only Txns go through the log too: their compares and reads then
    // happen at one point of the total order, which is what etcd promises.
    let (rev, resp) = outcome(b.propose(Command::Txn(txn_cmd(&t))).await)?;
    let Response::Txn { succeeded, responses } = resp else {
        return Err(Status::internal("corekv: a Txn produced a response of another kind"));
    };
    let mut wrote = false;
    // A Txn that wrote has its own revision; one that did not stays at the
    // revision before it.
    let rev_before = if writes_in(&responses) { rev - 1 } else { rev };
    let responses = ops_pb(responses, rev_before, rev, &mut wrote);
    Ok(encode(&pb::TxnResponse { header: h.at(rev), succeeded, responses }))
}

/// Whether a merged Txn response shows any write.
fn writes_in(responses: &[Response]) -> bool {
    responses.iter().any(|r| match r {
        Response::Put { .. } => true,
        Response::Delete { deleted, .. } => *deleted > 0,
        Response::Txn { responses, .. } => writes_in(responses),
        _ => false,
    })
}

/// KV.Compact.
pub async fn compact<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let c: pb::CompactionRequest = decode(&body)?;
    let h = Headers::of(b);
    let (rev, _) =
        outcome(b.propose(Command::Compact(cmd::Compact { revision: c.revision, physical: c.physical })).await)?;
    Ok(encode(&pb::CompactionResponse { header: h.at(rev) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: Bytes::from(k.to_string()),
                range_end: Bytes::from(end.to_string()),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(pb::TxnRequest { compare: vec![], success, failure })),
        }
    }

    #[test]
    fn duplicate_rule_follows_etcd() {
        assert!(check_intervals(&[put_op("a"), put_op("b")]).is_ok());
        assert!(check_intervals(&[put_op("a"), put_op("a")]).is_err());
        assert!(check_intervals(&[put_op("b"), del_op("a", "c")]).is_err());
        assert!(check_intervals(&[put_op("c"), del_op("a", "c")]).is_ok());
        // etcd compares range ends literally: "\0" makes an empty interval.
        assert!(check_intervals(&[put_op("b"), del_op("a", "\0")]).is_ok());
        // The same key in both branches of a nested Txn is fine...
        assert!(check_intervals(&[txn_op(vec![put_op("a")], vec![put_op("a")])]).is_ok());
        // ...but not next to a put of the outer Txn.
        assert!(check_intervals(&[put_op("a"), txn_op(vec![put_op("a")], vec![])]).is_err());
        assert!(check_intervals(&[del_op("a", "b"), txn_op(vec![], vec![put_op("a")])]).is_err());
    }

    #[test]
    fn txn_checks_count_ops_per_branch_and_refuse_empty_ops() {
        let t = pb::TxnRequest { compare: vec![], success: vec![put_op("a"); 3], failure: vec![] };
        assert!(check_txn(&t, 3).is_ok());
        assert_eq!(check_txn(&t, 2).unwrap_err().message, "etcdserver: too many operations in txn request");
        let empty = pb::TxnRequest { compare: vec![], success: vec![pb::RequestOp { request: None }], failure: vec![] };
        assert_eq!(check_txn(&empty, 8).unwrap_err().message, "etcdserver: key not found");
    }
}
