//! What a served connection costs the std server in threads, and its connection cap.
//! One test per file: it counts the threads of this process, which other tests running
//! beside it would disturb.

use rpcx_std::Server;
use rpcx_std::service::Router;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").expect("/proc (Linux)").count()
}

fn settle_threads(want: impl Fn(usize) -> bool, what: &str) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let n = threads();
        if want(n) {
            return n;
        }
        assert!(Instant::now() < end, "{what}: {n} threads");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_connection_costs_one_thread_and_its_timers_are_kept_for_it() {
    let server = Server::new(Router::new())
        .idle_timeout(Duration::from_millis(600))
        .max_connections(usize::MAX)
        .bind("tcp@127.0.0.1:0")
        .expect("bind");
    // The configured cap is lowered to what the machine's limits hold.
    let cap = server.max_connections();
    assert!((1..usize::MAX).contains(&cap), "cap {cap}");
    if let Some(maps) =
        std::fs::read_to_string("/proc/sys/vm/max_map_count").ok().and_then(|s| s.trim().parse::<usize>().ok())
    {
        assert!(cap <= maps / 4, "cap {cap} above what {maps} memory maps hold");
    }
    let addr = server.local_addr().expect("tcp");
    let before = threads();
    let mut idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let with = settle_threads(|n| n >= before + 200, "200 connections served");
    assert!(with <= before + 200 + 2, "one thread per idle connection: {before} -> {with}");
    // Their idle timeout runs on the server's one timer thread: every one is closed.
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "closed by the idle timeout");
    }
    settle_threads(|n| n <= before + 2, "their threads ended");
    // The last threads may still be ending (the count allows two): wait for them.
    let end = Instant::now() + Duration::from_secs(10);
    while server.stats().connections_open != 0 {
        assert!(Instant::now() < end, "{} connections still open", server.stats().connections_open);
        std::thread::sleep(Duration::from_millis(20));
    }
    server.close();
}
