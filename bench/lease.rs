//! The `lease-keepalive` workload's requests and replies, sans-IO.

use bytes::{Bytes, BytesMut};
use corekv::api::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
};
use prost::Message;

pub const GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
pub const KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";

/// `LeaseGrant(TTL)`, the server choosing the ID.
pub fn grant_request(ttl: i64) -> Bytes {
    LeaseGrantRequest { ttl, id: 0 }.encode_to_vec().into()
}

/// The granted lease's ID, or why there is none.
pub fn granted_id(reply: Bytes) -> Result<i64, String> {
    let r = LeaseGrantResponse::decode(reply).map_err(|e| format!("undecodable LeaseGrant reply: {e}"))?;
    if !r.error.is_empty() {
        return Err(format!("LeaseGrant: {}", r.error));
    }
    if r.id == 0 {
        return Err("LeaseGrant returned lease ID 0".into());
    }
    Ok(r.id)
}

/// `LeaseKeepAlive{ID}`, encoded in `scratch` (its allocation is reused
/// once the returned bytes are dropped).
pub fn keep_alive_request(id: i64, scratch: &mut BytesMut) -> Bytes {
    let request = LeaseKeepAliveRequest { id };
    scratch.clear();
    scratch.reserve(request.encoded_len());
    request.encode(scratch).expect("BytesMut grows as needed");
    scratch.split().freeze()
}

/// What a keep-alive reply said about the lease renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Renewed for this many seconds.
    Renewed(i64),
    /// TTL 0 or less: the lease no longer exists.
    Expired,
    /// A reply about another lease, or no reply at all.
    Bad,
}

/// Reads the reply to a keep-alive of lease `id`.
pub fn keep_alive_outcome(reply: Bytes, id: i64) -> KeepAlive {
    match LeaseKeepAliveResponse::decode(reply) {
        Ok(r) if r.id != id => KeepAlive::Bad,
        Ok(r) if r.ttl <= 0 => KeepAlive::Expired,
        Ok(r) => KeepAlive::Renewed(r.ttl),
        Err(_) => KeepAlive::Bad,
    }
}

/// Which of a thread's `leases` leases client `client` of `clients`
/// renews on its `round`-th keep-alive: client c takes c, c + clients, ...
/// so the clients together go round every lease.
pub fn lease_index(client: usize, clients: usize, round: u64, leases: usize) -> usize {
    ((client as u64 + round * clients as u64) % leases as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_ttl_and_id() {
        assert_eq!(LeaseGrantRequest::decode(grant_request(60)).unwrap(), LeaseGrantRequest { ttl: 60, id: 0 });
        let mut scratch = BytesMut::new();
        let first = keep_alive_request(0x7fff_0000_1234, &mut scratch);
        assert_eq!(LeaseKeepAliveRequest::decode(first.clone()).unwrap().id, 0x7fff_0000_1234);
        let address = first.as_ptr();
        drop(first);
        for id in 1..40 {
            let next = keep_alive_request(id << 40, &mut scratch);
            assert_eq!(next.as_ptr(), address, "keep-alive {id} allocated");
            assert_eq!(LeaseKeepAliveRequest::decode(next).unwrap().id, id << 40);
        }
    }

    #[test]
    fn grant_replies_give_the_id_or_the_error() {
        let reply = |id, error: &str| -> Bytes {
            LeaseGrantResponse { header: None, id, ttl: 60, error: error.into() }.encode_to_vec().into()
        };
        assert_eq!(granted_id(reply(42, "")), Ok(42));
        assert!(granted_id(reply(42, "lease already exists")).unwrap_err().contains("already exists"));
        assert!(granted_id(reply(0, "")).is_err());
        assert!(granted_id(Bytes::from_static(b"\xff\xff")).is_err());
    }

    #[test]
    fn keep_alive_replies_tell_renewed_expired_or_bad() {
        let reply = |id, ttl| -> Bytes { LeaseKeepAliveResponse { header: None, id, ttl }.encode_to_vec().into() };
        assert_eq!(keep_alive_outcome(reply(7, 60), 7), KeepAlive::Renewed(60));
        assert_eq!(keep_alive_outcome(reply(7, 0), 7), KeepAlive::Expired);
        assert_eq!(keep_alive_outcome(reply(8, 60), 7), KeepAlive::Bad);
        assert_eq!(keep_alive_outcome(Bytes::from_static(b"\xff"), 7), KeepAlive::Bad);
    }

    #[test]
    fn clients_go_round_every_lease() {
        let (clients, leases) = (3, 7);
        let mut hits = vec![0; leases];
        for client in 0..clients {
            for round in 0..7 {
                hits[lease_index(client, clients, round, leases)] += 1;
            }
        }
        assert!(hits.iter().all(|&h| h == 3), "{hits:?}");
        assert_eq!((0..3).map(|r| lease_index(1, 3, r, 7)).collect::<Vec<_>>(), vec![1, 4, 0]);
    }
}
