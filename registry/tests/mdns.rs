//! mDNS registration and discovery with real servers, each test in a network namespace
//! of its own (`rpcx_registry::mdns::testing`): the parent test re-runs its `#[ignore]`d
//! child under `unshare --net` and asserts on its exit status, so nothing multicasts on
//! a real network. A child run by hand outside a namespace fails.
//!
//! Covered: tokio, smol and std servers registered and called by XClients on every
//! runtime; a second service (and a server serving only it) not listed for `Arith`;
//! `state=inactive` listed but not selected; a graceful shutdown's goodbye removing a
//! server at once; a killed server (SIGKILL, a child process in the namespace)
//! disappearing after its TTL.

mod common;

use common::{keys, router, until, who_on_every_runtime};
use rpcx_core::govern::Discovery;
use rpcx_core::registry::RegistryError;
use rpcx_core::service::{Context, Router, Service};
use rpcx_examples_common::{Args, Reply};
use rpcx_registry::mdns::testing::{self, require_inside, run_test_in_namespace};
use rpcx_registry::mdns::{MdnsConfig, MdnsDiscovery, MdnsRegistrar};
use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set for the killed-server child process.
const SERVER_CHILD_ENV: &str = "RPCX_MDNS_TEST_SERVER_CHILD";
/// Bound on one namespace child test.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

fn in_namespace(child: &str) {
    let t0 = Instant::now();
    let status = run_test_in_namespace(child, CHILD_LIMIT).expect("run the child test under `unshare --net`");
    assert!(status.success(), "{child} failed in its network namespace: {status}");
    eprintln!("{child}: passed in its namespace in {:?}", t0.elapsed());
}

fn registrar(instance: &str) -> MdnsRegistrar {
    MdnsRegistrar::new(testing::config().instance(instance)).expect("config")
}

/// `Arith` (as `router`) plus `Other`.
fn arith_and_other(id: i64) -> Router {
    router(id, "")
        .service(Service::new("Other").method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }))
}

fn only_other(id: i64) -> Router {
    Router::new()
        .service(Service::new("Other").method("Who", move |_c: Context, _a: Args| async move { Ok(Reply { c: id }) }))
}

#[test]
fn every_runtime_registers_and_is_found_called_and_unregistered() {
    in_namespace("ns_every_runtime");
}

#[test]
#[ignore = "run in a network namespace by every_runtime_registers_and_is_found_called_and_unregistered"]
fn ns_every_runtime() {
    require_inside("every_runtime_registers_and_is_found_called_and_unregistered");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    rt.block_on(every_runtime());
}

