//! etcd's Watch service: one bidirectional stream carries many watches.
//! Requests create and cancel watches and ask for progress; responses come
//! from the node's watch hub (`crate::watch`) in order.

use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use prost::Message;

use super::backend::{Backend, WatchSession};
use super::grpc::{RequestStream, ResponseSink, Status};
use super::kv::{decode, kv_pb, Headers};
use super::proto::{etcdserverpb as pb, mvccpb};
use crate::mvcc::EventKind;
use crate::watch::index::RangeEnd;
use crate::watch::{Out, Spec};

/// etcd's watch filter values.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;

/// What the stream loop got.
enum Step {
    Request(Option<Result<Bytes, Status>>),
    Out(Out),
    Tick,
}

/// Bytes of responses a Watch stream sends before yielding to the
/// reactor's other tasks.
const YIELD_EVERY_BYTES: usize = 64 * 1024;

/// Watch.Watch.
pub async fn watch<B: Backend>(
    b: &B,
    mut requests: RequestStream,
    mut responses: ResponseSink,
    max_request_bytes: usize,
) -> Status {
    let session = b.watch_session();
    let interval = b.progress_interval().max(Duration::from_millis(100));
    let mut ticker = monoio::time::interval_at(monoio::time::Instant::now() + interval, interval);
    // Bytes sent since this task last let the reactor's other tasks run.
    let mut unyielded = 0usize;
    loop {
        let step = {
            let req = pin!(requests.next());
            let out = pin!(session.next());
            let tick = pin!(ticker.tick());
            match select(req, select(out, tick)).await {
                Either::Left((r, _)) => Step::Request(r),
                Either::Right((Either::Left((o, _)), _)) => Step::Out(o),
                Either::Right((Either::Right(_), _)) => Step::Tick,
            }
        };
        match step {
            Step::Request(None) => return Status::ok(),
            Step::Request(Some(Err(status))) => return status,
            Step::Request(Some(Ok(body))) => {
                if let Err(status) = handle(&*session, &body).await {
                    return status;
                }
            }
            Step::Out(out) => {
                for msg in responses_of(b, out, max_request_bytes) {
                    unyielded += msg.len();
                    if let Err(status) = responses.send(msg).await {
                        return status;
                    }
                }
                // A backlog of events and an open flow-control window would
                // otherwise keep this task encoding megabytes while the
                // reactor's other clients wait: yield every so often.
                if unyielded >= YIELD_EVERY_BYTES {
                    unyielded = 0;
                    crate::runtime::local::yield_now().await;
                }
            }
            Step::Tick => session.progress_tick(),
        }
    }
}

async fn handle(session: &dyn WatchSession, body: &Bytes) -> Result<(), Status> {
    let req: pb::WatchRequest = decode(body)?;
    match req.request_union {
        Some(pb::watch_request::RequestUnion::CreateRequest(c)) => session.create(spec(c)).await,
        Some(pb::watch_request::RequestUnion::CancelRequest(c)) => session.cancel(c.watch_id),
        Some(pb::watch_request::RequestUnion::ProgressRequest(_)) => session.request_progress(),
        // An empty request changes nothing, as in etcd.
        None => {}
    }
    Ok(())
}

/// A create request as the hub takes it, with etcd's key conventions: an
/// empty key is "\0", the smallest; a "\0" range end means every key from
/// `key` on.
fn spec(c: pb::WatchCreateRequest) -> Spec {
    let key = if c.key.is_empty() { vec![0] } else { c.key.to_vec() };
    let end = match c.range_end.as_ref() {
        [] => None,
        [0] => Some(RangeEnd::Unbounded),
        e => Some(RangeEnd::Before(e.to_vec())),
    };
    Spec {
        key,
        end,
        start_rev: c.start_revision,
        prev_kv: c.prev_kv,
        no_put: c.filters.contains(&FILTER_NOPUT),
        no_delete: c.filters.contains(&FILTER_NODELETE),
        progress_notify: c.progress_notify,
        fragment: c.fragment,
        id: c.watch_id,
    }
}

/// A change as the client gets it; the last watch to send a shared change
/// takes it without copying.
fn event_pb(e: std::sync::Arc<crate::mvcc::Event>) -> mvccpb::Event {
    let e = std::sync::Arc::unwrap_or_clone(e);
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event { r#type: kind as i32, kv: Some(kv_pb(e.kv)), prev_kv: e.prev.map(kv_pb) }
}

/// The encoded responses for one hub output: several when a watch that
/// accepts fragments has more than `max_bytes` of events.
fn responses_of<B: Backend>(b: &B, out: Out, max_bytes: usize) -> Vec<Bytes> {
    let h = Headers::of(b);
    let resp = match out {
        Out::Created { id, revision } => {
            pb::WatchResponse { header: h.at(revision), watch_id: id, created: true, ..Default::default() }
        }
        Out::Refused { revision, reason } => pb::WatchResponse {
            header: h.at(revision),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        },
        Out::Canceled { id, revision, compact_revision } => pb::WatchResponse {
            header: h.at(revision),
            watch_id: id,
            canceled: true,
            compact_revision,
            ..Default::default()
        },
        Out::Progress { id, revision } => {
            pb::WatchResponse { header: h.at(revision), watch_id: id, ..Default::default() }
        }
        Out::Events { id, revision, events, fragment } => {
            let resp = pb::WatchResponse {
                header: h.at(revision),
                watch_id: id,
                events: events.into_iter().map(event_pb).collect(),
                ..Default::default()
            };
            return if fragment { fragments(resp, max_bytes) } else { vec![Bytes::from(resp.encode_to_vec())] };
        }
    };
    vec![Bytes::from(resp.encode_to_vec())]
}

/// etcd's fragmenting: responses of at most `max_bytes` (but at least one
/// event each), all but the last marked `fragment`.
fn fragments(resp: pb::WatchResponse, max_bytes: usize) -> Vec<Bytes> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![Bytes::from(resp.encode_to_vec())];
    }
    let mut out = Vec::new();
    let mut cur = pb::WatchResponse { events: Vec::new(), fragment: true, ..resp.clone() };
    for ev in resp.events {
        cur.events.push(ev);
        if cur.events.len() > 1 && cur.encoded_len() >= max_bytes {
            let last = cur.events.pop();
            out.push(Bytes::from(cur.encode_to_vec()));
            cur.events.clear();
            cur.events.extend(last);
        }
    }
    cur.fragment = false;
    out.push(Bytes::from(cur.encode_to_vec()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_split_by_size_and_mark_all_but_the_last() {
        let ev = |i: u8| mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: Bytes::from(vec![i]),
                value: Bytes::from(vec![7u8; 400]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = pb::WatchResponse { watch_id: 3, events: (0..10).map(ev).collect(), ..Default::default() };
        let parts: Vec<pb::WatchResponse> =
            fragments(resp, 1000).iter().map(|b| pb::WatchResponse::decode(b.clone()).expect("decodes")).collect();
        assert!(parts.len() > 2);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts[parts.len() - 1].fragment);
        let keys: Vec<u8> =
            parts.iter().flat_map(|p| p.events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.key[0]))).collect();
        assert_eq!(keys, (0..10).collect::<Vec<u8>>());
        assert!(parts.iter().all(|p| p.watch_id == 3));
    }
}
