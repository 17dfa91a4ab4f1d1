//! Embedding `rpcx-core` in your own event loop, with no async runtime.
//!
//! The core's connection machines do no IO and read no clock, so any loop that can
//! move bytes and tell the time can drive them. This example runs a client machine and
//! a server machine over a real loopback TCP connection, both driven by one
//! hand-written, single-threaded loop over *non-blocking* `std::net` sockets.
//!
//! Each turn of the loop reads the clock once and gives every side one bounded step:
//!
//! 1. **Timers**: if `poll_timeout()` has passed, call `handle_timeout(now)` (a spurious
//!    call is harmless, so "has passed" can be approximate).
//! 2. **Input**: while `wants_read()` is true, read what the socket has and feed it to
//!    `handle_input(now, bytes)`; a read of 0 bytes is `handle_eof(now)`, an IO error is
//!    `abort(now, text)`. While `wants_read()` is false the bytes stay in the kernel:
//!    that is how a busy server pushes back on its client.
//! 3. **Commands**: the client application starts calls (`call`) and finally closes
//!    (`close`); the server application answers requests (`respond`).
//! 4. **Drain** after every input and command: `poll_transmit` appends whole frames to
//!    the socket's output buffer, then `poll_event` hands events to the application
//!    (which may issue more commands, so drain again until both are empty).
//! 5. **Output**: write the output buffer in order; on `WouldBlock` keep the unwritten
//!    rest for the next turn. `poll_transmit` is only asked for more while that buffer
//!    is small, so a slow socket leaves frames queued (and bounded) inside the machine.
//!
//! When a turn made no progress, the loop sleeps until the earliest `poll_timeout()` of
//! the two machines, but at most 1 ms (plain `std` has no readiness API; a real
//! embedding would block in `poll`/`epoll`/`kqueue` on the sockets with that timeout).
//!
//! The server answers `Arith.Mul` (MsgPack `{A, B}` -> `{C: A*B}`), answers unknown
//! methods with an rpcx error, and deliberately never answers `Arith.Never`. The client
//! makes 1000 `Arith.Mul` calls with up to 32 in flight, one call to an unknown method
//! (expects a remote error) and one `Arith.Never` call with a 200 ms deadline (expects
//! `CallError::TimedOut`), then closes gracefully: the close waits for every call to end,
//! the client shuts its socket, and the server sees the end of the stream.
//!
//! Every result is checked; any mismatch panics (non-zero exit status), and a global
//! 10-second deadline makes sure the example can never hang.
//!
//! ```text
//! cargo run -p rpcx-core --example custom_event_loop
//! ```
#![allow(clippy::print_stdout)]

use rpcx_core::codec;
use rpcx_core::conn::{
    CallError, CallSpec, ClientConfig, ClientConnection, ClientEvent, CloseMode, LostReason, Request, RequestId,
    RespondError, Response, ServerConfig, ServerConnection, ServerEvent,
};
use rpcx_core::wire::SerializeType;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// `Arith.Mul` calls the client makes.
const CALLS: u64 = 1000;
/// Most `Arith.Mul` calls in flight at once.
const WINDOW: u64 = 32;
/// Deadline of the `Arith.Never` call.
const NEVER_DEADLINE: Duration = Duration::from_millis(200);
/// The example fails rather than run longer than this.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest nap when nothing is ready.
const MAX_NAP: Duration = Duration::from_millis(1);
/// Reads per side per turn, so that one busy side cannot starve the other.
const READS_PER_TURN: usize = 8;
/// Ask `poll_transmit` for more frames only while fewer unwritten bytes than this wait.
const MAX_UNWRITTEN: usize = 64 << 10;

/// `Arith.Mul` arguments, named as the Go example names them.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[allow(non_snake_case)]
struct Args {
    A: i64,
    B: i64,
}

/// `Arith.Mul` reply.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[allow(non_snake_case)]
struct Reply {
    C: i64,
}

