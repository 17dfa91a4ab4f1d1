//! Runtime-agnostic services: typed async handlers, dispatch with Go's error texts,
//! auth, and server hooks. Handlers are plain `std::future::Future`s, so every runtime
//! (std included) serves the same [`Router`]. A server's connections run their
//! requests through a [`Dispatcher`] (one per server: router, [`ServerSettings`],
//! [`ServerTotals`]) and a [`Session`] each; see [`Session::dispatch`] for the drive
//! contract.
//!
//! ```
//! use rpcx_core::service::{Context, Router, Service};
//! use rpcx_core::wire::SerializeType;
//!
//! #[derive(serde::Deserialize)]
//! #[allow(non_snake_case)]
//! struct Args { A: i64, B: i64 }
//! #[derive(serde::Serialize)]
//! #[allow(non_snake_case)]
//! struct Reply { C: i64 }
//!
//! let router = Router::new().service(
//!     Service::new("Arith")
//!         .method("Mul", |_ctx: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
//!         .method("Add", |_ctx: Context, a: Args| async move { Ok(Reply { C: a.A + a.B }) }),
//! );
//! assert!(router.has_method("Arith", "Mul"));
//! ```

mod context;
mod dispatch;
pub mod hooks;
mod settings;

pub use context::{Context, ContextParts, Peer, PushSink, Pusher};
pub use dispatch::{Dispatch, Dispatcher, EVENTS_PER_WRITE, Push, PushQueue, Served, ServerTotals, Session, Waiting};
pub use hooks::{
    Admit, Alias, BlockingRateLimiter, ConnRateLimiter, ConnTap, IpFilter, RateLimiter, Rejection, RequestHead,
    ServerHooks, Timer,
};
pub use settings::{DEFAULT_CLOSE_LINGER, ServerSettings};

use crate::codec::{self, CodecError, Decoding};
use crate::conn::Response;
use crate::guard::CatchUnwind;
use crate::wire::SerializeType;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::future::Future;

/// The error text of a request whose server hook panicked (the panic is logged).
pub const HOOK_PANICKED: &str = "[service internal error]: a server hook panicked";
use std::pin::Pin;
use std::sync::Arc;

/// The error a handler returns: its text goes back to the caller as the response's
/// `__rpcx_error__` (Go's `ServiceError`), the same text Go's `err.Error()` would give.
///
/// Anything that displays converts into it, so `?` works on any error and
/// `Err("no such key".into())` or `Err(format!("bad {x}").into())` on text. Every
/// handler the [`Service`] builder takes returns it, so `async move { Ok(reply) }` needs
/// no turbofish (a handler that only fails names its reply type: `Err::<Reply, _>(..)`).
///
/// It does not implement `Display` itself (that would make the blanket conversion
/// conflict with `From<T> for T`); [`message`](Self::message) is its text.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceError {
    message: String,
}

impl ServiceError {
    /// An error with `message` as its text.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// The text sent to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The text, owned.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl<E: std::fmt::Display> From<E> for ServiceError {
    fn from(e: E) -> Self {
        Self { message: e.to_string() }
    }
}

impl std::fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceError({:?})", self.message)
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A request being served ([`Router::serve`]): resolves to its outcome and context.
pub type Serving = BoxFuture<(Dispatched, Context)>;

/// [`Router::start`]'s outcome: served already, or the future to spawn.
pub(crate) enum Started {
    Ready((Dispatched, Context)),
    Waiting(Serving),
}

/// Where [`Router::prelude`] starts.
#[derive(Clone, Copy)]
enum Stage {
    Start,
    /// After an admission wait, at the next admit hook.
    Admit(usize),
    AfterAuth,
}

/// Where [`Router::prelude`] stopped.
enum Step {
    /// The response (a refusal, a lookup failure, a hook's error).
    Done(Dispatched),
    /// The handler's future, made.
    Call(CatchUnwind<Result<Bytes, String>>),
    /// An admit hook asked to wait until this instant; then the admit hooks from this
    /// index go on.
    Wait(std::time::Instant, usize),
    /// The auth check is next.
    Auth(AuthFn),
}

