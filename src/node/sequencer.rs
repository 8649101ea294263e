//! The proposal queue of the sequencer reactor: commands from every
//! reactor wait here for the consensus loop (`consensus`), which takes
//! them in bounded batches, one log entry per batch.

use std::cell::{Cell, RefCell};

use crate::apply::command::{Command, Item, Op};
use crate::runtime::local::Notify;

/// Most bytes of commands in one log entry.
pub const BATCH_BYTES_MAX: usize = 4 << 20;
/// Most commands in one log entry.
pub const BATCH_ITEMS_MAX: usize = 16 * 1024;

/// Proposals waiting for the next entry.
#[derive(Default)]
pub struct Proposals {
    queue: RefCell<Vec<Item>>,
    bytes: Cell<usize>,
    notify: Notify,
}

impl Proposals {
    /// Queues a command for the next entry.
    pub fn push(&self, item: Item) {
        self.bytes.set(self.bytes.get() + approx_bytes(&item.cmd));
        self.queue.borrow_mut().push(item);
        self.notify.notify();
    }

    /// Wakes the consensus loop (which waits on this queue's notifier for
    /// all its inputs).
    pub fn wake(&self) {
        self.notify.notify();
    }

    /// Waits until something woke the consensus loop.
    pub async fn woken(&self) {
        self.notify.notified().await
    }

    /// The commands for the next entry, at most a bound's worth; empty if
    /// none are queued.
    pub fn take_now(&self) -> Vec<Item> {
        let mut q = self.queue.borrow_mut();
        if q.is_empty() {
            return Vec::new();
        }
        self.take_bounded(&mut q)
    }

    fn take_bounded(&self, q: &mut Vec<Item>) -> Vec<Item> {
        let mut bytes = 0;
        let mut n = 0;
        for item in q.iter() {
            let b = approx_bytes(&item.cmd);
            if n > 0 && (bytes + b > BATCH_BYTES_MAX || n >= BATCH_ITEMS_MAX) {
                break;
            }
            bytes += b;
            n += 1;
        }
        self.bytes.set(self.bytes.get().saturating_sub(bytes));
        let rest = q.split_off(n);
        std::mem::replace(q, rest)
    }
}

fn approx_bytes(c: &Command) -> usize {
    fn ops(o: &[Op]) -> usize {
        o.iter()
            .map(|op| match op {
                Op::Range(r) => r.key.len() + r.range_end.len() + 96,
                Op::Put(p) => p.key.len() + p.value.len() + 48,
                Op::DeleteRange(d) => d.key.len() + d.range_end.len() + 32,
                Op::Txn(t) => txn(t),
            })
            .sum()
    }
    fn txn(t: &crate::apply::command::Txn) -> usize {
        t.compare.iter().map(|c| c.key.len() + c.range_end.len() + 48).sum::<usize>()
            + ops(&t.success)
            + ops(&t.failure)
            + 32
    }
    64 + match c {
        Command::Put(p) => p.key.len() + p.value.len(),
        Command::DeleteRange(d) => d.key.len() + d.range_end.len(),
        Command::Txn(t) => txn(t),
        Command::Compact(_) | Command::LeaseGrant(_) | Command::LeaseRevoke(_) => 16,
        Command::Publish(p) => p.name.len() + p.client_urls.iter().map(|u| u.len() + 8).sum::<usize>(),
    }
}
