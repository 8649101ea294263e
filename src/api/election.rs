//! etcd's Election service (`v3electionpb.Election`): Campaign, Proclaim,
//! Leader, Observe and Resign.
//!
//! etcd serves these with its client-side concurrency recipes running in
//! the server against its own KV and Watch (`v3election/election.go` over
//! `clientv3/concurrency`); this module runs the same recipes against the
//! [`Backend`]. A candidate is the key `<name>/<lease in hex>`, attached to
//! its lease; the key under `<name>/` with the lowest create revision
//! leads; a candidate waits until every key created before its own is
//! deleted (resign, revoke or expiry). The recipe steps that the Lock
//! service shares (candidate keys, the wait, the cleanup of an abandoned
//! wait) live here too.
//!
//! Errors are etcd's: its recipes return plain Go errors, which grpc-go
//! sends with code Unknown, and the KV errors they relay (lease not found,
//! key not provided) reach the client the same way, as code Unknown with
//! etcd's text. Owns nothing but request handling: never touches storage,
//! Raft or the watch hub except through [`Backend`] and [`WatchSession`].

use std::collections::VecDeque;
use std::pin::pin;

use bytes::Bytes;
use futures_util::future::{select, Either};

use super::backend::{Backend, WatchSession};
use super::grpc::{Code, RequestStream, ResponseSink, Status};
use super::kv::{decode, encode, kv_pb, Headers, Limits};
use super::proto::v3electionpb as epb;
use crate::apply::command::{self as cmd, Command};
use crate::apply::{ApplyError, Response};
use crate::mvcc::{EventKind, KeyValue};
use crate::watch::index::RangeEnd;
use crate::watch::{Out, Spec};

/// TTL of the lease a request with lease 0 gets (etcd's
/// `concurrency.defaultSessionTTL`): the recipes grant one and never keep
/// it alive, so it expires with its keys.
const SESSION_TTL_S: i64 = 60;

/// etcd's `ErrElectionNotLeader`.
const NOT_LEADER: &str = "election: not leader";
/// etcd's `ErrElectionNoLeader`.
const NO_LEADER: &str = "election: no leader";
/// etcd's `ErrMissingLeaderKey`.
const MISSING_LEADER: &str = r#""leader" field must be provided"#;

/// etcd's range-sort constants, as `apply::range` reads them.
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_CREATE: i32 = 2;

/// An error as etcd's recipes return it: a plain error, code Unknown.
pub(super) fn unknown(message: impl Into<String>) -> Status {
    Status::new(Code::Unknown, message)
}

/// A KV error relayed by a recipe: etcd's in-process client turns the
/// server's status into a plain error, so the code becomes Unknown.
pub(super) fn relay(e: ApplyError) -> Status {
    unknown(e.to_string())
}

/// etcd's check on a write's key, relayed like the KV error it is.
pub(super) fn check_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(unknown("etcdserver: key is not provided"));
    }
    Ok(())
}

/// etcd refuses a proposal larger than `--max-request-bytes`; the recipes'
/// writes carry the request's value, so the request's size stands for it.
pub(super) fn check_size(body: &Bytes, limits: &Limits) -> Result<(), Status> {
    if body.len() > limits.max_request_bytes {
        return Err(unknown("etcdserver: request is too large"));
    }
    Ok(())
}

/// Go's `%x` of a lease ID: lowercase hex, a minus sign for negative IDs.
pub(super) fn lease_hex(lease: i64) -> String {
    let hex = format!("{:x}", lease.unsigned_abs());
    if lease < 0 {
        format!("-{hex}")
    } else {
        hex
    }
}

/// The key prefix of an election or lock: `<name>/`.
pub(super) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The key of a candidate or lock waiter: `<prefix><lease in hex>`.
pub(super) fn candidate_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(lease_hex(lease).as_bytes());
    k
}

