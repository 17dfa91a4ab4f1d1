//! The scenarios: each takes a server runtime and a client runtime.

use crate::services::{Args, Reply, TOKEN, router, router_counting};
use crate::{ClientRt, ConnOpts, Fail, ServeOpts, ServerRt, pattern, start};
use bytes::Bytes;
use rpcx_core::codec;
use rpcx_core::conn::CallSpec;
use rpcx_core::wire::{CompressType, SerializeType};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn spec(method: &str, st: SerializeType, args: &Args) -> CallSpec {
    let path = if method.starts_with("Echo.") { "Echo" } else { "Arith" };
    let method = method.rsplit('.').next().unwrap_or(method);
    CallSpec::new(path.to_owned(), method.to_owned(), st, codec::to_payload(st, args).expect("encode"))
}

fn reply(msg: Option<rpcx_core::wire::Message>) -> Reply {
    let m = msg.expect("a two-way call has a response");
    codec::from_payload(m.header.serialize_type(), &m.payload).expect("decode reply")
}

/// Wait (bounded) until `started` reaches `n`.
fn until_started(started: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while started.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "calls did not reach their handler");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Arith.Mul in JSON and MsgPack, raw bytes through Echo.Raw.
pub fn round_trip_every_serialize_type(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    for st in [SerializeType::JSON, SerializeType::MSGPACK] {
        let r = reply(client.call(spec("Mul", st, &Args { a: 10, b: 20 })).expect("Mul"));
        assert_eq!(r.c, 200, "{st:?}");
    }
    let raw = client.call(CallSpec::new("Echo", "Raw", SerializeType::NONE, &b"\x00\x01raw\xff"[..])).expect("Raw");
    assert_eq!(raw.expect("response").payload.as_ref(), b"\x00\x01raw\xff");
    server.close();
}

/// A 5000-byte payload gzip-compressed both ways (the response is compressed because the
/// request was and it is over 1024 bytes); a small one stays plain.
pub fn gzip_over_1024_both_ways(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts { compress: Some(CompressType::GZIP), ..Default::default() });
    for n in [100, 5000] {
        let mut sp = CallSpec::new("Echo", "Raw", SerializeType::NONE, pattern(n));
        sp.compress = CompressType::GZIP;
        let m = client.call(sp).expect("Raw").expect("response");
        assert_eq!(m.payload, pattern(n));
        let want = if n > 1024 { CompressType::GZIP } else { CompressType::NONE };
        assert_eq!(m.header.compress_type(), want, "response compression for {n} bytes");
    }
    server.close();
}

/// Request metadata reaches the handler; response metadata reaches the caller.
pub fn metadata_both_ways(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let mut sp = spec("Echo.Meta", SerializeType::MSGPACK, &Args { a: 1, b: 2 });
    sp.metadata.insert("k1", "v1");
    sp.metadata.insert("k2", "v2");
    let m = client.call(sp).expect("Meta").expect("response");
    assert_eq!(m.metadata.get_str("k1").unwrap(), Some("v1"));
    assert_eq!(m.metadata.get_str("k2").unwrap(), Some("v2"));
    assert_eq!(m.metadata.len(), 2);
    server.close();
}

/// A handler error arrives with its text.
pub fn error_response(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let e = client.call(spec("Error", SerializeType::MSGPACK, &Args { a: 7, b: 0 })).unwrap_err();
    assert_eq!(e, Fail::Remote("intentional error A=7".into()));
    server.close();
}

/// A handler that panics before its future exists (and one that panics while running)
/// answers Go's internal-error text, 100 times on one connection, and the connection
/// and its other calls carry on.
pub fn panicking_handlers_keep_the_connection(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    for i in 0..100 {
        let e = client.call(spec("Div", SerializeType::MSGPACK, &Args { a: i, b: 0 })).unwrap_err();
        assert_eq!(
            e,
            Fail::Remote("[service internal error]: attempt to divide by zero, method: Div".into()),
            "call {i}"
        );
    }
    let r = reply(client.call(spec("Div", SerializeType::MSGPACK, &Args { a: 42, b: 6 })).expect("Div"));
    assert_eq!(r.c, 7);
    let r = reply(client.call(spec("Mul", SerializeType::JSON, &Args { a: 6, b: 7 })).expect("Mul"));
    assert_eq!(r.c, 42);
    assert!(!client.is_shutdown(), "the connection survived");
    server.close();
}

