//! The shape of each workload's requests and what its replies mean.
//!
//! Requests are encoded without allocating on the hot path: a request whose
//! only varying part is its fixed-size key is encoded once as a
//! [`Template`] and the key is patched in place; a Kubernetes-style CAS
//! transaction (whose compared revision changes length) is one reusable
//! prost message re-encoded into a buffer that is reclaimed after every
//! call. Replies are decoded only as far as needed to count outcomes and
//! learn a key's revision. Sans-IO: bytes in, bytes out.

use bytes::{Bytes, BytesMut};
use corekv::api::proto::etcdserverpb::{
    compare, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use prost::Message;

use crate::args::{Options, WorkloadKind};
use crate::keys::KeySpace;

pub(crate) const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";
const TXN: &str = "/etcdserverpb.KV/Txn";
const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";

/// What the replies said, beyond success: counted per thread, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Transactions whose compare held (created, updated, deleted).
    pub txn_succeeded: u64,
    /// Transactions whose compare failed (key existed, or changed since).
    pub txn_failed: u64,
    /// Keys removed by DeleteRange.
    pub keys_deleted: u64,
    /// Keys returned by Range (or counted, with `--count-only`).
    pub keys_read: u64,
    /// Replies that did not decode as the expected message.
    pub bad_replies: u64,
    /// Keep-alives answered with TTL 0: the lease no longer existed.
    pub leases_expired: u64,
    /// `k8s`: gets that saw another revision than the one the generator
    /// itself last wrote (or read) for the key.
    pub stale_reads: u64,
    /// `k8s`: paginated lists whose pages disagreed with their count or
    /// `more` (see `k8s::ListPager`).
    pub list_mismatches: u64,
    /// `k8s`: events its resource watches received.
    pub watch_events: u64,
    /// `k8s`: watches started again from a fresh list (their revision was
    /// compacted), as kube-apiserver's watch cache does.
    pub watch_restarts: u64,
    /// `k8s`: watch failures: a stream that failed, an undecodable
    /// response, or events out of revision order.
    pub watch_errors: u64,
}

impl Outcomes {
    /// Adds another thread's counts.
    pub fn merge(&mut self, other: &Outcomes) {
        self.txn_succeeded += other.txn_succeeded;
        self.txn_failed += other.txn_failed;
        self.keys_deleted += other.keys_deleted;
        self.keys_read += other.keys_read;
        self.bad_replies += other.bad_replies;
        self.leases_expired += other.leases_expired;
        self.stale_reads += other.stale_reads;
        self.list_mismatches += other.list_mismatches;
        self.watch_events += other.watch_events;
        self.watch_restarts += other.watch_restarts;
        self.watch_errors += other.watch_errors;
    }
}

/// A request encoded once with a placeholder key; each use copies it and
/// writes the real key over every occurrence of the placeholder.
#[derive(Clone, Debug)]
pub struct Template {
    bytes: Vec<u8>,
    /// Where each copy of the key starts (a Txn names its key twice).
    key_offsets: Vec<usize>,
    key_size: usize,
}

impl Template {
    /// Encodes the message `make(key)` twice with two different
    /// placeholder keys of `key_size` bytes; the bytes that differ are
    /// exactly the key's copies, since nothing else changes (not even a
    /// length). No guessing at protobuf offsets.
    pub fn new(key_size: usize, make: impl Fn(Bytes) -> Vec<u8>) -> Template {
        assert!(key_size > 0);
        let a = make(Bytes::from(vec![0xaa; key_size]));
        let b = make(Bytes::from(vec![0x55; key_size]));
        assert_eq!(a.len(), b.len(), "a template's length must not depend on its key's bytes");
        let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert!(
            !differ.is_empty() && differ.len().is_multiple_of(key_size),
            "the key must appear whole in the template"
        );
        let key_offsets: Vec<usize> = differ
            .chunks(key_size)
            .map(|run| {
                assert!(run.windows(2).all(|w| w[1] == w[0] + 1), "each key copy must be contiguous");
                run[0]
            })
            .collect();
        Template { bytes: a, key_offsets, key_size }
    }

