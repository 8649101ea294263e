//! End-to-end tests of the gRPC transport: a real monoio runtime, a real
//! TCP listener, `serve_connection` with a small test service, and
//! `GrpcClient` (plus raw sockets for garbage and HTTP/1.1).

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::poll_io::{AsyncReadExt, AsyncWriteExt};
use monoio::io::IntoPollIo;
use monoio::net::{TcpListener, TcpStream};

use super::*;

const MAX_RECV_TEST_BYTES: usize = 64 * 1024;

/// Echo service: `Unary` and `Stream` echo, `Fail` returns an error,
/// `Big` answers with as many bytes as its request's 8-byte length says,
/// `Idle` reads one request and waits for the client to cancel.
#[derive(Default)]
struct TestService {
    /// How many `Idle` calls saw their client cancel.
    cancels_seen: Cell<u32>,
}

impl Service for TestService {
    fn method_kind(&self, path: &str) -> MethodKind {
        match path {
            "/test.Echo/Unary" | "/test.Echo/Fail" | "/test.Echo/Big" => MethodKind::Unary,
            "/test.Echo/Stream" | "/test.Echo/Idle" => MethodKind::Streaming,
            _ => MethodKind::Unknown,
        }
    }

    fn has_service(&self, service: &str) -> bool {
        service == "test.Echo"
    }

    fn unary(
        self: Rc<Self>,
        path: String,
        request: Bytes,
        _ctx: CallContext,
    ) -> LocalBoxFuture<'static, Result<Bytes, Status>> {
        Box::pin(async move {
            match path.as_str() {
                "/test.Echo/Fail" => Err(Status::new(Code::InvalidArgument, "bad request: caf\u{e9} 100%\r\nline two")),
                "/test.Echo/Big" => Ok(big_reply(&request)),
                _ => Ok(request),
            }
        })
    }

    fn streaming(
        self: Rc<Self>,
        path: String,
        mut requests: RequestStream,
        mut responses: ResponseSink,
        _ctx: CallContext,
    ) -> LocalBoxFuture<'static, Status> {
        Box::pin(async move {
            if path == "/test.Echo/Idle" {
                let _ = requests.next().await;
                responses.cancelled().await;
                self.cancels_seen.set(self.cancels_seen.get() + 1);
                return Status::cancelled("client went away");
            }
            while let Some(request) = requests.next().await {
                let sent = match request {
                    Ok(message) => responses.send(message).await,
                    Err(status) => return status,
                };
                if let Err(status) = sent {
                    return status;
                }
            }
            Status::ok()
        })
    }

    fn http_get(&self, target: &str) -> Option<HttpReply> {
        (target == "/health").then(|| HttpReply {
            status: 200,
            content_type: "application/json",
            body: Bytes::from_static(b"{\"health\":\"true\"}"),
        })
    }
}

fn big_reply(request: &[u8]) -> Bytes {
    let len = request.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes);
    let len = usize::try_from(len).unwrap_or(0);
    (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

fn test_limits() -> ServerLimits {
    ServerLimits {
        max_recv_msg_bytes: MAX_RECV_TEST_BYTES,
        conn_buffered_bytes_max: 100 * 1024,
        handshake_timeout: Some(Duration::from_millis(300)),
        ..ServerLimits::default()
    }
}

/// Runs `test` against a fresh server on its own monoio runtime, failing
/// after 60 s instead of hanging.
fn with_server<F, Fut>(limits: ServerLimits, test: F)
where
    F: FnOnce(SocketAddr, Rc<TestService>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut runtime =
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("test runtime builds");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let svc = Rc::new(TestService::default());
        let test = test(addr, svc.clone());
        monoio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let serve = serve_connection(stream, Some(peer), svc.clone(), limits.clone());
                monoio::spawn(serve);
            }
        });
        let outcome = monoio::time::timeout(Duration::from_secs(60), test).await;
        assert!(outcome.is_ok(), "test timed out");
    });
}

async fn connect(addr: SocketAddr) -> GrpcClient {
    GrpcClient::connect(addr).await.expect("client connects")
}

#[test]
fn unary_call_echoes_request() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let reply = client.unary("/test.Echo/Unary", Bytes::from_static(b"hello")).await;
        assert_eq!(reply, Ok(Bytes::from_static(b"hello")));
        let empty = client.unary("/test.Echo/Unary", Bytes::new()).await;
        assert_eq!(empty, Ok(Bytes::new()));
    });
}

#[test]
fn streaming_call_echoes_each_message_then_ok() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let (mut sink, mut stream) = client.streaming("/test.Echo/Stream").await.expect("open");
        for word in ["one", "two", "three"] {
            sink.send(Bytes::from(word)).await.expect("send");
            let reply = stream.message().await.expect("reply");
            assert_eq!(reply, Some(Bytes::from(word)));
        }
        sink.close().expect("half-close");
        assert_eq!(stream.message().await, Ok(None));
    });
}