/// A method implementation after type erasure: payload in, payload or error text out.
pub trait Handler: Send + Sync + 'static {
    /// Run the method on a payload serialized with `ctx.serialize_type()`.
    fn call(&self, ctx: Context, payload: Bytes) -> BoxFuture<Result<Bytes, String>>;
}

struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(Context, Bytes) -> BoxFuture<Result<Bytes, String>> + Send + Sync + 'static,
{
    fn call(&self, ctx: Context, payload: Bytes) -> BoxFuture<Result<Bytes, String>> {
        (self.0)(ctx, payload)
    }
}

fn codec_error(e: CodecError) -> String {
    match e {
        // Go's text for a serialize type with no codec registered (Thrift keeps our
        // clearer "unsupported" text: Go has a Thrift codec, we do not yet).
        CodecError::Unsupported(st) if st.bits() > 4 => format!("can not find codec for {}", st.bits()),
        e => e.to_string(),
    }
}

/// Decode `A` with serde, run `f`, encode the reply with the same serialize type.
fn serde_handler<A, R, E, Fut, F>(decoding: Decoding, f: F) -> Arc<dyn Handler>
where
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: Into<ServiceError> + Send + 'static,
{
    Arc::new(FnHandler(move |ctx: Context, payload: Bytes| -> BoxFuture<Result<Bytes, String>> {
        let st = ctx.serialize_type();
        let args = match codec::from_payload_with::<A>(st, &payload, decoding) {
            Ok(a) => a,
            Err(e) => return Box::pin(std::future::ready(Err(codec_error(e)))),
        };
        let fut = f(ctx, args);
        Box::pin(async move {
            let reply = fut.await.map_err(|e| e.into().message)?;
            codec::to_payload_bytes(st, &reply).map_err(codec_error)
        })
    }))
}

#[cfg(feature = "protobuf")]
fn proto_handler<A, R, E, Fut, F>(decoding: Decoding, f: F) -> Arc<dyn Handler>
where
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    E: Into<ServiceError> + Send + 'static,
{
    Arc::new(FnHandler(move |ctx: Context, payload: Bytes| -> BoxFuture<Result<Bytes, String>> {
        if ctx.serialize_type() != SerializeType::PROTOBUF {
            let e = format!("method expects Protobuf payloads, got serialize type {:?}", ctx.serialize_type());
            return Box::pin(std::future::ready(Err(e)));
        }
        let args = match codec::from_proto_with::<A>(&payload, decoding) {
            Ok(a) => a,
            Err(e) => return Box::pin(std::future::ready(Err(codec_error(e)))),
        };
        let fut = f(ctx, args);
        Box::pin(async move {
            let reply = fut.await.map_err(|e| e.into().message)?;
            Ok(Bytes::from(codec::to_proto(&reply)))
        })
    }))
}

/// Serde for JSON/MsgPack requests, prost for Protobuf requests.
#[cfg(feature = "protobuf")]
fn any_handler<A, R, E, Fut, F>(decoding: Decoding, f: F) -> Arc<dyn Handler>
where
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    A: DeserializeOwned + prost::Message + Default + Send + 'static,
    R: Serialize + prost::Message + Send + 'static,
    E: Into<ServiceError> + Send + 'static,
{
    let f = Arc::new(f);
    let serde = serde_handler(decoding, {
        let f = f.clone();
        move |c, a| f(c, a)
    });
    let proto = proto_handler(decoding, move |c, a| f(c, a));
    Arc::new(FnHandler(move |ctx: Context, payload: Bytes| -> BoxFuture<Result<Bytes, String>> {
        if ctx.serialize_type() == SerializeType::PROTOBUF {
            proto.call(ctx, payload)
        } else {
            serde.call(ctx, payload)
        }
    }))
}