    /// The request for key `index`, built in `scratch`. The returned bytes
    /// share `scratch`'s allocation, which is reused once they are dropped.
    pub fn render(&self, keys: &KeySpace, index: u64, scratch: &mut BytesMut) -> Bytes {
        debug_assert_eq!(keys.key_size(), self.key_size);
        scratch.clear();
        scratch.reserve(self.bytes.len());
        scratch.extend_from_slice(&self.bytes);
        let (first, rest) = self.key_offsets.split_first().expect("a template has a key");
        keys.write(index, &mut scratch[*first..*first + self.key_size]);
        for &offset in rest {
            scratch.copy_within(*first..*first + self.key_size, offset);
        }
        scratch.split().freeze()
    }
}

/// How a workload builds its requests.
#[derive(Clone, Debug)]
enum Shape {
    /// One key per request, patched into a template.
    Keyed(Template),
    /// The same request every time (a prefix range).
    Fixed(Bytes),
    /// `Txn(mod_revision == R -> Put or Delete, else Get)`, R per request.
    Cas { delete: bool },
}

/// A workload: its gRPC method, request shape and reply handling. Shared
/// read-only by every client of a thread.
#[derive(Clone, Debug)]
pub struct Workload {
    kind: WorkloadKind,
    path: &'static str,
    keys: KeySpace,
    value: Bytes,
    shape: Shape,
}

/// One client task's reusable buffers.
#[derive(Debug, Default)]
pub struct ClientBuf {
    scratch: BytesMut,
    key: BytesMut,
    /// The CAS transaction, re-targeted for every request.
    txn: Option<TxnRequest>,
}

impl Workload {
    /// The workload `options` ask for.
    pub fn new(options: &Options) -> Workload {
        let keys = KeySpace::new(&options.prefix, options.key_size, options.key_space_size);
        let value = value_bytes(options.val_size);
        let key_size = options.key_size;
        let (path, shape) = match options.workload {
            // watch-slow is put; watch and lease-keepalive build their
            // requests elsewhere (`watch`, `lease`) and preload nothing.
            // k8s builds its requests in `k8s`; the put is never sent.
            WorkloadKind::Put
            | WorkloadKind::WatchSlow
            | WorkloadKind::Watch
            | WorkloadKind::LeaseKeepAlive
            | WorkloadKind::K8s => return Workload::put(keys, value),
            WorkloadKind::Range if options.range_prefix => {
                let (key, range_end) = keys.prefix_range();
                let request = RangeRequest {
                    key: key.into(),
                    range_end: range_end.into(),
                    limit: options.limit,
                    serializable: options.serializable,
                    count_only: options.count_only,
                    ..Default::default()
                };
                (RANGE, Shape::Fixed(request.encode_to_vec().into()))
            }
            WorkloadKind::Range => {
                let template = Template::new(key_size, |key| {
                    RangeRequest {
                        key,
                        limit: options.limit,
                        serializable: options.serializable,
                        count_only: options.count_only,
                        ..Default::default()
                    }
                    .encode_to_vec()
                });
                (RANGE, Shape::Keyed(template))
            }
            WorkloadKind::TxnPut => {
                let template = Template::new(key_size, |key| create_txn(key, value.clone()).encode_to_vec());
                (TXN, Shape::Keyed(template))
            }
            WorkloadKind::TxnCas => (TXN, Shape::Cas { delete: false }),
            WorkloadKind::TxnDelete => (TXN, Shape::Cas { delete: true }),
            WorkloadKind::Delete => {
                let template =
                    Template::new(key_size, |key| DeleteRangeRequest { key, ..Default::default() }.encode_to_vec());
                (DELETE_RANGE, Shape::Keyed(template))
            }
        };
        Workload { kind: options.workload, path, keys, value, shape }
    }

    /// Plain puts of `value` (the `put` workload and every preload).
    pub fn put(keys: KeySpace, value: Bytes) -> Workload {
        let template = Template::new(keys.key_size(), |key| {
            PutRequest { key, value: value.clone(), ..Default::default() }.encode_to_vec()
        });
        Workload { kind: WorkloadKind::Put, path: PUT, keys, value, shape: Shape::Keyed(template) }
    }

