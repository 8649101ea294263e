//! The sequencer: turns the commands every reactor proposes into log
//! entries, one per group commit, and hands durable entries to the shards.
//!
//! While one write + fdatasync is in flight, proposals pile up; the next
//! entry takes all of them (up to a bound). A command is applied, and so
//! acknowledged, only after the fdatasync of its entry returned.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::msg::Committed;
use super::shard::fatal;
use crate::apply::command::{encode_batch, Batch, Command, Item, Op};
use crate::runtime::local::Notify;
use crate::types::{MemberId, RaftIndex, Term};
use crate::wal::{EntryKind, EntryRef, HardState, Wal};

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

    async fn take(&self) -> Vec<Item> {
        loop {
            {
                let mut q = self.queue.borrow_mut();
                if !q.is_empty() {
                    return self.take_bounded(&mut q);
                }
            }
            self.notify.notified().await;
        }
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
    }
}

/// Forms entries from proposals, makes them durable, and passes each to
/// `deliver` (every shard) once its fdatasync returned. Never returns; a
/// WAL failure stops the process, since nothing more can be made durable.
pub async fn run(
    proposals: Rc<Proposals>,
    mut wal: Wal,
    term: Term,
    member: MemberId,
    mut deliver: impl FnMut(Arc<Committed>),
) {
    loop {
        let items = proposals.take().await;
        let data = encode_batch(&Batch { items });
        let index = RaftIndex(wal.last_index().get() + 1);
        let entry = EntryRef { index, term, kind: EntryKind::Normal, data: &data };
        let hs = HardState { term, vote: member, commit: index };
        if let Err(e) = wal.append(&[entry], Some(hs)) {
            fatal(&format!("WAL append of entry {index}: {e}"));
        }
        if let Err(e) = wal.flush().await {
            fatal(&format!("WAL write of entry {index}: {e}"));
        }
        deliver(Arc::new(Committed { index, data }));
    }
}
