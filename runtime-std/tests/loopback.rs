//! The std runtime over real loopback sockets: TCP, unix and TLS. Mirrors
//! `rpcx-tokio`'s `tests/loopback.rs`, with threads instead of tasks.

use rpcx_std::core::conn::CallError;
use rpcx_std::service::{Context, Peer, Router, ServerHooks, Service};
use rpcx_std::{Client, ClientOptions, Error, Server, ServerHandle};
use std::future::Future;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::thread;
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

/// A runtime-neutral timer for handlers: a helper thread sleeps, then wakes the task.
/// (Handlers on the std server cannot use tokio's timers.)
fn sleep(d: Duration) -> impl Future<Output = ()> + Send {
    let state: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
    let s = state.clone();
    thread::spawn(move || {
        thread::sleep(d);
        let mut g = s.lock().unwrap();
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    });
    std::future::poll_fn(move |cx| {
        let mut g = state.lock().unwrap();
        if g.0 {
            Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    })
}

/// `Arith.Mul`, `Arith.Slow` (waits `A` ms; counts its starts in `started`), `Arith.Push`.
fn router_counting(started: Arc<AtomicUsize>) -> Router {
    Router::new().service(
        Service::new("Arith")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
            .method("Slow", move |_c: Context, a: Args| {
                started.fetch_add(1, Ordering::SeqCst);
                async move {
                    sleep(Duration::from_millis(a.A as u64)).await;
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

fn router() -> Router {
    router_counting(Arc::default())
}

fn start(router: Router) -> ServerHandle {
    Server::new(router).bind("tcp@127.0.0.1:0").unwrap()
}

/// Bound every test body in time: nothing may hang.
fn bounded(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let body = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => body.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => std::panic::resume_unwind(body.join().unwrap_err()),
        Err(RecvTimeoutError::Timeout) => panic!("test timed out"),
    }
}

/// Poll `cond` until it holds, failing after `within`.
fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ten_thousand_calls_from_100_threads_on_one_connection() {
    bounded(|| {
        let server = start(router());
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let threads: Vec<_> = (0..100i64)
            .map(|t| {
                let c = client.clone();
                thread::spawn(move || {
                    for i in 0..100i64 {
                        let r: Reply = c.call("Arith", "Mul", &Args { A: t, B: i }).unwrap();
                        assert_eq!(r.C, t * i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        server.shutdown(Duration::from_secs(1));
    });
}

#[test]
fn unix_socket_round_trip() {
    bounded(|| {
        let path = std::env::temp_dir().join(format!("rpcx-std-{}.sock", std::process::id()));
        let addr = format!("unix@{}", path.display());
        let server = Server::new(router()).bind(&addr).unwrap();
        assert_eq!(server.address(), addr);
        let client = Client::connect(&addr, ClientOptions::default()).unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 6, B: 7 }).unwrap();
        assert_eq!(r.C, 42);
        // A waiting handler and a push work over unix sockets too.
        let rx = client.take_push_receiver().unwrap();
        let r: Reply = client.call("Arith", "Slow", &Args { A: 10, B: 0 }).unwrap();
        assert_eq!(r.C, 10);
        let _: Reply = client.call("Arith", "Push", &Args { A: 1, B: 0 }).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(2)).unwrap().payload, "push-0".as_bytes());
        server.close();
        assert!(client.wait_shutdown(Duration::from_secs(2)), "the server's close reached the client");
        let _ = std::fs::remove_file(path);
    });
}

/// rpcx over WebSocket over TLS (`wss@`) and over an HTTP CONNECT inside TLS, to one TLS
/// port; `wss@` without TLS settings is a clear error.
#[test]
fn wss_and_tls_connect_tunnels() {
    bounded(|| {
        let (server_cfg, client_tls) = tls_pair();
        let server = Server::new(router()).tls(server_cfg).bind("wss@127.0.0.1:0").unwrap();
        assert!(server.address().starts_with("wss@"), "{}", server.address());
        let opts = || ClientOptions { tls: Some(client_tls.clone()), ..Default::default() };
        let client = Client::connect(server.address(), opts()).unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 5 }).unwrap();
        assert_eq!(r.C, 15);
        let port = server.local_addr().unwrap().port();
        let tunnel = Client::connect(&format!("http@127.0.0.1:{port}"), opts()).unwrap();
        let r: Reply = tunnel.call("Arith", "Mul", &Args { A: 4, B: 5 }).unwrap();
        assert_eq!(r.C, 20);
        let err = Client::connect(server.address(), ClientOptions::default()).unwrap_err();
        assert!(err.to_string().contains("needs TLS settings"), "{err}");
        server.close();
    });
}

#[test]
fn tls_round_trip_with_a_generated_certificate() {
    bounded(|| {
        let (server_cfg, client_tls) = tls_pair();
        let server = Server::new(router()).tls(server_cfg).bind("tcp@127.0.0.1:0").unwrap();
        let opts = ClientOptions { tls: Some(client_tls), ..Default::default() };
        let client = Client::connect(server.address(), opts).unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 5 }).unwrap();
        assert_eq!(r.C, 15);
        // Many concurrent calls and a payload larger than one TLS record.
        let threads: Vec<_> = (0..8i64)
            .map(|t| {
                let c = client.clone();
                thread::spawn(move || {
                    for i in 0..50i64 {
                        let r: Reply = c.call("Arith", "Mul", &Args { A: t, B: i }).unwrap();
                        assert_eq!(r.C, t * i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let big = vec![7u8; 100_000];
        let echo: Result<Vec<u8>, _> =
            client.request("Arith", "Nope").timeout(Duration::from_secs(2)).call::<_, Vec<u8>>(&big);
        assert_eq!(echo.unwrap_err().remote().map(|e| e.text.as_str()), Some("rpcx: can't find method Nope"));
        // A plain-TCP client cannot talk to the TLS server.
        let plain = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let res = plain.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: 1, B: 1 });
        assert!(res.is_err());
        server.close();
    });
}

#[test]
fn graceful_shutdown_lets_in_flight_calls_complete_and_refuses_new_ones() {
    bounded(|| {
        let started = Arc::new(AtomicUsize::new(0));
        let server = start(router_counting(started.clone()));
        let addr = server.address().to_owned();
        let client = Client::connect(&addr, ClientOptions::default()).unwrap();
        let pending: Vec<_> =
            (0..10).map(|_| client.go::<_, Reply>("Arith", "Slow", &Args { A: 300, B: 0 }).unwrap()).collect();
        eventually(Duration::from_secs(5), "all ten calls reached their handler", || {
            started.load(Ordering::SeqCst) == 10
        });
        let shutdown = thread::spawn(move || server.shutdown(Duration::from_secs(5)));
        for p in pending {
            assert_eq!(p.wait().unwrap().C, 300, "in-flight call completed during shutdown");
        }
        shutdown.join().unwrap();
        assert!(Client::connect(&addr, ClientOptions::default()).is_err(), "listener is closed");
        let after = client.call::<_, Reply>("Arith", "Mul", &Args { A: 1, B: 1 });
        assert!(after.is_err(), "the old connection is closed");
        assert!(client.wait_shutdown(Duration::from_secs(2)));
    });
}

#[test]
fn server_killed_mid_call_fails_pending_calls_promptly() {
    bounded(|| {
        let started = Arc::new(AtomicUsize::new(0));
        let server = start(router_counting(started.clone()));
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let pending = client.go::<_, Reply>("Arith", "Slow", &Args { A: 10_000, B: 0 }).unwrap();
        eventually(Duration::from_secs(5), "the call reached its handler", || started.load(Ordering::SeqCst) == 1);
        let t0 = Instant::now();
        server.close();
        let err = pending.wait().unwrap_err();
        assert!(matches!(err, Error::Call(CallError::ConnectionLost(_))), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(client.wait_shutdown(Duration::from_secs(2)));
        let after = client.call::<_, Reply>("Arith", "Mul", &Args { A: 1, B: 1 });
        assert!(matches!(after, Err(Error::Shutdown)), "{after:?}");
    });
}

#[test]
fn deadline_expiry_fails_the_call_with_a_timeout() {
    bounded(|| {
        let server = start(router());
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let t0 = Instant::now();
        let err = client
            .request("Arith", "Slow")
            .timeout(Duration::from_millis(100))
            .call::<_, Reply>(&Args { A: 5_000, B: 0 })
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(2), "{took:?}");
        // The client-wide default applies too.
        let opts = ClientOptions { call_timeout: Some(Duration::from_millis(50)), ..Default::default() };
        let short = Client::connect(server.address(), opts).unwrap();
        assert!(short.call::<_, Reply>("Arith", "Slow", &Args { A: 5_000, B: 0 }).unwrap_err().is_timeout());
        // The connection is still fine.
        let r: Reply = client.call("Arith", "Mul", &Args { A: 2, B: 2 }).unwrap();
        assert_eq!(r.C, 4);
        server.close();
    });
}

#[test]
fn auth_pass_and_fail() {
    bounded(|| {
        let r = router()
            .auth(|_c, token| async move { if token == "s3cret" { Ok(()) } else { Err("auth failed".into()) } });
        let server = start(r);
        let good = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let r: Reply = good.request("Arith", "Mul").metadata("__AUTH", "s3cret").call(&Args { A: 2, B: 3 }).unwrap();
        assert_eq!(r.C, 6);
        let bad = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let err =
            bad.request("Arith", "Mul").metadata("__AUTH", "nope").call::<_, Reply>(&Args { A: 2, B: 3 }).unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("auth failed"));
        assert!(bad.wait_shutdown(Duration::from_secs(3)), "server closed the connection after the auth failure");
        // The good connection is unaffected.
        let r: Reply = good.request("Arith", "Mul").metadata("__AUTH", "s3cret").call(&Args { A: 4, B: 3 }).unwrap();
        assert_eq!(r.C, 12);
        server.close();
    });
}

#[test]
fn server_push_reaches_the_client() {
    bounded(|| {
        let server = start(router());
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let rx = client.take_push_receiver().unwrap();
        assert!(client.take_push_receiver().is_none());
        let r: Reply = client.call("Arith", "Push", &Args { A: 3, B: 0 }).unwrap();
        assert_eq!(r.C, 3);
        for i in 0..3 {
            let m = rx.recv_timeout(Duration::from_secs(2)).unwrap();
            assert_eq!((m.service_path_str().unwrap(), m.service_method_str().unwrap()), ("P", "N"));
            assert_eq!(m.payload, format!("push-{i}").into_bytes());
        }
        assert_eq!(client.dropped_pushes(), 0);
        server.close();
        // The receiver ends when the connection ends (well before the 30 s bound).
        let t0 = Instant::now();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), None);
        assert!(t0.elapsed() < Duration::from_secs(10), "ended, not timed out: {:?}", t0.elapsed());
    });
}

#[test]
fn a_full_push_receiver_drops_the_newest_pushes_and_counts_them() {
    bounded(|| {
        let server = start(router());
        let opts = ClientOptions { push_capacity: 2, ..Default::default() };
        let client = Client::connect(server.address(), opts).unwrap();
        let rx = client.take_push_receiver().unwrap();
        let _: Reply = client.call("Arith", "Push", &Args { A: 5, B: 0 }).unwrap();
        eventually(Duration::from_secs(2), "three pushes dropped", || client.dropped_pushes() == 3);
        assert_eq!(rx.recv().unwrap().payload, "push-0".as_bytes(), "the oldest are kept");
        assert_eq!(rx.recv().unwrap().payload, "push-1".as_bytes());
        assert!(rx.try_recv().is_none());
        // The connection is not stalled by the full receiver.
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 3 }).unwrap();
        assert_eq!(r.C, 9);
        server.close();
    });
}

#[test]
fn heartbeat_keeps_an_idle_connection_past_the_read_timeout() {
    bounded(|| {
        let read_timeout = Duration::from_millis(300);
        let server = Server::new(router()).read_timeout(read_timeout).bind("tcp@127.0.0.1:0").unwrap();
        let hb = ClientOptions::default().heartbeat(Duration::from_millis(50));
        let t0 = Instant::now();
        let with_hb = Client::connect(server.address(), hb).unwrap();
        let without = Client::connect(server.address(), ClientOptions::default()).unwrap();
        assert!(without.wait_shutdown(Duration::from_secs(3)), "the idle one was closed by the read timeout");
        assert!(t0.elapsed() >= read_timeout);
        // Keep idling well past the read timeout (this asserts that nothing happens, so
        // it has to take time).
        thread::sleep(2 * read_timeout);
        assert!(!with_hb.is_shutdown(), "heartbeats kept it alive");
        let r: Reply = with_hb.call("Arith", "Mul", &Args { A: 5, B: 5 }).unwrap();
        assert_eq!(r.C, 25);
        server.close();
    });
}

#[test]
fn oneway_call_completes_and_the_connection_keeps_working() {
    bounded(|| {
        let server = start(router());
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        client.oneway("Arith", "Mul", &Args { A: 1, B: 2 }).unwrap();
        let r: Reply = client.call("Arith", "Mul", &Args { A: 3, B: 3 }).unwrap();
        assert_eq!(r.C, 9);
        server.close();
    });
}

#[test]
fn a_garbage_sending_peer_does_not_disturb_other_connections() {
    bounded(|| {
        let server = start(router());
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let mut raw = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        raw.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = raw.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the server closed the garbage connection without answering");
        // An oversized frame announcement is refused the same way, without allocation.
        let mut big = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        big.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        big.write_all(&[0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap();
        let n = big.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0);
        for i in 0..100 {
            let r: Reply = client.call("Arith", "Mul", &Args { A: i, B: 2 }).unwrap();
            assert_eq!(r.C, i * 2);
        }
        server.close();
    });
}

#[test]
fn a_dropped_call_is_cancelled_and_does_not_stay_in_flight() {
    bounded(|| {
        let started = Arc::new(AtomicUsize::new(0));
        let server = start(router_counting(started.clone()));
        let opts = ClientOptions {
            connection: rpcx_std::core::conn::ClientConfig { max_in_flight: 4, ..Default::default() },
            ..Default::default()
        };
        let client = Client::connect(server.address(), opts).unwrap();
        // Fill the in-flight table with calls whose callers give up: two time out
        // waiting, two are dropped once the server has them.
        for _ in 0..2 {
            let call = client.go::<_, Reply>("Arith", "Slow", &Args { A: 60_000, B: 0 }).unwrap();
            let err = call.wait_timeout(Duration::from_millis(20)).unwrap_err();
            assert!(err.is_timeout(), "{err:?}");
        }
        let held: Vec<_> =
            (0..2).map(|_| client.go::<_, Reply>("Arith", "Slow", &Args { A: 60_000, B: 0 }).unwrap()).collect();
        eventually(Duration::from_secs(5), "four calls in their handlers", || started.load(Ordering::SeqCst) == 4);
        drop(held);
        // Without the cancellation this call would wait behind four abandoned slots.
        let t0 = Instant::now();
        let r: Reply = client.request("Arith", "Mul").call(&Args { A: 2, B: 21 }).unwrap();
        assert_eq!(r.C, 42);
        assert!(t0.elapsed() < Duration::from_millis(500), "cancelled at once, not by the sweep");
        // A caller that goes away before the connection even took its call is swept.
        for _ in 0..8 {
            drop(client.go::<_, Reply>("Arith", "Slow", &Args { A: 60_000, B: 0 }).unwrap());
        }
        let r: Reply =
            client.request("Arith", "Mul").timeout(Duration::from_secs(5)).call(&Args { A: 1, B: 2 }).unwrap();
        assert_eq!(r.C, 2);
        server.close();
    });
}

#[test]
fn a_full_connection_defers_calls_until_there_is_room() {
    bounded(|| {
        let server = start(router());
        let opts = ClientOptions {
            connection: rpcx_std::core::conn::ClientConfig { max_in_flight: 2, ..Default::default() },
            ..Default::default()
        };
        let client = Client::connect(server.address(), opts).unwrap();
        let pending: Vec<_> =
            (0..6).map(|i| client.go::<_, Reply>("Arith", "Slow", &Args { A: 50 + i, B: 0 }).unwrap()).collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.wait().unwrap().C, 50 + i as i64);
        }
        // A deferred call still honours its deadline.
        let _slow: Vec<_> =
            (0..2).map(|_| client.go::<_, Reply>("Arith", "Slow", &Args { A: 2_000, B: 0 }).unwrap()).collect();
        let err = client
            .request("Arith", "Mul")
            .timeout(Duration::from_millis(100))
            .call::<_, Reply>(&Args { A: 1, B: 1 })
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        server.close();
    });
}

#[test]
fn close_now_fails_in_flight_calls_and_close_drains_them() {
    bounded(|| {
        let started = Arc::new(AtomicUsize::new(0));
        let server = start(router_counting(started.clone()));
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let pending = client.go::<_, Reply>("Arith", "Slow", &Args { A: 5_000, B: 0 }).unwrap();
        eventually(Duration::from_secs(5), "the call reached its handler", || started.load(Ordering::SeqCst) == 1);
        client.close_now();
        assert!(client.is_closing());
        let err = pending.wait().unwrap_err();
        assert!(matches!(err, Error::Call(CallError::ConnectionLost(_))), "{err:?}");
        assert!(client.wait_shutdown(Duration::from_secs(2)));

        let graceful = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let pending = graceful.go::<_, Reply>("Arith", "Slow", &Args { A: 100, B: 0 }).unwrap();
        graceful.close();
        assert!(matches!(graceful.call::<_, Reply>("Arith", "Mul", &Args { A: 1, B: 1 }), Err(Error::Shutdown)));
        assert_eq!(pending.wait().unwrap().C, 100, "a graceful close lets the call finish");
        assert!(graceful.wait_shutdown(Duration::from_secs(2)));
        server.close();
    });
}

#[derive(Default)]
struct Counting {
    accepted: AtomicUsize,
    closed: AtomicUsize,
    heartbeats: AtomicUsize,
    pre_write: AtomicUsize,
    post_write: AtomicUsize,
}

impl ServerHooks for Counting {
    fn conn_accepted(&self, _peer: &Peer, _now: std::time::Instant) -> Result<(), String> {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn conn_closed(&self, _peer: &Peer) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn heartbeat(&self, _peer: &Peer) {
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
    }
    fn pre_write_response(&self, _ctx: &Context, response: &mut rpcx_std::core::conn::Response) {
        self.pre_write.fetch_add(1, Ordering::SeqCst);
        response.metadata.insert("hooked", "yes");
    }
    fn post_write_response(&self, _ctx: &Context, _response: &rpcx_std::core::conn::Response) {
        self.post_write.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn connection_and_response_hooks_run() {
    bounded(|| {
        let hooks = Arc::new(Counting::default());
        let server = start(router().hook(hooks.clone()));
        let opts = ClientOptions::default().heartbeat(Duration::from_millis(20));
        let client = Client::connect(server.address(), opts).unwrap();
        let (r, meta): (Reply, _) = client.request("Arith", "Mul").call_with_metadata(&Args { A: 2, B: 5 }).unwrap();
        assert_eq!(r.C, 10);
        assert_eq!(meta.get_str("hooked").unwrap(), Some("yes"));
        client.oneway("Arith", "Mul", &Args { A: 1, B: 1 }).unwrap();
        eventually(Duration::from_secs(2), "a heartbeat arrived", || hooks.heartbeats.load(Ordering::SeqCst) > 0);
        client.close();
        eventually(Duration::from_secs(2), "the connection closed", || hooks.closed.load(Ordering::SeqCst) == 1);
        assert_eq!(hooks.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(hooks.pre_write.load(Ordering::SeqCst), 1, "not for oneway requests");
        assert_eq!(hooks.post_write.load(Ordering::SeqCst), 1);
        server.close();
    });
}

#[test]
fn ip_deny_list_closes_matching_connections() {
    bounded(|| {
        let deny = rpcx_std::service::IpFilter::deny(["127.0.0.0/8"]).unwrap();
        let server = start(router().hook(Arc::new(deny)));
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let res = client.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: 1, B: 1 });
        assert!(matches!(res, Err(Error::Call(CallError::ConnectionLost(_))) | Err(Error::Shutdown)), "{res:?}");
        server.close();
    });
}

#[test]
fn dropping_the_last_client_closes_the_connection() {
    bounded(|| {
        let hooks = Arc::new(Counting::default());
        let server = start(router().hook(hooks.clone()));
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let clone = client.clone();
        drop(client);
        let r: Reply = clone.call("Arith", "Mul", &Args { A: 7, B: 6 }).unwrap();
        assert_eq!(r.C, 42, "a remaining clone keeps the connection");
        drop(clone);
        eventually(Duration::from_secs(2), "the server saw the close", || hooks.closed.load(Ordering::SeqCst) == 1);
        server.close();
    });
}

#[test]
fn connect_errors_are_reported() {
    bounded(|| {
        let err = Client::connect("quic@127.0.0.1:1", ClientOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Addr(_)), "{err:?}");
        // Bind and drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = Client::connect(&format!("127.0.0.1:{port}"), ClientOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
        let err = Client::connect("unix@/nonexistent/rpcx.sock", ClientOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
    });
}

#[test]
fn a_peer_that_stops_reading_does_not_stall_deadlines_or_close_now() {
    bounded(|| {
        // A "server" that accepts and then never reads: the client's writes stall once
        // the socket buffers are full.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (keep_tx, keep_rx) = mpsc::channel();
        let acceptor = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let _ = keep_rx.recv(); // hold the socket open, unread
            drop(s);
        });
        let client = Client::connect(&addr.to_string(), ClientOptions::default()).unwrap();
        let big = vec![0u8; 1 << 20];
        let flood: Vec<_> = (0..24).map(|_| client.go::<_, Reply>("Arith", "Mul", &big).unwrap()).collect();
        let t0 = Instant::now();
        let err = client
            .request("Arith", "Mul")
            .timeout(Duration::from_millis(200))
            .call::<_, Reply>(&Args { A: 1, B: 1 })
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(flood);
        client.close_now();
        assert!(client.wait_shutdown(Duration::from_secs(2)), "close_now ended the stalled connection");
        keep_tx.send(()).unwrap();
        acceptor.join().unwrap();
    });
}

#[test]
fn a_client_that_stops_reading_is_cut_off_by_the_write_timeout() {
    bounded(|| {
        let hooks = Arc::new(Counting::default());
        let echo = Service::new("Echo").raw_method("Raw", |_c: Context, p: bytes::Bytes| async move { Ok(p) });
        let server = Server::new(router().service(echo).hook(hooks.clone()))
            .write_timeout(Duration::from_millis(200))
            .bind("tcp@127.0.0.1:0")
            .unwrap();
        // A raw client that sends large requests and never reads the echoes.
        let mut msg = rpcx_std::Message::request(rpcx_std::SerializeType::NONE, 0, "Echo", "Raw");
        msg.payload = vec![0u8; 1 << 20].into();
        let mut frame = Vec::new();
        msg.encode(&Default::default(), &mut frame).unwrap();
        let mut raw = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        raw.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let writer = thread::spawn(move || {
            for _ in 0..64 {
                if raw.write_all(&frame).is_err() {
                    break;
                }
            }
            raw // kept open (and unread) until the test is done
        });
        eventually(Duration::from_secs(10), "the server gave up on the stalled connection", || {
            hooks.closed.load(Ordering::SeqCst) == 1
        });
        drop(writer.join().unwrap());
        server.close();
    });
}

#[test]
fn a_server_at_max_in_flight_stops_reading_and_resumes_when_handlers_finish() {
    bounded(|| {
        let started = Arc::new(AtomicUsize::new(0));
        let server = Server::new(router_counting(started.clone())).max_in_flight(2).bind("tcp@127.0.0.1:0").unwrap();
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let calls: Vec<_> =
            (0..20).map(|i| client.go::<_, Reply>("Arith", "Slow", &Args { A: 20 + i, B: 0 }).unwrap()).collect();
        // Only two handlers may run at once: the server reads the rest as they finish.
        eventually(Duration::from_secs(2), "two handlers started", || started.load(Ordering::SeqCst) >= 2);
        thread::sleep(Duration::from_millis(10));
        assert!(started.load(Ordering::SeqCst) <= 2, "more than max_in_flight handlers ran at once");
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.wait().unwrap().C, 20 + i as i64);
        }
        assert_eq!(started.load(Ordering::SeqCst), 20);
        server.close();
    });
}

