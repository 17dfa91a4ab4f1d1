//! What the hooks cost: the same closed-loop load (raw 581-byte echo, the load
//! examples' message) against two rpcx-tokio servers in one process, one plain and one
//! with [`MetricsHooks`] (its client too), in alternating windows of the same run.
//! Recording is real: the hooks write into metrics-exporter-prometheus's recorder
//! (histograms with buckets), which a `scrape` thread renders once a second as a
//! Prometheus server would scrape it, without serving it.
//!
//! The server runs on its own tokio runtime (`--server-threads`, default 1, threads
//! named `srv`), the callers and client connections on another (`--client-threads`,
//! default 1, `load`); CPU per call is read per thread group from
//! `/proc/self/task/*/schedstat` (time on a CPU, ns) over each window. Each level runs `--rounds`
//! pairs of windows (off, then on) and prints medians over the rounds (and the lowest
//! CPU per call, which other load on the machine can only raise) and the range of
//! calls/s, so a burst of other load on the machine moves one window, not the result.
//! `--only on` (or `off`) runs one kind of window (for a profiler).
//!
//! ```text
//! cargo run --release -p rpcx-metrics --example cost -- [--secs 1] [--levels 1,100] [--conns 1] [--rounds 7] [--payload 581] [--only on|off]
//! ```
#![allow(clippy::print_stdout)]

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use rpcx_metrics::MetricsHooks;
use rpcx_tokio::core::bytes::Bytes;
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Client, ClientOptions, SerializeType, Server};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn flag(name: &str, default: &str) -> String {
    rpcx_examples_common::flag(name, default)
}

fn list(name: &str, default: &str) -> Vec<usize> {
    flag(name, default).split(',').map(|s| s.parse().expect("a list of numbers")).collect()
}

/// CPU seconds of this process's threads whose name starts with `prefix`: the time
/// they ran on a CPU, user and kernel (`/proc/self/task/*/schedstat`, nanoseconds).
fn thread_cpu(prefix: &str) -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task").flatten() {
        let Ok(name) = std::fs::read_to_string(task.path().join("comm")) else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        ns += stat.split(' ').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// The median of `xs` (the mean of the middle two for an even count).
fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

struct Window {
    calls: u64,
    secs: f64,
    server_cpu: f64,
    client_cpu: f64,
}

