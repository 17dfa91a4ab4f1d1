//! mDNS registry interop with Go, both directions (`interop/go/cmd/mdns`, rpcx's own
//! `serverplugin.NewMDNSRegisterPlugin` and `client.NewMDNSDiscovery` over
//! grandcat/zeroconf): a Go-registered server is found and called by Rust XClients on
//! every runtime, and Rust servers on every runtime registered by `MdnsRegistrar` are
//! found and called by Go's discovery and XClient; a Go server killed with SIGKILL
//! (no goodbye, zeroconf's 3200 s TTL) is evicted by a discovery with
//! `evict_unanswered` and kept by one relying on TTLs.
//!
//! Each test runs in a network namespace of its own (the parent re-runs its `#[ignore]`d
//! child under `unshare --net`, the Go processes are children of that child), so
//! nothing multicasts on a real network; a child run by hand outside one fails.

use rpcx_core::govern::Discovery;
use rpcx_core::service::{Context, Router, Service};
use rpcx_interop::go::go_binaries;
use rpcx_registry::mdns::testing::{self, command_in_namespace, require_inside, wait_bounded};
use rpcx_registry::mdns::{MdnsDiscovery, MdnsRegistrar};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// The built `cmd/mdns`, passed from the parent to the child test.
const GO_MDNS_ENV: &str = "RPCX_INTEROP_GO_MDNS_BINARY";

