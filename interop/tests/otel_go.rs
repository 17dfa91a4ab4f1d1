//! OpenTelemetry across languages (issue 15, point 7): one trace through a Rust client
//! with `rpcx_otel::OtelClientHooks` (tokio, std, smol) and a Go server with
//! rpcx-plugins' OpenTelemetry server plugin, and through a Go client with rpcx-plugins'
//! client plugin and a Rust server with `rpcx_otel::OtelServerHooks` (tokio, std, smol). Both sides record their spans in memory
//! (Go: `tracetest.SpanRecorder`, printed by `interop/go/cmd/otel`; Rust: the SDK's
//! `InMemorySpanExporter`); the tests match them by trace and span id.

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rpcx_interop::otel::{GoOtelServer, GoSpan, go_otel_client, only_span};
use rpcx_interop::smol_exec::SmolExecutor;
use rpcx_interop::{Args, Reply, Runtime, RustServer, run_bounded};
use rpcx_otel::{OtelClientHooks, OtelServerHooks};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn recorder() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    (provider, exporter)
}

/// The finished Rust spans, once every one of `names` is among them (bounded: a span
/// ends when its hook runs, which may be just after the peer saw the response).
fn rust_spans(exporter: &InMemorySpanExporter, names: &[&str]) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.get_finished_spans().expect("in-memory exporter");
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(Instant::now() < deadline, "Rust spans {names:?} did not all end; got {spans:#?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
fn only_rust_span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert!(found.len() == 1, "expected one Rust span {name:?}, found {}: {spans:#?}", found.len());
    found[0]
}

fn rust_attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

fn hex_trace(span: &SpanData) -> String {
    format!("{:032x}", span.span_context.trace_id())
}

fn hex_span(span: &SpanData) -> String {
    format!("{:016x}", span.span_context.span_id())
}

#[track_caller]
fn assert_rpc_attributes_go(span: &GoSpan, method: &str) {
    assert_eq!(span.attributes.get("rpc.system").map(String::as_str), Some("rpcx"), "{span:#?}");
    assert_eq!(span.attributes.get("rpc.service").map(String::as_str), Some("Arith"), "{span:#?}");
    assert_eq!(span.attributes.get("rpc.method").map(String::as_str), Some(method), "{span:#?}");
}

#[track_caller]
fn assert_rpc_attributes_rust(span: &SpanData, method: &str) {
    assert_eq!(rust_attr(span, "rpc.system").as_deref(), Some("rpcx"), "{span:#?}");
    assert_eq!(rust_attr(span, "rpc.service").as_deref(), Some("Arith"), "{span:#?}");
    assert_eq!(rust_attr(span, "rpc.method").as_deref(), Some(method), "{span:#?}");
}

/// The Go server's spans are children of the Rust client's: same trace, the client
/// span as (remote, sampled) parent; Go's status mirrors the outcome.
fn check_rust_client_go_server(rust: &[SpanData], go: &[GoSpan], error_a: i64) {
    for method in ["Mul", "Error"] {
        let client = only_rust_span(rust, &format!("rpcx.client.Arith.{method}"));
        let server = only_span(go, &format!("rpcx.service.Arith.{method}"));
        assert_eq!(client.span_kind, SpanKind::Client);
        assert_rpc_attributes_rust(client, method);
        assert_eq!(server.kind, "server", "{server:#?}");
        assert_rpc_attributes_go(server, method);
        assert_eq!(server.trace_id, hex_trace(client), "Go server span in another trace: {server:#?}\n{client:#?}");
        assert_eq!(server.parent_span_id, hex_span(client), "Go server span's parent is not the Rust client span");
        assert!(server.parent_remote && server.sampled, "{server:#?}");
        assert_eq!(server.events, ["rpcx.pre.handle.request", "rpcx.post.write.response"]);
        let events: Vec<&str> = client.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, ["PreCall", "PostCall"]);
    }
    let text = format!("intentional error A={error_a}");
    let mul = only_rust_span(rust, "rpcx.client.Arith.Mul");
    assert_eq!(mul.status, Status::Unset, "a successful call has no error status");
    let err = only_rust_span(rust, "rpcx.client.Arith.Error");
    assert_eq!(err.status, Status::error(text.clone()));
    assert_eq!(only_span(go, "rpcx.service.Arith.Mul").status_code, "Ok");
    let go_err = only_span(go, "rpcx.service.Arith.Error");
    assert_eq!((go_err.status_code.as_str(), go_err.status_description.as_str()), ("Error", text.as_str()));
}

#[test]
fn go_server_span_is_a_child_of_the_rust_client_span_tokio() {
    run_bounded("tokio client, Go otel server", LIMIT, || {
        let go = GoOtelServer::start();
        let (provider, exporter) = recorder();
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let options = rpcx_tokio::ClientOptions::default().hook(hooks);
            let client = rpcx_tokio::Client::connect(&go.rpcx_addr(), options).await.expect("connect");
            let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).await.expect("Arith.Mul");
            assert_eq!(r.C, 42);
            let e = client.call::<_, Reply>("Arith", "Error", &Args { A: 3, B: 0 }).await.unwrap_err();
            assert_eq!(e.to_string(), "intentional error A=3");
            client.close().await;
        });
        let rust = rust_spans(&exporter, &["rpcx.client.Arith.Mul", "rpcx.client.Arith.Error"]);
        check_rust_client_go_server(&rust, &go.finish(), 3);
    });
}

