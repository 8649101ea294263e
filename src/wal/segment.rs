//! Segment files: names, opening, and preparing the next one off the
//! reactor.
//!
//! Owns: the file-name scheme, the blocking steps that create a segment
//! (create, fallocate, zero-fill, fsync, rename, fsync the directory), the
//! helper thread that runs them ahead of time, and the one-shot channel that
//! hands the result back to the reactor. Never touches: record content,
//! recovery decisions, or io_uring (everything here is plain blocking std
//! I/O, run either in `Wal::open` or on the helper thread).

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::aligned::AlignedBuf;
use super::WalError;

/// File-name suffix of a segment.
const SEGMENT_SUFFIX: &str = ".wal";
/// File-name suffix of a segment still being prepared.
const TMP_SUFFIX: &str = ".wal.tmp";
/// Bytes written per call while zero-filling a new segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// The file name of segment `seq`: 16 hex digits, so names sort in order.
pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

/// What a directory entry's name says it is.
pub(super) enum NameKind {
    /// A segment with this sequence number.
    Segment(u64),
    /// A segment whose preparation never finished: safe to delete.
    Temporary,
    /// Anything else (left alone).
    Other,
}

/// Classifies a directory entry's name.
pub(super) fn classify_name(name: &str) -> NameKind {
    if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
        if parse_seq(stem).is_some() {
            return NameKind::Temporary;
        }
    }
    match name.strip_suffix(SEGMENT_SUFFIX).and_then(parse_seq) {
        Some(seq) => NameKind::Segment(seq),
        None => NameKind::Other,
    }
}

fn parse_seq(stem: &str) -> Option<u64> {
    if stem.len() != 16 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// Builds the I/O error variant for `op` on `file` at `offset`.
pub(super) fn io_err(op: &'static str, file: &Path, offset: u64, source: io::Error) -> WalError {
    WalError::Io { op, file: file.to_path_buf(), offset, source }
}

/// Opens an existing segment for writing, with O_DIRECT if asked.
pub(super) fn open_for_write(path: &Path, direct_io: bool) -> Result<File, WalError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if direct_io {
        options.custom_flags(libc::O_DIRECT);
    }
    options.open(path).map_err(|e| open_err(path, direct_io, e))
}

/// Maps an open error, recognising a filesystem that refuses O_DIRECT.
pub(super) fn open_err(path: &Path, direct_io: bool, e: io::Error) -> WalError {
    if direct_io && e.raw_os_error() == Some(libc::EINVAL) {
        WalError::DirectIoUnsupported { path: path.to_path_buf() }
    } else {
        io_err("open", path, 0, e)
    }
}

/// fsyncs a directory so that creations, renames and deletions in it are
/// durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, 0, e))
}

/// A segment file made ready for writing: allocated, zero-filled, durable
/// under its final name, and open (with O_DIRECT if asked).
pub(super) struct Prepared {
    /// Its sequence number.
    pub seq: u64,
    /// Its path.
    pub path: PathBuf,
    /// The open file.
    pub file: File,
}

/// Creates segment `seq` of `bytes` bytes in `dir`. Blocking: runs in
/// `Wal::open` or on the helper thread, never on a reactor.
///
/// The file is built under a temporary name and renamed once complete, so a
/// crash midway leaves only a `.wal.tmp` file, which `Wal::open` deletes.
/// Zero-filling (not just fallocate) turns the allocation into written
/// extents, so the WAL's later writes overwrite blocks instead of converting
/// unwritten extents, which makes their fdatasync much cheaper.
pub(super) fn prepare_segment(dir: &Path, seq: u64, bytes: u64, direct_io: bool) -> Result<Prepared, WalError> {
    let name = segment_name(seq);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    if direct_io {
        options.custom_flags(libc::O_DIRECT);
    }
    let file = options.open(&tmp).map_err(|e| open_err(&tmp, direct_io, e))?;
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| WalError::BadOptions { detail: "segment size does not fit in off_t" })?;
    // SAFETY: `fallocate` only reads its integer arguments; the descriptor
    // is open and owned by `file` for the duration of the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // Without fallocate support the zero fill below allocates anyway.
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(io_err("fallocate", &tmp, 0, e));
        }
    }
    let mut zeros = AlignedBuf::with_capacity(ZERO_FILL_CHUNK_BYTES);
    zeros.extend_zeroed(ZERO_FILL_CHUNK_BYTES);
    let mut at = 0u64;
    while at < bytes {
        let n = (bytes - at).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros.as_slice()[..n], at).map_err(|e| io_err("zero-fill", &tmp, at, e))?;
        at += n as u64;
    }
    file.sync_all().map_err(|e| io_err("fsync", &tmp, 0, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err("rename", &tmp, 0, e))?;
    sync_dir(dir)?;
    Ok(Prepared { seq, path, file })
}

