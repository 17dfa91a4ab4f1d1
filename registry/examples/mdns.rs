//! The rpcx book's mDNS chapter, in a private network namespace: two servers publish
//! their `Arith` service by mDNS in Go's layout (`_rpcxservices.local.`, one TXT list
//! per server) with metadata (`weight=1`, `weight=3`), an XClient discovers them by
//! multicast queries and spreads calls by weight, one server shuts down (its goodbye
//! removes it at once) and the XClient follows. Every result is checked.
//!
//! It multicasts only inside a network namespace with nothing but `lo`: run outside one,
//! it re-executes itself under `unshare --net` (root needed, as in CI), so it never
//! sends a packet on a real network.
//!
//! ```text
//! cargo run -p rpcx-registry --example mdns
//! ```
#![allow(clippy::print_stdout)]

use rpcx_examples_common::{Args, Reply};
use rpcx_registry::mdns::testing;
use rpcx_registry::mdns::{MdnsConfig, MdnsDiscovery, MdnsRegistrar};
use rpcx_tokio::core::govern::{Discovery, SelectMode};
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Server, ServerHandle, XClient, XClientOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server whose `Arith.Mul` multiplies and `Arith.Who` answers with `id`, published
/// as mDNS instance `instance` with `metadata`.
async fn server(
    config: &MdnsConfig,
    instance: &str,
    id: i64,
    metadata: &str,
) -> Result<ServerHandle, Box<dyn std::error::Error>> {
    let router = Router::new().service(
        Service::new("Arith")
            .metadata(metadata)
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) })
            .method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }),
    );
    let registrar = MdnsRegistrar::new(config.clone().instance(instance))?;
    Ok(Server::new(router).registrar(registrar).bind("tcp@127.0.0.1:0").await?)
}

async fn who_counts(xc: &XClient, n: usize) -> Result<BTreeMap<i64, usize>, Box<dyn std::error::Error>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await?;
        *counts.entry(r.c).or_default() += 1;
    }
    Ok(counts)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !testing::inside() {
        let exe = std::env::current_exe()?;
        let mut child = testing::command_in_namespace(&exe, std::env::args_os().skip(1)).spawn()?;
        let status = testing::wait_bounded(&mut child, Duration::from_secs(60))?;
        if !status.success() {
            return Err(format!("the example failed in its network namespace: {status}").into());
        }
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    // The namespace's loopback carries the multicast; records live 30 s unless renewed.
    let config = MdnsConfig::new()
        .interface(std::net::Ipv4Addr::LOCALHOST)
        .ttl(Duration::from_secs(30))
        .update_interval(Duration::from_secs(5))
        .query_interval(Duration::from_secs(1));

    let light = server(&config, "light", 1, "weight=1").await?;
    let heavy = server(&config, "heavy", 2, "weight=3").await?;
    println!("published {} (weight=1) and {} (weight=3) by mDNS", light.address(), heavy.address());

    let discovery = Arc::new(MdnsDiscovery::connect(config.clone(), "Arith").await?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.snapshot().servers.len() < 2 {
        assert!(Instant::now() < deadline, "both servers should answer within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed: Vec<String> = discovery.snapshot().servers.iter().map(|s| s.key().to_string()).collect();
    println!("discovered {listed:?}");
    assert_eq!(listed.len(), 2);
    let opts = XClientOptions::default().select_mode(SelectMode::WeightedRoundRobin);
    let xc = XClient::new("Arith", discovery.clone(), opts);
    let r: Reply = xc.call("Mul", &Args { a: 7, b: 6 }).await?;
    assert_eq!(r.c, 42);
    let counts = who_counts(&xc, 40).await?;
    println!("WeightedRoundRobin over 40 calls: {counts:?}");
    assert_eq!(counts.get(&1), Some(&10));
    assert_eq!(counts.get(&2), Some(&30));

    // Graceful shutdown says goodbye (TTL 0) before draining: the XClient stops picking it.
    let gone = heavy.address().to_owned();
    heavy.shutdown(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while discovery.snapshot().servers.iter().any(|s| s.key().as_str() == gone) {
        assert!(Instant::now() < deadline, "the server that said goodbye is still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = who_counts(&xc, 10).await?;
    println!("after {gone} shut down: {counts:?}");
    assert_eq!(counts, BTreeMap::from([(1, 10)]));
    light.shutdown(Duration::from_secs(5)).await;
    println!("ok in {:.2?}", t0.elapsed());
    Ok(())
}
