//! ZooKeeper registry interop with Go, both directions, against a real ZooKeeper: a Go
//! server registering through Go's rpcx-zookeeper plugin is found and called by Rust
//! XClients on every runtime (and its nodes are laid out as `ZkRegistrar` writes them),
//! and Rust servers on every runtime registering through rpcx-registry are found and
//! called by Go's ZooKeeper discovery and XClient (`interop/go/cmd/zookeeper`).

use rpcx_core::govern::Discovery;
use rpcx_core::service::{Context, Router, Service};
use rpcx_interop::go::{GoRegisteredServer, go_binaries};
use rpcx_registry::zookeeper::testing::ZkServer;
use rpcx_registry::zookeeper::{ZkConfig, ZkDiscovery, ZkRegistrar};
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

fn config(zk: &ZkServer) -> ZkConfig {
    ZkConfig::new([zk.address()], BASE)
        .session_timeout(Duration::from_secs(4))
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

fn go_server(zk: &ZkServer, meta: &str) -> GoRegisteredServer {
    GoRegisteredServer::start(
        &go_binaries().zookeeper,
        &["server", "-zk", &zk.address(), "-base", BASE, "-meta", meta, "-update", "1s"],
    )
}

/// Run Go's ZooKeeper discovery + XClient against the registry; returns its stdout.
fn go_client(zk: &ZkServer, calls: usize) -> String {
    let calls = calls.to_string();
    let args = ["client", "-zk", &zk.address(), "-base", BASE, "-service", "Arith", "-calls", &calls];
    rpcx_interop::go::run_go(&go_binaries().zookeeper, &args, Duration::from_secs(60))
}

/// What Go wrote, read with a raw client: (data, ephemeral) of each path.
fn raw_nodes(zk: &ZkServer, paths: &[String]) -> Vec<(String, bool)> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    rt.block_on(async {
        let c = tokio::time::timeout(Duration::from_secs(10), zookeeper_client::Client::connect(&zk.address()))
            .await
            .expect("raw client in time")
            .expect("raw client");
        let mut out = Vec::new();
        for p in paths {
            let (data, stat) = c.get_data(p).await.unwrap_or_else(|e| panic!("get {p}: {e}"));
            out.push((String::from_utf8_lossy(&data).into_owned(), stat.ephemeral_owner != 0));
        }
        out
    })
}

#[test]
fn go_server_registered_by_rpcx_zookeeper_is_found_and_called_by_rust_xclients_on_every_runtime() {
    let zk = ZkServer::start().expect("zookeeper");
    let go = go_server(&zk, "group=go&weight=5");
    // Go's layout is ours: persistent parents with `rpcx_path` and the service name, an
    // ephemeral node with the metadata as data.
    let nodes = raw_nodes(&zk, &[BASE.to_owned(), format!("{BASE}/Arith"), format!("{BASE}/Arith/{}", go.key)]);
    assert_eq!(nodes[0], ("rpcx_path".to_owned(), false));
    assert_eq!(nodes[1], ("Arith".to_owned(), false));
    assert!(nodes[2].1, "Go's server node is ephemeral");
    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").wait().expect("discovery"));
    rpcx_interop::registry::wait_keys(&*discovery, &[go.key.as_str()], "the Go server");
    let snap = discovery.snapshot();
    let md = snap.servers[0].metadata();
    assert!(md.in_group("go") && md.weight() == 5, "Go's metadata as written: {:?}", md.raw());

    rpcx_interop::registry::mul_on_every_runtime(discovery.clone());

    // Go's Shutdown unregisters; our children watch sees the node go.
    go.shutdown();
    rpcx_interop::registry::wait_keys(&*discovery, &[], "the Go server to unregister");
}

#[test]
fn rust_servers_registered_through_rpcx_registry_are_found_and_called_by_go_discovery() {
    let zk = ZkServer::start().expect("zookeeper");
    let registrar = || ZkRegistrar::new(config(&zk)).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server = rt.block_on(rpcx_tokio::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("tokio bind and register");
    let out = go_client(&zk, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "tokio server via Go discovery: {out}");
    rt.block_on(server.shutdown(Duration::from_secs(5)));

    let server = smol::block_on(rpcx_smol::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("smol bind and register");
    let out = go_client(&zk, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "smol server via Go discovery: {out}");
    smol::block_on(server.shutdown(Duration::from_secs(5)));

    let server = rpcx_std::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0");
    let server = server.expect("std bind and register");
    let out = go_client(&zk, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "std server via Go discovery: {out}");
    server.shutdown(Duration::from_secs(5));
}
