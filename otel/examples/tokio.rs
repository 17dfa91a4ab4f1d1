//! A traced call on tokio: a server with `OtelServerHooks`, a client with
//! `OtelClientHooks`, a caller span handed to the call, and the finished spans printed
//! as a tree (the SDK's in-memory exporter stands in for a real one).
//!
//! ```sh
//! cargo run -p rpcx-otel --example tokio
//! ```

#![allow(clippy::print_stdout)]

use opentelemetry::trace::{Span, SpanId, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rpcx_otel::{OtelClientHooks, OtelServerHooks};
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Client, ClientOptions, Server};
use std::sync::Arc;

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize)]
struct Args {
    A: i64,
    B: i64,
}

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize)]
struct Reply {
    C: i64,
}

#[tokio::main]
async fn main() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();

    let tracer = provider.tracer("example");
    let router = Router::new()
        .service(Service::new("Arith").method("Mul", move |ctx: Context, a: Args| {
            // A span of the handler's own, a child of the server span.
            let cx = rpcx_otel::context_of(&ctx);
            tracer.start_with_context("multiply", &cx).end();
            async move { Ok(Reply { C: a.A * a.B }) }
        }))
        .hook(Arc::new(OtelServerHooks::builder().tracer_provider(&provider).build()));
    let server = Server::new(router).bind("tcp@127.0.0.1:0").await.expect("bind");

    let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
    let options = ClientOptions::default().hook(hooks.clone());
    let client = Client::connect(server.address(), options).await.expect("connect");

    // The caller's span, handed to the call in its metadata.
    let caller = provider.tracer("example").start("checkout");
    let cx = opentelemetry::Context::current_with_span(caller);
    let reply: Reply = client
        .request("Arith", "Mul")
        .with_metadata(hooks.metadata_for(&cx))
        .call(&Args { A: 6, B: 7 })
        .await
        .expect("Arith.Mul");
    cx.span().end();
    println!("Arith.Mul 6 * 7 = {}", reply.C);
    client.close().await;
    server.close().await;

    let spans = exporter.get_finished_spans().expect("spans");
    print_tree(&spans, SpanId::INVALID, 0);
}

/// The children of `parent`, depth first.
fn print_tree(spans: &[SpanData], parent: SpanId, depth: usize) {
    for s in spans.iter().filter(|s| s.parent_span_id == parent) {
        println!(
            "{:indent$}{} ({:?}, trace {:032x}, span {:016x})",
            "",
            s.name,
            s.span_kind,
            s.span_context.trace_id(),
            s.span_context.span_id(),
            indent = depth * 2
        );
        print_tree(spans, s.span_context.span_id(), depth + 1);
    }
}
