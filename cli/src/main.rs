//! `rpcx`: the rpcx command line. Call a method from the shell, serve the book's
//! services, load-test any rpcx server (Go's included), decode captured frames and tap
//! a live connection through a proxy. Built on `rpcx-tokio`.
//!
//! Exit status: 0 on success, 1 when the operation failed (server error, connection
//! failure, malformed frames), 2 for a usage error (bad flag, address, JSON...).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod call;
mod decode;
mod dump;
mod frame;
mod gateway;
mod net;
mod pcap;
mod proto;
mod registry;
mod serve;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;
use std::time::Duration;

/// Why a command failed, and so its exit status.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong (exit status 2).
    Usage(String),
    /// The operation failed (exit status 1).
    Failed(String),
}

impl Failure {
    pub(crate) fn usage(s: impl Into<String>) -> Self {
        Failure::Usage(s.into())
    }
    pub(crate) fn failed(s: impl Into<String>) -> Self {
        Failure::Failed(s.into())
    }
}

pub(crate) type Outcome = Result<(), Failure>;

#[derive(Parser, Debug)]
#[command(name = "rpcx", version, about = "rpcx from the shell: call, serve, bench, decode, dump, gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Call Service.Method on a server and print the reply.
    Call(call::CallArgs),
    /// Serve the rpcx book's Arith, Echo and Notify services.
    Serve(serve::ServeArgs),
    /// Load-test a server: closed loop or fixed rate, latency percentiles at the end.
    Bench(bench::BenchArgs),
    /// Decode rpcx frames from hex, a file, stdin or a pcap/pcapng capture.
    Decode(decode::DecodeArgs),
    /// A TCP or unix-socket proxy that forwards bytes both ways and prints every frame.
    Dump(dump::DumpArgs),
    /// An HTTP gateway (X-RPCX headers, JSON-RPC) and rpcx proxy in front of upstream servers.
    Gateway(gateway::GatewayArgs),
}

/// The payload encoding (`SerializeType` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Serialize {
    /// JSON, sent as given.
    Json,
    /// MsgPack, converted from the JSON given.
    Msgpack,
    /// Raw bytes (SerializeNone).
    Raw,
    /// Protobuf: bytes given as hex (or, for `call`, JSON with --proto / --descriptor-set).
    Protobuf,
}

impl Serialize {
    pub(crate) fn wire(self) -> rpcx_tokio::SerializeType {
        use rpcx_tokio::SerializeType as S;
        match self {
            Serialize::Json => S::JSON,
            Serialize::Msgpack => S::MSGPACK,
            Serialize::Raw => S::NONE,
            Serialize::Protobuf => S::PROTOBUF,
        }
    }
}

/// How to reach a server: TLS and connect settings shared by `call` and `bench`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Connect with TLS (tcp addresses only).
    #[arg(long)]
    pub(crate) tls: bool,
    /// With --tls: accept any server certificate (no verification).
    #[arg(long, requires = "tls")]
    pub(crate) insecure: bool,
    /// With --tls: PEM file of the certificate authorities to trust.
    #[arg(long, requires = "tls", value_name = "PEM")]
    pub(crate) ca: Option<std::path::PathBuf>,
    /// With --tls: the name expected in the server certificate (default: the host).
    #[arg(long, requires = "tls")]
    pub(crate) server_name: Option<String>,
    /// Dial timeout.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) connect_timeout: Duration,
}

/// `1.5s`, `200ms`, `2m`, `100us`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?} (e.g. 5s, 200ms, 1m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "ns" => n / 1e9,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit {unit:?} in {s:?} (use ns, us, ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    // Quiet unless asked: `RUST_LOG=rpcx=debug` shows every call's span and event.
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's message with its hints folded in, the `--help` pointer dropped.
            let text = e.render().to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("rpcx: {}", line.strip_prefix("error: ").unwrap_or(&line));
            return ExitCode::from(2);
        }
    };
    let threads = match &cli.command {
        Command::Serve(serve::ServeArgs { threads, .. }) => *threads,
        Command::Bench(a) => {
            Some(a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
        }
        _ => None,
    };
    if threads == Some(0) {
        eprintln!("rpcx: --threads must be at least 1");
        return ExitCode::from(2);
    }
    // The load generator on one thread runs its callers in turn (see `bench --threads`).
    let bench_alone = matches!(cli.command, Command::Bench(_)) && threads == Some(1);
    let mut builder = if bench_alone {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if let (Some(n), false) = (threads, bench_alone) {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rpcx: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Call(a) => call::run(a).await,
            Command::Serve(a) => serve::run(a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::Decode(a) => decode::run(a),
            Command::Dump(a) => dump::run(a).await,
            Command::Gateway(a) => gateway::run(a).await,
        }
    });
    // Leave tasks still running (a proxy's connections, a client's driver) behind.
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("rpcx: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("rpcx: {m}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