#[test]
fn a_server_at_max_in_flight_pushes_back_on_the_sender() {
    bounded(|| {
        let server = Server::new(router()).max_in_flight(1).bind("tcp@127.0.0.1:0").unwrap();
        // A raw client: one slow call takes the only slot, then it floods requests. The
        // server must stop reading (so TCP fills up and the sender blocks) rather than
        // buffer everything the peer sends.
        let frame = |method: &'static str, a: i64| {
            let mut msg = rpcx_std::Message::request(rpcx_std::SerializeType::JSON, 0, "Arith", method);
            msg.payload = format!("{{\"A\":{a},\"B\":1}}").into_bytes().into();
            let mut frame = Vec::new();
            msg.encode(&Default::default(), &mut frame).unwrap();
            frame
        };
        let mut raw = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        raw.write_all(&frame("Slow", 3000)).unwrap();
        let mut flood = Vec::new();
        while flood.len() < 1 << 20 {
            flood.extend_from_slice(&frame("Mul", 7));
        }
        raw.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut sent = 0usize;
        let limit = 64usize << 20;
        while sent < limit {
            match raw.write(&flood) {
                Ok(n) => sent += n,
                Err(_) => break, // the write timed out: the server pushes back
            }
        }
        assert!(sent < limit, "the server kept reading {sent} bytes while at its in-flight limit");
        drop(raw);
        server.close();
    });
}

