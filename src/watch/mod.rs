//! Watches, on the reactor that holds the client's Watch stream.
//!
//! Owns: every watch of this reactor's streams, the merge of the shards'
//! event feeds into one revision-ordered stream, catch-up from history, and
//! what each stream must send next. Sans-IO: the node moves feeds and
//! history answers in and sends what [`Hub::pop`] gives (DESIGN §6).
//!
//! Every shard sends every joined reactor one feed per applied batch: the
//! batch's changes to its keys and its revision after the batch. A shard
//! applies every batch, so all shards reach the same revisions; the hub
//! releases the changes up to the lowest revision every shard has reported
//! (the watermark), merged in (revision, sub) order, and hands each to the
//! watches whose ranges hold its key. The range map never matters here:
//! whichever shard owns a key feeds its changes.
//!
//! A watch that starts in the past catches up from the shards' history in
//! windows of revisions, then turns live at the watermark. A stream whose
//! client does not read stops queueing events once its queue is full; its
//! watches fall back to catching up from history when it drains, so a slow
//! client costs bounded memory and never slows writers (etcd#17529).

pub mod index;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use index::{Index, RangeEnd};

use crate::mvcc::{Event, EventKind};

/// Most bytes of responses queued for one stream before its watches stop
/// queueing events and fall back to catching up.
pub const STREAM_QUEUE_BYTES_MAX: usize = 8 << 20;
/// Revisions read from history per catch-up step.
pub const HISTORY_WINDOW_REVS: i64 = 1000;

/// A stream, as numbered by its reactor.
pub type StreamId = u64;

/// A watch: its stream and its etcd watch ID on that stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    /// The stream.
    pub stream: StreamId,
    /// etcd's `watch_id`.
    pub id: i64,
}

/// etcd's `WatchCreateRequest`, with the key range resolved. The default
/// is a watch of the empty key from now, without options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spec {
    /// First key.
    pub key: Vec<u8>,
    /// `None` for the key alone.
    pub end: Option<RangeEnd>,
    /// First revision to send; 0 for "from now".
    pub start_rev: i64,
    /// Send the replaced version with each change.
    pub prev_kv: bool,
    /// Drop puts.
    pub no_put: bool,
    /// Drop deletes.
    pub no_delete: bool,
    /// Send progress notifications.
    pub progress_notify: bool,
    /// The client accepts responses split into fragments.
    pub fragment: bool,
    /// The watch ID the client asked for; 0 lets the hub choose.
    pub id: i64,
}

impl Spec {
    fn holds(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.key.as_slice(),
            Some(RangeEnd::Unbounded) => key >= self.key.as_slice(),
            Some(RangeEnd::Before(e)) => key >= self.key.as_slice() && key < e.as_slice(),
        }
    }

    fn wants(&self, e: &Event) -> bool {
        match e.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// What a stream sends, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// The watch exists.
    Created {
        /// Its ID.
        id: i64,
        /// Header revision.
        revision: i64,
    },
    /// A create failed (etcd answers created and canceled, ID -1).
    Refused {
        /// Header revision.
        revision: i64,
        /// etcd's cancel reason.
        reason: String,
    },
    /// Changes.
    Events {
        /// The watch.
        id: i64,
        /// Header revision.
        revision: i64,
        /// The changes, in revision order; shared by every watch that
        /// sends the same change (one copy per change, not per watch).
        events: Vec<Arc<Event>>,
        /// The client accepts fragments.
        fragment: bool,
    },
    /// The watch ended.
    Canceled {
        /// The watch.
        id: i64,
        /// Header revision.
        revision: i64,
        /// The compaction revision that ended it, or 0.
        compact_revision: i64,
    },
    /// Every change up to `revision` has been sent (`id` -1: for the whole
    /// stream, answering a progress request).
    Progress {
        /// The watch, or -1.
        id: i64,
        /// Header revision.
        revision: i64,
    },
}