/// Go's texts for an unknown service and method.
pub fn unknown_service_and_method(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let e = client.call(CallSpec::new("Nope", "Mul", SerializeType::MSGPACK, Bytes::new())).unwrap_err();
    assert_eq!(e, Fail::Remote("rpcx: can't find service Nope".into()));
    let e = client.call(CallSpec::new("Arith", "Nope", SerializeType::MSGPACK, Bytes::new())).unwrap_err();
    assert_eq!(e, Fail::Remote("rpcx: can't find method Nope".into()));
    server.close();
}

/// A oneway call completes without a response; the connection keeps working.
pub fn oneway(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let mut sp = spec("Mul", SerializeType::MSGPACK, &Args { a: 1, b: 1 });
    sp.oneway = true;
    assert_eq!(client.call(sp).expect("oneway"), None);
    assert_eq!(reply(client.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 3, b: 4 })).unwrap()).c, 12);
    server.close();
}

/// Pushes sent by a handler arrive in order, before its reply.
pub fn server_push(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let mut sp = spec("Mul", SerializeType::MSGPACK, &Args { a: 3, b: 0 });
    sp.service_path = Bytes::from_static(b"Push");
    sp.service_method = Bytes::from_static(b"Me");
    assert_eq!(reply(client.call(sp).expect("Push.Me")).c, 3);
    for k in 1..=3 {
        let m = client.next_push(Duration::from_secs(5)).expect("push arrives");
        assert_eq!((m.service_path_str().unwrap(), m.service_method_str().unwrap()), ("Push", "Note"));
        assert_eq!(m.payload, format!("push-{k}").into_bytes());
        assert_eq!(m.metadata.get_str("i").unwrap(), Some(k.to_string().as_str()));
        assert_eq!(m.header.serialize_type(), SerializeType::NONE);
    }
    server.close();
}

/// Client heartbeats keep an idle connection alive past the server's read timeout,
/// while an idle connection without them is closed.
pub fn heartbeat(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server =
        s.serve(router(false), ServeOpts { read_timeout: Some(Duration::from_millis(300)), ..Default::default() });
    let with_hb =
        c.connect(&server.address(), ConnOpts { heartbeat: Some(Duration::from_millis(50)), ..Default::default() });
    let without = c.connect(&server.address(), ConnOpts::default());
    let t0 = Instant::now();
    while !without.is_shutdown() {
        assert!(t0.elapsed() < Duration::from_secs(3), "the idle connection was not closed by the read timeout");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(600).saturating_sub(t0.elapsed()));
    assert!(!with_hb.is_shutdown(), "heartbeats kept the connection alive");
    assert_eq!(reply(with_hb.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 5, b: 5 })).unwrap()).c, 25);
    server.close();
}

/// A deadline reaches the server as `__ServerTimeout`, and a call past its deadline
/// fails with a timeout while the connection stays usable.
pub fn deadline(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let mut sp = spec("Deadline", SerializeType::MSGPACK, &Args::default());
    sp.deadline = Some(Instant::now() + Duration::from_secs(3));
    let ms = reply(client.call(sp).unwrap()).c;
    assert!((2000..=3000).contains(&ms), "handler saw {ms} ms left");
    let mut slow = spec("Slow", SerializeType::MSGPACK, &Args { a: 5000, b: 0 });
    slow.deadline = Some(Instant::now() + Duration::from_millis(150));
    let t0 = Instant::now();
    assert_eq!(client.call(slow).unwrap_err(), Fail::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(reply(client.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 2, b: 2 })).unwrap()).c, 4);
    server.close();
}

/// The right token passes; a wrong one gets `auth failed` and the connection closes.
pub fn auth_pass_and_fail(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(true), ServeOpts::default());
    let good = c.connect(&server.address(), ConnOpts::default());
    let mut sp = spec("Mul", SerializeType::MSGPACK, &Args { a: 2, b: 3 });
    sp.metadata.insert("__AUTH", TOKEN);
    assert_eq!(reply(good.call(sp).unwrap()).c, 6);
    let bad = c.connect(&server.address(), ConnOpts::default());
    let mut sp = spec("Mul", SerializeType::MSGPACK, &Args { a: 2, b: 3 });
    sp.metadata.insert("__AUTH", "wrong");
    assert_eq!(bad.call(sp).unwrap_err(), Fail::Remote("auth failed".into()));
    let t0 = Instant::now();
    while !bad.is_shutdown() {
        assert!(t0.elapsed() < Duration::from_secs(3), "connection not closed after the auth failure");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.close();
}