/// etcd's range end for every key starting with `prefix`: the prefix with
/// its last byte below 0xff incremented (trailing 0xff bytes dropped), or
/// "\0" (every key) when there is none.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The lease a request works under (etcd's `concurrency.NewSession`): the
/// given one, or a fresh one of [`SESSION_TTL_S`] for lease 0.
pub(super) async fn session_lease<B: Backend>(b: &B, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    Ok(b.lease_grant(0, SESSION_TTL_S).await.map_err(relay)?.id)
}

/// `create_revision(key) == rev`.
pub(super) fn created_at(key: &[u8], rev: i64) -> cmd::Compare {
    cmd::Compare {
        result: cmd::CompareResult::Equal,
        value: cmd::CompareValue::CreateRevision(rev),
        key: key.to_vec(),
        range_end: Vec::new(),
    }
}

/// A put of `value` on `key` attached to `lease`.
pub(super) fn put_op(key: &[u8], value: &[u8], lease: i64) -> cmd::Op {
    cmd::Op::Put(cmd::Put { key: key.to_vec(), value: value.to_vec(), lease, ..Default::default() })
}

/// A read of one key.
pub(super) fn get_op(key: &[u8]) -> cmd::Op {
    cmd::Op::Range(cmd::Range { key: key.to_vec(), ..Default::default() })
}

/// The key under `prefix` created first (etcd's `WithFirstCreate`).
pub(super) fn first_created(prefix: &[u8]) -> cmd::Range {
    cmd::Range {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SORT_ASCEND,
        sort_target: TARGET_CREATE,
        ..Default::default()
    }
}

/// The key under `prefix` created last at or before `max_create_rev`
/// (etcd's `WithLastCreate` and `WithMaxCreateRev`).
fn last_created_by(prefix: &[u8], max_create_rev: i64) -> cmd::Range {
    cmd::Range {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SORT_DESCEND,
        sort_target: TARGET_CREATE,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

/// A Txn's outcome as the recipes read it.
pub(super) struct TxnDone {
    /// The header revision.
    pub(super) revision: i64,
    /// Every compare held.
    pub(super) succeeded: bool,
    /// The taken branch's responses.
    pub(super) responses: Vec<Response>,
}

/// Proposes a Txn.
pub(super) async fn txn<B: Backend>(b: &B, t: cmd::Txn) -> Result<TxnDone, Status> {
    let o = b.propose(Command::Txn(t)).await;
    match o.result.map_err(relay)? {
        Response::Txn { succeeded, responses } => Ok(TxnDone { revision: o.revision, succeeded, responses }),
        _ => Err(Status::internal("corekv: a Txn produced a response of another kind")),
    }
}

/// The first key a Txn's read found.
pub(super) fn first_kv(r: Option<Response>) -> Option<KeyValue> {
    match r {
        Some(Response::Range { result, .. }) => result.kvs.into_iter().next(),
        _ => None,
    }
}

/// Proposes `cmd` when dropped while armed. A Campaign or Lock waiting for
/// its turn whose client gives up (the server drops the call's future)
/// must not leave its key behind to block everyone after it, so etcd
/// deletes it when the wait is cancelled; the delete cannot be awaited in
/// `drop`, so it runs as a task of its own on this reactor (a call's
/// future only ever lives, and is dropped, on a reactor).
pub(super) struct Cleanup<'a, B: Backend> {
    b: &'a B,
    cmd: Option<Command>,
}

impl<'a, B: Backend> Cleanup<'a, B> {
    /// Arms the guard with the write that undoes the call.
    pub(super) fn arm(b: &'a B, cmd: Command) -> Self {
        Cleanup { b, cmd: Some(cmd) }
    }

    /// The call finished: nothing to undo (or the caller undoes it itself).
    pub(super) fn disarm(mut self) -> Option<Command> {
        self.cmd.take()
    }
}

impl<B: Backend> Drop for Cleanup<'_, B> {
    fn drop(&mut self) {
        if let Some(cmd) = self.cmd.take() {
            let write = self.b.propose(cmd);
            monoio::spawn(async move {
                // Nobody is left to tell; a failure leaves the key to its
                // lease's expiry, as in etcd.
                let _ = write.await;
            });
        }
    }
}

