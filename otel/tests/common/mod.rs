//! What the runtime tests share: an in-memory span recorder, the test services, and
//! checks on recorded spans.

#![allow(dead_code, unreachable_pub)]

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rpcx_core::service::{Context, Router, Service, ServiceError};
use std::time::{Duration, Instant};

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Args {
    pub A: i64,
    pub B: i64,
}

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Reply {
    pub C: i64,
}

/// The error text of `Arith.Fail`.
pub fn fail_text(a: i64) -> String {
    format!("failed on purpose A={a}")
}

/// A provider whose spans land in the returned exporter as they end.
pub fn recorder() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    (provider, exporter)
}

/// `Arith.Mul`, `Arith.Fail` (always an error), `Arith.Span` (the hex span id of
/// `rpcx_otel::context_of`, as the handler sees it), `Arith.Baggage` (the `tenant`
/// baggage entry of the handler's context, `""` if none), `Arith.Note` (for oneway).
pub fn services() -> Router {
    Router::new().service(
        Service::new("Arith")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
            .method("Fail", |_c: Context, a: Args| async move { Err::<Reply, _>(ServiceError::new(fail_text(a.A))) })
            .method("Span", |c: Context, _a: Args| async move {
                let cx = rpcx_otel::context_of(&c);
                Ok(format!("{:016x}", cx.span().span_context().span_id()))
            })
            .method("Baggage", |c: Context, _a: Args| async move {
                let cx = rpcx_otel::context_of(&c);
                Ok(cx.baggage().get("tenant").map(|v| v.to_string()).unwrap_or_default())
            })
            .method("Note", |_c: Context, _a: Args| async move { Ok(()) }),
    )
}

/// The finished spans once every one of `names` ended (bounded: a server span ends
/// in a hook that may run just after the client got its response).
pub fn spans(exporter: &InMemorySpanExporter, names: &[&str]) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.get_finished_spans().expect("in-memory exporter");
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(Instant::now() < deadline, "spans {names:?} did not all end; got {spans:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The one span named `name`.
#[track_caller]
pub fn only<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert!(found.len() == 1, "expected one span {name:?}, found {}: {spans:#?}", found.len());
    found[0]
}

pub fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

pub fn event_names(span: &SpanData) -> Vec<&str> {
    span.events.iter().map(|e| e.name.as_ref()).collect()
}

pub fn hex_span(id: SpanId) -> String {
    format!("{id:016x}")
}

/// A client span and its server span for `Arith.<method>`: names, kinds, attributes,
/// events, and the server span a remote child of the client span in its trace.
#[track_caller]
pub fn assert_pair(spans: &[SpanData], method: &str) -> (SpanData, SpanData) {
    let client = only(spans, &format!("rpcx.client.Arith.{method}")).clone();
    let server = only(spans, &format!("rpcx.service.Arith.{method}")).clone();
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(server.span_kind, SpanKind::Server);
    for s in [&client, &server] {
        assert_eq!(attr(s, "rpc.system").as_deref(), Some("rpcx"), "{s:#?}");
        assert_eq!(attr(s, "rpc.service").as_deref(), Some("Arith"), "{s:#?}");
        assert_eq!(attr(s, "rpc.method").as_deref(), Some(method), "{s:#?}");
    }
    assert_eq!(event_names(&client), ["PreCall", "PostCall"]);
    assert_eq!(event_names(&server), ["rpcx.pre.handle.request", "rpcx.post.write.response"]);
    assert_eq!(server.span_context.trace_id(), client.span_context.trace_id(), "one trace");
    assert_eq!(server.parent_span_id, client.span_context.span_id(), "the server span's parent is the client span");
    assert!(server.parent_span_is_remote);
    assert!(server.span_context.is_sampled());
    // The pre-handle event carries the request metadata as rpcx-plugins writes it:
    // Go's map rendering, with the traceparent the client injected.
    let pre = &server.events.iter().next().expect("an event").attributes;
    let md = pre.iter().find(|kv| kv.key.as_str() == "rpcx.pre.handle.request.metadata").expect("metadata attribute");
    let traceparent =
        format!("traceparent:00-{:032x}-{:016x}-01", client.span_context.trace_id(), client.span_context.span_id());
    let md = md.value.to_string();
    assert!(md.starts_with("map[") && md.contains(&traceparent), "{md}");
    let path = pre.iter().find(|kv| kv.key.as_str() == "rpcx.pre.handle.request.path").expect("path attribute");
    assert_eq!(path.value.to_string(), format!("rpcx.service.Arith.{method}"));
    (client, server)
}
