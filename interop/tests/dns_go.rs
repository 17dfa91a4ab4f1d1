//! DNS discovery interop with Go: Go's in-tree `client.NewDNSDiscovery` finds Rust
//! servers of every runtime by name and calls them (`interop/go/cmd/dns`), and the Rust
//! `DnsDiscovery` finds the Go server by name and XClients of every runtime call it.
//! Names are resolved by the system (`localhost`, and `127.0.0.1` as a literal); where
//! `localhost` also names `::1`, Go's key for it is unbracketed (`tcp@::1:PORT`, its
//! bug) and ours is `tcp@[::1]:PORT`.

use rpcx_core::govern::{Discovery, FailMode};
use rpcx_interop::go::{go_binaries, run_go};
use rpcx_interop::{GoServer, Runtime, RustServer};
use rpcx_registry::dns::{DnsConfig, DnsDiscovery};
use std::sync::Arc;
use std::time::Duration;

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

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr}"))
}

#[test]
fn gos_dns_discovery_finds_and_calls_rust_servers_on_every_runtime() {
    for rt in [Runtime::Tokio, Runtime::Smol, Runtime::Std] {
        let server = RustServer::tcp_on(rt, None);
        let port = port_of(server.addr()).to_string();
        for name in ["127.0.0.1", "localhost"] {
            let out = run_go(
                &go_binaries().dns,
                &["client", "-name", name, "-port", &port, "-calls", "10"],
                Duration::from_secs(60),
            );
            assert!(out.contains(&format!("tcp@127.0.0.1:{port}")), "{rt:?} {name}: {out}");
            assert!(out.contains("OK 10"), "{rt:?} {name}: {out}");
        }
    }
}

#[test]
fn rust_dns_discovery_finds_the_go_server_and_every_runtime_calls_it() {
    let go = GoServer::tcp(None);
    let port = port_of(&go.rpcx_addr());
    for name in ["127.0.0.1", "localhost"] {
        let d: Arc<DnsDiscovery> = Arc::new(DnsDiscovery::connect(DnsConfig::new(name, port)).wait().expect("lookup"));
        let keys: Vec<String> = d.snapshot().servers.iter().map(|s| s.key().to_string()).collect();
        assert!(keys.contains(&format!("tcp@127.0.0.1:{port}")), "{name}: {keys:?}");
        assert!(
            keys.iter().all(|k| k == &format!("tcp@127.0.0.1:{port}") || k == &format!("tcp@[::1]:{port}")),
            "{keys:?}"
        );
        // Failover: `localhost` may also name ::1, where the Go server does not listen.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
        let opts = rpcx_tokio::XClientOptions { fail_mode: FailMode::Failover, ..Default::default() };
        let xc = rpcx_tokio::XClient::new("Arith", d.clone(), opts);
        rt.block_on(async {
            for i in 0..5 {
                let r: Reply = xc.call("Mul", &Args { a: i, b: 7 }).await.expect("tokio call");
                assert_eq!(r.c, i * 7);
            }
        });
        let opts = rpcx_std::XClientOptions { fail_mode: FailMode::Failover, ..Default::default() };
        let xc = rpcx_std::XClient::new("Arith", d.clone(), opts);
        for i in 0..5 {
            let r: Reply = xc.call("Mul", &Args { a: i, b: 7 }).expect("std call");
            assert_eq!(r.c, i * 7);
        }
        smol::block_on(async {
            let opts = rpcx_smol::XClientOptions { fail_mode: FailMode::Failover, ..Default::default() };
            let xc = rpcx_smol::XClient::new("Arith", d.clone(), opts);
            for i in 0..5 {
                let r: Reply = xc.call("Mul", &Args { a: i, b: 7 }).await.expect("smol call");
                assert_eq!(r.c, i * 7);
            }
        });
    }
}
