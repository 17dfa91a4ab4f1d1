//! XClient over real loopback servers: fail modes, fan-out, cancellation of abandoned
//! attempts, discovery changes, hooks, and servers killed and restarted while calls keep
//! flowing. Mirrors `rpcx-tokio`'s `tests/xclient.rs`, with threads instead of tasks.

use rpcx_std::core::conn::{CallError, ClientConfig};
use rpcx_std::core::govern::{
    ClientHooks, FailMode, FinishedCall, Instance, MultiDiscovery, OutgoingCall, SelectMode, ServerKey,
};
use rpcx_std::service::{Context, Router, Service};
use rpcx_std::{ClientOptions, Error, Metadata, Server, ServerHandle, ServerOptions, XClient, XClientOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
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

/// Counts what the servers saw.
#[derive(Default)]
struct Seen {
    fail: AtomicUsize,
    oneway: AtomicUsize,
    auth: Mutex<Vec<String>>,
}

/// `Arith` whose `Who` answers with `id`; `Slow` sleeps A ms (blocking its worker
/// thread); `SlowOn` sleeps A ms only on server `B`; `Fail` always fails.
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
                thread::sleep(Duration::from_millis(a.A as u64));
                Ok(Reply { C: id })
            })
            .method("SlowOn", move |_c: Context, a: Args| async move {
                if a.B == id {
                    thread::sleep(Duration::from_millis(a.A as u64));
                }
                Ok(Reply { C: id })
            }),
    )
}

/// A server whose handlers run on workers, so a sleeping handler never stalls its
/// connection.
fn serve_seen(id: i64, addr: &str, seen: Arc<Seen>) -> ServerHandle {
    let opts = ServerOptions { inline_handlers: false, ..Default::default() };
    Server::new(router(id, seen)).options(opts).bind(addr).unwrap()
}

fn serve(id: i64, addr: &str) -> ServerHandle {
    serve_seen(id, addr, Arc::default())
}

fn serve3() -> [ServerHandle; 3] {
    [serve(1, "tcp@127.0.0.1:0"), serve(2, "tcp@127.0.0.1:0"), serve(3, "tcp@127.0.0.1:0")]
}

fn discovery(servers: &[ServerHandle]) -> Arc<MultiDiscovery> {
    Arc::new(MultiDiscovery::new(servers.iter().map(|s| Instance::new(s.address(), ""))))
}

/// A loopback address nobody listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp@{}", l.local_addr().unwrap())
}

/// Bound every test body in time: nothing may hang.
fn bounded(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let body = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => body.join().unwrap(),
        Err(RecvTimeoutError::Disconnected) => std::panic::resume_unwind(body.join().unwrap_err()),
        Err(RecvTimeoutError::Timeout) => panic!("test timed out"),
    }
}

fn opts(mode: FailMode) -> XClientOptions {
    XClientOptions { fail_mode: mode, ..Default::default() }
}

fn close_all(servers: impl IntoIterator<Item = ServerHandle>) {
    for s in servers {
        s.close();
    }
}

#[test]
fn failover_skips_a_dead_server() {
    bounded(|| {
        let a = serve(1, "tcp@127.0.0.1:0");
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), opts(FailMode::Failover));
        for i in 0..20 {
            let r: Reply = xc.call("Mul", &Args { A: i, B: 3 }).unwrap();
            assert_eq!(r.C, i * 3);
        }
        assert_eq!(xc.connected(), vec![ServerKey::new(a.address())]);
        // Failfast against the same pair fails on the dead server's turn.
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let ff = XClient::new("Arith", Arc::new(d), opts(FailMode::Failfast));
        let results: Vec<Result<Reply, Error>> = (0..4).map(|i| ff.call("Mul", &Args { A: i, B: 1 })).collect();
        assert!(results.iter().any(|r| r.is_ok()), "{results:?}");
        let err = results.iter().find_map(|r| r.as_ref().err()).expect("the dead server's turn fails");
        assert!(matches!(err, Error::Connect(_)), "{err:?}");
        // Failtry retries the same (dead) server, then gives up with its dial error.
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), "")]);
        let ft = XClient::new("Arith", Arc::new(d), opts(FailMode::Failtry));
        assert!(matches!(ft.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }), Err(Error::Connect(_))));
        a.close();
    });
}