#[test]
fn pushes_from_a_handler_that_waits_arrive_before_its_reply() {
    bounded(|| {
        let router =
            Router::new().service(Service::new("Arith").method("PushLater", |c: Context, a: Args| async move {
                for i in 0..a.A {
                    sleep(Duration::from_millis(2)).await;
                    c.pusher().push("P", "N", Default::default(), format!("push-{i}")).map_err(|e| e.to_string())?;
                }
                Ok(Reply { C: a.A })
            }));
        let server = start(router);
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let rx = client.take_push_receiver().unwrap();
        let r: Reply = client.call("Arith", "PushLater", &Args { A: 5, B: 0 }).unwrap();
        assert_eq!(r.C, 5);
        // Every push was written before the reply, so all are here already.
        for i in 0..5 {
            assert_eq!(rx.try_recv().unwrap().payload, format!("push-{i}").into_bytes());
        }
        server.close();
    });
}

#[test]
fn one_thread_keeps_many_raw_calls_in_flight() {
    bounded(|| {
        let router = Router::new()
            .service(Service::new("Echo").raw_method("Raw", |_c: Context, p: bytes::Bytes| async move { Ok(p) }));
        let server = start(router);
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        let calls: Vec<_> = (0..1000u32)
            .map(|i| {
                client
                    .request("Echo", "Raw")
                    .serialize_type(rpcx_std::SerializeType::NONE)
                    .go_raw(i.to_be_bytes().to_vec())
                    .unwrap()
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.wait_raw().unwrap().payload.as_ref(), (i as u32).to_be_bytes());
        }
        server.close();
    });
}

