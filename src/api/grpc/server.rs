//! The server side: one task per TCP connection drives h2 (`accept` in a
//! loop), one local task per HTTP/2 stream runs a call.
//!
//! Memory is bounded per connection: h2 limits concurrent streams, header
//! list size and unread request bytes (the connection window); bytes this
//! module has taken from h2 but not yet handed to (or finished by) a handler
//! are charged to a per-connection budget, and a call that would exceed it
//! fails with `RESOURCE_EXHAUSTED`. A peer that breaks the protocol loses
//! its connection only.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use monoio::io::IntoPollIo;
use monoio::net::TcpStream;

use super::authority::{AuthorityFix, MAX_FRAME_PAYLOAD};
use super::codec::Decoder;
use super::flow::Framed;
use super::http1::{self, Rewind, Sniffed};
use super::status::Status;
use super::{CallContext, HttpReply, MethodKind, Service};

/// Limits of one server connection. Every buffer the transport keeps for a
/// connection is bounded by one of these.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Largest request message accepted (gRPC's max receive size). etcd's
    /// default is its 1.5 MiB request limit plus 512 KiB of overhead.
    pub max_recv_msg_bytes: usize,
    /// Most HTTP/2 streams (calls) a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Most request bytes held by the transport per connection: partial
    /// messages, and unary requests until their handler finishes. At least
    /// `max_recv_msg_bytes` is always allowed.
    pub conn_buffered_bytes_max: usize,
    /// HTTP/2 receive window per stream.
    pub stream_window_bytes: u32,
    /// HTTP/2 receive window of the whole connection: bounds request bytes
    /// received but not yet read.
    pub conn_window_bytes: u32,
    /// Largest decoded request header list (metadata) accepted.
    pub max_header_list_bytes: u32,
    /// Most response bytes h2 buffers per stream before back-pressuring.
    pub max_send_buffer_bytes: usize,
    /// Largest HTTP/1.1 request head accepted.
    pub http1_head_bytes_max: usize,
    /// Time a new connection gets to identify itself and finish the HTTP/2
    /// handshake (or its whole HTTP/1.1 exchange) before it is closed, as
    /// grpc-go's connection timeout. `None` waits forever. Needs a runtime
    /// built with `enable_timer()`.
    pub handshake_timeout: Option<Duration>,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            max_recv_msg_bytes: 1536 * 1024 + 512 * 1024,
            max_concurrent_streams: 1000,
            conn_buffered_bytes_max: 64 * 1024 * 1024,
            stream_window_bytes: 1024 * 1024,
            conn_window_bytes: 8 * 1024 * 1024,
            max_header_list_bytes: 64 * 1024,
            max_send_buffer_bytes: 1024 * 1024,
            http1_head_bytes_max: 8 * 1024,
            handshake_timeout: None,
        }
    }
}

/// Serves one accepted client connection until it closes: gRPC over
/// HTTP/2 (prior knowledge, no TLS) or a single HTTP/1.1 `GET`. Errors end
/// this connection only; nothing is returned because nobody waits for it.
pub async fn serve_connection<S: Service>(
    stream: TcpStream,
    peer: Option<SocketAddr>,
    svc: Rc<S>,
    limits: ServerLimits,
) {
    // Latency over packet count: replies are small and must not wait for
    // Nagle. Failure only costs latency.
    let _ = stream.set_nodelay(true);
    let Ok(mut io) = stream.into_poll_io() else {
        return;
    };
    let deadline = limits.handshake_timeout;
    let sniffed = within(deadline, http1::sniff(&mut io, limits.http1_head_bytes_max)).await;
    match sniffed {
        Some(Ok(Sniffed::Http2(prefix))) => {
            // Real etcd clients send `:authority` values h2 refuses.
            let io = AuthorityFix::new(Rewind::new(prefix, io), limits.max_header_list_bytes as usize);
            serve_h2(io, peer, svc, limits).await;
        }
        Some(Ok(Sniffed::Http1(head))) => {
            let exchange = http1::serve(&mut io, head, &*svc, limits.http1_head_bytes_max);
            within(deadline, exchange).await;
        }
        Some(Ok(Sniffed::Other) | Err(_)) | None => {}
    }
}

/// Runs `work` with an optional time limit; `None` if it ran out.
async fn within<F: Future>(limit: Option<Duration>, work: F) -> Option<F::Output> {
    match limit {
        None => Some(work.await),
        Some(limit) => monoio::time::timeout(limit, work).await.ok(),
    }
}

/// What every stream task of one connection shares.
struct Conn {
    peer: Option<SocketAddr>,
    limits: ServerLimits,
    /// Request bytes currently charged against `conn_buffered_bytes_max`.
    buffered_bytes: Cell<usize>,
}

