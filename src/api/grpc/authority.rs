//! Makes the malformed HTTP/2 `:authority` values real etcd clients send
//! acceptable to h2, by rewriting the bytes the client sends before h2 reads
//! them.
//!
//! etcdctl 3.4 sends `http://127.0.0.1:2379` when it dials an endpoint on its
//! own (`endpoint status`, `defrag`, `snapshot save`), etcd's Go client 3.5.0
//! sends `#initially=[https://host:2379]`. grpc-go, the real etcd server,
//! accepts both; h2 resets such a stream with PROTOCOL_ERROR before the
//! request reaches us, and will not relax the check (hyperium/h2#525).
//!
//! Owns: [`AuthorityFix`], an I/O wrapper between the socket and h2 whose
//! reads scan the client's HTTP/2 frames. Every frame but HEADERS (and its
//! CONTINUATIONs) passes byte for byte, without waiting for its payload. A
//! header block is held until it is complete, its HPACK representations are
//! parsed (RFC 7541: integers, strings, the Huffman code) and every
//! `:authority` value that `http::uri::Authority` refuses is replaced; a
//! block without one is forwarded as it came. Writes pass untouched. Never
//! touches: the server's bytes, h2's state, anything but `:authority`.
//!
//! HPACK state stays consistent: a [`Shadow`] of h2's decoder table (entry
//! name lengths and sizes, the 32-byte overhead, eviction, size updates)
//! sees every header block h2's decoder sees, so a literal whose name is an
//! index resolves to the same name here as there. A replacement value has the
//! same length as the one it replaces (that many `a`s, a valid reg-name), so
//! the entry a literal with incremental indexing adds has the size the
//! client's encoder assumes, evictions happen in step, and later indexed
//! references resolve, in h2, to the rewritten value. Only where the length
//! may change (a literal that is not indexed, or an indexed reference to an
//! empty `:authority`) is an empty value replaced with `localhost`. An empty
//! value that a literal adds to the table cannot be fixed for that request.
//!
//! Bounded and defensive: a header block whose fragments exceed the bound,
//! malformed HPACK, or frames out of order make the wrapper pass everything
//! from there on unchanged (h2 rejects what is broken); it never panics and
//! holds at most one header block plus one read.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame payload the server accepts (SETTINGS_MAX_FRAME_SIZE;
/// h2's default, which `serve_h2` sets explicitly). Rewritten header blocks
/// are split into frames of at most this size.
pub const MAX_FRAME_PAYLOAD: u32 = 16_384;

/// Length of the client connection preface (RFC 9113, section 3.4).
const PREFACE_LEN: usize = 24;
/// Length of a frame header: 24-bit length, type, flags, stream id.
const FRAME_HEAD_LEN: usize = 9;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_PUSH_PROMISE: u8 = 0x5;
const FRAME_CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Bytes of the PRIORITY fields of a HEADERS frame.
const PRIORITY_LEN: usize = 5;

/// The HPACK dynamic table size h2's decoder starts with and allows at most
/// (SETTINGS_HEADER_TABLE_SIZE, which `serve_h2` leaves at its default).
const TABLE_SIZE_MAX: usize = 4096;
/// Bytes an entry takes in the dynamic table besides its name and value
/// (RFC 7541, section 4.1).
const ENTRY_OVERHEAD: usize = 32;

const AUTHORITY: &[u8] = b":authority";
/// What an empty authority becomes where the length may change.
const EMPTY_AUTHORITY_FILL: &[u8] = b"localhost";
/// Representation of a literal without indexing whose name is static entry
/// 1 (`:authority`): `0000` and a 4-bit index of 1.
const LITERAL_AUTHORITY: u8 = 0x01;

/// Names of the HPACK static table (RFC 7541, Appendix A), index 1 first.
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

// ------------------------------------------------------------------ I/O

/// The client→server byte stream of one HTTP/2 connection with every
/// malformed `:authority` made valid; see the module comment. Reads start at
/// the connection preface. Writes pass straight through.
pub struct AuthorityFix<T> {
    inner: T,
    scanner: Scanner,
    /// Bytes read but not yet forwarded: a frame header or header block cut
    /// short by the end of a read, or what followed a rewritten block.
    stash: BytesMut,
    /// `stash` may hold something forwardable (it changed since the scanner
    /// last asked for more).
    stash_fresh: bool,
    /// Bytes ready for the reader (a rewritten block, or from `stash`).
    out: Bytes,
    /// `inner` reached its end.
    eof: bool,
}

impl<T> AuthorityFix<T> {
    /// Wraps the stream of a connection whose first bytes are the HTTP/2
    /// preface. `header_block_bytes_max` bounds the header block fragments
    /// held at once (beyond it the rest of the connection passes unchanged).
    pub fn new(inner: T, header_block_bytes_max: usize) -> AuthorityFix<T> {
        AuthorityFix {
            inner,
            scanner: Scanner::new(header_block_bytes_max, MAX_FRAME_PAYLOAD as usize),
            stash: BytesMut::new(),
            stash_fresh: false,
            out: Bytes::new(),
            eof: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.stash_fresh && !this.stash.is_empty() {
                let len = this.stash.len();
                match this.scanner.step(&this.stash) {
                    Step::Pass(n) if n > 0 => {
                        this.out = this.stash.split_to(n.min(len)).freeze();
                        continue;
                    }
                    Step::Replace(n, bytes) => {
                        this.stash.advance(n.min(len));
                        this.out = bytes;
                        continue;
                    }
                    Step::Pass(_) | Step::NeedMore => this.stash_fresh = false,
                }
            }
            if this.eof {
                // A frame cut short by the end of the stream: h2 reports it.
                if !this.stash.is_empty() {
                    this.out = this.stash.split().freeze();
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let fresh = &buf.filled()[start..];
            if fresh.is_empty() {
                this.eof = true;
                continue;
            }
            if !this.stash.is_empty() {
                // Bytes must stay in order: queue behind what is held.
                this.stash.extend_from_slice(fresh);
                this.stash_fresh = true;
                buf.set_filled(start);
                continue;
            }
            // Fast path: forward what can be forwarded where it was read.
            let mut passed = 0;
            let mut hold_from = None;
            while passed < fresh.len() {
                match this.scanner.step(&fresh[passed..]) {
                    Step::Pass(n) if n > 0 => passed += n.min(fresh.len() - passed),
                    Step::Pass(_) | Step::NeedMore => {
                        hold_from = Some(passed);
                        break;
                    }
                    Step::Replace(n, bytes) => {
                        this.out = bytes;
                        hold_from = Some(passed + n.min(fresh.len() - passed));
                        break;
                    }
                }
            }
            if let Some(from) = hold_from {
                this.stash.extend_from_slice(&fresh[from..]);
                this.stash_fresh = true;
            }
            buf.set_filled(start + passed);
            if passed > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
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

// ------------------------------------------------------------------ frames

/// Where the scanner is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Inside the connection preface; this many of its bytes are still due.
    Preface(usize),
    /// At the start of a frame.
    Head,
    /// Inside the payload of a frame that passes unchanged; bytes left.
    Skip(usize),
    /// At the start of a header block, which is held until complete.
    Block,
    /// The table shadow is lost or the stream broken: all bytes pass.
    Passthrough,
}

/// What to do with the bytes at the front of the input.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Forward this many bytes unchanged (more than zero).
    Pass(usize),
    /// Forward these bytes instead of the first `n` (a whole header block).
    Replace(usize, Bytes),
    /// Nothing can be forwarded until more bytes arrive.
    NeedMore,
}

/// The sans-I/O core: frame boundaries, header blocks, the table shadow.
struct Scanner {
    state: State,
    table: Shadow,
    block_bytes_max: usize,
    max_frame: usize,
    /// A header block's fragments joined (reused).
    fragment: Vec<u8>,
    /// Huffman-decoded strings (reused).
    scratch: Vec<u8>,
    /// The changes to the current header block (reused).
    edits: Vec<Edit>,
}

/// A frame header.
#[derive(Clone, Copy, Debug)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(data: &[u8]) -> Option<FrameHead> {
        let head: &[u8; FRAME_HEAD_LEN] = data.get(..FRAME_HEAD_LEN)?.try_into().ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(FrameHead { len, kind: head[3], flags: head[4], stream })
    }
}

/// The parts of a HEADERS frame's payload.
struct HeadersPayload<'a> {
    priority: Option<[u8; PRIORITY_LEN]>,
    /// The stream depends on itself: h2 resets it without decoding the block.
    self_dependent: bool,
    fragment: &'a [u8],
}