#[test]
fn remote_errors_are_not_retried() {
    bounded(|| {
        let seen: Arc<Seen> = Arc::default();
        let a = serve_seen(1, "tcp@127.0.0.1:0", seen.clone());
        let b = serve_seen(2, "tcp@127.0.0.1:0", seen.clone());
        let d = MultiDiscovery::new([Instance::new(a.address(), ""), Instance::new(b.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), opts(FailMode::Failover));
        let err = xc.call::<_, Reply>("Fail", &Args { A: 1, B: 1 }).unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        assert_eq!(seen.fail.load(Ordering::SeqCst), 1, "a remote error is final");
        // Failtry too.
        let d = MultiDiscovery::new([Instance::new(a.address(), ""), Instance::new(b.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), opts(FailMode::Failtry));
        assert!(xc.call::<_, Reply>("Fail", &Args { A: 1, B: 1 }).unwrap_err().remote().is_some());
        assert_eq!(seen.fail.load(Ordering::SeqCst), 2);
        close_all([a, b]);
    });
}

/// Two servers, the slow one first in key order (round robin starts there).
/// The id a server answers `Who` with.
fn id_of(server: &ServerHandle) -> i64 {
    let c = rpcx_std::Client::connect(server.address(), ClientOptions::default()).unwrap();
    let r: Reply = c.call("Arith", "Who", &Args { A: 0, B: 0 }).unwrap();
    c.close();
    r.C
}

fn slow_first() -> (ServerHandle, ServerHandle) {
    let x = serve(1, "tcp@127.0.0.1:0");
    let y = serve(2, "tcp@127.0.0.1:0");
    if x.address() < y.address() { (x, y) } else { (y, x) }
}

#[test]
fn failbackup_takes_the_first_completion() {
    bounded(|| {
        let (first, second) = slow_first();
        let d = MultiDiscovery::new([Instance::new(first.address(), ""), Instance::new(second.address(), "")]);
        let mut o = opts(FailMode::Failbackup);
        o.fail.backup_latency = Duration::from_millis(20);
        let xc = XClient::new("Arith", Arc::new(d), o);
        // The first server (round robin starts there) takes 1.5 s; the backup copy goes
        // to the other one after 20 ms and answers at once. Without a backup the call
        // would take 1.5 s and be answered by the first.
        let (slow_id, fast_id) = (id_of(&first), id_of(&second));
        let t0 = Instant::now();
        let r: Reply = xc.call("SlowOn", &Args { A: 1500, B: slow_id }).unwrap();
        assert_eq!(r.C, fast_id, "the backup answered");
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(1200), "{took:?}");
        // A fast answer needs no backup.
        let t0 = Instant::now();
        let r: Reply = xc.call("Mul", &Args { A: 6, B: 7 }).unwrap();
        assert_eq!(r.C, 42);
        assert!(t0.elapsed() < Duration::from_millis(300));
        close_all([first, second]);
    });
}

/// With one call allowed in flight per connection, a call left running on a server
/// would hold up the next one there: abandoned attempts must be cancelled.
#[test]
fn abandoned_attempts_are_cancelled() {
    bounded(|| {
        let (first, second) = slow_first();
        let slow_id: i64 = {
            // Which id is the first in key order.
            let xc = XClient::new(
                "Arith",
                Arc::new(MultiDiscovery::new([Instance::new(first.address(), "")])),
                XClientOptions::default(),
            );
            xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap().C
        };
        let d =
            Arc::new(MultiDiscovery::new([Instance::new(first.address(), ""), Instance::new(second.address(), "")]));
        let one_in_flight = || ClientOptions {
            connection: ClientConfig { max_in_flight: 1, ..Default::default() },
            ..Default::default()
        };
        // Bounds below are well under the slow server's 3 s, and leave room for the
        // client's sweep (≤ 1 s), which cancels a call dropped before the connection
        // numbered it.
        let bound = Duration::from_millis(1500);
        let mut o = opts(FailMode::Failbackup);
        o.fail.backup_latency = Duration::from_millis(20);
        o.client = one_in_flight();
        let xc = XClient::new("Arith", d.clone(), o);
        // The first server sleeps 3 s; the backup on the other answers at once.
        let t0 = Instant::now();
        let r: Reply = xc.call("SlowOn", &Args { A: 3000, B: slow_id }).unwrap();
        assert_ne!(r.C, slow_id);
        assert!(t0.elapsed() < bound, "{:?}", t0.elapsed());
        // The loser on the slow server was cancelled: its connection takes a call now.
        let t0 = Instant::now();
        let r: Reply = xc.broadcast("Mul", &Args { A: 2, B: 2 }).unwrap();
        assert_eq!(r.C, 4);
        assert!(t0.elapsed() < bound, "broadcast waited for a loser: {:?}", t0.elapsed());

        // Fork: the slow server's call is cancelled once another answered.
        let o = XClientOptions { client: one_in_flight(), ..Default::default() };
        let xc = XClient::new("Arith", d, o);
        let t0 = Instant::now();
        let r: Reply = xc.fork("SlowOn", &Args { A: 3000, B: slow_id }).unwrap();
        assert_ne!(r.C, slow_id);
        // Let the slow server's worker pick up the abandoned request first: its pool
        // can leave a job queued behind a busy worker when two arrive at once.
        thread::sleep(Duration::from_millis(50));
        let r: Reply = xc.broadcast("Mul", &Args { A: 3, B: 3 }).unwrap();
        assert_eq!(r.C, 9);
        assert!(t0.elapsed() < bound, "fork left a call running: {:?}", t0.elapsed());
        close_all([first, second]);
    });
}

#[test]
fn broadcast_fork_inform() {
    bounded(|| {
        let servers = serve3();
        let xc = XClient::new("Arith", discovery(&servers), XClientOptions::default());
        let r: Reply = xc.broadcast("Mul", &Args { A: 2, B: 5 }).unwrap();
        assert_eq!(r.C, 10);
        let r: Reply = xc.fork("Who", &Args { A: 0, B: 0 }).unwrap();
        assert!((1..=3).contains(&r.C));
        let receipts = xc.inform::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap();
        let mut ids: Vec<i64> = receipts.iter().map(|r| r.result.as_ref().unwrap().C).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3]);
        let err = xc.broadcast::<_, Reply>("Fail", &Args { A: 0, B: 0 }).unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        let err = xc.fork::<_, Reply>("Fail", &Args { A: 0, B: 0 }).unwrap_err();
        assert_eq!(err.remote().map(|e| e.text.as_str()), Some("nope"));
        // Inform: each receipt carries its own error.
        let receipts = xc.inform::<_, Reply>("Fail", &Args { A: 0, B: 0 }).unwrap();
        assert_eq!(receipts.len(), 3);
        assert!(receipts.iter().all(|r| r.result.as_ref().unwrap_err().remote().is_some()));

        // A dead server among them: Broadcast fails, Fork succeeds, Inform has its own
        // dial error in its receipt.
        let dead = dead_addr();
        let d = MultiDiscovery::new(
            servers.iter().map(|s| Instance::new(s.address(), "")).chain([Instance::new(dead.as_str(), "")]),
        );
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
        assert!(matches!(xc.broadcast::<_, Reply>("Mul", &Args { A: 1, B: 1 }), Err(Error::Connect(_))));
        assert_eq!(xc.fork::<_, Reply>("Mul", &Args { A: 2, B: 3 }).unwrap().C, 6);
        let receipts = xc.inform::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap();
        assert_eq!(receipts.len(), 4);
        for r in &receipts {
            if r.server.as_str() == dead {
                assert!(matches!(r.result, Err(Error::Connect(_))), "{:?}", r.result);
            } else {
                assert!(r.result.is_ok(), "{:?}", r.result);
            }
        }

        // The gather timeout bounds a fan-out; the slow server's receipt says timeout.
        let o = XClientOptions { gather_timeout: Duration::from_millis(200), ..Default::default() };
        let xc = XClient::new("Arith", discovery(&servers), o);
        let t0 = Instant::now();
        let receipts = xc.inform::<_, Reply>("SlowOn", &Args { A: 1000, B: 2 }).unwrap();
        assert!(t0.elapsed() < Duration::from_millis(800), "{:?}", t0.elapsed());
        for r in &receipts {
            match &r.result {
                Ok(reply) => assert_ne!(reply.C, 2),
                Err(e) => assert!(e.is_timeout(), "{e:?}"),
            }
        }
        assert_eq!(receipts.iter().filter(|r| r.result.is_err()).count(), 1, "{receipts:?}");
        close_all(servers);
    });
}

