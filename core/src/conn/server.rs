//! The server side of one rpcx connection, without IO.

use super::{CloseMode, LostReason, MemoryBudget, TRANSMIT_BATCH, min_instant};
use crate::compress::{self, Inflate};
use crate::http::{self, HttpConfig, front::Front, ws::WsFraming};
use crate::wire::{
    AUTH_KEY, DecoderConfig, EncodeBuf, EncodeError, EncoderConfig, Header, Message, MessageStatus, MessageType,
    Metadata, SERVER_TIMEOUT_KEY, SERVICE_ERROR_KEY, SerializeType, StreamDecoder,
};
use bytes::Bytes;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Server connection settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Decoder limits for requests.
    pub decoder: DecoderConfig,
    /// Encoder limits and compressors for responses and pushes.
    pub encoder: EncoderConfig,
    /// Most requests handed to the application and not yet answered; at the limit
    /// [`ServerConnection::wants_read`] turns false and no more frames are decoded.
    pub max_in_flight: usize,
    /// Most encoded bytes queued for `poll_transmit`; at the limit reading pauses and
    /// pushes are refused with [`PushError::Blocked`].
    pub max_unsent_bytes: usize,
    /// Close the connection when no request arrives for this long while the connection
    /// is willing to read (Go's `WithReadTimeout`): the idle timeout. Off by default.
    pub read_timeout: Option<Duration>,
    /// Close the connection when a frame that has started (its first byte arrived) is
    /// not complete this long after, while the connection is reading: a peer trickling
    /// a frame byte by byte is closed with [`LostReason::FrameTimeout`]. Default 30 s;
    /// healthy idle connections are not affected (heartbeats are whole frames).
    pub frame_timeout: Option<Duration>,
    /// The memory every connection of a server shares (see [`MemoryBudget`] for what is
    /// charged and the policy). A server's connections share one `Arc`; the default is
    /// a fresh [`MemoryBudget::default`] (512 MiB).
    pub budget: Arc<MemoryBudget>,
    /// HTTP on the rpcx port: the X-RPCX gateway and JSON-RPC 2.0, both on by default
    /// as in Go (see [`crate::http`]). A connection whose first bytes are an HTTP
    /// request line is served as HTTP; [`HttpConfig::disabled`] makes every connection
    /// rpcx only.
    pub http: HttpConfig,
}

/// The default [`ServerConfig::frame_timeout`].
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Most frame bytes decoded plus payload bytes inflated in one input or `work` call;
/// past it the machine stops and reports [`ServerConnection::has_work`], so one peer's
/// heavy frames cannot hold the thread that drives many connections.
/// A frame costs its length plus [`WORK_PER_PAIR`] per metadata pair.
pub const WORK_PER_TURN: usize = 256 << 10;
/// The work a metadata pair costs beyond its bytes (its decoding, its place in the
/// map, and what a handler does with it), in [`WORK_PER_TURN`] units.
pub const WORK_PER_PAIR: usize = 64;
/// Output produced by one step of a decompression.
const INFLATE_CHUNK: usize = 256 << 10;
/// Frames above this reserve their whole length from the budget before being read.
const SMALL_FRAME: usize = 64 << 10;
/// How often a connection waiting for the budget looks again.
const BUDGET_RECHECK: Duration = Duration::from_millis(5);
/// Memory a queued message costs beyond its encoded bytes: the queue entry and the
/// allocations behind a message's parts.
const QUEUED_OVERHEAD: usize = 256;
/// Output queued above which a connection stops reading while the server is over its
/// budget.
const OUTPUT_SHARE: usize = 64 << 10;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            // A server knows the names it serves (the dispatcher fills `known_names`
            // from its router); a peer's made-up names would only fill the
            // process-wide table of learned names.
            decoder: DecoderConfig { learn_names: false, ..DecoderConfig::default() },
            encoder: EncoderConfig::default(),
            max_in_flight: 1024,
            max_unsent_bytes: 8 << 20,
            read_timeout: None,
            frame_timeout: Some(DEFAULT_FRAME_TIMEOUT),
            budget: Arc::new(MemoryBudget::default()),
            http: HttpConfig::default(),
        }
    }
}

/// Identifies a request handed to the application, for [`ServerConnection::respond`].
/// (The client's seq cannot serve: a peer may reuse seqs.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A request for the application.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Pass to [`ServerConnection::respond`].
    pub id: RequestId,
    /// The decoded message, payload decompressed.
    pub message: Message,
    /// The client's deadline from `__ServerTimeout` (milliseconds from when the request
    /// was decoded). `0` or negative means already expired; garbage is ignored (`None`).
    pub deadline: Option<Instant>,
}

impl Request {
    /// Whether the client expects no response.
    pub fn is_oneway(&self) -> bool {
        self.message.header.is_oneway()
    }

    /// The `__AUTH` token: `None` if absent, `Some(Err)` if not UTF-8.
    pub fn auth_token(&self) -> Option<Result<&str, std::str::Utf8Error>> {
        self.message.metadata.get_slice(AUTH_KEY).map(std::str::from_utf8)
    }
}

