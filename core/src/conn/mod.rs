//! The two connection state machines and the vocabulary they share.
//!
//! rpcx is asymmetric: only clients assign seqs and only servers push oneway requests, so
//! there is a [`ClientConnection`] and a [`ServerConnection`] rather than one machine with
//! a role flag. Both follow the same drive contract:
//!
//! ```text
//! inputs    handle_input(now, &[u8])   handle_eof(now)   handle_timeout(now)   abort(now, reason)
//! commands  call / cancel (client)      respond / push (server)     close(now, mode)
//! outputs   poll_transmit(&mut buf)     poll_event()                poll_timeout()
//! getters   wants_read()  in_flight()  is_closed()  stats()
//! ```
//!
//! After any input or command the driver drains: transmits, then events, then reads
//! `poll_timeout` once and sleeps until then (or until the socket is readable, writable,
//! or a command arrives). Time only comes in through `now`.

mod budget;
mod client;
mod hooks;
mod server;
mod session;

pub use budget::{DEFAULT_BUDGET_GRACE, DEFAULT_MAX_INFLATIONS, DEFAULT_SERVER_MEMORY, MemoryBudget};
pub use client::{
    CallError, CallOptions, CallRejected, CallSpec, ClientConfig, ClientConnection, ClientEvent, ClientStats,
    ErrorText, ErrorTextFn, RemoteError,
};
pub use hooks::{ClientHookSet, ClientHooks, FinishedCall, OutgoingCall};
pub use server::{
    DEFAULT_FRAME_TIMEOUT, PushError, Request, RequestId, RespondError, Response, ServerConfig, ServerConnection,
    ServerEvent, ServerStats, WORK_PER_PAIR, WORK_PER_TURN,
};
pub use session::{CallTicket, ClientSession, Outcome, PushSink, ReplySlot, SessionConfig, prepare_call};

use crate::wire::DecodeError;

/// How to close a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Stop taking new work; let what is in flight finish (client: responses arrive or
    /// calls hit their deadline; server: the application responds), flush, then close.
    /// A client call without a deadline can keep a graceful close waiting until the
    /// server answers or the connection is lost: use `Immediate` to bound it.
    Graceful,
    /// Stop taking new work; fail (client) or discard (server) what is in flight now,
    /// but still hand out every frame already queued, then close. The server uses this
    /// after an auth failure: the error response goes out, then the connection closes.
    Flush,
    /// Close now: in-flight calls fail and queued frames are dropped.
    Immediate,
}

/// Why a connection ended. Carried by the last event of each machine and by every
/// call that was still in flight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LostReason {
    /// This side closed it ([`CloseMode`]).
    #[error("connection closed locally")]
    LocalClose,
    /// The peer closed the stream between frames.
    #[error("connection closed by peer")]
    PeerClosed,
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed by peer in the middle of a frame ({buffered} bytes)")]
    UnexpectedEof {
        /// Bytes of the partial frame.
        buffered: usize,
    },
    /// The peer broke the protocol (bad magic, oversized or malformed frame, bad
    /// compression).
    #[error("protocol violation: {0}")]
    Protocol(DecodeError),
    /// No heartbeat reply within the maximum wait.
    #[error("no heartbeat reply within {0:?}")]
    HeartbeatTimeout(std::time::Duration),
    /// Nothing was received within the idle/read timeout.
    #[error("idle for {0:?}")]
    IdleTimeout(std::time::Duration),
    /// A frame that had started did not complete within the frame timeout (a peer
    /// trickling bytes).
    #[error("a frame did not complete within {0:?}")]
    FrameTimeout(std::time::Duration),
    /// The server was over its memory budget and this peer, with output queued, took
    /// no bytes for the grace period (see [`MemoryBudget`]).
    #[error("server memory budget exceeded while the peer did not read")]
    MemoryBudget,
    /// An HTTP request on the rpcx port could not be served (malformed, too large, a
    /// protocol turned off); the peer got the HTTP error status first.
    #[error("HTTP: {0}")]
    Http(crate::http::HttpError),
    /// The transport failed (reported by the driver through `abort`).
    #[error("transport error: {0}")]
    Transport(String),
}

/// Earliest of two optional instants.
fn min_instant(a: Option<std::time::Instant>, b: Option<std::time::Instant>) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Largest batch `poll_transmit` appends in one call once a frame is in the buffer.
const TRANSMIT_BATCH: usize = 64 << 10;
