//! The write-ahead log: Raft entries and hard state, made durable with one
//! write and one fdatasync per group of records.
//!
//! Owns: the files in the WAL directory (segments and a `LOCK` file), their
//! format, recovery from them, and the aligned buffers writes go through.
//! Never touches: what entries mean (payloads are opaque bytes), Raft
//! itself (the caller decides what to append and when to flush), the
//! network, or any other directory. Group commit is the caller's: it
//! appends a batch, awaits `flush`, and collects the next batch meanwhile.
//!
//! # Threads
//!
//! `Wal::open` is plain blocking std I/O, run once before the reactor
//! serves. `flush` runs on a monoio reactor: writes and fdatasync go through
//! io_uring. Creating the next segment (create, fallocate, zero-fill,
//! fsync, rename) is blocking, so a helper thread does it ahead of time and
//! hands the open file back through a one-shot channel. `Wal` is not `Send`
//! (its files become monoio files on the first flush): open it on the
//! thread that will flush it.
//!
//! # Disk assumptions
//!
//! A write of aligned 4 KiB blocks may be torn at any sector boundary by a
//! crash, with any subset of its sectors reaching the disk; rewriting a
//! sector with identical bytes leaves it readable as those bytes whatever
//! happens. fdatasync returning Ok means every write before it is durable;
//! after a failed fdatasync nothing about those writes is known, so the
//! `Wal` refuses further use (`WalError::Broken`) and the node must restart
//! and recover.
//!
//! # Files
//!
//! The directory holds `LOCK` (flock'ed while a `Wal` is open) and segments
//! named `{seq:016x}.wal` (hex sequence number, so names sort; sequence
//! numbers are consecutive). A segment being created is named `….wal.tmp`
//! until it is complete; `open` deletes leftovers. Every segment is
//! `segment_bytes` long (a multiple of 4 KiB), preallocated with fallocate
//! and zero-filled once, then only overwritten.
//!
//! Block 0 of a segment is its header, all zero until the first write into
//! the segment; the fields (little-endian) are:
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 8    | magic `corekvWL`                                        |
//! | 8      | 4    | format version (1)                                      |
//! | 12     | 4    | CRC32C of bytes 0..12 and 16..64                        |
//! | 16     | 8    | sequence number (matches the file name)                 |
//! | 24     | 8    | segment size in bytes                                   |
//! | 32     | 8    | first index: the log's last index + 1 when started     |
//! | 40     | 8    | first write sequence: the write its first record is in  |
//! | 48     | 8    | previous segment's end: where its records stop          |
//! | 56     | 8    | zero                                                    |
//!
//! Records follow from offset 4096, back to back, each starting at a
//! multiple of 8 bytes:
//!
//! | offset | size | field                                                        |
//! |--------|------|--------------------------------------------------------------|
//! | 0      | 4    | length: 48 + payload bytes (0 = nothing written here)        |
//! | 4      | 4    | CRC32C of bytes 0..4 and 8..length                           |
//! | 8      | 1    | kind: 1 entry, 2 hard state, 3 write end, 4 log start        |
//! | 9      | 1    | entry kind: 0 normal, 1 conf change, 2 conf change v2        |
//! | 10     | 6    | zero                                                         |
//! | 16     | 8    | write sequence: which flush wrote it (1, 2, ...)             |
//! | 24     | 8    | entry: index;  hard state: term;  log start: index           |
//! | 32     | 8    | entry: term;   hard state: vote                              |
//! | 40     | 8    | entry: zero;   hard state: commit                            |
//! | 48     | n    | payload (entry data; empty for the other kinds)              |
//!
//! then zero padding to a multiple of 8. Every flush numbers its records
//! with the next write sequence and ends them with a write-end record, so
//! recovery knows which records were written together.
//!
//! # Writing
//!
//! The partly filled last block stays in a 4 KiB-aligned buffer; `append`
//! encodes records after it, and `flush` writes from that block's start to
//! the end of the new records rounded up to 4 KiB (rewriting the block in
//! place), then fdatasyncs. A record that does not fit in the rest of the
//! segment goes to the next one (its header is written in the same flush),
//! so one flush may touch two segments: both are written and synced before
//! it returns. A record larger than a segment's capacity (`segment_bytes`
//! − 4 KiB) is refused by `append` (`WalError::RecordTooLarge`); the caller
//! bounds records to a few MiB, far below the 64 MiB default.
//!
//! An entry whose index is at or below the last index replaces the log from
//! that index on (Raft's truncation); recovery replays this.
//!
//! # Snapshots: releasing segments, restarting the log
//!
//! Once a snapshot up to index `i` is durable elsewhere, `release_through(i)`
//! deletes the oldest segments whose entries are all at or below `i` (a
//! segment goes when the next one's header says it starts at or before
//! `i + 1`). Recovery then starts at the first segment left: its header's
//! first index tells where the log starts (`Recovered::base`). When a
//! snapshot from the leader replaces the log, `reset_after(i)` writes a
//! log-start record: recovery drops every entry before it and the next
//! entry must be `i + 1`.
//!
//! # Recovery
//!
//! `open` decodes forward from the first segment. A record continues the log
//! if it decodes (length, checksum, fields) and belongs to the expected
//! write: the same write as the previous record, or the next one after a
//! write end. At a segment's stop it continues into the next segment only if
//! that header's "previous end", sequence, first write and first index match
//! exactly where and how the previous segment stopped. An entry index that
//! jumps backwards truncates the log; one that jumps forwards is corruption.
//!
//! Where the log stops (a zero length, a torn or damaged record, a leftover
//! record of an older write, a bad header), it looks at everything beyond:
//! the rest of the segment and every later segment. A valid record of a
//! *later* write than the one the stop belongs to proves that write was
//! acknowledged (a write starts only after the previous fdatasync), so the
//! damage is corruption: `WalError::Corrupt` names the file and offset and
//! the node refuses to start. Otherwise everything beyond is part of the
//! last, unacknowledged write: a torn tail. Then `open` zeroes the torn
//! bytes, deletes later segments, and seals the log with an empty write
//! (a lone write-end record, fdatasync'ed), so that nothing left beyond the
//! end can ever pass for a continuation; `Recovered::truncated_tail` says
//! where it cut. The valid records of a partly written last write are kept.