#[test]
fn client_cancel_reaches_an_idle_streaming_handler() {
    with_server(test_limits(), |addr, svc| async move {
        let client = connect(addr).await;
        let (mut sink, stream) = client.streaming("/test.Echo/Idle").await.expect("open");
        sink.send(Bytes::from_static(b"watch")).await.expect("send");
        monoio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(svc.cancels_seen.get(), 0);
        drop((sink, stream));
        for _ in 0..200 {
            if svc.cancels_seen.get() == 1 {
                return;
            }
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the handler never saw the cancel");
    });
}

#[test]
fn unknown_service_and_method_are_unimplemented_like_grpc_go() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let method = client.unary("/test.Echo/Nope", Bytes::new()).await;
        assert_eq!(method, Err(Status::unimplemented("unknown method Nope for service test.Echo")));
        let service = client.unary("/etcdserverpb.X/Y", Bytes::new()).await;
        assert_eq!(service, Err(Status::unimplemented("unknown service etcdserverpb.X")));
    });
}

#[test]
fn error_status_message_survives_percent_encoding() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let reply = client.unary("/test.Echo/Fail", Bytes::from_static(b"x")).await;
        let expected = Status::new(Code::InvalidArgument, "bad request: caf\u{e9} 100%\r\nline two");
        assert_eq!(reply, Err(expected));
    });
}

#[test]
fn oversized_request_is_resource_exhausted_and_connection_survives() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let big = Bytes::from(vec![7u8; MAX_RECV_TEST_BYTES + 1]);
        let reply = client.unary("/test.Echo/Unary", big).await;
        let text =
            format!("grpc: received message larger than max ({} vs. {MAX_RECV_TEST_BYTES})", MAX_RECV_TEST_BYTES + 1);
        assert_eq!(reply, Err(Status::resource_exhausted(text)));
        let at_limit = Bytes::from(vec![9u8; MAX_RECV_TEST_BYTES]);
        let reply = client.unary("/test.Echo/Unary", at_limit.clone()).await;
        assert_eq!(reply, Ok(at_limit));
    });
}

#[test]
fn large_response_respects_flow_control() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let len: u64 = 40 * 1024 * 1024;
        let reply =
            client.unary("/test.Echo/Big", Bytes::copy_from_slice(&len.to_be_bytes())).await.expect("big reply");
        assert_eq!(reply, big_reply(&len.to_be_bytes()));
    });
}

#[test]
fn two_thousand_concurrent_unary_calls_share_one_connection() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let calls: Vec<_> = (0..2000u32)
            .map(|i| {
                let client = client.clone();
                monoio::spawn(async move {
                    let request = Bytes::from(i.to_be_bytes().to_vec());
                    (i, client.unary("/test.Echo/Unary", request).await)
                })
            })
            .collect();
        for call in calls {
            let (i, reply) = call.await;
            assert_eq!(reply, Ok(Bytes::from(i.to_be_bytes().to_vec())));
        }
    });
}

#[test]
fn connection_budget_refuses_a_call_that_would_exceed_it() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        // Each stream sends most of one 64 KiB message and stops: the server
        // holds 60 KiB per stream; two exceed the 100 KiB budget.
        let mut partial = vec![0u8, 0, 1, 0, 0];
        partial.extend(vec![1u8; 60 * 1024]);
        let partial = Bytes::from(partial);
        let (mut sink_a, _stream_a) = client.streaming("/test.Echo/Stream").await.expect("a");
        raw_send(&mut sink_a, partial.clone()).await;
        monoio::time::sleep(Duration::from_millis(100)).await;
        let (mut sink_b, mut stream_b) = client.streaming("/test.Echo/Stream").await.expect("b");
        raw_send(&mut sink_b, partial).await;
        let outcome = stream_b.message().await.map_err(|s| s.code);
        assert_eq!(outcome, Err(Code::ResourceExhausted));
        drop((sink_a, _stream_a));
        let reply = client.unary("/test.Echo/Unary", Bytes::from_static(b"ok")).await;
        assert_eq!(reply, Ok(Bytes::from_static(b"ok")));
    });
}

/// Sends bytes on a client stream without gRPC framing.
async fn raw_send(sink: &mut ClientSink, data: Bytes) {
    let mut data = data;
    let sent = std::future::poll_fn(|cx| super::flow::poll_send_bytes(&mut sink.stream, &mut data, false, cx)).await;
    assert!(sent.is_ok());
}

