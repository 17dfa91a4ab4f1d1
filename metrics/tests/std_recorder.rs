//! The hooks on the std runtime (rpcx-std) over loopback TCP, recording into a test
//! recorder: the values themselves (sizes are the payload sizes, counts match, the
//! status label follows the outcome), Go's MetricsPlugin names, the series cap, and a
//! server's totals as gauges.

mod support;

use rpcx_metrics::{MetricsHooks, ServerTotalsGauges, names};
use rpcx_std::{Client, ClientOptions, SerializeType, Server};
use std::sync::Arc;
use std::time::Duration;
use support::{TestRecorder, eventually, router, rpc, rpc_status};

const WITHIN: Duration = Duration::from_secs(10);

fn raw<'a>(c: &'a Client, method: &str) -> rpcx_std::RequestBuilder<'a> {
    c.request("Echo", method).serialize_type(SerializeType::NONE).timeout(Duration::from_secs(10))
}

#[test]
fn otel_names_record_sizes_counts_and_status_on_both_sides() {
    let rec = TestRecorder::default();
    let hooks = Arc::new(MetricsHooks::new().recorder(rec.arc()));
    let server = Server::new(router().hook(hooks.clone())).bind("tcp@127.0.0.1:0").unwrap();
    let client = Client::connect(server.address(), ClientOptions::default().hook(hooks.clone())).unwrap();

    let reply = raw(&client, "Twice").call_raw(vec![7u8; 100]).unwrap();
    assert_eq!(reply.payload.len(), 200);
    let err = raw(&client, "Fail").call_raw(vec![1u8; 10]).unwrap_err();
    assert!(err.remote().is_some(), "{err:?}");
    let err = raw(&client, "Nope").call_raw(vec![3u8; 5]).unwrap_err();
    assert!(err.remote().is_some(), "{err:?}");
    raw(&client, "Note").oneway_raw(vec![2u8; 30]).unwrap();
    let err = raw(&client, "Hang").timeout(Duration::from_millis(50)).call_raw(vec![4u8; 3]).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The oneway request ends on the server after the client has returned.
    eventually(WITHIN, "the server timed the oneway request", || {
        rec.histogram(names::SERVER_DURATION, &rpc("Echo", "Note")).len() == 1
    });

    for side in ["server", "client"] {
        let n = |suffix: &str| format!("rpc.{side}.{suffix}");
        // The success.
        assert_eq!(rec.counter(&n("requests_per_rpc"), &rpc("Echo", "Twice")), 1, "{side}");
        assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", "Twice")), [100.0], "{side}");
        assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc_status("Echo", "Twice", "OK")), 1, "{side}");
        assert_eq!(rec.histogram(&n("response.size"), &rpc_status("Echo", "Twice", "OK")), [200.0], "{side}");
        assert_eq!(rec.histogram(&n("duration"), &rpc_status("Echo", "Twice", "OK")).len(), 1, "{side}");
        assert!(rec.histogram(&n("duration"), &rpc("Echo", "Twice"))[0] >= 0.0);
        // A method that never failed has no error series, one that never succeeded no
        // success series.
        for (method, status) in [("Twice", "ERROR"), ("Fail", "OK")] {
            for name in ["duration", "response.size", "responses_per_rpc"] {
                let series = rec.series(&n(name));
                assert!(
                    !series.iter().any(|l| l.contains(&("rpc.method".into(), method.into()))
                        && l.contains(&("otel.status_code".into(), status.into()))),
                    "{side} {name}: {series:?}"
                );
            }
        }
        // A handler error and an unknown method: error responses, empty payloads.
        for m in ["Fail", "Nope"] {
            assert_eq!(rec.counter(&n("requests_per_rpc"), &rpc("Echo", m)), 1, "{side} {m}");
            assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc_status("Echo", m, "ERROR")), 1, "{side} {m}");
            assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc_status("Echo", m, "OK")), 0, "{side} {m}");
            assert_eq!(rec.histogram(&n("response.size"), &rpc_status("Echo", m, "ERROR")), [0.0], "{side} {m}");
            assert_eq!(rec.histogram(&n("duration"), &rpc_status("Echo", m, "ERROR")).len(), 1, "{side} {m}");
        }
        assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", "Fail")), [10.0], "{side}");
        assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", "Nope")), [5.0], "{side}");
        // The oneway request: a duration, no response.
        assert_eq!(rec.counter(&n("requests_per_rpc"), &rpc("Echo", "Note")), 1, "{side}");
        assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", "Note")), [30.0], "{side}");
        assert_eq!(rec.histogram(&n("duration"), &rpc_status("Echo", "Note", "OK")).len(), 1, "{side}");
        assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc("Echo", "Note")), 0, "{side}");
        assert!(rec.histogram(&n("response.size"), &rpc("Echo", "Note")).is_empty(), "{side}");
        assert_eq!(rec.unit(&n("duration")), Some(metrics::Unit::Milliseconds));
        assert_eq!(rec.unit(&n("request.size")), Some(metrics::Unit::Bytes));
        assert_eq!(rec.unit(&n("response.size")), Some(metrics::Unit::Bytes));
    }
    // The call that timed out: the server has not answered it; the client saw an error
    // without a response.
    assert_eq!(rec.counter(names::SERVER_REQUESTS_PER_RPC, &rpc("Echo", "Hang")), 1);
    assert_eq!(rec.counter(names::SERVER_RESPONSES_PER_RPC, &rpc("Echo", "Hang")), 0);
    assert_eq!(rec.counter(names::CLIENT_REQUESTS_PER_RPC, &rpc("Echo", "Hang")), 1);
    assert_eq!(rec.histogram(names::CLIENT_DURATION, &rpc_status("Echo", "Hang", "ERROR")).len(), 1);
    let timed = rec.histogram(names::CLIENT_DURATION, &rpc("Echo", "Hang"))[0];
    assert!(timed >= 50.0, "the timeout's latency in ms: {timed}");
    assert_eq!(rec.counter(names::CLIENT_RESPONSES_PER_RPC, &rpc("Echo", "Hang")), 0);
    // Totals over every label.
    assert_eq!(rec.counter(names::SERVER_REQUESTS_PER_RPC, &[]), 5);
    assert_eq!(rec.counter(names::SERVER_RESPONSES_PER_RPC, &[("otel.status_code", "ERROR")]), 2);
    assert_eq!(rec.counter(names::CLIENT_REQUESTS_PER_RPC, &[]), 5);
    // No other label set: rpc.system is always rpcx.
    for name in rec.names() {
        for labels in rec.series(&name) {
            assert!(labels.contains(&("rpc.system".into(), "rpcx".into())), "{name}: {labels:?}");
        }
    }
    client.close();
    server.close();
}

