//! XClient over real loopback servers: fail modes, fan-out, and servers killed and
//! restarted while calls keep flowing.

use rpcx_core::govern::{FailMode, Instance, MultiDiscovery, SelectMode};
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Error, Server, ServerHandle, XClient, XClientOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Args {
    A: i64,
    B: i64,
}

#[allow(non_snake_case)]
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Reply {
    C: i64,
}

/// Arith whose `Who` answers with `id`, and `Slow` sleeps A ms.
fn router(id: i64) -> Router {
    Router::new().service(
        Service::new("Arith")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
            .method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { C: id }) })
            .method("Fail", |_c: Context, _a: Args| async move { Err::<Reply, _>("nope".into()) })
            .method("Slow", move |_c: Context, a: Args| async move {
                tokio::time::sleep(Duration::from_millis(a.A as u64)).await;
                Ok(Reply { C: id })
            })
            .method("SlowOn", move |_c: Context, a: Args| async move {
                if a.B == id {
                    tokio::time::sleep(Duration::from_millis(a.A as u64)).await;
                }
                Ok(Reply { C: id })
            }),
    )
}

/// The id a server answers `Who` with.
async fn id_of(server: &ServerHandle) -> i64 {
    let c = rpcx_tokio::Client::connect(server.address(), Default::default()).await.unwrap();
    let r: Reply = c.call("Arith", "Who", &Args { A: 0, B: 0 }).await.unwrap();
    c.close().await;
    r.C
}

async fn serve(id: i64, addr: &str) -> ServerHandle {
    Server::new(router(id)).bind(addr).await.unwrap()
}

/// A loopback address nobody listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp@{}", l.local_addr().unwrap())
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out");
}

fn opts(mode: FailMode) -> XClientOptions {
    XClientOptions { fail_mode: mode, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_skips_a_dead_server() {
    bounded(async {
        let a = serve(1, "tcp@127.0.0.1:0").await;
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), opts(FailMode::Failover));
        for i in 0..20 {
            let r: Reply = xc.call("Mul", &Args { A: i, B: 3 }).await.unwrap();
            assert_eq!(r.C, i * 3);
        }
        // Failfast against the same pair fails on the dead server's turn.
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let ff = XClient::new("Arith", Arc::new(d), opts(FailMode::Failfast));
        let results: Vec<bool> = futures_results(&ff, 4).await;
        assert!(results.contains(&false) && results.contains(&true), "{results:?}");
        a.close().await;
    })
    .await;
}

async fn futures_results(xc: &XClient, n: usize) -> Vec<bool> {
    let mut v = Vec::new();
    for i in 0..n as i64 {
        v.push(xc.call::<_, Reply>("Mul", &Args { A: i, B: 1 }).await.is_ok());
    }
    v
}

