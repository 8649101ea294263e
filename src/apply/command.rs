//! The commands a log entry carries, in their rkyv form.
//!
//! A log entry's payload is one [`Batch`]: the client commands that the
//! sequencer gathered while the previous write was in flight, each tagged
//! with where its reply goes. Shards read the archived form in place
//! ([`access_batch`]); nothing is deserialized on the apply path.
//!
//! These types mirror etcd's write requests field for field, minus what the
//! API layer has already checked or resolved (for example a `Compare`'s
//! target union is resolved into [`CompareValue`] by its target).

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// The payload of one log entry: commands in proposal order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
pub struct Batch {
    /// The commands, in the order they take effect.
    pub items: Vec<Item>,
}

/// One command and where its reply goes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Item {
    /// Who waits for the reply.
    pub origin: Origin,
    /// The command.
    pub cmd: Command,
}

/// The member, reactor and request number that wait for a command's reply.
/// A command replayed from the log on restart has nobody waiting: its
/// member's reactors have a fresh request-number space, so a stale `seq` is
/// never matched (see `node`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Origin {
    /// Member ID of the node whose client sent the command.
    pub member: u64,
    /// Reactor on that node that holds the client's connection.
    pub reactor: u16,
    /// Boot number of that node when it proposed (replies go only to the
    /// boot that is waiting).
    pub boot: u32,
    /// Request number on that reactor.
    pub seq: u64,
}

/// A state-changing request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub enum Command {
    /// etcd's `Put`.
    Put(Put),
    /// etcd's `DeleteRange`.
    DeleteRange(DeleteRange),
    /// etcd's `Txn`.
    Txn(Txn),
    /// etcd's `Compact`.
    Compact(Compact),
    /// etcd's `LeaseGrant` (with the ID chosen before proposing).
    LeaseGrant(LeaseGrant),
    /// etcd's `LeaseRevoke`, also proposed by the leader when a lease
    /// expires: deletes the lease's keys in one revision.
    LeaseRevoke(LeaseRevoke),
    /// A member's attributes (etcd's "publish"): its name and client URLs,
    /// replicated so that every member lists every member's client URLs.
    /// Takes no revision and touches no key.
    Publish(Publish),
}

/// A member's published attributes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Publish {
    /// The member's ID.
    pub member: u64,
    /// Its `--name`.
    pub name: String,
    /// Its `--advertise-client-urls`.
    pub client_urls: Vec<String>,
}

/// Grants a lease.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct LeaseGrant {
    /// The lease ID; never 0.
    pub id: i64,
    /// Time to live, seconds (at least the minimum TTL).
    pub ttl: i64,
}

/// Revokes a lease.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct LeaseRevoke {
    /// The lease ID.
    pub id: i64,
}

/// etcd's `PutRequest`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
pub struct Put {
    /// The key; never empty.
    pub key: Vec<u8>,
    /// The value (empty when `ignore_value`).
    pub value: Vec<u8>,
    /// Lease to attach; 0 for none.
    pub lease: i64,
    /// Return the previous version.
    pub prev_kv: bool,
    /// Keep the current value.
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
pub struct DeleteRange {
    /// First key.
    pub key: Vec<u8>,
    /// etcd's `range_end` (empty: one key; `"\0"`: every key from `key`).
    pub range_end: Vec<u8>,
    /// Return the deleted versions.
    pub prev_kv: bool,
}

/// etcd's `RangeRequest`, as a read inside a Txn or a read served by a shard.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
pub struct Range {
    /// First key.
    pub key: Vec<u8>,
    /// etcd's `range_end`.
    pub range_end: Vec<u8>,
    /// At most this many keys; 0 for no limit.
    pub limit: i64,
    /// Read at this revision; 0 or less for the current one.
    pub revision: i64,
    /// etcd's `SortOrder`: 0 none, 1 ascend, 2 descend.
    pub sort_order: i32,
    /// etcd's `SortTarget`: 0 key, 1 version, 2 create, 3 mod, 4 value.
    pub sort_target: i32,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Filters; 0 disables each.
    pub min_mod_revision: i64,
    /// See `min_mod_revision`.
    pub max_mod_revision: i64,
    /// See `min_mod_revision`.
    pub min_create_revision: i64,
    /// See `min_mod_revision`.
    pub max_create_revision: i64,
}

/// etcd's `TxnRequest`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(derive(Debug))]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub struct Txn {
    /// All must hold for `success` to run; otherwise `failure` runs.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    #[rkyv(omit_bounds)]
    pub success: Vec<Op>,
    /// Ops run otherwise.
    #[rkyv(omit_bounds)]
    pub failure: Vec<Op>,
}