#[test]
fn no_server_is_a_clear_error() {
    bounded(|| {
        let xc = XClient::new("Arith", Arc::new(MultiDiscovery::new([])), XClientOptions::default());
        let err = xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).unwrap_err();
        assert!(matches!(err, Error::NoServer), "{err:?}");
        assert_eq!(err.to_string(), "can not found any server");
        assert!(matches!(xc.broadcast::<_, Reply>("Mul", &Args { A: 1, B: 1 }), Err(Error::NoServer)));
        assert!(matches!(xc.inform::<_, Reply>("Mul", &Args { A: 1, B: 1 }), Err(Error::NoServer)));
        assert!(matches!(xc.oneshot("Mul", &Args { A: 1, B: 1 }), Err(Error::NoServer)));
        let pending = xc.go::<_, Reply>("Mul", &Args { A: 1, B: 1 }).unwrap();
        assert!(matches!(pending.wait(), Err(Error::NoServer)));
        // A group nobody is in filters every server out.
        let a = serve(1, "tcp@127.0.0.1:0");
        let d = MultiDiscovery::new([Instance::new(a.address(), "group=blue")]);
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions { group: Some("red".into()), ..Default::default() });
        assert!(matches!(xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }), Err(Error::NoServer)));
        a.close();
    });
}

