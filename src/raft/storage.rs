//! The Raft log in memory: what raft-rs reads through its `Storage` trait.
//!
//! Holds the entries after the last compaction point, the hard state, the
//! snapshot metadata (and opaque descriptor) at the compaction point, and
//! the configuration history needed to describe a snapshot taken at any
//! index from the compaction point on. It mirrors what the WAL has (or is
//! about to have): `RaftCore` appends a Ready's entries here before the
//! caller makes them durable, which raft-rs's async-ready protocol allows
//! (raft-rs reads them back to send to followers; it does not count them as
//! persisted until `on_persisted`).
//!
//! Never panics on a request raft-rs makes: out-of-range reads are
//! `StorageError`s. Mutations refuse (with `LogError`) what would leave a gap
//! or rewrite compacted entries.

use std::cell::Cell;

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// A mutation of the in-memory log was refused (a bug in the caller or in
/// the glue: raft-rs never asks for these).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    /// The entries would leave a hole after the last index.
    #[error("entry {got} cannot follow the last index {last}")]
    Gap {
        /// The log's last index.
        last: u64,
        /// The first index offered.
        got: u64,
    },
    /// The entries would rewrite entries at or below the compaction point.
    #[error("entry {got} is at or below the compaction point {compacted}")]
    Compacted {
        /// The compaction point (the snapshot's index).
        compacted: u64,
        /// The first index offered.
        got: u64,
    },
    /// `compact_to` beyond what may be dropped.
    #[error("cannot compact to {index}: {why}")]
    BadCompaction {
        /// The requested index.
        index: u64,
        /// Why not.
        why: &'static str,
    },
}

/// The in-memory log. See the module documentation.
#[derive(Debug, Default)]
pub struct LogStore {
    hard_state: HardState,
    /// Index, term and configuration of the compaction point.
    snap_meta: SnapshotMetadata,
    /// The snapshot descriptor at the compaction point (empty if none).
    snap_data: Bytes,
    /// `entries[i].index == snap_meta.index + 1 + i`.
    entries: Vec<Entry>,
    /// The configuration in force from each index on: ascending, and the
    /// first element describes the compaction point (or earlier).
    conf_history: Vec<(u64, ConfState)>,
    /// raft-rs asked for a snapshot that the compaction point cannot give
    /// (it predates the member it is for): a fresh checkpoint is wanted.
    wanted: Cell<bool>,
}

impl LogStore {
    /// A log restored from durable state: the snapshot point (index, term,
    /// configuration, descriptor), the entries after it, the hard state.
    pub fn restore(
        hard_state: HardState,
        snap_meta: SnapshotMetadata,
        snap_data: Bytes,
        entries: Vec<Entry>,
    ) -> Result<LogStore, LogError> {
        let conf = snap_meta.get_conf_state().clone();
        let mut log = LogStore {
            hard_state,
            conf_history: vec![(snap_meta.index, conf)],
            snap_meta,
            snap_data,
            entries: Vec::new(),
            wanted: Cell::new(false),
        };
        log.append(&entries)?;
        Ok(log)
    }

    /// The first index `entries` can return.
    pub fn first(&self) -> u64 {
        self.snap_meta.index + 1
    }

    /// The last index in the log (the snapshot's if no entries follow it).
    pub fn last(&self) -> u64 {
        self.snap_meta.index + self.entries.len() as u64
    }

    /// The compaction point's metadata.
    pub fn snapshot_meta(&self) -> &SnapshotMetadata {
        &self.snap_meta
    }

    /// The descriptor of the compaction point's checkpoint.
    pub fn snapshot_data(&self) -> Bytes {
        self.snap_data.clone()
    }