impl<'a> HeadersPayload<'a> {
    /// `None` where h2 fails the connection (stream 0, bad padding, short
    /// priority fields).
    fn parse(head: FrameHead, payload: &'a [u8]) -> Option<HeadersPayload<'a>> {
        if head.stream == 0 {
            return None;
        }
        let mut rest = payload;
        let mut pad = 0;
        if head.flags & FLAG_PADDED != 0 {
            let (&n, after) = rest.split_first()?;
            pad = usize::from(n);
            rest = after;
        }
        let mut priority = None;
        let mut self_dependent = false;
        if head.flags & FLAG_PRIORITY != 0 {
            let (fields, after) = rest.split_at_checked(PRIORITY_LEN)?;
            let fields: [u8; PRIORITY_LEN] = fields.try_into().ok()?;
            let dependency = u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) & 0x7fff_ffff;
            self_dependent = dependency == head.stream;
            priority = Some(fields);
            rest = after;
        }
        let fragment = rest.get(..rest.len().checked_sub(pad)?)?;
        Some(HeadersPayload { priority, self_dependent, fragment })
    }
}

impl Scanner {
    fn new(block_bytes_max: usize, max_frame: usize) -> Scanner {
        Scanner {
            state: State::Preface(PREFACE_LEN),
            table: Shadow::new(),
            block_bytes_max,
            max_frame,
            fragment: Vec::new(),
            scratch: Vec::new(),
            edits: Vec::new(),
        }
    }

    /// Decides about the front of `data`, the bytes that follow everything
    /// decided so far. Never asks for more than the rest of a frame header
    /// or of a header block.
    fn step(&mut self, data: &[u8]) -> Step {
        loop {
            if data.is_empty() {
                return Step::NeedMore;
            }
            match self.state {
                State::Preface(left) => {
                    let n = left.min(data.len());
                    self.state = if n == left { State::Head } else { State::Preface(left - n) };
                    return Step::Pass(n);
                }
                State::Skip(left) => {
                    let n = left.min(data.len());
                    self.state = if n == left { State::Head } else { State::Skip(left - n) };
                    return Step::Pass(n);
                }
                State::Passthrough => return Step::Pass(data.len()),
                State::Head => {
                    let Some(head) = FrameHead::parse(data) else {
                        return Step::NeedMore;
                    };
                    match head.kind {
                        FRAME_HEADERS => self.state = State::Block,
                        // Out of place here (h2 fails the connection), or a
                        // block h2 decodes before failing it: lose the shadow.
                        FRAME_CONTINUATION | FRAME_PUSH_PROMISE => self.state = State::Passthrough,
                        _ => {
                            let body = head.len.min(data.len() - FRAME_HEAD_LEN);
                            self.state = if body == head.len { State::Head } else { State::Skip(head.len - body) };
                            return Step::Pass(FRAME_HEAD_LEN + body);
                        }
                    }
                }
                State::Block => return self.block(data),
            }
        }
    }

    /// `data` starts with a HEADERS frame: waits for the whole block (up to
    /// the bound), then forwards, rewrites or gives up on it.
    fn block(&mut self, data: &[u8]) -> Step {
        let mut at = 0;
        let mut fragments = 0usize;
        let mut stream = None;
        loop {
            let Some(head) = data.get(at..).and_then(FrameHead::parse) else {
                return Step::NeedMore;
            };
            match stream {
                None => stream = Some(head.stream),
                Some(id) if head.kind == FRAME_CONTINUATION && head.stream == id => {}
                // h2 fails the connection.
                Some(_) => return self.give_up(data.len()),
            }
            fragments = fragments.saturating_add(head.len);
            if head.len > self.max_frame || fragments > self.block_bytes_max {
                return self.give_up(data.len());
            }
            let end = at + FRAME_HEAD_LEN + head.len;
            if data.len() < end {
                return Step::NeedMore;
            }
            if head.flags & FLAG_END_HEADERS != 0 {
                self.state = State::Head;
                return self.finish_block(&data[..end]);
            }
            at = end;
        }
    }

    /// From here on every byte passes unchanged.
    fn give_up(&mut self, n: usize) -> Step {
        self.state = State::Passthrough;
        Step::Pass(n)
    }

    /// `raw` is one complete header block: HEADERS, then CONTINUATIONs of
    /// the same stream, the last with END_HEADERS.
    fn finish_block(&mut self, raw: &[u8]) -> Step {
        let Some(head) = FrameHead::parse(raw) else {
            return self.give_up(raw.len());
        };
        let payload = raw.get(FRAME_HEAD_LEN..FRAME_HEAD_LEN + head.len).unwrap_or_default();
        let Some(headers) = HeadersPayload::parse(head, payload) else {
            return self.give_up(raw.len());
        };
        let single = FRAME_HEAD_LEN + head.len == raw.len();
        if headers.self_dependent {
            // h2 resets the stream without decoding the block (its table
            // does not change); a CONTINUATION then fails the connection.
            return if single { Step::Pass(raw.len()) } else { self.give_up(raw.len()) };
        }
        let fragment: &[u8] = if single {
            headers.fragment
        } else {
            self.fragment.clear();
            self.fragment.extend_from_slice(headers.fragment);
            let mut at = FRAME_HEAD_LEN + head.len;
            while let Some(next) = raw.get(at..).and_then(FrameHead::parse) {
                let body = raw.get(at + FRAME_HEAD_LEN..at + FRAME_HEAD_LEN + next.len).unwrap_or_default();
                self.fragment.extend_from_slice(body);
                at += FRAME_HEAD_LEN + next.len;
            }
            &self.fragment
        };
        if self.table.scan(fragment, &mut self.edits, &mut self.scratch).is_err() {
            // h2 fails the connection on it.
            return self.give_up(raw.len());
        }
        if self.edits.is_empty() {
            return Step::Pass(raw.len());
        }
        let rewritten = apply_edits(fragment, &self.edits);
        let frames =
            frame_block(head.stream, head.flags & FLAG_END_STREAM, headers.priority, &rewritten, self.max_frame);
        Step::Replace(raw.len(), frames)
    }
}

