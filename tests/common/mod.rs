//! Shared helpers of the integration tests: real server processes (the
//! `corekv` binary, or etcd for the differential test) with their own data
//! directory and port, an `etcd-client` connection, and a small raw gRPC
//! client over h2 for requests `etcd-client` cannot make (malformed bodies,
//! unknown methods) and for comparing whole protobuf responses.
//!
//! Every server gets a fresh directory under `CARGO_TARGET_TMPDIR` (ext4
//! under target/, which the WAL's O_DIRECT needs) and a free port on a
//! loopback address of its own, so tests run in parallel without sharing
//! anything. A server is SIGKILLed when its guard drops; its directory is
//! removed then unless the test is failing (it stays for debugging, with
//! each start's stderr in `stderr.<n>.log`).
#![allow(dead_code)]

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use corekv::api::proto::etcdserverpb as pb;

pub mod workload;

/// How long a server may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request deadline of the clients: a hung server fails the test
/// instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The line corekv (and etcd with its default logger) logs once it accepts
/// clients.
const READY_LINE: &str = "ready to serve client requests";
/// What etcd 3.4 logs instead with `--logger zap`, after it has a leader.
const ETCD_ZAP_READY_LINE: &str = "serving client traffic insecurely";

/// gRPC status codes used by the tests.
pub mod code {
    pub const OK: i32 = 0;
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// etcd's error texts.
pub mod msg {
    pub const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
    pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
    pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
    pub const TOO_LARGE: &str = "etcdserver: request is too large";
    pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
    pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
    pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
}

// ------------------------------------------------------------ directories

/// A fresh, empty directory for one test under `CARGO_TARGET_TMPDIR`.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corekv-it").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A TCP address nobody listens on: a port the kernel hands out on a
/// loopback address chosen per call, so parallel tests (and parallel test
/// binaries) rarely even share an address.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mix = (std::process::id().wrapping_mul(2_654_435_761)) ^ n.wrapping_mul(40_503);
    let host = Ipv4Addr::new(127, 0, (mix >> 8) as u8 % 200 + 1, (mix % 250) as u8 + 2);
    let listener = TcpListener::bind((host, 0)).unwrap_or_else(|e| panic!("cannot bind {host}:0: {e}"));
    listener.local_addr().expect("local_addr")
}

// ---------------------------------------------------------------- servers

/// Which program a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The `corekv` binary of this package.
    Corekv,
    /// `/usr/bin/etcd`, the reference.
    Etcd,
}

/// Why a server did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running server process; SIGKILLed on drop.
pub struct Server {
    pub kind: Kind,
    /// The test's directory: holds `data/` and, for etcd, the logs.
    pub dir: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The client address.
    pub addr: SocketAddr,
    peer_addr: SocketAddr,
    flags: Vec<String>,
    child: Option<Child>,
    starts: u32,
    /// The stderr file of the latest start.
    pub log: PathBuf,
}

impl Server {
    /// The server under test: `corekv --cores 2` with `flags` (etcd's own
    /// flags), or etcd itself with the same flags when
    /// `COREKV_IT_REFERENCE=etcd` is set, which checks that a test's
    /// expectations are etcd's.
    pub fn under_test(name: &str, flags: &[&str]) -> Server {
        if std::env::var("COREKV_IT_REFERENCE").as_deref() == Ok("etcd") {
            return Server::etcd(name, flags);
        }
        let mut all = vec!["--cores", "2"];
        all.extend_from_slice(flags);
        Server::corekv(name, &all)
    }

    /// Starts `corekv` with `flags` on a fresh directory and waits until it
    /// serves clients.
    pub fn corekv(name: &str, flags: &[&str]) -> Server {
        Server::start(Kind::Corekv, name, flags)
    }

    /// Starts etcd (Debian's etcd-server) as a one-member cluster.
    pub fn etcd(name: &str, flags: &[&str]) -> Server {
        Server::start(Kind::Etcd, name, flags)
    }

    /// Starts a server of `kind` on a fresh directory and waits until it
    /// is ready.
    pub fn start(kind: Kind, name: &str, flags: &[&str]) -> Server {
        let mut s = Server::prepare(kind, name, flags);
        if let Err(f) = s.launch() {
            panic!("{kind:?} did not start ({}):\n{}", f.status, f.stderr);
        }
        s
    }