#[test]
fn go_metrics_names_as_go_metrics_plugin_registers_them() {
    let rec = TestRecorder::default();
    let hooks = Arc::new(MetricsHooks::go_metrics_names("rpcx.").recorder(rec.arc()));
    let server = Server::new(router().hook(hooks.clone())).bind("tcp@127.0.0.1:0").unwrap();
    let client = Client::connect(server.address(), ClientOptions::default().hook(hooks.clone())).unwrap();
    for _ in 0..3 {
        raw(&client, "Twice").call_raw(vec![1u8; 8]).unwrap();
    }
    raw(&client, "Fail").call_raw(vec![1u8; 8]).unwrap_err();
    raw(&client, "Note").oneway_raw(vec![1u8; 8]).unwrap();
    eventually(WITHIN, "the oneway request was read", || rec.counter("rpcx.service.Echo.Note.Read_Qps", &[]) == 1);

    assert_eq!(rec.counter("rpcx.serviceCounter", &[]), 2, "Echo and Other registered");
    assert_eq!(rec.counter("rpcx.clientMeter", &[]), 1, "one connection");
    assert_eq!(rec.counter("rpcx.service.Echo.Twice.Read_Qps", &[]), 3);
    assert_eq!(rec.counter("rpcx.service.Echo.Twice.Write_Qps", &[]), 3);
    let times = rec.histogram("rpcx.service.Echo.Twice.CallTime", &[]);
    assert_eq!(times.len(), 3);
    assert!(times.iter().all(|&ns| ns > 0.0 && ns < 30.0 * 60.0 * 1e9), "{times:?}");
    assert_eq!(rec.unit("rpcx.service.Echo.Twice.CallTime"), Some(metrics::Unit::Nanoseconds));
    assert_eq!(rec.counter("rpcx.service.Echo.Fail.Read_Qps", &[]), 1);
    assert_eq!(rec.counter("rpcx.service.Echo.Fail.Write_Qps", &[]), 1);
    assert_eq!(rec.counter("rpcx.service.Echo.Note.Write_Qps", &[]), 0, "Go writes no response for a oneway request");
    // Go's names only: no label, nothing from the client side.
    for name in rec.names() {
        assert!(name.starts_with("rpcx."), "{name}");
        assert!(rec.series(&name).iter().all(Vec::is_empty), "{name}");
    }
    client.close();
    server.close();

    // Both namings at once, Go's without a prefix.
    let rec = TestRecorder::default();
    let hooks = Arc::new(MetricsHooks::new().with_go_metrics_names("").recorder(rec.arc()));
    let server = Server::new(router().hook(hooks.clone())).bind("tcp@127.0.0.1:0").unwrap();
    let client = Client::connect(server.address(), ClientOptions::default().hook(hooks.clone())).unwrap();
    raw(&client, "Twice").call_raw(vec![1u8; 8]).unwrap();
    assert_eq!(rec.counter("serviceCounter", &[]), 2);
    assert_eq!(rec.counter("service.Echo.Twice.Write_Qps", &[]), 1);
    assert_eq!(rec.counter(names::SERVER_RESPONSES_PER_RPC, &rpc_status("Echo", "Twice", "OK")), 1);
    assert_eq!(rec.counter(names::CLIENT_RESPONSES_PER_RPC, &rpc_status("Echo", "Twice", "OK")), 1);
    client.close();
    server.close();
}