async fn window(clients: &[Client], c: usize, warmup: Duration, secs: Duration, payload: Bytes) -> Window {
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = measure_from + secs;
    let mut tasks = Vec::with_capacity(c);
    for i in 0..c {
        let client = clients[i % clients.len()].clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut calls = 0u64;
            loop {
                let now = Instant::now();
                if now >= stop {
                    break;
                }
                let reply = client
                    .request("Hello", "Say")
                    .serialize_type(SerializeType::NONE)
                    .call_raw(payload.clone())
                    .await
                    .expect("call");
                assert_eq!(reply.payload.len(), payload.len());
                if now >= measure_from {
                    calls += 1;
                }
            }
            calls
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let (s0, c0, t0) = (thread_cpu("srv"), thread_cpu("load"), Instant::now());
    tokio::time::sleep_until(stop.into()).await;
    let (s1, c1, t1) = (thread_cpu("srv"), thread_cpu("load"), Instant::now());
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("caller");
    }
    Window { calls, secs: (t1 - t0).as_secs_f64(), server_cpu: s1 - s0, client_cpu: c1 - c0 }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = rpcx_examples_common::secs_flag("--secs", 1.0);
    let warmup = rpcx_examples_common::secs_flag("--warmup", 0.5);
    let levels = list("--levels", "1,100");
    let conns = list("--conns", "1");
    let rounds: usize = flag("--rounds", "7").parse()?;
    let only = flag("--only", "");
    let size: usize = flag("--payload", "581").parse()?;
    let server_threads: usize = flag("--server-threads", "1").parse()?;
    let client_threads: usize = flag("--client-threads", "1").parse()?;

    // A real recorder, rendered once a second (the cost of keeping the samples bounded
    // is the scrape thread's, as it would be the exporter's).
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 100.0])?
        .set_buckets_for_metric(Matcher::Suffix("size".into()), &[0.0, 64.0, 256.0, 1024.0, 4096.0, 65536.0])?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let done = done.clone();
        std::thread::Builder::new().name("scrape".into()).spawn(move || {
            let mut bytes = 0;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                bytes = handle.render().len();
            }
            bytes
        })?
    };

    let srv = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .thread_name("srv")
        .enable_all()
        .build()?;
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .thread_name("load")
        .enable_all()
        .build()?;

    let hooks = Arc::new(MetricsHooks::new());
    let router =
        || Router::new().service(Service::new("Hello").raw_method("Say", |_c: Context, p: Bytes| async move { Ok(p) }));
    let (plain, hooked) = srv.block_on(async {
        let plain = Server::new(router()).max_in_flight(4096).bind("tcp@127.0.0.1:0").await?;
        let hooked = Server::new(router().hook(hooks.clone())).max_in_flight(4096).bind("tcp@127.0.0.1:0").await?;
        Ok::<_, std::io::Error>((plain, hooked))
    })?;

    println!(
        "rpcx-tokio, server {server_threads} thread(s), client {client_threads}; payload {size}B raw echo; {secs:?} windows after {warmup:?} warm-up, {rounds} rounds of off/on; medians over rounds"
    );
    println!(
        "{:>5} {:>5} {:>8} {:>10} {:>17} {:>14} {:>10} {:>14} {:>10}",
        "conns", "c", "metrics", "calls/s", "range", "server us/call", "(min)", "client us/call", "(min)"
    );
    let payload = Bytes::from(vec![b'x'; size]);
    load.block_on(async {
        for &nconn in &conns {
            let mut off_clients = Vec::new();
            let mut on_clients = Vec::new();
            for _ in 0..nconn {
                off_clients.push(Client::connect(plain.address(), ClientOptions::default()).await?);
                on_clients.push(Client::connect(hooked.address(), ClientOptions::default().hook(hooks.clone())).await?);
            }
            for &c in &levels {
                let mut results: [Vec<Window>; 2] = [Vec::new(), Vec::new()];
                for _ in 0..rounds {
                    for (i, clients) in [&off_clients, &on_clients].into_iter().enumerate() {
                        if only.is_empty() || only == ["off", "on"][i] {
                            results[i].push(window(clients, c, warmup, secs, payload.clone()).await);
                        }
                    }
                }
                for (i, name) in ["off", "on"].into_iter().enumerate() {
                    let w = &results[i];
                    if w.is_empty() {
                        continue;
                    }
                    let rate = median(w.iter().map(|w| w.calls as f64 / w.secs));
                    let low = w.iter().map(|w| w.calls as f64 / w.secs).fold(f64::MAX, f64::min);
                    let high = w.iter().map(|w| w.calls as f64 / w.secs).fold(0.0, f64::max);
                    let scpu = median(w.iter().map(|w| w.server_cpu * 1e6 / w.calls as f64));
                    let ccpu = median(w.iter().map(|w| w.client_cpu * 1e6 / w.calls as f64));
                    let smin = w.iter().map(|w| w.server_cpu * 1e6 / w.calls as f64).fold(f64::MAX, f64::min);
                    let cmin = w.iter().map(|w| w.client_cpu * 1e6 / w.calls as f64).fold(f64::MAX, f64::min);
                    println!(
                        "{nconn:>5} {c:>5} {name:>8} {rate:>10.0} {:>17} {scpu:>14.2} {smin:>10.2} {ccpu:>14.2} {cmin:>10.2}",
                        format!("{low:.0}-{high:.0}")
                    );
                }
            }
            for c in off_clients.into_iter().chain(on_clients) {
                c.close().await;
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    srv.block_on(async {
        plain.shutdown(Duration::from_secs(2)).await;
        hooked.shutdown(Duration::from_secs(2)).await;
    });
    done.store(true, Ordering::Relaxed);
    let rendered = scraper.join().map_err(|_| "scrape thread panicked")?;
    println!("(last scrape: {rendered} bytes of Prometheus text)");
    Ok(())
}