    /// A server that is configured but not started yet.
    pub fn prepare(kind: Kind, name: &str, flags: &[&str]) -> Server {
        let dir = test_dir(name);
        let data_dir = dir.join("data");
        Server {
            kind,
            log: dir.join("stderr.0.log"),
            dir,
            data_dir,
            addr: free_addr(),
            peer_addr: free_addr(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            child: None,
            starts: 0,
        }
    }

    /// The peer address (UDP for corekv's QUIC transport).
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The flags it starts with.
    pub fn flags(&self) -> Vec<String> {
        self.flags.clone()
    }

    /// Replaces the flags of a server that is not running.
    pub fn set_flags(&mut self, flags: &[&str]) {
        self.flags = flags.iter().map(|s| s.to_string()).collect();
    }

    /// Whether the process was started and not killed.
    pub fn is_running_now(&self) -> bool {
        self.child.is_some()
    }

    /// `http://ip:port` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn command(&self) -> Command {
        let client = self.endpoint();
        match self.kind {
            Kind::Corekv => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_corekv"));
                c.arg("--data-dir").arg(&self.data_dir);
                c.args(["--listen-client-urls", &client, "--advertise-client-urls", &client]);
                c.args(&self.flags);
                c
            }
            Kind::Etcd => {
                let peer = format!("http://{}", self.peer_addr);
                let mut c = Command::new(etcd_binary());
                c.arg("--data-dir").arg(&self.data_dir);
                c.args(["--name", "it", "--logger", "zap", "--log-outputs", "stderr"]);
                c.args(["--listen-client-urls", &client, "--advertise-client-urls", &client]);
                c.args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer]);
                c.args(["--initial-cluster", &format!("it={peer}"), "--initial-cluster-state", "new"]);
                c.args(&self.flags);
                c
            }
        }
    }

    /// Starts the process on the existing directory and waits for its ready
    /// line; reports how it exited if it stops first.
    pub fn launch(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "server already running");
        // corekv keeps its stderr in its data dir; etcd wants that
        // directory to itself, so its logs stay next to it.
        let log_dir = match self.kind {
            Kind::Corekv => self.data_dir.clone(),
            Kind::Etcd => self.dir.clone(),
        };
        std::fs::create_dir_all(&log_dir).expect("create log dir");
        self.log = log_dir.join(format!("stderr.{}.log", self.starts));
        self.starts += 1;
        let stderr = std::fs::File::create(&self.log).expect("create stderr log");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.kind));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.stderr();
            if log.contains(READY_LINE) || (self.kind == Kind::Etcd && log.contains(ETCD_ZAP_READY_LINE)) {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(StartFailure { status, stderr: self.stderr() });
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("{:?} printed no ready line within {READY_TIMEOUT:?}:\n{}", self.kind, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process on the existing directory, expecting it to refuse:
    /// returns its exit status and stderr once it exits.
    pub fn launch_expecting_failure(&mut self) -> StartFailure {
        match self.launch() {
            Ok(()) => {
                let log = self.stderr();
                self.kill();
                panic!("{:?} started but was expected to refuse:\n{log}", self.kind);
            }
            Err(f) => f,
        }
    }

    /// The stderr of the latest start so far.
    pub fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGKILLs the process and reaps it. No-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the process and starts it again on the same data directory
    /// and address, waiting until it serves.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(f) = self.launch() {
            panic!("{:?} did not restart ({}):\n{}", self.kind, f.status, f.stderr);
        }
    }

    /// An etcd-client connection with request deadlines.
    pub async fn client(&self) -> etcd_client::Client {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(REQUEST_TIMEOUT);
        etcd_client::Client::connect([self.endpoint()], Some(opts))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.endpoint()))
    }

    /// A raw gRPC connection.
    pub async fn grpc(&self) -> Grpc {
        Grpc::connect(self.addr).await.unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.addr))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("kept {} for debugging (stderr in {})", self.dir.display(), self.log.display());
        }
    }
}

/// The etcd binary; fails the test with install instructions when absent.
pub fn etcd_binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    assert!(
        path.exists(),
        "/usr/bin/etcd is missing: the differential tests need etcd 3.4; install Debian's etcd-server \
         package (apt-get install etcd-server)"
    );
    path
}

// ---------------------------------------------------------- etcd-client

