//! OpenTelemetry for rpcx, compatible with Go's
//! [rpcx-plugins](https://github.com/rpcxio/rpcx-plugins) OpenTelemetry plugins.
//!
//! * [`OtelClientHooks`] ([`ClientHooks`](rpcx_core::conn::ClientHooks), for any
//!   runtime's `Client` or `XClient`): a span per call named
//!   `rpcx.client.<servicePath>.<serviceMethod>`, kind Client, with events `PreCall` and
//!   `PostCall`; the span's context goes into the request metadata (`traceparent`,
//!   `tracestate`, and `baggage` when configured).
//! * [`OtelServerHooks`] ([`ServerHooks`](rpcx_core::service::ServerHooks), for a
//!   `Router`): extracts the caller's context from the request metadata and opens a
//!   span named `rpcx.service.<servicePath>.<serviceMethod>`, kind Server, from
//!   `pre_handle` to `post_write_response` (to `post_call` for a oneway request), with
//!   events `rpcx.pre.handle.request` and `rpcx.post.write.response`. Handlers get the
//!   span's context with [`context_of`].
//!
//! Both spans carry `rpc.system = rpcx`, `rpc.service` and `rpc.method`. Where we
//! differ from rpcx-plugins, on purpose:
//!
//! * The propagator is W3C TraceContext by default (rpcx-plugins falls back to the
//!   global propagator, a no-op unless the program sets one, so nothing propagates).
//! * A successful call leaves the span status Unset (the OpenTelemetry RPC
//!   conventions); only a failed call gets status Error, with the error text as its
//!   description. (rpcx-plugins sets Ok on success, and its client plugin records even
//!   a successful call's metrics with the error status code.)
//! * The client span has kind Client (rpcx-plugins' client span is Internal).
//! * The events carry no attributes with the request or reply rendered as text (the
//!   hooks see encoded payloads, and payloads may hold what should not reach a trace
//!   backend); the server events carry the metadata maps as rpcx-plugins writes them.
//!
//! # The caller's context
//!
//! On a `Client` (every runtime) the `pre_call` hooks run where the call is made, on
//! the caller's task or thread, so the client span's parent is, in this order: the
//! context found in the request's own metadata (as rpcx-plugins' client plugin
//! extracts it); else the caller's [`opentelemetry::Context::current`] (attach it to
//! the call's future with `opentelemetry::context::FutureExt::with_context`, or
//! `cx.attach()` on a thread); else none (a new trace). An `XClient` runs its attempts
//! on tasks of its own, where the caller's current context is not in reach: hand the
//! caller's context over in the call's metadata with [`OtelClientHooks::metadata_for`]
//! (the hook then replaces it with the client span's own context before the request is
//! sent). A handler calling on hands over its server span the same way, with
//! `hooks.metadata_for(&rpcx_otel::context_of(&ctx))` (forwarding the incoming
//! request's metadata instead would make the downstream call a sibling of the
//! handler's span, not its child):
//!
//! ```no_run
//! # async fn f(client: &rpcx_tokio::Client, hooks: &rpcx_otel::OtelClientHooks) -> Result<(), rpcx_tokio::Error> {
//! let cx = opentelemetry::Context::current();
//! let reply: u64 = client.request("Arith", "Mul").with_metadata(hooks.metadata_for(&cx)).call(&(6, 7)).await?;
//! # Ok(()) }
//! ```
//!
//! # Example
//!
//! A server and a client on tokio, spans into an exporter of your choice (here the
//! SDK's in-memory one; see `examples/tokio.rs` for a runnable version):
//!
//! ```
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use rpcx_otel::{OtelClientHooks, OtelServerHooks};
//! use rpcx_tokio::service::{Context, Router, Service};
//! use rpcx_tokio::{Client, ClientOptions, Server};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//!
//! let router = Router::new()
//!     .service(Service::new("Arith").method("Mul", |ctx: Context, (a, b): (i64, i64)| async move {
//!         // The server span's context, for spans of the handler's own or downstream calls.
//!         let _cx = rpcx_otel::context_of(&ctx);
//!         Ok(a * b)
//!     }))
//!     .hook(Arc::new(OtelServerHooks::builder().tracer_provider(&provider).build()));
//! let server = Server::new(router).bind("tcp@127.0.0.1:0").await.unwrap();
//!
//! let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
//! let options = ClientOptions::default().hook(hooks);
//! let client = Client::connect(server.address(), options).await.unwrap();
//! let c: i64 = client.call("Arith", "Mul", &(6, 7)).await.unwrap();
//! assert_eq!(c, 42);
//!
//! // The server span ends when the response is queued, before the client can read it.
//! let mut names: Vec<_> = exporter.get_finished_spans().unwrap().into_iter().map(|s| s.name).collect();
//! names.sort();
//! assert_eq!(names, ["rpcx.client.Arith.Mul", "rpcx.service.Arith.Mul"]);
//! # }
//! ```

