//! The client-facing API: etcd's gRPC services over HTTP/2.
//!
//! Owns: the protobuf messages ([`proto`]), gRPC framing over h2 on a
//! reactor ([`grpc`]), the etcd services ([`service`], [`kv`], [`election`],
//! [`lock`] and the rest) and the boundary to the node ([`backend`]).
//! Knows requests and replies; never knows pages, the WAL or Raft
//! (DESIGN §9).

pub mod backend;
pub mod election;
pub mod grpc;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod proto;
pub mod service;
pub mod watch;

pub use service::{EtcdService, CLUSTER_VERSION, SERVER_VERSION};
