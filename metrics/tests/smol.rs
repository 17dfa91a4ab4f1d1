//! The hooks on the smol runtime (rpcx-smol) over loopback TCP, on a `Client` and an
//! `XClient` (whose hooks run once per attempt).

mod support;

use rpcx_metrics::{MetricsHooks, names};
use rpcx_smol::core::govern::PeerDiscovery;
use rpcx_smol::{Client, ClientOptions, SerializeType, Server, XClient, XClientOptions};
use std::sync::Arc;
use std::time::Duration;
use support::{TestRecorder, eventually, router, rpc, rpc_status};

#[test]
fn client_xclient_and_server_on_smol() {
    smol::block_on(async {
        let rec = TestRecorder::default();
        let hooks = Arc::new(MetricsHooks::new().recorder(rec.arc()));
        let server = Server::new(router().hook(hooks.clone())).bind("tcp@127.0.0.1:0").await.expect("bind");
        let client =
            Client::connect(server.address(), ClientOptions::default().hook(hooks.clone())).await.expect("connect");
        let call = |m: &'static str| {
            client.request("Echo", m).serialize_type(SerializeType::NONE).timeout(Duration::from_secs(10))
        };
        assert_eq!(call("Twice").call_raw(vec![5u8; 50]).await.expect("twice").payload.len(), 100);
        assert!(call("Fail").call_raw(vec![5u8; 9]).await.expect_err("fail").remote().is_some());
        call("Note").oneway_raw(vec![5u8; 11]).await.expect("oneway");

        let mut xo = XClientOptions::default();
        xo.hooks.push(hooks.clone());
        let xc = XClient::new("Echo", Arc::new(PeerDiscovery::new(server.address(), "")), xo);
        let reply = xc.request("Twice").serialize_type(SerializeType::NONE).call_raw(vec![6u8; 20]).await.expect("x");
        assert_eq!(reply.payload.len(), 40);
        xc.close().await;

        eventually(Duration::from_secs(10), "the server timed the oneway request", || {
            rec.histogram(names::SERVER_DURATION, &rpc("Echo", "Note")).len() == 1
        });
        for side in ["server", "client"] {
            let n = |s: &str| format!("rpc.{side}.{s}");
            assert_eq!(rec.counter(&n("requests_per_rpc"), &rpc("Echo", "Twice")), 2, "{side}");
            let mut sizes = rec.histogram(&n("request.size"), &rpc("Echo", "Twice"));
            sizes.sort_by(f64::total_cmp);
            assert_eq!(sizes, [20.0, 50.0], "{side}");
            let mut sizes = rec.histogram(&n("response.size"), &rpc_status("Echo", "Twice", "OK"));
            sizes.sort_by(f64::total_cmp);
            assert_eq!(sizes, [40.0, 100.0], "{side}");
            assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc_status("Echo", "Fail", "ERROR")), 1, "{side}");
            assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", "Fail")), [9.0], "{side}");
            assert_eq!(rec.histogram(&n("request.size"), &rpc("Echo", "Note")), [11.0], "{side}");
            assert_eq!(rec.histogram(&n("duration"), &rpc_status("Echo", "Note", "OK")).len(), 1, "{side}");
            assert_eq!(rec.counter(&n("responses_per_rpc"), &rpc("Echo", "Note")), 0, "{side}");
        }
        client.close().await;
        server.shutdown(Duration::from_secs(1)).await;
    });
}
