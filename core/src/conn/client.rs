//! The client side of one rpcx connection, without IO.

use super::{CloseMode, LostReason, TRANSMIT_BATCH, min_instant};
use crate::compress;
use crate::wire::{
    CompressType, DecoderConfig, EncodeBuf, EncodeError, EncoderConfig, Message, MessageStatus, Metadata,
    SERVER_TIMEOUT_KEY, SERVICE_ERROR_KEY, SerializeType, StreamDecoder,
};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

/// Client connection settings. Defaults follow Go's `client.DefaultOption` where Go has
/// one (heartbeat off, 30 s maximum wait for a heartbeat reply, no idle timeout).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Decoder limits for responses and pushes.
    pub decoder: DecoderConfig,
    /// Encoder limits and compressors for requests.
    pub encoder: EncoderConfig,
    /// Most calls awaiting a response at once; more gives [`CallRejected::Blocked`].
    pub max_in_flight: usize,
    /// Most encoded bytes queued and not yet handed to `poll_transmit`; more gives
    /// [`CallRejected::Blocked`].
    pub max_unsent_bytes: usize,
    /// Send a heartbeat this often (off by default, as in Go).
    pub heartbeat_interval: Option<Duration>,
    /// Close the connection if a heartbeat gets no reply within this (Go: 30 s).
    pub max_wait_for_heartbeat: Duration,
    /// Close the connection after this long without sending or receiving a frame.
    pub idle_timeout: Option<Duration>,
    /// Speak rpcx in WebSocket frames (a `ws@`/`wss@` connection after its upgrade),
    /// masking with keys drawn from this seed (see `rpcx_core::http::ws`). Runtimes set
    /// it per connection; `None` (the default) is plain rpcx.
    pub websocket: Option<u64>,
    /// Hooks on this connection's frames (`before_encode`, `after_decode`); the
    /// [`ClientSession`](super::ClientSession) runs the call and connection hooks of the
    /// same set.
    pub hooks: super::ClientHookSet,
    /// Go's `ClientErrorFunc`: turns the server's error text (`__rpcx_error__`) into the
    /// text of the [`RemoteError`] the caller gets. `None` keeps it as it came.
    pub error_text: Option<ErrorTextFn>,
}

/// A client's error-text function: `(response, server text) -> text for the caller`.
#[derive(Clone)]
pub struct ErrorTextFn(pub std::sync::Arc<ErrorText>);

/// The function inside an [`ErrorTextFn`].
pub type ErrorText = dyn Fn(&Message, &str) -> String + Send + Sync;

impl ErrorTextFn {
    /// Wrap `f`.
    pub fn new(f: impl Fn(&Message, &str) -> String + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }
}

impl fmt::Debug for ErrorTextFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorTextFn")
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            decoder: DecoderConfig::default(),
            encoder: EncoderConfig::default(),
            max_in_flight: 65_536,
            max_unsent_bytes: 8 << 20,
            heartbeat_interval: None,
            max_wait_for_heartbeat: Duration::from_secs(30),
            idle_timeout: None,
            websocket: None,
            hooks: super::ClientHookSet::default(),
            error_text: None,
        }
    }
}

/// One call to make: everything but the seq, which the connection assigns.
#[derive(Clone, Debug)]
pub struct CallSpec {
    /// Service path (service name).
    pub service_path: Bytes,
    /// Method name.
    pub service_method: Bytes,
    /// Request metadata (`__ServerTimeout` is set by the connection when `deadline` is).
    pub metadata: Metadata,
    /// The already-serialized payload.
    pub payload: Bytes,
    /// How `payload` was serialized.
    pub serialize_type: SerializeType,
    /// Compression to use when the payload is over 1024 bytes.
    pub compress: CompressType,
    /// Fire and forget: no response; the call completes when its bytes are handed out.
    pub oneway: bool,
    /// The call fails with [`CallError::TimedOut`] at this instant, and the server is
    /// told the remaining milliseconds in `__ServerTimeout`.
    pub deadline: Option<Instant>,
}