pub mod codec;

mod aligned;
mod recovery;
mod segment;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::types::{MemberId, RaftIndex, Term};
use aligned::AlignedBuf;
use codec::{Body, Record, SegmentHeader};
use recovery::SegmentInfo;
use segment::{io_err, NameKind, Prepared, Spare};

/// Size of a block: the unit of alignment of every write and of the
/// segment header.
pub const BLOCK_BYTES: usize = aligned::ALIGN_BYTES;
/// The smallest allowed segment: a header block and one block of records.
pub const SEGMENT_BYTES_MIN: u64 = 2 * BLOCK_BYTES as u64;
/// The largest allowed segment.
pub const SEGMENT_BYTES_MAX: u64 = aligned::CAPACITY_MAX_BYTES as u64;
/// The default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// Bound on the bytes `append` may queue before a `flush`.
pub const QUEUED_BYTES_MAX: usize = 256 << 20;
/// After a flush, the write buffer is freed down to this many bytes.
const BUF_RETAIN_BYTES: usize = 1 << 20;
/// Name of the lock file in the WAL directory.
const LOCK_FILE: &str = "LOCK";

/// The kind of a Raft entry; mirrors raft-rs `EntryType` (codes 0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A normal entry (`EntryNormal`).
    Normal,
    /// A configuration change (`EntryConfChange`).
    ConfChange,
    /// A joint-consensus configuration change (`EntryConfChangeV2`).
    ConfChangeV2,
}

impl EntryKind {
    /// The on-disk code (raft-rs's numbering).
    pub const fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
            EntryKind::ConfChangeV2 => 2,
        }
    }

    /// The kind for an on-disk code, if known.
    pub const fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::ConfChange),
            2 => Some(EntryKind::ConfChangeV2),
            _ => None,
        }
    }
}

/// A Raft log entry, owned (as recovered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log.
    pub index: RaftIndex,
    /// The term it was proposed in.
    pub term: Term,
    /// Its kind.
    pub kind: EntryKind,
    /// The payload, opaque to the WAL.
    pub data: Vec<u8>,
}

impl Entry {
    /// A borrowed view, as `Wal::append` takes.
    pub fn entry_ref(&self) -> EntryRef<'_> {
        EntryRef { index: self.index, term: self.term, kind: self.kind, data: &self.data }
    }
}

/// A Raft log entry whose payload is borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Its position in the log.
    pub index: RaftIndex,
    /// The term it was proposed in.
    pub term: Term,
    /// Its kind.
    pub kind: EntryKind,
    /// The payload, opaque to the WAL.
    pub data: &'a [u8],
}

impl EntryRef<'_> {
    /// An owned copy.
    pub fn to_entry(&self) -> Entry {
        Entry { index: self.index, term: self.term, kind: self.kind, data: self.data.to_vec() }
    }
}

/// Raft's hard state: what a node must remember across restarts besides the
/// log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// Whom this node voted for in `term` (0 = nobody).
    pub vote: MemberId,
    /// The highest index known committed.
    pub commit: RaftIndex,
}

/// How to open the WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of each segment file: a multiple of 4 KiB between
    /// `SEGMENT_BYTES_MIN` and `SEGMENT_BYTES_MAX`. Existing segments keep
    /// their size; new ones get this one.
    pub segment_bytes: u64,
    /// Open segments with O_DIRECT. Turn off only for filesystems that
    /// refuse it (tmpfs); writes are then buffered and still fdatasync'ed.
    pub direct_io: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: SEGMENT_BYTES_DEFAULT, direct_io: true }
    }
}