fn raw_handler<E, Fut, F>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    E: Into<ServiceError> + Send + 'static,
{
    Arc::new(FnHandler(move |ctx: Context, payload: Bytes| -> BoxFuture<Result<Bytes, String>> {
        let fut = f(ctx, payload);
        Box::pin(async move { fut.await.map_err(|e| e.into().message) })
    }))
}

/// A named service: a set of methods.
#[derive(Clone)]
pub struct Service {
    name: String,
    methods: HashMap<String, Arc<dyn Handler>>,
    decoding: Decoding,
    metadata: String,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.methods.keys().collect();
        names.sort();
        f.debug_struct("Service").field("name", &self.name).field("methods", &names).finish()
    }
}

impl Service {
    /// An empty service called `name` (the rpcx service path).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), methods: HashMap::new(), decoding: Decoding::Go, metadata: String::new() }
    }

    /// Decode the arguments of the typed methods added after this call with serde's and
    /// prost's own rules ([`Decoding::Strict`]) instead of Go's (the default; see
    /// [`codec`](crate::codec)).
    pub fn strict_decoding(self) -> Self {
        self.decoding(Decoding::Strict)
    }

    /// Decode the arguments of the typed methods added after this call in `decoding`.
    pub fn decoding(mut self, decoding: Decoding) -> Self {
        self.decoding = decoding;
        self
    }

    /// The service path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metadata published with this service in a registry (Go's
    /// `Register(name, rcvr, "weight=10&group=a")`): a URL query string clients read
    /// (`group`, `weight`, `state=inactive`, `latitude`/`longitude`, anything else).
    pub fn metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// The registry metadata (empty unless set with [`metadata`](Self::metadata)).
    pub fn registry_metadata(&self) -> &str {
        &self.metadata
    }

    /// Add a method over serde types: `Args` is decoded and `Reply` encoded with the
    /// request's serialize type (JSON or MsgPack; other types answer a codec error).
    pub fn method<A, R, Fut, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.methods.insert(name.into(), serde_handler(self.decoding, f));
        self
    }

    /// Add a method over prost messages (serialize type Protobuf).
    #[cfg(feature = "protobuf")]
    pub fn proto_method<A, R, Fut, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
        A: prost::Message + Default + Send + 'static,
        R: prost::Message + Send + 'static,
    {
        self.methods.insert(name.into(), proto_handler(self.decoding, f));
        self
    }

    /// Add a method whose types are both serde and prost types, so it answers every
    /// serialize type Go clients use for structs: JSON, MsgPack and Protobuf.
    #[cfg(feature = "protobuf")]
    pub fn method_with_proto<A, R, Fut, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
        A: DeserializeOwned + prost::Message + Default + Send + 'static,
        R: Serialize + prost::Message + Send + 'static,
    {
        self.methods.insert(name.into(), any_handler(self.decoding, f));
        self
    }

    /// Add a method over raw payload bytes (any serialize type; typically
    /// `SerializeType::NONE`). The reply bytes are sent as they are.
    pub fn raw_method<Fut, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
    {
        self.methods.insert(name.into(), raw_handler(f));
        self
    }

    /// Add a type-erased handler.
    pub fn handler(mut self, name: impl Into<String>, h: Arc<dyn Handler>) -> Self {
        self.methods.insert(name.into(), h);
        self
    }

    /// Start a service whose methods share one object `state` (registering a whole
    /// service object with many methods). Each method gets an `Arc` of it.
    pub fn object<S: Send + Sync + 'static>(name: impl Into<String>, state: Arc<S>) -> ObjectService<S> {
        ObjectService { service: Service::new(name), state }
    }
}

/// Builder for a service over a shared object (see [`Service::object`]).
pub struct ObjectService<S> {
    service: Service,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> ObjectService<S> {
    /// Add a serde method `f(state, ctx, args)`.
    pub fn method<A, R, Fut, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Arc<S>, Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ServiceError>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        let state = self.state.clone();
        self.service = self.service.method(name, move |ctx, a| f(state.clone(), ctx, a));
        self
    }

