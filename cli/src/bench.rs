//! `rpcx bench ADDR [Service.Method]`: load, then calls/s and latency percentiles.
//!
//! Closed loop (default): `--concurrency` callers over `--conns` connections, each
//! sending its next call when the previous one returns; latency from the call's
//! start. Fixed rate (`--rate R`): call k is due at `start + k/R`, whatever happened
//! before it, and its latency is measured from that intended time, so a stalled
//! server shows up in the percentiles instead of slowing the schedule down (no
//! coordinated omission).

use crate::call::{encode_args, split_method};
use crate::{ConnectArgs, Failure, Outcome, Serialize};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use rpcx_tokio::core::wire::AUTH_KEY;
use rpcx_tokio::{Client, CompressType};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Server address: tcp@host:port, host:port or unix@/path.
    addr: String,
    /// The method. Echo.Raw (default) sends --payload-size raw bytes and checks the echo.
    #[arg(default_value = "Echo.Raw")]
    method: String,
    /// Arguments: JSON for json/msgpack (default {"A":7,"B":6}), hex for protobuf, the
    /// bytes themselves for raw (default: --payload-size bytes).
    #[arg(long)]
    args: Option<String>,
    /// Serialize type (default: raw for Echo.Raw, msgpack otherwise).
    #[arg(short, long, value_enum)]
    serialize: Option<Serialize>,
    /// Raw payload size in bytes (Echo.Raw, or --serialize raw without --args).
    #[arg(long, default_value_t = 581)]
    payload_size: usize,
    /// Send rpcx-benchmark's 581-byte protobuf `BenchmarkMessage` (every string field
    /// the benchmark's text, every number 100000, every bool true) as the payload
    /// (raw bytes through Echo.Raw, or --serialize protobuf to another method).
    #[arg(long, conflicts_with = "args")]
    bench_message: bool,
    /// Read this process's CPU time (/proc/PID/stat utime+stime) at the start and end
    /// of the measured window and report it per call (the server's pid, on Linux).
    #[arg(long)]
    pid: Option<u32>,
    /// Closed loop: callers (default 10). With --rate: most calls in flight at once
    /// (default 1000; a call waiting for room still counts its latency from its due time).
    #[arg(short = 'c', long)]
    concurrency: Option<usize>,
    /// Connections the callers share.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Measured time.
    #[arg(short, long, default_value = "5s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Load before measuring (calls made but not counted).
    #[arg(long, default_value = "0s", value_parser = crate::parse_duration)]
    warmup: Duration,
    /// Runtime threads of the load generator (default: the CPUs it may run on). With 1
    /// (the default under `taskset -c N`) the callers run on a single-threaded runtime,
    /// which serves them in turn: tokio's multi-threaded scheduler lets some of 1000
    /// ready callers wait behind the others again and again, which shows as a p99 of
    /// ten times the median.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Fixed rate in calls/s over all connections instead of the closed loop.
    #[arg(short, long)]
    rate: Option<f64>,
    /// Per-call timeout, also sent to the server as `__ServerTimeout` (as Go's XClient
    /// does for a context with a deadline). 0 means none: no deadline and no
    /// `__ServerTimeout`, as Go's plain `Client.Call` with `context.Background()`.
    #[arg(short, long, default_value = "10s", value_parser = crate::parse_duration)]
    timeout: Duration,
    /// Auth token (`__AUTH` metadata).
    #[arg(long)]
    auth: Option<String>,
    /// Gzip requests (payloads over 1024 bytes).
    #[arg(long)]
    gzip: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Print an ASCII latency histogram.
    #[arg(long)]
    histogram: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// What every call of the run sends.
struct Plan {
    service: String,
    method: String,
    serialize: Serialize,
    payload: Bytes,
    /// Check that the reply is the payload (Echo.Raw).
    echo: bool,
    timeout: Duration,
    gzip: bool,
    auth: Option<String>,
}

/// Counters and the histogram, shared by the callers.
struct Tally {
    hist: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Calls done, warm-up included (for the progress bar).
    done: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            hist: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            done: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }
    }

    /// Record a call that was due (or started) at `from` and ended now.
    fn record(&self, from: Instant, counted: bool, result: Result<(), String>) {
        let ns = u64::try_from(from.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) if counted => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.hist.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(ns);
            }
            Ok(()) => {}
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(e);
                }
            }
        }
    }
}

