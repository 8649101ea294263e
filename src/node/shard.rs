//! A shard on its reactor: applies committed batches in log order,
//! exchanges counts with the other shards, serves reads, and compacts in
//! the background.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;

use super::msg::{Committed, ReadError, ReadReply, ReadReq};
use super::snapshots::{part_name, read_file, write_file, Install, PartDone, SnapJob};
use super::stores::{store_path, Prepared};
use crate::apply::command::access_batch;
use crate::apply::range::read_part;
use crate::apply::{ApplyError, BatchRun, Exchange, LeaseChange, RangeMap, Reply};
use crate::lease::LeaseTable;
use crate::mvcc::disk::DiskCheckpoint;
use crate::mvcc::{DiskStore, End, Event, EventKind, KeyHistory, MvccStore};
use crate::runtime::local::{oneshot, yield_now, Notify, Sender};
use crate::types::{RaftIndex, ReactorId, ShardId};

/// Keys compacted per step before the shard yields to other work.
const COMPACT_STEP_KEYS: usize = 4096;
/// Bytes of consecutive checkpoint pages written by one I/O.
const WRITE_RUN_BYTES: usize = 1 << 20;
/// Dirty pages an install builds up before it checkpoints the new file
/// (bounds its memory).
const INSTALL_DIRTY_PAGES_MAX: usize = 16 * 1024;

/// What a read waits for.
enum Wait {
    /// Recovery has been applied.
    Serving,
    /// The shard has applied this index.
    Applied(RaftIndex),
    /// The shard's revision has reached this.
    Rev(i64),
    /// The shard holds the keys of this range map version (or a later one).
    Map(u64),
}

/// What the apply loop takes from its queue, in log order.
pub enum Queued {
    /// A durable log entry.
    Batch(Arc<Committed>),
    /// A new range map, effective between two entries.
    Remap(Arc<RangeMap>),
    /// Write this shard's part of a snapshot at this point of the log.
    Snapshot(Arc<SnapJob>),
    /// Replace the state with a snapshot's (at start, or from the leader).
    Install(Arc<Install>),
}

/// The state of one shard, owned by its reactor.
pub struct ShardState {
    /// Which shard.
    pub id: ShardId,
    /// Its MVCC state, in its store file.
    pub store: DiskStore,
    /// The store file's generation (see `stores`).
    pub gen: u64,
    /// The checkpoint prepared and not yet committed: its log index.
    pending: Option<(u64, DiskCheckpoint)>,
    /// The page cache budget of a store file.
    cache_bytes: usize,
    /// Its copy of the lease table.
    pub leases: LeaseTable,
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
    /// The range map whose keys this shard holds.
    pub map: Rc<RangeMap>,
    /// Reactors whose watch hubs this shard feeds after every batch.
    pub watch_reactors: BTreeSet<ReactorId>,
    queue: VecDeque<Queued>,
    exchanges: HashMap<(u64, u32), Vec<Exchange>>,
    transfers: HashMap<u64, Vec<Vec<KeyHistory>>>,
    waiters: Vec<(Wait, Sender<()>)>,
    deferred: Vec<Reply>,
}

