//! Bad input from clients: every refused request gets etcd's gRPC code and
//! error text, writes nothing (the revision and the keys are unchanged
//! afterwards) and the server keeps serving. Then abuse below gRPC:
//! malformed protobuf, unknown methods, 10,000 streams on one connection,
//! garbage bytes and garbage HTTP/2 frames.
//!
//! The servers run with `--max-request-bytes 1024 --max-txn-ops 8`.
//! `COREKV_IT_REFERENCE=etcd` runs the same tests against etcd.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{code, expect_status, msg, op_put, op_txn, put, Grpc, Rng, Server};
use corekv::api::proto::etcdserverpb as pb;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FLAGS: &[&str] = &["--max-request-bytes", "1024", "--max-txn-ops", "8"];
/// How long a misbehaving connection may stay open before the server must
/// have closed it. A bound against hanging, not a speed requirement.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

/// A server holding one key, `base`, at revision 2.
async fn start(name: &str) -> (Server, Client) {
    let s = Server::under_test(name, FLAGS);
    let mut c = s.client().await;
    let p = c.put("base", "v", None).await.expect("put base");
    assert_eq!(p.header().unwrap().revision(), 2);
    (s, c)
}

/// The server still serves, and nothing was written: still revision 2 with
/// only `base`; then a put takes revision 3.
async fn assert_untouched(c: &mut Client) {
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await.expect("get all");
    assert_eq!(r.header().unwrap().revision(), 2, "a refused request took a revision");
    let keys: Vec<_> = r.kvs().iter().map(|k| String::from_utf8_lossy(k.key()).into_owned()).collect();
    assert_eq!(keys, ["base"], "a refused request wrote");
    assert_eq!(r.kvs()[0].mod_revision(), 2);
    let p = c.put("after", "x", None).await.expect("the server still takes writes");
    assert_eq!(p.header().unwrap().revision(), 3);
}

fn invalid(m: &str) -> (i32, String) {
    (code::INVALID_ARGUMENT, m.to_string())
}

#[tokio::test]
async fn empty_key_is_refused_with_key_is_not_provided() {
    let (_s, mut c) = start("bad_empty_key").await;
    assert_eq!(expect_status(c.put("", "v", None).await), invalid(msg::KEY_NOT_PROVIDED));
    assert_eq!(expect_status(c.get("", None).await), invalid(msg::KEY_NOT_PROVIDED));
    assert_eq!(expect_status(c.delete("", None).await), invalid(msg::KEY_NOT_PROVIDED));
    let txn = Txn::new().when([Compare::version("", CompareOp::Equal, 0)]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::KEY_NOT_PROVIDED));
    let txn = Txn::new().and_then([TxnOp::put("ok", "v", None), TxnOp::put("", "v", None)]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::KEY_NOT_PROVIDED));
    let txn = Txn::new().or_else([TxnOp::delete("", None)]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::KEY_NOT_PROVIDED));
    let nested = Txn::new().and_then([TxnOp::get("", None)]);
    let txn = Txn::new().and_then([TxnOp::put("ok", "v", None), TxnOp::txn(nested)]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::KEY_NOT_PROVIDED));
    assert_untouched(&mut c).await;
}

#[tokio::test]
async fn write_over_max_request_bytes_is_refused_as_too_large_and_reads_are_not_limited() {
    let (_s, mut c) = start("bad_too_large").await;
    let big = vec![b'x'; 2000];
    assert_eq!(expect_status(c.put("k", big.clone(), None).await), invalid(msg::TOO_LARGE));
    assert_eq!(expect_status(c.put(big.clone(), "v", None).await), invalid(msg::TOO_LARGE));
    assert_eq!(expect_status(c.delete(big.clone(), None).await), invalid(msg::TOO_LARGE));
    let txn = Txn::new().and_then([TxnOp::put("k1", vec![b'y'; 600], None), TxnOp::put("k2", vec![b'z'; 600], None)]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::TOO_LARGE));
    // Reads are not proposed in etcd: the limit does not apply to a Range
    // or to a Txn without writes in any branch.
    let r = c.get(big.clone(), None).await.expect("a large read is served");
    assert_eq!(r.count(), 0);
    let txn = Txn::new()
        .when([Compare::value("base", CompareOp::Equal, big.clone())])
        .or_else([TxnOp::get(big.clone(), None)]);
    let r = c.txn(txn).await.expect("a large read-only txn is served");
    assert!(!r.succeeded());
    assert_eq!(r.header().unwrap().revision(), 2);
    assert_untouched(&mut c).await;
    // Well under the limit is fine.
    let p = c.put("small", vec![b's'; 500], None).await.expect("a small put");
    assert_eq!(p.header().unwrap().revision(), 4);
}

