//! The error of a client operation (connect, call, XClient), shared by every runtime
//! crate so that the same `match` works on tokio, smol and std.

use crate::addr::AddrError;
use crate::codec::CodecError;
use crate::conn::{CallError, CallRejected, RemoteError};

/// Why a client operation failed.
///
/// `Clone`, so that one dial's failure can be handed to every attempt that waited on
/// it: a clone has the same variant and the same `Display` text (an OS error keeps its
/// code; an error's `source` chain is flattened into its text where the inner type is
/// not `Clone` itself).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address could not be parsed.
    #[error(transparent)]
    Addr(#[from] AddrError),
    /// Connecting failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// Connecting took longer than the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake failed or the server name is invalid.
    #[error("tls: {0}")]
    Tls(String),
    /// The call failed after it was sent (remote error, timeout, connection lost, ...).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The connection refused the call (closing, closed, too large, too many waiting).
    #[error(transparent)]
    Rejected(#[from] CallRejected),
    /// Arguments or reply could not be (de)serialized.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The client has shut down.
    #[error("client is shut down")]
    Shutdown,
    /// No server could be selected (Go: `can not found any server`).
    #[error("can not found any server")]
    NoServer,
    /// A client hook refused the call.
    #[error("{0}")]
    Hook(String),
}

impl Error {
    /// The server's error, if this is one (`__rpcx_error__`). Fail modes never retry it.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Error::Call(CallError::Remote(r)) => Some(r),
            _ => None,
        }
    }

    /// Whether the call (or the connect) timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Call(CallError::TimedOut) | Error::ConnectTimeout)
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Addr(e) => Error::Addr(e.clone()),
            Error::Connect(e) => Error::Connect(clone_io(e)),
            Error::ConnectTimeout => Error::ConnectTimeout,
            Error::Tls(t) => Error::Tls(t.clone()),
            Error::Call(e) => Error::Call(e.clone()),
            Error::Rejected(e) => Error::Rejected(e.clone()),
            Error::Codec(e) => Error::Codec(clone_codec(e)),
            Error::Shutdown => Error::Shutdown,
            Error::NoServer => Error::NoServer,
            Error::Hook(t) => Error::Hook(t.clone()),
        }
    }
}

/// An `io::Error` with the same kind and text (and OS code, if it has one).
fn clone_io(e: &std::io::Error) -> std::io::Error {
    match (e.raw_os_error(), e.get_ref()) {
        (Some(code), _) => std::io::Error::from_raw_os_error(code),
        (None, None) => std::io::Error::from(e.kind()),
        (None, Some(inner)) => std::io::Error::new(e.kind(), inner.to_string()),
    }
}

/// A codec error with the same variant where the inner error is `Clone`, else the
/// library's own text-carrying variant with the same text.
fn clone_codec(e: &CodecError) -> CodecError {
    use rmp_serde::{decode, encode};
    match e {
        CodecError::Unsupported(st) => CodecError::Unsupported(*st),
        CodecError::RawNeedsBytes => CodecError::RawNeedsBytes,
        CodecError::ProtobufNeedsProst => CodecError::ProtobufNeedsProst,
        CodecError::Json(j) => CodecError::Json(<serde_json::Error as serde::de::Error>::custom(j.to_string())),
        CodecError::MsgPackEncode(m) => CodecError::MsgPackEncode(match m {
            encode::Error::UnknownLength => encode::Error::UnknownLength,
            encode::Error::InvalidDataModel(r) => encode::Error::InvalidDataModel(r),
            encode::Error::DepthLimitExceeded => encode::Error::DepthLimitExceeded,
            other => encode::Error::Syntax(other.to_string()),
        }),
        CodecError::MsgPackDecode(m) => CodecError::MsgPackDecode(match m {
            decode::Error::TypeMismatch(marker) => decode::Error::TypeMismatch(*marker),
            decode::Error::OutOfRange => decode::Error::OutOfRange,
            decode::Error::LengthMismatch(n) => decode::Error::LengthMismatch(*n),
            decode::Error::Uncategorized(t) => decode::Error::Uncategorized(t.clone()),
            decode::Error::Utf8Error(u) => decode::Error::Utf8Error(*u),
            decode::Error::DepthLimitExceeded => decode::Error::DepthLimitExceeded,
            other => decode::Error::Syntax(other.to_string()),
        }),
        #[cfg(feature = "protobuf")]
        CodecError::ProtobufEncode(p) => CodecError::ProtobufEncode(*p),
        #[cfg(feature = "protobuf")]
        CodecError::ProtobufDecode(p) => CodecError::ProtobufDecode(p.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::LostReason;

    fn same(e: Error) {
        let c = e.clone();
        assert_eq!(c.to_string(), e.to_string());
        assert_eq!(std::mem::discriminant(&c), std::mem::discriminant(&e));
    }

    #[test]
    fn clones_keep_variant_and_text() {
        same(Error::Connect(std::io::Error::from_raw_os_error(111)));
        same(Error::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        same(Error::Connect(std::io::Error::other("no route")));
        same(Error::ConnectTimeout);
        same(Error::Tls("bad name".into()));
        same(Error::Call(CallError::ConnectionLost(LostReason::PeerClosed)));
        same(Error::Rejected(CallRejected::Blocked));
        same(Error::Shutdown);
        same(Error::NoServer);
        same(Error::Hook("no".into()));
        let json = serde_json::from_str::<u32>("x").unwrap_err();
        same(Error::Codec(CodecError::Json(json)));
        let mp = rmp_serde::from_slice::<String>(&[0xc3]).unwrap_err();
        same(Error::Codec(CodecError::MsgPackDecode(mp)));
        let io = Error::Connect(std::io::Error::from_raw_os_error(111));
        let Error::Connect(c) = io.clone() else { unreachable!() };
        assert_eq!(c.raw_os_error(), Some(111));
        assert_eq!(c.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