    /// The gRPC method path of every request.
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The key space requests draw from.
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// The value every Put writes.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// `true` when a request needs a key number (false for a fixed request).
    pub fn uses_key(&self) -> bool {
        !matches!(self.shape, Shape::Fixed(_))
    }

    /// `true` when requests compare against the key's last seen revision.
    pub fn tracks_revisions(&self) -> bool {
        matches!(self.shape, Shape::Cas { .. })
    }

    /// The encoded request for key `index`; `known_revision` is the key's
    /// mod revision as last seen (0: unknown or absent), used by CAS txns.
    pub fn request(&self, index: u64, known_revision: i64, buf: &mut ClientBuf) -> Bytes {
        match &self.shape {
            Shape::Keyed(template) => template.render(&self.keys, index, &mut buf.scratch),
            Shape::Fixed(bytes) => bytes.clone(),
            Shape::Cas { delete } => self.cas_request(*delete, index, known_revision, buf),
        }
    }

    fn cas_request(&self, delete: bool, index: u64, revision: i64, buf: &mut ClientBuf) -> Bytes {
        let txn = buf.txn.get_or_insert_with(|| cas_txn(Bytes::new(), self.value.clone(), 0, delete));
        // The previous key is unreferenced (cleared below), so this reuses
        // the key buffer's allocation.
        buf.key.clear();
        buf.key.resize(self.keys.key_size(), 0);
        self.keys.write(index, &mut buf.key);
        let key = buf.key.split().freeze();
        retarget(txn, &key, revision);
        buf.scratch.clear();
        buf.scratch.reserve(txn.encoded_len());
        txn.encode(&mut buf.scratch).expect("BytesMut grows as needed");
        retarget(txn, &Bytes::new(), 0);
        buf.scratch.split().freeze()
    }

    /// Reads a successful reply: counts outcomes and returns the key's
    /// mod revision after this request when the reply tells it (Put and
    /// CAS txns; 0 means the key is absent).
    pub fn observe(&self, reply: Bytes, outcomes: &mut Outcomes) -> Option<i64> {
        let observed = match self.kind {
            WorkloadKind::Put
            | WorkloadKind::WatchSlow
            | WorkloadKind::Watch
            | WorkloadKind::LeaseKeepAlive
            | WorkloadKind::K8s => PutResponse::decode(reply).map(|r| Some(revision_of(r.header))),
            WorkloadKind::Range => RangeResponse::decode(reply).map(|r| {
                outcomes.keys_read += if r.kvs.is_empty() { r.count.max(0) as u64 } else { r.kvs.len() as u64 };
                None
            }),
            WorkloadKind::Delete => DeleteRangeResponse::decode(reply).map(|r| {
                outcomes.keys_deleted += r.deleted.max(0) as u64;
                None
            }),
            WorkloadKind::TxnPut => TxnResponse::decode(reply).map(|r| {
                count_txn(outcomes, r.succeeded);
                None
            }),
            WorkloadKind::TxnCas | WorkloadKind::TxnDelete => TxnResponse::decode(reply).map(|r| {
                count_txn(outcomes, r.succeeded);
                Some(revision_after_cas(&r, self.kind == WorkloadKind::TxnDelete))
            }),
        };
        observed.unwrap_or_else(|_| {
            outcomes.bad_replies += 1;
            None
        })
    }
}

fn count_txn(outcomes: &mut Outcomes, succeeded: bool) {
    if succeeded {
        outcomes.txn_succeeded += 1;
    } else {
        outcomes.txn_failed += 1;
    }
}

fn revision_of(header: Option<corekv::api::proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// The key's mod revision after a CAS txn: the txn's own revision when it
/// put, 0 when it deleted, and what the else-branch Get saw otherwise.
fn revision_after_cas(reply: &TxnResponse, delete: bool) -> i64 {
    if reply.succeeded {
        return if delete { 0 } else { reply.header.as_ref().map_or(0, |h| h.revision) };
    }
    match reply.responses.first().and_then(|op| op.response.as_ref()) {
        Some(response_op::Response::ResponseRange(range)) => range.kvs.first().map_or(0, |kv| kv.mod_revision),
        _ => 0,
    }
}

/// Kubernetes' create: `Txn(mod_revision(key) == 0 -> Put(key, value))`.
pub fn create_txn(key: Bytes, value: Bytes) -> TxnRequest {
    TxnRequest {
        compare: vec![mod_revision_equals(key.clone(), 0)],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest { key, value, ..Default::default() })),
        }],
        failure: vec![],
    }
}

