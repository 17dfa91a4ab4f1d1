//! Consul registry interop with Go, both directions (`interop/go/cmd/consul`, Go's own
//! rpcx-consul v0.1.1 over libkv and hashicorp/consul/api). No Consul server can be
//! installed here, so both sides run against the in-repo stand-in of Consul's KV +
//! session API (`rpcx_registry::consul::testing::ConsulStandIn`): a Go server
//! registering through `ConsulRegisterPlugin` is found and called by Rust XClients on
//! every runtime, and Rust servers on every runtime registering through
//! `ConsulRegistrar` are found (also through Go's blocking-query watch) and called by
//! Go's `ConsulDiscovery` + XClient.

use base64::Engine as _;
use rpcx_core::govern::Discovery;
use rpcx_core::service::{Context, Router, Service};
use rpcx_interop::go::{GoRegisteredServer, go_binaries};
use rpcx_registry::consul::testing::{ConsulStandIn, StandInOptions, raw_http};
use rpcx_registry::consul::{ConsulConfig, ConsulDiscovery, ConsulRegistrar, LOCK_FLAG_VALUE};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

fn config(consul: &ConsulStandIn) -> ConsulConfig {
    ConsulConfig::new(&consul.address(), BASE)
        .session_ttl(Duration::from_secs(10))
        .update_interval(Duration::from_secs(1))
        .op_timeout(Duration::from_secs(5))
        .wait(Duration::from_secs(5))
}

fn router(metadata: &str) -> Router {
    Router::new().service(
        Service::new("Arith")
            .metadata(metadata)
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }),
    )
}

/// One raw HTTP/1.0 exchange: status and body.
fn http(consul: &ConsulStandIn, method: &str, path: &str) -> (u16, Vec<u8>) {
    let r = raw_http(&consul.address(), method, path, b"").expect("raw HTTP exchange");
    (r.status, r.body)
}

/// `GET /v1/kv/<key>` as JSON, `None` on 404.
fn raw_get(consul: &ConsulStandIn, key: &str) -> Option<serde_json::Value> {
    match http(consul, "GET", &format!("/v1/kv/{key}")) {
        (404, _) => None,
        (200, body) => Some(serde_json::from_slice::<serde_json::Value>(&body).expect("json")[0].clone()),
        (s, _) => panic!("GET {key}: HTTP {s}"),
    }
}

fn value_of(entry: &serde_json::Value) -> String {
    let b64 = entry["Value"].as_str().unwrap_or("");
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("utf8")
}

/// libkv's session TTL is (10 s + 10 s) / 2 = 10 s, Consul's minimum.
fn go_server(consul: &ConsulStandIn, meta: &str) -> GoRegisteredServer {
    GoRegisteredServer::start(
        &go_binaries().consul,
        &["server", "-consul", &consul.host_port(), "-base", BASE, "-meta", meta, "-update", "10s"],
    )
}

/// Run Go's Consul discovery + XClient against the stand-in to its end (bounded),
/// waiting for `want` servers: its stdout.
fn go_client_once(consul: &ConsulStandIn, calls: usize, want: usize) -> String {
    let (calls, want, hp) = (calls.to_string(), want.to_string(), consul.host_port());
    let args = ["client", "-consul", &hp, "-base", BASE, "-service", "Arith", "-calls", &calls, "-want", &want];
    rpcx_interop::go::run_go(&go_binaries().consul, &args, Duration::from_secs(60))
}

/// Go's Consul discovery + XClient run against the stand-in, waiting for `want`
/// servers; its stdout lines arrive on `lines`.
struct GoClient {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn go_client(consul: &ConsulStandIn, calls: usize, want: usize) -> GoClient {
    let mut child = Command::new(&go_binaries().consul)
        .args(["client", "-consul", &consul.host_port(), "-base", BASE, "-service", "Arith"])
        .args(["-calls", &calls.to_string(), "-want", &want.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the Go consul client");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    GoClient { child, lines }
}

impl GoClient {
    /// Wait for a line starting with `prefix`; the lines before it are dropped.
    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(_) => panic!("the Go client printed no {prefix:?} line within 30 s"),
            }
        }
    }

    /// Wait (bounded) for the client to exit 0; its remaining stdout.
    fn finish(mut self) -> String {
        let t0 = Instant::now();
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the Go client did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            out.push_str(&l);
            out.push('\n');
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "Go client failed ({status}):\n{out}{err}");
        out
    }
}

#[test]
fn go_server_registered_by_rpcx_consul_is_found_and_called_by_rust_xclients_on_every_runtime() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let go = go_server(&consul, "group=go&weight=5");
    // What Go wrote: the node without the base path's leading `/`, the raw metadata,
    // libkv's flags, held by a Behavior=delete session of TTL (10 s + 10 s) / 2.
    let node = format!("rpcx_test/Arith/{}", go.key);
    let entry = raw_get(&consul, &node).expect("Go's node");
    assert_eq!(value_of(&entry), "group=go&weight=5");
    assert_eq!(entry["Flags"].as_u64(), Some(LOCK_FLAG_VALUE));
    let session = entry["Session"].as_str().expect("held by a session");
    let held = consul.sessions().into_iter().find(|(id, _, _)| id == session).expect("the session");
    assert_eq!((held.1.as_str(), held.2.as_deref()), ("delete", Some("10s")));
    assert_eq!(value_of(&raw_get(&consul, "rpcx_test/Arith").expect("service dir")), "Arith");
    assert_eq!(value_of(&raw_get(&consul, "rpcx_test").expect("base dir")), "rpcx_path");

    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").wait().expect("discovery"));
    rpcx_interop::registry::wait_keys(&*discovery, &[go.key.as_str()], "the Go server");
    let snap = discovery.snapshot();
    let md = snap.servers[0].metadata();
    assert!(md.in_group("go") && md.weight() == 5, "Go's metadata as written: {:?}", md.raw());

    rpcx_interop::registry::mul_on_every_runtime(discovery.clone());

    // Go's Shutdown deletes the node; our blocking query sees it go.
    go.shutdown();
    rpcx_interop::registry::wait_keys(&*discovery, &[], "the Go server to unregister");
    assert!(raw_get(&consul, &node).is_none());
    assert_eq!(consul.unsupported_requests(), Vec::<String>::new(), "Go used only the stand-in's subset");
}