#[test]
fn garbage_bytes_close_that_connection_only() {
    with_server(test_limits(), |addr, _| async move {
        let client = connect(addr).await;
        let noise: &[u8] = b"\x00\x01\x02 this is not a protocol \xff\xfe\r\n\r\n";
        assert!(raw_exchange(addr, noise).await.is_empty());
        let mut bad_frames = super::http1::H2_PREFACE.to_vec();
        bad_frames.extend_from_slice(&[0xff; 64]);
        let reply = raw_exchange(addr, &bad_frames).await;
        // h2 may answer with its SETTINGS and a GOAWAY before closing.
        assert!(reply.len() < 1024);
        let still = client.unary("/test.Echo/Unary", Bytes::from_static(b"alive")).await;
        assert_eq!(still, Ok(Bytes::from_static(b"alive")));
        let fresh = connect(addr).await;
        let reply = fresh.unary("/test.Echo/Unary", Bytes::from_static(b"new")).await;
        assert_eq!(reply, Ok(Bytes::from_static(b"new")));
    });
}

#[test]
fn http1_get_is_answered_on_the_grpc_port() {
    with_server(test_limits(), |addr, _| async move {
        let health = raw_exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let health = String::from_utf8_lossy(&health).into_owned();
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(health.contains("Content-Length: 17\r\n"), "{health}");
        assert!(health.ends_with("{\"health\":\"true\"}"), "{health}");
        let missing = raw_exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        let post = raw_exchange(addr, b"POST /health HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
    });
}

#[test]
fn silent_or_stalled_connections_are_closed_after_the_handshake_timeout() {
    with_server(test_limits(), |addr, _| async move {
        let started = std::time::Instant::now();
        assert!(raw_exchange(addr, b"").await.is_empty());
        assert!(raw_exchange(addr, b"GET /health HTT").await.is_empty());
        assert!(raw_exchange(addr, &super::http1::H2_PREFACE[..10]).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(5));
        let client = connect(addr).await;
        let reply = client.unary("/test.Echo/Unary", Bytes::from_static(b"late")).await;
        assert_eq!(reply, Ok(Bytes::from_static(b"late")));
    });
}

/// Sends `request` on a fresh TCP connection and reads until the server
/// closes it (a reset counts as closed).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let tcp = TcpStream::connect_addr(addr).await.expect("connect");
    let mut io = tcp.into_poll_io().expect("poll io");
    io.write_all(request).await.expect("write request");
    let mut reply = Vec::new();
    let _ = io.read_to_end(&mut reply).await;
    reply
}

// ------------------------------------------------------------------ :authority

use super::authority::testing as h2raw;

/// The request header block of a gRPC call to `/test.Echo/Unary` whose
/// `:authority` is `authority` (an HPACK representation), in literals only.
fn raw_request_block(authority: Vec<u8>) -> Vec<u8> {
    let mut block = h2raw::indexed(3); // :method POST
    block.extend(h2raw::indexed(6)); // :scheme http
    block.extend(h2raw::literal(0x00, 4, b"", b"/test.Echo/Unary", false));
    block.extend(authority);
    block.extend(h2raw::literal(0x00, 31, b"", b"application/grpc", false));
    block.extend(h2raw::literal(0x00, 0, b"te", b"trailers", false));
    block
}

/// What the server answered on one stream.
#[derive(Default, Debug)]
struct RawAnswer {
    headers: Vec<h2raw::Fields>,
    data: Vec<u8>,
    reset: bool,
}

/// Sends `requests` (stream id, header block, DATA payload) on one raw
/// HTTP/2 connection and collects the answers until every stream has ended.
async fn raw_h2_calls(addr: SocketAddr, requests: &[(u32, Vec<u8>, Vec<u8>)]) -> Vec<RawAnswer> {
    let tcp = TcpStream::connect_addr(addr).await.expect("connect");
    let mut io = tcp.into_poll_io().expect("poll io");
    let mut out = h2raw::PREFACE.to_vec();
    out.extend(h2raw::frame(h2raw::SETTINGS, 0, 0, &[]));
    for (stream, block, data) in requests {
        out.extend(h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS, *stream, block));
        out.extend(h2raw::frame(h2raw::DATA, h2raw::END_STREAM, *stream, data));
    }
    io.write_all(&out).await.expect("write requests");
    let mut answers: Vec<RawAnswer> = requests.iter().map(|_| RawAnswer::default()).collect();
    let mut ended = vec![false; requests.len()];
    let mut decoder = h2raw::Decoder::default();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while !ended.iter().all(|&e| e) {
        let n = io.read(&mut chunk).await.expect("read answers");
        assert!(n > 0, "server closed the connection; answers so far: {answers:?}");
        received.extend_from_slice(&chunk[..n]);
        let (frames, used) = h2raw::split_frames(&received);
        received.drain(..used);
        for (kind, flags, stream, payload) in frames {
            assert_ne!(kind, 0x7, "GOAWAY: {payload:?}");
            let Some(i) = requests.iter().position(|(id, _, _)| *id == stream) else {
                continue;
            };
            match kind {
                h2raw::HEADERS => {
                    assert!(flags & h2raw::END_HEADERS != 0, "the server sent CONTINUATION frames");
                    answers[i].headers.push(decoder.decode(&payload));
                }
                h2raw::DATA => answers[i].data.extend_from_slice(&payload),
                0x3 => answers[i].reset = true,
                _ => {}
            }
            if flags & h2raw::END_STREAM != 0 && kind != 0x4 || kind == 0x3 {
                ended[i] = true;
            }
        }
    }
    answers
}