/// Kubernetes' update (`delete == false`) or delete:
/// `Txn(mod_revision(key) == rev -> Put(key, value) or Delete(key), else Get(key))`.
pub fn cas_txn(key: Bytes, value: Bytes, revision: i64, delete: bool) -> TxnRequest {
    let then = if delete {
        request_op::Request::RequestDeleteRange(DeleteRangeRequest { key: key.clone(), ..Default::default() })
    } else {
        request_op::Request::RequestPut(PutRequest { key: key.clone(), value, ..Default::default() })
    };
    TxnRequest {
        compare: vec![mod_revision_equals(key.clone(), revision)],
        success: vec![RequestOp { request: Some(then) }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest { key, ..Default::default() })),
        }],
    }
}

fn mod_revision_equals(key: Bytes, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key,
        range_end: Bytes::new(),
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
    }
}

/// Points every key of a CAS txn at `key` and its compare at `revision`.
fn retarget(txn: &mut TxnRequest, key: &Bytes, revision: i64) {
    let compare = &mut txn.compare[0];
    compare.key = key.clone();
    compare.target_union = Some(compare::TargetUnion::ModRevision(revision));
    for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
        match &mut op.request {
            Some(request_op::Request::RequestPut(put)) => put.key = key.clone(),
            Some(request_op::Request::RequestDeleteRange(delete)) => delete.key = key.clone(),
            Some(request_op::Request::RequestRange(range)) => range.key = key.clone(),
            other => unreachable!("a CAS txn holds no {other:?}"),
        }
    }
}

