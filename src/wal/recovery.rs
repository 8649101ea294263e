//! Recovery: reads the segments in order and decides where the log ends,
//! whether the end is a torn tail or corruption.
//!
//! Owns: the rules that relate records to each other (write sequence,
//! index continuity, Raft truncation, segment transitions) and the torn tail
//! versus corruption decision. Never touches: files (segments come from a
//! caller-supplied reader, so this runs on in-memory images in tests) or
//! anything after the decision (sealing, deleting, writing are `Wal::open`'s).

use std::fmt;
use std::path::PathBuf;

use super::codec::{self, Body, DecodeError, HeaderError, Record, SegmentHeader};
use super::{Entry, HardState, WalError, BLOCK_BYTES, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use crate::types::RaftIndex;

/// One segment file, as listed from the directory.
#[derive(Clone, Debug)]
pub(super) struct SegmentInfo {
    /// Sequence number from its name.
    pub seq: u64,
    /// Its path.
    pub path: PathBuf,
}

/// What recovery found and decided.
#[derive(Debug)]
pub(super) struct Recovery {
    /// The last hard state in the log (default if none).
    pub hard_state: HardState,
    /// The log's entries after Raft truncations: contiguous, ascending.
    pub entries: Vec<Entry>,
    /// The index before the first entry (0 unless earlier segments were
    /// released or a log-start record reset the log).
    pub base: RaftIndex,
    /// Position in the segment list of the segment the log ends in: the
    /// writer continues there.
    pub active: usize,
    /// That segment's header, if it has a valid one; if not, the writer must
    /// write a fresh header and continue at `BLOCK_BYTES`.
    pub active_header: Option<SegmentHeader>,
    /// Offset in the active segment where the log ends.
    pub end: u64,
    /// The active segment's bytes `[end rounded down to a block, end)`: the
    /// durable start of the block the writer rewrites next.
    pub tail: Vec<u8>,
    /// The write sequence the next record must carry.
    pub next_write_seq: u64,
    /// `Some` if the end is not clean (a torn tail, or unacknowledged bytes
    /// beyond it): the writer must seal the log with an empty write before
    /// anything else, zero `[end, torn_until)` of the active segment, and
    /// delete every later segment.
    pub torn: Option<Torn>,
    /// For each segment after `active`: its header block is all zero (a
    /// prepared, never-written segment).
    pub later_unwritten: Vec<bool>,
}

/// Where and why the tail was cut.
#[derive(Debug)]
pub(super) struct Torn {
    /// Offset in the active segment where the log now ends.
    pub at: u64,
    /// End (a block multiple) of the non-zero bytes after `at` in the
    /// active segment: the region to zero.
    pub until: u64,
}

/// Why decoding stopped at some offset.
#[derive(Debug)]
enum Stop {
    /// A zero length: the never-written part of a segment.
    Zero,
    /// A valid record from an older write than expected: leftovers beyond
    /// an earlier cut.
    Stale(u64),
    /// A valid record from a later write than expected: a write is missing.
    SeqJump(u64),
    /// Bytes that do not decode.
    Bad(DecodeError),
    /// The segment's header block is all zero.
    NoHeader,
    /// The segment's header is damaged.
    BadHeader(HeaderError),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Zero => write!(f, "end of written records"),
            Stop::Stale(s) => write!(f, "leftover record of older write {s}"),
            Stop::SeqJump(s) => {
                write!(f, "record of write {s} where an earlier write was expected")
            }
            Stop::Bad(e) => write!(f, "{e}"),
            Stop::NoHeader => write!(f, "segment never written"),
            Stop::BadHeader(e) => write!(f, "{e}"),
        }
    }
}

/// The log as decoded so far.
struct LogState {
    entries: Vec<Entry>,
    /// The index before the first entry: where the first segment starts,
    /// or the last log-start record.
    base: u64,
    /// `base` comes from a log-start record: the next entry must follow it.
    strict: bool,
    hard_state: HardState,
    /// The write the next record must belong to.
    expected_seq: u64,
    /// The last record was a write end (or there is none).
    last_closed: bool,
}