impl Out {
    fn bytes(&self) -> usize {
        match self {
            Out::Events { events, .. } => events
                .iter()
                .map(|e| {
                    64 + e.kv.key.len() + e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len() + p.key.len())
                })
                .sum(),
            _ => 64,
        }
    }
}

/// A history read the node should make for a catching-up watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// For whom.
    pub watch: WatchKey,
    /// First key.
    pub key: Vec<u8>,
    /// End of the range (`None`: the key alone).
    pub end: Option<RangeEnd>,
    /// First revision.
    pub from: i64,
    /// Last revision.
    pub to: i64,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Gets changes as they are released.
    Live,
    /// Reading history up to `to` (a query is out).
    CatchingUp { to: i64 },
    /// Its stream's queue was full: catch up once it drains.
    Lagging,
}

#[derive(Debug)]
struct Watch {
    spec: Spec,
    /// The first revision not yet queued.
    next_rev: i64,
    phase: Phase,
    /// Queued events since the last progress tick.
    active: bool,
}

#[derive(Debug, Default)]
struct Stream {
    queue: VecDeque<Out>,
    queued_bytes: usize,
    next_auto_id: i64,
    watches: BTreeSet<i64>,
}

/// The watches of one reactor and the merge of the shards' feeds.
#[derive(Debug)]
pub struct Hub {
    /// Per shard: the revision it has fed up to (`None` until it joined).
    marks: Vec<Option<i64>>,
    feeds: Vec<VecDeque<(i64, Arc<Vec<Event>>)>>,
    /// Every change up to here has been handed to the watches.
    released: i64,
    /// A join is under way: shards that already answered may feed before
    /// the hub learns their join revision, so their feeds are kept.
    joining: bool,
    /// The highest join revision of the join under way.
    join_rev: i64,
    /// A shard's state jumped to this revision (a snapshot was installed):
    /// changes up to it were never fed, so live watches catch up from the
    /// store once the watermark passes the revisions they had.
    resync_upto: i64,
    watches: HashMap<WatchKey, Watch>,
    index: Index<WatchKey>,
    streams: HashMap<StreamId, Stream>,
    queries: Vec<HistoryQuery>,
    dirty: BTreeSet<StreamId>,
}

impl Hub {
    /// A hub for a node of `shards` shards, not joined to any yet.
    pub fn new(shards: usize) -> Hub {
        Hub {
            marks: vec![None; shards],
            feeds: (0..shards).map(|_| VecDeque::new()).collect(),
            released: 0,
            joining: false,
            join_rev: 0,
            resync_upto: 0,
            watches: HashMap::new(),
            index: Index::default(),
            streams: HashMap::new(),
            queries: Vec::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// Whether every shard feeds this hub.
    pub fn joined(&self) -> bool {
        self.marks.iter().all(Option::is_some)
    }

    /// Whether the hub has no watch left (the node can stop the feeds).
    pub fn idle(&self) -> bool {
        self.watches.is_empty()
    }

    /// The node asked every shard to feed this hub. A shard starts feeding
    /// as soon as it answered, and its first feeds can arrive before the
    /// answers of the others: from now on they are kept until
    /// [`Hub::shard_joined`] says from which revision they count.
    pub fn begin_join(&mut self) {
        if !self.joined() {
            self.joining = true;
        }
    }

    /// Shard `shard` feeds this hub from revision `rev` on: the changes up
    /// to `rev` are not fed, the ones after it all are.
    pub fn shard_joined(&mut self, shard: usize, rev: i64) {
        // Feeds kept from before the answer that are not after `rev` came
        // from an earlier join (the shard had not yet seen the leave).
        self.feeds[shard].retain(|(upto, _)| *upto > rev);
        let fed = self.feeds[shard].back().map_or(rev, |(upto, _)| *upto);
        self.marks[shard] = Some(fed);
        self.join_rev = self.join_rev.max(rev);
        if self.joined() {
            // Changes up to the highest join revision are not all fed:
            // watches start after it.
            self.released = self.released.max(self.join_rev);
            self.joining = false;
            self.join_rev = 0;
            self.release();
        }
    }

    /// The shards stopped feeding (the hub went idle).
    pub fn left(&mut self) {
        self.marks.iter_mut().for_each(|m| *m = None);
        self.feeds.iter_mut().for_each(VecDeque::clear);
        self.joining = false;
        self.join_rev = 0;
    }

    /// The revision up to which every change has been handed out.
    pub fn watermark(&self) -> i64 {
        self.released
    }

    /// Opens a stream.
    pub fn open(&mut self, stream: StreamId) {
        self.streams.entry(stream).or_default();
    }

    /// Closes a stream and its watches.
    pub fn close(&mut self, stream: StreamId) {
        if let Some(s) = self.streams.remove(&stream) {
            for id in s.watches {
                let key = WatchKey { stream, id };
                self.watches.remove(&key);
                self.index.remove(key);
            }
        }
        self.queries.retain(|q| q.watch.stream != stream);
        self.dirty.remove(&stream);
    }

    fn push(&mut self, stream: StreamId, out: Out) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.queued_bytes += out.bytes();
            s.queue.push_back(out);
            self.dirty.insert(stream);
        }
    }

