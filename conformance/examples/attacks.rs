#![allow(clippy::print_stdout)] // an example that reports to its terminal
//! What hostile peers cost the other clients and the server's memory, for every
//! runtime's server (each in a child process of this one, on defaults).
//!
//! ```sh
//! # Isolation: a victim's sequential Arith.Mul latency, alone and while attackers
//! # pipeline max-size gzip frames, gzip bombs and 4096-pair metadata frames.
//! cargo run --release -p rpcx-conformance --example attacks -- isolation --secs 5
//! # Memory: the server's peak RSS while 100 peers pipeline without reading, and while
//! # 100 peers each hold an unfinished max-size frame; with the default 512 MiB budget
//! # and with the budget off (usize::MAX), in the same run.
//! cargo run --release -p rpcx-conformance --example attacks -- memory
//! ```
//!
//! `--runtimes tokio,smol,std` picks the servers. Attackers and the victim are raw
//! sockets on loopback, in this process.

use bytes::Bytes;
use rpcx_conformance::child::{ChildServer, serve_until_stdin_closes};
use rpcx_conformance::faults::{connect, mul, next, request};
use rpcx_conformance::{ServeOpts, services};
use rpcx_core::conn::MemoryBudget;
use rpcx_core::service::ServerSettings;
use rpcx_core::wire::{Metadata, StreamDecoder};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

/// Child: serve with `budget` bytes of memory budget until stdin closes.
fn serve(name: &str, budget: usize) {
    let mut settings = ServerSettings::default();
    settings.connection.budget = Arc::new(MemoryBudget::new(budget, 4, Duration::from_secs(10)));
    let opts = ServeOpts { settings: Some(settings), ..Default::default() };
    serve_until_stdin_closes(name, services::router(false), opts);
}

/// A server with `budget` bytes of memory budget in a child process.
fn start(name: &str, budget: usize) -> ChildServer {
    ChildServer::start(&["--serve", name, "--budget", &budget.to_string()])
}

/// `VmRSS` and `VmHWM` (peak) of the server, in KiB.
fn rss(server: &ChildServer) -> (u64, u64) {
    (server.status_kib("VmRSS"), server.status_kib("VmHWM"))
}

/// Sequential calls on one connection for `secs`: the latency histogram in µs.
fn victim(addr: &str, secs: f64) -> hdrhistogram::Histogram<u64> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut c = connect(addr);
    let mut dec = StreamDecoder::default();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut seq = 0;
    while Instant::now() < end {
        let t = Instant::now();
        c.write_all(&mul(seq, 6, 7)).expect("victim write");
        let r = next(&mut c, &mut dec).expect("victim reply");
        assert_eq!(r.header.seq(), seq);
        h.record(t.elapsed().as_micros().max(1) as u64).expect("record");
        seq += 1;
    }
    h
}

/// An attacker: sends `frame` over and over on a connection (reconnecting when the
/// server closes it), reading whatever comes back, until `stop`. Counts frames sent.
fn attacker(addr: String, frame: Arc<Vec<u8>>, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = TcpStream::connect(addr.trim_start_matches("tcp@")) else { continue };
        let mut r = c.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        });
        while !stop.load(Ordering::Relaxed) {
            if c.write_all(&frame).is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
        let _ = c.shutdown(std::net::Shutdown::Both);
        let _ = reader.join();
    }
}

fn pcts(h: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "{:>8} {:>8.2} {:>8.2} {:>8.2}",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    )
}

fn isolation(runtimes: &str, secs: f64) {
    // Frames that inflate to the 32 MiB cap, bombs past it, and 4096-pair metadata.
    let max_gzip = Arc::new(request(1, "Nope", "Nope", Bytes::from(vec![0u8; 32 << 20]), Metadata::new(), true));
    let bomb = Arc::new(request(1, "Nope", "Nope", Bytes::from(vec![0u8; 64 << 20]), Metadata::new(), true));
    let many: Metadata = (0..4096).map(|i| (format!("key-{i}"), format!("value-{i}"))).collect();
    let args = rpcx_core::codec::to_payload(rpcx_core::wire::SerializeType::MSGPACK, &services::Args { a: 1, b: 2 })
        .expect("encode");
    let meta = Arc::new(request(1, "Echo", "Meta", args.into(), many, false));
    println!("victim: sequential Arith.Mul on one connection for {secs} s; latency in ms");
    println!(
        "{:>6} {:>22} {:>8} {:>8} {:>8} {:>8}  attack frames sent",
        "server", "load", "calls", "p50", "p99", "max"
    );
    for name in runtimes.split(',') {
        let server = start(name, rpcx_core::conn::DEFAULT_SERVER_MEMORY);
        victim(&server.addr, 0.5); // warm-up
        let alone = victim(&server.addr, secs);
        println!("{name:>6} {:>22} {}", "alone", pcts(&alone));
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
        let mut threads = Vec::new();
        for (frame, count) in [max_gzip.clone(), bomb.clone(), meta.clone(), meta.clone()].into_iter().zip([0, 1, 2, 2])
        {
            let (addr, stop, sent) = (server.addr.clone(), stop.clone(), counts[count].clone());
            threads.push(std::thread::spawn(move || attacker(addr, frame, stop, sent)));
        }
        std::thread::sleep(Duration::from_millis(300));
        let attacked = victim(&server.addr, secs);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let [g, b, m] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
        println!("{name:>6} {:>22} {}  {g} max-gzip, {b} bombs, {m} metadata", "gzip+bombs+metadata", pcts(&attacked));
        println!(
            "{name:>6} {:>22} p99 x{:.2}",
            "attacked/alone",
            attacked.value_at_quantile(0.99) as f64 / alone.value_at_quantile(0.99).max(1) as f64
        );
        server.stop();
    }
}

