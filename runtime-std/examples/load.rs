//! Loopback load benchmark on blocking threads: an rpcx server and clients in one
//! process, echoing a 581-byte payload (the rpcx benchmark message size) at several
//! concurrencies, over one connection and over several. Reports calls/s and
//! p50/p99/p99.9 latency, in the same format as `rpcx-tokio`'s `load` example.
//!
//! Closed loop: each of `c` logical callers sends its next call when the previous one
//! returns, and every call's latency is measured from the moment it was issued.
//!
//! By default every caller is its own thread blocked in `call` (caller threads get a
//! small stack, so concurrency 1000 means 1000 threads). With `--threads N` the `c`
//! callers are spread over at most N threads, each keeping its share of calls in flight
//! with `go_raw` and waiting on the oldest (how a blocking program keeps many calls in
//! flight without a thread per call, like Go's `client.Go`).
//!
//! ```text
//! cargo run --release -p rpcx-std --example load -- --secs 3 --levels 1,100,1000 --conns 1,4
//! cargo run --release -p rpcx-std --example load -- --secs 3 --levels 100 --threads 2
//! ```
#![allow(clippy::print_stdout)]

mod common;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rpcx_std::service::{Context, Router, Service};
use rpcx_std::{Client, ClientOptions, Message, PendingCall, SerializeType, Server};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Stack of a caller thread: a call needs little (encode, enqueue, wait).
const CALLER_STACK: usize = 256 << 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = common::secs_flag("--secs", 3.0);
    let levels: Vec<usize> = common::flag("--levels", "1,100,1000").split(',').map(|s| s.parse().unwrap()).collect();
    let conns: Vec<usize> = common::flag("--conns", "1,4").split(',').map(|s| s.parse().unwrap()).collect();
    let size: usize = common::flag("--payload", "581").parse()?;
    // 0: one thread per caller.
    let threads: usize = common::flag("--threads", "0").parse()?;
    let router =
        Router::new().service(Service::new("Hello").raw_method("Say", |_c: Context, p: Bytes| async move { Ok(p) }));
    let server = Server::new(router).max_in_flight(4096).bind("tcp@127.0.0.1:0")?;
    let mode = if threads == 0 { "thread per caller".to_owned() } else { format!("callers on {threads} threads") };
    println!("runtime=std payload={size}B duration={secs:?} per level ({mode})");
    println!("{:>6} {:>11} {:>12} {:>10} {:>10} {:>10}", "conns", "concurrency", "calls/s", "p50", "p99", "p99.9");
    let payload = Bytes::from(vec![b'x'; size]);
    for &nconn in &conns {
        let mut clients = Vec::new();
        for _ in 0..nconn {
            clients.push(Client::connect(server.address(), ClientOptions::default())?);
        }
        for &c in &levels {
            let (calls, hist, elapsed) = run_level(&clients, c, threads, secs, payload.clone())?;
            println!(
                "{:>6} {:>11} {:>12.0} {:>10} {:>10} {:>10}",
                nconn,
                c,
                calls as f64 / elapsed.as_secs_f64(),
                fmt_us(hist.value_at_quantile(0.5)),
                fmt_us(hist.value_at_quantile(0.99)),
                fmt_us(hist.value_at_quantile(0.999)),
            );
        }
        for c in clients {
            c.close();
        }
    }
    server.shutdown(Duration::from_secs(2));
    Ok(())
}

fn fmt_us(ns: u64) -> String {
    format!("{:.1}us", ns as f64 / 1000.0)
}

fn run_level(
    clients: &[Client],
    c: usize,
    threads: usize,
    secs: Duration,
    payload: Bytes,
) -> std::io::Result<(u64, Histogram<u64>, Duration)> {
    let start = Instant::now();
    let stop = start + secs;
    // Callers per thread: all on their own thread, or `c` spread over `threads`.
    let nthreads = if threads == 0 { c } else { threads.min(c) };
    let mut handles = Vec::with_capacity(nthreads);
    for t in 0..nthreads {
        let callers: Vec<Client> = (t..c).step_by(nthreads).map(|i| clients[i % clients.len()].clone()).collect();
        let payload = payload.clone();
        handles.push(std::thread::Builder::new().stack_size(CALLER_STACK).spawn(move || {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut calls = 0u64;
            let start_call = |client: &Client| {
                let call = client
                    .request("Hello", "Say")
                    .serialize_type(SerializeType::NONE)
                    .go_raw(payload.clone())
                    .expect("call");
                (Instant::now(), call)
            };
            if callers.len() == 1 {
                while Instant::now() < stop {
                    let t0 = Instant::now();
                    let reply = callers[0]
                        .request("Hello", "Say")
                        .serialize_type(SerializeType::NONE)
                        .call_raw(payload.clone())
                        .expect("call");
                    hist.record(t0.elapsed().as_nanos() as u64).expect("record");
                    assert_eq!(reply.payload.len(), payload.len());
                    calls += 1;
                }
                return (calls, hist);
            }
            // One call in flight per caller; wait on the oldest, then start that
            // caller's next call.
            let mut ring: VecDeque<(usize, Instant, PendingCall<Message>)> = callers
                .iter()
                .enumerate()
                .map(|(i, cl)| {
                    let (t0, call) = start_call(cl);
                    (i, t0, call)
                })
                .collect();
            while let Some((i, t0, call)) = ring.pop_front() {
                let reply = call.wait_raw().expect("call");
                hist.record(t0.elapsed().as_nanos() as u64).expect("record");
                assert_eq!(reply.payload.len(), payload.len());
                calls += 1;
                if Instant::now() < stop {
                    let (t0, call) = start_call(&callers[i]);
                    ring.push_back((i, t0, call));
                }
            }
            (calls, hist)
        })?);
    }
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in handles {
        let (n, h) = t.join().expect("caller thread");
        total += n;
        hist.add(h).expect("merge");
    }
    Ok((total, hist, start.elapsed()))
}
