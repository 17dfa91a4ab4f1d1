//! The client side: a span per call, its context injected into the request metadata.

use crate::carrier::{MetadataExtractor, MetadataInjector};
use crate::{Config, OtelClientHooksBuilder, OtelHooksBuilder, rpc_attributes};
use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use rpcx_core::conn::{ClientHooks, FinishedCall, OutgoingCall};
use rpcx_core::wire::Metadata;

/// Client hooks that trace every call as rpcx-plugins' client plugin does (see the
/// [crate] documentation): install them with `ClientOptions::default().hook(Arc::new(h))` on any
/// runtime's `Client`, or on an `XClient`'s options (a span per attempt).
#[derive(Debug)]
pub struct OtelClientHooks {
    config: Config,
}

/// The context of a call's client span, from `pre_call` to `post_call`.
struct ClientSpan(Context);

impl OtelClientHooks {
    /// A builder (W3C TraceContext, the global tracer provider unless one is given).
    pub fn builder() -> OtelClientHooksBuilder {
        OtelHooksBuilder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        Self { config }
    }

    /// Write `cx`'s trace context (and baggage, when configured) into `metadata`, with
    /// this hook's propagator.
    pub fn inject(&self, cx: &Context, metadata: &mut Metadata) {
        self.config.propagator.inject_context(cx, &mut MetadataInjector(metadata));
    }

    /// Request metadata carrying `cx`: give it to a call (`.with_metadata(..)` on a
    /// request builder) to make the call's span a child of `cx`'s span.
    pub fn metadata_for(&self, cx: &Context) -> Metadata {
        let mut md = Metadata::new();
        self.inject(cx, &mut md);
        md
    }

    /// The parent of a new client span (see "The caller's context" in the crate docs):
    /// a context handed over in the metadata wins over the one current here (a
    /// propagator leaves the context it is given as it is when it finds nothing).
    fn parent(&self, metadata: &Metadata) -> Context {
        self.config.propagator.extract_with_context(&Context::current(), &MetadataExtractor(metadata))
    }
}

impl ClientHooks for OtelClientHooks {
    fn pre_call(&self, call: &mut OutgoingCall<'_>) -> Result<(), String> {
        let service = String::from_utf8_lossy(call.service_path);
        let method = String::from_utf8_lossy(call.service_method);
        let parent = self.parent(call.metadata);
        let tracer = &self.config.tracer;
        let span = tracer
            .span_builder(format!("rpcx.client.{service}.{method}"))
            .with_kind(SpanKind::Client)
            .with_attributes(rpc_attributes(&service, &method))
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        cx.span().add_event("PreCall", Vec::new());
        self.inject(&cx, call.metadata);
        call.extensions.insert(ClientSpan(cx));
        Ok(())
    }

    fn post_call(&self, call: &mut FinishedCall<'_>) {
        let Some(ClientSpan(cx)) = call.extensions.remove::<ClientSpan>() else {
            return;
        };
        let span = cx.span();
        span.add_event("PostCall", Vec::new());
        if let Err(e) = call.result {
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
    }
}
