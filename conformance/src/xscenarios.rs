//! XClient scenarios: each takes a server runtime and an XClient runtime, and pins a
//! behaviour that used to differ between runtimes and is now decided by the core's
//! `Governor` (see ARCHITECTURE.md, "XClient"). Run for all nine pairs by
//! `tests/xclient.rs`.
//!
//! Not here: "a winning attempt without a stored result returns an error, never
//! panics". The governor's `CallRun` keeps every attempt's result itself and the
//! runtimes only report results into it, so no runtime and no server can make a
//! winner without a result from outside; the guard (`CallRun::finish` falls back to an
//! error) is covered by the core's simulated tests in `core/tests/govern_governor.rs`.

use crate::services::{Args, Reply};
use crate::xclient::{Gate, XClientRt, XFail, XOpts, XReq, router};
use crate::{ServeOpts, ServerCtl, ServerRt, pattern};
use rpcx_core::codec;
use rpcx_core::govern::{ClientHooks, FailMode, FailOptions, FinishedCall, OutgoingCall};
use rpcx_core::wire::{CompressType, Message, SerializeType};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

fn serve(s: &dyn ServerRt, id: i64, gate: &Arc<Gate>) -> Box<dyn ServerCtl> {
    s.serve(router(id, gate.clone()), ServeOpts::default())
}

fn reply(m: &Message) -> Reply {
    codec::from_payload(m.header.serialize_type(), &m.payload).expect("decode reply")
}

fn who(m: Result<Message, XFail>) -> i64 {
    reply(&m.expect("X.Who")).c
}

fn args() -> Args {
    Args { a: 1, b: 2 }
}

/// A loopback address nobody listens on (connecting is refused at once).
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("tcp@{}", l.local_addr().expect("addr"))
}

/// A listener whose accept queue is full: connecting to it hangs (the SYN is dropped)
/// until the dialer's connect timeout. Keep the returned values alive.
fn black_hole() -> (std::net::TcpListener, Vec<std::net::TcpStream>, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut held = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
        held.push(s);
        assert!(held.len() < 10_000, "the accept queue never filled");
    }
    (l, held, format!("tcp@{addr}"))
}

/// Run `f` on a thread; its result, or a panic if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("{what}: no result within {limit:?}"))
}

/// Wait (bounded) until `counter` reaches `n`.
fn until(counter: &AtomicUsize, n: usize, what: &str) {
    let t0 = Instant::now();
    while counter.load(Ordering::SeqCst) < n {
        assert!(t0.elapsed() < Duration::from_secs(5), "{what}: {} of {n}", counter.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(2));
    }
}

#[derive(Default)]
struct DialHooks {
    created: AtomicUsize,
    failed: AtomicUsize,
}

/// Refuses every call of `X.Forbidden`.
struct Refuse;

impl ClientHooks for Refuse {
    fn pre_call(&self, call: &mut OutgoingCall<'_>) -> Result<(), String> {
        if &call.service_method[..] == b"Forbidden" { Err("forbidden by hook".into()) } else { Ok(()) }
    }
}