#[test]
fn consistent_hash_keeps_a_key_on_one_server() {
    bounded(|| {
        let servers = serve3();
        let xc = XClient::new(
            "Arith",
            discovery(&servers),
            XClientOptions::default().select_mode(SelectMode::ConsistentHash),
        );
        let first: Reply = xc.call("Who", &Args { A: 0, B: 0 }).unwrap();
        for _ in 0..10 {
            let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).unwrap();
            assert_eq!(r.C, first.C, "same service/method key -> same server");
        }
        assert_eq!(xc.connected().len(), 1);
        close_all(servers);
    });
}

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

/// `go`, `oneshot`, `call_with` (metadata both ways, auth), hooks, and concurrent first
/// calls sharing one dial per server.
#[test]
fn go_oneshot_metadata_auth_hooks_and_shared_dials() {
    bounded(|| {
        let seen: Arc<Seen> = Arc::default();
        let servers = [serve_seen(1, "tcp@127.0.0.1:0", seen.clone()), serve_seen(2, "tcp@127.0.0.1:0", seen.clone())];
        let dead = dead_addr();
        let d = MultiDiscovery::new(
            servers.iter().map(|s| Instance::new(s.address(), "")).chain([Instance::new(dead.as_str(), "")]),
        );
        let hooks = Arc::new(CountingHooks::default());
        let mut o = XClientOptions { auth: Some("s3cret".into()), hooks: vec![hooks.clone()], ..Default::default() };
        // Concurrent callers share the round robin: give each call room to skip the dead
        // server however the picks interleave.
        o.fail.retries = 20;
        let xc = XClient::new("Arith", Arc::new(d), o);

        // 32 threads make their first calls at once: one dial per live server.
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let xc = xc.clone();
                thread::spawn(move || xc.call::<_, Reply>("Mul", &Args { A: i, B: 2 }).unwrap().C)
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), i as i64 * 2);
        }
        assert_eq!(hooks.created.load(Ordering::SeqCst), 2, "dials are shared");
        assert!(hooks.create_failed.load(Ordering::SeqCst) >= 1);
        assert_eq!(hooks.pre.load(Ordering::SeqCst), 32);
        assert_eq!(hooks.post_ok.load(Ordering::SeqCst), 32);

        // go: start several, wait later.
        let pending: Vec<_> = (0..8).map(|i| xc.go::<_, Reply>("Mul", &Args { A: i, B: 10 }).unwrap()).collect();
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.wait().unwrap().C, i as i64 * 10);
        }
        let p = xc.go::<_, Reply>("Slow", &Args { A: 200, B: 0 }).unwrap();
        assert!(!p.is_ready());
        assert!(p.wait_timeout(Duration::from_millis(20)).unwrap_err().is_timeout());

        // call_with: metadata comes back; the auth token reached the server.
        let (r, md): (Reply, Metadata) =
            xc.call_with("Who", &Args { A: 0, B: 0 }, Metadata::new(), Some(Duration::from_secs(2))).unwrap();
        assert_eq!(md.get_str("server").unwrap(), Some(r.C.to_string().as_str()));
        assert_eq!(seen.auth.lock().unwrap().as_slice(), ["s3cret"]);

        // A timeout shorter than the handler.
        let err = xc
            .call_with::<_, Reply>("Slow", &Args { A: 500, B: 0 }, Metadata::new(), Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(matches!(err, Error::Call(CallError::TimedOut)), "{err:?}");

        // oneshot reaches a server.
        for _ in 0..4 {
            xc.oneshot("Note", &Args { A: 0, B: 0 }).unwrap();
        }
        let t0 = Instant::now();
        while seen.oneway.load(Ordering::SeqCst) < 4 {
            assert!(t0.elapsed() < Duration::from_secs(5), "oneway requests arrive");
            thread::sleep(Duration::from_millis(5));
        }

        // A hook can refuse a call.
        let err = xc.call::<_, Reply>("Forbidden", &Args { A: 0, B: 0 }).unwrap_err();
        assert!(matches!(&err, Error::Hook(t) if t == "forbidden by hook"), "{err:?}");
        assert_eq!(err.to_string(), "forbidden by hook");

        xc.close();
        assert!(xc.connected().is_empty());
        // A later call dials again.
        assert_eq!(xc.call::<_, Reply>("Mul", &Args { A: 2, B: 2 }).unwrap().C, 4);
        close_all(servers);
    });
}