fn main() -> io::Result<()> {
    let started = Instant::now();
    let give_up = started + SAFETY_TIMEOUT;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client_stream = TcpStream::connect(listener.local_addr()?)?;
    // The handshake is complete once `connect` returns, so this accept does not block.
    let (server_stream, _) = listener.accept()?;

    let mut server = ServerSide {
        conn: ServerConnection::new(ServerConfig::default(), started),
        sock: Socket::new(server_stream)?,
        ignored: Vec::new(),
        lost: None,
    };
    let mut client = ClientSide {
        conn: ClientConnection::new(ClientConfig::default(), started),
        sock: Socket::new(client_stream)?,
        expected: HashMap::new(),
        started: 0,
        in_flight: 0,
        max_in_flight: 0,
        products: 0,
        products_done: None,
        remote_error: None,
        timed_out_after: None,
        never_sent_at: started,
        lost: None,
    };

    // The two special calls go first; the Arith.Mul calls follow as the window allows.
    let now = Instant::now();
    let seq = client.conn.call(now, CallSpec::new("Arith", "Pow", SerializeType::MSGPACK, mul_args(2, 10))).unwrap();
    client.expected.insert(seq, Expect::UnknownMethod);
    let mut never = CallSpec::new("Arith", "Never", SerializeType::MSGPACK, mul_args(1, 1));
    never.deadline = Some(now + NEVER_DEADLINE);
    let seq = client.conn.call(now, never).unwrap();
    client.expected.insert(seq, Expect::TimedOut);
    client.never_sent_at = now;

    // The event loop.
    while !(client.is_done() && server.is_done()) {
        let now = Instant::now();
        assert!(now < give_up, "safety timeout: the example did not finish within {SAFETY_TIMEOUT:?}");
        let mut progress = server.turn(now);
        progress |= client.turn(now);
        if !progress {
            let next = [client.conn.poll_timeout(), server.conn.poll_timeout()].into_iter().flatten().min();
            let nap = next.map_or(MAX_NAP, |t| t.saturating_duration_since(now).min(MAX_NAP));
            std::thread::sleep(nap);
        }
    }
    let elapsed = started.elapsed();

    // Check the outcome.
    assert_eq!(client.products, CALLS, "every Arith.Mul call returned the right product");
    assert!(client.expected.is_empty(), "calls never ended: {:?}", client.expected);
    assert_eq!(client.remote_error.as_deref(), Some("rpcx: can't find method Pow"));
    let timed_out_after = client.timed_out_after.expect("Arith.Never timed out");
    assert!(timed_out_after >= NEVER_DEADLINE, "Arith.Never failed before its deadline ({timed_out_after:?})");
    assert_eq!(client.lost, Some(LostReason::LocalClose), "the client closed gracefully");
    assert_eq!(server.lost, Some(LostReason::PeerClosed), "the server saw the client close");
    assert_eq!(server.ignored.len(), 1, "the server left exactly Arith.Never unanswered");
    assert_eq!(server.conn.stats().requests, CALLS + 2);
    assert_eq!(server.conn.stats().responses, CALLS + 1);

    println!("custom_event_loop: all checks passed in {elapsed:.1?}");
    let mul_time = client.products_done.expect("all products arrived").saturating_duration_since(started);
    println!(
        "  {CALLS} Arith.Mul calls answered correctly in {mul_time:.1?}, at most {} in flight",
        client.max_in_flight
    );
    println!("  Arith.Pow  -> remote error {:?}", client.remote_error.unwrap_or_default());
    println!("  Arith.Never -> CallError::TimedOut after {timed_out_after:.1?} (deadline {NEVER_DEADLINE:?})");
    let (cs, ss) = (client.conn.stats(), server.conn.stats());
    println!(
        "  client: {} calls, {} frames out, {} frames in; closed gracefully",
        cs.calls, cs.frames_out, cs.frames_in
    );
    println!("  server: {} requests, {} responses; saw the client's end of stream", ss.requests, ss.responses);
    Ok(())
}

/// MsgPack `{A: a, B: b}`.
fn mul_args(a: i64, b: i64) -> Vec<u8> {
    codec::to_payload(SerializeType::MSGPACK, &Args { A: a, B: b }).expect("MsgPack encodes plain structs")
}

/// A non-blocking socket with an output buffer that keeps what the kernel did not take.
struct Socket {
    stream: TcpStream,
    /// Bytes handed out by `poll_transmit` and not yet written; `out[written..]` is due.
    out: Vec<u8>,
    written: usize,
    read_buf: Vec<u8>,
    /// The peer's end of stream was read (or the socket failed): read no more.
    read_closed: bool,
}

/// What one read produced.
enum Input {
    Bytes(usize),
    Eof,
    NotReady,
    Failed(io::Error),
}