/// The gRPC code and message of an `etcd-client` error; panics on errors
/// that are not a gRPC status (transport failures).
#[track_caller]
pub fn status_of(e: &etcd_client::Error) -> (i32, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (i32::from(s.code()), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// An etcdctl v3 command against `endpoints`: `COREKV_ETCDCTL`, or Debian's
/// etcdctl (etcd-client) on PATH.
pub fn etcdctl_command(endpoints: &str) -> Command {
    let bin = std::env::var("COREKV_ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    let mut c = Command::new(bin);
    c.env("ETCDCTL_API", "3").args(["--endpoints", endpoints, "--dial-timeout=5s", "--command-timeout=20s"]);
    c
}

/// Runs etcdctl `args` against `endpoints`: its stdout, or a panic with
/// its output.
#[track_caller]
pub fn etcdctl(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl_command(endpoints)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("etcdctl did not run ({e}); install Debian's etcd-client"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "etcdctl {args:?}: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The error of `r` as a (code, message) pair; panics if `r` succeeded.
#[track_caller]
pub fn expect_status<T: fmt::Debug>(r: Result<T, etcd_client::Error>) -> (i32, String) {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => status_of(&e),
    }
}

/// The current revision, from a Range's header.
pub async fn revision(c: &mut etcd_client::Client) -> i64 {
    let r = c.get("\0", None).await.expect("get for revision");
    r.header().expect("header").revision()
}

// ------------------------------------------------------------------ rng

/// A small seeded generator (SplitMix64): a failing seed replays exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from `COREKV_IT_SEED`, or `default`; printed so a failure
    /// can be replayed.
    pub fn from_env(default: u64) -> (Rng, u64) {
        let seed = std::env::var("COREKV_IT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
        eprintln!("seed {seed} (set COREKV_IT_SEED to replay another)");
        (Rng(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ------------------------------------------------------------- raw gRPC

/// A gRPC status as a client sees it: the code and the decoded
/// `grpc-message`, or a transport failure mapped as grpc-go maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: i32,
    pub message: String,
}

impl Status {
    fn transport(e: impl fmt::Display) -> Status {
        Status { code: code::UNAVAILABLE, message: format!("transport: {e}") }
    }

    fn from_h2(e: h2::Error) -> Status {
        match e.reason() {
            Some(r) => {
                let code = match r {
                    h2::Reason::REFUSED_STREAM => code::UNAVAILABLE,
                    h2::Reason::CANCEL => code::CANCELLED,
                    h2::Reason::ENHANCE_YOUR_CALM => code::RESOURCE_EXHAUSTED,
                    h2::Reason::INADEQUATE_SECURITY => code::PERMISSION_DENIED,
                    _ => code::INTERNAL,
                };
                Status { code, message: format!("stream terminated by RST_STREAM or GOAWAY: {r:?}") }
            }
            None => Status::transport(e),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {} {:?}", self.code, self.message)
    }
}

/// A gRPC client connection over h2 (HTTP/2 with prior knowledge).
#[derive(Clone)]
pub struct Grpc {
    send: h2::client::SendRequest<Bytes>,
    origin: String,
}

/// Largest response a raw client accepts.
const RAW_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

impl Grpc {
    /// Connects and spawns the connection driver on the current tokio
    /// runtime.
    pub async fn connect(addr: SocketAddr) -> Result<Grpc, Status> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(Status::transport)?
            .map_err(Status::transport)?;
        tcp.set_nodelay(true).map_err(Status::transport)?;
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(8 * 1024 * 1024)
            .initial_connection_window_size(32 * 1024 * 1024)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(Status::from_h2)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Grpc { send, origin: format!("http://{addr}") })
    }

    /// One unary call with an already encoded request body.
    pub async fn call_raw(&self, path: &str, body: Bytes) -> Result<Bytes, Status> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.call_inner(path, body))
            .await
            .unwrap_or_else(|_| Err(Status { code: -1, message: format!("{path}: no answer in {REQUEST_TIMEOUT:?}") }))
    }

    async fn call_inner(&self, path: &str, body: Bytes) -> Result<Bytes, Status> {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}{path}", self.origin))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut send = self.send.clone().ready().await.map_err(Status::from_h2)?;
        let (response, mut stream) = send.send_request(request, false).map_err(Status::from_h2)?;
        let mut framed = BytesMut::with_capacity(5 + body.len());
        framed.put_u8(0);
        framed.put_u32(body.len() as u32);
        framed.put_slice(&body);
        // A server may answer (and close the stream) before the body is
        // sent, e.g. for an unknown method: then sending fails with
        // "inactive stream", and its answer is what counts.
        let sent = stream.send_data(framed.freeze(), true).map_err(Status::from_h2);
        let response = match response.await {
            Ok(r) => r,
            Err(e) => return Err(sent.err().unwrap_or_else(|| Status::from_h2(e))),
        };
        let (parts, mut recv) = response.into_parts();
        if let Some(status) = grpc_status(&parts.headers) {
            // Trailers-only response.
            return Err(status);
        }
        if parts.status != http::StatusCode::OK {
            return Err(Status { code: code::UNKNOWN, message: format!("HTTP status {}", parts.status) });
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(Status::from_h2)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
            if buf.len() > RAW_MAX_RESPONSE_BYTES {
                return Err(Status { code: code::RESOURCE_EXHAUSTED, message: "response too large".into() });
            }
        }
        let trailers = recv.trailers().await.map_err(Status::from_h2)?.unwrap_or_default();
        match grpc_status(&trailers) {
            Some(s) => return Err(s),
            None if trailers.get("grpc-status").is_none() => {
                return Err(Status { code: code::INTERNAL, message: "no grpc-status trailer".into() })
            }
            None => {}
        }
        let mut data = buf.freeze();
        if data.len() < 5 {
            return Err(Status { code: code::INTERNAL, message: format!("short gRPC frame: {} bytes", data.len()) });
        }
        let flag = data.get_u8();
        let len = data.get_u32() as usize;
        assert_eq!(flag, 0, "compressed response");
        assert_eq!(len, data.len(), "one gRPC message per unary response");
        Ok(data)
    }

    /// One unary call with a protobuf request and response.
    pub async fn unary<Q: prost::Message, R: prost::Message + Default>(
        &self,
        path: &str,
        req: &Q,
    ) -> Result<R, Status> {
        let body = self.call_raw(path, Bytes::from(req.encode_to_vec())).await?;
        R::decode(body).map_err(|e| Status { code: code::INTERNAL, message: format!("cannot decode response: {e}") })
    }

    pub async fn range(&self, r: &pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        self.unary("/etcdserverpb.KV/Range", r).await
    }

    pub async fn put(&self, r: &pb::PutRequest) -> Result<pb::PutResponse, Status> {
        self.unary("/etcdserverpb.KV/Put", r).await
    }

    pub async fn delete_range(&self, r: &pb::DeleteRangeRequest) -> Result<pb::DeleteRangeResponse, Status> {
        self.unary("/etcdserverpb.KV/DeleteRange", r).await
    }

    pub async fn txn(&self, r: &pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        self.unary("/etcdserverpb.KV/Txn", r).await
    }

    pub async fn compact(&self, r: &pb::CompactionRequest) -> Result<pb::CompactionResponse, Status> {
        self.unary("/etcdserverpb.KV/Compact", r).await
    }

    /// The current revision.
    pub async fn revision(&self) -> i64 {
        let r = self.range(&pb::RangeRequest { key: Bytes::from_static(b"\0"), ..Default::default() }).await;
        r.unwrap_or_else(|e| panic!("range for revision: {e}")).header.expect("header").revision
    }
}

/// One bidirectional (or server-streaming) gRPC call over a raw
/// connection: [`RawStream::send`] writes request messages,
/// [`RawStream::recv`] reads response messages. Used where `etcd-client`
/// cannot express a request or hides a response field (a Watch
/// response's `fragment`, a LeaseKeepAlive's TTL 0).
pub struct RawStream {
    path: String,
    send: h2::SendStream<Bytes>,
    response: Option<h2::client::ResponseFuture>,
    recv: Option<h2::RecvStream>,
    buf: BytesMut,
    /// The end of the call once seen: `Ok` after an OK status.
    end: Option<Result<(), Status>>,
}

impl Grpc {
    /// Opens a streaming call to `path` (e.g. `/etcdserverpb.Watch/Watch`).
    pub async fn open_stream(&self, path: &str) -> Result<RawStream, Status> {
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}{path}", self.origin))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let mut send = self.send.clone().ready().await.map_err(Status::from_h2)?;
        let (response, stream) = send.send_request(request, false).map_err(Status::from_h2)?;
        Ok(RawStream {
            path: path.to_string(),
            send: stream,
            response: Some(response),
            recv: None,
            buf: BytesMut::new(),
            end: None,
        })
    }
}

impl RawStream {
    /// Sends one request message (h2 buffers it until the window allows).
    pub fn send<M: prost::Message>(&mut self, m: &M) -> Result<(), Status> {
        let body = m.encode_to_vec();
        let mut framed = BytesMut::with_capacity(5 + body.len());
        framed.put_u8(0);
        framed.put_u32(body.len() as u32);
        framed.put_slice(&body);
        self.send.send_data(framed.freeze(), false).map_err(Status::from_h2)
    }

    /// Half-closes the request side.
    pub fn close_send(&mut self) -> Result<(), Status> {
        self.send.send_data(Bytes::new(), true).map_err(Status::from_h2)
    }

    /// The next response message; `Ok(None)` once the call ended with an
    /// OK status, `Err` with its status otherwise. Waits without a
    /// deadline: callers bound it (see [`RawStream::recv_within`]).
    pub async fn recv<R: prost::Message + Default>(&mut self) -> Result<Option<R>, Status> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if self.buf.len() >= 5 + len {
                    assert_eq!(self.buf[0], 0, "compressed message on {}", self.path);
                    let mut frame = self.buf.split_to(5 + len);
                    frame.advance(5);
                    return R::decode(frame.freeze()).map(Some).map_err(|e| Status {
                        code: code::INTERNAL,
                        message: format!("cannot decode a message of {}: {e}", self.path),
                    });
                }
            }
            if let Some(end) = &self.end {
                return end.clone().map(|()| None);
            }
            if self.recv.is_none() {
                let response = self.response.take().expect("response future");
                let response = match response.await {
                    Ok(r) => r,
                    Err(e) => {
                        self.end = Some(Err(Status::from_h2(e)));
                        continue;
                    }
                };
                let (parts, recv) = response.into_parts();
                if let Some(status) = grpc_status(&parts.headers) {
                    self.end = Some(Err(status));
                    continue;
                }
                if parts.headers.get("grpc-status").is_some() {
                    self.end = Some(Ok(()));
                    continue;
                }
                if parts.status != http::StatusCode::OK {
                    self.end =
                        Some(Err(Status { code: code::UNKNOWN, message: format!("HTTP status {}", parts.status) }));
                    continue;
                }
                self.recv = Some(recv);
            }
            let recv = self.recv.as_mut().expect("recv stream");
            match recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                    if self.buf.len() > RAW_MAX_RESPONSE_BYTES {
                        self.end =
                            Some(Err(Status { code: code::RESOURCE_EXHAUSTED, message: "message too large".into() }));
                    }
                }
                Some(Err(e)) => self.end = Some(Err(Status::from_h2(e))),
                None => {
                    let end = match recv.trailers().await {
                        Err(e) => Err(Status::from_h2(e)),
                        Ok(trailers) => {
                            let trailers = trailers.unwrap_or_default();
                            match grpc_status(&trailers) {
                                Some(s) => Err(s),
                                None if trailers.get("grpc-status").is_none() => {
                                    Err(Status { code: code::INTERNAL, message: "no grpc-status trailer".into() })
                                }
                                None => Ok(()),
                            }
                        }
                    };
                    self.end = Some(end);
                }
            }
        }
    }

    /// [`RawStream::recv`] bounded by `limit`: a missing message fails the
    /// test instead of hanging it.
    pub fn recv_within<R: prost::Message + Default>(
        &mut self,
        limit: Duration,
    ) -> impl std::future::Future<Output = Result<Option<R>, Status>> + '_ {
        let path = self.path.clone();
        async move {
            match tokio::time::timeout(limit, self.recv()).await {
                Ok(r) => r,
                Err(_) => panic!("{path}: no message within {limit:?}"),
            }
        }
    }
}

