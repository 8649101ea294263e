//! Merging the shards' parts of a reply into one response.
//!
//! Every shard a command touched sends a [`Reply`] whose parts have the same
//! skeleton; merging goes node by node in shard order, which is key order.

use super::engine::Reply;
use super::eval::{ApplyError, Part};
use super::range::{merge_parts, RangeResult};
use crate::mvcc::KeyValue;

/// A command's merged response, before the API layer turns it into etcd's
/// protobuf messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A put's response.
    Put {
        /// The replaced version, if asked for.
        prev_kv: Option<KeyValue>,
    },
    /// A delete's response.
    Delete {
        /// Keys deleted.
        deleted: i64,
        /// Deleted versions, if asked for.
        prev_kvs: Vec<KeyValue>,
    },
    /// A read inside a Txn.
    Range {
        /// The merged result.
        result: RangeResult,
        /// The header revision of the read.
        rev: i64,
    },
    /// A Txn's response.
    Txn {
        /// Every compare held.
        succeeded: bool,
        /// The taken branch's op responses.
        responses: Vec<Response>,
    },
    /// A compaction's response.
    Compact,
    /// A lease grant's or revoke's response.
    Lease,
    /// A publish's response.
    Published,
}

/// A command's outcome: the store's revision after it and its response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The revision after the command (etcd's header revision).
    pub revision: i64,
    /// The response, or the error the command failed with.
    pub result: Result<Response, ApplyError>,
}

/// Merges the replies of every shard a command touched. `replies` must be
/// non-empty and all for one command.
pub fn merge(mut replies: Vec<Reply>) -> Outcome {
    replies.sort_by_key(|r| r.shard);
    let revision = replies.first().map_or(0, |r| r.revision);
    let mut skeletons = Vec::with_capacity(replies.len());
    for r in replies {
        match r.result {
            Ok(parts) => skeletons.push(parts),
            Err(e) => return Outcome { revision, result: Err(e) },
        }
    }
    let result = if skeletons.iter().any(|s| s.is_empty()) {
        // Only a failed plan has no parts; a success always has part 0.
        Ok(Response::Compact)
    } else {
        Ok(build(&mut skeletons, 0))
    };
    Outcome { revision, result }
}

fn build(shards: &mut [Vec<Part>], i: usize) -> Response {
    let first = std::mem::replace(&mut shards[0][i], Part::Compact);
    match first {
        Part::Put { mut prev_kv } => {
            for s in shards[1..].iter_mut() {
                if let Part::Put { prev_kv: Some(p) } = std::mem::replace(&mut s[i], Part::Compact) {
                    prev_kv.get_or_insert(p);
                }
            }
            Response::Put { prev_kv }
        }
        Part::Delete { mut deleted, mut prev_kvs } => {
            for s in shards[1..].iter_mut() {
                if let Part::Delete { deleted: d, prev_kvs: p } = std::mem::replace(&mut s[i], Part::Compact) {
                    deleted += d;
                    prev_kvs.extend(p);
                }
            }
            Response::Delete { deleted, prev_kvs }
        }
        Part::Range { part, mut rev, shape } => {
            let mut parts = vec![part];
            for s in shards[1..].iter_mut() {
                if let Part::Range { part, rev: r, .. } = std::mem::replace(&mut s[i], Part::Compact) {
                    parts.push(part);
                    // A shard that holds none of the range leaves the
                    // revision unset.
                    rev = rev.max(r);
                }
            }
            Response::Range { result: merge_parts(parts, &shape), rev }
        }
        Part::Txn { succeeded, first, len } => {
            let responses = (first..first + len).map(|j| build(shards, j as usize)).collect();
            Response::Txn { succeeded, responses }
        }
        Part::Compact => Response::Compact,
        Part::Lease => Response::Lease,
        Part::Published => Response::Published,
    }
}