#[test]
fn names_past_the_series_cap_are_recorded_as_other() {
    let rec = TestRecorder::default();
    let hooks = Arc::new(MetricsHooks::new().max_series(2).recorder(rec.arc()));
    let server = Server::new(router().hook(hooks.clone())).bind("tcp@127.0.0.1:0").unwrap();
    let client = Client::connect(server.address(), ClientOptions::default().hook(hooks.clone())).unwrap();
    raw(&client, "Twice").call_raw(vec![1u8; 4]).unwrap();
    raw(&client, "Fail").call_raw(vec![1u8; 4]).unwrap_err();
    for i in 0..5 {
        raw(&client, &format!("Random{i}")).call_raw(vec![1u8; 4]).unwrap_err();
    }
    raw(&client, "Twice").call_raw(vec![1u8; 4]).unwrap();
    for name in [names::SERVER_REQUESTS_PER_RPC, names::CLIENT_REQUESTS_PER_RPC] {
        assert_eq!(rec.counter(name, &rpc("Echo", "Twice")), 2, "{name}");
        assert_eq!(rec.counter(name, &rpc("Echo", "Fail")), 1, "{name}");
        assert_eq!(rec.counter(name, &rpc("_other", "_other")), 5, "{name}");
        assert_eq!(rec.series(name).len(), 3, "{name}: {:?}", rec.series(name));
    }
    client.close();
    server.close();
}

