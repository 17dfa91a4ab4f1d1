//! What the registry tests of every backend share: the service they register, waits,
//! and calls from each runtime's XClient.
#![allow(dead_code)] // each test file uses its part

use rpcx_core::govern::Discovery;
use rpcx_core::service::{Context, Router, Service};
use rpcx_examples_common::{Args, Reply};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `Arith.Mul` multiplies; `Arith.Who` answers with the server's `id`.
pub(crate) fn router(id: i64, metadata: &str) -> Router {
    Router::new().service(
        Service::new("Arith")
            .metadata(metadata)
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) })
            .method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }),
    )
}

/// The discovery's keys, in order.
pub(crate) fn keys(d: &dyn Discovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|s| s.key().to_string()).collect()
}

/// Wait up to `limit` for `cond`, polling every 20 ms; returns how long it took.
pub(crate) async fn until(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond().await {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`until`] for threads without a runtime.
pub(crate) fn until_blocking(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which servers (by `Arith.Who` id) answered `n` calls from each runtime's XClient
/// over `discovery`: tokio, smol, std (the blocking ones off the tokio workers).
pub(crate) async fn who_on_every_runtime(discovery: Arc<dyn Discovery>, n: usize) -> [Vec<i64>; 3] {
    let args = Args { a: 0, b: 0 };
    let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
    let mut on_tokio = BTreeSet::new();
    for _ in 0..n {
        let r: Reply = xc.call("Who", &args).await.expect("tokio XClient call");
        on_tokio.insert(r.c);
    }
    let d = discovery.clone();
    let on_smol = tokio::task::spawn_blocking(move || {
        smol::block_on(async {
            let xc = rpcx_smol::XClient::new("Arith", d, Default::default());
            let mut ids = BTreeSet::new();
            for _ in 0..n {
                let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("smol XClient call");
                ids.insert(r.c);
            }
            ids
        })
    });
    let d = discovery;
    let on_std = tokio::task::spawn_blocking(move || {
        let xc = rpcx_std::XClient::new("Arith", d, Default::default());
        let mut ids = BTreeSet::new();
        for _ in 0..n {
            let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).expect("std XClient call");
            ids.insert(r.c);
        }
        ids
    });
    let (on_smol, on_std) = (on_smol.await.expect("smol"), on_std.await.expect("std"));
    [on_tokio, on_smol, on_std].map(|s| s.into_iter().collect())
}

/// Whether `value` carries the rates Go's plugins write with `Metrics` on: `calls` and
/// `connections` with two decimals, `calls` above zero, keys sorted as Go encodes them.
pub(crate) fn has_rates(value: &str) -> bool {
    let m = rpcx_core::govern::Metadata::parse(value);
    let two_decimals = |k: &str| m.get(k).is_some_and(|v| v.split_once('.').is_some_and(|(_, d)| d.len() == 2));
    let keys: Vec<&str> = value.split('&').map(|kv| kv.split('=').next().unwrap_or("")).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    two_decimals("calls")
        && two_decimals("connections")
        && m.get("calls").and_then(|v| v.parse::<f64>().ok()).is_some_and(|c| c > 0.0)
        && keys == sorted
}

/// The server runtimes a killed child server runs on, one child each.
pub(crate) const RUNTIMES: [&str; 3] = ["tokio", "smol", "std"];
/// Names the runtime of the child server ([`serve_in_child`]).
const CHILD_RUNTIME: &str = "RPCX_REGISTRY_TEST_CHILD_RUNTIME";

/// The child's side of the kill tests: serve `router` on the runtime the parent named,
/// registered through `registrar`, print `REGISTERED <key>`, and stay up until killed
/// (at most 60 s).
pub(crate) fn serve_in_child(router: Router, registrar: impl rpcx_core::registry::Registrar + 'static) {
    use std::io::Write;
    let announce = |key: String| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "REGISTERED {key}");
        let _ = out.flush();
    };
    let addr = "tcp@127.0.0.1:0";
    match std::env::var(CHILD_RUNTIME).as_deref() {
        Ok("tokio") => {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
            let server = rt
                .block_on(rpcx_tokio::Server::new(router).registrar(registrar).bind(addr))
                .expect("bind and register");
            announce(server.advertised().expect("advertised").to_string());
            std::thread::sleep(Duration::from_secs(60));
        }
        Ok("smol") => smol::block_on(async {
            let server =
                rpcx_smol::Server::new(router).registrar(registrar).bind(addr).await.expect("bind and register");
            announce(server.advertised().expect("advertised").to_string());
            smol::Timer::after(Duration::from_secs(60)).await;
        }),
        Ok("std") => {
            let server = rpcx_std::Server::new(router).registrar(registrar).bind(addr).expect("bind and register");
            announce(server.advertised().expect("advertised").to_string());
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("{CHILD_RUNTIME} is {other:?}, not tokio, smol or std"),
    }
}

/// The parent's side: run this test binary's `child_process_server` (which calls
/// [`serve_in_child`]) on runtime `rt` with `env` set; the child and the key it
/// registered.
pub(crate) fn spawn_child_server(env: (&str, &str), rt: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_process_server", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .env(CHILD_RUNTIME, rt)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child server");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((_, k)) = line.split_once("REGISTERED ") {
                let _ = tx.send(k.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(key) => (child, key),
        Err(_) => {
            let _ = child.kill();
            panic!("the {rt} child server did not register within 60 s");
        }
    }
}