async fn every_runtime() {
    let on_tokio = rpcx_tokio::Server::new(arith_and_other(1))
        .registrar(registrar("tokio"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("tokio server");
    let on_smol = smol::block_on(
        rpcx_smol::Server::new(router(2, "group=b")).registrar(registrar("smol")).bind("tcp@127.0.0.1:0"),
    )
    .expect("smol server");
    let on_std = tokio::task::spawn_blocking(|| {
        rpcx_std::Server::new(router(3, "")).registrar(registrar("std")).bind("tcp@127.0.0.1:0")
    })
    .await
    .expect("join")
    .expect("std server");
    let inactive = rpcx_tokio::Server::new(router(4, "state=inactive"))
        .registrar(registrar("inactive"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("inactive server");
    let other = rpcx_tokio::Server::new(only_other(5))
        .registrar(registrar("other"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("Other-only server");

    let mut arith: Vec<String> =
        [on_tokio.address(), on_smol.address(), on_std.address(), inactive.address()].map(str::to_owned).to_vec();
    arith.sort();
    let d = Arc::new(MdnsDiscovery::connect(testing::config(), "Arith").await.expect("discovery"));
    let took = until(Duration::from_secs(10), "the four Arith servers", async || keys(&*d) == arith).await;
    eprintln!("four Arith servers found in {took:?}");
    let listed = d.snapshot();
    let smol_entry = listed.servers.iter().find(|s| s.key().as_str() == on_smol.address()).expect("smol listed");
    assert!(smol_entry.metadata().in_group("b"), "metadata travels in the TXT");
    // The inactive one is listed but never selected; the Other-only one is not listed.
    assert_eq!(who_on_every_runtime(d.clone(), 24).await, [(); 3].map(|_| vec![1, 2, 3]));

    let mut others = vec![on_tokio.address().to_owned(), other.address().to_owned()];
    others.sort();
    let od = Arc::new(MdnsDiscovery::connect(testing::config(), "Other").await.expect("discovery"));
    until(Duration::from_secs(10), "the two Other servers", async || keys(&*od) == others).await;
    let xc = rpcx_tokio::XClient::new("Other", od.clone(), Default::default());
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..16 {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("Other call");
        ids.insert(r.c);
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), [1, 5]);

    // A graceful shutdown says goodbye: gone long before the 30 s TTL.
    let gone = on_tokio.address().to_owned();
    on_tokio.shutdown(Duration::from_secs(5)).await;
    let took = until(Duration::from_secs(3), "the goodbye to remove the tokio server", async || {
        !keys(&*d).contains(&gone) && !keys(&*od).contains(&gone)
    })
    .await;
    eprintln!("goodbye took effect in {took:?}");
    assert_eq!(who_on_every_runtime(d.clone(), 16).await, [(); 3].map(|_| vec![2, 3]));
    smol::block_on(on_smol.shutdown(Duration::from_secs(5)));
    tokio::task::spawn_blocking(move || on_std.shutdown(Duration::from_secs(5))).await.expect("join");
    inactive.shutdown(Duration::from_secs(5)).await;
    other.shutdown(Duration::from_secs(5)).await;
    until(Duration::from_secs(3), "every goodbye", async || keys(&*d).is_empty() && keys(&*od).is_empty()).await;
}

#[test]
fn a_killed_server_disappears_after_its_ttl() {
    in_namespace("ns_killed_server");
}

/// The killed server's TTL.
const SHORT_TTL: Duration = Duration::from_secs(2);

#[test]
#[ignore = "run in a network namespace by a_killed_server_disappears_after_its_ttl"]
fn ns_killed_server() {
    require_inside("a_killed_server_disappears_after_its_ttl");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    rt.block_on(killed_server());
}

async fn killed_server() {
    // The survivor has the same short TTL: its re-announcements keep it listed.
    let short = testing::config().instance("survivor").ttl(SHORT_TTL).update_interval(Duration::from_millis(500));
    let survivor = rpcx_tokio::Server::new(router(2, ""))
        .registrar(MdnsRegistrar::new(short).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("survivor");
    // Still in this namespace: a child process of this one.
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["ns_child_process_server", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(SERVER_CHILD_ENV, "1")
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
    let killed = rx.recv_timeout(Duration::from_secs(30)).expect("the child registered");
    let d = Arc::new(MdnsDiscovery::connect(testing::config(), "Arith").await.expect("discovery"));
    let mut both = vec![killed.clone(), survivor.address().to_owned()];
    both.sort();
    until(Duration::from_secs(10), "both servers", async || keys(&*d) == both).await;

    child.kill().expect("kill -9"); // SIGKILL: no goodbye
    let _ = child.wait();
    let t0 = Instant::now();
    let took =
        until(Duration::from_secs(10), "the killed server to expire", async || !keys(&*d).contains(&killed)).await;
    eprintln!("the killed server expired {took:?} after the kill (TTL {SHORT_TTL:?})");
    // Its last refresh was at most one announcement interval (500 ms) before the kill.
    assert!(took >= SHORT_TTL - Duration::from_millis(700), "gone after {took:?}: before its TTL, so not by expiry");
    assert!(t0.elapsed() <= SHORT_TTL + Duration::from_secs(3), "expired after {took:?}, TTL {SHORT_TTL:?}");
    assert_eq!(keys(&*d), [survivor.address().to_owned()]);
    assert_eq!(who_on_every_runtime(d.clone(), 8).await, [(); 3].map(|_| vec![2]));
    // Two more TTLs: the survivor's refreshes keep it listed all along.
    let t1 = Instant::now();
    while t1.elapsed() < SHORT_TTL * 2 {
        assert_eq!(keys(&*d), [survivor.address().to_owned()], "a refreshed server must stay listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    survivor.shutdown(Duration::from_secs(5)).await;
}

/// Run by `ns_killed_server` in a child process in its namespace: a std server with a
/// short TTL, until it is killed.
#[test]
#[ignore = "helper: run in a child process by ns_killed_server"]
fn ns_child_process_server() {
    require_inside("a_killed_server_disappears_after_its_ttl");
    assert!(std::env::var_os(SERVER_CHILD_ENV).is_some(), "run by ns_killed_server");
    let config = testing::config().instance("doomed").ttl(SHORT_TTL).update_interval(Duration::from_millis(500));
    let server = rpcx_std::Server::new(router(1, ""))
        .registrar(MdnsRegistrar::new(config).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .expect("bind and register");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "REGISTERED {}", server.address());
    let _ = out.flush();
    // Bounded: the parent kills us long before.
    std::thread::sleep(Duration::from_secs(60));
}

/// No multicast here: these are refused before any socket is opened.
#[tokio::test]
async fn what_go_cannot_publish_is_refused_with_typed_errors() {
    assert!(matches!(MdnsRegistrar::new(MdnsConfig::new().instance("")), Err(RegistryError::Config(_))));
    assert!(matches!(MdnsDiscovery::connect(MdnsConfig::new(), "").await, Err(RegistryError::Config(_))));
    let mut many = Router::new();
    for i in 0..4 {
        many = many.service(Service::new(format!("Service{i}")).metadata("weight=10&group=a"));
    }
    let err = rpcx_tokio::Server::new(many)
        .registrar(MdnsRegistrar::new(MdnsConfig::new()).expect("config"))
        .bind("tcp@127.0.0.1:0")
        .await
        .expect_err("one TXT string cannot hold four services");
    assert!(err.to_string().contains("255 bytes"), "{err}");
}

#[test]
fn junk_on_the_wire_changes_nothing() {
    in_namespace("ns_junk_on_the_wire");
}

#[test]
#[ignore = "run in a network namespace by junk_on_the_wire_changes_nothing"]
fn ns_junk_on_the_wire() {
    require_inside("junk_on_the_wire_changes_nothing");
    let server = rpcx_std::Server::new(router(1, ""))
        .registrar(registrar("real"))
        .bind("tcp@127.0.0.1:0")
        .expect("bind and register");
    let d = Arc::new(MdnsDiscovery::connect(testing::config(), "Arith").wait().expect("discovery"));
    let want = [server.address().to_owned()];
    common::until_blocking(Duration::from_secs(10), "the real server", || keys(&*d) == want);

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let group = rpcx_registry::mdns::MDNS_GROUP;
    let mut x: u32 = 0x2545_f491;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    // Random bytes, and random bytes behind a response header claiming many records.
    for i in 0..300 {
        let mut p: Vec<u8> = (0..(rand() % 700)).map(|_| rand() as u8).collect();
        if i % 2 == 0 && p.len() >= 12 {
            p[..12].copy_from_slice(&[0, 0, 0x84, 0, 0, 0, 0, 40, 0, 0, 0, 40]);
        }
        let _ = sock.send_to(&p, group);
    }
    // Well-formed announcements: a TXT that is not Go's list, one for another service
    // only, and a goodbye for an instance nobody announced.
    for (instance, txt) in [
        ("bogus", "not%20json".to_owned()),
        ("other", escaped_list(&[("Other", "tcp@127.0.0.1:1")])),
        ("nobody", escaped_list(&[("Arith", "tcp@127.0.0.1:2")])),
    ] {
        let ttl = if instance == "nobody" { 0 } else { 120 };
        let _ = sock.send_to(&txt_announcement(instance, ttl, txt.as_bytes()), group);
    }
    // A flood of distinct instances for Arith is bounded: the list stays finite and
    // the real server stays listed and called.
    for i in 0..1500u32 {
        let txt = escaped_list(&[("Arith", &format!("tcp@127.0.0.9:{}", i % 60000 + 1))]);
        let _ = sock.send_to(&txt_announcement(&format!("flood{i}"), 1, txt.as_bytes()), group);
    }
    // Some of it arrived (loopback may drop part of a burst), never more than the bound.
    common::until_blocking(Duration::from_secs(5), "part of the flood", || keys(&*d).len() > 1);
    assert!(keys(&*d).len() <= rpcx_registry::mdns::MAX_INSTANCES + 1, "{} listed", keys(&*d).len());
    // The flood expires after its 1 s TTL; the real server remains, and answers.
    common::until_blocking(Duration::from_secs(10), "the flood to expire", || keys(&*d) == want);
    let xc = rpcx_std::XClient::new("Arith", d.clone(), Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).expect("call after the junk");
    assert_eq!(r.c, 42);
    // The responder survived the junk too: a fresh discovery finds the server.
    let fresh = MdnsDiscovery::connect(testing::config(), "Arith").wait().expect("discovery");
    common::until_blocking(Duration::from_secs(10), "a fresh discovery", || keys(&fresh) == want);

    // A flood of 500 browse queries in about a second draws a handful of answers (one
    // per 200 ms at most, plus the announcements), not 500.
    let listener = group_listener();
    let query = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut query = query.to_vec();
    for label in ["_rpcxservices", "local"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 12, 0, 1]);
    let t0 = Instant::now();
    let flood = std::thread::spawn(move || {
        for _ in 0..500 {
            let _ = sock.send_to(&query, group);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut answers = 0;
    let mut buf = [0u8; 9000];
    while t0.elapsed() < Duration::from_millis(1500) {
        if let Ok((n, _)) = listener.recv_from(&mut buf) {
            answers += usize::from(n > 2 && buf[2] & 0x80 != 0);
        }
    }
    flood.join().expect("flood");
    let took = t0.elapsed();
    eprintln!("{answers} answers to 500 queries in {took:?}");
    assert!(answers >= 1, "the flood must still be answered");
    assert!(answers <= 15, "{answers} answers to a query flood in {took:?}");
    server.shutdown(Duration::from_secs(5));
}

/// A socket receiving what is multicast to the mDNS group in the namespace.
fn group_listener() -> std::net::UdpSocket {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s.set_reuse_address(true).expect("reuse");
    s.set_reuse_port(true).expect("reuse port");
    let any: std::net::SocketAddr = "0.0.0.0:5353".parse().expect("addr");
    s.bind(&any.into()).expect("bind 5353");
    s.join_multicast_v4(rpcx_registry::mdns::MDNS_GROUP.ip(), &std::net::Ipv4Addr::LOCALHOST).expect("join");
    s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    s.into()
}

/// Go's TXT list for `(service, address)` pairs, escaped.
fn escaped_list(services: &[(&str, &str)]) -> String {
    let json: Vec<String> =
        services.iter().map(|(s, a)| format!(r#"{{"service":"{s}","service_address":"{a}"}}"#)).collect();
    let json = format!("[{}]", json.join(","));
    json.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A response holding one TXT record for `<instance>._rpcxservices.local.`, built by
/// hand (the codec is private).
fn txt_announcement(instance: &str, ttl: u32, txt: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    for label in [instance, "_rpcxservices", "local"] {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&[0, 16, 0x80, 1]);
    p.extend_from_slice(&ttl.to_be_bytes());
    p.extend_from_slice(&((txt.len() + 1) as u16).to_be_bytes());
    p.push(txt.len() as u8);
    p.extend_from_slice(txt);
    p
}

#[test]
fn published_rates_reach_the_discovery_like_gos_metrics() {
    in_namespace("ns_published_rates");
}

#[test]
#[ignore = "run in a network namespace by published_rates_reach_the_discovery_like_gos_metrics"]
fn ns_published_rates() {
    require_inside("published_rates_reach_the_discovery_like_gos_metrics");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    rt.block_on(async {
        let server = rpcx_tokio::Server::new(router(1, "weight=3"))
            .registrar(registrar("rates"))
            .publish_rates(true)
            .bind("tcp@127.0.0.1:0")
            .await
            .expect("bind");
        let d = Arc::new(MdnsDiscovery::connect(testing::config(), "Arith").await.expect("discovery"));
        until(Duration::from_secs(10), "the server", async || keys(&*d) == [server.address().to_owned()]).await;
        assert_eq!(who_on_every_runtime(d.clone(), 5).await, [(); 3].map(|_| vec![1]));
        // The next update tick (1 s) re-announces the TXT with Go's calls/connections.
        until(Duration::from_secs(5), "rates in the TXT", async || {
            d.snapshot().servers.first().is_some_and(|s| {
                let raw = s.metadata().raw();
                common::has_rates(raw) && raw.contains("weight=3")
            })
        })
        .await;
        server.shutdown(Duration::from_secs(5)).await;
    });
}