/// Waits until no key under `prefix` created at or before `max_create_rev`
/// is left (etcd's `waitDeletes`): finds the last such key and waits for its
/// delete, until there is none. Returns the header revision of the read
/// that found none.
pub(super) async fn wait_deletes<B: Backend>(b: &B, prefix: &[u8], max_create_rev: i64) -> Result<i64, Status> {
    loop {
        let read = b.range(last_created_by(prefix, max_create_rev), true).await.map_err(relay)?;
        let Some(kv) = read.result.kvs.into_iter().next() else { return Ok(read.revision) };
        wait_delete(b, kv.key, read.revision).await?;
    }
}

/// Waits for a delete of `key` at or after revision `from` (etcd's
/// `waitDelete`).
async fn wait_delete<B: Backend>(b: &B, key: Vec<u8>, from: i64) -> Result<(), Status> {
    let session = b.watch_session();
    // Only a delete ends the wait: etcd picks it out of every change,
    // here the hub drops the puts.
    session.create(Spec { no_put: true, ..watch_spec(key, None, from) }).await;
    loop {
        match session.next().await {
            Out::Events { events, .. } if events.iter().any(|e| e.kind == EventKind::Delete) => return Ok(()),
            Out::Created { .. } | Out::Progress { .. } | Out::Events { .. } => {}
            Out::Canceled { compact_revision, .. } if compact_revision != 0 => {
                return Err(relay(ApplyError::Compacted))
            }
            Out::Canceled { .. } => return Err(unknown("lost watcher waiting for delete")),
            Out::Refused { reason, .. } => return Err(unknown(reason)),
        }
    }
}

/// A watch of the recipes: every change to `key` (up to `end`) from
/// revision `start_rev` on, without filters.
fn watch_spec(key: Vec<u8>, end: Option<RangeEnd>, start_rev: i64) -> Spec {
    Spec { key, end, start_rev, ..Default::default() }
}

/// The leader key of a request that must carry one.
fn leader_of(leader: Option<epb::LeaderKey>) -> Result<epb::LeaderKey, Status> {
    leader.ok_or_else(|| unknown(MISSING_LEADER))
}

/// Election.Campaign: becomes a candidate and returns once it leads.
pub async fn campaign<B: Backend>(b: &B, body: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    check_size(&body, limits)?;
    let r: epb::CampaignRequest = decode(&body)?;
    let lease = session_lease(b, r.lease).await?;
    let prefix = prefix_of(&r.name);
    let key = candidate_key(&prefix, lease);
    let h = Headers::of(b);
    // Create the candidate key, or find it from an earlier Campaign with
    // the same lease.
    let created = txn(
        b,
        cmd::Txn {
            compare: vec![created_at(&key, 0)],
            success: vec![put_op(&key, &r.value, lease)],
            failure: vec![get_op(&key)],
        },
    )
    .await?;
    let mut rev = created.revision;
    if !created.succeeded {
        let Some(kv) = first_kv(created.responses.into_iter().next()) else {
            return Err(Status::internal("corekv: a failed create compare found no key"));
        };
        rev = kv.create_revision;
        if kv.value != r.value.as_ref() {
            if let Err(e) = proclaim_at(b, &key, rev, lease, &r.value).await {
                // etcd resigns unless the proclaim found the key replaced.
                if e.message != NOT_LEADER {
                    let _ = txn(b, resign_txn(&key, rev)).await;
                }
                return Err(e);
            }
        }
    }
    let guard = Cleanup::arm(b, Command::Txn(resign_txn(&key, rev)));
    let waited = wait_deletes(b, &prefix, rev - 1).await;
    // Only a cancelled wait resigns; a failed one leaves the key, as in etcd.
    guard.disarm();
    waited?;
    let leader = epb::LeaderKey { name: r.name, key: Bytes::from(key), rev, lease };
    Ok(encode(&epb::CampaignResponse { header: h.at(created.revision), leader: Some(leader) }))
}