/// `size` printable bytes (a repeating alphabet: readable in etcdctl).
pub fn value_bytes(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};
    use corekv::api::proto::etcdserverpb::{ResponseHeader, ResponseOp};
    use corekv::api::proto::mvccpb::KeyValue;

    fn workload(line: &str) -> Workload {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args).unwrap() {
            Command::Run(options) => Workload::new(&options),
            Command::Help => unreachable!(),
        }
    }

    #[test]
    fn put_requests_carry_the_key_and_value() {
        let w = workload("put --prefix /k/ --key-size 10 --val-size 5 --key-space-size 1000");
        assert_eq!(w.path(), PUT);
        let put = PutRequest::decode(one_request(&w, 7)).unwrap();
        assert_eq!(&put.key[..], b"/k/0000007");
        assert_eq!(&put.value[..], b"abcde");
        assert_eq!((put.lease, put.prev_kv), (0, false));
    }

    fn one_request(w: &Workload, index: u64) -> Bytes {
        one_request_rev(w, index, 0)
    }
    fn one_request_rev(w: &Workload, index: u64, revision: i64) -> Bytes {
        w.request(index, revision, &mut ClientBuf::default())
    }

    #[test]
    fn range_requests_follow_consistency_and_limit() {
        let w = workload("range --consistency s --key-size 4 --key-space-size 100 --count-only");
        assert_eq!(w.path(), RANGE);
        let range = RangeRequest::decode(one_request(&w, 99)).unwrap();
        assert_eq!(&range.key[..], b"0099");
        assert!(range.range_end.is_empty());
        assert!(range.serializable && range.count_only);

        let w = workload("range --range-prefix --prefix /p/ --limit 50 --key-space-size 100 --key-size 5");
        assert!(!w.uses_key());
        let range = RangeRequest::decode(one_request(&w, 3)).unwrap();
        assert_eq!((&range.key[..], &range.range_end[..], range.limit), (&b"/p/"[..], &b"/p0"[..], 50));
        assert!(!range.serializable);
    }

    #[test]
    fn txn_put_is_a_create_if_absent() {
        let w = workload("txn-put --key-size 6 --val-size 3");
        assert_eq!(w.path(), TXN);
        let txn = TxnRequest::decode(one_request(&w, 12)).unwrap();
        assert_eq!(txn, create_txn(Bytes::from_static(b"000012"), Bytes::from_static(b"abc")));
        // The compare on revision 0 is sent, not elided as a default.
        assert_eq!(txn.compare[0].target_union, Some(compare::TargetUnion::ModRevision(0)));
    }

    #[test]
    fn cas_txns_compare_the_known_revision() {
        let w = workload("txn-cas --key-size 6 --val-size 2");
        assert!(w.tracks_revisions());
        let txn = TxnRequest::decode(one_request_rev(&w, 5, 1234)).unwrap();
        assert_eq!(txn, cas_txn(Bytes::from_static(b"000005"), Bytes::from_static(b"ab"), 1234, false));
        let w = workload("txn-delete --key-size 6");
        let txn = TxnRequest::decode(one_request_rev(&w, 5, 9)).unwrap();
        assert_eq!(txn, cas_txn(Bytes::from_static(b"000005"), Bytes::new(), 9, true));
    }

    #[test]
    fn delete_requests_name_one_key() {
        let w = workload("delete --key-size 3 --key-space-size 10");
        let delete = DeleteRangeRequest::decode(one_request(&w, 4)).unwrap();
        assert_eq!((&delete.key[..], delete.range_end.is_empty()), (&b"004"[..], true));
    }

    #[test]
    fn templates_find_every_copy_of_the_key_even_when_it_looks_like_framing() {
        // A one-byte key whose placeholder could collide with tags/lengths.
        let t = Template::new(1, |key| create_txn(key, value_bytes(0x0a)).encode_to_vec());
        assert_eq!(t.key_offsets.len(), 2);
        let keys = KeySpace::new(b"", 1, 10);
        for i in 0..10 {
            let txn = TxnRequest::decode(t.render(&keys, i, &mut BytesMut::new())).unwrap();
            assert_eq!(txn, create_txn(keys.key(i).into(), value_bytes(0x0a)));
        }
    }

    #[test]
    fn successive_requests_reuse_one_buffer() {
        for line in ["put --key-size 8", "txn-cas --key-size 8"] {
            let w = workload(line);
            let mut buf = ClientBuf::default();
            let first = w.request(1, 7, &mut buf);
            let address = first.as_ptr();
            drop(first);
            for i in 2..100 {
                let next = w.request(i, 7, &mut buf);
                assert_eq!(next.as_ptr(), address, "{line}: request {i} allocated");
            }
        }
    }

    fn header(revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader { revision, ..Default::default() })
    }

    #[test]
    fn replies_count_outcomes_and_teach_revisions() {
        let mut out = Outcomes::default();
        let cas = workload("txn-cas");
        let won = TxnResponse { header: header(40), succeeded: true, responses: vec![] };
        assert_eq!(cas.observe(won.encode_to_vec().into(), &mut out), Some(40));
        let kv = KeyValue { mod_revision: 33, ..Default::default() };
        let lost = TxnResponse {
            header: header(41),
            succeeded: false,
            responses: vec![ResponseOp {
                response: Some(response_op::Response::ResponseRange(RangeResponse {
                    kvs: vec![kv],
                    count: 1,
                    ..Default::default()
                })),
            }],
        };
        assert_eq!(cas.observe(lost.encode_to_vec().into(), &mut out), Some(33));
        let deleted = workload("txn-delete");
        assert_eq!(deleted.observe(won.encode_to_vec().into(), &mut out), Some(0));
        assert_eq!((out.txn_succeeded, out.txn_failed), (2, 1));

        let put = workload("put");
        assert_eq!(
            put.observe(PutResponse { header: header(9), prev_kv: None }.encode_to_vec().into(), &mut out),
            Some(9)
        );
        let del = workload("delete");
        del.observe(DeleteRangeResponse { deleted: 1, ..Default::default() }.encode_to_vec().into(), &mut out);
        let range = workload("range --count-only");
        range.observe(RangeResponse { count: 5, ..Default::default() }.encode_to_vec().into(), &mut out);
        assert_eq!((out.keys_deleted, out.keys_read, out.bad_replies), (1, 5, 0));
        put.observe(Bytes::from_static(b"\xff\xff\xff"), &mut out);
        assert_eq!(out.bad_replies, 1);
    }
}