/// Splits a header block fragment into a HEADERS frame and as many
/// CONTINUATION frames as `max_frame` requires.
fn frame_block(
    stream: u32,
    end_stream: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: &[u8],
    max_frame: usize,
) -> Bytes {
    let max_frame = max_frame.max(PRIORITY_LEN + 1);
    let frames = fragment.len() / max_frame + 2;
    let mut out = BytesMut::with_capacity(fragment.len() + PRIORITY_LEN + frames * FRAME_HEAD_LEN);
    let room = max_frame - priority.map_or(0, |_| PRIORITY_LEN);
    let (first, mut rest) = fragment.split_at(room.min(fragment.len()));
    let mut flags = end_stream;
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    let len = first.len() + priority.map_or(0, |_| PRIORITY_LEN);
    put_frame_head(&mut out, len, FRAME_HEADERS, flags, stream);
    if let Some(fields) = priority {
        out.put_slice(&fields);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(max_frame.min(rest.len()));
        let flags = if after.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_head(&mut out, chunk.len(), FRAME_CONTINUATION, flags, stream);
        out.put_slice(chunk);
        rest = after;
    }
    out.freeze()
}

fn put_frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.put_slice(&len[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

// ------------------------------------------------------------------ HPACK

/// The header block is not valid HPACK (or not for h2's decoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Malformed;

/// What a table entry's name is, as far as rewriting cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Name {
    len: usize,
    authority: bool,
}

/// A table entry without its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    name: Name,
    /// Name, value and overhead, as h2's decoder counts it.
    size: usize,
    /// An `:authority` whose value h2 refuses (it is empty): an indexed
    /// reference to it is rewritten as a literal.
    bad_authority: bool,
}

/// The shape of h2's HPACK decoder table: which entries exist, how big each
/// is and which are `:authority`, but not their values.
struct Shadow {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

/// A change to a header block: the bytes `cut` become (a literal
/// representation prefix and) a raw string holding `fill`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Edit {
    cut: Range<usize>,
    /// Write a literal-without-indexing `:authority` head first (the cut is
    /// a whole indexed representation).
    literal: bool,
    fill: Fill,
}

/// A replacement `:authority` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// That many `a`s.
    Repeat(usize),
    /// `localhost`, for an empty value.
    Localhost,
}

impl Shadow {
    fn new() -> Shadow {
        Shadow { entries: VecDeque::new(), size: 0, max_size: TABLE_SIZE_MAX }
    }

    /// The entry at `index` of the combined index space (static first).
    fn get(&self, index: usize) -> Result<Entry, Malformed> {
        match index {
            0 => Err(Malformed),
            1..=61 => {
                let len = STATIC_NAMES.get(index - 1).map_or(0, |name| name.len());
                // Entry 1 is `:authority` with an empty value.
                let authority = index == 1;
                Ok(Entry { name: Name { len, authority }, size: 0, bad_authority: authority })
            }
            _ => self.entries.get(index - 62).copied().ok_or(Malformed),
        }
    }

    /// Adds an entry as h2's decoder does: evict from the oldest until it
    /// fits; an entry larger than the table empties it and is not added.
    fn insert(&mut self, entry: Entry) {
        while self.size + entry.size > self.max_size {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            self.size -= oldest.size;
        }
        if self.size + entry.size <= self.max_size {
            self.size += entry.size;
            self.entries.push_front(entry);
        }
    }

    fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        while self.size > self.max_size {
            let Some(oldest) = self.entries.pop_back() else {
                break;
            };
            self.size -= oldest.size;
        }
    }

    /// Walks one complete header block, updating the table as h2's decoder
    /// will and listing in `edits` the changes that make every
    /// `:authority` valid. On `Err` the table is unusable.
    fn scan(&mut self, block: &[u8], edits: &mut Vec<Edit>, scratch: &mut Vec<u8>) -> Result<(), Malformed> {
        edits.clear();
        let mut pos = 0;
        let mut fields_seen = false;
        while let Some(&first) = block.get(pos) {
            let start = pos;
            if first & 0x80 != 0 {
                // Indexed field.
                let entry = self.get(read_int(block, &mut pos, 7)?)?;
                if entry.bad_authority {
                    edits.push(Edit { cut: start..pos, literal: true, fill: Fill::Localhost });
                }
                fields_seen = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field,
                // never above what the server allows.
                let size = read_int(block, &mut pos, 5)?;
                if fields_seen || size > TABLE_SIZE_MAX {
                    return Err(Malformed);
                }
                self.set_max_size(size);
            } else {
                // Literal: with incremental indexing (01), without (0000)
                // or never indexed (0001).
                let indexing = first & 0x40 != 0;
                let index = read_int(block, &mut pos, if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    let name = read_string(block, &mut pos)?.decode(scratch)?;
                    Name { len: name.len(), authority: name == AUTHORITY }
                } else {
                    self.get(index)?.name
                };
                let value_start = pos;
                let value = read_string(block, &mut pos)?;
                let mut value_len = 0;
                let mut bad_authority = false;
                if name.authority {
                    let value = value.decode(scratch)?;
                    value_len = value.len();
                    if http::uri::Authority::try_from(value).is_err() {
                        if indexing && value_len == 0 {
                            // No valid authority has the length 0.
                            bad_authority = true;
                        } else {
                            let fill = if value_len == 0 { Fill::Localhost } else { Fill::Repeat(value_len) };
                            edits.push(Edit { cut: value_start..pos, literal: false, fill });
                        }
                    }
                } else if indexing {
                    value_len = value.decoded_len(scratch)?;
                }
                if indexing {
                    let size = name.len.saturating_add(value_len).saturating_add(ENTRY_OVERHEAD);
                    self.insert(Entry { name, size, bad_authority });
                }
                fields_seen = true;
            }
        }
        Ok(())
    }
}

/// `block` with `edits` (in order, not overlapping) applied.
fn apply_edits(block: &[u8], edits: &[Edit]) -> Vec<u8> {
    let extra: usize = edits
        .iter()
        .map(|edit| match edit.fill {
            Fill::Repeat(n) => n + 6,
            Fill::Localhost => EMPTY_AUTHORITY_FILL.len() + 2,
        })
        .sum();
    let mut out = Vec::with_capacity(block.len() + extra);
    let mut at = 0;
    for edit in edits {
        out.extend_from_slice(block.get(at..edit.cut.start).unwrap_or_default());
        if edit.literal {
            out.push(LITERAL_AUTHORITY);
        }
        match edit.fill {
            Fill::Repeat(n) => {
                encode_int(&mut out, n, 7, 0);
                out.resize(out.len() + n, b'a');
            }
            Fill::Localhost => {
                encode_int(&mut out, EMPTY_AUTHORITY_FILL.len(), 7, 0);
                out.extend_from_slice(EMPTY_AUTHORITY_FILL);
            }
        }
        at = edit.cut.end;
    }
    out.extend_from_slice(block.get(at..).unwrap_or_default());
    out
}