/// A registry engine under test, as the shared scenarios below use it. Each backend's
/// test file implements it over its real engine (or, for Consul, the stand-in).
pub(crate) trait Engine {
    /// A registrar with the test's short intervals.
    fn registrar(&self) -> Box<dyn rpcx_core::registry::Registrar>;
    /// A discovery of `Arith`, listed once.
    async fn discovery(&self) -> Arc<dyn Discovery>;
    /// The value of `server`'s `Arith` node as the registry holds it (`None`: missing).
    async fn node_value(&self, server: &str) -> Option<String>;
    /// An operator's edit: write `value` into `server`'s node, keeping its lease, TTL
    /// or session.
    async fn set_node(&self, server: &str, value: &str);
}

/// A smol server registers, a smol XClient calls it, and closing unregisters.
pub(crate) fn smol_server_registers_and_smol_xclient_calls_it(e: &impl Engine) {
    smol::block_on(async {
        let server = rpcx_smol::Server::new(router(1, "group=b"))
            .registrar(e.registrar())
            .bind("tcp@127.0.0.1:0")
            .await
            .expect("bind and register");
        let key = server.advertised().expect("advertised").to_string();
        let discovery = e.discovery().await;
        assert_eq!(keys(&*discovery), [key]);
        assert!(discovery.snapshot().servers[0].metadata().in_group("b"));
        let xc = rpcx_smol::XClient::new("Arith", discovery.clone(), Default::default());
        let r: Reply = xc.call("Mul", &Args { a: 3, b: 5 }).await.expect("smol call through the registry");
        assert_eq!(r.c, 15);
        server.close().await;
        let t0 = Instant::now();
        while !keys(&*discovery).is_empty() {
            assert!(t0.elapsed() < Duration::from_secs(5), "close must unregister");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
}

/// A std server bound to 0.0.0.0 with a bare advertised host registers under the bound
/// port, a std XClient calls it, and a graceful shutdown unregisters.
pub(crate) fn std_server_registers_and_std_xclient_calls_it(e: &impl Engine) {
    let server = rpcx_std::Server::new(router(1, ""))
        .registrar(e.registrar())
        .advertise_address("127.0.0.1")
        .bind("tcp@0.0.0.0:0")
        .expect("bind and register");
    let key = server.advertised().expect("advertised").to_string();
    let port = server.local_addr().expect("tcp").port();
    assert_eq!(key, format!("tcp@127.0.0.1:{port}"), "a bare host takes the bound port");
    let discovery = smol::block_on(e.discovery());
    assert_eq!(keys(&*discovery), [key]);
    let xc = rpcx_std::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 4, b: 5 }).expect("std call through the registry");
    assert_eq!(r.c, 20);
    server.shutdown(Duration::from_secs(5));
    until_blocking(Duration::from_secs(5), "shutdown to unregister", || keys(&*discovery).is_empty());
}

/// A server bound to 0.0.0.0 / [::] without an advertised address is refused with a
/// typed error on tokio and std.
pub(crate) async fn unspecified_bind_without_advertise_address_is_refused(e: &impl Engine) {
    use rpcx_core::registry::{AdvertiseError, RegistryError};
    let err = rpcx_tokio::Server::new(router(1, ""))
        .registrar(e.registrar())
        .bind("tcp@0.0.0.0:0")
        .await
        .expect_err("0.0.0.0 cannot be advertised");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<RegistryError>());
    assert!(matches!(inner, Some(RegistryError::Advertise(AdvertiseError::Unspecified { .. }))), "{err:?}");
    let std_err = rpcx_std::Server::new(router(1, "")).registrar(e.registrar()).bind("tcp@[::]:0");
    assert!(std_err.is_err(), "std must refuse [::] too");
    assert!(keys(&*e.discovery().await).is_empty(), "nothing was registered");
}

/// Graceful shutdown deletes the node while a call is still in flight, then drains it.
pub(crate) async fn graceful_shutdown_unregisters_before_draining_in_flight_calls(e: &impl Engine) {
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
    let server = rpcx_tokio::Server::new(router).registrar(e.registrar()).bind("tcp@127.0.0.1:0").await.expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    let xc = rpcx_tokio::XClient::new("Arith", e.discovery().await, Default::default());
    let call = tokio::spawn(async move { xc.call::<_, Reply>("Slow", &Args { a: 9, b: 0 }).await });
    tokio::time::timeout(Duration::from_secs(5), started.notified()).await.expect("the call reached the handler");
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(10)));
    until(Duration::from_secs(5), "the node to be deleted while a call is in flight", async || {
        e.node_value(&key).await.is_none()
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
pub(crate) async fn published_rates_are_written_into_the_node_like_gos_metrics(e: &impl Engine) {
    let server = rpcx_tokio::Server::new(router(1, "weight=3"))
        .registrar(e.registrar())
        .publish_rates(true)
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind");
    let key = server.advertised().expect("advertised").to_string();
    who_on_every_runtime(e.discovery().await, 5).await;
    until(Duration::from_secs(5), "rates in the node", async || {
        e.node_value(&key).await.is_some_and(|v| has_rates(&v) && v.contains("weight=3"))
    })
    .await;
    e.set_node(&key, "weight=3&state=inactive").await;
    until(Duration::from_secs(5), "rates beside the flip", async || {
        e.node_value(&key).await.is_some_and(|v| has_rates(&v) && v.contains("state=inactive"))
    })
    .await;
    server.shutdown(Duration::from_secs(5)).await;
}
