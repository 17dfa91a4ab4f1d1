//! Registration and discovery against a real etcd (Debian's `etcd-server`, started
//! per test by `rpcx_registry::etcd::testing`): every runtime's server registers and an
//! XClient on the same runtime finds and calls it; faults (a killed server, a
//! restarted or wiped etcd, a revoked lease, a vanished node, an `inactive` flip).
//! Every wait is bounded.

mod common;

use common::{router, until, who_on_every_runtime};
use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use rpcx_core::govern::Discovery;
use rpcx_core::registry::{AdvertiseError, RegistryError};
use rpcx_core::service::{Context, Router, Service};
use rpcx_examples_common::{Args, Reply};
use rpcx_registry::etcd::testing::EtcdServer;
use rpcx_registry::etcd::{EtcdConfig, EtcdDiscovery, EtcdRegistrar};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: &str = "/rpcx_test";
const CHILD_ENV: &str = "RPCX_REGISTRY_TEST_CHILD_ETCD";

/// Short lease and update interval so the fault tests run in seconds.
fn config(etcd: &EtcdServer) -> EtcdConfig {
    EtcdConfig::new([etcd.endpoint()], BASE)
        .lease_ttl(Duration::from_secs(3))
        .update_interval(Duration::from_millis(500))
        .op_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
}

fn registrar(etcd: &EtcdServer) -> EtcdRegistrar {
    EtcdRegistrar::new(config(etcd)).expect("config")
}

async fn raw_client(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.endpoint()], None).await.expect("raw etcd client")
}

async fn raw_get(c: &mut Client, key: &str) -> Option<String> {
    let r = c.get(key, Some(GetOptions::new())).await.expect("get");
    r.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

fn keys(d: &EtcdDiscovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|s| s.key().to_string()).collect()
}

fn node(key: &str) -> String {
    format!("{BASE}/Arith/{key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_server_registers_in_go_layout_and_xclient_calls_it() {
    let etcd = EtcdServer::start().expect("etcd");
    let server = rpcx_tokio::Server::new(router(1, "weight=10&group=a"))
        .registrar(registrar(&etcd))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    assert_eq!(key, server.address());
    let mut raw = raw_client(&etcd).await;
    // Go's rpcx-etcd layout: the node's value is the metadata string, as given.
    assert_eq!(raw_get(&mut raw, &node(&key)).await.as_deref(), Some("weight=10&group=a"));
    assert_eq!(raw_get(&mut raw, BASE).await.as_deref(), Some("rpcx_path"));
    assert_eq!(raw_get(&mut raw, &format!("{BASE}/Arith")).await.as_deref(), Some("Arith"));
    let lease = raw.get(node(&key), None).await.expect("get").kvs()[0].lease();
    assert_ne!(lease, 0, "the node must be on a lease");

    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    assert_eq!(keys(&discovery), std::slice::from_ref(&key));
    assert_eq!(discovery.snapshot().servers[0].metadata().weight(), 10);
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).await.expect("call through etcd");
    assert_eq!(r.c, 42);

    // Graceful shutdown unregisters first: the node is gone once it returns.
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(raw_get(&mut raw, &node(&key)).await, None, "shutdown must delete the node");
    until(Duration::from_secs(5), "discovery to drop the server", async || keys(&discovery).is_empty()).await;
}