/// Graceful shutdown: calls in flight complete; afterwards calls fail.
pub fn graceful_shutdown_with_calls_in_flight(s: &dyn ServerRt, c: &dyn ClientRt) {
    let started = Arc::new(AtomicUsize::new(0));
    let server = s.serve(router_counting(false, started.clone()), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let calls: Vec<_> =
        (0..5).map(|_| start(&client, spec("Slow", SerializeType::MSGPACK, &Args { a: 300, b: 0 }))).collect();
    until_started(&started, 5);
    server.shutdown(Duration::from_secs(5));
    for h in calls {
        assert_eq!(reply(h.join().unwrap().expect("in-flight call completed")).c, 300);
    }
    let after = client.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 1, b: 1 }));
    assert!(after.is_err(), "calls after shutdown fail: {after:?}");
}

/// The server dies mid-call: the pending call fails promptly with connection lost.
pub fn server_killed_mid_call(s: &dyn ServerRt, c: &dyn ClientRt) {
    let started = Arc::new(AtomicUsize::new(0));
    let server = s.serve(router_counting(false, started.clone()), ServeOpts::default());
    let client = c.connect(&server.address(), ConnOpts::default());
    let h = start(&client, spec("Slow", SerializeType::MSGPACK, &Args { a: 10_000, b: 0 }));
    until_started(&started, 1);
    let t0 = Instant::now();
    server.close();
    assert_eq!(h.join().unwrap().unwrap_err(), Fail::Lost);
    assert!(t0.elapsed() < Duration::from_secs(3), "failed promptly");
}

/// The in-process transport (`memu@name`): a server bound to a name in this process is
/// reachable from every runtime's client, with no port or file.
pub fn in_process_memu(s: &dyn ServerRt, c: &dyn ClientRt) {
    let name = format!("memu@conformance-{}-{}-{}", s.name(), c.name(), std::process::id());
    let server = s.serve(router(false), ServeOpts { addr: Some(name.clone()), ..Default::default() });
    assert_eq!(server.address(), name);
    let client = c.connect(&name, ConnOpts::default());
    assert_eq!(reply(client.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 6, b: 7 })).unwrap()).c, 42);
    let raw = client.call(CallSpec::new("Echo", "Raw", SerializeType::NONE, pattern(3000))).expect("Raw");
    assert_eq!(raw.expect("response").payload, pattern(3000));
    server.close();
}

/// rpcx through an HTTP CONNECT tunnel (`http@`): the server bound to an `http@`
/// address names it so, the client tunnels, and calls, pushes and a `tcp@` client on
/// the same port all work.
pub fn http_connect_tunnel(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts { addr: Some("http@127.0.0.1:0".into()), ..Default::default() });
    let addr = server.address();
    assert!(addr.starts_with("http@"), "{addr}");
    let client = c.connect(&addr, ConnOpts::default());
    assert_eq!(reply(client.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 6, b: 7 })).unwrap()).c, 42);
    let raw = client.call(CallSpec::new("Echo", "Raw", SerializeType::NONE, pattern(5000))).expect("Raw");
    assert_eq!(raw.expect("response").payload, pattern(5000));
    let mut sp = spec("Mul", SerializeType::MSGPACK, &Args { a: 2, b: 0 });
    sp.service_path = Bytes::from_static(b"Push");
    sp.service_method = Bytes::from_static(b"Me");
    assert_eq!(reply(client.call(sp).expect("Push.Me")).c, 2);
    assert_eq!(client.next_push(Duration::from_secs(5)).expect("a push through the tunnel").payload, &b"push-1"[..]);
    let plain = c.connect(&addr.replacen("http@", "tcp@", 1), ConnOpts::default());
    assert_eq!(reply(plain.call(spec("Mul", SerializeType::JSON, &Args { a: 3, b: 3 })).unwrap()).c, 9);
    server.close();
}