async fn serve_h2<T, S>(io: T, peer: Option<SocketAddr>, svc: Rc<S>, limits: ServerLimits)
where
    T: monoio::io::poll_io::AsyncRead + monoio::io::poll_io::AsyncWrite + Unpin + 'static,
    S: Service,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.conn_window_bytes)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        // What `AuthorityFix` splits rewritten header blocks for (h2's
        // default, stated so the two cannot drift apart).
        .max_frame_size(MAX_FRAME_PAYLOAD)
        .max_send_buffer_size(limits.max_send_buffer_bytes);
    let handshake = within(limits.handshake_timeout, builder.handshake::<_, Bytes>(io)).await;
    let Some(Ok(mut connection)) = handshake else {
        return;
    };
    let conn = Rc::new(Conn { peer, limits, buffered_bytes: Cell::new(0) });
    // `accept` also drives every open stream's I/O: keep calling it until
    // the connection ends, whatever the streams are doing.
    // An error (protocol violation, I/O failure) ends the connection; h2
    // has already sent GOAWAY where it could.
    while let Some(Ok((request, respond))) = connection.accept().await {
        monoio::spawn(handle_stream(request, respond, svc.clone(), conn.clone()));
    }
}

async fn handle_stream<S: Service>(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    svc: Rc<S>,
    conn: Rc<Conn>,
) {
    let (parts, body) = request.into_parts();
    if parts.method == Method::GET && !is_grpc(&parts.headers) {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        return send_http_reply(respond, svc.http_get(target)).await;
    }
    if let Some((http_status, status)) = reject_non_grpc(&parts.method, &parts.headers) {
        return send_trailers_only(respond, http_status, &status);
    }
    let path = parts.uri.path().to_owned();
    let ctx = CallContext { peer: conn.peer, metadata: parts.headers };
    match svc.method_kind(&path) {
        MethodKind::Unary => unary_call(svc, path, body, respond, ctx, conn).await,
        MethodKind::Streaming => streaming_call(svc, path, body, respond, ctx, conn).await,
        MethodKind::Unknown => send_trailers_only(respond, 200, &unknown_method(&*svc, &path)),
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The HTTP status and gRPC status for a request that is not gRPC, as
/// grpc-go answers them.
fn reject_non_grpc(method: &Method, headers: &HeaderMap) -> Option<(u16, Status)> {
    if method != Method::POST {
        let status = Status::internal(format!("invalid gRPC request method {method:?}"));
        return Some((405, status));
    }
    if !is_grpc(headers) {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let status = Status::invalid_argument(format!("invalid gRPC request content-type {content_type:?}"));
        return Some((415, status));
    }
    None
}

/// grpc-go's `UNIMPLEMENTED` texts for a path nobody serves.
fn unknown_method<S: Service>(svc: &S, path: &str) -> Status {
    let split = path.strip_prefix('/').and_then(|p| p.rsplit_once('/'));
    match split {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            if svc.has_service(service) {
                Status::unimplemented(format!("unknown method {method} for service {service}"))
            } else {
                Status::unimplemented(format!("unknown service {service}"))
            }
        }
        _ => Status::unimplemented(format!("malformed method name: {path:?}")),
    }
}

// ------------------------------------------------------------------ unary

async fn unary_call<S: Service>(
    svc: Rc<S>,
    path: String,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    ctx: CallContext,
    conn: Rc<Conn>,
) {
    // Held until the handler is done: its request bytes stay charged.
    let mut charge = Charge::new(conn.clone());
    let request = match read_unary_request(body, &conn, &mut charge).await {
        Ok(request) => request,
        Err(status) => return send_trailers_only(respond, 200, &status),
    };
    let reply = {
        let handler = pin!(svc.unary(path, request, ctx));
        let reset = pin!(poll_fn(|cx| respond.poll_reset(cx)));
        match select(handler, reset).await {
            Either::Left((reply, _)) => reply,
            // The client cancelled or the connection died: drop the handler.
            Either::Right(_) => return,
        }
    };
    match reply {
        Ok(message) => send_unary_reply(respond, message).await,
        Err(status) => send_trailers_only(respond, 200, &status),
    }
}

/// Reads the request body of a unary call: exactly one message.
async fn read_unary_request(mut body: RecvStream, conn: &Conn, charge: &mut Charge) -> Result<Bytes, Status> {
    let mut decoder = Decoder::new(conn.limits.max_recv_msg_bytes);
    let mut request = None;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|err| Status::from_h2(&err))?;
        // Ignoring an error is fine: it only means the stream is gone,
        // which the next `data()` reports.
        let _ = body.flow_control().release_capacity(chunk.len());
        charge.set(charge.held() + chunk.len())?;
        decoder.push(chunk);
        while let Some(message) = decoder.next_message()? {
            if request.replace(message).is_some() {
                return Err(Status::internal(
                    "grpc: cardinality violation: received more than one request message for a unary RPC",
                ));
            }
        }
    }
    if !decoder.is_empty() {
        return Err(decoder.truncated_status());
    }
    request.ok_or_else(|| Status::internal("grpc: cardinality violation: received no request message for a unary RPC"))
}