impl LogState {
    fn last_index(&self) -> RaftIndex {
        self.entries.last().map_or(RaftIndex(self.base), |e| e.index)
    }

    /// Applies one record whose write sequence was already checked.
    fn apply(&mut self, rec: &Record<'_>) -> Result<(), String> {
        match rec.body {
            Body::Entry(e) => {
                let index = e.index.get();
                if index == 0 {
                    return Err("entry with index 0".into());
                }
                if let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) {
                    let (first, last) = (first.index.get(), last.index.get());
                    if index > last + 1 {
                        return Err(format!("entry index jumps from {last} to {index}"));
                    }
                    // Raft truncation: the new entry replaces the log from
                    // its index on.
                    let keep = index.saturating_sub(first);
                    self.entries.truncate(keep as usize);
                } else if self.strict && index > self.base + 1 {
                    return Err(format!("the log starts after {} but its first entry is {index}", self.base));
                } else {
                    self.base = index - 1;
                }
                self.entries.push(e.to_entry());
                self.last_closed = false;
            }
            Body::HardState(hs) => {
                self.hard_state = hs;
                self.last_closed = false;
            }
            Body::WriteEnd => {
                self.expected_seq += 1;
                self.last_closed = true;
            }
            Body::LogStart(index) => {
                self.entries.clear();
                self.base = index.get();
                self.strict = true;
                self.last_closed = false;
            }
        }
        Ok(())
    }
}

/// Reads a segment by its position in the list: the whole file, or (with
/// `false`) at least its header block.
pub(super) type ReadSegment<'a> = &'a mut dyn FnMut(usize, bool) -> Result<Vec<u8>, WalError>;

/// Recovers the log from `segs` (non-empty, consecutive sequence numbers,
/// ascending). See the module documentation of `super` for the rules.
pub(super) fn recover(segs: &[SegmentInfo], read: ReadSegment<'_>) -> Result<Recovery, WalError> {
    assert!(!segs.is_empty(), "recover needs at least one segment");
    let mut log = LogState {
        entries: Vec::new(),
        base: 0,
        strict: false,
        hard_state: HardState::default(),
        expected_seq: 1,
        last_closed: true,
    };
    let mut i = 0;
    let mut bytes = read(0, true)?;
    let mut header = None;
    let (stop_at, stop) = match codec::decode_segment_header(&bytes) {
        Ok(Some(first)) => {
            check_header(&segs[0], &first)?;
            log.expected_seq = first.first_write_seq;
            // Earlier segments were released after a snapshot: the log
            // starts where this one does.
            log.base = first.first_index.get().saturating_sub(1);
            let mut h = first;
            loop {
                let limit = segment_limit(&bytes, &h);
                let (at, stop) = decode_segment(&segs[i], &bytes[..limit], &mut log)?;
                if i + 1 < segs.len() {
                    let next = read(i + 1, false)?;
                    if let Ok(Some(nh)) = codec::decode_segment_header(&next) {
                        let continues = nh.seq == segs[i + 1].seq
                            && nh.prev_end == at
                            && nh.first_write_seq == log.expected_seq
                            && nh.first_index == log.last_index().next();
                        if continues {
                            check_header(&segs[i + 1], &nh)?;
                            i += 1;
                            bytes = read(i, true)?;
                            h = nh;
                            continue;
                        }
                    }
                }
                header = Some(h);
                break (at, stop);
            }
        }
        Ok(None) => (0, Stop::NoHeader),
        Err(HeaderError::UnsupportedVersion(v)) => {
            return Err(WalError::UnsupportedVersion { file: segs[0].path.clone(), version: v })
        }
        Err(e) => (0, Stop::BadHeader(e)),
    };

    // Look beyond the stop for records of a later write than the one the
    // stop belongs to: their presence proves that write was acknowledged,
    // so the damage is corruption, not a torn tail.
    let threshold = log.expected_seq;
    let limit = match &header {
        Some(h) => segment_limit(&bytes, h),
        None => bytes.len(),
    };
    let scan_from = (stop_at as usize).max(BLOCK_BYTES);
    let mut same_write_beyond = false;
    let found = scan_beyond(&bytes[..limit], scan_from, threshold, &mut same_write_beyond);
    if let Some((off, seq)) = found {
        return Err(corrupt_before(segs, i, stop_at, &stop, i, off, seq));
    }
    let mut later_unwritten = Vec::new();
    let mut later_written = false;
    for j in i + 1..segs.len() {
        let later = read(j, true)?;
        let unwritten = matches!(codec::decode_segment_header(&later), Ok(None));
        later_written |= !unwritten;
        later_unwritten.push(unwritten);
        let found = scan_beyond(&later, BLOCK_BYTES, threshold, &mut same_write_beyond);
        if let Some((off, seq)) = found {
            return Err(corrupt_before(segs, i, stop_at, &stop, j, off, seq));
        }
    }

    let clean_stop = matches!(stop, Stop::Zero | Stop::Stale(_) | Stop::NoHeader);
    // Not clean: a damaged record or header at the end, a last write
    // without its write end, or records of that unfinished write beyond the
    // end (in this segment or a later one).
    let torn = !clean_stop || !log.last_closed || same_write_beyond || later_written;
    let end = if header.is_some() { stop_at } else { BLOCK_BYTES as u64 };
    let torn = torn.then(|| Torn { at: end, until: nonzero_end(&bytes[..limit], end as usize) as u64 });
    let tail = match header {
        Some(_) => block_prefix(&bytes, end as usize),
        None => Vec::new(),
    };
    Ok(Recovery {
        hard_state: log.hard_state,
        base: RaftIndex(log.base),
        entries: log.entries,
        active: i,
        active_header: header,
        end,
        tail,
        next_write_seq: log.expected_seq,
        torn,
        later_unwritten,
    })
}

