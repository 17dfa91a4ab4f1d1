//! Checks made with a Rust client against a server that implements the interop
//! contract, written once against the runtime-neutral [`Client`] facade and run with
//! every client runtime. `rust_client_go_server.rs` runs them against the Go server;
//! `rust_client_rust_server.rs` runs the same checks against the Rust server on every
//! runtime, so a check that passes against Go and fails against Rust is a divergence of
//! ours.
//!
//! Every check takes the client runtime and the server address in rpcx form
//! (`tcp@HOST:PORT`, `unix@/path`), and blocks. Every call in it is bounded
//! (`rpcx_interop::client::CALL_BOUND`, or its own deadline).

use rpcx_core::codec;
use rpcx_core::wire::{CompressType, Message, MessageStatus, MessageType, Metadata, SerializeType};
use rpcx_interop::services::{ERR_AUTH_FAILED, ERR_SLOW_CONTEXT_DONE, error_text};
use rpcx_interop::{Args, CallErr, Client, ConnectOptions, ProtoArgs, ProtoReply, Reply, Runtime, noise, pattern};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The auth token of the auth servers.
pub(crate) const TOKEN: &str = "s3cret";

/// Bound on one check.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// Bound on waiting for a frame in the raw-frame checks.
const CALL: Duration = Duration::from_secs(10);

/// One `#[test]` per check, each with a fresh server from `$server` (an expression
/// giving a server with `rpcx_addr()`, e.g. `GoServer::tcp(None)`), bounded by
/// [`LIMIT`]:
///
/// * `checks!(client $rt, $server; names..)`: client checks, run with the client
///   runtime `$rt`;
/// * `checks!(raw $server; names..)`: raw-frame checks (no client runtime involved).
macro_rules! checks {
    (client $rt:expr, $server:expr; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let server = $server;
            let addr = server.rpcx_addr();
            rpcx_interop::run_bounded(stringify!($name), $crate::common::LIMIT, move || {
                $crate::common::$name($rt, &addr)
            });
        }
    )*};
    (raw $server:expr; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let server = $server;
            let addr = server.rpcx_addr();
            rpcx_interop::run_bounded(stringify!($name), $crate::common::LIMIT, move || $crate::common::$name(&addr));
        }
    )*};
}
pub(crate) use checks;

pub(crate) fn connect_with(rt: Runtime, addr: &str, opts: ConnectOptions) -> Client {
    Client::connect(rt, addr, opts).unwrap_or_else(|e| panic!("{rt:?} client: connect {addr}: {e}"))
}

pub(crate) fn connect(rt: Runtime, addr: &str) -> Client {
    connect_with(rt, addr, ConnectOptions::default())
}

fn assert_response(msg: &Message, st: SerializeType) {
    assert_eq!(msg.header.message_type(), MessageType::Response, "message type");
    assert_eq!(msg.header.status(), MessageStatus::NORMAL, "status; metadata {:?}", msg.metadata);
    assert_eq!(msg.header.serialize_type(), st, "the response uses the request's serialize type");
}

fn metadata_pairs(msg: &Metadata) -> Vec<(String, String)> {
    let mut v: Vec<_> = msg
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    v.sort();
    v
}