    /// Creates a watch (the hub must have joined). Queues `Created` or
    /// `Refused`, and history reads for a start in the past.
    pub fn create(&mut self, stream: StreamId, spec: Spec) {
        let revision = self.released;
        let Some(s) = self.streams.get_mut(&stream) else { return };
        if let Some(RangeEnd::Before(e)) = &spec.end {
            if e.as_slice() <= spec.key.as_slice() {
                let reason = "mvcc: watcher range is empty".to_string();
                return self.push(stream, Out::Refused { revision, reason });
            }
        }
        let id = if spec.id == 0 {
            while s.watches.contains(&s.next_auto_id) {
                s.next_auto_id += 1;
            }
            s.next_auto_id
        } else if s.watches.contains(&spec.id) {
            let reason = "mvcc: duplicate watch ID provided on the WatchStream".to_string();
            return self.push(stream, Out::Refused { revision, reason });
        } else {
            spec.id
        };
        if spec.id == 0 {
            s.next_auto_id += 1;
        }
        s.watches.insert(id);
        let key = WatchKey { stream, id };
        match &spec.end {
            None => self.index.add_key(spec.key.clone(), key),
            Some(end) => self.index.add_range(spec.key.clone(), end.clone(), key),
        }
        let start = if spec.start_rev <= 0 { self.released + 1 } else { spec.start_rev };
        let mut w = Watch { spec, next_rev: start, phase: Phase::Live, active: false };
        self.push(stream, Out::Created { id, revision });
        if start <= self.released {
            w.phase = Phase::CatchingUp { to: self.released };
            self.queries.push(query(key, &w, self.released));
        }
        self.watches.insert(key, w);
    }

    /// Cancels a watch; nothing happens for an unknown ID, as in etcd.
    /// `current` is the store's revision now, which etcd's cancel answer
    /// carries (the watermark may be a batch behind it).
    pub fn cancel(&mut self, stream: StreamId, id: i64, current: i64) {
        let key = WatchKey { stream, id };
        if self.watches.remove(&key).is_some() {
            self.index.remove(key);
            if let Some(s) = self.streams.get_mut(&stream) {
                s.watches.remove(&id);
            }
            self.queries.retain(|q| q.watch != key);
            let revision = self.released.max(current);
            self.push(stream, Out::Canceled { id, revision, compact_revision: 0 });
        }
    }

    /// A client asked for progress: once everything queued before is sent,
    /// it learns that every change up to the watermark has been.
    pub fn request_progress(&mut self, stream: StreamId) {
        let revision = self.released;
        self.push(stream, Out::Progress { id: -1, revision });
    }

    /// The progress interval passed: a progress notification for every
    /// live watch that asked for them and queued nothing since the last.
    pub fn progress_tick(&mut self, stream: StreamId) {
        let Some(s) = self.streams.get(&stream) else { return };
        let ids: Vec<i64> = s.watches.iter().copied().collect();
        let revision = self.released;
        for id in ids {
            let key = WatchKey { stream, id };
            let Some(w) = self.watches.get_mut(&key) else { continue };
            let quiet = !std::mem::take(&mut w.active);
            if w.spec.progress_notify && w.phase == Phase::Live && quiet {
                self.push(stream, Out::Progress { id, revision });
            }
        }
    }