/// Peers that pipeline 64 KiB echoes and never read; returns once none can write more.
fn non_readers(addr: &str, peers: usize) -> Vec<TcpStream> {
    let frame = request(1, "Echo", "Raw", Bytes::from(vec![7u8; 64 << 10]), Metadata::new(), false);
    let conns: Vec<TcpStream> = (0..peers).map(|_| connect(addr)).collect();
    for c in &conns {
        c.set_nonblocking(true).expect("nonblocking");
    }
    let end = Instant::now() + Duration::from_secs(8);
    let mut progress = vec![0usize; peers];
    let mut last_write = Instant::now();
    while Instant::now() < end && last_write.elapsed() < Duration::from_millis(1500) {
        for (i, mut c) in conns.iter().enumerate() {
            let at = progress[i] % frame.len();
            match c.write(&frame[at..]) {
                Ok(n) if n > 0 => {
                    progress[i] += n;
                    last_write = Instant::now();
                }
                _ => {}
            }
        }
    }
    conns
}

/// Peers that each send the first `body` bytes of a maximum-size frame, then hold.
fn unfinished_frames(addr: &str, peers: usize, body: usize) -> Vec<TcpStream> {
    let total = (32u32 << 20) - 16;
    let mut prefix = vec![0x08u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    prefix.extend_from_slice(&total.to_be_bytes());
    let chunk = vec![0u8; 64 << 10];
    let conns: Vec<TcpStream> = (0..peers).map(|_| connect(addr)).collect();
    let mut sent = vec![0usize; peers];
    for (c, s) in conns.iter().zip(&mut sent) {
        (&*c).write_all(&prefix).expect("prefix");
        c.set_nonblocking(true).expect("nonblocking");
        *s = 0;
    }
    let end = Instant::now() + Duration::from_secs(8);
    let mut last_write = Instant::now();
    while Instant::now() < end && last_write.elapsed() < Duration::from_millis(1500) {
        for (mut c, s) in conns.iter().zip(&mut sent) {
            if *s >= body {
                continue;
            }
            match c.write(&chunk[..chunk.len().min(body - *s)]) {
                Ok(n) if n > 0 => {
                    *s += n;
                    last_write = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                _ => {}
            }
        }
    }
    conns
}

fn memory(runtimes: &str, peers: usize) {
    println!("server peak RSS (VmHWM) while {peers} peers attack; budget 512 MiB (default) vs off");
    println!("{:>6} {:>34} {:>14} {:>14} {:>8}", "server", "attack", "budget 512 MiB", "budget off", "ratio");
    for name in runtimes.split(',') {
        type Attack = fn(&str, usize) -> Vec<TcpStream>;
        let attacks: [(&str, Attack); 2] = [
            ("pipelining, never reading", non_readers),
            ("unfinished 32 MiB frame (16 MiB in)", |a, p| unfinished_frames(a, p, 16 << 20)),
        ];
        for (what, attack) in attacks {
            let mut peaks = Vec::new();
            for budget in [rpcx_core::conn::DEFAULT_SERVER_MEMORY, usize::MAX] {
                let server = start(name, budget);
                let (base, _) = rss(&server);
                let conns = attack(&server.addr, peers);
                std::thread::sleep(Duration::from_millis(500));
                let (_, peak) = rss(&server);
                peaks.push(peak.saturating_sub(base));
                drop(conns);
                server.stop();
            }
            println!(
                "{name:>6} {what:>34} {:>10} MiB {:>10} MiB {:>8.2}",
                peaks[0] / 1024,
                peaks[1] / 1024,
                peaks[0] as f64 / peaks[1].max(1) as f64
            );
        }
    }
}

fn main() {
    if let Some(i) = std::env::args().position(|a| a == "--serve") {
        let budget = flag("--budget", &rpcx_core::conn::DEFAULT_SERVER_MEMORY.to_string()).parse().expect("--budget");
        serve(&std::env::args().nth(i + 1).expect("--serve RUNTIME"), budget);
        return;
    }
    let runtimes = flag("--runtimes", "tokio,smol,std");
    match std::env::args().nth(1).as_deref() {
        Some("isolation") => isolation(&runtimes, flag("--secs", "5").parse().expect("--secs")),
        Some("memory") => memory(&runtimes, flag("--peers", "100").parse().expect("--peers")),
        _ => {
            eprintln!("usage: attacks isolation [--secs S] | memory [--peers N]  [--runtimes tokio,smol,std]");
            std::process::exit(2);
        }
    }
}