/// Reads an integer with a `prefix`-bit prefix (RFC 7541, section 5.1) at
/// `*pos`. Like h2's decoder, allows at most four continuation bytes.
fn read_int(block: &[u8], pos: &mut usize, prefix: u32) -> Result<usize, Malformed> {
    let mask = (1usize << prefix) - 1;
    let first = *block.get(*pos).ok_or(Malformed)?;
    *pos += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    for shift in [0, 7, 14, 21] {
        let byte = *block.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed)
}

/// Appends `value` as an integer with a `prefix`-bit prefix, the bits above
/// the prefix in the first byte taken from `flags`.
fn encode_int(out: &mut Vec<u8>, value: usize, prefix: u32, flags: u8) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A string literal as it is in the block.
#[derive(Clone, Copy, Debug)]
struct StringRef<'a> {
    huffman: bool,
    bytes: &'a [u8],
}

/// Reads a string literal (H bit, 7-bit prefix length, bytes) at `*pos`.
fn read_string<'a>(block: &'a [u8], pos: &mut usize) -> Result<StringRef<'a>, Malformed> {
    let huffman = block.get(*pos).ok_or(Malformed)? & 0x80 != 0;
    let len = read_int(block, pos, 7)?;
    let end = pos.checked_add(len).ok_or(Malformed)?;
    let bytes = block.get(*pos..end).ok_or(Malformed)?;
    *pos = end;
    Ok(StringRef { huffman, bytes })
}

impl<'a> StringRef<'a> {
    /// The string's octets, Huffman-decoded into `scratch` if need be.
    fn decode(self, scratch: &'a mut Vec<u8>) -> Result<&'a [u8], Malformed> {
        if !self.huffman {
            return Ok(self.bytes);
        }
        scratch.clear();
        huffman_decode(self.bytes, scratch)?;
        Ok(scratch)
    }

    /// The number of octets the string decodes to.
    fn decoded_len(self, scratch: &mut Vec<u8>) -> Result<usize, Malformed> {
        if !self.huffman {
            return Ok(self.bytes.len());
        }
        scratch.clear();
        huffman_decode(self.bytes, scratch)?;
        Ok(scratch.len())
    }
}

// ------------------------------------------------------------------ Huffman

/// Code length in bits of every symbol of the HPACK Huffman code (RFC 7541,
/// Appendix B): octets 0 to 255, then EOS. The code is canonical (codes
/// ordered by length, then by symbol), so the lengths define it.
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240
    30, // EOS
];

/// The end-of-string symbol; decoding it is an error.
const EOS: u16 = 256;
/// The longest code.
const CODE_BITS_MAX: u32 = 30;

/// The canonical code in decoding form, per code length `l`: the first code
/// of that length, how many codes have it, and where their symbols start in
/// `symbols` (all symbols ordered by code length, then value).
struct Canonical {
    first: [u32; 31],
    count: [u32; 31],
    offset: [u16; 31],
    symbols: [u16; 257],
    shortest: u32,
}

static HUFFMAN: Canonical = Canonical::build(&HUFFMAN_CODE_LENGTHS);

impl Canonical {
    const fn build(lengths: &[u8; 257]) -> Canonical {
        let mut count = [0u32; 31];
        let mut i = 0;
        while i < 257 {
            count[lengths[i] as usize] += 1;
            i += 1;
        }
        let mut first = [0u32; 31];
        let mut offset = [0u16; 31];
        let mut symbols = [0u16; 257];
        let mut code = 0u32;
        let mut placed = 0usize;
        let mut shortest = 0;
        let mut len = 1;
        while len <= CODE_BITS_MAX as usize {
            code = (code + count[len - 1]) << 1;
            first[len] = code;
            offset[len] = placed as u16;
            if shortest == 0 && count[len] > 0 {
                shortest = len as u32;
            }
            let mut symbol = 0;
            while symbol < 257 {
                if lengths[symbol] as usize == len {
                    symbols[placed] = symbol as u16;
                    placed += 1;
                }
                symbol += 1;
            }
            len += 1;
        }
        Canonical { first, count, offset, symbols, shortest }
    }

    /// The symbol whose code starts `window` (30 bits, first bit highest)
    /// and its code length.
    fn symbol(&self, window: u32) -> Option<(u16, u32)> {
        let mut len = self.shortest;
        while len <= CODE_BITS_MAX {
            let top = window >> (CODE_BITS_MAX - len);
            let l = len as usize;
            if top < self.first[l] + self.count[l] {
                let at = usize::from(self.offset[l]) + (top - self.first[l]) as usize;
                return self.symbols.get(at).map(|&symbol| (symbol, len));
            }
            len += 1;
        }
        None
    }
}

/// Decodes a Huffman-coded string (RFC 7541, section 5.2) onto `out`.
/// Refuses EOS inside the string and padding that is longer than 7 bits or
/// not all ones, as h2 does.
fn huffman_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
    const WINDOW_MASK: u64 = (1 << CODE_BITS_MAX) - 1;
    let ones = |bits: u32| (1u64 << bits) - 1;
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &byte in src {
        acc = (acc << 8) | u64::from(byte);
        bits += 8;
        while bits >= CODE_BITS_MAX {
            let window = ((acc >> (bits - CODE_BITS_MAX)) & WINDOW_MASK) as u32;
            let (symbol, len) = HUFFMAN.symbol(window).ok_or(Malformed)?;
            if symbol == EOS {
                return Err(Malformed);
            }
            out.push(symbol as u8);
            bits -= len;
        }
    }
    // Fewer than 30 bits left: complete the window with ones (the start of
    // EOS); a code that fits in the real bits is a symbol, the rest padding.
    while bits > 0 {
        let pad = CODE_BITS_MAX - bits;
        let window = ((((acc & ones(bits)) << pad) | ones(pad)) & WINDOW_MASK) as u32;
        let (symbol, len) = HUFFMAN.symbol(window).ok_or(Malformed)?;
        if len > bits {
            break;
        }
        if symbol == EOS {
            return Err(Malformed);
        }
        out.push(symbol as u8);
        bits -= len;
    }
    if bits > 7 || acc & ones(bits) != ones(bits) {
        return Err(Malformed);
    }
    Ok(())
}

// ------------------------------------------------------------------ tests

/// Builders and a full HPACK decoder for tests (here and in `tests.rs`).
#[cfg(test)]
pub(super) mod testing {
    use std::collections::VecDeque;
    use std::task::Waker;

    use super::*;

    /// The HTTP/2 client preface.
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const HEADERS: u8 = FRAME_HEADERS;
    pub const CONTINUATION: u8 = FRAME_CONTINUATION;
    pub const DATA: u8 = 0x0;
    pub const SETTINGS: u8 = 0x4;
    pub const END_STREAM: u8 = FLAG_END_STREAM;
    pub const END_HEADERS: u8 = FLAG_END_HEADERS;
    pub const PADDED: u8 = FLAG_PADDED;
    pub const PRIORITY: u8 = FLAG_PRIORITY;