mod carrier;
mod client;
mod server;

pub use client::OtelClientHooks;
pub use server::{OtelServerHooks, context_of};

use opentelemetry::InstrumentationScope;
use opentelemetry::KeyValue;
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{Span, Tracer, TracerProvider};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use std::fmt;
use std::marker::PhantomData;

/// The instrumentation scope of the tracers this crate asks providers for.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(env!("CARGO_PKG_NAME")).with_version(env!("CARGO_PKG_VERSION")).build()
}

/// A propagator the hooks hold.
type Propagator = Box<dyn TextMapPropagator + Send + Sync>;

/// What both hooks are made of.
struct Config {
    tracer: BoxedTracer,
    propagator: Propagator,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config").field("tracer", &self.tracer).field("propagator", &self.propagator).finish()
    }
}

/// The attributes both spans carry (rpcx-plugins' `semconv` v1.26 keys).
fn rpc_attributes(service: &str, method: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("rpc.system", "rpcx"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ]
}

/// A builder of [`OtelClientHooks`] or [`OtelServerHooks`]: the tracer (by default the
/// global tracer provider's, taken when [`build`](Self::build) runs) and the propagator
/// (by default W3C TraceContext, plus W3C Baggage with [`baggage`](Self::baggage)).
#[must_use]
pub struct OtelHooksBuilder<H> {
    tracer: Option<BoxedTracer>,
    propagator: Option<Propagator>,
    baggage: bool,
    _hooks: PhantomData<fn() -> H>,
}

/// The builder of [`OtelClientHooks`].
pub type OtelClientHooksBuilder = OtelHooksBuilder<OtelClientHooks>;
/// The builder of [`OtelServerHooks`].
pub type OtelServerHooksBuilder = OtelHooksBuilder<OtelServerHooks>;

impl<H> OtelHooksBuilder<H> {
    fn new() -> Self {
        Self { tracer: None, propagator: None, baggage: false, _hooks: PhantomData }
    }

    /// Spans from a tracer of `provider` (scope `rpcx-otel`).
    pub fn tracer_provider<P, T, S>(mut self, provider: &P) -> Self
    where
        P: TracerProvider<Tracer = T>,
        T: Tracer<Span = S> + Send + Sync + 'static,
        S: Span + Send + Sync + 'static,
    {
        self.tracer = Some(BoxedTracer::new(Box::new(provider.tracer_with_scope(scope()))));
        self
    }

    /// Spans from `tracer`.
    pub fn tracer<T, S>(mut self, tracer: T) -> Self
    where
        T: Tracer<Span = S> + Send + Sync + 'static,
        S: Span + Send + Sync + 'static,
    {
        self.tracer = Some(BoxedTracer::new(Box::new(tracer)));
        self
    }

    /// Inject and extract with `propagator` instead of W3C TraceContext (give
    /// `opentelemetry::global::get_text_map_propagator`'s choice here to follow Go's
    /// plugins exactly).
    pub fn propagator<P: TextMapPropagator + Send + Sync + 'static>(mut self, propagator: P) -> Self {
        self.propagator = Some(Box::new(propagator));
        self
    }

    /// Propagate W3C Baggage (`baggage`) as well, after the trace context.
    pub fn baggage(mut self) -> Self {
        self.baggage = true;
        self
    }

    fn config(self) -> Config {
        let tracer = self.tracer.unwrap_or_else(|| opentelemetry::global::tracer_with_scope(scope()));
        let trace: Propagator = self.propagator.unwrap_or_else(|| Box::new(TraceContextPropagator::new()));
        let propagator: Propagator = if self.baggage {
            Box::new(TextMapCompositePropagator::new(vec![trace, Box::new(BaggagePropagator::new())]))
        } else {
            trace
        };
        Config { tracer, propagator }
    }
}

impl<H> fmt::Debug for OtelHooksBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelHooksBuilder")
            .field("tracer", &self.tracer.is_some())
            .field("propagator", &self.propagator)
            .field("baggage", &self.baggage)
            .finish()
    }
}

impl OtelHooksBuilder<OtelClientHooks> {
    /// The client hooks.
    pub fn build(self) -> OtelClientHooks {
        OtelClientHooks::from_config(self.config())
    }
}

impl OtelHooksBuilder<OtelServerHooks> {
    /// The server hooks.
    pub fn build(self) -> OtelServerHooks {
        OtelServerHooks::from_config(self.config())
    }
}
