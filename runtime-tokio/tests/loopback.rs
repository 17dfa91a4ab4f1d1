//! The tokio runtime over real loopback sockets: TCP, unix and TLS.

use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Client, ClientOptions, Error, Server, ServerHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

fn router() -> Router {
    router_counting(Arc::default())
}

/// The test router; `started` counts `Slow` handlers that began, so a test can wait for
/// its calls to be in flight instead of sleeping and hoping.
fn router_counting(started: Arc<AtomicUsize>) -> Router {
    Router::new().service(
        Service::new("Arith")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
            .method("Slow", move |_c: Context, a: Args| {
                started.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(a.A as u64)).await;
                    Ok(Reply { C: a.A })
                }
            })
            .method("Push", |c: Context, a: Args| async move {
                for i in 0..a.A {
                    c.pusher().push("P", "N", Default::default(), format!("push-{i}")).map_err(|e| e.to_string())?;
                }
                Ok(Reply { C: a.A })
            }),
    )
}

async fn start(router: Router) -> ServerHandle {
    Server::new(router).bind("tcp@127.0.0.1:0").await.unwrap()
}

/// Wait (bounded) until `started` reaches `n`.
async fn until_started(started: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "calls did not reach their handler");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Bound every test body in time: nothing may hang.
async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_from_100_tasks_on_one_connection() {
    bounded(async {
        let server = start(router()).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..100i64 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100i64 {
                    let r: Reply = c.call("Arith", "Mul", &Args { A: t, B: i }).await.unwrap();
                    assert_eq!(r.C, t * i);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        server.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test]
async fn unix_socket_round_trip() {
    bounded(async {
        let path = std::env::temp_dir().join(format!("rpcx-tokio-{}.sock", std::process::id()));
        let addr = format!("unix@{}", path.display());
        let server = Server::new(router()).bind(&addr).await.unwrap();
        let client = Client::connect(&addr, ClientOptions::default()).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).await.unwrap();
        assert_eq!(r.C, 42);
        server.close().await;
        let _ = std::fs::remove_file(path);
    })
    .await;
}

#[tokio::test]
async fn tls_round_trip_with_a_generated_certificate() {
    bounded(async {
        let (server_cfg, client_cfg) = rpcx_examples_common::self_signed_localhost_tls();
        let server = Server::new(router()).tls(server_cfg).bind("tcp@127.0.0.1:0").await.unwrap();
        let opts = ClientOptions {
            tls: Some(rpcx_tokio::tls::TlsClient { config: client_cfg, server_name: "localhost".into() }),
            ..Default::default()
        };
        let client = Client::connect(server.address(), opts).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 5 }).await.unwrap();
        assert_eq!(r.C, 15);
        // A plain-TCP client cannot talk to the TLS server.
        let plain = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let res =
            plain.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: 1, B: 1 }).await;
        assert!(res.is_err());
        server.close().await;
    })
    .await;
}

/// rpcx over WebSocket over TLS (`wss@`) and over an HTTP CONNECT inside TLS, to one TLS
/// port; `wss@` without TLS settings is a clear error.
#[tokio::test]
async fn wss_and_tls_connect_tunnels() {
    bounded(async {
        let (server_cfg, client_cfg) = rpcx_examples_common::self_signed_localhost_tls();
        let server = Server::new(router()).tls(server_cfg).bind("wss@127.0.0.1:0").await.unwrap();
        assert!(server.address().starts_with("wss@"), "{}", server.address());
        let opts = || ClientOptions {
            tls: Some(rpcx_tokio::tls::TlsClient { config: client_cfg.clone(), server_name: "localhost".into() }),
            ..Default::default()
        };
        let client = Client::connect(server.address(), opts()).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 5 }).await.unwrap();
        assert_eq!(r.C, 15);
        let port = server.local_addr().unwrap().port();
        let tunnel = Client::connect(&format!("http@127.0.0.1:{port}"), opts()).await.unwrap();
        let r: Reply = tunnel.call("Arith", "Mul", &Args { A: 4, B: 5 }).await.unwrap();
        assert_eq!(r.C, 20);
        let err = Client::connect(server.address(), ClientOptions::default()).await.unwrap_err();
        assert!(err.to_string().contains("needs TLS settings"), "{err}");
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_in_flight_calls_complete_and_refuses_new_ones() {
    bounded(async {
        let started = Arc::new(AtomicUsize::new(0));
        let server = start(router_counting(started.clone())).await;
        let addr = server.address().to_owned();
        let client = Client::connect(&addr, ClientOptions::default()).await.unwrap();
        let mut pending = Vec::new();
        for _ in 0..10 {
            pending.push(client.go::<_, Reply>("Arith", "Slow", &Args { A: 300, B: 0 }).await.unwrap());
        }
        until_started(&started, 10).await;
        let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(5)));
        for p in pending {
            assert_eq!(p.await.unwrap().C, 300, "in-flight call completed during shutdown");
        }
        shutdown.await.unwrap();
        assert!(Client::connect(&addr, ClientOptions::default()).await.is_err(), "listener is closed");
        let after = client.call::<_, Reply>("Arith", "Mul", &Args { A: 1, B: 1 }).await;
        assert!(after.is_err(), "the old connection is closed");
    })
    .await;
}