/// Discovery changes while an XClient is in use: new servers are used, connections to
/// servers that left are closed; sticky keeps one server while its connection is up.
#[test]
fn follows_discovery_and_sticky() {
    bounded(|| {
        let servers = serve3();
        let d = Arc::new(MultiDiscovery::new([Instance::new(servers[0].address(), "")]));
        let xc = XClient::new("Arith", d.clone(), XClientOptions::default());
        assert_eq!(xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap().C, 1);
        d.update([Instance::new(servers[1].address(), ""), Instance::new(servers[2].address(), "")]);
        let mut ids: Vec<i64> = (0..6).map(|_| xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap().C).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids, vec![2, 3]);
        let mut expect = vec![ServerKey::new(servers[1].address()), ServerKey::new(servers[2].address())];
        expect.sort();
        assert_eq!(xc.connected(), expect, "the connection to the server that left is closed");

        let xc = XClient::new("Arith", discovery(&servers), XClientOptions { sticky: true, ..Default::default() });
        let first = xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap().C;
        for _ in 0..6 {
            assert_eq!(xc.call::<_, Reply>("Who", &Args { A: 0, B: 0 }).unwrap().C, first);
        }
        close_all(servers);
    });
}

/// Servers are killed and restarted while an XClient keeps calling from a thread: no
/// call hangs, each ends with a reply or a clear error, failover hides every
/// single-server outage, and calls reach the restarted server afterwards.
#[test]
fn servers_killed_and_restarted_while_calling() {
    bounded(|| {
        let a = serve(1, "tcp@127.0.0.1:0");
        let b = serve(2, "tcp@127.0.0.1:0");
        let (a_addr, b_addr) = (a.address().to_owned(), b.address().to_owned());
        let d = MultiDiscovery::new([Instance::new(a_addr.as_str(), ""), Instance::new(b_addr.as_str(), "")]);
        let mut o = opts(FailMode::Failover);
        o.client.connect_timeout = Duration::from_millis(300);
        let xc = XClient::new("Arith", Arc::new(d), o);
        let caller = {
            let xc = xc.clone();
            thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                let stop = Instant::now() + Duration::from_millis(2500);
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    // Each call runs on its own thread, bounded from outside as well.
                    let (tx, rx) = mpsc::channel();
                    let x = xc.clone();
                    thread::spawn(move || {
                        let _ = tx.send(x.call_with::<_, Reply>(
                            "Mul",
                            &Args { A: 3, B: 4 },
                            Metadata::new(),
                            Some(Duration::from_secs(2)),
                        ));
                    });
                    let res = rx.recv_timeout(Duration::from_secs(5)).expect("no call hangs");
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
        thread::sleep(Duration::from_millis(500));
        a.close(); // killed
        thread::sleep(Duration::from_millis(700));
        let a2 = serve(1, &a_addr); // restarted on the same address
        thread::sleep(Duration::from_millis(300));
        b.close(); // the other one dies
        let (ok, failed) = caller.join().unwrap();
        assert!(ok > 100, "calls kept succeeding: ok={ok} failed={failed}");
        assert_eq!(failed, 0, "failover hid every single-server outage");
        // After everything settles, calls go to the restarted server.
        for _ in 0..4 {
            let r: Reply = xc.call("Who", &Args { A: 0, B: 0 }).unwrap();
            assert_eq!(r.C, 1);
        }
        assert_eq!(xc.connected(), vec![ServerKey::new(a_addr.as_str())]);
        a2.close();
    });
}

/// `go`'s handle: dropping it cancels the call (its in-flight slot is freed, so the
/// next call on a one-call connection is not held up), `detach` lets it run to its end,
/// retries included, with nobody waiting.
#[test]
fn dropping_an_xcall_cancels_it_and_detach_lets_it_finish() {
    bounded(|| {
        let seen: Arc<Seen> = Arc::default();
        let a = serve_seen(1, "tcp@127.0.0.1:0", seen.clone());
        let one_in_flight =
            ClientOptions { connection: ClientConfig { max_in_flight: 1, ..Default::default() }, ..Default::default() };
        let d = Arc::new(MultiDiscovery::new([Instance::new(a.address(), "")]));
        let xc = XClient::new("Arith", d, XClientOptions { client: one_in_flight, ..Default::default() });
        xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).unwrap(); // connected
        let slow = xc.go::<_, Reply>("Slow", &Args { A: 3000, B: 0 }).unwrap();
        drop(slow);
        // Within the client's sweep (≤ 1 s) the dropped call is cancelled; had it kept
        // its slot, this call would wait the 3 s.
        let t0 = Instant::now();
        assert_eq!(xc.call::<_, Reply>("Mul", &Args { A: 2, B: 3 }).unwrap().C, 6);
        assert!(t0.elapsed() < Duration::from_millis(1500), "the dropped call held its slot: {:?}", t0.elapsed());

        // Detached calls run to their end; with a dead server in the list half of them
        // need a Failover retry, which the detached call makes on its own.
        let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(a.address(), "")]);
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions::default());
        for _ in 0..4 {
            xc.go::<_, Reply>("Note", &Args { A: 0, B: 0 }).unwrap().detach();
        }
        let t0 = Instant::now();
        while seen.oneway.load(Ordering::SeqCst) < 4 {
            assert!(t0.elapsed() < Duration::from_secs(10), "detached calls arrive");
            thread::sleep(Duration::from_millis(5));
        }
        a.close();
    });
}