/// What the application answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Response metadata.
    pub metadata: Metadata,
    /// The serialized reply (with the request's serialize type). Go sends the reply
    /// even alongside an error when a method returned both.
    pub payload: Bytes,
    /// An error: the response gets the Error status and `__rpcx_error__ = error`. The
    /// text is bytes, as in Go (an error can echo a name that is not UTF-8).
    pub error: Option<Bytes>,
}

impl Response {
    /// A successful response.
    pub fn ok(payload: impl Into<Bytes>) -> Self {
        Self { metadata: Metadata::new(), payload: payload.into(), error: None }
    }

    /// An error response with an empty payload.
    pub fn error(text: impl Into<Bytes>) -> Self {
        Self { metadata: Metadata::new(), payload: Bytes::new(), error: Some(text.into()) }
    }
}

/// [`ServerConnection::respond`] misuse or a closed connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// No request with this id is waiting (already answered, or never existed).
    #[error("no request {0:?} is waiting for a response")]
    UnknownRequest(RequestId),
    /// The connection is closed or closing without waiting for responses.
    #[error("connection is closed")]
    Closed,
}

/// [`ServerConnection::push`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Too many unsent bytes; wait for [`ServerEvent::Unblocked`].
    #[error("connection is blocked: too many bytes unsent")]
    Blocked,
    /// The connection is closed or closing.
    #[error("connection is closed")]
    Closed,
    /// The message is larger than the frame limit.
    #[error(transparent)]
    TooLarge(EncodeError),
    /// A `pre_write_request` hook refused it.
    #[error("push refused by a hook: {0}")]
    Refused(String),
}

/// What a [`ServerConnection`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A request to dispatch. Answer it with [`ServerConnection::respond`], even when it
    /// is oneway (nothing is sent then, but its in-flight slot is released).
    Request(Request),
    /// A heartbeat arrived and was echoed already (informational).
    Heartbeat {
        /// The heartbeat's seq.
        seq: u64,
    },
    /// Pushes are possible again after [`PushError::Blocked`].
    Unblocked,
    /// The connection has ended; the last event.
    ConnectionLost(LostReason),
}

/// Counters, for observability.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Requests handed to the application.
    pub requests: u64,
    /// Responses queued (oneway requests excluded).
    pub responses: u64,
    /// Heartbeats echoed.
    pub heartbeats: u64,
    /// Server pushes queued.
    pub pushes: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Frames handed out.
    pub frames_out: u64,
    /// Responses that could not be encoded and were replaced by an error response.
    pub encode_failures: u64,
}

#[derive(Debug)]
struct Pending {
    header: Header,
    path: Bytes,
    method: Bytes,
}

/// A compressed request being inflated, step by step.
struct Inflating {
    /// The request, its payload still compressed until `inflater` exists.
    msg: Message,
    /// `None` until a decompression slot was free.
    inflater: Option<Box<dyn Inflate>>,
    /// Bytes of the compressed payload.
    input_len: usize,
}

impl std::fmt::Debug for Inflating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflating")
            .field("seq", &self.msg.header.seq())
            .field("input_len", &self.input_len)
            .field("held", &self.inflater.as_ref().map(|i| i.held()))
            .finish()
    }
}

enum Step {
    Again,
    OutOfWork,
    Blocked,
}

/// What the connection speaks.
#[derive(Debug)]
enum Proto {
    /// Not known yet: the first bytes (fewer than [`http::CLASSIFY_MAX`]) could begin
    /// an HTTP request line.
    Undecided(Vec<u8>),
    Rpcx,
    /// Boxed: an rpcx connection (nearly all) stays small.
    Http(Box<Front>),
    /// rpcx in WebSocket frames (after an upgrade).
    Ws(Box<WsFraming>),
}

/// Queued output.
#[derive(Debug)]
enum Out {
    Frame(Message),
    /// Bytes ready for the wire (HTTP responses).
    Raw(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Open,
    Closing(CloseMode),
    Closed(LostReason),
}

/// The server side of one rpcx connection: request events, response building exactly as
/// Go builds it, heartbeat echo, oneway silence, server push, idle timeout and
/// backpressure. No IO, no clock.
///
/// Drive it like [`ClientConnection`](super::ClientConnection): feed input, eof,
/// timeouts and commands; after each, drain `poll_transmit`, then `poll_event`, then
/// read `poll_timeout`. Read from the transport only while
/// [`wants_read`](Self::wants_read) is true: that is how a slow application pushes back
/// on the client.
///
/// Responses are built per rpcx: the whole request header is echoed (version, flags,
/// serialize type, reserved nibble, seq) with the Response bit set; path and method are
/// echoed; compression is reset, then re-applied when the request was compressed and
/// the response payload is over 1024 bytes; errors set the Error status and
/// `__rpcx_error__`.
#[derive(Debug)]
pub struct ServerConnection {
    /// Shared by every connection of a server (see [`ServerConnection::with_shared_config`]).
    config: Arc<ServerConfig>,
    decoder: StreamDecoder,
    proto: Proto,
    /// The reason the last event of a [`CloseMode::Flush`] close carries, when it is
    /// not a plain local close (an HTTP request that could not be served).
    close_reason: Option<LostReason>,
    next_id: u64,
    push_seq: u64,
    pending: FxHashMap<u64, Pending>,
    queue: VecDeque<(Out, usize)>,
    queued_bytes: usize,
    events: VecDeque<ServerEvent>,
    state: State,
    push_blocked: bool,
    idle_deadline: Option<Instant>,
    paused: bool,
    last_now: Instant,
    stats: ServerStats,
    /// Boxed: rare, and a `Message` inline would grow every idle connection.
    inflating: Option<Box<Inflating>>,
    /// A copy of the bytes in and out, for the server's tap hooks.
    tap: Option<Box<dyn crate::service::ConnTap>>,
    /// Work was cut short by [`WORK_PER_TURN`]; `work` continues it.
    has_work: bool,
    /// Waiting for the budget (a frame's reservation, a decompression slot or step).
    blocked: bool,
    /// The buffer holds part of a frame (and no whole one).
    incomplete: bool,
    frame_deadline: Option<Instant>,
    /// The frame at the front of the buffer has this many bytes reserved.
    reserved_frame: usize,
    /// Bytes charged to the budget now.
    charged: usize,
    /// Not reading: the server is over its budget and this peer has output queued.
    out_paused: bool,
    /// Since when `out_paused` has held without the peer taking bytes.
    stuck_since: Option<Instant>,
}

impl Drop for ServerConnection {
    fn drop(&mut self) {
        self.release_all();
    }
}

impl ServerConnection {
    /// A new connection machine; `now` is when the connection was accepted.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        Self::with_shared_config(Arc::new(config), now)
    }