#[tokio::test]
async fn remote_errors_are_not_retried() {
    bounded(async {
        let a = serve(1, "tcp@127.0.0.1:0").await;
        let b = serve(2, "tcp@127.0.0.1:0").await;
        let d = MultiDiscovery::new([Instance::new(a.address(), ""), Instance::new(b.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), opts(FailMode::Failover));
        let err = xc.call::<_, Reply>("Fail", &Args { A: 1, B: 1 }).await.unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test]
async fn failbackup_takes_the_first_completion() {
    bounded(async {
        let slow = serve(1, "tcp@127.0.0.1:0").await;
        let fast = serve(2, "tcp@127.0.0.1:0").await;
        // Round robin starts at the first key in order; make the slow one first.
        let (first, second) = if slow.address() < fast.address() { (&slow, &fast) } else { (&fast, &slow) };
        let d = MultiDiscovery::new([Instance::new(first.address(), ""), Instance::new(second.address(), "")]);
        let mut o = opts(FailMode::Failbackup);
        o.fail.backup_latency = Duration::from_millis(20);
        let xc = XClient::new("Arith", Arc::new(d), o);
        // The first server (round robin starts there) takes 1.5 s; the backup copy goes
        // to the other one after 20 ms and answers at once. Without a backup the call
        // would take 1.5 s and be answered by the first.
        let (slow_id, fast_id) = (id_of(first).await, id_of(second).await);
        let t0 = Instant::now();
        let r: Reply = xc.call("SlowOn", &Args { A: 1500, B: slow_id }).await.unwrap();
        assert_eq!(r.C, fast_id, "the backup answered");
        assert!(t0.elapsed() < Duration::from_millis(1200), "{:?}", t0.elapsed());
        slow.close().await;
        fast.close().await;
    })
    .await;
}

#[tokio::test]
async fn broadcast_fork_inform() {
    bounded(async {
        let servers =
            [serve(1, "tcp@127.0.0.1:0").await, serve(2, "tcp@127.0.0.1:0").await, serve(3, "tcp@127.0.0.1:0").await];
        let d = MultiDiscovery::new(servers.iter().map(|s| Instance::new(s.address(), "")));
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
        let r: Reply = xc.broadcast("Mul", &Args { A: 2, B: 5 }).await.unwrap();
        assert_eq!(r.C, 10);
        let r: Reply = xc.fork("Who", &Args { A: 0, B: 0 }).await.unwrap();
        assert!((1..=3).contains(&r.C));
        let receipts = xc.inform::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap();
        let mut ids: Vec<i64> = receipts.iter().map(|r| r.result.as_ref().unwrap().C).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3]);
        let err = xc.broadcast::<_, Reply>("Fail", &Args { A: 0, B: 0 }).await.unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        // Inform: each receipt carries its own error.
        let receipts = xc.inform::<_, Reply>("Fail", &Args { A: 0, B: 0 }).await.unwrap();
        assert!(receipts.iter().all(|r| r.result.as_ref().unwrap_err().remote().is_some()));
        for s in servers {
            s.close().await;
        }
    })
    .await;
}

#[tokio::test]
async fn no_server_is_a_clear_error() {
    bounded(async {
        let xc = XClient::new("Arith", Arc::new(MultiDiscovery::new([])), XClientOptions::default());
        let err = xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await.unwrap_err();
        assert!(matches!(err, Error::NoServer), "{err:?}");
        assert_eq!(err.to_string(), "can not found any server");
    })
    .await;
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_server() {
    bounded(async {
        let servers =
            [serve(1, "tcp@127.0.0.1:0").await, serve(2, "tcp@127.0.0.1:0").await, serve(3, "tcp@127.0.0.1:0").await];
        let d = MultiDiscovery::new(servers.iter().map(|s| Instance::new(s.address(), "")));
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default().select_mode(SelectMode::ConsistentHash));
        let first: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
        for _ in 0..10 {
            let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
            assert_eq!(r.C, first.C, "same service/method key -> same server");
        }
        for s in servers {
            s.close().await;
        }
    })
    .await;
}

/// Servers are killed and restarted while an XClient keeps calling: no call hangs, each
/// ends with a reply or a clear error, and failover recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_killed_and_restarted_while_calling() {
    bounded(async {
        let a = serve(1, "tcp@127.0.0.1:0").await;
        let b = serve(2, "tcp@127.0.0.1:0").await;
        let (a_addr, b_addr) = (a.address().to_owned(), b.address().to_owned());
        let d = MultiDiscovery::new([Instance::new(a_addr.as_str(), ""), Instance::new(b_addr.as_str(), "")]);
        let mut o = opts(FailMode::Failover);
        o.client.connect_timeout = Duration::from_millis(300);
        let xc = XClient::new("Arith", Arc::new(d), o);
        let caller = {
            let xc = xc.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                let stop = Instant::now() + Duration::from_millis(2500);
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    let res = tokio::time::timeout(
                        Duration::from_secs(5),
                        xc.call_with::<_, Reply>(
                            "Mul",
                            &Args { A: 3, B: 4 },
                            Default::default(),
                            Some(Duration::from_secs(2)),
                        ),
                    )
                    .await
                    .expect("no call hangs");
                    match res {
                        Ok((r, _)) => {
                            assert_eq!(r.C, 12);
                            ok += 1;
                        }
                        Err(e) => {
                            assert!(!e.to_string().is_empty());
                            failed += 1;
                        }
                    }
                    assert!(t0.elapsed() < Duration::from_secs(3));
                }
                (ok, failed)
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.close().await; // killed
        tokio::time::sleep(Duration::from_millis(700)).await;
        let a2 = serve(1, &a_addr).await; // restarted on the same address
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.close().await; // the other one dies
        let (ok, failed) = caller.await.unwrap();
        assert!(ok > 100, "calls kept succeeding: ok={ok} failed={failed}");
        assert_eq!(failed, 0, "failover hid every single-server outage");
        // After everything settles, calls go to the restarted server.
        let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
        assert_eq!(r.C, 1);
        a2.close().await;
    })
    .await;
}