/// Arith.Mul and Arith.Add over JSON; the reply is exactly `{"C":200}`.
pub(crate) fn json(rt: Runtime, addr: &str) {
    let opts = ConnectOptions { serialize_type: SerializeType::JSON, ..Default::default() };
    let c = connect_with(rt, addr, opts);
    let r: Reply = c.call("Arith", "Mul", &Args { A: 10, B: 20 }).expect("Arith.Mul");
    assert_eq!(r.C, 200);
    let r: Reply = c.call("Arith", "Add", &Args { A: 10, B: 20 }).expect("Arith.Add");
    assert_eq!(r.C, 30);
    let payload = br#"{"A":10,"B":20}"#.to_vec();
    let msg =
        c.request("Arith", "Mul").serialize_type(SerializeType::JSON).call_raw(payload).expect("Arith.Mul raw JSON");
    assert_response(&msg, SerializeType::JSON);
    assert_eq!(&msg.payload[..], br#"{"C":200}"#);
}

/// Arith.Mul over MsgPack (the default); the reply bytes are `81 a1 43 cc c8`.
pub(crate) fn msgpack(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let r: Reply = c.call("Arith", "Mul", &Args { A: 10, B: 20 }).expect("Arith.Mul");
    assert_eq!(r.C, 200);
    let msg = c.request("Arith", "Mul").call_raw(&b"\x82\xa1A\x0a\xa1B\x14"[..]).expect("Arith.Mul raw msgpack");
    assert_response(&msg, SerializeType::MSGPACK);
    assert_eq!(&msg.payload[..], b"\x81\xa1C\xcc\xc8");
    // Negative numbers and wide integers decode both ways.
    let r: Reply = c.call("Arith", "Mul", &Args { A: -3, B: 1 << 40 }).expect("Arith.Mul");
    assert_eq!(r.C, -3 << 40);
}

/// ProtoArith.Mul with prost types; the reply bytes are `08 c8 01`.
pub(crate) fn protobuf(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let req = codec::to_proto(&ProtoArgs { a: 10, b: 20 });
    assert_eq!(req, [0x08, 0x0a, 0x10, 0x14]);
    let msg =
        c.request("ProtoArith", "Mul").serialize_type(SerializeType::PROTOBUF).call_raw(req).expect("ProtoArith.Mul");
    assert_response(&msg, SerializeType::PROTOBUF);
    assert_eq!(&msg.payload[..], [0x08, 0xc8, 0x01]);
    let reply: ProtoReply = codec::from_proto(&msg.payload).expect("decode ProtoReply");
    assert_eq!(reply.c, 200);
}

fn raw_echo(c: &Client, payload: Vec<u8>, compress: CompressType) -> Message {
    let msg = c
        .request("Echo", "Raw")
        .serialize_type(SerializeType::NONE)
        .compress(compress)
        .call_raw(payload.clone())
        .expect("Echo.Raw");
    assert_response(&msg, SerializeType::NONE);
    assert_eq!(msg.payload.len(), payload.len(), "echo length");
    assert!(msg.payload[..] == payload[..], "echo differs");
    msg
}

/// Echo.Raw (SerializeNone) with all 256 byte values.
pub(crate) fn raw(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let mut payload = b"raw bytes \x00\x01\x02\xff\xfe through Echo.Raw ".to_vec();
    payload.extend(0..=255u8);
    assert_eq!(payload.len(), 289);
    raw_echo(&c, payload, CompressType::NONE);
    // An empty raw payload works too.
    raw_echo(&c, Vec::new(), CompressType::NONE);
}

/// Gzip asked for, payload of 100 bytes (≤ 1024): nothing is compressed either way.
pub(crate) fn gzip_small(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let msg = raw_echo(&c, pattern(100), CompressType::GZIP);
    assert_eq!(msg.header.compress_type(), CompressType::NONE, "a 100-byte response must not be compressed");
}

/// Gzip with 5000 compressible bytes: the response is gzip on the wire too.
pub(crate) fn gzip_large(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let msg = raw_echo(&c, pattern(5000), CompressType::GZIP);
    assert_eq!(msg.header.compress_type(), CompressType::GZIP, "a 5000-byte response to a gzip request is gzip");
    // Without compression asked for, a large response is not compressed.
    let msg = raw_echo(&c, pattern(5000), CompressType::NONE);
    assert_eq!(msg.header.compress_type(), CompressType::NONE);
}

/// Echo.Meta: request metadata not starting with `__` comes back, nothing else.
pub(crate) fn metadata(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let (r, md) = c
        .request("Echo", "Meta")
        .metadata("k1", "v1")
        .metadata("k2", "v2")
        .metadata("__private", "x")
        .timeout(CALL)
        .call_with_metadata::<_, Reply>(&Args { A: 3, B: 4 })
        .expect("Echo.Meta");
    assert_eq!(r.C, 7);
    assert_eq!(
        metadata_pairs(&md),
        [("k1".to_owned(), "v1".to_owned()), ("k2".to_owned(), "v2".to_owned())],
        "response metadata (no __ServerTimeout, no __private)"
    );
    // No request metadata: no response metadata.
    let (_, md) = c.request("Echo", "Meta").call_with_metadata::<_, Reply>(&Args::default()).expect("Echo.Meta");
    assert!(md.is_empty(), "{md:?}");
}

fn expect_remote_error(c: &Client, service: &str, method: &str, want: &str) -> Message {
    let err = c.call::<_, Reply>(service, method, &Args { A: 7, B: 0 }).expect_err("the call must fail");
    let remote = err.remote().unwrap_or_else(|| panic!("{service}.{method}: {err:?} is not a remote error"));
    assert_eq!(remote.text, want);
    assert_eq!(err.to_string(), want);
    let res = &remote.response;
    assert_eq!(res.header.message_type(), MessageType::Response);
    assert_eq!(res.header.status(), MessageStatus::ERROR);
    assert_eq!(res.error_text().as_deref(), Some(want));
    assert_eq!(res.service_path_str(), Ok(service), "path is echoed");
    assert_eq!(res.service_method_str(), Ok(method), "method is echoed");
    (**res).clone()
}

/// Arith.Error: error text exactly `intentional error A=7`.
pub(crate) fn error(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    expect_remote_error(&c, "Arith", "Error", &error_text(7));
    // The connection is still usable after an error.
    let r: Reply = c.call("Arith", "Mul", &Args { A: 2, B: 3 }).expect("Arith.Mul");
    assert_eq!(r.C, 6);
}

/// Go's server sends the method's (zero) reply as payload alongside a method error:
/// `Arith.Error` answers `81 a1 43 00` (`Reply{C:0}`), README §2.
#[allow(dead_code)] // Go server only: our server deliberately sends no payload with an error.
pub(crate) fn error_reply_payload(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let res = expect_remote_error(&c, "Arith", "Error", &error_text(7));
    assert_eq!(&res.payload[..], b"\x81\xa1C\x00", "payload of a method error (Go: the zero reply)");
}

/// Unknown service: `rpcx: can't find service Nope`, empty payload.
pub(crate) fn unknown_service(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let res = expect_remote_error(&c, "Nope", "Mul", "rpcx: can't find service Nope");
    assert!(res.payload.is_empty());
}

/// Unknown method: `rpcx: can't find method Nope`, empty payload.
pub(crate) fn unknown_method(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let res = expect_remote_error(&c, "Arith", "Nope", "rpcx: can't find method Nope");
    assert!(res.payload.is_empty());
}

/// A oneway call, then a normal call on the same connection.
pub(crate) fn oneway(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    c.oneway("Arith", "Mul", &Args { A: 2, B: 3 }).expect("oneway Arith.Mul");
    std::thread::sleep(Duration::from_millis(300));
    let r: Reply = c.call("Arith", "Mul", &Args { A: 6, B: 7 }).expect("Arith.Mul");
    assert_eq!(r.C, 42);
    assert!(!c.is_shutdown());
}

fn heartbeat_count(c: &Client) -> i64 {
    let r: Reply = c.call("Stats", "Heartbeats", &Args::default()).expect("Stats.Heartbeats");
    r.C
}

/// Heartbeats every 100 ms over 1.5 s idle: the server counts ≥ 5 and the connection
/// stays up.
pub(crate) fn heartbeat(rt: Runtime, addr: &str) {
    let opts = ConnectOptions { heartbeat_interval: Some(Duration::from_millis(100)), ..Default::default() };
    let c = connect_with(rt, addr, opts);
    let before = heartbeat_count(&c);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!c.is_closing(), "client closed while idle with heartbeats");
    let after = heartbeat_count(&c);
    assert!(after >= 5 && after - before >= 5, "server counted {after} heartbeats ({} while idle)", after - before);
    assert!(!c.is_shutdown());
}