async fn one_call(client: &Client, plan: &Plan) -> Result<(), String> {
    let mut req = client.request(&plan.service, &plan.method).serialize_type(plan.serialize.wire());
    if !plan.timeout.is_zero() {
        req = req.timeout(plan.timeout);
    }
    if plan.gzip {
        req = req.compress(CompressType::GZIP);
    }
    if let Some(t) = &plan.auth {
        req = req.metadata(AUTH_KEY, t);
    }
    let reply = req.call_raw(plan.payload.clone()).await.map_err(|e| e.to_string())?;
    if plan.echo && reply.payload != plan.payload {
        return Err(format!(
            "echo mismatch: sent {} bytes, got {} different bytes",
            plan.payload.len(),
            reply.payload.len()
        ));
    }
    Ok(())
}

fn plan(a: &BenchArgs) -> Result<Plan, Failure> {
    let (service, method) = split_method(&a.method)?;
    let echo = a.method == "Echo.Raw";
    let serialize = a.serialize.unwrap_or(if echo { Serialize::Raw } else { Serialize::Msgpack });
    let payload = match (&a.args, serialize) {
        _ if a.bench_message => benchmark_message(),
        (Some(args), st) => encode_args(args.as_bytes(), st)?,
        (None, Serialize::Raw) => (0..a.payload_size).map(|i| b'a' + (i % 26) as u8).collect(),
        (None, Serialize::Protobuf) => {
            return Err(Failure::usage("--serialize protobuf needs --args HEX (no descriptor support)"));
        }
        (None, st) => encode_args(br#"{"A":7,"B":6}"#, st)?,
    };
    if a.concurrency == Some(0) || a.conns == 0 {
        return Err(Failure::usage("--concurrency and --conns must be at least 1"));
    }
    if a.concurrency.is_some_and(|c| c > 1_000_000) || a.conns > 10_000 {
        return Err(Failure::usage("--concurrency is at most 1000000, --conns at most 10000"));
    }
    if a.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(Failure::usage("--rate must be a positive number of calls per second"));
    }
    if a.duration.is_zero() {
        return Err(Failure::usage("--duration must be more than 0"));
    }
    Ok(Plan {
        service: service.to_owned(),
        method: method.to_owned(),
        serialize,
        echo: echo && serialize == Serialize::Raw,
        payload: Bytes::from(payload),
        timeout: a.timeout,
        gzip: a.gzip,
        auth: a.auth.clone(),
    })
}

fn concurrency(a: &BenchArgs) -> usize {
    a.concurrency.unwrap_or(if a.rate.is_some() { 1000 } else { 10 })
}

pub(crate) async fn run(a: BenchArgs) -> Outcome {
    crate::net::check_addr(&a.addr)?;
    let plan = Arc::new(plan(&a)?);
    let mut clients = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        clients.push(crate::net::connect(&a.addr, &a.connect).await?);
    }
    let tally = Arc::new(Tally::new());
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let progress = progress_bar(&a, tally.clone(), start, end);
    let cpu = a.pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let t0 = cpu_ticks(pid);
            tokio::time::sleep_until(end.into()).await;
            Some(cpu_ticks(pid)?.saturating_sub(t0?))
        })
    });
    match a.rate {
        None => closed_loop(&clients, &plan, &tally, concurrency(&a), measure_from, end).await,
        Some(rate) => fixed_rate(&clients, &plan, &tally, rate, concurrency(&a), start, measure_from, end).await,
    }
    let elapsed = end.min(Instant::now()).saturating_duration_since(measure_from).max(Duration::from_millis(1));
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    let server_ticks = match cpu {
        Some(t) => t.await.ok().flatten(),
        None => None,
    };
    if a.pid.is_some() && server_ticks.is_none() {
        return Err(Failure::failed(format!("cannot read /proc/{}/stat", a.pid.unwrap_or_default())));
    }
    for c in &clients {
        c.close_now().await;
    }
    report(&a, &plan, &tally, elapsed, server_ticks)
}