/// What `Wal::open` recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written (all zero if none).
    pub hard_state: HardState,
    /// The log's entries after Raft truncations: contiguous, ascending.
    pub entries: Vec<Entry>,
    /// The index before the first entry the log can hold: 0, unless
    /// segments were released after a snapshot or a log-start record reset
    /// the log (then the entries start at `base + 1`, or the log is empty).
    pub base: RaftIndex,
    /// Where a torn tail was cut (segment file, offset), for the log.
    pub truncated_tail: Option<(PathBuf, u64)>,
}

/// Everything that can go wrong with the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A system call on a WAL file failed.
    #[error("WAL {op} failed on {} at offset {offset}: {source}", .file.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file (or directory).
        file: PathBuf,
        /// Byte offset in it (0 when not applicable).
        offset: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The filesystem refuses O_DIRECT (tmpfs does).
    #[error(
        "the filesystem holding {} refuses O_DIRECT (tmpfs does): put the data directory on a \
         real filesystem such as ext4 or xfs, or pass the buffered-I/O option \
         (WalOptions::direct_io = false)",
        .path.display()
    )]
    DirectIoUnsupported {
        /// The file or directory that was refused.
        path: PathBuf,
    },
    /// The log is damaged before records that were acknowledged: it cannot
    /// be recovered without losing them, so the node must not start.
    #[error("WAL corrupt in {} at offset {offset}: {detail}; refusing to start", .file.display())]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the damage in it.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A segment was written by a format this build cannot read.
    #[error("WAL segment {} has format version {version}, which this build cannot read", .file.display())]
    UnsupportedVersion {
        /// The segment file.
        file: PathBuf,
        /// Its format version.
        version: u32,
    },
    /// Another process (or another `Wal`) has the directory open.
    #[error("WAL directory is in use: {} is locked by another process", .path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// `WalOptions` are out of range.
    #[error("invalid WAL options: {detail}")]
    BadOptions {
        /// What is wrong.
        detail: &'static str,
    },
    /// An entry (with its record header) does not fit in one segment.
    #[error("entry {index} has {bytes} bytes of data; at most {max_bytes} fit in one WAL segment")]
    RecordTooLarge {
        /// The entry's index.
        index: RaftIndex,
        /// Its payload size.
        bytes: usize,
        /// The largest payload that fits.
        max_bytes: usize,
    },
    /// `append` got entries that would leave a gap in the log.
    #[error("entry {got} cannot follow {last}: indexes must be contiguous, starting at 1 or below the next index")]
    IndexGap {
        /// The log's (or the batch's) last index.
        last: RaftIndex,
        /// The offending entry's index.
        got: RaftIndex,
    },
    /// `append` would queue more than `QUEUED_BYTES_MAX` before a flush.
    #[error("WAL queue full: {queued_bytes} bytes queued, {more_bytes} more would exceed {max_bytes}; flush first")]
    QueueFull {
        /// Bytes already queued.
        queued_bytes: usize,
        /// Bytes this append would add.
        more_bytes: usize,
        /// The bound.
        max_bytes: usize,
    },
    /// The helper thread that prepares the next segment failed to deliver
    /// it.
    #[error("the next WAL segment ({seq}) could not be prepared: {detail}")]
    PreparerGone {
        /// The segment's sequence number.
        seq: u64,
        /// Why.
        detail: String,
    },
    /// An earlier flush failed or was cancelled, so what is on disk is
    /// unknown: drop this `Wal` and reopen (recovery sorts it out).
    #[error("the WAL is unusable after a failed or cancelled flush; reopen it")]
    Broken,
}

/// The write-ahead log. See the module documentation.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Holds the directory's flock while open.
    _lock: File,
    /// The segment holding the end of the durable log.
    active: Segment,
    /// Offset in `active` where the durable records end.
    durable_end: u64,
    /// Encoded bytes to write, per segment, in order. The last chunk is
    /// where the next record goes; the first may start with the durable
    /// start of `active`'s last block. Empty only while broken.
    chunks: Vec<Chunk>,
    /// The next segment, being prepared.
    spare: Option<Spare>,
    /// The write (flush) the queued records belong to.
    write_seq: u64,
    /// Records queued since the last flush.
    queued_records: usize,
    /// Bytes queued since the last flush.
    queued_bytes: usize,
    /// The index of the last entry appended (0 if none).
    last_index: RaftIndex,
    /// Set while a flush is in progress; stays set if it fails or is
    /// cancelled.
    broken: bool,
}

/// An open segment.
struct Segment {
    seq: u64,
    path: PathBuf,
    file: SegFile,
}

/// A segment's file: std until the first flush registers it with the
/// reactor.
enum SegFile {
    Std(File),
    Uring(monoio::fs::File),
    /// Transient, during the conversion.
    Gone,
}

