//! The wiring of one node: reactors, the sequencer with its WAL, the shards
//! and the client listeners. The only module that knows all the parts
//! (DESIGN §9).
//!
//! Reactor `i` owns shard `i`. Reactor 0 also runs the sequencer: it opens
//! the WAL, queues the recovered entries for every shard, and from then on
//! turns proposals into durable entries. A reactor starts accepting clients
//! once its shard has applied everything recovery queued.

mod balance;
mod consensus;
mod handle;
mod leases;
mod members;
mod msg;
mod sequencer;
mod shard;
mod snapshots;
mod stores;
mod watches;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use handle::NodeHandle;

use crate::api::grpc::{serve_connection, ServerLimits};
use crate::api::kv::Limits;
use crate::api::service::GRPC_OVERHEAD_BYTES;
use crate::api::EtcdService;
use crate::apply::RangeMap;
use crate::config::Config;
use crate::raft::{Boot, RaftConfig, RaftCore, RaftLogging, SnapshotMeta};
use crate::runtime::{self, Inbox, Mesh, Outbox};
use crate::types::{ClusterId, MemberId, RaftIndex, ReactorId, ShardId, Term};
use crate::wal::{Wal, WalOptions};
use consensus::Consensus;
use msg::Msg;
use shard::{fatal, Shard};

/// Cap on concurrent streams per client connection.
const STREAMS_PER_CONN_MAX: u32 = 4096;
/// A connection that has not finished its HTTP/2 handshake by then is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// The reactor that runs the sequencer and the balancer.
const SEQUENCER: ReactorId = ReactorId(0);

/// Figures every reactor publishes for Status and metrics. Atomics, read
/// off the request path.
pub struct Stats {
    revs: Vec<AtomicI64>,
    sizes: Vec<AtomicU64>,
    applied: Vec<AtomicU64>,
    keys: Vec<AtomicU64>,
    map_versions: Vec<AtomicU64>,
    /// Pages each shard's store holds unwritten.
    dirty: Vec<AtomicU64>,
    raft_index: AtomicU64,
    term: AtomicU64,
    /// The leader's member ID; 0 when none is known.
    leader: AtomicU64,
    /// While this member leads: the index of the first entry of its term
    /// (0 otherwise).
    term_start: AtomicU64,
    /// This member is the only voter and no voter is being added: it
    /// leads for as long as that holds (reads need no ReadIndex round).
    lone_voter: std::sync::atomic::AtomicBool,
}