impl CallSpec {
    /// A two-way call with no metadata, compression or deadline.
    pub fn new(
        service_path: impl Into<Bytes>,
        service_method: impl Into<Bytes>,
        serialize_type: SerializeType,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            service_path: service_path.into(),
            service_method: service_method.into(),
            metadata: Metadata::new(),
            payload: payload.into(),
            serialize_type,
            compress: CompressType::NONE,
            oneway: false,
            deadline: None,
        }
    }
}

/// A call being configured, before its payload: what every runtime's request builder
/// collects (its setters come from [`call_options_setters!`](crate::call_options_setters)).
/// [`into_spec`](Self::into_spec) makes the [`CallSpec`], counting the timeout from the
/// `now` it is given (the core reads no clock).
#[derive(Clone, Debug)]
pub struct CallOptions {
    /// Service path (service name).
    pub service_path: Bytes,
    /// Method name.
    pub service_method: Bytes,
    /// Request metadata.
    pub metadata: Metadata,
    /// How the payload is (to be) serialized.
    pub serialize_type: SerializeType,
    /// Compression for payloads over 1024 bytes.
    pub compress: CompressType,
    /// The call fails this long after it is made; the server is told the deadline.
    pub timeout: Option<Duration>,
    /// The call fails at this instant (the earlier of this and `timeout` wins).
    pub deadline: Option<Instant>,
    /// How the reply is decoded: Go's rules (the default) or serde's.
    pub decoding: crate::codec::Decoding,
    /// The XClient's consistent-hash key for this call (see
    /// [`ConsistentHash`](crate::govern::ConsistentHash)); without one an XClient uses
    /// the request's payload, so calls with equal arguments go to the same server (as
    /// Go's key from the arguments does). A single-connection `Client` ignores it.
    pub hash_key: Option<Bytes>,
}

impl CallOptions {
    /// `service.method` with no metadata, the given defaults for the rest.
    pub fn new(
        service: &str,
        method: &str,
        serialize_type: SerializeType,
        compress: CompressType,
        timeout: Option<Duration>,
    ) -> Self {
        Self {
            service_path: Bytes::copy_from_slice(service.as_bytes()),
            service_method: Bytes::copy_from_slice(method.as_bytes()),
            metadata: Metadata::new(),
            serialize_type,
            compress,
            timeout,
            deadline: None,
            decoding: crate::codec::Decoding::default(),
            hash_key: None,
        }
    }

