//! etcd's Lock service (`v3lockpb.Lock`): Lock and Unlock.
//!
//! etcd serves these with its `concurrency.Mutex` recipe running in the
//! server (`v3lock/lock.go`); this module runs the same recipe against the
//! [`Backend`], with the steps it shares with the Election service from
//! `api::election`. A waiter is the key `<name>/<lease in hex>` attached
//! to its lease; the key under `<name>/` with the lowest create revision
//! holds the lock; Lock returns once every key created before the caller's
//! is deleted (unlock, revoke or expiry), and a Lock that fails or is
//! cancelled while waiting deletes its key. Errors reach the client as
//! etcd's do: code Unknown with etcd's text. Owns nothing but request
//! handling: never touches storage, Raft or the watch hub except through
//! [`Backend`].

use bytes::Bytes;

use super::backend::Backend;
use super::election::{
    candidate_key, check_key, check_size, created_at, first_created, first_kv, get_op, prefix_of, put_op, relay,
    session_lease, txn, wait_deletes, Cleanup,
};
use super::grpc::Status;
use super::kv::{decode, encode, Headers, Limits};
use super::proto::v3lockpb as lpb;
use crate::apply::command::{self as cmd, Command};

/// Deletes a lock key, whoever holds it (etcd's `Mutex.Unlock`).
fn unlock_cmd(key: &[u8]) -> Command {
    Command::DeleteRange(cmd::DeleteRange { key: key.to_vec(), ..Default::default() })
}

/// The Txn that enqueues `key` (or finds it from an earlier Lock with the
/// same lease) and reads who holds the lock.
fn enqueue_txn(key: &[u8], prefix: &[u8], lease: i64) -> cmd::Txn {
    let holder = cmd::Op::Range(first_created(prefix));
    cmd::Txn {
        compare: vec![created_at(key, 0)],
        success: vec![put_op(key, b"", lease), holder.clone()],
        failure: vec![get_op(key), holder],
    }
}

/// Lock.Lock: returns the caller's lock key once it holds the lock.
pub async fn lock<B: Backend>(b: &B, body: Bytes, limits: &Limits) -> Result<Bytes, Status> {
    check_size(&body, limits)?;
    let r: lpb::LockRequest = decode(&body)?;
    let lease = session_lease(b, r.lease).await?;
    let prefix = prefix_of(&r.name);
    let key = candidate_key(&prefix, lease);
    let h = Headers::of(b);
    let done = txn(b, enqueue_txn(&key, &prefix, lease)).await?;
    let mut responses = done.responses.into_iter();
    let mine = responses.next();
    let rev = if done.succeeded {
        done.revision
    } else {
        let Some(kv) = first_kv(mine) else {
            return Err(Status::internal("corekv: a failed create compare found no key"));
        };
        kv.create_revision
    };
    // Uncontended (or already held with this lease): one round trip.
    if first_kv(responses.next()).is_none_or(|holder| holder.create_revision == rev) {
        return Ok(encode(&lpb::LockResponse { header: h.at(done.revision), key: Bytes::from(key) }));
    }
    let guard = Cleanup::arm(b, unlock_cmd(&key));
    let waited = wait_deletes(b, &prefix, rev - 1).await;
    guard.disarm();
    match waited {
        Ok(revision) => Ok(encode(&lpb::LockResponse { header: Headers::of(b).at(revision), key: Bytes::from(key) })),
        Err(e) => {
            // etcd releases the key of a wait that failed.
            let _ = b.propose(unlock_cmd(&key)).await;
            Err(e)
        }
    }
}

/// Lock.Unlock: deletes the lock key (a key nobody holds is no error).
pub async fn unlock<B: Backend>(b: &B, body: Bytes) -> Result<Bytes, Status> {
    let r: lpb::UnlockRequest = decode(&body)?;
    check_key(&r.key)?;
    let h = Headers::of(b);
    let o = b.propose(unlock_cmd(&r.key)).await;
    o.result.map_err(relay)?;
    Ok(encode(&lpb::UnlockResponse { header: h.at(o.revision) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_creates_the_key_once_and_always_reads_the_holder() {
        let t = enqueue_txn(b"m/a", b"m/", 10);
        assert_eq!(t.compare, vec![created_at(b"m/a", 0)]);
        assert!(matches!(&t.success[..], [cmd::Op::Put(p), cmd::Op::Range(h)]
            if p.key == b"m/a" && p.value.is_empty() && p.lease == 10 && *h == first_created(b"m/")));
        assert!(matches!(&t.failure[..], [cmd::Op::Range(g), cmd::Op::Range(h)]
            if g.key == b"m/a" && g.range_end.is_empty() && *h == first_created(b"m/")));
    }
}
