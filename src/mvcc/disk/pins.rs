//! Pinned bytes: copies that live as long as the store's shared borrow.
//!
//! Owns: `Pins`, an append-only arena of byte buffers. Never touches: the
//! tree or the cache.
//!
//! `MvccStore::latest` returns a `KvRef` borrowed from `&self`, but a disk
//! store's version lives in a page the cache may evict. So `latest` copies
//! the key and value into a buffer pinned here; the buffer lives until the
//! next `&mut self` call on the store (which clears the arena: no `&self`
//! borrow can outlive it). The arena is made of `OnceCell`s, which hand
//! out `&` references for as long as the cell lives, so this needs no
//! `unsafe`: a slot is written once and never changed or dropped while
//! borrowed.
//!
//! Bound: one buffer per `latest` call between two `&mut self` calls; the
//! apply engine reads each key of a batch at most a few times, and every
//! write clears the arena. `DiskStore::release_pins` clears it explicitly.

use std::cell::{Cell, OnceCell};

/// Slots in the first chunk; each next chunk doubles.
const FIRST_CHUNK_SLOTS: usize = 64;

/// An append-only arena of byte buffers.
pub struct Pins {
    head: Chunk,
    used: Cell<usize>,
    bytes: Cell<usize>,
}

struct Chunk {
    slots: Box<[OnceCell<Box<[u8]>>]>,
    next: OnceCell<Box<Chunk>>,
}

impl Chunk {
    fn new(slots: usize) -> Chunk {
        Chunk { slots: (0..slots).map(|_| OnceCell::new()).collect(), next: OnceCell::new() }
    }
}

impl Default for Pins {
    fn default() -> Pins {
        Pins { head: Chunk::new(FIRST_CHUNK_SLOTS), used: Cell::new(0), bytes: Cell::new(0) }
    }
}

impl Pins {
    /// Keeps `bytes` alive as long as `self` is borrowed, and returns them.
    pub fn pin(&self, bytes: Vec<u8>) -> &[u8] {
        let mut index = self.used.get();
        let mut chunk = &self.head;
        while index >= chunk.slots.len() {
            index -= chunk.slots.len();
            let slots = chunk.slots.len().saturating_mul(2);
            chunk = chunk.next.get_or_init(|| Box::new(Chunk::new(slots)));
        }
        self.used.set(self.used.get() + 1);
        self.bytes.set(self.bytes.get() + bytes.len());
        let slot = &chunk.slots[index];
        // Slots at or past `used` are always empty (`used` only grows until
        // `clear` replaces the whole arena), so this stores `bytes`.
        slot.get_or_init(|| bytes.into_boxed_slice())
    }

    /// Buffers pinned now.
    pub fn len(&self) -> usize {
        self.used.get()
    }

    /// Bytes pinned now.
    pub fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Drops every pinned buffer (no borrow of them can be alive: `&mut`).
    pub fn clear(&mut self) {
        if self.used.get() > 0 {
            *self = Pins::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_bytes_stay_valid_across_many_pins_until_cleared() {
        let mut pins = Pins::default();
        let held: Vec<&[u8]> = (0..1000u32).map(|i| pins.pin(i.to_le_bytes().to_vec())).collect();
        for (i, bytes) in held.iter().enumerate() {
            assert_eq!(*bytes, (i as u32).to_le_bytes());
        }
        assert_eq!(pins.len(), 1000);
        assert_eq!(pins.bytes(), 4000);
        pins.clear();
        assert_eq!(pins.len(), 0);
        assert_eq!(pins.pin(vec![1]), [1]);
    }
}