#[tokio::test]
async fn request_far_over_the_grpc_message_limit_is_resource_exhausted() {
    let (s, mut c) = start("bad_grpc_limit").await;
    // The gRPC limit is --max-request-bytes plus 512 KiB of framing.
    let huge = vec![b'h'; 2 * 1024 * 1024];
    let (code, m) = expect_status(c.put("k", huge.clone(), None).await);
    assert_eq!(code, code::RESOURCE_EXHAUSTED, "{m}");
    let (code, m) = expect_status(c.get(huge.clone(), None).await);
    assert_eq!(code, code::RESOURCE_EXHAUSTED, "{m}");
    // The same through a raw connection, which then keeps working.
    let g = s.grpc().await;
    let e = g.put(&put("k", &huge)).await.expect_err("huge put");
    assert_eq!(e.code, code::RESOURCE_EXHAUSTED, "{e}");
    assert_eq!(g.revision().await, 2);
    assert_untouched(&mut c).await;
}

#[tokio::test]
async fn txn_over_max_txn_ops_is_refused_counting_nested_ops_against_what_is_left() {
    let (_s, mut c) = start("bad_too_many_ops").await;
    let gets = |n: usize| (0..n).map(|i| TxnOp::get(format!("g{i}"), None)).collect::<Vec<_>>();
    let compares =
        |n: usize| (0..n).map(|i| Compare::version(format!("c{i}"), CompareOp::Equal, 0)).collect::<Vec<_>>();
    let too_many = [
        Txn::new().and_then(gets(9)),
        Txn::new().or_else(gets(9)),
        Txn::new().when(compares(9)),
        // 5 ops outside leave 8 - 5 = 3 for a nested txn, as etcd counts.
        Txn::new().and_then([gets(4), vec![TxnOp::txn(Txn::new().and_then(gets(4)))]].concat()),
        Txn::new().when(compares(6)).or_else([TxnOp::txn(Txn::new().when(compares(3)))]),
    ];
    for (i, txn) in too_many.into_iter().enumerate() {
        match c.txn(txn).await {
            Ok(r) => panic!(
                "case {i}: expected {:?}, got a response at revision {}",
                msg::TOO_MANY_OPS,
                r.header().unwrap().revision()
            ),
            Err(e) => assert_eq!(common::status_of(&e), invalid(msg::TOO_MANY_OPS), "case {i}"),
        }
    }
    assert_untouched(&mut c).await;
    let fine = [
        Txn::new().when(compares(8)).and_then(gets(8)).or_else(gets(8)),
        Txn::new().and_then([gets(4), vec![TxnOp::txn(Txn::new().and_then(gets(3)))]].concat()),
    ];
    for (i, txn) in fine.into_iter().enumerate() {
        let r = c.txn(txn).await.unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(r.header().unwrap().revision(), 3, "case {i}");
    }
}

#[tokio::test]
async fn duplicate_keys_in_a_txn_are_refused() {
    let (_s, mut c) = start("bad_duplicate_key").await;
    let dup = [
        Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::put("a", "2", None)]),
        Txn::new()
            .or_else([TxnOp::put("b", "1", None), TxnOp::delete("a", Some(DeleteOptions::new().with_range("c")))]),
        Txn::new()
            .and_then([TxnOp::delete("a", Some(DeleteOptions::new().with_prefix())), TxnOp::put("ab", "1", None)]),
        Txn::new().and_then([TxnOp::put("a", "1", None), TxnOp::txn(Txn::new().or_else([TxnOp::put("a", "2", None)]))]),
        Txn::new().and_then([TxnOp::delete("a", None), TxnOp::txn(Txn::new().and_then([TxnOp::put("a", "2", None)]))]),
        Txn::new().and_then([
            TxnOp::txn(Txn::new().and_then([TxnOp::put("a", "1", None)])),
            TxnOp::txn(Txn::new().or_else([TxnOp::put("a", "2", None)])),
        ]),
    ];
    for (i, txn) in dup.into_iter().enumerate() {
        assert_eq!(expect_status(c.txn(txn).await), invalid(msg::DUPLICATE_KEY), "case {i}");
    }
    assert_untouched(&mut c).await;
    // Allowed: the same key in both branches of one nested txn, a put next
    // to a delete of another key, and deletes that overlap each other.
    let ok = Txn::new().and_then([
        TxnOp::txn(Txn::new().and_then([TxnOp::put("x", "1", None)]).or_else([TxnOp::put("x", "2", None)])),
        TxnOp::delete("y", None),
        TxnOp::delete("a", Some(DeleteOptions::new().with_prefix())),
        TxnOp::delete("ab", None),
        TxnOp::put("z", "1", None),
    ]);
    let r = c.txn(ok).await.expect("no duplicate here");
    assert_eq!(r.header().unwrap().revision(), 4);
}

