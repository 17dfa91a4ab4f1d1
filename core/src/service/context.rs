//! The per-request [`Context`] handed to handlers.

use crate::Extensions;
use crate::conn::PushError;
use crate::wire::{AUTH_KEY, Metadata, SerializeType};
use bytes::Bytes;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a connection comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Printable address (`127.0.0.1:5000`, a unix socket path, ...).
    pub addr: String,
    /// The IP address, for TCP peers.
    pub ip: Option<IpAddr>,
}

impl Peer {
    /// A peer with no IP (unix socket, in-memory transport).
    pub fn named(addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), ip: None }
    }
}

impl From<std::net::SocketAddr> for Peer {
    fn from(a: std::net::SocketAddr) -> Self {
        Self { addr: a.to_string(), ip: Some(a.ip()) }
    }
}

/// Sends server pushes to the client of one connection. Runtimes implement it.
pub trait PushSink: Send + Sync {
    /// Queue a push (Request + oneway + SerializeNone) to this connection's client.
    fn push(
        &self,
        service_path: Bytes,
        service_method: Bytes,
        metadata: Metadata,
        payload: Bytes,
    ) -> Result<(), PushError>;
}

/// A cloneable handle to push messages to the client of the current connection.
#[derive(Clone, Default)]
pub struct Pusher(Option<Arc<dyn PushSink>>);

impl Pusher {
    /// A pusher backed by `sink`.
    pub fn new(sink: Arc<dyn PushSink>) -> Self {
        Self(Some(sink))
    }

    /// Push `payload` to the client as `service_path.service_method`. Fails with
    /// [`PushError::Closed`] when the connection has ended (or there is no connection,
    /// as in unit tests).
    pub fn push(
        &self,
        service_path: impl Into<Bytes>,
        service_method: impl Into<Bytes>,
        metadata: Metadata,
        payload: impl Into<Bytes>,
    ) -> Result<(), PushError> {
        match &self.0 {
            Some(s) => s.push(service_path.into(), service_method.into(), metadata, payload.into()),
            None => Err(PushError::Closed),
        }
    }
}

impl fmt::Debug for Pusher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Pusher" } else { "Pusher(none)" })
    }
}

#[derive(Debug)]
struct Inner {
    service_path: Bytes,
    service_method: Bytes,
    serialize_type: SerializeType,
    oneway: bool,
    metadata: Metadata,
    deadline: Option<Instant>,
    received_at: Instant,
    peer: Arc<Peer>,
    pusher: Pusher,
    response_metadata: Mutex<Metadata>,
    extensions: Mutex<Extensions>,
    timer: Option<Arc<dyn super::hooks::Timer>>,
    request_size: usize,
}

impl fmt::Debug for dyn super::hooks::Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Timer")
    }
}

/// What a handler knows about its request: metadata, deadline, peer, and a way to set
/// response metadata and push messages to the client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Context(Arc<Inner>);

/// Everything needed to build a [`Context`]; runtimes fill it from a request.
#[derive(Debug)]
pub struct ContextParts {
    /// Service path of the request.
    pub service_path: Bytes,
    /// Method of the request.
    pub service_method: Bytes,
    /// Serialize type of the request (and of the reply).
    pub serialize_type: SerializeType,
    /// Whether the client expects no response.
    pub oneway: bool,
    /// Request metadata.
    pub metadata: Metadata,
    /// Deadline from `__ServerTimeout`.
    pub deadline: Option<Instant>,
    /// When the request was decoded (the runtime's clock; hooks use it, the core never
    /// reads a clock).
    pub received_at: Instant,
    /// The connection's peer.
    pub peer: Arc<Peer>,
    /// Pushes to this connection's client.
    pub pusher: Pusher,
}

impl Context {
    /// Build a context.
    pub fn new(parts: ContextParts) -> Self {
        Self::with_server(None, parts, None, 0)
    }

    /// A context with the server's timer and the request's payload size, in `spare`'s
    /// allocation when it is given and no one else holds it (see
    /// [`into_spare`](Self::into_spare)).
    pub(crate) fn with_server(
        spare: Option<Context>,
        parts: ContextParts,
        timer: Option<Arc<dyn super::hooks::Timer>>,
        request_size: usize,
    ) -> Self {
        if let Some(mut c) = spare {
            if let Some(inner) = Arc::get_mut(&mut c.0) {
                inner.service_path = parts.service_path;
                inner.service_method = parts.service_method;
                inner.serialize_type = parts.serialize_type;
                inner.oneway = parts.oneway;
                inner.metadata = parts.metadata;
                inner.deadline = parts.deadline;
                inner.received_at = parts.received_at;
                inner.peer = parts.peer;
                inner.pusher = parts.pusher;
                inner.timer = timer;
                inner.request_size = request_size;
                return c;
            }
        }
        Self(Arc::new(Inner {
            service_path: parts.service_path,
            service_method: parts.service_method,
            serialize_type: parts.serialize_type,
            oneway: parts.oneway,
            metadata: parts.metadata,
            deadline: parts.deadline,
            received_at: parts.received_at,
            peer: parts.peer,
            pusher: parts.pusher,
            response_metadata: Mutex::new(Metadata::new()),
            extensions: Mutex::new(Extensions::new()),
            timer,
            request_size,
        }))
    }

