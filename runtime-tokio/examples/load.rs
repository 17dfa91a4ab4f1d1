//! Loopback load benchmark: an rpcx server and clients in one process, echoing a
//! 581-byte payload (the rpcx benchmark message size) at several concurrencies, over one
//! connection and over several. Reports calls/s and p50/p99/p99.9 latency.
//!
//! Closed loop: each of `c` callers sends its next call when the previous one returns,
//! and every call's latency is measured from the moment it was issued, so no call is
//! left out of the percentiles (there is no fixed send schedule to fall behind of).
//!
//! ```text
//! cargo run --release -p rpcx-tokio --example load -- --secs 3 --levels 1,100,1000 --conns 1,4
//! ```
#![allow(clippy::print_stdout)]

mod common;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Client, ClientOptions, SerializeType, Server};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = common::secs_flag("--secs", 3.0);
    let levels: Vec<usize> = common::flag("--levels", "1,100,1000").split(',').map(|s| s.parse().unwrap()).collect();
    let conns: Vec<usize> = common::flag("--conns", "1,4").split(',').map(|s| s.parse().unwrap()).collect();
    let size: usize = common::flag("--payload", "581").parse()?;
    let threads: usize = common::flag("--threads", "2").parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        let router = Router::new()
            .service(Service::new("Hello").raw_method("Say", |_c: Context, p: Bytes| async move { Ok(p) }));
        let server = Server::new(router).max_in_flight(4096).bind("tcp@127.0.0.1:0").await?;
        println!("runtime=tokio threads={threads} payload={size}B duration={secs:?} per level");
        println!("{:>6} {:>11} {:>12} {:>10} {:>10} {:>10}", "conns", "concurrency", "calls/s", "p50", "p99", "p99.9");
        let payload = Bytes::from(vec![b'x'; size]);
        for &nconn in &conns {
            let mut clients = Vec::new();
            for _ in 0..nconn {
                clients.push(Client::connect(server.address(), ClientOptions::default()).await?);
            }
            for &c in &levels {
                let (calls, hist, elapsed) = run_level(&clients, c, secs, payload.clone()).await;
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
                c.close().await;
            }
        }
        server.shutdown(Duration::from_secs(2)).await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn fmt_us(ns: u64) -> String {
    format!("{:.1}us", ns as f64 / 1000.0)
}

async fn run_level(clients: &[Client], c: usize, secs: Duration, payload: Bytes) -> (u64, Histogram<u64>, Duration) {
    let start = Instant::now();
    let stop = start + secs;
    let mut tasks = Vec::with_capacity(c);
    for i in 0..c {
        let client = clients[i % clients.len()].clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut calls = 0u64;
            while Instant::now() < stop {
                let t0 = Instant::now();
                let reply = client
                    .request("Hello", "Say")
                    .serialize_type(SerializeType::NONE)
                    .call_raw(payload.clone())
                    .await
                    .expect("call");
                let dt = t0.elapsed();
                assert_eq!(reply.payload.len(), payload.len());
                hist.record(dt.as_nanos() as u64).expect("record");
                calls += 1;
            }
            (calls, hist)
        }));
    }
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        let (n, h) = t.await.expect("task");
        total += n;
        hist.add(h).expect("merge");
    }
    (total, hist, start.elapsed())
}
