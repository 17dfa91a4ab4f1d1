//! Registration and discovery against a real ZooKeeper (Debian's `zookeeper`, started
//! per test by `rpcx_registry::zookeeper::testing`): every runtime's server registers
//! and an XClient on the same runtime finds and calls it; the node layout as Go writes
//! it; faults (a killed server, a restarted ZooKeeper with expired sessions, a node
//! deleted by hand, an `inactive` flip in a node's data). Every wait is bounded.

mod common;

use common::{router, until, who_on_every_runtime};
use rpcx_core::govern::Discovery;
use rpcx_core::registry::{AdvertiseError, RegistryError};
use rpcx_core::service::{Context, Router, Service};
use rpcx_examples_common::{Args, Reply};
use rpcx_registry::zookeeper::testing::ZkServer;
use rpcx_registry::zookeeper::{ZkConfig, ZkDiscovery, ZkRegistrar};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zookeeper_client::{Acls, Client, CreateMode, Permission};

const BASE: &str = "/rpcx_test";
const CHILD_ENV: &str = "RPCX_REGISTRY_TEST_CHILD_ZK";

/// A short session and update interval so the fault tests run in seconds.
fn config(zk: &ZkServer) -> ZkConfig {
    ZkConfig::new([zk.address()], BASE)
        .session_timeout(Duration::from_secs(2))
        .update_interval(Duration::from_millis(500))
        .op_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
}

fn registrar(zk: &ZkServer) -> ZkRegistrar {
    ZkRegistrar::new(config(zk)).expect("config")
}

async fn raw_client(zk: &ZkServer) -> Client {
    tokio::time::timeout(Duration::from_secs(10), Client::connect(&zk.address()))
        .await
        .expect("raw client in time")
        .expect("raw ZooKeeper client")
}

async fn raw_get(c: &Client, path: &str) -> Option<String> {
    match c.get_data(path).await {
        Ok((data, _)) => Some(String::from_utf8_lossy(&data).into_owned()),
        Err(zookeeper_client::Error::NoNode) => None,
        Err(e) => panic!("get {path}: {e}"),
    }
}

fn keys(d: &ZkDiscovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|s| s.key().to_string()).collect()
}

fn node(key: &str) -> String {
    format!("{BASE}/Arith/{key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_server_registers_in_go_layout_and_xclient_calls_it() {
    let zk = ZkServer::start().expect("zookeeper");
    let server = rpcx_tokio::Server::new(router(1, "group=test&weight=10"))
        .registrar(registrar(&zk))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    assert_eq!(key, server.address());
    let raw = raw_client(&zk).await;
    // Go's rpcx-zookeeper layout: persistent parents with Go's data, an ephemeral node
    // whose data is the metadata string, world:anyone with every permission.
    assert_eq!(raw_get(&raw, &node(&key)).await.as_deref(), Some("group=test&weight=10"));
    assert_eq!(raw_get(&raw, BASE).await.as_deref(), Some("rpcx_path"));
    assert_eq!(raw_get(&raw, &format!("{BASE}/Arith")).await.as_deref(), Some("Arith"));
    let (_, stat) = raw.get_data(&node(&key)).await.expect("stat");
    assert_ne!(stat.ephemeral_owner, 0, "the server's node must be ephemeral");
    for parent in [BASE.to_owned(), format!("{BASE}/Arith")] {
        let (_, stat) = raw.get_data(&parent).await.expect("stat");
        assert_eq!(stat.ephemeral_owner, 0, "{parent} must be persistent");
    }
    let (acl, _) = raw.get_acl(&node(&key)).await.expect("acl");
    assert_eq!(acl.len(), 1);
    assert_eq!((acl[0].scheme(), acl[0].id(), acl[0].permission()), ("world", "anyone", Permission::ALL));
    assert_eq!(raw.list_children(&format!("{BASE}/Arith")).await.expect("children"), std::slice::from_ref(&key));

    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
    assert_eq!(keys(&discovery), std::slice::from_ref(&key));
    assert_eq!(discovery.snapshot().servers[0].metadata().weight(), 10);
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).await.expect("call through ZooKeeper");
    assert_eq!(r.c, 42);

    // Graceful shutdown unregisters first: the node is gone once it returns.
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(raw_get(&raw, &node(&key)).await, None, "shutdown must delete the node");
    assert_eq!(raw_get(&raw, &format!("{BASE}/Arith")).await.as_deref(), Some("Arith"), "parents stay, as in Go");
    until(Duration::from_secs(5), "discovery to drop the server", async || keys(&discovery).is_empty()).await;
}