/// `__ServerTimeout` from a 3 s call timeout reaches the handler: 2000 < C ≤ 3000;
/// without a timeout the handler has no deadline (-1).
pub(crate) fn deadline(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let r: Reply =
        c.request("Echo", "Deadline").timeout(Duration::from_secs(3)).call(&Args::default()).expect("Echo.Deadline");
    assert!(r.C > 2000 && r.C <= 3000, "Echo.Deadline with 3 s: C={}", r.C);
    let r: Reply = c.call("Echo", "Deadline", &Args::default()).expect("Echo.Deadline");
    assert_eq!(r.C, -1, "no timeout, no deadline");
}

fn check_push(i: usize, m: &Message) {
    let k = i + 1;
    assert_eq!(m.header.message_type(), MessageType::Request, "push {k} type");
    assert!(m.header.is_oneway(), "push {k} oneway");
    assert!(!m.header.is_heartbeat(), "push {k} heartbeat");
    assert_eq!(m.header.status(), MessageStatus::NORMAL, "push {k} status");
    assert_eq!(m.header.serialize_type(), SerializeType::NONE, "push {k} serialize type");
    assert_eq!(m.header.compress_type(), CompressType::NONE, "push {k} compress type");
    assert_eq!(m.service_path_str(), Ok("Push"), "push {k} path");
    assert_eq!(m.service_method_str(), Ok("Note"), "push {k} method");
    assert_eq!(metadata_pairs(&m.metadata), [("i".to_owned(), k.to_string())], "push {k} metadata");
    assert_eq!(m.payload, format!("push-{k}").as_bytes(), "push {k} payload (in order)");
}

