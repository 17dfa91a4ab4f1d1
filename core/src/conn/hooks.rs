//! Client hooks (Go's client plugins), for every `Client` and `XClient` on every
//! runtime: they run inside [`ClientSession`](super::ClientSession) and
//! [`ClientConnection`](super::ClientConnection) (calls, frames, the connection) and the
//! XClient's [`Governor`](crate::govern::Governor) (selection, dials), so each runtime
//! gets them without a line of its own.

use crate::Extensions;
use crate::error::Error;
use crate::govern::{Instance, ServerKey};
use crate::wire::{Message, Metadata};
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A call about to be sent, as [`ClientHooks::pre_call`] sees it: the hook may change
/// its names and metadata (inject a trace context, add a token) or refuse it.
#[derive(Debug)]
pub struct OutgoingCall<'a> {
    /// The server's address, as the client was given it (`tcp@127.0.0.1:8972`).
    pub remote: &'a str,
    /// Service path.
    pub service_path: &'a mut Bytes,
    /// Method.
    pub service_method: &'a mut Bytes,
    /// Request metadata.
    pub metadata: &'a mut Metadata,
    /// Whether the call expects no response.
    pub oneway: bool,
    /// Per-call state for [`ClientHooks::post_call`] (a span, a start time).
    pub extensions: &'a mut Extensions,
}

/// A call that ended, as [`ClientHooks::post_call`] sees it.
#[derive(Debug)]
pub struct FinishedCall<'a> {
    /// The server's address.
    pub remote: &'a str,
    /// Service path (as sent, after the `pre_call` hooks).
    pub service_path: &'a Bytes,
    /// Method (as sent).
    pub service_method: &'a Bytes,
    /// The response (`None` for a oneway call once written) or the error.
    pub result: Result<Option<&'a Message>, &'a Error>,
    /// From the call's start to its end, on the runtime's clock.
    pub latency: Duration,
    /// Payload bytes sent.
    pub request_size: usize,
    /// What the `pre_call` hooks stored.
    pub extensions: &'a mut Extensions,
}

/// Hooks into a client's calls, frames and connections. Every method has a no-op
/// default. They run on the task or thread that drives the connection (and, for
/// [`select`](Self::select) and [`conn_create_failed`](Self::conn_create_failed), the
/// XClient's caller) under the connection's lock: they must not block nor call back
/// into the same client. A hook that panics is caught: a panicking `pre_call` or frame
/// hook fails that call with [`Error::Hook`]; a panic elsewhere is logged and ignored.
///
/// On an `XClient` the hooks run for every attempt on every server (as Go's
/// `wrapCall` runs its plugins around each `Client.Call`); Broadcast and Fork run them
/// once per server.
pub trait ClientHooks: Send + Sync + 'static {
    /// Before a call is sent. `Err(text)` fails the call with [`Error::Hook`] (Go
    /// ignores a `PreCall` error; we honour it); [`post_call`](Self::post_call) still
    /// runs with that error.
    fn pre_call(&self, _call: &mut OutgoingCall<'_>) -> Result<(), String> {
        Ok(())
    }
    /// After a call ended, however it ended (response, error, timeout, cancel, refused by
    /// a hook).
    fn post_call(&self, _call: &mut FinishedCall<'_>) {}
    /// A connection to `remote` is up (after its TLS / HTTP handshake).
    fn conn_opened(&self, _remote: &str) {}
    /// The connection to `remote` ended.
    fn conn_closed(&self, _remote: &str) {}
    /// An XClient failed to dial `server`.
    fn conn_create_failed(&self, _server: &str, _error: &str) {}
    /// A request frame is about to be encoded (after `pre_call`, with its seq and the
    /// `__ServerTimeout` key). `Err(text)` fails the call with [`Error::Hook`].
    fn before_encode(&self, _msg: &mut Message) -> Result<(), String> {
        Ok(())
    }
    /// A response or server push was decoded. `Err(text)` fails the call the response
    /// belongs to with [`Error::Hook`] (a push is dropped).
    fn after_decode(&self, _msg: &mut Message) -> Result<(), String> {
        Ok(())
    }
    /// An XClient's selector chose `chosen` among `servers` for `service_path.method`
    /// (Go's `WrapSelect`): the hook may change the choice (`None`: no server).
    fn select(&self, _service_path: &str, _method: &str, _servers: &[Instance], _chosen: &mut Option<ServerKey>) {}
}

/// The hooks of one client, in the order they run. Cheap to clone; empty by default.
#[derive(Clone, Default)]
pub struct ClientHookSet(Option<Arc<[Arc<dyn ClientHooks>]>>);

impl ClientHookSet {
    /// A set of `hooks`, run in this order.
    pub fn new(hooks: Vec<Arc<dyn ClientHooks>>) -> Self {
        if hooks.is_empty() { Self(None) } else { Self(Some(hooks.into())) }
    }

    /// This set with `hook` added last.
    pub fn with(self, hook: Arc<dyn ClientHooks>) -> Self {
        let mut v: Vec<_> = self.iter().cloned().collect();
        v.push(hook);
        Self::new(v)
    }

    /// This set with every hook of `other` added after its own.
    pub fn extended(self, other: &ClientHookSet) -> Self {
        let v: Vec<_> = self.iter().chain(other.iter()).cloned().collect();
        Self::new(v)
    }

    /// Whether there are no hooks.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The hooks.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn ClientHooks>> + '_ {
        self.0.iter().flat_map(|h| h.iter())
    }

    /// Run `f` on every hook, catching panics (`what` names it in the log).
    pub(crate) fn each(&self, what: &'static str, mut f: impl FnMut(&dyn ClientHooks)) {
        for h in self.iter() {
            crate::guard::catch(what, || f(h.as_ref()));
        }
    }

    /// Run a fallible `f` on every hook until one refuses; a panic is a refusal.
    pub(crate) fn check(
        &self,
        what: &'static str,
        mut f: impl FnMut(&dyn ClientHooks) -> Result<(), String>,
    ) -> Result<(), String> {
        for h in self.iter() {
            crate::guard::catch(what, || f(h.as_ref())).unwrap_or_else(|| Err(format!("a client {what} panicked")))?;
        }
        Ok(())
    }
}

impl From<Vec<Arc<dyn ClientHooks>>> for ClientHookSet {
    fn from(v: Vec<Arc<dyn ClientHooks>>) -> Self {
        Self::new(v)
    }
}

impl fmt::Debug for ClientHookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientHookSet({})", self.0.as_ref().map_or(0, |h| h.len()))
    }
}
