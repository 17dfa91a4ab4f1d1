//! `XClientPool` and `OneClient` on every runtime (each against a tokio server; the
//! servers' side is not what is tested here).

use bytes::Bytes;
use rpcx_conformance::runtimes::Tokio;
use rpcx_conformance::{ServeOpts, ServerCtl, ServerRt};
use rpcx_core::govern::{Instance, MultiDiscovery};
use rpcx_core::service::{Context, Router, Service};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Services `A` and `B`, each with `Name` (answers the service's name).
fn server() -> Box<dyn ServerCtl> {
    let svc = |name: &'static str| {
        Service::new(name).raw_method("Name", move |_c: Context, _p: Bytes| async move { Ok(Bytes::from(name)) })
    };
    Tokio.serve(Router::new().service(svc("A")).service(svc("B")), ServeOpts::default())
}

fn discovery(server: &dyn ServerCtl) -> Arc<MultiDiscovery> {
    Arc::new(MultiDiscovery::new([Instance::new(server.address().as_str(), "")]))
}

fn accepted_becomes(server: &dyn ServerCtl, n: u64) {
    let end = Instant::now() + Duration::from_secs(5);
    while server.stats().expect("stats").connections_accepted < n {
        assert!(Instant::now() < end, "{:?}", server.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.stats().expect("stats").connections_accepted, n);
}

#[test]
fn tokio() {
    let s = server();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let pool = rpcx_tokio::XClientPool::new(3, "A", discovery(&*s), rpcx_tokio::XClientOptions::default);
        for _ in 0..9 {
            let r = pool.get().request("Name").call_raw(Bytes::new()).await.expect("call");
            assert_eq!(&r.payload[..], b"A");
        }
        accepted_becomes(&*s, 3);
        pool.close().await;
        let one = rpcx_tokio::OneClient::new(discovery(&*s), rpcx_tokio::XClientOptions::default);
        for svc in ["A", "B", "A"] {
            let r = one.xclient(svc).request("Name").call_raw(Bytes::new()).await.expect("call");
            assert_eq!(&r.payload[..], svc.as_bytes());
        }
        assert_eq!(one.services(), ["A", "B"]);
        one.close().await;
    });
    s.close();
}

#[test]
fn smol() {
    let s = server();
    smol::block_on(async {
        let pool = rpcx_smol::XClientPool::new(3, "A", discovery(&*s), rpcx_smol::XClientOptions::default);
        for _ in 0..9 {
            let r = pool.get().request("Name").call_raw(Bytes::new()).await.expect("call");
            assert_eq!(&r.payload[..], b"A");
        }
        accepted_becomes(&*s, 3);
        pool.close().await;
        let one = rpcx_smol::OneClient::new(discovery(&*s), rpcx_smol::XClientOptions::default);
        for svc in ["A", "B", "A"] {
            let r = one.xclient(svc).request("Name").call_raw(Bytes::new()).await.expect("call");
            assert_eq!(&r.payload[..], svc.as_bytes());
        }
        assert_eq!(one.services(), ["A", "B"]);
        one.close().await;
    });
    s.close();
}

#[test]
fn std() {
    let s = server();
    let pool = rpcx_std::XClientPool::new(3, "A", discovery(&*s), rpcx_std::XClientOptions::default);
    for _ in 0..9 {
        let r = pool.get().request("Name").call_raw(Bytes::new()).expect("call");
        assert_eq!(&r.payload[..], b"A");
    }
    accepted_becomes(&*s, 3);
    pool.close();
    let one = rpcx_std::OneClient::new(discovery(&*s), rpcx_std::XClientOptions::default);
    for svc in ["A", "B", "A"] {
        let r = one.xclient(svc).request("Name").call_raw(Bytes::new()).expect("call");
        assert_eq!(&r.payload[..], svc.as_bytes());
    }
    assert_eq!(one.services(), ["A", "B"]);
    one.close();
    s.close();
}

/// Each runtime's `Client` reports its heartbeat round trip to the XClient's governor
/// (`ConnHandle::heartbeat_rtt`), which feeds it to the selector.
mod heartbeat_rtt {
    use super::*;
    use rpcx_core::conn::ClientConfig;
    use rpcx_core::govern::ConnHandle;

    fn config() -> ClientConfig {
        ClientConfig { heartbeat_interval: Some(Duration::from_millis(20)), ..Default::default() }
    }

    fn eventually(mut rtt: impl FnMut() -> Option<Duration>) {
        let end = Instant::now() + Duration::from_secs(5);
        while rtt().is_none() {
            assert!(Instant::now() < end, "no heartbeat round trip measured");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn tokio() {
        let s = server();
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let o = rpcx_tokio::ClientOptions { connection: config(), ..Default::default() };
        let c = rt.block_on(rpcx_tokio::Client::connect(&s.address(), o)).expect("connect");
        eventually(|| c.heartbeat_rtt());
        s.close();
    }

    #[test]
    fn smol() {
        let s = server();
        let o = rpcx_smol::ClientOptions { connection: config(), ..Default::default() };
        let c = smol::block_on(rpcx_smol::Client::connect(&s.address(), o)).expect("connect");
        eventually(|| c.heartbeat_rtt());
        s.close();
    }

    #[test]
    fn std() {
        let s = server();
        let o = rpcx_std::ClientOptions { connection: config(), ..Default::default() };
        let c = rpcx_std::Client::connect(&s.address(), o).expect("connect");
        eventually(|| c.heartbeat_rtt());
        s.close();
    }
}
