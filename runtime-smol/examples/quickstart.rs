//! An rpcx server and client talking on loopback with default options, on smol.
//! Starts the Arith server on a free port, checks a few calls, then runs 100 concurrent
//! callers for a few seconds and prints calls/s.
//!
//! ```text
//! cargo run --release -p rpcx-smol --example quickstart [-- --secs 3 --concurrency 100]
//! ```
#![allow(clippy::print_stdout)]

mod common;

use common::{Args, ArithClient, Reply};
use rpcx_smol::{Client, ClientOptions, Server};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let secs = common::secs_flag("--secs", 3.0);
    let concurrency: usize = common::flag("--concurrency", "100").parse()?;

    let server = Server::new(common::router(None)).bind("tcp@127.0.0.1:0").await?;
    println!("server listening on {}", server.address());
    let client = Client::connect(server.address(), ClientOptions::default()).await?;

    // The typed client of the Arith trait (`#[service]`, in rpcx-examples-common).
    let arith = ArithClient::new(&client);
    let reply = arith.mul(Args { a: 10, b: 20 }).await?;
    println!("Arith.Mul(10, 20) = {}", reply.c);
    assert_eq!(reply.c, 200);
    let reply = arith.add(Args { a: 10, b: 20 }).await?;
    println!("Arith.Add(10, 20) = {}", reply.c);
    assert_eq!(reply.c, 30);
    // By name, through the untyped API underneath: Arith has no Div.
    let err = client.call::<_, Reply>("Arith", "Div", &Args { a: 1, b: 0 }).await.unwrap_err();
    println!("Arith.Div -> error: {err}");

    println!("load: {concurrency} concurrent callers on one connection for {secs:?} ...");
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + secs;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let calls = calls.clone();
        tasks.push(smol::spawn(async move {
            let mut i = 0i64;
            while Instant::now() < stop {
                let r: Reply = client.call("Arith", "Mul", &Args { a: w as i64, b: i }).await.expect("call");
                assert_eq!(r.c, w as i64 * i);
                i += 1;
                calls.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let n = calls.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    println!("{n} calls in {elapsed:.2} s = {:.0} calls/s (all replies checked)", n as f64 / elapsed);

    client.close().await;
    server.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
