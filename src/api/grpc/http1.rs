//! Protocol sniffing on the client port and the minimal HTTP/1.1 server for
//! `GET /health`, `/version` and `/metrics`.
//!
//! A connection's first bytes decide: the HTTP/2 preface goes to h2 (the
//! bytes already read are replayed through [`Rewind`]), an HTTP/1.x request
//! line gets one response and the connection is closed, anything else is
//! closed at once. Request heads are bounded; nothing here waits for more
//! bytes than the bound.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use monoio::io::poll_io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{HttpReply, Service};

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method name accepted on an HTTP/1.x request line.
const METHOD_BYTES_MAX: usize = 16;

/// What the first bytes of a connection turned out to be.
pub enum Sniffed {
    /// The HTTP/2 preface; holds the bytes read so far (to replay).
    Http2(Bytes),
    /// The start of an HTTP/1.x request; holds the bytes read so far.
    Http1(BytesMut),
    /// Neither, or the peer closed first.
    Other,
}

/// Reads just enough of the connection to tell HTTP/2 from HTTP/1.x.
/// Reads at most `head_bytes_max` bytes.
pub async fn sniff<T>(io: &mut T, head_bytes_max: usize) -> io::Result<Sniffed>
where
    T: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len().max(512));
    loop {
        if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
            return Ok(Sniffed::Http2(buf.freeze()));
        }
        if !H2_PREFACE.starts_with(&buf) {
            return Ok(if request_line_plausible(&buf) { Sniffed::Http1(buf) } else { Sniffed::Other });
        }
        if buf.len() >= head_bytes_max || io.read_buf(&mut buf).await? == 0 {
            return Ok(Sniffed::Other);
        }
    }
}

/// Reads the rest of an HTTP/1.x request head, answers it with `svc` and
/// closes. `head` holds the bytes `sniff` already read.
pub async fn serve<T, S>(io: &mut T, mut head: BytesMut, svc: &S, head_bytes_max: usize)
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: Service,
{
    let response = loop {
        if !request_line_plausible(&head) {
            break Some(plain_reply(400, "bad request\n"));
        }
        if let Some(end) = find_head_end(&head) {
            break Some(answer(&head[..end], svc));
        }
        if head.len() >= head_bytes_max {
            break Some(plain_reply(431, "request header fields too large\n"));
        }
        match io.read_buf(&mut head).await {
            Ok(n) if n > 0 => {}
            _ => break None,
        }
    };
    if let Some(response) = response {
        // The peer may be gone already; there is nobody to report to.
        let _ = io.write_all(&response).await;
        let _ = io.shutdown().await;
    }
}

/// The full response bytes for one request head (request line and headers,
/// without the blank line).
fn answer<S: Service>(head: &[u8], svc: &S) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.trim_ascii_end().split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let target = target.and_then(|t| std::str::from_utf8(t).ok());
    match (method, target) {
        (Some(b"GET"), Some(target)) => reply_bytes(&svc_reply(svc, target), true),
        (Some(b"HEAD"), Some(target)) => reply_bytes(&svc_reply(svc, target), false),
        (Some(_), Some(_)) => {
            let mut response = plain_reply(405, "method not allowed\n");
            // Insert `Allow` after the status line.
            let at = response.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            response.splice(at..at, b"Allow: GET, HEAD\r\n".iter().copied());
            response
        }
        _ => plain_reply(400, "bad request\n"),
    }
}

fn svc_reply<S: Service>(svc: &S, target: &str) -> HttpReply {
    svc.http_get(target).unwrap_or_else(|| HttpReply {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from_static(b"404 page not found\n"),
    })
}

fn plain_reply(status: u16, body: &'static str) -> Vec<u8> {
    let reply =
        HttpReply { status, content_type: "text/plain; charset=utf-8", body: Bytes::from_static(body.as_bytes()) };
    reply_bytes(&reply, true)
}

/// Serializes an HTTP/1.1 response that closes the connection.
fn reply_bytes(reply: &HttpReply, with_body: bool) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(reply.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown");
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reason,
        reply.content_type,
        reply.body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(&reply.body);
    }
    out
}

/// Offset of the blank line that ends the head, if it has arrived.
fn find_head_end(head: &[u8]) -> Option<usize> {
    head.windows(4).position(|w| w == b"\r\n\r\n")
}

/// `true` while the bytes so far can still be the start of an HTTP/1.x
/// request line: `METHOD SP target SP HTTP/1.d CRLF`. Checked on every read
/// so garbage is refused without waiting for more of it.
pub fn request_line_plausible(buf: &[u8]) -> bool {
    const VERSION: &[u8] = b"HTTP/1.";
    let line_end = buf.iter().position(|&b| b == b'\n').map_or(buf.len(), |i| i + 1);
    let line = &buf[..line_end];
    let method_len = line.iter().take_while(|b| b.is_ascii_uppercase()).count();
    let Some(rest) = line.get(method_len..) else {
        return false;
    };
    if method_len > METHOD_BYTES_MAX {
        return false;
    }
    let Some((&first, rest)) = rest.split_first() else {
        return true;
    };
    if first != b' ' || method_len == 0 {
        return false;
    }
    let target_len = rest.iter().take_while(|b| (0x21..=0x7E).contains(*b)).count();
    let Some((&sep, version)) = rest[target_len..].split_first() else {
        return true;
    };
    if sep != b' ' || target_len == 0 {
        return false;
    }
    version_plausible(version, VERSION)
}

/// Checks `HTTP/1.d\r\n` (or a prefix of it).
fn version_plausible(version: &[u8], literal: &[u8]) -> bool {
    let n = version.len().min(literal.len());
    if version[..n] != literal[..n] {
        return false;
    }
    let tail = &version[n..];
    match tail {
        [] => true,
        [d] => d.is_ascii_digit(),
        [d, b'\r'] => d.is_ascii_digit(),
        [d, b'\r', b'\n'] => d.is_ascii_digit(),
        _ => false,
    }
}

/// An I/O object that first yields bytes already read from it, then reads
/// from it again; writes pass straight through.
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Rewind<T> {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_prefixes_are_plausible() {
        let line = b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for n in 0..=line.len() {
            assert!(request_line_plausible(&line[..n]), "prefix of {n} bytes");
        }
    }

    #[test]
    fn garbage_and_h2_preface_are_not_request_lines() {
        assert!(!request_line_plausible(b"\x16\x03\x01\x02"));
        assert!(!request_line_plausible(b"get / HTTP/1.1\r\n"));
        assert!(!request_line_plausible(b"GET  / HTTP/1.1\r\n"));
        assert!(!request_line_plausible(b"GET / HTTP/2.0\r\n"));
        assert!(!request_line_plausible(H2_PREFACE));
        assert!(!request_line_plausible(b"GET / HTTP/1.1 extra\r\n"));
        assert!(!request_line_plausible(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
    }

    #[test]
    fn reply_has_length_and_closes() {
        let reply = HttpReply {
            status: 200,
            content_type: "application/json",
            body: Bytes::from_static(b"{\"health\":\"true\"}"),
        };
        let text = String::from_utf8(reply_bytes(&reply, true)).unwrap_or_default();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 17\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"health\":\"true\"}"));
    }
}
