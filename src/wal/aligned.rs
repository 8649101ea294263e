//! A heap buffer aligned to 4 KiB, for O_DIRECT writes through io_uring.
//!
//! Owns: one allocation, its length, and the invariant that every byte past
//! the length is zero (so a write rounded up to whole blocks never leaks old
//! content). Never touches: files, the reactor, record layout.
//!
//! monoio has no aligned buffer type, so this one implements its `IoBuf`.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of the buffer's start and granularity of its capacity: one
/// block of the WAL (and the O_DIRECT alignment on 4Kn devices).
pub(crate) const ALIGN_BYTES: usize = 4096;

/// The largest buffer this type will allocate. A WAL segment is at most
/// 1 GiB, so no chunk of a flush is larger.
pub(crate) const CAPACITY_MAX_BYTES: usize = 1 << 30;

/// A growable byte buffer whose start is 4 KiB-aligned and whose capacity is
/// a multiple of 4 KiB. Bytes in `[len, capacity)` are always zero.
pub(crate) struct AlignedBuf {
    /// Start of the allocation; dangling (and never read) when `cap == 0`.
    ptr: NonNull<u8>,
    /// Allocated bytes: 0 or a multiple of `ALIGN_BYTES`.
    cap: usize,
    /// Bytes in use, `<= cap`.
    len: usize,
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf { ptr: NonNull::dangling(), cap: 0, len: 0 }
    }
}

impl AlignedBuf {
    /// An empty buffer with room for at least `bytes` bytes.
    pub(crate) fn with_capacity(bytes: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::default();
        buf.reallocate(round_up(bytes.max(1), ALIGN_BYTES));
        buf
    }

    /// Bytes in use.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Allocated bytes.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// The bytes in use.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.cap == 0 {
            return &[];
        }
        // SAFETY: `ptr` points to `cap` bytes we allocated, all initialized
        // (allocated zeroed), and `len <= cap`; `&self` forbids mutation
        // for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes in use, mutable.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only
        // reference to the memory for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Grows the length by `n` bytes and returns them (zero, by the
    /// invariant), reallocating if needed.
    pub(crate) fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        let end = start.checked_add(n).expect("AlignedBuf length overflow");
        if end > self.cap {
            assert!(end <= CAPACITY_MAX_BYTES, "AlignedBuf of {end} bytes exceeds the {CAPACITY_MAX_BYTES}-byte bound");
            let doubled = self.cap.saturating_mul(2).min(CAPACITY_MAX_BYTES);
            self.reallocate(round_up(end.max(doubled), ALIGN_BYTES));
        }
        self.len = end;
        &mut self.as_mut_slice()[start..end]
    }

    /// Appends a copy of `bytes`.
    pub(crate) fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.extend_zeroed(bytes.len()).copy_from_slice(bytes);
    }

    /// Shortens the buffer to `new_len` bytes, zeroing what is cut off.
    pub(crate) fn truncate(&mut self, new_len: usize) {
        if new_len >= self.len {
            return;
        }
        let old_len = self.len;
        self.as_mut_slice()[new_len..old_len].fill(0);
        self.len = new_len;
    }

    /// Extends the length to the next multiple of `ALIGN_BYTES` (the added
    /// bytes are zero), so the buffer can be written with O_DIRECT.
    pub(crate) fn pad_to_block(&mut self) {
        let padded = round_up(self.len, ALIGN_BYTES);
        debug_assert!(padded <= self.cap);
        self.len = padded;
    }

    /// Keeps only `[from, len)`, moved to the start of the buffer.
    pub(crate) fn drain_front(&mut self, from: usize) {
        assert!(from <= self.len, "drain_front past the end");
        let len = self.len;
        self.as_mut_slice().copy_within(from..len, 0);
        self.truncate(len - from);
    }

    /// Frees memory down to `cap_max` bytes if more is allocated and the
    /// content fits; keeps the content.
    pub(crate) fn shrink_to(&mut self, cap_max: usize) {
        let target = round_up(cap_max.max(self.len).max(1), ALIGN_BYTES);
        if self.cap > target {
            self.reallocate(target);
        }
    }

    /// Moves the content to a fresh zeroed allocation of `new_cap` bytes.
    fn reallocate(&mut self, new_cap: usize) {
        assert!(
            new_cap >= self.len && new_cap > 0 && new_cap.is_multiple_of(ALIGN_BYTES),
            "bad AlignedBuf capacity {new_cap}"
        );
        assert!(
            new_cap <= CAPACITY_MAX_BYTES,
            "AlignedBuf of {new_cap} bytes exceeds the {CAPACITY_MAX_BYTES}-byte bound"
        );
        let layout = layout_of_cap(new_cap);
        // SAFETY: `layout` has a non-zero size (checked above) and a valid
        // power-of-two alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        if self.cap > 0 {
            // SAFETY: source and destination are distinct live allocations
            // of at least `len` bytes each (`len <= cap` and
            // `len <= new_cap`); the old one was allocated with `layout(cap)`
            // by this type, so deallocating it with that layout is valid.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), self.len);
                alloc::dealloc(self.ptr.as_ptr(), layout_of_cap(self.cap));
            }
        }
        self.ptr = ptr;
        self.cap = new_cap;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: the allocation was made by `reallocate` with exactly
            // this layout and is freed only here.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout_of_cap(self.cap)) }
        }
    }
}