async fn closed_loop(
    clients: &[Client],
    plan: &Arc<Plan>,
    tally: &Arc<Tally>,
    c: usize,
    measure_from: Instant,
    end: Instant,
) {
    let mut tasks = Vec::with_capacity(c);
    for i in 0..c {
        let (client, plan, tally) = (clients[i % clients.len()].clone(), plan.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = one_call(&client, &plan).await;
                // A call counts if it started in the window and ended in it.
                let counted = t0 >= measure_from && Instant::now() <= end;
                let failed = r.is_err();
                tally.record(t0, counted || failed, r);
                // A lost connection fails every call at once: stop rather than spin.
                if failed && client.is_closing() {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn fixed_rate(
    clients: &[Client],
    plan: &Arc<Plan>,
    tally: &Arc<Tally>,
    rate: f64,
    max_in_flight: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) {
    let room = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let handle = tokio::runtime::Handle::current();
    let (clients, plan, tally, pacer_room) = (clients.to_vec(), plan.clone(), tally.clone(), room.clone());
    // The pacer is a thread of its own: tokio's timer has a 1 ms resolution, which
    // would send every call up to a millisecond late (and count that as latency);
    // a thread's sleep is precise to tens of microseconds.
    let pacer = std::thread::spawn(move || {
        let mut k: u64 = 0;
        loop {
            // Due times come from the schedule, never from when the previous call went out.
            let due = start + interval.mul_f64(k as f64);
            if due >= end {
                break;
            }
            k += 1;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // Waiting for room keeps the due time: that wait is part of the latency.
            let permit = match pacer_room.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match handle.block_on(pacer_room.clone().acquire_owned()) {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (client, plan, tally) = (clients[(k as usize) % clients.len()].clone(), plan.clone(), tally.clone());
            handle.spawn(async move {
                let r = one_call(&client, &plan).await;
                tally.record(due, due >= measure_from, r);
                drop(permit);
            });
        }
    });
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    // Calls still out at the end finish (bounded by their timeout) and count: they
    // were due inside the window.
    let _ = room.acquire_many(u32::try_from(max_in_flight).unwrap_or(u32::MAX)).await;
}

type Progress = (indicatif::ProgressBar, tokio::task::JoinHandle<()>);

fn progress_bar(a: &BenchArgs, tally: Arc<Tally>, start: Instant, end: Instant) -> Option<Progress> {
    if a.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let total = end.duration_since(start);
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed}/{len_s} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let done = tally.done.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            b.set_position(now.saturating_duration_since(start).min(total).as_millis() as u64);
            b.set_message(format!("{done} calls, {rate:.0}/s, {} errors", tally.errors.load(Ordering::Relaxed)));
        }
    });
    Some((bar, ticker))
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// /proc/[pid]/stat ticks per second (Linux's USER_HZ, 100 on every architecture it
/// reports to user space with).
const USER_HZ: f64 = 100.0;

/// utime + stime of a process, in USER_HZ ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// rpcx-benchmark's `BenchmarkMessage` (rpcx `protocol/testdata/benchmark.proto`) as
/// its benchmark fills it, in protobuf wire form, fields in number order: 581 bytes.
pub(crate) fn benchmark_message() -> Vec<u8> {
    const TEXT: &str = "许多往事在眼前一幕一幕，变的那麼模糊";
    const STRINGS: [u32; 8] = [1, 4, 7, 9, 18, 102, 103, 129];
    const BOOLS: [u32; 10] = [12, 13, 14, 17, 24, 30, 59, 78, 80, 81];
    const INTS: [u32; 21] = [2, 3, 6, 16, 22, 23, 25, 29, 60, 67, 68, 100, 101, 104, 128, 130, 131, 150, 271, 272, 280];
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut fields: Vec<(u32, u8)> = STRINGS.iter().map(|&f| (f, 2)).collect();
    fields.extend(BOOLS.iter().map(|&f| (f, 0)));
    fields.extend(INTS.iter().map(|&f| (f, 1)));
    fields.sort_unstable();
    let mut out = Vec::with_capacity(581);
    for (field, kind) in fields {
        // Wire type 2 (length-delimited) for strings, 0 (varint) for bools and ints.
        let wire = if kind == 2 { 2 } else { 0 };
        varint(&mut out, u64::from(field << 3 | wire));
        match kind {
            2 => {
                varint(&mut out, TEXT.len() as u64);
                out.extend_from_slice(TEXT.as_bytes());
            }
            0 => out.push(1),
            _ => varint(&mut out, 100_000),
        }
    }
    out
}

fn report(a: &BenchArgs, plan: &Plan, tally: &Tally, elapsed: Duration, server_ticks: Option<u64>) -> Outcome {
    let hist = tally.hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let first_error = tally.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let cps = ok as f64 / elapsed.as_secs_f64();
    let q = |p: f64| if hist.is_empty() { 0 } else { hist.value_at_quantile(p) };
    let (p50, p90, p99, p999, max) = (q(0.5), q(0.9), q(0.99), q(0.999), if hist.is_empty() { 0 } else { hist.max() });
    let cpu_per_call = server_ticks.filter(|_| ok > 0).map(|t| t as f64 / USER_HZ * 1e6 / ok as f64);
    let mut out = std::io::stdout().lock();
    let w = if a.json {
        let v = json!({
            "addr": a.addr, "method": a.method, "serialize": format!("{:?}", plan.serialize).to_lowercase(),
            "payload_bytes": plan.payload.len(), "mode": if a.rate.is_some() { "rate" } else { "closed" },
            "rate": a.rate, "conns": a.conns, "concurrency": concurrency(a), "elapsed_s": elapsed.as_secs_f64(),
            "calls": ok, "errors": errors, "calls_per_s": cps,
            "p50_us": p50 as f64 / 1e3, "p90_us": p90 as f64 / 1e3, "p99_us": p99 as f64 / 1e3,
            "p999_us": p999 as f64 / 1e3, "max_us": max as f64 / 1e3, "first_error": first_error,
            "server_pid": a.pid, "server_ticks": server_ticks, "server_cpu_us_per_call": cpu_per_call,
        });
        writeln!(out, "{v}")
    } else {
        let mode = match a.rate {
            Some(r) => {
                format!("rate {r}/s (latency from the intended send time), at most {} in flight", concurrency(a))
            }
            None => format!("closed loop, {} callers", concurrency(a)),
        };
        writeln!(
            out,
            "{} {} ({} bytes {:?}) over {} conn(s), {mode}\n\
             calls     {ok} in {:.2}s = {cps:.0} calls/s\n\
             errors    {errors}\n\
             latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            a.addr,
            a.method,
            plan.payload.len(),
            plan.serialize,
            a.conns,
            elapsed.as_secs_f64(),
            fmt_ns(p50),
            fmt_ns(p90),
            fmt_ns(p99),
            fmt_ns(p999),
            fmt_ns(max),
        )
        .and_then(|()| match (a.pid, cpu_per_call) {
            (Some(pid), Some(us)) => writeln!(out, "server    pid {pid}: {us:.2}us CPU per call"),
            _ => Ok(()),
        })
        .and_then(|()| if a.histogram { write!(out, "{}", ascii_histogram(&hist)) } else { Ok(()) })
    };
    w.and_then(|()| out.flush()).map_err(|e| Failure::failed(format!("writing: {e}")))?;
    if errors > 0 {
        return Err(Failure::failed(format!("{errors} call(s) failed; first: {}", first_error.unwrap_or_default())));
    }
    if ok == 0 {
        return Err(Failure::failed("no call completed in the measured window"));
    }
    Ok(())
}

/// Latency counts in power-of-two buckets from 1 us, one bar each.
fn ascii_histogram(hist: &Histogram<u64>) -> String {
    if hist.is_empty() {
        return String::new();
    }
    let rows: Vec<(u64, u64)> =
        hist.iter_log(1_000, 2.0).map(|v| (v.value_iterated_to(), v.count_since_last_iteration())).collect();
    let first = rows.iter().position(|r| r.1 > 0).unwrap_or(0);
    let last = rows.iter().rposition(|r| r.1 > 0).unwrap_or(0);
    let top = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let total = hist.len().max(1);
    let mut s = String::from("latency histogram (bucket upper bound, count, share):\n");
    for &(upto, count) in &rows[first..=last] {
        let width = (count * 50).div_ceil(top) as usize;
        s.push_str(&format!(
            "  <= {:>9} {:>10} {:>6.2}% |{}\n",
            fmt_ns(upto),
            count,
            count as f64 * 100.0 / total as f64,
            "#".repeat(width)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_rows_cover_every_count() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [1_500u64, 3_000, 3_100, 90_000, 2_000_000] {
            h.record(v).unwrap();
        }
        let s = ascii_histogram(&h);
        let counted: u64 =
            s.lines().skip(1).map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(counted, 5, "{s}");
        assert!(s.lines().nth(1).unwrap().contains('#'));
    }

    #[test]
    fn benchmark_message_is_581_bytes() {
        let m = benchmark_message();
        assert_eq!(m.len(), 581);
        // Field 1, length-delimited, 54 bytes of text.
        assert_eq!(&m[..2], &[0x0a, 54]);
        // Field 280 (the highest), varint 100000, ends it.
        assert_eq!(&m[m.len() - 5..], &[0xc0, 0x11, 0xa0, 0x8d, 0x06]);
    }

    #[test]
    fn own_cpu_ticks_are_readable() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(cpu_ticks(u32::MAX).is_none());
    }

    #[test]
    fn durations_print_in_units() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(1_500), "1.5us");
        assert_eq!(fmt_ns(2_500_000), "2.50ms");
    }
}
