//! Registration and discovery over Consul's KV + session HTTP API. No Consul server can
//! be installed here, so these run against the in-repo stand-in
//! (`rpcx_registry::consul::testing::ConsulStandIn`, whose subset Go's own rpcx-consul
//! is run against too, in `interop/tests/consul_go.rs`); the last test uses a real
//! `consul agent -dev` when `consul` is on PATH and is skipped (with a message)
//! otherwise. Every wait is bounded.

mod common;

use base64::Engine as _;
use common::{router, until, who_on_every_runtime};
use rpcx_core::govern::Discovery;
use rpcx_core::registry::RegistryError;
use rpcx_core::service::{Context, Router, Service};
use rpcx_examples_common::{Args, Reply};
use rpcx_registry::consul::testing::{ConsulAgent, ConsulStandIn, RawAnswer, StandInOptions, consul_on_path, raw_http};
use rpcx_registry::consul::{ConsulConfig, ConsulDiscovery, ConsulRegistrar, LOCK_FLAG_VALUE};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BASE: &str = "/rpcx_test";
const CHILD_ENV: &str = "RPCX_REGISTRY_TEST_CHILD_CONSUL";

/// Session TTL 10 s (Consul's minimum), renewed and checked every 200 ms; discovery
/// blocks 2 s per query.
fn config_at(address: &str) -> ConsulConfig {
    ConsulConfig::new(address, BASE)
        .session_ttl(Duration::from_secs(10))
        .update_interval(Duration::from_millis(200))
        .op_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .wait(Duration::from_secs(2))
}

fn config(consul: &ConsulStandIn) -> ConsulConfig {
    config_at(&consul.address())
}

fn registrar(consul: &ConsulStandIn) -> ConsulRegistrar {
    ConsulRegistrar::new(config(consul)).expect("config")
}

/// A stand-in that invalidates sessions 1 s after their last renewal (the test-only
/// knob; Consul's rule would be 20 s for the 10 s TTL).
fn fast_expiring() -> ConsulStandIn {
    ConsulStandIn::start_with(StandInOptions { session_expiry: Some(Duration::from_secs(1)) }).expect("stand-in")
}

/// The Consul key of `key`'s node: the base path without its leading `/`.
fn node(key: &str) -> String {
    format!("rpcx_test/Arith/{key}")
}

/// One raw HTTP/1.0 exchange: status and body.
fn http(address: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let r = raw_http(address, method, path, body).expect("raw HTTP exchange");
    (r.status, r.body)
}

/// `GET /v1/kv/<key>` as JSON, `None` on 404.
fn raw_get(address: &str, key: &str) -> Option<serde_json::Value> {
    let (status, body) = http(address, "GET", &format!("/v1/kv/{key}"), b"");
    match status {
        404 => None,
        200 => Some(serde_json::from_slice::<serde_json::Value>(&body).expect("json")[0].clone()),
        s => panic!("GET {key}: HTTP {s}"),
    }
}

fn value_of(entry: &serde_json::Value) -> String {
    let b64 = entry["Value"].as_str().unwrap_or("");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf8")
}

