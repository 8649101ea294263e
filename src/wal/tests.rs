//! Real-file tests of the WAL: a monoio runtime, segments in a temporary
//! directory on a filesystem that takes O_DIRECT, damage applied with plain
//! std I/O between runs.

use std::fs::OpenOptions;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::codec::{self, Body};
use super::*;
use crate::types::{MemberId, RaftIndex, Term};

/// Segment size for tests: 16 blocks, so a few hundred entries rotate many
/// times.
const SMALL_SEGMENT_BYTES: u64 = 64 << 10;

fn block_on<F: Future>(f: F) -> F::Output {
    let mut rt =
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("build a monoio runtime");
    rt.block_on(f)
}

/// A directory removed on drop, on a filesystem that is not tmpfs when the
/// system temp dir is (tmpfs may refuse O_DIRECT).
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut base = std::env::temp_dir();
        if is_tmpfs(&base) {
            base = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target"));
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join("corekv-wal-tests").join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // The helper thread may still be creating the next segment in the
        // directory when the test ends; retry until it is done.
        for _ in 0..200 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly
    // sized, writable statfs struct that outlives the call.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

fn small(direct_io: bool) -> WalOptions {
    WalOptions { segment_bytes: SMALL_SEGMENT_BYTES, direct_io }
}

fn entry(index: u64, term: u64, len: usize) -> Entry {
    Entry {
        index: RaftIndex(index),
        term: Term(term),
        kind: match index % 7 {
            0 => EntryKind::ConfChange,
            3 => EntryKind::ConfChangeV2,
            _ => EntryKind::Normal,
        },
        data: (0..len).map(|k| (index as usize * 31 + k) as u8).collect(),
    }
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term: Term(term), vote: MemberId(vote), commit: RaftIndex(commit) }
}

async fn write(wal: &mut Wal, entries: &[Entry], hard_state: Option<HardState>) {
    let refs: Vec<EntryRef<'_>> = entries.iter().map(Entry::entry_ref).collect();
    wal.append(&refs, hard_state).unwrap();
    wal.flush().await.unwrap();
}

fn open(dir: &Path, opts: WalOptions) -> (Wal, Recovered) {
    Wal::open(dir, opts).unwrap()
}

/// Segment files in order.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// Where an entry's record is: (file, offset, encoded length).
fn find_record(dir: &Path, index: u64) -> (PathBuf, u64, usize) {
    let mut found = None;
    for path in segment_files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = BLOCK_BYTES;
        while let Ok(Some((rec, used))) = codec::decode(&bytes[at..]) {
            if let Body::Entry(e) = rec.body {
                if e.index.get() == index {
                    found = Some((path.clone(), at as u64, used));
                }
            }
            at += used;
        }
    }
    found.expect("record not found")
}

fn damage(path: &Path, at: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
    f.sync_all().unwrap();
}

/// Writes `count` entries from `first` in flushes of varying sizes; returns
/// them.
async fn write_many(wal: &mut Wal, first: u64, count: u64, term: u64) -> Vec<Entry> {
    let batches = [1u64, 3, 17, 64, 5, 2, 40, 1, 33];
    let mut all = Vec::new();
    let mut index = first;
    let mut k = 0;
    while index < first + count {
        let n = batches[k % batches.len()].min(first + count - index);
        let batch: Vec<Entry> = (index..index + n).map(|i| entry(i, term, ((i * 131) % 2500) as usize)).collect();
        write(wal, &batch, Some(hs(term, 1, index))).await;
        all.extend(batch);
        index += n;
        k += 1;
    }
    all
}

