//! How one attempt ended, reduced to what the policies need: retry it? drop the cached
//! connection? count it for the circuit breaker?

use crate::conn::{CallError, CallRejected};

/// How one call attempt on one server ended.
///
/// | outcome | Failover/Failtry retry | drops the cached connection | circuit breaker |
/// |---|---|---|---|
/// | `Ok` | — | no | success |
/// | `Remote` | **never** | no | success (the server is up and answering) |
/// | `Dial` | yes | (there is none) | failure |
/// | `Transport` | yes | yes | failure |
/// | `Unavailable` | yes | no | not counted |
/// | `TimedOut` | no | no | failure |
/// | `Cancelled` | no | no | not counted |
/// | `Invalid` | no | no | not counted |
///
/// As in Go, a server-reported error (and a reply the client cannot decode, which Go also
/// classes as a `ServiceError`) is final: retrying elsewhere would run a non-idempotent
/// method twice for an application answer. The caller's deadline and cancellation are
/// final too. Unlike Go, `IsServiceError()` is not consulted differently per code path
/// (Go's `SendRaw` Failtry treats any `ServiceError` type as final): one table for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A successful reply (or a oneway request written).
    Ok,
    /// The server answered with an error (`__rpcx_error__`), or its reply could not be
    /// decoded.
    Remote,
    /// No connection could be made (dial, TLS or handshake failure, connect timeout).
    Dial,
    /// The connection failed under the call, or was closing/closed when the call was
    /// offered to it.
    Transport,
    /// Nothing was sent because the server could not take the call right now: its
    /// connection is full ([`CallRejected::Blocked`]) or its circuit breaker refused.
    Unavailable,
    /// The caller's deadline passed before the reply.
    TimedOut,
    /// The caller cancelled, or the policy abandoned this attempt (a Failbackup loser,
    /// a Fork after the winner).
    Cancelled,
    /// The request itself cannot be sent anywhere (too large, unknown compressor).
    Invalid,
}

impl Outcome {
    /// `Ok`.
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }

    /// Whether Failover/Failtry try again after this outcome.
    pub fn is_retryable(self) -> bool {
        matches!(self, Outcome::Dial | Outcome::Transport | Outcome::Unavailable)
    }

    /// Whether the request never reached a connection (so no reply can come).
    pub fn is_unsent(self) -> bool {
        matches!(self, Outcome::Dial | Outcome::Unavailable | Outcome::Invalid)
    }

    /// Whether the runtime should close and forget its cached connection to the server
    /// (Go's `uncoverError`, minus errors that have no connection to drop).
    pub fn drops_connection(self) -> bool {
        self == Outcome::Transport
    }

    /// What a circuit breaker records: `Some(true)` success, `Some(false)` failure,
    /// `None` nothing (Go's breaker only ever sees dial failures; we count calls too).
    pub fn breaker_verdict(self) -> Option<bool> {
        match self {
            Outcome::Ok | Outcome::Remote => Some(true),
            Outcome::Dial | Outcome::Transport | Outcome::TimedOut => Some(false),
            Outcome::Unavailable | Outcome::Cancelled | Outcome::Invalid => None,
        }
    }

    /// Classify a failed call.
    pub fn from_call_error(err: &CallError) -> Self {
        match err {
            CallError::Remote(_) => Outcome::Remote,
            CallError::TimedOut => Outcome::TimedOut,
            CallError::Cancelled => Outcome::Cancelled,
            CallError::ConnectionLost(_) => Outcome::Transport,
            CallError::Encode(_) | CallError::Hook(_) => Outcome::Invalid,
        }
    }

    /// Classify a call the connection refused.
    pub fn from_rejected(err: &CallRejected) -> Self {
        match err {
            CallRejected::Blocked => Outcome::Unavailable,
            CallRejected::Closing | CallRejected::Closed(_) => Outcome::Transport,
            CallRejected::TooLarge(_) | CallRejected::UnsupportedCompressor(_) | CallRejected::Hook(_) => {
                Outcome::Invalid
            }
        }
    }

    /// Classify a runtime client error (one attempt of an XClient call). `codec` is what
    /// a codec error means where it happened: a reply that could not be decoded is
    /// `Remote` (final, as Go's `ServiceError`), arguments that could not be encoded are
    /// `Invalid`. Every runtime uses this one table.
    pub fn from_error(err: &crate::error::Error, codec: Outcome) -> Self {
        use crate::error::Error;
        match err {
            Error::Call(e) => Outcome::from_call_error(e),
            Error::Rejected(e) => Outcome::from_rejected(e),
            Error::Connect(_) | Error::ConnectTimeout | Error::Tls(_) | Error::Addr(_) => Outcome::Dial,
            Error::Shutdown => Outcome::Transport,
            Error::Codec(_) => codec,
            _ => Outcome::Invalid,
        }
    }

    /// Classify an attempt's result (`Ok` for success); codec errors count as `Invalid`.
    pub fn of<T>(result: &Result<T, crate::error::Error>) -> Self {
        result.as_ref().err().map_or(Outcome::Ok, |e| Outcome::from_error(e, Outcome::Invalid))
    }
}

impl From<&CallError> for Outcome {
    fn from(err: &CallError) -> Self {
        Outcome::from_call_error(err)
    }
}

impl From<&CallRejected> for Outcome {
    fn from(err: &CallRejected) -> Self {
        Outcome::from_rejected(err)
    }
}

#[cfg(test)]
mod runtime_error_tests {
    use super::Outcome;
    use crate::conn::{CallError, CallRejected, LostReason};
    use crate::error::Error;

    #[test]
    fn runtime_errors_classify_once_for_every_runtime() {
        let refused = || Error::Connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Outcome::from_error(&refused(), Outcome::Invalid), Outcome::Dial);
        assert_eq!(Outcome::from_error(&Error::ConnectTimeout, Outcome::Invalid), Outcome::Dial);
        assert_eq!(Outcome::from_error(&Error::Shutdown, Outcome::Invalid), Outcome::Transport);
        let lost = Error::Call(CallError::ConnectionLost(LostReason::PeerClosed));
        assert_eq!(Outcome::from_error(&lost, Outcome::Invalid), Outcome::Transport);
        assert_eq!(Outcome::from_error(&Error::Call(CallError::TimedOut), Outcome::Invalid), Outcome::TimedOut);
        assert_eq!(
            Outcome::from_error(&Error::Rejected(CallRejected::Blocked), Outcome::Invalid),
            Outcome::Unavailable
        );
        let codec = Error::Codec(crate::codec::CodecError::RawNeedsBytes);
        assert_eq!(Outcome::from_error(&codec, Outcome::Remote), Outcome::Remote);
        assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Ok);
        assert_eq!(Outcome::of::<()>(&Err(refused())), Outcome::Dial);
    }
}