#[test]
fn smol_server_registers_and_smol_xclient_calls_it() {
    let zk = ZkServer::start().expect("zookeeper");
    smol::block_on(async {
        let server = rpcx_smol::Server::new(router(1, "group=b"))
            .registrar(registrar(&zk))
            .bind("tcp@127.0.0.1:0")
            .await
            .expect("bind and register");
        let key = server.advertised().expect("advertised").to_string();
        let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
        assert_eq!(keys(&discovery), [key]);
        assert!(discovery.snapshot().servers[0].metadata().in_group("b"));
        let xc = rpcx_smol::XClient::new("Arith", discovery.clone(), Default::default());
        let r: Reply = xc.call("Mul", &Args { a: 3, b: 5 }).await.expect("call through ZooKeeper");
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
    let zk = ZkServer::start().expect("zookeeper");
    let server = rpcx_std::Server::new(router(1, ""))
        .registrar(registrar(&zk))
        .advertise_address("127.0.0.1")
        .bind("tcp@0.0.0.0:0")
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    let port = server.local_addr().expect("tcp").port();
    assert_eq!(key, format!("tcp@127.0.0.1:{port}"), "a bare host takes the bound port");
    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").wait().expect("discovery"));
    assert_eq!(keys(&discovery), [key]);
    let xc = rpcx_std::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 4, b: 5 }).expect("call through ZooKeeper");
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
    let zk = ZkServer::start().expect("zookeeper");
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&zk))
        .bind("tcp@0.0.0.0:0")
        .await
        .expect_err("0.0.0.0 cannot be advertised");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Advertise(AdvertiseError::Unspecified { .. }))), "{err:?}");
    let std_err = rpcx_std::Server::new(router(1, "")).registrar(registrar(&zk)).bind("tcp@[::]:0");
    assert!(std_err.is_err(), "std must refuse [::] too");
    // Nothing was written.
    let raw = raw_client(&zk).await;
    assert_eq!(raw_get(&raw, BASE).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_fails_bind_and_discovery_with_typed_errors() {
    let port = rpcx_registry::etcd::testing::free_port().expect("port");
    let cfg = ZkConfig::new([format!("127.0.0.1:{port}")], BASE).op_timeout(Duration::from_millis(500));
    let t0 = Instant::now();
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(ZkRegistrar::new(cfg.clone()).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect_err("no registry");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{err:?}");
    let d = ZkDiscovery::connect(cfg, "Arith").await;
    assert!(matches!(d, Err(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{d:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "bounded by the operation timeout: {:?}", t0.elapsed());
    assert!(matches!(ZkRegistrar::new(ZkConfig::new(Vec::<String>::new(), BASE)), Err(RegistryError::Config(_))));
    assert!(matches!(ZkRegistrar::new(ZkConfig::new(["127.0.0.1:1"], "/")), Err(RegistryError::Config(_))));
}

/// Run by `killed_server_node_vanishes_within_the_session_timeout` in a child process:
/// a std server registered in the ZooKeeper named by the environment, until killed.
#[test]
#[ignore = "helper: run in a child process by killed_server_node_vanishes_within_the_session_timeout"]
fn child_process_server() {
    let Ok(address) = std::env::var(CHILD_ENV) else { return };
    common::serve_in_child(
        router(1, ""),
        ZkRegistrar::new(
            ZkConfig::new([address], BASE)
                .session_timeout(Duration::from_secs(2))
                .update_interval(Duration::from_millis(500)),
        )
        .expect("config"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_node_vanishes_within_the_session_timeout_and_xclient_stops_selecting_it() {
    let zk = ZkServer::start().expect("zookeeper");
    let survivor =
        rpcx_tokio::Server::new(router(2, "")).registrar(registrar(&zk)).bind("tcp@127.0.0.1:0").await.expect("bind");
    for rt in common::RUNTIMES {
        let (mut child, killed_key) = common::spawn_child_server((CHILD_ENV, &zk.address()), rt);
        let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
        let mut want = vec![killed_key.clone(), survivor.address().to_owned()];
        want.sort();
        assert_eq!(keys(&discovery), want);

        child.kill().expect("kill -9"); // SIGKILL: no unregistration, no session close
        let _ = child.wait();
        let took = until(Duration::from_secs(15), "the killed server's node to vanish", async || {
            !keys(&discovery).contains(&killed_key)
        })
        .await;
        // The session timeout is 2 s; ZooKeeper expires sessions on its 500 ms tick (plus
        // slack for a loaded machine).
        assert!(took <= Duration::from_secs(6), "node vanished after {took:?}, the session timeout is 2 s");
        let only_survivor = vec![2];
        assert_eq!(who_on_every_runtime(discovery.clone(), 10).await, [(); 3].map(|_| only_survivor.clone()));
    }
    survivor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_restart_keeps_calls_on_the_last_list_and_the_registration_comes_back() {
    let mut zk = ZkServer::start().expect("zookeeper");
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(ZkRegistrar::new(config(&zk).update_interval(Duration::from_secs(60))).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let calls = async |n: usize| {
        for i in 0..n {
            let r: Result<Reply, _> = xc.call("Mul", &Args { a: i as i64, b: 2 }).await;
            assert_eq!(r.expect("call while ZooKeeper restarts").c, i as i64 * 2);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    calls(20).await;
    let raw = raw_client(&zk).await;
    let (_, before) = raw.get_data(&node(&key)).await.expect("stat");
    drop(raw);
    zk.kill();
    until(Duration::from_secs(10), "discovery to notice", async || !discovery.is_connected()).await;
    // Down for longer than the session timeout (2 s; the client gives a session up after
    // 1.4 times that): calls go on with the last known list.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        calls(10).await;
    }
    // A new XClient on every runtime gets the last list too.
    assert_eq!(who_on_every_runtime(discovery.clone(), 5).await, [(); 3].map(|_| vec![1]));
    assert_eq!(keys(&discovery), std::slice::from_ref(&key), "the last known list is served while ZooKeeper is down");
    let lists = discovery.lists();
    zk = tokio::task::spawn_blocking(move || {
        zk.restart().expect("restart zookeeper");
        zk
    })
    .await
    .expect("restart");
    until(Duration::from_secs(15), "discovery to list again", async || {
        discovery.is_connected() && discovery.lists() > lists
    })
    .await;
    calls(20).await;
    // The old session expired: the registration is back on a new session, without
    // waiting for the (60 s) update tick, and stays past another session timeout.
    let raw = raw_client(&zk).await;
    let took =
        until(Duration::from_secs(15), "the node on a new session", async || match raw.get_data(&node(&key)).await {
            Ok((data, stat)) => data == b"weight=3" && stat.ephemeral_owner != before.ephemeral_owner,
            Err(_) => false,
        })
        .await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(raw_get(&raw, &node(&key)).await.as_deref(), Some("weight=3"), "registration kept");
    until(Duration::from_secs(5), "discovery to see it", async || keys(&discovery) == [key.clone()]).await;
    calls(10).await;
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(raw_get(&raw, &node(&key)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_written_into_node_data_stops_selection_and_survives_refreshes() {
    let zk = ZkServer::start().expect("zookeeper");
    let a = rpcx_tokio::Server::new(router(1, "")).registrar(registrar(&zk)).bind("tcp@127.0.0.1:0").await.expect("a");
    let b = rpcx_tokio::Server::new(router(2, "")).registrar(registrar(&zk)).bind("tcp@127.0.0.1:0").await.expect("b");
    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
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
    let raw = raw_client(&zk).await;
    let key = node(a.advertised().expect("advertised").as_str());
    // A data change only: no child is added or removed (Go's client misses this).
    raw.set_data(&key, b"state=inactive", None).await.expect("flip");
    until(Duration::from_secs(5), "discovery to see the flip", async || {
        discovery.snapshot().servers.iter().any(|s| s.metadata().is_inactive())
    })
    .await;
    assert_eq!(who(20).await.into_iter().collect::<Vec<_>>(), [2], "an inactive server is not selected");
    assert_eq!(who_on_every_runtime(discovery.clone(), 20).await, [(); 3].map(|_| vec![2]), "on every runtime");
    // Several update ticks later the flip still holds (refresh keeps present nodes).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(raw_get(&raw, &key).await.as_deref(), Some("state=inactive"));
    assert_eq!(who(20).await.into_iter().collect::<Vec<_>>(), [2]);
    // And the watch was set again: flipping back is seen too.
    raw.set_data(&key, b"", None).await.expect("flip back");
    until(Duration::from_secs(5), "discovery to see the flip back", async || {
        discovery.snapshot().servers.iter().all(|s| !s.metadata().is_inactive())
    })
    .await;
    assert_eq!(who(20).await.into_iter().collect::<Vec<_>>(), [1, 2]);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_is_recreated_a_burst_is_one_update_and_foreign_nodes_are_ignored() {
    let zk = ZkServer::start().expect("zookeeper");
    let discovery = ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery");
    assert!(keys(&discovery).is_empty(), "a service node that does not exist yet lists as empty");
    let raw = raw_client(&zk).await;
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    raw.mkdir(&format!("{BASE}/Arith2"), &persistent).await.expect("mkdir");
    raw.create(&format!("{BASE}/Arith2/tcp@10.1.0.1:1"), b"", &persistent).await.expect("sibling");
    // The service node appears with one child: seen through the creation watch.
    raw.create(&format!("{BASE}/Arith"), b"Arith", &persistent).await.expect("service node");
    raw.create(&node("tcp@10.0.0.100:1"), b"", &persistent).await.expect("child");
    until(Duration::from_secs(5), "the first child", async || keys(&discovery).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v0 = discovery.version();
    let mut writer = raw.new_multi_writer();
    for i in 0..20 {
        writer.add_create(&node(&format!("tcp@10.0.0.{i}:8972")), b"weight=2", &persistent).expect("op");
    }
    writer.commit().await.expect("multi");
    until(Duration::from_secs(5), "the burst", async || keys(&discovery).len() == 21).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(discovery.version(), v0 + 1, "20 creations in one transaction make one update");
    assert!(discovery.snapshot().servers.iter().filter(|s| s.metadata().weight() == 2).count() == 20);
    let mut writer = raw.new_multi_writer();
    for i in 0..20 {
        writer.add_delete(&node(&format!("tcp@10.0.0.{i}:8972")), None).expect("op");
    }
    writer.commit().await.expect("multi");
    until(Duration::from_secs(5), "the deletes", async || keys(&discovery) == ["tcp@10.0.0.100:1"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(discovery.version(), v0 + 2);

    // A node deleted by hand is re-created by the update tick (500 ms).
    let server = rpcx_tokio::Server::new(router(1, "group=y"))
        .registrar(registrar(&zk))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    raw.delete(&key, None).await.expect("delete");
    until(Duration::from_secs(5), "the update tick to re-create the node", async || {
        raw_get(&raw, &key).await.as_deref() == Some("group=y")
    })
    .await;
    until(Duration::from_secs(5), "discovery to see it", async || keys(&discovery).len() == 2).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_unregisters_before_draining_in_flight_calls() {
    let zk = ZkServer::start().expect("zookeeper");
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
    let server = rpcx_tokio::Server::new(router).registrar(registrar(&zk)).bind("tcp@127.0.0.1:0").await.expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery, Default::default());
    let call = tokio::spawn(async move { xc.call::<_, Reply>("Slow", &Args { a: 9, b: 0 }).await });
    tokio::time::timeout(Duration::from_secs(5), started.notified()).await.expect("the call reached the handler");
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    let raw = raw_client(&zk).await;
    until(Duration::from_secs(5), "the node to be deleted while a call is in flight", async || {
        raw_get(&raw, &key).await.is_none()
    })
    .await;
    assert!(!call.is_finished() && !shutdown.is_finished(), "unregistered before the drain finished");
    gate.notify_one();
    let r = call.await.expect("join").expect("the in-flight call is answered during the drain");
    assert_eq!(r.c, 9);
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown ends").expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_level_base_two_services_and_a_dropped_registration_left_to_its_session() {
    use rpcx_core::govern::ServerKey;
    use rpcx_core::registry::{Registrar, Registration, ServiceEntry};
    let zk = ZkServer::start().expect("zookeeper");
    // BasePath without the leading `/` and with two levels, normalised as libkv does.
    let cfg = ZkConfig::new([zk.address()], "rpcx/multi/")
        .session_timeout(Duration::from_secs(2))
        .update_interval(Duration::from_millis(500))
        .op_timeout(Duration::from_secs(2));
    let registration = Registration::new(
        ServerKey::new("tcp@10.9.0.1:8972"),
        [
            ServiceEntry { name: "Arith".into(), metadata: "weight=7".into() },
            ServiceEntry { name: "Echo".into(), metadata: String::new() },
        ],
    );
    let registered = ZkRegistrar::new(cfg.clone()).expect("config").register(registration).await.expect("register");
    let raw = raw_client(&zk).await;
    assert_eq!(raw_get(&raw, "/rpcx").await.as_deref(), Some(""), "a deeper ancestor is created empty");
    assert_eq!(raw_get(&raw, "/rpcx/multi").await.as_deref(), Some("rpcx_path"));
    assert_eq!(raw_get(&raw, "/rpcx/multi/Arith").await.as_deref(), Some("Arith"));
    assert_eq!(raw_get(&raw, "/rpcx/multi/Echo").await.as_deref(), Some("Echo"));
    assert_eq!(raw_get(&raw, "/rpcx/multi/Arith/tcp@10.9.0.1:8972").await.as_deref(), Some("weight=7"));
    assert_eq!(raw_get(&raw, "/rpcx/multi/Echo/tcp@10.9.0.1:8972").await.as_deref(), Some(""));
    let echo = ZkDiscovery::connect(cfg, "Echo").await.expect("discovery");
    assert_eq!(keys(&echo), ["tcp@10.9.0.1:8972"]);

    // Dropped without unregistering: the nodes stay until the session expires, as after
    // a crash (2 s session timeout, on the server's 500 ms tick).
    drop(registered);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(raw_get(&raw, "/rpcx/multi/Arith/tcp@10.9.0.1:8972").await.is_some(), "not deleted on drop");
    let took = until(Duration::from_secs(15), "the session to expire", async || {
        raw_get(&raw, "/rpcx/multi/Arith/tcp@10.9.0.1:8972").await.is_none()
    })
    .await;
    assert!(took <= Duration::from_secs(6), "took {took:?}");
    until(Duration::from_secs(5), "discovery to follow", async || keys(&echo).is_empty()).await;
}

/// `publish_rates`: each refresh writes Go's `calls` and `connections` into the node's
/// data, keeping the other keys (an operator's `state=inactive` too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rates_are_written_into_the_node_like_gos_metrics() {
    let zk = ZkServer::start().expect("zookeeper");
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(registrar(&zk))
        .publish_rates(true)
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let discovery = Arc::new(ZkDiscovery::connect(config(&zk), "Arith").await.expect("discovery"));
    who_on_every_runtime(discovery.clone(), 5).await;
    let raw = raw_client(&zk).await;
    until(Duration::from_secs(5), "rates in the node", async || {
        raw_get(&raw, &key).await.is_some_and(|v| common::has_rates(&v) && v.contains("weight=3"))
    })
    .await;
    raw.set_data(&key, b"weight=3&state=inactive", None).await.expect("flip");
    until(Duration::from_secs(5), "rates beside the flip", async || {
        raw_get(&raw, &key).await.is_some_and(|v| common::has_rates(&v) && v.contains("state=inactive"))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}