/// A fresh connection's first call, started on another thread while the connection's
/// own threads are still starting, goes out at once. (A race here once left a request
/// unwritten until its deadline, about one connection in a few hundred.)
#[test]
fn the_first_call_on_each_of_many_fresh_connections_goes_out_at_once() {
    bounded(|| {
        let server = start(router());
        for i in 0..500 {
            let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
            let c = client.clone();
            let t0 = Instant::now();
            let r = thread::spawn(move || {
                c.request("Arith", "Mul").timeout(Duration::from_secs(2)).call::<_, Reply>(&Args { A: i, B: 2 })
            })
            .join()
            .unwrap();
            assert_eq!(r.unwrap().C, 2 * i);
            assert!(t0.elapsed() < Duration::from_secs(1), "connection {i}: the call took {:?}", t0.elapsed());
            client.close();
        }
        server.close();
    });
}

/// TLS configs for `localhost` with a fresh self-signed certificate.
fn tls_pair() -> (Arc<rustls::ServerConfig>, rpcx_std::tls::TlsClient) {
    let (server, client) = rpcx_examples_common::self_signed_localhost_tls();
    (server, rpcx_std::tls::TlsClient { config: client, server_name: "localhost".into() })
}

/// Many large requests and responses at once overflow the socket buffers both ways, so
/// writes are partial and handed to the housekeeping threads; every byte must still
/// arrive, in order (and, under TLS, as intact records).
#[test]
fn many_large_concurrent_echoes_arrive_intact_over_tcp_and_tls() {
    bounded(|| {
        let echo = || {
            Router::new()
                .service(Service::new("Echo").raw_method("Raw", |_c: Context, p: bytes::Bytes| async move { Ok(p) }))
        };
        let (server_tls, client_tls) = tls_pair();
        let plain = start(echo());
        let tls = Server::new(echo()).tls(server_tls).bind("tcp@127.0.0.1:0").unwrap();
        for (server, opts) in
            [(&plain, ClientOptions::default()), (&tls, ClientOptions { tls: Some(client_tls), ..Default::default() })]
        {
            let client = Client::connect(server.address(), opts).unwrap();
            let threads: Vec<_> = (0..16u8)
                .map(|t| {
                    let c = client.clone();
                    thread::spawn(move || {
                        let calls: Vec<_> = (0..4u8)
                            .map(|i| {
                                let payload: Vec<u8> = (0..300_000u32).map(|k| (k as u8) ^ t ^ i).collect();
                                let call = c
                                    .request("Echo", "Raw")
                                    .serialize_type(rpcx_std::SerializeType::NONE)
                                    .go_raw(payload.clone())
                                    .unwrap();
                                (payload, call)
                            })
                            .collect();
                        for (payload, call) in calls {
                            assert!(call.wait_raw().unwrap().payload == payload, "echo corrupted");
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            client.close();
        }
        plain.close();
        tls.close();
    });
}

#[test]
fn stats_count_calls_and_frames() {
    bounded(|| {
        let server = start(router());
        let client = Client::connect(server.address(), ClientOptions::default()).unwrap();
        assert_eq!(client.stats().calls, 0);
        for i in 0..3 {
            let r: Reply = client.call("Arith", "Mul", &Args { A: i, B: 2 }).unwrap();
            assert_eq!(r.C, i * 2);
        }
        let s = client.stats();
        assert_eq!(s.calls, 3, "{s:?}");
        assert_eq!(s.frames_in, 3, "{s:?}");
        assert_eq!(s.frames_out, 3, "{s:?}");
        server.close();
    });
}
