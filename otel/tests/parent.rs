//! Which context becomes a client span's parent, with the hooks driven by hand (as a
//! connection drives them): a context handed over in the metadata, else the current
//! one, else none.

mod common;

use bytes::Bytes;
use common::recorder;
use opentelemetry::Context;
use opentelemetry::trace::{SpanId, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::SpanData;
use rpcx_core::conn::{ClientHooks, FinishedCall, OutgoingCall};
use rpcx_core::wire::Metadata;
use rpcx_core::{Error, Extensions};
use rpcx_otel::OtelClientHooks;
use std::time::Duration;

/// One call through `hooks` with `metadata`; the metadata as it would be sent.
fn call(hooks: &OtelClientHooks, mut metadata: Metadata, outcome: Result<(), Error>) -> Metadata {
    let (mut path, mut method) = (Bytes::from_static(b"Arith"), Bytes::from_static(b"Mul"));
    let mut ext = Extensions::new();
    hooks
        .pre_call(&mut OutgoingCall {
            remote: "tcp@127.0.0.1:1",
            service_path: &mut path,
            service_method: &mut method,
            metadata: &mut metadata,
            oneway: false,
            extensions: &mut ext,
        })
        .unwrap();
    hooks.post_call(&mut FinishedCall {
        remote: "tcp@127.0.0.1:1",
        service_path: &path,
        service_method: &method,
        result: outcome.as_ref().map(|()| None),
        latency: Duration::from_millis(1),
        request_size: 0,
        extensions: &mut ext,
    });
    metadata
}

fn client_span(spans: &[SpanData]) -> &SpanData {
    common::only(spans, "rpcx.client.Arith.Mul")
}

#[test]
fn the_current_context_is_the_parent_when_the_metadata_has_none() {
    let (provider, exporter) = recorder();
    let hooks = OtelClientHooks::builder().tracer_provider(&provider).build();
    let outer = Context::current_with_span(provider.tracer("test").start("outer"));
    let sent = {
        let _attached = outer.clone().attach();
        call(&hooks, Metadata::new(), Ok(()))
    };
    outer.span().end();
    let spans = exporter.get_finished_spans().unwrap();
    let span = client_span(&spans);
    let outer = common::only(&spans, "outer");
    assert_eq!(span.parent_span_id, outer.span_context.span_id());
    assert_eq!(span.status, Status::Unset);
    // What goes out is the client span's own context.
    let traceparent = format!("00-{:032x}-{:016x}-01", span.span_context.trace_id(), span.span_context.span_id());
    assert_eq!(sent.get_str("traceparent").unwrap(), Some(traceparent.as_str()));
}

#[test]
fn a_context_handed_over_in_metadata_wins_over_the_current_one() {
    let (provider, exporter) = recorder();
    let hooks = OtelClientHooks::builder().tracer_provider(&provider).build();
    let tracer = provider.tracer("test");
    let caller = Context::current_with_span(tracer.start("caller"));
    let elsewhere = Context::current_with_span(tracer.start("elsewhere"));
    {
        let _attached = elsewhere.clone().attach();
        call(&hooks, hooks.metadata_for(&caller), Err(Error::NoServer));
    }
    caller.span().end();
    elsewhere.span().end();
    let spans = exporter.get_finished_spans().unwrap();
    let span = client_span(&spans);
    let caller = common::only(&spans, "caller");
    assert_eq!(span.parent_span_id, caller.span_context.span_id());
    assert_eq!(span.span_context.trace_id(), caller.span_context.trace_id());
    assert!(span.parent_span_is_remote, "the parent came through metadata");
    assert_eq!(span.status, Status::error(Error::NoServer.to_string()));
}

#[test]
fn with_neither_the_span_starts_a_trace() {
    let (provider, exporter) = recorder();
    let hooks = OtelClientHooks::builder().tracer_provider(&provider).build();
    let sent = call(&hooks, Metadata::new(), Ok(()));
    let spans = exporter.get_finished_spans().unwrap();
    let span = client_span(&spans);
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert!(sent.contains_key("traceparent"));
    assert!(!sent.contains_key("baggage"));
}