    /// A shard's feed: its changes of one batch and its revision after it.
    pub fn feed(&mut self, shard: usize, upto: i64, events: Arc<Vec<Event>>) {
        if self.marks[shard].is_none() {
            if self.joining {
                // Its join answer is on the way (see `begin_join`).
                self.feeds[shard].push_back((upto, events));
            }
            return;
        }
        self.marks[shard] = Some(upto);
        self.feeds[shard].push_back((upto, events));
        self.release();
    }

    /// Shard `shard` replaced its state with a snapshot's at revision
    /// `upto`: the changes before it were never fed to this hub.
    pub fn resync(&mut self, shard: usize, upto: i64) {
        if self.marks[shard].is_none() {
            return;
        }
        self.marks[shard] = Some(upto);
        self.resync_upto = self.resync_upto.max(upto);
        self.release();
    }

    fn release(&mut self) {
        let Some(m) = self.marks.iter().map(|m| m.unwrap_or(i64::MIN)).min() else { return };
        if m <= self.released {
            return;
        }
        if self.resync_upto > self.released {
            // Some of the changes up to `m` were never fed: every live
            // watch reads them from the store instead (the shards hold
            // them: each has reached `m`).
            for q in &mut self.feeds {
                while q.front().is_some_and(|(upto, _)| *upto <= m) {
                    q.pop_front();
                }
            }
            self.released = m;
            if self.resync_upto <= m {
                self.resync_upto = 0;
            }
            let keys: Vec<WatchKey> =
                self.watches.iter().filter(|(_, w)| w.phase == Phase::Live).map(|(k, _)| *k).collect();
            for k in keys {
                self.advance(k);
            }
            return;
        }
        let mut ready: Vec<&Event> = Vec::new();
        let mut batches = Vec::new();
        for q in &mut self.feeds {
            while q.front().is_some_and(|(upto, _)| *upto <= m) {
                if let Some((_, evs)) = q.pop_front() {
                    batches.push(evs);
                }
            }
        }
        for evs in &batches {
            ready.extend(evs.iter().filter(|e| e.rev.main > self.released));
        }
        ready.sort_by_key(|e| e.rev);
        let mut per_watch: HashMap<WatchKey, Vec<Arc<Event>>> = HashMap::new();
        for e in ready {
            let watches = &self.watches;
            // At most two copies of a change, with and without the replaced
            // version, however many watches send it.
            let (mut with_prev, mut bare): (Option<Arc<Event>>, Option<Arc<Event>>) = (None, None);
            self.index.matching(&e.kv.key, &mut |k| {
                if let Some(w) = watches.get(&k) {
                    if w.phase == Phase::Live && e.rev.main >= w.next_rev && w.spec.wants(e) {
                        let copy = if w.spec.prev_kv { &mut with_prev } else { &mut bare };
                        let shared = copy.get_or_insert_with(|| Arc::new(shaped(e, w.spec.prev_kv)));
                        per_watch.entry(k).or_default().push(shared.clone());
                    }
                }
            });
        }
        self.released = m;
        let mut keys: Vec<WatchKey> = per_watch.keys().copied().collect();
        keys.sort();
        for k in keys {
            if let Some(events) = per_watch.remove(&k) {
                self.deliver(k, events, m);
            }
        }
        for w in self.watches.values_mut() {
            if w.phase == Phase::Live {
                w.next_rev = w.next_rev.max(m + 1);
            }
        }
    }