    /// The call's deadline if it is made at `now`: the earlier of `deadline` and
    /// `timeout` after `now`.
    pub fn deadline_at(&self, now: Instant) -> Option<Instant> {
        let by_timeout = self.timeout.and_then(|d| now.checked_add(d));
        match (self.deadline, by_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The call with `payload` (already serialized with `serialize_type`), its deadline
    /// `timeout` after `now`.
    pub fn into_spec(self, now: Instant, payload: Bytes, oneway: bool) -> CallSpec {
        let deadline = self.deadline_at(now);
        CallSpec {
            service_path: self.service_path,
            service_method: self.service_method,
            metadata: self.metadata,
            payload,
            serialize_type: self.serialize_type,
            compress: self.compress,
            oneway,
            deadline,
        }
    }

    /// The call with `args` serialized by `serialize_type`, its deadline `timeout` after
    /// `now`.
    pub fn encode<A: serde::Serialize + ?Sized>(
        self,
        now: Instant,
        args: &A,
        oneway: bool,
    ) -> Result<CallSpec, crate::codec::CodecError> {
        let payload = crate::codec::to_payload_bytes(self.serialize_type, args)?;
        Ok(self.into_spec(now, payload, oneway))
    }
}

/// The setters of a request builder that keeps its [`CallOptions`] in a field named
/// `opts`: `metadata`, `with_metadata`, `timeout`, `deadline`, `context`,
/// `serialize_type`, `compress`, `decoding`. Every runtime's `RequestBuilder` and `XRequestBuilder` use
/// it, so they read and behave the same.
#[macro_export]
macro_rules! call_options_setters {
    () => {
        /// Add request metadata.
        pub fn metadata(mut self, key: &str, value: &str) -> Self {
            self.opts.metadata.insert(
                $crate::bytes::Bytes::copy_from_slice(key.as_bytes()),
                $crate::bytes::Bytes::copy_from_slice(value.as_bytes()),
            );
            self
        }

        /// Set all request metadata.
        pub fn with_metadata(mut self, metadata: $crate::wire::Metadata) -> Self {
            self.opts.metadata = metadata;
            self
        }

        /// Fail with a timeout after `d`; the server is told the deadline in
        /// `__ServerTimeout`.
        pub fn timeout(mut self, d: ::std::time::Duration) -> Self {
            self.opts.timeout = Some(d);
            self
        }

        /// Fail with a timeout at `at` (with [`timeout`](Self::timeout) too, the earlier
        /// wins); the server is told the deadline in `__ServerTimeout`. A handler passes
        /// its own caller's deadline on with `.deadline(ctx.deadline())`-style code, so a
        /// chain of services honours the first caller's bound.
        pub fn deadline(mut self, at: ::std::time::Instant) -> Self {
            self.opts.deadline = Some(at);
            self
        }

        /// Pass the deadline of the request a handler is serving on to this call (the
        /// earlier of it and any deadline or timeout set here wins), so a chain of
        /// services honours its first caller's timeout. Only the deadline is taken: Go's
        /// context also carries the incoming request's metadata into calls made with it;
        /// forward that with `.with_metadata(ctx.metadata().clone())` where wanted.
        pub fn context(mut self, ctx: &$crate::service::Context) -> Self {
            if let Some(d) = ctx.deadline() {
                self.opts.deadline = Some(self.opts.deadline.map_or(d, |mine: ::std::time::Instant| mine.min(d)));
            }
            self
        }

        /// Decode the reply with serde's own rules instead of Go's (missing fields,
        /// key case, nulls, duplicates and trailing bytes are then errors).
        pub fn strict_decoding(mut self) -> Self {
            self.opts.decoding = $crate::codec::Decoding::Strict;
            self
        }

        /// Serialize with this type instead of the client's default.
        pub fn serialize_type(mut self, st: $crate::wire::SerializeType) -> Self {
            self.opts.serialize_type = st;
            self
        }

        /// Compress payloads over 1024 bytes with this type.
        pub fn compress(mut self, ct: $crate::wire::CompressType) -> Self {
            self.opts.compress = ct;
            self
        }

        /// Take the options a whole request message carries: its metadata, serialize
        /// type and compression, and its service path when not empty (for sending a
        /// prepared message, as Go's `SendRaw` does).
        pub fn like_message(mut self, msg: &$crate::wire::Message) -> Self {
            self.opts.metadata = msg.metadata.clone();
            self.opts.serialize_type = msg.header.serialize_type();
            self.opts.compress = msg.header.compress_type();
            if !msg.service_path.is_empty() {
                self.opts.service_path = msg.service_path.clone();
            }
            self
        }

        /// The consistent-hash key of this call, for an XClient whose selector is
        /// `ConsistentHash` (default: the encoded arguments). A single-connection
        /// client ignores it.
        pub fn hash_key(mut self, key: impl Into<$crate::bytes::Bytes>) -> Self {
            self.opts.hash_key = Some(key.into());
            self
        }
    };
}

/// The connection refused a call; no event will follow for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallRejected {
    /// Too many calls in flight or too many unsent bytes; wait for
    /// [`ClientEvent::Unblocked`].
    #[error("connection is blocked: too many calls in flight or bytes unsent")]
    Blocked,
    /// A graceful close is under way.
    #[error("connection is closing")]
    Closing,
    /// The connection has ended.
    #[error("connection is closed: {0}")]
    Closed(LostReason),
    /// The request could never be sent (larger than the frame limit).
    #[error(transparent)]
    TooLarge(EncodeError),
    /// The requested compress type has no registered compressor.
    #[error("unsupported compressor {0}")]
    UnsupportedCompressor(u8),
    /// A `before_encode` hook refused the request.
    #[error("{0}")]
    Hook(String),
}

/// The server answered with an Error status. `text` is `__rpcx_error__`.
///
/// Go's client ignores an Error status that has no metadata and reports success; we do
/// not hide it: it becomes a `RemoteError` with an empty `text`. Fail modes never retry
/// a remote error.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct RemoteError {
    /// The server's error text (lossily decoded if it was not UTF-8).
    pub text: String,
    /// The whole response (metadata, and a payload if the method returned one).
    pub response: Box<Message>,
}

impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteError").field("text", &self.text).field("seq", &self.response.header.seq()).finish()
    }
}

/// Why an accepted call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The server reported an error.
    #[error(transparent)]
    Remote(RemoteError),
    /// The deadline passed before the response arrived (a late response is dropped).
    #[error("call timed out")]
    TimedOut,
    /// The caller cancelled the call.
    #[error("call cancelled")]
    Cancelled,
    /// The connection ended first.
    #[error("connection lost: {0}")]
    ConnectionLost(LostReason),
    /// The request could not be encoded when it was due to be sent.
    #[error(transparent)]
    Encode(EncodeError),
    /// An `after_decode` hook refused the response.
    #[error("{0}")]
    Hook(String),
}

/// What a [`ClientConnection`] reports. Every accepted call ends in exactly one
/// `Response`, `Failed` or (oneway) `Sent`; `ConnectionLost` comes once, last.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A successful response.
    Response {
        /// The call's seq.
        seq: u64,
        /// The response (payload decompressed).
        response: Message,
    },
    /// The call failed (remote error, timeout, cancellation, connection lost).
    Failed {
        /// The call's seq.
        seq: u64,
        /// Why.
        error: CallError,
    },
    /// A oneway call's frame was handed out by `poll_transmit`: it is complete.
    Sent {
        /// The call's seq.
        seq: u64,
    },
    /// A server push (Request + oneway + not heartbeat).
    Push(Message),
    /// There is room for calls again after a [`CallRejected::Blocked`].
    Unblocked,
    /// The connection has ended; the last event.
    ConnectionLost(LostReason),
}

/// Counters, for observability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls accepted.
    pub calls: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Frames handed out.
    pub frames_out: u64,
    /// Responses whose seq matched nothing (late replies after a timeout or cancel).
    pub unknown_seq_dropped: u64,
    /// Server pushes received.
    pub pushes: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Round-trip time of the last answered heartbeat.
    pub last_heartbeat_rtt: Option<Duration>,
}

#[derive(Debug)]
struct Outgoing {
    msg: Message,
    oneway_seq: Option<u64>,
    size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Open,
    Closing(CloseMode),
    Closed(LostReason),
}

#[derive(Debug)]
struct Heartbeat {
    interval: Duration,
    next_at: Instant,
    outstanding: Option<(u64, Instant)>,
}

/// The client side of one rpcx connection: seq allocation, the in-flight table,
/// deadlines, heartbeats, server-push detection and backpressure. No IO, no clock.
///
/// # Driving it
///
/// 1. Feed received bytes with [`handle_input`](Self::handle_input), the end of the
///    stream with [`handle_eof`](Self::handle_eof), transport failures with
///    [`abort`](Self::abort), and call [`handle_timeout`](Self::handle_timeout) when the
///    instant from [`poll_timeout`](Self::poll_timeout) is reached (spurious calls are
///    harmless).
/// 2. Issue commands: [`call`](Self::call), [`cancel`](Self::cancel),
///    [`close`](Self::close).
/// 3. After each of the above, drain: [`poll_transmit`](Self::poll_transmit) until it
///    returns `None` (write those bytes in order), then
///    [`poll_event`](Self::poll_event) until `None`, then read
///    [`poll_timeout`](Self::poll_timeout) once.
///
/// Once [`ClientEvent::ConnectionLost`] has been polled, the machine is finished; after
/// a graceful or flush close, write out what `poll_transmit` handed out, then shut the
/// socket.
///
/// ```
/// use rpcx_core::conn::{CallSpec, ClientConfig, ClientConnection, ClientEvent};
/// use rpcx_core::wire::SerializeType;
/// use std::time::Instant;
///
/// let now = Instant::now();
/// let mut conn = ClientConnection::new(ClientConfig::default(), now);
/// let seq = conn.call(now, CallSpec::new("Arith", "Mul", SerializeType::MSGPACK, &b"\x82\xa1A\x0a\xa1B\x14"[..]))?;
/// let mut wire = Vec::new();
/// while conn.poll_transmit(&mut wire).is_some() {}
/// assert_eq!(wire.len(), 47); // vector V2 of the protocol notes
///
/// // The server's answer (vector V3) completes the call.
/// conn.handle_input(now, &hex("0800803000000000000000000000001d000000054172697468000000034d756c000000000000000581a143ccc8"));
/// match conn.poll_event() {
///     Some(ClientEvent::Response { seq: s, response }) => assert_eq!((s, &response.payload[..]), (seq, &b"\x81\xa1C\xcc\xc8"[..])),
///     other => panic!("{other:?}"),
/// }
/// # fn hex(s: &str) -> Vec<u8> { (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect() }
/// # Ok::<(), rpcx_core::conn::CallRejected>(())
/// ```
#[derive(Debug)]
pub struct ClientConnection {
    config: ClientConfig,
    decoder: StreamDecoder,
    epoch: Instant,
    next_seq: u64,
    pending: FxHashMap<u64, Option<Instant>>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    queue: VecDeque<Outgoing>,
    queued_bytes: usize,
    events: VecDeque<ClientEvent>,
    state: State,
    blocked: bool,
    heartbeat: Option<Heartbeat>,
    idle_deadline: Option<Instant>,
    stats: ClientStats,
    /// WebSocket framing (boxed: rare).
    ws: Option<Box<crate::http::ws::WsFraming>>,
}

