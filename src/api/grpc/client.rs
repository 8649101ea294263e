//! A small gRPC client over h2 on monoio, for corekv's load generator and
//! tests. One TCP connection per [`GrpcClient`]; clones share it and their
//! calls are multiplexed as HTTP/2 streams. The connection is driven by a
//! local task spawned on the current monoio runtime.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request};
use monoio::io::IntoPollIo;
use monoio::net::TcpStream;

use super::codec::Decoder;
use super::flow::Framed;
use super::status::{Code, Status};

/// Largest response message a client accepts unless told otherwise.
const CLIENT_MAX_RECV_MSG_BYTES: usize = 64 * 1024 * 1024;
/// Streams opened before the server's SETTINGS say how many it allows.
const INITIAL_MAX_SEND_STREAMS: usize = 100;
/// HTTP/2 receive window per stream of the client.
const CLIENT_STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// HTTP/2 receive window of the client's connection.
const CLIENT_CONN_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// A gRPC client connection. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct GrpcClient {
    send: SendRequest<Bytes>,
    /// `http://ip:port`, the scheme and authority of every request.
    origin: Rc<str>,
    /// Extra request headers (metadata) sent with every call.
    metadata: Rc<HeaderMap>,
    max_recv_msg_bytes: usize,
}

impl GrpcClient {
    /// Connects to `addr` with HTTP/2 prior knowledge (no TLS) and spawns
    /// the connection's driver task on the current monoio runtime.
    pub async fn connect(addr: SocketAddr) -> io::Result<GrpcClient> {
        let tcp = TcpStream::connect_addr(addr).await?;
        tcp.set_nodelay(true)?;
        let io = tcp.into_poll_io()?;
        let (send, connection) = h2::client::Builder::new()
            // Until the server's SETTINGS arrive, open no more streams than
            // any server must allow (RFC 9113 recommends at least 100), so
            // a burst of calls at connect time is not refused.
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .initial_window_size(CLIENT_STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CLIENT_CONN_WINDOW_BYTES)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(h2_to_io)?;
        // Ends when the server closes or every clone and stream is dropped.
        monoio::spawn(async move {
            let _ = connection.await;
        });
        Ok(GrpcClient {
            send,
            origin: Rc::from(format!("http://{addr}")),
            metadata: Rc::new(HeaderMap::new()),
            max_recv_msg_bytes: CLIENT_MAX_RECV_MSG_BYTES,
        })
    }

    /// A client on the same connection that adds `metadata` to every
    /// request (e.g. etcd's `token` header).
    pub fn with_metadata(&self, metadata: HeaderMap) -> GrpcClient {
        GrpcClient { metadata: Rc::new(metadata), ..self.clone() }
    }

    /// A client on the same connection that accepts response messages up
    /// to `bytes` long.
    pub fn with_max_recv_msg_bytes(&self, bytes: usize) -> GrpcClient {
        GrpcClient { max_recv_msg_bytes: bytes, ..self.clone() }
    }

    /// Makes a unary call to `path` (e.g. `/etcdserverpb.KV/Range`) with an
    /// encoded request; returns the encoded response or the call's status.
    pub async fn unary(&self, path: &str, request: Bytes) -> Result<Bytes, Status> {
        let mut framed = Framed::new(request)?;
        let (response, mut stream) = self.open(path).await?;
        let sent = poll_fn(|cx| framed.poll_send(&mut stream, true, cx)).await;
        let mut replies = ClientStream::new(response, self.max_recv_msg_bytes);
        if let Err(err) = sent {
            // The server may have answered early (e.g. message too large)
            // and reset the rest of the request: its status explains why.
            return Err(match replies.message().await {
                Err(status) => status,
                Ok(_) => Status::from_h2(&err),
            });
        }
        let Some(reply) = replies.message().await? else {
            return Err(Status::internal("grpc: server sent no response message"));
        };
        match replies.message().await? {
            None => Ok(reply),
            Some(_) => Err(Status::internal("grpc: server sent more than one response message for a unary call")),
        }
    }

    /// Opens a streaming call to `path`. Send with the [`ClientSink`] (and
    /// close it when done); read replies and finally the status with the
    /// [`ClientStream`]. The server's response headers are not awaited,
    /// since servers may send them only with their first message.
    pub async fn streaming(&self, path: &str) -> Result<(ClientSink, ClientStream), Status> {
        let (response, stream) = self.open(path).await?;
        let replies = ClientStream::new(response, self.max_recv_msg_bytes);
        Ok((ClientSink { stream }, replies))
    }