    /// Add a raw-bytes method `f(state, ctx, payload)`.
    pub fn raw_method<Fut, F>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Arc<S>, Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
    {
        let state = self.state.clone();
        self.service = self.service.raw_method(name, move |ctx, p| f(state.clone(), ctx, p));
        self
    }

    /// Finish.
    pub fn build(self) -> Service {
        self.service
    }
}

/// An async auth check: `(context, token)`; `Err(text)` rejects the request, which then
/// gets an error response (unless oneway) and the connection is closed, as in Go.
pub type AuthFn = Arc<dyn Fn(Context, String) -> BoxFuture<Result<(), String>> + Send + Sync>;

/// The result of dispatching one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// What to answer (ignored for oneway requests).
    pub response: Response,
    /// Close the connection after sending the response (auth failure, or a hook asked).
    pub close: bool,
    /// The auth check refused the request (the HTTP gateway answers 401).
    pub unauthorized: bool,
}

/// All services of a server, with its auth function and hooks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Router {
    services: Arc<HashMap<String, Service>>,
    auth: Option<AuthFn>,
    hooks: Arc<Vec<Arc<dyn ServerHooks>>>,
    /// Serves every request no service method is registered for (a gateway or proxy).
    fallback: Option<Arc<dyn Handler>>,
    /// Go's `ServerErrorFunc`: rewrites every error text before it is sent.
    error_text: Option<ServerErrorText>,
    /// Run once when the server shuts down (Go's `RegisterOnShutdown`).
    on_shutdown: Arc<Vec<OnShutdown>>,
}

/// A server's error-text function (see [`Router::error_text`]).
pub type ServerErrorText = Arc<dyn Fn(&Context, &str) -> String + Send + Sync>;
/// A shutdown callback (see [`Router::on_shutdown`]).
pub type OnShutdown = Arc<dyn Fn() + Send + Sync>;

/// The error text of a request a rate limiter refused (Go's).
pub const RATE_LIMITED: &str = "request reached rate limit";

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("services", &self.services.values().collect::<Vec<_>>()).finish()
    }
}

impl Router {
    /// No services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a service (replacing one with the same name).
    pub fn service(mut self, s: Service) -> Self {
        Arc::make_mut(&mut self.services).insert(s.name.clone(), s);
        self
    }

    /// Require auth: `f(ctx, token)` runs for every non-heartbeat request, with the
    /// `__AUTH` token (empty if absent). It runs in the request's own task, so a slow
    /// check does not stall other requests or connections.
    pub fn auth<Fut, F>(mut self, f: F) -> Self
    where
        F: Fn(Context, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.auth = Some(Arc::new(move |ctx, token| Box::pin(f(ctx, token))));
        self
    }

