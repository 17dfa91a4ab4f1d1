//! The rpcx book's XClient examples on loopback, on smol: three servers in-process,
//! then fail modes (Failover past a dead server, Failfast, Failtry, Failbackup),
//! selectors (RoundRobin, WeightedRoundRobin by metadata `weight`, ConsistentHash), the
//! fan-out calls Broadcast, Fork and Inform, and `go` from several tasks. Every result
//! is checked.
//!
//! ```text
//! cargo run -p rpcx-smol --example xclient
//! ```
#![allow(clippy::print_stdout)]

use rpcx_smol::core::govern::{FailMode, Instance, MultiDiscovery, SelectMode, WeightedRoundRobin};
use rpcx_smol::service::{Context, Router, Service};
use rpcx_smol::{Server, ServerHandle, XClient, XClientOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(serde::Serialize, serde::Deserialize)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reply {
    #[serde(rename = "C")]
    c: i64,
}

/// A server whose `Arith.Mul` multiplies and `Arith.Who` answers with `id`.
async fn server(id: i64) -> ServerHandle {
    let router = Router::new().service(
        Service::new("Arith")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) })
            .method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }),
    );
    Server::new(router).bind("tcp@127.0.0.1:0").await.expect("bind")
}

/// A loopback address nobody listens on.
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("tcp@{}", l.local_addr().expect("addr"))
}

/// Who answered `n` calls, by server id.
async fn who_counts(xc: &XClient, n: usize) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("Who");
        *counts.entry(r.c).or_default() += 1;
    }
    counts
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let servers = [server(1).await, server(2).await, server(3).await];
    let addrs: Vec<String> = servers.iter().map(|s| s.address().to_owned()).collect();
    let all = || Arc::new(MultiDiscovery::new(addrs.iter().map(|a| Instance::new(a.as_str(), ""))));

    // Failover: a dead server in the list is skipped transparently.
    let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(addrs[0].as_str(), "")]);
    let xc = XClient::new("Arith", Arc::new(d), XClientOptions { fail_mode: FailMode::Failover, ..Default::default() });
    // Through the typed stub of the Arith trait (rpcx-examples-common): the XClient's
    // fail mode and selector apply to it as to calls by name.
    let arith = rpcx_examples_common::ArithClient::new(&xc);
    for i in 0..6 {
        let r = arith.mul(rpcx_examples_common::Args { a: i, b: 10 }).await?;
        assert_eq!(r.c, i * 10);
    }
    println!("Failover: 6/6 calls succeeded with a dead server in the list");

    // Failfast: the dead server's turn fails at once.
    let d = MultiDiscovery::new([Instance::new(dead_addr().as_str(), ""), Instance::new(addrs[0].as_str(), "")]);
    let xc = XClient::new("Arith", Arc::new(d), XClientOptions { fail_mode: FailMode::Failfast, ..Default::default() });
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(xc.call::<_, Reply>("Mul", &Args { a: 1, b: 1 }).await.map(|_| "ok").unwrap_or("error"));
    }
    assert!(outcomes.contains(&"ok") && outcomes.contains(&"error"), "{outcomes:?}");
    println!("Failfast: {outcomes:?}");

    // Failtry and Failbackup against healthy servers.
    for mode in [FailMode::Failtry, FailMode::Failbackup] {
        let xc = XClient::new("Arith", all(), XClientOptions { fail_mode: mode, ..Default::default() });
        let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).await?;
        assert_eq!(r.c, 42);
        println!("{mode:?}: Arith.Mul(6, 7) = {}", r.c);
    }

    // RoundRobin spreads calls evenly.
    let xc = XClient::new("Arith", all(), XClientOptions::default().select_mode(SelectMode::RoundRobin));
    let counts = who_counts(&xc, 300).await;
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    println!("RoundRobin over 300 calls: {counts:?}");

    // WeightedRoundRobin by `weight` metadata (5:1:1, nginx smooth order).
    let d = MultiDiscovery::new([
        Instance::new(addrs[0].as_str(), "weight=5"),
        Instance::new(addrs[1].as_str(), "weight=1"),
        Instance::new(addrs[2].as_str(), "weight=1"),
    ]);
    let xc = XClient::new(
        "Arith",
        Arc::new(d),
        XClientOptions { selector: Box::new(WeightedRoundRobin::default()), ..Default::default() },
    );
    let counts = who_counts(&xc, 70).await;
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![50, 10, 10], "{counts:?}");
    println!("WeightedRoundRobin 5:1:1 over 70 calls: {counts:?}");

    // ConsistentHash: the same service/method/args key always lands on the same server.
    let xc = XClient::new("Arith", all(), XClientOptions::default().select_mode(SelectMode::ConsistentHash));
    let counts = who_counts(&xc, 50).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    println!("ConsistentHash: 50 calls, all on server {:?}", counts.keys().next());

    // Broadcast (all must succeed), Fork (first success), Inform (every result).
    let xc = XClient::new("Arith", all(), XClientOptions::default());
    let r: Reply = xc.broadcast("Mul", &Args { a: 3, b: 3 }).await?;
    assert_eq!(r.c, 9);
    println!("Broadcast Arith.Mul(3, 3) = {} (all three servers answered)", r.c);
    let r: Reply = xc.fork("Who", &Args { a: 0, b: 0 }).await?;
    assert!((1..=3).contains(&r.c));
    println!("Fork: first answer from server {}", r.c);
    let receipts = xc.inform::<_, Reply>("Who", &Args { a: 0, b: 0 }).await?;
    let mut ids: Vec<i64> = receipts.iter().map(|r| r.result.as_ref().map(|r| r.c).unwrap_or(-1)).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3]);
    println!("Inform: {} receipts from servers {ids:?}", receipts.len());

    // `go` from several tasks through one XClient: start now, await later.
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let xc = xc.clone();
            smol::spawn(async move {
                let pending: Vec<_> =
                    (0..25).map(|i| xc.go::<_, Reply>("Mul", &Args { a: t, b: i }).expect("go")).collect();
                let mut all_ok = true;
                for (i, p) in pending.into_iter().enumerate() {
                    all_ok &= p.await.is_ok_and(|r| r.c == t * i as i64);
                }
                all_ok
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await);
    }
    println!("go: 100 background calls from 4 tasks, all correct; connected to {} servers", xc.connected().len());

    xc.close().await;
    for s in servers {
        s.close().await;
    }
    println!("done in {:?}", t0.elapsed());
    Ok(())
}