    /// Queues changes for a watch, unless its stream is full: then the
    /// watch lags and will catch up from its first unsent revision.
    fn deliver(&mut self, key: WatchKey, events: Vec<Arc<Event>>, revision: i64) {
        let full = self.streams.get(&key.stream).is_none_or(|s| s.queued_bytes >= STREAM_QUEUE_BYTES_MAX);
        let Some(w) = self.watches.get_mut(&key) else { return };
        if full {
            if let Some(first) = events.first() {
                w.next_rev = first.rev.main;
            }
            w.phase = Phase::Lagging;
            return;
        }
        w.active = true;
        let fragment = w.spec.fragment;
        self.push(key.stream, Out::Events { id: key.id, revision, events, fragment });
    }

    /// The history reads to make now.
    pub fn take_queries(&mut self) -> Vec<HistoryQuery> {
        std::mem::take(&mut self.queries)
    }

    /// The answer to a history read: the changes of the query's range and
    /// revisions, in revision order, or the compaction revision that
    /// erased them.
    pub fn history(&mut self, q: &HistoryQuery, answer: Result<Vec<Event>, i64>) {
        let Some(w) = self.watches.get_mut(&q.watch) else { return };
        if w.phase != (Phase::CatchingUp { to: q.to }) {
            return;
        }
        let events = match answer {
            Ok(events) => events,
            Err(compact_revision) => {
                let key = q.watch;
                self.watches.remove(&key);
                self.index.remove(key);
                if let Some(s) = self.streams.get_mut(&key.stream) {
                    s.watches.remove(&key.id);
                }
                // etcd's compaction cancel carries no header revision.
                return self.push(key.stream, Out::Canceled { id: key.id, revision: 0, compact_revision });
            }
        };
        let events: Vec<Arc<Event>> = events
            .iter()
            .filter(|e| e.rev.main >= w.next_rev && w.spec.holds(&e.kv.key) && w.spec.wants(e))
            .map(|e| Arc::new(shaped(e, w.spec.prev_kv)))
            .collect();
        w.next_rev = q.to + 1;
        if !events.is_empty() {
            let (key, revision) = (q.watch, self.released);
            w.active = true;
            let fragment = w.spec.fragment;
            self.push(key.stream, Out::Events { id: key.id, revision, events, fragment });
        }
        self.advance(q.watch);
    }

    /// Sets a catching-up (or lagging) watch's next step: another window,
    /// or live if it reached the watermark.
    fn advance(&mut self, key: WatchKey) {
        let released = self.released;
        let Some(w) = self.watches.get_mut(&key) else { return };
        if w.next_rev > released {
            w.phase = Phase::Live;
        } else {
            let to = released.min(w.next_rev.saturating_add(HISTORY_WINDOW_REVS - 1));
            w.phase = Phase::CatchingUp { to };
            self.queries.push(query(key, w, to));
        }
    }

    /// The next response of `stream`, if any.
    pub fn pop(&mut self, stream: StreamId) -> Option<Out> {
        let s = self.streams.get_mut(&stream)?;
        let out = s.queue.pop_front()?;
        s.queued_bytes = s.queued_bytes.saturating_sub(out.bytes());
        if s.queue.is_empty() {
            // Drained: lagging watches catch up now.
            let lagging: Vec<i64> = s.watches.iter().copied().collect();
            for id in lagging {
                let key = WatchKey { stream, id };
                if self.watches.get(&key).is_some_and(|w| w.phase == Phase::Lagging) {
                    self.advance(key);
                }
            }
        }
        Some(out)
    }

    /// Streams with responses queued since the last call.
    pub fn take_dirty(&mut self) -> Vec<StreamId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Number of watches.
    pub fn watches(&self) -> usize {
        self.watches.len()
    }
}

fn query(watch: WatchKey, w: &Watch, to: i64) -> HistoryQuery {
    HistoryQuery { watch, key: w.spec.key.clone(), end: w.spec.end.clone(), from: w.next_rev, to }
}

/// An event as a watch sends it: with or without the replaced version.
fn shaped(e: &Event, prev_kv: bool) -> Event {
    Event { rev: e.rev, kind: e.kind, kv: e.kv.clone(), prev: if prev_kv { e.prev.clone() } else { None } }
}

#[cfg(test)]
mod tests;
