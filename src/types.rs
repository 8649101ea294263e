//! Newtypes for the numbers that cross module boundaries.
//!
//! A bare `u64` says nothing about what it counts; these do. Each is a plain
//! `Copy` wrapper with the wire width etcd uses for it (`int64` revisions and
//! lease IDs, `uint64` indexes, terms and member IDs).

use std::fmt;

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw number, for the wire or the disk.
            #[inline]
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

newtype!(
    /// An etcd main revision: the store's logical clock, one step per
    /// modifying request. Revision 1 is the empty store's.
    Revision(i64)
);
newtype!(
    /// The position of an entry in the replicated log (Raft index). The first
    /// entry has index 1.
    RaftIndex(u64)
);
newtype!(
    /// A Raft term.
    Term(u64)
);
newtype!(
    /// A lease ID as etcd's API carries it; 0 means "no lease".
    LeaseId(i64)
);
newtype!(
    /// A cluster member's ID.
    MemberId(u64)
);
newtype!(
    /// A cluster's ID.
    ClusterId(u64)
);
newtype!(
    /// The index of a reactor (one per core) within this node.
    ReactorId(u16)
);
newtype!(
    /// The index of a shard (a contiguous key range owned by one reactor).
    ShardId(u16)
);

impl Revision {
    /// The revision after this one.
    #[inline]
    pub const fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl RaftIndex {
    /// The index after this one.
    #[inline]
    pub const fn next(self) -> RaftIndex {
        RaftIndex(self.0 + 1)
    }
}

impl ShardId {
    /// The shard's position as a `usize`, for indexing per-shard tables.
    #[inline]
    pub const fn idx(self) -> usize {
        self.0 as usize
    }
}

impl ReactorId {
    /// The reactor's position as a `usize`, for indexing per-reactor tables.
    #[inline]
    pub const fn idx(self) -> usize {
        self.0 as usize
    }
}
