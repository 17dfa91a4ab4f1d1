#![allow(clippy::print_stdout)] // an example that reports to its terminal
//! Server memory per idle connection, for every runtime's server: VmRSS growth of a
//! server process over N idle TCP connections (connected, nothing sent), divided by N.
//!
//! ```sh
//! cargo run --release -p rpcx-conformance --example idle_memory -- --conns 1000
//! ```
//!
//! Each server runs in a child process of this one (so the connecting sockets are not
//! counted), serving the conformance services on defaults; the figure is read from
//! `/proc/<pid>/status` (Linux) once the connections have been accepted and settled.

use rpcx_conformance::child::{ChildServer, serve_until_stdin_closes};
use rpcx_conformance::{ServeOpts, services};
use std::net::TcpStream;
use std::time::Duration;

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--serve") {
        let name = std::env::args().nth(i + 1).expect("--serve RUNTIME");
        serve_until_stdin_closes(&name, services::router(false), ServeOpts::default());
        return;
    }
    let conns: usize = flag("--conns", "1000").parse().expect("--conns N");
    let runtimes = flag("--runtimes", "tokio,smol,std");
    println!("{:>6} {:>6} {:>12} {:>12} {:>10}", "server", "conns", "rss before", "rss after", "KiB/conn");
    for name in runtimes.split(',') {
        let child = ChildServer::start(&["--serve", name]);
        let addr = child.addr.trim_start_matches("tcp@").to_owned();
        // One warm-up connection, so the runtime's threads and first buffers exist.
        let warm = TcpStream::connect(&addr).expect("connect");
        std::thread::sleep(Duration::from_millis(500));
        let before = child.status_kib("VmRSS");
        let idle: Vec<TcpStream> = (0..conns).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
        std::thread::sleep(Duration::from_millis(1500));
        let after = child.status_kib("VmRSS");
        let per = (after.saturating_sub(before)) as f64 / conns as f64;
        println!("{name:>6} {conns:>6} {before:>9} KiB {after:>9} KiB {per:>10.1}");
        drop((idle, warm));
        child.stop();
    }
}