impl Stats {
    fn new(n: usize) -> Stats {
        Stats {
            revs: (0..n).map(|_| AtomicI64::new(1)).collect(),
            sizes: (0..n).map(|_| AtomicU64::new(0)).collect(),
            applied: (0..n).map(|_| AtomicU64::new(0)).collect(),
            keys: (0..n).map(|_| AtomicU64::new(0)).collect(),
            map_versions: (0..n).map(|_| AtomicU64::new(0)).collect(),
            dirty: (0..n).map(|_| AtomicU64::new(0)).collect(),
            raft_index: AtomicU64::new(0),
            term: AtomicU64::new(1),
            leader: AtomicU64::new(0),
            term_start: AtomicU64::new(0),
            lone_voter: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// What every reactor of the node shares: configuration and identity.
pub struct Shared {
    member: MemberId,
    /// The cluster's ID: computed from `--initial-cluster` for a new
    /// cluster, learned from the log by a member that joined one.
    cluster: AtomicU64,
    /// `--initial-cluster-state existing`.
    join_existing: bool,
    /// Whether this member is a learner now.
    learner: std::sync::atomic::AtomicBool,
    boot: u32,
    shards: usize,
    wal_dir: PathBuf,
    wal_options: WalOptions,
    client_addrs: Vec<SocketAddr>,
    limits: Limits,
    max_concurrent_streams: u32,
    stats: Stats,
    mesh: Mesh<Msg>,
    inboxes: Mutex<Vec<Option<Inbox<Msg>>>>,
    advertise: String,
    name: String,
    /// The shortest lease TTL, seconds (etcd's rule: 1.5 election timeouts).
    min_lease_ttl: i64,
    /// `--experimental-watch-progress-notify-interval`.
    progress_interval: Duration,
    /// `--heartbeat-interval`: one Raft tick.
    heartbeat: Duration,
    /// `--election-timeout`.
    election_timeout: Duration,
    /// etcd's request timeout: 5 s plus two election timeouts.
    request_timeout: Duration,
    /// Every initial member: ID and peer addresses (this one included).
    initial_members: Vec<(MemberId, Vec<SocketAddr>)>,
    /// Every `--initial-cluster` member's ID and peer URLs: the URLs of
    /// members whose conf changes carry none (a new cluster's), and the
    /// peers to reach before the log says who they are.
    peer_urls: Vec<(MemberId, Vec<String>)>,
    /// The members as the log has made them (conf changes on reactor 0,
    /// published attributes from shard 0). Off the request path.
    members: Mutex<members::MemberTable>,
    /// How each reactor opens its shard's store (taken at its start).
    store_setups: Mutex<Vec<Option<stores::StoreSetup>>>,
    /// The newest snapshot at start-up, for the sequencer.
    boot_snapshot: Mutex<Option<BootSnapshot>>,
    /// Page cache budget of each shard's store.
    page_cache_bytes: usize,
    /// `--snapshot-count`: applied entries between snapshots.
    snapshot_count: u64,
    /// `--learner-auto-promote`.
    learner_auto_promote: bool,
    /// This member's `--advertise-client-urls`.
    client_urls: Vec<String>,
    /// Where this member's peer transport listens (UDP).
    peer_listen: Option<SocketAddr>,
    /// `--initial-cluster-token`.
    cluster_token: String,
    /// How peer links get their certificates.
    peer_tls: crate::transport::TlsSetup,
    /// `--initial-election-tick-advance`.
    tick_advance: bool,
}

impl Shared {
    /// The cluster's ID.
    fn cluster_id(&self) -> ClusterId {
        ClusterId(self.cluster.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The member table, for reading or changing.
    fn members(&self) -> std::sync::MutexGuard<'_, members::MemberTable> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer URLs `--initial-cluster` gives a member (empty if none).
    fn initial_peer_urls(&self, id: MemberId) -> Vec<String> {
        self.peer_urls.iter().find(|(m, _)| *m == id).map(|(_, u)| u.clone()).unwrap_or_default()
    }
}

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A directory could not be made.
    #[error("cannot create {}: {source}", .path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A client URL is already in use or cannot be bound.
    #[error("listen tcp {addr}: bind: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A URL has no usable address.
    #[error("cannot resolve client URL {0}")]
    Resolve(String),
    /// A reactor thread could not be started.
    #[error("cannot start reactor threads: {0}")]
    Threads(io::Error),
}

fn boot_number() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

/// How long start-up waits for a client address that is still held, e.g.
/// by a previous corekv on the same port that is still exiting.
const BIND_WAIT: Duration = Duration::from_secs(3);

/// Checks that nobody listens on `addr`: reactors bind with SO_REUSEPORT,
/// which would otherwise share a port with another process.
fn probe(addr: SocketAddr) -> Result<(), StartError> {
    let deadline = std::time::Instant::now() + BIND_WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => return Err(StartError::Bind { addr, source }),
        }
    }
}

/// Every member of `--initial-cluster` with its ID and peer addresses.
fn initial_members(config: &Config) -> Result<Vec<(MemberId, Vec<SocketAddr>)>, StartError> {
    let ids = config.initial_member_ids();
    let mut out = Vec::new();
    for m in &config.initial_cluster {
        let id = ids.iter().find(|(n, _)| *n == m.name).map(|(_, id)| *id);
        let Some(id) = id else { return Err(StartError::Resolve(format!("member {} of --initial-cluster", m.name))) };
        let mut addrs = Vec::new();
        for u in &m.peer_urls {
            addrs.extend(u.socket_addrs().map_err(|_| StartError::Resolve(u.as_str().to_string()))?);
        }
        out.push((id, addrs));
    }
    Ok(out)
}

/// Starts the node described by `config` and runs it until the process
/// ends.
pub fn run(config: &Config) -> Result<(), StartError> {
    let n = config.cores.max(1);
    let wal_dir = config.data_dir.join("member").join("wal");
    std::fs::create_dir_all(&wal_dir).map_err(|source| StartError::DataDir { path: wal_dir.clone(), source })?;
    let mut client_addrs = Vec::new();
    for url in &config.listen_client_urls {
        let addrs = url.socket_addrs().map_err(|_| StartError::Resolve(url.as_str().to_string()))?;
        for addr in addrs {
            probe(addr)?;
            client_addrs.push(addr);
        }
    }
    if client_addrs.is_empty() {
        return Err(StartError::Resolve("(no --listen-client-urls)".to_string()));
    }
    let member_dir = config.data_dir.join("member");
    let snap_root = member_dir.join("snap");
    if let Err(e) = std::fs::create_dir_all(&snap_root) {
        fatal(&format!("cannot create {}: {e}", snap_root.display()));
    }
    let snapshot = match snapshots::newest(&snap_root) {
        Ok(s) => s,
        Err(e) => fatal(&format!("{e}; refusing to start")),
    };
    let record = match &snapshot {
        Some((_, dir, _)) => match stores::read_record(dir) {
            Ok(r) => r,
            Err(e) => fatal(&format!("{e}; refusing to start")),
        },
        None => None,
    };
    let setups = match stores::plan(&stores::store_dir(&member_dir), n, record.as_ref()) {
        Ok(s) => s,
        Err(e) => fatal(&format!("{e}; refusing to start")),
    };
    let page_cache_bytes = match config.page_cache_bytes {
        0 => default_page_cache_bytes(n),
        b => usize::try_from(b).unwrap_or(usize::MAX),
    };
    let (mesh, inboxes) = Mesh::new(n);
    let shared = Arc::new(Shared {
        store_setups: Mutex::new(setups.into_iter().map(Some).collect()),
        boot_snapshot: Mutex::new(snapshot.map(|(manifest, dir, global)| BootSnapshot {
            manifest,
            dir,
            global,
            record,
        })),
        page_cache_bytes,
        member: config.member_id(),
        cluster: AtomicU64::new(config.cluster_id().get()),
        join_existing: config.initial_cluster_state == crate::config::ClusterState::Existing,
        learner: std::sync::atomic::AtomicBool::new(false),
        snapshot_count: config.snapshot_count.max(1),
        learner_auto_promote: config.learner_auto_promote,
        boot: boot_number(),
        shards: n,
        wal_dir,
        wal_options: WalOptions { direct_io: !config.wal_buffered_io, ..WalOptions::default() },
        client_addrs,
        limits: Limits {
            max_request_bytes: config.max_request_bytes as usize,
            max_txn_ops: config.max_txn_ops as usize,
        },
        max_concurrent_streams: config.max_concurrent_streams.min(STREAMS_PER_CONN_MAX),
        stats: Stats::new(n),
        mesh,
        inboxes: Mutex::new(inboxes.into_iter().map(Some).collect()),
        advertise: config.advertise_client_urls.iter().map(|u| u.as_str().to_string()).collect::<Vec<_>>().join(","),
        name: config.name.clone(),
        min_lease_ttl: crate::lease::Lessor::min_ttl_for(config.election_timeout, config.heartbeat_interval),
        progress_interval: config.watch_progress_notify_interval,
        heartbeat: config.heartbeat_interval,
        election_timeout: config.election_timeout,
        request_timeout: Duration::from_secs(5) + 2 * config.election_timeout,
        initial_members: initial_members(config)?,
        peer_urls: {
            let ids = config.initial_member_ids();
            config
                .initial_cluster
                .iter()
                .filter_map(|m| {
                    let id = ids.iter().find(|(n, _)| *n == m.name)?.1;
                    Some((id, m.peer_urls.iter().map(|u| u.as_str().trim_end_matches('/').to_string()).collect()))
                })
                .collect()
        },
        members: Mutex::new(Default::default()),
        client_urls: config
            .advertise_client_urls
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect(),
        peer_listen: config.listen_peer_urls.iter().find_map(|u| u.socket_addrs().ok()?.into_iter().next()),
        cluster_token: config.initial_cluster_token.clone(),
        peer_tls: match &config.peer_cert {
            // Certificate files win over --peer-auto-tls, as in etcd.
            Some((cert, key)) => crate::transport::TlsSetup::Files {
                cert: cert.clone(),
                key: key.clone(),
                trusted_ca: config.peer_trusted_ca_file.clone(),
                client_cert_auth: config.peer_client_cert_auth,
            },
            None => crate::transport::TlsSetup::Auto,
        },
        tick_advance: config.initial_election_tick_advance,
    });
    crate::log_info!(
        "starting corekv",
        "name" => config.name.as_str(),
        "data-dir" => config.data_dir.display().to_string(),
        "reactors" => n,
        "member-id" => shared.member,
        "cluster-id" => shared.cluster_id()
    );
    let handles = runtime::start(n, move |id| reactor_main(id, shared.clone())).map_err(StartError::Threads)?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

async fn reactor_main(id: ReactorId, shared: Arc<Shared>) {
    let inbox = shared.inboxes.lock().ok().and_then(|mut v| v.get_mut(id.idx()).and_then(Option::take));
    let Some(inbox) = inbox else { fatal("reactor inbox missing") };
    let map = Rc::new(RangeMap::initial(shared.shards));
    let setup = shared.store_setups.lock().ok().and_then(|mut v| v.get_mut(id.idx()).and_then(Option::take));
    let Some(setup) = setup else { fatal("reactor store setup missing") };
    let (store, gen) = open_store(setup, shared.page_cache_bytes);
    let shard = Shard::new(ShardId(id.0), map.clone(), store, gen, shared.page_cache_bytes);
    let outbox = Outbox::new(shared.mesh.clone());
    let node = NodeHandle::new(id, shared.clone(), outbox, map, shard.clone());
    monoio::spawn(node.clone().dispatch(inbox));
    monoio::spawn(shard::apply_loop(shard.clone(), node.link()));
    monoio::spawn(shard::compaction_loop(shard.clone(), node.link()));
    if id == SEQUENCER {
        start_sequencer(&node, &shared);
        if shared.shards > 1 {
            monoio::spawn(balance::run(node.clone()));
        }
    }
    shard.wait_serving().await;
    let service = Rc::new(EtcdService::new(node.clone(), shared.limits));
    let limits = ServerLimits {
        max_recv_msg_bytes: shared.limits.max_request_bytes + GRPC_OVERHEAD_BYTES,
        max_concurrent_streams: shared.max_concurrent_streams,
        handshake_timeout: Some(HANDSHAKE_TIMEOUT),
        ..ServerLimits::default()
    };
    for &addr in &shared.client_addrs {
        let opts = monoio::net::ListenerOpts::new().reuse_port(true).reuse_addr(true).backlog(1024);
        let listener = match monoio::net::TcpListener::bind_with_config(addr, &opts) {
            Ok(l) => l,
            Err(e) => fatal(&format!("listen tcp {addr}: bind: {e}")),
        };
        let (service, limits) = (service.clone(), limits.clone());
        monoio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        monoio::spawn(serve_connection(stream, Some(peer), service.clone(), limits.clone()));
                    }
                    Err(e) => {
                        crate::log_warn!("accept failed", "address" => addr.to_string(), "error" => e.to_string());
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    if id == SEQUENCER {
        monoio::spawn(leases::expiry_loop(node.clone()));
        monoio::spawn(publish(node.clone()));
        announce(&shared);
    }
    std::future::pending::<()>().await;
}

/// Opens the WAL, starts Raft on what it recovered (and the peer
/// transport when there are other members), then runs the consensus loop.
/// Runs on reactor 0 before it serves.
fn start_sequencer(node: &NodeHandle, shared: &Arc<Shared>) {
    let snap_root = shared.wal_dir.parent().map_or_else(|| shared.wal_dir.join("snap"), |m| m.join("snap"));
    let snapshot = shared.boot_snapshot.lock().ok().and_then(|mut s| s.take());
    let (mut wal, recovered) = match Wal::open(&shared.wal_dir, shared.wal_options) {
        Ok(w) => w,
        Err(e) => fatal(&e.to_string()),
    };
    if let Some((file, offset)) = &recovered.truncated_tail {
        crate::log_warn!("truncated a torn write at the end of the WAL", "file" => file.display().to_string(), "offset" => *offset);
    }
    let commit = recovered.hard_state.commit;
    let hard_state = recovered.hard_state;
    crate::log_info!(
        "recovered the WAL",
        "entries" => recovered.entries.len(),
        "last-index" => recovered.entries.last().map_or(0, |e| e.index.get()),
        "commit" => commit.get()
    );
    let mut boot = Boot::from(recovered);
    let (mut snap_index, mut snap_sendable) = (0, false);
    let commit = match &snapshot {
        Some(BootSnapshot { manifest, .. }) => {
            snap_index = manifest.index;
            // A snapshot without parts is this member's checkpoint only:
            // Raft cannot send it (it asks for one with parts instead).
            snap_sendable = manifest.files.iter().any(|f| f.name.starts_with("part-"));
            boot.snapshot = Some(SnapshotMeta {
                index: RaftIndex(manifest.index),
                term: Term(manifest.term),
                membership: manifest.membership.clone(),
                data: if snap_sendable { bytes::Bytes::from(manifest.encode()) } else { bytes::Bytes::new() },
            });
            if wal.last_index().get() < manifest.index {
                // Installed from the leader and not yet followed by entries.
                if let Err(e) = wal.reset_after(RaftIndex(manifest.index)) {
                    fatal(&e.to_string());
                }
            }
            crate::log_info!("recovered from a snapshot", "snapshot-index" => manifest.index);
            commit.max(RaftIndex(manifest.index))
        }
        None => commit,
    };
    let voters: Vec<MemberId> = shared.initial_members.iter().map(|(id, _)| *id).collect();
    let config = match RaftConfig::new(shared.member, voters.clone())
        .with_etcd_timing(shared.heartbeat, shared.election_timeout)
    {
        Ok(c) => RaftConfig { logging: RaftLogging::CrateLog, join_existing: shared.join_existing, ..c },
        Err(e) => fatal(&e.to_string()),
    };
    let election_tick = config.election_tick;
    let mut core = match RaftCore::new(config, boot) {
        Ok(c) => c,
        Err(e) => fatal(&format!("raft: {e}")),
    };
    // Recovery read whole segment files (64 MiB each by default) into
    // buffers that are gone now: the allocator gives their pages back to
    // the OS instead of keeping them as slack for the life of the process.
    if let Some(release) = RELEASE_FREE_MEMORY.get() {
        release();
    }
    if shared.tick_advance && voters != [shared.member] {
        // etcd's --initial-election-tick-advance: the first election comes
        // after one tick instead of a whole timeout.
        for _ in 1..election_tick {
            core.tick();
        }
    }
    // The shards start from the snapshot, before any entry after it.
    if let Some(BootSnapshot { manifest, dir, global, record }) = snapshot {
        consensus::install_everywhere(node, manifest, dir, global, record);
    }
    // A single member starts its peer transport when a second one is added.
    let many = voters.len() > 1 || shared.join_existing || shared.members().members.len() > 1;
    let transport = if many { Some(start_transport(shared)) } else { None };
    let consensus = Consensus::new(
        core,
        transport,
        node.proposals(),
        shared.election_timeout * 3,
        snap_root,
        snap_index,
        snap_sendable,
    );
    node.set_consensus(consensus.clone());
    consensus.start(node.clone(), wal, hard_state, shared.heartbeat);
    // Entries committed before the restart are applied again first.
    node.broadcast(|| Msg::Serve(commit));
}

/// The newest snapshot found at start-up, with its `stores` record.
struct BootSnapshot {
    manifest: crate::snapshot::Manifest,
    dir: std::path::PathBuf,
    global: snapshots::Global,
    record: Option<stores::Stores>,
}

/// A quarter of the machine's memory over the reactors (at least the
/// cache's minimum).
fn default_page_cache_bytes(reactors: usize) -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    let bytes = total_kib.saturating_mul(1024) / 4 / reactors.max(1) as u64;
    usize::try_from(bytes).unwrap_or(usize::MAX).max(crate::mvcc::disk::CACHE_PAGES_MIN * crate::btree::PAGE_BYTES)
}

/// Opens a shard's store as `stores::plan` decided: a new file, or the
/// recorded file at the recorded checkpoint (writing the recorded meta
/// page first if the commit did not reach the file). Returns the store and
/// its generation.
fn open_store(setup: stores::StoreSetup, cache_bytes: usize) -> (crate::mvcc::DiskStore, u64) {
    use crate::mvcc::DiskStore;
    match setup {
        stores::StoreSetup::Fresh(path) => match DiskStore::open_path(&path, cache_bytes) {
            Ok((store, _)) => (store, 0),
            Err(e) => fatal(&format!("cannot create {}: {e}", path.display())),
        },
        stores::StoreSetup::Recorded { path, index, prepared } => {
            if !path.exists() {
                fatal(&format!("the store file {} is missing; refusing to start", path.display()));
            }
            let open = |path: &std::path::Path| match DiskStore::open_path(path, cache_bytes) {
                Ok((store, rec)) => (store, rec.applied_index),
                Err(e) => fatal(&format!("cannot open {}: {e}; refusing to start", path.display())),
            };
            let (mut store, mut applied) = open(&path);
            if applied != index {
                drop(store);
                crate::log_info!(
                    "completing a checkpoint",
                    "file" => path.display().to_string(),
                    "from-index" => applied,
                    "to-index" => index
                );
                let redo = || -> std::io::Result<()> {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                    f.write_all_at(&prepared.meta, crate::btree::PageId(prepared.meta_id).byte_offset())?;
                    f.sync_data()
                };
                if let Err(e) = redo() {
                    fatal(&format!("cannot write the meta page of {}: {e}", path.display()));
                }
                (store, applied) = open(&path);
            }
            if applied != index {
                fatal(&format!(
                    "{} opens at index {applied}, its snapshot record says {index}; refusing to start",
                    path.display()
                ));
            }
            (store, prepared.gen)
        }
    }
}

/// Returns the calling thread's free allocator memory to the OS; set by the
/// binary, which knows its global allocator.
pub static RELEASE_FREE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// A peer URL as the transport dials it: its address, and the name its
/// certificate must carry when the URL names a host rather than an IP.
fn peer_addr(id: MemberId, url: &str) -> Option<crate::transport::PeerAddr> {
    let url = crate::config::Url::parse(url).ok()?;
    let addr = url.socket_addrs().ok()?.into_iter().next()?;
    let server_name = url.host.parse::<std::net::IpAddr>().is_err().then(|| url.host.clone());
    Some(crate::transport::PeerAddr { id, addr, server_name })
}

/// Whom the transport links to: the members of the table, or before the
/// log has said who they are, `--initial-cluster`.
pub(super) fn peer_addrs(shared: &Shared) -> Vec<crate::transport::PeerAddr> {
    let table = shared.members();
    let from_table: Vec<(MemberId, Vec<String>)> =
        table.members.iter().map(|(id, m)| (*id, m.peer_urls.clone())).collect();
    drop(table);
    let list = if from_table.is_empty() { shared.peer_urls.clone() } else { from_table };
    list.iter()
        .filter(|(id, _)| *id != shared.member)
        .filter_map(|(id, urls)| urls.iter().find_map(|u| peer_addr(*id, u)))
        .collect()
}

pub(super) fn start_transport(shared: &Shared) -> crate::transport::TransportHandle {
    let Some(bind) = shared.peer_listen else { fatal("--listen-peer-urls has no usable address") };
    let peers = peer_addrs(shared);
    let identity =
        crate::transport::PeerIdentity { member_id: shared.member, cluster_token: shared.cluster_token.clone() };
    let limits = crate::transport::Limits::default();
    match crate::transport::Transport::start_with(bind, identity, shared.peer_tls.clone(), peers, limits) {
        Ok(t) => t,
        Err(e) => fatal(&format!("peer transport: {e}")),
    }
}

/// etcd's publish: this member's name and client URLs go through the log
/// (so every member lists them), retried until committed.
async fn publish(node: NodeHandle) {
    use crate::api::backend::Backend;
    let shared = node.shared_arc();
    let cmd = crate::apply::command::Command::Publish(crate::apply::command::Publish {
        member: shared.member.get(),
        name: shared.name.clone(),
        client_urls: shared.client_urls.clone(),
    });
    loop {
        match node.propose(cmd.clone()).await.result {
            Ok(_) => break,
            Err(e) => {
                crate::log_warn!("failed to publish local member to cluster through raft", "error" => e.to_string());
                monoio::time::sleep(shared.heartbeat * 10).await;
            }
        }
    }
    crate::log_info!(
        "published local member to cluster through raft",
        "local-member-id" => shared.member,
        "local-member-attributes" => format!("{{Name:{} ClientURLs:[{}]}}", shared.name, shared.advertise),
        "cluster-id" => shared.cluster_id()
    );
}

/// The start-up lines etcd operators' tooling waits for.
fn announce(shared: &Shared) {
    crate::log_info!("enabled capabilities for version", "cluster-version" => "3.5");
    crate::log_info!("ready to serve client requests");
    for addr in &shared.client_addrs {
        crate::log_info!(
            "serving client traffic insecurely; this is strongly discouraged!",
            "address" => addr.to_string()
        );
    }
}