#[test]
fn entries_survive_reopen_across_many_rotations() {
    let dir = TestDir::new("rotations");
    let expected = block_on(async {
        let (mut wal, rec) = open(dir.path(), small(true));
        assert!(rec.entries.is_empty());
        assert_eq!(rec.hard_state, HardState::default());
        let mut all = write_many(&mut wal, 1, 400, 1).await;
        // Records that fill a whole segment, and one just too large.
        let max = (SMALL_SEGMENT_BYTES as usize) - BLOCK_BYTES - codec::RECORD_HEADER_BYTES;
        let big = vec![entry(401, 1, max), entry(402, 1, max - 8)];
        write(&mut wal, &big, Some(hs(1, 9, 402))).await;
        all.extend(big);
        let too_big = entry(403, 1, max + 1);
        assert!(matches!(wal.append(&[too_big.entry_ref()], None), Err(WalError::RecordTooLarge { .. })));
        assert_eq!(wal.last_index(), RaftIndex(402));
        all
    });
    assert!(segment_files(dir.path()).len() >= 10, "expected many rotations");
    let expected = block_on(async {
        let (mut wal, rec) = open(dir.path(), small(true));
        assert_eq!(rec.entries, expected);
        assert_eq!(rec.hard_state, hs(1, 9, 402));
        assert_eq!(rec.truncated_tail, None);
        assert_eq!(wal.last_index(), RaftIndex(402));
        let mut all = expected;
        all.extend(write_many(&mut wal, 403, 150, 2).await);
        all
    });
    let (_wal, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.truncated_tail, None);
}

#[test]
fn hard_state_is_persisted_with_and_without_entries() {
    let dir = TestDir::new("hardstate");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        write(&mut wal, &[entry(1, 1, 10)], Some(hs(1, 2, 0))).await;
        write(&mut wal, &[], Some(hs(2, 3, 1))).await;
    });
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.hard_state, hs(2, 3, 1));
    assert_eq!(rec.entries, vec![entry(1, 1, 10)]);
}

#[test]
fn queued_records_are_durable_only_after_flush() {
    let dir = TestDir::new("queued");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        wal.flush().await.unwrap(); // nothing queued: no-op
        write(&mut wal, &[entry(1, 1, 10)], None).await;
        assert_eq!(wal.queued_bytes(), 0);
        wal.append(&[entry(2, 1, 10).entry_ref()], None).unwrap();
        assert!(wal.queued_bytes() > 0);
        // Dropped without flushing.
    });
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, vec![entry(1, 1, 10)]);
}

/// Writes 1..=20, then 21 alone (3000 bytes); returns where 21 is.
fn staged_for_torn_tail(dir: &Path) -> (PathBuf, u64, usize) {
    block_on(async {
        let (mut wal, _) = open(dir, small(true));
        for first in (1..=20).step_by(4) {
            let batch: Vec<Entry> = (first..first + 4).map(|i| entry(i, 1, 300)).collect();
            write(&mut wal, &batch, None).await;
        }
        write(&mut wal, &[entry(21, 1, 3000)], Some(hs(1, 1, 20))).await;
    });
    find_record(dir, 21)
}

fn first_20() -> Vec<Entry> {
    (1..=20).map(|i| entry(i, 1, 300)).collect()
}

/// After a torn tail at 21: appending continues correctly, and a reopen is
/// clean.
fn continue_after_torn_tail(dir: &Path) {
    block_on(async {
        let (mut wal, rec) = open(dir, small(true));
        assert_eq!(rec.entries, first_20());
        assert_eq!(rec.truncated_tail, None);
        assert_eq!(wal.last_index(), RaftIndex(20));
        write(&mut wal, &[entry(21, 2, 500), entry(22, 2, 500)], None).await;
    });
    let (_, rec) = open(dir, small(true));
    let mut expected = first_20();
    expected.extend([entry(21, 2, 500), entry(22, 2, 500)]);
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.truncated_tail, None);
}

#[test]
fn file_cut_mid_record_is_a_torn_tail() {
    let dir = TestDir::new("torn-cut");
    let (path, at, _) = staged_for_torn_tail(dir.path());
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(at + 100).unwrap();
    drop(f);
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, first_20());
    assert_eq!(rec.hard_state, HardState::default());
    assert_eq!(rec.truncated_tail, Some((path, at)));
    continue_after_torn_tail(dir.path());
}

#[test]
fn garbage_over_the_last_record_is_a_torn_tail() {
    let dir = TestDir::new("torn-garbage");
    let (path, at, used) = staged_for_torn_tail(dir.path());
    damage(&path, at + 8, &vec![0xa5; used - 8]);
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, first_20());
    assert_eq!(rec.truncated_tail, Some((path, at)));
    continue_after_torn_tail(dir.path());
}