#[test]
fn go_server_span_is_a_child_of_the_rust_client_span_std() {
    run_bounded("std client, Go otel server", LIMIT, || {
        let go = GoOtelServer::start();
        let (provider, exporter) = recorder();
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let options = rpcx_std::ClientOptions::default().hook(hooks);
        let client = rpcx_std::Client::connect(&go.rpcx_addr(), options).expect("connect");
        let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).expect("Arith.Mul");
        assert_eq!(r.C, 42);
        let e = client.call::<_, Reply>("Arith", "Error", &Args { A: 5, B: 0 }).unwrap_err();
        assert_eq!(e.to_string(), "intentional error A=5");
        client.close();
        let rust = rust_spans(&exporter, &["rpcx.client.Arith.Mul", "rpcx.client.Arith.Error"]);
        check_rust_client_go_server(&rust, &go.finish(), 5);
    });
}

#[test]
fn go_server_span_is_a_child_of_the_rust_client_span_smol() {
    run_bounded("smol client, Go otel server", LIMIT, || {
        let go = GoOtelServer::start();
        let (provider, exporter) = recorder();
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let ex = SmolExecutor::new("otel-smol-client", 2);
        let options = rpcx_smol::ClientOptions { runtime: ex.spawner(), ..Default::default() }.hook(hooks);
        smol::block_on(async {
            let client = rpcx_smol::Client::connect(&go.rpcx_addr(), options).await.expect("connect");
            let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).await.expect("Arith.Mul");
            assert_eq!(r.C, 42);
            let e = client.call::<_, Reply>("Arith", "Error", &Args { A: 8, B: 0 }).await.unwrap_err();
            assert_eq!(e.to_string(), "intentional error A=8");
            client.close().await;
        });
        let rust = rust_spans(&exporter, &["rpcx.client.Arith.Mul", "rpcx.client.Arith.Error"]);
        check_rust_client_go_server(&rust, &go.finish(), 8);
    });
}

/// A Go client with rpcx-plugins' client plugin calls a Rust server with
/// `OtelServerHooks` on `rt`: the Rust server spans are children of the Go client spans.
fn go_client_rust_server(rt: Runtime) {
    let (provider, exporter) = recorder();
    let hooks = Arc::new(OtelServerHooks::builder().tracer_provider(&provider).build());
    let server = RustServer::tcp_with_router(rt, rpcx_interop::router(None).hook(hooks));
    let go = go_otel_client(&server.rpcx_addr(), 6, 7);
    let rust = rust_spans(&exporter, &["rpcx.service.Arith.Mul", "rpcx.service.Arith.Error"]);
    for method in ["Mul", "Error"] {
        let client = only_span(&go, &format!("rpcx.client.Arith.{method}"));
        let span = only_rust_span(&rust, &format!("rpcx.service.Arith.{method}"));
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_rpc_attributes_rust(span, method);
        assert_rpc_attributes_go(client, method);
        assert_eq!(hex_trace(span), client.trace_id, "Rust server span in another trace: {span:#?}\n{client:#?}");
        assert_eq!(format!("{:016x}", span.parent_span_id), client.span_id, "the Rust server span's parent");
        assert!(span.parent_span_is_remote, "{span:#?}");
        assert!(span.span_context.is_sampled(), "{span:#?}");
        let events: Vec<&str> = span.events.iter().map(|e| e.name.as_ref()).collect();
        assert_eq!(events, ["rpcx.pre.handle.request", "rpcx.post.write.response"]);
    }
    assert_eq!(only_rust_span(&rust, "rpcx.service.Arith.Mul").status, Status::Unset);
    assert_eq!(only_rust_span(&rust, "rpcx.service.Arith.Error").status, Status::error("intentional error A=6"));
    let go_err = only_span(&go, "rpcx.client.Arith.Error");
    assert_eq!((go_err.status_code.as_str(), go_err.status_description.as_str()), ("Error", "intentional error A=6"));
}

#[test]
fn rust_server_span_is_a_child_of_the_go_client_span_tokio() {
    run_bounded("Go otel client, tokio server", LIMIT, || go_client_rust_server(Runtime::Tokio));
}

#[test]
fn rust_server_span_is_a_child_of_the_go_client_span_std() {
    run_bounded("Go otel client, std server", LIMIT, || go_client_rust_server(Runtime::Std));
}

#[test]
fn rust_server_span_is_a_child_of_the_go_client_span_smol() {
    run_bounded("Go otel client, smol server", LIMIT, || go_client_rust_server(Runtime::Smol));
}
