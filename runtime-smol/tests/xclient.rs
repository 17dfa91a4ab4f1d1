//! XClient over real loopback servers: fail modes, fan-out, cancellation of abandoned
//! attempts, discovery changes, hooks, and servers killed and restarted while calls keep
//! flowing. Mirrors `rpcx-tokio`'s and `rpcx-std`'s `tests/xclient.rs`. Every scenario
//! runs twice: on a two-thread `smol::Executor` (everything spawned through a spawner
//! for it) and on async-std's executor.

use async_io::Timer;
use futures_lite::future;
use rpcx_smol::core::conn::{CallError, ClientConfig};
use rpcx_smol::core::govern::{
    ClientHooks, FailMode, FinishedCall, Instance, MultiDiscovery, OutgoingCall, SelectMode, ServerKey,
};
use rpcx_smol::service::{Context, Router, Service};
use rpcx_smol::{ClientOptions, Error, Metadata, Server, ServerHandle, Spawner, XClient, XClientOptions};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Counts what the servers saw.
#[derive(Default)]
struct Seen {
    fail: AtomicUsize,
    oneway: AtomicUsize,
    auth: Mutex<Vec<String>>,
}

/// `Arith` whose `Who` answers with `id`; `Slow` waits A ms (an `async_io::Timer`);
/// `SlowOn` waits A ms only on server `B`; `Fail` always fails.
fn router(id: i64, seen: Arc<Seen>) -> Router {
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen);
    Router::new().service(
        Service::new("Arith")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) })
            .method("Who", move |c: Context, _a: Args| {
                let token = c.auth_token().map(str::to_owned);
                let s = s1.clone();
                async move {
                    if let Some(t) = token {
                        s.auth.lock().unwrap().push(t);
                    }
                    c.set_response_metadata("server", id.to_string());
                    Ok(Reply { C: id })
                }
            })
            .method("Fail", move |_c: Context, _a: Args| {
                s2.fail.fetch_add(1, Ordering::SeqCst);
                async move { Err::<Reply, _>("nope".into()) }
            })
            .method("Note", move |_c: Context, _a: Args| {
                s3.oneway.fetch_add(1, Ordering::SeqCst);
                async move { Ok(Reply { C: 0 }) }
            })
            .method("Slow", move |_c: Context, a: Args| async move {
                Timer::after(Duration::from_millis(a.A as u64)).await;
                Ok(Reply { C: id })
            })
            .method("SlowOn", move |_c: Context, a: Args| async move {
                if a.B == id {
                    Timer::after(Duration::from_millis(a.A as u64)).await;
                }
                Ok(Reply { C: id })
            }),
    )
}

/// The executor a scenario runs on: how to spawn, and its name.
#[derive(Clone)]
struct Rt {
    spawner: Spawner,
    #[allow(dead_code)]
    name: &'static str,
}

impl Rt {
    async fn serve_seen(&self, id: i64, addr: &str, seen: Arc<Seen>) -> ServerHandle {
        Server::new(router(id, seen)).runtime(self.spawner.clone()).bind(addr).await.unwrap()
    }

    async fn serve(&self, id: i64, addr: &str) -> ServerHandle {
        self.serve_seen(id, addr, Arc::default()).await
    }

    async fn serve3(&self) -> [ServerHandle; 3] {
        [
            self.serve(1, "tcp@127.0.0.1:0").await,
            self.serve(2, "tcp@127.0.0.1:0").await,
            self.serve(3, "tcp@127.0.0.1:0").await,
        ]
    }

    /// Two servers, the slow one first in key order (round robin starts there).
    async fn slow_first(&self) -> (ServerHandle, ServerHandle) {
        let x = self.serve(1, "tcp@127.0.0.1:0").await;
        let y = self.serve(2, "tcp@127.0.0.1:0").await;
        if x.address() < y.address() { (x, y) } else { (y, x) }
    }

    /// The id a server answers `Who` with.
    async fn id_of(&self, server: &ServerHandle) -> i64 {
        let c = rpcx_smol::Client::connect(server.address(), self.client_opts()).await.unwrap();
        let r: Reply = c.call("Arith", "Who", &Args { A: 0, B: 0 }).await.unwrap();
        c.close().await;
        r.C
    }

    fn client_opts(&self) -> ClientOptions {
        ClientOptions { runtime: self.spawner.clone(), ..Default::default() }
    }