    /// Whether raft-rs wanted a snapshot newer than the compaction point
    /// since the last call (and clears the flag).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.wanted.replace(false)
    }

    /// The hard state last set.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The configuration in force now (after the last applied change).
    pub fn conf_state(&self) -> &ConfState {
        // conf_history is never empty: restore and install_snapshot seed it.
        match self.conf_history.last() {
            Some((_, cs)) => cs,
            None => self.snap_meta.get_conf_state(),
        }
    }

    /// Records the hard state raft-rs produced.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Records a configuration that takes effect at `index` (a conf change
    /// entry applied, or one pre-applied at boot).
    pub fn record_conf(&mut self, index: u64, cs: ConfState) {
        while self.conf_history.last().is_some_and(|(i, _)| *i >= index) && self.conf_history.len() > 1 {
            self.conf_history.pop();
        }
        self.conf_history.push((index, cs));
    }

    /// Appends entries, replacing any at or after the first one's index
    /// (Raft's truncation of a conflicting suffix).
    pub fn append(&mut self, ents: &[Entry]) -> Result<(), LogError> {
        let Some(first) = ents.first() else { return Ok(()) };
        if first.index <= self.snap_meta.index {
            return Err(LogError::Compacted { compacted: self.snap_meta.index, got: first.index });
        }
        if first.index > self.last() + 1 {
            return Err(LogError::Gap { last: self.last(), got: first.index });
        }
        for pair in ents.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(LogError::Gap { last: pair[0].index, got: pair[1].index });
            }
        }
        let keep = (first.index - self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Replaces the log with a snapshot point: every entry is dropped (the
    /// leader sends what follows), the hard state's commit moves up to it.
    pub fn install_snapshot(&mut self, meta: SnapshotMetadata, data: Bytes) -> Result<(), LogError> {
        if meta.index < self.snap_meta.index {
            return Err(LogError::BadCompaction { index: meta.index, why: "snapshot older than the compaction point" });
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.conf_history = vec![(meta.index, meta.get_conf_state().clone())];
        self.snap_meta = meta;
        self.snap_data = data;
        Ok(())
    }

    /// Drops the entries up to and including `index`, which becomes the
    /// compaction point, described by `data` (the shards' checkpoint).
    /// `index` must be in the log; below the current point it is a no-op.
    pub fn compact_to(&mut self, index: u64, data: Bytes) -> Result<(), LogError> {
        if index < self.snap_meta.index {
            // Already compacted further (a snapshot arrived meanwhile).
            return Ok(());
        }
        if index > self.last() {
            return Err(LogError::BadCompaction { index, why: "beyond the last index" });
        }
        if index == self.snap_meta.index {
            self.snap_data = data;
            return Ok(());
        }
        let term = self.entry_term(index).ok_or(LogError::BadCompaction { index, why: "no such entry" })?;
        let cut = (index - self.snap_meta.index) as usize;
        self.entries.drain(..cut);
        let conf = self.conf_at(index);
        self.wanted.set(false);
        self.conf_history.retain(|(i, _)| *i > index);
        self.conf_history.insert(0, (index, conf.clone()));
        let mut meta = SnapshotMetadata::default();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf);
        self.snap_meta = meta;
        self.snap_data = data;
        Ok(())
    }

    /// The configuration in force at `index` (at or after the compaction
    /// point).
    pub fn conf_at(&self, index: u64) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, cs)| cs.clone())
            .unwrap_or_else(|| self.snap_meta.get_conf_state().clone())
    }

    /// Entries `[low, high)`, all of them (no size limit).
    pub fn entries_in(&self, low: u64, high: u64) -> raft::Result<Vec<Entry>> {
        self.entries(low, high, None, GetEntriesContext::empty(false))
    }

    fn entry_term(&self, index: u64) -> Option<u64> {
        if index == self.snap_meta.index {
            return Some(self.snap_meta.term);
        }
        if index < self.first() || index > self.last() {
            return None;
        }
        self.entries.get((index - self.first()) as usize).map(|e| e.term)
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state().clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let max = max_size.into();
        let mut out = Vec::with_capacity(to - from);
        let mut bytes = 0u64;
        for e in &self.entries[from..to] {
            bytes += u64::from(e.compute_size());
            // At least one entry, even if it alone exceeds the limit.
            if !out.is_empty() && max.is_some_and(|m| bytes > m) {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snap_meta.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry_term(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        // No compaction point yet, an older one than asked for, or one from
        // before `to` joined (it would refuse a configuration without
        // itself): the shards' next checkpoint, handed to `compact_to`,
        // will do. Until then raft-rs retries.
        let cs = self.snap_meta.get_conf_state();
        let knows_to =
            [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next].iter().any(|v| v.contains(&to));
        if self.snap_meta.index == 0 || self.snap_meta.index < request_index || !knows_to {
            self.wanted.set(true);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snap = Snapshot::default();
        snap.set_metadata(self.snap_meta.clone());
        snap.data = self.snap_data.clone();
        Ok(snap)
    }
}
