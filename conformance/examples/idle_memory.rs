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

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::{ServeOpts, ServerRt, services};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

fn runtime(name: &str) -> Box<dyn ServerRt> {
    match name {
        "tokio" => Box::new(Tokio),
        "smol" => Box::new(Smol),
        "std" => Box::new(Std),
        other => panic!("unknown runtime {other} (tokio, smol, std)"),
    }
}

/// Child: serve, print the address, run until stdin closes.
fn serve(name: &str) {
    let server = runtime(name).serve(services::router(false), ServeOpts::default());
    println!("{}", server.address());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.close();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status (Linux only)");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--serve") {
        serve(&std::env::args().nth(i + 1).expect("--serve RUNTIME"));
        return;
    }
    let conns: usize = flag("--conns", "1000").parse().expect("--conns N");
    let runtimes = flag("--runtimes", "tokio,smol,std");
    println!("{:>6} {:>6} {:>12} {:>12} {:>10}", "server", "conns", "rss before", "rss after", "KiB/conn");
    for name in runtimes.split(',') {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args(["--serve", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut addr = String::new();
        BufReader::new(child.stdout.take().expect("child stdout")).read_line(&mut addr).expect("address");
        let addr = addr.trim().trim_start_matches("tcp@").to_owned();
        // One warm-up connection, so the runtime's threads and first buffers exist.
        let warm = TcpStream::connect(&addr).expect("connect");
        std::thread::sleep(Duration::from_millis(500));
        let before = rss_kib(child.id());
        let idle: Vec<TcpStream> = (0..conns).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
        std::thread::sleep(Duration::from_millis(1500));
        let after = rss_kib(child.id());
        let per = (after.saturating_sub(before)) as f64 / conns as f64;
        println!("{name:>6} {conns:>6} {before:>9} KiB {after:>9} KiB {per:>10.1}");
        drop((idle, warm));
        drop(child.stdin.take());
        let _ = child.wait();
    }
}
