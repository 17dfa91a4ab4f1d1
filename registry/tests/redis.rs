//! Registration and discovery against a real Redis (Debian's `redis-server`, started per
//! test by `rpcx_registry::redis::testing`): every runtime's server registers in Go's
//! libkv layout and an XClient on the same runtime finds and calls it; faults (a killed
//! server, a restarted Redis, an `inactive` flip, `CONFIG` refused). Every wait is bounded.

mod common;

use common::{router, until};
use rpcx_core::govern::Discovery;
use rpcx_core::registry::RegistryError;
use rpcx_core::service::{Context, Router, Service};
use rpcx_examples_common::{Args, Reply};
use rpcx_registry::redis::testing::RedisServer;
use rpcx_registry::redis::{RedisConfig, RedisDiscovery, RedisRegistrar, decode_value, encode_value, redis_key};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: &str = "/rpcx_test";
const CHILD_ENV: &str = "RPCX_REGISTRY_TEST_CHILD_REDIS";

/// Nodes expire after 2 x 500 ms.
fn config(redis: &RedisServer) -> RedisConfig {
    RedisConfig::new(&redis.url(), BASE)
        .update_interval(Duration::from_millis(500))
        .op_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .poll_interval(Duration::from_millis(200))
}

fn registrar(redis: &RedisServer) -> RedisRegistrar {
    RedisRegistrar::new(config(redis)).expect("config")
}

impl common::Engine for RedisServer {
    fn registrar(&self) -> Box<dyn rpcx_core::registry::Registrar> {
        Box::new(registrar(self))
    }
    async fn discovery(&self) -> Arc<dyn Discovery> {
        Arc::new(RedisDiscovery::connect(config(self), "Arith").await.expect("discovery"))
    }
    async fn node_value(&self, server: &str) -> Option<String> {
        let raw = raw_get(&mut raw(self).await, &redis_key(&node(server))).await?;
        decode_value(&raw).map(|(_, v)| v)
    }
    async fn set_node(&self, server: &str, value: &str) {
        let n = node(server);
        let set = redis::cmd("SET").arg(redis_key(&n)).arg(encode_value(&n, value)).arg("KEEPTTL").clone();
        let () = set.query_async(&mut raw(self).await).await.expect("SET");
    }
}

fn node(key: &str) -> String {
    format!("{BASE}/Arith/{key}")
}

async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url()).expect("url").get_multiplexed_async_connection().await.expect("raw connection")
}

async fn raw_get(con: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query_async(con).await.expect("GET")
}