    /// XClient options whose connections (and `go` tasks) run on this executor.
    fn opts(&self, mode: FailMode) -> XClientOptions {
        XClientOptions { fail_mode: mode, client: self.client_opts(), ..Default::default() }
    }

    fn default_opts(&self) -> XClientOptions {
        self.opts(FailMode::Failover)
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

fn discovery(servers: &[ServerHandle]) -> Arc<MultiDiscovery> {
    Arc::new(MultiDiscovery::new(servers.iter().map(|s| Instance::new(s.address(), ""))))
}

/// A loopback address nobody listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp@{}", l.local_addr().unwrap())
}

async fn close_all(servers: impl IntoIterator<Item = ServerHandle>) {
    for s in servers {
        s.close().await;
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
    timeout(Duration::from_secs(60), f).await.expect("test timed out");
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
    failover_skips_a_dead_server,
    remote_errors_are_not_retried,
    failbackup_takes_the_first_completion,
    abandoned_attempts_are_cancelled,
    broadcast_fork_inform,
    no_server_is_a_clear_error,
    consistent_hash_keeps_a_key_on_one_server,
    go_oneshot_metadata_auth_hooks_and_shared_dials,
    follows_discovery_and_sticky,
    servers_killed_and_restarted_while_calling,
);

#[derive(Default)]
struct CountingHooks {
    pre: AtomicUsize,
    post_ok: AtomicUsize,
    post_err: AtomicUsize,
    created: AtomicUsize,
    create_failed: AtomicUsize,
}

impl ClientHooks for CountingHooks {
    fn pre_call(&self, call: &mut OutgoingCall<'_>) -> Result<(), String> {
        self.pre.fetch_add(1, Ordering::SeqCst);
        if &call.service_method[..] == b"Forbidden" { Err("forbidden by hook".into()) } else { Ok(()) }
    }
    fn post_call(&self, call: &mut FinishedCall<'_>) {
        let c = if call.result.is_err() { &self.post_err } else { &self.post_ok };
        c.fetch_add(1, Ordering::SeqCst);
    }
    fn conn_opened(&self, _remote: &str) {
        self.created.fetch_add(1, Ordering::SeqCst);
    }
    fn conn_create_failed(&self, _server: &str, _error: &str) {
        self.create_failed.fetch_add(1, Ordering::SeqCst);
    }
}

mod scenarios {
    use super::*;

    pub(super) async fn failover_skips_a_dead_server(rt: Rt) {
        let a = rt.serve(1, "tcp@127.0.0.1:0").await;
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), rt.opts(FailMode::Failover));
        for i in 0..20 {
            let r: Reply = xc.call("Mul", &Args { A: i, B: 3 }).await.unwrap();
            assert_eq!(r.C, i * 3);
        }
        assert_eq!(xc.connected(), vec![ServerKey::new(a.address())]);
        // Failfast against the same pair fails on the dead server's turn.
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let ff = XClient::new("Arith", Arc::new(d), rt.opts(FailMode::Failfast));
        let mut results: Vec<Result<Reply, Error>> = Vec::new();
        for i in 0..4 {
            results.push(ff.call("Mul", &Args { A: i, B: 1 }).await);
        }
        assert!(results.iter().any(|r| r.is_ok()), "{results:?}");
        let err = results.iter().find_map(|r| r.as_ref().err()).expect("the dead server's turn fails");
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
        // Failtry retries the same (dead) server, then gives up with its dial error.
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), "")]);
        let ft = XClient::new("Arith", Arc::new(d), rt.opts(FailMode::Failtry));
        assert!(matches!(ft.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await, Err(Error::Connect(_))));
        a.close().await;
    }

    pub(super) async fn remote_errors_are_not_retried(rt: Rt) {
        let seen: Arc<Seen> = Arc::default();
        let a = rt.serve_seen(1, "tcp@127.0.0.1:0", seen.clone()).await;
        let b = rt.serve_seen(2, "tcp@127.0.0.1:0", seen.clone()).await;
        let d = MultiDiscovery::new([Instance::new(a.address(), ""), Instance::new(b.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), rt.opts(FailMode::Failover));
        let err = xc.call::<_, Reply>("Fail", &Args { A: 1, B: 1 }).await.unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        assert_eq!(seen.fail.load(Ordering::SeqCst), 1, "a remote error is final");
        // Failtry too.
        let d = MultiDiscovery::new([Instance::new(a.address(), ""), Instance::new(b.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), rt.opts(FailMode::Failtry));
        assert!(xc.call::<_, Reply>("Fail", &Args { A: 1, B: 1 }).await.unwrap_err().remote().is_some());
        assert_eq!(seen.fail.load(Ordering::SeqCst), 2);
        close_all([a, b]).await;
    }

    pub(super) async fn failbackup_takes_the_first_completion(rt: Rt) {
        let (first, second) = rt.slow_first().await;
        let d = MultiDiscovery::new([Instance::new(first.address(), ""), Instance::new(second.address(), "")]);
        let mut o = rt.opts(FailMode::Failbackup);
        o.fail.backup_latency = Duration::from_millis(20);
        let xc = XClient::new("Arith", Arc::new(d), o);
        // The first server (round robin starts there) takes 1.5 s; the backup copy goes
        // to the other one after 20 ms and answers at once. Without a backup the call
        // would take 1.5 s and be answered by the first.
        let (slow_id, fast_id) = (rt.id_of(&first).await, rt.id_of(&second).await);
        let t0 = Instant::now();
        let r: Reply = xc.call("SlowOn", &Args { A: 1500, B: slow_id }).await.unwrap();
        assert_eq!(r.C, fast_id, "the backup answered");
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(1200), "{took:?}");
        // A fast answer needs no backup.
        let t0 = Instant::now();
        let r: Reply = xc.call("Mul", &Args { A: 6, B: 7 }).await.unwrap();
        assert_eq!(r.C, 42);
        assert!(t0.elapsed() < Duration::from_millis(300));
        // The first completion wins even when it is an error (as Go).
        let err = xc.call::<_, Reply>("Fail", &Args { A: 0, B: 0 }).await.unwrap_err();
        assert!(err.remote().is_some(), "{err:?}");
        close_all([first, second]).await;
    }

    /// With one call allowed in flight per connection, a call left running on a server
    /// would hold up the next one there: abandoned attempts must be cancelled.
    pub(super) async fn abandoned_attempts_are_cancelled(rt: Rt) {
        let (first, second) = rt.slow_first().await;
        let slow_id: i64 = {
            // Which id is the first in key order.
            let d = Arc::new(MultiDiscovery::new([Instance::new(first.address(), "")]));
            let xc = XClient::new("Arith", d, rt.default_opts());
            xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap().C
        };
        let d =
            Arc::new(MultiDiscovery::new([Instance::new(first.address(), ""), Instance::new(second.address(), "")]));
        let one_in_flight = || ClientOptions {
            connection: ClientConfig { max_in_flight: 1, ..Default::default() },
            ..rt.client_opts()
        };
        // Bounds below are well under the slow server's 3 s, and leave room for the
        // client's sweep (≤ 1 s), which cancels a call whose reply slot was dropped.
        let bound = Duration::from_millis(1500);
        let mut o = rt.opts(FailMode::Failbackup);
        o.fail.backup_latency = Duration::from_millis(20);
        o.client = one_in_flight();
        let xc = XClient::new("Arith", d.clone(), o);
        // The first server waits 3 s; the backup on the other answers at once.
        let t0 = Instant::now();
        let r: Reply = xc.call("SlowOn", &Args { A: 3000, B: slow_id }).await.unwrap();
        assert_ne!(r.C, slow_id);
        assert!(t0.elapsed() < bound, "{:?}", t0.elapsed());
        // The loser on the slow server was cancelled: its connection takes a call now.
        let t0 = Instant::now();
        let r: Reply = xc.broadcast("Mul", &Args { A: 2, B: 2 }).await.unwrap();
        assert_eq!(r.C, 4);
        assert!(t0.elapsed() < bound, "broadcast waited for a loser: {:?}", t0.elapsed());

        // Fork: the slow server's call is cancelled once another answered.
        let o = XClientOptions { client: one_in_flight(), ..rt.default_opts() };
        let xc = XClient::new("Arith", d, o);
        let t0 = Instant::now();
        let r: Reply = xc.fork("SlowOn", &Args { A: 3000, B: slow_id }).await.unwrap();
        assert_ne!(r.C, slow_id);
        let r: Reply = xc.broadcast("Mul", &Args { A: 3, B: 3 }).await.unwrap();
        assert_eq!(r.C, 9);
        assert!(t0.elapsed() < bound, "fork left a call running: {:?}", t0.elapsed());

        // A call's own deadline abandons its attempt too.
        let t0 = Instant::now();
        let err = xc
            .call_with::<_, Reply>(
                "SlowOn",
                &Args { A: 3000, B: slow_id },
                Metadata::new(),
                Some(Duration::from_millis(50)),
            )
            .await;
        // Round robin may have sent it to the fast server; either way it ends quickly.
        if let Err(e) = &err {
            assert!(e.is_timeout(), "{e:?}");
        }
        let r: Reply = xc.broadcast("Mul", &Args { A: 4, B: 4 }).await.unwrap();
        assert_eq!(r.C, 16);
        assert!(t0.elapsed() < bound, "a timed-out call stayed in flight: {:?}", t0.elapsed());

        // Dropping a `go` handle cancels its call.
        let d = Arc::new(MultiDiscovery::new([Instance::new(first.address(), "")]));
        let xc = XClient::new("Arith", d, XClientOptions { client: one_in_flight(), ..rt.default_opts() });
        let t0 = Instant::now();
        let pending = xc.go::<_, Reply>("SlowOn", &Args { A: 3000, B: slow_id }).unwrap();
        Timer::after(Duration::from_millis(50)).await;
        drop(pending);
        let r: Reply = xc.call("Mul", &Args { A: 5, B: 5 }).await.unwrap();
        assert_eq!(r.C, 25);
        assert!(t0.elapsed() < bound, "a dropped go call stayed in flight: {:?}", t0.elapsed());
        close_all([first, second]).await;
    }

    pub(super) async fn broadcast_fork_inform(rt: Rt) {
        let servers = rt.serve3().await;
        let xc = XClient::new("Arith", discovery(&servers), rt.default_opts());
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
        let err = xc.fork::<_, Reply>("Fail", &Args { A: 0, B: 0 }).await.unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        // Inform: each receipt carries its own error.
        let receipts = xc.inform::<_, Reply>("Fail", &Args { A: 0, B: 0 }).await.unwrap();
        assert_eq!(receipts.len(), 3);
        assert!(receipts.iter().all(|r| r.result.as_ref().unwrap_err().remote().is_some()));

        // A dead server among them: Broadcast fails, Fork succeeds, Inform has its own
        // dial error in its receipt.
        let dead = dead_addr();
        let d = MultiDiscovery::new(
            servers.iter().map(|s| Instance::new(s.address(), "")).chain([Instance::new(dead.as_str(), "")]),
        );
        let xc = XClient::new("Arith", Arc::new(d), rt.default_opts());
        assert!(matches!(xc.broadcast::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await, Err(Error::Connect(_))));
        assert_eq!(xc.fork::<_, Reply>("Mul", &Args { A: 2, B: 3 }).await.unwrap().C, 6);
        let receipts = xc.inform::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap();
        assert_eq!(receipts.len(), 4);
        for r in &receipts {
            if r.server.as_str() == dead {
                assert!(matches!(r.result, Err(Error::Connect(_))), "{:?}", r.result);
            } else {
                assert!(r.result.is_ok(), "{:?}", r.result);
            }
        }

        // The gather timeout bounds a fan-out; the slow server's receipt says timeout.
        let o = XClientOptions { gather_timeout: Duration::from_millis(200), ..rt.default_opts() };
        let xc = XClient::new("Arith", discovery(&servers), o);
        let t0 = Instant::now();
        let receipts = xc.inform::<_, Reply>("SlowOn", &Args { A: 1000, B: 2 }).await.unwrap();
        assert!(t0.elapsed() < Duration::from_millis(800), "{:?}", t0.elapsed());
        for r in &receipts {
            match &r.result {
                Ok(reply) => assert_ne!(reply.C, 2),
                Err(e) => assert!(e.is_timeout(), "{e:?}"),
            }
        }
        assert_eq!(receipts.iter().filter(|r| r.result.is_err()).count(), 1);
        close_all(servers).await;
    }

    pub(super) async fn no_server_is_a_clear_error(rt: Rt) {
        let xc = XClient::new("Arith", Arc::new(MultiDiscovery::new([])), rt.default_opts());
        let err = xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await.unwrap_err();
        assert!(matches!(err, Error::NoServer), "{err:?}");
        assert_eq!(err.to_string(), "can not found any server");
        assert!(matches!(xc.broadcast::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await, Err(Error::NoServer)));
        assert!(matches!(xc.fork::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await, Err(Error::NoServer)));
        assert!(matches!(xc.inform::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await, Err(Error::NoServer)));
        assert!(matches!(xc.oneshot("Mul", &Args { A: 1, B: 1 }).await, Err(Error::NoServer)));
        let pending = xc.go::<_, Reply>("Mul", &Args { A: 1, B: 1 }).unwrap();
        assert!(matches!(pending.await, Err(Error::NoServer)));
        // A group nobody is in filters every server out.
        let a = rt.serve(1, "tcp@127.0.0.1:0").await;
        let d = MultiDiscovery::new([Instance::new(a.address(), "group=blue")]);
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions { group: Some("red".into()), ..rt.default_opts() });
        assert!(matches!(xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).await, Err(Error::NoServer)));
        a.close().await;
    }

    pub(super) async fn consistent_hash_keeps_a_key_on_one_server(rt: Rt) {
        let servers = rt.serve3().await;
        let xc = XClient::new("Arith", discovery(&servers), rt.default_opts().select_mode(SelectMode::ConsistentHash));
        let first: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
        for _ in 0..10 {
            let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
            assert_eq!(r.C, first.C, "same service/method key -> same server");
        }
        assert_eq!(xc.connected().len(), 1);
        close_all(servers).await;
    }

    /// `go`, `oneshot`, `call_with` (metadata both ways, auth), hooks, and concurrent
    /// first calls sharing one dial per server.
    pub(super) async fn go_oneshot_metadata_auth_hooks_and_shared_dials(rt: Rt) {
        let seen: Arc<Seen> = Arc::default();
        let servers = [
            rt.serve_seen(1, "tcp@127.0.0.1:0", seen.clone()).await,
            rt.serve_seen(2, "tcp@127.0.0.1:0", seen.clone()).await,
        ];
        let dead = dead_addr();
        let d = MultiDiscovery::new(
            servers.iter().map(|s| Instance::new(s.address(), "")).chain([Instance::new(dead.as_str(), "")]),
        );
        let hooks = Arc::new(CountingHooks::default());
        let mut o = XClientOptions { auth: Some("s3cret".into()), hooks: vec![hooks.clone()], ..rt.default_opts() };
        // Concurrent callers share the round robin: give each call room to skip the dead
        // server however the picks interleave.
        o.fail.retries = 20;
        let xc = XClient::new("Arith", Arc::new(d), o);

        // 32 tasks make their first calls at once: one dial per live server.
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let xc = xc.clone();
                rt.spawn(async move { xc.call::<_, Reply>("Mul", &Args { A: i, B: 2 }).await.unwrap().C })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await, i as i64 * 2);
        }
        assert_eq!(hooks.created.load(Ordering::SeqCst), 2, "dials are shared");
        assert!(hooks.create_failed.load(Ordering::SeqCst) >= 1);
        assert_eq!(hooks.pre.load(Ordering::SeqCst), 32);
        assert_eq!(hooks.post_ok.load(Ordering::SeqCst), 32);

        // go: start several, await later.
        let pending: Vec<_> = (0..8).map(|i| xc.go::<_, Reply>("Mul", &Args { A: i, B: 10 }).unwrap()).collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.await.unwrap().C, i as i64 * 10);
        }
        let mut p = xc.go::<_, Reply>("Slow", &Args { A: 200, B: 0 }).unwrap();
        assert!(!p.is_ready());
        assert!(timeout(Duration::from_millis(20), &mut p).await.is_none());
        assert!((1..=2).contains(&p.await.unwrap().C));
        // A detached call runs to its end.
        let before = seen.oneway.load(Ordering::SeqCst);
        xc.go::<_, Reply>("Note", &Args { A: 0, B: 0 }).unwrap().detach();
        let t0 = Instant::now();
        while seen.oneway.load(Ordering::SeqCst) == before {
            assert!(t0.elapsed() < Duration::from_secs(5), "the detached call ran");
            Timer::after(Duration::from_millis(5)).await;
        }

        // call_with: metadata comes back; the auth token reached the server.
        let (r, md): (Reply, Metadata) =
            xc.call_with("Who", &Args { A: 0, B: 0 }, Metadata::new(), Some(Duration::from_secs(2))).await.unwrap();
        assert_eq!(md.get_str("server").unwrap(), Some(r.C.to_string().as_str()));
        assert_eq!(seen.auth.lock().unwrap().as_slice(), ["s3cret"]);

        // A timeout shorter than the handler.
        let err = xc
            .call_with::<_, Reply>("Slow", &Args { A: 500, B: 0 }, Metadata::new(), Some(Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Call(CallError::TimedOut)), "{err:?}");

        // oneshot reaches a server.
        let before = seen.oneway.load(Ordering::SeqCst);
        for _ in 0..4 {
            xc.oneshot("Note", &Args { A: 0, B: 0 }).await.unwrap();
        }
        let t0 = Instant::now();
        while seen.oneway.load(Ordering::SeqCst) < before + 4 {
            assert!(t0.elapsed() < Duration::from_secs(5), "oneway requests arrive");
            Timer::after(Duration::from_millis(5)).await;
        }

        // A hook can refuse a call.
        let err = xc.call::<_, Reply>("Forbidden", &Args { A: 0, B: 0 }).await.unwrap_err();
        assert!(matches!(&err, Error::Hook(t) if t == "forbidden by hook"), "{err:?}");
        assert_eq!(err.to_string(), "forbidden by hook");

        xc.close().await;
        assert!(xc.connected().is_empty());
        // A later call dials again.
        assert_eq!(xc.call::<_, Reply>("Mul", &Args { A: 2, B: 2 }).await.unwrap().C, 4);
        close_all(servers).await;
    }

    /// Discovery changes while an XClient is in use: new servers are used, connections
    /// to servers that left are closed; sticky keeps one server while its connection is
    /// up.
    pub(super) async fn follows_discovery_and_sticky(rt: Rt) {
        let servers = rt.serve3().await;
        let d = Arc::new(MultiDiscovery::new([Instance::new(servers[0].address(), "")]));
        let xc = XClient::new("Arith", d.clone(), rt.default_opts());
        assert_eq!(xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap().C, 1);
        d.update([Instance::new(servers[1].address(), ""), Instance::new(servers[2].address(), "")]);
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap().C);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids, vec![2, 3]);
        let mut expect = vec![ServerKey::new(servers[1].address()), ServerKey::new(servers[2].address())];
        expect.sort();
        assert_eq!(xc.connected(), expect, "the connection to the server that left is closed");

        let xc = XClient::new("Arith", discovery(&servers), XClientOptions { sticky: true, ..rt.default_opts() });
        let first = xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap().C;
        for _ in 0..6 {
            assert_eq!(xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).await.unwrap().C, first);
        }
        close_all(servers).await;
    }

    /// Servers are killed and restarted on the same address while an XClient keeps
    /// calling from another task: no call hangs, each ends with a reply or a clear
    /// error, failover hides every single-server outage, and calls reach the restarted
    /// server afterwards.
    pub(super) async fn servers_killed_and_restarted_while_calling(rt: Rt) {
        let a = rt.serve(1, "tcp@127.0.0.1:0").await;
        let b = rt.serve(2, "tcp@127.0.0.1:0").await;
        let (a_addr, b_addr) = (a.address().to_owned(), b.address().to_owned());
        let d = MultiDiscovery::new([Instance::new(a_addr.as_str(), ""), Instance::new(b_addr.as_str(), "")]);
        let mut o = rt.opts(FailMode::Failover);
        o.client.connect_timeout = Duration::from_millis(300);
        let xc = XClient::new("Arith", Arc::new(d), o);
        let caller = {
            let xc = xc.clone();
            rt.spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                let stop = Instant::now() + Duration::from_millis(2500);
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    let call = xc.call_with::<_, Reply>(
                        "Mul",
                        &Args { A: 3, B: 4 },
                        Metadata::new(),
                        Some(Duration::from_secs(2)),
                    );
                    let res = timeout(Duration::from_secs(5), call).await.expect("no call hangs");
                    match res {
                        Ok((r, _)) => {
                            assert_eq!(r.C, 12);
                            ok += 1;
                        }
                        Err(e) => {
                            assert!(!e.to_string().is_empty());
                            eprintln!("call failed: {e}");
                            failed += 1;
                        }
                    }
                    assert!(t0.elapsed() < Duration::from_secs(3));
                }
                (ok, failed)
            })
        };
        Timer::after(Duration::from_millis(500)).await;
        a.close().await; // killed
        Timer::after(Duration::from_millis(700)).await;
        let a2 = rt.serve(1, &a_addr).await; // restarted on the same address
        Timer::after(Duration::from_millis(300)).await;
        b.close().await; // the other one dies
        let (ok, failed) = caller.await;
        assert!(ok > 100, "calls kept succeeding: ok={ok} failed={failed}");
        assert_eq!(failed, 0, "failover hid every single-server outage");
        // After everything settles, calls go to the restarted server.
        for _ in 0..4 {
            let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).await.unwrap();
            assert_eq!(r.C, 1);
        }
        assert_eq!(xc.connected(), vec![ServerKey::new(a_addr.as_str())]);
        a2.close().await;
    }
}