    /// Serve every request that no registered service method matches with `f` (raw
    /// payload in, raw reply out, as [`Service::raw_method`]): what a gateway or proxy
    /// needs, forwarding whatever arrives. Without one, such a request gets Go's
    /// "can't find service/method" error. Hooks and auth apply as to any method.
    pub fn fallback<Fut, F>(mut self, f: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, ServiceError>> + Send + 'static,
    {
        self.fallback = Some(raw_handler(f));
        self
    }

    /// Add a hook (hooks run in the order added).
    pub fn hook(mut self, h: Arc<dyn ServerHooks>) -> Self {
        let mut v: Vec<_> = self.hooks.iter().cloned().collect();
        v.push(h);
        self.hooks = Arc::new(v);
        self
    }

    /// The hooks, for runtimes to call the connection-level ones.
    pub fn hooks(&self) -> &[Arc<dyn ServerHooks>] {
        &self.hooks
    }

    /// Go's `ServerErrorFunc`: `f(ctx, text)` gives the error text sent for every failed
    /// request (handler errors, hook refusals, unknown names), after the `post_call`
    /// hooks.
    pub fn error_text(mut self, f: impl Fn(&Context, &str) -> String + Send + Sync + 'static) -> Self {
        self.error_text = Some(Arc::new(f));
        self
    }

    /// Run `f` once when the server shuts down or closes (Go's `RegisterOnShutdown`),
    /// after it stopped accepting and left its registry, before it drains.
    pub fn on_shutdown(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        let mut v: Vec<_> = self.on_shutdown.iter().cloned().collect();
        v.push(Arc::new(f));
        self.on_shutdown = Arc::new(v);
        self
    }

    /// The shutdown callbacks.
    pub(crate) fn shutdown_callbacks(&self) -> &[OnShutdown] {
        &self.on_shutdown
    }

    /// Every service's name and registry metadata, sorted by name.
    pub fn services(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut v: Vec<_> = self.services.values().map(|s| (s.name.as_str(), s.metadata.as_str())).collect();
        v.sort_unstable();
        v.into_iter()
    }

    /// Whether `service.method` exists.
    pub fn has_method(&self, service: &str, method: &str) -> bool {
        self.services.get(service).is_some_and(|s| s.methods.contains_key(method))
    }

    /// The future that serves `req`, received at `now` from a connection with `peer`:
    /// the `pre_read_request` and `rewrite_request` hooks, its [`Context`] (metadata,
    /// deadline, pusher, the server's `timer`) and [`dispatch`](Self::dispatch), in the
    /// request's span. A runtime polls it (once inline, then on a task or worker if it
    /// waits) and gives the outcome to [`answer`](Self::answer).
    pub fn serve(
        &self,
        now: std::time::Instant,
        req: crate::conn::Request,
        peer: Arc<Peer>,
        pusher: Pusher,
        timer: Option<&Arc<dyn Timer>>,
    ) -> Serving {
        let (span, refused, ctx, payload) = self.begin(now, req, peer, pusher, timer, &mut None);
        self.boxed(span, refused, ctx, payload)
    }

    /// [`serve`](Self::serve), run inline as far as it goes: a request that needs no
    /// waiting (no auth, no admission wait, a handler that finishes at its first poll)
    /// is served here, allocating no future of its own (the handler's is the only
    /// one); one that waits comes back as the future to spawn. `spare` is a context
    /// kept from an earlier request ([`Context::into_spare`]), reused when no one else
    /// holds it.
    pub(crate) fn start(
        &self,
        now: std::time::Instant,
        req: crate::conn::Request,
        peer: Arc<Peer>,
        pusher: Pusher,
        timer: Option<&Arc<dyn Timer>>,
        spare: &mut Option<Context>,
    ) -> Started {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let (span, refused, ctx, payload) = self.begin(now, req, peer, pusher, timer, spare);
        if !span.is_disabled() {
            let mut fut = self.boxed(span, refused, ctx, payload);
            return match fut.as_mut().poll(&mut cx) {
                std::task::Poll::Ready(outcome) => Started::Ready(outcome),
                std::task::Poll::Pending => Started::Waiting(fut),
            };
        }
        if let Some(r) = refused {
            return Started::Ready((self.refused(r), ctx));
        }
        let mut payload = Some(payload);
        let (step, polled) = match self.prelude(&ctx, &mut payload, Stage::Start) {
            Step::Done(d) => return Started::Ready((d, ctx)),
            Step::Call(mut fut) => match Pin::new(&mut fut).poll(&mut cx) {
                std::task::Poll::Ready(r) => return Started::Ready((self.called(&ctx, r), ctx)),
                std::task::Poll::Pending => (Step::Call(fut), true),
            },
            step => (step, false),
        };
        let router = self.clone();
        let mut fut: Serving = Box::pin(async move {
            let d = router.run(&ctx, &mut payload, step).await;
            (d, ctx)
        });
        // Auth or an admission wait comes next: poll the rest once here, so an auth
        // check that decides at once is answered (and a failed one closes the
        // connection) before the next request is read, as in Go's read loop.
        if !polled {
            if let std::task::Poll::Ready(outcome) = fut.as_mut().poll(&mut cx) {
                return Started::Ready(outcome);
            }
        }
        Started::Waiting(fut)
    }

    /// The part of serving before dispatch: the request's span, the `pre_read_request`
    /// and `rewrite_request` hooks (a refusal among them) and its [`Context`].
    fn begin(
        &self,
        now: std::time::Instant,
        req: crate::conn::Request,
        peer: Arc<Peer>,
        pusher: Pusher,
        timer: Option<&Arc<dyn Timer>>,
        spare: &mut Option<Context>,
    ) -> (tracing::Span, Option<Rejection>, Context, Bytes) {
        let mut msg = req.message;
        let span = tracing::debug_span!(
            target: "rpcx",
            "rpcx.request",
            rpc.system = "rpcx",
            rpc.service = %String::from_utf8_lossy(&msg.service_path),
            rpc.method = %String::from_utf8_lossy(&msg.service_method),
            seq = msg.header.seq(),
            peer = %peer.addr,
            outcome = tracing::field::Empty,
        );
        let mut refused = None;
        for h in self.hooks.iter() {
            match crate::guard::catch("pre_read_request hook", || h.pre_read_request(&peer, &msg.header)) {
                Some(Ok(())) => {}
                Some(Err(r)) => {
                    refused = Some(r);
                    break;
                }
                None => {
                    refused = Some(Rejection::answer(HOOK_PANICKED));
                    break;
                }
            }
        }
        for h in self.hooks.iter() {
            if refused.is_some() {
                break;
            }
            let mut head = RequestHead {
                peer: &peer,
                service_path: &mut msg.service_path,
                service_method: &mut msg.service_method,
                metadata: &mut msg.metadata,
            };
            match crate::guard::catch("rewrite_request hook", || h.rewrite_request(&mut head)) {
                Some(Ok(())) => {}
                Some(Err(r)) => refused = Some(r),
                None => refused = Some(Rejection::answer(HOOK_PANICKED)),
            }
        }
        let size = msg.payload.len();
        let ctx = Context::with_server(
            spare.take(),
            ContextParts {
                service_path: msg.service_path,
                service_method: msg.service_method,
                serialize_type: msg.header.serialize_type(),
                oneway: msg.header.is_oneway(),
                metadata: msg.metadata,
                deadline: req.deadline,
                received_at: now,
                peer,
                pusher,
            },
            timer.cloned(),
            size,
        );
        (span, refused, ctx, msg.payload)
    }

    /// The rest of serving as one boxed future, in the request's span.
    fn boxed(&self, span: tracing::Span, refused: Option<Rejection>, ctx: Context, payload: Bytes) -> Serving {
        let router = self.clone();
        let fut = async move {
            let d = match refused {
                Some(r) => router.refused(r),
                None => router.dispatch(ctx.clone(), payload).await,
            };
            (d, ctx)
        };
        if span.is_disabled() {
            return Box::pin(fut);
        }
        Box::pin(tracing::Instrument::instrument(
            async move {
                let (d, ctx) = fut.await;
                let span = tracing::Span::current();
                match &d.response.error {
                    None => span.record("outcome", "ok"),
                    Some(e) => span.record("outcome", tracing::field::display(String::from_utf8_lossy(e))),
                };
                (d, ctx)
            },
            span,
        ))
    }

    /// Give a served request's outcome to the connection: the response hooks around
    /// [`ServerConnection::respond`](crate::conn::ServerConnection::respond) (not for
    /// oneway requests), then a [`Flush`](crate::conn::CloseMode::Flush) close if the
    /// request asked for one (failed auth). Queue the handler's pushes before this, so
    /// they go out first as Go's do.
    pub fn answer(
        &self,
        conn: &mut crate::conn::ServerConnection,
        now: std::time::Instant,
        id: crate::conn::RequestId,
        (d, ctx): (Dispatched, Context),
    ) -> Context {
        let mut response = d.response;
        let hooked = !ctx.is_oneway() && !self.hooks.is_empty();
        if hooked {
            for h in self.hooks() {
                crate::guard::catch("pre_write_response hook", || h.pre_write_response(&ctx, &mut response));
            }
        }
        let written = hooked.then(|| response.clone());
        // Only fails for a closed connection or a request answered already (the latter
        // cannot happen here: each request is served once).
        let _ = conn.respond_with(now, id, response, d.unauthorized, d.close);
        if let Some(response) = written {
            for h in self.hooks() {
                crate::guard::catch("post_write_response hook", || h.post_write_response(&ctx, &response));
            }
        }
        ctx
    }

    /// Run one request through post-read hooks, auth, lookup, pre-call hooks, the
    /// handler (a panic becomes an error response) and post-call hooks.
    pub async fn dispatch(&self, ctx: Context, payload: Bytes) -> Dispatched {
        let mut payload = Some(payload);
        let step = self.prelude(&ctx, &mut payload, Stage::Start);
        self.run(&ctx, &mut payload, step).await
    }

    /// Go on from `step` to the response, waiting where a step asks to.
    async fn run(&self, ctx: &Context, payload: &mut Option<Bytes>, mut step: Step) -> Dispatched {
        loop {
            let stage = match step {
                Step::Done(d) => return d,
                Step::Call(fut) => return self.called(ctx, fut.await),
                Step::Wait(at, next) => {
                    if !ctx.sleep_until(at).await {
                        return self.refused(Rejection::answer(RATE_LIMITED));
                    }
                    Stage::Admit(next)
                }
                Step::Auth(auth) => {
                    let token = ctx.auth_token().unwrap_or_default().to_owned();
                    match CatchUnwind::new(|| auth(ctx.clone(), token)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(text)) => {
                            return Dispatched { response: Response::error(text), close: true, unauthorized: true };
                        }
                        Err(panic) => {
                            return Dispatched {
                                response: Response::error(format!("auth panicked: {panic}")),
                                close: true,
                                unauthorized: true,
                            };
                        }
                    }
                    Stage::AfterAuth
                }
            };
            step = self.prelude(ctx, payload, stage);
        }
    }