/// Puts `value` on the leader key if it is still the one created at `rev`.
/// Returns the header revision.
async fn proclaim_at<B: Backend>(b: &B, key: &[u8], rev: i64, lease: i64, value: &[u8]) -> Result<i64, Status> {
    check_key(key)?;
    let t = cmd::Txn { compare: vec![created_at(key, rev)], success: vec![put_op(key, value, lease)], failure: vec![] };
    let done = txn(b, t).await?;
    if !done.succeeded {
        return Err(unknown(NOT_LEADER));
    }
    Ok(done.revision)
}

/// Deletes the leader key if it is still the one created at `rev`.
fn resign_txn(key: &[u8], rev: i64) -> cmd::Txn {
    cmd::Txn {
        compare: vec![created_at(key, rev)],
        success: vec![cmd::Op::DeleteRange(cmd::DeleteRange { key: key.to_vec(), ..Default::default() })],
        failure: vec![],
    }
}

/// Election.Proclaim: the leader announces a new value.
pub async fn proclaim<B: Backend>(b: &B, body: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    check_size(&body, limits)?;
    let r: epb::ProclaimRequest = decode(&body)?;
    let leader = leader_of(r.leader)?;
    let lease = session_lease(b, leader.lease).await?;
    let h = Headers::of(b);
    let rev = proclaim_at(b, &leader.key, leader.rev, lease, &r.value).await?;
    Ok(encode(&epb::ProclaimResponse { header: h.at(rev) }))
}

/// Election.Resign: the leader steps down (nothing happens if it no
/// longer leads).
pub async fn resign<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: epb::ResignRequest = decode(&body)?;
    let leader = leader_of(r.leader)?;
    // etcd opens a session here too: lease 0 gets a lease nobody uses.
    session_lease(b, leader.lease).await?;
    check_key(&leader.key)?;
    let h = Headers::of(b);
    let done = txn(b, resign_txn(&leader.key, leader.rev)).await?;
    Ok(encode(&epb::ResignResponse { header: h.at(done.revision) }))
}

/// Election.Leader: the current leader's key and value.
pub async fn leader<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: epb::LeaderRequest = decode(&body)?;
    let h = Headers::of(b);
    let read = b.range(first_created(&prefix_of(&r.name)), true).await.map_err(relay)?;
    let Some(kv) = read.result.kvs.into_iter().next() else { return Err(unknown(NO_LEADER)) };
    Ok(encode(&epb::LeaderResponse { header: h.at(read.revision), kv: Some(kv_pb(kv)) }))
}

/// Election.Observe: the current leader, then every value each leader in
/// turn proclaims. Ends (OK) when a watch it relies on is cancelled, as
/// etcd's does.
pub async fn observe<B: Backend>(b: &B, mut requests: RequestStream, mut responses: ResponseSink) -> Status {
    let r: epb::LeaderRequest = match requests.next().await {
        Some(Ok(body)) => match decode(&body) {
            Ok(r) => r,
            Err(status) => return status,
        },
        Some(Err(status)) => return status,
        // grpc-go's answer to a server-streaming call without a request.
        None => return unknown("EOF"),
    };
    let mut observer = Observer { b, prefix: prefix_of(&r.name), following: None, pending: VecDeque::new() };
    loop {
        let next = {
            let next = pin!(observer.next());
            let gone = pin!(responses.cancelled());
            match select(next, gone).await {
                Either::Left((next, _)) => next,
                Either::Right(_) => return Status::cancelled("context canceled"),
            }
        };
        let Some(resp) = next else { return Status::ok() };
        if let Err(status) = responses.send(encode(&resp)).await {
            return status;
        }
    }
}

/// etcd's `Election.observe` loop as a producer of responses.
struct Observer<'a, B: Backend> {
    b: &'a B,
    prefix: Vec<u8>,
    /// The watch on the leader key being followed.
    following: Option<Box<dyn WatchSession>>,
    /// Responses found but not yet returned.
    pending: VecDeque<epb::LeaderResponse>,
}

