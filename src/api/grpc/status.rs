//! gRPC status codes and statuses: the `grpc-status` / `grpc-message`
//! trailer pair, its percent-encoding, and the mapping from HTTP/2 and I/O
//! failures to a status. Owns no I/O.

use std::fmt;

use http::{HeaderMap, HeaderValue};

/// A gRPC status code, with gRPC's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// An error without a better code.
    Unknown = 2,
    /// The request itself is wrong, whatever the server's state.
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// A requested entity does not exist.
    NotFound = 5,
    /// The entity the call would create exists already.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A quota or limit was hit (message size, buffers, rate).
    ResourceExhausted = 8,
    /// The system is not in a state that allows the call.
    FailedPrecondition = 9,
    /// The call was aborted, e.g. by a conflict.
    Aborted = 10,
    /// A value was outside its valid range.
    OutOfRange = 11,
    /// The method is not implemented or not known.
    Unimplemented = 12,
    /// An invariant broke inside the server or the transport.
    Internal = 13,
    /// The service cannot answer now; retrying may help.
    Unavailable = 14,
    /// Data was lost or corrupted.
    DataLoss = 15,
    /// The call carried no valid credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a number from the wire; numbers outside 0..=16 are
    /// `Unknown`, as gRPC specifies.
    pub fn from_i32(value: i32) -> Code {
        const CODES: [Code; 17] = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
            Code::DataLoss,
            Code::Unauthenticated,
        ];
        usize::try_from(value).ok().and_then(|i| CODES.get(i).copied()).unwrap_or(Code::Unknown)
    }

    /// The code's number on the wire.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// The outcome of a call: a code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    /// What kind of outcome.
    pub code: Code,
    /// Detail for a person; empty for `Ok`.
    pub message: String,
}

impl Status {
    /// A status with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into() }
    }

    /// Success, no message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    /// `true` when the code is `Ok`.
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// `Cancelled` with this message.
    pub fn cancelled(message: impl Into<String>) -> Status {
        Status::new(Code::Cancelled, message)
    }

    /// `InvalidArgument` with this message.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// `ResourceExhausted` with this message.
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }

    /// `Unimplemented` with this message.
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }

    /// `Internal` with this message.
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }

    /// `Unavailable` with this message.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// The status for a failed HTTP/2 operation, following gRPC's mapping
    /// of RST_STREAM / GOAWAY reasons to codes.
    pub fn from_h2(err: &h2::Error) -> Status {
        if err.is_io() {
            return Status::unavailable(format!("connection error: {err}"));
        }
        let code = match err.reason() {
            Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(h2::Reason::CANCEL) => Code::Cancelled,
            Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            _ if err.is_go_away() => Code::Unavailable,
            _ => Code::Internal,
        };
        Status::new(code, format!("http2: {err}"))
    }

    /// The status carried by `grpc-status` / `grpc-message` in `headers`,
    /// or `None` when there is no `grpc-status`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let code = headers.get("grpc-status")?;
        let code = std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32);
        let message = headers.get("grpc-message").map(|v| percent_decode(v.as_bytes())).unwrap_or_default();
        Some(Status::new(code, message))
    }

    /// Adds `grpc-status` and (when non-empty) `grpc-message` to `headers`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("grpc-status", HeaderValue::from(self.code.as_i32()));
        if self.message.is_empty() {
            return;
        }
        let encoded = percent_encode(&self.message);
        // Percent-encoding leaves only visible ASCII, which is always a
        // valid header value; the fallback only guards that reasoning.
        let value =
            HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("invalid status message"));
        headers.insert("grpc-message", value);
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Percent-encodes a status message as gRPC requires: bytes outside
/// visible ASCII (0x20..=0x7E), and `%` itself, become `%XX`.
pub fn percent_encode(message: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// Decodes a percent-encoded status message. Malformed escapes are kept
/// as they are, and invalid UTF-8 is replaced, as gRPC asks of receivers.
pub fn percent_decode(encoded: &[u8]) -> String {
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        let escaped = match encoded.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex_value(*hi).zip(hex_value(*lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(encoded[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips_non_ascii_and_percent() {
        let message = "bad key \u{e9}t\u{e9} 100%\n";
        let encoded = percent_encode(message);
        assert_eq!(encoded, "bad key %C3%A9t%C3%A9 100%25%0A");
        assert_eq!(percent_decode(encoded.as_bytes()), message);
    }

    #[test]
    fn percent_decode_keeps_malformed_escapes() {
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn unknown_code_numbers_map_to_unknown() {
        assert_eq!(Code::from_i32(16), Code::Unauthenticated);
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn status_survives_header_round_trip() {
        let status = Status::new(Code::ResourceExhausted, "too big: 5 vs. 4");
        let mut headers = HeaderMap::new();
        status.write_headers(&mut headers);
        assert_eq!(Status::from_headers(&headers), Some(status));
    }
}