#[tokio::test]
async fn value_with_ignore_value_and_lease_with_ignore_lease_are_refused() {
    let (_s, mut c) = start("bad_ignore_flags").await;
    let e = expect_status(c.put("base", "new", Some(PutOptions::new().with_ignore_value())).await);
    assert_eq!(e, invalid(msg::VALUE_PROVIDED));
    let e = expect_status(c.put("base", "new", Some(PutOptions::new().with_ignore_lease().with_lease(5))).await);
    assert_eq!(e, invalid(msg::LEASE_PROVIDED));
    let txn = Txn::new().and_then([TxnOp::put("base", "new", Some(PutOptions::new().with_ignore_value()))]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::VALUE_PROVIDED));
    let e = expect_status(c.put("nokey", "", Some(PutOptions::new().with_ignore_value())).await);
    assert_eq!(e, invalid(msg::KEY_NOT_FOUND));
    let txn = Txn::new().and_then([
        TxnOp::put("other", "1", None),
        TxnOp::put("nokey", "", Some(PutOptions::new().with_ignore_value())),
    ]);
    assert_eq!(expect_status(c.txn(txn).await), invalid(msg::KEY_NOT_FOUND), "a txn fails as a whole");
    let e = expect_status(c.put("base", "new", Some(PutOptions::new().with_lease(99))).await);
    assert_eq!(e, (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
    let txn = Txn::new()
        .and_then([TxnOp::put("other", "1", None), TxnOp::put("base", "new", Some(PutOptions::new().with_lease(99)))]);
    assert_eq!(expect_status(c.txn(txn).await), (code::NOT_FOUND, msg::LEASE_NOT_FOUND.to_string()));
    assert_untouched(&mut c).await;
}

#[tokio::test]
async fn compacted_and_future_revisions_are_refused_and_write_nothing() {
    let s = Server::under_test("bad_revisions", FLAGS);
    let mut c = s.client().await;
    for i in 0..4 {
        c.put("k", format!("{i}"), None).await.unwrap(); // 2..=5
    }
    c.compact(4, None).await.unwrap();
    let out = |m: &str| (code::OUT_OF_RANGE, m.to_string());
    let at = |r| Some(GetOptions::new().with_revision(r));
    assert_eq!(expect_status(c.get("k", at(3)).await), out(msg::COMPACTED));
    assert_eq!(expect_status(c.get("k", at(6)).await), out(msg::FUTURE_REV));
    let txn = Txn::new().and_then([TxnOp::put("w", "1", None), TxnOp::get("k", at(6))]);
    assert_eq!(expect_status(c.txn(txn).await), out(msg::FUTURE_REV));
    let txn = Txn::new()
        .when([Compare::version("k", CompareOp::Equal, 0)])
        .or_else([TxnOp::delete("k", None), TxnOp::get("k", at(2))]);
    assert_eq!(expect_status(c.txn(txn).await), out(msg::COMPACTED));
    assert_eq!(expect_status(c.compact(3, None).await), out(msg::COMPACTED));
    assert_eq!(expect_status(c.compact(6, None).await), out(msg::FUTURE_REV));
    let r = c.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 5);
    assert_eq!(r.kvs().len(), 1);
    assert_eq!((r.kvs()[0].value(), r.kvs()[0].mod_revision()), (&b"3"[..], 5));
}