impl ClientHooks for DialHooks {
    fn conn_opened(&self, _remote: &str) {
        self.created.fetch_add(1, Ordering::SeqCst);
    }
    fn conn_create_failed(&self, _server: &str, _error: &str) {
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
}

/// The request builder's options reach the server the same way on every runtime:
/// metadata both ways, the timeout as `__ServerTimeout`, the serialize type, a raw
/// payload unchanged, gzip over 1024 bytes, oneway, `go`; a `pre_call` hook's refusal
/// is the call's error (the hooks run on the connection, on every runtime).
pub fn request_builder_options_reach_the_server(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let server = serve(s, 1, &gate);
    let xc = x.xclient(&[server.address()], XOpts { hooks: vec![Arc::new(Refuse)], ..Default::default() });

    let m = xc.call(XReq::args("Meta", &args()).metadata("k1", "v1").metadata("k2", "v2")).expect("Meta");
    assert_eq!(reply(&m).c, 3);
    assert_eq!(m.metadata.get_str("k1").unwrap(), Some("v1"));
    assert_eq!(m.metadata.get_str("k2").unwrap(), Some("v2"));

    let m = xc.call(XReq::args("Deadline", &args()).timeout(Duration::from_secs(3))).expect("Deadline");
    let ms = reply(&m).c;
    assert!((2000..=3000).contains(&ms), "the handler saw {ms} ms left");
    assert_eq!(reply(&xc.call(XReq::args("Deadline", &args())).expect("Deadline")).c, -1, "no timeout set");

    let json = codec::to_payload(SerializeType::JSON, &args()).expect("encode");
    let m = xc.call(XReq::raw("Meta", SerializeType::JSON, json.into())).expect("Meta in JSON");
    assert_eq!(m.header.serialize_type(), SerializeType::JSON);
    assert_eq!(reply(&m).c, 3);

    let raw = bytes::Bytes::from_static(b"\x00\x01not msgpack\xff");
    let m = xc.call(XReq::raw("Raw", SerializeType::NONE, raw.clone())).expect("Raw");
    assert_eq!(m.payload, raw, "a raw payload is sent as given");

    for n in [100, 5000] {
        let m = xc.call(XReq::raw("Raw", SerializeType::NONE, pattern(n)).compress(CompressType::GZIP)).expect("Raw");
        assert_eq!(m.payload, pattern(n));
        let want = if n > 1024 { CompressType::GZIP } else { CompressType::NONE };
        assert_eq!(m.header.compress_type(), want, "response compression for {n} bytes");
    }

    let m = xc.call(XReq::args("Slow?", &args()).timeout(Duration::from_secs(2))).unwrap_err();
    assert_eq!(m, XFail::Remote("rpcx: can't find method Slow?".into()));

    for _ in 0..3 {
        xc.oneway(XReq::args("Note", &args())).expect("oneway");
    }
    until(&gate.notes, 3, "oneway requests arrive");
    let call = xc.go(XReq::args("Who", &args()).timeout(Duration::from_secs(2))).expect("go");
    assert_eq!(who(call.wait(Duration::from_secs(5))), 1);
    let refused = xc.go(XReq::args("Forbidden", &args())).expect("go");
    assert_eq!(
        refused.wait(Duration::from_secs(5)).err(),
        Some(XFail::Hook("forbidden by hook".into())),
        "the hook's refusal is the call's error"
    );
    assert_eq!(xc.call(XReq::args("Forbidden", &args())).unwrap_err(), XFail::Hook("forbidden by hook".into()));
    xc.close();
    server.close();
}

/// `go`'s `XCall`: dropping it cancels the call (the connection's in-flight slot is
/// freed, and the rest of its plan never runs); `detach` lets it run to its end.
pub fn dropped_xcall_cancels_and_detached_runs_to_its_end(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let server = serve(s, 1, &gate);
    let addr = [server.address()];

    // One call in flight per connection: a dropped call that kept its slot would hold
    // up the next call until that call's timeout.
    let one = x.xclient(&addr, XOpts { fail_mode: FailMode::Failfast, max_in_flight: Some(1), ..Default::default() });
    assert_eq!(who(one.call(XReq::args("Who", &args()))), 1); // connected
    gate.arm();
    let held = one.go(XReq::args("Hold", &args())).expect("go");
    until(&gate.started, 1, "the held call reached its handler");
    drop(held);
    let t0 = Instant::now();
    let next = one.call(XReq::args("Who", &args()).timeout(Duration::from_secs(4)));
    assert_eq!(who(next), 1, "the dropped call's slot was freed (the held handler still runs)");
    assert!(t0.elapsed() < Duration::from_secs(3), "slot freed after {:?}", t0.elapsed());

    // Failbackup sends a copy after 300 ms without an answer. A dropped call never
    // sends it; a detached one does, and the copy's handler runs to its end.
    let backup = FailOptions { backup_latency: Duration::from_millis(300), ..Default::default() };
    let xc = x.xclient(&addr, XOpts { fail_mode: FailMode::Failbackup, fail: backup, ..Default::default() });
    assert_eq!(who(xc.call(XReq::args("Who", &args()))), 1); // connected
    gate.arm();
    let dropped = xc.go(XReq::args("Hold", &args())).expect("go");
    until(&gate.started, 2, "the primary reached its handler");
    drop(dropped);
    thread::sleep(Duration::from_millis(900));
    assert_eq!(gate.started.load(Ordering::SeqCst), 2, "a dropped XCall's backup copy was sent");

    let finished = gate.finished.load(Ordering::SeqCst);
    gate.arm();
    let detached = xc.go(XReq::args("Hold", &args())).expect("go");
    until(&gate.started, 3, "the primary reached its handler");
    detached.detach();
    until(&gate.finished, finished + 1, "the detached call's backup copy ran to its end");
    assert_eq!(gate.started.load(Ordering::SeqCst), 4);

    gate.release();
    one.close();
    xc.close();
    server.close();
}

/// Concurrent first calls to one server share one dial and its outcome: a failed dial
/// (a server whose accept queue is full, so the dial times out) fails every caller
/// with the dial's error and is dialed once, then forgotten (the next call dials
/// again); a good dial is made once and serves every caller.
pub fn concurrent_first_dials_share_one_dial(s: &dyn ServerRt, x: &dyn XClientRt) {
    const CALLERS: usize = 8;
    let first_calls = |xc: Arc<dyn crate::xclient::XClientCtl>| {
        let barrier = Arc::new(Barrier::new(CALLERS));
        let threads: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (xc, barrier) = (xc.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    xc.call(XReq::args("Who", &args()))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("caller")).collect::<Vec<_>>()
    };

    let (_listener, _held, hole) = black_hole();
    let hooks = Arc::new(DialHooks::default());
    let opts = XOpts {
        fail_mode: FailMode::Failfast,
        connect_timeout: Some(Duration::from_millis(500)),
        hooks: vec![hooks.clone()],
        ..Default::default()
    };
    let xc = x.xclient(&[hole], opts);
    let results = within(Duration::from_secs(10), "first calls to a black hole", move || first_calls(xc.clone()));
    for r in &results {
        assert_eq!(r.as_ref().unwrap_err(), &XFail::ConnectTimeout);
    }
    assert_eq!(hooks.failed.load(Ordering::SeqCst), 1, "one dial for {CALLERS} concurrent first calls");
    assert_eq!(hooks.created.load(Ordering::SeqCst), 0);

    let gate = Arc::new(Gate::default());
    let server = serve(s, 1, &gate);
    let hooks = Arc::new(DialHooks::default());
    let xc = x.xclient(&[server.address()], XOpts { hooks: vec![hooks.clone()], ..Default::default() });
    let x2 = xc.clone();
    let results = within(Duration::from_secs(10), "first calls to a server", move || first_calls(x2));
    for r in results {
        assert_eq!(who(r), 1);
    }
    assert_eq!(hooks.created.load(Ordering::SeqCst), 1, "one dial for {CALLERS} concurrent first calls");
    assert_eq!(hooks.failed.load(Ordering::SeqCst), 0);
    xc.close();
    server.close();
}

/// Sticky records the server of an `Ok` call only: a remote error from the first
/// candidate does not make it sticky (round robin moves on), a success does.
pub fn sticky_is_recorded_only_on_ok(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let servers = [serve(s, 1, &gate), serve(s, 2, &gate)];
    let addrs: Vec<String> = servers.iter().map(|s| s.address()).collect();
    let xc = x.xclient(&addrs, XOpts { sticky: true, ..Default::default() });
    let failed_on = match xc.call(XReq::args("Fail", &args())) {
        Err(XFail::Remote(t)) => t.trim_start_matches("fail on ").parse::<i64>().expect("server id"),
        other => panic!("X.Fail: {other:?}"),
    };
    let next = who(xc.call(XReq::args("Who", &args())));
    assert_ne!(next, failed_on, "the server that answered an error became sticky");
    for _ in 0..5 {
        assert_eq!(who(xc.call(XReq::args("Who", &args()))), next, "the server of the Ok call is sticky");
    }
    xc.close();
    servers.into_iter().for_each(|s| s.close());
}

/// With every server refusing connections and no timeout, each fail mode ends promptly
/// with the dial's error (the plan never waits with nothing running and no deadline),
/// through `call` and through `go`; once discovery lists a live server, calls succeed.
///
/// What this pins is the runtimes' side: every failed dial is reported to the run, and
/// a retry interval with nothing in flight is slept out, never waited on forever
/// (checked: a runtime that parks an attempt whose dial failed fails it). The core's
/// own guard (`CallRun::poll` ends a run asked to wait with nothing running and no
/// deadline) is not reachable from outside, since the fail-mode plan already ends
/// when nothing is in flight; the core tests cover it.
pub fn plan_ends_promptly_when_every_server_refuses(s: &dyn ServerRt, x: &dyn XClientRt) {
    let dead = vec![dead_addr(), dead_addr()];
    let interval = FailOptions { retry_interval: Duration::from_millis(20), ..Default::default() };
    let modes = [
        (FailMode::Failover, FailOptions::default()),
        (FailMode::Failover, interval),
        (FailMode::Failtry, interval),
        (FailMode::Failfast, FailOptions::default()),
        (FailMode::Failbackup, FailOptions::default()),
    ];
    for (mode, fail) in modes {
        let xc = x.xclient(&dead, XOpts { fail_mode: mode, fail, ..Default::default() });
        let x2 = xc.clone();
        let t0 = Instant::now();
        let r = within(Duration::from_secs(5), &format!("{mode:?} call"), move || x2.call(XReq::args("Who", &args())));
        assert_eq!(r.unwrap_err(), XFail::Connect, "{mode:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{mode:?} took {:?}", t0.elapsed());
        let x2 = xc.clone();
        let r = within(Duration::from_secs(5), &format!("{mode:?} go"), move || {
            x2.go(XReq::args("Who", &args())).expect("go").wait(Duration::from_secs(4))
        });
        assert_eq!(r.unwrap_err(), XFail::Connect, "{mode:?} through go");
    }

    let gate = Arc::new(Gate::default());
    let server = serve(s, 7, &gate);
    let xc = x.xclient(&dead, XOpts::default());
    assert_eq!(xc.call(XReq::args("Who", &args())).unwrap_err(), XFail::Connect);
    xc.update(&[server.address()]);
    assert_eq!(who(xc.call(XReq::args("Who", &args()))), 7);
    assert_eq!(xc.connected(), vec![server.address()]);
    xc.close();
    server.close();
}

/// Consistent hashing per call: calls with different arguments spread over the servers
/// (the default key is the encoded arguments, as Go keys on them), calls with equal
/// arguments or an equal explicit `hash_key` always reach the same server.
pub fn consistent_hash_keys_per_call(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let servers: Vec<Box<dyn ServerCtl>> = (1..=4).map(|id| serve(s, id, &gate)).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.address()).collect();
    let xc = x.xclient(&addrs, XOpts { consistent_hash: true, ..Default::default() });
    let mut seen = std::collections::HashSet::new();
    for a in 0..40 {
        let first = who(xc.call(XReq::args("Who", &Args { a, b: 0 })));
        assert_eq!(who(xc.call(XReq::args("Who", &Args { a, b: 0 }))), first, "equal arguments, same server");
        seen.insert(first);
    }
    assert!(seen.len() >= 3, "40 different arguments reached only {seen:?}");
    for key in ["user-1", "user-2", "user-3"] {
        let pinned = who(xc.call(XReq::args("Who", &args()).hash_key(key)));
        for a in 0..10 {
            assert_eq!(who(xc.call(XReq::args("Who", &Args { a, b: 1 }).hash_key(key))), pinned, "{key}");
        }
    }
    xc.close();
    for s in servers {
        s.close();
    }
}