fn in_namespace(child: &str) {
    // Build the Go binaries out here (a cold build may download modules; the namespace
    // has no network) and hand the child the path.
    let go = &go_binaries().mdns;
    let t0 = Instant::now();
    let exe = std::env::current_exe().expect("test binary");
    let mut run = command_in_namespace(&exe, [child, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(GO_MDNS_ENV, go)
        .spawn()
        .expect("run the child test under `unshare --net`");
    let status = wait_bounded(&mut run, Duration::from_secs(180)).expect("the child test finishes");
    assert!(status.success(), "{child} failed in its network namespace: {status}");
    eprintln!("{child}: passed in its namespace in {:?}", t0.elapsed());
}

fn go_mdns() -> std::path::PathBuf {
    std::env::var_os(GO_MDNS_ENV).map_or_else(|| go_binaries().mdns.clone(), Into::into)
}

fn router() -> Router {
    Router::new().service(
        Service::new("Arith")
            .metadata("group=rust&weight=4")
            .method("Mul", |_c: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }),
    )
}

fn registrar(instance: &str) -> MdnsRegistrar {
    MdnsRegistrar::new(testing::config().instance(instance)).expect("config")
}

/// Go's server, killed on drop; closing its stdin makes it shut down and say goodbye.
struct GoServer {
    child: Child,
    key: String,
}

impl GoServer {
    fn start(meta: &str) -> GoServer {
        let mut child = Command::new(go_mdns())
            .args(["server", "-meta", meta, "-update", "1s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the Go mdns server");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("REGISTERED ") {
                    let _ = tx.send(k.to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(key) => GoServer { child, key },
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("the Go server did not register within 30 s:\n{err}");
            }
        }
    }

    /// Close stdin: the Go server shuts down, its plugin says goodbye, and it exits.
    fn shutdown(mut self) {
        drop(self.child.stdin.take());
        let status = wait_bounded(&mut self.child, Duration::from_secs(10)).expect("the Go server exits");
        assert!(status.success(), "the Go server exited with {status}");
    }
}

impl GoServer {
    /// SIGKILL: no goodbye, its records keep zeroconf's 3200 s TTL.
    fn kill(mut self) {
        self.child.kill().expect("kill -9 the Go server");
        let _ = self.child.wait();
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keys(d: &dyn Discovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|s| s.key().to_string()).collect()
}

fn wait_keys(d: &dyn Discovery, want: &[&str], what: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        if keys(d) == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}: have {:?}, want {want:?}",
            keys(d)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn go_server_registered_by_the_mdns_plugin_is_found_and_called_by_rust_xclients_on_every_runtime() {
    in_namespace("ns_go_server_rust_clients");
}

#[test]
#[ignore = "run in a network namespace by go_server_registered_by_the_mdns_plugin_is_found_and_called_by_rust_xclients_on_every_runtime"]
fn ns_go_server_rust_clients() {
    require_inside("go_server_registered_by_the_mdns_plugin_is_found_and_called_by_rust_xclients_on_every_runtime");
    let go = GoServer::start("group=go&weight=2");
    let d = Arc::new(MdnsDiscovery::connect(testing::config(), "Arith").wait().expect("discovery"));
    let took = wait_keys(&*d, &[go.key.as_str()], "the Go server");
    eprintln!("Go's server found in {took:?}");
    assert_eq!(d.snapshot().servers[0].metadata().raw(), "group=go&weight=2", "Go's metadata, unescaped");

    // tokio
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let dd = d.clone();
    rt.block_on(async move {
        let xc = rpcx_tokio::XClient::new("Arith", dd, Default::default());
        for i in 0..5 {
            let r: Reply = xc.call("Mul", &Args { a: i, b: 7 }).await.expect("tokio call to Go");
            assert_eq!(r.c, i * 7);
        }
    });
    // smol
    let dd = d.clone();
    smol::block_on(async move {
        let xc = rpcx_smol::XClient::new("Arith", dd, Default::default());
        for i in 0..5 {
            let r: Reply = xc.call("Mul", &Args { a: i, b: 8 }).await.expect("smol call to Go");
            assert_eq!(r.c, i * 8);
        }
    });
    // std
    let xc = rpcx_std::XClient::new("Arith", d.clone(), Default::default());
    for i in 0..5 {
        let r: Reply = xc.call("Mul", &Args { a: i, b: 9 }).expect("std call to Go");
        assert_eq!(r.c, i * 9);
    }
    drop(xc); // Go's Shutdown waits for open connections

    // Go's Shutdown empties its TXT list and its plugin's Stop says goodbye (TTL 0):
    // gone long before zeroconf's 3200 s TTL.
    go.shutdown();
    let took = wait_keys(&*d, &[], "the Go server's goodbye");
    eprintln!("Go's goodbye took effect in {took:?}");
}

#[test]
fn rust_servers_on_every_runtime_are_found_and_called_by_gos_mdns_discovery() {
    in_namespace("ns_rust_servers_go_client");
}

#[test]
#[ignore = "run in a network namespace by rust_servers_on_every_runtime_are_found_and_called_by_gos_mdns_discovery"]
fn ns_rust_servers_go_client() {
    require_inside("rust_servers_on_every_runtime_are_found_and_called_by_gos_mdns_discovery");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let on_tokio = rt
        .block_on(rpcx_tokio::Server::new(router()).registrar(registrar("tokio")).bind("tcp@127.0.0.1:0"))
        .expect("tokio server");
    let on_smol = smol::block_on(rpcx_smol::Server::new(router()).registrar(registrar("smol")).bind("tcp@127.0.0.1:0"))
        .expect("smol server");
    let on_std =
        rpcx_std::Server::new(router()).registrar(registrar("std")).bind("tcp@127.0.0.1:0").expect("std server");
    let mut want: Vec<String> = [on_tokio.address(), on_smol.address(), on_std.address()]
        .iter()
        .map(|k| format!("{k} group=rust&weight=4"))
        .collect();
    want.sort();

    let mut child = Command::new(go_mdns())
        .args(["client", "-service", "Arith", "-servers", "3", "-calls", "30", "-wait", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the Go mdns client");
    let status = wait_bounded(&mut child, Duration::from_secs(60)).expect("the Go client finishes");
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "Go client failed ({status}):\n{out}{err}");
    assert!(out.contains("SERVERS 3\n"), "{out}");
    assert!(out.contains(&format!("KEYS {}\n", want.join(","))), "Go listed other keys:\n{out}\nwant {want:?}");
    assert!(out.contains("OK 30\n"), "{out}");

    rt.block_on(on_tokio.shutdown(Duration::from_secs(5)));
    smol::block_on(on_smol.shutdown(Duration::from_secs(5)));
    on_std.shutdown(Duration::from_secs(5));
}

#[test]
fn a_killed_go_server_is_evicted_once_it_stops_answering() {
    in_namespace("ns_killed_go_server");
}

#[test]
#[ignore = "run in a network namespace by a_killed_go_server_is_evicted_once_it_stops_answering"]
fn ns_killed_go_server() {
    require_inside("a_killed_go_server_is_evicted_once_it_stops_answering");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    let rust = rt
        .block_on(rpcx_tokio::Server::new(router()).registrar(registrar("rust")).bind("tcp@127.0.0.1:0"))
        .expect("Rust server");
    let go = GoServer::start("");
    let go_key = go.key.clone();
    let mut both = [go_key.clone(), rust.address().to_owned()];
    both.sort();
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    let config = testing::config().query_interval(Duration::from_millis(300));
    let evicting = MdnsDiscovery::connect(config.clone().evict_unanswered(3), "Arith").wait().expect("discovery");
    let ttl_only = MdnsDiscovery::connect(config, "Arith").wait().expect("discovery");
    wait_keys(&evicting, &both, "both servers (evicting discovery)");
    wait_keys(&ttl_only, &both, "both servers (TTL-only discovery)");

    go.kill();
    let took = wait_keys(&evicting, &[rust.address()], "the killed Go server's eviction");
    eprintln!("the killed Go server was evicted {took:?} after the kill (3 unanswered queries, 300 ms apart)");
    assert!(took < Duration::from_secs(5), "evicted after {took:?}");
    // Its records still have most of zeroconf's 3200 s TTL: TTLs alone keep it.
    assert!(keys(&ttl_only).contains(&go_key), "the TTL-only discovery keeps it: {:?}", keys(&ttl_only));
    rt.block_on(rust.shutdown(Duration::from_secs(5)));
}