fn keys(d: &ConsulDiscovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|s| s.key().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_server_registers_in_go_layout_and_xclients_on_every_runtime_call_it() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let server = rpcx_tokio::Server::new(router(1, "weight=10&group=a"))
        .registrar(registrar(&consul))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    let addr = consul.address();
    // The node: key without the leading `/`, raw metadata, libkv's flags, held by a
    // session with Behavior=delete and the configured TTL.
    let entry = raw_get(&addr, &node(&key)).expect("the node exists");
    assert_eq!(entry["Key"], node(&key));
    assert_eq!(value_of(&entry), "weight=10&group=a");
    assert_eq!(entry["Flags"].as_u64(), Some(LOCK_FLAG_VALUE));
    assert_eq!(entry["LockIndex"].as_u64(), Some(1));
    let session = entry["Session"].as_str().expect("held by a session").to_owned();
    assert_eq!(consul.sessions(), [(session.clone(), "delete".to_owned(), Some("10s".to_owned()))]);
    let (status, info) = http(&addr, "GET", &format!("/v1/session/info/{session}"), b"");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_slice(&info).expect("json");
    assert_eq!((info[0]["Behavior"].as_str(), info[0]["TTL"].as_str()), (Some("delete"), Some("10s")));
    assert_eq!(info[0]["LockDelay"].as_u64(), Some(1_000_000), "LockDelay 1ms, as Go's libkv");
    // The directory keys, as Go's Register writes them: plain keys with the same flags.
    for (k, v) in [("rpcx_test", "rpcx_path"), ("rpcx_test/Arith", "Arith")] {
        let dir = raw_get(&addr, k).expect("a directory key");
        assert_eq!((value_of(&dir).as_str(), dir["Flags"].as_u64()), (v, Some(LOCK_FLAG_VALUE)), "{k}");
        assert!(dir.get("Session").is_none(), "{k} is not held");
    }
    assert!(raw_get(&addr, "/rpcx_test").is_none() && raw_get(&addr, "%2Frpcx_test").is_none());

    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
    assert_eq!(keys(&discovery), std::slice::from_ref(&key));
    assert_eq!(discovery.snapshot().servers[0].metadata().raw(), "weight=10&group=a");
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).await.expect("call through Consul");
    assert_eq!(r.c, 42);
    assert_eq!(who_on_every_runtime(discovery.clone(), 5).await, [vec![1], vec![1], vec![1]]);
    server.shutdown(Duration::from_secs(5)).await;
    assert!(raw_get(&addr, &node(&key)).is_none(), "shutdown deletes the node");
    assert!(consul.sessions().is_empty(), "and destroys the session");
    assert!(raw_get(&addr, "rpcx_test/Arith").is_some(), "the directory keys stay, as Go leaves them");
    until(Duration::from_secs(5), "discovery to drop it", async || keys(&discovery).is_empty()).await;
    assert_eq!(consul.unsupported_requests(), Vec::<String>::new());
}

#[test]
fn smol_and_std_servers_register_and_their_xclients_call_them() {
    let consul = ConsulStandIn::start().expect("stand-in");
    smol::block_on(async {
        let server = rpcx_smol::Server::new(router(1, ""))
            .registrar(registrar(&consul))
            .bind("tcp@127.0.0.1:0")
            .await
            .expect("smol bind and register");
        let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
        assert_eq!(keys(&discovery), [server.address().to_owned()]);
        let xc = rpcx_smol::XClient::new("Arith", discovery, Default::default());
        let r: Reply = xc.call("Mul", &Args { a: 3, b: 5 }).await.expect("smol call through Consul");
        assert_eq!(r.c, 15);
        server.close().await;
    });
    let server = rpcx_std::Server::new(router(1, ""))
        .registrar(registrar(&consul))
        .advertise_address("127.0.0.1")
        .bind("tcp@0.0.0.0:0")
        .expect("std bind and register");
    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").wait().expect("discovery"));
    let t0 = Instant::now();
    // The smol server unregistered on close; only the std one is listed.
    while keys(&discovery) != [server.advertised().expect("advertised").to_string()] {
        assert!(t0.elapsed() < Duration::from_secs(5), "listed: {:?}", keys(&discovery));
        std::thread::sleep(Duration::from_millis(20));
    }
    let xc = rpcx_std::XClient::new("Arith", discovery, Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 4, b: 5 }).expect("std call through Consul");
    assert_eq!(r.c, 20);
    server.shutdown(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ttl_is_refused_at_configuration_and_unreachable_consul_is_a_typed_error() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let short = config(&consul).session_ttl(Duration::from_secs(9));
    assert!(matches!(ConsulRegistrar::new(short), Err(RegistryError::Config(m)) if m.contains("10 s")));
    let slow = config(&consul).session_ttl(Duration::from_secs(10)).update_interval(Duration::from_secs(10));
    assert!(matches!(ConsulRegistrar::new(slow), Err(RegistryError::Config(_))));
    // The stand-in refuses such a TTL too, as Consul does.
    let (status, body) = http(&consul.address(), "PUT", "/v1/session/create", br#"{"TTL":"5s","Behavior":"delete"}"#);
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));

    let port = rpcx_registry::etcd::testing::free_port().expect("port");
    let cfg = config_at(&format!("127.0.0.1:{port}")).op_timeout(Duration::from_millis(500));
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(ConsulRegistrar::new(cfg.clone()).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect_err("no Consul");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{err:?}");
    let d = ConsulDiscovery::connect(cfg, "Arith").await;
    assert!(matches!(d, Err(RegistryError::Connect { .. } | RegistryError::Timeout { .. })), "{d:?}");
}