/// The next segment, being prepared on a helper thread or already ready.
pub(super) struct Spare {
    /// The sequence number it will have.
    pub seq: u64,
    /// Delivers the prepared segment.
    pub rx: Receiver<Result<Prepared, WalError>>,
}

impl Spare {
    /// A spare that already exists (found by `Wal::open`).
    pub(super) fn ready(prepared: Prepared) -> Spare {
        let (tx, rx) = channel();
        let seq = prepared.seq;
        tx.send(Ok(prepared));
        Spare { seq, rx }
    }

    /// Starts preparing segment `seq` on a helper thread.
    pub(super) fn spawn(dir: &Path, seq: u64, bytes: u64, direct_io: bool) -> Spare {
        let (tx, rx) = channel();
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("wal-prepare".into())
            .spawn(move || tx.send(prepare_segment(&dir, seq, bytes, direct_io)));
        if let Err(e) = spawned {
            // The closure and its sender are gone; hand the reason to the
            // flush that will need this segment.
            let (tx, rx) = channel();
            tx.send(Err(WalError::PreparerGone { seq, detail: format!("could not start the helper thread: {e}") }));
            return Spare { seq, rx };
        }
        Spare { seq, rx }
    }
}

/// Sending half of a one-shot channel that works across threads and wakes
/// an async receiver (monoio's `sync` feature makes cross-thread wakers
/// legal) or a blocked one.
pub(super) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// Receiving half: an `async` future, or `wait` for blocking code.
pub(super) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

struct Slot<T> {
    value: Option<T>,
    /// The sender is gone (sent or dropped).
    closed: bool,
    waker: Option<Waker>,
}

fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared =
        Arc::new(Shared { slot: Mutex::new(Slot { value: None, closed: false, waker: None }), ready: Condvar::new() });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock leaves only plain data behind;
        // the slot is still consistent, so keep using it.
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T> Sender<T> {
    fn send(self, value: T) {
        self.shared.lock().value = Some(value);
        // Drop wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = self.shared.lock();
            slot.closed = true;
            slot.waker.take()
        };
        self.shared.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Blocks the calling thread until the value arrives; `None` if the
    /// sender was dropped without sending. Only for `Wal::open`.
    pub(super) fn wait(self) -> Option<T> {
        let mut slot = self.shared.lock();
        while slot.value.is_none() && !slot.closed {
            slot = self.shared.ready.wait(slot).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        slot.value.take()
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = self.shared.lock();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(Some(v));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse_back() {
        assert_eq!(segment_name(1), "0000000000000001.wal");
        assert_eq!(segment_name(0xabc), "0000000000000abc.wal");
        assert!(segment_name(9) < segment_name(10));
        assert!(matches!(classify_name("00000000000000ff.wal"), NameKind::Segment(255)));
        assert!(matches!(classify_name("00000000000000ff.wal.tmp"), NameKind::Temporary));
        assert!(matches!(classify_name("LOCK"), NameKind::Other));
        assert!(matches!(classify_name("ff.wal"), NameKind::Other));
        assert!(matches!(classify_name("000000000000000g.wal"), NameKind::Other));
    }

    #[test]
    fn one_shot_delivers_across_threads_and_reports_a_dropped_sender() {
        let (tx, rx) = channel::<u32>();
        let t = std::thread::spawn(move || tx.send(5));
        assert_eq!(rx.wait(), Some(5));
        t.join().unwrap();
        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(rx.wait(), None);
    }
}