impl SegFile {
    /// The reactor's handle; converts on first use. Must run inside a
    /// monoio runtime.
    fn uring(&mut self, path: &Path) -> Result<&monoio::fs::File, WalError> {
        if let SegFile::Std(_) = self {
            let SegFile::Std(std) = std::mem::replace(self, SegFile::Gone) else {
                unreachable!("checked just above");
            };
            let file = monoio::fs::File::from_std(std).map_err(|e| io_err("register with the reactor", path, 0, e))?;
            *self = SegFile::Uring(file);
        }
        match self {
            SegFile::Uring(f) => Ok(f),
            _ => Err(WalError::Broken),
        }
    }

    /// The std handle, before the first flush.
    fn std(&self) -> Result<&File, WalError> {
        match self {
            SegFile::Std(f) => Ok(f),
            _ => Err(WalError::Broken),
        }
    }
}

/// Bytes bound for one segment, starting at a block boundary.
struct Chunk {
    /// The segment's sequence number.
    seq: u64,
    /// The segment's size.
    seg_bytes: u64,
    /// File offset of `buf[0]` (a block multiple).
    file_off: u64,
    buf: AlignedBuf,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.file_off + self.buf.len() as u64
    }
}

impl Wal {
    /// Opens or creates the WAL in `dir`, recovering its content. Plain
    /// blocking std I/O: call it once at start-up, before the reactor serves,
    /// on the thread that will flush.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        check_options(&opts)?;
        std::fs::create_dir_all(dir).map_err(|e| io_err("create directory", dir, 0, e))?;
        let lock = lock_dir(dir, opts.direct_io)?;
        let mut segs = list_segments(dir)?;
        let mut fresh = None;
        if segs.is_empty() {
            let p = segment::prepare_segment(dir, 1, opts.segment_bytes, opts.direct_io)?;
            segs.push(SegmentInfo { seq: p.seq, path: p.path.clone() });
            fresh = Some(p);
        }
        let rec = recovery::recover(&segs, &mut |k, full| read_segment(&segs[k].path, full))?;
        let active_info = &segs[rec.active];
        let spare = settle_later_segments(dir, &segs[rec.active + 1..], &rec, &opts)?;
        let file = match fresh {
            Some(p) => p.file,
            None => segment::open_for_write(&active_info.path, opts.direct_io)?,
        };
        let seg_bytes = rec.active_header.map_or(opts.segment_bytes, |h| h.segment_bytes);
        ensure_allocated(&file, &active_info.path, seg_bytes)?;
        let last_index = rec.entries.last().map_or(rec.base, |e| e.index);
        let write_seq = rec.next_write_seq;
        let (chunk, durable_end) = match rec.active_header {
            Some(_) => (tail_chunk(active_info.seq, seg_bytes, &rec), rec.end),
            None => {
                // The segment has no valid header: write a fresh one with
                // the first flush.
                let header = SegmentHeader {
                    seq: active_info.seq,
                    segment_bytes: seg_bytes,
                    first_index: last_index.next(),
                    first_write_seq: write_seq,
                    prev_end: 0,
                };
                (header_chunk(&header), 0)
            }
        };
        let spare = spare.unwrap_or_else(|| Spare::spawn(dir, active_info.seq + 1, opts.segment_bytes, opts.direct_io));
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            _lock: lock,
            active: Segment { seq: active_info.seq, path: active_info.path.clone(), file: SegFile::Std(file) },
            durable_end,
            chunks: vec![chunk],
            spare: Some(spare),
            write_seq,
            queued_records: 0,
            queued_bytes: 0,
            last_index,
            broken: false,
        };
        let truncated_tail = match &rec.torn {
            Some(torn) => {
                wal.zero_range(torn.at, torn.until)?;
                wal.close_write();
                wal.flush_blocking()?;
                Some((active_info.path.clone(), torn.at))
            }
            None => None,
        };
        Ok((wal, Recovered { hard_state: rec.hard_state, entries: rec.entries, base: rec.base, truncated_tail }))
    }

    /// Queues a log-start record: the log restarts after `index` (a
    /// snapshot up to it was installed), dropping every entry, and the next
    /// entry appended must be `index + 1`. Durable with the next `flush`.
    pub fn reset_after(&mut self, index: RaftIndex) -> Result<(), WalError> {
        if self.broken {
            return Err(WalError::Broken);
        }
        self.push_record(&Record { write_seq: self.write_seq, body: Body::LogStart(index) });
        self.queued_records += 1;
        self.last_index = index;
        Ok(())
    }

    /// Deletes the oldest segments that hold only entries up to `index`
    /// (a durable snapshot covers them), never the one being written.
    /// Returns how many were deleted. Blocking (a directory listing, a
    /// header read per segment, unlinks): call it rarely.
    pub fn release_through(&mut self, index: RaftIndex) -> Result<usize, WalError> {
        let segs = segment_files(&self.dir)?;
        let mut released = 0;
        for pair in segs.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            if next.seq > self.active.seq {
                break;
            }
            let header = read_segment(&next.path, false)?;
            let first_index = match codec::decode_segment_header(&header) {
                Ok(Some(h)) => h.first_index,
                _ => break,
            };
            // `next` starts at or before `index + 1`: everything in `seg`
            // is at or below `index`.
            if first_index.get() > index.get() + 1 {
                break;
            }
            std::fs::remove_file(&seg.path).map_err(|e| io_err("remove released segment", &seg.path, 0, e))?;
            released += 1;
        }
        if released > 0 {
            let d = File::open(&self.dir).map_err(|e| io_err("open directory", &self.dir, 0, e))?;
            d.sync_all().map_err(|e| io_err("fsync directory", &self.dir, 0, e))?;
        }
        Ok(released)
    }

    /// Queues records for the next `flush`: `entries` in order, then
    /// `hard_state` if given. An entry whose index is at or below the last
    /// index replaces the log from that index on (Raft's truncation), now and
    /// on recovery.
    ///
    /// Checks everything before queuing anything: on error nothing is
    /// queued. Errors: `IndexGap` (index 0, a gap after the log's last index,
    /// or non-contiguous entries), `RecordTooLarge`, `QueueFull`, `Broken`.
    pub fn append(&mut self, entries: &[EntryRef<'_>], hard_state: Option<HardState>) -> Result<(), WalError> {
        if self.broken {
            return Err(WalError::Broken);
        }
        let capacity =
            (self.opts.segment_bytes as usize - BLOCK_BYTES).min(codec::encoded_len(codec::RECORD_PAYLOAD_MAX_BYTES));
        let max_bytes = capacity - codec::RECORD_HEADER_BYTES;
        let mut more_bytes = 0;
        let mut prev = self.last_index;
        for (k, e) in entries.iter().enumerate() {
            let index = e.index.get();
            let fits = if k > 0 {
                index == prev.get() + 1
            } else {
                index >= 1 && (self.last_index.get() == 0 || index <= prev.get() + 1)
            };
            if !fits {
                return Err(WalError::IndexGap { last: prev, got: e.index });
            }
            if e.data.len() > max_bytes {
                return Err(WalError::RecordTooLarge { index: e.index, bytes: e.data.len(), max_bytes });
            }
            more_bytes += codec::encoded_len(e.data.len());
            prev = e.index;
        }
        if hard_state.is_some() {
            more_bytes += codec::encoded_len(0);
        }
        // Room for the write end and a segment header per possible rotation.
        let rotations = more_bytes / capacity + 1;
        let more_bytes = more_bytes + codec::encoded_len(0) + rotations * BLOCK_BYTES;
        if self.queued_bytes + more_bytes > QUEUED_BYTES_MAX {
            return Err(WalError::QueueFull {
                queued_bytes: self.queued_bytes,
                more_bytes,
                max_bytes: QUEUED_BYTES_MAX,
            });
        }
        for e in entries {
            self.push_record(&Record { write_seq: self.write_seq, body: Body::Entry(*e) });
            self.last_index = e.index;
        }
        if let Some(hs) = hard_state {
            self.push_record(&Record { write_seq: self.write_seq, body: Body::HardState(hs) });
        }
        self.queued_records += entries.len() + usize::from(hard_state.is_some());
        Ok(())
    }

    /// Writes everything queued and fdatasyncs; when it returns Ok, all of it
    /// is durable. Must run inside a monoio runtime. Without queued records
    /// it does nothing.
    ///
    /// One write per segment touched (normally one: from the start of the
    /// last partly filled block to the end of the new records, rounded up to
    /// 4 KiB) and one fdatasync per segment touched. If it fails, or the
    /// future is dropped before it completes, the `Wal` is `Broken`.
    pub async fn flush(&mut self) -> Result<(), WalError> {
        if self.broken {
            return Err(WalError::Broken);
        }
        if self.queued_records == 0 {
            return Ok(());
        }
        self.close_write();
        self.broken = true;
        let mut chunks = std::mem::take(&mut self.chunks);
        let mut active_written = false;
        let mut new_segments = Vec::new();
        for chunk in chunks.iter_mut() {
            if chunk.seq == self.active.seq {
                if chunk.end() <= self.durable_end {
                    continue;
                }
                let Segment { path, file, .. } = &mut self.active;
                write_chunk(file.uring(path)?, path, chunk).await?;
                active_written = true;
            } else {
                let prepared = self.next_segment(chunk.seq).await?;
                let mut seg = Segment { seq: prepared.seq, path: prepared.path, file: SegFile::Std(prepared.file) };
                write_chunk(seg.file.uring(&seg.path)?, &seg.path, chunk).await?;
                new_segments.push(seg);
            }
        }
        if active_written {
            let Segment { path, file, .. } = &mut self.active;
            sync(file.uring(path)?, path).await?;
        }
        for seg in &mut new_segments {
            sync(seg.file.uring(&seg.path)?, &seg.path).await?;
        }
        self.finish_flush(chunks, new_segments.pop());
        Ok(())
    }

    /// The index of the last entry appended (queued or durable); 0 if none.
    pub fn last_index(&self) -> RaftIndex {
        self.last_index
    }

    /// Bytes queued for the next flush (records, padding, segment headers).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Encodes `rec` after the queued records, starting a new segment first
    /// if it does not fit in the current one.
    fn push_record(&mut self, rec: &Record<'_>) {
        let n = codec::encoded_len(codec::payload(&rec.body).len());
        let cur = self.chunks.last().expect("chunks is non-empty when not broken");
        if cur.end() + n as u64 > cur.seg_bytes {
            self.rotate();
        }
        let cur = self.chunks.last_mut().expect("chunks is non-empty when not broken");
        codec::encode_into(rec, cur.buf.extend_zeroed(n));
        self.queued_bytes += n;
    }

    /// Continues in the next segment: queues its header block.
    fn rotate(&mut self) {
        let cur = self.chunks.last().expect("chunks is non-empty when not broken");
        let header = SegmentHeader {
            seq: cur.seq + 1,
            segment_bytes: self.opts.segment_bytes,
            first_index: self.last_index.next(),
            first_write_seq: self.write_seq,
            prev_end: cur.end(),
        };
        if cur.seq == self.active.seq && cur.end() <= self.durable_end {
            // Only the durable tail of a segment we leave: nothing to write.
            self.chunks.pop();
        }
        self.chunks.push(header_chunk(&header));
        self.queued_bytes += BLOCK_BYTES;
    }

    /// Ends the current write with a write-end record.
    fn close_write(&mut self) {
        self.push_record(&Record { write_seq: self.write_seq, body: Body::WriteEnd });
        self.write_seq += 1;
    }

    /// Takes the spare for segment `seq` and starts preparing the one after.
    async fn next_segment(&mut self, seq: u64) -> Result<Prepared, WalError> {
        let spare = self.take_spare(seq)?;
        let prepared = spare.rx.await;
        unwrap_prepared(seq, prepared)
    }

    fn take_spare(&mut self, seq: u64) -> Result<Spare, WalError> {
        let spare = self
            .spare
            .take()
            .ok_or_else(|| WalError::PreparerGone { seq, detail: "no segment was being prepared".into() })?;
        if spare.seq != seq {
            return Err(WalError::PreparerGone { seq, detail: format!("segment {} was prepared instead", spare.seq) });
        }
        let o = &self.opts;
        self.spare = Some(Spare::spawn(&self.dir, seq + 1, o.segment_bytes, o.direct_io));
        Ok(spare)
    }

    /// Keeps the last chunk's last partly filled block for the next flush.
    fn finish_flush(&mut self, mut chunks: Vec<Chunk>, new_active: Option<Segment>) {
        if let Some(seg) = new_active {
            self.active = seg;
        }
        let mut last = chunks.pop().expect("a flush writes at least a write end");
        debug_assert_eq!(last.seq, self.active.seq);
        self.durable_end = last.end();
        let block_start = self.durable_end - self.durable_end % BLOCK_BYTES as u64;
        last.buf.drain_front((block_start - last.file_off) as usize);
        last.file_off = block_start;
        last.buf.shrink_to(BUF_RETAIN_BYTES);
        chunks.clear();
        chunks.push(last);
        self.chunks = chunks;
        self.queued_records = 0;
        self.queued_bytes = 0;
        self.broken = false;
    }

    /// `flush` with blocking std I/O, for `open`'s seal.
    fn flush_blocking(&mut self) -> Result<(), WalError> {
        self.broken = true;
        let mut chunks = std::mem::take(&mut self.chunks);
        let mut active_written = false;
        let mut new_segments = Vec::new();
        for chunk in chunks.iter_mut() {
            if chunk.seq == self.active.seq {
                if chunk.end() > self.durable_end {
                    write_chunk_blocking(self.active.file.std()?, &self.active.path, chunk)?;
                    active_written = true;
                }
            } else {
                let spare = self.take_spare(chunk.seq)?;
                let prepared = unwrap_prepared(chunk.seq, spare.rx.wait())?;
                write_chunk_blocking(&prepared.file, &prepared.path, chunk)?;
                new_segments.push(Segment {
                    seq: prepared.seq,
                    path: prepared.path,
                    file: SegFile::Std(prepared.file),
                });
            }
        }
        if active_written {
            let f = self.active.file.std()?;
            f.sync_data().map_err(|e| io_err("fdatasync", &self.active.path, 0, e))?;
        }
        for seg in &new_segments {
            seg.file.std()?.sync_data().map_err(|e| io_err("fdatasync", &seg.path, 0, e))?;
        }
        self.finish_flush(chunks, new_segments.pop());
        Ok(())
    }

    /// Zeroes `[from rounded up to a block, until)` of the active segment
    /// (blocking; `open` only, before the seal's fdatasync).
    fn zero_range(&self, from: u64, until: u64) -> Result<(), WalError> {
        let block = BLOCK_BYTES as u64;
        let mut at = from.div_ceil(block) * block;
        let mut zeros = AlignedBuf::with_capacity(1 << 20);
        zeros.extend_zeroed(1 << 20);
        let file = self.active.file.std()?;
        while at < until {
            let n = (until - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros.as_slice()[..n], at)
                .map_err(|e| io_err("zero torn tail", &self.active.path, at, e))?;
            at += n as u64;
        }
        Ok(())
    }
}