impl Socket {
    fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        // rpcx frames are small and latency-bound: do not let Nagle hold them back.
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            out: Vec::with_capacity(MAX_UNWRITTEN),
            written: 0,
            read_buf: vec![0; 64 << 10],
            read_closed: false,
        })
    }

    /// One non-blocking read into `read_buf`.
    fn read(&mut self) -> Input {
        loop {
            return match self.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    self.read_closed = true;
                    Input::Eof
                }
                Ok(n) => Input::Bytes(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Input::NotReady,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.read_closed = true;
                    Input::Failed(e)
                }
            };
        }
    }

    /// Whether `poll_transmit` may append more (bounds this buffer; the machine bounds
    /// its own queue).
    fn has_room(&self) -> bool {
        self.out.len() - self.written < MAX_UNWRITTEN
    }

    fn all_written(&self) -> bool {
        self.written == self.out.len()
    }

    /// Write as much of the output buffer as the kernel takes. Returns whether any byte
    /// was written.
    fn write(&mut self) -> io::Result<bool> {
        let mut wrote = false;
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.all_written() {
            self.out.clear();
            self.written = 0;
        }
        Ok(wrote)
    }
}

/// What the client expects a call to end with.
#[derive(Debug)]
enum Expect {
    Product(i64),
    UnknownMethod,
    TimedOut,
}

/// The client machine, its socket and its application.
struct ClientSide {
    conn: ClientConnection,
    sock: Socket,
    expected: HashMap<u64, Expect>,
    /// `Arith.Mul` calls started and in flight.
    started: u64,
    in_flight: u64,
    max_in_flight: u64,
    /// `Arith.Mul` calls answered correctly, and when the last one was.
    products: u64,
    products_done: Option<Instant>,
    remote_error: Option<String>,
    never_sent_at: Instant,
    timed_out_after: Option<Duration>,
    lost: Option<LostReason>,
}

impl ClientSide {
    /// Finished: the machine ended and its last bytes are out.
    fn is_done(&self) -> bool {
        self.lost.is_some() && self.sock.all_written()
    }

    /// One bounded step; returns whether anything happened.
    fn turn(&mut self, now: Instant) -> bool {
        if self.is_done() {
            return false;
        }
        let mut progress = false;
        // 1. Timers.
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            self.drain(now);
            progress = true;
        }
        // 2. Input, only while the machine wants it.
        for _ in 0..READS_PER_TURN {
            if !self.conn.wants_read() || self.sock.read_closed {
                break;
            }
            match self.sock.read() {
                Input::Bytes(n) => self.conn.handle_input(now, &self.sock.read_buf[..n]),
                Input::Eof => self.conn.handle_eof(now),
                Input::Failed(e) => self.conn.abort(now, e.to_string()),
                Input::NotReady => break,
            }
            self.drain(now);
            progress = true;
        }
        // 3. Commands: keep the window full, then close once every call is started.
        while self.started < CALLS && self.in_flight < WINDOW && !self.conn.is_closing() {
            let (a, b) = (self.started as i64, self.started as i64 + 1);
            let spec = CallSpec::new("Arith", "Mul", SerializeType::MSGPACK, mul_args(a, b));
            let seq = self.conn.call(now, spec).expect("the window is far below the machine's limits");
            self.expected.insert(seq, Expect::Product(a * b));
            self.started += 1;
            self.in_flight += 1;
            self.max_in_flight = self.max_in_flight.max(self.in_flight);
            progress = true;
            if self.started == CALLS {
                // Graceful: no new calls; the close completes when every call has ended.
                self.conn.close(now, CloseMode::Graceful);
            }
        }
        self.drain(now);
        // 4. Output.
        match self.sock.write() {
            Ok(wrote) => progress |= wrote,
            Err(e) => {
                self.conn.abort(now, e.to_string());
                self.drain(now);
                progress = true;
            }
        }
        // After a graceful close, everything handed out is written: shut the socket so
        // the server reads the end of the stream.
        if self.is_done() {
            let _ = self.sock.stream.shutdown(Shutdown::Write);
            progress = true;
        }
        progress
    }

    /// Transmit, then events, until both are empty (events can start more work).
    fn drain(&mut self, now: Instant) {
        loop {
            while self.sock.has_room() && self.conn.poll_transmit(&mut self.sock.out).is_some() {}
            let Some(event) = self.conn.poll_event() else { break };
            self.on_event(now, event);
        }
    }

    /// The client application: check each call's outcome against what was expected.
    fn on_event(&mut self, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::Response { seq, response } => match self.expected.remove(&seq) {
                Some(Expect::Product(want)) => {
                    let reply: Reply = codec::from_payload(response.header.serialize_type(), &response.payload)
                        .expect("a MsgPack {C} reply");
                    assert_eq!(reply.C, want, "wrong product for seq {seq}");
                    self.products += 1;
                    self.in_flight -= 1;
                    if self.products == CALLS {
                        self.products_done = Some(now);
                    }
                }
                other => panic!("seq {seq}: unexpected response (expected {other:?})"),
            },
            ClientEvent::Failed { seq, error } => match (self.expected.remove(&seq), error) {
                (Some(Expect::UnknownMethod), CallError::Remote(e)) => self.remote_error = Some(e.text),
                (Some(Expect::TimedOut), CallError::TimedOut) => {
                    self.timed_out_after = Some(now.saturating_duration_since(self.never_sent_at));
                }
                (want, error) => panic!("seq {seq}: failed with {error:?} (expected {want:?})"),
            },
            ClientEvent::ConnectionLost(reason) => self.lost = Some(reason),
            ClientEvent::Unblocked => {}
            other => panic!("unexpected client event {other:?}"),
        }
    }
}

