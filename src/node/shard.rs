//! A shard on its reactor: applies committed batches in log order,
//! exchanges counts with the other shards, serves reads, and compacts in
//! the background.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use super::msg::{Committed, ReadReply, ReadReq};
use crate::apply::command::access_batch;
use crate::apply::range::read_part;
use crate::apply::{ApplyError, BatchRun, Exchange, RangeMap, Reply};
use crate::mvcc::{End, MemStore, MvccStore};
use crate::runtime::local::{oneshot, yield_now, Notify, Sender};
use crate::types::{RaftIndex, ShardId};

/// Keys compacted per step before the shard yields to other work.
const COMPACT_STEP_KEYS: usize = 4096;

/// What a read waits for.
enum Wait {
    /// Recovery has been applied.
    Serving,
    /// The shard has applied this index.
    Applied(RaftIndex),
    /// The shard's revision has reached this.
    Rev(i64),
}

/// The state of one shard, owned by its reactor.
pub struct ShardState {
    /// Which shard.
    pub id: ShardId,
    /// Its MVCC state.
    pub store: MemStore,
    /// The store's revision after the last applied batch.
    pub rev: i64,
    /// The compacted revision.
    pub compact_rev: i64,
    /// Last applied log index.
    pub applied: RaftIndex,
    /// Last received log index.
    pub received: RaftIndex,
    /// Recovery is queued up to this index (None until the sequencer says).
    pub serve_from: Option<RaftIndex>,
    queue: VecDeque<Arc<Committed>>,
    exchanges: HashMap<(u64, u32), Vec<Exchange>>,
    waiters: Vec<(Wait, Sender<()>)>,
    deferred: Vec<Reply>,
}

impl ShardState {
    fn done(&self, w: &Wait) -> bool {
        match w {
            Wait::Serving => self.serve_from.is_some_and(|i| self.applied >= i),
            Wait::Applied(i) => self.applied >= *i,
            Wait::Rev(r) => self.rev >= *r,
        }
    }

    fn wake_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        for (w, tx) in waiters {
            if self.done(&w) {
                tx.send(());
            } else {
                self.waiters.push((w, tx));
            }
        }
    }
}

/// A shard and the notifications of its tasks.
pub struct Shard {
    /// The state.
    pub state: RefCell<ShardState>,
    work: Notify,
    exchange: Notify,
    compact: Notify,
}

impl Shard {
    /// An empty shard at revision 1, as a fresh etcd starts.
    pub fn new(id: ShardId) -> Rc<Shard> {
        Rc::new(Shard {
            state: RefCell::new(ShardState {
                id,
                store: MemStore::default(),
                rev: 1,
                compact_rev: 0,
                applied: RaftIndex(0),
                received: RaftIndex(0),
                serve_from: None,
                queue: VecDeque::new(),
                exchanges: HashMap::new(),
                waiters: Vec::new(),
                deferred: Vec::new(),
            }),
            work: Notify::default(),
            exchange: Notify::default(),
            compact: Notify::default(),
        })
    }

    /// Queues a committed entry.
    pub fn enqueue(&self, c: Arc<Committed>) {
        let mut s = self.state.borrow_mut();
        s.received = s.received.max(c.index);
        s.queue.push_back(c);
        self.work.notify();
    }

    /// Takes another shard's exchange.
    pub fn add_exchange(&self, e: Exchange) {
        self.state.borrow_mut().exchanges.entry((e.index.get(), e.segment)).or_default().push(e);
        self.exchange.notify();
    }

    /// Recovery is queued up to `index`.
    pub fn serve_from(&self, index: RaftIndex) {
        let mut s = self.state.borrow_mut();
        s.serve_from = Some(index);
        s.wake_waiters();
    }

    async fn wait(&self, w: Wait) {
        let rx = {
            let mut s = self.state.borrow_mut();
            if s.done(&w) {
                return;
            }
            let (tx, rx) = oneshot();
            s.waiters.push((w, tx));
            rx
        };
        let _ = rx.await;
    }

    /// Waits until the shard has applied everything recovery queued.
    pub async fn wait_serving(&self) {
        self.wait(Wait::Serving).await
    }

