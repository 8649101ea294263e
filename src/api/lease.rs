//! etcd's Lease service: grant, revoke, keep-alive (a bidirectional
//! stream), time-to-live and the lease list.

use bytes::Bytes;

use super::backend::Backend;
use super::grpc::{Code, RequestStream, ResponseSink, Status};
use super::kv::{apply_error, decode, encode, Headers};
use super::proto::etcdserverpb as pb;
use crate::lease::LEASE_TTL_MAX;

/// Lease.LeaseGrant.
pub async fn grant<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: pb::LeaseGrantRequest = decode(&body)?;
    if r.ttl > LEASE_TTL_MAX {
        return Err(Status::new(Code::OutOfRange, "etcdserver: too large lease TTL"));
    }
    let g = b.lease_grant(r.id, r.ttl).await.map_err(apply_error)?;
    let h = Headers::of(b);
    Ok(encode(&pb::LeaseGrantResponse { header: h.at(g.revision), id: g.id, ttl: g.ttl, error: String::new() }))
}

/// Lease.LeaseRevoke.
pub async fn revoke<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: pb::LeaseRevokeRequest = decode(&body)?;
    let o = b.lease_revoke(r.id).await;
    o.result.map_err(apply_error)?;
    Ok(encode(&pb::LeaseRevokeResponse { header: Headers::of(b).at(o.revision) }))
}

/// Lease.LeaseTimeToLive: TTL -1 for a lease that does not exist.
pub async fn time_to_live<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: pb::LeaseTimeToLiveRequest = decode(&body)?;
    let t = b.lease_time_to_live(r.id, r.keys).await;
    let rev = b.status().revision;
    let resp = match t {
        Some(t) => pb::LeaseTimeToLiveResponse {
            header: Headers::of(b).at(rev),
            id: r.id,
            ttl: t.remaining,
            granted_ttl: t.granted,
            keys: t.keys.into_iter().map(Bytes::from).collect(),
        },
        None => pb::LeaseTimeToLiveResponse { header: Headers::of(b).at(rev), id: r.id, ttl: -1, ..Default::default() },
    };
    Ok(encode(&resp))
}

/// Lease.LeaseLeases.
pub async fn leases<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let _: pb::LeaseLeasesRequest = decode(&body)?;
    let ids = b.lease_ids().await;
    let rev = b.status().revision;
    let leases = ids.into_iter().map(|id| pb::LeaseStatus { id }).collect();
    Ok(encode(&pb::LeaseLeasesResponse { header: Headers::of(b).at(rev), leases }))
}

/// Lease.LeaseKeepAlive: one response per request; TTL 0 for a lease that
/// does not exist, as etcd answers.
pub async fn keep_alive<B: Backend>(b: &B, mut requests: RequestStream, mut responses: ResponseSink) -> Status {
    while let Some(req) = requests.next().await {
        let body = match req {
            Ok(body) => body,
            Err(status) => return status,
        };
        let r: pb::LeaseKeepAliveRequest = match decode(&body) {
            Ok(r) => r,
            Err(status) => return status,
        };
        let ttl = b.lease_keep_alive(r.id).await.unwrap_or(0);
        let rev = b.status().revision;
        let resp = pb::LeaseKeepAliveResponse { header: Headers::of(b).at(rev), id: r.id, ttl };
        if let Err(status) = responses.send(encode(&resp)).await {
            return status;
        }
    }
    Status::ok()
}
