//! etcd registry interop with Go, both directions, against a real etcd: a Go server
//! registering through Go's rpcx-etcd plugin is found and called by Rust XClients on
//! every runtime, and Rust servers on every runtime registering through rpcx-registry
//! are found and called by Go's etcd discovery and XClient (`interop/go/cmd/etcd`).

use rpcx_core::govern::Discovery;
use rpcx_core::service::{Context, Router, Service};
use rpcx_interop::go::{GoRegisteredServer, go_binaries};
use rpcx_registry::etcd::testing::EtcdServer;
use rpcx_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistrar};
use std::sync::Arc;
use std::time::Duration;

const BASE: &str = "/rpcx_test";

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

fn config(etcd: &EtcdServer) -> EtcdConfig {
    EtcdConfig::new([etcd.endpoint()], BASE)
        .lease_ttl(Duration::from_secs(5))
        .update_interval(Duration::from_secs(1))
        .op_timeout(Duration::from_secs(5))
}

fn router() -> Router {
    Router::new().service(
        Service::new("Arith")
            .metadata("group=rust&weight=4")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }),
    )
}

fn go_server(etcd: &EtcdServer, meta: &str) -> GoRegisteredServer {
    GoRegisteredServer::start(
        &go_binaries().etcd,
        &["server", "-etcd", &etcd.endpoint(), "-base", BASE, "-meta", meta, "-update", "1s"],
    )
}

/// Run Go's etcd discovery + XClient against the registry; returns its stdout.
fn go_client(etcd: &EtcdServer, calls: usize) -> String {
    let calls = calls.to_string();
    let args = ["client", "-etcd", &etcd.endpoint(), "-base", BASE, "-service", "Arith", "-calls", &calls];
    rpcx_interop::go::run_go(&go_binaries().etcd, &args, Duration::from_secs(60))
}

#[test]
fn go_server_registered_by_rpcx_etcd_is_found_and_called_by_rust_xclients_on_every_runtime() {
    let etcd = EtcdServer::start().expect("etcd");
    let go = go_server(&etcd, "group=go&weight=5");
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").wait().expect("discovery"));
    rpcx_interop::registry::wait_keys(&*discovery, &[go.key.as_str()], "the Go server");
    let snap = discovery.snapshot();
    let md = snap.servers[0].metadata();
    assert!(md.in_group("go") && md.weight() == 5, "Go's metadata as written: {:?}", md.raw());

    rpcx_interop::registry::mul_on_every_runtime(discovery.clone());

    // Go's Shutdown unregisters; our watch sees the node go.
    go.shutdown();
    rpcx_interop::registry::wait_keys(&*discovery, &[], "the Go server to unregister");
}

#[test]
fn rust_servers_registered_through_rpcx_registry_are_found_and_called_by_go_discovery() {
    let etcd = EtcdServer::start().expect("etcd");
    let registrar = || EtcdRegistrar::new(config(&etcd)).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server = rt.block_on(rpcx_tokio::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("tokio bind and register");
    let out = go_client(&etcd, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "tokio server via Go discovery: {out}");
    rt.block_on(server.shutdown(Duration::from_secs(5)));

    let server = smol::block_on(rpcx_smol::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("smol bind and register");
    let out = go_client(&etcd, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "smol server via Go discovery: {out}");
    smol::block_on(server.shutdown(Duration::from_secs(5)));

    let server = rpcx_std::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0");
    let server = server.expect("std bind and register");
    let out = go_client(&etcd, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "std server via Go discovery: {out}");
    server.shutdown(Duration::from_secs(5));
}
