#![allow(clippy::print_stdout)] // an example that reports to its terminal
//! Server memory and threads per idle connection, for every runtime's server: VmRSS
//! and thread-count growth of a server process over N idle TCP connections (connected,
//! nothing sent), divided by N; then how many of the N the server kept (the rest were
//! refused at its connection cap: closed at once), whether a new client is answered once
//! ten of them leave, and whether the server process survived.
//!
//! ```sh
//! cargo run --release -p rpcx-conformance --example idle_memory -- --conns 1000
//! cargo run --release -p rpcx-conformance --example idle_memory -- --conns 10000 --runtimes std
//! cargo run --release -p rpcx-conformance --example idle_memory -- --conns 16000 --runtimes std --max-connections 50000
//! ```
//!
//! `--max-connections` sets the servers' cap (default 10 000); std lowers a cap its
//! thread and memory-map limits cannot hold to what they can.
//!
//! Each server runs in a child process of this one (so the connecting sockets are not
//! counted), serving the conformance services on defaults (both processes raise their
//! open-file limit to the hard limit); the figures are read from `/proc/<pid>/status`
//! (Linux) once the connections have been accepted and settled.

use rpcx_conformance::child::{ChildServer, serve_until_stdin_closes};
use rpcx_conformance::{ServeOpts, services};
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--serve") {
        let name = std::env::args().nth(i + 1).expect("--serve RUNTIME");
        let mut opts = ServeOpts::default();
        if let Ok(cap) = flag("--max-connections", "").parse::<usize>() {
            opts.settings = Some(rpcx_core::service::ServerSettings { max_connections: cap, ..Default::default() });
        }
        serve_until_stdin_closes(&name, services::router(false), opts);
        return;
    }
    let conns: usize = flag("--conns", "1000").parse().expect("--conns N");
    let runtimes = flag("--runtimes", "tokio,smol,std");
    rpcx_conformance::faults::raise_fd_limit();
    println!(
        "{:>6} {:>6} {:>12} {:>12} {:>9} {:>12} {:>7} {:>8} {:>6}",
        "server", "conns", "rss before", "rss after", "KiB/conn", "threads/conn", "kept", "refused", "alive"
    );
    for name in runtimes.split(',') {
        let cap = flag("--max-connections", "default");
        let mut child = ChildServer::start(&["--serve", name, "--max-connections", &cap]);
        let addr = child.addr.trim_start_matches("tcp@").to_owned();
        // One warm-up connection, so the runtime's threads and first buffers exist.
        let warm = TcpStream::connect(&addr).expect("connect");
        std::thread::sleep(Duration::from_millis(500));
        let (before, threads_before) = (child.status_kib("VmRSS"), child.status_count("Threads"));
        let mut idle = Vec::with_capacity(conns);
        for i in 0..conns {
            match TcpStream::connect(&addr) {
                Ok(s) => idle.push(s),
                Err(e) => {
                    println!("connect {i} failed: {e}");
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1500 + conns as u64 / 10));
        let (after, threads_after) = (child.status_kib("VmRSS"), child.status_count("Threads"));
        // A connection the server closed reads EOF at once; a kept one would block.
        let refused = idle
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).expect("nonblocking");
                !would_block(s)
            })
            .count();
        let kept = idle.len() - refused;
        let per = (after.saturating_sub(before)) as f64 / kept.max(1) as f64;
        let threads = threads_after.saturating_sub(threads_before) as f64 / kept.max(1) as f64;
        // At the cap a new client is refused; once a few leave, one is answered again.
        idle.drain(..idle.len().min(10));
        std::thread::sleep(Duration::from_millis(300));
        let answers = std::panic::catch_unwind(|| rpcx_conformance::faults::call_mul(&child.addr, 6, 7)).is_ok();
        let alive = child.alive();
        println!(
            "{name:>6} {conns:>6} {before:>9} KiB {after:>9} KiB {per:>9.1} {threads:>12.2} {kept:>7} {refused:>8} {:>6}",
            if alive && answers { "yes" } else { "NO" }
        );
        drop((idle, warm));
        let status = child.stop();
        assert!(status.success(), "{name} server exited with {status}");
    }
}

/// Whether a non-blocking read on `s` would block (the connection is open and quiet;
/// one the server closed reads EOF or a reset).
fn would_block(mut s: &TcpStream) -> bool {
    matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}