/// The server machine, its socket and its application.
struct ServerSide {
    conn: ServerConnection,
    sock: Socket,
    /// Requests deliberately left unanswered (`Arith.Never`).
    ignored: Vec<RequestId>,
    lost: Option<LostReason>,
}

impl ServerSide {
    fn is_done(&self) -> bool {
        self.lost.is_some()
    }

    /// One bounded step; returns whether anything happened.
    fn turn(&mut self, now: Instant) -> bool {
        if self.is_done() {
            return false;
        }
        let mut progress = false;
        // 1. Timers (only the optional read timeout on a server).
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            self.drain(now);
            progress = true;
        }
        // 2. Input, only while the machine wants it (false while the application has
        //    too many requests unanswered or too many bytes are unsent).
        for _ in 0..READS_PER_TURN {
            if !self.conn.wants_read() || self.sock.read_closed {
                break;
            }
            match self.sock.read() {
                Input::Bytes(n) => self.conn.handle_input(now, &self.sock.read_buf[..n]),
                Input::Eof => self.conn.handle_eof(now),
                Input::Failed(e) => self.conn.abort(now, e.to_string()),
                Input::NotReady => break,
            }
            self.drain(now);
            progress = true;
        }
        // 3. Commands happen inside `drain`: each request is answered as it arrives.
        self.drain(now);
        // 4. Output.
        match self.sock.write() {
            Ok(wrote) => progress |= wrote,
            Err(e) => {
                self.conn.abort(now, e.to_string());
                self.drain(now);
                progress = true;
            }
        }
        progress
    }

    /// Transmit, then events, until both are empty (answering requests queues frames).
    fn drain(&mut self, now: Instant) {
        loop {
            while self.sock.has_room() && self.conn.poll_transmit(&mut self.sock.out).is_some() {}
            let Some(event) = self.conn.poll_event() else { break };
            match event {
                ServerEvent::Request(request) => self.dispatch(now, request),
                ServerEvent::ConnectionLost(reason) => self.lost = Some(reason),
                ServerEvent::Heartbeat { .. } | ServerEvent::Unblocked => {}
                other => panic!("unexpected server event {other:?}"),
            }
        }
    }

    /// The server application. Every request must be answered with `respond`, even a
    /// oneway one (nothing is sent then, but its in-flight slot is released).
    fn dispatch(&mut self, now: Instant, request: Request) {
        let msg = &request.message;
        let st = msg.header.serialize_type();
        let response = match (msg.service_path_str(), msg.service_method_str()) {
            (Ok("Arith"), Ok("Mul")) => match codec::from_payload::<Args>(st, &msg.payload) {
                Ok(args) => match codec::to_payload(st, &Reply { C: args.A.wrapping_mul(args.B) }) {
                    Ok(payload) => Response::ok(payload),
                    Err(e) => Response::error(format!("rpcx: {e}")),
                },
                Err(e) => Response::error(format!("rpcx: {e}")),
            },
            // Deliberately never answered, to show a client-side deadline. A real
            // server would answer by `request.deadline` or when its handler finishes.
            (Ok("Arith"), Ok("Never")) => {
                self.ignored.push(request.id);
                return;
            }
            (Ok("Arith"), method) => {
                Response::error(format!("rpcx: can't find method {}", method.unwrap_or("<not UTF-8>")))
            }
            (service, _) => Response::error(format!("rpcx: can't find service {}", service.unwrap_or("<not UTF-8>"))),
        };
        match self.conn.respond(now, request.id, response) {
            Ok(()) => {}
            // The connection ended while the request was being handled: nobody to tell.
            Err(RespondError::Closed) => {}
            Err(e) => panic!("respond: {e}"),
        }
    }
}