    /// The synchronous part of dispatch from `stage` on: the post-read and admit hooks,
    /// then (after auth, which is async) the pre-handle hooks, the lookup, the pre-call
    /// hooks and the handler's call, up to the first step that waits or ends.
    fn prelude(&self, ctx: &Context, payload: &mut Option<Bytes>, stage: Stage) -> Step {
        let admit_from = match stage {
            Stage::Start => {
                for h in self.hooks.iter() {
                    match crate::guard::catch("post_read_request hook", || h.post_read_request(ctx)) {
                        Some(Ok(())) => {}
                        Some(Err(r)) => return Step::Done(self.refused(r)),
                        None => return Step::Done(self.refused(Rejection::answer(HOOK_PANICKED))),
                    }
                }
                Some(0)
            }
            Stage::Admit(i) => Some(i),
            Stage::AfterAuth => None,
        };
        if let Some(from) = admit_from {
            for (i, h) in self.hooks.iter().enumerate().skip(from) {
                match crate::guard::catch("admit hook", || h.admit(ctx)) {
                    Some(Admit::Now) => {}
                    Some(Admit::At(at)) => {
                        if ctx.deadline().is_some_and(|d| d < at) {
                            return Step::Done(self.refused(Rejection::answer(RATE_LIMITED)));
                        }
                        return Step::Wait(at, i + 1);
                    }
                    Some(Admit::Reject(r)) => return Step::Done(self.refused(r)),
                    None => return Step::Done(self.refused(Rejection::answer(HOOK_PANICKED))),
                }
            }
            if let Some(auth) = &self.auth {
                return Step::Auth(auth.clone());
            }
        }
        for h in self.hooks.iter() {
            match crate::guard::catch("pre_handle hook", || h.pre_handle(ctx)) {
                Some(Ok(())) => {}
                Some(Err(text)) => return Step::Done(self.finish(ctx, Err(text))),
                None => return Step::Done(self.finish(ctx, Err(HOOK_PANICKED.to_owned()))),
            }
        }
        // Names are bytes: look them up as UTF-8 (no registered name is anything else)
        // and echo them exactly in Go's error texts.
        let path = std::str::from_utf8(ctx.service_path_bytes()).ok();
        let method = std::str::from_utf8(ctx.service_method_bytes()).ok();
        let handler = match path.and_then(|p| self.services.get(p)) {
            None => match &self.fallback {
                Some(f) => f,
                None => {
                    return Step::Done(self.not_found(ctx, b"rpcx: can't find service ", ctx.service_path_bytes()));
                }
            },
            Some(s) => match (method.and_then(|m| s.methods.get(m)), &self.fallback) {
                (Some(h), _) => h,
                (None, Some(f)) => f,
                (None, None) => {
                    return Step::Done(self.not_found(ctx, b"rpcx: can't find method ", ctx.service_method_bytes()));
                }
            },
        };
        for h in self.hooks.iter() {
            match crate::guard::catch("pre_call hook", || h.pre_call(ctx)) {
                Some(Ok(())) => {}
                Some(Err(text)) => return Step::Done(self.finish(ctx, Err(text))),
                None => return Step::Done(self.finish(ctx, Err(HOOK_PANICKED.to_owned()))),
            }
        }
        let payload = payload.take().unwrap_or_default();
        Step::Call(CatchUnwind::new(|| handler.call(ctx.clone(), payload)))
    }

