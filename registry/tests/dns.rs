//! DNS discovery with real servers: the system resolver finds a server through
//! `localhost` (and `::1`, bracketed), and XClients of every runtime follow a changing
//! answer across servers on 127.0.0.1 and 127.0.0.2 sharing one port (the answer comes
//! from a resolver function: the system's cannot be made to change in a test).

mod common;

use common::{keys, router, until, who_on_every_runtime};
use rpcx_registry::dns::{DnsConfig, DnsDiscovery};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn serve(id: i64, addr: &str) -> rpcx_tokio::ServerHandle {
    rpcx_tokio::Server::new(router(id, "")).bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_resolver_finds_servers_by_name_and_ipv6_is_bracketed() {
    let v4 = serve(1, "tcp@127.0.0.1:0").await;
    let port = v4.local_addr().expect("port").port();
    // The same port on ::1, where the machine has IPv6 loopback.
    let v6 = rpcx_tokio::Server::new(router(2, "")).bind(&format!("tcp@[::1]:{port}")).await.ok();
    let d: Arc<DnsDiscovery> =
        Arc::new(DnsDiscovery::connect(DnsConfig::new("localhost", port)).await.expect("lookup"));
    let found = keys(&*d);
    assert!(found.contains(&format!("tcp@127.0.0.1:{port}")), "{found:?}");
    // An address `localhost` names but nobody serves (::1 without IPv6) is failed over.
    let ids = who_with_failover(d.clone(), 6).await;
    assert!(ids.contains(&1), "{ids:?}");
    if let Some(v6) = v6 {
        let d = Arc::new(DnsDiscovery::connect(DnsConfig::new("::1", port)).await.expect("lookup"));
        assert_eq!(keys(&*d), [format!("tcp@[::1]:{port}")]);
        assert_eq!(who_on_every_runtime(d, 3).await, [vec![2], vec![2], vec![2]]);
        v6.close().await;
    } else {
        eprintln!("no IPv6 loopback here: the ::1 half of this test did not run");
    }
    v4.close().await;
}

/// Which servers answered `n` calls of a tokio XClient with Failover (a resolved
/// address may have no server).
async fn who_with_failover(d: Arc<DnsDiscovery>, n: usize) -> Vec<i64> {
    use rpcx_core::govern::FailMode;
    use rpcx_examples_common::{Args, Reply};
    let opts = rpcx_tokio::XClientOptions { fail_mode: FailMode::Failover, ..Default::default() };
    let xc = rpcx_tokio::XClient::new("Arith", d.clone(), opts);
    let mut ids = Vec::new();
    for _ in 0..n {
        let r: Reply = xc.call("Who", &Args { a: 0, b: 0 }).await.expect("call");
        ids.push(r.c);
    }
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xclients_follow_a_changing_answer() {
    let a = serve(1, "tcp@127.0.0.1:0").await;
    let port = a.local_addr().expect("port").port();
    let b = serve(2, &format!("tcp@127.0.0.2:{port}")).await;
    let answer: Arc<Mutex<Vec<IpAddr>>> = Arc::new(Mutex::new(vec!["127.0.0.1".parse().unwrap()]));
    let resolve = answer.clone();
    let config = DnsConfig::new("arith.test", port)
        .interval(Duration::from_millis(50))
        .resolver(move |_| Ok(resolve.lock().unwrap().clone()));
    let d = Arc::new(DnsDiscovery::connect(config).await.expect("lookup"));
    assert_eq!(who_on_every_runtime(d.clone(), 4).await, [vec![1], vec![1], vec![1]]);
    answer.lock().unwrap().push("127.0.0.2".parse().unwrap());
    until(Duration::from_secs(5), "both servers listed", async || keys(&*d).len() == 2).await;
    assert_eq!(who_on_every_runtime(d.clone(), 8).await, [vec![1, 2], vec![1, 2], vec![1, 2]]);
    answer.lock().unwrap().remove(0);
    until(Duration::from_secs(5), "server 1 dropped", async || keys(&*d) == [format!("tcp@127.0.0.2:{port}")]).await;
    assert_eq!(who_on_every_runtime(d, 4).await, [vec![2], vec![2], vec![2]]);
    a.close().await;
    b.close().await;
}
