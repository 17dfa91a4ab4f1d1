//! An rpcx server and client on tokio with [`rpcx_metrics::MetricsHooks`] on both sides,
//! recording into metrics-exporter-prometheus, which serves the Prometheus text format
//! at `http://<listen>/metrics` (any path). The client makes a round of calls
//! (`Arith.Mul`, a failing `Arith.Div`, a oneway `Arith.Mul`) `--rate` times a second;
//! the server's totals are published as `rpcx_server_*` gauges every second. At the
//! end the example scrapes its own endpoint and prints the `rpc*` families.
//!
//! ```text
//! cargo run -p rpcx-metrics --example prometheus -- [--secs 5] [--rate 10] [--listen 127.0.0.1:9000]
//! ```
//!
//! `--secs 0` runs until Ctrl-C. `--listen` defaults to a free port on 127.0.0.1 (printed).
#![allow(clippy::print_stdout)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn main() -> Result<(), common::BoxError> {
    let secs = rpcx_examples_common::secs_flag("--secs", 5.0);
    let rate: f64 = rpcx_examples_common::flag("--rate", "10").parse()?;
    let listen: SocketAddr = rpcx_examples_common::flag("--listen", "127.0.0.1:0").parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let o = common::start(listen).await?;
        println!("rpcx server on {}; Prometheus text at http://{}/metrics", o.server.address(), o.metrics_addr);
        let until = (!secs.is_zero()).then(|| Instant::now() + secs);
        let mut calls = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
        let mut totals = tokio::time::interval(Duration::from_secs(1));
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut i = 0;
        loop {
            if until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            tokio::select! {
                _ = calls.tick() => {
                    i += 1;
                    common::round(&o.client, i).await?;
                }
                _ = totals.tick() => o.publish_totals(),
                _ = &mut ctrl_c => break,
            }
        }
        o.publish_totals();
        let text = common::scrape(o.metrics_addr).await?;
        println!("{i} rounds; scraped {} bytes, the rpc families:", text.len());
        for line in text.lines().filter(|l| l.starts_with("rpc") && !l.contains("_bucket")) {
            println!("  {line}");
        }
        o.stop().await;
        Ok(())
    })
}
