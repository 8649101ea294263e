//! Raft messages on the wire: raft-rs's protobuf `eraftpb.Message`, checked
//! before and after decoding.
//!
//! Bytes from a peer are hostile until proven otherwise. Two layers:
//!
//! 1. Before protobuf sees them, [`check_wire`] walks the protobuf wire
//!    format with the schema of `eraftpb.Message` (Message → Entry,
//!    Snapshot → SnapshotMetadata → ConfState, a fixed depth) and refuses
//!    group wire types (3, 4) anywhere, invalid wire types, truncated
//!    varints and lengths that overrun. Groups are what RUSTSEC-2024-0437
//!    exploits in protobuf 2.28 (unbounded recursion while skipping unknown
//!    groups, a stack overflow); eraftpb has none, so refusing them costs
//!    nothing.
//! 2. After decoding, [`check_message`] refuses what raft-rs would panic on
//!    or must never get from a peer: local message types, proposals (corekv
//!    forwards client requests itself, never through Raft), a wrong
//!    recipient, a missing or self sender, non-contiguous entries, entry
//!    terms above the message's term, a snapshot without an index or with an
//!    impossible configuration.
//!
//! What remains trusted: a structurally valid message from an authenticated
//! peer that lies about Raft state (a Byzantine peer) can still trip
//! raft-rs's internal assertions. Raft tolerates crashes, not lies; peers
//! are authenticated with mutual TLS.

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeSingle, ConfChangeV2, ConfState, Message, MessageType};

use crate::wal::EntryKind;

/// Largest message accepted from a peer; larger is refused before decoding.
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Most entries one message may carry.
pub const MESSAGE_ENTRIES_MAX: usize = 1 << 20;
/// Most members a configuration in a snapshot may name.
pub const CONF_MEMBERS_MAX: usize = 1024;

/// Why bytes from a peer were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The bytes are not a well-formed `eraftpb.Message`.
    #[error("malformed raft message: {0}")]
    Malformed(String),
    /// The message decoded but must not come from a peer or is inconsistent.
    #[error("refused raft message: {0}")]
    Refused(String),
}

fn malformed(s: impl Into<String>) -> WireError {
    WireError::Malformed(s.into())
}

fn refused(s: impl Into<String>) -> WireError {
    WireError::Refused(s.into())
}

/// The schema walked by [`check_wire`]: which fields hold nested messages.
#[derive(Clone, Copy, Debug)]
enum Schema {
    Message,
    Entry,
    Snapshot,
    SnapshotMetadata,
    ConfState,
    ConfChange,
    ConfChangeV2,
}

impl Schema {
    /// The nested message type of field `field`, if it is one.
    fn nested(self, field: u64) -> Option<Schema> {
        match (self, field) {
            (Schema::Message, 7) => Some(Schema::Entry),
            (Schema::Message, 9) => Some(Schema::Snapshot),
            (Schema::Snapshot, 2) => Some(Schema::SnapshotMetadata),
            (Schema::SnapshotMetadata, 1) => Some(Schema::ConfState),
            (Schema::ConfChangeV2, 2) => Some(Schema::ConfChange),
            _ => None,
        }
    }
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, WireError> {
    let mut v = 0u64;
    for shift in 0..10 {
        let b = *buf.get(*at).ok_or_else(|| malformed("truncated varint"))?;
        *at += 1;
        if shift == 9 && b > 1 {
            return Err(malformed("varint overflows 64 bits"));
        }
        v |= u64::from(b & 0x7f) << (7 * shift);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

fn skip(buf: &[u8], at: &mut usize, n: u64) -> Result<(), WireError> {
    let end = u64::try_from(*at).ok().and_then(|a| a.checked_add(n)).ok_or_else(|| malformed("length overflow"))?;
    if end > buf.len() as u64 {
        return Err(malformed("field runs past the end of its message"));
    }
    *at = end as usize;
    Ok(())
}

fn walk(buf: &[u8], schema: Schema) -> Result<(), WireError> {
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let field = key >> 3;
        if field == 0 {
            return Err(malformed("field number 0"));
        }
        match key & 7 {
            0 => {
                varint(buf, &mut at)?;
            }
            1 => skip(buf, &mut at, 8)?,
            2 => {
                let len = varint(buf, &mut at)?;
                let start = at;
                skip(buf, &mut at, len)?;
                if let Some(inner) = schema.nested(field) {
                    walk(&buf[start..at], inner)?;
                }
            }
            5 => skip(buf, &mut at, 4)?,
            3 | 4 => return Err(malformed(format!("group wire type in field {field} (eraftpb has no groups)"))),
            t => return Err(malformed(format!("invalid wire type {t} in field {field}"))),
        }
    }
    Ok(())
}

/// Checks the protobuf wire format of an `eraftpb.Message` without decoding
/// it. See the module documentation.
pub fn check_wire(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(malformed(format!("{} bytes, above the {MESSAGE_BYTES_MAX}-byte bound", bytes.len())));
    }
    walk(bytes, Schema::Message)
}

/// Decodes a message that peer `sender` sent to member `me`:
/// [`check_wire`], then protobuf, then [`check_message`].
pub fn decode(bytes: &[u8], me: u64, sender: u64) -> Result<Message, WireError> {
    check_wire(bytes)?;
    let msg = Message::parse_from_bytes(bytes).map_err(|e| malformed(e.to_string()))?;
    check_message(&msg, me, sender)?;
    Ok(msg)
}

/// Encodes a message for a peer.
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    msg.write_to_bytes().map_err(|e| malformed(format!("encoding failed: {e}")))
}