#[test]
fn torn_again_in_the_first_write_after_a_torn_tail_is_still_torn() {
    let dir = TestDir::new("torn-twice");
    let (path, at, used) = staged_for_torn_tail(dir.path());
    damage(&path, at + 8, &vec![0xa5; used - 8]);
    block_on(async {
        let (mut wal, rec) = open(dir.path(), small(true));
        assert!(rec.truncated_tail.is_some());
        write(&mut wal, &[entry(21, 2, 500), entry(22, 2, 500)], None).await;
    });
    // The new write loses its first record but its second survives.
    let (path, at, used) = find_record(dir.path(), 21);
    damage(&path, at + 8, &vec![0x5a; used - 8]);
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, first_20());
    assert_eq!(rec.truncated_tail, Some((path, at)));
}

/// Writes 1..=55 one per flush (1000 bytes each), then 56 and 57 in one
/// flush that rotates between them; returns where 56 is.
fn staged_write_across_rotation(dir: &Path) -> (PathBuf, u64, usize) {
    block_on(async {
        let (mut wal, _) = open(dir, small(true));
        for i in 1..=55 {
            write(&mut wal, &[entry(i, 1, 1000)], None).await;
        }
        write(&mut wal, &[entry(56, 1, 1000), entry(57, 1, 1000)], None).await;
    });
    let (file56, at, used) = find_record(dir, 56);
    let (file57, _, _) = find_record(dir, 57);
    assert_ne!(file56, file57, "the last write should span two segments");
    (file56, at, used)
}

#[test]
fn torn_write_across_a_rotation_drops_the_new_segment_and_continues() {
    let dir = TestDir::new("torn-rotation");
    let (path, at, used) = staged_write_across_rotation(dir.path());
    damage(&path, at + 8, &vec![0xa5; used - 8]);
    let expected: Vec<Entry> = (1..=55).map(|i| entry(i, 1, 1000)).collect();
    let expected = block_on(async {
        let (mut wal, rec) = open(dir.path(), small(true));
        assert_eq!(rec.entries, expected);
        assert_eq!(rec.truncated_tail, Some((path, at)));
        let mut all = expected;
        all.extend(write_many(&mut wal, 56, 100, 2).await);
        all
    });
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, expected);
    assert_eq!(rec.truncated_tail, None);
}

#[test]
fn damaged_record_before_a_rotation_with_later_writes_is_corruption() {
    let dir = TestDir::new("corrupt-rotation");
    let (path, at, used) = staged_write_across_rotation(dir.path());
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        write(&mut wal, &[entry(58, 1, 10)], None).await;
    });
    damage(&path, at + 8, &vec![0xa5; used - 8]);
    match Wal::open(dir.path(), small(true)) {
        Err(WalError::Corrupt { file, offset, .. }) => assert_eq!((file, offset), (path, at)),
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, opened fine"),
    }
}

#[test]
fn damaged_early_record_followed_by_good_ones_is_corruption() {
    let dir = TestDir::new("corrupt");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        for first in (1..=50).step_by(5) {
            let batch: Vec<Entry> = (first..first + 5).map(|i| entry(i, 1, 200)).collect();
            write(&mut wal, &batch, None).await;
        }
    });
    let (path, at, _) = find_record(dir.path(), 10);
    damage(&path, at + 60, &[0xff]);
    match Wal::open(dir.path(), small(true)) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, path);
            assert_eq!(offset, at);
        }
        Err(e) => panic!("expected corruption, got {e}"),
        Ok(_) => panic!("expected corruption, opened fine"),
    }
    let msg = Wal::open(dir.path(), small(true)).err().unwrap().to_string();
    assert!(msg.contains("refusing to start"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn raft_truncation_replaces_the_suffix_now_and_on_recovery() {
    let dir = TestDir::new("truncation");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        let first: Vec<Entry> = (1..=10).map(|i| entry(i, 1, 100)).collect();
        write(&mut wal, &first, None).await;
        let second: Vec<Entry> = (6..=8).map(|i| entry(i, 2, 150)).collect();
        write(&mut wal, &second, None).await;
        assert_eq!(wal.last_index(), RaftIndex(8));
        assert!(matches!(wal.append(&[entry(10, 2, 1).entry_ref()], None), Err(WalError::IndexGap { .. })));
    });
    let expected: Vec<Entry> = (1..=5).map(|i| entry(i, 1, 100)).chain((6..=8).map(|i| entry(i, 2, 150))).collect();
    block_on(async {
        let (mut wal, rec) = open(dir.path(), small(true));
        assert_eq!(rec.entries, expected);
        assert_eq!(wal.last_index(), RaftIndex(8));
        // A truncation inside one flush, crossing what the log had.
        wal.append(&[entry(9, 2, 10).entry_ref()], None).unwrap();
        wal.append(&[entry(7, 3, 20).entry_ref(), entry(8, 3, 20).entry_ref()], None).unwrap();
        wal.flush().await.unwrap();
    });
    let (_, rec) = open(dir.path(), small(true));
    let mut expected = expected;
    expected.truncate(6);
    expected.extend([entry(7, 3, 20), entry(8, 3, 20)]);
    assert_eq!(rec.entries, expected);
}