/// The status in `grpc-status`/`grpc-message`, if not OK.
fn grpc_status(headers: &http::HeaderMap) -> Option<Status> {
    let code: i32 = headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    if code == code::OK {
        return None;
    }
    let message = headers.get("grpc-message").map(|v| percent_decode(v.as_bytes())).unwrap_or_default();
    Some(Status { code, message })
}

fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&v[i + 1..i + 3]).unwrap_or("zz"), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------ protobuf builders

pub fn b(s: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref())
}

/// A Range of one key.
pub fn get(key: impl AsRef<[u8]>) -> pb::RangeRequest {
    pb::RangeRequest { key: b(key), ..Default::default() }
}

/// A Range over every key.
pub fn get_all() -> pb::RangeRequest {
    pb::RangeRequest { key: b("\0"), range_end: b("\0"), ..Default::default() }
}

pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> pb::PutRequest {
    pb::PutRequest { key: b(key), value: b(value), ..Default::default() }
}

pub fn delete(key: impl AsRef<[u8]>, range_end: impl AsRef<[u8]>) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest { key: b(key), range_end: b(range_end), ..Default::default() }
}

/// The end of the range of keys with prefix `p` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

pub fn op_range(r: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(r)) }
}

pub fn op_put(p: pb::PutRequest) -> pb::RequestOp {
    pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(p)) }
}

pub fn op_delete(d: pb::DeleteRangeRequest) -> pb::RequestOp {
    pb::RequestOp { request: Some(pb::request_op::Request::RequestDeleteRange(d)) }
}

pub fn op_txn(t: pb::TxnRequest) -> pb::RequestOp {
    pb::RequestOp { request: Some(pb::request_op::Request::RequestTxn(t)) }
}
