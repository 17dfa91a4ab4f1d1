//! rpcx-otel on the tokio runtime: a Rust client with `OtelClientHooks` and a Rust
//! server with `OtelServerHooks` over loopback TCP, spans in memory.

mod common;

use common::*;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanId, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context as OtelContext, KeyValue};
use rpcx_core::govern::{FailMode, Instance, MultiDiscovery};
use rpcx_otel::{OtelClientHooks, OtelServerHooks};
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Client, ClientOptions, Server, ServerHandle, XClient, XClientOptions};
use std::sync::Arc;
use std::time::Duration;

async fn start(server_hooks: OtelServerHooks) -> ServerHandle {
    Server::new(services().hook(Arc::new(server_hooks))).bind("tcp@127.0.0.1:0").await.expect("bind")
}

async fn connect(server: &ServerHandle, hooks: Option<Arc<OtelClientHooks>>) -> Client {
    let mut options = ClientOptions::default();
    if let Some(h) = hooks {
        options = options.hook(h);
    }
    Client::connect(server.address(), options).await.expect("connect")
}

/// Bound every test body in time.
async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_make_one_trace_and_only_failures_get_an_error_status() {
    bounded(async {
        let (provider, exporter) = recorder();
        let server = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let client = connect(&server, Some(hooks)).await;

        let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).await.unwrap();
        assert_eq!(r.C, 42);
        let e = client.call::<_, Reply>("Arith", "Fail", &Args { A: 9, B: 0 }).await.unwrap_err();
        assert_eq!(e.to_string(), fail_text(9));

        let all = spans(&exporter, &["rpcx.service.Arith.Mul", "rpcx.service.Arith.Fail", "rpcx.client.Arith.Fail"]);
        let (client_mul, server_mul) = assert_pair(&all, "Mul");
        let (client_fail, server_fail) = assert_pair(&all, "Fail");
        // No caller span: each call starts a trace of its own.
        assert_eq!(client_mul.parent_span_id, SpanId::INVALID);
        assert_ne!(client_mul.span_context.trace_id(), client_fail.span_context.trace_id());
        assert_eq!(client_mul.status, Status::Unset, "success is not an error");
        assert_eq!(server_mul.status, Status::Unset, "success is not an error");
        assert_eq!(client_fail.status, Status::error(fail_text(9)));
        assert_eq!(server_fail.status, Status::error(fail_text(9)));
        client.close().await;
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_the_server_span() {
    bounded(async {
        let (provider, exporter) = recorder();
        let server = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let client =
            connect(&server, Some(Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build()))).await;
        let seen: String = client.call("Arith", "Span", &Args { A: 0, B: 0 }).await.unwrap();
        let all = spans(&exporter, &["rpcx.service.Arith.Span"]);
        let (_, server_span) = assert_pair(&all, "Span");
        assert_eq!(seen, hex_span(server_span.span_context.span_id()));
        assert_ne!(server_span.span_context.span_id(), SpanId::INVALID);
        client.close().await;
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_span_handed_over_in_metadata_is_the_client_span_parent() {
    bounded(async {
        let (provider, exporter) = recorder();
        let server = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let client = connect(&server, Some(hooks.clone())).await;

        let tracer = provider.tracer("test");
        let caller = tracer.start("caller");
        let cx = OtelContext::current_with_span(caller);
        let r: Reply = client
            .request("Arith", "Mul")
            .with_metadata(hooks.metadata_for(&cx))
            .call(&Args { A: 2, B: 3 })
            .await
            .unwrap();
        assert_eq!(r.C, 6);
        cx.span().end();

        let all = spans(&exporter, &["caller", "rpcx.service.Arith.Mul"]);
        let caller = only(&all, "caller");
        let (client_span, _) = assert_pair(&all, "Mul");
        assert_eq!(client_span.parent_span_id, caller.span_context.span_id());
        assert_eq!(client_span.span_context.trace_id(), caller.span_context.trace_id());
        client.close().await;
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_travels_only_when_configured() {
    bounded(async {
        let (provider, _exporter) = recorder();
        let cx = OtelContext::current_with_baggage(vec![KeyValue::new("tenant", "t-42")]);

        let with = start(OtelServerHooks::builder().tracer_provider(&provider).baggage().build()).await;
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).baggage().build());
        let md = hooks.metadata_for(&cx);
        assert_eq!(md.get_str("baggage").unwrap(), Some("tenant=t-42"));
        let client = connect(&with, Some(hooks.clone())).await;
        let got: String =
            client.request("Arith", "Baggage").with_metadata(md).call(&Args { A: 0, B: 0 }).await.unwrap();
        assert_eq!(got, "t-42");
        client.close().await;
        with.close().await;

        // W3C TraceContext only (the default): no baggage key, none on the server.
        let without = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let md = hooks.metadata_for(&cx);
        assert!(!md.contains_key("baggage"));
        let client = connect(&without, Some(hooks)).await;
        let mut md = md;
        md.insert("baggage", "tenant=t-42");
        let got: String =
            client.request("Arith", "Baggage").with_metadata(md).call(&Args { A: 0, B: 0 }).await.unwrap();
        assert_eq!(got, "", "the default server hooks do not extract baggage");
        client.close().await;
        without.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_oneway_request_has_both_spans() {
    bounded(async {
        let (provider, exporter) = recorder();
        let server = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let client =
            connect(&server, Some(Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build()))).await;
        client.oneway("Arith", "Note", &Args { A: 1, B: 1 }).await.unwrap();
        let all = spans(&exporter, &["rpcx.client.Arith.Note", "rpcx.service.Arith.Note"]);
        let client_span = only(&all, "rpcx.client.Arith.Note");
        let server_span = only(&all, "rpcx.service.Arith.Note");
        assert_eq!(server_span.parent_span_id, client_span.span_context.span_id());
        assert_eq!(server_span.status, Status::Unset);
        assert_eq!(client_span.status, Status::Unset);
        // No response is written: the span ends after the handler, without the write event.
        assert_eq!(event_names(server_span), ["rpcx.pre.handle.request"]);

        // A failing oneway request: no response, but the server span says it failed.
        client.oneway("Arith", "Fail", &Args { A: 4, B: 0 }).await.unwrap();
        let all = spans(&exporter, &["rpcx.service.Arith.Fail"]);
        assert_eq!(only(&all, "rpcx.service.Arith.Fail").status, Status::error(fail_text(4)));
        assert_eq!(only(&all, "rpcx.client.Arith.Fail").status, Status::Unset, "the client only sent it");
        client.close().await;
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_hooks_makes_the_server_span_a_root() {
    bounded(async {
        let (provider, exporter) = recorder();
        let server = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let client = connect(&server, None).await;
        let r: Reply = client.call("Arith", "Mul", &Args { A: 1, B: 5 }).await.unwrap();
        assert_eq!(r.C, 5);
        let all = spans(&exporter, &["rpcx.service.Arith.Mul"]);
        let s = only(&all, "rpcx.service.Arith.Mul");
        assert_eq!(s.parent_span_id, SpanId::INVALID);
        assert!(!s.parent_span_is_remote);
        assert_eq!(all.len(), 1, "no client span without client hooks");
        client.close().await;
        server.close().await;
    })
    .await;
}

fn xclient(servers: &[&str], mode: FailMode, hooks: Arc<OtelClientHooks>) -> XClient {
    let d = MultiDiscovery::new(servers.iter().map(|s| Instance::new(*s, "")));
    let opts = XClientOptions { fail_mode: mode, hooks: vec![hooks], ..Default::default() };
    XClient::new("Arith", Arc::new(d), opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xclient_broadcast_has_a_client_span_per_server() {
    bounded(async {
        let (provider, exporter) = recorder();
        let a = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let b = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let xc = xclient(&[a.address(), b.address()], FailMode::Failfast, hooks);
        let r: Reply = xc.broadcast("Mul", &Args { A: 3, B: 3 }).await.unwrap();
        assert_eq!(r.C, 9);

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let all = loop {
            let all = exporter.get_finished_spans().unwrap();
            if all.iter().filter(|s| s.name == "rpcx.service.Arith.Mul").count() == 2 {
                break all;
            }
            assert!(std::time::Instant::now() < deadline, "{all:#?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let clients: Vec<_> = all.iter().filter(|s| s.name == "rpcx.client.Arith.Mul").collect();
        let servers: Vec<_> = all.iter().filter(|s| s.name == "rpcx.service.Arith.Mul").collect();
        assert_eq!(clients.len(), 2, "{all:#?}");
        let mut parents: Vec<SpanId> = servers.iter().map(|s| s.parent_span_id).collect();
        let mut ids: Vec<SpanId> = clients.iter().map(|s| s.span_context.span_id()).collect();
        parents.sort_by_key(|id| id.to_bytes());
        ids.sort_by_key(|id| id.to_bytes());
        assert_eq!(parents, ids, "each server span is a child of one client span");
        xc.close().await;
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xclient_failover_attempt_is_a_child_of_the_caller() {
    bounded(async {
        let (provider, exporter) = recorder();
        let live = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("tcp@{}", l.local_addr().unwrap())
        };
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let xc = xclient(&[dead.as_str(), live.address()], FailMode::Failover, hooks.clone());
        let caller = provider.tracer("test").start("caller");
        let cx = OtelContext::current_with_span(caller);
        for i in 0..2 {
            let r: Reply =
                xc.request("Mul").with_metadata(hooks.metadata_for(&cx)).call(&Args { A: i, B: 2 }).await.unwrap();
            assert_eq!(r.C, i * 2);
        }
        cx.span().end();
        let all = spans(&exporter, &["caller"]);
        let caller = only(&all, "caller");
        let clients: Vec<_> = all.iter().filter(|s| s.name == "rpcx.client.Arith.Mul").collect();
        assert_eq!(clients.len(), 2, "one span per call on the live server (the dead one never connects): {all:#?}");
        for c in clients {
            assert_eq!(c.parent_span_id, caller.span_context.span_id());
            assert_eq!(c.status, Status::Unset);
        }
        xc.close().await;
        live.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_status_is_the_error_text_as_sent() {
    bounded(async {
        let (provider, exporter) = recorder();
        // The server's error-text function (Go's ServerErrorFunc) runs after post_call:
        // the span gets the text the client gets.
        let router = services()
            .error_text(|_ctx, text| format!("wrapped: {text}"))
            .hook(Arc::new(OtelServerHooks::builder().tracer_provider(&provider).build()));
        let server = Server::new(router).bind("tcp@127.0.0.1:0").await.expect("bind");
        let client =
            connect(&server, Some(Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build()))).await;
        let e = client.call::<_, Reply>("Arith", "Fail", &Args { A: 1, B: 0 }).await.unwrap_err();
        let sent = format!("wrapped: {}", fail_text(1));
        assert_eq!(e.to_string(), sent);
        let all = spans(&exporter, &["rpcx.service.Arith.Fail", "rpcx.client.Arith.Fail"]);
        let (client_span, server_span) = assert_pair(&all, "Fail");
        assert_eq!(server_span.status, Status::error(sent.clone()));
        assert_eq!(client_span.status, Status::error(sent));
        client.close().await;
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_calling_on_hands_its_server_span_over() {
    bounded(async {
        let (provider, exporter) = recorder();
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let back = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let downstream = connect(&back, Some(hooks.clone())).await;
        let relay_hooks = hooks.clone();
        let router = Router::new()
            .service(Service::new("Front").method("Relay", move |ctx: Context, a: Args| {
                let (down, hooks) = (downstream.clone(), relay_hooks.clone());
                async move {
                    let md = hooks.metadata_for(&rpcx_otel::context_of(&ctx));
                    let r: Reply = down.request("Arith", "Mul").context(&ctx).with_metadata(md).call(&a).await?;
                    Ok(r)
                }
            }))
            .hook(Arc::new(OtelServerHooks::builder().tracer_provider(&provider).build()));
        let front = Server::new(router).bind("tcp@127.0.0.1:0").await.expect("bind");
        let client = connect(&front, Some(hooks)).await;
        let r: Reply = client.call("Front", "Relay", &Args { A: 5, B: 8 }).await.unwrap();
        assert_eq!(r.C, 40);

        let all = spans(&exporter, &["rpcx.service.Front.Relay", "rpcx.service.Arith.Mul"]);
        let front_span = only(&all, "rpcx.service.Front.Relay");
        let (down_client, _) = assert_pair(&all, "Mul");
        assert_eq!(
            down_client.parent_span_id,
            front_span.span_context.span_id(),
            "the call on is the handler span's child"
        );
        let top = only(&all, "rpcx.client.Front.Relay");
        assert_eq!(front_span.parent_span_id, top.span_context.span_id());
        for s in [front_span, &down_client] {
            assert_eq!(s.span_context.trace_id(), top.span_context.trace_id(), "one trace end to end");
        }
        client.close().await;
        front.close().await;
        back.close().await;
    })
    .await;
}

/// On a `Client`, `pre_call` runs where the call is made: a caller's current context
/// (attached to its future with `FutureExt::with_context`) is the client span's parent,
/// with nothing handed over in the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_current_context_is_the_parent() {
    use opentelemetry::context::FutureExt;
    bounded(async {
        let (provider, exporter) = recorder();
        let server = start(OtelServerHooks::builder().tracer_provider(&provider).build()).await;
        let hooks = Arc::new(OtelClientHooks::builder().tracer_provider(&provider).build());
        let client = connect(&server, Some(hooks)).await;
        let tracer = provider.tracer("caller");
        let caller = tracer.start("caller");
        let caller_id = opentelemetry::trace::Span::span_context(&caller).span_id();
        let cx = OtelContext::current_with_span(caller);
        let r: Reply = client.call("Arith", "Mul", &Args { A: 2, B: 3 }).with_context(cx).await.unwrap();
        assert_eq!(r.C, 6);
        let all = spans(&exporter, &["rpcx.service.Arith.Mul"]);
        let (client_mul, _server_mul) = assert_pair(&all, "Mul");
        assert_eq!(client_mul.parent_span_id, caller_id, "the caller's span is the parent");
        client.close().await;
        server.close().await;
    })
    .await;
}