/// Push.Me {3}: three pushes, in order, then nothing more.
pub(crate) fn push(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let r: Reply = c.call("Push", "Me", &Args { A: 3, B: 0 }).expect("Push.Me");
    assert_eq!(r.C, 3);
    for i in 0..3 {
        let m =
            c.next_push(Duration::from_secs(5)).unwrap_or_else(|| panic!("push {} did not arrive within 5 s", i + 1));
        check_push(i, &m);
    }
    let extra = c.next_push(Duration::from_millis(300));
    assert!(extra.is_none(), "unexpected extra push: {extra:?}");
    assert_eq!(c.dropped_pushes(), 0);
}

/// The Go server writes every push before the reply (README §2: "The Go server writes
/// all pushes before the reply frame"), so once `Push.Me` has returned, all pushes have
/// already been delivered.
pub(crate) fn push_before_reply(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    for round in 0..20 {
        let r: Reply = c.call("Push", "Me", &Args { A: 3, B: 0 }).expect("Push.Me");
        assert_eq!(r.C, 3);
        for i in 0..3 {
            match c.next_push(Duration::ZERO) {
                Some(m) => check_push(i, &m),
                None => panic!("round {round}: push {} not delivered before the reply", i + 1),
            }
        }
    }
}

/// A 1 MiB incompressible payload through Echo.Raw.
pub(crate) fn big(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    raw_echo(&c, noise(1 << 20), CompressType::NONE);
}

/// 1000 concurrent calls on one client, each from its own thread.
pub(crate) fn concurrent(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let results: Vec<(i64, Result<Reply, CallErr>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..1000i64)
            .map(|i| {
                let c = &c;
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(scope, move || {
                        (i, c.request("Arith", "Mul").timeout(Duration::from_secs(20)).call(&Args { A: i, B: 2 }))
                    })
                    .expect("spawn a caller thread")
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("caller thread")).collect()
    });
    assert_eq!(results.len(), 1000);
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(i, r)| match r {
            Ok(r) if r.C == 2 * i => None,
            Ok(r) => Some(format!("call {i}: C={}", r.C)),
            Err(e) => Some(format!("call {i}: {e}")),
        })
        .collect();
    assert!(failures.is_empty(), "{} of 1000 calls failed, e.g. {}", failures.len(), failures[0]);
}