    /// One frame.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_head(&mut out, payload.len(), kind, flags, stream);
        out.put_slice(payload);
        out.to_vec()
    }

    /// The code and its length of every symbol, from the canonical table.
    pub fn huffman_codes() -> Vec<(u32, u32)> {
        let mut codes = vec![(0, 0); 257];
        for len in 1..=CODE_BITS_MAX as usize {
            let start = usize::from(HUFFMAN.offset[len]);
            for k in 0..HUFFMAN.count[len] {
                let symbol = usize::from(HUFFMAN.symbols[start + k as usize]);
                codes[symbol] = (HUFFMAN.first[len] + k, len as u32);
            }
        }
        codes
    }

    pub fn huffman_encode(src: &[u8]) -> Vec<u8> {
        let codes = huffman_codes();
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u64, 0u32);
        for &byte in src {
            let (code, len) = codes[usize::from(byte)];
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        out
    }

    /// A string literal, Huffman-coded or raw.
    pub fn string(value: &[u8], huffman: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if huffman {
            let coded = huffman_encode(value);
            encode_int(&mut out, coded.len(), 7, 0x80);
            out.extend_from_slice(&coded);
        } else {
            encode_int(&mut out, value.len(), 7, 0);
            out.extend_from_slice(value);
        }
        out
    }

    /// Literal with incremental indexing (`0x40`), without indexing
    /// (`0x00`) or never indexed (`0x10`): the name by static or dynamic
    /// `index`, or given (index 0).
    pub fn literal(kind: u8, index: usize, name: &[u8], value: &[u8], huffman: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(&mut out, index, if kind == 0x40 { 6 } else { 4 }, kind);
        if index == 0 {
            out.extend(string(name, huffman));
        }
        out.extend(string(value, huffman));
        out
    }

    /// Indexed field.
    pub fn indexed(index: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_int(&mut out, index, 7, 0x80);
        out
    }

    /// Values of the static table entries that have one.
    fn static_value(index: usize) -> &'static [u8] {
        match index {
            2 => b"GET",
            3 => b"POST",
            4 => b"/",
            5 => b"/index.html",
            6 => b"http",
            7 => b"https",
            8 => b"200",
            9 => b"204",
            10 => b"206",
            11 => b"304",
            12 => b"400",
            13 => b"404",
            14 => b"500",
            16 => b"gzip, deflate",
            _ => b"",
        }
    }

    /// A full HPACK decoder with values, to check what h2 would decode.
    /// Panics on anything malformed.
    #[derive(Default)]
    pub struct Decoder {
        pub entries: VecDeque<(Vec<u8>, Vec<u8>)>,
        pub size: usize,
        max_size: Option<usize>,
    }

    pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    impl Decoder {
        fn get(&self, index: usize) -> (Vec<u8>, Vec<u8>) {
            if (1..=61).contains(&index) {
                (STATIC_NAMES[index - 1].as_bytes().to_vec(), static_value(index).to_vec())
            } else {
                self.entries.get(index - 62).cloned().expect("index in the table")
            }
        }

        pub fn decode(&mut self, block: &[u8]) -> Fields {
            let mut fields = Vec::new();
            let mut pos = 0;
            let mut scratch = Vec::new();
            while let Some(&first) = block.get(pos) {
                if first & 0x80 != 0 {
                    fields.push(self.get(read_int(block, &mut pos, 7).expect("index")));
                } else if first & 0xe0 == 0x20 {
                    let size = read_int(block, &mut pos, 5).expect("size");
                    self.max_size = Some(size);
                    self.evict(0);
                } else {
                    let indexing = first & 0x40 != 0;
                    let index = read_int(block, &mut pos, if indexing { 6 } else { 4 }).expect("name index");
                    let name = if index == 0 {
                        read_string(block, &mut pos).and_then(|s| s.decode(&mut scratch)).expect("name").to_vec()
                    } else {
                        self.get(index).0
                    };
                    let value =
                        read_string(block, &mut pos).and_then(|s| s.decode(&mut scratch)).expect("value").to_vec();
                    if indexing {
                        let size = name.len() + value.len() + ENTRY_OVERHEAD;
                        self.evict(size);
                        if self.size + size <= self.max() {
                            self.size += size;
                            self.entries.push_front((name.clone(), value.clone()));
                        }
                    }
                    fields.push((name, value));
                }
            }
            fields
        }

        fn max(&self) -> usize {
            self.max_size.unwrap_or(TABLE_SIZE_MAX)
        }

        fn evict(&mut self, room: usize) {
            while self.size + room > self.max() {
                let Some((name, value)) = self.entries.pop_back() else { break };
                self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
            }
        }
    }

    /// A frame: kind, flags, stream, payload.
    pub type Frame = (u8, u8, u32, Vec<u8>);

    /// The complete frames at the start of `stream` (after the preface, if
    /// it starts with one) and how many bytes they and the preface took.
    pub fn split_frames(stream: &[u8]) -> (Vec<Frame>, usize) {
        let mut at = if stream.starts_with(PREFACE) { PREFACE.len() } else { 0 };
        let mut out = Vec::new();
        while let Some(head) = FrameHead::parse(&stream[at..]) {
            let Some(payload) = stream.get(at + FRAME_HEAD_LEN..at + FRAME_HEAD_LEN + head.len) else {
                break;
            };
            out.push((head.kind, head.flags, head.stream, payload.to_vec()));
            at += FRAME_HEAD_LEN + head.len;
        }
        (out, at)
    }

    /// The frames of a whole byte stream.
    pub fn frames(stream: &[u8]) -> Vec<Frame> {
        let (frames, used) = split_frames(stream);
        assert_eq!(used, stream.len(), "trailing bytes after the last frame");
        frames
    }

    /// An in-memory stream that yields at most `chunk` bytes per read, then
    /// either ends or stays open (pending).
    pub struct Chunked {
        pub data: Vec<u8>,
        pub at: usize,
        pub chunk: usize,
        pub stays_open: bool,
    }

    impl AsyncRead for Chunked {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = self.chunk.min(self.data.len() - self.at).min(buf.remaining());
            if n == 0 && self.stays_open {
                return Poll::Pending;
            }
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    /// Everything an `AuthorityFix` lets through of `input`, read `chunk`
    /// bytes at a time from below and with `buf_len`-byte buffers above.
    pub fn run_through(input: &[u8], chunk: usize, buf_len: usize, block_max: usize) -> Vec<u8> {
        let inner = Chunked { data: input.to_vec(), at: 0, chunk, stays_open: false };
        let mut fix = AuthorityFix::new(inner, block_max);
        let mut cx = Context::from_waker(Waker::noop());
        let mut storage = vec![0u8; buf_len];
        let mut out = Vec::new();
        loop {
            let mut buf = ReadBuf::new(&mut storage);
            match Pin::new(&mut fix).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return out,
                Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
                Poll::Ready(Err(err)) => panic!("read failed: {err}"),
                Poll::Pending => panic!("an in-memory stream never waits"),
            }
        }
    }

    /// The header blocks of a byte stream (stream id, joined fragment),
    /// checking each frame against `max_frame`.
    pub fn header_blocks(stream: &[u8], max_frame: usize) -> Vec<(u32, Vec<u8>)> {
        let mut blocks: Vec<(u32, Vec<u8>)> = Vec::new();
        for (kind, flags, id, payload) in frames(stream) {
            assert!(payload.len() <= max_frame, "frame of {} bytes", payload.len());
            if kind == FRAME_HEADERS {
                let head = FrameHead { len: payload.len(), kind, flags, stream: id };
                let parsed = HeadersPayload::parse(head, &payload).expect("valid HEADERS");
                blocks.push((id, parsed.fragment.to_vec()));
            } else if kind == FRAME_CONTINUATION {
                blocks.last_mut().expect("CONTINUATION after HEADERS").1.extend_from_slice(&payload);
            }
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::testing::*;
    use super::*;

    fn rewrite(input: &[u8]) -> Vec<u8> {
        run_through(input, usize::MAX, 64 * 1024, 64 * 1024)
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("?"), 16).expect("hex digits"))
            .collect()
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    /// Connection start: preface and an empty SETTINGS frame.
    fn start() -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    /// The request pseudo-headers of a gRPC call before `:authority`.
    fn request_head() -> Vec<u8> {
        let mut out = indexed(3); // :method POST
        out.extend(indexed(6)); // :scheme http
        out.extend(literal(0x00, 4, b"", b"/test.Echo/Unary", false)); // :path
        out
    }

    fn authority_of(fields: &Fields) -> Vec<u8> {
        fields.iter().find(|(n, _)| n == AUTHORITY).map(|(_, v)| v.clone()).expect(":authority present")
    }

    fn assert_valid_authority(fields: &Fields) {
        let value = authority_of(fields);
        assert!(http::uri::Authority::try_from(value.as_slice()).is_ok(), "{:?}", String::from_utf8_lossy(&value));
    }

    #[test]
    fn integers_decode_like_rfc7541_c1() {
        let mut pos = 0;
        assert_eq!(read_int(&[0x0a], &mut pos, 5), Ok(10));
        pos = 0;
        assert_eq!(read_int(&[0x1f, 0x9a, 0x0a], &mut pos, 5), Ok(1337));
        assert_eq!(pos, 3);
        pos = 0;
        assert_eq!(read_int(&[0x2a], &mut pos, 8), Ok(42));
        // The prefix bits above the prefix are not part of the value.
        pos = 0;
        assert_eq!(read_int(&[0xea], &mut pos, 5), Ok(10));
        for value in [0, 14, 15, 16, 127, 128, 1337, 65_535, 1 << 20] {
            let mut out = Vec::new();
            encode_int(&mut out, value, 4, 0x10);
            pos = 0;
            assert_eq!(read_int(&out, &mut pos, 4), Ok(value));
            assert_eq!(pos, out.len());
        }
        // Truncated, and more continuation bytes than h2 allows.
        pos = 0;
        assert_eq!(read_int(&[0x1f, 0x9a], &mut pos, 5), Err(Malformed));
        pos = 0;
        assert_eq!(read_int(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x01], &mut pos, 5), Err(Malformed));
    }

    #[test]
    fn strings_decode_raw_and_huffman_like_rfc7541_c() {
        let mut scratch = Vec::new();
        let raw = hex("0f 7777 772e 6578 616d 706c 652e 636f 6d");
        let mut pos = 0;
        let s = read_string(&raw, &mut pos).expect("raw string");
        assert_eq!(s.decode(&mut scratch), Ok(&b"www.example.com"[..]));
        let coded = hex("8c f1e3 c2e5 f23a 6ba0 ab90 f4ff");
        pos = 0;
        let s = read_string(&coded, &mut pos).expect("huffman string");
        assert_eq!(s.decode(&mut scratch), Ok(&b"www.example.com"[..]));
        assert_eq!(s.decoded_len(&mut scratch), Ok(15));
        // A length past the end of the block.
        pos = 0;
        assert!(read_string(&hex("85 6162"), &mut pos).is_err());
    }

    #[test]
    fn huffman_code_is_rfc7541_appendix_b() {
        let codes = huffman_codes();
        // Complete prefix code: the Kraft sum is exactly 1.
        let kraft: u64 = codes.iter().map(|&(_, len)| 1u64 << (CODE_BITS_MAX - len)).sum();
        assert_eq!(kraft, 1 << CODE_BITS_MAX);
        // Spot checks against the table.
        assert_eq!(codes[usize::from(b'0')], (0x0, 5));
        assert_eq!(codes[usize::from(b'a')], (0x3, 5));
        assert_eq!(codes[usize::from(b' ')], (0x14, 6));
        assert_eq!(codes[usize::from(b':')], (0x5c, 7));
        assert_eq!(codes[usize::from(b'X')], (0xfc, 8));
        assert_eq!(codes[usize::from(b'\\')], (0x7fff0, 19));
        assert_eq!(codes[0], (0x1ff8, 13));
        assert_eq!(codes[10], (0x3ffffffc, 30));
        assert_eq!(codes[255], (0x3ffffee, 26));
        assert_eq!(codes[256], (0x3fffffff, 30));
        // Every octet round-trips.
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let mut out = Vec::new();
        assert_eq!(huffman_decode(&huffman_encode(&all), &mut out), Ok(()));
        assert_eq!(out, all);
    }

    #[test]
    fn huffman_decodes_rfc7541_c4_and_c6_strings() {
        let cases: [(&str, &str); 6] = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
        ];
        for (coded, text) in cases {
            let mut out = Vec::new();
            assert_eq!(huffman_decode(&hex(coded), &mut out), Ok(()), "{text}");
            assert_eq!(out, text.as_bytes());
            assert_eq!(huffman_encode(text.as_bytes()), hex(coded), "{text}");
        }
        let mut out = Vec::new();
        assert_eq!(huffman_decode(&[], &mut out), Ok(()));
        assert!(out.is_empty());
    }

    #[test]
    fn huffman_refuses_eos_and_bad_padding() {
        let mut out = Vec::new();
        // EOS (30 ones) inside the string.
        assert_eq!(huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out), Err(Malformed));
        // 'a' (00011) then a whole octet of padding.
        assert_eq!(huffman_decode(&[0x1f, 0xff], &mut out), Err(Malformed));
        // 'a' then padding that is not all ones.
        assert_eq!(huffman_decode(&[0x18], &mut out), Err(Malformed));
        out.clear();
        assert_eq!(huffman_decode(&[0x1f], &mut out), Ok(()));
        assert_eq!(out, b"a");
    }

    #[test]
    fn shadow_follows_rfc7541_c3_and_c4_requests() {
        let c3 = [
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ];
        let c4 = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ];
        let expected = [
            fields(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ]),
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ]),
        ];
        for blocks in [c3, c4] {
            let mut shadow = Shadow::new();
            let mut decoder = Decoder::default();
            let (mut edits, mut scratch) = (Vec::new(), Vec::new());
            for ((block, sizes), want) in blocks.iter().zip([[57, 0, 0], [53, 57, 0], [54, 53, 57]]).zip(&expected) {
                let block = hex(block);
                assert_eq!(shadow.scan(&block, &mut edits, &mut scratch), Ok(()));
                assert!(edits.is_empty());
                let got: Vec<usize> = shadow.entries.iter().map(|e| e.size).collect();
                let want_sizes: Vec<usize> = sizes.into_iter().filter(|&s| s > 0).collect();
                assert_eq!(got, want_sizes);
                assert_eq!(shadow.size, want_sizes.iter().sum::<usize>());
                assert_eq!(&decoder.decode(&block), want);
            }
            assert!(shadow.entries[2].name.authority);
        }
    }

    #[test]
    fn shadow_evicts_and_obeys_size_updates() {
        let mut shadow = Shadow::new();
        let (mut edits, mut scratch) = (Vec::new(), Vec::new());
        // Two 1000-byte entries, then a size update to 1100 keeps one.
        let value = vec![b'v'; 1000 - 32 - 3];
        let mut block = literal(0x40, 0, b"x-a", &value, false);
        block.extend(literal(0x40, 0, b"x-b", &value, true));
        assert_eq!(shadow.scan(&block, &mut edits, &mut scratch), Ok(()));
        assert_eq!(shadow.size, 2000);
        let mut resize = Vec::new();
        encode_int(&mut resize, 1100, 5, 0x20);
        assert_eq!(shadow.scan(&resize, &mut edits, &mut scratch), Ok(()));
        assert_eq!((shadow.size, shadow.entries.len()), (1000, 1));
        // An entry larger than the table empties it.
        let big = literal(0x40, 0, b"x-c", &vec![b'w'; 1100], false);
        assert_eq!(shadow.scan(&big, &mut edits, &mut scratch), Ok(()));
        assert_eq!((shadow.size, shadow.entries.len()), (0, 0));
        // Above the allowed maximum, or after a field: malformed.
        resize.clear();
        encode_int(&mut resize, TABLE_SIZE_MAX + 1, 5, 0x20);
        assert_eq!(shadow.scan(&resize, &mut edits, &mut scratch), Err(Malformed));
        let mut late = indexed(2);
        late.push(0x20);
        assert_eq!(Shadow::new().scan(&late, &mut edits, &mut scratch), Err(Malformed));
        assert_eq!(Shadow::new().scan(&indexed(62), &mut edits, &mut scratch), Err(Malformed));
        assert_eq!(Shadow::new().scan(&indexed(0), &mut edits, &mut scratch), Err(Malformed));
    }

    /// Preface, SETTINGS, and one HEADERS frame per block (stream 1, 3,
    /// ...), each followed by a DATA frame.
    fn requests(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut input = start();
        for (i, block) in blocks.iter().enumerate() {
            let stream = 1 + 2 * i as u32;
            input.extend(frame(HEADERS, END_HEADERS, stream, block));
            input.extend(frame(DATA, END_STREAM, stream, b"\0\0\0\0\x05hello"));
        }
        input
    }

    /// Decodes every header block of `output` in order.
    fn decode_all(output: &[u8]) -> Vec<Fields> {
        let mut decoder = Decoder::default();
        header_blocks(output, MAX_FRAME_PAYLOAD as usize).iter().map(|(_, block)| decoder.decode(block)).collect()
    }

    #[test]
    fn indexed_bad_authority_is_rewritten_and_later_references_resolve_to_it() {
        let bad = b"http://127.0.0.1:2379";
        let mut first = request_head();
        first.extend(literal(0x40, 1, b"", bad, false));
        first.extend(literal(0x40, 31, b"", b"application/grpc", false));
        let mut second = request_head();
        second.extend(indexed(63)); // :authority, now second newest
        second.extend(indexed(62)); // content-type
        let input = requests(&[first.clone(), second.clone()]);
        let output = rewrite(&input);
        let decoded = decode_all(&output);
        assert_eq!(authority_of(&decoded[0]), vec![b'a'; bad.len()]);
        assert_eq!(authority_of(&decoded[1]), vec![b'a'; bad.len()]);
        assert_eq!(decoded[1].last(), Some(&(b"content-type".to_vec(), b"application/grpc".to_vec())));
        // The second block and everything but the first block's value is
        // byte for byte what the client sent.
        let blocks = header_blocks(&output, MAX_FRAME_PAYLOAD as usize);
        assert_eq!(blocks[1].1, second);
        let mut expected = request_head();
        expected.extend(literal(0x40, 1, b"", &vec![b'a'; bad.len()], false));
        expected.extend(literal(0x40, 31, b"", b"application/grpc", false));
        assert_eq!(blocks[0].1, expected);
        assert_eq!(output.len(), input.len());
    }

    #[test]
    fn huffman_coded_bad_authorities_become_raw_literals() {
        let bad = b"#initially=[https://example.com:2379]";
        for kind in [0x40, 0x00, 0x10] {
            let mut block = request_head();
            block.extend(literal(kind, 0, AUTHORITY, bad, true));
            let mut again = request_head();
            again.extend(literal(0x00, if kind == 0x40 { 62 } else { 1 }, b"", b"h:1", true));
            let output = rewrite(&requests(&[block, again]));
            let decoded = decode_all(&output);
            assert_eq!(authority_of(&decoded[0]), vec![b'a'; bad.len()], "kind {kind:#x}");
            assert_eq!(authority_of(&decoded[1]), b"h:1");
            let blocks = header_blocks(&output, MAX_FRAME_PAYLOAD as usize);
            let mut expected = request_head();
            expected.push(kind);
            expected.extend(string(AUTHORITY, true));
            expected.extend(string(&vec![b'a'; bad.len()], false));
            assert_eq!(blocks[0].1, expected);
        }
    }

    #[test]
    fn valid_authorities_and_other_frames_pass_unchanged() {
        let mut first = request_head();
        first.extend(literal(0x40, 1, b"", b"127.0.0.1:2379", true));
        first.extend(literal(0x10, 0, b"token", b"secret", true));
        let mut second = request_head();
        second.extend(indexed(62));
        let mut input = requests(&[first, second]);
        input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        input.extend(frame(0x6, 0, 0, &[7; 8])); // PING
        input.extend(frame(0xfa, 0x3, 5, b"unknown type"));
        assert_eq!(rewrite(&input), input);
    }

    #[test]
    fn bad_authority_split_across_continuation_frames() {
        let bad = b"http://127.0.0.1:1234";
        let mut block = request_head();
        block.extend(literal(0x40, 1, b"", bad, true));
        block.extend(literal(0x00, 31, b"", b"application/grpc", false));
        // Split inside the authority value, and once more after it.
        let cut = request_head().len() + 3;
        let mut input = start();
        input.extend(frame(HEADERS, END_STREAM, 1, &block[..cut]));
        input.extend(frame(CONTINUATION, 0, 1, &block[cut..cut + 12]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[cut + 12..]));
        let mut second = request_head();
        second.extend(indexed(62));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let output = rewrite(&input);
        let out_frames = frames(&output);
        // One HEADERS frame with END_HEADERS, END_STREAM kept.
        assert_eq!(out_frames[1].0, HEADERS);
        assert_eq!(out_frames[1].1, END_HEADERS | END_STREAM);
        assert_eq!(out_frames[2].0, HEADERS);
        let decoded = decode_all(&output);
        assert_eq!(authority_of(&decoded[0]), vec![b'a'; bad.len()]);
        assert_eq!(authority_of(&decoded[1]), vec![b'a'; bad.len()]);
    }

    #[test]
    fn padded_and_prioritized_headers_are_rewritten_without_padding() {
        let bad = b"http://[::1]:2379/";
        let mut block = request_head();
        block.extend(literal(0x40, 1, b"", bad, false));
        let priority = [0x80, 0, 0, 3, 200];
        let mut payload = vec![4u8];
        payload.extend(priority);
        payload.extend(&block);
        payload.extend([0; 4]);
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 5, &payload));
        let output = rewrite(&input);
        let out_frames = frames(&output);
        let (kind, flags, stream, payload) = &out_frames[1];
        assert_eq!((*kind, *flags, *stream), (HEADERS, END_HEADERS | PRIORITY, 5));
        assert_eq!(payload[..5], priority);
        let decoded = decode_all(&output);
        assert_eq!(authority_of(&decoded[0]), vec![b'a'; bad.len()]);
        // Padded without priority, valid authority: unchanged.
        let mut good = request_head();
        good.extend(literal(0x40, 1, b"", b"localhost:2379", false));
        let mut payload = vec![2u8];
        payload.extend(&good);
        payload.extend([0; 2]);
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &payload));
        assert_eq!(rewrite(&input), input);
    }

    #[test]
    fn every_split_of_the_stream_gives_the_same_bytes() {
        let mut first = request_head();
        first.extend(literal(0x40, 1, b"", b"http://127.0.0.1:2379", true));
        let mut second = request_head();
        second.extend(indexed(62));
        let mut third = request_head();
        third.extend(literal(0x00, 1, b"", b"#initially=[http://h:1]", false));
        let mut input = requests(&[first, second, third]);
        input.extend(frame(DATA, 0, 7, &[9; 300]));
        let whole = rewrite(&input);
        assert_ne!(whole, input);
        for chunk in 1..=40 {
            for buf_len in [1, 7, 64, 4096] {
                assert_eq!(run_through(&input, chunk, buf_len, 64 * 1024), whole, "chunk {chunk}, buffer {buf_len}");
            }
        }
        assert_eq!(run_through(&input, 997, 13, 64 * 1024), whole);
    }

    #[test]
    fn data_is_forwarded_before_its_frame_is_complete() {
        let mut input = start();
        let data = frame(DATA, 0, 1, &[5; 1000]);
        input.extend(&data[..600]);
        let inner = Chunked { data: input.clone(), at: 0, chunk: usize::MAX, stays_open: true };
        let mut fix = AuthorityFix::new(inner, 64 * 1024);
        let mut cx = Context::from_waker(Waker::noop());
        let mut storage = vec![0u8; 4096];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(matches!(Pin::new(&mut fix).poll_read(&mut cx, &mut buf), Poll::Ready(Ok(()))));
        assert_eq!(buf.filled(), &input[..]);
        let mut buf = ReadBuf::new(&mut storage);
        assert!(Pin::new(&mut fix).poll_read(&mut cx, &mut buf).is_pending());
    }

    #[test]
    fn empty_authority_becomes_localhost_where_the_length_may_change() {
        let mut block = request_head();
        block.extend(indexed(1)); // static `:authority` with an empty value
        let mut other = request_head();
        other.extend(literal(0x00, 1, b"", b"", false));
        let mut third = request_head();
        third.extend(literal(0x40, 1, b"", b"", false)); // cannot be fixed
        let mut fourth = request_head();
        fourth.extend(indexed(62)); // ... but references to it can
        let output = rewrite(&requests(&[block, other, third, fourth]));
        let decoded = decode_all(&output);
        assert_eq!(authority_of(&decoded[0]), b"localhost");
        assert_eq!(authority_of(&decoded[1]), b"localhost");
        assert_eq!(authority_of(&decoded[2]), b"");
        assert_eq!(authority_of(&decoded[3]), b"localhost");
    }

    #[test]
    fn rewritten_block_larger_than_a_frame_is_split() {
        let mut bad = b"/".to_vec();
        bad.extend(vec![b'a'; 20_000]);
        let mut block = request_head();
        block.extend(literal(0x00, 1, b"", &bad, true));
        assert!(block.len() < MAX_FRAME_PAYLOAD as usize);
        let output = rewrite(&requests(&[block]));
        let out_frames = frames(&output);
        assert_eq!((out_frames[1].0, out_frames[1].1), (HEADERS, 0));
        assert_eq!((out_frames[2].0, out_frames[2].1), (CONTINUATION, END_HEADERS));
        assert_eq!(out_frames[3].0, DATA);
        let decoded = decode_all(&output);
        assert_eq!(authority_of(&decoded[0]).len(), bad.len());
        assert_valid_authority(&decoded[0]);
    }

    #[test]
    fn malformed_or_oversized_blocks_pass_unchanged_and_stop_rewriting() {
        let mut bad = request_head();
        bad.extend(literal(0x00, 1, b"", b"http://h:1", false));
        // A reference to a missing dynamic entry: h2 fails the connection.
        let mut broken = request_head();
        broken.extend(indexed(70));
        let input = requests(&[broken, bad.clone()]);
        assert_eq!(rewrite(&input), input);
        // A block over the bound.
        let mut big = request_head();
        big.extend(literal(0x00, 0, b"x-big", &vec![b'b'; 5000], false));
        let input = requests(&[big, bad.clone()]);
        assert_eq!(run_through(&input, usize::MAX, 4096, 4096), input);
        assert_ne!(run_through(&input, usize::MAX, 4096, 8192), input);
        // A DATA frame inside a header block.
        let mut input = start();
        input.extend(frame(HEADERS, 0, 1, &bad));
        input.extend(frame(DATA, 0, 1, b"x"));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &[]));
        assert_eq!(rewrite(&input), input);
        // A stream that ends inside a frame header or a header block is
        // forwarded as it is; a complete block before the end is rewritten.
        let input = requests(&[bad]);
        for cut in [30, 40, 60] {
            assert_eq!(rewrite(&input[..cut]), &input[..cut]);
        }
        let cut = &input[..input.len() - 3];
        assert_eq!(rewrite(cut).len(), cut.len());
        assert_ne!(rewrite(cut), cut);
    }

    #[test]
    fn self_dependent_headers_leave_the_table_alone() {
        let mut block = literal(0x40, 0, b"x-one", b"1", false);
        block.extend(request_head());
        let mut payload = vec![0, 0, 0, 1, 16];
        payload.extend(&block);
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS | PRIORITY, 1, &payload));
        let mut scanner = Scanner::new(64 * 1024, MAX_FRAME_PAYLOAD as usize);
        let mut at = 0;
        while at < input.len() {
            match scanner.step(&input[at..]) {
                Step::Pass(n) => at += n,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(scanner.table.size, 0);
        assert_eq!(scanner.state, State::Head);
    }
}