/// etcd's `RequestOp`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub enum Op {
    /// A read.
    Range(Range),
    /// A put.
    Put(Put),
    /// A delete.
    DeleteRange(DeleteRange),
    /// A nested Txn.
    Txn(#[rkyv(omit_bounds)] Txn),
}

/// etcd's `Compare.CompareResult`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CompareResult {
    /// `==`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

/// What a compare looks at, with the constant it compares against.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub enum CompareValue {
    /// The key's version.
    Version(i64),
    /// The key's create revision.
    CreateRevision(i64),
    /// The key's mod revision.
    ModRevision(i64),
    /// The key's value.
    Value(Vec<u8>),
    /// The key's lease.
    Lease(i64),
}

/// etcd's `Compare`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Compare {
    /// The relation that must hold.
    pub result: CompareResult,
    /// Target and constant.
    pub value: CompareValue,
    /// The key.
    pub key: Vec<u8>,
    /// etcd's `range_end`: the compare must hold for every key in the range.
    pub range_end: Vec<u8>,
}

/// etcd's `CompactionRequest`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Compact {
    /// Compact at this revision.
    pub revision: i64,
    /// Reply only when the space has been reclaimed.
    pub physical: bool,
}

/// A batch payload failed validation (a bug or a corrupt log entry).
#[derive(Debug, thiserror::Error)]
#[error("malformed command batch: {0}")]
pub struct MalformedBatch(String);

/// Encodes a batch for a log entry. The result is 16-byte aligned, as
/// [`access_batch`] needs.
pub fn encode_batch(batch: &Batch) -> AlignedVec {
    // Serializing plain owned data into a growable buffer has no failure
    // mode other than allocation failure, which aborts anyway.
    match rkyv::to_bytes::<rancor::Error>(batch) {
        Ok(bytes) => bytes,
        Err(e) => panic!("rkyv serialization of an owned batch failed: {e}"),
    }
}

/// Validates and gives in-place access to an encoded batch. `bytes` must be
/// 16-byte aligned (use [`aligned_copy`] for bytes of unknown alignment).
pub fn access_batch(bytes: &[u8]) -> Result<&ArchivedBatch, MalformedBatch> {
    rkyv::access::<ArchivedBatch, rancor::Error>(bytes).map_err(|e| MalformedBatch(e.to_string()))
}

/// Copies bytes into a 16-byte aligned buffer.
pub fn aligned_copy(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_txn_round_trips_through_the_archive() {
        let inner = Txn {
            compare: vec![Compare {
                result: CompareResult::Greater,
                value: CompareValue::ModRevision(7),
                key: b"a".to_vec(),
                range_end: vec![],
            }],
            success: vec![Op::Put(Put { key: b"b".to_vec(), value: b"1".to_vec(), ..Put::default() })],
            failure: vec![],
        };
        let batch = Batch {
            items: vec![Item {
                origin: Origin { member: 1, reactor: 2, boot: 3, seq: 4 },
                cmd: Command::Txn(Txn { compare: vec![], success: vec![Op::Txn(inner)], failure: vec![] }),
            }],
        };
        let bytes = encode_batch(&batch);
        let archived = access_batch(&bytes).expect("valid");
        let back: Batch = rkyv::deserialize::<Batch, rancor::Error>(archived).expect("deserialize");
        assert_eq!(back, batch);
        match &archived.items[0].cmd {
            ArchivedCommand::Txn(t) => match &t.success[0] {
                ArchivedOp::Txn(inner) => assert_eq!(inner.success.len(), 1),
                _ => panic!("expected nested txn"),
            },
            _ => panic!("expected txn"),
        }
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        let garbage = aligned_copy(&[0xff; 64]);
        assert!(access_batch(&garbage).is_err());
        assert!(access_batch(&aligned_copy(&[])).is_err());
    }
}