/// Arith.Slow {5000} with a 300 ms timeout fails after ≥ 250 ms and < 2 s, client-side
/// (timeout) or server-side (`slow: context done`).
pub(crate) fn slow_deadline(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let start = Instant::now();
    let res = c.request("Arith", "Slow").timeout(Duration::from_millis(300)).call::<_, Reply>(&Args { A: 5000, B: 0 });
    let err = res.expect_err("Arith.Slow {5000} with a 300 ms timeout must fail");
    let el = start.elapsed();
    assert!(el >= Duration::from_millis(250) && el < Duration::from_secs(2), "failed after {el:?}: {err}");
    let server_side = err.remote().is_some_and(|r| r.text == ERR_SLOW_CONTEXT_DONE);
    assert!(err.is_timeout() || server_side, "unexpected error: {err:?}");
    // Without a deadline the handler waits the full time.
    let r: Reply = c.call("Arith", "Slow", &Args { A: 50, B: 0 }).expect("Arith.Slow 50");
    assert_eq!(r.C, 50);
}

/// Auth server: the right token works (every request carries `__AUTH`).
pub(crate) fn auth_ok(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    for _ in 0..3 {
        let r: Reply = c
            .request("Arith", "Mul")
            .metadata("__AUTH", TOKEN)
            .call(&Args { A: 10, B: 20 })
            .expect("Arith.Mul with token");
        assert_eq!(r.C, 200);
    }
    // Heartbeats are not authenticated.
    let opts = ConnectOptions { heartbeat_interval: Some(Duration::from_millis(50)), ..Default::default() };
    let hb = connect_with(rt, addr, opts);
    std::thread::sleep(Duration::from_millis(400));
    assert!(!hb.is_closing(), "heartbeats without a token closed the connection");
}