#[test]
fn server_totals_are_published_as_gauges() {
    let rec = TestRecorder::default();
    let server = Server::new(router()).bind("tcp@127.0.0.1:0").unwrap();
    let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
    for _ in 0..3 {
        raw(&client, "Twice").call_raw(vec![1u8; 4]).unwrap();
    }
    raw(&client, "Note").oneway_raw(vec![1u8; 4]).unwrap();
    // rpcx-std publishes a connection's counters when its session next goes idle, which
    // after a oneway request (no output) waits for the next input: end with a call.
    raw(&client, "Twice").call_raw(vec![1u8; 4]).unwrap();
    eventually(WITHIN, "the server counted 5 requests", || server.stats().requests == 5);
    let stats = server.stats();
    assert_eq!((stats.connections_open, stats.responses), (1, 4));
    let gauges = ServerTotalsGauges::new().recorder(rec.arc()).label("server", "a");
    gauges.describe();
    gauges.publish(&stats);
    for (name, value) in names::totals(&stats) {
        assert_eq!(rec.gauge(name, &[("server", "a")]), Some(value as f64), "{name}");
    }
    assert_eq!(rec.gauge("rpcx.server.requests", &[]), Some(5.0));
    assert_eq!(rec.gauge("rpcx.server.connections_accepted", &[]), Some(1.0));
    assert_eq!(rec.unit("rpcx.server.memory_peak"), Some(metrics::Unit::Bytes));
    assert_eq!(names::totals(&stats).len(), names::TOTALS.len());
    client.close();
    eventually(WITHIN, "the connection closed", || server.stats().connections_open == 0);
    gauges.publish(&server.stats());
    assert_eq!(rec.gauge("rpcx.server.connections_open", &[("server", "a")]), Some(0.0));
    server.close();
}

/// Refuses `Echo.Blocked` in `pre_read_request` (before the metrics hooks'
/// `post_read_request`) and `Echo.Late` in its own `post_read_request`.
struct Refuse;

impl rpcx_std::service::ServerHooks for Refuse {
    fn rewrite_request(
        &self,
        req: &mut rpcx_std::service::RequestHead<'_>,
    ) -> Result<(), rpcx_std::service::Rejection> {
        if req.service_method.as_ref() == b"Blocked" {
            return Err(rpcx_std::service::Rejection::answer("blocked"));
        }
        Ok(())
    }
    fn post_read_request(&self, ctx: &rpcx_std::service::Context) -> Result<(), rpcx_std::service::Rejection> {
        if ctx.service_method() == "Late" {
            return Err(rpcx_std::service::Rejection::answer("refused late"));
        }
        Ok(())
    }
}

#[test]
fn requests_refused_by_other_hooks_and_auth_are_recorded() {
    let rec = TestRecorder::default();
    let hooks = Arc::new(MetricsHooks::new().recorder(rec.arc()));
    let router = router().hook(Arc::new(Refuse)).hook(hooks.clone()).auth(|ctx, token| {
        let ok = token == "secret" || ctx.service_method() != "Twice";
        async move { if ok { Ok(()) } else { Err("auth failed".to_owned()) } }
    });
    let server = Server::new(router).bind("tcp@127.0.0.1:0").unwrap();
    let client = Client::connect(server.address(), ClientOptions::default().hook(hooks.clone())).unwrap();
    for (method, text) in [("Blocked", "blocked"), ("Late", "refused late")] {
        let err = raw(&client, method).call_raw(vec![1u8; 6]).unwrap_err();
        assert_eq!(err.remote().map(|r| r.text.as_str()), Some(text), "{err:?}");
    }
    // Auth refuses Twice without the token, and closes the connection (as Go does).
    let err = raw(&client, "Twice").call_raw(vec![1u8; 6]).unwrap_err();
    assert!(err.remote().is_some(), "{err:?}");
    for m in ["Blocked", "Late", "Twice"] {
        for side in ["server", "client"] {
            let n = |s: &str| format!("rpc.{side}.{s}");
            assert_eq!(rec.counter(&n("requests_per_rpc"), &rpc("Echo", m)), 1, "{side} {m}");
            assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", m)), [6.0], "{side} {m}");
            assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc_status("Echo", m, "ERROR")), 1, "{side} {m}");
            assert_eq!(rec.histogram(&n("duration"), &rpc_status("Echo", m, "ERROR")).len(), 1, "{side} {m}");
        }
    }
    client.close();
    server.close();
}