/// The geo selector (`geo_selector`, Go's `ConfigGeoSelector`) sends every call to the
/// server nearest the client's position; servers without coordinates are never used.
pub fn geo_selector_picks_the_nearest_server(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let servers: Vec<Box<dyn ServerCtl>> = (1..=3).map(|id| serve(s, id, &gate)).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.address()).collect();
    // Server 1 in Paris, 2 in Berlin, 3 without coordinates; the client is in Hamburg.
    let metadata =
        vec!["latitude=48.85&longitude=2.35".to_owned(), "latitude=52.52&longitude=13.40".to_owned(), String::new()];
    let xc = x.xclient(&addrs, XOpts { geo: Some((53.55, 9.99)), metadata, ..Default::default() });
    for _ in 0..10 {
        assert_eq!(who(xc.call(XReq::args("Who", &args()))), 2);
    }
    xc.close();
    for s in servers {
        s.close();
    }
}

/// `send_raw` sends a whole message through the fail mode: its method, metadata and
/// serialize type reach the server as they are (failing over past a dead server); a
/// oneway message returns `None` once written.
pub fn send_raw_goes_through_the_fail_mode(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let server = serve(s, 1, &gate);
    let addrs = vec![dead_addr(), server.address()];
    let xc = x.xclient(&addrs, XOpts { fail_mode: FailMode::Failover, ..Default::default() });
    for _ in 0..4 {
        let mut m = Message::request(SerializeType::JSON, 0, "X", "Meta");
        m.metadata.insert("trace", "t-1");
        m.payload = codec::to_payload(SerializeType::JSON, &Args { a: 2, b: 3 }).expect("encode").into();
        let r = xc.send_raw(m).expect("send_raw").expect("a response");
        assert_eq!(r.header.serialize_type(), SerializeType::JSON);
        assert_eq!(reply(&r).c, 5);
        assert_eq!(r.metadata.get_str("trace").expect("utf-8"), Some("t-1"));
    }
    let mut note = Message::request(SerializeType::MSGPACK, 0, "X", "Note");
    note.header.set_oneway(true);
    note.payload = codec::to_payload(SerializeType::MSGPACK, &args()).expect("encode").into();
    assert!(xc.send_raw(note).expect("oneway send_raw").is_none());
    until(&gate.notes, 1, "the oneway message arrived");
    xc.close();
    server.close();
}