/// How far into `bytes` the segment's records may reach.
fn segment_limit(bytes: &[u8], h: &SegmentHeader) -> usize {
    bytes.len().min(h.segment_bytes as usize)
}

/// Checks a header whose checksum is valid against the file it is in.
fn check_header(seg: &SegmentInfo, h: &SegmentHeader) -> Result<(), WalError> {
    let detail = if h.seq != seg.seq {
        format!("header says segment {} but the file name says {}", h.seq, seg.seq)
    } else if !h.segment_bytes.is_multiple_of(BLOCK_BYTES as u64)
        || !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&h.segment_bytes)
    {
        format!("header has an impossible segment size {}", h.segment_bytes)
    } else {
        return Ok(());
    };
    Err(WalError::Corrupt { file: seg.path.clone(), offset: 0, detail })
}

/// Decodes records from the first block boundary on until one does not
/// continue the log; returns where and why it stopped.
fn decode_segment(seg: &SegmentInfo, bytes: &[u8], log: &mut LogState) -> Result<(u64, Stop), WalError> {
    let mut at = BLOCK_BYTES;
    loop {
        if at >= bytes.len() {
            return Ok((at as u64, Stop::Zero));
        }
        let (rec, used) = match codec::decode(&bytes[at..]) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok((at as u64, Stop::Zero)),
            Err(e) => return Ok((at as u64, Stop::Bad(e))),
        };
        if rec.write_seq < log.expected_seq {
            return Ok((at as u64, Stop::Stale(rec.write_seq)));
        }
        if rec.write_seq > log.expected_seq {
            return Ok((at as u64, Stop::SeqJump(rec.write_seq)));
        }
        log.apply(&rec).map_err(|detail| WalError::Corrupt { file: seg.path.clone(), offset: at as u64, detail })?;
        at += used;
    }
}