/// A listener whose accept queue is full: connecting to it hangs (the SYN is dropped)
/// until the dialer's connect timeout. Keep the returned values alive.
fn black_hole() -> (std::net::TcpListener, Vec<std::net::TcpStream>, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut held = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
        held.push(s);
        assert!(held.len() < 10_000, "the accept queue never filled");
    }
    (l, held, format!("tcp@{addr}"))
}

/// Concurrent first calls to a server whose dial fails share one dial and its failure:
/// every caller gets the dial's error, and exactly one dial was made.
#[test]
fn concurrent_first_calls_share_a_failed_dial() {
    bounded(|| {
        let (_l, _held, addr) = black_hole();
        let hooks = Arc::new(CountingHooks::default());
        let d = MultiDiscovery::new([Instance::new(addr.as_str(), "")]);
        let mut o = XClientOptions { fail_mode: FailMode::Failfast, hooks: vec![hooks.clone()], ..Default::default() };
        o.client.connect_timeout = Duration::from_millis(500);
        let xc = XClient::new("Arith", Arc::new(d), o);
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (xc, barrier) = (xc.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }).unwrap_err()
                })
            })
            .collect();
        for t in threads {
            let err = t.join().unwrap();
            assert!(matches!(err, Error::ConnectTimeout), "{err:?}");
        }
        assert_eq!(hooks.create_failed.load(Ordering::SeqCst), 1, "one dial for 16 callers");
        // The failure is not kept: the next call dials again.
        assert!(matches!(xc.call::<_, Reply>("Mul", &Args { A: 1, B: 1 }), Err(Error::ConnectTimeout)));
        assert_eq!(hooks.create_failed.load(Ordering::SeqCst), 2);
    });
}

