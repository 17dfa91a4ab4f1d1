//! DNS discovery (rpcx's `NewDNSDiscovery`) with a cache file in front (Go's
//! `CacheDiscovery`), on loopback and on rpcx-std, blocking: a server listens on
//! 127.0.0.1, an XClient finds it by the name `localhost` (one port, every address the
//! name resolves to; Failover skips `::1` when nobody serves it there), the list is
//! stored in the cache file, and a second client built over a name that resolves to
//! nothing serves from the file. Every result is checked.
//!
//! ```text
//! cargo run -p rpcx-registry --example dns
//! ```
#![allow(clippy::print_stdout)]

use rpcx_examples_common::{Args, Reply};
use rpcx_registry::cache::CacheDiscovery;
use rpcx_registry::dns::{DnsConfig, DnsDiscovery};
use rpcx_std::core::govern::{Discovery, FailMode, MultiDiscovery};
use rpcx_std::service::{Context, Router, Service};
use rpcx_std::{Server, XClient, XClientOptions};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new()
        .service(Service::new("Arith").method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }));
    let server = Server::new(router).bind("tcp@127.0.0.1:0")?;
    let port = server.local_addr().ok_or("no port")?.port();

    let dns = DnsDiscovery::connect(DnsConfig::new("localhost", port).interval(Duration::from_secs(5))).wait()?;
    let listed: Vec<String> = dns.snapshot().servers.iter().map(|s| s.key().to_string()).collect();
    println!("localhost:{port} resolves to {listed:?}");
    let file = std::env::temp_dir().join(format!("rpcx-dns-example-{}", std::process::id())).join("discovery.json");
    let cached = Arc::new(CacheDiscovery::new(Arc::new(dns), &file, 0));
    let opts = || XClientOptions { fail_mode: FailMode::Failover, ..Default::default() };
    let xc = XClient::new("Arith", cached, opts());
    let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 })?;
    assert_eq!(r.c, 42);
    println!("Arith.Mul(6, 7) = {} through DNS; cache file {}", r.c, std::fs::read_to_string(&file)?);

    // A registry that lists nothing (as when it is down at start-up): the file serves.
    let empty = Arc::new(MultiDiscovery::new([]));
    let from_file = Arc::new(CacheDiscovery::new(empty, &file, 0));
    assert!(from_file.serving_cache());
    let r: Reply = XClient::new("Arith", from_file, opts()).call("Mul", &Args { a: 5, b: 5 })?;
    assert_eq!(r.c, 25);
    println!("Arith.Mul(5, 5) = {} from the cache file alone", r.c);
    server.close();
    let _ = std::fs::remove_dir_all(file.parent().ok_or("no dir")?);
    println!("ok");
    Ok(())
}