/// Scans `bytes[from..]` at record alignment for valid records of a write
/// at or after `threshold`. Returns the first one of a write after it; sets
/// `same_write` if one of write `threshold` itself is seen.
fn scan_beyond(bytes: &[u8], from: usize, threshold: u64, same_write: &mut bool) -> Option<(u64, u64)> {
    let align = codec::RECORD_ALIGN_BYTES;
    let mut at = from.div_ceil(align) * align;
    while at + codec::RECORD_HEADER_BYTES <= bytes.len() {
        let rest = &bytes[at..];
        let plausible = codec::peek_write_seq(rest).is_some_and(|seq| seq >= threshold);
        if plausible {
            if let Ok(Some((rec, _))) = codec::decode(rest) {
                if rec.write_seq > threshold {
                    return Some((at as u64, rec.write_seq));
                }
                *same_write = true;
            }
        }
        at += align;
    }
    None
}

/// Bytes `[end rounded down to a block, end)`, zero where the file is
/// shorter.
fn block_prefix(bytes: &[u8], end: usize) -> Vec<u8> {
    let start = end - end % BLOCK_BYTES;
    let mut tail = vec![0; end - start];
    let available = bytes.len().min(end);
    if available > start {
        tail[..available - start].copy_from_slice(&bytes[start..available]);
    }
    tail
}

