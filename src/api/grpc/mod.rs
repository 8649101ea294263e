//! corekv's own gRPC transport: HTTP/2 (the `h2` crate) on a monoio
//! reactor, with gRPC message framing, status trailers, flow-controlled
//! sending and bounded buffering, plus plain HTTP/1.1 `GET` on the same port
//! (`/health`, `/version`, `/metrics`).
//!
//! Owns: connection handling (`serve_connection`, which also repairs the
//! malformed `:authority` values real etcd clients send, see `authority`),
//! the [`Service`] trait the etcd services implement, and a small client
//! ([`GrpcClient`]) for the load generator and tests. Never touches:
//! protobuf (handlers get and return encoded message bytes), the store, Raft,
//! or other reactors. Everything is single-threaded (`Rc`, no `Send` bounds);
//! one server per reactor thread.

mod authority;
mod client;
mod codec;
mod flow;
mod http1;
mod server;
mod status;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

pub use client::{ClientSink, ClientStream, GrpcClient};
pub use codec::{encode, Decoder};
pub use server::{serve_connection, RequestStream, ResponseSink, ServerLimits};
pub use status::{Code, Status};

/// A boxed future that need not be `Send`.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// How a method exchanges messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// One request message, one response message.
    Unary,
    /// Bidirectional or server streaming: the handler reads requests from a
    /// [`RequestStream`] and writes responses to a [`ResponseSink`].
    Streaming,
    /// No such method; the caller gets `UNIMPLEMENTED`.
    Unknown,
}

/// What a handler knows about the call besides its messages.
#[derive(Debug)]
pub struct CallContext {
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    /// The request headers (gRPC metadata), e.g. `token` for etcd auth.
    pub metadata: http::HeaderMap,
}

/// The answer to a plain HTTP `GET`.
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// HTTP status code, e.g. 200 or 503.
    pub status: u16,
    /// Value of the `Content-Type` header.
    pub content_type: &'static str,
    /// The response body.
    pub body: Bytes,
}

/// The gRPC services of one server, dispatched by method path
/// (`/etcdserverpb.KV/Range`). Messages are passed encoded; decoding them is
/// the implementation's business.
pub trait Service: 'static {
    /// How the method at `path` exchanges messages, or `Unknown`.
    fn method_kind(&self, path: &str) -> MethodKind;

    /// `true` when `service` (e.g. `etcdserverpb.KV`) is served, so an
    /// unknown method of a known service is reported as such, like grpc-go.
    /// The default says no service is known, which only changes the text of
    /// the `UNIMPLEMENTED` status.
    fn has_service(&self, service: &str) -> bool {
        let _ = service;
        false
    }

    /// Handles a unary call: one encoded request in, one encoded response
    /// or an error status out. The future is dropped if the client cancels.
    fn unary(
        self: Rc<Self>,
        path: String,
        request: Bytes,
        ctx: CallContext,
    ) -> LocalBoxFuture<'static, Result<Bytes, Status>>;

    /// Handles a streaming call; the returned status is sent in trailers
    /// after everything written to `responses`.
    fn streaming(
        self: Rc<Self>,
        path: String,
        requests: RequestStream,
        responses: ResponseSink,
        ctx: CallContext,
    ) -> LocalBoxFuture<'static, Status>;

    /// Answers a plain HTTP `GET` (HTTP/1.1, or HTTP/2 without gRPC).
    /// `target` is the request target as sent, query string included
    /// (`/health?serializable=true`). `None` means 404.
    fn http_get(&self, target: &str) -> Option<HttpReply>;
}
