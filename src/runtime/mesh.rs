//! Batched channels between reactors.
//!
//! Each reactor has one inbox. Messages a reactor produces for another are
//! gathered in its [`Outbox`] while its ready tasks run, then sent as one
//! `Vec` per destination: one wake-up of the peer per batch, never one per
//! message (RUNTIME.md: a cross-core wake-up costs ~30 µs).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::local::yield_now;
use crate::types::ReactorId;

/// The sending ends of every reactor's inbox. Cheap to clone, `Send`.
pub struct Mesh<M> {
    senders: Vec<flume::Sender<Vec<M>>>,
}

impl<M> Clone for Mesh<M> {
    fn clone(&self) -> Self {
        Mesh { senders: self.senders.clone() }
    }
}

/// A reactor's receiving end.
pub type Inbox<M> = flume::Receiver<Vec<M>>;

impl<M: Send + 'static> Mesh<M> {
    /// A mesh of `n` reactors and their inboxes, in reactor order.
    pub fn new(n: usize) -> (Mesh<M>, Vec<Inbox<M>>) {
        let (senders, inboxes) = (0..n).map(|_| flume::unbounded()).unzip();
        (Mesh { senders }, inboxes)
    }

    /// Number of reactors.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether the mesh has no reactors.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    fn send(&self, to: ReactorId, batch: Vec<M>) {
        // A send fails only when the receiving reactor has exited, which
        // happens only when the process is going down.
        let _ = self.senders[to.idx()].send(batch);
    }
}

struct OutboxInner<M> {
    mesh: Mesh<M>,
    pending: RefCell<Vec<Vec<M>>>,
    flush_scheduled: Cell<bool>,
}

/// A reactor's outgoing messages, flushed once per scheduling round.
pub struct Outbox<M>(Rc<OutboxInner<M>>);

impl<M> Clone for Outbox<M> {
    fn clone(&self) -> Self {
        Outbox(self.0.clone())
    }
}

impl<M: Send + 'static> Outbox<M> {
    /// An outbox over `mesh`; use one per reactor.
    pub fn new(mesh: Mesh<M>) -> Outbox<M> {
        let n = mesh.len();
        Outbox(Rc::new(OutboxInner {
            mesh,
            pending: RefCell::new((0..n).map(|_| Vec::new()).collect()),
            flush_scheduled: Cell::new(false),
        }))
    }

    /// Number of reactors.
    pub fn reactors(&self) -> usize {
        self.0.mesh.len()
    }

    /// Queues `msg` for reactor `to`; it leaves when the reactor's ready
    /// tasks have had their turn.
    pub fn push(&self, to: ReactorId, msg: M) {
        self.0.pending.borrow_mut()[to.idx()].push(msg);
        if !self.0.flush_scheduled.replace(true) {
            let me = self.clone();
            monoio::spawn(async move {
                yield_now().await;
                me.flush();
            });
        }
    }

    /// Sends everything queued now.
    pub fn flush(&self) {
        self.0.flush_scheduled.set(false);
        let batches: Vec<(usize, Vec<M>)> = self
            .0
            .pending
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(i, q)| (i, std::mem::take(q)))
            .collect();
        for (i, batch) in batches {
            self.0.mesh.send(ReactorId(i as u16), batch);
        }
    }
}