impl<B: Backend> Observer<'_, B> {
    fn response(&self, revision: i64, kv: KeyValue) -> epb::LeaderResponse {
        epb::LeaderResponse { header: Headers::of(self.b).at(revision), kv: Some(kv_pb(kv)) }
    }

    /// The next response; `None` ends the stream.
    async fn next(&mut self) -> Option<epb::LeaderResponse> {
        loop {
            if let Some(resp) = self.pending.pop_front() {
                return Some(resp);
            }
            let Some(watch) = &self.following else {
                let (rev, kv) = self.find_leader().await?;
                // Follow the leader key from just after what is reported.
                let session = self.b.watch_session();
                session.create(watch_spec(kv.key.clone(), None, rev + 1)).await;
                self.following = Some(session);
                return Some(self.response(rev, kv));
            };
            match watch.next().await {
                Out::Events { revision, events, .. } => {
                    // Changes up to the delete are the leader's; the delete
                    // hands over to whoever leads next.
                    for e in events {
                        if e.kind == EventKind::Delete {
                            self.following = None;
                            break;
                        }
                        let resp = self.response(revision, e.kv.clone());
                        self.pending.push_back(resp);
                    }
                }
                Out::Created { .. } | Out::Progress { .. } => {}
                Out::Canceled { .. } | Out::Refused { .. } => return None,
            }
        }
    }

    /// The leader now, or the first candidate to come if there is none;
    /// with the revision to report it at.
    async fn find_leader(&self) -> Option<(i64, KeyValue)> {
        let read = self.b.range(first_created(&self.prefix), true).await.ok()?;
        if let Some(kv) = read.result.kvs.into_iter().next() {
            return Some((read.revision, kv));
        }
        let end = match prefix_end(&self.prefix) {
            e if e == [0] => RangeEnd::Unbounded,
            e => RangeEnd::Before(e),
        };
        let session = self.b.watch_session();
        // Only a put elects someone: etcd skips the deletes, here the hub
        // drops them.
        session.create(Spec { no_delete: true, ..watch_spec(self.prefix.clone(), Some(end), read.revision) }).await;
        loop {
            match session.next().await {
                Out::Events { events, .. } => {
                    if let Some(e) = events.into_iter().find(|e| e.kind == EventKind::Put) {
                        // etcd reports the first put at its own revision.
                        return Some((e.kv.mod_revision, e.kv.clone()));
                    }
                }
                Out::Created { .. } | Out::Progress { .. } => {}
                Out::Canceled { .. } | Out::Refused { .. } => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_keys_are_the_prefix_and_the_lease_in_go_hex() {
        assert_eq!(candidate_key(&prefix_of(b"job"), 0x694d_7a1b_2c3d_4e5f), b"job/694d7a1b2c3d4e5f".to_vec());
        assert_eq!(candidate_key(&prefix_of(b""), 10), b"/a".to_vec());
        // Go's %x of a negative int64 is a signed hex number.
        assert_eq!(lease_hex(-255), "-ff");
        assert_eq!(lease_hex(i64::MIN), "-8000000000000000");
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"job/"), b"job0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff, 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }

    #[test]
    fn leader_lookups_sort_by_create_revision_and_take_one() {
        let first = first_created(b"e/");
        assert_eq!((first.limit, first.sort_order, first.sort_target), (1, SORT_ASCEND, TARGET_CREATE));
        assert_eq!((first.key.as_slice(), first.range_end.as_slice()), (&b"e/"[..], &b"e0"[..]));
        let last = last_created_by(b"e/", 41);
        assert_eq!((last.limit, last.sort_order, last.max_create_revision), (1, SORT_DESCEND, 41));
    }

    #[test]
    fn resign_deletes_only_the_key_created_at_the_leaders_revision() {
        let t = resign_txn(b"e/1", 7);
        assert_eq!(t.compare, vec![created_at(b"e/1", 7)]);
        assert!(matches!(&t.success[..], [cmd::Op::DeleteRange(d)] if d.key == b"e/1" && d.range_end.is_empty()));
        assert!(t.failure.is_empty());
    }
}