#[test]
fn smol_server_registers_and_smol_xclient_calls_it() {
    let etcd = EtcdServer::start().expect("etcd");
    smol::block_on(async {
        let server = rpcx_smol::Server::new(router(1, "group=b"))
            .registrar(registrar(&etcd))
            .bind("tcp@127.0.0.1:0")
            .await
            .expect("bind and register");
        let key = server.advertised().expect("advertised").to_string();
        let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
        assert_eq!(keys(&discovery), [key]);
        assert!(discovery.snapshot().servers[0].metadata().in_group("b"));
        let xc = rpcx_smol::XClient::new("Arith", discovery.clone(), Default::default());
        let r: Reply = xc.call("Mul", &Args { a: 3, b: 5 }).await.expect("call through etcd");
        assert_eq!(r.c, 15);
        server.close().await;
        let t0 = Instant::now();
        while !keys(&discovery).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(5), "close must unregister");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn std_server_registers_and_std_xclient_calls_it() {
    let etcd = EtcdServer::start().expect("etcd");
    let server = rpcx_std::Server::new(router(1, ""))
        .registrar(registrar(&etcd))
        .advertise_address("127.0.0.1")
        .bind("tcp@0.0.0.0:0")
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    let port = server.local_addr().expect("tcp").port();
    assert_eq!(key, format!("tcp@127.0.0.1:{port}"), "a bare host takes the bound port");
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").wait().expect("discovery"));
    assert_eq!(keys(&discovery), [key]);
    let xc = rpcx_std::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 4, b: 5 }).expect("call through etcd");
    assert_eq!(r.c, 20);
    server.shutdown(Duration::from_secs(5));
    let t0 = Instant::now();
    while !keys(&discovery).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "shutdown must unregister");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspecified_bind_without_advertise_address_is_refused_with_a_typed_error() {
    let etcd = EtcdServer::start().expect("etcd");
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&etcd))
        .bind("tcp@0.0.0.0:0")
        .await
        .expect_err("0.0.0.0 cannot be advertised");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Advertise(AdvertiseError::Unspecified { .. }))), "{err:?}");
    let std_err = rpcx_std::Server::new(router(1, "")).registrar(registrar(&etcd)).bind("tcp@[::]:0");
    assert!(std_err.is_err(), "std must refuse [::] too");
    // Nothing was written.
    let mut raw = raw_client(&etcd).await;
    let r = raw.get(BASE, Some(GetOptions::new().with_prefix())).await.expect("list");
    assert!(r.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_fails_bind_and_discovery_with_typed_errors() {
    let port = rpcx_registry::etcd::testing::free_port().expect("port");
    let cfg = EtcdConfig::new([format!("http://127.0.0.1:{port}")], BASE).op_timeout(Duration::from_millis(500));
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(EtcdRegistrar::new(cfg.clone()).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect_err("no registry");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{err:?}");
    let d = EtcdDiscovery::connect(cfg, "Arith").await;
    assert!(matches!(d, Err(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{d:?}");
    assert!(matches!(EtcdRegistrar::new(EtcdConfig::new(Vec::<String>::new(), BASE)), Err(RegistryError::Config(_))));
}

/// Run by `killed_server_node_expires_within_ttl` in a child process: a std server
/// registered in the etcd named by the environment, until it is killed.
#[test]
#[ignore = "helper: run in a child process by killed_server_node_expires_within_ttl"]
fn child_process_server() {
    let Ok(endpoint) = std::env::var(CHILD_ENV) else { return };
    common::serve_in_child(
        router(1, ""),
        EtcdRegistrar::new(
            EtcdConfig::new([endpoint], BASE)
                .lease_ttl(Duration::from_secs(3))
                .update_interval(Duration::from_millis(500)),
        )
        .expect("config"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_node_expires_within_ttl_and_xclient_stops_selecting_it() {
    let etcd = EtcdServer::start().expect("etcd");
    let survivor =
        rpcx_tokio::Server::new(router(2, "")).registrar(registrar(&etcd)).bind("tcp@127.0.0.1:0").await.expect("bind");
    for rt in common::RUNTIMES {
        let (mut child, killed_key) = common::spawn_child_server((CHILD_ENV, &etcd.endpoint()), rt);
        let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
        let mut want = vec![killed_key.clone(), survivor.address().to_owned()];
        want.sort();
        assert_eq!(keys(&discovery), want);

        child.kill().expect("kill -9"); // SIGKILL: no unregistration
        let _ = child.wait();
        let took = until(Duration::from_secs(10), "the killed server's node to expire", async || {
            !keys(&discovery).contains(&killed_key)
        })
        .await;
        // The lease TTL is 3 s; etcd checks expiry every 500 ms (plus slack for a loaded machine).
        assert!(took <= Duration::from_secs(6), "node expired after {took:?}, TTL is 3 s");
        let only_survivor = vec![2];
        assert_eq!(who_on_every_runtime(discovery.clone(), 10).await, [(); 3].map(|_| only_survivor.clone()));
    }
    survivor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_keeps_calls_on_the_last_list_and_the_registration() {
    let mut etcd = EtcdServer::start().expect("etcd");
    let server =
        rpcx_tokio::Server::new(router(1, "")).registrar(registrar(&etcd)).bind("tcp@127.0.0.1:0").await.expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let calls = async |n: usize| {
        for i in 0..n {
            let r: Result<Reply, _> = xc.call("Mul", &Args { a: i as i64, b: 2 }).await;
            assert_eq!(r.expect("call while etcd restarts").c, i as i64 * 2);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    calls(20).await;
    etcd.kill();
    until(Duration::from_secs(10), "discovery to notice", async || !discovery.is_connected()).await;
    // Down for longer than the lease TTL: calls go on with the last known list.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        calls(10).await;
    }
    // A new XClient on every runtime gets the last list too.
    assert_eq!(who_on_every_runtime(discovery.clone(), 5).await, [(); 3].map(|_| vec![1]));
    assert_eq!(keys(&discovery), std::slice::from_ref(&key), "the last known list is served while etcd is down");
    let lists = discovery.lists();
    etcd = tokio::task::spawn_blocking(move || {
        etcd.restart().expect("restart etcd");
        etcd
    })
    .await
    .expect("restart");
    until(Duration::from_secs(15), "discovery to re-list", async || {
        discovery.is_connected() && discovery.lists() > lists
    })
    .await;
    calls(20).await;
    // The registration is there and stays there past a lease TTL (the keep-alive resumed).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut raw = raw_client(&etcd).await;
    assert_eq!(raw_get(&mut raw, &node(&key)).await.as_deref(), Some(""), "registration back after the restart");
    assert_eq!(keys(&discovery), [key]);
    calls(10).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_losing_its_data_gets_the_registration_back() {
    let mut etcd = EtcdServer::start().expect("etcd");
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(EtcdRegistrar::new(config(&etcd).update_interval(Duration::from_secs(60))).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    etcd = tokio::task::spawn_blocking(move || {
        etcd.restart_empty().expect("restart etcd empty");
        etcd
    })
    .await
    .expect("restart");
    // The old lease is unknown to the new etcd: a new lease and a re-put, without
    // waiting for the (60 s) update tick.
    let mut raw = raw_client(&etcd).await;
    let took = until(Duration::from_secs(15), "the node to be re-put", async || {
        raw_get(&mut raw, &node(&key)).await.as_deref() == Some("weight=3")
    })
    .await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    until(Duration::from_secs(10), "discovery to see it again", async || keys(&discovery) == [key.clone()]).await;
    server.shutdown(Duration::from_secs(5)).await;
}

/// Go's CacheDiscovery: while etcd lists nothing (its node deleted, the server still up
/// and refreshing only every minute) the cache file keeps XClients of every runtime
/// calling, and a client started then begins from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_file_serves_the_last_list_while_etcd_lists_nothing() {
    use rpcx_registry::cache::CacheDiscovery;
    let etcd = EtcdServer::start().expect("etcd");
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(EtcdRegistrar::new(config(&etcd).update_interval(Duration::from_secs(60))).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let file = std::env::temp_dir().join(format!("rpcx-etcd-cache-{}", std::process::id())).join("discovery.json");
    let etcd_list = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    let cached = Arc::new(CacheDiscovery::new(etcd_list.clone(), &file, 0));
    assert_eq!(common::keys(&*cached), std::slice::from_ref(&key));
    let stored = std::fs::read_to_string(&file).expect("the cache file");
    assert_eq!(stored, format!(r#"[{{"Key":"{key}","Value":"weight=3"}}]"#));
    let mut raw = raw_client(&etcd).await;
    raw.delete(node(&key), None).await.expect("delete the node");
    until(Duration::from_secs(5), "etcd to list nothing", async || keys(&etcd_list).is_empty()).await;
    assert!(cached.serving_cache());
    assert_eq!(who_on_every_runtime(cached.clone(), 3).await, [vec![1], vec![1], vec![1]]);
    let fresh = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    let started_empty = Arc::new(CacheDiscovery::new(fresh, &file, 0));
    assert_eq!(who_on_every_runtime(started_empty, 3).await, [vec![1], vec![1], vec![1]]);
    server.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_lease_is_regranted_at_once_and_a_deleted_node_recreated() {
    let etcd = EtcdServer::start().expect("etcd");
    let server = rpcx_tokio::Server::new(router(1, "group=x"))
        .registrar(EtcdRegistrar::new(config(&etcd).update_interval(Duration::from_secs(60))).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let mut raw = raw_client(&etcd).await;
    let lease = raw.get(key.as_str(), None).await.expect("get").kvs()[0].lease();
    raw.lease_revoke(lease).await.expect("revoke");
    assert_eq!(raw_get(&mut raw, &key).await, None);
    // The keep-alive (every TTL/3 = 1 s) finds the lease gone; the update tick is 60 s.
    let took = until(Duration::from_secs(10), "the node to come back on a new lease", async || {
        raw_get(&mut raw, &key).await.as_deref() == Some("group=x")
    })
    .await;
    assert!(took < Duration::from_secs(5), "took {took:?}: the 60 s update tick must not be what restores it");
    let new_lease = raw.get(key.as_str(), None).await.expect("get").kvs()[0].lease();
    assert!(new_lease != 0 && new_lease != lease);
    server.shutdown(Duration::from_secs(5)).await;

    // A node deleted by hand (its lease alive) is re-created by the update tick.
    let server = rpcx_tokio::Server::new(router(1, "group=y"))
        .registrar(registrar(&etcd))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    raw.delete(key.as_str(), None).await.expect("delete");
    until(Duration::from_secs(5), "the update tick to re-create the node", async || {
        raw_get(&mut raw, &key).await.as_deref() == Some("group=y")
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_flip_stops_selection_and_survives_refreshes() {
    let etcd = EtcdServer::start().expect("etcd");
    let a =
        rpcx_tokio::Server::new(router(1, "")).registrar(registrar(&etcd)).bind("tcp@127.0.0.1:0").await.expect("a");
    let b =
        rpcx_tokio::Server::new(router(2, "")).registrar(registrar(&etcd)).bind("tcp@127.0.0.1:0").await.expect("b");
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let who = async |n: usize| {
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..n {
            let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("call");
            ids.insert(r.c);
        }
        ids
    };
    assert_eq!(who(20).await.into_iter().collect::<Vec<_>>(), [1, 2], "both selected at first");
    assert_eq!(who_on_every_runtime(discovery.clone(), 20).await, [(); 3].map(|_| vec![1, 2]));
    let mut raw = raw_client(&etcd).await;
    let key = node(a.advertised().expect("advertised").as_str());
    raw.put(key.as_str(), "state=inactive", Some(PutOptions::new().with_ignore_lease())).await.expect("flip");
    until(Duration::from_secs(5), "discovery to see the flip", async || {
        discovery.snapshot().servers.iter().any(|s| s.metadata().is_inactive())
    })
    .await;
    assert_eq!(who(20).await.into_iter().collect::<Vec<_>>(), [2], "an inactive server is not selected");
    assert_eq!(who_on_every_runtime(discovery.clone(), 20).await, [(); 3].map(|_| vec![2]), "on every runtime");
    // Several update ticks later the flip still holds (refresh keeps present values).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(raw_get(&mut raw, &key).await.as_deref(), Some("state=inactive"));
    assert_eq!(who(20).await.into_iter().collect::<Vec<_>>(), [2]);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_is_one_update_and_foreign_keys_are_ignored() {
    let etcd = EtcdServer::start().expect("etcd");
    let discovery = EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery");
    assert!(keys(&discovery).is_empty());
    let v0 = discovery.version();
    let mut raw = raw_client(&etcd).await;
    let ops: Vec<TxnOp> = (0..20).map(|i| TxnOp::put(node(&format!("tcp@10.0.0.{i}:8972")), "", None)).collect();
    raw.txn(Txn::new().and_then(ops)).await.expect("txn");
    // Keys that are not nodes of this service: a sibling sharing the prefix, the
    // directory itself, a deeper key.
    for k in [format!("{BASE}/Arith2/tcp@10.1.0.1:1"), format!("{BASE}/Arith"), node("tcp@10.2.0.1:1/x")] {
        raw.put(k, "", None).await.expect("put");
    }
    until(Duration::from_secs(5), "the burst", async || keys(&discovery).len() == 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(discovery.version(), v0 + 1, "20 events in one message make one update");
    assert_eq!(keys(&discovery).len(), 20);
    // One prefix delete: 20 delete events, one update.
    raw.delete(node("tcp@10.0.0."), Some(DeleteOptions::new().with_prefix())).await.expect("delete");
    until(Duration::from_secs(5), "the deletes", async || keys(&discovery).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(discovery.version(), v0 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_unregisters_before_draining_in_flight_calls() {
    let etcd = EtcdServer::start().expect("etcd");
    let started = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Notify::new());
    let (s, g) = (started.clone(), gate.clone());
    let router = Router::new().service(Service::new("Arith").method("Slow", move |_c: Context, a: Args| {
        let (s, g) = (s.clone(), g.clone());
        async move {
            s.notify_one();
            g.notified().await;
            Ok(Reply { c: a.a })
        }
    }));
    let server =
        rpcx_tokio::Server::new(router).registrar(registrar(&etcd)).bind("tcp@127.0.0.1:0").await.expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery, Default::default());
    let call = tokio::spawn(async move { xc.call::<_, Reply>("Slow", &Args { a: 9, b: 0 }).await });
    tokio::time::timeout(Duration::from_secs(5), started.notified()).await.expect("the call reached the handler");
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    let mut raw = raw_client(&etcd).await;
    until(Duration::from_secs(5), "the node to be deleted while a call is in flight", async || {
        raw_get(&mut raw, &key).await.is_none()
    })
    .await;
    assert!(!call.is_finished() && !shutdown.is_finished(), "unregistered before the drain finished");
    gate.notify_one();
    let r = call.await.expect("join").expect("the in-flight call is answered during the drain");
    assert_eq!(r.c, 9);
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown ends").expect("join");
}

/// `publish_rates`: each refresh writes Go's `calls` and `connections` into the node,
/// keeping the other keys (an operator's `state=inactive` too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rates_are_written_into_the_node_like_gos_metrics() {
    let etcd = EtcdServer::start().expect("etcd");
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(registrar(&etcd))
        .publish_rates(true)
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let discovery = Arc::new(EtcdDiscovery::connect(config(&etcd), "Arith").await.expect("discovery"));
    who_on_every_runtime(discovery.clone(), 5).await;
    let mut raw = raw_client(&etcd).await;
    until(Duration::from_secs(5), "rates in the node", async || {
        raw_get(&mut raw, &node(&key)).await.is_some_and(|v| common::has_rates(&v) && v.contains("weight=3"))
    })
    .await;
    raw.put(node(&key), "weight=3&state=inactive", Some(PutOptions::new().with_ignore_lease())).await.expect("flip");
    until(Duration::from_secs(5), "rates beside the flip", async || {
        raw_get(&mut raw, &node(&key)).await.is_some_and(|v| common::has_rates(&v) && v.contains("state=inactive"))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}
