//! The error of a client operation (connect, call, XClient), shared by every runtime
//! crate so that the same `match` works on tokio, smol and std.

use crate::addr::AddrError;
use crate::codec::CodecError;
use crate::conn::{CallError, CallRejected, RemoteError};

/// Why a client operation failed.
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
