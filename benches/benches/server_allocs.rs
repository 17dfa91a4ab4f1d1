//! Heap allocations per call on the server path, counted by a counting global allocator
//! (a binary of its own, so nothing else shares the counter).
//!
//! In process, no sockets, no executor: a [`Dispatcher`] with a router serving
//! `Arith.Mul` (msgpack `{A,B}` -> `{C}`) and a raw echo (`Hello.Say`, the rpcx
//! benchmark's 581-byte shape), a [`Session`] and its [`ServerConnection`] driven per
//! the drive contract: encoded request frames go in with `handle_input`, then output
//! (`poll_transmit` into a reused buffer) and `Session::dispatch` until `Idle`. The push
//! queue hands out one cached [`Pusher`], as the runtimes' queues do.
//!
//! Each scenario is warmed up (buffers, tables and queues reach their steady capacity),
//! then [`CALLS`] calls are counted, fed 1 and 32 frames per input. Reported: heap
//! allocations and bytes requested per call, and the best and mean of timed rounds.
//! Exits non-zero when a scenario allocates more than its threshold per call (see
//! [`SCENARIOS`]), so a regression fails the run.
//!
//! `cargo bench -p rpcx-benches --bench server_allocs`

#![allow(clippy::print_stdout)]

use bytes::Bytes;
use rpcx_benches::Args;
use rpcx_core::conn::ServerConnection;
use rpcx_core::service::{
    Context, Dispatch, Dispatcher, Peer, Push, PushQueue, PushSink, Pusher, Router, ServerSettings, Service, Session,
};
use rpcx_core::wire::{EncoderConfig, Message, Metadata, SERVER_TIMEOUT_KEY, SerializeType};
use serde::Serialize;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: rpcx_benches::CountingAlloc = rpcx_benches::CountingAlloc;

fn allocated() -> (u64, u64) {
    rpcx_benches::allocated()
}

/// Calls counted per scenario and batch size (after the warm-up).
const CALLS: usize = 32 * 1000;
/// Timed rounds of [`CALLS`] calls for the rate columns.
const ROUNDS: usize = 20;

#[derive(Serialize, serde::Deserialize)]
#[allow(non_snake_case)]
struct Reply {
    C: i64,
}

/// A push queue as a runtime keeps one: a single pusher made on first use and cloned
/// for every request (the benchmark's handlers push nothing).
#[derive(Default)]
struct Pushes(Option<Pusher>);

struct NoSink;

impl PushSink for NoSink {
    fn push(&self, _: Bytes, _: Bytes, _: Metadata, _: Bytes) -> Result<(), rpcx_core::conn::PushError> {
        Err(rpcx_core::conn::PushError::Closed)
    }
}

impl PushQueue for Pushes {
    fn pusher(&mut self) -> Pusher {
        self.0.get_or_insert_with(|| Pusher::new(Arc::new(NoSink))).clone()
    }
    fn next_push(&mut self) -> Option<Push> {
        None
    }
}

fn router() -> Router {
    Router::new()
        .service(Service::new("Arith").method("Mul", |_c: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) }))
        .service(Service::new("Hello").raw_method("Say", |_c: Context, p: Bytes| async move { Ok(p) }))
}

/// A request scenario: which call, with which metadata.
struct Scenario {
    name: &'static str,
    mul: bool,
    metadata: bool,
    /// Most allocations per call allowed (the figure reached, rounded up a little).
    max_allocs: f64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "echo 581B", mul: false, metadata: false, max_allocs: 1.05 },
    Scenario { name: "echo 581B +md+timeout", mul: false, metadata: true, max_allocs: 1.05 },
    Scenario { name: "Arith.Mul", mul: true, metadata: false, max_allocs: 4.05 },
    Scenario { name: "Arith.Mul +md+timeout", mul: true, metadata: true, max_allocs: 4.05 },
];

fn request(s: &Scenario, seq: u64) -> Message {
    let mut m = if s.mul {
        let mut m = Message::request(SerializeType::MSGPACK, seq, "Arith", "Mul");
        m.payload = rmp_payload(&Args { A: 7, B: 6 + seq as i64 % 5 });
        m
    } else {
        let mut m = Message::request(SerializeType::MSGPACK, seq, "Hello", "Say");
        m.payload = Bytes::from(vec![b'x'; 581]);
        m
    };
    if s.metadata {
        for i in 0..3 {
            m.metadata.insert(Bytes::from(format!("key-{i}")), Bytes::from(format!("value-{i}")));
        }
        m.metadata.insert(SERVER_TIMEOUT_KEY, "60000");
    }
    m
}