fn unwrap_prepared(seq: u64, delivered: Option<Result<Prepared, WalError>>) -> Result<Prepared, WalError> {
    let prepared = delivered
        .ok_or_else(|| WalError::PreparerGone { seq, detail: "the helper thread stopped without a result".into() })??;
    if prepared.seq != seq {
        return Err(WalError::PreparerGone { seq, detail: format!("segment {} was delivered instead", prepared.seq) });
    }
    Ok(prepared)
}

/// A chunk holding only a segment's header block.
fn header_chunk(header: &SegmentHeader) -> Chunk {
    let mut buf = AlignedBuf::with_capacity(2 * BLOCK_BYTES);
    codec::encode_segment_header(header, buf.extend_zeroed(BLOCK_BYTES));
    Chunk { seq: header.seq, seg_bytes: header.segment_bytes, file_off: 0, buf }
}

/// The chunk that resumes the active segment: the durable start of the
/// block where the log ends.
fn tail_chunk(seq: u64, seg_bytes: u64, rec: &recovery::Recovery) -> Chunk {
    let mut buf = AlignedBuf::with_capacity(BLOCK_BYTES);
    buf.extend_from_slice(&rec.tail);
    Chunk { seq, seg_bytes, file_off: rec.end - rec.tail.len() as u64, buf }
}