fn wait_shutdown(c: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !c.is_shutdown() {
        assert!(Instant::now() < deadline, "{what}: connection still open 3 s after the auth failure");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Auth server: a wrong token fails with `auth failed`, then the server closes the
/// connection and later calls fail.
pub(crate) fn auth_fail(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let err = c
        .request("Arith", "Mul")
        .metadata("__AUTH", "wrong-token")
        .call::<_, Reply>(&Args { A: 10, B: 20 })
        .expect_err("a wrong token must fail");
    assert!(err.to_string().contains(ERR_AUTH_FAILED), "error {err}");
    assert_eq!(err.remote().map(|r| r.text.as_str()), Some(ERR_AUTH_FAILED));
    wait_shutdown(&c, "wrong token");
    let err2 = c
        .request("Arith", "Mul")
        .metadata("__AUTH", TOKEN)
        .call::<_, Reply>(&Args::default())
        .expect_err("a call on the closed connection must fail");
    assert!(err2.remote().is_none(), "second call: {err2:?}");

    // No token at all: same.
    let c = connect(rt, addr);
    let err = c.call::<_, Reply>("Arith", "Mul", &Args::default()).expect_err("no token");
    assert_eq!(err.remote().map(|r| r.text.as_str()), Some(ERR_AUTH_FAILED));
    wait_shutdown(&c, "no token");

    // A oneway request with a wrong token gets no answer, but the connection closes.
    let c = connect(rt, addr);
    c.request("Arith", "Mul").metadata("__AUTH", "wrong-token").oneway(&Args::default()).expect("oneway is sent");
    wait_shutdown(&c, "oneway with a wrong token");
}

// ---------------------------------------------------------------------------------
// Raw-frame checks: what is on the wire, below the client API.

/// A blocking stream of either kind.
enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// A bare connection speaking rpcx frames, to look at exactly what a server sends.
struct RawConn {
    io: Stream,
    buf: bytes::BytesMut,
}

/// What [`RawConn::recv`] saw.
#[derive(Debug)]
enum Recv {
    Frame(Box<Message>),
    Silence,
    Eof,
}

impl RawConn {
    fn connect(addr: &str) -> RawConn {
        let io = match addr.split_once('@') {
            Some(("unix", path)) => Stream::Unix(std::os::unix::net::UnixStream::connect(path).expect("unix connect")),
            Some((_, hostport)) => Stream::Tcp(tcp_connect(hostport)),
            None => Stream::Tcp(tcp_connect(addr)),
        };
        // A server that stops reading must not hang the check.
        match &io {
            Stream::Tcp(s) => s.set_write_timeout(Some(CALL)),
            Stream::Unix(s) => s.set_write_timeout(Some(CALL)),
        }
        .expect("set write timeout");
        RawConn { io, buf: bytes::BytesMut::new() }
    }

    fn send(&mut self, msgs: &[Message]) {
        let mut out = bytes::BytesMut::new();
        for m in msgs {
            m.encode(&rpcx_core::wire::EncoderConfig::default(), &mut out).expect("encode");
        }
        match &mut self.io {
            Stream::Tcp(s) => s.write_all(&out),
            Stream::Unix(s) => s.write_all(&out),
        }
        .expect("write");
    }

    /// The next frame (payload as on the wire), silence for `wait`, or EOF.
    fn recv(&mut self, wait: Duration) -> Recv {
        let dec = rpcx_core::wire::FrameDecoder::default();
        let deadline = Instant::now() + wait;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some(m) = dec.decode_raw(&mut self.buf).expect("the server sent a malformed frame") {
                return Recv::Frame(Box::new(m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::Silence;
            }
            let read = match &mut self.io {
                Stream::Tcp(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(&mut chunk)),
                Stream::Unix(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(&mut chunk)),
            };
            match read {
                Ok(0) => return Recv::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Recv::Silence;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Recv::Eof,
            }
        }
    }

    fn frame(&mut self, what: &str) -> Message {
        match self.recv(CALL) {
            Recv::Frame(m) => *m,
            other => panic!("{what}: expected a frame, got {other:?}"),
        }
    }
}

fn tcp_connect(hostport: &str) -> std::net::TcpStream {
    let addr: std::net::SocketAddr = hostport.parse().unwrap_or_else(|e| panic!("tcp address {hostport}: {e}"));
    std::net::TcpStream::connect_timeout(&addr, CALL).expect("tcp connect")
}

const MUL_10_20: &[u8] = b"\x82\xa1A\x0a\xa1B\x14";

fn raw_request(st: SerializeType, seq: u64, path: &'static str, method: &'static str, payload: &[u8]) -> Message {
    let mut m = Message::request(st, seq, path, method);
    m.payload = bytes::Bytes::copy_from_slice(payload);
    m
}

/// A heartbeat comes back as the same frame with the Response bit (path, method,
/// metadata, payload and seq echoed).
pub(crate) fn raw_heartbeat_echo(addr: &str) {
    let mut c = RawConn::connect(addr);
    let mut hb = raw_request(SerializeType::MSGPACK, 41, "X", "Y", b"\xd3\0\0\0\0\0\0\0\x01");
    hb.header.set_heartbeat(true);
    hb.metadata.insert("a", "b");
    c.send(std::slice::from_ref(&hb));
    let r = c.frame("heartbeat reply");
    let mut want = hb.clone();
    want.header.set_message_type(MessageType::Response);
    assert_eq!(r, want, "heartbeat echo");
}

/// A response echoes the request header: version, reserved nibble, seq, serialize type.
pub(crate) fn raw_header_echo(addr: &str) {
    let mut c = RawConn::connect(addr);
    let mut m = raw_request(SerializeType::MSGPACK, 0x0102_0304_0506_0708, "Arith", "Mul", MUL_10_20);
    m.header.set_version(5);
    m.header.set_reserved(3);
    c.send(&[m]);
    let r = c.frame("Arith.Mul");
    assert_eq!(r.header.to_bytes(), [0x08, 0x05, 0x80, 0x33, 1, 2, 3, 4, 5, 6, 7, 8], "response header");
    assert_eq!(&r.payload[..], b"\x81\xa1C\xcc\xc8");
    assert!(r.metadata.is_empty(), "{:?}", r.metadata);
}

/// Oneway requests (even failing ones) are never answered.
pub(crate) fn raw_oneway_silent(addr: &str) {
    let mut c = RawConn::connect(addr);
    let mut ok = raw_request(SerializeType::MSGPACK, 1, "Arith", "Mul", MUL_10_20);
    ok.header.set_oneway(true);
    let mut bad = raw_request(SerializeType::MSGPACK, 2, "Nope", "Mul", MUL_10_20);
    bad.header.set_oneway(true);
    let mut err = raw_request(SerializeType::MSGPACK, 3, "Arith", "Error", MUL_10_20);
    err.header.set_oneway(true);
    c.send(&[ok, bad, err]);
    assert!(matches!(c.recv(Duration::from_millis(300)), Recv::Silence), "a oneway request was answered");
    c.send(&[raw_request(SerializeType::MSGPACK, 9, "Arith", "Mul", MUL_10_20)]);
    let r = c.frame("Arith.Mul");
    assert_eq!(r.header.seq(), 9);
}

/// On the wire, a handler's pushes come before its reply (README §2: "The Go server
/// writes all pushes before the reply frame"), whatever the client does with them.
pub(crate) fn raw_push_order(addr: &str) {
    let mut c = RawConn::connect(addr);
    for round in 0..10 {
        let seq = 100 + round;
        c.send(&[raw_request(SerializeType::MSGPACK, seq, "Push", "Me", b"\x82\xa1A\x03\xa1B\x00")]);
        let frames: Vec<Message> = (0..4).map(|_| c.frame("Push.Me {3}")).collect();
        let order: Vec<&str> = frames
            .iter()
            .map(|m| if m.header.message_type() == MessageType::Response { "reply" } else { "push" })
            .collect();
        assert_eq!(order, ["push", "push", "push", "reply"], "round {round}: frame order on the wire");
        frames[..3].iter().enumerate().for_each(|(i, m)| check_push(i, m));
        assert_eq!(frames[3].header.seq(), seq, "round {round}: reply seq");
    }
}

/// The Go server authenticates in its read loop: after a failed auth it answers
/// `auth failed` and closes, and requests pipelined behind the failing one are never
/// read, let alone run or answered.
pub(crate) fn auth_stops_reading(addr: &str) {
    // Whether a server answers the pipelined requests can be a race; ten connections
    // make a server that does so fail this check reliably.
    for round in 0..10 {
        let mut c = RawConn::connect(addr);
        let mut frames = Vec::new();
        let mut bad = raw_request(SerializeType::MSGPACK, 0, "Arith", "Mul", MUL_10_20);
        bad.metadata.insert("__AUTH", "wrong-token");
        frames.push(bad);
        for seq in 1..=20 {
            let mut good = raw_request(SerializeType::MSGPACK, seq, "Arith", "Mul", MUL_10_20);
            good.metadata.insert("__AUTH", TOKEN);
            frames.push(good);
        }
        c.send(&frames);
        let mut seen = Vec::new();
        loop {
            match c.recv(CALL) {
                Recv::Frame(m) => seen.push((m.header.seq(), m.error_text())),
                Recv::Eof => break,
                Recv::Silence => {
                    panic!("round {round}: connection still open {CALL:?} after a failed auth; frames: {seen:?}")
                }
            }
        }
        assert_eq!(
            seen,
            [(0, Some(ERR_AUTH_FAILED.to_owned()))],
            "round {round}: only the auth failure may be answered before the connection closes"
        );
    }
}

/// `__ServerTimeout` is `time.Until(deadline).Milliseconds()`, which can be negative
/// (a client whose deadline already passed); Go's server then gives the handler a
/// deadline that far in the past: Echo.Deadline reports about -50.
pub(crate) fn deadline_negative(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let r: Reply =
        c.request("Echo", "Deadline").metadata("__ServerTimeout", "-50").call(&Args::default()).expect("Echo.Deadline");
    assert!((-60..=-50).contains(&r.C), "Echo.Deadline with __ServerTimeout=-50: C={}, Go: -50", r.C);
    // Garbage is ignored: no deadline.
    let r: Reply = c
        .request("Echo", "Deadline")
        .metadata("__ServerTimeout", "soon")
        .call(&Args::default())
        .expect("Echo.Deadline");
    assert_eq!(r.C, -1);
}

/// A serialize type with no codec: Go's framework error `can not find codec for <n>`.
pub(crate) fn unknown_codec_text(rt: Runtime, addr: &str) {
    let c = connect(rt, addr);
    let st = SerializeType::from_bits(7).expect("4-bit value");
    let err =
        c.request("Arith", "Mul").serialize_type(st).call_raw(MUL_10_20).expect_err("no codec for serialize type 7");
    assert_eq!(err.remote().map(|r| r.text.as_str()), Some("can not find codec for 7"));
}