#[test]
fn rust_servers_registered_through_consul_registrar_are_found_and_called_by_go_discovery() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let registrar = || ConsulRegistrar::new(config(&consul)).expect("config");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let server =
        rt.block_on(rpcx_tokio::Server::new(router("group=rust")).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("tokio bind and register");
    let out = go_client_once(&consul, 10, 1);
    let meta = format!("META {} group=rust", server.advertised().expect("advertised"));
    assert!(out.contains("SERVERS 1") && out.contains(&meta) && out.contains("OK 10"), "tokio server via Go: {out}");
    rt.block_on(server.shutdown(Duration::from_secs(5)));

    let server = smol::block_on(rpcx_smol::Server::new(router("")).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let server = server.expect("smol bind and register");
    let out = go_client_once(&consul, 10, 1);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "smol server via Go discovery: {out}");
    smol::block_on(server.shutdown(Duration::from_secs(5)));

    let server = rpcx_std::Server::new(router("")).registrar(registrar()).bind("tcp@127.0.0.1:0");
    let server = server.expect("std bind and register");
    let out = go_client_once(&consul, 10, 1);
    assert!(out.contains("SERVERS 1") && out.contains("OK 10"), "std server via Go discovery: {out}");
    server.shutdown(Duration::from_secs(5));
    assert_eq!(consul.unsupported_requests(), Vec::<String>::new(), "Go used only the stand-in's subset");
}

#[test]
fn go_discovery_started_first_sees_rust_servers_of_every_runtime_through_blocking_queries() {
    let consul = ConsulStandIn::start().expect("stand-in");
    let registrar = || ConsulRegistrar::new(config(&consul)).expect("config");
    // Go lists an empty prefix, then only its blocking-query watch can bring the servers.
    let client = go_client(&consul, 30, 3);
    assert_eq!(client.wait_line("LISTED"), "LISTED 0");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let a = rt.block_on(rpcx_tokio::Server::new(router("")).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let a = a.expect("tokio bind and register");
    let b = smol::block_on(rpcx_smol::Server::new(router("")).registrar(registrar()).bind("tcp@127.0.0.1:0"));
    let b = b.expect("smol bind and register");
    let c = rpcx_std::Server::new(router("")).registrar(registrar()).bind("tcp@127.0.0.1:0");
    let c = c.expect("std bind and register");
    let out = client.finish();
    assert!(out.contains("SERVERS 3") && out.contains("OK 30"), "Go's watch found all three: {out}");
    for key in [a.address().to_owned(), b.address().to_owned(), c.address().to_owned()] {
        assert!(out.contains(&format!("META {key} ")), "{key} in {out}");
    }
    rt.block_on(a.shutdown(Duration::from_secs(5)));
    smol::block_on(b.shutdown(Duration::from_secs(5)));
    c.shutdown(Duration::from_secs(5));
    assert_eq!(consul.unsupported_requests(), Vec::<String>::new(), "Go used only the stand-in's subset");
}

#[test]
fn killed_go_server_goes_with_its_session_and_rust_xclients_stop_selecting_it() {
    // Go renews its node's session only on its update tick (10 s here): the stand-in's
    // test-only knob invalidates sessions 13 s after their last renewal (Consul's rule
    // would be 2 x 10 s).
    let consul =
        ConsulStandIn::start_with(StandInOptions { session_expiry: Some(Duration::from_secs(13)) }).expect("stand-in");
    let go = go_server(&consul, "group=go");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let registrar = ConsulRegistrar::new(config(&consul)).expect("config");
    let survivor =
        rt.block_on(rpcx_tokio::Server::new(router("group=rust")).registrar(registrar).bind("tcp@127.0.0.1:0"));
    let survivor = survivor.expect("tokio bind and register");
    let discovery = Arc::new(ConsulDiscovery::connect(config(&consul), "Arith").wait().expect("discovery"));
    let mut both = [go.key.clone(), survivor.address().to_owned()];
    both.sort();
    rpcx_interop::registry::wait_keys(
        &*discovery,
        &both.iter().map(String::as_str).collect::<Vec<_>>(),
        "both servers",
    );
    let node = format!("rpcx_test/Arith/{}", go.key);
    let mut go = go;
    go.kill(); // SIGKILL, reaped
    let t0 = Instant::now();
    while raw_get(&consul, &node).is_some() {
        assert!(t0.elapsed() < Duration::from_secs(20), "Go's node outlived its session");
        std::thread::sleep(Duration::from_millis(50));
    }
    rpcx_interop::registry::wait_keys(&*discovery, &[survivor.address()], "discovery to drop the killed Go server");
    rt.block_on(async {
        let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
        for i in 0..10 {
            let r: Reply = xc.call("Mul", &Args { a: i, b: 2 }).await.expect("only the Rust server is selected");
            assert_eq!(r.c, i * 2);
        }
    });
    let xc = rpcx_std::XClient::new("Arith", discovery.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 4, b: 4 }).expect("std XClient -> the survivor");
    assert_eq!(r.c, 16);
    rt.block_on(survivor.shutdown(Duration::from_secs(5)));
}