impl ShardState {
    fn done(&self, w: &Wait) -> bool {
        match w {
            Wait::Serving => self.serve_from.is_some_and(|i| self.applied >= i),
            Wait::Applied(i) => self.applied >= *i,
            Wait::Rev(r) => self.rev >= *r,
            Wait::Map(v) => self.map.version() >= *v,
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
    /// A shard on `store` (generation `gen`) at revision 1, as a fresh
    /// etcd starts; recovery's `Install` sets what the store's checkpoint
    /// or a snapshot holds.
    pub fn new(id: ShardId, map: Rc<RangeMap>, store: DiskStore, gen: u64, cache_bytes: usize) -> Rc<Shard> {
        Rc::new(Shard {
            state: RefCell::new(ShardState {
                id,
                store,
                gen,
                pending: None,
                cache_bytes,
                leases: LeaseTable::default(),
                rev: 1,
                // etcd's store starts "compacted at -1": Compact(0) is
                // allowed on a store that was never compacted.
                compact_rev: -1,
                applied: RaftIndex(0),
                received: RaftIndex(0),
                serve_from: None,
                map,
                watch_reactors: BTreeSet::new(),
                queue: VecDeque::new(),
                exchanges: HashMap::new(),
                transfers: HashMap::new(),
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
        s.queue.push_back(Queued::Batch(c));
        self.work.notify();
    }

    /// Queues a snapshot job or an install after the entries queued so far.
    pub fn enqueue_item(&self, q: Queued) {
        self.state.borrow_mut().queue.push_back(q);
        self.work.notify();
    }

    /// Queues a range map change after the entries queued so far.
    pub fn enqueue_remap(&self, m: Arc<RangeMap>) {
        self.state.borrow_mut().queue.push_back(Queued::Remap(m));
        self.work.notify();
    }

    /// Takes key histories another shard hands over with a remap.
    pub fn add_transfer(&self, version: u64, histories: Vec<KeyHistory>) {
        self.state.borrow_mut().transfers.entry(version).or_default().push(histories);
        self.exchange.notify();
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
        // A reader ahead of this shard's map waits for the shard to hold
        // the keys of that map; one behind must route again.
        self.wait(Wait::Map(req.map_version)).await;
        let version = self.state.borrow().map.version();
        if version != req.map_version {
            return ReadReply { seq: req.seq, applied_rev: 0, result: Err(ReadError::Moved(version)) };
        }
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
        if req.min_index.get() > 0 {
            self.wait(Wait::Applied(req.min_index)).await;
        }
        if req.at_least > 0 {
            self.wait(Wait::Rev(req.at_least)).await;
        }
        let s = self.state.borrow();
        let result = if s.map.version() != req.map_version {
            Err(ReadError::Moved(s.map.version()))
        } else if req.rev > 0 && req.rev > s.rev {
            Err(ReadError::Apply(ApplyError::FutureRev))
        } else if req.rev > 0 && req.rev < s.compact_rev {
            Err(ReadError::Apply(ApplyError::Compacted))
        } else {
            let at = if req.rev > 0 {
                req.rev
            } else if req.at_least > 0 {
                req.at_least
            } else {
                s.rev
            };
            let part = read_part(&s.store, &req.key, End::from_range_end(&req.range_end), at, &req.shape);
            check_store(&s.store);
            Ok(part)
        };
        ReadReply { seq: req.seq, applied_rev: s.rev, result }
    }

    /// The changes to this shard's part of a range in `[from, to]`, in
    /// revision order.
    pub fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
        map_version: u64,
    ) -> Result<Vec<Event>, ReadError> {
        let s = self.state.borrow();
        if s.map.version() != map_version {
            return Err(ReadError::Moved(s.map.version()));
        }
        if from < s.compact_rev {
            return Err(ReadError::Compacted(s.compact_rev));
        }
        let mut events = Vec::new();
        s.store.history(key, End::from_range_end(range_end), from, to.min(s.rev), &mut |e| {
            events.push(e);
            ControlFlow::Continue(())
        });
        check_store(&s.store);
        events.sort_by_key(|e| e.rev);
        Ok(events)
    }

    /// Waits until the shard's revision reaches `rev`.
    pub async fn wait_rev(&self, rev: i64) {
        self.wait(Wait::Rev(rev)).await
    }

    /// Continues a CRC32C over this shard's versions as of `rev`, key by key
    /// in key order: the versions a read at the compaction revision or
    /// later can see (so physical compaction's progress never shows).
    /// Shards are contiguous key ranges, so chaining shard after shard
    /// hashes the whole key space in key order, whatever the range map.
    pub fn hash_kv(&self, rev: i64, crc: u32) -> u32 {
        let s = self.state.borrow();
        let compact = s.compact_rev;
        let mut crc = crc;
        let mut key: Vec<u8> = Vec::new();
        let mut versions: Vec<Event> = Vec::new();
        let flush = |versions: &mut Vec<Event>, crc: &mut u32| {
            // Versions at or below the compaction revision: only the newest
            // survives, and only if it is a put.
            let cut = versions.iter().rposition(|e| e.rev.main <= compact);
            for (i, e) in versions.iter().enumerate() {
                let visible = match cut {
                    Some(c) if i < c => false,
                    Some(c) if i == c => e.kind == EventKind::Put,
                    _ => true,
                };
                if visible {
                    *crc = hash_event(*crc, e);
                }
            }
            versions.clear();
        };
        s.store.history(b"", End::Unbounded, i64::MIN, rev, &mut |e| {
            if e.kv.key != key {
                flush(&mut versions, &mut crc);
                key = e.kv.key.clone();
            }
            versions.push(e);
            ControlFlow::Continue(())
        });
        flush(&mut versions, &mut crc);
        check_store(&s.store);
        crc
    }

    async fn next_item(&self) -> Queued {
        loop {
            if let Some(q) = self.state.borrow_mut().queue.pop_front() {
                return q;
            }
            self.work.notified().await;
        }
    }

    async fn transfers(&self, version: u64, want: usize) -> Vec<Vec<KeyHistory>> {
        loop {
            {
                let mut s = self.state.borrow_mut();
                if s.transfers.get(&version).map_or(0, Vec::len) >= want {
                    return s.transfers.remove(&version).unwrap_or_default();
                }
            }
            self.exchange.notified().await;
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
    /// Sends key histories to the shard that owns them under a new map.
    fn transfer(&self, to: ShardId, version: u64, histories: Vec<KeyHistory>);
    /// Tells the reactor the shard now holds the keys of `map`.
    fn map_changed(&self, map: Rc<RangeMap>);
    /// A batch's lease changes and events (in revision order), and the
    /// store's revision after it.
    fn applied_effects(&self, leases: &[LeaseChange], events: Vec<Event>, rev: i64);
    /// Members' attributes a batch published (shard 0).
    fn on_published(&self, published: Vec<crate::apply::command::Publish>);
    /// The shard prepared its checkpoint (and wrote its part, if asked) for
    /// a snapshot, or failed to.
    fn snapshot_part(&self, done: PartDone);
    /// The shard committed its checkpoint at `index`.
    fn checkpoint_committed(&self, index: u64);
    /// The shard's state was replaced by a snapshot's at revision `rev`:
    /// watchers must catch up from the store.
    fn installed(&self, rev: i64);
}

/// Applies committed batches (and range map changes) in order, forever.
pub async fn apply_loop<L: ShardLink + 'static>(shard: Rc<Shard>, link: Rc<L>) {
    loop {
        match shard.next_item().await {
            Queued::Batch(c) => apply_batch(&shard, &*link, &c).await,
            Queued::Remap(m) => remap(&shard, &*link, m).await,
            Queued::Snapshot(job) => snapshot(&shard, link.clone(), job),
            Queued::Install(inst) => install(&shard, &*link, &inst).await,
        }
    }
}

async fn apply_batch<L: ShardLink>(shard: &Rc<Shard>, link: &L, c: &Committed) {
    if !c.data.is_empty() {
        let batch = match access_batch(&c.data) {
            Ok(b) => b,
            Err(e) => fatal(&format!("log entry {} does not decode: {e}", c.index)),
        };
        let (id, rev, compact_rev, map) = {
            let s = shard.state.borrow();
            (s.id, s.rev, s.compact_rev, s.map.clone())
        };
        let n = map.shards();
        let mut run = BatchRun::new(batch, c.index, &map, id, rev, compact_rev);
        loop {
            let mine = {
                let s = shard.state.borrow();
                let mine = run.plan_segment(&s.store, &s.leases);
                check_store(&s.store);
                mine
            };
            let mut all = if n > 1 {
                link.broadcast_exchange(&mine);
                shard.exchanges(mine.index, mine.segment, n - 1).await
            } else {
                Vec::new()
            };
            all.push(mine);
            run.absorb(all, &shard.state.borrow().leases);
            if run.done() {
                break;
            }
        }
        let applied = {
            let mut s = shard.state.borrow_mut();
            let s = &mut *s;
            let want_events = !s.watch_reactors.is_empty();
            let applied = run.apply(&mut s.store, &mut s.leases, link.origin_filter(), want_events);
            check_store(&s.store);
            s.rev = applied.rev;
            s.compact_rev = applied.compact_rev;
            applied
        };
        link.applied_effects(&applied.lease_changes, applied.events, applied.rev);
        if !applied.published.is_empty() {
            link.on_published(applied.published);
        }
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
        release_deferred(&mut s, link);
    } else {
        shard.compact.notify();
    }
}

/// Hands the keys this shard loses under `new` to their new owners and
/// takes the keys it gains, then adopts `new`.
async fn remap<L: ShardLink>(shard: &Rc<Shard>, link: &L, new: Arc<RangeMap>) {
    let new = Rc::new(RangeMap::clone(&new));
    let (id, old) = {
        let s = shard.state.borrow();
        (s.id, s.map.clone())
    };
    let shards = (0..new.shards()).map(|i| ShardId(i as u16)).filter(|&j| j != id);
    let mut expected = 0;
    for j in shards {
        if let Some((start, end)) = old.moved_range(id, &new, j) {
            let mut s = shard.state.borrow_mut();
            let histories = s.store.take_range(start, end);
            check_store(&s.store);
            // Their leases' key lists move with them.
            attach_leases(&mut s.leases, &histories, false);
            drop(s);
            link.transfer(j, new.version(), histories);
        }
        if old.ranges_meet(j, &new, id) {
            expected += 1;
        }
    }
    let incoming = shard.transfers(new.version(), expected).await;
    let mut s = shard.state.borrow_mut();
    for histories in incoming {
        attach_leases(&mut s.leases, &histories, true);
        s.store.insert_histories(histories);
        check_store(&s.store);
    }
    s.map = new.clone();
    s.wake_waiters();
    link.publish(&s);
    drop(s);
    link.map_changed(new);
}

/// Attaches (or detaches) each history's key to the lease of its newest
/// version, if that is a live put with a lease.
fn attach_leases(leases: &mut LeaseTable, histories: &[KeyHistory], attach: bool) {
    use crate::apply::LeaseState;
    for h in histories {
        let lease = h.versions.last().and_then(|v| v.put.as_ref()).map_or(0, |p| p.lease);
        if lease != 0 {
            if attach {
                leases.attach(lease, &h.key);
            } else {
                leases.detach(lease, &h.key);
            }
        }
    }
}

/// A snapshot job at this point of the log: the shard starts its
/// checkpoint (and, if the job wants parts, captures every key history,
/// in key order), then writes both in the background while it goes on
/// applying; the checkpoint's meta page waits for the sequencer's decision
/// (see `stores`).
fn snapshot<L: ShardLink + 'static>(shard: &Rc<Shard>, link: Rc<L>, job: Arc<SnapJob>) {
    let mut s = shard.state.borrow_mut();
    let part = job.parts.then(|| {
        let mut bytes = Vec::with_capacity(s.store.size_bytes() as usize + 1024);
        s.store.histories(b"", End::Unbounded, &mut |h| {
            crate::snapshot::encode_history(&h, &mut bytes);
            ControlFlow::Continue(())
        });
        check_store(&s.store);
        bytes
    });
    let (id, rev, compact_rev, leases) = (s.id, s.rev, s.compact_rev, s.leases.all());
    let map = (s.map.version(), s.map.splits().to_vec());
    let path = s.store.path().to_path_buf();
    let checkpoint = match s.store.begin_checkpoint(job.index, &[]) {
        Ok(c) => c,
        Err(e) => fatal(&format!("cannot start a checkpoint at index {}: {e}", job.index)),
    };
    let pages = checkpoint.pages().to_vec();
    let (meta_id, meta) = checkpoint.meta();
    let prepared = Prepared { gen: s.gen, meta_id: meta_id.get(), meta: meta.bytes().to_vec() };
    s.pending = Some((job.index, checkpoint));
    drop(s);
    monoio::spawn(async move {
        let result = match part {
            Some(bytes) => {
                let name = part_name(id);
                Some(write_file(&job.dir.join(&name), &name, bytes).await)
            }
            None => None,
        };
        if let Err(e) = write_pages(&path, &pages).await {
            fatal(&format!("cannot write the checkpoint at index {}: {e}", job.index));
        }
        let done = PartDone { index: job.index, shard: id, result, prepared, rev, compact_rev, leases, map };
        link.snapshot_part(done);
    });
}

/// Writes checkpoint pages (ascending ids) at their offsets, runs of
/// consecutive pages in one I/O, and fdatasyncs the file.
async fn write_pages(
    path: &std::path::Path,
    pages: &[(crate::btree::PageId, Arc<crate::btree::Page>)],
) -> Result<(), String> {
    let file = monoio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut i = 0;
    while i < pages.len() {
        let first = pages[i].0;
        let mut next = first.get();
        let mut buf = Vec::with_capacity(WRITE_RUN_BYTES);
        while i < pages.len() && pages[i].0.get() == next && buf.len() < WRITE_RUN_BYTES {
            buf.extend_from_slice(pages[i].1.bytes());
            next += 1;
            i += 1;
        }
        let (res, _) = file.write_all_at(buf, first.byte_offset()).await;
        res.map_err(|e| format!("cannot write {} at offset {}: {e}", path.display(), first.byte_offset()))?;
    }
    file.sync_data().await.map_err(|e| format!("cannot fdatasync {}: {e}", path.display()))?;
    let _ = file.close().await;
    Ok(())
}

/// The decision for the checkpoint at `index` is durable: writes its meta
/// page, fdatasyncs, and makes it the store's durable checkpoint.
pub async fn commit_checkpoint<L: ShardLink>(shard: Rc<Shard>, link: Rc<L>, index: u64) {
    let (path, meta_id, meta) = {
        let s = shard.state.borrow();
        let Some((at, cp)) = &s.pending else { return };
        if *at != index {
            return;
        }
        let (id, page) = cp.meta();
        (s.store.path().to_path_buf(), id, Arc::clone(page))
    };
    if let Err(e) = write_pages(&path, &[(meta_id, meta)]).await {
        fatal(&format!("cannot commit the checkpoint at index {index}: {e}"));
    }
    let mut s = shard.state.borrow_mut();
    let Some((_, cp)) = s.pending.take() else { return };
    if let Err(e) = s.store.finish_checkpoint(cp).and_then(|()| s.store.truncate_file()) {
        fatal(&format!("cannot finish the checkpoint at index {index}: {e}"));
    }
    link.publish(&s);
    drop(s);
    link.checkpoint_committed(index);
}

/// Replaces the shard's state with a snapshot's: at start-up from the
/// store's own checkpoint (which `reactor_main` opened at the snapshot's
/// index), otherwise from the keys it owns in the snapshot's parts, into a
/// new store file of that generation.
async fn install<L: ShardLink>(shard: &Rc<Shard>, link: &L, inst: &Install) {
    let (id, applied) = {
        let s = shard.state.borrow();
        (s.id, s.applied)
    };
    if applied.get() >= inst.manifest.index {
        // Already past it (the entries it covers were applied here).
        return;
    }
    let mut leases = LeaseTable::default();
    {
        use crate::apply::LeaseState;
        for &(lease, ttl) in &inst.global.leases {
            leases.grant(lease, ttl);
        }
    }
    if let Some(rec) = &inst.stores {
        let mut s = shard.state.borrow_mut();
        let s = &mut *s;
        if s.store.applied_index() != rec.index {
            fatal(&format!(
                "{} holds the checkpoint at index {}, the snapshot is at {}",
                s.store.path().display(),
                s.store.applied_index(),
                rec.index
            ));
        }
        // Lease key lists are not in the checkpoint: one pass over the
        // live keys rebuilds them.
        s.store.scan(b"", End::Unbounded, inst.global.rev, &mut |kv| {
            if kv.lease != 0 {
                use crate::apply::LeaseState;
                leases.attach(kv.lease, kv.key);
            }
            ControlFlow::Continue(())
        });
        check_store(&s.store);
        let map = Rc::new(rec.map());
        s.map = map.clone();
        link.map_changed(map);
    } else {
        let (old_path, cache_bytes, map) = {
            let s = shard.state.borrow();
            (s.store.path().to_path_buf(), s.cache_bytes, s.map.clone())
        };
        let gen = inst.manifest.index;
        let dir = old_path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let path = store_path(&dir, id, gen);
        if path == old_path {
            fatal(&format!("snapshot {gen} installs over its own store file {}", path.display()));
        }
        let _ = std::fs::remove_file(&path);
        let mut store = match DiskStore::open_path(&path, cache_bytes) {
            Ok((store, _)) => store,
            Err(e) => fatal(&format!("cannot create {}: {e}", path.display())),
        };
        for f in inst.manifest.files.iter().filter(|f| f.name.starts_with("part-")) {
            let mut dec = crate::snapshot::PartDecoder::default();
            let read = read_file(&inst.dir, f, &mut |chunk| {
                dec.push(chunk);
                let mut mine = Vec::new();
                while let Some(h) = dec.next_history()? {
                    if map.owner(&h.key) == id {
                        mine.push(h);
                    }
                }
                attach_leases(&mut leases, &mine, true);
                store.insert_histories(mine);
                if store.dirty_pages() > INSTALL_DIRTY_PAGES_MAX {
                    // The file is no checkpoint of the node's until a
                    // snapshot records it: checkpointing it here only
                    // bounds the memory the install holds.
                    if let Err(e) = store.checkpoint_sync(0, &[]) {
                        fatal(&format!("cannot install snapshot {gen}: {e}"));
                    }
                }
                Ok(())
            })
            .await;
            if let Err(e) = read.and_then(|()| dec.finish().map_err(|e| format!("snapshot file {}: {e}", f.name))) {
                fatal(&format!("cannot install snapshot {}: {e}", inst.manifest.index));
            }
            check_store(&store);
        }
        if inst.global.compact_rev > 0 {
            store.begin_compact(inst.global.compact_rev);
        }
        let mut s = shard.state.borrow_mut();
        if let Some((at, _)) = s.pending.take() {
            fatal(&format!("a snapshot arrived while the checkpoint at index {at} was not committed"));
        }
        s.store = store;
        s.gen = gen;
        if let Err(e) = std::fs::remove_file(&old_path) {
            crate::log_warn!("cannot delete a replaced store file", "file" => old_path.display().to_string(), "error" => e.to_string());
        }
    }
    let index = RaftIndex(inst.manifest.index);
    let mut s = shard.state.borrow_mut();
    s.leases = leases;
    s.rev = inst.global.rev;
    s.compact_rev = inst.global.compact_rev;
    s.applied = s.applied.max(index);
    s.received = s.received.max(index);
    s.wake_waiters();
    link.publish(&s);
    drop(s);
    link.installed(inst.global.rev);
    shard.compact.notify();
}

/// Stops the node when its store broke (an I/O error, a checksum or
/// decoding failure): nothing it computed after the error may reach a
/// client, a peer or a checkpoint. A restart replays the log onto the last
/// durable checkpoint.
pub fn check_store(store: &DiskStore) {
    if store.is_broken() {
        let e = store.error().unwrap_or_default();
        fatal(&format!("the store failed: {e}"));
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
            let done = {
                let mut s = shard.state.borrow_mut();
                let done = s.store.compact_step(COMPACT_STEP_KEYS);
                check_store(&s.store);
                done
            };
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

fn hash_event(crc: u32, e: &Event) -> u32 {
    let kv = &e.kv;
    let mut crc = crc32c::crc32c_append(crc, &(kv.key.len() as u64).to_le_bytes());
    crc = crc32c::crc32c_append(crc, &kv.key);
    for n in [e.rev.main, e.rev.sub, kv.create_revision, kv.version, kv.lease] {
        crc = crc32c::crc32c_append(crc, &n.to_le_bytes());
    }
    crc = crc32c::crc32c_append(crc, &[u8::from(e.kind == EventKind::Put)]);
    crc32c::crc32c_append(crc, &kv.value)
}