#[test]
fn append_rejects_bad_batches_without_queuing_anything() {
    let dir = TestDir::new("append-checks");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        let zero = entry(0, 1, 1);
        assert!(matches!(wal.append(&[zero.entry_ref()], None), Err(WalError::IndexGap { .. })));
        // A first entry above 1 is fine in an empty log (after a snapshot).
        write(&mut wal, &[entry(5, 1, 1)], None).await;
        let (a, c) = (entry(6, 1, 1), entry(8, 1, 1));
        assert!(matches!(wal.append(&[a.entry_ref(), c.entry_ref()], None), Err(WalError::IndexGap { .. })));
        assert!(matches!(wal.append(&[c.entry_ref()], None), Err(WalError::IndexGap { .. })));
        assert_eq!(wal.queued_bytes(), 0);
        assert_eq!(wal.last_index(), RaftIndex(5));
    });
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, vec![entry(5, 1, 1)]);
}

#[test]
fn buffered_io_works() {
    let dir = TestDir::new("buffered");
    let expected = block_on(async {
        let (mut wal, _) = open(dir.path(), small(false));
        write_many(&mut wal, 1, 200, 3).await
    });
    let (_, rec) = open(dir.path(), small(false));
    assert_eq!(rec.entries, expected);
}

#[test]
fn buffered_io_works_on_tmpfs_and_direct_io_is_refused_or_accepted_cleanly() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() || !is_tmpfs(shm) {
        eprintln!("no tmpfs at /dev/shm; skipped");
        return;
    }
    // Two directories: the direct-I/O WAL's helper thread may still be
    // preparing its next segment after the WAL is dropped.
    let direct = TmpfsDir(shm.join(format!("corekv-wal-test-direct-{}", std::process::id())));
    let buffered = TmpfsDir(shm.join(format!("corekv-wal-test-buffered-{}", std::process::id())));
    match Wal::open(&direct.0, small(true)) {
        Err(e @ WalError::DirectIoUnsupported { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("real filesystem") && msg.contains("direct_io = false"));
        }
        Err(e) => panic!("unexpected error on tmpfs: {e}"),
        // Linux 6.6+ tmpfs accepts O_DIRECT.
        Ok(_) => {}
    }
    block_on(async {
        let (mut wal, _) = open(&buffered.0, small(false));
        write(&mut wal, &[entry(1, 1, 100)], None).await;
    });
    let (_, rec) = open(&buffered.0, small(false));
    assert_eq!(rec.entries, vec![entry(1, 1, 100)]);
}

