//! The smol runtime over real loopback sockets: TCP, unix and TLS. Every scenario runs
//! twice: on a `smol::Executor` (two threads, everything spawned through a spawner for
//! it) and on async-std's executor (`async_std::task::block_on`, tasks spawned with
//! `async_std::task::spawn`).

use async_io::Timer;
use futures_lite::future;
use rpcx_smol::service::{Context, Router, Service};
use rpcx_smol::{Client, ClientOptions, Error, Server, ServerHandle, Spawner};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
                    Timer::after(Duration::from_millis(a.A as u64)).await;
                    Ok(Reply { C: a.A })
                }
            })
            .raw_method("Echo", |_c: Context, p: bytes::Bytes| async move { Ok(p) })
            .method("Push", |c: Context, a: Args| async move {
                for i in 0..a.A {
                    c.pusher().push("P", "N", Default::default(), format!("push-{i}")).map_err(|e| e.to_string())?;
                }
                Ok(Reply { C: a.A })
            }),
    )
}

/// Wait (bounded) until `started` reaches `n`.
async fn until_started(started: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "calls did not reach their handler");
        Timer::after(Duration::from_millis(2)).await;
    }
}

/// The executor a scenario runs on: how to spawn, and its name.
#[derive(Clone)]
struct Rt {
    spawner: Spawner,
    name: &'static str,
}

impl Rt {
    fn client_opts(&self) -> ClientOptions {
        ClientOptions { runtime: self.spawner.clone(), ..Default::default() }
    }

    fn server(&self, router: Router) -> Server {
        Server::new(router).runtime(self.spawner.clone())
    }

    async fn start(&self, router: Router) -> ServerHandle {
        self.server(router).bind("tcp@127.0.0.1:0").await.unwrap()
    }

    /// Spawn a task on this executor; the returned future yields its output (and fails
    /// the test if the task panicked).
    fn spawn<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> impl Future<Output = T> {
        let (tx, rx) = async_channel::bounded(1);
        self.spawner.spawn(async move {
            let _ = tx.send(fut.await).await;
        });
        async move { rx.recv().await.expect("spawned task panicked") }
    }
}

/// `None` if `fut` did not finish within `d`.
async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(d).await;
        None
    })
    .await
}

/// Bound every test body in time: nothing may hang.
async fn bounded(f: impl Future<Output = ()>) {
    timeout(Duration::from_secs(30), f).await.expect("test timed out");
}

/// Run a scenario on a two-thread `smol::Executor`.
fn on_smol<Fut: Future<Output = ()>>(scenario: impl FnOnce(Rt) -> Fut) {
    let ex = Arc::new(smol::Executor::new());
    let spawner = Spawner::new({
        let ex = ex.clone();
        move |task| ex.spawn(task).detach()
    });
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let helper = {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
    };
    smol::block_on(ex.run(bounded(scenario(Rt { spawner, name: "smol" }))));
    drop(stop);
    let _ = helper.join();
}

/// Run a scenario on async-std's executor.
fn on_async_std<Fut: Future<Output = ()>>(scenario: impl FnOnce(Rt) -> Fut) {
    let spawner = Spawner::new(|task| {
        async_std::task::spawn(task);
    });
    async_std::task::block_on(bounded(scenario(Rt { spawner, name: "async-std" })));
}

macro_rules! on_both_executors {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn smol() {
                super::on_smol(super::scenarios::$name);
            }
            #[test]
            fn async_std() {
                super::on_async_std(super::scenarios::$name);
            }
        }
    )*};
}

on_both_executors!(
    ten_thousand_calls_from_100_tasks_on_one_connection,
    unix_socket_round_trip,
    tls_round_trip_with_a_generated_certificate,
    graceful_shutdown_lets_in_flight_calls_complete_and_refuses_new_ones,
    server_killed_mid_call_fails_pending_calls_promptly,
    deadline_expiry_fails_the_call_with_a_timeout,
    auth_pass_and_fail,
    server_push_reaches_the_client,
    heartbeat_keeps_an_idle_connection_past_the_read_timeout,
    oneway_call_completes_and_the_connection_keeps_working,
    a_garbage_sending_peer_does_not_disturb_other_connections,
    a_dropped_call_is_cancelled_and_does_not_stay_in_flight,
    ip_deny_list_closes_matching_connections,
    dropping_every_client_handle_closes_the_connection,
    a_long_batch_of_oneway_requests_is_all_handled,
    calls_waiting_for_room_honour_their_deadline_and_close_now_gets_through,
);

