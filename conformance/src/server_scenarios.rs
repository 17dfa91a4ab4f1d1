//! Server-only scenarios where every server runtime must behave the same: the client is
//! a raw socket (plain or TLS), so nothing of a client runtime is in the way.

use crate::services::router;
use crate::{ServeOpts, ServerRt};
use bytes::Bytes;
use rpcx_core::service::{DEFAULT_CLOSE_LINGER, EVENTS_PER_WRITE, Router, ServerTotals, Service};
use rpcx_core::wire::{Message, SerializeType, StreamDecoder};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One request frame with raw payload bytes.
fn frame(path: &str, method: &str, seq: u64, payload: impl Into<Bytes>) -> Vec<u8> {
    let mut msg = Message::request(SerializeType::NONE, seq, path.to_owned(), method.to_owned());
    msg.payload = payload.into();
    let mut out = Vec::new();
    msg.encode(&Default::default(), &mut out).expect("encode");
    out
}

/// The next whole frame from `r` (panics on EOF, a read timeout or a bad frame).
fn next_message(r: &mut impl Read, dec: &mut StreamDecoder) -> Message {
    let mut buf = [0u8; 16 << 10];
    loop {
        if let Some(m) = dec.next_message().expect("a valid frame") {
            return m;
        }
        let n = r.read(&mut buf).expect("read a response");
        assert!(n > 0, "the server closed the connection");
        dec.feed(&buf[..n]);
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr.trim_start_matches("tcp@")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    s
}

/// Poll the server's counters until `ok` holds (at most 5 s); returns the last read.
fn eventually(stats: impl Fn() -> ServerTotals, what: &str, ok: impl Fn(&ServerTotals) -> bool) -> ServerTotals {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = stats();
        if ok(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: counters are {st:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A latch a handler waits on, with a bound.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Whether the gate opened within `limit`.
    fn wait(&self, limit: Duration) -> bool {
        let g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self.cv.wait_timeout_while(g, limit, |open| !*open).unwrap_or_else(|p| p.into_inner());
        *g
    }
}

/// `Batch.Quick` echoes; `Batch.Gate` blocks the thread polling it (the connection's
/// own when it is answered inline, as a ready handler is) until the gate opens or 3 s
/// pass, and answers which.
fn gate_router(gate: Arc<Gate>) -> Router {
    Router::new().service(Service::new("Batch").raw_method("Quick", |_c, p: Bytes| async move { Ok(p) }).raw_method(
        "Gate",
        move |_c, _p: Bytes| {
            let gate = gate.clone();
            async move {
                let opened = gate.wait(Duration::from_secs(3));
                Ok(Bytes::from_static(if opened { b"opened" } else { b"timed out" }))
            }
        },
    ))
}

/// Responses to a large pipelined batch start leaving before the whole batch is
/// handled: the server writes after every [`EVENTS_PER_WRITE`] requests. The batch
/// arrives in one write; request 100 blocks its connection's thread until the client
/// has read the first response, so a server that handles the whole read before
/// writing never lets it through (the gate times out).
pub fn server_writes_responses_while_a_pipelined_batch_is_handled(s: &dyn ServerRt) {
    const N: usize = 128;
    const GATE_AT: usize = 100;
    const { assert!(GATE_AT >= 3 * EVENTS_PER_WRITE, "the gate must come after several write budgets") };
    let gate = Arc::new(Gate::default());
    let server = s.serve(gate_router(gate.clone()), ServeOpts::default());
    let mut raw = connect(&server.address());
    let mut batch = Vec::new();
    for i in 0..N {
        let method = if i == GATE_AT { "Gate" } else { "Quick" };
        batch.extend_from_slice(&frame("Batch", method, i as u64 + 1, &b"x"[..]));
    }
    raw.write_all(&batch).expect("write the batch");
    let mut dec = StreamDecoder::new(Default::default());
    let first = next_message(&mut raw, &mut dec);
    gate.open();
    let mut gated = None;
    let mut seen = 1;
    if first.header.seq() == GATE_AT as u64 + 1 {
        gated = Some(first);
    }
    while seen < N {
        let m = next_message(&mut raw, &mut dec);
        seen += 1;
        if m.header.seq() == GATE_AT as u64 + 1 {
            gated = Some(m);
        }
    }
    let gated = gated.expect("the gated request was answered");
    assert_eq!(
        gated.payload.as_ref(),
        b"opened",
        "{}: no response left before request {GATE_AT} of the batch was handled",
        s.name()
    );
    drop(raw);
    server.close();
}

/// Dropping the handle of a running server leaves it serving (it runs in the
/// background until the process ends).
pub fn dropped_server_handle_keeps_serving(s: &dyn ServerRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let addr = server.address();
    drop(server);
    // Nothing signals "not shutting down": give a server that wrongly took the drop
    // for a shutdown the time to act on it.
    std::thread::sleep(Duration::from_millis(200));
    for seq in 1..=2u64 {
        let mut raw = connect(&addr);
        raw.write_all(&frame("Echo", "Raw", seq, &b"still here"[..])).expect("write");
        let m = next_message(&mut raw, &mut StreamDecoder::new(Default::default()));
        assert_eq!(m.payload.as_ref(), b"still here", "{}: connection {seq}", s.name());
    }
}

/// Shutting a server down does not wait long for a TLS peer that stopped reading:
/// with responses stuck in a full socket, `shutdown(grace)` returns within the grace
/// period plus one bounded close ([`DEFAULT_CLOSE_LINGER`] with no write timeout set).
pub fn server_shutdown_with_a_tls_peer_that_stopped_reading(s: &dyn ServerRt) {
    let (server_tls, client_tls) = rpcx_examples_common::self_signed_localhost_tls();
    let server = s.serve(router(false), ServeOpts { tls: Some(server_tls), ..Default::default() });
    let tcp = connect(&server.address());
    tcp.set_write_timeout(Some(Duration::from_millis(500))).expect("write timeout");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(client_tls, name).expect("tls client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // One echo first: the TLS connection is up and served.
    tls.write_all(&frame("Echo", "Raw", 1, &b"ping"[..])).expect("write over tls");
    let m = next_message(&mut tls, &mut StreamDecoder::new(Default::default()));
    assert_eq!(m.payload.as_ref(), b"ping");
    // Echoes of 1 MiB that fill both directions' buffers; never read a byte back.
    let big = frame("Echo", "Raw", 2, vec![7u8; 1 << 20]);
    for _ in 0..64 {
        if tls.write_all(&big).is_err() {
            break; // the server stopped reading too: both sides are full
        }
    }
    let grace = Duration::from_millis(200);
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        server.shutdown(grace);
        let _ = tx.send(());
    });
    let returned = rx.recv_timeout(Duration::from_secs(15)).is_ok();
    let waited = t0.elapsed();
    assert!(returned, "{}: shutdown still waiting after {waited:?} for a stalled TLS peer", s.name());
    let bound = grace + DEFAULT_CLOSE_LINGER + Duration::from_secs(2);
    assert!(waited < bound, "{}: shutdown took {waited:?} (bound {bound:?})", s.name());
    drop(tls);
}

/// The server's counters (the same type on every runtime) count connections,
/// requests, responses and protocol errors.
pub fn server_stats_count_connections_requests_and_protocol_errors(s: &dyn ServerRt) {
    let server = s.serve(router(false), ServeOpts::default());
    let stats = || server.stats().expect("the runtime has server stats");
    assert_eq!(stats(), ServerTotals::default(), "{}: a new server has counted nothing", s.name());
    let mut a = connect(&server.address());
    let mut dec = StreamDecoder::new(Default::default());
    for seq in 1..=3u64 {
        a.write_all(&frame("Echo", "Raw", seq, &b"count me"[..])).expect("write");
    }
    for _ in 0..3 {
        next_message(&mut a, &mut dec);
    }
    eventually(stats, "three requests answered on one open connection", |st| {
        st.connections_accepted == 1 && st.connections_open == 1 && st.requests == 3 && st.responses == 3
    });
    // A peer that sends garbage is a protocol error, and its connection is closed.
    let mut b = connect(&server.address());
    b.write_all(&[0x55u8; 32]).expect("write garbage");
    let mut rest = Vec::new();
    let _ = b.read_to_end(&mut rest);
    eventually(stats, "a protocol error", |st| st.connections_accepted == 2 && st.protocol_errors == 1);
    drop(a);
    let st = eventually(stats, "every connection closed", |st| st.connections_open == 0);
    assert_eq!((st.requests, st.responses), (3, 3), "{}: {st:?}", s.name());
    server.close();
}