/// rpcx over WebSocket (`ws@`): calls, a large payload, pushes and heartbeats in
/// WebSocket frames, and a `tcp@` client on the same port.
pub fn websocket_transport(s: &dyn ServerRt, c: &dyn ClientRt) {
    let server = s.serve(router(false), ServeOpts { addr: Some("ws@127.0.0.1:0".into()), ..Default::default() });
    let addr = server.address();
    assert!(addr.starts_with("ws@"), "{addr}");
    let client = c.connect(&addr, ConnOpts { heartbeat: Some(Duration::from_millis(50)), ..Default::default() });
    assert_eq!(reply(client.call(spec("Mul", SerializeType::MSGPACK, &Args { a: 6, b: 7 })).unwrap()).c, 42);
    for n in [10, 70_000, 1 << 20] {
        let raw = client.call(CallSpec::new("Echo", "Raw", SerializeType::NONE, pattern(n))).expect("Raw");
        assert_eq!(raw.expect("response").payload, pattern(n), "{n} bytes");
    }
    let mut sp = spec("Mul", SerializeType::MSGPACK, &Args { a: 2, b: 0 });
    sp.service_path = Bytes::from_static(b"Push");
    sp.service_method = Bytes::from_static(b"Me");
    assert_eq!(reply(client.call(sp).expect("Push.Me")).c, 2);
    assert_eq!(client.next_push(Duration::from_secs(5)).expect("a push over WebSocket").payload, &b"push-1"[..]);
    // Heartbeats (every 50 ms) reach the server through the frames and are echoed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().expect("server counters").heartbeats < 2 {
        assert!(Instant::now() < deadline, "no heartbeats over WebSocket: {:?}", server.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        reply(client.call(spec("Mul", SerializeType::JSON, &Args { a: 5, b: 5 })).unwrap()).c,
        25,
        "after heartbeats"
    );
    let plain = c.connect(&addr.replacen("ws@", "tcp@", 1), ConnOpts::default());
    assert_eq!(reply(plain.call(spec("Mul", SerializeType::JSON, &Args { a: 3, b: 3 })).unwrap()).c, 9);
    server.close();
}

/// A server at its in-flight limit stops reading: a peer that floods it with requests
/// is pushed back by TCP (its writes block) instead of the server buffering everything.
/// Server-only (a raw socket is the client).
pub fn server_at_max_in_flight_pushes_back(s: &dyn ServerRt) {
    use std::io::Write;
    let started = Arc::new(AtomicUsize::new(0));
    let opts = ServeOpts { max_in_flight: Some(1), ..Default::default() };
    let server = s.serve(router_counting(false, started.clone()), opts);
    let addr = server.address();
    let frame = |method: &'static str, a: i64| {
        let mut msg = rpcx_core::wire::Message::request(SerializeType::MSGPACK, 0, "Arith", method);
        msg.payload = codec::to_payload(SerializeType::MSGPACK, &Args { a, b: 1 }).expect("encode").into();
        let mut frame = Vec::new();
        msg.encode(&Default::default(), &mut frame).expect("encode");
        frame
    };
    let mut raw = std::net::TcpStream::connect(addr.trim_start_matches("tcp@")).expect("connect");
    raw.write_all(&frame("Slow", 5_000)).expect("write");
    until_started(&started, 1);
    let mut flood = Vec::new();
    while flood.len() < 1 << 20 {
        flood.extend_from_slice(&frame("Mul", 7));
    }
    raw.set_write_timeout(Some(Duration::from_millis(500))).expect("timeout");
    let limit = 64usize << 20;
    let mut sent = 0usize;
    while sent < limit {
        match raw.write(&flood) {
            Ok(n) => sent += n,
            Err(_) => break, // the write timed out: the server pushes back
        }
    }
    assert!(sent < limit, "{}: the server kept reading ({sent} bytes) at its in-flight limit", s.name());
    drop(raw);
    server.close();
}

/// Closing a server does not wait for a peer that stopped reading: with responses stuck
/// in a full socket (no write timeout set), `close` still returns promptly. Server-only
/// (a raw socket is the client).
pub fn server_close_does_not_wait_for_a_peer_that_stopped_reading(s: &dyn ServerRt) {
    use std::io::Write;
    let server = s.serve(router(false), ServeOpts::default());
    let addr = server.address();
    let mut msg = rpcx_core::wire::Message::request(SerializeType::NONE, 0, "Echo", "Raw");
    msg.payload = vec![7u8; 1 << 20].into();
    let mut frame = Vec::new();
    msg.encode(&Default::default(), &mut frame).expect("encode");
    let mut raw = std::net::TcpStream::connect(addr.trim_start_matches("tcp@")).expect("connect");
    raw.set_write_timeout(Some(Duration::from_millis(500))).expect("timeout");
    // Requests whose echoes fill both directions' buffers; never read a byte back.
    for _ in 0..64 {
        if raw.write_all(&frame).is_err() {
            break; // the server stopped reading too: both sides are full
        }
    }
    let t0 = Instant::now();
    server.close();
    assert!(t0.elapsed() < Duration::from_secs(5), "{}: close waited {:?} for a stalled peer", s.name(), t0.elapsed());
    drop(raw);
}