/// Deals with the segments after the active one: reuses the next one as the
/// spare if it was never written (and the tail was clean), deletes the rest
/// (recovery proved they hold only an unacknowledged write).
fn settle_later_segments(
    dir: &Path,
    later: &[SegmentInfo],
    rec: &recovery::Recovery,
    opts: &WalOptions,
) -> Result<Option<Spare>, WalError> {
    let mut spare = None;
    let mut deleted = false;
    for (k, (info, unwritten)) in later.iter().zip(&rec.later_unwritten).enumerate() {
        let reusable = k == 0 && *unwritten && rec.torn.is_none();
        if reusable && file_len(&info.path)? == opts.segment_bytes {
            let file = segment::open_for_write(&info.path, opts.direct_io)?;
            spare = Some(Spare::ready(Prepared { seq: info.seq, path: info.path.clone(), file }));
        } else {
            std::fs::remove_file(&info.path).map_err(|e| io_err("delete segment", &info.path, 0, e))?;
            deleted = true;
        }
    }
    if deleted {
        segment::sync_dir(dir)?;
    }
    Ok(spare)
}

/// Writes a chunk, padded to whole blocks, at its offset (io_uring).
async fn write_chunk(file: &monoio::fs::File, path: &Path, chunk: &mut Chunk) -> Result<(), WalError> {
    let len = chunk.buf.len();
    let mut buf = std::mem::take(&mut chunk.buf);
    buf.pad_to_block();
    debug_assert!(chunk.file_off + buf.len() as u64 <= chunk.seg_bytes);
    let (res, mut buf) = file.write_all_at(buf, chunk.file_off).await;
    buf.truncate(len);
    chunk.buf = buf;
    res.map_err(|e| io_err("write", path, chunk.file_off, e))
}

