//! The node side of watches: joining the shards' feeds, history reads for
//! catching-up watches, and the [`WatchSession`] of each Watch stream. The
//! watch logic itself is `crate::watch::Hub`, one per reactor.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::handle::NodeHandle;
use super::msg::{Answer, Msg, Query, ReadError};
use crate::api::backend::WatchSession;
use crate::api::grpc::LocalBoxFuture;
use crate::mvcc::{End, Event};
use crate::runtime::local::Notify;
use crate::types::{ReactorId, ShardId};
use crate::watch::index::RangeEnd;
use crate::watch::{HistoryQuery, Out, Spec, StreamId};

/// A reactor's bookkeeping around its hub.
#[derive(Default)]
pub struct WatchState {
    next_stream: Cell<StreamId>,
    notify: RefCell<HashMap<StreamId, Notify>>,
    joining: Cell<bool>,
}

fn range_end_bytes(end: &Option<RangeEnd>) -> Vec<u8> {
    match end {
        None => Vec::new(),
        Some(RangeEnd::Before(e)) => e.clone(),
        Some(RangeEnd::Unbounded) => vec![0],
    }
}

impl NodeHandle {
    /// A shard's feed arrived.
    pub(super) fn on_feed(&self, shard: ShardId, upto: i64, events: Arc<Vec<Event>>) {
        self.local().hub.borrow_mut().feed(shard.idx(), upto, events);
        self.pump();
    }

    /// Wakes streams with new responses and starts the history reads the
    /// hub asks for.
    pub(super) fn pump(&self) {
        let (dirty, queries) = {
            let mut hub = self.local().hub.borrow_mut();
            (hub.take_dirty(), hub.take_queries())
        };
        {
            let notify = self.local().watch.notify.borrow();
            for s in dirty {
                if let Some(n) = notify.get(&s) {
                    n.notify();
                }
            }
        }
        for q in queries {
            monoio::spawn(self.clone().read_history(q));
        }
    }

    /// Makes every shard feed this reactor's hub.
    async fn ensure_joined(&self) {
        loop {
            if self.local().hub.borrow().joined() {
                return;
            }
            if self.local().watch.joining.replace(true) {
                // Another create is joining: wait for it.
                monoio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            self.local().hub.borrow_mut().begin_join();
            let shards = self.local().shared.shards;
            let asks = (0..shards).map(|s| self.ask(ReactorId(s as u16), Query::WatchJoin));
            let answers = futures_util::future::join_all(asks).await;
            {
                let mut hub = self.local().hub.borrow_mut();
                for a in answers {
                    if let Some(Answer::Joined { shard, rev }) = a {
                        hub.shard_joined(shard.idx(), rev);
                    }
                }
            }
            self.local().watch.joining.set(false);
            self.pump();
        }
    }

    /// Stops the feeds once no watch is left.
    fn leave_if_idle(&self) {
        let leave = {
            let mut hub = self.local().hub.borrow_mut();
            let leave = hub.idle() && hub.joined() && !self.local().watch.joining.get();
            if leave {
                hub.left();
            }
            leave
        };
        if leave {
            let me = self.me();
            for s in 0..self.local().shared.shards {
                self.send(ReactorId(s as u16), Msg::WatchLeave { from: me });
            }
        }
    }

    /// Reads a catching-up watch's history window from the shards.
    async fn read_history(self, q: HistoryQuery) {
        let range_end = range_end_bytes(&q.end);
        let end = End::from_range_end(&range_end);
        let result = loop {
            let map = self.map();
            let Some((first, last)) = map.overlapping(&q.key, end) else { break Ok(Vec::new()) };
            let asks = (first.0..=last.0).map(|s| {
                let query = Query::History {
                    key: q.key.clone(),
                    range_end: range_end.clone(),
                    from: q.from,
                    to: q.to,
                    map_version: map.version(),
                };
                self.ask(ReactorId(s), query)
            });
            let answers = futures_util::future::join_all(asks).await;
            let mut events = Vec::new();
            let mut moved = None;
            let mut compacted = None;
            for a in answers {
                match a {
                    Some(Answer::History(Ok(e))) => events.extend(e),
                    Some(Answer::History(Err(ReadError::Moved(v)))) => moved = Some(v),
                    Some(Answer::History(Err(ReadError::Compacted(c)))) => compacted = Some(c),
                    // Not a history answer: the node is stopping.
                    _ => return,
                }
            }
            if let Some(c) = compacted {
                break Err(c);
            }
            match moved {
                Some(v) if v > map.version() => {
                    self.map_at_least(v).await;
                }
                Some(_) => monoio::time::sleep(Duration::from_millis(1)).await,
                None => {
                    events.sort_by_key(|e| e.rev);
                    break Ok(events);
                }
            }
        };
        self.local().hub.borrow_mut().history(&q, result);
        self.pump();
    }
}

/// One Watch stream.
pub struct Session {
    node: NodeHandle,
    stream: StreamId,
    notify: Notify,
}

impl Session {
    /// Opens a stream on `node`'s reactor.
    pub(super) fn open(node: NodeHandle) -> Session {
        let w = &node.local().watch;
        let stream = w.next_stream.get() + 1;
        w.next_stream.set(stream);
        let notify = Notify::default();
        w.notify.borrow_mut().insert(stream, notify.clone());
        node.local().hub.borrow_mut().open(stream);
        Session { node, stream, notify }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.node.local().hub.borrow_mut().close(self.stream);
        self.node.local().watch.notify.borrow_mut().remove(&self.stream);
        self.node.leave_if_idle();
    }
}

impl WatchSession for Session {
    fn create(&self, spec: Spec) -> LocalBoxFuture<'static, ()> {
        let (node, stream) = (self.node.clone(), self.stream);
        Box::pin(async move {
            node.ensure_joined().await;
            node.local().hub.borrow_mut().create(stream, spec);
            node.pump();
        })
    }

    fn cancel(&self, id: i64) {
        use crate::api::backend::Backend;
        let current = self.node.status().revision;
        self.node.local().hub.borrow_mut().cancel(self.stream, id, current);
        self.node.pump();
    }

    fn request_progress(&self) {
        self.node.local().hub.borrow_mut().request_progress(self.stream);
        self.node.pump();
    }

    fn progress_tick(&self) {
        self.node.local().hub.borrow_mut().progress_tick(self.stream);
        self.node.pump();
    }

    fn next(&self) -> LocalBoxFuture<'static, Out> {
        let (node, stream, notify) = (self.node.clone(), self.stream, self.notify.clone());
        Box::pin(async move {
            loop {
                let out = node.local().hub.borrow_mut().pop(stream);
                if let Some(out) = out {
                    node.pump();
                    return out;
                }
                notify.notified().await;
            }
        })
    }
}
