//! The server side: the caller's context extracted from the request metadata, a span
//! per request.

use crate::carrier::{MetadataExtractor, go_map};
use crate::{Config, OtelHooksBuilder, OtelServerHooksBuilder, rpc_attributes};
use bytes::Bytes;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use rpcx_core::conn::Response;
use rpcx_core::service::{Context as RpcContext, ServerHooks};

/// rpcx-plugins' event names and attribute keys.
const PRE_HANDLE: &str = "rpcx.pre.handle.request";
const PRE_HANDLE_PATH: &str = "rpcx.pre.handle.request.path";
const PRE_HANDLE_METADATA: &str = "rpcx.pre.handle.request.metadata";
const POST_WRITE: &str = "rpcx.post.write.response";
const POST_WRITE_METADATA: &str = "rpcx.post.write.response.metadata";

/// Server hooks that trace every request as rpcx-plugins' server plugin does (see the
/// [crate] documentation): install them with `Router::hook(Arc::new(h))`.
#[derive(Debug)]
pub struct OtelServerHooks {
    config: Config,
}

/// The context of a request's server span, kept in the request's
/// [`Context`](RpcContext) from `pre_handle` to the end of the request.
struct ServerSpan(Context);

/// The OpenTelemetry context of the request `ctx` is for: its server span (a child of
/// the caller's span), for spans a handler starts and calls it makes. Empty when the
/// request has no span (no [`OtelServerHooks`] on the router, or the request has not
/// reached `pre_handle`).
pub fn context_of(ctx: &RpcContext) -> Context {
    ctx.with_extension::<ServerSpan, _>(|s| s.map(|s| s.0.clone())).unwrap_or_default()
}

impl OtelServerHooks {
    /// A builder (W3C TraceContext, the global tracer provider unless one is given).
    pub fn builder() -> OtelServerHooksBuilder {
        OtelHooksBuilder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        Self { config }
    }
}

impl ServerHooks for OtelServerHooks {
    fn pre_handle(&self, ctx: &RpcContext) -> Result<(), String> {
        let parent = self.config.propagator.extract(&MetadataExtractor(ctx.metadata()));
        let service = ctx.service_path();
        let method = ctx.service_method();
        let name = format!("rpcx.service.{service}.{method}");
        let tracer = &self.config.tracer;
        let span = tracer
            .span_builder(name.clone())
            .with_kind(SpanKind::Server)
            .with_attributes(rpc_attributes(&service, &method))
            .start_with_context(tracer, &parent);
        let cx = parent.with_span(span);
        cx.span().add_event(
            PRE_HANDLE,
            vec![KeyValue::new(PRE_HANDLE_PATH, name), KeyValue::new(PRE_HANDLE_METADATA, go_map(ctx.metadata()))],
        );
        ctx.insert_extension(ServerSpan(cx));
        Ok(())
    }

    fn post_call(&self, ctx: &RpcContext, result: &mut Result<Bytes, String>) {
        // A oneway request writes no response: its span ends here, its status from the
        // result. (Otherwise the response as written decides, in post_write_response:
        // the server's error-text function and later hooks may still change it.)
        if !ctx.is_oneway() {
            return;
        }
        if let Some(ServerSpan(cx)) = ctx.remove_extension::<ServerSpan>() {
            let span = cx.span();
            if let Err(text) = result {
                span.set_status(Status::error(text.clone()));
            }
            span.end();
        }
    }

    fn post_write_response(&self, ctx: &RpcContext, response: &Response) {
        let Some(ServerSpan(cx)) = ctx.remove_extension::<ServerSpan>() else {
            return;
        };
        let span = cx.span();
        span.add_event(POST_WRITE, vec![KeyValue::new(POST_WRITE_METADATA, go_map(&response.metadata))]);
        if let Some(text) = &response.error {
            span.set_status(Status::error(String::from_utf8_lossy(text).into_owned()));
        }
        span.end();
    }
}