fn field<'a>(fields: &'a h2raw::Fields, name: &str) -> Option<&'a [u8]> {
    fields.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.as_slice())
}

#[test]
fn malformed_authorities_of_real_etcd_clients_are_served() {
    // What etcdctl 3.4 and etcd's Go client 3.5.0 send; h2 refuses both.
    let etcdctl = b"http://127.0.0.1:1234";
    let go_client = b"#initially=[https://example.com:2379]";
    assert!(http::uri::Authority::try_from(&etcdctl[..]).is_err());
    assert!(http::uri::Authority::try_from(&go_client[..]).is_err());
    with_server(test_limits(), |addr, _| async move {
        let message = |text: &[u8]| {
            let mut framed = vec![0, 0, 0, 0, text.len() as u8];
            framed.extend_from_slice(text);
            framed
        };
        let requests = [
            // Added to the dynamic table ...
            (1, raw_request_block(h2raw::literal(0x40, 1, b"", etcdctl, false)), message(b"one")),
            // ... and referenced from it (newest entry: index 62).
            (3, raw_request_block(h2raw::indexed(62)), message(b"two")),
            // Huffman-coded, not indexed.
            (5, raw_request_block(h2raw::literal(0x00, 1, b"", go_client, true)), message(b"three")),
            // Never indexed, with its name as a literal.
            (7, raw_request_block(h2raw::literal(0x10, 0, b":authority", go_client, false)), message(b"four")),
        ];
        let answers = raw_h2_calls(addr, &requests).await;
        for ((stream, _, data), answer) in requests.iter().zip(&answers) {
            assert!(!answer.reset, "stream {stream} was reset");
            let (head, trailers) = (&answer.headers[0], &answer.headers[answer.headers.len() - 1]);
            assert_eq!(field(head, ":status"), Some(&b"200"[..]), "stream {stream}: {answer:?}");
            assert_eq!(field(trailers, "grpc-status"), Some(&b"0"[..]), "stream {stream}: {answer:?}");
            assert_eq!(&answer.data, data, "stream {stream}");
        }
        // The connection still serves well-formed requests.
        let valid = (9, raw_request_block(h2raw::literal(0x00, 1, b"", b"127.0.0.1:1234", true)), message(b"ok"));
        let answers = raw_h2_calls(addr, &[valid]).await;
        assert_eq!(field(&answers[0].headers[0], ":status"), Some(&b"200"[..]));
    });
}

#[test]
fn h2_client_header_blocks_decode_with_our_hpack_and_pass_unchanged() {
    // h2's encoder Huffman-codes every string: every octet a header value
    // may hold must decode as h2 encoded it.
    let value: Vec<u8> = (0x20..=0x7eu8).chain([b'\t']).chain(0x80..=0xffu8).collect();
    with_server(test_limits(), move |_, _| async move {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut metadata = http::HeaderMap::new();
        let header = http::HeaderValue::from_bytes(&value).expect("header value");
        metadata.insert("x-every-octet", header);
        metadata.insert("x-token", http::HeaderValue::from_static("abc"));
        let call = monoio::spawn(async move {
            let client = connect(addr).await.with_metadata(metadata);
            for _ in 0..2 {
                let _ = client.unary("/test.Echo/Unary", Bytes::from_static(b"x")).await;
            }
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut io = tcp.into_poll_io().expect("poll io");
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 4096];
        // Until the first request's DATA frame: its header block is whole.
        while !h2raw::split_frames(&received).0.iter().any(|f| f.0 == h2raw::DATA) {
            let n = io.read(&mut chunk).await.expect("read");
            assert!(n > 0, "client closed");
            received.extend_from_slice(&chunk[..n]);
        }
        let (_, used) = h2raw::split_frames(&received);
        let received = &received[..used];
        let blocks = h2raw::header_blocks(received, 16_384);
        let fields = h2raw::Decoder::default().decode(&blocks[0].1);
        assert_eq!(field(&fields, "x-every-octet"), Some(&value[..]));
        assert_eq!(field(&fields, ":path"), Some(&b"/test.Echo/Unary"[..]));
        assert_eq!(field(&fields, ":authority"), Some(addr.to_string().as_bytes()));
        // A valid request passes the rewriter byte for byte.
        assert_eq!(h2raw::run_through(received, 1000, 4096, 64 * 1024), received);
        drop(call);
    });
}