/// fdatasync through io_uring.
async fn sync(file: &monoio::fs::File, path: &Path) -> Result<(), WalError> {
    file.sync_data().await.map_err(|e| io_err("fdatasync", path, 0, e))
}

/// Writes a chunk, padded to whole blocks, at its offset (blocking).
fn write_chunk_blocking(file: &File, path: &Path, chunk: &mut Chunk) -> Result<(), WalError> {
    let len = chunk.buf.len();
    chunk.buf.pad_to_block();
    let res = file.write_all_at(chunk.buf.as_slice(), chunk.file_off);
    chunk.buf.truncate(len);
    res.map_err(|e| io_err("write", path, chunk.file_off, e))
}

fn check_options(opts: &WalOptions) -> Result<(), WalError> {
    let b = opts.segment_bytes;
    if !b.is_multiple_of(BLOCK_BYTES as u64) {
        return Err(WalError::BadOptions { detail: "segment_bytes must be a multiple of 4096" });
    }
    if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&b) {
        return Err(WalError::BadOptions { detail: "segment_bytes must be between 8 KiB and 1 GiB" });
    }
    Ok(())
}

/// Creates and flocks `LOCK`; with `direct_io`, also checks that the
/// filesystem accepts O_DIRECT, so a tmpfs directory fails early and
/// clearly.
fn lock_dir(dir: &Path, direct_io: bool) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_err("open", &path, 0, e))?;
    // SAFETY: `flock` only reads its integer arguments; the descriptor is
    // open and owned by `file` for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(WalError::Locked { path });
        }
        return Err(io_err("flock", &path, 0, e));
    }
    if direct_io {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| segment::open_err(dir, true, e))?;
    }
    Ok(file)
}