fn keys(d: &RedisDiscovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|s| s.key().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_server_registers_in_libkv_layout_and_xclient_calls_it() {
    let redis = RedisServer::start().expect("redis");
    let server = rpcx_tokio::Server::new(router(1, "weight=10&group=a"))
        .registrar(registrar(&redis))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    let mut con = raw(&redis).await;
    // libkv: Redis key "/" + key, value JSON with the key as given and base64 metadata.
    let redis_node = format!("/{}", node(&key));
    assert_eq!(redis_key(&node(&key)), redis_node);
    let value = raw_get(&mut con, &redis_node).await.expect("the node exists");
    let text = String::from_utf8(value.clone()).expect("utf8");
    assert!(text.starts_with(&format!(r#"{{"Key":"{}","Value":"#, node(&key))), "{text}");
    assert_eq!(decode_value(&value), Some((node(&key), "weight=10&group=a".to_owned())));
    let pttl: i64 = redis::cmd("PTTL").arg(&redis_node).query_async(&mut con).await.expect("PTTL");
    assert!(pttl > 0 && pttl <= 1000, "expiry is twice the update interval: {pttl} ms");
    let dir = raw_get(&mut con, &format!("/{BASE}")).await.expect("base path key");
    assert_eq!(decode_value(&dir), Some((BASE.to_owned(), "rpcx_path".to_owned())));

    // A long poll interval: only keyspace notifications can bring the updates in time.
    let notified = config(&redis).poll_interval(Duration::from_secs(60));
    let discovery = Arc::new(RedisDiscovery::connect(notified, "Arith").await.expect("discovery"));
    until(Duration::from_secs(5), "keyspace notifications", async || discovery.uses_notifications()).await;
    assert_eq!(keys(&discovery), std::slice::from_ref(&key));
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).await.expect("call through Redis");
    assert_eq!(r.c, 42);
    // Refreshes keep the node past its expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(raw_get(&mut con, &redis_node).await.is_some(), "refreshed");
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(raw_get(&mut con, &redis_node).await, None, "shutdown deletes the node");
    until(Duration::from_secs(5), "discovery to drop it", async || keys(&discovery).is_empty()).await;
}

#[test]
fn smol_server_registers_and_smol_xclient_calls_it() {
    common::smol_server_registers_and_smol_xclient_calls_it(&RedisServer::start().expect("redis"));
}

#[test]
fn std_server_registers_and_std_xclient_calls_it() {
    common::std_server_registers_and_std_xclient_calls_it(&RedisServer::start().expect("redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspecified_bind_without_advertise_address_is_refused_with_a_typed_error() {
    common::unspecified_bind_without_advertise_address_is_refused(&RedisServer::start().expect("redis")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_unregisters_before_draining_in_flight_calls() {
    common::graceful_shutdown_unregisters_before_draining_in_flight_calls(&RedisServer::start().expect("redis")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_and_bad_config_are_typed_errors() {
    let port = rpcx_registry::etcd::testing::free_port().expect("port");
    let cfg = RedisConfig::new(&format!("redis://127.0.0.1:{port}"), BASE).op_timeout(Duration::from_millis(500));
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(RedisRegistrar::new(cfg.clone()).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect_err("no Redis");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{err:?}");
    let d = RedisDiscovery::connect(cfg, "Arith").await;
    assert!(matches!(d, Err(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{d:?}");
    assert!(matches!(RedisRegistrar::new(RedisConfig::new("nope://", BASE)), Err(RegistryError::Config(_))));
}

/// Run in a child process by `killed_server_node_expires`: a std server registered in
/// the Redis named by the environment, until it is killed.
#[test]
#[ignore = "helper: run in a child process by killed_server_node_expires"]
fn child_process_server() {
    let Ok(url) = std::env::var(CHILD_ENV) else { return };
    common::serve_in_child(
        router(1, ""),
        RedisRegistrar::new(RedisConfig::new(&url, BASE).update_interval(Duration::from_millis(500))).expect("config"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_node_expires_and_xclient_stops_selecting_it() {
    let redis = RedisServer::start().expect("redis");
    let survivor = rpcx_tokio::Server::new(router(2, ""))
        .registrar(registrar(&redis))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    for rt in common::RUNTIMES {
        let (mut child, killed) = common::spawn_child_server((CHILD_ENV, &redis.url()), rt);
        let discovery = Arc::new(RedisDiscovery::connect(config(&redis), "Arith").await.expect("discovery"));
        let mut want = vec![killed.clone(), survivor.address().to_owned()];
        want.sort();
        until(Duration::from_secs(5), "both servers listed", async || keys(&discovery) == want).await;
        child.kill().expect("kill -9");
        let _ = child.wait();
        // Expiry 2 x 500 ms; Redis expires keys actively within ~100 ms of their deadline.
        let took = until(Duration::from_secs(10), "the killed server's node to expire", async || {
            !keys(&discovery).contains(&killed)
        })
        .await;
        assert!(took <= Duration::from_secs(3), "expired after {took:?}");
        let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
        for _ in 0..10 {
            let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("call");
            assert_eq!(r.c, 2, "only the survivor is selected");
        }
    }
    survivor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_calls_on_the_last_list_and_the_registration_comes_back() {
    let mut redis = RedisServer::start().expect("redis");
    let server = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&redis))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let discovery = Arc::new(RedisDiscovery::connect(config(&redis), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let calls = async |n: usize, phase: &str| {
        for i in 0..n {
            let r: Result<Reply, _> = xc.call("Mul", &Args { a: i as i64, b: 3 }).await;
            assert_eq!(r.unwrap_or_else(|e| panic!("call {phase}: {e:?}")).c, i as i64 * 3);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    calls(10, "before the kill").await;
    redis.kill();
    until(Duration::from_secs(10), "discovery to notice", async || !discovery.is_connected()).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        calls(10, "while Redis is down").await;
    }
    assert_eq!(keys(&discovery), std::slice::from_ref(&key), "the last list is served while Redis is down");
    // Without persistence Redis comes back empty: the registrar writes everything again.
    redis = tokio::task::spawn_blocking(move || {
        redis.restart().expect("restart redis");
        redis
    })
    .await
    .expect("restart");
    let mut con = raw(&redis).await;
    let redis_node = redis_key(&node(&key));
    let took = until(Duration::from_secs(10), "the registration to come back", async || {
        raw_get(&mut con, &redis_node).await.is_some()
    })
    .await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    until(Duration::from_secs(10), "discovery to reconnect", async || discovery.is_connected()).await;
    // A discovery that reconnected before the registrar wrote again lists nothing until
    // the write reaches it (notification or poll): wait for it, bounded.
    until(Duration::from_secs(10), "discovery to list the registration again", async || {
        keys(&discovery) == std::slice::from_ref(&key)
    })
    .await;
    calls(10, "after the restart").await;
    assert_eq!(keys(&discovery), [key]);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_flip_stops_selection_and_survives_refreshes() {
    let redis = RedisServer::start().expect("redis");
    let a =
        rpcx_tokio::Server::new(router(1, "")).registrar(registrar(&redis)).bind("tcp@127.0.0.1:0").await.expect("a");
    let b =
        rpcx_tokio::Server::new(router(2, "")).registrar(registrar(&redis)).bind("tcp@127.0.0.1:0").await.expect("b");
    let notified = config(&redis).poll_interval(Duration::from_secs(60));
    let discovery = Arc::new(RedisDiscovery::connect(notified, "Arith").await.expect("discovery"));
    until(Duration::from_secs(5), "the subscription", async || discovery.uses_notifications()).await;
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let who = async |n: usize| {
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..n {
            let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("call");
            ids.insert(r.c);
        }
        ids.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(who(20).await, [1, 2]);
    let a_node = node(a.advertised().expect("advertised").as_str());
    let mut con = raw(&redis).await;
    let flipped = encode_value(&a_node, "state=inactive");
    let () = redis::cmd("SET")
        .arg(redis_key(&a_node))
        .arg(&flipped)
        .arg("KEEPTTL")
        .query_async(&mut con)
        .await
        .expect("flip");
    until(Duration::from_secs(5), "discovery to see the flip", async || {
        discovery.snapshot().servers.iter().any(|s| s.metadata().is_inactive())
    })
    .await;
    assert_eq!(who(20).await, [2], "an inactive server is not selected");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = raw_get(&mut con, &redis_key(&a_node)).await.expect("still there: its expiry is renewed");
    assert_eq!(decode_value(&now).map(|(_, v)| v).as_deref(), Some("state=inactive"), "refresh keeps the value");
    assert_eq!(who(20).await, [2]);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_config_falls_back_to_polling_and_sibling_services_stay_apart() {
    let redis = RedisServer::start_without_config().expect("redis");
    let discovery = Arc::new(RedisDiscovery::connect(config(&redis), "Arith").await.expect("discovery"));
    let server = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&redis))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    until(Duration::from_secs(5), "polling to find the server", async || keys(&discovery) == [key.clone()]).await;
    assert!(!discovery.uses_notifications());
    // A sibling service sharing the prefix (Go's SCAN lists Arith2 under Arith).
    let sibling = Router::new().service(
        Service::new("Arith2").method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }),
    );
    let other =
        rpcx_tokio::Server::new(sibling).registrar(registrar(&redis)).bind("tcp@127.0.0.1:0").await.expect("bind");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(keys(&discovery), [key], "Arith2's node is not Arith's");
    other.shutdown(Duration::from_secs(5)).await;
    server.shutdown(Duration::from_secs(5)).await;
    until(Duration::from_secs(5), "polling to see the unregistration", async || keys(&discovery).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_server_handle_leaves_the_server_serving_and_registered() {
    let redis = RedisServer::start().expect("redis");
    let tokio_server = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&redis))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let r = registrar(&redis);
    let std_server = tokio::task::spawn_blocking(move || {
        rpcx_std::Server::new(router(2, "")).registrar(r).bind("tcp@127.0.0.1:0").expect("std bind")
    })
    .await
    .expect("join");
    let mut want = vec![tokio_server.address().to_owned(), std_server.address().to_owned()];
    want.sort();
    drop(tokio_server);
    drop(std_server);
    // Nodes expire after 1 s unless refreshed; wait well past that.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut con = raw(&redis).await;
    for key in &want {
        assert!(raw_get(&mut con, &redis_key(&node(key))).await.is_some(), "{key} still registered");
    }
    let discovery = Arc::new(RedisDiscovery::connect(config(&redis), "Arith").await.expect("discovery"));
    assert_eq!(keys(&discovery), want);
    let xc = rpcx_tokio::XClient::new("Arith", discovery, Default::default());
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("call");
        ids.insert(r.c);
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rates_are_written_into_the_node_like_gos_metrics() {
    common::published_rates_are_written_into_the_node_like_gos_metrics(&RedisServer::start().expect("redis")).await;
}