async fn send_unary_reply(mut respond: SendResponse<Bytes>, message: Bytes) {
    let mut framed = match Framed::new(message) {
        Ok(framed) => framed,
        Err(status) => return send_trailers_only(respond, 200, &status),
    };
    let Ok(mut stream) = respond.send_response(grpc_response(200), false) else {
        return;
    };
    if poll_fn(|cx| framed.poll_send(&mut stream, false, cx)).await.is_ok() {
        let _ = stream.send_trailers(status_headers(&Status::ok()));
    }
}

// ------------------------------------------------------------------ streaming

async fn streaming_call<S: Service>(
    svc: Rc<S>,
    path: String,
    body: RecvStream,
    respond: SendResponse<Bytes>,
    ctx: CallContext,
    conn: Rc<Conn>,
) {
    let state = Rc::new(RefCell::new(SinkState { respond: Some(respond), stream: None, finished: false }));
    let requests = RequestStream {
        body,
        decoder: Decoder::new(conn.limits.max_recv_msg_bytes),
        charge: Charge::new(conn),
        done: false,
    };
    let responses = ResponseSink { state: state.clone() };
    let status = svc.streaming(path, requests, responses, ctx).await;
    state.borrow_mut().finish(&status);
}

/// The request messages of a streaming call, one decoded gRPC message at a
/// time. Only read messages are acknowledged to the client (flow control),
/// so a handler that stops reading stops the client sending.
pub struct RequestStream {
    body: RecvStream,
    decoder: Decoder,
    charge: Charge,
    done: bool,
}

impl RequestStream {
    /// The next request message; `None` once the client has finished
    /// sending; `Some(Err(..))` (once) when the stream broke, e.g. the client
    /// cancelled or sent an oversized message. Cancel-safe: dropping the
    /// future loses nothing, so it may be raced against other events.
    pub async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            if self.done {
                return None;
            }
            match self.decoder.next_message() {
                Ok(Some(message)) => {
                    self.charge.set_within(self.decoder.buffered_bytes());
                    return Some(Ok(message));
                }
                Ok(None) => {}
                Err(status) => return self.fail(status),
            }
            if let Err(status) = self.receive().await {
                return self.fail(status);
            }
        }
    }

    /// Moves the next DATA chunk into the decoder; at the end of the
    /// stream marks it done (or fails if a message was cut short).
    async fn receive(&mut self) -> Result<(), Status> {
        match self.body.data().await {
            Some(Ok(chunk)) => {
                // An error here means the stream is gone; `data()` says so.
                let _ = self.body.flow_control().release_capacity(chunk.len());
                self.decoder.push(chunk);
                self.charge.set(self.decoder.buffered_bytes())
            }
            Some(Err(err)) => Err(Status::from_h2(&err)),
            None if self.decoder.is_empty() => {
                self.done = true;
                Ok(())
            }
            None => Err(self.decoder.truncated_status()),
        }
    }

    fn fail(&mut self, status: Status) -> Option<Result<Bytes, Status>> {
        self.done = true;
        self.decoder = Decoder::new(0);
        self.charge.set_within(0);
        Some(Err(status))
    }
}

/// Where a streaming handler writes its response messages. Response headers
/// go out with the first message; the final status is written by the
/// transport after the handler returns.
///
/// Use a sink from one task at a time: h2 keeps one waker per stream for
/// sending, so `send` and `cancelled` must not wait in different tasks.
pub struct ResponseSink {
    state: Rc<RefCell<SinkState>>,
}

/// The sending half of a streaming call, shared by the handler's sink and
/// the transport (which writes the trailers). Borrowed only inside a single
/// poll, never across an await, so borrows cannot overlap.
struct SinkState {
    /// Until the response headers are sent.
    respond: Option<SendResponse<Bytes>>,
    /// After the response headers are sent.
    stream: Option<SendStream<Bytes>>,
    /// The handler returned; the status has been (or is being) sent.
    finished: bool,
}

impl ResponseSink {
    /// Sends one response message, waiting while the client's flow-control
    /// window is full. Fails when the call is over (client cancelled,
    /// connection closed, or the handler already returned).
    pub async fn send(&mut self, message: Bytes) -> Result<(), Status> {
        let mut framed = Framed::new(message)?;
        self.state.borrow_mut().start()?;
        poll_fn(|cx| self.state.borrow_mut().poll_send(&mut framed, cx)).await
    }

