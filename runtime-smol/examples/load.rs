//! Loopback load benchmark: an rpcx server and clients in one process, echoing a
//! 581-byte payload (the rpcx benchmark message size) at several concurrencies, over one
//! connection and over several. Reports calls/s and p50/p99/p99.9 latency.
//!
//! Closed loop: each of `c` callers sends its next call when the previous one returns,
//! and every call's latency is measured from the moment it was issued, so no call is
//! left out of the percentiles (there is no fixed send schedule to fall behind of).
//!
//! Everything (server, connection drivers, callers) runs on one executor with
//! `--threads` worker threads: a `smol::Executor` (`--exec smol`, the default) or the
//! async-global-executor pool that async-std uses (`--exec async-std`).
//!
//! ```text
//! cargo run --release -p rpcx-smol --example load -- --secs 3 --levels 1,100,1000 --conns 1,4 [--exec async-std]
//! ```
#![allow(clippy::print_stdout)]

mod common;

use bytes::Bytes;
use hdrhistogram::Histogram;
use rpcx_smol::service::{Context, Router, Service};
use rpcx_smol::{Client, ClientOptions, SerializeType, Server, Spawner};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Config {
    secs: Duration,
    levels: Vec<usize>,
    conns: Vec<usize>,
    size: usize,
    threads: usize,
    runtime: &'static str,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = common::flag("--threads", "2").parse()?;
    let exec = common::flag("--exec", "smol");
    let mut cfg = Config {
        secs: common::secs_flag("--secs", 3.0),
        levels: common::flag("--levels", "1,100,1000").split(',').map(|s| s.parse().unwrap()).collect(),
        conns: common::flag("--conns", "1,4").split(',').map(|s| s.parse().unwrap()).collect(),
        size: common::flag("--payload", "581").parse()?,
        threads,
        runtime: "smol",
    };
    match exec.as_str() {
        "smol" => {
            let ex = Arc::new(smol::Executor::new());
            let (stop, stopped) = async_channel::bounded::<()>(1);
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (ex, stopped) = (ex.clone(), stopped.clone());
                    std::thread::spawn(move || smol::block_on(ex.run(stopped.recv())))
                })
                .collect();
            let spawner = Spawner::new(move |task| ex.spawn(task).detach());
            // The main thread only waits (a plain parker): IO readiness is handled by the
            // worker threads, which drive the async-io reactor when idle, so the task it
            // wakes usually runs on the thread that saw the event.
            let res = futures_lite::future::block_on(run(cfg, spawner));
            drop(stop);
            for w in workers {
                let _ = w.join();
            }
            res
        }
        "async-std" => {
            cfg.runtime = "async-std";
            async_global_executor::init_with_config(
                async_global_executor::GlobalExecutorConfig::default()
                    .with_min_threads(threads)
                    .with_max_threads(threads),
            );
            async_std::task::block_on(run(cfg, Spawner::global()))
        }
        other => Err(format!("--exec {other}: expected smol or async-std").into()),
    }
}

async fn run(cfg: Config, spawner: Spawner) -> Result<(), Box<dyn std::error::Error>> {
    let router =
        Router::new().service(Service::new("Hello").raw_method("Say", |_c: Context, p: Bytes| async move { Ok(p) }));
    let server = Server::new(router).max_in_flight(4096).runtime(spawner.clone()).bind("tcp@127.0.0.1:0").await?;
    println!("runtime={} threads={} payload={}B duration={:?} per level", cfg.runtime, cfg.threads, cfg.size, cfg.secs);
    println!("{:>6} {:>11} {:>12} {:>10} {:>10} {:>10}", "conns", "concurrency", "calls/s", "p50", "p99", "p99.9");
    let payload = Bytes::from(vec![b'x'; cfg.size]);
    for &nconn in &cfg.conns {
        let mut clients = Vec::new();
        for _ in 0..nconn {
            let opts = ClientOptions { runtime: spawner.clone(), ..Default::default() };
            clients.push(Client::connect(server.address(), opts).await?);
        }
        for &c in &cfg.levels {
            let (calls, hist, elapsed) = run_level(&spawner, &clients, c, cfg.secs, payload.clone()).await;
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
    Ok(())
}

fn fmt_us(ns: u64) -> String {
    format!("{:.1}us", ns as f64 / 1000.0)
}

async fn run_level(
    spawner: &Spawner,
    clients: &[Client],
    c: usize,
    secs: Duration,
    payload: Bytes,
) -> (u64, Histogram<u64>, Duration) {
    let start = Instant::now();
    let stop = start + secs;
    let (results, collect) = async_channel::bounded(c);
    for i in 0..c {
        let client = clients[i % clients.len()].clone();
        let payload = payload.clone();
        let results = results.clone();
        spawner.spawn(async move {
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
            let _ = results.send((calls, hist)).await;
        });
    }
    drop(results);
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..c {
        let (n, h) = collect.recv().await.expect("a caller panicked");
        total += n;
        hist.add(h).expect("merge");
    }
    (total, hist, start.elapsed())
}