    /// This context emptied for reuse by the next request of its connection, if no one
    /// else holds it (a handler may keep a clone): its request's names, metadata,
    /// response metadata and extensions are dropped now, so a kept context pins no
    /// input buffer and hands nothing on.
    pub(crate) fn into_spare(mut self) -> Option<Context> {
        let inner = Arc::get_mut(&mut self.0)?;
        inner.service_path = Bytes::new();
        inner.service_method = Bytes::new();
        inner.metadata = Metadata::new();
        *inner.response_metadata.get_mut().unwrap_or_else(|p| p.into_inner()) = Metadata::new();
        *inner.extensions.get_mut().unwrap_or_else(|p| p.into_inner()) = Extensions::new();
        Some(self)
    }

    /// A context for calling a handler directly (tests, in-process use): no peer, no
    /// connection.
    pub fn detached(service_path: &str, service_method: &str, serialize_type: SerializeType, now: Instant) -> Self {
        Self::new(ContextParts {
            service_path: Bytes::copy_from_slice(service_path.as_bytes()),
            service_method: Bytes::copy_from_slice(service_method.as_bytes()),
            serialize_type,
            oneway: false,
            metadata: Metadata::new(),
            deadline: None,
            received_at: now,
            peer: Arc::new(Peer::named("detached")),
            pusher: Pusher::default(),
        })
    }

    /// Request metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.0.metadata
    }

    /// The `__AUTH` token, if present and UTF-8.
    pub fn auth_token(&self) -> Option<&str> {
        self.0.metadata.get_str(AUTH_KEY).ok().flatten()
    }

    /// Set a response metadata key (sent with the response, success or error).
    pub fn set_response_metadata(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.0.response_metadata.lock().unwrap_or_else(|p| p.into_inner()).insert(key, value);
    }

    /// Take the response metadata set so far.
    pub fn take_response_metadata(&self) -> Metadata {
        std::mem::take(&mut *self.0.response_metadata.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The client's deadline (from `__ServerTimeout`). rpcx does not abort a handler at
    /// its deadline; a handler that may run long should watch it.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.deadline
    }

    /// When the request was decoded.
    pub fn received_at(&self) -> Instant {
        self.0.received_at
    }

    /// The connection's peer.
    pub fn peer(&self) -> &Peer {
        &self.0.peer
    }

    /// Service path as it arrived (names are bytes on the wire; Go's error texts echo
    /// them exactly).
    pub fn service_path_bytes(&self) -> &Bytes {
        &self.0.service_path
    }

    /// Method as it arrived.
    pub fn service_method_bytes(&self) -> &Bytes {
        &self.0.service_method
    }

    /// Service path as UTF-8 (lossy: for display; see [`service_path_bytes`](Self::service_path_bytes)).
    pub fn service_path(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0.service_path)
    }

    /// Method as UTF-8 (lossy: for display; see [`service_method_bytes`](Self::service_method_bytes)).
    pub fn service_method(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0.service_method)
    }

    /// The request's serialize type (the reply uses the same).
    pub fn serialize_type(&self) -> SerializeType {
        self.0.serialize_type
    }

    /// Whether the client expects no response.
    pub fn is_oneway(&self) -> bool {
        self.0.oneway
    }

    /// Push a message to this connection's client.
    pub fn pusher(&self) -> &Pusher {
        &self.0.pusher
    }

    /// The request payload's size in bytes (as received, after decompression).
    pub fn request_size(&self) -> usize {
        self.0.request_size
    }

    /// Store per-request state (hooks hand it from one step to the next: a span, a
    /// start time), replacing a value of the same type.
    pub fn insert_extension<T: Send + Sync + 'static>(&self, value: T) -> Option<T> {
        self.0.extensions.lock().unwrap_or_else(|p| p.into_inner()).insert(value)
    }

    /// Look at the stored value of type `T`.
    pub fn with_extension<T: Send + Sync + 'static, R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.0.extensions.lock().unwrap_or_else(|p| p.into_inner()).get::<T>())
    }

    /// Take the stored value of type `T` out.
    pub fn remove_extension<T: Send + Sync + 'static>(&self) -> Option<T> {
        self.0.extensions.lock().unwrap_or_else(|p| p.into_inner()).remove::<T>()
    }

    /// Wait until `at` on the server's timer. `false` at once when there is none (a
    /// context made by hand, or a runtime without timers).
    pub async fn sleep_until(&self, at: Instant) -> bool {
        match &self.0.timer {
            Some(t) => {
                t.sleep_until(at).await;
                true
            }
            None => false,
        }
    }
}