    /// Waits for a stream slot and sends the request headers.
    async fn open(&self, path: &str) -> Result<(ResponseFuture, SendStream<Bytes>), Status> {
        let mut send = self.send.clone().ready().await.map_err(|err| Status::from_h2(&err))?;
        let request = self.request_head(path)?;
        send.send_request(request, false).map_err(|err| Status::from_h2(&err))
    }

    fn request_head(&self, path: &str) -> Result<Request<()>, Status> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.origin))
            .body(())
            .map_err(|err| Status::invalid_argument(format!("bad method path {path:?}: {err}")))?;
        let headers = request.headers_mut();
        for (name, value) in self.metadata.iter() {
            headers.append(name, value.clone());
        }
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        Ok(request)
    }
}

fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        if let Some(err) = err.into_io() {
            return err;
        }
        return io::Error::other("h2 I/O error");
    }
    io::Error::other(err)
}

/// The sending half of a client streaming call.
pub struct ClientSink {
    pub(super) stream: SendStream<Bytes>,
}

impl ClientSink {
    /// Sends one request message, waiting for flow-control window. An error
    /// usually means the server ended the call: read its status from the
    /// [`ClientStream`].
    pub async fn send(&mut self, message: Bytes) -> Result<(), Status> {
        let mut framed = Framed::new(message)?;
        poll_fn(|cx| framed.poll_send(&mut self.stream, false, cx)).await.map_err(|err| Status::from_h2(&err))
    }

    /// Tells the server no more requests follow (half-closes the stream).
    pub fn close(&mut self) -> Result<(), Status> {
        self.stream.send_data(Bytes::new(), true).map_err(|err| Status::from_h2(&err))
    }
}

/// The receiving half of a client call: response messages, then the status.
pub struct ClientStream {
    state: RecvState,
    decoder: Decoder,
}

enum RecvState {
    /// Waiting for the response headers.
    Head(ResponseFuture),
    /// Reading response messages.
    Body(RecvStream),
    /// The call ended with this status.
    Done(Status),
}

impl ClientStream {
    fn new(response: ResponseFuture, max_recv_msg_bytes: usize) -> ClientStream {
        ClientStream { state: RecvState::Head(response), decoder: Decoder::new(max_recv_msg_bytes) }
    }

    /// The next response message; `Ok(None)` once the call ended with
    /// status OK; `Err(status)` when it ended otherwise (repeated on later
    /// calls).
    pub async fn message(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            let next = match &mut self.state {
                RecvState::Done(status) if status.code == Code::Ok => return Ok(None),
                RecvState::Done(status) => return Err(status.clone()),
                RecvState::Head(response) => read_head(response).await,
                RecvState::Body(body) => match self.decoder.next_message() {
                    Ok(Some(message)) => return Ok(Some(message)),
                    Ok(None) => read_body(body, &mut self.decoder).await,
                    Err(status) => Some(RecvState::Done(status)),
                },
            };
            if let Some(next) = next {
                self.state = next;
            }
        }
    }
}

/// Awaits the response headers; returns the next state.
async fn read_head(response: &mut ResponseFuture) -> Option<RecvState> {
    let response = match response.await {
        Ok(response) => response,
        Err(err) => return Some(RecvState::Done(Status::from_h2(&err))),
    };
    let (parts, body) = response.into_parts();
    // Trailers-only: the status is in the headers and the stream is over.
    if let Some(status) = Status::from_headers(&parts.headers) {
        return Some(RecvState::Done(status));
    }
    if parts.status != http::StatusCode::OK {
        return Some(RecvState::Done(status_from_http(parts.status)));
    }
    Some(RecvState::Body(body))
}

/// Moves the next DATA chunk into `decoder`, or at the end reads the
/// trailers and returns the final state.
async fn read_body(body: &mut RecvStream, decoder: &mut Decoder) -> Option<RecvState> {
    match body.data().await {
        Some(Ok(chunk)) => {
            let _ = body.flow_control().release_capacity(chunk.len());
            decoder.push(chunk);
            None
        }
        Some(Err(err)) => Some(RecvState::Done(Status::from_h2(&err))),
        None if !decoder.is_empty() => Some(RecvState::Done(decoder.truncated_status())),
        None => Some(RecvState::Done(match body.trailers().await {
            Ok(Some(trailers)) => {
                Status::from_headers(&trailers).unwrap_or_else(|| Status::internal("grpc: server sent no grpc-status"))
            }
            Ok(None) => Status::internal("grpc: server sent no trailers"),
            Err(err) => Status::from_h2(&err),
        })),
    }
}

/// gRPC's mapping of an HTTP status (without grpc-status) to a code.
fn status_from_http(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("unexpected HTTP status code {status}"))
}