/// The end, rounded up to a block, of the non-zero bytes in `bytes[from..]`
/// (or `from` rounded up if there are none).
fn nonzero_end(bytes: &[u8], from: usize) -> usize {
    let from = from.min(bytes.len());
    let last = bytes[from..].iter().rposition(|&b| b != 0);
    let end = last.map_or(from, |p| from + p + 1);
    end.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

fn corrupt_before(segs: &[SegmentInfo], i: usize, at: u64, stop: &Stop, j: usize, off: u64, seq: u64) -> WalError {
    WalError::Corrupt {
        file: segs[i].path.clone(),
        offset: at,
        detail: format!(
            "{stop}, yet a valid record of later write {seq} follows in {} at offset {off}",
            segs[j].path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    //! Recovery on in-memory segment images built record by record, for
    //! the cases real files make hard to stage.

    use super::*;
    use crate::types::Term;
    use crate::wal::codec::encode_segment_header;
    use crate::wal::{EntryKind, EntryRef};

    const SEG: usize = 8 * BLOCK_BYTES;

    /// Builds one segment image.
    struct Image {
        bytes: Vec<u8>,
        at: usize,
    }

    impl Image {
        fn new(seq: u64, first_index: u64, first_write_seq: u64, prev_end: u64) -> Image {
            let mut bytes = vec![0; SEG];
            encode_segment_header(
                &SegmentHeader {
                    seq,
                    segment_bytes: SEG as u64,
                    first_index: RaftIndex(first_index),
                    first_write_seq,
                    prev_end,
                },
                &mut bytes,
            );
            Image { bytes, at: BLOCK_BYTES }
        }

        fn push(&mut self, write_seq: u64, body: Body<'_>) -> usize {
            let at = self.at;
            let rec = Record { write_seq, body };
            self.at += codec::encode_into(&rec, &mut self.bytes[at..]);
            at
        }

        fn entry(&mut self, write_seq: u64, index: u64, term: u64) -> usize {
            let data = [index as u8; 100];
            self.push(
                write_seq,
                Body::Entry(EntryRef {
                    index: RaftIndex(index),
                    term: Term(term),
                    kind: EntryKind::Normal,
                    data: &data,
                }),
            )
        }

        fn end(&mut self, write_seq: u64) -> usize {
            self.push(write_seq, Body::WriteEnd)
        }
    }

    fn run(images: Vec<Vec<u8>>) -> Result<Recovery, WalError> {
        let segs: Vec<SegmentInfo> = (0..images.len())
            .map(|k| SegmentInfo { seq: k as u64 + 1, path: PathBuf::from(format!("seg{}", k + 1)) })
            .collect();
        recover(&segs, &mut |k, _| Ok(images[k].clone()))
    }

    fn indexes(r: &Recovery) -> Vec<u64> {
        r.entries.iter().map(|e| e.index.get()).collect()
    }

    /// Writes 1..=n, one entry per write.
    fn simple(n: u64) -> (Image, Vec<usize>) {
        let mut img = Image::new(1, 1, 1, 0);
        let mut offs = Vec::new();
        for i in 1..=n {
            offs.push(img.entry(i, i, 1));
            img.end(i);
        }
        (img, offs)
    }

    #[test]
    fn clean_log_is_not_torn() {
        let (img, _) = simple(5);
        let r = run(vec![img.bytes]).unwrap();
        assert_eq!(indexes(&r), [1, 2, 3, 4, 5]);
        assert!(r.torn.is_none());
        assert_eq!(r.next_write_seq, 6);
    }

    #[test]
    fn torn_write_whose_later_block_survived_is_a_torn_tail() {
        let (mut img, _) = simple(3);
        // Write 4 spans several blocks; its first record is lost, a later
        // one (same write) survived.
        let lost = img.entry(4, 4, 1);
        for i in 5..60 {
            img.entry(4, i, 1);
        }
        img.end(4);
        img.bytes[lost + 60] ^= 0xff;
        let r = run(vec![img.bytes]).unwrap();
        assert_eq!(indexes(&r), [1, 2, 3]);
        let torn = r.torn.unwrap();
        assert_eq!(torn.at, lost as u64);
        assert!(torn.until > lost as u64);
        assert_eq!(r.next_write_seq, 4);
    }

    #[test]
    fn zeroed_block_followed_by_later_writes_is_corruption() {
        let (mut img, offs) = simple(40);
        let hole = offs[5] - offs[5] % BLOCK_BYTES;
        img.bytes[hole..hole + BLOCK_BYTES].fill(0);
        match run(vec![img.bytes]) {
            Err(WalError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, PathBuf::from("seg1"));
                assert!(offset <= (hole + BLOCK_BYTES) as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_write_is_corruption() {
        let mut img = Image::new(1, 1, 1, 0);
        img.entry(1, 1, 1);
        img.end(1);
        img.entry(3, 2, 1);
        img.end(3);
        assert!(matches!(run(vec![img.bytes]), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn index_gap_is_corruption_and_backward_jump_truncates() {
        let mut img = Image::new(1, 1, 1, 0);
        img.entry(1, 1, 1);
        img.entry(1, 2, 1);
        img.entry(1, 3, 1);
        img.entry(1, 2, 2);
        img.end(1);
        let r = run(vec![img.bytes.clone()]).unwrap();
        assert_eq!(indexes(&r), [1, 2]);
        assert_eq!(r.entries[1].term, Term(2));

        let gap = img.entry(2, 5, 2);
        img.end(2);
        match run(vec![img.bytes]) {
            Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, gap as u64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stale_records_beyond_the_end_are_ignored() {
        let (mut img, _) = simple(3);
        let end = img.at;
        // Leftovers of an older write sit right at the end.
        img.entry(2, 9, 1);
        img.end(2);
        let r = run(vec![img.bytes]).unwrap();
        assert_eq!(indexes(&r), [1, 2, 3]);
        assert!(r.torn.is_none());
        assert_eq!(r.end, end as u64);
    }

    #[test]
    fn unfinished_write_at_the_end_is_torn() {
        let (mut img, _) = simple(2);
        img.entry(3, 3, 1);
        let r = run(vec![img.bytes]).unwrap();
        assert_eq!(indexes(&r), [1, 2, 3]);
        assert!(r.torn.is_some());
        assert_eq!(r.next_write_seq, 3);
    }

    #[test]
    fn write_spanning_two_segments_recovers_and_its_loss_is_torn() {
        let mut a = Image::new(1, 1, 1, 0);
        a.entry(1, 1, 1);
        a.end(1);
        a.entry(2, 2, 1);
        let prev_end = a.at as u64;
        let mut b = Image::new(2, 3, 2, prev_end);
        b.entry(2, 3, 1);
        b.end(2);
        let r = run(vec![a.bytes.clone(), b.bytes.clone()]).unwrap();
        assert_eq!(indexes(&r), [1, 2, 3]);
        assert_eq!(r.active, 1);
        assert!(r.torn.is_none());

        // The first segment's part of write 2 was lost: torn, the second
        // segment only holds that unfinished write.
        let mut lost = a.bytes.clone();
        lost[prev_end as usize - 150..prev_end as usize].fill(0);
        let r = run(vec![lost, b.bytes.clone()]).unwrap();
        assert_eq!(indexes(&r), [1]);
        assert_eq!(r.active, 0);
        assert!(r.torn.is_some());

        // But a later write in the second segment proves write 2 was
        // durable: corruption.
        b.entry(3, 4, 1);
        b.end(3);
        let mut lost = a.bytes.clone();
        lost[prev_end as usize - 150..prev_end as usize].fill(0);
        assert!(matches!(run(vec![lost, b.bytes]), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn rotation_point_over_leftover_garbage_still_continues() {
        let mut a = Image::new(1, 1, 1, 0);
        a.entry(1, 1, 1);
        a.end(1);
        let prev_end = a.at;
        // Garbage from an old torn write sits where the writer rotated.
        a.bytes[prev_end..prev_end + 300].fill(0x77);
        let mut b = Image::new(2, 2, 2, prev_end as u64);
        b.entry(2, 2, 1);
        b.end(2);
        let r = run(vec![a.bytes, b.bytes]).unwrap();
        assert_eq!(indexes(&r), [1, 2]);
        assert!(r.torn.is_none());
    }

    #[test]
    fn segment_file_cut_inside_its_header_block_does_not_panic() {
        let (img, _) = simple(2);
        for cut in [64, 100, 2000, BLOCK_BYTES + 10] {
            let r = run(vec![img.bytes[..cut].to_vec()]).unwrap();
            assert!(r.entries.is_empty());
            assert_eq!(r.end, BLOCK_BYTES as u64);
        }
        assert!(run(vec![img.bytes[..40].to_vec()]).is_ok());
    }

    /// Random damage to a two-segment log: recovery returns a result (never
    /// panics), and what it recovers is contiguous and a prefix of what was
    /// written.
    #[test]
    fn random_damage_never_panics_and_recovers_a_prefix() {
        let mut a = Image::new(1, 1, 1, 0);
        let mut index = 1;
        let mut seq = 1;
        while a.at + 3 * 160 < SEG {
            a.entry(seq, index, 1);
            a.entry(seq, index + 1, 1);
            a.end(seq);
            index += 2;
            seq += 1;
        }
        let mut b = Image::new(2, index, seq, a.at as u64);
        for _ in 0..20 {
            b.entry(seq, index, 1);
            b.end(seq);
            index += 1;
            seq += 1;
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut imgs = vec![a.bytes.clone(), b.bytes.clone()];
            for _ in 0..(next() % 3 + 1) {
                let img = &mut imgs[(next() % 2) as usize];
                let at = (next() as usize) % img.len();
                match next() % 3 {
                    0 => img[at] ^= 1 << (next() % 8),
                    1 => {
                        let end = (at + (next() as usize) % 5000).min(img.len());
                        img[at..end].fill(0);
                    }
                    _ => img.truncate(at),
                }
            }
            if let Ok(r) = run(imgs) {
                for (k, e) in r.entries.iter().enumerate() {
                    assert_eq!(e.index.get(), k as u64 + 1);
                }
            }
        }
    }

    #[test]
    fn unwritten_first_segment_is_an_empty_log() {
        let r = run(vec![vec![0; SEG]]).unwrap();
        assert!(r.entries.is_empty());
        assert!(r.active_header.is_none());
        assert!(r.torn.is_none());
        assert_eq!(r.end, BLOCK_BYTES as u64);
        assert_eq!(r.next_write_seq, 1);
    }
}