fn rmp_payload(a: &Args) -> Bytes {
    Bytes::from(rpcx_core::codec::to_payload(SerializeType::MSGPACK, a).expect("encodes"))
}

/// One connection's server, driven by hand.
struct Rig {
    conn: ServerConnection,
    session: Session,
    pushes: Pushes,
    out: Vec<u8>,
    now: Instant,
}

impl Rig {
    fn new(d: &Arc<Dispatcher>) -> Self {
        let now = Instant::now();
        let session = d.session(Arc::new(Peer::named("bench")), now).expect("no hook refuses");
        Self { conn: session.connection(now), session, pushes: Pushes::default(), out: Vec::new(), now }
    }

    /// Feed `input` (whole frames), drive until idle; returns the output bytes.
    fn turn(&mut self, input: &[u8]) -> usize {
        self.out.clear();
        self.conn.handle_input(self.now, input);
        loop {
            while self.conn.poll_transmit(&mut self.out).is_some() {}
            let r = self.session.dispatch(&mut self.conn, self.now, &mut self.pushes, &mut |_| {
                panic!("every handler of the benchmark finishes inline")
            });
            if r == Dispatch::Idle {
                break;
            }
        }
        while self.conn.poll_transmit(&mut self.out).is_some() {}
        black_box(&self.out);
        self.out.len()
    }
}

fn main() {
    // The counter must see allocations, or every figure below would read 0.
    let before = allocated().0;
    drop(black_box(Vec::<u8>::with_capacity(64)));
    assert!(allocated().0 > before, "the counting allocator is installed");

    let d = Arc::new(Dispatcher::new(router(), ServerSettings::default()));
    let cfg = EncoderConfig::default();
    let mut failed = false;
    println!("{CALLS} calls counted per row after a warm-up; M calls/s of the best and the mean of {ROUNDS} rounds");
    println!(
        "{:24} {:>6} {:>11} {:>10} {:>7} {:>7}",
        "scenario", "frames", "allocs/call", "bytes/call", "best", "mean"
    );
    for s in SCENARIOS {
        for per_input in [1usize, 32] {
            // The frames of one input, encoded once; the server sees the same seqs again
            // in every input (it answers each before the next arrives).
            let mut input = Vec::new();
            for seq in 0..per_input as u64 {
                request(s, seq + 1).encode(&cfg, &mut input).expect("encodes");
            }
            let mut rig = Rig::new(&d);
            let expect = rig.turn(&input);
            assert!(expect > 0, "answered");
            for _ in 0..2000 / per_input + 10 {
                rig.turn(&input);
            }
            let inputs = CALLS / per_input;
            let a = allocated();
            for _ in 0..inputs {
                assert_eq!(rig.turn(&input), expect, "the same answers each time");
            }
            let b = allocated();
            let allocs = (b.0 - a.0) as f64 / CALLS as f64;
            let bytes = (b.1 - a.1) as f64 / CALLS as f64;
            let (mut best, mut total) = (f64::MAX, 0.0);
            for _ in 0..ROUNDS {
                let t = Instant::now();
                for _ in 0..inputs {
                    rig.turn(&input);
                }
                let e = t.elapsed().as_secs_f64();
                best = best.min(e);
                total += e;
            }
            let rate = |secs: f64| CALLS as f64 / secs / 1e6;
            println!(
                "{:24} {per_input:>6} {allocs:>11.3} {bytes:>10.1} {:>7.2} {:>7.2}",
                s.name,
                rate(best),
                rate(total / ROUNDS as f64)
            );
            if allocs > s.max_allocs {
                eprintln!("{} x{per_input}: {allocs:.3} allocations per call, more than {}", s.name, s.max_allocs);
                failed = true;
            }
            let Rig { conn, mut session, .. } = rig;
            session.end(&conn);
        }
    }
    // The payload's own share of Arith.Mul: decoding `{A,B}` and encoding `{C}` as its
    // handler does, without the server around them.
    let payload = rmp_payload(&Args { A: 7, B: 6 });
    let a = allocated();
    for _ in 0..CALLS {
        let args: Args = rpcx_core::codec::from_payload_with(
            SerializeType::MSGPACK,
            black_box(&payload),
            rpcx_core::codec::Decoding::default(),
        )
        .expect("decodes");
        let reply =
            rpcx_core::codec::to_payload_bytes(SerializeType::MSGPACK, &Reply { C: args.A * args.B }).expect("encodes");
        black_box(reply);
    }
    let b = allocated();
    let codec = (b.0 - a.0) as f64 / CALLS as f64;
    println!("of Arith.Mul's, the payload's (decode the args, encode the reply): {codec:.3} allocs/call");
    if failed {
        std::process::exit(1);
    }
}