#[tokio::test]
async fn server_killed_mid_call_fails_pending_calls_promptly() {
    bounded(async {
        let started = Arc::new(AtomicUsize::new(0));
        let server = start(router_counting(started.clone())).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let pending = client.go::<_, Reply>("Arith", "Slow", &Args { A: 10_000, B: 0 }).await.unwrap();
        until_started(&started, 1).await;
        let t0 = Instant::now();
        server.close().await;
        let err = pending.await.unwrap_err();
        assert!(matches!(err, Error::Call(rpcx_core::conn::CallError::ConnectionLost(_))), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !client.is_shutdown() {
            assert!(Instant::now() < deadline, "the client noticed the connection ended");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn deadline_expiry_fails_the_call_with_a_timeout() {
    bounded(async {
        let server = start(router()).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let t0 = Instant::now();
        let err = client
            .request("Arith", "Slow")
            .timeout(Duration::from_millis(100))
            .call::<_, Reply>(&Args { A: 5_000, B: 0 })
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        // The connection is still fine.
        let r: Reply = client.call("Arith", "Mul", &Args { A: 2, B: 2 }).await.unwrap();
        assert_eq!(r.C, 4);
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn auth_pass_and_fail() {
    bounded(async {
        let r = router()
            .auth(|_c, token| async move { if token == "s3cret" { Ok(()) } else { Err("auth failed".into()) } });
        let server = start(r).await;
        let good = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let r: Reply =
            good.request("Arith", "Mul").metadata("__AUTH", "s3cret").call(&Args { A: 2, B: 3 }).await.unwrap();
        assert_eq!(r.C, 6);
        let bad = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let err = bad
            .request("Arith", "Mul")
            .metadata("__AUTH", "nope")
            .call::<_, Reply>(&Args { A: 2, B: 3 })
            .await
            .unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("auth failed"));
        let t0 = Instant::now();
        while !bad.is_shutdown() {
            assert!(t0.elapsed() < Duration::from_secs(3), "server closed the connection after the auth failure");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The good connection is unaffected.
        let r: Reply =
            good.request("Arith", "Mul").metadata("__AUTH", "s3cret").call(&Args { A: 4, B: 3 }).await.unwrap();
        assert_eq!(r.C, 12);
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn server_push_reaches_the_client() {
    bounded(async {
        let server = start(router()).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let rx = client.take_push_receiver().unwrap();
        assert!(client.take_push_receiver().is_none());
        let r: Reply = client.call("Arith", "Push", &Args { A: 3, B: 0 }).await.unwrap();
        assert_eq!(r.C, 3);
        for i in 0..3 {
            let m = rx.recv().await.unwrap();
            assert_eq!((m.service_path_str().unwrap(), m.service_method_str().unwrap()), ("P", "N"));
            assert_eq!(m.payload, format!("push-{i}").into_bytes());
        }
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn heartbeat_keeps_an_idle_connection_past_the_read_timeout() {
    bounded(async {
        let server =
            Server::new(router()).read_timeout(Duration::from_millis(300)).bind("tcp@127.0.0.1:0").await.unwrap();
        let hb = ClientOptions::default().heartbeat(Duration::from_millis(50));
        let with_hb = Client::connect(server.address(), hb).await.unwrap();
        let without = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        // Three read timeouts of idleness (a scenario sleep, not a wait for a result).
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(!with_hb.is_shutdown(), "heartbeats kept it alive");
        // The idle one was closed by the read timeout: wait for the client to notice.
        let t0 = Instant::now();
        while !without.is_shutdown() {
            assert!(t0.elapsed() < Duration::from_secs(5), "the idle connection was not closed by the read timeout");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r: Reply = with_hb.call("Arith", "Mul", &Args { A: 5, B: 5 }).await.unwrap();
        assert_eq!(r.C, 25);
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn oneway_call_completes_and_the_connection_keeps_working() {
    bounded(async {
        let server = start(router()).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        client.oneway("Arith", "Mul", &Args { A: 1, B: 2 }).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 3 }).await.unwrap();
        assert_eq!(r.C, 9);
        server.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_sending_peer_does_not_disturb_other_connections() {
    bounded(async {
        let server = start(router()).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let mut raw = tokio::net::TcpStream::connect(server.local_addr().unwrap()).await.unwrap();
        raw.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), raw.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "the server closed the garbage connection without answering");
        // An oversized frame announcement is refused the same way, without allocation.
        let mut big = tokio::net::TcpStream::connect(server.local_addr().unwrap()).await.unwrap();
        big.write_all(&[0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), big.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
        for i in 0..100 {
            let r: Reply = client.call("Arith", "Mul", &Args { A: i, B: 2 }).await.unwrap();
            assert_eq!(r.C, i * 2);
        }
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_dropped_call_is_cancelled_and_does_not_stay_in_flight() {
    bounded(async {
        let server = start(router()).await;
        let opts = ClientOptions {
            connection: rpcx_core::conn::ClientConfig { max_in_flight: 4, ..Default::default() },
            ..Default::default()
        };
        let client = Client::connect(server.address(), opts).await.unwrap();
        // Fill the in-flight table with calls whose callers give up.
        for _ in 0..4 {
            let call = client.call::<_, Reply>("Arith", "Slow", &Args { A: 60_000, B: 0 });
            assert!(tokio::time::timeout(Duration::from_millis(20), call).await.is_err());
        }
        // Without the sweep this call would wait behind four abandoned slots forever.
        let r: Reply = client.request("Arith", "Mul").call(&Args { A: 2, B: 21 }).await.unwrap();
        assert_eq!(r.C, 42);
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn ip_deny_list_closes_matching_connections() {
    bounded(async {
        let deny = rpcx_tokio::service::IpFilter::deny(["127.0.0.0/8"]).unwrap();
        let server = start(router().hook(Arc::new(deny))).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let res =
            client.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: 1, B: 1 }).await;
        assert!(
            matches!(res, Err(Error::Call(rpcx_core::conn::CallError::ConnectionLost(_))) | Err(Error::Shutdown)),
            "{res:?}"
        );
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn in_process_memu_transport() {
    bounded(async {
        let name = format!("memu@loopback-{}", std::process::id());
        let server = Server::new(router()).bind(&name).await.unwrap();
        assert_eq!(server.address(), name);
        assert!(Server::new(router()).bind(&name).await.is_err(), "a name is bound once");
        let client = Client::connect(&name, ClientOptions::default()).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 7, B: 6 }).await.unwrap();
        assert_eq!(r.C, 42);
        server.close().await;
        assert!(Client::connect(&name, ClientOptions::default()).await.is_err(), "the name is free again");
    })
    .await;
}

/// A call waiting for room on a full connection (the server never answers the one in
/// flight) still fails at its deadline, callers queued behind it too, and `close_now`
/// is not held up by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_for_room_honour_their_deadline_and_close_now_gets_through() {
    bounded(async {
        let server = start(router()).await;
        let opts = ClientOptions {
            connection: rpcx_core::conn::ClientConfig { max_in_flight: 1, ..Default::default() },
            ..Default::default()
        };
        let client = Client::connect(server.address(), opts).await.unwrap();
        let stuck = client.go::<_, Reply>("Arith", "Slow", &Args { A: 30_000, B: 0 }).await.unwrap();
        let mut waiting = Vec::new();
        for i in 0..2000 {
            let c = client.clone();
            waiting.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = c
                    .request("Arith", "Mul")
                    .timeout(Duration::from_millis(300))
                    .call::<_, Reply>(&Args { A: i, B: 1 })
                    .await;
                (r, t0.elapsed())
            }));
        }
        for w in waiting {
            let (r, took) = w.await.unwrap();
            assert!(matches!(r, Err(Error::Call(rpcx_core::conn::CallError::TimedOut))), "{r:?}");
            assert!(took < Duration::from_secs(5), "a waiting call took {took:?}");
        }
        let t0 = Instant::now();
        client.close_now().await;
        assert!(stuck.await.is_err());
        assert!(t0.elapsed() < Duration::from_secs(5));
        server.close().await;
    })
    .await;
}

#[tokio::test]
async fn stats_count_calls_and_frames() {
    bounded(async {
        let server = start(router()).await;
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        assert_eq!(client.stats().calls, 0);
        for i in 0..3 {
            let r: Reply = client.call("Arith", "Mul", &Args { A: i, B: 2 }).await.unwrap();
            assert_eq!(r.C, i * 2);
        }
        let s = client.stats();
        assert_eq!(s.calls, 3, "{s:?}");
        assert_eq!(s.frames_in, 3, "{s:?}");
        assert_eq!(s.frames_out, 3, "{s:?}");
        server.close().await;
    })
    .await;
}