/// Message types a peer may send us. Local ones (hup, beat, unreachable,
/// snapshot status, check quorum) are raft-rs's internal events; proposals
/// are never forwarded through Raft in corekv.
fn allowed_from_peer(t: MessageType) -> bool {
    use MessageType::*;
    matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTransferLeader
            | MsgTimeoutNow
            | MsgReadIndex
            | MsgReadIndexResp
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
    )
}

/// Checks a decoded message that peer `sender` sent to member `me` for
/// what must never come from a peer. See the module documentation.
pub fn check_message(m: &Message, me: u64, sender: u64) -> Result<(), WireError> {
    let t = m.get_msg_type();
    if !allowed_from_peer(t) {
        return Err(refused(format!("{t:?} may not come from a peer")));
    }
    if m.to != me {
        return Err(refused(format!("addressed to {}, this member is {me}", m.to)));
    }
    // A forwarded read-index or transfer request keeps its originator in
    // `from` (possibly this member, bounced back by a member that thinks we
    // lead); everything else names its sender.
    let forwarded = matches!(t, MessageType::MsgReadIndex | MessageType::MsgTransferLeader);
    if m.from == 0 || (!forwarded && m.from != sender) || sender == me {
        return Err(refused(format!("sender {sender} sent a {t:?} from {}", m.from)));
    }
    if m.term == 0 && t != MessageType::MsgReadIndex {
        return Err(refused(format!("{t:?} without a term")));
    }
    if t == MessageType::MsgAppend && m.log_term > m.term {
        // The leader's previous entry cannot be from a later term than its own.
        return Err(refused(format!("log term {} above term {}", m.log_term, m.term)));
    }
    check_entries(m, t)?;
    if t == MessageType::MsgSnapshot {
        let snap = m.get_snapshot();
        let meta = snap.get_metadata();
        if meta.index == 0 {
            return Err(refused("snapshot without an index"));
        }
        if meta.term == 0 || meta.term > m.term {
            return Err(refused(format!("snapshot term {} with message term {}", meta.term, m.term)));
        }
        check_conf_state(meta.get_conf_state())?;
    } else if m.snapshot.is_some() {
        return Err(refused(format!("{t:?} carries a snapshot")));
    }
    Ok(())
}

fn check_entries(m: &Message, t: MessageType) -> Result<(), WireError> {
    let n = m.entries.len();
    let allowed = match t {
        MessageType::MsgAppend => MESSAGE_ENTRIES_MAX,
        MessageType::MsgReadIndex | MessageType::MsgReadIndexResp => 1,
        _ => 0,
    };
    if n > allowed {
        return Err(refused(format!("{t:?} with {n} entries (at most {allowed})")));
    }
    if t == MessageType::MsgReadIndex && n != 1 {
        return Err(refused("read index request without its context entry"));
    }
    if t != MessageType::MsgAppend {
        return Ok(());
    }
    let mut want = m.index.checked_add(1).ok_or_else(|| refused("index overflow"))?;
    let mut prev_term = m.log_term;
    for e in m.entries.iter() {
        if e.index != want {
            return Err(refused(format!("entry index {} where {want} was due", e.index)));
        }
        if e.term < prev_term || e.term > m.term || e.term == 0 {
            return Err(refused(format!(
                "entry {} has term {} (previous {prev_term}, message {})",
                e.index, e.term, m.term
            )));
        }
        prev_term = e.term;
        want = want.checked_add(1).ok_or_else(|| refused("index overflow"))?;
    }
    Ok(())
}

/// A configuration must be one raft-rs can restore: no member 0, no member
/// both voter and learner, learners-next only among outgoing voters.
pub fn check_conf_state(cs: &ConfState) -> Result<(), WireError> {
    let all = [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next];
    if all.iter().map(|v| v.len()).sum::<usize>() > CONF_MEMBERS_MAX {
        return Err(refused("configuration too large"));
    }
    if all.iter().any(|v| v.contains(&0)) {
        return Err(refused("configuration names member 0"));
    }
    if cs.voters.is_empty() && cs.voters_outgoing.is_empty() {
        return Err(refused("configuration without voters"));
    }
    for l in &cs.learners {
        if cs.voters.contains(l) || cs.voters_outgoing.contains(l) {
            return Err(refused(format!("member {l} is both voter and learner")));
        }
    }
    for l in &cs.learners_next {
        if cs.voters.contains(l) || cs.learners.contains(l) || !cs.voters_outgoing.contains(l) {
            return Err(refused(format!("member {l} is an impossible next learner")));
        }
    }
    Ok(())
}

/// Decodes the payload of a conf change entry (it came from a leader: the
/// same checks as a message). A v1 change comes back as its v2 form.
pub fn decode_conf_change(kind: EntryKind, data: &[u8]) -> Result<ConfChangeV2, WireError> {
    if data.len() > MESSAGE_BYTES_MAX {
        return Err(malformed("conf change too large"));
    }
    match kind {
        EntryKind::ConfChange => {
            walk(data, Schema::ConfChange)?;
            let cc = ConfChange::parse_from_bytes(data).map_err(|e| malformed(e.to_string()))?;
            let mut single = ConfChangeSingle::default();
            single.set_change_type(cc.get_change_type());
            single.node_id = cc.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.changes = vec![single].into();
            v2.context = cc.context;
            Ok(v2)
        }
        EntryKind::ConfChangeV2 => {
            walk(data, Schema::ConfChangeV2)?;
            ConfChangeV2::parse_from_bytes(data).map_err(|e| malformed(e.to_string()))
        }
        EntryKind::Normal => Err(malformed("not a conf change entry")),
    }
}
