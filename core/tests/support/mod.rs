//! Deterministic in-memory harness: a client machine and a server machine joined by a
//! simulated link, with a simulated clock that jumps to the next deadline, seeded
//! random chunking, optional latency, and black-holing of either direction.
#![allow(dead_code, unreachable_pub)]

use rpcx_core::conn::{
    ClientConfig, ClientConnection, ClientEvent, Request, Response, ServerConfig, ServerConnection, ServerEvent,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Small seeded PRNG (xorshift64*), so that every run of a scenario is identical.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// One direction of the link: chunks of bytes with their delivery instant.
#[derive(Default)]
pub struct Link {
    pub queue: VecDeque<(Instant, Vec<u8>)>,
    pub blackhole: bool,
    pub delivered: usize,
}

/// What the simulated server application does with a request.
pub enum App {
    /// Leave requests in `Pair::requests` for the test to answer.
    Manual,
    /// Answer every request at once with this function.
    Auto(fn(&Request) -> Response),
}

pub struct Pair {
    pub now: Instant,
    pub client: ClientConnection,
    pub server: ServerConnection,
    pub c2s: Link,
    pub s2c: Link,
    pub latency: Duration,
    pub max_chunk: usize,
    pub rng: Rng,
    pub app: App,
    pub requests: Vec<Request>,
    pub client_events: Vec<ClientEvent>,
    pub server_events: Vec<ServerEvent>,
    pub client_closed_transport: bool,
}

/// Echo the request payload back.
pub fn echo(r: &Request) -> Response {
    Response::ok(r.message.payload.clone())
}

impl Pair {
    pub fn new(client: ClientConfig, server: ServerConfig, seed: u64) -> Self {
        let now = Instant::now();
        Self {
            now,
            client: ClientConnection::new(client, now),
            server: ServerConnection::new(server, now),
            c2s: Link::default(),
            s2c: Link::default(),
            latency: Duration::ZERO,
            max_chunk: 64,
            rng: Rng::new(seed),
            app: App::Auto(echo),
            requests: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_closed_transport: false,
        }
    }

    pub fn default_pair() -> Self {
        Self::new(ClientConfig::default(), ServerConfig::default(), 1)
    }

    /// Move bytes and events until nothing changes at the current instant.
    pub fn settle(&mut self) {
        loop {
            let mut progress = false;
            // Client output.
            let mut buf = Vec::new();
            while self.client.poll_transmit(&mut buf).is_some() {}
            if !buf.is_empty() {
                progress = true;
                if !self.c2s.blackhole {
                    self.c2s.queue.push_back((self.now + self.latency, buf));
                }
            }
            // Server output.
            let mut buf = Vec::new();
            while self.server.poll_transmit(&mut buf).is_some() {}
            if !buf.is_empty() {
                progress = true;
                if !self.s2c.blackhole {
                    self.s2c.queue.push_back((self.now + self.latency, buf));
                }
            }
            // Deliver due bytes in random chunks; the server only while it wants to read.
            progress |= self.deliver_to_server();
            progress |= self.deliver_to_client();
            // Events.
            while let Some(e) = self.client.poll_event() {
                progress = true;
                self.client_events.push(e);
            }
            while let Some(e) = self.server.poll_event() {
                progress = true;
                match e {
                    ServerEvent::Request(r) => match &self.app {
                        App::Auto(f) => {
                            let resp = f(&r);
                            let _ = self.server.respond(self.now, r.id, resp);
                        }
                        App::Manual => self.requests.push(r),
                    },
                    other => self.server_events.push(other),
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn deliver_to_server(&mut self) -> bool {
        let mut progress = false;
        while self.server.wants_read() {
            let Some((at, chunk)) = self.c2s.queue.front_mut() else { break };
            if *at > self.now {
                break;
            }
            let n = 1 + self.rng.below(self.max_chunk as u64) as usize;
            let n = n.min(chunk.len());
            let piece: Vec<u8> = chunk.drain(..n).collect();
            if chunk.is_empty() {
                self.c2s.queue.pop_front();
            }
            self.c2s.delivered += piece.len();
            self.server.handle_input(self.now, &piece);
            progress = true;
        }
        progress
    }

    fn deliver_to_client(&mut self) -> bool {
        let mut progress = false;
        while self.client.wants_read() {
            let Some((at, chunk)) = self.s2c.queue.front_mut() else { break };
            if *at > self.now {
                break;
            }
            let n = 1 + self.rng.below(self.max_chunk as u64) as usize;
            let n = n.min(chunk.len());
            let piece: Vec<u8> = chunk.drain(..n).collect();
            if chunk.is_empty() {
                self.s2c.queue.pop_front();
            }
            self.s2c.delivered += piece.len();
            self.client.handle_input(self.now, &piece);
            progress = true;
        }
        progress
    }

    /// The next instant anything wants to happen.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let link = |l: &Link, reading: bool| l.queue.front().filter(|_| reading).map(|(t, _)| *t);
        [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            link(&self.c2s, self.server.wants_read()),
            link(&self.s2c, self.client.wants_read()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Settle, then jump the clock from deadline to deadline until `until`.
    pub fn run_until(&mut self, until: Instant) {
        self.settle();
        let mut stuck = 0;
        while let Some(t) = self.next_wakeup() {
            if t > until {
                break;
            }
            if t <= self.now {
                stuck += 1;
                assert!(stuck < 10_000, "simulation livelock: wakeup at {t:?} never consumed");
            } else {
                stuck = 0;
            }
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.settle();
        }
        self.now = self.now.max(until);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.settle();
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    pub fn take_client_events(&mut self) -> Vec<ClientEvent> {
        std::mem::take(&mut self.client_events)
    }
}
