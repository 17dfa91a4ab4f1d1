//! The rpcx book's Consul chapter on loopback: two servers register their `Arith`
//! service in Consul with metadata (`weight=1`, `weight=3`), an XClient discovers them
//! through Consul and spreads calls by weight, one server shuts down (unregistering
//! first) and the XClient follows. Every result is checked.
//!
//! Without `--consul` this runs against the crate's in-repo **stand-in** for Consul's
//! KV + session HTTP API (`rpcx_registry::consul::testing::ConsulStandIn`), not a
//! real Consul; it says so in its output. Point it at a real agent to use one.
//!
//! ```text
//! cargo run -p rpcx-registry --example consul                    # the in-repo stand-in
//! cargo run -p rpcx-registry --example consul -- --consul http://127.0.0.1:8500
//! ```
#![allow(clippy::print_stdout)]

use rpcx_examples_common::{Args, Reply};
use rpcx_registry::consul::testing::ConsulStandIn;
use rpcx_registry::consul::{ConsulConfig, ConsulDiscovery, ConsulRegistrar};
use rpcx_tokio::core::govern::{Discovery, SelectMode};
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Server, ServerHandle, XClient, XClientOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server whose `Arith.Mul` multiplies and `Arith.Who` answers with `id`, published
/// with `metadata`.
async fn server(config: &ConsulConfig, id: i64, metadata: &str) -> Result<ServerHandle, Box<dyn std::error::Error>> {
    let router = Router::new().service(
        Service::new("Arith")
            .metadata(metadata)
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) })
            .method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }),
    );
    Ok(Server::new(router).registrar(ConsulRegistrar::new(config.clone())?).bind("tcp@127.0.0.1:0").await?)
}

async fn who_counts(xc: &XClient, n: usize) -> Result<BTreeMap<i64, usize>, Box<dyn std::error::Error>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await?;
        *counts.entry(r.c).or_default() += 1;
    }
    Ok(counts)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let given = rpcx_examples_common::flag("--consul", "");
    // Without --consul, the in-repo stand-in on a free loopback port (no Consul server
    // can be installed where this is developed and tested).
    let own = if given.is_empty() { Some(ConsulStandIn::start()?) } else { None };
    let endpoint = own.as_ref().map_or(given, ConsulStandIn::address);
    if own.is_some() {
        println!("using the in-repo Consul stand-in at {endpoint} (not a real Consul; pass --consul to use one)");
    }
    let config = ConsulConfig::new(&endpoint, "/rpcx_example")
        .session_ttl(Duration::from_secs(10))
        .update_interval(Duration::from_secs(2));

    let light = server(&config, 1, "weight=1").await?;
    let heavy = server(&config, 2, "weight=3").await?;
    println!("registered {} (weight=1) and {} (weight=3) in Consul at {endpoint}", light.address(), heavy.address());

    let discovery = Arc::new(ConsulDiscovery::connect(config.clone(), "Arith").await?);
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

    // Graceful shutdown unregisters before draining: the XClient stops picking it.
    let gone = heavy.address().to_owned();
    heavy.shutdown(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while discovery.snapshot().servers.iter().any(|s| s.key().as_str() == gone) {
        assert!(Instant::now() < deadline, "the unregistered server is still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = who_counts(&xc, 10).await?;
    println!("after {gone} shut down: {counts:?}");
    assert_eq!(counts, BTreeMap::from([(1, 10)]));
    light.shutdown(Duration::from_secs(5)).await;
    println!("ok in {:.2?}", t0.elapsed());
    Ok(())
}