    /// A new connection machine on settings shared with other connections (a server
    /// keeps one `Arc` for all of them, so a connection does not carry its own copy).
    pub fn with_shared_config(config: Arc<ServerConfig>, now: Instant) -> Self {
        Self {
            decoder: StreamDecoder::new(config.decoder.clone()),
            proto: if config.http.enabled() { Proto::Undecided(Vec::new()) } else { Proto::Rpcx },
            close_reason: None,
            idle_deadline: config.read_timeout.map(|d| now + d),
            config,
            next_id: 0,
            push_seq: 1,
            pending: FxHashMap::default(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            events: VecDeque::new(),
            state: State::Open,
            push_blocked: false,
            paused: false,
            last_now: now,
            stats: ServerStats::default(),
            inflating: None,
            tap: None,
            has_work: false,
            blocked: false,
            incomplete: false,
            frame_deadline: None,
            reserved_frame: 0,
            charged: 0,
            out_paused: false,
            stuck_since: None,
        }
    }

    /// Bytes received from the client. Frames are decoded only while there is room
    /// (see [`wants_read`](Self::wants_read)); the rest stays buffered.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.state != State::Open {
            return;
        }
        if let Some(t) = &mut self.tap {
            t.read(data);
        }
        match &mut self.proto {
            Proto::Rpcx => self.decoder.feed(data),
            Proto::Ws(ws) => {
                ws.feed(data);
                self.unwrap_ws(now);
            }
            Proto::Http(f) => f.feed(data),
            Proto::Undecided(first) => {
                let mut probe = [0u8; http::CLASSIFY_MAX];
                let n = first.len();
                let m = (http::CLASSIFY_MAX - n).min(data.len());
                probe[..n].copy_from_slice(first);
                probe[n..n + m].copy_from_slice(&data[..m]);
                match http::classify(&probe[..n + m]) {
                    http::Class::Unknown if n + m < http::CLASSIFY_MAX => first.extend_from_slice(data),
                    http::Class::Http => {
                        let mut f = Box::<Front>::default();
                        f.feed(first);
                        f.feed(data);
                        self.proto = Proto::Http(f);
                    }
                    _ => {
                        self.decoder.feed(first);
                        self.decoder.feed(data);
                        self.proto = Proto::Rpcx;
                    }
                }
            }
        }
        self.pump(now);
    }

    /// Whether decoding work was cut short to bound the time one call takes (see
    /// [`WORK_PER_TURN`]: large decompressions and runs of heavy frames are done in
    /// steps). The driver should let other work run (yield to its scheduler), then call
    /// [`work`](Self::work). [`poll_timeout`](Self::poll_timeout) returns the latest
    /// `now` meanwhile, so a driver that only follows timers continues it too.
    pub fn has_work(&self) -> bool {
        self.has_work && self.state == State::Open
    }

    /// Continue the work [`has_work`](Self::has_work) reported (another bounded step).
    pub fn work(&mut self, now: Instant) {
        if self.state == State::Open {
            self.pump(now);
        }
    }

    /// The client closed the stream.
    pub fn handle_eof(&mut self, now: Instant) {
        if self.state == State::Open {
            // Frames already buffered are still served before the stream end counts.
            self.pump(now);
        }
        let reason = match &self.proto {
            Proto::Http(f) if f.incomplete() => LostReason::UnexpectedEof { buffered: f.buffered() },
            Proto::Ws(ws) if ws.buffered() > 0 => LostReason::UnexpectedEof { buffered: ws.buffered() },
            Proto::Undecided(first) if !first.is_empty() => LostReason::UnexpectedEof { buffered: first.len() },
            Proto::Http(_) | Proto::Undecided(_) => LostReason::PeerClosed,
            Proto::Rpcx | Proto::Ws(_) => match self.decoder.finish() {
                Err(crate::wire::DecodeError::UnexpectedEof { buffered }) => LostReason::UnexpectedEof { buffered },
                Err(e) => LostReason::Protocol(e),
                Ok(()) => LostReason::PeerClosed,
            },
        };
        self.lose(reason);
    }

    /// The transport failed.
    pub fn abort(&mut self, _now: Instant, reason: impl Into<String>) {
        self.lose(LostReason::Transport(reason.into()));
    }

    /// Time has reached (or passed) [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        self.last_now = self.last_now.max(now);
        if let (Some(deadline), Some(d)) = (self.idle_deadline, self.config.read_timeout) {
            if self.wants_read() && now >= deadline {
                return self.lose(LostReason::IdleTimeout(d));
            }
        }
        if let (Some(deadline), Some(d)) = (self.frame_deadline, self.config.frame_timeout) {
            if self.incomplete && !self.paused && now >= deadline {
                return self.lose(LostReason::FrameTimeout(d));
            }
        }
        self.review(now);
        if let Some(since) = self.stuck_since {
            if self.out_paused && now >= since + self.config.budget.grace() {
                return self.lose(LostReason::MemoryBudget);
            }
        }
        if self.has_work || self.blocked || self.out_paused {
            self.pump(now);
        }
    }

    /// Answer a request. For a oneway request nothing is sent, but the slot is released.
    /// Answering twice is [`RespondError::UnknownRequest`] and sends nothing.
    pub fn respond(&mut self, now: Instant, id: RequestId, response: Response) -> Result<(), RespondError> {
        self.respond_with(now, id, response, false, false)
    }

    /// [`respond`](Self::respond), saying why: `unauthorized` (the auth check failed;
    /// HTTP answers 401) and `close` (close the connection after the response, with a
    /// [`CloseMode::Flush`] close; on HTTP once the exchange in progress is answered).
    pub(crate) fn respond_with(
        &mut self,
        now: Instant,
        id: RequestId,
        response: Response,
        unauthorized: bool,
        close: bool,
    ) -> Result<(), RespondError> {
        match self.state {
            State::Closed(_) | State::Closing(CloseMode::Flush) | State::Closing(CloseMode::Immediate) => {
                return Err(RespondError::Closed);
            }
            _ => {}
        }
        let p = self.pending.remove(&id.0).ok_or(RespondError::UnknownRequest(id))?;
        let oneway = p.header.is_oneway();
        if let Proto::Http(f) = &mut self.proto {
            let answer = f.on_response(id.0, response, unauthorized, close, oneway);
            let close_now = match answer {
                Some((bytes, close_after)) => {
                    self.stats.responses += 1;
                    self.enqueue_raw(bytes);
                    close_after
                }
                None => f.wants_close(),
            };
            if close_now {
                self.close(now, CloseMode::Flush);
            }
        } else {
            if !oneway {
                let msg = build_response(p, response);
                self.stats.responses += 1;
                self.enqueue(msg);
            }
            if close {
                self.close(now, CloseMode::Flush);
            }
        }
        self.resume(now);
        Ok(())
    }

    /// Send a server push: a Request + oneway frame with SerializeNone and the
    /// connection's own seq counter (1, 2, ...), as Go's `Server.SendMessage` does.
    /// Returns the seq used.
    pub fn push(
        &mut self,
        _now: Instant,
        service_path: impl Into<Bytes>,
        service_method: impl Into<Bytes>,
        metadata: Metadata,
        payload: impl Into<Bytes>,
    ) -> Result<u64, PushError> {
        if self.state != State::Open {
            return Err(PushError::Closed);
        }
        if self.queued_bytes >= self.config.max_unsent_bytes || self.out_paused {
            self.push_blocked = true;
            return Err(PushError::Blocked);
        }
        let seq = self.push_seq;
        let mut msg = Message::request(SerializeType::NONE, seq, service_path, service_method);
        msg.header.set_oneway(true);
        msg.metadata = metadata;
        msg.payload = payload.into();
        let total = msg.encoded_total_len();
        if total > self.config.encoder.max_message_len as u64 {
            return Err(PushError::TooLarge(EncodeError::MessageTooLong {
                len: total,
                max: self.config.encoder.max_message_len,
            }));
        }
        self.push_seq += 1;
        self.stats.pushes += 1;
        self.enqueue(msg);
        self.sync_budget();
        Ok(seq)
    }

    /// Close the connection. Graceful: stop reading, wait for every request handed out
    /// to be answered, flush, then `ConnectionLost(LocalClose)`. Flush: stop reading,
    /// forget unanswered requests, flush what is queued (an auth-failure response, for
    /// instance), then close. Immediate: close now, dropping queued frames.
    pub fn close(&mut self, _now: Instant, mode: CloseMode) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        match mode {
            CloseMode::Immediate => self.lose(LostReason::LocalClose),
            CloseMode::Flush => {
                self.pending.clear();
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

    /// Append queued frames to `buf` (up to about 64 KiB per call once one frame is in).
    /// Returns the number of bytes appended, or `None` if there was nothing to send.
    #[must_use]
    pub fn poll_transmit<B: EncodeBuf>(&mut self, buf: &mut B) -> Option<usize> {
        let start = buf.len();
        let n = self.transmit_proto(buf);
        if let (Some(t), Some(_)) = (&mut self.tap, n) {
            t.written(buf.tail(start));
        }
        n
    }

    /// Copy every byte read and written to `tap` from now on (see
    /// [`ServerHooks::tap`](crate::service::ServerHooks::tap)).
    pub fn set_tap(&mut self, tap: Box<dyn crate::service::ConnTap>) {
        self.tap = Some(tap);
    }

    fn transmit_proto<B: EncodeBuf>(&mut self, buf: &mut B) -> Option<usize> {
        if let Proto::Ws(ws) = &mut self.proto {
            // Control frames (pongs, the close) first, then the rpcx bytes in one frame.
            let start = buf.len();
            buf.put_slice(&ws.take_control());
            let mut frames = Vec::new();
            if self.transmit(&mut frames).is_some() {
                let Proto::Ws(ws) = &mut self.proto else { unreachable!("a WebSocket connection") };
                ws.wrap(&frames, buf);
            }
            return (buf.len() > start).then(|| buf.len() - start);
        }
        self.transmit(buf)
    }

    fn transmit<B: EncodeBuf>(&mut self, buf: &mut B) -> Option<usize> {
        if matches!(self.state, State::Closed(_)) {
            return None;
        }
        let start = buf.len();
        while let Some((out, size)) = self.queue.pop_front() {
            self.queued_bytes -= size;
            let msg = match out {
                Out::Frame(msg) => msg,
                Out::Raw(bytes) => {
                    buf.put_slice(&bytes);
                    if buf.len() - start >= TRANSMIT_BATCH {
                        break;
                    }
                    continue;
                }
            };
            if let Err(e) = msg.encode(&self.config.encoder, buf) {
                // Only a response can fail here (compressed output over the limit):
                // answer with the error instead so the caller is not left waiting.
                self.stats.encode_failures += 1;
                let mut err = Message { header: msg.header, ..Default::default() };
                err.service_path = msg.service_path;
                err.service_method = msg.service_method;
                err.header.set_compress_type(crate::wire::CompressType::NONE);
                err.header.set_status(MessageStatus::ERROR);
                err.metadata.insert(SERVICE_ERROR_KEY, Bytes::from(e.to_string()));
                if err.encode(&self.config.encoder, buf).is_err() {
                    continue;
                }
            }
            self.stats.frames_out += 1;
            if buf.len() - start >= TRANSMIT_BATCH {
                break;
            }
        }
        if buf.len() > start {
            // The peer takes bytes: it is not stuck.
            self.stuck_since = None;
        }
        let now = self.last_now;
        self.review(now);
        if self.push_blocked
            && self.queued_bytes < self.config.max_unsent_bytes
            && !self.out_paused
            && self.state == State::Open
        {
            self.push_blocked = false;
            self.events.push_back(ServerEvent::Unblocked);
        }
        // Room in the output queue may let buffered requests through. Their deadlines
        // are computed from the latest instant this machine was given.
        if self.state == State::Open && self.paused {
            self.resume(self.last_now);
        }
        self.check_closing_done();
        (buf.len() > start).then(|| buf.len() - start)
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Open {
            return None;
        }
        if self.has_work {
            return Some(self.last_now);
        }
        let mut t = if self.wants_read() { self.idle_deadline } else { None };
        if self.incomplete && !self.paused {
            t = min_instant(t, self.frame_deadline);
        }
        if self.blocked || self.out_paused {
            t = min_instant(t, Some(self.last_now + BUDGET_RECHECK));
        }
        if let Some(since) = self.stuck_since {
            t = min_instant(t, Some(since + self.config.budget.grace()));
        }
        t
    }

    /// Whether the driver should read: false while the application has
    /// `max_in_flight` requests unanswered, while too many bytes are unsent, while
    /// work is pending ([`has_work`](Self::has_work)) or the server's memory budget
    /// holds this connection back, while an HTTP request is being answered and the
    /// next one has begun to arrive, and once closing.
    pub fn wants_read(&self) -> bool {
        self.state == State::Open
            && !self.full()
            && !self.has_work
            && !self.blocked
            && !self.out_paused
            && !matches!(&self.proto, Proto::Http(f) if f.holding())
    }

    /// Bytes this connection has charged to the server's [`MemoryBudget`].
    pub fn charged_bytes(&self) -> usize {
        self.charged
    }

    /// Requests handed out and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether a close has started or the connection has ended.
    pub fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// Counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Why the connection ended, once it has.
    pub fn lost_reason(&self) -> Option<&LostReason> {
        match &self.state {
            State::Closed(r) => Some(r),
            _ => None,
        }
    }

    /// The settings this machine runs on.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    fn full(&self) -> bool {
        self.pending.len() >= self.config.max_in_flight || self.queued_bytes >= self.config.max_unsent_bytes
    }

    fn enqueue(&mut self, msg: Message) {
        let size = QUEUED_OVERHEAD + msg.encoded_total_len() as usize;
        self.queued_bytes += size;
        self.queue.push_back((Out::Frame(msg), size));
    }

    fn enqueue_raw(&mut self, bytes: Bytes) {
        let size = QUEUED_OVERHEAD + bytes.len();
        self.queued_bytes += size;
        self.queue.push_back((Out::Raw(bytes), size));
    }

    /// Room was made: decode more buffered requests, and restart the idle clock if
    /// reading had paused.
    fn resume(&mut self, now: Instant) {
        if self.state == State::Open {
            if self.paused && !self.full() {
                self.paused = false;
                if let Some(d) = self.config.read_timeout {
                    self.idle_deadline = Some(now + d);
                }
                // The peer was not at fault while we did not read: the frame clock restarts.
                if let Some(d) = self.config.frame_timeout {
                    self.frame_deadline = self.incomplete.then(|| now + d);
                }
            }
            self.pump(now);
        } else {
            self.sync_budget();
        }
        self.check_closing_done();
    }

    /// The budget's limit for this connection: never below two frames, so one
    /// maximum-size frame can always be received.
    fn budget_limit(&self) -> usize {
        self.config.budget.limit().max(self.config.decoder.max_message_len.saturating_mul(2))
    }

    /// Decode buffered frames while there is room, doing at most [`WORK_PER_TURN`].
    fn pump(&mut self, now: Instant) {
        if let Proto::Http(_) = self.proto {
            return self.http_pump(now);
        }
        self.last_now = self.last_now.max(now);
        self.has_work = false;
        self.blocked = false;
        let mut work = WORK_PER_TURN;
        let mut decoded = false;
        while self.state == State::Open {
            if self.full() {
                self.paused = true;
                break;
            }
            if self.inflating.is_some() {
                match self.inflate_step(now, &mut work) {
                    Ok(Step::Again) => continue,
                    Ok(Step::OutOfWork) => self.has_work = true,
                    Ok(Step::Blocked) => self.blocked = true,
                    Err(e) => return self.lose(LostReason::Protocol(e.into())),
                }
                break;
            }
            if work == 0 {
                self.has_work = self.decoder.has_frame();
                break;
            }
            let before = self.decoder.buffered();
            match self.decoder.next_raw() {
                Ok(Some(msg)) => {
                    decoded = true;
                    self.reserved_frame = 0;
                    let cost = (before - self.decoder.buffered()) + WORK_PER_PAIR * msg.metadata.len();
                    work = work.saturating_sub(cost);
                    if msg.header.compress_type() == crate::wire::CompressType::NONE {
                        self.on_message(now, msg);
                    } else {
                        let input_len = msg.payload.len();
                        self.inflating = Some(Box::new(Inflating { msg, inflater: None, input_len }));
                    }
                }
                Ok(None) => {
                    self.reserve_partial();
                    break;
                }
                Err(e) => return self.lose(LostReason::Protocol(e)),
            }
        }
        if self.state != State::Open {
            return;
        }
        // The frame clock: runs while part of a frame (and no whole one) is buffered,
        // restarting when a new frame begins.
        let undecided = match &self.proto {
            Proto::Undecided(first) => first.len(),
            Proto::Ws(ws) => ws.buffered(),
            _ => 0,
        };
        let incomplete =
            !self.has_work && self.inflating.is_none() && !self.paused && self.decoder.buffered() + undecided > 0;
        self.frame_clock(now, incomplete, decoded);
    }

    /// The frame clock: runs while part of a frame or HTTP request (and no whole one)
    /// is buffered, restarting when a new one begins.
    fn frame_clock(&mut self, now: Instant, incomplete: bool, taken: bool) {
        if incomplete && (taken || !self.incomplete) {
            self.frame_deadline = self.config.frame_timeout.map(|d| now + d);
        } else if !incomplete && !self.paused {
            self.frame_deadline = None;
        }
        self.incomplete = incomplete || (self.incomplete && self.paused);
        self.review(now);
    }

    /// [`pump`](Self::pump) for an HTTP connection: take the next request when none is
    /// being answered, and dispatch its calls.
    fn http_pump(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        self.has_work = false;
        self.blocked = false;
        let mut taken = false;
        while self.state == State::Open {
            if self.full() {
                self.paused = true;
                break;
            }
            let cfg = &self.config;
            let Proto::Http(f) = &mut self.proto else { unreachable!("an HTTP connection") };
            let parsed =
                f.next(&cfg.http, cfg.decoder.max_message_len, cfg.decoder.max_metadata_pairs, cfg.max_in_flight);
            match parsed {
                http::front::Parsed::Need { continue_wanted } => {
                    let held = f.buffered();
                    if continue_wanted {
                        self.enqueue_raw(Bytes::from_static(http::h1::CONTINUE));
                    }
                    // A large body is held back while the server is over its budget.
                    if held > SMALL_FRAME && self.config.budget.over(self.budget_limit()) {
                        self.blocked = true;
                    }
                    break;
                }
                http::front::Parsed::Reply { bytes, close } => {
                    taken = true;
                    self.stats.responses += 1;
                    self.enqueue_raw(bytes);
                    if close {
                        self.close(now, CloseMode::Flush);
                    }
                }
                http::front::Parsed::Fail(e, bytes) => {
                    self.enqueue_raw(bytes);
                    self.close_reason = Some(LostReason::Http(e));
                    self.close(now, CloseMode::Flush);
                }
                http::front::Parsed::Upgrade { bytes, rest } => {
                    let mut ws = Box::new(WsFraming::server(self.config.decoder.max_message_len));
                    // The 101 answer goes out before any frame, not in one.
                    ws.send_raw(&bytes);
                    ws.feed(&rest);
                    self.proto = Proto::Ws(ws);
                    self.frame_deadline = None;
                    self.incomplete = false;
                    self.unwrap_ws(now);
                    return self.pump(now);
                }
                http::front::Parsed::Tunnel { bytes, rest } => {
                    self.enqueue_raw(bytes);
                    self.proto = Proto::Rpcx;
                    self.decoder.feed(&rest);
                    self.frame_deadline = None;
                    self.incomplete = false;
                    return self.pump(now);
                }
                http::front::Parsed::Calls(messages) => {
                    taken = true;
                    if let Some(d) = self.config.read_timeout {
                        self.idle_deadline = Some(now + d);
                    }
                    let ids: Vec<u64> = messages.into_iter().map(|m| self.admit(now, m).0).collect();
                    let Proto::Http(f) = &mut self.proto else { unreachable!("an HTTP connection") };
                    if let Some((bytes, close)) = f.bind(&ids) {
                        self.stats.responses += 1;
                        self.enqueue_raw(bytes);
                        if close {
                            self.close(now, CloseMode::Flush);
                        }
                    }
                }
            }
        }
        if self.state != State::Open {
            self.sync_budget();
            return;
        }
        let Proto::Http(f) = &self.proto else { unreachable!("an HTTP connection") };
        let incomplete = !self.paused && f.incomplete();
        self.frame_clock(now, incomplete, taken);
    }

    /// One step of the decompression in progress.
    fn inflate_step(&mut self, now: Instant, work: &mut usize) -> Result<Step, compress::DecompressError> {
        let limit = self.budget_limit();
        let budget = self.config.budget.clone();
        let inf = self.inflating.as_mut().expect("inflating");
        if inf.inflater.is_none() {
            if !budget.try_start_inflation() {
                return Ok(Step::Blocked);
            }
            let ct = inf.msg.header.compress_type();
            let c = match self.config.decoder.compressors.get(ct) {
                Some(c) => c.clone(),
                None => {
                    budget.end_inflation();
                    return Err(compress::DecompressError::Unsupported(ct.bits()));
                }
            };
            let payload = std::mem::take(&mut inf.msg.payload);
            inf.inflater = Some(c.inflater(payload, self.config.decoder.max_decompressed_len));
        }
        if *work == 0 {
            return Ok(Step::OutOfWork);
        }
        let chunk = INFLATE_CHUNK.min(*work);
        self.sync_budget();
        if !budget.try_add(chunk, limit) {
            return Ok(Step::Blocked);
        }
        self.charged += chunk;
        let inf = self.inflating.as_mut().expect("inflating");
        let done = inf.inflater.as_mut().expect("inflater").step(chunk);
        *work -= chunk;
        match done {
            Ok(false) => {
                self.sync_budget();
                Ok(Step::Again)
            }
            Ok(true) => {
                let mut inf = self.inflating.take().expect("inflating");
                budget.end_inflation();
                inf.msg.payload = inf.inflater.take().expect("inflater").finish();
                self.on_message(now, inf.msg);
                self.sync_budget();
                Ok(Step::Again)
            }
            Err(e) => Err(e),
        }
    }

    /// Reserve the whole length of a large frame whose beginning is buffered, before
    /// reading its body; `blocked` when the budget cannot take it now.
    fn reserve_partial(&mut self) {
        let Some(len) = self.decoder.pending_frame_len() else { return };
        if len <= SMALL_FRAME || self.reserved_frame >= len {
            return;
        }
        self.sync_budget();
        let extra = len - self.decoder.buffered().max(self.reserved_frame);
        if self.config.budget.try_add(extra, self.budget_limit()) {
            self.charged += extra;
            self.reserved_frame = len;
        } else {
            self.blocked = true;
        }
    }

    /// Charge the budget with what this connection holds now.
    fn sync_budget(&mut self) {
        let held = if self.state == State::Open || matches!(self.state, State::Closing(_)) {
            let http = match &self.proto {
                Proto::Http(f) => f.buffered(),
                Proto::Ws(ws) => ws.buffered(),
                _ => 0,
            };
            let input = (self.decoder.buffered() + http).max(self.reserved_frame);
            let inflate =
                self.inflating.as_ref().map_or(0, |i| i.input_len + i.inflater.as_ref().map_or(0, |f| f.held()));
            input + inflate + self.queued_bytes
        } else {
            0
        };
        let budget = &self.config.budget;
        match held.cmp(&self.charged) {
            std::cmp::Ordering::Greater => budget.add(held - self.charged),
            std::cmp::Ordering::Less => budget.sub(self.charged - held),
            std::cmp::Ordering::Equal => {}
        }
        self.charged = held;
    }

    /// Update the budget's charge and whether the server's budget holds this connection
    /// back.
    fn review(&mut self, now: Instant) {
        self.sync_budget();
        let was = self.out_paused;
        // Held back by the budget (over it, or this connection's next frame does not
        // fit) while its own peer leaves output queued: the peer is part of the problem.
        self.out_paused = self.state == State::Open
            && self.queued_bytes >= OUTPUT_SHARE
            && (self.blocked || self.config.budget.over(self.budget_limit()));
        if !self.out_paused {
            self.stuck_since = None;
        } else if self.stuck_since.is_none() {
            self.stuck_since = Some(now);
        }
        if was && !self.out_paused && self.push_blocked && self.queued_bytes < self.config.max_unsent_bytes {
            self.push_blocked = false;
            self.events.push_back(ServerEvent::Unblocked);
        }
    }

    /// Give back everything charged (the connection is over).
    fn release_all(&mut self) {
        if let Some(inf) = self.inflating.take() {
            if inf.inflater.is_some() {
                self.config.budget.end_inflation();
            }
        }
        self.config.budget.sub(self.charged);
        self.charged = 0;
    }

    fn on_message(&mut self, now: Instant, mut msg: Message) {
        self.stats.frames_in += 1;
        if let Some(d) = self.config.read_timeout {
            self.idle_deadline = Some(now + d);
        }
        if msg.header.is_heartbeat() {
            // Echo everything with the Response bit, even for oneway (Go does).
            let seq = msg.header.seq();
            msg.header.set_message_type(MessageType::Response);
            self.stats.heartbeats += 1;
            self.enqueue(msg);
            self.events.push_back(ServerEvent::Heartbeat { seq });
            return;
        }
        self.admit(now, msg);
    }

    /// Move the data of whole WebSocket frames to the rpcx decoder; a close from the
    /// peer ends the connection after our close frame, a bad frame at once.
    fn unwrap_ws(&mut self, now: Instant) {
        let Proto::Ws(ws) = &mut self.proto else { return };
        loop {
            match ws.next() {
                Ok(Some(http::ws::Incoming::Data(d))) => self.decoder.feed(&d),
                Ok(Some(http::ws::Incoming::Closed)) => {
                    self.close(now, CloseMode::Flush);
                    return;
                }
                Ok(None) => return,
                Err(e) => return self.lose(LostReason::Http(http::HttpError::WebSocket(e))),
            }
        }
    }

    /// Hand a request to the application.
    fn admit(&mut self, now: Instant, msg: Message) -> RequestId {
        let deadline = msg.metadata.get_slice(SERVER_TIMEOUT_KEY).and_then(|v| parse_server_timeout(now, v));
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.pending.insert(
            id.0,
            Pending { header: msg.header, path: msg.service_path.clone(), method: msg.service_method.clone() },
        );
        self.stats.requests += 1;
        self.events.push_back(ServerEvent::Request(Request { id, message: msg, deadline }));
        id
    }

    fn check_closing_done(&mut self) {
        if let State::Closing(mode) = self.state {
            let waiting = mode == CloseMode::Graceful && !self.pending.is_empty();
            if self.queue.is_empty() && !waiting {
                let reason = self.close_reason.take().unwrap_or(LostReason::LocalClose);
                self.state = State::Closed(reason.clone());
                self.events.push_back(ServerEvent::ConnectionLost(reason));
            }
        }
    }

    fn lose(&mut self, reason: LostReason) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        self.pending.clear();
        self.queue.clear();
        self.queued_bytes = 0;
        self.release_all();
        self.reserved_frame = 0;
        self.has_work = false;
        self.blocked = false;
        self.out_paused = false;
        self.stuck_since = None;
        self.state = State::Closed(reason.clone());
        self.events.push_back(ServerEvent::ConnectionLost(reason));
    }
}