/// Run in a child process by `killed_server_node_goes_with_its_session`: a std server
/// registered in the Consul named by the environment, until it is killed.
#[test]
#[ignore = "helper: run in a child process by killed_server_node_goes_with_its_session"]
fn child_process_server() {
    let Ok(address) = std::env::var(CHILD_ENV) else { return };
    common::serve_in_child(router(1, ""), ConsulRegistrar::new(config_at(&address)).expect("config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_node_goes_with_its_session_and_xclients_stop_selecting_it() {
    let consul = fast_expiring();
    let survivor = rpcx_tokio::Server::new(router(2, ""))
        .registrar(registrar(&consul))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    for rt in common::RUNTIMES {
        let (mut child, killed) = common::spawn_child_server((CHILD_ENV, &consul.address()), rt);
        let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
        let mut want = vec![killed.clone(), survivor.address().to_owned()];
        want.sort();
        assert_eq!(keys(&discovery), want);
        // Renewals keep both past the 1 s expiry.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(keys(&discovery), want, "renewed sessions keep their nodes");
        child.kill().expect("kill -9");
        let _ = child.wait();
        let took = until(Duration::from_secs(10), "the killed server's node to go with its session", async || {
            !keys(&discovery).contains(&killed)
        })
        .await;
        assert!(took <= Duration::from_secs(3), "gone after {took:?}");
        assert!(raw_get(&consul.address(), &node(&killed)).is_none());
        assert_eq!(who_on_every_runtime(discovery.clone(), 10).await, [vec![2], vec![2], vec![2]], "only the survivor");
    }
    survivor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stand_in_restart_losing_its_data_keeps_calls_on_the_last_list_and_the_registration_comes_back() {
    let mut consul = ConsulStandIn::start().expect("stand-in");
    let server = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&consul))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let calls = async |n: usize| {
        for i in 0..n {
            let r: Result<Reply, _> = xc.call("Mul", &Args { a: i as i64, b: 3 }).await;
            assert_eq!(r.expect("call while Consul restarts").c, i as i64 * 3);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    calls(10).await;
    consul.stop();
    until(Duration::from_secs(10), "discovery to notice", async || !discovery.is_connected()).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(1) {
        calls(10).await;
    }
    assert_eq!(keys(&discovery), std::slice::from_ref(&key), "the last list is served while Consul is down");
    let lists = discovery.lists();
    consul.restart(false).expect("restart empty");
    let addr = consul.address();
    let took =
        until(Duration::from_secs(10), "the registration to come back", async || raw_get(&addr, &node(&key)).is_some())
            .await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    until(Duration::from_secs(10), "discovery to list again", async || {
        discovery.lists() > lists && keys(&discovery) == [key.clone()]
    })
    .await;
    calls(10).await;
    server.shutdown(Duration::from_secs(5)).await;
    until(Duration::from_secs(5), "the new index to be followed", async || keys(&discovery).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_session_is_replaced_at_once_and_a_restart_keeping_data_keeps_the_session() {
    let mut consul = ConsulStandIn::start().expect("stand-in");
    let server = rpcx_tokio::Server::new(router(1, ""))
        .registrar(registrar(&consul))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let addr = consul.address();
    let first = raw_get(&addr, &key).expect("node")["Session"].as_str().expect("session").to_owned();
    // Destroying the session deletes the node (Behavior=delete); the next tick puts it
    // back under a new session.
    let (status, _) = http(&addr, "PUT", &format!("/v1/session/destroy/{first}"), b"");
    assert_eq!(status, 200);
    let mut second = String::new();
    until(Duration::from_secs(3), "a new session to hold the node", async || {
        match raw_get(&addr, &key).and_then(|e| e["Session"].as_str().map(str::to_owned)) {
            Some(s) if s != first => {
                second = s;
                true
            }
            _ => false,
        }
    })
    .await;
    consul.restart(true).expect("restart keeping data");
    let addr = consul.address();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(raw_get(&addr, &key).expect("node")["Session"].as_str(), Some(second.as_str()), "session kept");
    assert_eq!(consul.sessions().len(), 1);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_flip_stops_selection_and_survives_refreshes() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let a =
        rpcx_tokio::Server::new(router(1, "")).registrar(registrar(&consul)).bind("tcp@127.0.0.1:0").await.expect("a");
    let b =
        rpcx_tokio::Server::new(router(2, "")).registrar(registrar(&consul)).bind("tcp@127.0.0.1:0").await.expect("b");
    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
    assert_eq!(who_on_every_runtime(discovery.clone(), 20).await, [vec![1, 2], vec![1, 2], vec![1, 2]]);
    let a_node = node(a.advertised().expect("advertised").as_str());
    let addr = consul.address();
    // An operator's plain PUT keeps the node's session, as in Consul.
    let (status, _) = http(&addr, "PUT", &format!("/v1/kv/{a_node}?flags={LOCK_FLAG_VALUE}"), b"state=inactive");
    assert_eq!(status, 200);
    until(Duration::from_secs(5), "discovery to see the flip", async || {
        discovery.snapshot().servers.iter().any(|s| s.metadata().is_inactive())
    })
    .await;
    assert_eq!(
        who_on_every_runtime(discovery.clone(), 20).await,
        [vec![2], vec![2], vec![2]],
        "inactive is not selected"
    );
    // Many refresh ticks later the flip is still there.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let now = raw_get(&addr, &a_node).expect("still there");
    assert_eq!(value_of(&now), "state=inactive", "refresh keeps the value");
    assert!(now["Session"].is_string(), "still held by the session");
    assert_eq!(who_on_every_runtime(discovery.clone(), 20).await, [vec![2], vec![2], vec![2]]);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_coalesced_and_foreign_keys_are_ignored() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let cfg = config(&consul).coalesce(Duration::from_millis(100));
    let discovery = ConsulDiscovery::connect(cfg, "Arith").await.expect("discovery");
    assert!(keys(&discovery).is_empty());
    let v0 = discovery.version();
    let addr = consul.address();
    // Keys that are not nodes of this service first: a sibling sharing the prefix, the
    // directory itself, a deeper key.
    for k in ["rpcx_test/Arith2/tcp@10.1.0.1:1", "rpcx_test/Arith", "rpcx_test/Arith/tcp@10.2.0.1:1/x"] {
        assert_eq!(http(&addr, "PUT", &format!("/v1/kv/{k}"), b"").0, 200);
    }
    for i in 0..20 {
        assert_eq!(http(&addr, "PUT", &format!("/v1/kv/{}", node(&format!("tcp@10.0.0.{i}:8972"))), b"").0, 200);
    }
    until(Duration::from_secs(5), "the burst", async || keys(&discovery).len() == 20).await;
    let after = discovery.version() - v0;
    assert!(after <= 3, "20 writes in a burst make at most a few updates, made {after}");
    assert!(keys(&discovery).iter().all(|k| k.starts_with("tcp@10.0.0.")));
    assert_eq!(http(&addr, "DELETE", "/v1/kv/rpcx_test/Arith/?recurse", b"").0, 200);
    until(Duration::from_secs(5), "the deletes", async || keys(&discovery).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_unregisters_before_draining_in_flight_calls() {
    let consul = ConsulStandIn::start().expect("stand-in");
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
        rpcx_tokio::Server::new(router).registrar(registrar(&consul)).bind("tcp@127.0.0.1:0").await.expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
    let xc = rpcx_tokio::XClient::new("Arith", discovery, Default::default());
    let call = tokio::spawn(async move { xc.call::<_, Reply>("Slow", &Args { a: 9, b: 0 }).await });
    tokio::time::timeout(Duration::from_secs(5), started.notified()).await.expect("the call reached the handler");
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    let addr = consul.address();
    until(Duration::from_secs(5), "the node to be deleted while a call is in flight", async || {
        raw_get(&addr, &key).is_none()
    })
    .await;
    assert!(!call.is_finished() && !shutdown.is_finished(), "unregistered before the drain finished");
    gate.notify_one();
    let r = call.await.expect("join").expect("the in-flight call is answered during the drain");
    assert_eq!(r.c, 9);
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("shutdown ends").expect("join");
}

/// Against a real `consul agent -dev`. Ignored by default (no Consul server can be
/// installed on the CI machines); `.ci/run` runs it with `--ignored` whenever `consul`
/// is on PATH, and run that way it fails without one rather than pass unproven.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs `consul` on PATH; .ci/run runs it when there is one"]
async fn real_consul_agent_when_on_path() {
    assert!(consul_on_path(), "no `consul` on PATH: this test needs a real Consul agent");
    let agent = tokio::task::spawn_blocking(ConsulAgent::start).await.expect("join").expect("consul agent -dev");
    let addr = agent.address();
    let cfg = config_at(&addr).update_interval(Duration::from_secs(1));
    let server = rpcx_tokio::Server::new(router(1, "group=real"))
        .registrar(ConsulRegistrar::new(cfg.clone()).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind and register in a real Consul");
    let key = server.advertised().expect("advertised").to_string();
    let entry = raw_get(&addr, &node(&key)).expect("the node exists");
    assert_eq!(value_of(&entry), "group=real");
    assert_eq!(entry["Flags"].as_u64(), Some(LOCK_FLAG_VALUE));
    assert!(entry["Session"].is_string());
    let discovery = Arc::new(ConsulDiscovery::connect(cfg, "Arith").await.expect("discovery"));
    assert_eq!(keys(&discovery), std::slice::from_ref(&key));
    assert_eq!(who_on_every_runtime(discovery.clone(), 5).await, [vec![1], vec![1], vec![1]]);
    server.shutdown(Duration::from_secs(5)).await;
    assert!(raw_get(&addr, &node(&key)).is_none());
    until(Duration::from_secs(10), "discovery to drop it", async || keys(&discovery).is_empty()).await;
}

/// The stand-in's subset behaves as Consul documents it: what both clients rely on.
#[test]
fn stand_in_follows_consul_semantics_for_its_subset() {
    let consul = fast_expiring();
    let a = consul.address();
    let ex = |m: &str, p: &str, b: &[u8]| -> RawAnswer { raw_http(&a, m, p, b).expect("raw HTTP") };
    let entry = |r: &RawAnswer| serde_json::from_slice::<serde_json::Value>(&r.body).expect("json")[0].clone();
    let missing = ex("GET", "/v1/kv/k", b"");
    assert_eq!((missing.status, missing.index.is_some()), (404, true), "404 with X-Consul-Index");
    assert_eq!(ex("PUT", "/v1/kv/k", b"v").body, b"true");
    let got = ex("GET", "/v1/kv/k", b"");
    let e = entry(&got);
    assert_eq!((e["Key"].as_str(), e["Value"].as_str(), e["Flags"].as_u64()), (Some("k"), Some("dg=="), Some(0)));
    assert_eq!((e["LockIndex"].as_u64(), e.get("Session")), (Some(0), None));
    assert_eq!(e["CreateIndex"], e["ModifyIndex"]);
    assert_eq!(got.index, e["ModifyIndex"].as_u64(), "a key's index is its ModifyIndex");
    assert_eq!(ex("GET", "/v1/kv/k?raw", b"").body, b"v");
    assert_eq!(ex("PUT", "/v1/kv/%2Fk", b"v").status, 400, "keys must not start with /");
    // Check-and-set.
    assert_eq!(ex("PUT", "/v1/kv/k?cas=0", b"w").body, b"false", "cas=0 only creates");
    let m = e["ModifyIndex"].as_u64().expect("index");
    assert_eq!(ex("PUT", &format!("/v1/kv/k?cas={m}&flags=7"), b"w").body, b"true");
    let e2 = entry(&ex("GET", "/v1/kv/k", b""));
    assert!(e2["ModifyIndex"].as_u64() > Some(m) && e2["CreateIndex"] == e["CreateIndex"] && e2["Flags"] == 7);
    // Locks: one holder at a time, a plain write keeps the holder, release only by it.
    let create = |body: &[u8]| -> String {
        let r = ex("PUT", "/v1/session/create", body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("json")["ID"].as_str().expect("ID").to_owned()
    };
    let (s1, s2) = (create(b""), create(br#"{"Name":"two"}"#));
    assert_eq!(ex("PUT", &format!("/v1/kv/k?acquire={s1}"), b"held").body, b"true");
    let held = entry(&ex("GET", "/v1/kv/k", b""));
    assert_eq!((held["Session"].as_str(), held["LockIndex"].as_u64()), (Some(s1.as_str()), Some(1)));
    assert_eq!(ex("PUT", &format!("/v1/kv/k?acquire={s2}"), b"x").body, b"false");
    assert_eq!(ex("PUT", "/v1/kv/k", b"plain").body, b"true");
    assert_eq!(entry(&ex("GET", "/v1/kv/k", b""))["Session"].as_str(), Some(s1.as_str()), "plain PUT keeps the lock");
    assert_eq!(ex("PUT", &format!("/v1/kv/k?release={s2}"), b"x").body, b"false");
    assert_eq!(ex("PUT", &format!("/v1/kv/k?release={s1}"), b"free").body, b"true");
    assert!(entry(&ex("GET", "/v1/kv/k", b"")).get("Session").is_none());
    assert_eq!(ex("PUT", "/v1/kv/k?acquire=no-such-session", b"x").status, 500);
    // Listings: keys with a separator, recursive indexes raised by tombstones.
    for k in ["dir/a/x", "dir/a/y", "dir/b"] {
        assert_eq!(ex("PUT", &format!("/v1/kv/{k}"), b"").body, b"true");
    }
    let keys: Vec<String> = serde_json::from_slice(&ex("GET", "/v1/kv/dir/?keys&separator=/", b"").body).expect("json");
    assert_eq!(keys, ["dir/a/", "dir/b"]);
    let before = ex("GET", "/v1/kv/dir/?recurse", b"").index.expect("index");
    assert_eq!(ex("DELETE", "/v1/kv/dir/b", b"").body, b"true");
    let after = ex("GET", "/v1/kv/dir/?recurse", b"");
    assert!(after.index > Some(before), "a delete raises the prefix's index (tombstone)");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&after.body).expect("json");
    assert_eq!(listed.len(), 2);
    assert_eq!(ex("GET", "/v1/kv/nothing/?recurse", b"").status, 404);
    // Blocking queries: the wait passes with the same index, a change answers at once.
    let idx = after.index.expect("index");
    let t0 = Instant::now();
    let r = ex("GET", &format!("/v1/kv/dir/?recurse&index={idx}&wait=300ms"), b"");
    assert!(t0.elapsed() >= Duration::from_millis(290) && r.index == Some(idx), "{:?} {:?}", t0.elapsed(), r.index);
    let a2 = a.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        raw_http(&a2, "PUT", "/v1/kv/dir/c", b"").expect("write")
    });
    let t0 = Instant::now();
    let r = ex("GET", &format!("/v1/kv/dir/?recurse&index={idx}&wait=4s"), b"");
    assert!(r.index > Some(idx) && t0.elapsed() < Duration::from_secs(3), "woken by the write: {:?}", t0.elapsed());
    writer.join().expect("writer");
    let unrelated = ex("GET", &format!("/v1/kv/dir/?recurse&index={}&wait=300ms", r.index.expect("index")), b"");
    assert_eq!(unrelated.index, r.index);
    // Sessions: TTL bounds, Behavior=delete on expiry, renew answering 404 afterwards.
    // As Consul: an out-of-range TTL or an unknown behavior is its session RPC's 500,
    // an unparsable TTL a 400.
    let refused = ex("PUT", "/v1/session/create", br#"{"TTL":"9s"}"#);
    assert_eq!(refused.status, 500);
    assert_eq!(refused.body, b"Invalid Session TTL '9000000000', must be between [10s=24h0m0s]");
    for (bad, status) in
        [(&br#"{"TTL":"86401s"}"#[..], 500), (br#"{"Behavior":"bogus"}"#, 500), (br#"{"TTL":"ten"}"#, 400)]
    {
        assert_eq!(ex("PUT", "/v1/session/create", bad).status, status, "{}", String::from_utf8_lossy(bad));
    }
    let eph = create(br#"{"TTL":"10s","Behavior":"delete","LockDelay":"1ms"}"#);
    assert_eq!(ex("PUT", &format!("/v1/kv/eph?acquire={eph}"), b"x").body, b"true");
    let renewed = ex("PUT", &format!("/v1/session/renew/{eph}"), b"");
    let renewed: serde_json::Value = serde_json::from_slice(&renewed.body).expect("json");
    assert_eq!((renewed[0]["TTL"].as_str(), renewed[0]["Behavior"].as_str()), (Some("10s"), Some("delete")));
    let t0 = Instant::now();
    while ex("GET", "/v1/kv/eph", b"").status == 200 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the session's key outlived its expiry");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t0.elapsed() >= Duration::from_millis(800), "not before the 1 s expiry: {:?}", t0.elapsed());
    assert_eq!(ex("PUT", &format!("/v1/session/renew/{eph}"), b"").status, 404);
    // Destroying a release session frees its keys without deleting them.
    assert_eq!(ex("PUT", &format!("/v1/kv/k?acquire={s2}"), b"v2").body, b"true");
    assert_eq!(ex("PUT", &format!("/v1/session/destroy/{s2}"), b"").body, b"true");
    assert!(entry(&ex("GET", "/v1/kv/k", b"")).get("Session").is_none());
    assert_eq!(ex("GET", "/v1/status/leader", b"").status, 200);
    assert_eq!(consul.unsupported_requests(), Vec::<String>::new());
    assert_eq!(ex("GET", "/v1/agent/self", b"").status, 404);
    assert_eq!(consul.unsupported_requests(), ["GET /v1/agent/self"]);
}

/// A server restarted at the same address while its previous process's session still
/// holds the node: the node gets the new metadata at once and is taken over by the new
/// session as soon as the old one expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_held_by_a_previous_session_is_taken_over_when_it_expires() {
    let consul = fast_expiring();
    let addr = consul.address();
    let key = node("tcp@127.0.0.1:9");
    let (status, body) = http(&addr, "PUT", "/v1/session/create", br#"{"TTL":"10s","Behavior":"delete"}"#);
    assert_eq!(status, 200);
    let old: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let old = old["ID"].as_str().expect("ID").to_owned();
    assert_eq!(http(&addr, "PUT", &format!("/v1/kv/{key}?acquire={old}"), b"old=1").1, b"true");
    let server = rpcx_tokio::Server::new(router(1, "new=1"))
        .registrar(registrar(&consul))
        .advertise_address("tcp@127.0.0.1:9")
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind and register");
    let now = raw_get(&addr, &key).expect("node");
    assert_eq!((value_of(&now).as_str(), now["Session"].as_str()), ("new=1", Some(old.as_str())), "value at once");
    until(Duration::from_secs(5), "the new session to take the node over", async || {
        raw_get(&addr, &key).is_some_and(|e| e["Session"].as_str().is_some_and(|s| s != old) && value_of(&e) == "new=1")
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    assert!(raw_get(&addr, &key).is_none());
}

/// `publish_rates`: each refresh writes Go's `calls` and `connections` into the node,
/// keeping the other keys (an operator's `state=inactive` too) and the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rates_are_written_into_the_node_like_gos_metrics() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(registrar(&consul))
        .publish_rates(true)
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = node(server.advertised().expect("advertised").as_str());
    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").await.expect("discovery"));
    who_on_every_runtime(discovery.clone(), 5).await;
    let addr = consul.address();
    until(Duration::from_secs(5), "rates in the node", async || {
        raw_get(&addr, &key).is_some_and(|e| common::has_rates(&value_of(&e)) && value_of(&e).contains("weight=3"))
    })
    .await;
    let (status, _) = http(&addr, "PUT", &format!("/v1/kv/{key}?flags={LOCK_FLAG_VALUE}"), b"weight=3&state=inactive");
    assert_eq!(status, 200);
    until(Duration::from_secs(5), "rates beside the flip", async || {
        raw_get(&addr, &key).is_some_and(|e| {
            common::has_rates(&value_of(&e)) && value_of(&e).contains("state=inactive") && e["Session"].is_string()
        })
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
    assert!(raw_get(&addr, &key).is_none());
}
