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