    /// The handler's result (a panic in it becomes Go's internal-error text) through
    /// the post-call hooks.
    fn called(&self, ctx: &Context, r: Result<Result<Bytes, String>, String>) -> Dispatched {
        let result = r.unwrap_or_else(|panic| {
            let method = std::str::from_utf8(ctx.service_method_bytes()).unwrap_or_default();
            Err(format!("[service internal error]: {panic}, method: {method}"))
        });
        self.finish(ctx, result)
    }

    /// Go's "can't find" error with the name's exact bytes. Hooks see the text
    /// decoded lossily; if they leave it as it is, the exact bytes go out.
    fn not_found(&self, ctx: &Context, prefix: &[u8], name: &[u8]) -> Dispatched {
        let mut exact = prefix.to_vec();
        exact.extend_from_slice(name);
        let lossy = String::from_utf8_lossy(&exact).into_owned();
        let mut d = self.finish(ctx, Err(lossy.clone()));
        if d.response.error.as_deref() == Some(lossy.as_bytes()) {
            d.response.error = Some(Bytes::from(exact));
        }
        d
    }

    fn refused(&self, r: Rejection) -> Dispatched {
        Dispatched { response: Response::error(r.text), close: r.close, unauthorized: false }
    }

    fn finish(&self, ctx: &Context, mut result: Result<Bytes, String>) -> Dispatched {
        for h in self.hooks.iter() {
            crate::guard::catch("post_call hook", || h.post_call(ctx, &mut result));
        }
        if let (Err(text), Some(f)) = (&mut result, &self.error_text) {
            if let Some(t) = crate::guard::catch("server error_text function", || f(ctx, text)) {
                *text = t;
            }
        }
        let metadata = ctx.take_response_metadata();
        let response = match result {
            Ok(payload) => Response { metadata, payload, error: None },
            Err(text) => Response { metadata, payload: Bytes::new(), error: Some(Bytes::from(text)) },
        };
        Dispatched { response, close: false, unauthorized: false }
    }
}