/// A directory on tmpfs, removed (retrying while a segment helper thread
/// finishes) on drop.
struct TmpfsDir(PathBuf);

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        for _ in 0..200 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[test]
fn o_direct_refusal_names_the_path_and_the_way_out() {
    let e = segment::open_err(Path::new("/data/wal"), true, std::io::Error::from_raw_os_error(libc::EINVAL));
    let msg = e.to_string();
    assert!(matches!(e, WalError::DirectIoUnsupported { .. }));
    assert!(msg.contains("/data/wal") && msg.contains("real filesystem"), "{msg}");
    assert!(msg.contains("buffered-I/O option"), "{msg}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TestDir::new("lock");
    let (_wal, _) = open(dir.path(), small(true));
    assert!(matches!(Wal::open(dir.path(), small(true)), Err(WalError::Locked { .. })));
}

#[test]
fn unfinished_segment_files_are_removed_and_bad_options_refused() {
    let dir = TestDir::new("tmpfiles");
    let stray = dir.path().join("0000000000000007.wal.tmp");
    std::fs::write(&stray, b"half made").unwrap();
    let (wal, _) = open(dir.path(), small(true));
    assert!(!stray.exists());
    drop(wal);
    let bad = WalOptions { segment_bytes: 5000, direct_io: true };
    assert!(matches!(Wal::open(dir.path(), bad), Err(WalError::BadOptions { .. })));
}

#[test]
fn missing_segment_in_the_middle_is_corruption() {
    let dir = TestDir::new("missing");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        write_many(&mut wal, 1, 150, 1).await;
    });
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    std::fs::remove_file(&files[1]).unwrap();
    assert!(matches!(Wal::open(dir.path(), small(true)), Err(WalError::Corrupt { .. })));
}

#[test]
fn released_segments_leave_a_log_that_starts_where_the_first_kept_one_does() {
    let dir = TestDir::new("release");
    let all = block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        let all = write_many(&mut wal, 1, 400, 1).await;
        let before = segment_files(dir.path()).len();
        // Nothing is released below the first segment's end.
        assert_eq!(wal.release_through(RaftIndex(0)).unwrap(), 0);
        let released = wal.release_through(RaftIndex(250)).unwrap();
        assert!(released > 0 && released < before, "released {released} of {before}");
        // Again: nothing more to release up to the same index.
        assert_eq!(wal.release_through(RaftIndex(250)).unwrap(), 0);
        // The active segment is never released, whatever the index.
        wal.release_through(RaftIndex(10_000)).unwrap();
        assert!(!segment_files(dir.path()).is_empty());
        let mut all = all;
        all.extend(write_many(&mut wal, 401, 20, 2).await);
        all
    });
    let (wal, rec) = open(dir.path(), small(true));
    let first = rec.entries.first().expect("entries").index.get();
    assert!(first > 1, "the oldest entries are gone");
    assert_eq!(rec.base, RaftIndex(first - 1));
    assert_eq!(rec.entries, all[(first - 1) as usize..].to_vec());
    assert_eq!(wal.last_index(), RaftIndex(420));
    assert_eq!(rec.hard_state.term, Term(2));
}

#[test]
fn a_log_start_record_drops_the_log_and_recovery_continues_after_it() {
    let dir = TestDir::new("logstart");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        write_many(&mut wal, 1, 30, 1).await;
        // A snapshot up to 500 was installed: the log restarts after it.
        wal.reset_after(RaftIndex(500)).unwrap();
        assert_eq!(wal.last_index(), RaftIndex(500));
        assert!(matches!(wal.append(&[entry(502, 2, 1).entry_ref()], None), Err(WalError::IndexGap { .. })));
        write(&mut wal, &[], Some(hs(2, 0, 500))).await;
    });
    let (mut wal, rec) = open(dir.path(), small(true));
    assert!(rec.entries.is_empty());
    assert_eq!(rec.base, RaftIndex(500));
    assert_eq!(wal.last_index(), RaftIndex(500));
    let more = block_on(async { write_many(&mut wal, 501, 300, 2).await });
    drop(wal);
    let (_, rec) = open(dir.path(), small(true));
    assert_eq!(rec.entries, more);
}

#[test]
fn a_first_entry_after_the_start_of_the_log_is_corruption() {
    // A log-start at 10 followed by entry 12 cannot happen: refused.
    let dir = TestDir::new("logstart-gap");
    block_on(async {
        let (mut wal, _) = open(dir.path(), small(true));
        write(&mut wal, &[entry(1, 1, 5)], None).await;
        wal.reset_after(RaftIndex(10)).unwrap();
        // Bypass the append check: forge the next record with the codec.
        wal.last_index = RaftIndex(11);
        write(&mut wal, &[entry(12, 1, 5)], None).await;
    });
    assert!(matches!(Wal::open(dir.path(), small(true)), Err(WalError::Corrupt { .. })));
}