/// A bidirectional XClient: pushes from every server arrive on one receiver, tagged
/// with their server, and the end of a server's connection is signalled.
pub fn bidirectional_xclient_tags_pushes_and_lost_connections(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let servers: Vec<Box<dyn ServerCtl>> = (1..=2).map(|id| serve(s, id, &gate)).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.address()).collect();
    let (xc, next) = x.bidirectional(&addrs, XOpts::default());
    // Round robin: the two calls reach both servers; each pushes two messages first.
    let mut answered = std::collections::HashSet::new();
    for _ in 0..2 {
        answered.insert(who(xc.call(XReq::args("Push", &Args { a: 2, b: 0 }))));
    }
    assert_eq!(answered.len(), 2);
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 4 {
        match next(Duration::from_secs(5)).expect("a push") {
            rpcx_core::govern::XPush::Message { server, message } => {
                let text = String::from_utf8(message.payload.to_vec()).expect("utf-8");
                let id = if server.as_str() == addrs[0] { 1 } else { 2 };
                assert!(text.starts_with(&format!("{id}:")), "{text} from {server:?}");
                got.insert(text);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut servers = servers.into_iter();
    servers.next().expect("server 1").close();
    loop {
        match next(Duration::from_secs(5)).expect("the lost connection is signalled") {
            rpcx_core::govern::XPush::ConnectionLost { server } => {
                assert_eq!(server.as_str(), addrs[0]);
                break;
            }
            rpcx_core::govern::XPush::Message { .. } => {}
        }
    }
    xc.close();
    for s in servers {
        s.close();
    }
}

/// An XClient over `http@` (CONNECT tunnel) and `ws@` (WebSocket) servers: calls reach
/// both through their transports, a dead `http@` server is failed over, and pushes
/// come back through the tunnel and the WebSocket frames tagged with their server.
pub fn xclient_over_http_connect_and_websocket(s: &dyn ServerRt, x: &dyn XClientRt) {
    let gate = Arc::new(Gate::default());
    let servers: Vec<Box<dyn ServerCtl>> = (1..=2).map(|id| serve(s, id, &gate)).collect();
    let tunnelled = |i: usize, network: &str| servers[i].address().replacen("tcp@", &format!("{network}@"), 1);
    let addrs = vec![tunnelled(0, "http"), tunnelled(1, "ws")];
    let dead = dead_addr().replacen("tcp@", "http@", 1);
    let xc = x.xclient(
        &[dead.clone(), addrs[0].clone(), addrs[1].clone()],
        XOpts { fail_mode: FailMode::Failover, ..Default::default() },
    );
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..12 {
        answered.insert(who(xc.call(XReq::args("Who", &args()))));
    }
    assert_eq!(answered, [1, 2].into(), "both servers answered through their transports");
    let mut connected = xc.connected();
    connected.sort();
    assert_eq!(connected, addrs, "connections cached under their http@/ws@ keys");
    xc.close();

    let (xc, next) = x.bidirectional(&addrs, XOpts::default());
    let mut pushed_by = std::collections::BTreeSet::new();
    for _ in 0..2 {
        who(xc.call(XReq::args("Push", &Args { a: 1, b: 0 })));
    }
    while pushed_by.len() < 2 {
        match next(Duration::from_secs(5)).expect("a push through a tunnel") {
            rpcx_core::govern::XPush::Message { server, .. } => {
                pushed_by.insert(server.as_str().to_owned());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pushed_by.into_iter().collect::<Vec<_>>(), addrs);
    xc.close();
    for s in servers {
        s.close();
    }
}

/// An XClient's hooks: `select` steers every selection (Go's `WrapSelect`), `pre_call`
/// changes each attempt's metadata, `post_call` sees each attempt with the server it
/// went to, and a failed dial reaches `conn_create_failed` (no attempt, no `post_call`).
pub fn xclient_hooks_steer_selection_and_see_every_attempt(s: &dyn ServerRt, x: &dyn XClientRt) {
    struct Steer {
        to: Mutex<String>,
        log: Mutex<Vec<String>>,
        failed: AtomicUsize,
    }
    impl ClientHooks for Steer {
        fn select(
            &self,
            _path: &str,
            method: &str,
            servers: &[rpcx_core::govern::Instance],
            chosen: &mut Option<rpcx_core::govern::ServerKey>,
        ) {
            let to = self.to.lock().unwrap().clone();
            if method == "Who" && servers.iter().any(|i| i.key().as_str() == to) {
                *chosen = Some(rpcx_core::govern::ServerKey::new(&to));
            }
        }
        fn pre_call(&self, call: &mut OutgoingCall<'_>) -> Result<(), String> {
            call.metadata.insert("via", "hook");
            Ok(())
        }
        fn post_call(&self, call: &mut FinishedCall<'_>) {
            let m = String::from_utf8_lossy(call.service_method).into_owned();
            self.log.lock().unwrap().push(format!("{m} {} {}", call.remote, call.result.is_ok()));
        }
        fn conn_create_failed(&self, _server: &str, _error: &str) {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
    let gate = Arc::new(Gate::default());
    let (one, two) = (serve(s, 1, &gate), serve(s, 2, &gate));
    let dead = dead_addr();
    let hooks = Arc::new(Steer { to: Mutex::new(two.address()), log: Mutex::default(), failed: AtomicUsize::new(0) });
    let servers = [one.address(), two.address()];
    let xc = x.xclient(&servers, XOpts { hooks: vec![hooks.clone()], ..Default::default() });
    for _ in 0..4 {
        assert_eq!(who(xc.call(XReq::args("Who", &args()))), 2, "the hook chose server 2");
    }
    let m = xc.call(XReq::args("Meta", &args())).expect("Meta");
    assert_eq!(m.metadata.get_str("via").unwrap(), Some("hook"), "pre_call's metadata reached the server");
    let log = std::mem::take(&mut *hooks.log.lock().unwrap());
    assert_eq!(log.len(), 5, "{log:?}");
    assert!(log[..4].iter().all(|l| *l == format!("Who {} true", two.address())), "{log:?}");
    xc.close();

    // Failover from a dead server: the failed dial is reported, the attempt that ran is seen.
    let steer_dead =
        Arc::new(Steer { to: Mutex::new(dead.clone()), log: Mutex::default(), failed: AtomicUsize::new(0) });
    let opts = XOpts { fail_mode: FailMode::Failover, hooks: vec![steer_dead.clone()], ..Default::default() };
    let xc = x.xclient(&[dead.clone(), one.address()], opts);
    let r = xc.call(XReq::args("Who", &args()));
    // Every selection is steered to the dead server: the call fails after its retries.
    assert!(r.is_err(), "{r:?}");
    assert!(steer_dead.failed.load(Ordering::SeqCst) >= 1, "the failed dial was reported");
    assert!(steer_dead.log.lock().unwrap().is_empty(), "no attempt reached a connection");
    let m = xc.call(XReq::args("Meta", &args())).expect("Meta is not steered: failed over to server 1");
    assert_eq!(reply(&m).c, 3);
    xc.close();
    one.close();
    two.close();
}
