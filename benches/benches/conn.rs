//! Round trips through the connection machines, in memory.
//!
//! A [`ClientConnection`] and a [`ServerConnection`] are wired directly: the client's
//! `poll_transmit` output is the server's `handle_input`, every request is answered at
//! once by echoing its payload, and the server's output goes back into the client. No
//! sockets, no threads and one fixed `now`, so this measures the machines alone: encode,
//! decode, seq matching and bookkeeping on both sides.
//!
//! Cases: a 16-byte and the 581-byte payload of the rpcx benchmark, one call per
//! iteration and a batch of 64 calls per iteration. Throughput is in round trips.
//!
//! Before measuring, a counting global allocator reports the allocations per round
//! trip in steady state (after a warm-up, so amortized buffer growth is excluded),
//! separately for the client steps (`call` + `poll_transmit`, then `handle_input` +
//! `poll_event`) and the server steps (`handle_input` + `poll_event` + `respond` +
//! `poll_transmit`). Payloads are static and echoed, so every allocation counted is
//! the machines' own. Besides the plain case it reports two common variants: calls with
//! a deadline (the client adds `__ServerTimeout` metadata, which the server decodes),
//! and a server application that keeps each request's payload until after the next
//! `handle_input` (as one that hands requests to other tasks would), which stops the
//! decoder from reusing its buffer in place.
//!
//! `cargo bench -p rpcx-benches --bench conn`

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rpcx_core::conn::{
    CallSpec, ClientConfig, ClientConnection, ClientEvent, Response, ServerConfig, ServerConnection, ServerEvent,
};
use rpcx_core::wire::SerializeType;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: rpcx_benches::CountingAlloc = rpcx_benches::CountingAlloc;

use rpcx_benches::allocated;

static SMALL: [u8; 16] = [b's'; 16];
static LARGE: [u8; 581] = [b'x'; 581];

/// A client and a server joined back to back, at one fixed instant.
struct Pair {
    now: Instant,
    client: ClientConnection,
    server: ServerConnection,
    payload: Bytes,
    /// Client to server bytes of one batch.
    c2s: Vec<u8>,
    /// Server to client bytes of one batch.
    s2c: Vec<u8>,
    /// Deadline given to every call.
    deadline: Option<Instant>,
    /// Request payloads the server application keeps until its next turn.
    held: Option<Vec<Bytes>>,
}

/// What the allocation report measures besides the plain round trip.
#[derive(Clone, Copy, Debug)]
enum Variant {
    Plain,
    Deadline,
    HeldRequests,
}

impl Variant {
    fn describe(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Deadline => "deadline (__ServerTimeout)",
            Variant::HeldRequests => "server holds request payloads",
        }
    }
}

impl Pair {
    fn new(payload: &'static [u8], variant: Variant) -> Self {
        let now = Instant::now();
        Self {
            deadline: matches!(variant, Variant::Deadline).then(|| now + Duration::from_secs(3600)),
            held: matches!(variant, Variant::HeldRequests).then(Vec::new),
            now,
            client: ClientConnection::new(ClientConfig::default(), now),
            server: ServerConnection::new(ServerConfig::default(), now),
            payload: Bytes::from_static(payload),
            c2s: Vec::new(),
            s2c: Vec::new(),
        }
    }

    /// Client: start `calls` calls and encode them.
    fn client_send(&mut self, calls: usize) {
        for _ in 0..calls {
            let mut spec = CallSpec::new("Hello", "Say", SerializeType::MSGPACK, self.payload.clone());
            spec.deadline = self.deadline;
            self.client.call(self.now, spec).expect("room for the batch");
        }
        self.c2s.clear();
        while self.client.poll_transmit(&mut self.c2s).is_some() {}
    }

    /// Server: decode the requests, answer each by echoing its payload, encode.
    fn server_turn(&mut self) {
        self.server.handle_input(self.now, &self.c2s);
        if let Some(held) = &mut self.held {
            held.clear();
        }
        while let Some(event) = self.server.poll_event() {
            match event {
                ServerEvent::Request(request) => {
                    if let Some(held) = &mut self.held {
                        held.push(request.message.payload.clone());
                    }
                    let response = Response::ok(request.message.payload);
                    self.server.respond(self.now, request.id, response).expect("request is waiting");
                }
                other => panic!("unexpected server event {other:?}"),
            }
        }
        self.s2c.clear();
        while self.server.poll_transmit(&mut self.s2c).is_some() {}
    }

    /// Client: decode the responses and take their events.
    fn client_receive(&mut self, calls: usize) {
        self.client.handle_input(self.now, &self.s2c);
        let mut answered = 0;
        while let Some(event) = self.client.poll_event() {
            match event {
                ClientEvent::Response { response, .. } => {
                    black_box(&response.payload);
                    answered += 1;
                }
                other => panic!("unexpected client event {other:?}"),
            }
        }
        assert_eq!(answered, calls, "every call in the batch was answered");
    }

    fn round_trips(&mut self, calls: usize) {
        self.client_send(calls);
        self.server_turn();
        self.client_receive(calls);
    }
}

/// Print steady-state allocations per round trip for each case, client and server.
fn allocations(_: &mut Criterion) {
    // The counter must see allocations, or every figure below would read 0.
    let before = allocated().0;
    drop(black_box(Vec::<u8>::with_capacity(64)));
    assert!(allocated().0 > before, "the counting allocator is installed");

    eprintln!("allocations per round trip, steady state: allocations (bytes requested)");
    for variant in [Variant::Plain, Variant::Deadline, Variant::HeldRequests] {
        eprintln!("  {}", variant.describe());
        for (name, payload) in [("16B", &SMALL[..]), ("581B", &LARGE[..])] {
            for calls in [1usize, 64] {
                alloc_case(name, payload, calls, variant);
            }
        }
    }
}

/// Measure and print one case of the allocation report.
fn alloc_case(name: &str, payload: &'static [u8], calls: usize, variant: Variant) {
    let mut pair = Pair::new(payload, variant);
    // Warm-up: buffers, queues and tables reach their steady-state capacity.
    for _ in 0..2_000 {
        pair.round_trips(calls);
    }
    let batches = 10_000 / calls as u64 + 100;
    let (mut client, mut server) = ((0, 0), (0, 0));
    for _ in 0..batches {
        let a = allocated();
        pair.client_send(calls);
        let b = allocated();
        pair.server_turn();
        let c = allocated();
        pair.client_receive(calls);
        let d = allocated();
        client.0 += b.0 - a.0 + d.0 - c.0;
        client.1 += b.1 - a.1 + d.1 - c.1;
        server.0 += c.0 - b.0;
        server.1 += c.1 - b.1;
    }
    let n = (batches * calls as u64) as f64;
    eprintln!(
        "    {name:>4} x{calls:<2}  client {:.3} ({:.0} B)  server {:.3} ({:.0} B)",
        client.0 as f64 / n,
        client.1 as f64 / n,
        server.0 as f64 / n,
        server.1 as f64 / n,
    );
}

fn round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("conn_round_trip");
    for (name, payload) in [("16B", &SMALL[..]), ("581B", &LARGE[..])] {
        for calls in [1usize, 64] {
            let mut pair = Pair::new(payload, Variant::Plain);
            group.throughput(Throughput::Elements(calls as u64));
            group.bench_function(BenchmarkId::new(name, calls), |b| b.iter(|| pair.round_trips(black_box(calls))));
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = allocations, round_trips
}
criterion_main!(benches);