/// Parse `__ServerTimeout` (decimal milliseconds, as Go's `strconv.ParseInt`): `<= 0`
/// means the deadline has passed (a negative value lies that far in the past, as Go's
/// `context.WithTimeout` has it); garbage or an unrepresentable instant is ignored.
fn parse_server_timeout(now: Instant, value: &[u8]) -> Option<Instant> {
    let ms: i64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    match u64::try_from(ms) {
        Ok(ms) => now.checked_add(Duration::from_millis(ms)),
        Err(_) => Some(now.checked_sub(Duration::from_millis(ms.unsigned_abs())).unwrap_or(now)),
    }
}

/// The response frame for a request, exactly as Go's server builds it.
fn build_response(p: Pending, r: Response) -> Message {
    let mut header = p.header;
    header.set_message_type(MessageType::Response);
    header.set_compress_type(compress::choose(p.header.compress_type(), r.payload.len()));
    let mut metadata = r.metadata;
    if let Some(text) = r.error {
        header.set_status(MessageStatus::ERROR);
        metadata.insert(SERVICE_ERROR_KEY, text);
    }
    Message { header, service_path: p.path, service_method: p.method, metadata, payload: r.payload }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timeout_parsing_tolerates_go_values() {
        let now = Instant::now();
        assert_eq!(parse_server_timeout(now, b"4999"), Some(now + Duration::from_millis(4999)));
        assert_eq!(parse_server_timeout(now, b"0"), Some(now));
        assert_eq!(parse_server_timeout(now, b"-25"), Some(now - Duration::from_millis(25)));
        assert_eq!(parse_server_timeout(now, b"soon"), None);
        assert_eq!(parse_server_timeout(now, b"99999999999999999999"), None);
        assert_eq!(parse_server_timeout(now, &[0xff]), None);
    }
}