/// The default spawner (async-global-executor) serves a program that runs inside
/// `smol::block_on` without any executor of its own.
#[test]
fn default_spawner_works_inside_smol_block_on() {
    smol::block_on(bounded(async {
        let server = Server::new(router()).bind("tcp@127.0.0.1:0").await.unwrap();
        let client = Client::connect(server.address(), ClientOptions::default()).await.unwrap();
        let r: Reply = client.call("Arith", "Slow", &Args { A: 20, B: 0 }).await.unwrap();
        assert_eq!(r.C, 20);
        client.close().await;
        server.shutdown(Duration::from_secs(1)).await;
    }));
}

#[test]
fn connect_to_a_closed_port_fails_and_a_black_hole_times_out() {
    smol::block_on(bounded(async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = Client::connect(&addr.to_string(), ClientOptions::default()).await.unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
        // 192.0.2.0/24 is TEST-NET-1: nothing answers (or the network is unreachable).
        let opts = ClientOptions { connect_timeout: Duration::from_millis(100), ..Default::default() };
        let t0 = Instant::now();
        let err = Client::connect("192.0.2.1:8972", opts).await.unwrap_err();
        assert!(matches!(err, Error::ConnectTimeout | Error::Connect(_)), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
    }));
}

mod scenarios {
    use super::*;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    pub(super) async fn ten_thousand_calls_from_100_tasks_on_one_connection(rt: Rt) {
        let server = rt.start(router()).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..100i64 {
            let c = client.clone();
            tasks.push(rt.spawn(async move {
                for i in 0..100i64 {
                    let r: Reply = c.call("Arith", "Mul", &Args { A: t, B: i }).await.unwrap();
                    assert_eq!(r.C, t * i);
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        server.shutdown(Duration::from_secs(1)).await;
    }

    pub(super) async fn unix_socket_round_trip(rt: Rt) {
        let path = std::env::temp_dir().join(format!("rpcx-smol-{}-{}.sock", rt.name, std::process::id()));
        let addr = format!("unix@{}", path.display());
        let server = rt.server(router()).bind(&addr).await.unwrap();
        let client = Client::connect(&addr, rt.client_opts()).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).await.unwrap();
        assert_eq!(r.C, 42);
        server.close().await;
        let _ = std::fs::remove_file(path);
    }

    pub(super) async fn tls_round_trip_with_a_generated_certificate(rt: Rt) {
        let (server_cfg, client_cfg) = rpcx_examples_common::self_signed_localhost_tls();
        let server = rt.server(router()).tls(server_cfg).bind("tcp@127.0.0.1:0").await.unwrap();
        let opts = ClientOptions {
            tls: Some(rpcx_smol::tls::TlsClient { config: client_cfg, server_name: "localhost".into() }),
            ..rt.client_opts()
        };
        let client = Client::connect(server.address(), opts).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 5 }).await.unwrap();
        assert_eq!(r.C, 15);
        // Concurrent calls with payloads spanning many TLS records (partial writes, and
        // records left inside the TLS session until flushed).
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let c = client.clone();
            tasks.push(rt.spawn(async move {
                let payload = vec![i; 300_000];
                let reply = c
                    .request("Arith", "Echo")
                    .serialize_type(rpcx_smol::SerializeType::NONE)
                    .call_raw(payload.clone())
                    .await
                    .unwrap();
                assert_eq!(reply.payload, payload);
            }));
        }
        for t in tasks {
            t.await;
        }
        // A plain-TCP client cannot talk to the TLS server.
        let plain = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let res =
            plain.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: 1, B: 1 }).await;
        assert!(res.is_err());
        server.close().await;
    }

    pub(super) async fn graceful_shutdown_lets_in_flight_calls_complete_and_refuses_new_ones(rt: Rt) {
        let started = Arc::new(AtomicUsize::new(0));
        let server = rt.start(router_counting(started.clone())).await;
        let addr = server.address().to_owned();
        let client = Client::connect(&addr, rt.client_opts()).await.unwrap();
        let mut pending = Vec::new();
        for _ in 0..10 {
            pending.push(client.go::<_, Reply>("Arith", "Slow", &Args { A: 300, B: 0 }).await.unwrap());
        }
        until_started(&started, 10).await;
        let shutdown = rt.spawn(server.shutdown(Duration::from_secs(5)));
        for p in pending {
            assert_eq!(p.await.unwrap().C, 300, "in-flight call completed during shutdown");
        }
        shutdown.await;
        assert!(Client::connect(&addr, rt.client_opts()).await.is_err(), "listener is closed");
        let after = client.call::<_, Reply>("Arith", "Mul", &Args { A: 1, B: 1 }).await;
        assert!(after.is_err(), "the old connection is closed");
    }

    pub(super) async fn server_killed_mid_call_fails_pending_calls_promptly(rt: Rt) {
        let started = Arc::new(AtomicUsize::new(0));
        let server = rt.start(router_counting(started.clone())).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let pending = client.go::<_, Reply>("Arith", "Slow", &Args { A: 10_000, B: 0 }).await.unwrap();
        until_started(&started, 1).await;
        let t0 = Instant::now();
        server.close().await;
        let err = pending.await.unwrap_err();
        assert!(matches!(err, Error::Call(rpcx_core::conn::CallError::ConnectionLost(_))), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        let t0 = Instant::now();
        while !client.is_shutdown() {
            assert!(t0.elapsed() < Duration::from_secs(2), "the client noticed the connection ended");
            Timer::after(Duration::from_millis(5)).await;
        }
    }

    pub(super) async fn deadline_expiry_fails_the_call_with_a_timeout(rt: Rt) {
        let server = rt.start(router()).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
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
    }

    pub(super) async fn auth_pass_and_fail(rt: Rt) {
        let r = router()
            .auth(|_c, token| async move { if token == "s3cret" { Ok(()) } else { Err("auth failed".into()) } });
        let server = rt.start(r).await;
        let good = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let r: Reply =
            good.request("Arith", "Mul").metadata("__AUTH", "s3cret").call(&Args { A: 2, B: 3 }).await.unwrap();
        assert_eq!(r.C, 6);
        let bad = Client::connect(server.address(), rt.client_opts()).await.unwrap();
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
            Timer::after(Duration::from_millis(10)).await;
        }
        // The good connection is unaffected.
        let r: Reply =
            good.request("Arith", "Mul").metadata("__AUTH", "s3cret").call(&Args { A: 4, B: 3 }).await.unwrap();
        assert_eq!(r.C, 12);
        server.close().await;
    }

    pub(super) async fn server_push_reaches_the_client(rt: Rt) {
        let server = rt.start(router()).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let rx = client.take_push_receiver().unwrap();
        assert!(client.take_push_receiver().is_none());
        let r: Reply = client.call("Arith", "Push", &Args { A: 3, B: 0 }).await.unwrap();
        assert_eq!(r.C, 3);
        for i in 0..3 {
            let m = rx.recv().await.unwrap();
            assert_eq!((m.service_path_str().unwrap(), m.service_method_str().unwrap()), ("P", "N"));
            assert_eq!(m.payload, format!("push-{i}").into_bytes());
        }
        assert_eq!(client.dropped_pushes(), 0);
        server.close().await;
    }

    pub(super) async fn heartbeat_keeps_an_idle_connection_past_the_read_timeout(rt: Rt) {
        let server =
            rt.server(router()).read_timeout(Duration::from_millis(300)).bind("tcp@127.0.0.1:0").await.unwrap();
        let hb = rt.client_opts().heartbeat(Duration::from_millis(50));
        let with_hb = Client::connect(server.address(), hb).await.unwrap();
        let without = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        // Three read timeouts of idleness (a scenario sleep, not a wait for a result).
        Timer::after(Duration::from_millis(900)).await;
        assert!(!with_hb.is_shutdown(), "heartbeats kept it alive");
        // The idle one was closed by the read timeout: wait for the client to notice.
        let t0 = Instant::now();
        while !without.is_shutdown() {
            assert!(t0.elapsed() < Duration::from_secs(5), "the idle connection was not closed by the read timeout");
            Timer::after(Duration::from_millis(10)).await;
        }
        let r: Reply = with_hb.call("Arith", "Mul", &Args { A: 5, B: 5 }).await.unwrap();
        assert_eq!(r.C, 25);
        server.close().await;
    }

    pub(super) async fn oneway_call_completes_and_the_connection_keeps_working(rt: Rt) {
        let server = rt.start(router()).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        client.oneway("Arith", "Mul", &Args { A: 1, B: 2 }).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 3 }).await.unwrap();
        assert_eq!(r.C, 9);
        server.close().await;
    }

    pub(super) async fn a_garbage_sending_peer_does_not_disturb_other_connections(rt: Rt) {
        let server = rt.start(router()).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let local = server.local_addr().unwrap();
        let mut raw = async_io::Async::<std::net::TcpStream>::connect(local).await.unwrap();
        raw.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = timeout(Duration::from_secs(2), raw.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "the server closed the garbage connection without answering");
        // An oversized frame announcement is refused the same way, without allocation.
        let mut big = async_io::Async::<std::net::TcpStream>::connect(local).await.unwrap();
        big.write_all(&[0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let n = timeout(Duration::from_secs(2), big.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0);
        for i in 0..100 {
            let r: Reply = client.call("Arith", "Mul", &Args { A: i, B: 2 }).await.unwrap();
            assert_eq!(r.C, i * 2);
        }
        server.close().await;
    }

    pub(super) async fn a_dropped_call_is_cancelled_and_does_not_stay_in_flight(rt: Rt) {
        let server = rt.start(router()).await;
        let opts = ClientOptions {
            connection: rpcx_core::conn::ClientConfig { max_in_flight: 4, ..Default::default() },
            ..rt.client_opts()
        };
        let client = Client::connect(server.address(), opts).await.unwrap();
        // Fill the in-flight table with calls whose callers give up.
        for _ in 0..4 {
            let call = client.call::<_, Reply>("Arith", "Slow", &Args { A: 60_000, B: 0 });
            assert!(timeout(Duration::from_millis(20), call).await.is_none());
        }
        // Without the sweep this call would wait behind four abandoned slots forever.
        let r: Reply = client.request("Arith", "Mul").call(&Args { A: 2, B: 21 }).await.unwrap();
        assert_eq!(r.C, 42);
        server.close().await;
    }

    pub(super) async fn ip_deny_list_closes_matching_connections(rt: Rt) {
        let deny = rpcx_smol::service::IpFilter::deny(["127.0.0.0/8"]).unwrap();
        let server = rt.start(router().hook(Arc::new(deny))).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let res =
            client.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: 1, B: 1 }).await;
        assert!(
            matches!(res, Err(Error::Call(rpcx_core::conn::CallError::ConnectionLost(_))) | Err(Error::Shutdown)),
            "{res:?}"
        );
        server.close().await;
    }

    pub(super) async fn dropping_every_client_handle_closes_the_connection(rt: Rt) {
        // A server hook counts closed connections.
        struct Closed(async_channel::Sender<()>);
        impl rpcx_smol::service::ServerHooks for Closed {
            fn conn_closed(&self, _peer: &rpcx_smol::service::Peer) {
                let _ = self.0.try_send(());
            }
        }
        let (tx, rx) = async_channel::bounded(4);
        let server = rt.start(router().hook(Arc::new(Closed(tx)))).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 2, B: 2 }).await.unwrap();
        assert_eq!(r.C, 4);
        drop(client);
        timeout(Duration::from_secs(2), rx.recv()).await.expect("connection closed").unwrap();
        server.close().await;
    }

    /// A call waiting for room on a full connection (the server never answers the one
    /// in flight) still fails at its deadline, callers queued behind it too, and
    /// `close_now` is not held up by them.
    pub(super) async fn calls_waiting_for_room_honour_their_deadline_and_close_now_gets_through(rt: Rt) {
        let server = rt.server(router()).bind("tcp@127.0.0.1:0").await.unwrap();
        let opts = ClientOptions {
            connection: rpcx_smol::core::conn::ClientConfig { max_in_flight: 1, ..Default::default() },
            ..rt.client_opts()
        };
        let client = Client::connect(server.address(), opts).await.unwrap();
        let stuck = client.go::<_, Reply>("Arith", "Slow", &Args { A: 30_000, B: 0 }).await.unwrap();
        let (done_tx, done_rx) = async_channel::unbounded();
        for i in 0..2000 {
            let c = client.clone();
            let done = done_tx.clone();
            rt.spawner.spawn(async move {
                let t0 = Instant::now();
                let r = c
                    .request("Arith", "Mul")
                    .timeout(Duration::from_millis(300))
                    .call::<_, Reply>(&Args { A: i, B: 1 })
                    .await;
                let _ = done.send((r.map(|r| r.C), t0.elapsed())).await;
            });
        }
        for _ in 0..2000 {
            let (r, took) = done_rx.recv().await.unwrap();
            assert!(matches!(r, Err(Error::Call(rpcx_smol::core::conn::CallError::TimedOut))), "{r:?}");
            assert!(took < Duration::from_secs(5), "a waiting call took {took:?}");
        }
        let t0 = Instant::now();
        client.close_now().await;
        assert!(stuck.await.is_err());
        assert!(t0.elapsed() < Duration::from_secs(5));
        server.close().await;
    }

    pub(super) async fn a_long_batch_of_oneway_requests_is_all_handled(rt: Rt) {
        // Oneway requests produce no output, so the server's per-write event budget runs
        // out with nothing to write: it must still go on handling the batch.
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let r = router().service(Service::new("Log").method("Add", move |_c: Context, a: Args| {
            log.lock().unwrap().push(a.A);
            async move { Ok(Reply { C: a.A }) }
        }));
        let server = rt.start(r).await;
        let client = Client::connect(server.address(), rt.client_opts()).await.unwrap();
        let mut sends = Vec::new();
        for i in 0..500 {
            let c = client.clone();
            sends.push(rt.spawn(async move { c.oneway("Log", "Add", &Args { A: i, B: 0 }).await.unwrap() }));
        }
        for s in sends {
            s.await;
        }
        // Every oneway frame was handed out before this call's, so the server has handled
        // them all when it answers.
        let r: Reply = client.call("Log", "Add", &Args { A: 500, B: 0 }).await.unwrap();
        assert_eq!(r.C, 500);
        let mut seen = seen.lock().unwrap().clone();
        assert_eq!(seen.pop(), Some(500));
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<i64>>());
        server.close().await;
    }
}
