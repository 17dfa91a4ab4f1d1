//! ZooKeeper on loopback: two servers register their `Arith` service in ZooKeeper as
//! ephemeral nodes with metadata (`weight=1`, `weight=3`), an XClient discovers them
//! through ZooKeeper and spreads calls by weight, an operator marks one server
//! `state=inactive` in its node's data and the XClient stops picking it, then a server
//! shuts down (unregistering first) and the XClient follows. Every result is checked.
//!
//! ```text
//! cargo run -p rpcx-registry --example zookeeper                  # starts its own ZooKeeper
//! cargo run -p rpcx-registry --example zookeeper -- --zk 127.0.0.1:2181
//! ```
#![allow(clippy::print_stdout)]

use rpcx_examples_common::{Args, Reply};
use rpcx_registry::zookeeper::testing::ZkServer;
use rpcx_registry::zookeeper::{ZkConfig, ZkDiscovery, ZkRegistrar};
use rpcx_tokio::core::govern::{Discovery, SelectMode};
use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Server, ServerHandle, XClient, XClientOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A server whose `Arith.Mul` multiplies and `Arith.Who` answers with `id`, published
/// with `metadata`.
async fn server(config: &ZkConfig, id: i64, metadata: &str) -> Result<ServerHandle, Box<dyn std::error::Error>> {
    let router = Router::new().service(
        Service::new("Arith")
            .metadata(metadata)
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) })
            .method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }),
    );
    Ok(Server::new(router).registrar(ZkRegistrar::new(config.clone())?).bind("tcp@127.0.0.1:0").await?)
}

async fn who_counts(xc: &XClient, n: usize) -> Result<BTreeMap<i64, usize>, Box<dyn std::error::Error>> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await?;
        *counts.entry(r.c).or_default() += 1;
    }
    Ok(counts)
}

/// Wait (bounded) until the listed servers satisfy `cond`.
async fn until(discovery: &ZkDiscovery, what: &str, cond: impl Fn(&[rpcx_tokio::core::govern::Instance]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond(&discovery.snapshot().servers) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let given = rpcx_examples_common::flag("--zk", "");
    // Without --zk, a private ZooKeeper (Debian's zookeeper) on a free loopback port.
    let own = if given.is_empty() { Some(ZkServer::start()?) } else { None };
    let address = own.as_ref().map_or(given, ZkServer::address);
    let config = ZkConfig::new([address.as_str()], "/rpcx_example")
        .session_timeout(Duration::from_secs(4))
        .update_interval(Duration::from_secs(2));

    let light = server(&config, 1, "weight=1").await?;
    let heavy = server(&config, 2, "weight=3").await?;
    println!("registered {} (weight=1) and {} (weight=3) in ZooKeeper at {address}", light.address(), heavy.address());

    let discovery = Arc::new(ZkDiscovery::connect(config.clone(), "Arith").await?);
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

    // An operator marks the heavy server inactive in its node's data: discovery watches
    // every node's data, so the XClient stops picking it.
    let operator = zookeeper_client::Client::connect(&address).await?;
    let heavy_node = format!("/rpcx_example/Arith/{}", heavy.address());
    operator.set_data(&heavy_node, b"weight=3&state=inactive", None).await?;
    until(&discovery, "the inactive flag", |s| s.iter().any(|i| i.metadata().is_inactive())).await;
    let counts = who_counts(&xc, 10).await?;
    println!("after marking {} inactive: {counts:?}", heavy.address());
    assert_eq!(counts, BTreeMap::from([(1, 10)]));
    operator.set_data(&heavy_node, b"weight=3", None).await?;
    until(&discovery, "the flag to clear", |s| s.iter().all(|i| !i.metadata().is_inactive())).await;

    // Graceful shutdown unregisters before draining: the XClient stops picking it.
    let gone = light.address().to_owned();
    light.shutdown(Duration::from_secs(5)).await;
    until(&discovery, "the unregistered server to go", |s| s.iter().all(|i| i.key().as_str() != gone)).await;
    let counts = who_counts(&xc, 10).await?;
    println!("after {gone} shut down: {counts:?}");
    assert_eq!(counts, BTreeMap::from([(2, 10)]));
    heavy.shutdown(Duration::from_secs(5)).await;
    println!("ok in {:.2?}", t0.elapsed());
    Ok(())
}