#[tokio::test]
async fn empty_request_op_in_a_txn_is_refused_with_key_not_found() {
    let (s, mut c) = start("bad_empty_op").await;
    let g = s.grpc().await;
    let empty = pb::RequestOp { request: None };
    let txn = pb::TxnRequest { success: vec![op_put(put("x", "1")), empty.clone()], ..Default::default() };
    let e = g.txn(&txn).await.expect_err("empty op");
    assert_eq!((e.code, e.message.as_str()), (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND));
    let nested = pb::TxnRequest { failure: vec![empty], ..Default::default() };
    let txn = pb::TxnRequest { success: vec![op_txn(nested)], ..Default::default() };
    let e = g.txn(&txn).await.expect_err("empty nested op");
    assert_eq!((e.code, e.message.as_str()), (code::INVALID_ARGUMENT, msg::KEY_NOT_FOUND));
    assert_untouched(&mut c).await;
}

/// Bodies that are not protobuf: a length-delimited field whose length runs
/// past the end, a varint that never ends, and a field with wire type 7.
const MALFORMED: [&[u8]; 3] = [b"\x0a\xff\xff\xff\x0f", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0f\x01"];

#[tokio::test]
async fn malformed_protobuf_is_refused_as_internal_and_the_connection_keeps_working() {
    let (s, mut c) = start("bad_malformed_protobuf").await;
    let g = s.grpc().await;
    for method in ["Range", "Put", "DeleteRange", "Txn", "Compact"] {
        for (i, body) in MALFORMED.iter().enumerate() {
            let path = format!("/etcdserverpb.KV/{method}");
            let e = g.call_raw(&path, Bytes::from_static(body)).await.expect_err("malformed body");
            assert_eq!(e.code, code::INTERNAL, "{method} body {i}: {e}");
            assert!(e.message.starts_with("grpc: error unmarshalling request"), "{method} body {i}: {e}");
        }
    }
    assert_eq!(g.revision().await, 2, "the same connection still serves");
    assert_untouched(&mut c).await;
}

#[tokio::test]
async fn unknown_methods_and_services_are_unimplemented() {
    let (s, mut c) = start("bad_unknown_method").await;
    let g = s.grpc().await;
    let body = Bytes::from(pb::RangeRequest { key: Bytes::from_static(b"base"), ..Default::default() }.encode_to_vec());
    let cases = [
        ("/etcdserverpb.KV/Nope", "unknown method Nope for service etcdserverpb.KV"),
        ("/etcdserverpb.Nope/Range", "unknown service etcdserverpb.Nope"),
        ("/foo.Bar/Baz", "unknown service foo.Bar"),
    ];
    for (path, want) in cases {
        let e = g.call_raw(path, body.clone()).await.expect_err("unknown method");
        assert_eq!((e.code, e.message.as_str()), (code::UNIMPLEMENTED, want), "{path}");
    }
    let r: pb::RangeResponse = g.unary("/etcdserverpb.KV/Range", &get_base()).await.expect("range");
    assert_eq!(r.kvs.len(), 1);
    assert_untouched(&mut c).await;
}

fn get_base() -> pb::RangeRequest {
    pb::RangeRequest { key: Bytes::from_static(b"base"), ..Default::default() }
}

// ------------------------------------------------------- raw HTTP/2 frames

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;

fn frame(buf: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    buf.put_u8((len >> 16) as u8);
    buf.put_u16(len as u16);
    buf.put_u8(kind);
    buf.put_u8(flags);
    buf.put_u32(stream & 0x7fff_ffff);
    buf.put_slice(payload);
}

/// An HPACK string literal without Huffman coding (short strings only).
fn hpack_str(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 127);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// The header block of a gRPC request, with literals only.
fn grpc_headers(authority: &str, path: &str) -> Vec<u8> {
    let mut out = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    for (name, value) in
        [(":path", path), (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")]
    {
        out.push(0x00); // literal without indexing, new name
        hpack_str(&mut out, name);
        hpack_str(&mut out, value);
    }
    out
}

/// What a connection's reader saw from the server.
#[derive(Debug, Default)]
struct Seen {
    refused: usize,
    other_resets: usize,
    goaway: Option<u32>,
    closed: bool,
    settings: bool,
}

/// Reads frames until the server closes the connection, `stop` says enough,
/// or `deadline` passes.
async fn read_frames<R: AsyncReadExt + Unpin>(
    r: &mut R,
    deadline: Instant,
    seen: &mut Seen,
    stop: impl Fn(&Seen) -> bool,
) {
    let mut buf = BytesMut::new();
    loop {
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let f = buf.split_to(9 + len);
            let (kind, flags, payload) = (f[3], f[4], &f[9..]);
            match kind {
                RST_STREAM if payload.len() == 4 => {
                    let code = u32::from_be_bytes(payload.try_into().unwrap());
                    if code == REFUSED_STREAM {
                        seen.refused += 1;
                    } else {
                        seen.other_resets += 1;
                    }
                }
                GOAWAY if payload.len() >= 8 => {
                    seen.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()))
                }
                SETTINGS if flags & ACK == 0 => seen.settings = true,
                _ => {}
            }
        }
        if stop(seen) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.read_buf(&mut buf)).await {
            Err(_) => return,
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed = true;
                return;
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Puts and reads through a separate client; panics if the server does not
/// answer.
async fn still_serving(c: &mut Client, key: &str) {
    let p = c.put(key, "alive", None).await.unwrap_or_else(|e| panic!("the server stopped answering: {e}"));
    let rev = p.header().unwrap().revision();
    let r = c.get(key, None).await.expect("get");
    assert_eq!(r.kvs()[0].mod_revision(), rev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_on_one_connection_are_refused_over_the_limit_and_others_are_still_served() {
    const STREAMS: u32 = 10_000;
    const LIMIT: u32 = 1000;
    let s = Server::under_test("bad_many_streams", &[FLAGS, &["--max-concurrent-streams", "1000"]].concat());
    let mut c = s.client().await;
    let tcp = TcpStream::connect(s.addr).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    let mut out = BytesMut::new();
    out.put_slice(PREFACE);
    frame(&mut out, SETTINGS, 0, 0, &[]);
    wr.write_all(&out).await.expect("preface");
    // Acknowledge the server's SETTINGS, so its stream limit is in force.
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut seen = Seen::default();
    read_frames(&mut rd, deadline, &mut seen, |s| s.settings).await;
    assert!(seen.settings, "no SETTINGS from the server: {seen:?}");
    let mut out = BytesMut::new();
    frame(&mut out, SETTINGS, ACK, 0, &[]);
    wr.write_all(&out).await.expect("settings ack");
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        // Every stream over the limit refused, or the connection ended.
        read_frames(&mut rd, Instant::now() + CLOSE_WAIT, &mut seen, |s| {
            s.goaway.is_some() || s.refused >= (STREAMS - LIMIT) as usize
        })
        .await;
        (seen, rd)
    });
    // 10,000 requests whose bodies never come: each stream stays open.
    let headers = grpc_headers(&s.addr.to_string(), "/etcdserverpb.KV/Range");
    let mut written = 0;
    for batch in 0..(STREAMS / 500) {
        let mut out = BytesMut::new();
        for i in 0..500 {
            frame(&mut out, HEADERS, END_HEADERS, 1 + 2 * (batch * 500 + i), &headers);
        }
        if wr.write_all(&out).await.is_err() {
            break; // the server closed the connection
        }
        written += 500;
    }
    still_serving(&mut c, "during").await;
    let (seen, rd) = reader.await.expect("reader");
    eprintln!("wrote {written} streams; server: {seen:?}");
    assert!(
        seen.refused >= (written - LIMIT) as usize || seen.goaway.is_some() || seen.closed,
        "the server accepted more than {LIMIT} of {written} concurrent streams: {seen:?}"
    );
    still_serving(&mut c, "during2").await;
    drop((rd, wr));
    still_serving(&mut c, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_acknowledges_settings_still_gets_corekvs_stream_cap() {
    const STREAMS: u32 = 10_000;
    // corekv's own cap on streams per connection, whatever
    // --max-concurrent-streams allows (etcd's default is unlimited, so
    // this test is corekv's alone).
    const CAP: u32 = 4096;
    let s = Server::corekv("bad_many_streams_no_ack", &[&["--cores", "2"], FLAGS].concat());
    let mut c = s.client().await;
    let tcp = TcpStream::connect(s.addr).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        read_frames(&mut rd, Instant::now() + CLOSE_WAIT, &mut seen, |s| {
            s.goaway.is_some() || s.refused >= (STREAMS - CAP) as usize
        })
        .await;
        (seen, rd)
    });
    let mut out = BytesMut::new();
    out.put_slice(PREFACE);
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let headers = grpc_headers(&s.addr.to_string(), "/etcdserverpb.KV/Range");
    for i in 0..STREAMS {
        frame(&mut out, HEADERS, END_HEADERS, 1 + 2 * i, &headers);
    }
    let _ = wr.write_all(&out).await;
    still_serving(&mut c, "during").await;
    let (seen, rd) = reader.await.expect("reader");
    eprintln!("server: {seen:?}");
    assert!(
        seen.refused >= (STREAMS - CAP) as usize || seen.goaway.is_some() || seen.closed,
        "the server accepted more than {CAP} of {STREAMS} streams from a client that never acknowledged SETTINGS: {seen:?}"
    );
    still_serving(&mut c, "during2").await;
    drop((rd, wr));
    still_serving(&mut c, "after").await;
}

/// Sends `bytes` on a fresh connection and waits until the server closes
/// it; returns what it sent back meanwhile.
async fn send_and_expect_close(s: &Server, bytes: &[u8]) -> Seen {
    let tcp = TcpStream::connect(s.addr).await.expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        read_frames(&mut rd, Instant::now() + CLOSE_WAIT, &mut seen, |_| false).await;
        seen
    });
    // The server may close before reading everything.
    let _ = wr.write_all(bytes).await;
    let seen = reader.await.expect("reader");
    drop(wr);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_the_connection_and_the_server_keeps_serving() {
    let (s, mut c) = start("bad_garbage_bytes").await;
    let mut rng = Rng::new(7);
    let random: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    // A TLS ClientHello's first bytes, as from a client configured for TLS.
    let mut tls = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    tls.extend_from_slice(&random[..500]);
    // An HTTP/1 request line followed by a head longer than any server
    // accepts (Go's limit is 1 MiB).
    let mut http1 = b"GET /health HTTP/1.1\r\nX-Junk: ".to_vec();
    http1.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    for (name, bytes) in [("random", &random), ("tls", &tls), ("endless http/1 head", &http1)] {
        let seen = send_and_expect_close(&s, bytes).await;
        assert!(seen.closed, "{name}: the connection is still open after {CLOSE_WAIT:?}");
        still_serving(&mut c, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_http2_frames_close_the_connection_and_the_server_keeps_serving() {
    let (s, mut c) = start("bad_garbage_frames").await;
    let authority = s.addr.to_string();
    let mut cases: Vec<(&str, BytesMut)> = Vec::new();
    let start = || {
        let mut b = BytesMut::new();
        b.put_slice(PREFACE);
        frame(&mut b, SETTINGS, 0, 0, &[]);
        b
    };
    let mut b = start();
    frame(&mut b, DATA, END_STREAM, 0, b"data on stream 0");
    cases.push(("DATA on stream 0", b));
    let mut b = start();
    frame(&mut b, HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x13]);
    cases.push(("undecodable HPACK", b));
    let mut b = start();
    frame(&mut b, HEADERS, END_HEADERS, 1, &grpc_headers(&authority, "/etcdserverpb.KV/Range"));
    frame(&mut b, HEADERS, END_HEADERS, 0, &grpc_headers(&authority, "/etcdserverpb.KV/Range"));
    cases.push(("HEADERS on stream 0", b));
    let mut b = start();
    // Only the header: the server must judge it before any payload.
    b.put_slice(&[0xff, 0xff, 0xff, HEADERS, END_HEADERS, 0, 0, 0, 3]);
    cases.push(("frame over the size limit", b));
    let mut b = start();
    frame(&mut b, SETTINGS, 0, 0, &[0, 4, 0xff, 0xff, 0xff, 0xff]); // window over 2^31-1
    cases.push(("bad SETTINGS value", b));
    let mut b = start();
    let mut rng = Rng::new(11);
    // Few bytes, so the server has read them all when it closes (unread
    // bytes would make the kernel reset the connection and drop the GOAWAY).
    b.extend((0..64).map(|_| rng.next_u64() as u8));
    cases.push(("random bytes after the preface", b));
    for (name, bytes) in cases {
        let seen = send_and_expect_close(&s, &bytes).await;
        // A GOAWAY first is polite but not required (grpc-go just closes).
        assert!(seen.closed, "{name}: the connection is still open after {CLOSE_WAIT:?}: {seen:?}");
        still_serving(&mut c, name).await;
    }
    // And a well-formed request on a raw connection still works.
    let g: Grpc = s.grpc().await;
    let r = g.range(&get_base()).await.expect("range");
    assert_eq!(r.kvs.len(), 1);
}