/// Lists the segments in `dir` by sequence number, deleting unfinished
/// `.wal.tmp` files; a missing sequence number in the middle is corruption.
/// The segment files, in order, leaving anything else alone (a spare
/// being prepared is a temporary file).
fn segment_files(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let read_dir = std::fs::read_dir(dir).map_err(|e| io_err("list directory", dir, 0, e))?;
    let mut segs = Vec::new();
    for item in read_dir {
        let item = item.map_err(|e| io_err("list directory", dir, 0, e))?;
        if let Some(NameKind::Segment(seq)) = item.file_name().to_str().map(segment::classify_name) {
            segs.push(SegmentInfo { seq, path: item.path() });
        }
    }
    segs.sort_by_key(|s| s.seq);
    Ok(segs)
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, WalError> {
    let read_dir = std::fs::read_dir(dir).map_err(|e| io_err("list directory", dir, 0, e))?;
    let mut segs = Vec::new();
    let mut deleted = false;
    for item in read_dir {
        let item = item.map_err(|e| io_err("list directory", dir, 0, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        match segment::classify_name(name) {
            NameKind::Segment(seq) => segs.push(SegmentInfo { seq, path: item.path() }),
            NameKind::Temporary => {
                match std::fs::remove_file(item.path()) {
                    // Gone already: a helper thread finished it meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    r => r.map_err(|e| io_err("delete unfinished segment", &item.path(), 0, e))?,
                }
                deleted = true;
            }
            NameKind::Other => {}
        }
    }
    if deleted {
        segment::sync_dir(dir)?;
    }
    segs.sort_by_key(|s| s.seq);
    for pair in segs.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(WalError::Corrupt {
                file: pair[1].path.clone(),
                offset: 0,
                detail: format!("segment {:016x} is missing before it", pair[0].seq + 1),
            });
        }
    }
    Ok(segs)
}

fn file_len(path: &Path) -> Result<u64, WalError> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| io_err("stat", path, 0, e))
}

/// Reads a whole segment, or just its header block (buffered; recovery
/// only). A whole segment comes back with at most one read piece of its
/// trailing zeros: recovery only needs to see that the records end in
/// unwritten space, and a preallocated segment is mostly zeros, which need
/// not sit in memory.
fn read_segment(path: &Path, full: bool) -> Result<Vec<u8>, WalError> {
    if !full {
        let file = File::open(path).map_err(|e| io_err("open", path, 0, e))?;
        let mut block = vec![0u8; BLOCK_BYTES];
        let mut got = 0;
        while got < block.len() {
            match file.read_at(&mut block[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read", path, got as u64, e)),
            }
        }
        block.truncate(got);
        return Ok(block);
    }
    let len = file_len(path)?;
    if len > SEGMENT_BYTES_MAX {
        return Err(WalError::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            detail: format!("segment file is {len} bytes, above the {SEGMENT_BYTES_MAX}-byte bound"),
        });
    }
    let file = File::open(path).map_err(|e| io_err("open", path, 0, e))?;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    // All-zero bytes read since the last nonzero chunk: added only if
    // something nonzero follows.
    let mut zeros_pending = 0usize;
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut chunk, at) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path, at, e)),
        };
        at += n as u64;
        let piece = &chunk[..n];
        if piece.iter().all(|&b| b == 0) {
            zeros_pending += n;
        } else {
            out.resize(out.len() + zeros_pending, 0);
            zeros_pending = 0;
            out.extend_from_slice(piece);
        }
    }
    // Keep one piece of the trailing zeros: the end of the records must
    // still look like unwritten space, not like the end of the file.
    out.resize(out.len() + zeros_pending.min(READ_CHUNK_BYTES), 0);
    Ok(out)
}

/// Recovery reads segments in pieces of this size.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Makes sure the active segment is allocated to its full size (it may be
/// short if something truncated it).
fn ensure_allocated(file: &File, path: &Path, bytes: u64) -> Result<(), WalError> {
    let len = file.metadata().map_err(|e| io_err("stat", path, 0, e))?.len();
    if len >= bytes {
        return Ok(());
    }
    let end = libc::off_t::try_from(bytes)
        .map_err(|_| WalError::BadOptions { detail: "segment size does not fit in off_t" })?;
    // SAFETY: `fallocate` only reads its integer arguments; the descriptor
    // is open and owned by `file` for the duration of the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, end) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(io_err("fallocate", path, 0, e));
        }
        file.set_len(bytes).map_err(|e| io_err("extend", path, len, e))?;
    }
    Ok(())
}

impl Drop for Wal {
    /// Waits for the helper thread that prepares the next segment, so that
    /// a dropped WAL leaves its directory alone: reopening it in the same
    /// process must not race that thread. This blocks, which is fine only
    /// because a WAL is dropped when its node stops.
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            let _ = spare.rx.wait();
        }
    }
}