/// The typed finishers of `XClient::request`: a serialize type of the builder's own
/// (the reply comes back in it), a timeout shorter than the handler, `go` through the
/// builder, typed `oneway`, `go_raw` with an already-serialized payload, and a
/// `pre_call` refusal as the call's error.
#[test]
fn request_builder_typed_finishers() {
    bounded(|| {
        let seen: Arc<Seen> = Arc::default();
        let a = serve_seen(1, "tcp@127.0.0.1:0", seen.clone());
        let d = MultiDiscovery::new([Instance::new(a.address(), "")]);
        let hooks = Arc::new(CountingHooks::default());
        let xc = XClient::new("Arith", Arc::new(d), XClientOptions { hooks: vec![hooks], ..Default::default() });
        let st = rpcx_std::SerializeType::JSON;
        let (r, md): (Reply, Metadata) =
            xc.request("Who").serialize_type(st).metadata("k", "v").call_with_metadata(&Args { A: 6, B: 7 }).unwrap();
        assert_eq!((r.C, md.get_str("server").unwrap()), (1, Some("1")));
        let err = xc.request("Slow").timeout(Duration::from_millis(50)).call::<_, Reply>(&Args { A: 500, B: 0 });
        assert!(err.unwrap_err().is_timeout());
        let call = xc.request("Mul").timeout(Duration::from_secs(2)).go::<_, Reply>(&Args { A: 3, B: 3 }).unwrap();
        assert_eq!(call.wait().unwrap().C, 9);
        xc.request("Note").oneway(&Args { A: 1, B: 1 }).unwrap();
        let payload = rpcx_std::core::codec::to_payload(st, &Args { A: 2, B: 5 }).unwrap();
        let msg = xc.request("Mul").serialize_type(st).go_raw(payload).unwrap().wait().unwrap();
        assert_eq!(msg.header.serialize_type(), st);
        assert_eq!(rpcx_std::core::codec::from_payload::<Reply>(st, &msg.payload).unwrap().C, 10);
        let refused = xc.request("Forbidden").go::<_, Reply>(&Args { A: 0, B: 0 }).expect("go").wait();
        assert!(matches!(refused, Err(Error::Hook(_))), "{refused:?}");
        let t0 = Instant::now();
        while seen.oneway.load(Ordering::SeqCst) < 1 {
            assert!(t0.elapsed() < Duration::from_secs(5), "the oneway request arrives");
            thread::sleep(Duration::from_millis(5));
        }
        xc.close();
        a.close();
    });
}
