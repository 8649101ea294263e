//! Flow-controlled sending on an h2 stream, shared by server and client.
//!
//! h2's `send_data` buffers without limit unless the sender first reserves
//! capacity and waits for it; this module only ever hands h2 as many bytes
//! as the peer's window (and h2's per-stream send buffer) allows, so a slow
//! reader back-pressures the writer instead of growing memory.

use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::SendStream;

use super::codec::{encode, encode_prefix, PREFIX_BYTES};
use super::status::Status;

/// Largest capacity asked for at once; h2 further caps it by its send
/// buffer size.
const RESERVE_BYTES_MAX: usize = 256 * 1024;

/// Messages up to this size are copied behind their prefix into one buffer
/// (one DATA frame); larger ones go out as prefix and payload, uncopied.
const COALESCE_BYTES_MAX: usize = 16 * 1024;

/// A framed message as one or two buffers (prefix and payload).
pub struct Framed {
    pieces: [Bytes; 2],
    next: usize,
}

impl Framed {
    /// Frames `message` for sending.
    pub fn new(message: Bytes) -> Result<Framed, Status> {
        if message.len() <= COALESCE_BYTES_MAX {
            return Ok(Framed { pieces: [encode(&message)?, Bytes::new()], next: 0 });
        }
        let prefix = encode_prefix(message.len()).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "grpc: message of {} bytes exceeds the 4 GiB frame limit",
                message.len()
            ))
        })?;
        debug_assert_eq!(prefix.len(), PREFIX_BYTES);
        Ok(Framed { pieces: [Bytes::copy_from_slice(&prefix), message], next: 0 })
    }

    /// Sends what flow control allows; `Ready(Ok)` once everything is
    /// handed to h2. With `end`, the last DATA frame ends the stream.
    pub fn poll_send(
        &mut self,
        stream: &mut SendStream<Bytes>,
        end: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), h2::Error>> {
        while self.next < self.pieces.len() {
            let last_piece = self.pieces[self.next + 1..].iter().all(Bytes::is_empty);
            let piece = &mut self.pieces[self.next];
            ready!(poll_send_bytes(stream, piece, end && last_piece, cx))?;
            self.next = if last_piece { self.pieces.len() } else { self.next + 1 };
        }
        Poll::Ready(Ok(()))
    }
}

/// Sends all of `data` as capacity becomes available, consuming it from the
/// front, so a `Pending` return can be resumed. Empty `data` with `end`
/// sends an empty DATA frame that ends the stream.
pub fn poll_send_bytes(
    stream: &mut SendStream<Bytes>,
    data: &mut Bytes,
    end: bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(), h2::Error>> {
    if data.is_empty() {
        if end {
            stream.send_data(Bytes::new(), true)?;
        }
        return Poll::Ready(Ok(()));
    }
    while !data.is_empty() {
        let capacity = stream.capacity();
        if capacity == 0 {
            stream.reserve_capacity(data.len().min(RESERVE_BYTES_MAX));
            match ready!(stream.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Poll::Ready(Err(err)),
                None => return Poll::Ready(Err(closed_reason(stream, cx))),
            }
        }
        let piece = data.split_to(capacity.min(data.len()));
        stream.send_data(piece, end && data.is_empty())?;
    }
    // Give back any capacity reserved beyond what was sent.
    stream.reserve_capacity(0);
    Poll::Ready(Ok(()))
}

/// Why a stream can no longer send: the peer's reset reason when there is
/// one, else `STREAM_CLOSED`.
fn closed_reason(stream: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> h2::Error {
    match stream.poll_reset(cx) {
        Poll::Ready(Ok(reason)) => h2::Error::from(reason),
        Poll::Ready(Err(err)) => err,
        Poll::Pending => h2::Error::from(h2::Reason::STREAM_CLOSED),
    }
}