// SAFETY: monoio requires that `read_ptr` stays valid and unchanged while
// the runtime holds the buffer, and that `bytes_init` bytes behind it are
// readable. The pointer targets a heap allocation owned by this value: moving
// or pinning the `AlignedBuf` does not move the allocation, and nothing can
// reallocate it while monoio owns the value (every method that does needs
// `&mut self`, which the runtime never calls). `bytes_init` returns `len`,
// which is `<= cap`, and all `cap` bytes were initialized by
// `alloc_zeroed`; for `cap == 0` the length is 0, so the dangling pointer is
// never read. The type is `Unpin` and `'static` (it borrows nothing).
unsafe impl monoio::buf::IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }
}

fn layout_of_cap(cap: usize) -> Layout {
    // `cap` is a non-zero multiple of 4096 not above 1 GiB (checked by
    // `reallocate`), so this cannot fail.
    Layout::from_size_align(cap, ALIGN_BYTES).expect("valid AlignedBuf layout")
}

/// `n` rounded up to a multiple of `to` (a power of two).
pub(crate) const fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_aligned_and_tail_stays_zero() {
        let mut buf = AlignedBuf::with_capacity(10);
        assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN_BYTES, 0);
        assert_eq!(buf.capacity(), ALIGN_BYTES);
        buf.extend_from_slice(&[7; 100]);
        buf.truncate(10);
        buf.pad_to_block();
        assert_eq!(buf.len(), ALIGN_BYTES);
        assert!(buf.as_slice()[10..].iter().all(|&b| b == 0));
        assert!(buf.as_slice()[..10].iter().all(|&b| b == 7));
    }

    #[test]
    fn grows_keeps_content_and_shrinks_back() {
        let mut buf = AlignedBuf::with_capacity(1);
        for i in 0..10_000u32 {
            buf.extend_from_slice(&i.to_le_bytes());
        }
        assert_eq!(buf.len(), 40_000);
        assert_eq!(&buf.as_slice()[39_996..], &9_999u32.to_le_bytes());
        assert_eq!(buf.as_slice().as_ptr() as usize % ALIGN_BYTES, 0);
        buf.drain_front(39_996);
        assert_eq!(buf.as_slice(), &9_999u32.to_le_bytes());
        buf.shrink_to(ALIGN_BYTES);
        assert_eq!(buf.capacity(), ALIGN_BYTES);
        assert_eq!(buf.as_slice(), &9_999u32.to_le_bytes());
    }

    #[test]
    fn default_is_empty_and_unallocated() {
        let mut buf = AlignedBuf::default();
        assert_eq!(buf.len(), 0);
        assert!(buf.as_slice().is_empty());
        buf.extend_from_slice(b"abc");
        assert_eq!(buf.as_slice(), b"abc");
    }
}