    /// Serves a read of this shard's part of a range.
    pub async fn read(&self, req: ReadReq) -> ReadReply {
        self.wait_serving().await;
        let fresh = {
            let s = self.state.borrow();
            // A linearizable read, or one that names a revision this shard
            // has not reached, first applies what it has received: every
            // write acknowledged before the read is in there.
            (req.linearizable || req.rev > s.rev).then_some(s.received)
        };
        if let Some(i) = fresh {
            self.wait(Wait::Applied(i)).await;
        }
        if req.at_least > 0 {
            self.wait(Wait::Rev(req.at_least)).await;
        }
        let s = self.state.borrow();
        let result = if req.rev > 0 && req.rev > s.rev {
            Err(ApplyError::FutureRev)
        } else if req.rev > 0 && req.rev < s.compact_rev {
            Err(ApplyError::Compacted)
        } else {
            let at = if req.rev > 0 {
                req.rev
            } else if req.at_least > 0 {
                req.at_least
            } else {
                s.rev
            };
            Ok(read_part(&s.store, &req.key, End::from_range_end(&req.range_end), at, &req.shape))
        };
        ReadReply { seq: req.seq, applied_rev: s.rev, result }
    }

    async fn next_batch(&self) -> Arc<Committed> {
        loop {
            if let Some(c) = self.state.borrow_mut().queue.pop_front() {
                return c;
            }
            self.work.notified().await;
        }
    }

    async fn exchanges(&self, index: RaftIndex, segment: u32, want: usize) -> Vec<Exchange> {
        loop {
            {
                let mut s = self.state.borrow_mut();
                let key = (index.get(), segment);
                if s.exchanges.get(&key).map_or(0, Vec::len) >= want {
                    return s.exchanges.remove(&key).unwrap_or_default();
                }
            }
            self.exchange.notified().await;
        }
    }
}

/// What the apply loop needs from its reactor.
pub trait ShardLink {
    /// Sends an exchange to every other shard.
    fn broadcast_exchange(&self, e: &Exchange);
    /// Routes a reply to its origin.
    fn reply(&self, r: Reply);
    /// This member and boot (replies are made only for them).
    fn origin_filter(&self) -> (u64, u32);
    /// Publishes the shard's figures for Status.
    fn publish(&self, s: &ShardState);
}

/// Applies committed batches in order, forever.
pub async fn apply_loop<L: ShardLink>(shard: Rc<Shard>, map: Rc<RangeMap>, link: Rc<L>) {
    let n = map.shards();
    let (member, boot) = link.origin_filter();
    let no_leases = |_: i64| false;
    loop {
        let c = shard.next_batch().await;
        if !c.data.is_empty() {
            let batch = match access_batch(&c.data) {
                Ok(b) => b,
                Err(e) => fatal(&format!("log entry {} does not decode: {e}", c.index)),
            };
            let (id, rev, compact_rev) = {
                let s = shard.state.borrow();
                (s.id, s.rev, s.compact_rev)
            };
            let mut run = BatchRun::new(batch, c.index, &map, id, rev, compact_rev, &no_leases);
            loop {
                let mine = run.plan_segment(&shard.state.borrow().store);
                let mut all = if n > 1 {
                    link.broadcast_exchange(&mine);
                    shard.exchanges(mine.index, mine.segment, n - 1).await
                } else {
                    Vec::new()
                };
                all.push(mine);
                run.absorb(all);
                if run.done() {
                    break;
                }
            }
            let applied = {
                let mut s = shard.state.borrow_mut();
                let applied = run.apply(&mut s.store, member, boot);
                s.rev = applied.rev;
                s.compact_rev = applied.compact_rev;
                applied
            };
            for r in applied.replies {
                if r.physical {
                    shard.state.borrow_mut().deferred.push(r);
                    shard.compact.notify();
                } else {
                    link.reply(r);
                }
            }
        }
        let mut s = shard.state.borrow_mut();
        s.applied = c.index;
        s.wake_waiters();
        link.publish(&s);
        if s.store.compact_step(0) {
            // Nothing pending: physical compaction replies can go.
            release_deferred(&mut s, &*link);
        } else {
            shard.compact.notify();
        }
    }
}

fn release_deferred<L: ShardLink + ?Sized>(s: &mut ShardState, link: &L) {
    for r in std::mem::take(&mut s.deferred) {
        link.reply(r);
    }
}

/// Does pending compaction in bounded steps between other work.
pub async fn compaction_loop<L: ShardLink>(shard: Rc<Shard>, link: Rc<L>) {
    loop {
        shard.compact.notified().await;
        loop {
            let done = shard.state.borrow_mut().store.compact_step(COMPACT_STEP_KEYS);
            if done {
                break;
            }
            yield_now().await;
        }
        let mut s = shard.state.borrow_mut();
        if s.store.compact_step(0) {
            release_deferred(&mut s, &*link);
        }
        link.publish(&s);
    }
}

/// Stops the process after an error that leaves the node unable to go on
/// correctly (a log entry that does not decode, a failed WAL write).
pub fn fatal(msg: &str) -> ! {
    crate::log_error!("fatal error, stopping", "error" => msg);
    std::process::exit(1);
}
