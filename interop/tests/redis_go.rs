//! Redis registry interop with Go, both directions, against a real redis-server: a Go
//! server registering through rpcx's in-tree `RedisRegisterPlugin` (libkv) is found and
//! called by Rust XClients on every runtime, its keys are the ones we write (checked
//! byte for byte on a real Go run, with and without a leading `/` in the base path),
//! and Rust servers on every runtime registering through rpcx-registry are found and
//! called by rpcx-redis's discovery and Go's XClient (`interop/go/cmd/redis`).

use rpcx_core::govern::Discovery;
use rpcx_core::service::{Context, Router, Service};
use rpcx_interop::go::{GoRegisteredServer, go_binaries};
use rpcx_registry::redis::testing::RedisServer;
use rpcx_registry::redis::{RedisConfig, RedisDiscovery, RedisRegistrar, decode_value, redis_key};
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

fn config(redis: &RedisServer, base: &str) -> RedisConfig {
    RedisConfig::new(&redis.url(), base).update_interval(Duration::from_secs(1)).op_timeout(Duration::from_secs(5))
}

fn router() -> Router {
    Router::new().service(
        Service::new("Arith")
            .metadata("group=rust&weight=4")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }),
    )
}

fn go_server(redis: &RedisServer, base: &str, meta: &str) -> GoRegisteredServer {
    GoRegisteredServer::start(
        &go_binaries().redis,
        &["server", "-redis", &redis.address(), "-base", base, "-meta", meta, "-update", "1s"],
    )
}

/// Run rpcx-redis's discovery + Go's XClient against the registry; returns its stdout.
fn go_client(redis: &RedisServer, calls: usize) -> String {
    let calls = calls.to_string();
    let args = ["client", "-redis", &redis.address(), "-base", BASE, "-service", "Arith", "-calls", &calls];
    rpcx_interop::go::run_go(&go_binaries().redis, &args, Duration::from_secs(60))
}

async fn raw_get(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut con = client.get_multiplexed_async_connection().await.expect("raw connection");
    redis::cmd("GET").arg(key).query_async(&mut con).await.expect("GET")
}

#[test]
fn go_server_keys_are_libkv_keys_with_and_without_a_leading_slash() {
    let redis = RedisServer::start().expect("redis");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    // libkv's Normalize is "/" + the key as given: a leading "/" in the base path doubles.
    for (base, redis_prefix) in [("/rpcx_test", "//rpcx_test/Arith/"), ("rpcx_test", "/rpcx_test/Arith/")] {
        let go = go_server(&redis, base, "group=go");
        let given = format!("{base}/Arith/{}", go.key);
        let expected_redis_key = format!("{redis_prefix}{}", go.key);
        assert_eq!(redis_key(&given), expected_redis_key, "our key form");
        let raw = rt
            .block_on(raw_get(&redis, &expected_redis_key))
            .unwrap_or_else(|| panic!("Go wrote no Redis key {expected_redis_key:?} for base {base:?}"));
        assert_eq!(
            decode_value(&raw),
            Some((given.clone(), "group=go".to_owned())),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        let discovery = Arc::new(RedisDiscovery::connect(config(&redis, base), "Arith").wait().expect("discovery"));
        rpcx_interop::registry::wait_keys(&*discovery, &[go.key.as_str()], "the Go server");
        go.shutdown();
        rpcx_interop::registry::wait_keys(&*discovery, &[], "the Go server to unregister");
    }
}

#[test]
fn go_server_registered_by_the_redis_plugin_is_found_and_called_by_rust_xclients_on_every_runtime() {
    let redis = RedisServer::start().expect("redis");
    let go = go_server(&redis, BASE, "group=go&weight=5");
    let discovery = Arc::new(RedisDiscovery::connect(config(&redis, BASE), "Arith").wait().expect("discovery"));
    rpcx_interop::registry::wait_keys(&*discovery, &[go.key.as_str()], "the Go server");
    let snap = discovery.snapshot();
    let md = snap.servers[0].metadata();
    assert!(md.in_group("go") && md.weight() == 5, "Go's metadata as written: {:?}", md.raw());

    rpcx_interop::registry::mul_on_every_runtime(discovery.clone());

    // Go's Shutdown unregisters; our discovery sees the node go.
    go.shutdown();
    rpcx_interop::registry::wait_keys(&*discovery, &[], "the Go server to unregister");
}

#[test]
fn rust_servers_registered_through_rpcx_registry_are_found_and_called_by_go_redis_discovery() {
    let redis = RedisServer::start().expect("redis");
    let registrar = || RedisRegistrar::new(config(&redis, BASE)).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server = rt.block_on(rpcx_tokio::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("tokio bind and register");
    let out = go_client(&redis, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "tokio server via Go discovery: {out}");
    rt.block_on(server.shutdown(Duration::from_secs(5)));

    let server = smol::block_on(rpcx_smol::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("smol bind and register");
    let out = go_client(&redis, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "smol server via Go discovery: {out}");
    smol::block_on(server.shutdown(Duration::from_secs(5)));

    let server = rpcx_std::Server::new(router()).registrar(registrar()).bind("tcp@127.0.0.1:0");
    let server = server.expect("std bind and register");
    let out = go_client(&redis, 10);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "std server via Go discovery: {out}");
    server.shutdown(Duration::from_secs(5));
}