#[tokio::test]
async fn in_process_discovery_over_the_memu_transport() {
    bounded(async {
        let (a, b) = (format!("xc-a-{}", std::process::id()), format!("xc-b-{}", std::process::id()));
        let sa = serve(1, &format!("memu@{a}")).await;
        let sb = serve(2, &format!("memu@{b}")).await;
        let d = rpcx_core::govern::InProcessDiscovery::new([a.as_str(), b.as_str()]);
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
            seen.insert(r.C);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2], "round robin over both in-process servers");
        sa.close().await;
        sb.close().await;
    })
    .await;
}

#[tokio::test]
/// The WeightedLatency selector works end to end with connect times fed from real
/// dials (its weighting itself is tested in core's `govern_selectors`).
async fn weighted_latency_selector_serves_calls_with_measured_connect_times() {
    bounded(async {
        let a = serve(1, "tcp@127.0.0.1:0").await;
        let b = serve(2, "tcp@127.0.0.1:0").await;
        let d = MultiDiscovery::new([Instance::new(a.address(), ""), Instance::new(b.address(), "")]);
        let o =
            XClientOptions { selector: Box::new(rpcx_core::govern::WeightedLatency::default()), ..Default::default() };
        let xc = XClient::new("Arith", Arc::new(d), o);
        for i in 0..50 {
            let r: Reply = xc.call("Mul", &Args { A: i, B: 2 }).await.unwrap();
            assert_eq!(r.C, 2 * i);
        }
        a.close().await;
        b.close().await;
    })
    .await;
}

/// The typed finishers of `XClient::request`: a serialize type of the builder's own
/// (the reply comes back in it), a timeout shorter than the handler, `go` through the
/// builder, typed `oneway`, and `go_raw` with an already-serialized payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_builder_typed_finishers() {
    bounded(async {
        let a = serve(1, "tcp@127.0.0.1:0").await;
        let d = MultiDiscovery::new([Instance::new(a.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
        let st = rpcx_core::wire::SerializeType::JSON;
        let (r, _md): (Reply, _) = xc
            .request("Mul")
            .serialize_type(st)
            .metadata("k", "v")
            .call_with_metadata(&Args { A: 6, B: 7 })
            .await
            .unwrap();
        assert_eq!(r.C, 42);
        let err = xc
            .request("Slow")
            .timeout(Duration::from_millis(50))
            .call::<_, Reply>(&Args { A: 2000, B: 0 })
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        let call = xc.request("Mul").timeout(Duration::from_secs(2)).go::<_, Reply>(&Args { A: 3, B: 3 }).unwrap();
        assert_eq!(call.await.unwrap().C, 9);
        xc.request("Mul").oneway(&Args { A: 1, B: 1 }).await.unwrap();
        let payload = rpcx_core::codec::to_payload(st, &Args { A: 2, B: 5 }).unwrap();
        let msg = xc.request("Mul").serialize_type(st).go_raw(payload).unwrap().await.unwrap();
        assert_eq!(msg.header.serialize_type(), st);
        assert_eq!(rpcx_core::codec::from_payload::<Reply>(st, &msg.payload).unwrap().C, 10);
        xc.close().await;
        a.close().await;
    })
    .await;
}
