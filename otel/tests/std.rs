//! rpcx-otel on the std runtime (threads, blocking sockets): a client with
//! `OtelClientHooks` and a server with `OtelServerHooks` over loopback TCP.

mod common;

use common::*;
use opentelemetry::Context as OtelContext;
use opentelemetry::trace::{SpanId, Status, TraceContextExt, Tracer, TracerProvider};
use rpcx_otel::{OtelClientHooks, OtelServerHooks};
use rpcx_std::{Client, ClientOptions, Server};
use std::sync::Arc;

#[test]
fn std_client_and_server_spans_make_one_trace() {
    let (provider, exporter) = recorder();
    let router = services().hook(Arc::new(OtelServerHooks::builder().tracer_provider(&provider).build()));
    let server = Server::new(router).bind("tcp@127.0.0.1:0").expect("bind");
    let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
    let options = ClientOptions::default().hook(hooks.clone());
    let client = Client::connect(server.address(), options).expect("connect");

    let r: Reply = client.call("Arith", "Mul", &Args { A: 4, B: 5 }).unwrap();
    assert_eq!(r.C, 20);
    let e = client.call::<_, Reply>("Arith", "Fail", &Args { A: 2, B: 0 }).unwrap_err();
    assert_eq!(e.to_string(), fail_text(2));
    let seen: String = client.call("Arith", "Span", &Args { A: 0, B: 0 }).unwrap();

    // A caller span on this thread, handed over in the call's metadata.
    let caller = provider.tracer("test").start("caller");
    let cx = OtelContext::current_with_span(caller);
    let () = client.request("Arith", "Note").with_metadata(hooks.metadata_for(&cx)).call(&Args { A: 1, B: 1 }).unwrap();
    cx.span().end();

    let all = spans(
        &exporter,
        &[
            "rpcx.service.Arith.Mul",
            "rpcx.service.Arith.Fail",
            "rpcx.client.Arith.Fail",
            "rpcx.service.Arith.Span",
            "rpcx.service.Arith.Note",
            "caller",
        ],
    );
    let (client_mul, server_mul) = assert_pair(&all, "Mul");
    let (client_fail, server_fail) = assert_pair(&all, "Fail");
    let (_, server_span) = assert_pair(&all, "Span");
    assert_eq!(client_mul.parent_span_id, SpanId::INVALID);
    assert_eq!((client_mul.status, server_mul.status), (Status::Unset, Status::Unset));
    assert_eq!(client_fail.status, Status::error(fail_text(2)));
    assert_eq!(server_fail.status, Status::error(fail_text(2)));
    assert_eq!(seen, hex_span(server_span.span_context.span_id()));
    let (client_note, _) = assert_pair(&all, "Note");
    let caller = only(&all, "caller");
    assert_eq!(client_note.parent_span_id, caller.span_context.span_id());
    assert_eq!(client_note.span_context.trace_id(), caller.span_context.trace_id());
    client.close();
    server.close();
}