impl ClientConnection {
    /// A new connection machine; `now` is when the transport was established.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let heartbeat = config.heartbeat_interval.filter(|d| !d.is_zero()).map(|interval| Heartbeat {
            interval,
            next_at: now + interval,
            outstanding: None,
        });
        let idle_deadline = config.idle_timeout.map(|d| now + d);
        let ws = config
            .websocket
            .map(|seed| Box::new(crate::http::ws::WsFraming::client(config.decoder.max_message_len, seed)));
        Self {
            ws,
            decoder: StreamDecoder::new(config.decoder.clone()),
            config,
            epoch: now,
            next_seq: 0,
            pending: FxHashMap::default(),
            deadlines: BinaryHeap::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            events: VecDeque::new(),
            state: State::Open,
            blocked: false,
            heartbeat,
            idle_deadline,
            stats: ClientStats::default(),
        }
    }

    /// Start a call; returns its seq (per connection, from 0, increasing). The request is
    /// queued for [`poll_transmit`](Self::poll_transmit); exactly one event will end it.
    pub fn call(&mut self, now: Instant, spec: CallSpec) -> Result<u64, CallRejected> {
        match &self.state {
            State::Open => {}
            State::Closing(_) => return Err(CallRejected::Closing),
            State::Closed(r) => return Err(CallRejected::Closed(r.clone())),
        }
        if self.pending.len() >= self.config.max_in_flight || self.queued_bytes >= self.config.max_unsent_bytes {
            self.blocked = true;
            return Err(CallRejected::Blocked);
        }
        let ct = compress::choose(spec.compress, spec.payload.len());
        if !self.config.encoder.compressors.supports(ct) {
            return Err(CallRejected::UnsupportedCompressor(ct.bits()));
        }
        let seq = self.next_seq;
        let mut msg = Message::request(spec.serialize_type, seq, spec.service_path, spec.service_method);
        msg.header.set_oneway(spec.oneway);
        msg.header.set_compress_type(ct);
        msg.metadata = spec.metadata;
        msg.payload = spec.payload;
        if let Some(deadline) = spec.deadline {
            let ms = deadline.saturating_duration_since(now).as_millis();
            msg.metadata.insert(SERVER_TIMEOUT_KEY, Bytes::from(ms.to_string()));
        }
        if !self.config.hooks.is_empty() {
            self.config.hooks.check("before_encode hook", |h| h.before_encode(&mut msg)).map_err(CallRejected::Hook)?;
        }
        let total = msg.encoded_total_len();
        if total > self.config.encoder.max_message_len as u64 {
            return Err(CallRejected::TooLarge(EncodeError::MessageTooLong {
                len: total,
                max: self.config.encoder.max_message_len,
            }));
        }
        self.next_seq += 1;
        self.stats.calls += 1;
        if !spec.oneway {
            self.pending.insert(seq, spec.deadline);
            if let Some(d) = spec.deadline {
                self.deadlines.push(Reverse((d, seq)));
            }
        }
        self.enqueue(msg, spec.oneway.then_some(seq));
        self.touch(now);
        Ok(seq)
    }

    /// Cancel a call that is still waiting for its response: it fails with
    /// [`CallError::Cancelled`] and a late response is dropped. Returns whether the call
    /// was in flight. (The request is not withdrawn from the wire: rpcx has no cancel
    /// message.)
    pub fn cancel(&mut self, _now: Instant, seq: u64) -> bool {
        if self.pending.remove(&seq).is_none() {
            return false;
        }
        self.events.push_back(ClientEvent::Failed { seq, error: CallError::Cancelled });
        self.after_completion();
        true
    }

    /// Close the connection (see [`CloseMode`]). Graceful: no new calls, in-flight ones
    /// finish or fail at their deadline, then `ConnectionLost(LocalClose)`. Flush:
    /// in-flight calls fail now, queued frames are still handed out. Immediate: all
    /// in-flight calls fail now and nothing more is sent.
    pub fn close(&mut self, _now: Instant, mode: CloseMode) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        match mode {
            CloseMode::Immediate => self.lose(LostReason::LocalClose),
            CloseMode::Flush => {
                self.fail_pending(&LostReason::LocalClose);
                self.state = State::Closing(CloseMode::Flush);
                self.check_closing_done();
            }
            CloseMode::Graceful => {
                if self.state == State::Open {
                    self.state = State::Closing(CloseMode::Graceful);
                }
                self.check_closing_done();
            }
        }
    }

    /// Bytes received from the server.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        let mut ws_closed = false;
        match &mut self.ws {
            None => self.decoder.feed(data),
            Some(ws) => {
                ws.feed(data);
                loop {
                    match ws.next() {
                        Ok(Some(crate::http::ws::Incoming::Data(d))) => self.decoder.feed(&d),
                        Ok(Some(crate::http::ws::Incoming::Closed)) => {
                            // Frames received before the close are still taken below.
                            ws_closed = true;
                            break;
                        }
                        Ok(None) => break,
                        Err(e) => return self.lose(LostReason::Http(crate::http::HttpError::WebSocket(e))),
                    }
                }
            }
        }
        self.decode_input(now);
        if ws_closed {
            self.lose(LostReason::PeerClosed);
        }
    }

    fn decode_input(&mut self, now: Instant) {
        loop {
            match self.decoder.next_message() {
                Ok(Some(msg)) => self.on_message(now, msg),
                Ok(None) => break,
                Err(e) => {
                    self.lose(LostReason::Protocol(e));
                    break;
                }
            }
            if matches!(self.state, State::Closed(_)) {
                break;
            }
        }
    }

    /// The server closed the stream.
    pub fn handle_eof(&mut self, _now: Instant) {
        let reason = match self.decoder.finish() {
            Err(crate::wire::DecodeError::UnexpectedEof { buffered }) => LostReason::UnexpectedEof { buffered },
            Err(e) => LostReason::Protocol(e),
            Ok(()) => LostReason::PeerClosed,
        };
        self.lose(reason);
    }

    /// The transport failed; every in-flight call fails with this reason.
    pub fn abort(&mut self, _now: Instant, reason: impl Into<String>) {
        self.lose(LostReason::Transport(reason.into()));
    }

    /// Time has reached (or passed) [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        while let Some(&Reverse((d, seq))) = self.deadlines.peek() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.pending.remove(&seq).is_some() {
                self.events.push_back(ClientEvent::Failed { seq, error: CallError::TimedOut });
                self.after_completion();
            }
        }
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        if let Some(hb) = &self.heartbeat {
            if let Some((_, sent)) = hb.outstanding {
                if now >= sent + self.config.max_wait_for_heartbeat {
                    self.lose(LostReason::HeartbeatTimeout(self.config.max_wait_for_heartbeat));
                    return;
                }
            } else if now >= hb.next_at && self.state == State::Open {
                self.send_heartbeat(now);
            }
        }
        if let (Some(idle), Some(d)) = (self.idle_deadline, self.config.idle_timeout) {
            if now >= idle {
                self.lose(LostReason::IdleTimeout(d));
            }
        }
    }

    /// Append queued frames to `buf` (up to about 64 KiB per call once one frame is in).
    /// Returns the number of bytes appended, or `None` if there was nothing to send.
    /// The caller must write them to the transport in order.
    #[must_use]
    pub fn poll_transmit<B: EncodeBuf>(&mut self, buf: &mut B) -> Option<usize> {
        if let Some(ws) = &mut self.ws {
            // Control frames (pongs) first, then the rpcx bytes in one frame.
            let start = buf.len();
            buf.put_slice(&ws.take_control());
            let mut frames = Vec::new();
            if self.transmit(&mut frames).is_some() {
                self.ws.as_mut().expect("WebSocket framing").wrap(&frames, buf);
            }
            return (buf.len() > start).then(|| buf.len() - start);
        }
        self.transmit(buf)
    }

    fn transmit<B: EncodeBuf>(&mut self, buf: &mut B) -> Option<usize> {
        let start = buf.len();
        while let Some(out) = self.queue.pop_front() {
            self.queued_bytes -= out.size;
            match out.msg.encode(&self.config.encoder, buf) {
                Ok(_) => {
                    self.stats.frames_out += 1;
                    if let Some(seq) = out.oneway_seq {
                        self.events.push_back(ClientEvent::Sent { seq });
                    }
                }
                Err(e) => {
                    let seq = out.msg.header.seq();
                    if out.oneway_seq.is_some() || self.pending.remove(&seq).is_some() {
                        self.events.push_back(ClientEvent::Failed { seq, error: CallError::Encode(e) });
                    }
                }
            }
            if buf.len() - start >= TRANSMIT_BATCH {
                break;
            }
        }
        self.after_completion();
        (buf.len() > start).then(|| buf.len() - start)
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, State::Closed(_)) {
            return None;
        }
        let call = self.deadlines.peek().map(|Reverse((d, _))| *d);
        let hb = self.heartbeat.as_ref().and_then(|hb| match hb.outstanding {
            Some((_, sent)) => Some(sent + self.config.max_wait_for_heartbeat),
            None if self.state == State::Open => Some(hb.next_at),
            None => None,
        });
        min_instant(min_instant(call, hb), self.idle_deadline)
    }

    /// Whether the driver should read from the transport (false once closed).
    pub fn wants_read(&self) -> bool {
        !matches!(self.state, State::Closed(_))
    }

    /// Calls awaiting a response.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether a call would be accepted now. If not, one [`ClientEvent::Unblocked`]
    /// follows when there is room (like `call` returning [`CallRejected::Blocked`],
    /// without giving up a `CallSpec`).
    pub fn poll_ready(&mut self) -> bool {
        if self.is_blocked() {
            self.blocked = true;
            false
        } else {
            true
        }
    }

    /// Whether a call would be rejected with [`CallRejected::Blocked`] now.
    pub fn is_blocked(&self) -> bool {
        self.pending.len() >= self.config.max_in_flight || self.queued_bytes >= self.config.max_unsent_bytes
    }

    /// Whether a close has started (graceful or flush) or the connection has ended.
    pub fn is_closing(&self) -> bool {
        !matches!(self.state, State::Open)
    }

    /// Whether the connection has ended (the `ConnectionLost` event is queued or polled).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Bytes queued for `poll_transmit`.
    pub fn unsent_bytes(&self) -> usize {
        self.queued_bytes
    }

    fn enqueue(&mut self, msg: Message, oneway_seq: Option<u64>) {
        let size = 16 + msg.encoded_total_len() as usize;
        self.queued_bytes += size;
        self.queue.push_back(Outgoing { msg, oneway_seq, size });
    }

    fn touch(&mut self, now: Instant) {
        if let Some(d) = self.config.idle_timeout {
            self.idle_deadline = Some(now + d);
        }
    }

    fn send_heartbeat(&mut self, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut msg = Message::request(SerializeType::MSGPACK, seq, Bytes::new(), Bytes::new());
        msg.header.set_heartbeat(true);
        // Go sends msgpack int64 of UnixNano; the server never decodes it. We send the
        // nanoseconds since the connection started, in the same 9-byte shape.
        let nanos = i64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(i64::MAX);
        let mut payload = Vec::with_capacity(9);
        payload.push(0xd3);
        payload.extend_from_slice(&nanos.to_be_bytes());
        msg.payload = payload.into();
        self.enqueue(msg, None);
        self.stats.heartbeats_sent += 1;
        if let Some(hb) = &mut self.heartbeat {
            hb.outstanding = Some((seq, now));
            hb.next_at = now + hb.interval;
        }
    }

    fn on_message(&mut self, now: Instant, mut msg: Message) {
        self.stats.frames_in += 1;
        self.touch(now);
        let refused = if self.config.hooks.is_empty() || msg.header.is_heartbeat() {
            None
        } else {
            self.config.hooks.check("after_decode hook", |h| h.after_decode(&mut msg)).err()
        };
        if msg.header.is_server_push() {
            if let Some(text) = refused {
                tracing::debug!(error = %text, "an after_decode hook dropped a push");
                return;
            }
            self.stats.pushes += 1;
            self.events.push_back(ClientEvent::Push(msg));
            return;
        }
        let seq = msg.header.seq();
        if let Some(hb) = &mut self.heartbeat {
            if let Some((hb_seq, sent)) = hb.outstanding {
                if hb_seq == seq {
                    hb.outstanding = None;
                    self.stats.last_heartbeat_rtt = Some(now.saturating_duration_since(sent));
                    self.check_closing_done();
                    return;
                }
            }
        }
        if self.pending.remove(&seq).is_none() {
            self.stats.unknown_seq_dropped += 1;
            return;
        }
        let event = if let Some(text) = refused {
            ClientEvent::Failed { seq, error: CallError::Hook(text) }
        } else if msg.header.status() == MessageStatus::ERROR {
            let text = msg.metadata.get_slice(SERVICE_ERROR_KEY).map(|v| String::from_utf8_lossy(v).into_owned());
            let mut text = text.unwrap_or_default();
            if let Some(f) = &self.config.error_text {
                text = crate::guard::catch("client error_text function", || (f.0)(&msg, &text)).unwrap_or(text);
            }
            ClientEvent::Failed { seq, error: CallError::Remote(RemoteError { text, response: Box::new(msg) }) }
        } else {
            ClientEvent::Response { seq, response: msg }
        };
        self.events.push_back(event);
        self.after_completion();
    }

    /// Bookkeeping after a call ended or bytes were handed out.
    fn after_completion(&mut self) {
        if self.deadlines.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.deadlines.retain(|Reverse((_, seq))| pending.contains_key(seq));
        }
        if self.blocked && !self.is_blocked() && !self.is_closing() {
            self.blocked = false;
            self.events.push_back(ClientEvent::Unblocked);
        }
        self.check_closing_done();
    }

    fn check_closing_done(&mut self) {
        if let State::Closing(mode) = self.state {
            let waiting = mode == CloseMode::Graceful && !self.pending.is_empty();
            if self.queue.is_empty() && !waiting {
                self.state = State::Closed(LostReason::LocalClose);
                self.deadlines.clear();
                self.events.push_back(ClientEvent::ConnectionLost(LostReason::LocalClose));
            }
        }
    }

    fn fail_pending(&mut self, reason: &LostReason) {
        let mut seqs: Vec<u64> = self.pending.drain().map(|(s, _)| s).collect();
        seqs.sort_unstable();
        for seq in seqs {
            self.events.push_back(ClientEvent::Failed { seq, error: CallError::ConnectionLost(reason.clone()) });
        }
        self.deadlines.clear();
    }

    fn lose(&mut self, reason: LostReason) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.fail_pending(&reason);
        for out in self.queue.drain(..) {
            if let Some(seq) = out.oneway_seq {
                self.events.push_back(ClientEvent::Failed { seq, error: CallError::ConnectionLost(reason.clone()) });
            }
        }
        self.queued_bytes = 0;
        self.state = State::Closed(reason.clone());
        self.events.push_back(ClientEvent::ConnectionLost(reason));
    }
}