    /// Resolves when the client has cancelled the call or the connection
    /// closed; a handler that may sit idle (a server stream waiting for
    /// events) can race this against its wait.
    pub async fn cancelled(&mut self) {
        poll_fn(|cx| self.state.borrow_mut().poll_cancelled(cx)).await;
    }
}

impl SinkState {
    /// Sends the response headers if not yet sent.
    fn start(&mut self) -> Result<(), Status> {
        if self.finished {
            return Err(Status::internal("grpc: the call has already finished"));
        }
        if self.stream.is_some() {
            return Ok(());
        }
        let Some(mut respond) = self.respond.take() else {
            return Err(Status::internal("grpc: response stream lost"));
        };
        let stream = respond.send_response(grpc_response(200), false).map_err(|err| Status::from_h2(&err))?;
        self.stream = Some(stream);
        Ok(())
    }

    fn poll_send(&mut self, framed: &mut Framed, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        if self.finished {
            return Poll::Ready(Err(Status::internal("grpc: the call has already finished")));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(Status::internal("grpc: response stream lost")));
        };
        framed.poll_send(stream, false, cx).map_err(|err| Status::from_h2(&err))
    }

    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let reset = match (self.respond.as_mut(), self.stream.as_mut()) {
            (Some(respond), _) => respond.poll_reset(cx).is_ready(),
            (None, Some(stream)) => stream.poll_reset(cx).is_ready(),
            (None, None) => true,
        };
        if reset {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Ends the call with `status`: trailers after a started response, a
    /// trailers-only response otherwise.
    fn finish(&mut self, status: &Status) {
        self.finished = true;
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.send_trailers(status_headers(status));
        } else if let Some(respond) = self.respond.take() {
            send_trailers_only(respond, 200, status);
        }
    }
}

// ------------------------------------------------------------------ budget

/// Request bytes one call holds, charged to its connection's budget and
/// given back when dropped.
struct Charge {
    conn: Rc<Conn>,
    held: usize,
}

impl Charge {
    fn new(conn: Rc<Conn>) -> Charge {
        Charge { conn, held: 0 }
    }

    fn held(&self) -> usize {
        self.held
    }

    /// Changes the charge to `bytes`; fails if that would take the
    /// connection over its budget (one message's worth is always allowed).
    fn set(&mut self, bytes: usize) -> Result<(), Status> {
        let limits = &self.conn.limits;
        let max = limits.conn_buffered_bytes_max.max(limits.max_recv_msg_bytes.saturating_add(5));
        let others = self.conn.buffered_bytes.get().saturating_sub(self.held);
        if bytes > self.held && others.saturating_add(bytes) > max {
            return Err(Status::resource_exhausted(format!(
                "grpc: connection buffers full ({} request bytes held, max {max})",
                others.saturating_add(bytes)
            )));
        }
        self.set_within(bytes);
        Ok(())
    }

    /// Changes the charge without a limit check (for decreases).
    fn set_within(&mut self, bytes: usize) {
        let others = self.conn.buffered_bytes.get().saturating_sub(self.held);
        self.conn.buffered_bytes.set(others + bytes);
        self.held = bytes;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set_within(0);
    }
}

// ------------------------------------------------------------------ responses

/// Response head for a gRPC response.
fn grpc_response(http_status: u16) -> Response<()> {
    let mut response = Response::new(());
    if let Ok(code) = http::StatusCode::from_u16(http_status) {
        *response.status_mut() = code;
    }
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

fn status_headers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    status.write_headers(&mut headers);
    headers
}

/// Ends a call with a single HEADERS frame carrying the status.
fn send_trailers_only(mut respond: SendResponse<Bytes>, http_status: u16, status: &Status) {
    let mut response = grpc_response(http_status);
    status.write_headers(response.headers_mut());
    // The client may be gone; nothing to do about it.
    let _ = respond.send_response(response, true);
}

/// Answers a plain HTTP GET that arrived over HTTP/2.
async fn send_http_reply(mut respond: SendResponse<Bytes>, reply: Option<HttpReply>) {
    let reply = reply.unwrap_or_else(|| HttpReply {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from_static(b"404 page not found\n"),
    });
    let mut response = Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = HeaderValue::from_str(reply.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(http::header::CONTENT_TYPE, content_type);
    let Ok(mut stream) = respond.send_response(response, reply.body.is_empty()) else {
        return;
    };
    let mut body = reply.body;
    let _ = poll_fn(|cx| super::flow::poll_send_bytes(&mut stream, &mut body, true, cx)).await;
}
